//! # switchyard-bridge: the HTTP edge and the `switchyard` binary
//!
//! ## Layout
//! - [`serve`]: `switchyard serve`, bus + gRPC + HTTP in one process.
//! - [`router`]: the axum router over the shared [`app::App`] state, composed from the one route
//!   table that each feature contributes to: [`api`] the plain handlers, [`sse`] the streaming
//!   ones, [`webhooks`], [`outbound`], [`assets`].
//! - [`http`]: what every HTTP feature uses: the [`http::route`] table entry and the
//!   [`http::openapi`] document made from the table, [`http::access`] (who is calling: bearer,
//!   cookie, single-use tickets), [`http::limits`] (connection caps), [`http::body`] (bounded
//!   bodies, read after authentication), [`http::error`] (every error as
//!   `{"error": {"code", "message"}}` with the right status).
//! - [`remote`]: the log of another bus over gRPC, for `switchyard bridge --bus`.
//! - [`sse`]: Server-Sent Events: the handlers, the writer tasks that write every live stream,
//!   the heartbeat clock, and [`sse::direct`], plain HTTP/1 SSE GETs served on the socket below
//!   hyper (small per-connection memory). It sees only its share of the state, [`sse::Streams`].
//! - [`net`]: plain or TLS accept, with a write-stall guard on every connection.
//! - [`assets`]: the dashboard at `/` and the browser client at `/client.js` (bridge/assets/).
//! - [`webhooks`]: verified Shopify, Xero, Unleashed, Amazon (SNS) and Standard Webhooks
//!   deliveries → events, exactly once.
//! - [`config`]: file → env → flags; [`secret`]: the generated signing secret.
//! - [`cli`]: the commands beside `serve`: `tail`, `publish`, `token` ([`cli::tools`]),
//!   `webhook sign|send` ([`cli::webhook`]), `catalog --typescript` ([`cli::typescript`]: the
//!   browser client's `client.d.ts`, generated from the catalog).
//! - [`telemetry`]: logs and OTLP traces; [`metrics`]: the edge's counters and histograms;
//!   [`process`]: this process's CPU, memory and
//!   descriptors, both for `/metrics`.

pub mod app;
pub mod cli;
pub mod config;
pub mod connectors;
pub mod features;
pub mod http;
pub mod metrics;
pub mod net;
pub mod remote;
pub mod router;
pub mod secret;
pub mod serve;
pub mod sse;
pub mod telemetry;
pub mod webhooks;

/// Makes ring the process's TLS crypto provider (idempotent). The binary links one provider
/// only (ring, as tokio-rustls and the listener use), so every HTTPS client must find it
/// installed; `serve`, `main` and the tests call this before building one.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
