//! The handle: endpoints' lifecycle (create, list, delete, enable, rotate), the operator's
//! tools (replay, resend, redrive), and the supervisor that runs a deliverer for each endpoint
//! this node holds the lease of.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use switchyard::{
    auth::Principal,
    bus::Bus,
    log::{Stream, kv::Kv},
    names::{EventId, Tenant},
    proto::v1::{EndpointDisabled, Event, event::Payload},
};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

use crate::{
    clock::Clock,
    email::{Mailer, SmtpConfig},
    endpoint::{DeadLetter, Disabled, Endpoint, EndpointId, Owed, Progress, Spec, StoredSecret, Target, keys},
    filter::{SelectError, Selector},
    ladder::Ladder,
    seal::Sealer,
    signature::SigningSecret,
    target::TargetPolicy,
    transport::{Outcome, Reason, Transport},
    worker::{Status, Worker},
};

/// `[outbound]` in the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub ladder: Ladder,
    /// An endpoint failing this long with no success is disabled (default 5 days, as Svix).
    pub disable_after_secs: u64,
    /// Attempts in flight per unordered endpoint.
    pub max_in_flight: usize,
    /// Attempts in flight on this node over all endpoints (each holds a connection).
    pub max_in_flight_total: usize,
    /// Events an endpoint may owe (retries, replays) before it stops taking new ones.
    pub max_owed: usize,
    pub max_endpoints_per_tenant: usize,
    /// How long alerts for people collect into one message after the first.
    pub group_window_ms: u64,
    /// How long a rotated-out signing secret still signs beside the new one.
    pub rotation_overlap_secs: u64,
    /// Where messages for people link to (default: this server's HTTP address).
    pub dashboard_url: String,
    /// Hosts that may be reached over plain `http` (see [`TargetPolicy`]).
    pub allow_http_hosts: Vec<String>,
    /// Hosts that may resolve to loopback, private or link-local addresses.
    pub allow_private_hosts: Vec<String>,
    pub smtp: Option<SmtpConfig>,
    pub connect_timeout_secs: u64,
    pub attempt_timeout_secs: u64,
    /// Endpoints defined here rather than through the API.
    pub endpoints: Vec<StaticEndpoint>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ladder: Ladder::default(),
            disable_after_secs: 5 * 24 * 3600,
            max_in_flight: 32,
            max_in_flight_total: 64,
            max_owed: 10_000,
            max_endpoints_per_tenant: 100,
            group_window_ms: 30_000,
            rotation_overlap_secs: 24 * 3600,
            dashboard_url: String::new(),
            allow_http_hosts: Vec::new(),
            allow_private_hosts: Vec::new(),
            smtp: None,
            connect_timeout_secs: 5,
            attempt_timeout_secs: 15,
            endpoints: Vec::new(),
        }
    }
}

impl Config {
    pub fn disable_after(&self) -> Duration {
        Duration::from_secs(self.disable_after_secs)
    }

    pub fn targets(&self) -> TargetPolicy {
        TargetPolicy {
            allow_http_hosts: self.allow_http_hosts.clone(),
            allow_private_hosts: self.allow_private_hosts.clone(),
        }
    }

    pub fn group_window(&self) -> Duration {
        Duration::from_millis(self.group_window_ms)
    }
}

/// `[[outbound.endpoints]]`: a static endpoint, with its id and secret in the file (its other
/// fields are a [`Spec`]'s, which refuses unknown ones).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct StaticEndpoint {
    pub id: String,
    pub tenant: String,
    /// `whsec_…`; the operator gives the same to the receiver.
    pub secret: Option<switchyard::secret::Secret>,
    pub spec: Spec,
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for StaticEndpoint {
    type Error = String;

    // Not `#[serde(flatten)]`: serde cannot refuse unknown fields through it.
    fn try_from(mut m: serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        let mut take = |k: &str| m.remove(k).and_then(|v| v.as_str().map(str::to_owned));
        let id = take("id").ok_or("outbound.endpoints: id is required")?;
        let tenant = take("tenant").ok_or("outbound.endpoints: tenant is required")?;
        let secret = take("secret").map(Into::into);
        let spec = serde_json::from_value(serde_json::Value::Object(m))
            .map_err(|e| format!("outbound.endpoints {id}: {e}"))?;
        Ok(Self { id, tenant, secret, spec })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("{0}")]
    Invalid(SelectError),
    #[error("no endpoint {0}")]
    NotFound(String),
    #[error("the tenant has {0} endpoints, the most allowed")]
    TooMany(usize),
    #[error("endpoint {0} is defined in the config file; change it there")]
    Static(String),
    #[error("the store is unavailable: {0}")]
    Store(String),
}

impl OutboundError {
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Invalid(e) => Some(e.field),
            _ => None,
        }
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> OutboundError {
    OutboundError::Invalid(SelectError { field, message: message.into() })
}

fn store(e: impl std::fmt::Display) -> OutboundError {
    OutboundError::Store(e.to_string())
}

/// Counters for `/metrics`: label sets fixed in size (reasons, attempt numbers).
#[derive(Debug, Default)]
pub struct Metrics {
    pub delivered: AtomicU64,
    failures: [AtomicU64; Reason::ALL.len()],
    /// Attempts by their number: 1…9, and 10 or more.
    attempts: [AtomicU64; 10],
}

impl Metrics {
    pub(crate) fn attempted(&self, attempt: u32, outcome: &Outcome) {
        let n = (attempt.clamp(1, 10) - 1) as usize;
        self.attempts[n].fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Delivered { .. } => self.delivered.fetch_add(1, Ordering::Relaxed),
            Outcome::Failed { reason, .. } => self.failures[*reason as usize].fetch_add(1, Ordering::Relaxed),
        };
    }

    pub fn failures(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Reason::ALL.iter().map(|r| (r.as_str(), self.failures[*r as usize].load(Ordering::Relaxed)))
    }

    /// `(attempt number label, count)`.
    pub fn attempts(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        self.attempts.iter().enumerate().map(|(i, c)| {
            let label = if i == 9 { "10+".to_owned() } else { (i + 1).to_string() };
            (label, c.load(Ordering::Relaxed))
        })
    }
}

/// What every deliverer of this node shares.
pub(crate) struct Shared {
    pub bus: Bus,
    pub kv: Arc<dyn Kv>,
    pub transport: Arc<dyn Transport>,
    pub mailer: Option<Mailer>,
    pub sealer: Sealer,
    pub policy: Arc<TargetPolicy>,
    pub config: Config,
    pub metrics: Metrics,
    /// This node's name in leases.
    pub node: String,
    /// Committed records to the deliverers that select them.
    pub dispatch: Arc<crate::dispatch::Dispatch>,
    /// Wakes the supervisor (a local change, a deliverer that stopped).
    pub wake: Notify,
    /// Attempts in flight over every endpoint: one permit each.
    pub attempts: Arc<tokio::sync::Semaphore>,
    pub clock: Clock,
    /// Held from counting a tenant's endpoints to writing a new one, so concurrent creates on
    /// this node cannot pass the per-tenant cap together.
    pub creating: tokio::sync::Mutex<()>,
}

impl Shared {
    pub(crate) fn clock_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Disables `ep` (it failed for too long) and says so with an `outbound:endpoint-disabled`
    /// event, which reaches the dashboard's alerts and any endpoint that selects it.
    pub(crate) async fn disable(&self, ep: &Endpoint, progress: &Progress, now: u64) {
        let reason = format!("failing for {} s with no success", self.config.disable_after_secs);
        let mut off = ep.clone();
        off.disabled = Some(Disabled { at_ms: now, reason: reason.clone() });
        if let Err(error) = self.kv.commit(vec![(keys::endpoint(&ep.id), Some(to_json(&off)))]).await {
            tracing::error!(endpoint = %ep.id, %error, "cannot record that the endpoint is disabled");
        }
        tracing::warn!(endpoint = %ep.id, tenant = %ep.tenant, "outbound endpoint disabled: {reason}");
        let since = progress.failing_since_ms.unwrap_or(now);
        let event = Event {
            tenant: ep.tenant.clone(),
            key: ep.id.to_string(),
            source: "outbound".into(),
            idempotency_key: format!("outbound-disabled-{}-{now}", ep.id),
            payload: Some(Payload::OutboundEndpointDisabled(EndpointDisabled {
                endpoint_id: ep.id.to_string(),
                kind: ep.spec.kind.clone(),
                target: target_label(ep),
                reason,
                failing_since: Some(switchyard::proto::Timestamp {
                    seconds: (since / 1000) as i64,
                    nanos: ((since % 1000) * 1_000_000) as i32,
                }),
                last_error: progress.last_error.clone(),
            })),
            ..Default::default()
        };
        if let Err(error) = self.bus.publish_one(&Principal::system(), event).await {
            tracing::error!(endpoint = %ep.id, %error, "cannot publish outbound:endpoint-disabled");
        }
    }
}

/// The target's host, or the first recipient's domain: what an alert may show of it.
fn target_label(ep: &Endpoint) -> String {
    match ep.spec.target() {
        Ok(Target::Webhook { url } | Target::Slack { url }) => {
            url::Url::parse(&url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default()
        }
        Ok(Target::Email { to }) => to.first().and_then(|t| t.rsplit('@').next()).unwrap_or_default().to_owned(),
        Err(_) => String::new(),
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// An endpoint as its owner sees it: never a secret.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    pub id: EndpointId,
    #[serde(flatten)]
    pub spec: Spec,
    pub created_ms: u64,
    /// `healthy`, `retrying` or `disabled`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Disabled>,
    pub cursor: EventId,
    /// Events in the tenant's history after the cursor (an upper bound on what it still owes).
    pub lag: u64,
    pub owed: usize,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    pub lost_to_retention: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<u64>,
    pub last_success_ms: u64,
    pub r#static: bool,
    /// Which node holds the delivery lease, on a cluster (`<pid>-<random>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliverer: Option<String>,
}

/// An endpoint this node delivers for, as `/metrics` shows it.
#[derive(Debug, Clone)]
pub struct Local {
    pub id: EndpointId,
    pub cursor: EventId,
    pub owed: usize,
    pub in_flight: usize,
    pub failing: bool,
}

/// A range of history to deliver again.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Replay {
    /// Ids after this one…
    #[serde(default)]
    pub after_id: Option<u64>,
    /// …up to and including this one.
    #[serde(default)]
    pub to_id: Option<u64>,
    /// Or by time, Unix ms: published at or after…
    #[serde(default)]
    pub since_ms: Option<u64>,
    /// …and before.
    #[serde(default)]
    pub until_ms: Option<u64>,
}

/// Most events one replay may owe.
pub const MAX_REPLAY: usize = 10_000;

struct Running {
    stop: watch::Sender<bool>,
    status: Arc<Mutex<Status>>,
    revision: u64,
    task: JoinHandle<()>,
}

struct Inner {
    shared: Arc<Shared>,
    running: Mutex<HashMap<EndpointId, Running>>,
}

/// What outbound delivery runs on.
pub struct Parts {
    pub bus: Bus,
    /// Fed by the bus's log: its `Feed` calls [`crate::dispatch::Dispatch::committed`].
    pub dispatch: Arc<crate::dispatch::Dispatch>,
    /// The log's store for endpoints and their progress.
    pub kv: Arc<dyn Kv>,
    /// How webhooks and Slack messages leave ([`crate::transport::Http`] in production).
    pub transport: Arc<dyn Transport>,
}

/// The outbound service of one node. Cheap to clone.
#[derive(Clone)]
pub struct Outbound(Arc<Inner>);

/// How long a node's claim to deliver for an endpoint lasts unless renewed, and how often it
/// renews: a node that dies hands its endpoints over within the lease.
pub const LEASE: Duration = Duration::from_secs(10);
const RENEW: Duration = Duration::from_secs(3);

impl Outbound {
    /// Starts the supervisor (see [`Parts`]); `server_secret` seals signing secrets; `node` is
    /// this process's name in leases.
    pub fn start(
        parts: Parts,
        config: Config,
        server_secret: &[u8],
        node: String,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, String> {
        let Parts { bus, dispatch, kv, transport } = parts;
        let mailer = config.smtp.as_ref().map(Mailer::new).transpose()?;
        let config_total = config.max_in_flight_total.max(1);
        let shared = Arc::new(Shared {
            bus,
            kv,
            transport,
            mailer,
            sealer: Sealer::new(server_secret),
            policy: Arc::new(config.targets()),
            config,
            metrics: Metrics::default(),
            node,
            dispatch,
            wake: Notify::new(),
            attempts: Arc::new(tokio::sync::Semaphore::new(config_total)),
            clock: Clock::new(),
            creating: tokio::sync::Mutex::new(()),
        });
        let this = Self(Arc::new(Inner { shared, running: Mutex::new(HashMap::new()) }));
        let supervisor = this.clone();
        tokio::spawn(async move { supervisor.supervise(stop).await });
        Ok(this)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.shared.metrics
    }

    fn shared(&self) -> &Shared {
        &self.0.shared
    }

    /// Writes the config file's endpoints (their spec and secret) into the store.
    pub async fn install_static(&self) -> Result<(), OutboundError> {
        for s in self.shared().config.endpoints.clone() {
            let id = EndpointId::parse(&s.id)
                .ok_or_else(|| invalid("outbound.endpoints.id", "must be ep_ and 16 lowercase hex digits"))?;
            let tenant = Tenant::new(&s.tenant).map_err(|e| invalid("outbound.endpoints.tenant", e.to_string()))?;
            let secret = match &s.secret {
                Some(raw) => SigningSecret::parse(raw).ok_or_else(|| {
                    invalid("outbound.endpoints.secret", "must be whsec_ and base64 of 24 to 64 bytes")
                })?,
                None => SigningSecret::generate(),
            };
            let existing = self.load(&id).await?;
            if existing.as_ref().is_some_and(|e| e.spec == s.spec && e.tenant == tenant.as_str()) {
                continue;
            }
            let cursor = self.start_cursor(&tenant, s.spec.start.as_deref()).await?;
            self.check_spec(&s.spec).await?;
            let mut ep = self.new_endpoint(id, &tenant, s.spec, &secret);
            ep.r#static = true;
            self.write_new(&ep, cursor).await?;
        }
        Ok(())
    }

    fn new_endpoint(&self, id: EndpointId, tenant: &Tenant, spec: Spec, secret: &SigningSecret) -> Endpoint {
        let secrets = vec![StoredSecret { sealed: self.shared().sealer.seal(secret), expires_ms: None }];
        Endpoint {
            id,
            tenant: tenant.to_string(),
            spec,
            secrets,
            created_ms: self.shared().clock_ms(),
            disabled: None,
            r#static: false,
            revision: 0,
        }
    }

    /// Checks a spec, the target's name resolved last (a lookup is the slow part).
    async fn check_spec(&self, spec: &Spec) -> Result<(), OutboundError> {
        Selector::new(&spec.types, &spec.channels, spec.filter.as_deref()).map_err(OutboundError::Invalid)?;
        if spec.rate_per_sec.is_some_and(|r| r == 0 || r > 100_000) {
            return Err(invalid("ratePerSec", "between 1 and 100000"));
        }
        if spec.description.len() > 500 {
            return Err(invalid("description", "at most 500 bytes"));
        }
        match spec.target().map_err(OutboundError::Invalid)? {
            Target::Webhook { url } | Target::Slack { url } => {
                self.shared().policy.check(&url).await.map_err(|e| invalid("url", e.to_string()))?;
            }
            Target::Email { to } => Mailer::check_recipients(&to).map_err(|e| invalid("to", e))?,
        }
        Ok(())
    }

    /// Where a new endpoint's cursor starts: `now`, an id, or `since=<time>`.
    async fn start_cursor(&self, tenant: &Tenant, start: Option<&str>) -> Result<EventId, OutboundError> {
        let log = self.shared().bus.log();
        match start.unwrap_or("now") {
            "now" => Ok(log.bounds(Stream::Tenant(tenant.clone())).await.map_err(store)?.head),
            s => match s.strip_prefix("since=") {
                Some(t) => {
                    let ms = switchyard::names::parse_time_ms(t).map_err(|e| invalid("start", e.0))?;
                    log.id_before(ms).await.map_err(store)
                }
                None => s.parse().map(EventId).map_err(|_| invalid("start", "now, an event id, or since=<time>")),
            },
        }
    }

    async fn write_new(&self, ep: &Endpoint, cursor: EventId) -> Result<(), OutboundError> {
        let progress = Progress { cursor, ..Default::default() };
        let writes =
            vec![(keys::endpoint(&ep.id), Some(to_json(ep))), (keys::progress(&ep.id), Some(to_json(&progress)))];
        self.shared().kv.commit(writes).await.map_err(store)?;
        self.0.shared.wake.notify_one();
        Ok(())
    }

    /// Creates an endpoint for `tenant`; returns it and its signing secret, shown this once.
    pub async fn create(&self, tenant: &Tenant, spec: Spec) -> Result<(View, String), OutboundError> {
        self.check_spec(&spec).await?;
        let _creating = self.shared().creating.lock().await;
        let count = self.endpoints(Some(tenant)).await?.len();
        let max = self.shared().config.max_endpoints_per_tenant;
        if count >= max {
            return Err(OutboundError::TooMany(max));
        }
        let cursor = self.start_cursor(tenant, spec.start.as_deref()).await?;
        let secret = SigningSecret::generate();
        let ep = self.new_endpoint(EndpointId::generate(), tenant, spec, &secret);
        self.write_new(&ep, cursor).await?;
        Ok((self.view(ep).await?, secret.reveal()))
    }

    async fn load(&self, id: &EndpointId) -> Result<Option<Endpoint>, OutboundError> {
        let raw = self.shared().kv.get(&keys::endpoint(id)).await.map_err(store)?;
        Ok(raw.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// The endpoint `id` of `tenant` (another tenant's is as absent as a missing one).
    async fn owned(&self, tenant: &Tenant, id: &str) -> Result<Endpoint, OutboundError> {
        let missing = || OutboundError::NotFound(id.chars().take(40).collect());
        let id = EndpointId::parse(id).ok_or_else(missing)?;
        self.load(&id).await?.filter(|e| e.tenant == tenant.as_str()).ok_or_else(missing)
    }

    /// Every endpoint (of one tenant, or all).
    pub async fn endpoints(&self, tenant: Option<&Tenant>) -> Result<Vec<Endpoint>, OutboundError> {
        let rows = self.shared().kv.scan(keys::ENDPOINTS).await.map_err(store)?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<Endpoint>(&v).ok())
            .filter(|e| tenant.is_none_or(|t| e.tenant == t.as_str()))
            .collect())
    }

    pub async fn list(&self, tenant: &Tenant) -> Result<Vec<View>, OutboundError> {
        let mut out = Vec::new();
        for ep in self.endpoints(Some(tenant)).await? {
            out.push(self.view(ep).await?);
        }
        Ok(out)
    }

    /// Every tenant's endpoints with their tenant (the system admin's console).
    pub async fn list_all(&self) -> Result<Vec<(String, View)>, OutboundError> {
        let mut out = Vec::new();
        for ep in self.endpoints(None).await? {
            let tenant = ep.tenant.clone();
            out.push((tenant, self.view(ep).await?));
        }
        Ok(out)
    }

    /// The endpoints this node delivers for now, read without the store (for `/metrics`).
    pub fn local(&self) -> Vec<Local> {
        let running = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Local> = running
            .iter()
            .map(|(id, r)| {
                let s = r.status.lock().unwrap_or_else(|p| p.into_inner());
                Local {
                    id: id.clone(),
                    cursor: s.progress.cursor,
                    owed: s.owed,
                    in_flight: s.in_flight,
                    failing: s.progress.failing_since_ms.is_some(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    pub async fn get(&self, tenant: &Tenant, id: &str) -> Result<View, OutboundError> {
        let ep = self.owned(tenant, id).await?;
        self.view(ep).await
    }

    async fn view(&self, ep: Endpoint) -> Result<View, OutboundError> {
        let local = self
            .0
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ep.id)
            .map(|r| r.status.lock().unwrap_or_else(|p| p.into_inner()).clone());
        let (progress, owed) = match local {
            Some(s) => (s.progress, s.owed),
            None => {
                let kv = &self.shared().kv;
                let p = kv.get(&keys::progress(&ep.id)).await.map_err(store)?;
                let p: Progress = p.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
                (p, kv.scan(&keys::owed_prefix(&ep.id)).await.map_err(store)?.len())
            }
        };
        let lease = self.shared().kv.get(&format!("lease.{}", ep.id)).await.map_err(store)?;
        let deliverer = lease
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["holder"].as_str().map(str::to_owned));
        let tenant = Tenant::new(&ep.tenant).map_err(|e| store(e.to_string()))?;
        let head = self.shared().bus.log().bounds(Stream::Tenant(tenant)).await.map_err(store)?.head;
        let state = match (&ep.disabled, owed > 0 || progress.failing_since_ms.is_some()) {
            (Some(_), _) => "disabled",
            (None, true) => "retrying",
            (None, false) => "healthy",
        };
        Ok(View {
            id: ep.id,
            spec: ep.spec,
            created_ms: ep.created_ms,
            state,
            disabled: ep.disabled,
            cursor: progress.cursor,
            lag: head.0.saturating_sub(progress.cursor.0),
            owed,
            delivered: progress.delivered,
            failed_attempts: progress.failed_attempts,
            dead_lettered: progress.dead_lettered,
            lost_to_retention: progress.lost_to_retention,
            last_error: progress.last_error,
            failing_since_ms: progress.failing_since_ms,
            last_success_ms: progress.last_success_ms,
            r#static: ep.r#static,
            deliverer,
        })
    }

    /// Deletes an endpoint and everything it kept.
    pub async fn delete(&self, tenant: &Tenant, id: &str) -> Result<(), OutboundError> {
        let ep = self.owned(tenant, id).await?;
        if ep.r#static {
            return Err(OutboundError::Static(ep.id.to_string()));
        }
        let kv = &self.shared().kv;
        let mut writes = vec![(keys::endpoint(&ep.id), None), (keys::progress(&ep.id), None)];
        for prefix in [keys::owed_prefix(&ep.id), keys::dead_prefix(&ep.id)] {
            writes.extend(kv.scan(&prefix).await.map_err(store)?.into_iter().map(|(k, _)| (k, None)));
        }
        kv.commit(writes).await.map_err(store)?;
        self.0.shared.wake.notify_one();
        Ok(())
    }

    /// Writes `ep` back with its revision bumped, so whichever node delivers for it reloads.
    async fn bump(&self, mut ep: Endpoint, mut writes: switchyard::log::kv::Writes) -> Result<(), OutboundError> {
        ep.revision += 1;
        writes.push((keys::endpoint(&ep.id), Some(to_json(&ep))));
        self.shared().kv.commit(writes).await.map_err(store)?;
        self.0.shared.wake.notify_one();
        Ok(())
    }

    /// Enables a disabled endpoint; delivery resumes from its cursor and what it owes.
    pub async fn enable(&self, tenant: &Tenant, id: &str) -> Result<View, OutboundError> {
        let mut ep = self.owned(tenant, id).await?;
        ep.disabled = None;
        let kv = &self.shared().kv;
        let mut p: Progress = kv
            .get(&keys::progress(&ep.id))
            .await
            .map_err(store)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        p.failing_since_ms = None;
        self.bump(ep.clone(), vec![(keys::progress(&ep.id), Some(to_json(&p)))]).await?;
        self.get(tenant, id).await
    }

    /// A new signing secret, shown this once; the old ones sign beside it until the overlap ends.
    pub async fn rotate(&self, tenant: &Tenant, id: &str) -> Result<String, OutboundError> {
        let mut ep = self.owned(tenant, id).await?;
        let now = self.shared().clock_ms();
        let until = now + self.shared().config.rotation_overlap_secs * 1000;
        ep.secrets.retain(|s| s.expires_ms.is_none_or(|e| e > now));
        for s in &mut ep.secrets {
            s.expires_ms = Some(s.expires_ms.unwrap_or(until).min(until));
        }
        let secret = SigningSecret::generate();
        ep.secrets.push(StoredSecret { sealed: self.shared().sealer.seal(&secret), expires_ms: None });
        self.bump(ep, Vec::new()).await?;
        Ok(secret.reveal())
    }

    pub async fn dead_letters(
        &self,
        tenant: &Tenant,
        id: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, OutboundError> {
        let ep = self.owned(tenant, id).await?;
        let rows = self.shared().kv.scan(&keys::dead_prefix(&ep.id)).await.map_err(store)?;
        Ok(rows.into_iter().filter_map(|(_, v)| serde_json::from_slice(&v).ok()).take(limit).collect())
    }

    /// Owes every dead letter again, from a fresh ladder; returns how many.
    pub async fn redrive(&self, tenant: &Tenant, id: &str) -> Result<usize, OutboundError> {
        let ep = self.owned(tenant, id).await?;
        let kv = &self.shared().kv;
        let now = self.shared().clock_ms();
        let mut writes = Vec::new();
        for (k, _) in kv.scan(&keys::dead_prefix(&ep.id)).await.map_err(store)?.into_iter().take(MAX_REPLAY) {
            if let Some(event) = keys::event_of(&k) {
                writes.push((k, None));
                writes.push((
                    keys::owed(&ep.id, event),
                    Some(to_json(&Owed { attempts: 0, next_ms: now, last_error: String::new() })),
                ));
            }
        }
        let n = writes.len() / 2;
        self.bump(ep, writes).await?;
        Ok(n)
    }

    /// Owes again every event of a range that the endpoint selects; returns how many.
    pub async fn replay(&self, tenant: &Tenant, id: &str, range: Replay) -> Result<usize, OutboundError> {
        let ep = self.owned(tenant, id).await?;
        let selector = Selector::new(&ep.spec.types, &ep.spec.channels, ep.spec.filter.as_deref())
            .map_err(OutboundError::Invalid)?;
        let log = self.shared().bus.log();
        let mut after = match (range.after_id, range.since_ms) {
            (Some(a), _) => EventId(a),
            (None, Some(ms)) => log.id_before(ms).await.map_err(store)?,
            (None, None) => return Err(invalid("afterId", "give afterId (and toId) or sinceMs (and untilMs)")),
        };
        let to = EventId(range.to_id.unwrap_or(u64::MAX));
        let now = self.shared().clock_ms();
        let mut writes = Vec::new();
        'pages: while writes.len() < MAX_REPLAY {
            let page = log.read(Stream::Tenant(tenant.clone()), after, 1024).await.map_err(store)?;
            let Some(last) = page.last().map(|r| r.id) else { break };
            for r in page {
                let late = range.until_ms.is_some_and(|u| r.published_ms() >= u);
                if r.id > to || late {
                    break 'pages;
                }
                if range.since_ms.is_none_or(|s| r.published_ms() >= s) && selector.matches(&r) {
                    writes.push((
                        keys::owed(&ep.id, r.id),
                        Some(to_json(&Owed { attempts: 0, next_ms: now, last_error: String::new() })),
                    ));
                }
            }
            after = last;
        }
        writes.truncate(MAX_REPLAY);
        let n = writes.len();
        self.bump(ep, writes).await?;
        Ok(n)
    }

    /// Owes one event again (whether or not it was delivered).
    pub async fn resend(&self, tenant: &Tenant, id: &str, event: u64) -> Result<(), OutboundError> {
        let n = self
            .replay(
                tenant,
                id,
                Replay { after_id: Some(event.saturating_sub(1)), to_id: Some(event), ..Default::default() },
            )
            .await?;
        match n {
            0 => Err(invalid("eventId", "no such event of this tenant that the endpoint selects")),
            _ => Ok(()),
        }
    }

    /// Starts, renews and stops deliverers: every few seconds, and at once on a local change.
    async fn supervise(self, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(error) = self.reconcile().await {
                tracing::warn!(%error, "outbound: cannot read endpoints; retrying");
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = self.0.shared.wake.notified() => {}
                _ = tokio::time::sleep(RENEW) => {}
            }
        }
        for (_, r) in self.0.running.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            let _ = r.stop.send(true);
        }
    }

    async fn reconcile(&self) -> Result<(), OutboundError> {
        let endpoints = self.endpoints(None).await?;
        let shared = &self.0.shared;
        let mut wanted = HashMap::new();
        for ep in endpoints.into_iter().filter(|e| e.disabled.is_none()) {
            if shared.kv.lease(ep.id.as_str(), &shared.node, LEASE).await.map_err(store)? {
                wanted.insert(ep.id.clone(), ep);
            }
        }
        let mut running = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
        // A deliverer that must stop is told to and stays listed until it has (its last progress
        // recorded), so its successor never loads a cursor it is still moving.
        running.retain(|id, r| {
            if wanted.get(id).is_none_or(|e| e.revision != r.revision) {
                let _ = r.stop.send(true);
            }
            !r.task.is_finished()
        });
        for (id, ep) in wanted {
            if running.contains_key(&id) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            let status = Arc::new(Mutex::new(Status::default()));
            let (shared, st, revision) = (self.0.shared.clone(), status.clone(), ep.revision);
            let task = tokio::spawn(async move {
                // The endpoint as it is now: the list this start was decided on may predate a
                // change (its own worker disabling it, say).
                let fresh = match shared.kv.get(&keys::endpoint(&ep.id)).await {
                    Ok(Some(bytes)) => serde_json::from_slice::<Endpoint>(&bytes).ok(),
                    _ => None,
                };
                let Some(ep) = fresh.filter(|e| e.disabled.is_none() && e.revision == revision) else { return };
                match Worker::load(shared, ep, st).await {
                    Ok(w) => w.run(stopped).await,
                    Err(error) => tracing::error!(%error, "outbound endpoint cannot start"),
                }
            });
            running.insert(id, Running { stop, status, revision, task });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_section_reads_static_endpoints_and_refuses_unknown_fields() {
        let c: Config = toml::from_str(
            r#"
            allow_private_hosts = ["127.0.0.1"]
            [[endpoints]]
            id = "ep_0123456789abcdef"
            tenant = "acme"
            url = "https://example.com/h"
            types = ["*:sync-error"]
            "#,
        )
        .unwrap();
        assert_eq!(c.targets().allow_private_hosts, vec!["127.0.0.1"]);
        assert_eq!(c.endpoints[0].spec.types, vec!["*:sync-error"]);
        assert!(toml::from_str::<Config>("nope = 1").is_err());
        let typo = "[[endpoints]]\nid = \"ep_0123456789abcdef\"\ntenant = \"a\"\nurl = \"x\"\ntypez = []";
        assert!(toml::from_str::<Config>(typo).is_err(), "a misspelt endpoint field is refused");
    }
}
