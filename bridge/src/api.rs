//! The non-streaming HTTP API: polling, publish, broadcast, tickets, status,
//! metrics and health. Streaming lives in [`crate::sse::handlers`].

use std::{fmt::Write, sync::Arc, sync::atomic::Ordering};

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard::{
    auth::{Role, TenantScope},
    bus::{MAX_BATCH, ReadError},
    error::PublishError,
    json::{event_from_json, event_to_json},
    log::{Record, Stream},
    names::{Cursor, parse_time_ms},
};
use tracing::Instrument;

use crate::{
    app::App,
    http::access::{QueryCredentials, TICKET_TTL},
    http::body::RawBody,
    http::error::{ApiError, Query},
    http::openapi::error_response,
    http::route::Route,
    sse::handlers::split_channels,
};

/// State, publishing, polling, tickets, admin and the operational endpoints.
pub fn routes() -> Vec<Route<Arc<App>>> {
    vec![
        Route::get(
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
        ),
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
        Route::post(
            "/api/sse/broadcast",
            broadcast,
            json!({ "summary": "Admin: publish one event to a tenant (or, with a system token, to listed tenants).",
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "properties": { "event": { "$ref": "#/components/schemas/Event" }, "tenants": { "type": "array", "items": { "type": "string" } } } } } } },
            "responses": { "201": { "description": "{ids}" }, "400": error_response("Invalid event."), "401": error_response("Bad token."), "403": error_response("Not admin.") } }),
        ),
        Route::get(
            "/api/sse/status",
            status,
            json!({ "summary": "Admin: connections, subscribers, events by type and channel per tenant; `activity`: delivery lag, subscriptions by transport and channel, log size and commit latency, tickets, each connector's latest sync, recent webhook deliveries (what the operator console at /console shows).",
            "responses": { "200": { "description": "Status JSON." }, "401": error_response("Bad token."), "403": error_response("Not admin.") } }),
        ),
        Route::get(
            "/api/events",
            poll,
            json!({ "summary": "Polling fallback: a page of history after an id.",
                "parameters": [
                    { "name": "channels", "in": "query", "schema": { "type": "string" } },
                    { "name": "after", "in": "query", "schema": { "type": "string" }, "description": "An event id or an SSE cursor `N~W`." },
                    { "name": "since", "in": "query", "schema": { "type": "string", "format": "date-time" }, "description": "Instead of `after`: everything published at or after this RFC 3339 time." },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } },
                    { "name": "ticket", "in": "query", "schema": { "type": "string" } }
                ],
                "responses": { "200": { "description": "{events: [{id, type, event}], next, complete, oldestAvailableId, headId}" },
                               "400": error_response("Bad parameter."), "401": error_response("Bad token."), "403": error_response("Channel not allowed."), "404": error_response("Unknown channel.") } }),
        ),
        Route::post(
            "/api/events",
            publish,
            json!({ "summary": "Publish one event (object) or a batch (array), all or nothing; answers once durable.",
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "oneOf": [ { "$ref": "#/components/schemas/Event" }, { "type": "array", "items": { "$ref": "#/components/schemas/Event" } } ] } } } },
                "responses": { "201": { "description": "{id, duplicate} or {ids, duplicates}" }, "400": error_response("Invalid event; names the field."),
                               "401": error_response("Bad token."), "403": error_response("Needs the publish role / wrong tenant."), "413": error_response("Body too large."), "503": error_response("Log unavailable.") } }),
        ),
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

#[derive(Debug, Deserialize)]
pub struct PollQuery {
    channels: Option<String>,
    after: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    tenant: Option<String>,
    #[serde(flatten)]
    credentials: QueryCredentials,
}

/// `GET /api/events?channels=&after=&limit=`: a page of history as JSON, for clients that cannot stream.
pub async fn poll(
    State(app): State<Arc<App>>,
    Query(q): Query<PollQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = app.access.from_request(&headers, &q.credentials).await?;
    let mut since = None;
    let after = match (q.after.as_deref().filter(|s| !s.is_empty()), q.since.as_deref().filter(|s| !s.is_empty())) {
        (Some(s), _) => s.parse::<Cursor>().map_err(|e| ApiError::bad_request("invalid_after", "after", e.0))?,
        (None, Some(t)) => {
            let ms = parse_time_ms(t).map_err(|e| ApiError::bad_request("invalid_since", "since", e.0))?;
            since = Some(ms);
            Cursor::at(app.bus.log().id_before(ms).await.map_err(|e| ApiError::unavailable(e.to_string()))?)
        }
        (None, None) => Cursor::default(),
    };
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("invalid_limit", "limit", "limit must be between 1 and 1000"));
    }
    let channels = split_channels(q.channels.as_deref());
    let mut page =
        app.bus.read(&who, q.tenant.as_deref().unwrap_or(""), &channels, after, limit).await.map_err(read_error)?;
    // The time index may start a little early; what was published before `since` is not asked for.
    if let Some(ms) = since {
        page.events.retain(|r| r.published_ms() >= ms);
    }
    let mut body = String::with_capacity(64 + page.events.len() * 256);
    body.push('{');
    write_events(&mut body, &page.events);
    let _ = write!(
        body,
        "],\"next\":\"{}\",\"complete\":{},\"oldestAvailableId\":\"{}\",\"headId\":\"{}\"}}",
        page.next, page.complete, page.bounds.oldest, page.bounds.head
    );
    Ok(([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body).into_response())
}

/// `"events":[{id, type, event}, …]`: the SSE `data` JSON plus the type name, so one parser
/// serves polling, state and streaming.
fn write_events(body: &mut String, events: &[Arc<Record>]) {
    body.push_str("\"events\":[");
    for (i, r) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let _ = write!(
            body,
            "{{\"id\":\"{}\",\"type\":{},\"event\":{}}}",
            r.id,
            json!(r.type_name()),
            event_to_json(&r.event)
        );
    }
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
    let tenant = q.tenant.as_deref().unwrap_or("");
    let page = app.bus.state_page(&who, tenant, &channels, from, limit).await.map_err(read_error)?;
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

fn read_error(e: ReadError) -> ApiError {
    match e {
        ReadError::Request(e) => ApiError::from(e),
        ReadError::Log(e) => ApiError::unavailable(e.to_string()),
    }
}

/// One event (an object) or a batch (an array). Each item becomes an `Event` before the next is
/// parsed, and parsing stops at the batch cap: a body of millions of `{}` costs at most
/// [`MAX_BATCH`] events, never a JSON tree of the whole body.
fn parse_events(body: &Bytes) -> Result<(Vec<switchyard::proto::v1::Event>, bool), ApiError> {
    use serde::de::DeserializeSeed;
    let mut refused = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = Events { refused: &mut refused }.deserialize(&mut de).and_then(|events| de.end().map(|()| events));
    match (parsed, refused) {
        (_, Some((i, single, e))) => Err(indexed(e, i, single)),
        (Err(e), None) => Err(ApiError::bad_request("invalid_json", "body", format!("body is not JSON: {e}"))),
        (Ok((events, _)), None) if events.is_empty() => {
            Err(ApiError::bad_request("empty_batch", "body", "send at least one event"))
        }
        (Ok(parsed), None) => Ok(parsed),
    }
}

/// Reads the body's events; an event refused on the way (its index, whether it was a lone
/// object, why) is put in `refused` and parsing stops.
struct Events<'a> {
    refused: &'a mut Option<(usize, bool, PublishError)>,
}

type Parsed = (Vec<switchyard::proto::v1::Event>, bool);

impl<'de> serde::de::DeserializeSeed<'de> for Events<'_> {
    type Value = Parsed;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Parsed, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Events<'_> {
    type Value = Parsed;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an event object or an array of them")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<Parsed, A::Error> {
        let mut events = Vec::new();
        while let Some(item) = items.next_element::<Value>()? {
            let refused = match events.len() {
                MAX_BATCH => Err(switchyard::bus::too_many_events(MAX_BATCH)),
                _ => event_from_json(item),
            };
            match refused {
                Ok(event) => events.push(event),
                Err(e) => {
                    *self.refused = Some((events.len(), false, e));
                    return Err(serde::de::Error::custom("refused"));
                }
            }
        }
        Ok((events, false))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Parsed, A::Error> {
        let value = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        match event_from_json(value) {
            Ok(event) => Ok((vec![event], true)),
            Err(e) => {
                *self.refused = Some((0, true, e));
                Err(serde::de::Error::custom("refused"))
            }
        }
    }
}

fn indexed(e: PublishError, i: usize, single: bool) -> ApiError {
    let mut err = ApiError::from(e);
    if !single {
        err.message = format!("events[{i}]: {}", err.message);
    }
    err
}

/// `POST /api/events`: one event (object) or a batch (array), committed together; answers with ids.
pub async fn publish(State(app): State<Arc<App>>, req: axum::extract::Request) -> Result<Response, ApiError> {
    let who = app.access.for_write(req.headers())?;
    who.require(Role::Publish)?;
    let span = tracing::info_span!("publish", token = %who.token_id);
    switchyard::trace::adopt(&span, switchyard::trace::Fields::headers(req.headers()));
    let RawBody(body) = RawBody::after_auth(req).await?;
    let (events, single) = parse_events(&body)?;
    let n = events.len();
    let appended = app.bus.publish_all(&who, events).instrument(span).await.map_err(|(i, e)| indexed(e, i, single))?;
    app.metrics.http_published.fetch_add(n as u64, Ordering::Relaxed);
    let body = if single {
        let a = appended[0];
        json!({ "id": a.id.to_string(), "duplicate": a.duplicate })
    } else {
        json!({
            "ids": appended.iter().map(|a| a.id.to_string()).collect::<Vec<_>>(),
            "duplicates": appended.iter().filter(|a| a.duplicate).count(),
        })
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
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
            "activity": crate::activity::activity(&app, &who.tenant),
        }),
        TenantScope::One(t) => json!({
            "connections": { "current": conns.by_tenant.get(t.as_str()).copied().unwrap_or(0) },
            "events": { "published": counters.by_tenant.get(t.as_str()).map_or(0, |c| c.total) },
            "log": { "backend": app.bus.log().backend(), "headId": log.head.to_string() },
            "tenants": tenants,
            "uptimeSecs": app.started.elapsed().as_secs(),
            "activity": crate::activity::activity(&app, &who.tenant),
        }),
    };
    let mut body = body;
    body["activity"]["outbound"] = crate::outbound::console(&app, &who.tenant).await;
    Ok(Json(body).into_response())
}

fn tenant_json(c: &switchyard::hub::TenantCounters, conns: Option<&usize>) -> Value {
    json!({ "connections": conns.copied().unwrap_or(0), "published": c.total, "byType": c.by_type, "byChannel": c.by_channel })
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::prometheus::render(&app)).into_response()
}
