//! `POST /api/sse/broadcast` (admin): one event to a tenant, or with a system token to several.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard::{
    auth::{Role, TenantScope},
    json::event_from_json,
};

use super::events::indexed;
use crate::{app::App, http::body::RawBody, http::error::ApiError, http::openapi::error_response, http::route::Route};

/// Broadcast.
pub fn routes() -> Vec<Route<Arc<App>>> {
    vec![Route::post(
        "/api/sse/broadcast",
        broadcast,
        json!({ "summary": "Admin: publish one event to a tenant (or, with a system token, to listed tenants).",
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "properties": { "event": { "$ref": "#/components/schemas/Event" }, "tenants": { "type": "array", "items": { "type": "string" } } } } } } },
            "responses": { "201": { "description": "{ids}" }, "400": error_response("Invalid event."), "401": error_response("Bad token."), "403": error_response("Not admin.") } }),
    )]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Broadcast {
    /// System tokens: the tenants to send to. Tenant admins always send to their own.
    #[serde(default)]
    tenants: Vec<String>,
    event: Value,
}

/// `POST /api/sse/broadcast` (admin): one event to every subscriber of its channels, in one or more tenants.
pub async fn broadcast(State(app): State<Arc<App>>, req: axum::extract::Request) -> Result<Response, ApiError> {
    let who = app.access.for_write(req.headers())?;
    who.require(Role::Admin)?;
    let RawBody(body) = RawBody::after_auth(req).await?;
    let b: Broadcast = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_json", "body", format!("expected {{\"event\": {{…}}, \"tenants\"?: […]}}: {e}"))
    })?;
    let template = event_from_json(b.event).map_err(ApiError::from)?;
    let tenants = match (&who.tenant, b.tenants.is_empty()) {
        (TenantScope::One(_), true) => vec![String::new()],
        (TenantScope::One(_), false) => {
            return Err(ApiError::bad_request("invalid_tenant", "tenants", "only system tokens name tenants"));
        }
        (TenantScope::All, true) => {
            return Err(ApiError::bad_request("invalid_tenant", "tenants", "a system token must list the tenants"));
        }
        (TenantScope::All, false) => b.tenants,
    };
    let events = tenants
        .into_iter()
        .map(|t| {
            let mut e = template.clone();
            e.tenant = t;
            e
        })
        .collect();
    let appended = app.bus.publish_all(&who, events).await.map_err(|(i, e)| indexed(e, i, false))?;
    Ok((StatusCode::CREATED, Json(json!({ "ids": appended.iter().map(|a| a.id.to_string()).collect::<Vec<_>>() })))
        .into_response())
}
