//! The state the HTTP handlers share, built once by `serve` and held by `Arc`.

use std::{sync::Arc, time::Instant};

use switchyard::bus::Bus;

use crate::{
    config::MetricsConfig,
    connectors::Connectors,
    http::{access::Access, limits::Limits},
    metrics::Metrics,
    sse::Streams,
    webhooks::Inbound,
};
use axum::extract::FromRef;

/// Everything a handler needs. Shared by `Arc`.
pub struct App {
    pub bus: Bus,
    /// Shared with the SSE streams (`streams.access`): one ticket store, one revocation list.
    pub access: Arc<Access>,
    /// Shared with the SSE streams: one count of open connections.
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    /// What the SSE streams see of the server (their handlers take only this).
    pub streams: Streams,
    /// Connectors' latest statuses and run counts, from the sync statuses committed.
    pub connectors: Arc<Connectors>,
    /// Which labels `/metrics` adds (tenant labels are opt-in, capped).
    pub metrics_config: MetricsConfig,
    pub started: Instant,
    pub cors_origins: Vec<String>,
    pub webhooks: Inbound,
    /// Outbound delivery (`None` on a bridge, which has no store of its own).
    pub outbound: Option<switchyard_outbound::Outbound>,
}

impl App {
    /// The app over `streams` (whose bus, access, limits and metrics every handler shares), with
    /// the operator's CORS origins and metric labels from `config`.
    pub fn new(
        config: &crate::config::Config,
        streams: Streams,
        connectors: Arc<Connectors>,
        webhooks: Inbound,
        outbound: Option<switchyard_outbound::Outbound>,
    ) -> Self {
        Self {
            bus: streams.bus.clone(),
            access: streams.access.clone(),
            limits: streams.limits.clone(),
            metrics: streams.metrics.clone(),
            streams,
            connectors,
            metrics_config: config.metrics.clone(),
            started: Instant::now(),
            cors_origins: config.auth.cors_origins.clone(),
            webhooks,
            outbound,
        }
    }
}

/// The webhook handlers see only their own part of the state.
impl FromRef<Arc<App>> for Inbound {
    fn from_ref(app: &Arc<App>) -> Self {
        app.webhooks.clone()
    }
}

/// The SSE handlers see only their own part of the state.
impl FromRef<Arc<App>> for Streams {
    fn from_ref(app: &Arc<App>) -> Self {
        app.streams.clone()
    }
}
