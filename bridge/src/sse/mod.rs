//! Server-Sent Events: every stream a browser or another HTTP client holds open.
//!
//! [`handlers`] opens a stream (auth, slot, subscription, the replay with heartbeats and
//! endings) and hands it over at the live seam; [`writers`] then writes the live part of every
//! stream from a few tasks, one vectored write per batch, to a socket or through a [`pipe`] to
//! hyper's body; [`stream`] is what every stream writes, whoever writes it; [`pulse`] the one
//! heartbeat and shutdown clock they all watch; [`direct`] serves plain HTTP/1 SSE GETs on the
//! socket below hyper.
//!
//! What the streams need of the server is [`Streams`], their part of the app's state: the SSE
//! code knows nothing else of the server it runs in.

pub mod direct;
pub mod handlers;
pub mod pipe;
pub mod pulse;
pub mod stream;
pub mod writers;

use std::sync::Arc;

use switchyard::bus::Bus;
use tokio::sync::watch;

use crate::{
    config::SseConfig,
    http::{access::Access, limits::Limits},
    metrics::Metrics,
};

/// The state every SSE stream shares: one per server, cloned by `Arc` into each handler.
#[derive(Clone)]
pub struct Streams(Arc<StreamState>);

impl Streams {
    pub fn new(state: StreamState) -> Self {
        Self(Arc::new(state))
    }
}

impl std::ops::Deref for Streams {
    type Target = StreamState;

    fn deref(&self) -> &StreamState {
        &self.0
    }
}

/// What [`Streams`] holds.
pub struct StreamState {
    pub bus: Bus,
    pub access: Arc<Access>,
    pub limits: Limits,
    pub sse: SseConfig,
    /// Heartbeats, and `Stop` when the server starts shutting down (open streams then tell
    /// clients to reconnect).
    pub pulse: watch::Receiver<pulse::Pulse>,
    pub metrics: Arc<Metrics>,
    /// The tasks that write live streams (started on first use).
    pub writers: writers::Writers,
    /// Every path the server's route table names: the direct path leaves these to the router.
    pub own_paths: Vec<String>,
}
