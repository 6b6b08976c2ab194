//! What operators and orchestrators poll: liveness, readiness and Prometheus metrics
//! ([`prometheus`], with this process's own figures from [`process`]); and the JSON 404.

pub mod process;
pub mod prometheus;

use std::sync::Arc;

use axum::{
    extract::State,
    http::{StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use switchyard::log::Stream;

use crate::{app::App, http::error::ApiError, http::openapi::error_response, http::route::Route};

/// Health and metrics.
pub fn routes() -> Vec<Route<Arc<App>>> {
    vec![
        Route::get(
            "/metrics",
            metrics,
            json!({ "summary": "Prometheus metrics.", "security": [], "responses": { "200": { "description": "text/plain" } } }),
        ),
        Route::get(
            "/healthz",
            healthz,
            json!({ "summary": "Liveness.", "security": [], "responses": { "200": { "description": "ok" } } }),
        ),
        Route::get(
            "/readyz",
            readyz,
            json!({ "summary": "Readiness: the log answers.", "security": [], "responses": { "200": { "description": "ready" }, "503": error_response("Not ready.") } }),
        ),
    ]
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the log answers and, on a shared history, this node's tail follows it (else its
/// subscribers would see nothing new).
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.bus.log().bounds(Stream::All).await {
        Ok(_) if app.bus.log().stats().tail.is_some_and(|t| !t.following) => {
            ApiError::unavailable("the JetStream tail is not following the stream").into_response()
        }
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => ApiError::unavailable(e.to_string()).into_response(),
    }
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::features::ops::prometheus::render(&app))
        .into_response()
}
