//! `switchyard-ingest --config FILE` (or `ingest = FILE` under `switchyard serve`): which
//! connectors run, their credentials, and how often. Credentials are never logged: this type's
//! Debug prints only which connectors are configured.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use serde::Deserialize;
use tokio::sync::{Notify, watch};

use crate::{
    http::RetryPolicy,
    period::Zone,
    platform,
    scheduler::{self, Context, Schedule, Trigger},
    sink::Sink,
};

#[derive(Clone, Deserialize, Default)]
#[serde(default)]
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
    /// How every connector's HTTPS calls retry (`[retry]`).
    pub retry: RetryConfig,
    /// `[<platform>]`: each configured connector's section, read by its platform
    /// (`shopify::ShopifyConfig`, ...). Any other key is refused by [`IngestConfig::from_toml`].
    #[serde(flatten)]
    pub platforms: BTreeMap<String, toml::Value>,
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
            .field("platforms", &self.platforms.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl IngestConfig {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(tz) = &config.timezone {
            Zone::new(tz)?;
        }
        for name in config.platforms.keys() {
            config.platform(name)?;
        }
        config.tenants()?;
        Ok(config)
    }

    /// The platform a top-level section names, or why that key is wrong.
    fn platform(&self, name: &str) -> Result<&'static platform::Platform, String> {
        platform::get(name).ok_or_else(|| {
            let known: Vec<_> = platform::ALL.iter().map(|p| p.name).collect();
            format!("unknown key '{name}': not a setting nor a platform ({})", known.join(", "))
        })
    }

    fn schedule(&self, name: &str) -> Schedule {
        let secs = self.intervals.get(name).copied().or(self.interval_secs).unwrap_or(300);
        Schedule {
            interval: Duration::from_secs(secs.max(1)),
            debounce: Duration::from_secs(self.debounce_secs.unwrap_or(2)),
            ..Schedule::default()
        }
    }

    /// The tenants whose webhooks should trigger syncs; checks every platform section.
    pub fn tenants(&self) -> Result<Vec<String>, String> {
        let mut t = Vec::new();
        for (name, section) in &self.platforms {
            t.push((self.platform(name)?.connector.check)(section)?);
        }
        t.sort();
        t.dedup();
        Ok(t)
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
    if config.platforms.is_empty() {
        let known: Vec<_> = platform::ALL.iter().map(|p| format!("[{}]", p.name)).collect();
        return Err(format!("no connector is configured (add one of {})", known.join(", ")));
    }
    let mut tasks = Vec::new();
    let mut triggers = Vec::new();
    let mut names = BTreeMap::new();
    for (name, section) in &config.platforms {
        let p = config.platform(name)?;
        let trigger = Arc::new(Notify::new());
        let cx = Context {
            source: p.source,
            tenant: (p.connector.check)(section)?,
            dir: &dir,
            zone: &zone,
            retry: config.retry.policy(),
            sink: sink.clone(),
            schedule: config.schedule(p.name),
            trigger: trigger.clone(),
            stop: stop.clone(),
        };
        tasks.extend((p.connector.start)(section, &cx)?);
        triggers.push(Trigger { news: p.news, notify: trigger.clone() });
        names.insert(p.name, trigger);
    }
    if let Some((url, token)) = bus {
        let triggers = Arc::new(triggers);
        for tenant in config.tenants()? {
            tasks.push(scheduler::watch_webhooks(url.clone(), token.clone(), tenant, triggers.clone(), stop.clone()));
        }
    }
    Ok(Running { tasks, triggers: names })
}

#[cfg(test)]
mod tests {
    use super::IngestConfig;

    const XERO: &str =
        "[xero]\ntenant = \"acme\"\nclient_id = \"c\"\nclient_secret = \"s\"\nxero_tenant_id = \"org-1\"\n";

    #[test]
    fn each_section_is_read_by_its_platform_and_a_wrong_key_is_named() {
        let c = IngestConfig::from_toml(&format!("interval_secs = 60\n{XERO}")).unwrap();
        assert_eq!(c.tenants().unwrap(), ["acme"]);
        assert!(!format!("{c:?}").contains("\"s\""), "no credential in Debug");

        let e = IngestConfig::from_toml("intervals_secs = 60\n").unwrap_err();
        assert!(e.contains("unknown key 'intervals_secs'") && e.contains("shopify, xero"), "{e}");
        let e = IngestConfig::from_toml(&format!("{XERO}bogus = 1\n")).unwrap_err();
        assert!(e.starts_with("[xero]: unknown field `bogus`"), "{e}");
        let e = IngestConfig::from_toml("[xero]\ntenant = \"acme\"\n").unwrap_err();
        assert!(e.starts_with("[xero]: missing field"), "{e}");
    }
}
