//! Events over plain HTTP: `POST /api/events` publishes one event or a batch, all or nothing;
//! `GET /api/events` is the polling fallback, a page of history after an id or a time.

use std::{fmt::Write, sync::Arc, sync::atomic::Ordering};

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard::{
    auth::Role,
    bus::{MAX_BATCH, ReadError, tenant_sel},
    error::PublishError,
    json::{event_from_json, event_to_json},
    log::Record,
    names::{Cursor, parse_time_ms},
};
use tracing::Instrument;

use crate::{
    app::App,
    http::access::QueryCredentials,
    http::body::RawBody,
    http::error::{ApiError, Query},
    http::openapi::error_response,
    http::route::Route,
    sse::handlers::split_channels,
};

/// Publishing and polling.
pub fn routes() -> Vec<Route<Arc<App>>> {
    vec![
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
    ]
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
    let mut page = app
        .bus
        .read(&who, &tenant_sel(q.tenant.as_deref().unwrap_or(""))?, &channels, after, limit)
        .await
        .map_err(read_error)?;
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
pub(super) fn write_events(body: &mut String, events: &[Arc<Record>]) {
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

pub(super) fn read_error(e: ReadError) -> ApiError {
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

pub(super) fn indexed(e: PublishError, i: usize, single: bool) -> ApiError {
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
