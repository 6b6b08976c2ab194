//! Server-Sent Events: `/api/sse/{channel}`, `/api/sse/subscribe?channels=`, `/api/sse/jobs/{id}`.
//!
//! Each record's frame (`id`, `event`, `data`) is encoded once, cached on the
//! record, and the same `Bytes` goes to every subscriber. The body is a stream
//! hyper pulls from: a client that stops reading stops being fed, and once it
//! falls a whole hub ring behind it is dropped with a comment saying so and
//! resumes from its `Last-Event-ID`. Resume, gaps and ordering come from
//! [`switchyard::subscription`].

use std::{convert::Infallible, sync::Arc};

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::Response,
};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use switchyard::{
    bus::SubscribeSpec,
    log::Record,
    names::{Channel, Cursor, EventId, parse_time_ms},
    subscription::{Item, Lag, Start},
};

use crate::{
    access::QueryCredentials,
    app::App,
    error::{ApiError, Path, Query},
    openapi::error_response,
    pulse::Pulse,
    route::Route,
    writers::Handed,
};

pub const HEARTBEAT: Bytes = Bytes::from_static(b": heartbeat\n\n");
const EVICTED: Bytes =
    Bytes::from_static(b": disconnected: this client fell too far behind; reconnect with Last-Event-ID to resume\n\n");
pub(crate) const SHUTDOWN: Bytes =
    Bytes::from_static(b"retry: 1000\nevent: stream:reconnect\ndata: {\"reason\":\"server shutting down\"}\n\n");
/// The stream's token expired: reconnect with a fresh one (client.js asks for a new ticket).
const EXPIRED: Bytes = Bytes::from_static(
    b"retry: 1000\nevent: stream:reconnect\ndata: {\"reason\":\"token expired\",\"code\":\"token_expired\"}\n\n",
);
/// The stream's token was revoked: a reconnect with it is refused (401).
const REVOKED: Bytes = Bytes::from_static(
    b"retry: 1000\nevent: stream:reconnect\ndata: {\"reason\":\"token revoked\",\"code\":\"token_revoked\"}\n\n",
);

/// The streams: one channel, several, one job.
pub fn routes() -> Vec<Route<Arc<App>>> {
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

/// The record's SSE frame, encoded on first use and shared after that.
pub fn frame(record: &Record) -> Bytes {
    record
        .frame
        .get_or_init(|| {
            let json = switchyard::json::event_to_json(&record.event);
            let mut b = BytesMut::with_capacity(json.len() + record.type_name().len() + 40);
            b.put_slice(b"id: ");
            b.put_slice(record.id.to_string().as_bytes());
            b.put_slice(b"\nevent: ");
            b.put_slice(record.type_name().as_bytes());
            b.put_slice(b"\ndata: ");
            b.put_slice(json.as_bytes());
            b.put_slice(b"\n\n");
            b.freeze()
        })
        .clone()
}

/// The same frame without its `id:` line (a zero-copy slice), for frames whose resume cursor
/// is not their own id: coalesced snapshots arrive after later ids, and while snapshots are
/// held back the cursor owes their state (`N~W`).
fn frame_without_id(record: &Record) -> Bytes {
    let f = frame(record);
    let cut = f.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
    f.slice(cut..)
}

fn id_line(cursor: Cursor) -> Bytes {
    Bytes::from(format!("id: {cursor}\n"))
}

/// `stream:state`: the state part of the stream is complete, as of `as_of`.
fn state_end_frame(cursor: Cursor, as_of: EventId, count: usize) -> Bytes {
    Bytes::from(format!("id: {cursor}\nevent: stream:state\ndata: {{\"asOf\":\"{as_of}\",\"events\":{count}}}\n\n"))
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

fn gap_frame(requested: Option<EventId>, oldest: EventId, head: EventId) -> Bytes {
    let data = serde_json::json!({
        "requestedId": requested.map(|i| i.to_string()),
        "oldestAvailableId": oldest.to_string(),
        "headId": head.to_string(),
        "reason": "history no longer holds every event after the requested id; the current state of what changed follows",
    });
    Bytes::from(format!("event: stream:gap\ndata: {data}\n\n"))
}

pub async fn channel(
    State(app): State<Arc<App>>,
    Path(channel): Path<String>,
    Query(q): Query<SseQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    open(app, vec![channel], q, headers).await
}

pub async fn subscribe(
    State(app): State<Arc<App>>,
    Query(q): Query<SseQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let channels = split_channels(q.channels.as_deref());
    open(app, channels, q, headers).await
}

pub async fn job(
    State(app): State<Arc<App>>,
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
    pub handoff: tokio::sync::oneshot::Receiver<crate::writers::Handed>,
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

async fn open(app: Arc<App>, channels: Vec<String>, q: SseQuery, headers: HeaderMap) -> Result<Response, ApiError> {
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
            let mut body = app.writers.take_body(&app, handed);
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

/// Authenticates, subscribes, takes a connection slot and reports the resume status: everything
/// an SSE request needs before its first byte, for both the hyper path and [`crate::direct`].
/// `frames` ends at the live seam, where the live part is handed over (`Opened::handoff`)
/// for [`crate::writers`] to write.
pub async fn open_stream(
    app: &Arc<App>,
    channels: Vec<String>,
    q: &SseQuery,
    headers: &HeaderMap,
) -> Result<Opened, ApiError> {
    let who = app.access.from_request(headers, &q.credentials).await?;
    let start = start_of(headers, q)?;
    let from = resumes_after(&start);
    let beat = heartbeat_frame(q, app.sse.heartbeat_secs)?;
    let described = if channels.is_empty() { "*".to_owned() } else { channels.join(",") };
    // Validate the request fully before taking a connection slot.
    let mut items = Box::pin(app.bus.subscribe(&who, spec(q, channels, start))?);
    let slot = app.limits.acquire(&who.tenant.to_string(), &who.token_id)?;
    let (complete, bounds) = status(items.next().await)?;
    let preamble = preamble(app.sse.retry_ms, (!complete).then(|| gap_frame(from, bounds.oldest, bounds.head)));
    let (mut pulse, expires) = (fresh(&app.pulse), who.expires);
    let revocations = app.access.verifier.revocations().clone();
    let tenant = q.tenant.as_deref().map_or_else(|| who.tenant.to_string(), str::to_owned);
    let mut session = Session::open(app.clone(), (&tenant, &described), from, complete);
    let (handover, handed) = tokio::sync::oneshot::channel();
    let body = async_stream::stream! {
        let mut handover = Some(handover);
        session.sent(preamble.len());
        yield Bytes::from(preamble);
        // Hot path, per delivery: no timer, no shared-future clone, no shared counter write.
        // Heartbeats and shutdown come from one shared pulse (see `Pulse`); a beat is skipped
        // when frames went out since the last one. Items already waiting are taken in a run
        // (up to `RUN`) before the pulse is looked at again: waiting on it afresh for every
        // event registered and dropped a waiter per delivery, which halved throughput at
        // saturation.
        let mut quiet = true;
        // Snapshots coalescing holds back: frames then carry `id: N~floor` (see `Cursor`).
        let mut floor: Option<EventId> = None;
        'stream: loop {
            tokio::select! {
                biased;
                changed = pulse.changed() => {
                    let now = if changed.is_ok() { *pulse.borrow_and_update() } else { Pulse::Stop };
                    if let Some((last, reason)) = ending(now, expires, &revocations, &who) {
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
                    let (mut item, mut taken) = (item, 0);
                    loop {
                        let it = match item {
                            None => {
                                session.end("subscription ended", 0);
                                break 'stream;
                            }
                            Some(Ok(Item::Live(live))) => {
                                let (expires, beat) = (expires, beat.clone());
                                let handed = Handed { live, session, quiet, floor, expires, who, beat, slot };
                                if let Some(tx) = handover.take() {
                                    let _ = tx.send(handed);
                                }
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
                        if taken == RUN {
                            break;
                        }
                        match items.next().now_or_never() {
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
fn spec(q: &SseQuery, channels: Vec<String>, start: Start) -> SubscribeSpec {
    SubscribeSpec {
        tenant: q.tenant.clone().unwrap_or_default(),
        channels,
        start,
        coalesce: q.coalesce.unwrap_or(true),
        on_lag: Lag::Evict,
        transport: switchyard::metrics::Transport::Sse,
        handoff: true,
    }
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

/// The frame that ends a stream on this pulse, and why, if it must end: shutdown, or a
/// credential that expired or was revoked (checked on the shared pulse: no timer per
/// connection, at most one heartbeat period late).
pub(crate) fn ending(
    now: Pulse,
    expires: u64,
    revocations: &switchyard::auth::Revocations,
    who: &switchyard::auth::Principal,
) -> Option<(Bytes, &'static str)> {
    match now {
        Pulse::Stop => Some((SHUTDOWN, "server shutting down")),
        Pulse::Beat(_) if switchyard::auth::now_secs() >= expires => Some((EXPIRED, "token expired")),
        Pulse::Beat(_) if revocations.is_revoked(who) => Some((REVOKED, "token revoked")),
        Pulse::Beat(_) => None,
    }
}

/// What one subscription item puts on the wire.
pub(crate) enum Out {
    Nothing,
    Frame(Bytes),
    /// An `id:` line carrying a cursor, then the frame without its own id.
    Pair(Bytes, Bytes),
    /// The stream's last frame, and why it ends.
    Last(Bytes, &'static str),
}

/// Renders one item. `floor` is what coalescing holds back (frames then carry `id: N~floor`,
/// see `Cursor`); `quiet` turns false when anything but a heartbeat went out.
pub(crate) fn render(
    item: Result<Item, switchyard::log::LogError>,
    floor: &mut Option<EventId>,
    frames: &mut Session,
    quiet: &mut bool,
) -> Out {
    match item {
        Ok(Item::Event(r)) => {
            frames.add(&r);
            *quiet = false;
            match *floor {
                None => Out::Frame(frame(&r)),
                Some(w) => Out::Pair(id_line(Cursor::owing(r.id, Some(w))), frame_without_id(&r)),
            }
        }
        Ok(Item::Coalesced(r, cursor)) => {
            frames.add(&r);
            *quiet = false;
            Out::Pair(id_line(cursor), frame_without_id(&r))
        }
        Ok(Item::StateEnd { as_of, count }) => {
            *quiet = false;
            Out::Frame(state_end_frame(Cursor::owing(as_of, *floor), as_of, count))
        }
        Ok(Item::Floor(f)) => {
            *floor = f;
            Out::Nothing
        }
        Ok(Item::Gap { after, next, .. }) => Out::Frame(gap_frame(Some(after), next, next)),
        Ok(Item::Evicted { .. }) => {
            frames.app.metrics.sse_evicted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Out::Last(EVICTED, "evicted: fell a whole ring behind")
        }
        // Taken by the stream before it is rendered (see `open_stream`).
        Ok(Item::Status { .. } | Item::Live(_)) => Out::Nothing,
        Err(e) => {
            tracing::warn!(error = %e, "subscription failed");
            Out::Last(Bytes::from(": error: the log is unavailable; reconnect to resume\n\n"), "log unavailable")
        }
    }
}

/// Numbers each stream, for its log lines.
static NEXT_SESSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One stream's life, for operators: logged (info) when it opens, with its id, tenant, channels
/// and resume point, and when it ends, with the same id, how long it lasted, events and bytes
/// sent and why it ended (only the id is kept between: a stream's memory is per connection).
/// Its frame count goes to the shared metric in steps (and on drop), so the hot path does not
/// write a cache line every core shares.
pub struct Session {
    app: Arc<App>,
    id: u64,
    /// The tenant and the channels, for the close line: one allocation, `tenant channels`.
    who: Box<str>,
    opened: std::time::Instant,
    events: u64,
    pending: u64,
    bytes: u64,
    /// `None` until the server ends it: then the client went away.
    reason: Option<&'static str>,
    /// The next event delivered is the first of a run (see `run_starts`).
    observe_lag: bool,
}

impl Session {
    /// `who`: the tenant and the channels, as logged.
    fn open(app: Arc<App>, who: (&str, &str), resumes: Option<EventId>, complete: bool) -> Self {
        let (tenant, channels) = who;
        let id = NEXT_SESSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(conn = id, %tenant, %channels, resume = ?resumes.map(|r| r.0), complete, "SSE stream opened");
        if resumes.is_some() {
            app.metrics.sse_resumes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if !complete {
            app.metrics.sse_gaps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let opened = std::time::Instant::now();
        let who = format!("{tenant} {channels}").into_boxed_str();
        Self { app, id, who, opened, events: 0, pending: 0, bytes: 0, reason: None, observe_lag: false }
    }

    /// A run of items begins: the first event in it has its publish → write lag observed
    /// (once per wake-up, not per frame: a clock read and a few atomic adds per run).
    pub(crate) fn run_starts(&mut self) {
        self.observe_lag = true;
    }

    /// Counts a delivered event; for an event whose publisher sampled its trace, records a
    /// delivery span in that trace (unsampled fan-out makes no span).
    fn add(&mut self, record: &Record) {
        if self.observe_lag {
            self.observe_lag = false;
            self.app.bus.deliveries().observe_lag(switchyard::metrics::Transport::Sse, record.published_ms());
        }
        if switchyard::trace::sampled(&record.event) {
            drop(switchyard::trace::delivery("sse.deliver", &record.event, self.id).entered());
        }
        self.events += 1;
        self.pending += 1;
        if self.pending == 256 {
            self.flush();
        }
    }

    pub(crate) fn sent(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    /// What to write for `out` (up to two frames), and whether it is the stream's last.
    pub(crate) fn emit(&mut self, out: Out) -> (Option<Bytes>, Option<Bytes>, bool) {
        match out {
            Out::Nothing => (None, None, false),
            Out::Frame(f) => {
                self.sent(f.len());
                (Some(f), None, false)
            }
            Out::Pair(id, f) => {
                self.sent(id.len() + f.len());
                (Some(id), Some(f), false)
            }
            Out::Last(f, reason) => {
                self.end(reason, f.len());
                (Some(f), None, true)
            }
        }
    }

    /// The server ends the stream with a last frame of `bytes`, for `reason`.
    pub(crate) fn end(&mut self, reason: &'static str, bytes: usize) {
        self.sent(bytes);
        self.reason = Some(reason);
    }

    fn flush(&mut self) {
        self.app.metrics.sse_frames.fetch_add(std::mem::take(&mut self.pending), std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.flush();
        let (tenant, channels) = self.who.split_once(' ').unwrap_or((&self.who, ""));
        tracing::info!(
            conn = self.id,
            %tenant,
            %channels,
            secs = self.opened.elapsed().as_secs_f64(),
            events = self.events,
            bytes = self.bytes,
            reason = self.reason.unwrap_or("client went away"),
            "SSE stream closed"
        );
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
