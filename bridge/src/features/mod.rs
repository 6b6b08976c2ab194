//! The HTTP API's features, one module each, every one listing its own routes (with their
//! OpenAPI operations) beside its handlers: [`events`] (publish, poll), [`state`], [`tokens`]
//! (revocation, tickets), [`broadcast`], [`admin`] (the status the console reads, with its
//! [`activity`]), [`outbound`] (endpoints), [`ops`] (health, readiness, metrics) and [`assets`]
//! (the dashboard, the console and the browser client). Streaming is [`crate::sse`]'s and
//! inbound webhooks are [`crate::webhooks`]'.

use std::sync::Arc;

use crate::{app::App, http::route::Route};

pub mod activity;
pub mod admin;
pub mod assets;
pub mod broadcast;
pub mod events;
pub mod ops;
pub mod outbound;
pub mod state;
pub mod tokens;

/// Every feature's routes.
pub fn routes() -> Vec<Route<Arc<App>>> {
    let mut all = Vec::new();
    all.extend(state::routes());
    all.extend(tokens::routes());
    all.extend(broadcast::routes());
    all.extend(admin::routes());
    all.extend(events::routes());
    all.extend(ops::routes());
    all.extend(outbound::routes());
    all.extend(assets::routes());
    all
}
