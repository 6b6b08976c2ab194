//! # switchyard-bridge: the HTTP edge and the `switchyard` binary
//!
//! ## Layout
//! - [`serve`]: `switchyard serve`, bus + gRPC + HTTP in one process.
//! - [`http`]: the axum router over the shared [`app::App`] state, composed from the one route
//!   table ([`route`]) that each feature contributes to: [`api`] the plain handlers, [`sse`] the
//!   streaming ones (kept alive by the shared [`pulse`]), [`webhooks`], [`assets`]; [`openapi`]
//!   describes the same table.
//! - [`remote`]: the log of another bus over gRPC, for `switchyard bridge --bus`.
//! - [`direct`]: plain HTTP/1 SSE GETs served on the socket below hyper (small per-connection memory).
//! - [`listener`]: plain or TLS accept, with a write-stall guard on every connection.
//! - [`access`]: who is calling (bearer, cookie, single-use tickets); [`limits`]: connection caps.
//! - [`error`]: every error as `{"error": {"code", "message"}}` with the right status.
//! - [`assets`]: the dashboard at `/` and the browser client at `/client.js` (bridge/assets/);
//!   [`typescript`]: its `client.d.ts`, generated from the catalog.
//! - [`webhooks`]: verified Shopify, Xero, Unleashed, Amazon (SNS) and Standard Webhooks
//!   deliveries → events, exactly once.
//! - [`config`]: file → env → flags; [`secret`]: the generated signing secret.
//! - [`tools`]: `tail`, `publish`, `token`; [`webhook_tool`]: `webhook sign|send`; [`telemetry`]: logs and OTLP traces;
//!   [`metrics`]: the edge's counters and histograms; [`process`]: this process's CPU, memory and
//!   descriptors, both for `/metrics`.

pub mod access;
pub mod activity;
pub mod api;
pub mod app;
pub mod assets;
pub mod body;
pub mod config;
pub mod connectors;
pub mod direct;
pub mod error;
pub mod http;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod openapi;
pub mod outbound;
pub mod pipe;
pub mod process;
pub mod prometheus;
pub mod pulse;
pub mod remote;
pub mod route;
pub mod secret;
pub mod serve;
pub mod sse;
pub mod stream;
pub mod telemetry;
pub mod tools;
pub mod typescript;
pub mod webhook_tool;
pub mod webhooks;
pub mod writers;

/// Makes ring the process's TLS crypto provider (idempotent). The binary links one provider
/// only (ring, as tokio-rustls and the listener use), so every HTTPS client must find it
/// installed; `serve`, `main` and the tests call this before building one.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
