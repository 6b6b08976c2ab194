//! The browser side, compiled into the binary so `switchyard serve` needs no build step and no
//! CDN: the dashboard at `/`, the operator console at `/console` and the client library at
//! `/client.js` (sources in bridge/assets/).

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::http::route::Route;

/// Every file, its path, content type and summary. All public: the pages read their tokens
/// from the URL fragment or a sign-in form, never from the server.
const FILES: &[(&str, &str, &str, &str)] = &[
    (
        "/",
        "text/html",
        include_str!("../../assets/dashboard.html"),
        "The live operations dashboard (HTML; token in the URL fragment).",
    ),
    ("/dashboard.js", "text/javascript", include_str!("../../assets/dashboard.js"), "The dashboard's script."),
    ("/dashboard.css", "text/css", include_str!("../../assets/dashboard.css"), "The dashboard's styles."),
    ("/base.css", "text/css", include_str!("../../assets/base.css"), "Styles the dashboard and the console share."),
    (
        "/console",
        "text/html",
        include_str!("../../assets/console.html"),
        "The operator console (HTML; admin token): live counts and lag, connections, connectors, webhook deliveries, a live event inspector.",
    ),
    ("/console.js", "text/javascript", include_str!("../../assets/console.js"), "The operator console's script."),
    ("/console.css", "text/css", include_str!("../../assets/console.css"), "The operator console's styles."),
    (
        "/client.js",
        "text/javascript",
        include_str!("../../assets/client.js"),
        "The browser client library (ES module): resume, backoff with jitter, heartbeat watchdog, polling fallback.",
    ),
    (
        "/client.d.ts",
        "application/typescript",
        include_str!("../../assets/client.d.ts"),
        "TypeScript types for /client.js.",
    ),
];

pub fn routes<S: Clone + Send + Sync + 'static>() -> Vec<Route<S>> {
    FILES
        .iter()
        .map(|&(path, kind, body, summary)| {
            let doc = json!({ "summary": summary, "security": [], "responses": { "200": { "description": kind } } });
            Route::get(path, move || async move { asset(kind, body) }, doc)
        })
        .collect()
}

/// Same-origin scripts and styles only; the dashboard needs nothing else.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

fn asset(kind: &str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("{kind}; charset=utf-8")) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}
