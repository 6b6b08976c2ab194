//! Tokens: revocation (every node refuses a `jti` from then on) and single-use tickets for
//! EventSource URLs.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;
use switchyard::auth::{Role, TenantScope};

use crate::{
    app::App, http::access::TICKET_TTL, http::body::RawBody, http::error::ApiError, http::openapi::error_response,
    http::route::Route,
};

/// Revocation and tickets.
pub fn routes() -> Vec<Route<Arc<App>>> {
    vec![
        Route::post(
            "/api/tokens/revoke",
            revoke,
            json!({ "summary": "Admin: every node refuses the token with this jti from now on (its tickets too); streams it opened end at their next heartbeat.",
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["jti"], "properties": { "jti": { "type": "string" }, "tenant": { "type": "string", "description": "System tokens only; * for system tokens." }, "exp": { "type": "integer", "description": "When the token expires (Unix s); the revocation is kept until then. Default one year." } } } } } },
            "responses": { "200": { "description": "{revoked: {tenant, jti, exp}}" }, "400": error_response("Bad jti or exp."), "401": error_response("Bad token."), "403": error_response("Not admin."), "429": error_response("Too many revocations outstanding.") } }),
        ),
        Route::post(
            "/api/sse/ticket",
            ticket,
            json!({ "summary": "Trade the bearer token for a single-use ticket valid 30 s (never past its token); valid on any node.",
            "responses": { "200": { "description": "{ticket, expires_in}" }, "401": error_response("Bad token.") } }),
        ),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    jti: String,
    /// System admins name the tenant (`*` for system tokens); others revoke in their own.
    #[serde(default)]
    tenant: Option<String>,
    /// When the token expires anyway (Unix seconds): the revocation is kept until then.
    #[serde(default)]
    exp: Option<u64>,
}

/// Kept this long when the revoker does not say when the token expires.
const REVOKE_DEFAULT_SECS: u64 = 365 * 24 * 3600;

/// Longest `jti` accepted (they are ids, usually 16 to 36 characters).
const MAX_JTI: usize = 256;

/// `POST /api/tokens/revoke`: from now on every node refuses the token with this `jti` (and its
/// tickets), and the streams it opened end at their next heartbeat.
pub async fn revoke(State(app): State<Arc<App>>, req: axum::extract::Request) -> Result<Response, ApiError> {
    let who = app.access.for_write(req.headers())?;
    who.require(Role::Admin)?;
    let RawBody(body) = RawBody::after_auth(req).await?;
    let r: Revoke = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_json", "body", format!("expected {{\"jti\": \"…\", \"exp\"?: <unix s>}}: {e}"))
    })?;
    if r.jti.is_empty() || r.jti.len() > MAX_JTI {
        return Err(ApiError::bad_request("invalid_jti", "jti", format!("jti must be 1 to {MAX_JTI} bytes")));
    }
    let now = switchyard::auth::now_secs();
    let exp = r.exp.unwrap_or(now + REVOKE_DEFAULT_SECS);
    if exp <= now {
        return Err(ApiError::bad_request("invalid_exp", "exp", "exp is past: that token is refused already"));
    }
    let tenant = match (&who.tenant, r.tenant.as_deref()) {
        (TenantScope::All, Some("*")) => "*".to_owned(),
        _ => who
            .resolve_tenant(r.tenant.as_deref().unwrap_or(""))?
            .map(|t| t.to_string())
            .ok_or_else(|| ApiError::bad_request("invalid_tenant", "tenant", "name the tenant"))?,
    };
    let revoked = switchyard::ledger::Revoked::new(tenant, r.jti, exp);
    tracing::info!(tenant = %revoked.tenant, by = %who.token_id, "token revoked");
    app.access.ledger.revoke(revoked.clone()).await?;
    Ok((
        StatusCode::OK,
        Json(json!({ "revoked": { "tenant": revoked.tenant, "jti": revoked.jti, "exp": revoked.exp } })),
    )
        .into_response())
}

/// `POST /api/sse/ticket`: trade the bearer token for a single-use ticket for EventSource URLs.
pub async fn ticket(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let who = app.access.from_headers(&headers)?;
    let ticket = app.access.issue_ticket(&who)?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(json!({ "ticket": ticket, "expires_in": TICKET_TTL.as_secs() })))
        .into_response())
}
