//! The `switchyard.v1.EventBus` gRPC service, plus health and reflection.
//!
//! Thin: authenticate from `authorization` metadata, call [`Bus`], map errors
//! to `Status` once (here).

use std::{net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use futures::{FutureExt, Stream, StreamExt, stream::FuturesOrdered};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::{
    auth::{AuthError, Principal, Verifier, bearer},
    bus::{Bus, ReadError, SubscribeError, SubscribeSpec},
    error::{PublishError, PublishErrorKind},
    log::Appended,
    names::{Cursor, EventId, TenantSel},
    proto::{
        FILE_DESCRIPTOR_SET,
        v1::{
            Error as PbError, Gap, PublishAck, PublishBatchRequest, PublishBatchResponse, PublishRequest,
            PublishResponse, ReadRequest, ReadResponse, ResumeStatus, Start as PbStart, StateEnd, StateRequest,
            StateResponse, StatsRequest, StatsResponse, SubscribeRequest, SubscribeResponse,
            event_bus_server::{EventBus, EventBusServer},
            publish_ack, subscribe_response,
        },
    },
    subscription::{Item, Start},
};

mod edge;
pub mod idle;
mod outgoing;

pub use edge::EventBusService;
pub use outgoing::Outgoing;

/// Unix ms of a request timestamp; a time before 1970 means "everything".
fn timestamp_ms(t: &pbjson_types::Timestamp) -> u64 {
    u64::try_from(t.seconds).unwrap_or(0).saturating_mul(1000) + u64::try_from(t.nanos).unwrap_or(0) / 1_000_000
}

fn parse_cursor(field: &str, s: &str) -> Result<Cursor, Status> {
    s.parse::<Cursor>().map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

fn read_status(e: ReadError) -> Status {
    match e {
        ReadError::Request(e) => subscribe_status(&e),
        ReadError::Log(e) => Status::unavailable(e.to_string()),
    }
}

/// A state page's cursor, `<asOf>.<where the log goes on>` (empty: the first page), as the
/// walk's `as_of` and the log's own `after`. Shared by HTTP `GET /api/state` and gRPC `State`.
pub fn state_cursor(cursor: &str) -> Result<(Option<String>, Option<EventId>), &'static str> {
    if cursor.is_empty() {
        return Ok((None, None));
    }
    let bad = "expected the next cursor of a state page";
    let (as_of, after) = cursor.split_once('.').ok_or(bad)?;
    let as_of = as_of.parse().map_err(|_| bad)?;
    // Backends name their place in digits (an id) or lowercase hex (a slot key).
    if after.is_empty() || !after.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(bad);
    }
    Ok((Some(after.to_owned()), Some(EventId(as_of))))
}

/// Keys a `State` page holds unless the request says otherwise, and at most.
pub const STATE_PAGE: usize = 1_000;
pub const MAX_STATE_PAGE: usize = 10_000;

/// Requests `PublishStream` gathers into one append.
const STREAM_BATCH: usize = 4096;
/// Appends one `PublishStream` keeps in flight (pipelining).
const STREAM_INFLIGHT: usize = 8;

pub struct Service {
    bus: Bus,
    verifier: Arc<Verifier>,
    /// Open subscriptions, counted with SSE's: a token's gRPC streams take the same places.
    subscriptions: crate::limits::Limits,
    /// Flips to true on shutdown: open `Subscribe` streams end with UNAVAILABLE so
    /// clients reconnect elsewhere, and graceful shutdown does not wait on them forever.
    stopping: watch::Receiver<bool>,
}

impl Service {
    pub fn new(
        bus: Bus,
        verifier: Arc<Verifier>,
        subscriptions: crate::limits::Limits,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self { bus, verifier, subscriptions, stopping }
    }

    /// The caller, from its `authorization` header alone.
    fn authenticate(&self, headers: &tonic::codegen::http::HeaderMap) -> Result<Principal, Status> {
        let value = headers.get("authorization").ok_or_else(|| auth_status(&AuthError::Missing))?;
        let token = value.to_str().ok().and_then(bearer).ok_or_else(|| auth_status(&AuthError::Missing))?;
        self.verifier.verify(token).map_err(|e| auth_status(&e))
    }

    /// The caller [`EventBusService`] admitted (or, for in-process callers of the trait, the
    /// one its metadata names).
    fn principal<T>(&self, req: &Request<T>) -> Result<Principal, Status> {
        match req.extensions().get::<Principal>() {
            Some(who) => Ok(who.clone()),
            None => self.authenticate(&req.metadata().clone().into_headers()),
        }
    }

    /// A `Subscribe` call's messages: authenticated, then the bus subscription until the
    /// client goes, the server stops, or the token expires or is revoked.
    async fn outgoing(&self, req: Request<SubscribeRequest>) -> Result<BoxStream<Outgoing>, Status> {
        let who = self.principal(&req)?;
        let r = req.into_inner();
        let start = if r.start == PbStart::State as i32 {
            Start::State(r.from_id.map(EventId))
        } else if let Some(t) = &r.since {
            Start::Since(timestamp_ms(t))
        } else if !r.cursor.is_empty() {
            Start::After(parse_cursor("cursor", &r.cursor)?)
        } else {
            r.from_id.map_or(Start::Live, |id| Start::After(Cursor::at(EventId(id))))
        };
        let spec = SubscribeSpec {
            tenant: tenant_of(&r.tenant)?,
            channels: r.channels,
            start,
            coalesce: r.coalesce.unwrap_or(false),
            on_lag: crate::subscription::Lag::CatchUp,
            transport: crate::metrics::Transport::Grpc,
            handoff: false,
        };
        let slot = self
            .subscriptions
            .acquire(crate::limits::Kind::Grpc, &who.tenant.to_string(), &who.token_id)
            .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        let items = self.bus.subscribe(&who, spec.clone()).map_err(|e| subscribe_status(&e))?;
        let mut session = Session::open(&self.bus, &who, &spec, self.stopping.clone(), slot);
        // The log stream never ends by itself: on shutdown it is cut and the client told why, and
        // when the token expires the stream ends with UNAUTHENTICATED (reconnect with a new one).
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ended.clone();
        let revocations = self.verifier.revocations().clone();
        let mut standing = crate::auth::Standing::new(who.clone(), revocations.clone());
        let items = items
            .take_until(stopped(self.stopping.clone()))
            .take_until(async move {
                // Expiry is known ahead: the stream is cut on a timer (looked at before each
                // message), a little before `exp` so no message goes out after it, and with no
                // clock read per message. A quiet stream looks for a revocation every few seconds.
                let end_ms = (who.expires * 1000).saturating_sub(EXPIRY_MARGIN_MS);
                while crate::log::now_ms() < end_ms && !revocations.is_revoked(&who) {
                    let left = end_ms.saturating_sub(crate::log::now_ms()).min(REVOCATION_CHECK_SECS * 1000);
                    tokio::time::sleep(std::time::Duration::from_millis(left)).await;
                }
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            })
            .chain(futures::stream::once(async move {
                match ended.load(std::sync::atomic::Ordering::Relaxed) {
                    true => Err(crate::log::LogError::Expired),
                    false => Err(crate::log::LogError::Closed),
                }
            }));
        // While coalescing holds snapshots back, each event says where to resume (`N~W`).
        let mut floor: Option<EventId> = None;
        let stream = items.filter_map(move |item| {
            // A revocation is looked for before each message (an atomic load while none is new).
            let item = if standing.revoked() { Err(crate::log::LogError::Expired) } else { item };
            let out = match item {
                Err(e @ crate::log::LogError::Expired) => {
                    session.reason = Some("token expired or revoked");
                    Some(Err(Status::unauthenticated(e.to_string())))
                }
                Err(e) => {
                    session.reason = Some("server stopping");
                    Some(Err(Status::unavailable(e.to_string())))
                }
                Ok(item) => outgoing_message(item, &mut floor, &mut session),
            };
            std::future::ready(out)
        });
        Ok(Box::pin(stream))
    }
}

/// How often a quiet subscription looks whether its token was revoked.
const REVOCATION_CHECK_SECS: u64 = 5;
/// How long before its token's `exp` a subscription is cut: its timer may fire a moment late.
const EXPIRY_MARGIN_MS: u64 = 50;

fn auth_status(e: &AuthError) -> Status {
    if e.unauthenticated() { Status::unauthenticated(e.to_string()) } else { Status::permission_denied(e.to_string()) }
}

pub fn publish_status(e: &PublishError) -> Status {
    match e {
        PublishError::Invalid { .. } => Status::invalid_argument(e.to_string()),
        PublishError::Denied(a) => auth_status(a),
        PublishError::Unavailable(_) => Status::unavailable(e.to_string()),
        PublishError::Throttled(_) | PublishError::Quota { .. } => Status::resource_exhausted(e.to_string()),
    }
}

/// A request's `tenant` field as a selection, or INVALID_ARGUMENT naming it.
fn tenant_of(requested: &str) -> Result<TenantSel, Status> {
    crate::bus::tenant_sel(requested).map_err(|e| subscribe_status(&e))
}

fn subscribe_status(e: &SubscribeError) -> Status {
    match e {
        SubscribeError::Invalid { .. } => Status::invalid_argument(e.to_string()),
        SubscribeError::UnknownChannel(_) => Status::not_found(e.to_string()),
        SubscribeError::Denied(a) => auth_status(a),
    }
}

fn ack(seq: u64, r: Result<Appended, PublishError>) -> PublishAck {
    match r {
        Ok(a) => PublishAck { seq, result: Some(publish_ack::Result::Id(a.id.get())), duplicate: a.duplicate },
        Err(e) => PublishAck {
            seq,
            result: Some(publish_ack::Result::Error(PbError {
                code: e.code().to_owned(),
                message: e.to_string(),
                field: e.field().to_owned(),
            })),
            duplicate: false,
        },
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl EventBus for Service {
    async fn publish(&self, req: Request<PublishRequest>) -> Result<Response<PublishResponse>, Status> {
        let who = self.principal(&req)?;
        let span = tracing::info_span!("publish", token = %who.token_id);
        crate::trace::adopt(&span, crate::trace::Fields::metadata(req.metadata()));
        let event = req.into_inner().event.ok_or_else(|| Status::invalid_argument("event: required"))?;
        let a = self.bus.publish_one(&who, event).instrument(span).await.map_err(|e| publish_status(&e))?;
        Ok(Response::new(PublishResponse { id: a.id.get(), duplicate: a.duplicate }))
    }

    async fn publish_batch(&self, req: Request<PublishBatchRequest>) -> Result<Response<PublishBatchResponse>, Status> {
        let who = self.principal(&req)?;
        let events = req.into_inner().events;
        let span = tracing::info_span!("publish_batch", token = %who.token_id, events = events.len());
        match self.bus.publish_all(&who, events).instrument(span).await {
            Ok(appended) => Ok(Response::new(PublishBatchResponse {
                acks: appended.into_iter().enumerate().map(|(i, a)| ack(i as u64, Ok(a))).collect(),
            })),
            Err((i, e)) => {
                let status = publish_status(&e);
                Err(Status::new(status.code(), format!("events[{i}]: {}", status.message())))
            }
        }
    }

    type PublishStreamStream = BoxStream<PublishAck>;

    async fn publish_stream(
        &self,
        req: Request<Streaming<PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let who = self.principal(&req)?;
        // Every burst of the stream is a span of its own, under the caller's trace if it named one.
        let parent = crate::trace::remote(crate::trace::Fields::metadata(req.metadata()));
        let mut inbound = req.into_inner();
        let bus = self.bus.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<PublishAck, Status>>(STREAM_BATCH);
        tokio::spawn(async move {
            let mut inflight = FuturesOrdered::new();
            let mut seq = 0u64;
            let mut open = true;
            loop {
                tokio::select! {
                    first = inbound.next(), if open && inflight.len() < STREAM_INFLIGHT => {
                        let mut batch = match first {
                            Some(Ok(r)) => vec![r],
                            Some(Err(status)) => { let _ = tx.send(Err(status)).await; return; }
                            None => { open = false; continue; }
                        };
                        // Take whatever else is already buffered: one append per burst.
                        while batch.len() < STREAM_BATCH {
                            match inbound.next().now_or_never() {
                                Some(Some(Ok(r))) => batch.push(r),
                                Some(Some(Err(status))) => { let _ = tx.send(Err(status)).await; return; }
                                Some(None) => { open = false; break; }
                                None => break,
                            }
                        }
                        let start = seq;
                        seq += batch.len() as u64;
                        let (bus, who) = (bus.clone(), who.clone());
                        let span = tracing::info_span!("publish_stream", events = batch.len());
                        if let Some(cx) = &parent {
                            let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, cx.clone());
                        }
                        inflight.push_back(async move {
                            let mut missing = Vec::new();
                            let mut events = Vec::with_capacity(batch.len());
                            for (i, r) in batch.into_iter().enumerate() {
                                match r.event {
                                    Some(e) => events.push(e),
                                    None => missing.push(i),
                                }
                            }
                            let mut results = bus.publish_paced(&who, events).instrument(span).await.into_iter();
                            let total = results.len() + missing.len();
                            (0..total).map(|i| {
                                let r = if missing.contains(&i) {
                                    Err(PublishError::invalid(PublishErrorKind::MissingEvent, "event", "required"))
                                } else {
                                    results.next().unwrap_or(Err(PublishError::Unavailable("lost ack".into())))
                                };
                                ack(start + i as u64, r)
                            }).collect::<Vec<_>>()
                        });
                    }
                    Some(acks) = inflight.next(), if !inflight.is_empty() => {
                        for a in acks {
                            if tx.send(Ok(a)).await.is_err() { return; }
                        }
                    }
                    else => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type SubscribeStream = BoxStream<SubscribeResponse>;

    /// In-process callers get the messages decoded; over the network [`EventBusService`]
    /// sends the same stream with each event's encoding shared.
    async fn subscribe(&self, req: Request<SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        Ok(Response::new(outgoing::into_messages(self.outgoing(req).await?)))
    }

    async fn state(&self, req: Request<StateRequest>) -> Result<Response<StateResponse>, Status> {
        let who = self.principal(&req)?;
        let r = req.into_inner();
        let limit = match r.limit {
            0 => STATE_PAGE,
            n if n as usize > MAX_STATE_PAGE => {
                return Err(Status::invalid_argument(format!("limit: at most {MAX_STATE_PAGE}")));
            }
            n => n as usize,
        };
        let from = state_cursor(&r.cursor).map_err(|m| Status::invalid_argument(format!("cursor: {m}")))?;
        let page =
            self.bus.state_page(&who, &tenant_of(&r.tenant)?, &r.channels, from, limit).await.map_err(read_status)?;
        Ok(Response::new(StateResponse {
            events: page.records.iter().map(|r| r.event.clone()).collect(),
            as_of_id: page.as_of.get(),
            next_cursor: page.next.map(|after| format!("{}.{after}", page.as_of)).unwrap_or_default(),
        }))
    }

    async fn read(&self, req: Request<ReadRequest>) -> Result<Response<ReadResponse>, Status> {
        let who = self.principal(&req)?;
        let r = req.into_inner();
        if r.limit > 1000 {
            return Err(Status::invalid_argument("limit: at most 1000"));
        }
        let since = r.since.as_ref().map(timestamp_ms);
        let from = if let Some(ms) = since {
            Cursor::at(self.bus.log().id_before(ms).await.map_err(|e| Status::unavailable(e.to_string()))?)
        } else if !r.cursor.is_empty() {
            parse_cursor("cursor", &r.cursor)?
        } else {
            Cursor::at(EventId(r.after_id))
        };
        let mut page = self
            .bus
            .read(&who, &tenant_of(&r.tenant)?, &r.channels, from, r.limit as usize)
            .await
            .map_err(read_status)?;
        // The time index may start a little early; what was published before `since` is not asked for.
        if let Some(ms) = since {
            page.events.retain(|r| r.published_ms() >= ms);
        }
        Ok(Response::new(ReadResponse {
            events: page.events.iter().map(|r| r.event.clone()).collect(),
            next_id: page.next.after.get(),
            next_cursor: page.next.to_string(),
            complete: page.complete,
            oldest_available_id: page.bounds.oldest.get(),
            head_id: page.bounds.head.get(),
            trimmed_through_id: page.bounds.trimmed_through.get(),
        }))
    }

    async fn stats(&self, req: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        let who = self.principal(&req)?;
        who.require(crate::auth::Role::Admin).map_err(|e| auth_status(&e))?;
        let log = self.bus.log().stats();
        let counters = self.bus.hub().counters();
        let backend = self.bus.log().backend().to_owned();
        Ok(Response::new(match &who.tenant {
            crate::auth::TenantScope::All => {
                let mut by_type = std::collections::HashMap::new();
                for t in counters.by_tenant.values() {
                    for (k, v) in &t.by_type {
                        *by_type.entry(k.clone()).or_insert(0) += v;
                    }
                }
                let subs = self.bus.subscribers();
                StatsResponse {
                    head_id: log.head.get(),
                    oldest_id: log.oldest.get(),
                    events_stored: log.stored,
                    published_total: counters.total,
                    subscribers: subs.current,
                    subscribers_peak: subs.peak,
                    published_by_type: by_type,
                    backend,
                }
            }
            // Like HTTP status: the tenant's own numbers, nothing that adds up the others'.
            crate::auth::TenantScope::One(t) => {
                let c = counters.by_tenant.get(t.as_str()).cloned().unwrap_or_default();
                let open = self.subscriptions.held_by(t.as_str());
                StatsResponse {
                    head_id: log.head.get(),
                    published_total: c.total,
                    subscribers: open as u64,
                    published_by_type: c.by_type.into_iter().collect(),
                    backend,
                    ..Default::default()
                }
            }
        }))
    }
}

/// One subscription item as an outgoing message; `None` for items that are only
/// bookkeeping (a floor change). While coalescing holds snapshots back (`floor`), events carry
/// the cursor to resume from.
fn outgoing_message(
    item: Item,
    floor: &mut Option<EventId>,
    session: &mut Session,
) -> Option<Result<Outgoing, Status>> {
    let owing = |id: EventId, floor: Option<EventId>| floor.map(|w| Cursor::owing(id, Some(w)).to_string());
    let message = |m: subscribe_response::Message, cursor: Option<String>| {
        Outgoing::Message(Box::new(SubscribeResponse { message: Some(m), cursor: cursor.unwrap_or_default() }))
    };
    Some(Ok(match item {
        Item::Status { complete, bounds } => message(
            subscribe_response::Message::Status(ResumeStatus {
                complete,
                oldest_available_id: bounds.oldest.get(),
                head_id: bounds.head.get(),
            }),
            None,
        ),
        Item::Event(r) => {
            session.delivered(&r);
            let cursor = owing(r.id, *floor);
            Outgoing::Event(r, cursor)
        }
        Item::Coalesced(r, cursor) => {
            session.delivered(&r);
            Outgoing::Event(r, Some(cursor.to_string()))
        }
        Item::StateEnd { as_of, count } => message(
            subscribe_response::Message::StateEnd(StateEnd {
                as_of_id: as_of.get(),
                events: u32::try_from(count).unwrap_or(u32::MAX),
            }),
            owing(as_of, *floor),
        ),
        Item::Floor(f) => {
            *floor = f;
            return None;
        }
        Item::Evicted { .. } => return Some(Err(Status::resource_exhausted("subscriber fell behind"))),
        // Never asked for here (`handoff: false`).
        Item::Live(_) => return Some(Err(Status::internal("subscription handed off"))),
        Item::Gap { after, next, reason } => message(
            subscribe_response::Message::Gap(Gap {
                after_id: after.get(),
                next_id: next.get(),
                reason: reason.to_owned(),
            }),
            None,
        ),
    }))
}

/// One `Subscribe` call as operators see it: an id in its open and close log lines, what it
/// delivered, why it ended; and a sample of its publish → write lag.
struct Session {
    bus: Bus,
    id: u64,
    tenant: String,
    channels: String,
    opened: std::time::Instant,
    events: u64,
    /// Bytes of the events sent (their shared encoding; cursors and status messages aside).
    bytes: u64,
    /// `None` until the server ends it: then the client went away (or, during shutdown, the
    /// server stopping was why, whichever side noticed first).
    reason: Option<&'static str>,
    stopping: watch::Receiver<bool>,
    /// Its place among the token's and tenant's open subscriptions.
    _slot: crate::limits::Slot,
}

/// Every how many deliveries a stream measures one's lag: a clock read per event would cost
/// more than the encoding it shares (the first delivery is always measured).
const LAG_SAMPLE: u64 = 32;

static NEXT_SESSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Session {
    fn open(
        bus: &Bus,
        who: &Principal,
        spec: &SubscribeSpec,
        stopping: watch::Receiver<bool>,
        slot: crate::limits::Slot,
    ) -> Self {
        let id = NEXT_SESSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tenant = match &spec.tenant {
            TenantSel::Own => who.tenant.to_string(),
            TenantSel::One(t) => t.to_string(),
            TenantSel::All => "*".to_owned(),
        };
        let channels = if spec.channels.is_empty() { "*".to_owned() } else { spec.channels.join(",") };
        tracing::info!(conn = id, %tenant, %channels, token = %who.token_id, start = ?spec.start, "gRPC subscription opened");
        Self {
            bus: bus.clone(),
            id,
            tenant,
            channels,
            opened: std::time::Instant::now(),
            events: 0,
            bytes: 0,
            reason: None,
            stopping,
            _slot: slot,
        }
    }

    /// Counts a delivery; samples its lag; for an event whose publisher sampled its trace,
    /// records a delivery span in that trace.
    fn delivered(&mut self, r: &crate::log::Record) {
        if self.events.is_multiple_of(LAG_SAMPLE) {
            self.bus.deliveries().observe_lag(crate::metrics::Transport::Grpc, r.published_ms());
        }
        self.events += 1;
        // Encoded here once for every subscriber (the codec sends the same bytes).
        self.bytes += outgoing::event_field(r).len() as u64;
        if crate::trace::sampled(&r.event) {
            drop(crate::trace::delivery("grpc.deliver", &r.event, self.id).entered());
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        tracing::info!(
            conn = self.id,
            tenant = %self.tenant,
            channels = %self.channels,
            secs = self.opened.elapsed().as_secs_f64(),
            events = self.events,
            bytes = self.bytes,
            reason = self.reason.unwrap_or(if *self.stopping.borrow() { "server stopping" } else { "client went away" }),
            "gRPC subscription closed"
        );
    }
}

/// Resolves once `rx` turns true (or its sender is gone).
pub fn stopped(mut rx: watch::Receiver<bool>) -> futures::future::Shared<futures::future::BoxFuture<'static, ()>> {
    async move {
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
    .boxed()
    .shared()
}

/// What one gRPC connection may hold. A peer that stops answering keep-alive pings is
/// dropped, so a vanished client never pins a stream (and its subscription) for good.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// How often an HTTP/2 ping goes to each connection.
    pub keepalive: Duration,
    /// How long its answer may take before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Calls open at once on one connection (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u32,
    /// The largest `PublishBatch` request decoded (counted first: at most [`crate::bus::MAX_BATCH`] events).
    pub max_message_bytes: usize,
    /// The largest `Publish` request, or `PublishStream` message: one event and its envelope.
    pub max_publish_bytes: usize,
    /// Calls one token may have open at once, over every connection (system tokens aside).
    pub max_calls_per_token: usize,
    /// A connection with no call open this long is closed, pings or not ([`idle`]).
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            keepalive: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            max_concurrent_streams: 256,
            max_message_bytes: 4 * 1024 * 1024,
            max_publish_bytes: 64 * 1024 + PUBLISH_ENVELOPE,
            max_calls_per_token: 64,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Room a `Publish` request needs beyond its event's `bus.max_event_bytes`: the envelope's
/// ids, key, idempotency key and trace context.
pub const PUBLISH_ENVELOPE: usize = 4 * 1024;

/// Serves EventBus, `grpc.health.v1` and server reflection on the connections `incoming`
/// yields until `stopping` turns true.
pub async fn serve<I>(
    incoming: I,
    limits: Limits,
    bus: Bus,
    verifier: Arc<Verifier>,
    subscriptions: crate::limits::Limits,
    stopping: watch::Receiver<bool>,
    // Services of other crates served on the same port (the outbound API), each checking its own
    // callers before it decodes a message.
    extra: tonic::service::Routes,
) -> Result<(), tonic::transport::Error>
where
    I: Stream<Item = std::io::Result<TcpStream>>,
{
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<EventBusServer<Service>>().await;
    // Every service served is listed, health included.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the compiled descriptor set is valid");
    // v1alpha too: Python's grpcio-reflection, Postman and older grpcurl speak only it.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the compiled descriptor set is valid");
    let shutdown = stopped(stopping.clone());
    let svc = EventBusService::new(Service::new(bus, verifier, subscriptions, stopping), limits);
    let incoming = incoming.map(move |conn| conn.map(|tcp| idle::Watched::new(tcp, limits.idle_timeout)));
    tonic::transport::Server::builder()
        .layer(idle::CountLayer)
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(limits.keepalive))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .max_concurrent_streams(limits.max_concurrent_streams)
        // Metadata is a token and a few ids; 16 KiB leaves room and caps what HPACK may hold.
        .http2_max_header_list_size(16 * 1024)
        .add_routes(extra)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// An EventBus client that sends `token` on every call.
pub type Client = crate::proto::v1::event_bus_client::EventBusClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

/// A client for the bus at `url` (connects lazily, reconnects on its own).
pub fn connect(url: &str, token: &str) -> Result<Client, String> {
    let channel = tonic::transport::Channel::from_shared(url.to_owned())
        .map_err(|e| format!("{url}: {e}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect_lazy();
    let value = format!("Bearer {token}").parse().map_err(|_| "token is not ASCII".to_owned())?;
    Ok(crate::proto::v1::event_bus_client::EventBusClient::with_interceptor(channel, Bearer(value))
        .max_decoding_message_size(8 * 1024 * 1024))
}

/// The address a listener is bound to, for logs and addr.json.
pub fn local_addr(l: &TcpListener) -> SocketAddr {
    l.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}
