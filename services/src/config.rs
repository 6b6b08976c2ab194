//! `switchyard-ingest --config FILE` (or `ingest = FILE` under `switchyard serve`): which
//! connectors run, their credentials, and how often. Credentials are never logged: this type's
//! Debug prints only which connectors are configured.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use serde::Deserialize;
use tokio::sync::{Notify, watch};

use crate::{
    amazon::{Amazon, AmazonConfig},
    connector::Source,
    http::{Http, RetryPolicy},
    period::Zone,
    scheduler::{self, Schedule},
    shopify::{Shopify, ShopifyConfig},
    sink::Sink,
    state::StateFile,
    unleashed::{Unleashed, UnleashedConfig},
    xero::{Xero, XeroConfig},
};

#[derive(Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Cursors and rotated tokens live here (default `data/ingest`).
    pub state_dir: Option<PathBuf>,
    /// Seconds between syncs (default 300); `intervals.<source>` overrides per connector.
    pub interval_secs: Option<u64>,
    pub intervals: BTreeMap<String, u64>,
    /// Seconds to wait after a webhook before the sync it triggers (default 2).
    pub debounce_secs: Option<u64>,
    /// The tenants' timezone (IANA, e.g. `Europe/London`; default `UTC`): where "today" and
    /// "month to date" begin in every figure.
    pub timezone: Option<String>,
    pub shopify: Option<ShopifyConfig>,
    pub xero: Option<XeroConfig>,
    pub amazon: Option<AmazonConfig>,
    pub unleashed: Option<UnleashedConfig>,
    /// How every connector's HTTPS calls retry (`[retry]`).
    pub retry: RetryConfig,
}

/// `[retry]`: attempts and waits for calls to a platform (defaults in [`RetryPolicy`]).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per call, the first included (default 4).
    pub attempts: Option<u32>,
    /// First backoff after a failure, doubling per attempt with full jitter (default 500).
    pub backoff_ms: Option<u64>,
    /// Longest single wait, whatever Retry-After asks (default 120,000).
    pub max_wait_ms: Option<u64>,
    /// Per-call timeout (default 30).
    pub timeout_secs: Option<u64>,
}

impl RetryConfig {
    pub fn policy(&self) -> RetryPolicy {
        let d = RetryPolicy::default();
        RetryPolicy {
            attempts: self.attempts.unwrap_or(d.attempts).max(1),
            backoff: self.backoff_ms.map_or(d.backoff, Duration::from_millis),
            max_wait: self.max_wait_ms.map_or(d.max_wait, Duration::from_millis),
            timeout: self.timeout_secs.map_or(d.timeout, |s| Duration::from_secs(s.max(1))),
        }
    }
}

impl std::fmt::Debug for IngestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestConfig")
            .field("state_dir", &self.state_dir)
            .field("shopify", &self.shopify.is_some())
            .field("xero", &self.xero.is_some())
            .field("amazon", &self.amazon.is_some())
            .field("unleashed", &self.unleashed.is_some())
            .finish_non_exhaustive()
    }
}

impl IngestConfig {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(tz) = &config.timezone {
            Zone::new(tz)?;
        }
        Ok(config)
    }

    fn schedule(&self, source: Source) -> Schedule {
        let secs = self.intervals.get(source.name()).copied().or(self.interval_secs).unwrap_or(300);
        Schedule {
            interval: Duration::from_secs(secs.max(1)),
            debounce: Duration::from_secs(self.debounce_secs.unwrap_or(2)),
            ..Schedule::default()
        }
    }

    /// The tenants whose webhooks should trigger syncs.
    pub fn tenants(&self) -> Vec<String> {
        let mut t: Vec<String> = [
            self.shopify.as_ref().map(|c| c.tenant.clone()),
            self.xero.as_ref().map(|c| c.tenant.clone()),
            self.amazon.as_ref().map(|c| c.tenant.clone()),
            self.unleashed.as_ref().map(|c| c.tenant.clone()),
        ]
        .into_iter()
        .flatten()
        .collect();
        t.sort();
        t.dedup();
        t
    }
}

/// Everything `switchyard-ingest` runs, started.
pub struct Running {
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    pub triggers: BTreeMap<&'static str, Arc<Notify>>,
}

/// Starts every configured connector on its schedule, publishing into `sink`, and (when
/// `bus` is given as `(url, token)`) a watcher that turns webhooks into immediate syncs.
pub fn start(
    config: &IngestConfig,
    sink: Arc<dyn Sink>,
    bus: Option<(String, String)>,
    stop: watch::Receiver<bool>,
) -> Result<Running, String> {
    let dir = config.state_dir.clone().unwrap_or_else(|| PathBuf::from("data/ingest"));
    let zone = match &config.timezone {
        Some(name) => Zone::new(name)?,
        None => Zone::utc(),
    };
    let http = || Http::new(config.retry.policy());
    let mut tasks = Vec::new();
    let mut triggers = std::collections::HashMap::new();
    let mut names = BTreeMap::new();
    macro_rules! run {
        ($source:expr, $connector:expr) => {{
            let t = Arc::new(Notify::new());
            triggers.insert($source, t.clone());
            names.insert($source.name(), t.clone());
            tasks.push(scheduler::spawn($connector, sink.clone(), config.schedule($source), t, stop.clone()));
        }};
    }
    if let Some(c) = &config.shopify {
        run!(
            Source::Shopify,
            Shopify::new(c.clone(), http()?, StateFile::new(&dir, "shopify")).with_zone(zone.clone())
        );
    }
    if let Some(c) = &config.xero {
        run!(Source::Xero, Xero::new(c.clone(), http()?, StateFile::new(&dir, "xero")).with_zone(zone.clone()));
    }
    if let Some(c) = &config.amazon {
        run!(Source::Amazon, Amazon::new(c.clone(), http()?, StateFile::new(&dir, "amazon")).with_zone(zone.clone()));
        if let Some(q) = &c.sqs {
            let poller = crate::amazon::sqs::Poller::new(q.clone(), http()?, &c.tenant, c.reorder_point);
            tasks.push(crate::amazon::sqs::spawn(poller, sink.clone(), names["amazon"].clone(), stop.clone()));
        }
    }
    if let Some(c) = &config.unleashed {
        run!(Source::Unleashed, Unleashed::new(c.clone(), http()?, StateFile::new(&dir, "unleashed")).with_zone(zone));
    }
    if tasks.is_empty() {
        return Err("no connector is configured (add [shopify], [xero], [amazon] or [unleashed])".into());
    }
    if let Some((url, token)) = bus {
        for tenant in config.tenants() {
            tasks.push(scheduler::watch_webhooks(url.clone(), token.clone(), tenant, triggers.clone(), stop.clone()));
        }
    }
    Ok(Running { tasks, triggers: names })
}
