//! `/api/outbound/…`: a tenant admin's endpoints (webhooks, Slack, e-mail) and the operator's
//! tools for them (replay, resend, dead letters, redrive). The delivery itself is
//! `switchyard_outbound`'s; this is its HTTP face, tenant-scoped like every other route.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard::{auth::Role, names::Tenant};
use switchyard_outbound::{Outbound, OutboundError, Replay, Spec};

use crate::{
    app::App,
    http::body::RawBody,
    http::error::{ApiError, Path, Query},
    http::openapi::error_response,
    http::route::Route,
};

/// Largest request body on these routes: an endpoint spec is well under a kilobyte.
const MAX_BODY: usize = 64 * 1024;

impl From<OutboundError> for ApiError {
    fn from(e: OutboundError) -> Self {
        match &e {
            OutboundError::Invalid(s) => Self::bad_request("invalid_endpoint", s.field, s.message.clone()),
            OutboundError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "endpoint_not_found", e.to_string()),
            OutboundError::TooMany(_) => Self::bad_request("too_many_endpoints", "endpoint", e.to_string()),
            OutboundError::Static(_) => Self::new(StatusCode::CONFLICT, "static_endpoint", e.to_string()),
            OutboundError::Store(detail) => Self::unavailable(detail.clone()),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TenantQuery {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    limit: Option<usize>,
}

/// The caller's outbound service and tenant: an admin of the tenant (a system token names it).
fn admit(app: &App, headers: &HeaderMap, q: &TenantQuery) -> Result<(Outbound, Tenant), ApiError> {
    let who = app.access.from_headers(headers)?;
    who.require(Role::Admin)?;
    let tenant = who
        .resolve_tenant(&q.tenant)?
        .ok_or_else(|| ApiError::bad_request("invalid_tenant", "tenant", "name one tenant"))?;
    let outbound = app.outbound.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "outbound_unavailable",
            "outbound delivery runs on bus nodes (switchyard serve), not on a bridge",
        )
    })?;
    Ok((outbound, tenant))
}

async fn json_body<T: serde::de::DeserializeOwned>(req: axum::extract::Request, hint: &str) -> Result<T, ApiError> {
    let RawBody(body) = RawBody::after_auth(req).await?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", "body", format!("expected {hint}: {e}")))
}

async fn create(
    State(app): State<Arc<App>>,
    Query(q): Query<TenantQuery>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (outbound, tenant) = admit(&app, req.headers(), &q)?;
    let spec: Spec =
        json_body(req, "an endpoint: {kind?, url | to, types?, channels?, filter?, ratePerSec?, ordered?, start?}")
            .await?;
    let (view, secret) = outbound.create(&tenant, spec).await?;
    tracing::info!(%tenant, endpoint = %view.id, kind = %view.spec.kind, "outbound endpoint created");
    let body = json!({ "endpoint": view, "secret": secret });
    Ok((StatusCode::CREATED, [(axum::http::header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

async fn list(
    State(app): State<Arc<App>>,
    Query(q): Query<TenantQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (outbound, tenant) = admit(&app, &headers, &q)?;
    Ok(Json(json!({ "endpoints": outbound.list(&tenant).await? })))
}

async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (outbound, tenant) = admit(&app, &headers, &q)?;
    Ok(Json(json!({ "endpoint": outbound.get(&tenant, &id).await? })))
}

async fn delete(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (outbound, tenant) = admit(&app, &headers, &q)?;
    outbound.delete(&tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn enable(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (outbound, tenant) = admit(&app, &headers, &q)?;
    Ok(Json(json!({ "endpoint": outbound.enable(&tenant, &id).await? })))
}

async fn rotate(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (outbound, tenant) = admit(&app, &headers, &q)?;
    let secret = outbound.rotate(&tenant, &id).await?;
    Ok(([(axum::http::header::CACHE_CONTROL, "no-store")], Json(json!({ "secret": secret }))).into_response())
}

async fn dead_letters(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (outbound, tenant) = admit(&app, &headers, &q)?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    Ok(Json(json!({ "deadLetters": outbound.dead_letters(&tenant, &id, limit).await? })))
}

async fn redrive(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (outbound, tenant) = admit(&app, &headers, &q)?;
    Ok(Json(json!({ "owed": outbound.redrive(&tenant, &id).await? })))
}

async fn replay(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
    req: axum::extract::Request,
) -> Result<Json<Value>, ApiError> {
    let (outbound, tenant) = admit(&app, req.headers(), &q)?;
    let range: Replay = json_body(req, "{afterId, toId?} or {sinceMs, untilMs?}").await?;
    Ok(Json(json!({ "owed": outbound.replay(&tenant, &id, range).await? })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Resend {
    event_id: String,
}

async fn resend(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
    req: axum::extract::Request,
) -> Result<Json<Value>, ApiError> {
    let (outbound, tenant) = admit(&app, req.headers(), &q)?;
    let r: Resend = json_body(req, "{eventId}").await?;
    let event = r.event_id.parse().map_err(|_| ApiError::bad_request("invalid_event_id", "eventId", "an event id"))?;
    outbound.resend(&tenant, &id, event).await?;
    Ok(Json(json!({ "owed": 1 })))
}

/// The console's view: each endpoint's state, lag, counts and last error (the caller's tenant's,
/// or every tenant's for a system admin). Empty where this process delivers nothing.
pub async fn console(app: &App, scope: &switchyard::auth::TenantScope) -> Value {
    let Some(outbound) = &app.outbound else { return json!([]) };
    let listed = match scope {
        switchyard::auth::TenantScope::All => outbound.list_all().await,
        switchyard::auth::TenantScope::One(t) => {
            outbound.list(t).await.map(|v| v.into_iter().map(|e| (t.to_string(), e)).collect())
        }
    };
    match listed {
        Ok(views) => {
            json!(views.into_iter().map(|(tenant, v)| json!({ "tenant": tenant, "endpoint": v })).collect::<Vec<_>>())
        }
        Err(error) => {
            tracing::warn!(%error, "console: cannot list outbound endpoints");
            json!([])
        }
    }
}

pub fn routes() -> Vec<Route<Arc<App>>> {
    let p = "/api/outbound/endpoints";
    let one = "/api/outbound/endpoints/{id}";
    let id = json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }]);
    let admin = |summary: &str, ok: &str| {
        json!({ "summary": summary, "parameters": id,
        "responses": { "200": { "description": ok }, "401": error_response("Bad token."), "403": error_response("Not admin."), "404": error_response("No such endpoint of this tenant.") } })
    };
    vec![
        Route::post(p, create, json!({ "summary": "Admin: create an endpoint (webhook, slack or email) for the token's tenant; the answer holds its signing secret, shown this once (docs/outbound.md).",
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "properties": {
                "kind": { "type": "string", "enum": ["webhook", "slack", "email"] }, "url": { "type": "string" }, "to": { "type": "array", "items": { "type": "string" } },
                "types": { "type": "array", "items": { "type": "string" }, "description": "Event-type globs." }, "channels": { "type": "array", "items": { "type": "string" } },
                "filter": { "type": "string", "description": "A condition on payload fields, e.g. total.amount >= 1000." }, "ratePerSec": { "type": "integer" },
                "ordered": { "type": "boolean" }, "start": { "type": "string", "description": "now, an event id, or since=<time>." }, "description": { "type": "string" } } } } } },
            "responses": { "201": { "description": "{endpoint, secret}" }, "400": error_response("Bad field (named)."), "401": error_response("Bad token."), "403": error_response("Not admin.") } })).body_limit(MAX_BODY),
        Route::get(p, list, json!({ "summary": "Admin: the tenant's endpoints, each with its state (healthy, retrying, disabled), lag, counts and last error.",
            "responses": { "200": { "description": "{endpoints}" }, "401": error_response("Bad token."), "403": error_response("Not admin.") } })),
        Route::get(one, get, admin("Admin: one endpoint and its delivery state.", "{endpoint}")),
        Route::delete(one, delete, admin("Admin: delete an endpoint and everything it kept.", "Deleted (204).")),
        Route::post(format!("{one}/enable"), enable, admin("Admin: enable a disabled endpoint; delivery resumes where it stopped.", "{endpoint}")),
        Route::post(format!("{one}/rotate-secret"), rotate, admin("Admin: a new signing secret, shown once; the old one signs beside it for a day.", "{secret}")),
        Route::get(format!("{one}/dead-letters"), dead_letters, admin("Admin: events that used up the retry ladder.", "{deadLetters}")),
        Route::post(format!("{one}/redrive"), redrive, admin("Admin: deliver every dead letter again, from a fresh ladder.", "{owed}")).body_limit(MAX_BODY),
        Route::post(format!("{one}/replay"), replay, admin("Admin: deliver again what the endpoint selects in an id range {afterId, toId} or a time range {sinceMs, untilMs} (at most 10000).", "{owed}")).body_limit(MAX_BODY),
        Route::post(format!("{one}/resend"), resend, admin("Admin: deliver one event again: {eventId}.", "{owed}")).body_limit(MAX_BODY),
    ]
}
