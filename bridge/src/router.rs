//! The HTTP edge: one axum [`Router`] over an [`App`], composed from each feature's routes.
//!
//! The route table ([`routes`]) is the only list of endpoints: the router serves it, the
//! OpenAPI document describes it and the direct SSE path defers to it.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::DefaultBodyLimit,
    http::{HeaderValue, Method},
};
use serde_json::{Value, json};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{app::App, features, http::openapi, http::route::Route, sse, webhooks};

/// Largest request body: a batch of events. Webhooks set their own, smaller.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// Every route: each feature's own, and the two that describe the API: this document and the
/// event catalog.
pub fn routes() -> Vec<Route<Arc<App>>> {
    let mut all = Vec::new();
    all.extend(sse::handlers::routes());
    all.extend(features::routes());
    all.extend(webhooks::routes());
    all.push(Route::get("/api/openapi.json", document, json!({ "summary": "This document.", "security": [], "responses": { "200": { "description": "OpenAPI 3.1" } } })));
    all.push(Route::get(
        "/api/catalog",
        catalog,
        json!({ "summary": "The event catalog: every type's name, payload field, message, channels, delivery and summary (docs/events.md as JSON).", "security": [],
                "responses": { "200": { "description": "`{\"events\": [...]}`" } } }),
    ));
    all
}

/// `GET /api/catalog`: public, like docs/events.md. Browser clients listen by type (an
/// EventSource has no wildcard), so "every event" needs the list of types.
async fn catalog() -> Json<Value> {
    static CATALOG: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| switchyard::catalog::Catalog::global().to_json());
    Json(CATALOG.clone())
}

/// Built once: the table does not change while the process runs, and the document is public.
async fn document() -> Json<Value> {
    static SPEC: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| openapi::spec(&routes()));
    Json(SPEC.clone())
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
    let r = routes()
        .into_iter()
        .fold(Router::new(), |r, route| r.route(&route.path, route.handler))
        .fallback(features::ops::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app);
    match cors {
        Some(c) => r.layer(c),
        None => r,
    }
}

/// The router driven directly (`oneshot`, no socket): each feature's handlers behind their
/// state, as the server composes them.
#[cfg(test)]
mod tests {
    use std::{path::Path, sync::Arc};

    use axum::{
        body::{Body, to_bytes},
        http::{Request, StatusCode, header},
    };
    use serde_json::{Value, json};
    use switchyard::{
        auth::{Role, Signer, Verifier},
        bus::Bus,
        hub::Hub,
        ledger::LocalLedger,
        log::embedded::{EmbeddedConfig, EmbeddedLog},
    };
    use tower::ServiceExt;

    use super::router;
    use crate::{
        app::App,
        config::{SseConfig, WebhooksConfig},
        http::access::Access,
        http::limits::{Caps, Limits},
        metrics::Metrics,
        sse::pulse::Pulse,
        webhooks::{Inbound, Webhooks},
    };

    const SECRET: &[u8] = b"a test secret of thirty-two bytes";

    fn app(dir: &Path) -> Arc<App> {
        app_with_pulse(dir).0
    }

    /// An app and the sender of its pulse (dropping it tells every stream the server is stopping).
    fn app_with_pulse(dir: &Path) -> (Arc<App>, tokio::sync::watch::Sender<Pulse>) {
        let hub = Hub::default();
        let log = Arc::new(EmbeddedLog::open(dir, EmbeddedConfig::default(), hub.feed()).unwrap());
        let bus = Bus::new(log, hub, Default::default());
        let verifier = Verifier::hs256(SECRET);
        let ledger = Arc::new(LocalLedger::open(dir.join("revoked.json"), verifier.revocations().clone()).unwrap());
        let hooks = Arc::new(Webhooks::from_config(&WebhooksConfig::default(), &Default::default()).unwrap());
        let (beat, pulse) = tokio::sync::watch::channel(Pulse::Beat(0));
        let metrics = Arc::new(Metrics::default());
        let streams = crate::sse::Streams::new(crate::sse::StreamState {
            bus: bus.clone(),
            access: Arc::new(Access::new(verifier, false, SECRET, ledger)),
            limits: Limits::new(Caps { total: 10, per_tenant: 10, per_token: 10 }),
            sse: SseConfig::default(),
            writers: crate::sse::writers::Writers::new(bus.hub().clone(), pulse.clone()),
            pulse,
            metrics: metrics.clone(),
            own_paths: super::routes().into_iter().map(|r| r.path).collect(),
        });
        let inbound = Inbound { bus, hooks, metrics };
        let app = Arc::new(App::new(&Default::default(), streams, Default::default(), inbound, None));
        (app, beat)
    }

    fn token(role: Role, channels: &[&str]) -> String {
        Signer::hs256(SECRET).mint("acme", role, channels.iter().map(|c| c.to_string()).collect(), 600)
    }

    /// Status and JSON body of one request through the router.
    async fn call(app: &Arc<App>, req: Request<Body>) -> (StatusCode, Value) {
        let resp = router(app.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let body = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    fn get(uri: &str, token: Option<&str>) -> Request<Body> {
        let mut r = Request::get(uri);
        if let Some(t) = token {
            r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        r.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn errors_are_json_with_a_code_by_one_rule() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let (status, body) = call(&app, get("/no/such/route", None)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
        let (status, body) = call(&app, get("/api/events?channels=alerts", None)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthenticated")));
        let narrow = token(Role::Subscribe, &["orders"]);
        let (status, body) = call(&app, get("/api/events?channels=alerts", Some(&narrow))).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("permission_denied")));
    }

    #[tokio::test]
    async fn the_catalog_is_public_and_lists_every_type_with_its_channels() {
        let dir = tempfile::tempdir().unwrap();
        let (status, body) = call(&app(dir.path()), get("/api/catalog", None)).await;
        assert_eq!(status, StatusCode::OK);
        let events = body["events"].as_array().unwrap();
        assert_eq!(events.len(), switchyard::catalog::Catalog::global().specs().len());
        let status = events.iter().find(|e| e["name"] == "xero:sync-status").unwrap();
        assert_eq!(status["channels"], json!(["dashboard"]));
        assert_eq!((status["delivery"].as_str(), status["message"].as_str()), (Some("snapshot"), Some("SyncStatus")));
        let progress = events.iter().find(|e| e["name"] == "import:job-progress").unwrap();
        assert!(progress["channels"].as_array().unwrap().iter().any(|c| c == "jobs/{key}"), "{progress}");
    }

    #[tokio::test]
    async fn a_published_event_is_read_back_through_the_polling_handler() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let event = json!({"type": "alert:info", "data": {"title": "hello"}});
        let publish = Request::post("/api/events")
            .header(header::AUTHORIZATION, format!("Bearer {}", token(Role::Publish, &[])))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(event.to_string()))
            .unwrap();
        let (status, body) = call(&app, publish).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        let (status, page) = call(&app, get("/api/events?channels=alerts", Some(&token(Role::Subscribe, &[])))).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["events"][0]["id"].as_str(), Some(id.as_str()));
        assert_eq!(page["events"][0]["event"]["alertInfo"]["title"], "hello");
    }

    #[tokio::test]
    async fn webhook_handlers_get_their_own_state_and_say_when_a_platform_is_not_configured() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let req = Request::post("/api/webhooks/shopify").body(Body::from("{}")).unwrap();
        let (status, body) = call(&app, req).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_configured")));
    }

    /// Log lines written while the test runs (this thread's subscriber: a current-thread runtime).
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        /// What was logged, once `needle` has been logged `times` times (up to 5 s of yields).
        async fn once_it_holds(&self, needle: &str, times: usize) -> String {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
                if text.matches(needle).count() >= times || std::time::Instant::now() > deadline {
                    return text;
                }
                tokio::task::yield_now().await;
            }
        }
    }

    #[tokio::test]
    async fn every_stream_logs_its_id_tenant_channels_and_why_and_when_it_ended() {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let dir = tempfile::tempdir().unwrap();
        let (app, beat) = app_with_pulse(dir.path());
        let resp =
            router(app.clone()).oneshot(get("/api/sse/alerts", Some(&token(Role::Subscribe, &[])))).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body().into_data_stream();
        use futures::StreamExt;
        let first = body.next().await.unwrap().unwrap();
        assert!(first.starts_with(b"retry:"), "{first:?}");
        drop(body);
        // The stream's task notices the client left when it next runs: wait for it to say so.
        let text = logs.once_it_holds("SSE stream closed", 1).await;
        let opened = text.lines().find(|l| l.contains("SSE stream opened")).expect(&text);
        assert!(
            opened.contains("tenant=acme") && opened.contains("channels=alerts") && opened.contains("conn="),
            "{opened}"
        );
        let closed = text.lines().find(|l| l.contains("SSE stream closed")).expect(&text);
        assert!(
            closed.contains("reason=\"client went away\"") || closed.contains("reason=client went away"),
            "{closed}"
        );
        assert!(closed.contains(&format!("bytes={}", first.len())), "{closed}");
        assert!(closed.contains("events=0") && closed.contains("secs="), "{closed}");
        assert!(closed.contains("tenant=acme") && closed.contains("channels=alerts"), "{closed}");
        // With its pulse's sender gone, to a stream read to its end, the server is stopping.
        drop(beat);
        let resp = router(app).oneshot(get("/api/sse/alerts", Some(&token(Role::Subscribe, &[])))).await.unwrap();
        let all = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        assert!(all.ends_with(b"data: {\"reason\":\"server shutting down\"}\n\n"), "{all:?}");
        let text = logs.once_it_holds("SSE stream closed", 2).await;
        let closed = text.lines().filter(|l| l.contains("SSE stream closed")).nth(1).expect(&text);
        assert!(
            closed.contains("server shutting down") && closed.contains(&format!("bytes={}", all.len())),
            "{closed}"
        );
    }
}
