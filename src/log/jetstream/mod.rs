//! The history on NATS JetStream, for several Switchyard nodes sharing one ordered log.
//!
//! One stream holds every event; the event id **is** the stream sequence, so ids are the same
//! on every node. Subjects are `<prefix>.<tenant>.<type>` (custom events `…._custom`), which
//! lets resume and polling read one tenant or one channel with subject-filtered consumers from
//! a sequence. Every publish carries `Nats-Msg-Id` (`<tenant>:<idempotency key>`, or a fresh id
//! per event for the duration of one append) so a retry after a lost ack is stored once.
//!
//! Each node tails the stream with one ordered consumer (reading ahead by batched direct get
//! whenever that consumer is silent) and feeds its local hub through its `Feed`; browsers and
//! gRPC subscribers never get a NATS consumer of their own. When NATS goes away the tail
//! reconnects and resumes after the last sequence it delivered; while it is away the node
//! reports not-ready (`bounds` fails) and publishes retry for `publish_deadline`, then fail as
//! unavailable.
//!
//! State: a second stream (`<stream>_STATE`, one message per subject) holds the latest event
//! of every state slot, at `<prefix>_state.<tenant>.<hex slot>.<hex key>`, so every node reads
//! the same state and history retention never touches it. Each node's tail writes it, in
//! sequence order, for every slot event it sees (`Nats-Msg-Id: state-<seq>`, so the nodes'
//! identical writes are stored once), and knows how far it has applied: a state read is
//! consistent with that watermark (slots newer than it are left to the replay after it).
//! The watermark is persisted, so a restarted node first re-applies what it may have missed.
//!
//! Durability: an ack means the message is stored by the stream's replicas (R3: a majority has
//! it) or, for R1, written to the server's store — in the page cache, not fsynced, unless the
//! server runs with `sync_interval: always`. See docs/clustering.md.

mod append;
mod publisher;
mod read;
mod setup;
mod state;
mod tail;

use std::{
    fmt::Write as _,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures::{StreamExt, future::BoxFuture};

use publisher::{Outgoing, Publisher};

use self::{read::*, state::*, tail::*};
use super::{Appended, Bounds, Log, LogError, LogStats, Quotas, Record, Retention, StateView, Stream};
use crate::{
    catalog::{Catalog, Route},
    names::{Channel, EventId},
    validate::{Accepted, route},
};

/// How long a publish waits for JetStream's ack before it is sent again (same `Nats-Msg-Id`).
const ACK_WAIT: Duration = Duration::from_secs(5);

/// The tail's longest pull; its idle heartbeat is derived from it.
const TAIL_PULL: Duration = Duration::from_secs(2);

/// How often the tail looks for events its consumer has not brought (see [`tail`]).
const WATCHDOG: Duration = Duration::from_millis(250);

/// Events one direct read of the tail asks for.
const CATCH_UP_BATCH: usize = 256;

/// Longest wait between attempts to recreate the tail: during a leader election every attempt
/// fails, and a longer wait would outlast the election and delay live delivery after it.
const TAIL_BACKOFF: Duration = Duration::from_millis(500);

/// How long the tail waits for a JetStream API answer (stream info, consumer create).
const TAIL_API_TIMEOUT: Duration = Duration::from_millis(750);

/// How long a starting node waits for JetStream to accept its streams.
const SETUP_DEADLINE: Duration = Duration::from_secs(30);

/// The oldest nats-server this backplane supports (multi-subject filters, `Nats-Msg-Id` on R3).
/// 2.12: atomic batch publish, which makes a multi-event append all or nothing.
pub const MIN_SERVER: (u64, u64) = (2, 12);

/// Most messages JetStream takes in one atomic batch: the most one append may hold (the bus
/// refuses a larger batch rather than store it as several, which would not be all or nothing).
const MAX_ATOMIC: usize = 1_000;

/// How to reach JetStream and shape the stream.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// `nats://host:4222` (several, comma-separated, for a cluster).
    pub url: String,
    pub stream: String,
    pub subject_prefix: String,
    /// 1 for a single server, 3 for a cluster.
    pub replicas: usize,
    pub credentials_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// Extra root certificate(s) for a TLS server (PEM).
    pub tls_ca_file: Option<PathBuf>,
    pub tls_required: bool,
    /// How long a publish keeps retrying (same Msg-Id) before failing as unavailable; covers a
    /// leader election (measured at 4–5 s).
    pub publish_deadline: Duration,
    pub retention: Retention,
    /// `max_keys_per_tenant` is enforced per node (see [`Held`]); jobs are bounded by their
    /// history's `max_age` (their state expires with it).
    pub quotas: Quotas,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            stream: "SWITCHYARD".into(),
            subject_prefix: "switchyard".into(),
            replicas: 1,
            credentials_file: None,
            user: None,
            password: None,
            token: None,
            tls_ca_file: None,
            tls_required: false,
            publish_deadline: Duration::from_secs(10),
            retention: Retention::default(),
            quotas: Quotas::default(),
        }
    }
}

pub struct JetStreamLog {
    client: async_nats::Client,
    js: jetstream::Context,
    config: JetStreamConfig,
    /// Highest sequence known (acked or tailed).
    head: Arc<AtomicU64>,
    /// The stream's first sequence and message count at the last look (for `stats`).
    oldest: AtomicU64,
    stored: AtomicU64,
    tailing: Arc<AtomicBool>,
    tail: tokio::task::JoinHandle<()>,
    persist: tokio::task::JoinHandle<()>,
    publisher: Publisher,
    acks: tokio::task::JoinHandle<()>,
    applied: Arc<Applied>,
    names: Names,
    held: Arc<Held>,
}

impl Drop for JetStreamLog {
    fn drop(&mut self) {
        self.acks.abort();
        self.tail.abort();
        self.persist.abort();
    }
}

/// Subject names derived from the configuration, shared by the tail and reads.
#[derive(Clone)]
struct Names {
    state_prefix: String,
    state_stream: String,
}

impl Names {
    fn new(config: &JetStreamConfig) -> Self {
        Self {
            state_prefix: format!("{}_state", config.subject_prefix),
            state_stream: format!("{}_STATE", config.stream),
        }
    }

    /// The state slot of a record: `<prefix>_state.<tenant>.<hex slot>.<hex key>` (NATS tokens
    /// cannot hold the `.` and `:` of type names, nor arbitrary keys).
    fn state_subject(&self, r: &Record) -> Option<String> {
        Some(self.slot_subject(r.tenant.as_str(), r.routing.state.as_deref()?, &r.event.key))
    }

    fn slot_subject(&self, tenant: &str, slot: &str, key: &str) -> String {
        let mut s = format!("{}.{tenant}.", self.state_prefix);
        hex(&mut s, slot.as_bytes());
        s.push('.');
        if key.is_empty() {
            s.push('_');
        } else {
            hex(&mut s, key.as_bytes());
        }
        s
    }

    /// The tenant of a state subject that counts against its key quota: not the watermark,
    /// not a job's (whose slot type is routed to a keyed channel).
    fn counted_tenant<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject.strip_prefix(&self.state_prefix)?.strip_prefix('.')?;
        let mut parts = rest.split('.');
        let (tenant, slot) = (parts.next()?, parts.next()?);
        let slot = (0..slot.len())
            .step_by(2)
            .map(|i| slot.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
            .collect::<Option<Vec<u8>>>()?;
        // Custom types are not in the catalog: counted.
        let job = Catalog::global()
            .by_name(std::str::from_utf8(&slot).ok()?)
            .is_some_and(|spec| spec.routes.iter().any(|r| matches!(r, Route::Keyed(_))));
        (tenant != "_meta" && !job).then_some(tenant)
    }

    fn watermark_subject(&self) -> String {
        format!("{}._meta.applied", self.state_prefix)
    }
}

fn hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(e.to_string())
}

/// `major.minor` of a server version string such as `2.15.1`.
pub fn server_version(v: &str) -> Option<(u64, u64)> {
    let mut parts = v.trim_start_matches('v').split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.split('-').next()?.parse().ok()?))
}

impl JetStreamLog {
    /// Connects, checks the server version, creates or updates the stream, and starts the tail.
    /// The JetStream context this log uses, for other state nodes share (the credentials ledger).
    pub fn context(&self) -> &jetstream::Context {
        &self.js
    }

    /// Whether this node's tail of the stream is up (readiness).
    pub fn tailing(&self) -> bool {
        self.tailing.load(Ordering::Relaxed)
    }

    /// Fails at once while the connection is down, instead of queueing the request until NATS
    /// returns: readiness and reads must answer now.
    fn connected(&self) -> Result<(), LogError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(unavailable(format!("not connected to NATS ({state})"))),
        }
    }

    fn subject(&self, a: &Accepted) -> String {
        let kind = match a.event.payload {
            Some(crate::proto::v1::event::Payload::Custom(_)) | None => "_custom",
            _ => &*a.routing.type_name,
        };
        format!("{}.{}.{kind}", self.config.subject_prefix, a.tenant)
    }

    /// The subjects that can hold events of `stream`; exact membership is checked per record.
    fn filters(&self, stream: &Stream) -> Vec<String> {
        let p = &self.config.subject_prefix;
        match stream {
            Stream::All => vec![format!("{p}.>")],
            Stream::Tenant(t) => vec![format!("{p}.{t}.>")],
            Stream::Channel(t, c) => {
                let mut v: Vec<String> = types_routing_to(c).into_iter().map(|ty| format!("{p}.{t}.{ty}")).collect();
                v.push(format!("{p}.{t}._custom"));
                v
            }
        }
    }
}

/// Catalog types whose routes include `channel` (by base for keyed channels such as `jobs/42`).
fn types_routing_to(channel: &Channel) -> Vec<String> {
    Catalog::global()
        .specs()
        .into_iter()
        .filter(|s| {
            s.routes.iter().any(|r| match r {
                Route::Fixed(c) => c == channel,
                Route::Keyed(base) => base == channel.base(),
            })
        })
        .map(|s| s.name.to_string())
        .collect()
}

/// Turns a stored message into a record whose id is its stream sequence.
fn record(payload: &[u8], sequence: u64) -> Result<Record, LogError> {
    use prost::Message;
    let mut event = crate::proto::v1::Event::decode(payload).map_err(|e| LogError::Corrupt(e.to_string()))?;
    event.id = sequence;
    let tenant = crate::names::Tenant::new(&event.tenant).map_err(|e| LogError::Corrupt(e.to_string()))?;
    let routing = route(&event, None).map_err(|e| LogError::Corrupt(e.to_string()))?;
    Ok(Record::new(event, tenant, routing))
}

impl Log for JetStreamLog {
    fn append(&self, events: Vec<Accepted>) -> BoxFuture<'_, Result<Vec<Appended>, LogError>> {
        Box::pin(async move {
            self.admit(&events)?;
            let to = self.addressed(&events);
            if events.len() == 1 {
                return self.publish_with_retry(&events, &to).await;
            }
            if events.len() > MAX_ATOMIC {
                return Err(LogError::Unavailable(format!(
                    "{} events in one atomic batch; at most {MAX_ATOMIC}",
                    events.len()
                )));
            }
            self.publish_atomic(&events, &to).await
        })
    }

    fn max_batch(&self) -> usize {
        MAX_ATOMIC
    }

    /// Pipelined single publishes: JetStream commits an atomic batch as a unit, which a stream
    /// of independent events does not need. An event whose publish is retried (its ack lost in
    /// an election) may be stored after later events of the same call; each keeps its Msg-Id.
    fn append_each(&self, events: Vec<Accepted>) -> BoxFuture<'_, Result<Vec<Appended>, LogError>> {
        Box::pin(async move {
            self.admit(&events)?;
            self.publish_with_retry(&events, &self.addressed(&events)).await
        })
    }

    fn read(&self, stream: Stream, after: EventId, limit: usize) -> BoxFuture<'_, Result<Vec<Arc<Record>>, LogError>> {
        Box::pin(async move { self.retrying(|| self.read_once(&stream, after, limit)).await })
    }

    fn bounds(&self, _stream: Stream) -> BoxFuture<'_, Result<Bounds, LogError>> {
        Box::pin(self.retrying(|| self.bounds_once()))
    }
    fn state(&self, stream: Stream, after: EventId) -> BoxFuture<'_, Result<StateView, LogError>> {
        Box::pin(async move { self.retrying(|| self.state_once(&stream, after)).await })
    }

    fn id_before(&self, ms: u64) -> BoxFuture<'_, Result<EventId, LogError>> {
        Box::pin(async move {
            self.connected()?;
            let start_time = async_nats::datetime::from_nanos(i128::from(ms) * 1_000_000).map_err(unavailable)?;
            let s = self.js.get_stream_no_info(&self.config.stream).await.map_err(unavailable)?;
            let reader = Reader::open(&s, Vec::new(), DeliverPolicy::ByStartTime { start_time }).await?;
            let mut batch = reader.consumer.fetch().max_messages(1).messages().await.map_err(unavailable)?;
            let first = match batch.next().await {
                Some(m) => Some(m.map_err(unavailable)?.info().map_err(unavailable)?.stream_sequence),
                None => None,
            };
            match first {
                Some(seq) => Ok(EventId(seq - 1)),
                None => Ok(self.bounds(Stream::All).await?.head),
            }
        })
    }

    fn apply_retention(&self, _now_ms: u64) -> BoxFuture<'_, Result<(), LogError>> {
        // JetStream enforces max_age and per-subject limits itself.
        Box::pin(async { Ok(()) })
    }

    /// As of the last bounds check (every resume, poll and readiness probe asks).
    fn stats(&self) -> LogStats {
        let head = self.head.load(Ordering::Relaxed);
        LogStats {
            head: EventId(head),
            oldest: EventId(self.oldest.load(Ordering::Relaxed)),
            stored: self.stored.load(Ordering::Relaxed),
            tail: Some(super::TailStats {
                // A consumer kept across a lost connection delivers nothing until NATS is back.
                following: self.tailing() && self.connected().is_ok(),
                behind: head.saturating_sub(self.applied.seen.load(Ordering::Acquire)),
            }),
            ..LogStats::default()
        }
    }

    fn backend(&self) -> &'static str {
        "jetstream"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_channel_subjects() {
        assert_eq!(server_version("2.15.1"), Some((2, 15)));
        assert_eq!(server_version("v2.10.0-beta.3"), Some((2, 10)));
        assert!(server_version("2.9.10").unwrap() < MIN_SERVER);
        let alerts = types_routing_to(&Channel::new("alerts").unwrap());
        assert!(alerts.contains(&"alert:critical".to_owned()) && !alerts.contains(&"shopify:order-created".to_owned()));
        let jobs = types_routing_to(&Channel::new("jobs/42").unwrap());
        assert!(jobs.contains(&"import:job-progress".to_owned()));
    }
}
