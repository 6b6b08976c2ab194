//! # Switchyard bus core
//!
//! The contract and the bus: everything between "a service publishes an event"
//! and "a subscriber receives it", with no HTTP and no platform knowledge.
//!
//! ## Layout
//! - [`proto`]: generated types for `proto/switchyard/v1` (messages, gRPC, proto3 JSON).
//! - [`names`]: validated `Tenant`, `Channel`, `EventId`.
//! - [`catalog`]: event types, routes and delivery kinds, read from the proto options.
//! - [`json`]: events in and out of proto3 JSON (envelope and short `type`/`data` form).
//! - [`error`]: why a publish was refused (`PublishErrorKind`, one wire code each).
//! - [`validate`]: turns a published `Event` into an `Accepted` one, or a field-naming error.
//! - [`log`]: the one ordered durable history (`Log` trait; `log::embedded` on redb).
//! - [`hub`]: in-process fan-out of committed records, per tenant and channel.
//! - [`subscription`]: resume-from-id + live, with gap markers and coalescing.
//! - [`coalesce`]: per-(type, key) snapshot coalescing for live delivery.
//! - [`rate`]: per-tenant publish rate limits (token buckets).
//! - [`limits`]: caps on open subscriptions per tenant, per token and in total, every transport.
//! - [`secret`]: `Secret`, a configured key or password that never prints.
//! - [`auth`]: JWT claims (tenant, channel globs, role), signing and verification.
//! - [`bus`]: the facade the gRPC service and the HTTP bridge both call.
//! - [`grpc`]: the `switchyard.v1.EventBus` tonic service.
//! - [`metrics`]: delivery lag and open subscriptions per transport, histograms.
//! - [`trace`]: W3C trace context from a request, through `Event.trace`, to each delivery.

pub mod auth;
pub mod bus;
pub mod catalog;
pub mod coalesce;
pub mod error;
pub mod grpc;
pub mod hub;
pub mod json;
pub mod ledger;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod names;
pub mod proto;
pub mod rate;
pub mod secret;
pub mod subscription;
pub mod trace;
pub mod validate;
