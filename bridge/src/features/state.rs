//! `GET /api/state`: the current state, a page of slots at a time, consistent with one id.

use std::{fmt::Write, sync::Arc};

use axum::{
    extract::State,
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::events::{read_error, write_events};
use crate::{
    app::App,
    http::access::QueryCredentials,
    http::error::{ApiError, Query},
    http::openapi::error_response,
    http::route::Route,
    sse::handlers::split_channels,
};

/// The state.
pub fn routes() -> Vec<Route<Arc<App>>> {
    vec![Route::get(
        "/api/state",
        state,
        json!({ "summary": "The current state: the latest snapshot of every (type, key) the token may see in these channels, and the id it is consistent with (subscribe with lastEventId = asOf for what follows).",
            "parameters": [
                { "name": "channels", "in": "query", "schema": { "type": "string" }, "description": "Comma-separated channels; all the token allows when omitted." },
                { "name": "tenant", "in": "query", "schema": { "type": "string" }, "description": "System tokens only." },
                { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 10000, "default": 1000 }, "description": "Keys per page." },
                { "name": "cursor", "in": "query", "schema": { "type": "string" }, "description": "The previous page's `next`: the next page, with the same asOf." }
            ],
            "responses": { "200": { "description": "{asOf, events: [{id, type, event}], next}: events in id order; `next` is null on the last page. Keys that change during a walk leave the pages (their events after asOf carry them)." },
                           "400": error_response("Bad channel."), "401": error_response("Bad token."), "403": error_response("Channel not allowed."), "404": error_response("Unknown channel."), "503": error_response("Log unavailable.") } }),
    )]
}

#[derive(Debug, Deserialize)]
pub struct StateQuery {
    channels: Option<String>,
    tenant: Option<String>,
    /// Slots per page (default [`STATE_PAGE`], at most [`MAX_STATE_PAGE`]).
    limit: Option<usize>,
    /// `next` from the previous page: `<asOf>.<after>`.
    cursor: Option<String>,
    #[serde(flatten)]
    credentials: QueryCredentials,
}

/// Slots a state page holds unless the request says otherwise, and at most (as gRPC `State`):
/// a request costs what it returns, never every key a tenant has.
use switchyard::grpc::{MAX_STATE_PAGE, STATE_PAGE};

/// `GET /api/state?channels=&limit=&cursor=`: the current snapshot of every key, a page at a
/// time, and the id it is consistent with (the same on every page of one walk).
pub async fn state(
    State(app): State<Arc<App>>,
    Query(q): Query<StateQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = app.access.from_request(&headers, &q.credentials).await?;
    let limit = q.limit.unwrap_or(STATE_PAGE);
    if limit == 0 || limit > MAX_STATE_PAGE {
        return Err(ApiError::bad_request("invalid_limit", "limit", format!("limit must be 1 to {MAX_STATE_PAGE}")));
    }
    let from = switchyard::grpc::state_cursor(q.cursor.as_deref().unwrap_or(""))
        .map_err(|m| ApiError::bad_request("invalid_cursor", "cursor", m))?;
    let channels = split_channels(q.channels.as_deref());
    let tenant = switchyard::bus::tenant_sel(q.tenant.as_deref().unwrap_or(""))?;
    let page = app.bus.state_page(&who, &tenant, &channels, from, limit).await.map_err(read_error)?;
    let mut body = String::with_capacity(64 + page.records.len() * 256);
    let _ = write!(body, "{{\"asOf\":\"{}\",", page.as_of);
    write_events(&mut body, &page.records);
    match page.next {
        Some(after) => write!(body, "],\"next\":\"{}.{after}\"}}", page.as_of),
        None => write!(body, "],\"next\":null}}"),
    }
    .ok();
    Ok(([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body).into_response())
}
