//! `GET /api/sse/status` (admin): connections, subscribers and events per tenant, and the
//! `activity` the operator console shows.

use std::{sync::Arc, sync::atomic::Ordering};

use axum::{
    Json,
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use switchyard::auth::{Role, TenantScope};

use crate::{app::App, http::error::ApiError, http::openapi::error_response, http::route::Route};

/// The admin status.
pub fn routes() -> Vec<Route<Arc<App>>> {
    vec![Route::get(
        "/api/sse/status",
        status,
        json!({ "summary": "Admin: connections, subscribers, events by type and channel per tenant; `activity`: delivery lag, subscriptions by transport and channel, log size and commit latency, tickets, each connector's latest sync, recent webhook deliveries (what the operator console at /console shows).",
            "responses": { "200": { "description": "Status JSON." }, "401": error_response("Bad token."), "403": error_response("Not admin.") } }),
    )]
}

/// `GET /api/sse/status` (admin): connections, subscribers, events by type and channel.
pub async fn status(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let who = app.access.from_headers(&headers)?;
    who.require(Role::Admin)?;
    let counters = app.bus.hub().counters();
    let conns = app.limits.stats();
    let log = app.bus.log().stats();
    let tenants: Value = match &who.tenant {
        TenantScope::All => json!(
            counters
                .by_tenant
                .iter()
                .map(|(t, c)| (t.clone(), tenant_json(c, conns.by_tenant.get(t))))
                .collect::<serde_json::Map<_, _>>()
        ),
        TenantScope::One(t) => {
            let c = counters.by_tenant.get(t.as_str()).cloned().unwrap_or_default();
            json!({ t.to_string(): tenant_json(&c, conns.by_tenant.get(t.as_str())) })
        }
    };
    // A tenant's admin sees its own tenant only: no other tenant's name, and no totals that
    // would reveal their traffic.
    let body = match &who.tenant {
        TenantScope::All => json!({
            "connections": { "current": conns.current, "peak": conns.peak, "total": conns.total },
            "subscribers": app.bus.subscribers().current,
            "writers": { "tasks": app.streams.writers.counts().0, "streams": app.streams.writers.counts().1 },
            "events": {
                "published": counters.total,
                "sseFrames": app.metrics.sse_frames.load(Ordering::Relaxed),
                "evicted": app.metrics.sse_evicted.load(Ordering::Relaxed),
            },
            "log": { "backend": app.bus.log().backend(), "headId": log.head.to_string(), "oldestId": log.oldest.to_string(), "stored": log.stored },
            "tenants": tenants,
            "uptimeSecs": app.started.elapsed().as_secs(),
            "activity": crate::features::activity::activity(&app, &who.tenant),
        }),
        TenantScope::One(t) => json!({
            "connections": { "current": conns.by_tenant.get(t.as_str()).copied().unwrap_or(0) },
            "events": { "published": counters.by_tenant.get(t.as_str()).map_or(0, |c| c.total) },
            "log": { "backend": app.bus.log().backend(), "headId": log.head.to_string() },
            "tenants": tenants,
            "uptimeSecs": app.started.elapsed().as_secs(),
            "activity": crate::features::activity::activity(&app, &who.tenant),
        }),
    };
    let mut body = body;
    body["activity"]["outbound"] = crate::features::outbound::console(&app, &who.tenant).await;
    Ok(Json(body).into_response())
}

fn tenant_json(c: &switchyard::hub::TenantCounters, conns: Option<&usize>) -> Value {
    json!({ "connections": conns.copied().unwrap_or(0), "published": c.total, "byType": c.by_type, "byChannel": c.by_channel })
}
