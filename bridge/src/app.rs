//! The state the HTTP handlers share, built once by `serve` and held by `Arc`.

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::Instant,
};

use switchyard::bus::Bus;
use tokio::sync::watch;

use crate::{access::Access, config::SseConfig, limits::Limits, pulse::Pulse, webhooks::Inbound};

/// Everything a handler needs. Shared by `Arc`.
pub struct App {
    pub bus: Bus,
    pub access: Access,
    pub limits: Limits,
    pub sse: SseConfig,
    /// Heartbeats, and `Stop` when the server starts shutting down (open streams then tell clients to reconnect).
    pub pulse: watch::Receiver<Pulse>,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    pub cors_origins: Vec<String>,
    pub webhooks: Inbound,
}

/// Counters only the edge knows about.
#[derive(Debug, Default)]
pub struct Metrics {
    pub sse_frames: AtomicU64,
    pub sse_evicted: AtomicU64,
    pub http_published: AtomicU64,
}
