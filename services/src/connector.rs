//! The shape every connector shares: configured once, then asked to sync inside a [`Run`],
//! which stamps tenant and provenance on what it publishes and reports progress.

use std::{future::Future, sync::Arc};

use switchyard::proto::v1::{
    Event, LowStockAlert, StockItem, SyncError as SyncErrorEvent, SyncStarted, SyncStatus, Unavailable, event::Payload,
};

use crate::{
    jobs::JobReporter,
    period::{Periods, Zone},
    sink::Sink,
};

/// Which platform a connector reads: its name and its `<name>:sync-*` event types. Each
/// platform's folder defines its own (`shopify::SOURCE`).
#[derive(Debug, Clone, Copy)]
pub struct Source {
    name: &'static str,
    started: fn(SyncStarted) -> Payload,
    status: fn(SyncStatus) -> Payload,
    error: fn(SyncErrorEvent) -> Payload,
}

impl Source {
    pub const fn new(
        name: &'static str,
        started: fn(SyncStarted) -> Payload,
        status: fn(SyncStatus) -> Payload,
        error: fn(SyncErrorEvent) -> Payload,
    ) -> Self {
        Self { name, started, status, error }
    }

    pub const fn name(self) -> &'static str {
        self.name
    }

    pub fn started(self, run_id: &str) -> Payload {
        (self.started)(SyncStarted { scope: "all".into(), run_id: run_id.to_owned() })
    }

    /// `<source>:sync-error` for `scope` (`all`, a store), naming what it left unpublished.
    pub fn failure(self, run_id: &str, scope: &str, e: &SyncError, missing: &[&str]) -> Payload {
        self.error(SyncErrorEvent {
            scope: scope.into(),
            run_id: run_id.into(),
            error: e.to_string(),
            code: e.code().into(),
            will_retry: true,
            missing: missing.iter().map(|m| m.to_string()).collect(),
        })
    }

    pub fn status(self, s: SyncStatus) -> Payload {
        (self.status)(s)
    }

    pub fn error(self, e: SyncErrorEvent) -> Payload {
        (self.error)(e)
    }
}

/// Why a sync failed. The message is safe to publish: it never carries a credential.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    RateLimited(String),
    #[error("{message}")]
    Upstream { status: u16, message: String },
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Network(String),
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    State(String),
    #[error("publishing to the bus: {0}")]
    Publish(String),
    /// Part of the run failed and the connector already published a `sync-error` for each part
    /// (a store, say); the scheduler only retries sooner and records it in the sync status.
    #[error("{message}")]
    Reported { message: String, code: &'static str, missing: Vec<String> },
}

impl SyncError {
    /// A stable code for dashboards and alerting.
    pub fn code(&self) -> &'static str {
        match self {
            SyncError::Unauthorized(_) => "unauthorized",
            SyncError::RateLimited(_) => "rate_limited",
            SyncError::Upstream { .. } => "upstream_error",
            SyncError::Timeout(_) => "timeout",
            SyncError::Network(_) => "network",
            SyncError::Malformed(_) => "malformed_response",
            SyncError::State(_) => "state",
            SyncError::Publish(_) => "publish",
            SyncError::Reported { code, .. } => code,
        }
    }
}

/// The outcome of a part of a run that may fail alone: its value, or (after recording its
/// `figures` as unavailable, with the reason) `None` so the rest is still published. A state
/// error still ends the run: figures must not be published if the cursor cannot be kept.
pub fn partial<T>(
    result: Result<T, SyncError>,
    figures: &str,
    unavailable: &mut Vec<Unavailable>,
) -> Result<Option<T>, SyncError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e @ SyncError::State(_)) => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, figures, "figures unavailable; publishing the rest");
            unavailable.push(Unavailable { figure: figures.into(), reason: e.to_string() });
            Ok(None)
        }
    }
}

/// Whom a connector syncs for: which platform's events, which tenant, and what "today" means
/// (the tenant's timezone). Given by whoever runs it, so a connector is only a platform reader.
#[derive(Debug, Clone)]
pub struct Scope {
    pub source: Source,
    pub tenant: String,
    pub zone: Zone,
}

/// One sync of one connector.
pub struct Run {
    pub run_id: String,
    pub tenant: String,
    pub source: Source,
    pub sink: Arc<dyn Sink>,
    pub jobs: JobReporter,
    /// The periods this run's figures cover (fixed at its start).
    pub periods: Periods,
    /// The tenant's timezone, the periods' own.
    pub zone: Zone,
}

impl Run {
    pub fn new(scope: &Scope, sink: Arc<dyn Sink>) -> Self {
        let source = scope.source;
        let run_id = format!("{}-{}", source.name(), random_suffix());
        let jobs = JobReporter::new(sink.clone(), &scope.tenant, &run_id, source.name());
        let periods = scope.zone.periods(jiff::Timestamp::now());
        Self { run_id, tenant: scope.tenant.clone(), source, sink, jobs, periods, zone: scope.zone.clone() }
    }

    /// `<source>:sync-error` for part of this run (`scope`), naming what it left unpublished.
    pub fn failure(&self, scope: &str, e: &SyncError, missing: &[&str]) -> Event {
        self.event(scope, self.source.failure(&self.run_id, scope, e, missing))
    }

    /// An event from this run: tenant, source and key filled in.
    pub fn event(&self, key: &str, payload: Payload) -> Event {
        Event {
            tenant: self.tenant.clone(),
            source: format!("connector:{}", self.source.name()),
            key: key.to_owned(),
            payload: Some(payload),
            ..Default::default()
        }
    }

    /// Publishes `events`, all or nothing as far as the caller can tell: an error means retry.
    pub async fn publish(&self, events: Vec<Event>) -> Result<(), SyncError> {
        if events.is_empty() {
            return Ok(());
        }
        self.sink.publish(events).await.map_err(SyncError::Publish)
    }
}

/// The alert for items that just crossed under their threshold (none: no alert). Items with
/// nothing left are critical.
pub fn low_stock_alert(items: Vec<StockItem>) -> Option<LowStockAlert> {
    (!items.is_empty()).then(|| LowStockAlert {
        count: items.len() as u32,
        critical_items: items.iter().filter(|i| i.on_hand <= 0).count() as u32,
        items,
    })
}

fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A platform connector: configured once, synced many times, for the [`Scope`] it is run in.
pub trait Connector: Send + 'static {
    /// Reads the platform and publishes what it computed: progress along the way through
    /// `run.jobs`, figures and alerts through `run.publish`, ending with `<source>:sync-completed`.
    /// Every snapshot is the whole state of its key, recomputed from the platform; a figure
    /// whose call failed is left out and listed as unavailable, never published as zero. On
    /// error no snapshot is published; the scheduler reports it (or the connector already did,
    /// part by part: `SyncError::Reported`).
    fn sync(&mut self, run: &Run) -> impl Future<Output = Result<(), SyncError>> + Send;
}
