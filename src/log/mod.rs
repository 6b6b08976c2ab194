//! The one ordered, durable history: the single source of truth.
//!
//! Every accepted event is appended here and gets its id here; live delivery is fed by the
//! log through its [`Feed`] *after* commit, in id order, so live and replayed events can never
//! disagree. The log knows nothing of what is behind the feed (the hub, wired by whoever builds
//! both). The [`Log`] trait is the seam where a NATS JetStream backplane replaces the embedded
//! store ([`embedded`]).

pub mod embedded;
pub mod jetstream;
pub mod kv;

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, OnceLock},
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::Deserialize;

use crate::{
    names::{Channel, EventId, Tenant},
    proto::v1::Event,
    validate::{Accepted, Routing},
};

/// Where a log hands its committed records: in id order, right after commit and before the
/// appends that made them are acknowledged (a publisher that subscribes after its ack finds
/// its event live or in history). Behind it is the hub ([`crate::hub::Hub::feed`]).
#[derive(Clone)]
pub struct Feed(Arc<Intake>);

type Intake = dyn Fn(&[Arc<Record>]) + Send + Sync;

impl Feed {
    pub fn new(f: impl Fn(&[Arc<Record>]) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// A feed into nothing: a log nobody watches live (tools, tests).
    pub fn none() -> Self {
        Self::new(|_| {})
    }

    pub fn committed(&self, records: &[Arc<Record>]) {
        (self.0)(records)
    }
}

/// A committed event as the hub and subscribers see it. Shared by `Arc`; never copied per subscriber.
pub struct Record {
    pub id: EventId,
    pub tenant: Tenant,
    pub routing: Routing,
    /// The stored event, `id` included.
    pub event: Event,
    /// The event's frame for the HTTP edge (SSE), encoded once by whoever needs it
    /// first and shared by every subscriber after that.
    pub frame: OnceLock<Bytes>,
    /// The same for gRPC: the event as an encoded `SubscribeResponse.event` field.
    pub grpc_field: OnceLock<Bytes>,
    /// The same for outbound delivery: the webhook body, identical for every endpoint.
    pub outbound_body: OnceLock<Bytes>,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("type", &self.routing.type_name)
            .finish()
    }
}

impl Record {
    pub fn new(event: Event, tenant: Tenant, routing: Routing) -> Self {
        let (frame, grpc_field, outbound_body) = (OnceLock::new(), OnceLock::new(), OnceLock::new());
        Self { id: EventId(event.id), tenant, routing, event, frame, grpc_field, outbound_body }
    }

    /// Rebuilds a record from its stored encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, LogError> {
        use prost::Message;
        let event = Event::decode(bytes).map_err(|e| LogError::Corrupt(e.to_string()))?;
        let tenant = Tenant::new(&event.tenant).map_err(|e| LogError::Corrupt(e.to_string()))?;
        let routing = crate::validate::route(&event, None).map_err(|e| LogError::Corrupt(e.to_string()))?;
        Ok(Self::new(event, tenant, routing))
    }

    pub fn type_name(&self) -> &str {
        &self.routing.type_name
    }

    /// When the bus accepted the event, Unix ms (0 when unset).
    pub fn published_ms(&self) -> u64 {
        self.event
            .published_at
            .as_ref()
            .map_or(0, |t| (t.seconds.max(0) as u64) * 1000 + (t.nanos.max(0) as u64) / 1_000_000)
    }

    pub fn in_any(&self, channels: &[Channel]) -> bool {
        self.routing.channels.iter().any(|c| channels.contains(c))
    }
}

/// Which slice of the history to read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Everything, every tenant (system subscribers such as a remote bridge).
    All,
    /// One tenant, every channel.
    Tenant(Tenant),
    /// One tenant's channel: read from its own index, never by scanning the rest.
    Channel(Tenant, Channel),
}

/// What history holds for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bounds {
    /// First id still held (0 when the stream is empty).
    pub oldest: EventId,
    /// Highest id retention removed from this stream (0 when nothing was removed).
    pub trimmed_through: EventId,
    /// The newest id in the whole log.
    pub head: EventId,
    /// Ids in `(lost.0, lost.1]` were acknowledged but not yet on disk when the process crashed
    /// (fsync `batch`/`off`): a subscriber that saw one has a gap (empty when none).
    pub lost: (EventId, EventId),
}

impl Bounds {
    /// Whether resuming after `from` delivers every event with a greater id.
    pub fn complete_after(&self, from: EventId) -> bool {
        let lost = self.lost.0 < from && from <= self.lost.1;
        from >= self.trimmed_through && from <= self.head && !lost
    }
}

/// The state view of a stream: the latest event of every state slot (tenant, slot, key), where
/// a slot is a snapshot type (or the job progress type a terminal fact ends).
///
/// Invariant: `records` + every event with an id > `as_of` = the current state. `records` are
/// in id order, each with its real id ≤ `as_of`; a slot whose latest event is newer than
/// `as_of` is left out (the events after `as_of` carry it).
#[derive(Debug, Clone, Default)]
pub struct StateView {
    pub records: Vec<Arc<Record>>,
    pub as_of: EventId,
}

impl StateView {
    /// Whether a record belongs to `stream` (the state table is per tenant; channels filter it).
    pub fn keeps(stream: &Stream, r: &Record) -> bool {
        match stream {
            Stream::All | Stream::Tenant(_) => true,
            Stream::Channel(_, c) => r.in_any(std::slice::from_ref(c)),
        }
    }
}

/// One page of a state view: up to `limit` slots whose latest event has an id ≤ `as_of`, in id
/// order within the page. Every page of one walk has the first page's `as_of`; a slot that
/// changes during the walk moves past `as_of` and leaves the pages, and the events after `as_of`
/// carry it: the pages plus what follows `as_of` are the truth, as with one view.
#[derive(Debug, Clone, Default)]
pub struct StatePage {
    pub records: Vec<Arc<Record>>,
    pub as_of: EventId,
    /// Where the next page starts, as the backend names it (an id, a slot key), or `None` on
    /// the last page. Never contains a `.`.
    pub next: Option<String>,
}

impl StatePage {
    /// A page of `view`, whose records are in id order: those after the id `after`.
    pub fn of(view: StateView, after: Option<&str>, as_of: Option<EventId>, limit: usize) -> Self {
        let after = EventId(after.and_then(|a| a.parse().ok()).unwrap_or(0));
        let as_of = as_of.unwrap_or(view.as_of);
        let mut records: Vec<_> = view.records.into_iter().filter(|r| r.id > after && r.id <= as_of).collect();
        let next = match limit {
            0 => None,
            _ => (records.len() > limit).then(|| records[limit - 1].id.to_string()),
        };
        records.truncate(limit);
        Self { records, as_of, next }
    }
}

/// Result of appending one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub id: EventId,
    /// The idempotency key was seen before: `id` is the original event's and nothing new was stored.
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("storage error: {0}")]
    Storage(String),
    #[error("stored event is unreadable: {0}")]
    Corrupt(String),
    #[error("the log is shutting down")]
    Closed,
    #[error("the log is unavailable: {0}")]
    Unavailable(String),
    /// Not the log's: the subscriber's token expired (ends a stream; reconnect with a new one).
    #[error("the token expired or was revoked; reconnect with a valid one")]
    Expired,
    /// The tenant is at one of its [`Quotas`]; nothing of the batch was stored.
    #[error("{message}")]
    Quota { field: &'static str, message: String },
}

/// What one tenant can make the log keep: every other resource a tenant uses ages out with
/// retention, but state keys are kept until replaced, so a publisher inventing keys (or job
/// ids) would grow the log without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    /// Most state-view keys per tenant (every snapshot key, every job with state).
    pub max_keys_per_tenant: u64,
    /// Most keyed channels (`jobs/<id>`) per tenant that still hold history.
    pub max_jobs_per_tenant: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Self { max_keys_per_tenant: 100_000, max_jobs_per_tenant: 10_000 }
    }
}

/// When an append is acknowledged relative to fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Ack after the group commit is fsynced (the default). Concurrent appends share one fsync.
    #[default]
    Always,
    /// Ack after the write; fsync at most every `batch_interval`. A crash may lose that interval.
    Batch,
    /// Never fsync explicitly; the OS decides. For tests and throwaway data.
    Off,
}

impl std::str::FromStr for Fsync {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "batch" => Ok(Self::Batch),
            "off" => Ok(Self::Off),
            _ => Err(format!("fsync must be always, batch or off, not {s:?}")),
        }
    }
}

/// How long a stream keeps events. Whichever limit is hit first applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Events per stream (per tenant channel).
    pub max_events: u64,
    /// Age, seconds.
    pub max_age_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_events: 1_000_000, max_age_secs: 7 * 24 * 3600 }
    }
}

/// Retention: a default, and overrides per channel base name (`jobs` covers every `jobs/<id>`).
// No deny_unknown_fields: serde cannot combine it with `flatten`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Retention {
    #[serde(flatten)]
    pub default: Limits,
    #[serde(default)]
    pub channels: HashMap<String, Limits>,
    /// How long idempotency keys are remembered, seconds (default 24 h: longer than Shopify's 4 h of retries).
    #[serde(default = "default_dedupe")]
    pub dedupe_window_secs: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self { default: Limits::default(), channels: HashMap::new(), dedupe_window_secs: default_dedupe() }
    }
}

fn default_dedupe() -> u64 {
    24 * 3600
}

impl Retention {
    pub fn for_channel(&self, channel: &Channel) -> Limits {
        self.channels.get(channel.base()).copied().unwrap_or(self.default)
    }

    pub fn dedupe_window(&self) -> Duration {
        Duration::from_secs(self.dedupe_window_secs)
    }
}

/// Counters a log reports.
#[derive(Debug, Clone, Default)]
pub struct LogStats {
    pub head: EventId,
    pub oldest: EventId,
    pub stored: u64,
    /// The store's size on disk, where the backend has one file.
    pub size_bytes: Option<u64>,
    /// Durations of durable commits (one per group commit, and each deferred fsync), where
    /// the backend commits itself.
    pub commits: Option<crate::metrics::Buckets>,
    /// Where this node follows a shared history (JetStream): whether its tail is up, and how
    /// many stored events it has not yet handed to its subscribers. `None`: the node is the
    /// history's only writer, and hands out every event it commits.
    pub tail: Option<TailStats>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TailStats {
    pub following: bool,
    pub behind: u64,
}

/// Most events one all-or-nothing batch may carry, on every transport (a backend may take fewer:
/// [`Log::max_batch`]).
pub const MAX_BATCH: usize = 10_000;

/// The history. Implementations: [`embedded::EmbeddedLog`] (redb), [`jetstream::JetStreamLog`]
/// (NATS JetStream, shared by several nodes) and the bridge's `RemoteLog` (another bus).
///
/// Contract:
/// - `append` resolves only when the events are durable under the configured policy, with ids
///   strictly increasing in commit order across all callers;
/// - committed records are handed to the log's [`Feed`] in id order, after commit;
/// - `read` returns events of `stream` with `id > after`, ascending;
/// - the state view is updated with the append that changes it and outlives history retention.
pub trait Log: Send + Sync + 'static {
    /// Appends `events` all or nothing, in order.
    fn append(&self, events: Vec<Accepted>) -> BoxFuture<'_, Result<Vec<Appended>, LogError>>;
    /// Appends `events` that need not be stored all or nothing (a stream's events, each with its
    /// own result); a backend where an atomic batch costs more than its events pipelines them.
    fn append_each(&self, events: Vec<Accepted>) -> BoxFuture<'_, Result<Vec<Appended>, LogError>> {
        self.append(events)
    }
    /// One page of the state view of `stream` (see [`StatePage`]), after the previous page's
    /// `next`; `as_of` is the walk's, from its first page (`None`: this is the first). This
    /// default pages the whole view by id; a backend that can read its slots in order pages them.
    fn state_page(
        &self,
        stream: Stream,
        after: Option<String>,
        as_of: Option<EventId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<StatePage, LogError>> {
        Box::pin(async move {
            let from = EventId(after.as_deref().and_then(|a| a.parse().ok()).unwrap_or(0));
            Ok(StatePage::of(self.state(stream, from).await?, after.as_deref(), as_of, limit))
        })
    }
    /// The most events one [`Log::append`] stores all or nothing; the bus refuses larger batches.
    fn max_batch(&self) -> usize {
        MAX_BATCH
    }
    fn read(&self, stream: Stream, after: EventId, limit: usize) -> BoxFuture<'_, Result<Vec<Arc<Record>>, LogError>>;
    fn bounds(&self, stream: Stream) -> BoxFuture<'_, Result<Bounds, LogError>>;
    /// The state view of `stream`, only slots whose latest event has an id > `after`
    /// (`EventId::ZERO` for all of it: a gap heals with the slots that changed in it).
    fn state(&self, stream: Stream, after: EventId) -> BoxFuture<'_, Result<StateView, LogError>>;
    /// Where a replay of everything published at or after `ms` (Unix ms) starts: an id at or
    /// before the one just before the first such event (the head when there is none), through
    /// an index. It may start a little early (an event stamped before `ms` but committed after
    /// it), never late; readers drop events published before `ms` (`Record::published_ms`).
    fn id_before(&self, ms: u64) -> BoxFuture<'_, Result<EventId, LogError>>;
    /// Applies retention now, as if the time were `now_ms` (operators, tests). Backends whose
    /// store enforces limits itself may do nothing.
    fn apply_retention(&self, now_ms: u64) -> BoxFuture<'_, Result<(), LogError>>;
    fn stats(&self) -> LogStats;
    fn backend(&self) -> &'static str;
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
