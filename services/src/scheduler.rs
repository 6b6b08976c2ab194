//! Runs connectors: each on its own interval with jitter (so several deployments do not hit a
//! platform in step), one sync at a time per connector, independently of the others, forever.
//! A failed sync is retried sooner, with backoff, but never more often than the interval allows
//! a healthy one. A webhook for a source (push) triggers that source's sync (pull) after a
//! short debounce, so a burst of deliveries costs one sync.

use std::{collections::BTreeSet, path::Path, sync::Arc, time::Duration};

use switchyard::{
    catalog::{Catalog, Route},
    proto::v1::{SubscribeRequest, SyncStatus, subscribe_response},
};
use tokio::sync::{Notify, watch};
use tokio_stream::StreamExt;
use tracing::Instrument;

use crate::{
    connector::{Connector, Run, Scope, Source, SyncError},
    http::{Http, RetryPolicy},
    period::{Zone, timestamp},
    sink::Sink,
    state::StateFile,
};

/// What a platform's connector is started with: where its state lives, what "today" means,
/// how it calls out, where it publishes, and its schedule and webhook trigger.
pub struct Context<'a> {
    pub source: Source,
    /// The tenant its section names.
    pub tenant: String,
    pub dir: &'a Path,
    pub zone: &'a Zone,
    pub retry: RetryPolicy,
    pub sink: Arc<dyn Sink>,
    pub schedule: Schedule,
    /// Notified when the platform's webhook reports news.
    pub trigger: Arc<Notify>,
    pub stop: watch::Receiver<bool>,
}

impl Context<'_> {
    /// An HTTPS client with the configured retry policy.
    pub fn http(&self) -> Result<Http, String> {
        Http::new(self.retry.clone())
    }

    /// The connector's persisted state (cursors, rotated tokens), named for it.
    pub fn state(&self, name: &str) -> StateFile {
        StateFile::new(self.dir, name)
    }

    /// Runs `connector` for this context's tenant, on its schedule, until stopped.
    pub fn run<C: Connector>(&self, connector: C) -> tokio::task::JoinHandle<()> {
        let scope = Scope { source: self.source, tenant: self.tenant.clone(), zone: self.zone.clone() };
        spawn(connector, scope, self.sink.clone(), self.schedule.clone(), self.trigger.clone(), self.stop.clone())
    }
}

/// The tasks a platform's connector runs (stopped by `Context::stop`).
pub type Tasks = Vec<tokio::task::JoinHandle<()>>;

/// Reads a platform's `[<name>]` ingest section into its config type.
pub fn section<T: serde::de::DeserializeOwned>(name: &str, value: &toml::Value) -> Result<T, String> {
    T::deserialize(value.clone()).map_err(|e| format!("[{name}]: {}", e.message()))
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub interval: Duration,
    /// ± this fraction of the interval, at random.
    pub jitter: f64,
    /// After a push trigger, wait this long for more before syncing.
    pub debounce: Duration,
    /// First retry after a failure; doubles up to the interval.
    pub retry: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            jitter: 0.1,
            debounce: Duration::from_secs(2),
            retry: Duration::from_secs(15),
        }
    }
}

/// A connector's sync health across runs: what `<source>:sync-status` says, and when it
/// runs next.
#[derive(Debug, Clone)]
pub struct Health {
    schedule: Schedule,
    last_success: Option<jiff::Timestamp>,
    failing_since: Option<jiff::Timestamp>,
    /// Failed runs in a row.
    failures: u32,
    /// How long to wait after the latest run.
    pub wait: Duration,
}

impl Health {
    pub fn new(schedule: Schedule) -> Self {
        Self { schedule, last_success: None, failing_since: None, failures: 0, wait: Duration::ZERO }
    }

    /// Sets how long to wait after a run that succeeded or not: the interval with jitter after
    /// a success; after failures, the retry delay doubling per failure, never beyond the interval.
    fn ran(&mut self, ok: bool) -> Duration {
        let s = &self.schedule;
        self.wait = if ok {
            self.failures = 0;
            let j = 1.0 + s.jitter * (2.0 * rand::random::<f64>() - 1.0);
            s.interval.mul_f64(j.max(0.0))
        } else {
            self.failures += 1;
            s.retry.saturating_mul(1 << (self.failures - 1).min(10)).min(s.interval)
        };
        self.wait
    }

    /// The run's `sync-status` (it took `took`), with when the next run is due.
    fn status(&mut self, run_id: &str, result: &Result<(), SyncError>, took: Duration) -> SyncStatus {
        let now = jiff::Timestamp::now();
        let wait = self.ran(result.is_ok());
        let next_run = jiff::SignedDuration::try_from(wait).ok().and_then(|w| now.checked_add(w).ok());
        let (error, code, missing) = match result {
            Ok(()) => {
                self.last_success = Some(now);
                self.failing_since = None;
                (String::new(), String::new(), Vec::new())
            }
            Err(e) => {
                self.failing_since.get_or_insert(now);
                let missing = match e {
                    SyncError::Reported { missing, .. } => missing.clone(),
                    _ => Vec::new(),
                };
                (e.to_string(), e.code().to_owned(), missing)
            }
        };
        SyncStatus {
            ok: result.is_ok(),
            last_success: self.last_success.map(timestamp),
            error,
            code,
            failing_since: self.failing_since.map(timestamp),
            missing,
            run_id: run_id.to_owned(),
            duration: Some(pbjson_types::Duration::from(took)),
            next_run: next_run.map(timestamp),
        }
    }
}

/// One sync, reported: `<source>:sync-started`, the connector's own events, either the job's
/// completion or `<source>:sync-error` with the reason, and the source's `sync-status`.
/// `health.wait` then says how long to wait before the next run.
pub async fn run_once<C: Connector>(
    connector: &mut C,
    scope: &Scope,
    sink: Arc<dyn Sink>,
    health: &mut Health,
) -> Result<(), SyncError> {
    let source = scope.source;
    let began = std::time::Instant::now();
    let run = Run::new(scope, sink);
    tracing::Span::current().record("run", run.run_id.as_str());
    if let Err(e) = run.publish(vec![run.event(&run.run_id, source.started(&run.run_id))]).await {
        tracing::warn!(source = source.name(), run = %run.run_id, error = %e, "sync not started: the bus refused its start");
        health.ran(false);
        return Err(e);
    }
    run.jobs.stage("sync", &format!("{} sync started", source.name())).await;
    let result = connector.sync(&run).await;
    let mut report = Vec::new();
    match &result {
        Ok(()) => run.jobs.complete(&format!("{} sync completed", source.name()), Default::default()).await,
        Err(e) => {
            tracing::warn!(source = source.name(), run = %run.run_id, error = %e, "sync failed");
            if !matches!(e, SyncError::Reported { .. }) {
                report.push(run.failure("all", e, &[source.name()]));
            }
            run.jobs.fail("sync", &e.to_string()).await;
        }
    }
    let status = health.status(&run.run_id, &result, began.elapsed());
    report.push(run.event(source.name(), source.status(status)));
    // Best effort: if the bus itself is down, the log line above is all there is.
    let _ = run.publish(report).await;
    result
}

/// Runs `connector` until `stop` turns true.
pub fn spawn<C: Connector>(
    mut connector: C,
    scope: Scope,
    sink: Arc<dyn Sink>,
    schedule: Schedule,
    trigger: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let debounce = schedule.debounce;
        let mut health = Health::new(schedule);
        loop {
            // The run's trace: its upstream calls, and (through the trace context its events
            // carry) their commit and every delivery.
            let span = tracing::info_span!(
                "sync",
                otel.name = format!("sync {}", scope.source.name()),
                source = scope.source.name(),
                tenant = %scope.tenant,
                run = tracing::field::Empty,
            );
            let _ = run_once(&mut connector, &scope, sink.clone(), &mut health).instrument(span).await;
            let wait = health.wait;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = trigger.notified() => tokio::time::sleep(debounce).await,
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    })
}

/// A sync trigger: the event types that mean a platform has news, and whom to wake.
pub struct Trigger {
    pub news: &'static [&'static str],
    pub notify: Arc<Notify>,
}

/// Where news event types are published, from the catalog.
fn news_channels(triggers: &[Trigger]) -> Vec<String> {
    let catalog = Catalog::global();
    let channels: BTreeSet<String> = triggers
        .iter()
        .flat_map(|t| t.news.iter())
        .filter_map(|name| catalog.by_name(name))
        .flat_map(|spec| spec.routes.iter())
        .filter_map(|r| match r {
            Route::Fixed(c) => Some(c.to_string()),
            Route::Keyed(_) => None,
        })
        .collect();
    channels.into_iter().collect()
}

/// Push triggers pull: follows the bus and wakes the connector of any platform a webhook just
/// reported news for (its `NEWS` event types, published by `webhook:*`).
pub fn watch_webhooks(
    bus_url: String,
    token: String,
    tenant: String,
    triggers: Arc<Vec<Trigger>>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let channels = news_channels(&triggers);
    tokio::spawn(async move {
        // No channel at all would subscribe to everything the token allows.
        if channels.is_empty() {
            tracing::warn!(%tenant, "no catalog channel carries the platforms' news; webhooks will not trigger syncs");
            return;
        }
        let mut delay = Duration::from_millis(500);
        loop {
            let result = async {
                let mut client = switchyard::grpc::connect(&bus_url, &token)?;
                let req = SubscribeRequest {
                    channels: channels.clone(),
                    from_id: None,
                    tenant: tenant.clone(),
                    coalesce: Some(false),
                    ..Default::default()
                };
                let mut stream = client.subscribe(req).await.map_err(|s| s.message().to_owned())?.into_inner();
                while let Some(msg) = stream.next().await {
                    let Some(subscribe_response::Message::Event(e)) = msg.map_err(|s| s.message().to_owned())?.message
                    else {
                        continue;
                    };
                    if !e.source.starts_with("webhook:") {
                        continue;
                    }
                    let Some(spec) = e.payload.as_ref().and_then(|p| Catalog::global().by_field(p.field_number()))
                    else {
                        continue;
                    };
                    for t in triggers.iter().filter(|t| t.news.contains(&spec.name.as_ref())) {
                        t.notify.notify_one();
                    }
                }
                Ok::<(), String>(())
            };
            tokio::select! {
                r = result => if let Err(error) = r {
                    tracing::info!(%error, "webhook watch interrupted; reconnecting");
                },
                _ = stop.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    })
}

#[cfg(test)]
mod tests {
    use std::{collections::VecDeque, sync::Mutex};

    use futures::future::BoxFuture;
    use switchyard::proto::v1::{Event, event::Payload};
    use tokio::time::Instant;

    use super::*;

    /// Succeeds or fails as told, noting when each sync began.
    struct Scripted {
        outcomes: VecDeque<bool>,
        began: Arc<Mutex<Vec<Duration>>>,
        t0: Instant,
    }

    impl Connector for Scripted {
        async fn sync(&mut self, _: &Run) -> Result<(), SyncError> {
            self.began.lock().unwrap().push(self.t0.elapsed());
            match self.outcomes.pop_front() {
                Some(true) | None => Ok(()),
                Some(false) => Err(SyncError::Network("platform unreachable".into())),
            }
        }
    }

    #[derive(Default)]
    struct Published(Mutex<Vec<Event>>);

    impl Sink for Published {
        fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<(), String>> {
            self.0.lock().unwrap().extend(events);
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_sync_is_retried_sooner_with_backoff_and_a_healthy_one_waits_its_interval() {
        let began = Arc::new(Mutex::new(Vec::new()));
        let connector =
            Scripted { outcomes: [false, false, true, true].into(), began: began.clone(), t0: Instant::now() };
        let schedule = Schedule {
            interval: Duration::from_secs(300),
            jitter: 0.0,
            debounce: Duration::from_secs(2),
            retry: Duration::from_secs(15),
        };
        let source =
            Source::new("shopify", Payload::ShopifySyncStarted, Payload::ShopifySyncStatus, Payload::ShopifySyncError);
        let scope = Scope { source, tenant: "acme".into(), zone: Zone::utc() };
        let sink = Arc::new(Published::default());
        let trigger = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        let task = spawn(connector, scope, sink.clone(), schedule, trigger.clone(), stopped);
        tokio::time::sleep(Duration::from_secs(400)).await;
        let secs: Vec<u64> = began.lock().unwrap().iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [0, 15, 45, 345], "retry after 15 s, then 30 s; healthy: the interval");
        // A webhook's news brings the next sync forward, after the debounce.
        trigger.notify_one();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(began.lock().unwrap().last().map(Duration::as_secs), Some(402));
        let statuses =
            sink.0.lock().unwrap().iter().filter(|e| matches!(e.payload, Some(Payload::ShopifySyncStatus(_)))).count();
        assert_eq!(statuses, 5, "every run reports its source's sync-status");
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[test]
    fn news_is_heard_on_the_channels_the_catalog_routes_it_to() {
        let t = |news| Trigger { news, notify: Arc::new(Notify::new()) };
        let channels = news_channels(&[t(&["xero:data-updated"]), t(&["shopify:order-created", "no:such-type"])]);
        assert!(!channels.is_empty());
        for name in ["xero:data-updated", "shopify:order-created"] {
            let spec = Catalog::global().by_name(name).unwrap();
            for r in &spec.routes {
                if let Route::Fixed(c) = r {
                    assert!(channels.contains(&c.to_string()), "{name} → {c} not watched");
                }
            }
        }
    }
}
