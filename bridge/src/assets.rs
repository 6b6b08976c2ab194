//! The browser side, compiled into the binary so `switchyard serve` needs no build step and no
//! CDN: the dashboard at `/`, the operator console at `/console` and the client library at
//! `/client.js` (sources in bridge/assets/).

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::route::Route;

/// The dashboard and the client library: public (the dashboard reads its token from the URL
/// fragment, which never reaches the server).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Vec<Route<S>> {
    vec![
        Route::get(
            "/",
            dashboard,
            json!({ "summary": "The live operations dashboard (HTML; token in the URL fragment).", "security": [], "responses": { "200": { "description": "text/html" } } }),
        ),
        Route::get(
            "/dashboard.js",
            dashboard_js,
            json!({ "summary": "The dashboard's script.", "security": [], "responses": { "200": { "description": "text/javascript" } } }),
        ),
        Route::get(
            "/dashboard.css",
            dashboard_css,
            json!({ "summary": "The dashboard's styles.", "security": [], "responses": { "200": { "description": "text/css" } } }),
        ),
        Route::get(
            "/base.css",
            base_css,
            json!({ "summary": "Styles the dashboard and the console share.", "security": [], "responses": { "200": { "description": "text/css" } } }),
        ),
        Route::get(
            "/console",
            console,
            json!({ "summary": "The operator console (HTML; admin token): live counts and lag, connections, connectors, webhook deliveries, a live event inspector.", "security": [], "responses": { "200": { "description": "text/html" } } }),
        ),
        Route::get(
            "/console.js",
            console_js,
            json!({ "summary": "The operator console's script.", "security": [], "responses": { "200": { "description": "text/javascript" } } }),
        ),
        Route::get(
            "/console.css",
            console_css,
            json!({ "summary": "The operator console's styles.", "security": [], "responses": { "200": { "description": "text/css" } } }),
        ),
        Route::get(
            "/client.js",
            client_js,
            json!({ "summary": "The browser client library (ES module): resume, backoff with jitter, heartbeat watchdog, polling fallback.", "security": [], "responses": { "200": { "description": "text/javascript" } } }),
        ),
        Route::get(
            "/client.d.ts",
            client_types,
            json!({ "summary": "TypeScript types for /client.js.", "security": [], "responses": { "200": { "description": "TypeScript" } } }),
        ),
    ]
}

/// Same-origin scripts and styles only; the dashboard needs nothing else.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

pub async fn dashboard() -> Response {
    asset("text/html; charset=utf-8", include_str!("../assets/dashboard.html"))
}

pub async fn dashboard_js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("../assets/dashboard.js"))
}

pub async fn dashboard_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("../assets/dashboard.css"))
}

pub async fn base_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("../assets/base.css"))
}

pub async fn console() -> Response {
    asset("text/html; charset=utf-8", include_str!("../assets/console.html"))
}

pub async fn console_js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("../assets/console.js"))
}

pub async fn console_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("../assets/console.css"))
}

pub async fn client_js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("../assets/client.js"))
}

pub async fn client_types() -> Response {
    asset("application/typescript; charset=utf-8", include_str!("../assets/client.d.ts"))
}
