//! Server-Sent Events: `/api/sse/{channel}`, `/api/sse/subscribe?channels=`, `/api/sse/jobs/{id}`.
//!
//! Each record's frame (`id`, `event`, `data`) is encoded once, cached on the
//! record, and the same `Bytes` goes to every subscriber. The body is a stream
//! hyper pulls from: a client that stops reading stops being fed, and once it
//! falls a whole hub ring behind it is dropped with a comment saying so and
//! resumes from its `Last-Event-ID`. Resume, gaps and ordering come from
//! [`switchyard::subscription`].

use std::convert::Infallible;

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::Response,
};
use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use switchyard::{
    bus::{SubscribeError, SubscribeSpec, tenant_sel},
    names::{Channel, Cursor, EventId, parse_time_ms},
    subscription::{Item, Lag, Start},
};

use super::Streams;
use crate::{
    http::access::QueryCredentials,
    http::error::{ApiError, Path, Query},
    http::openapi::error_response,
    http::route::Route,
    sse::pulse::Pulse,
    sse::stream::{HEARTBEAT, Session, ending, gap_frame, lapsed, render},
    sse::writers::Handed,
};

/// The streams: one channel, several, one job.
pub fn routes<S>() -> Vec<Route<S>>
where
    S: Clone + Send + Sync + 'static,
    Streams: axum::extract::FromRef<S>,
{
    let sse_params = json!([
        { "name": "Last-Event-ID", "in": "header", "schema": { "type": "string" }, "description": "Resume after this cursor: an event id, or `N~W` as sent on `id:` lines while coalescing held snapshots back (their current state is sent first). Wins over `start` and `since`." },
        { "name": "lastEventId", "in": "query", "schema": { "type": "string" }, "description": "As Last-Event-ID (for clients that cannot set headers)." },
        { "name": "start", "in": "query", "schema": { "type": "string", "enum": ["live", "state"], "default": "live" }, "description": "`state`: the current snapshot of every key first (each with its own id, in id order), then a `stream:state` event with `asOf`, then every event after it." },
        { "name": "since", "in": "query", "schema": { "type": "string", "format": "date-time" }, "description": "Replay everything published at or after this RFC 3339 time, then live." },
        { "name": "ticket", "in": "query", "schema": { "type": "string" }, "description": "Single-use ticket from POST /api/sse/ticket." },
        { "name": "access_token", "in": "query", "schema": { "type": "string" }, "description": "Only when the server enables auth.allow_query_token." },
        { "name": "coalesce", "in": "query", "schema": { "type": "boolean", "default": true }, "description": "Coalesce state snapshots per (type, key)." },
        { "name": "tenant", "in": "query", "schema": { "type": "string" }, "description": "System tokens only: the tenant to read." }
    ]);
    let sse_responses = json!({
        "200": { "description": "An event stream: `retry:` first, then `id`/`event`/`data` frames, `stream:gap` when a resume cannot be complete (followed by the current state of what changed and `stream:state`), and heartbeat comments.",
                 "headers": { "x-switchyard-resume": { "schema": { "type": "string", "enum": ["complete", "gap"] } } },
                 "content": { "text/event-stream": { "schema": { "type": "string" } } } },
        "400": error_response("Bad channel or Last-Event-ID."),
        "401": error_response("Missing, invalid or expired token."),
        "403": error_response("The token does not allow this channel."),
        "404": error_response("Unknown channel."),
        "429": error_response("Connection limit reached; see Retry-After.")
    });
    let mut channel_params = sse_params.as_array().cloned().unwrap_or_default();
    channel_params
        .insert(0, json!({ "name": "channel", "in": "path", "required": true, "schema": { "type": "string" } }));
    let mut job_params = sse_params.as_array().cloned().unwrap_or_default();
    job_params.insert(0, json!({ "name": "job_id", "in": "path", "required": true, "schema": { "type": "string" } }));
    let mut many_params = sse_params.as_array().cloned().unwrap_or_default();
    many_params.insert(0, json!({ "name": "channels", "in": "query", "schema": { "type": "string" }, "description": "Comma-separated channels; all the token allows when omitted." }));
    vec![
        Route::get(
            "/api/sse/subscribe",
            subscribe,
            json!({ "summary": "Stream several channels.", "parameters": many_params, "responses": sse_responses }),
        ),
        Route::get(
            "/api/sse/jobs/{job_id}",
            job,
            json!({ "summary": "Stream one job's progress (channel jobs/{job_id}).", "parameters": job_params, "responses": sse_responses }),
        ),
        Route::get(
            "/api/sse/{channel}",
            channel,
            json!({ "summary": "Stream one channel.", "parameters": channel_params, "responses": sse_responses }),
        ),
    ]
}

/// Response header saying whether a resume was complete: `complete` or `gap`.
pub const RESUME_HEADER: &str = "x-switchyard-resume";

#[derive(Debug, Default, Deserialize)]
pub struct SseQuery {
    pub channels: Option<String>,
    #[serde(rename = "lastEventId")]
    pub last_event_id: Option<String>,
    /// System tokens (tenant `*`) name the tenant to read.
    pub tenant: Option<String>,
    /// Coalesce snapshots per (type, key); on by default for browsers.
    pub coalesce: Option<bool>,
    /// `event`: heartbeats as `stream:heartbeat` events (visible to EventSource, for a client
    /// watchdog) instead of comments.
    pub heartbeat: Option<String>,
    /// `state`: the current state first (each snapshot with its own id), a `stream:state`
    /// event, then live. `live` (the default): events from now on. A resume id wins over both.
    pub start: Option<String>,
    /// Replay everything published at or after this RFC 3339 time, then live.
    pub since: Option<String>,
    #[serde(flatten)]
    pub credentials: QueryCredentials,
}

/// Where an SSE stream starts. A `Last-Event-ID` header (EventSource reconnecting by itself)
/// always resumes. `start=state` with a `lastEventId` parameter (a page reloaded after seeing
/// that id) is the whole state merged with the facts after it. Then `lastEventId`, `since`,
/// `start`; with none of them, live.
pub fn start_of(headers: &HeaderMap, q: &SseQuery) -> Result<Start, ApiError> {
    let resume = resume_from(headers, q)?;
    let state = q.start.as_deref() == Some("state");
    match resume {
        Some(cursor) if state && !headers.contains_key("last-event-id") => {
            return Ok(Start::State(Some(cursor.after)));
        }
        Some(cursor) => return Ok(Start::After(cursor)),
        None => {}
    }
    if let Some(since) = q.since.as_deref().filter(|s| !s.is_empty()) {
        return parse_time_ms(since)
            .map(Start::Since)
            .map_err(|e| ApiError::bad_request("invalid_since", "since", e.0));
    }
    match q.start.as_deref() {
        None | Some("live") => Ok(Start::Live),
        Some("state") => Ok(Start::State(None)),
        Some(other) => {
            Err(ApiError::bad_request("invalid_start", "start", format!("'{other}': expected `state` or `live`")))
        }
    }
}

pub async fn channel(
    State(app): State<Streams>,
    Path(channel): Path<String>,
    Query(q): Query<SseQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    open(app, vec![channel], q, headers).await
}

pub async fn subscribe(
    State(app): State<Streams>,
    Query(q): Query<SseQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let channels = split_channels(q.channels.as_deref());
    open(app, channels, q, headers).await
}

pub async fn job(
    State(app): State<Streams>,
    Path(job_id): Path<String>,
    Query(q): Query<SseQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ch = Channel::job(&job_id).map_err(|e| ApiError::bad_request("invalid_channel", "job_id", e.0))?;
    open(app, vec![ch.to_string()], q, headers).await
}

pub fn split_channels(s: Option<&str>) -> Vec<String> {
    s.map(|s| s.split(',').map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect()).unwrap_or_default()
}

/// `Last-Event-ID` header, else the `lastEventId` query parameter: an id, or `N~W`.
pub fn resume_from(headers: &HeaderMap, q: &SseQuery) -> Result<Option<Cursor>, ApiError> {
    let raw = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("x").to_owned())
        .or_else(|| q.last_event_id.clone())
        .filter(|s| !s.trim().is_empty());
    raw.map(|s| s.parse::<Cursor>().map_err(|e| ApiError::bad_request("invalid_last_event_id", "Last-Event-ID", e.0)))
        .transpose()
}

/// An SSE stream ready to be written: whether its resume was complete, and its frames.
pub struct Opened {
    pub complete: bool,
    pub oldest: EventId,
    pub frames: std::pin::Pin<Box<dyn futures::Stream<Item = Bytes> + Send>>,
    /// The stream's live part, sent when `frames` ends at the live seam.
    pub handoff: tokio::sync::oneshot::Receiver<crate::sse::writers::Handed>,
}

impl Opened {
    /// Response headers besides the status, shared by the hyper path and the direct one.
    pub fn headers(&self) -> [(&'static str, String); 5] {
        [
            ("content-type", "text/event-stream".into()),
            ("cache-control", "no-cache".into()),
            ("x-accel-buffering", "no".into()),
            (RESUME_HEADER, if self.complete { "complete" } else { "gap" }.into()),
            ("x-switchyard-oldest-id", self.oldest.to_string()),
        ]
    }
}

async fn open(app: Streams, channels: Vec<String>, q: SseQuery, headers: HeaderMap) -> Result<Response, ApiError> {
    let opened = open_stream(&app, channels, &q, &headers).await?;
    let head = opened.headers();
    let Opened { mut frames, mut handoff, .. } = opened;
    // The replay from this stream's own task; at the live seam a writer takes over and the
    // body drains the pipe it fills.
    let frames = async_stream::stream! {
        while let Some(f) = frames.next().await {
            yield f;
        }
        if let Ok(handed) = handoff.try_recv() {
            let stall = std::time::Duration::from_secs(app.sse.stall_timeout_secs);
            let mut body = app.writers.take_body(handed, stall);
            while let Some(chunk) = body.next().await {
                yield chunk;
            }
        }
    };
    let mut resp = Response::new(Body::from_stream(joined(Box::pin(frames)).map(Ok::<Bytes, Infallible>)));
    *resp.status_mut() = StatusCode::OK;
    for (name, value) in head {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(axum::http::HeaderName::from_static(name), v);
        }
    }
    Ok(resp)
}

/// Frames already waiting, joined into one chunk (up to [`RUN`]): hyper sends every chunk as an
/// HTTP/2 DATA frame (and a TLS record) of its own, through per-stream flow control, and at
/// fan-out rates that per-chunk cost is most of the work. (The direct HTTP/1 writer joins
/// what is waiting in its own buffer.)
fn joined(
    mut frames: std::pin::Pin<Box<dyn futures::Stream<Item = Bytes> + Send>>,
) -> impl futures::Stream<Item = Bytes> {
    async_stream::stream! {
        while let Some(first) = frames.next().await {
            let mut run: Option<BytesMut> = None;
            let mut ended = false;
            for _ in 1..RUN {
                match frames.next().now_or_never() {
                    Some(Some(f)) => run.get_or_insert_with(|| BytesMut::from(&first[..])).extend_from_slice(&f),
                    Some(None) => {
                        ended = true;
                        break;
                    }
                    None => break,
                }
            }
            yield run.map_or(first, BytesMut::freeze);
            if ended {
                break;
            }
        }
    }
}

/// The subscription, validated fully before it takes a connection slot, and its resume status.
async fn subscribed(
    app: &Streams,
    who: &switchyard::auth::Principal,
    q: &SseQuery,
    channels: Vec<String>,
    start: Start,
) -> Result<
    (
        std::pin::Pin<Box<impl futures::Stream<Item = Result<Item, switchyard::log::LogError>> + Send + 'static>>,
        crate::http::limits::Slot,
        bool,
        switchyard::log::Bounds,
    ),
    ApiError,
> {
    let mut items = Box::pin(app.bus.subscribe(who, spec(q, channels, start)?)?);
    let slot = app.limits.acquire(crate::http::limits::Kind::Sse, &who.tenant.to_string(), &who.token_id)?;
    let (complete, bounds) = status(items.next().await)?;
    Ok((items, slot, complete, bounds))
}

/// Authenticates, subscribes, takes a connection slot and reports the resume status: everything
/// an SSE request needs before its first byte, for both the hyper path and [`crate::sse::direct`].
/// `frames` ends at the live seam, where the live part is handed over (`Opened::handoff`)
/// for [`crate::sse::writers`] to write. Heartbeats and endings come from the shared pulse (a beat
/// is skipped when frames went out since the last one). Items already waiting are taken in
/// runs of up to `RUN` before the pulse is looked at again, not a fresh wait on it per item.
pub async fn open_stream(
    app: &Streams,
    channels: Vec<String>,
    q: &SseQuery,
    headers: &HeaderMap,
) -> Result<Opened, ApiError> {
    let who = app.access.from_request(headers, &q.credentials).await?;
    let start = start_of(headers, q)?;
    let from = resumes_after(&start);
    let beat = heartbeat_frame(q, app.sse.heartbeat_secs)?;
    let described = if channels.is_empty() { "*".to_owned() } else { channels.join(",") };
    let (mut items, slot, complete, bounds) = subscribed(app, &who, q, channels, start).await?;
    let preamble = preamble(app.sse.retry_ms, (!complete).then(|| gap_frame(from, bounds.oldest, bounds.head)));
    let (mut pulse, (handover, handed)) = (fresh(&app.pulse), tokio::sync::oneshot::channel());
    let tenant = q.tenant.as_deref().map_or_else(|| who.tenant.to_string(), str::to_owned);
    let mut session = Session::open(app.metrics.clone(), app.bus.clone(), (&tenant, &described), from, complete);
    let mut standing = switchyard::auth::Standing::new(who, app.access.verifier.revocations().clone());
    let body = async_stream::stream! {
        session.sent(preamble.len());
        yield Bytes::from(preamble);
        let mut quiet = true;
        // Snapshots coalescing holds back: frames then carry `id: N~floor` (see `Cursor`).
        let mut floor: Option<EventId> = None;
        'stream: loop {
            tokio::select! {
                biased;
                changed = pulse.changed() => {
                    let now = if changed.is_ok() { *pulse.borrow_and_update() } else { Pulse::Stop };
                    if let Some((last, reason)) = ending(now, &mut standing) {
                        session.end(reason, last.len());
                        yield last;
                        break;
                    }
                    if quiet {
                        session.sent(beat.len());
                        yield (beat.clone());
                    }
                    quiet = true;
                }
                item = items.next() => {
                    session.run_starts();
                    // What is taken now is written now: not after the credential ends.
                    if let Some((last, reason)) = lapsed(&mut standing, switchyard::auth::now_secs()) {
                        session.end(reason, last.len());
                        yield last;
                        break;
                    }
                    let (mut item, mut taken) = (item, 0);
                    loop {
                        let it = match item {
                            None => {
                                session.end("subscription ended", 0);
                                break 'stream;
                            }
                            Some(Ok(Item::Live(live))) => {
                                let _ = handover.send(Handed { live, session, quiet, floor, standing, beat, slot });
                                break 'stream;
                            }
                            Some(it) => it,
                        };
                        let out = render(it, &mut floor, &mut session, &mut quiet);
                        let (first, second, last) = session.emit(out);
                        for f in first.into_iter().chain(second) {
                            yield f;
                        }
                        if last {
                            break 'stream;
                        }
                        taken += 1;
                        match (taken < RUN).then(|| items.next().now_or_never()).flatten() {
                            Some(next) => item = next,
                            None => break,
                        }
                    }
                }
            }
        }
    };
    Ok(Opened { complete, oldest: bounds.oldest, frames: Box::pin(body), handoff: handed })
}

/// A receiver of the pulse that waits for its next change (not the value it holds now).
fn fresh(pulse: &tokio::sync::watch::Receiver<Pulse>) -> tokio::sync::watch::Receiver<Pulse> {
    let mut p = pulse.clone();
    p.mark_unchanged();
    p
}

/// What an SSE request subscribes to.
fn spec(q: &SseQuery, channels: Vec<String>, start: Start) -> Result<SubscribeSpec, SubscribeError> {
    Ok(SubscribeSpec {
        tenant: tenant_sel(q.tenant.as_deref().unwrap_or(""))?,
        channels,
        start,
        coalesce: q.coalesce.unwrap_or(true),
        on_lag: Lag::Evict,
        transport: switchyard::metrics::Transport::Sse,
        handoff: true,
    })
}

/// The client's reconnect delay, and the gap first when the resume could not be complete.
fn preamble(retry_ms: u64, gap: Option<Bytes>) -> Vec<u8> {
    [format!("retry: {retry_ms}\n\n").as_bytes(), gap.as_deref().unwrap_or_default()].concat()
}

/// A subscription's first item: whether its resume is complete, and the log's bounds.
fn status(first: Option<Result<Item, switchyard::log::LogError>>) -> Result<(bool, switchyard::log::Bounds), ApiError> {
    match first {
        Some(Ok(Item::Status { complete, bounds })) => Ok((complete, bounds)),
        Some(Err(e)) => Err(ApiError::unavailable(e.to_string())),
        _ => Err(ApiError::unavailable("subscription ended before it began")),
    }
}

/// Items a stream takes in one run without looking at the pulse (see `open_stream`).
const RUN: usize = 64;

/// The id a stream resumes after, if it resumes.
fn resumes_after(start: &Start) -> Option<EventId> {
    match start {
        Start::After(c) => Some(c.after),
        Start::State(after) => *after,
        _ => None,
    }
}

/// The `heartbeat` query: a comment (default) or a `stream:heartbeat` event.
fn heartbeat_frame(q: &SseQuery, heartbeat_secs: u64) -> Result<Bytes, ApiError> {
    match q.heartbeat.as_deref() {
        None | Some("comment") => Ok(HEARTBEAT),
        Some("event") => {
            Ok(Bytes::from(format!("event: stream:heartbeat\ndata: {{\"intervalMs\":{}}}\n\n", heartbeat_secs * 1000)))
        }
        Some(other) => Err(ApiError::bad_request(
            "invalid_query",
            "heartbeat",
            format!("'{other}': expected `comment` or `event`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is waiting goes out as one chunk, in order, and nothing is held back waiting for more.
    #[tokio::test]
    async fn waiting_frames_are_joined_in_order_and_the_rest_is_not_held() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        for f in ["a", "b", "c"] {
            tx.send(Bytes::from(f)).unwrap();
        }
        let mut out = Box::pin(joined(Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))));
        assert_eq!(out.next().await.unwrap(), "abc");
        tx.send(Bytes::from("d")).unwrap();
        assert_eq!(out.next().await.unwrap(), "d", "a lone frame goes out as it is");
        for i in 0..RUN + 1 {
            tx.send(Bytes::from(i.to_string())).unwrap();
        }
        drop(tx);
        let run: String = (0..RUN).map(|i| i.to_string()).collect();
        assert_eq!(out.next().await.unwrap(), run.as_str(), "at most RUN frames a chunk");
        assert_eq!(out.next().await.unwrap(), RUN.to_string().as_str());
        assert!(out.next().await.is_none());
    }
}
