//! Outbound delivery: events leave the bus for other systems and for people.
//!
//! An endpoint is a durable subscriber with a cursor into the one history, so delivery is
//! at-least-once with stable ids (`webhook-id` is the event id), resumable after any crash and
//! replayable from any point. Everything it must not lose lives in the log's own store through
//! [`switchyard::log::kv::Kv`]:
//! - `ep.<id>`: the [`Endpoint`] (its spec, sealed signing secrets, whether it is disabled);
//! - `pg.<id>`: its [`Progress`] (cursor, health, counts);
//! - `q.<id>.<event>`: events it owes outside the cursor's order (retries, replays, redrives);
//! - `dl.<id>.<event>`: its dead letters;
//! - `lease.<id>`: which node delivers for it (exactly one at a time, on a cluster).
//!
//! [`Outbound`] is the handle the HTTP and gRPC edges use; a supervisor task starts one
//! [`worker`] per endpoint this node holds the lease of.

mod clock;
pub mod dispatch;
pub mod email;
pub mod endpoint;
pub mod filter;
pub mod grpc;
pub mod ladder;
pub mod render;
pub mod resolution;
pub mod seal;
pub mod signature;
pub mod target;
pub mod transport;
mod worker;

pub mod service;

pub use endpoint::{DeadLetter, Disabled, Endpoint, EndpointId, Owed, Progress, Spec, Target};
pub(crate) use service::Shared;
pub use service::{Config, Local, Metrics, Outbound, OutboundError, Parts, Replay, StaticEndpoint, View};

/// Most alerts grouped into one message for people.
pub const MAX_GROUP: usize = 50;
