//! The state the HTTP handlers share, built once by `serve` and held by `Arc`.

use std::{sync::Arc, time::Instant};

use switchyard::bus::Bus;
use tokio::sync::watch;

use crate::{
    config::{MetricsConfig, SseConfig},
    connectors::Connectors,
    http::access::Access,
    http::limits::Limits,
    metrics::Metrics,
    pulse::Pulse,
    webhooks::Inbound,
};

/// Everything a handler needs. Shared by `Arc`.
pub struct App {
    pub bus: Bus,
    pub access: Access,
    pub limits: Limits,
    pub sse: SseConfig,
    /// Heartbeats, and `Stop` when the server starts shutting down (open streams then tell clients to reconnect).
    pub pulse: watch::Receiver<Pulse>,
    pub metrics: Arc<Metrics>,
    /// Connectors' latest statuses and run counts, from the sync statuses committed.
    pub connectors: Arc<Connectors>,
    /// Which labels `/metrics` adds (tenant labels are opt-in, capped).
    pub metrics_config: MetricsConfig,
    pub started: Instant,
    pub cors_origins: Vec<String>,
    pub webhooks: Inbound,
    /// Outbound delivery (`None` on a bridge, which has no store of its own).
    pub outbound: Option<switchyard_outbound::Outbound>,
    /// The tasks that write live SSE streams of the direct path (started on first use).
    pub writers: crate::writers::Writers,
}
