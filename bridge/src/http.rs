//! The HTTP edge: one axum [`Router`] over an [`App`].
//!
//! Routes are listed once in [`ROUTES`]; the OpenAPI document is checked
//! against that list by a test, so the two cannot drift.

use std::sync::Arc;

use axum::{
    Router,
    extract::{DefaultBodyLimit, FromRef},
    http::{HeaderValue, Method},
    routing::{get, post},
};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{api, app::App, assets, openapi, sse, webhooks};

/// Every route, as (method, path). The router and the OpenAPI document both follow this list.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/sse/subscribe"),
    ("GET", "/api/sse/jobs/{job_id}"),
    ("GET", "/api/sse/{channel}"),
    ("POST", "/api/sse/ticket"),
    ("POST", "/api/sse/broadcast"),
    ("GET", "/api/sse/status"),
    ("GET", "/api/events"),
    ("POST", "/api/events"),
    ("GET", "/api/state"),
    ("POST", "/api/tokens/revoke"),
    ("POST", "/api/webhooks/shopify"),
    ("POST", "/api/webhooks/xero"),
    ("POST", "/api/webhooks/unleashed"),
    ("POST", "/api/webhooks/amazon"),
    ("POST", "/api/webhooks/{source}"),
    ("GET", "/api/openapi.json"),
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/"),
    ("GET", "/dashboard.js"),
    ("GET", "/dashboard.css"),
    ("GET", "/client.js"),
    ("GET", "/client.d.ts"),
    ("GET", "/readyz"),
];

/// Largest request body: a batch of events.
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// Largest webhook delivery. Platforms send kilobytes; a megabyte is an attack or a mistake.
pub const WEBHOOK_MAX_BODY: usize = 1024 * 1024;

/// The webhook handlers see only their own part of the state.
impl FromRef<Arc<App>> for webhooks::Inbound {
    fn from_ref(app: &Arc<App>) -> Self {
        app.webhooks.clone()
    }
}

pub fn router(app: Arc<App>) -> Router {
    let cors = (!app.cors_origins.is_empty()).then(|| {
        let origins: Vec<HeaderValue> = app.cors_origins.iter().filter_map(|o| o.parse().ok()).collect();
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
                "last-event-id".parse().unwrap(),
            ])
            .allow_credentials(true)
    });
    let r = Router::new()
        .route("/api/sse/subscribe", get(sse::subscribe))
        .route("/api/sse/jobs/{job_id}", get(sse::job))
        .route("/api/sse/{channel}", get(sse::channel))
        .route("/api/sse/ticket", post(api::ticket))
        .route("/api/sse/broadcast", post(api::broadcast))
        .route("/api/sse/status", get(api::status))
        .route("/api/events", get(api::poll).post(api::publish))
        .route("/api/state", get(api::state))
        .route("/api/tokens/revoke", post(api::revoke))
        .merge(
            Router::new()
                .route("/api/webhooks/shopify", post(webhooks::shopify))
                .route("/api/webhooks/xero", post(webhooks::xero))
                .route("/api/webhooks/unleashed", post(webhooks::unleashed))
                .route("/api/webhooks/amazon", post(webhooks::amazon))
                .route("/api/webhooks/{source}", post(webhooks::standard))
                .layer(DefaultBodyLimit::max(WEBHOOK_MAX_BODY)),
        )
        .route("/api/openapi.json", get(openapi::document))
        .route("/metrics", get(api::metrics))
        .route("/healthz", get(api::healthz))
        .route("/", get(assets::dashboard))
        .route("/dashboard.js", get(assets::dashboard_js))
        .route("/dashboard.css", get(assets::dashboard_css))
        .route("/client.js", get(assets::client_js))
        .route("/client.d.ts", get(assets::client_types))
        .route("/readyz", get(api::readyz))
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app);
    match cors {
        Some(c) => r.layer(c),
        None => r,
    }
}
