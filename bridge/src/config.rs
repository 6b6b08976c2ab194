//! Configuration: defaults, then a TOML file, then `SWITCHYARD_*` environment
//! variables, then command-line flags (later wins). Parsed and validated before
//! any port is bound; a bad value names its key. See docs/configuration.md.

use crate::secret::Secret;
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use switchyard::{
    bus::BusConfig,
    log::{Fsync, Quotas, Retention, embedded::EmbeddedConfig},
    names::Channel,
    validate::Policy,
};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub log: LogConfig,
    pub bus: BusSection,
    pub auth: AuthConfig,
    pub sse: SseConfig,
    pub grpc: GrpcConfig,
    pub tls: TlsConfig,
    pub webhooks: WebhooksConfig,
    pub telemetry: TelemetryConfig,
    pub metrics: MetricsConfig,
    /// A `switchyard-ingest` config file: its connectors run inside this process (docs/connectors.md).
    pub ingest: Option<PathBuf>,
    /// `nats://host:4222[,…]`: keep the history on NATS JetStream, shared with other nodes
    /// (docs/clustering.md). Unset: the embedded store in `data_dir`.
    pub backplane: Option<String>,
    pub nats: NatsConfig,
    /// Outbound delivery: endpoints, the retry ladder, target policy, SMTP (docs/outbound.md).
    pub outbound: switchyard_outbound::Config,
}

/// The JetStream backplane's stream and connection (used when `backplane` is set).
#[derive(Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    pub stream: String,
    pub subject_prefix: String,
    /// 1 (one server) or 3 (a cluster; survives losing one server).
    pub replicas: usize,
    pub credentials_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_required: bool,
    /// How long a publish rides out a leader election (same Msg-Id) before failing as unavailable.
    pub publish_deadline_secs: u64,
}

impl Default for NatsConfig {
    /// The JetStream log's own defaults, so the two never drift apart.
    fn default() -> Self {
        let d = switchyard::log::jetstream::JetStreamConfig::default();
        Self {
            stream: d.stream,
            subject_prefix: d.subject_prefix,
            replicas: d.replicas,
            credentials_file: d.credentials_file,
            user: d.user,
            password: d.password,
            token: d.token,
            tls_ca_file: d.tls_ca_file,
            tls_required: d.tls_required,
            publish_deadline_secs: d.publish_deadline.as_secs(),
        }
    }
}

// Secrets stay out of logs.
impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("stream", &self.stream)
            .field("replicas", &self.replicas)
            .field("credentials_file", &self.credentials_file)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Signed webhooks: `[webhooks.<platform>]` for each platform in
/// `switchyard_services::platform::ALL` (its folder defines the section: e.g.
/// `shopify::webhook::Config`), and `[webhooks.standard.<source>]` for Standard Webhooks senders.
/// Secrets are never logged: `Debug` shows only which sections are set.
#[derive(Clone, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct WebhooksConfig {
    /// Standard Webhooks senders by source name: `POST /api/webhooks/<source>`.
    pub standard: BTreeMap<String, StandardHook>,
    /// Each platform's section, read by that platform (unknown names are refused at startup).
    #[serde(flatten)]
    pub platforms: BTreeMap<String, toml::Value>,
}

impl std::fmt::Debug for WebhooksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhooksConfig")
            .field("standard", &self.standard)
            .field("platforms", &self.platforms.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct StandardHook {
    /// `whsec_…` secrets; several during rotation.
    pub secrets: Vec<Secret>,
    pub tenant: String,
    /// Channels the events go to (catalog channels or `bus.custom_channels`).
    pub channels: Vec<String>,
}

/// HTTPS for the bridge: both files set turns it on (HTTP/2 and HTTP/1.1 by ALPN).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM private key.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub fsync: Fsync,
    pub batch_interval_ms: u64,
    pub trim_interval_secs: u64,
    pub retention: Retention,
    /// `[log.quotas]`: what one tenant can make the log keep.
    pub quotas: Quotas,
    /// The store's page cache, MiB.
    pub cache_mib: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BusSection {
    pub max_event_bytes: usize,
    /// Channels `custom` events may use besides the catalog's.
    pub custom_channels: Vec<String>,
    pub coalesce_window_ms: u64,
    /// Events per second each tenant may publish, sustained (system tokens are not limited).
    pub publish_rate: f64,
    /// Events a tenant may publish at once above that rate.
    pub publish_burst: f64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret file; default `<data_dir>/secret.key`, generated on first run.
    pub secret_file: Option<PathBuf>,
    /// RS256/ES256 public keys (PEM files) accepted besides the secret.
    pub public_keys: Vec<PathBuf>,
    /// A JWKS document (file) of RS256/ES256 keys.
    pub jwks_file: Option<PathBuf>,
    /// Accept `?access_token=` on SSE routes. Off: tokens in URLs leak into logs (RFC 9700).
    pub allow_query_token: bool,
    /// Origins allowed by CORS; empty means same-origin only.
    pub cors_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SseConfig {
    pub heartbeat_secs: u64,
    pub retry_ms: u64,
    pub max_connections: usize,
    pub max_per_tenant: usize,
    pub max_per_token: usize,
    /// A connection whose writes make no progress this long is closed (a client that stopped reading).
    pub stall_timeout_secs: u64,
    /// Connections still in their TLS handshake or before their first request head is read, at
    /// most; more are closed at once (they have not shown who they are).
    pub max_pending_connections: usize,
    /// Of those, at most this many from one IP address; 0: no per-address cap (behind a proxy
    /// every client shares one address).
    pub max_pending_per_ip: usize,
    /// Open HTTP connections (streams included) from one IP address, at most; 0 is off (behind
    /// a proxy every client shares one address).
    pub max_connections_per_ip: usize,
    /// An HTTP connection with no request open this long is closed, even if it answers HTTP/2
    /// pings (HTTP/1 connections are closed sooner, by the header timeout).
    pub idle_timeout_secs: u64,
}

/// What one gRPC connection may hold (see `switchyard::grpc::Limits`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// An HTTP/2 ping goes to each connection this often...
    pub keepalive_secs: u64,
    /// ...and a peer that has not answered in this long is closed.
    pub keepalive_timeout_secs: u64,
    /// Calls open at once on one connection.
    pub max_concurrent_streams: u32,
    /// The largest `PublishBatch` request decoded (its events are counted before decoding).
    pub max_message_bytes: usize,
    /// Calls one (non-system) token may have open at once, over all its connections.
    pub max_calls_per_token: usize,
    /// A connection with no call open this long is closed, even if it answers pings.
    pub idle_timeout_secs: u64,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        let l = switchyard::grpc::Limits::default();
        Self {
            keepalive_secs: l.keepalive.as_secs(),
            keepalive_timeout_secs: l.keepalive_timeout.as_secs(),
            max_concurrent_streams: l.max_concurrent_streams,
            max_message_bytes: l.max_message_bytes,
            max_calls_per_token: l.max_calls_per_token,
            idle_timeout_secs: l.idle_timeout.as_secs(),
        }
    }
}

impl GrpcConfig {
    /// The limits, with a `Publish` message sized for one event of `max_event_bytes`.
    pub fn limits(&self, max_event_bytes: usize) -> switchyard::grpc::Limits {
        switchyard::grpc::Limits {
            keepalive: Duration::from_secs(self.keepalive_secs),
            keepalive_timeout: Duration::from_secs(self.keepalive_timeout_secs),
            max_concurrent_streams: self.max_concurrent_streams,
            max_message_bytes: self.max_message_bytes,
            max_publish_bytes: max_event_bytes + switchyard::grpc::PUBLISH_ENVELOPE,
            max_calls_per_token: self.max_calls_per_token,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `tracing` filter, e.g. `info` or `switchyard=debug`.
    pub log: String,
    /// OTLP/gRPC endpoint for traces, e.g. `http://127.0.0.1:4317`; empty disables export.
    pub otlp_endpoint: String,
    /// Share of traces started here that are recorded (0.0–1.0). A request that names a sampled
    /// parent (`traceparent … -01`) is always recorded, an unsampled one never.
    pub sample_ratio: f64,
    /// The log's format: `text` (lines for people) or `json` (one object per line, with the
    /// trace id of the span it was written in, when traces are exported).
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("'{s}': expected `text` or `json`")),
        }
    }
}

/// What `/metrics` labels. Tenant names are off by default: `/metrics` is unauthenticated,
/// and a label per tenant grows a scrape without bound.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Label publishes and connections by tenant.
    pub tenant_labels: bool,
    /// With tenant labels: the busiest this many tenants by name; the rest summed as `_other`.
    pub max_tenants: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { tenant_labels: false, max_tenants: 50 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            log: LogConfig::default(),
            bus: BusSection::default(),
            auth: AuthConfig::default(),
            sse: SseConfig::default(),
            grpc: GrpcConfig::default(),
            tls: TlsConfig::default(),
            webhooks: WebhooksConfig::default(),
            telemetry: TelemetryConfig::default(),
            metrics: MetricsConfig::default(),
            ingest: None,
            backplane: None,
            nats: NatsConfig::default(),
            outbound: switchyard_outbound::Config::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            fsync: Fsync::Always,
            batch_interval_ms: 100,
            trim_interval_secs: 10,
            retention: Retention::default(),
            quotas: Quotas::default(),
            cache_mib: 256,
        }
    }
}

impl Default for BusSection {
    fn default() -> Self {
        let rate = switchyard::rate::Rate::default();
        Self {
            max_event_bytes: 64 * 1024,
            custom_channels: Vec::new(),
            coalesce_window_ms: 2000,
            publish_rate: rate.per_sec,
            publish_burst: rate.burst,
        }
    }
}

impl Default for SseConfig {
    fn default() -> Self {
        Self {
            heartbeat_secs: 15,
            retry_ms: 2000,
            max_connections: 19_000,
            max_per_tenant: 10_000,
            max_per_token: 64,
            stall_timeout_secs: 30,
            max_pending_connections: 1024,
            // A quarter of the pending slots: one address cannot take them all, and a proxy's
            // address (every client's, behind it) still has room for bursts of new connections.
            max_pending_per_ip: 256,
            max_connections_per_ip: 0,
            idle_timeout_secs: 30,
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { log: "info".into(), otlp_endpoint: String::new(), sample_ratio: 0.01, log_format: LogFormat::Text }
    }
}

/// A configuration mistake, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("{key}: {message}")]
    Value { key: String, message: String },
}

pub(crate) fn bad(key: &str, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::Value { key: key.to_owned(), message: message.to_string() }
}

/// Flags that override the file and environment; `None` leaves the value alone.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub grpc_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    pub fsync: Option<Fsync>,
    pub backplane: Option<String>,
}

/// Environment variables this reads (documented in docs/configuration.md).
pub const ENV_VARS: &[&str] = &[
    "SWITCHYARD_CONFIG",
    "SWITCHYARD_DATA_DIR",
    "SWITCHYARD_GRPC_ADDR",
    "SWITCHYARD_HTTP_ADDR",
    "SWITCHYARD_FSYNC",
    "SWITCHYARD_LOG",
    "SWITCHYARD_OTLP_ENDPOINT",
    "SWITCHYARD_CUSTOM_CHANNELS",
    "SWITCHYARD_ALLOW_QUERY_TOKEN",
    "SWITCHYARD_HEARTBEAT_SECS",
    "SWITCHYARD_INGEST",
    "SWITCHYARD_BACKPLANE",
];

impl Config {
    /// Loads file (if any) → env → flags. `env` is a lookup so tests need not touch the process environment.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &Overrides,
    ) -> Result<Self, ConfigError> {
        let file = file.map(Path::to_path_buf).or_else(|| env("SWITCHYARD_CONFIG").map(PathBuf::from));
        let mut c = match &file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::File { path: path.display().to_string(), message: e.to_string() })?;
                toml::from_str(&text)
                    .map_err(|e| ConfigError::File { path: path.display().to_string(), message: e.to_string() })?
            }
            None => Config::default(),
        };
        c.apply_env(env)?;
        c.apply_flags(flags);
        c.validate()?;
        Ok(c)
    }

    /// `SWITCHYARD_*` variables over the file's values.
    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("SWITCHYARD_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = env("SWITCHYARD_GRPC_ADDR") {
            self.grpc_addr = v.parse().map_err(|e| bad("SWITCHYARD_GRPC_ADDR", e))?;
        }
        if let Some(v) = env("SWITCHYARD_HTTP_ADDR") {
            self.http_addr = v.parse().map_err(|e| bad("SWITCHYARD_HTTP_ADDR", e))?;
        }
        if let Some(v) = env("SWITCHYARD_FSYNC") {
            self.log.fsync = v.parse().map_err(|e| bad("SWITCHYARD_FSYNC", e))?;
        }
        if let Some(v) = env("SWITCHYARD_LOG") {
            self.telemetry.log = v;
        }
        if let Some(v) = env("SWITCHYARD_OTLP_ENDPOINT") {
            self.telemetry.otlp_endpoint = v;
        }
        if let Some(v) = env("SWITCHYARD_LOG_FORMAT") {
            self.telemetry.log_format = v.parse().map_err(|e| bad("SWITCHYARD_LOG_FORMAT", e))?;
        }
        if let Some(v) = env("SWITCHYARD_CUSTOM_CHANNELS") {
            self.bus.custom_channels =
                v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
        }
        if let Some(v) = env("SWITCHYARD_ALLOW_QUERY_TOKEN") {
            self.auth.allow_query_token = v.parse().map_err(|e| bad("SWITCHYARD_ALLOW_QUERY_TOKEN", e))?;
        }
        if let Some(v) = env("SWITCHYARD_HEARTBEAT_SECS") {
            self.sse.heartbeat_secs = v.parse().map_err(|e| bad("SWITCHYARD_HEARTBEAT_SECS", e))?;
        }
        if let Some(v) = env("SWITCHYARD_INGEST") {
            self.ingest = Some(v.into());
        }
        if let Some(v) = env("SWITCHYARD_BACKPLANE") {
            self.backplane = Some(v);
        }
        Ok(())
    }

    /// Flags over everything else.
    fn apply_flags(&mut self, flags: &Overrides) {
        if let Some(v) = &flags.backplane {
            self.backplane = Some(v.clone());
        }
        if let Some(v) = &flags.data_dir {
            self.data_dir = v.clone();
        }
        if let Some(v) = flags.grpc_addr {
            self.grpc_addr = v;
        }
        if let Some(v) = flags.http_addr {
            self.http_addr = v;
        }
        if let Some(v) = flags.fsync {
            self.log.fsync = v;
        }
    }

    /// The in-process connectors' configuration, when `ingest` names a file. Cursors default
    /// to `<data_dir>/ingest`.
    pub fn ingest_config(&self) -> Result<Option<switchyard_services::config::IngestConfig>, ConfigError> {
        let Some(path) = &self.ingest else { return Ok(None) };
        let text = std::fs::read_to_string(path).map_err(|e| bad("ingest", format!("{}: {e}", path.display())))?;
        let mut c = switchyard_services::config::IngestConfig::from_toml(&text)
            .map_err(|e| bad("ingest", format!("{}: {e}", path.display())))?;
        c.state_dir.get_or_insert_with(|| self.data_dir.join("ingest"));
        Ok(Some(c))
    }

    /// The JetStream log's settings, when `backplane` is set.
    pub fn jetstream(&self) -> Option<switchyard::log::jetstream::JetStreamConfig> {
        let url = self.backplane.clone()?;
        let n = &self.nats;
        Some(switchyard::log::jetstream::JetStreamConfig {
            url,
            stream: n.stream.clone(),
            subject_prefix: n.subject_prefix.clone(),
            replicas: n.replicas,
            credentials_file: n.credentials_file.clone(),
            user: n.user.clone(),
            password: n.password.clone(),
            token: n.token.clone(),
            tls_ca_file: n.tls_ca_file.clone(),
            tls_required: n.tls_required,
            publish_deadline: Duration::from_secs(n.publish_deadline_secs),
            retention: self.log.retention.clone(),
            quotas: self.log.quotas,
        })
    }

    /// Settings that must be at least 1 (a count or a number of seconds).
    fn positive(&self) -> Result<(), ConfigError> {
        let (sse, grpc) = (&self.sse, &self.grpc);
        let counts: [(&str, u64); 8] = [
            ("sse.heartbeat_secs", sse.heartbeat_secs),
            ("sse.stall_timeout_secs", sse.stall_timeout_secs),
            ("sse.idle_timeout_secs", sse.idle_timeout_secs),
            ("grpc.keepalive_secs", grpc.keepalive_secs),
            ("grpc.keepalive_timeout_secs", grpc.keepalive_timeout_secs),
            ("grpc.idle_timeout_secs", grpc.idle_timeout_secs),
            ("grpc.max_calls_per_token", grpc.max_calls_per_token as u64),
            ("grpc.max_concurrent_streams", u64::from(grpc.max_concurrent_streams)),
        ];
        match counts.into_iter().find(|(_, v)| *v == 0) {
            Some((key, _)) => Err(bad(key, "must be at least 1")),
            None => Ok(()),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.backplane
            && !url.split(',').all(|u| u.trim().starts_with("nats://") || u.trim().starts_with("tls://"))
        {
            return Err(bad(
                "backplane",
                format!("'{url}': expected nats://HOST:PORT (comma-separated for a cluster)"),
            ));
        }
        if self.backplane.is_some() && !self.log.retention.channels.is_empty() {
            return Err(bad(
                "log.retention.channels",
                "per-channel retention is not available on the JetStream backplane (its limits are stream-wide); remove it or use the embedded log",
            ));
        }
        if ![1, 3, 5].contains(&self.nats.replicas) {
            return Err(bad("nats.replicas", "must be 1, 3 or 5"));
        }
        for ch in &self.bus.custom_channels {
            Channel::new(ch).map_err(|e| bad("bus.custom_channels", format!("'{ch}': {e}")))?;
        }
        if !(self.bus.publish_rate > 0.0 && self.bus.publish_rate.is_finite()) {
            return Err(bad("bus.publish_rate", "must be a positive number of events per second"));
        }
        if !(self.bus.publish_burst >= 1.0 && self.bus.publish_burst.is_finite()) {
            return Err(bad("bus.publish_burst", "must be at least 1"));
        }
        if self.bus.max_event_bytes < 256 || self.bus.max_event_bytes > 4 * 1024 * 1024 {
            return Err(bad("bus.max_event_bytes", "must be between 256 and 4194304"));
        }
        self.positive()?;
        self.ingest_config()?;
        self.standard_webhook_channels()?;
        if self.grpc.max_message_bytes < self.bus.max_event_bytes + 1024 {
            return Err(bad("grpc.max_message_bytes", "must leave room for one event of bus.max_event_bytes (+1 KiB)"));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(bad("tls", "set both cert_file and key_file, or neither"));
        }
        if self.log.retention.default.max_events == 0 {
            return Err(bad("log.retention.max_events", "must be at least 1"));
        }
        for (name, limits) in &self.log.retention.channels {
            Channel::new(name).map_err(|e| bad("log.retention.channels", format!("'{name}': {e}")))?;
            if limits.max_events == 0 {
                return Err(bad(&format!("log.retention.channels.{name}.max_events"), "must be at least 1"));
            }
        }
        Ok(())
    }

    /// Each Standard Webhooks source publishes only to channels that exist: the catalog's or
    /// the configured custom ones.
    fn standard_webhook_channels(&self) -> Result<(), ConfigError> {
        for (source, hook) in &self.webhooks.standard {
            for ch in &hook.channels {
                let c = Channel::new(ch)
                    .map_err(|e| bad(&format!("webhooks.standard.{source}.channels"), format!("'{ch}': {e}")))?;
                if !switchyard::catalog::Catalog::global().routes_to(&c) && !self.bus.custom_channels.contains(ch) {
                    return Err(bad(
                        &format!("webhooks.standard.{source}.channels"),
                        format!("'{ch}' is not a catalog channel nor in bus.custom_channels"),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn bus_config(&self) -> BusConfig {
        let custom_channels: BTreeSet<Channel> =
            self.bus.custom_channels.iter().filter_map(|c| Channel::new(c).ok()).collect();
        BusConfig {
            policy: Policy { max_event_bytes: self.bus.max_event_bytes, custom_channels },
            coalesce_window: Duration::from_millis(self.bus.coalesce_window_ms),
            publish_rate: switchyard::rate::Rate { per_sec: self.bus.publish_rate, burst: self.bus.publish_burst },
        }
    }

    pub fn log_config(&self) -> EmbeddedConfig {
        EmbeddedConfig {
            fsync: self.log.fsync,
            batch_interval: Duration::from_millis(self.log.batch_interval_ms.max(1)),
            retention: self.log.retention.clone(),
            trim_interval: Duration::from_secs(self.log.trim_interval_secs.max(1)),
            quotas: self.log.quotas,
            cache_bytes: self.log.cache_mib.max(1) << 20,
            ..EmbeddedConfig::default()
        }
    }

    pub fn secret_file(&self) -> PathBuf {
        self.auth.secret_file.clone().unwrap_or_else(|| self.data_dir.join("secret.key"))
    }
}

/// Reads the real process environment.
pub fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// For tests: an environment from a map.
pub fn map_env(map: HashMap<&'static str, &'static str>) -> impl Fn(&str) -> Option<String> {
    move |k| map.get(k).map(|v| (*v).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layering_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from-file\"\nhttp_addr = \"127.0.0.1:1\"\n[log]\nfsync = \"batch\"\n[log.retention]\nmax_events = 5\nmax_age_secs = 60\n[log.retention.channels.jobs]\nmax_events = 2\nmax_age_secs = 10\n[bus]\ncustom_channels = [\"ops\"]\n",
        )
        .unwrap();
        let env = map_env([("SWITCHYARD_DATA_DIR", "/from-env"), ("SWITCHYARD_HTTP_ADDR", "127.0.0.1:2")].into());
        let c =
            Config::load(Some(&file), &env, &Overrides { data_dir: Some("/from-flag".into()), ..Default::default() })
                .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from-flag"));
        assert_eq!(c.http_addr.port(), 2);
        assert_eq!(c.log.fsync, Fsync::Batch);
        assert_eq!(c.log.retention.default.max_events, 5);
        assert_eq!(c.log.retention.for_channel(&Channel::new("jobs/1").unwrap()).max_events, 2);
        assert!(c.bus_config().policy.custom_channels.contains(&Channel::new("ops").unwrap()));
    }

    #[test]
    fn debug_output_never_carries_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(
            &file,
            "[webhooks.shopify]\nsecrets = [\"shpss_SHOPIFY\"]\n[webhooks.xero]\nkeys = [\"XERO_KEY\"]\n\
             [webhooks.unleashed]\nkeys = [\"UNLEASHED_KEY\"]\ntenant = \"acme\"\n\
             [webhooks.standard.erp]\nsecrets = [\"whsec_STANDARD\"]\ntenant = \"acme\"\nchannels = [\"alerts\"]\n\
             [nats]\npassword = \"NATS_PASSWORD\"\ntoken = \"NATS_TOKEN\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), &map_env(HashMap::new()), &Overrides::default()).unwrap();
        assert_eq!(
            c.webhooks.platforms["shopify"]["secrets"][0].as_str(),
            Some("shpss_SHOPIFY"),
            "the secret is there to use"
        );
        let printed = format!("{c:?} {c:#?}");
        for secret in ["shpss_SHOPIFY", "XERO_KEY", "UNLEASHED_KEY", "whsec_STANDARD", "NATS_PASSWORD", "NATS_TOKEN"] {
            assert!(!printed.contains(secret), "{secret} printed");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let none = map_env(HashMap::new());
        let env = map_env([("SWITCHYARD_GRPC_ADDR", "nope")].into());
        let e = Config::load(None, &env, &Overrides::default()).unwrap_err();
        assert!(e.to_string().starts_with("SWITCHYARD_GRPC_ADDR"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(&file, "[bus]\ncustom_channels = [\"Bad Name\"]\n").unwrap();
        let e = Config::load(Some(&file), &none, &Overrides::default()).unwrap_err();
        assert!(e.to_string().starts_with("bus.custom_channels"), "{e}");
        std::fs::write(&file, "[grpc]\nmax_message_bytes = 1000\n").unwrap();
        let e = Config::load(Some(&file), &none, &Overrides::default()).unwrap_err();
        assert!(e.to_string().starts_with("grpc.max_message_bytes"), "{e}");
        std::fs::write(&file, "nonsense = 1\n").unwrap();
        let e = Config::load(Some(&file), &none, &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("nonsense"), "{e}");
        assert_eq!(Config::load(None, &none, &Overrides::default()).unwrap(), Config::default());
        let env = map_env([("SWITCHYARD_LOG_FORMAT", "yaml")].into());
        let e = Config::load(None, &env, &Overrides::default()).unwrap_err();
        assert!(e.to_string().starts_with("SWITCHYARD_LOG_FORMAT") && e.to_string().contains("json"), "{e}");
        std::fs::write(&file, "[telemetry]\nlog_format = \"xml\"\n").unwrap();
        let e = Config::load(Some(&file), &none, &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("xml"), "{e}");
    }

    #[test]
    fn log_format_and_metric_labels_are_read_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(&file, "[metrics]\ntenant_labels = true\nmax_tenants = 7\n").unwrap();
        let env = map_env([("SWITCHYARD_LOG_FORMAT", "json")].into());
        let c = Config::load(Some(&file), &env, &Overrides::default()).unwrap();
        assert_eq!(c.telemetry.log_format, LogFormat::Json);
        assert_eq!(c.metrics, MetricsConfig { tenant_labels: true, max_tenants: 7 });
        assert!(!Config::default().metrics.tenant_labels, "no tenant names on /metrics by default");
    }
}
