//! The embedded log: one redb file in the data dir, one writer thread.
//!
//! Tables:
//! - `events`: id → encoded `Event` (id included);
//! - `streams`: (stream name, id) → published-at ms. One entry per tenant
//!   (`acme`) and per tenant channel (`acme:dashboard`): the per-channel index
//!   that lets a resume read one channel without scanning the rest;
//! - `dedupe`: (tenant, idempotency key) → (id, published-at ms), and `dedupe_times`, the same
//!   keys by (ms, id), so expiring them costs the keys expired, never a scan;
//! - `meta`: `head` (last id ever assigned, so ids stay monotonic even when
//!   retention empties the log), `trim:<stream>` (highest id trimmed), and for the modes that
//!   acknowledge before fsync, `reserved` (ids up to it may have been handed out; written
//!   durably ahead of use), `clean` (the writer shut down in order) and `lost_from`/`lost_through`
//!   (ids a crash may have taken back: resuming from one of them is a gap, never silence);
//! - `state`: `tenant\0slot\0key` → the id of the latest event of that state slot. Written in
//!   the same transaction as the append. Retention never removes an event that is some
//!   slot's current state (it is *pinned*; only the history indexes forget it), so the history
//!   can be trimmed to nothing and every current figure is still there. A job's state
//!   (`jobs/<id>`) is the exception: it goes with its history, so jobs do not pile up. Only the id is
//!   stored: a busy state table is rewritten page by page on every commit (copy-on-write),
//!   and 8-byte values keep those pages few (measured in BENCHMARKS.md);
//! - `times`: published-at ms → first id committed in that ms (one row per group commit),
//!   so `since=<time>` finds its starting id by one range lookup, not a scan.
//!
//! Group commit: appends queue to the writer thread, which drains everything
//! queued into one write transaction and one fsync, then acks every caller and
//! hands the records to the hub in id order. Retention runs on the same thread
//! between batches, so it never contends with appends for redb's single writer, and in slices
//! of a bounded number of rows, so a large backlog never holds appends up for long. The
//! writer also enforces the per-tenant [`Quotas`].

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ops::Bound::{Excluded, Unbounded},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::oneshot;

use super::{
    Appended, Bounds, Feed, Fsync, Log, LogError, LogStats, Quotas, Record, Retention, StatePage, StateView, Stream,
    now_ms,
};
use crate::{
    metrics::{COMMIT_BUCKETS, Histogram},
    names::{Channel, EventId, Tenant},
    validate::Accepted,
};

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const STREAMS: TableDefinition<(&str, u64), u64> = TableDefinition::new("streams");
const DEDUPE: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("dedupe");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Keyed `tenant \0 slot \0 key` (tenants and type names hold no NUL): one memcmp per comparison.
const STATE: TableDefinition<&[u8], u64> = TableDefinition::new("state");
const TIMES: TableDefinition<u64, u64> = TableDefinition::new("times");
/// (published-at ms, id) → (tenant, idempotency key): keys in the order they expire.
const DEDUPE_TIMES: TableDefinition<(u64, u64), (&str, &str)> = TableDefinition::new("dedupe_times");

/// Most events one write transaction takes before acking.
const MAX_GROUP: usize = 16_384;

/// Ids reserved per durable reservation when acks may precede fsync (`batch`, `off`): one
/// fsync'd write per this many ids, so a crash can never hand an id out twice.
const RESERVE: u64 = 100_000;

#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub fsync: Fsync,
    /// With `Fsync::Batch`: the longest un-fsynced stretch.
    pub batch_interval: Duration,
    pub retention: Retention,
    /// How often retention runs.
    pub trim_interval: Duration,
    /// Rows one retention slice may visit or remove before appends get the writer back.
    pub trim_budget: usize,
    pub quotas: Quotas,
    /// redb's page cache, bytes: what the log may keep in memory beyond its working set.
    pub cache_bytes: usize,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            fsync: Fsync::Always,
            batch_interval: Duration::from_millis(100),
            retention: Retention::default(),
            trim_interval: Duration::from_secs(10),
            trim_budget: 4_096,
            quotas: Quotas::default(),
            cache_bytes: 256 << 20,
        }
    }
}

type Reply = oneshot::Sender<Result<Vec<Appended>, LogError>>;

/// Work for the writer thread: the only thread that writes to the database.
enum Job {
    Append {
        events: Vec<Accepted>,
        reply: Reply,
        /// The appending span, when its trace is sampled: the group commit it joins is
        /// recorded in that trace.
        trace: Option<tracing::Span>,
    },
    /// Run retention now, as if the time were `now_ms` (operators, tests).
    Trim { now_ms: u64, reply: oneshot::Sender<Result<(), LogError>> },
}

pub struct EmbeddedLog {
    db: Arc<Database>,
    jobs: mpsc::Sender<Job>,
    head: Arc<AtomicU64>,
    writer: Option<thread::JoinHandle<()>>,
    file: std::path::PathBuf,
    /// Durable commits' durations, observed by the writer.
    commits: Arc<Histogram>,
}

impl Drop for EmbeddedLog {
    /// Stops the writer (it syncs what it has) and waits, so the file is closed on return.
    fn drop(&mut self) {
        let (disconnected, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, disconnected));
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn storage(e: impl std::fmt::Display) -> LogError {
    LogError::Storage(e.to_string())
}

fn stream_name(stream: &Stream) -> Option<String> {
    match stream {
        Stream::All => None,
        Stream::Tenant(t) => Some(t.to_string()),
        Stream::Channel(t, c) => Some(format!("{t}:{c}")),
    }
}

impl EmbeddedLog {
    /// The small records kept in the same file (durable subscribers' cursors): see [`super::kv`].
    pub fn kv(&self) -> Result<super::kv::RedbKv, LogError> {
        super::kv::RedbKv::new(self.db.clone())
    }

    /// Opens (or creates) `dir/events.redb` and starts the writer thread.
    pub fn open(dir: &Path, config: EmbeddedConfig, feed: Feed) -> Result<Self, LogError> {
        std::fs::create_dir_all(dir).map_err(storage)?;
        // redb's own default cache is 1 GiB: far more than a small machine should give it.
        let file = dir.join("events.redb");
        let db = redb::Builder::new().set_cache_size(config.cache_bytes).create(&file);
        let db = Arc::new(db.map_err(storage)?);
        let mut txn = db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        let (head, reserved) = {
            txn.open_table(EVENTS).map_err(storage)?;
            index_dedupe_times(&txn)?;
            txn.open_table(STATE).map_err(storage)?;
            txn.open_table(TIMES).map_err(storage)?;
            txn.open_table(STREAMS).map_err(storage)?;
            let mut meta = txn.open_table(META).map_err(storage)?;
            let get = |meta: &redb::Table<&str, u64>, k: &str| -> Result<u64, LogError> {
                Ok(meta.get(k).map_err(storage)?.map_or(0, |v| v.value()))
            };
            let head = get(&meta, "head")?;
            let reserved = get(&meta, "reserved")?;
            // A crash after acking ids beyond the last fsync: those ids are gone, and must not be
            // handed out again. Start after everything that may have been handed out, and
            // remember the range so a resume from inside it is told it has a gap.
            let crashed = reserved > head && get(&meta, "clean")? == 0;
            let head = if crashed {
                tracing::warn!(durable = head, reserved, "unclean shutdown: ids after the last fsync are skipped");
                meta.insert("lost_from", head).map_err(storage)?;
                meta.insert("lost_through", reserved).map_err(storage)?;
                meta.insert("head", reserved).map_err(storage)?;
                reserved
            } else {
                head
            };
            meta.insert("clean", 0).map_err(storage)?;
            (head, reserved.max(head))
        };
        txn.commit().map_err(storage)?;
        let head = Arc::new(AtomicU64::new(head));
        let (tx, rx) = mpsc::channel();
        let commits = Arc::new(Histogram::new(COMMIT_BUCKETS));
        let writer = Writer::new(db.clone(), config, feed, head.clone(), reserved, commits.clone())?;
        let writer = thread::Builder::new()
            .name("switchyard-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(storage)?;
        Ok(Self { db, jobs: tx, head, writer: Some(writer), file, commits })
    }

    fn read_blocking(
        db: &Database,
        stream: &Stream,
        after: EventId,
        limit: usize,
    ) -> Result<Vec<Arc<Record>>, LogError> {
        let txn = db.begin_read().map_err(storage)?;
        let events = txn.open_table(EVENTS).map_err(storage)?;
        let start = after.0.saturating_add(1);
        let mut out = Vec::with_capacity(limit.min(4096));
        match stream_name(stream) {
            None => {
                for row in events.range(start..).map_err(storage)?.take(limit) {
                    let (_, v) = row.map_err(storage)?;
                    out.push(Arc::new(Record::decode(v.value())?));
                }
            }
            Some(name) => {
                let streams = txn.open_table(STREAMS).map_err(storage)?;
                for row in
                    streams.range((name.as_str(), start)..=(name.as_str(), u64::MAX)).map_err(storage)?.take(limit)
                {
                    let (k, _) = row.map_err(storage)?;
                    let id = k.value().1;
                    // An index entry whose event is gone was trimmed between the two reads: skip it.
                    if let Some(v) = events.get(id).map_err(storage)? {
                        out.push(Arc::new(Record::decode(v.value())?));
                    }
                }
            }
        }
        Ok(out)
    }

    fn state_blocking(db: &Database, stream: &Stream, after: EventId) -> Result<StateView, LogError> {
        let txn = db.begin_read().map_err(storage)?;
        // The head in the same read transaction as the state: exactly what it is consistent with.
        let as_of = txn.open_table(META).map_err(storage)?.get("head").map_err(storage)?.map_or(0, |v| v.value());
        let ids = Self::slot_ids(&txn, stream, after.0, as_of)?;
        let events = txn.open_table(EVENTS).map_err(storage)?;
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            let r = Self::slot_record(&events, id)?;
            if StateView::keeps(stream, &r) {
                records.push(Arc::new(r));
            }
        }
        Ok(StateView { records, as_of: EventId(as_of) })
    }

    /// A page of the state view in slot order, after the slot `after` (hex): the rows of the
    /// page are read, and their events, never the tenant's other slots.
    fn state_page_blocking(
        db: &Database,
        stream: &Stream,
        after: Option<&str>,
        as_of: Option<EventId>,
        limit: usize,
    ) -> Result<StatePage, LogError> {
        use std::ops::Bound;
        let txn = db.begin_read().map_err(storage)?;
        let head = txn.open_table(META).map_err(storage)?.get("head").map_err(storage)?.map_or(0, |v| v.value());
        let as_of = as_of.map_or(head, |a| a.0.min(head));
        let table = txn.open_table(STATE).map_err(storage)?;
        let events = txn.open_table(EVENTS).map_err(storage)?;
        let (from, to) = match stream {
            Stream::All => (Vec::new(), None),
            Stream::Tenant(t) | Stream::Channel(t, _) => (format!("{t}\0").into_bytes(), Some(format!("{t}\u{1}"))),
        };
        // A cursor is the client's: one outside this tenant's slots starts at their beginning, so
        // a range with its ends inverted is never asked for.
        let after = after.and_then(unhex).filter(|a| a.starts_with(&from));
        let lower = after.as_deref().map_or(Bound::Included(from.as_slice()), Bound::Excluded);
        let upper = to.as_deref().map_or(Bound::Unbounded, |t| Bound::Excluded(t.as_bytes()));
        let (mut records, mut last) = (Vec::new(), None);
        for row in table.range::<&[u8]>((lower, upper)).map_err(storage)? {
            let (slot, id) = row.map_err(storage)?;
            if records.len() == limit {
                // More slots follow: the next page starts after the last one this page looked at.
                records.sort_unstable_by_key(|r: &Arc<Record>| r.id);
                return Ok(StatePage { records, as_of: EventId(as_of), next: last.map(|s: Vec<u8>| hex(&s)) });
            }
            last = Some(slot.value().to_vec());
            let id = id.value();
            if id > as_of {
                continue;
            }
            let r = Self::slot_record(&events, id)?;
            if StateView::keeps(stream, &r) {
                records.push(Arc::new(r));
            }
        }
        records.sort_unstable_by_key(|r| r.id);
        Ok(StatePage { records, as_of: EventId(as_of), next: None })
    }

    /// The ids the state slots of `stream`'s tenant (or every tenant) point at, in `(after, as_of]`,
    /// ascending.
    fn slot_ids(txn: &redb::ReadTransaction, stream: &Stream, after: u64, as_of: u64) -> Result<Vec<u64>, LogError> {
        let table = txn.open_table(STATE).map_err(storage)?;
        let tenant = match stream {
            Stream::All => None,
            Stream::Tenant(t) | Stream::Channel(t, _) => Some(t.as_str()),
        };
        let rows = match tenant {
            Some(t) => {
                let (from, to) = (format!("{t}\0"), format!("{t}\u{1}"));
                table.range(from.as_bytes()..to.as_bytes()).map_err(storage)?
            }
            None => table.range::<&[u8]>(..).map_err(storage)?,
        };
        let mut ids = Vec::new();
        for row in rows {
            let id = row.map_err(storage)?.1.value();
            if id > after && id <= as_of {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn slot_record(events: &redb::ReadOnlyTable<u64, &[u8]>, id: u64) -> Result<Record, LogError> {
        let Some(bytes) = events.get(id).map_err(storage)? else {
            return Err(LogError::Corrupt(format!("state points at event {id}, which is gone")));
        };
        Record::decode(bytes.value())
    }

    fn id_before_blocking(db: &Database, ms: u64) -> Result<EventId, LogError> {
        let txn = db.begin_read().map_err(storage)?;
        let times = txn.open_table(TIMES).map_err(storage)?;
        match times.range(ms..).map_err(storage)?.next().transpose().map_err(storage)? {
            Some((_, first)) => Ok(EventId(first.value().saturating_sub(1))),
            None => Ok(EventId(
                txn.open_table(META).map_err(storage)?.get("head").map_err(storage)?.map_or(0, |v| v.value()),
            )),
        }
    }

    fn bounds_blocking(db: &Database, stream: &Stream, head: u64) -> Result<Bounds, LogError> {
        let txn = db.begin_read().map_err(storage)?;
        let meta = txn.open_table(META).map_err(storage)?;
        let (oldest, trim_key) = match stream_name(stream) {
            None => {
                let trimmed = meta.get("trim:*").map_err(storage)?.map_or(0, |v| v.value());
                (first_unpinned(&txn.open_table(EVENTS).map_err(storage)?, trimmed)?, "trim:*".to_owned())
            }
            Some(name) => {
                let streams = txn.open_table(STREAMS).map_err(storage)?;
                let first = streams
                    .range((name.as_str(), 0)..=(name.as_str(), u64::MAX))
                    .map_err(storage)?
                    .next()
                    .transpose()
                    .map_err(storage)?
                    .map(|(k, _)| k.value().1)
                    .unwrap_or(0);
                (first, format!("trim:{name}"))
            }
        };
        let get = |k: &str| -> Result<u64, LogError> { Ok(meta.get(k).map_err(storage)?.map_or(0, |v| v.value())) };
        Ok(Bounds {
            oldest: EventId(oldest),
            trimmed_through: EventId(get(&trim_key)?),
            head: EventId(head),
            lost: (EventId(get("lost_from")?), EventId(get("lost_through")?)),
        })
    }
}

/// The first event of the history proper: older ones still stored are pinned by the state view.
fn first_unpinned(events: &impl ReadableTable<u64, &'static [u8]>, trimmed: u64) -> Result<u64, LogError> {
    Ok(events
        .range(trimmed.saturating_add(1)..)
        .map_err(storage)?
        .next()
        .transpose()
        .map_err(storage)?
        .map_or(0, |(k, _)| k.value()))
}

fn state_key(tenant: &Tenant, slot: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.as_str().len() + slot.len() + key.len() + 2);
    k.extend_from_slice(tenant.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(slot.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Rebuilds per-stream entry counts (for count-based retention) at open.
fn count_streams(db: &Database) -> Result<BTreeMap<String, u64>, LogError> {
    let txn = db.begin_read().map_err(storage)?;
    let streams = txn.open_table(STREAMS).map_err(storage)?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for row in streams.iter().map_err(storage)? {
        let (k, _) = row.map_err(storage)?;
        let name = k.value().0;
        match counts.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                counts.insert(name.to_owned(), 1);
            }
        }
    }
    Ok(counts)
}

/// Rebuilds what each tenant holds against its quotas at open.
fn count_usage(db: &Database, counts: &BTreeMap<String, u64>) -> Result<HashMap<String, Usage>, LogError> {
    let mut usage: HashMap<String, Usage> = HashMap::new();
    for tenant in counts.keys().filter_map(|n| keyed_owner(n)) {
        usage.entry(tenant.to_owned()).or_default().jobs += 1;
    }
    let txn = db.begin_read().map_err(storage)?;
    for row in txn.open_table(STATE).map_err(storage)?.iter().map_err(storage)? {
        let (k, _) = row.map_err(storage)?;
        let tenant = k.value().split(|b| *b == 0).next().unwrap_or_default();
        usage.entry(String::from_utf8_lossy(tenant).into_owned()).or_default().keys += 1;
    }
    Ok(usage)
}

/// Logs written before the `dedupe_times` index existed get it built once, at open.
fn index_dedupe_times(txn: &redb::WriteTransaction) -> Result<(), LogError> {
    let dedupe = txn.open_table(DEDUPE).map_err(storage)?;
    let mut times = txn.open_table(DEDUPE_TIMES).map_err(storage)?;
    if !times.is_empty().map_err(storage)? {
        return Ok(());
    }
    for row in dedupe.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        let ((tenant, key), (id, ms)) = (k.value(), v.value());
        times.insert((ms, id), (tenant, key)).map_err(storage)?;
    }
    Ok(())
}

impl Log for EmbeddedLog {
    fn append(&self, events: Vec<Accepted>) -> BoxFuture<'_, Result<Vec<Appended>, LogError>> {
        Box::pin(async move {
            if events.is_empty() {
                return Ok(Vec::new());
            }
            let (reply, rx) = oneshot::channel();
            let trace = crate::trace::sampled_span();
            self.jobs.send(Job::Append { events, reply, trace }).map_err(|_| LogError::Closed)?;
            rx.await.map_err(|_| LogError::Closed)?
        })
    }

    fn read(&self, stream: Stream, after: EventId, limit: usize) -> BoxFuture<'_, Result<Vec<Arc<Record>>, LogError>> {
        let db = self.db.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || Self::read_blocking(&db, &stream, after, limit))
                .await
                .map_err(storage)?
        })
    }

    fn bounds(&self, stream: Stream) -> BoxFuture<'_, Result<Bounds, LogError>> {
        let db = self.db.clone();
        let head = self.head.load(Ordering::Acquire);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || Self::bounds_blocking(&db, &stream, head)).await.map_err(storage)?
        })
    }

    fn state(&self, stream: Stream, after: EventId) -> BoxFuture<'_, Result<StateView, LogError>> {
        let db = self.db.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || Self::state_blocking(&db, &stream, after)).await.map_err(storage)?
        })
    }

    fn state_page(
        &self,
        stream: Stream,
        after: Option<String>,
        as_of: Option<EventId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<StatePage, LogError>> {
        let db = self.db.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || Self::state_page_blocking(&db, &stream, after.as_deref(), as_of, limit))
                .await
                .map_err(storage)?
        })
    }

    fn id_before(&self, ms: u64) -> BoxFuture<'_, Result<EventId, LogError>> {
        let db = self.db.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || Self::id_before_blocking(&db, ms)).await.map_err(storage)?
        })
    }

    fn apply_retention(&self, now_ms: u64) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.jobs.send(Job::Trim { now_ms, reply }).map_err(|_| LogError::Closed)?;
            rx.await.map_err(|_| LogError::Closed)?
        })
    }

    fn stats(&self) -> LogStats {
        let head = EventId(self.head.load(Ordering::Acquire));
        let read = || -> Result<LogStats, LogError> {
            let txn = self.db.begin_read().map_err(storage)?;
            let events = txn.open_table(EVENTS).map_err(storage)?;
            let trimmed =
                txn.open_table(META).map_err(storage)?.get("trim:*").map_err(storage)?.map_or(0, |v| v.value());
            let oldest = first_unpinned(&events, trimmed)?;
            Ok(LogStats {
                head,
                oldest: EventId(oldest),
                stored: events.len().map_err(storage)?,
                ..LogStats::default()
            })
        };
        LogStats {
            size_bytes: std::fs::metadata(&self.file).ok().map(|m| m.len()),
            commits: Some(self.commits.read()),
            ..read().unwrap_or(LogStats { head, ..LogStats::default() })
        }
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }
}

/// One group commit's open tables and what the group has written so far.
struct Group<'t> {
    events: redb::Table<'t, u64, &'static [u8]>,
    streams: redb::Table<'t, (&'static str, u64), u64>,
    dedupe: redb::Table<'t, (&'static str, &'static str), (u64, u64)>,
    dedupe_times: redb::Table<'t, (u64, u64), (&'static str, &'static str)>,
    meta: redb::Table<'t, &'static str, u64>,
    state: redb::Table<'t, &'static [u8], u64>,
    times: redb::Table<'t, u64, u64>,
    /// The group's time, stamped on every entry it writes.
    ms: u64,
    /// Keys first seen in this same group, so a batch with repeats stores one.
    fresh: HashMap<(Tenant, String), u64>,
    /// The group's last event per state slot, written once and in key order at the end:
    /// fewer B-tree updates, and neighbouring pages touched together.
    slots: BTreeMap<Vec<u8>, u64>,
    buf: Vec<u8>,
    name: String,
}

impl<'t> Group<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Self, LogError> {
        Ok(Self {
            events: txn.open_table(EVENTS).map_err(storage)?,
            streams: txn.open_table(STREAMS).map_err(storage)?,
            dedupe: txn.open_table(DEDUPE).map_err(storage)?,
            dedupe_times: txn.open_table(DEDUPE_TIMES).map_err(storage)?,
            meta: txn.open_table(META).map_err(storage)?,
            state: txn.open_table(STATE).map_err(storage)?,
            times: txn.open_table(TIMES).map_err(storage)?,
            ms: now_ms(),
            fresh: HashMap::new(),
            slots: BTreeMap::new(),
            buf: Vec::with_capacity(512),
            name: String::with_capacity(128),
        })
    }

    /// The id already stored under this event's idempotency key, in this group or before.
    fn stored_key(&self, acc: &Accepted) -> Result<Option<u64>, LogError> {
        let Some(key) = &acc.idempotency_key else { return Ok(None) };
        if let Some(id) = self.fresh.get(&(acc.tenant.clone(), key.clone())) {
            return Ok(Some(*id));
        }
        Ok(self.dedupe.get((acc.tenant.as_str(), key.as_str())).map_err(storage)?.map(|v| v.value().0))
    }

    /// The state slots (same transaction as the events: state and history never disagree),
    /// the head, and the first id of this millisecond (an earlier group in the same ms keeps
    /// its row).
    fn finish(&mut self, start_head: u64, head: u64) -> Result<(), LogError> {
        for (key, id) in &self.slots {
            self.state.insert(key.as_slice(), id).map_err(storage)?;
        }
        if head != start_head {
            self.meta.insert("head", head).map_err(storage)?;
            if self.times.get(self.ms).map_err(storage)?.is_none() {
                self.times.insert(self.ms, start_head + 1).map_err(storage)?;
            }
        }
        Ok(())
    }
}

struct Writer {
    db: Arc<Database>,
    config: EmbeddedConfig,
    feed: Feed,
    head: Arc<AtomicU64>,
    /// Ids up to here are durably reserved (modes that ack before fsync).
    reserved: u64,
    /// Entries per stream name, in name order (retention walks them with a cursor).
    counts: BTreeMap<String, u64>,
    /// Per tenant: state keys, and keyed channels (`jobs/<id>`) holding history.
    usage: HashMap<String, Usage>,
    /// The retention round in progress, if any: it runs in slices between groups.
    round: Option<Round>,
    last_trim: Instant,
    last_sync: Instant,
    commits: Arc<Histogram>,
    unsynced: bool,
}

/// What a tenant holds against its [`Quotas`].
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    keys: u64,
    jobs: u64,
}

/// One pass of retention, done a budget of rows at a time so no slice holds up appends for
/// long, whatever the backlog. Phases in order: trim each stream's index (by name, resuming
/// after `after`), then drop the events no stream references any more, then expired
/// idempotency keys.
struct Round {
    now_ms: u64,
    phase: Phase,
    /// The lowest id a visited stream still references, or the head at the round's start + 1:
    /// streams that appear later reference only ids above that.
    first_kept: u64,
}

enum Phase {
    Streams { after: Option<String> },
    Events,
    Dedupe,
}

/// A stream's name in the `streams` table and what its retention is.
fn limits_of(retention: &Retention, name: &str) -> super::Limits {
    match name.split_once(':') {
        Some((_, ch)) => Channel::new(ch).map(|c| retention.for_channel(&c)).unwrap_or(retention.default),
        None => retention.default,
    }
}

/// `tenant:jobs/42` → `tenant`, for keyed channels only: each one is a job a tenant holds.
fn keyed_owner(name: &str) -> Option<&str> {
    name.split_once(':').filter(|(_, ch)| ch.contains('/')).map(|(t, _)| t)
}

impl Writer {
    fn new(
        db: Arc<Database>,
        config: EmbeddedConfig,
        feed: Feed,
        head: Arc<AtomicU64>,
        reserved: u64,
        commits: Arc<Histogram>,
    ) -> Result<Self, LogError> {
        let counts = count_streams(&db)?;
        let usage = count_usage(&db, &counts)?;
        Ok(Self {
            db,
            config,
            feed,
            head,
            reserved,
            counts,
            usage,
            round: None,
            last_trim: Instant::now(),
            last_sync: Instant::now(),
            unsynced: false,
            commits,
        })
    }

    fn run(mut self, rx: mpsc::Receiver<Job>) {
        loop {
            // While a retention round is unfinished, only look for queued work between slices.
            let tick = match self.round {
                Some(_) => Duration::ZERO,
                None => self.config.trim_interval.min(self.config.batch_interval),
            };
            match rx.recv_timeout(tick) {
                Ok(Job::Trim { now_ms, reply }) => {
                    let _ = reply.send(self.trim_all(now_ms));
                }
                Ok(Job::Append { events, reply, trace }) => {
                    let mut n = events.len();
                    let mut group = vec![(events, reply, trace)];
                    let mut trims = Vec::new();
                    while n < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(Job::Append { events, reply, trace }) => {
                                n += events.len();
                                group.push((events, reply, trace));
                            }
                            Ok(trim) => trims.push(trim),
                            Err(_) => break,
                        }
                    }
                    self.commit_group(group);
                    for job in trims {
                        if let Job::Trim { now_ms, reply } = job {
                            let _ = reply.send(self.trim_all(now_ms));
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.sync();
                    self.mark_clean();
                    return;
                }
            }
            if self.unsynced && self.last_sync.elapsed() >= self.config.batch_interval {
                self.sync();
            }
            if self.round.is_none() && self.last_trim.elapsed() >= self.config.trim_interval {
                self.last_trim = Instant::now();
                self.round = Some(self.new_round(now_ms()));
            }
            if let Err(error) = self.trim_slice() {
                tracing::error!(%error, "retention pass failed");
                self.round = None;
            }
        }
    }

    fn new_round(&self, now_ms: u64) -> Round {
        Round { now_ms, phase: Phase::Streams { after: None }, first_kept: self.head.load(Ordering::Acquire) + 1 }
    }

    /// A whole retention round now, as if the time were `now_ms` (operators, tests).
    fn trim_all(&mut self, now_ms: u64) -> Result<(), LogError> {
        self.round = Some(self.new_round(now_ms));
        while self.round.is_some() {
            if let Err(e) = self.trim_slice() {
                self.round = None;
                return Err(e);
            }
        }
        Ok(())
    }

    fn durability(&self) -> Durability {
        match self.config.fsync {
            Fsync::Always => Durability::Immediate,
            Fsync::Batch | Fsync::Off => Durability::None,
        }
    }

    /// Before ids past the reservation are used: reserve the next stretch, durably. Only in the
    /// modes that ack before fsync; with `always` every commit is durable anyway.
    fn reserve(&mut self, needed: u64) -> Result<(), LogError> {
        if self.config.fsync == Fsync::Always || needed <= self.reserved {
            return Ok(());
        }
        let reserved = needed + RESERVE;
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        txn.open_table(META).map_err(storage)?.insert("reserved", reserved).map_err(storage)?;
        txn.commit().map_err(storage)?;
        self.reserved = reserved;
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// An orderly shutdown: everything is durable, so no id needs skipping on the next open.
    fn mark_clean(&mut self) {
        let result = self.db.begin_write().map(|mut t| {
            let _ = t.set_durability(Durability::Immediate);
            if let Ok(mut meta) = t.open_table(META) {
                let _ = meta.insert("clean", 1);
            }
            t.commit()
        });
        if !matches!(result, Ok(Ok(()))) {
            tracing::error!("could not mark the log cleanly closed; the next open skips the reserved ids");
        }
    }

    /// One fsync'd empty commit makes every earlier `Durability::None` commit durable.
    fn sync(&mut self) {
        if !self.unsynced || self.config.fsync == Fsync::Off {
            return;
        }
        let t0 = Instant::now();
        let result = self.db.begin_write().map(|mut t| {
            let _ = t.set_durability(Durability::Immediate);
            t.commit()
        });
        self.commits.observe(t0.elapsed().as_secs_f64());
        match result {
            Ok(Ok(())) => {
                self.unsynced = false;
                self.last_sync = Instant::now();
            }
            Ok(Err(e)) => tracing::error!(error = %e, "fsync commit failed"),
            Err(e) => tracing::error!(error = %e, "fsync commit failed"),
        }
    }

    fn commit_group(&mut self, jobs: Vec<(Vec<Accepted>, Reply, Option<tracing::Span>)>) {
        let n: u64 = jobs.iter().map(|j| j.0.len() as u64).sum();
        // In each sampled caller's trace: the group its events were written and fsynced with,
        // then their hand-off to the subscribers' rings.
        let traced: Vec<tracing::Span> = jobs.iter().filter_map(|j| j.2.clone()).collect();
        let (batches, replies): (Vec<_>, Vec<_>) = jobs.into_iter().map(|(b, r, _)| (b, r)).unzip();
        let group = batches.len();
        let spans = |name: &'static str| -> Vec<tracing::Span> {
            traced
                .iter()
                .map(|p| tracing::info_span!(parent: p, "log", otel.name = name, batches = group, events = n))
                .collect()
        };
        let committing = spans("group_commit");
        let start_head = self.head.load(Ordering::Acquire);
        let result = self.reserve(start_head + n).and_then(|()| self.write_group(batches, start_head));
        drop(committing);
        match result {
            Ok((records, results, head)) => {
                if self.config.fsync != Fsync::Always && head != start_head {
                    self.unsynced = true;
                }
                self.head.store(head, Ordering::Release);
                // Hub first, then acks: a publisher that subscribes after its ack sees its own event live or in history.
                let fanning = spans("fan_out");
                self.feed.committed(&records);
                drop(fanning);
                for (reply, out) in replies.into_iter().zip(results) {
                    let _ = reply.send(out);
                }
            }
            Err(error) => {
                tracing::error!(%error, "append failed; nothing of this group was stored");
                // Counts were bumped as rows were written; the rollback undid the rows. Rare, so
                // recount from the store rather than copy the maps before every commit.
                match count_streams(&self.db).and_then(|counts| Ok((count_usage(&self.db, &counts)?, counts))) {
                    Ok((usage, counts)) => (self.counts, self.usage) = (counts, usage),
                    Err(e) => tracing::error!(error = %e, "recounting streams failed"),
                }
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Whether `batch` fits its tenant's quotas, counting only what it would add: new state
    /// keys and new keyed channels. A batch over a quota is refused whole; one that fits gets
    /// back the state keys it adds.
    fn admit(
        &self,
        batch: &[Accepted],
        state: &impl ReadableTable<&'static [u8], u64>,
        slots: &BTreeMap<Vec<u8>, u64>,
    ) -> Result<HashSet<Vec<u8>>, LogError> {
        let quotas = self.config.quotas;
        let mut added: HashMap<&str, Usage> = HashMap::new();
        let mut seen_keys = HashSet::new();
        let mut seen_jobs = HashSet::new();
        for acc in batch {
            let tenant = acc.tenant.as_str();
            if let Some(slot) = &acc.routing.state {
                let key = state_key(&acc.tenant, slot, &acc.event.key);
                if !slots.contains_key(&key)
                    && state.get(key.as_slice()).map_err(storage)?.is_none()
                    && seen_keys.insert(key)
                {
                    added.entry(tenant).or_default().keys += 1;
                }
            }
            for ch in acc.routing.keyed_channels() {
                let name = format!("{tenant}:{ch}");
                if !self.counts.contains_key(&name) && seen_jobs.insert(name) {
                    added.entry(tenant).or_default().jobs += 1;
                }
            }
        }
        for (tenant, add) in added {
            let held = self.usage.get(tenant).copied().unwrap_or_default();
            let over = |what: &str, held: u64, add: u64, max: u64, key: &str, hint: &str| {
                (add > 0 && held + add > max).then(|| LogError::Quota {
                    field: "key",
                    message: format!(
                        "tenant {tenant} holds {held} {what}, its quota is {max} (log.quotas.{key}): {hint}"
                    ),
                })
            };
            let keys = over(
                "state keys",
                held.keys,
                add.keys,
                quotas.max_keys_per_tenant,
                "max_keys_per_tenant",
                "reuse keys, or ask for a larger quota",
            );
            let jobs = over(
                "jobs with history",
                held.jobs,
                add.jobs,
                quotas.max_jobs_per_tenant,
                "max_jobs_per_tenant",
                "jobs free up as retention removes their history",
            );
            if let Some(e) = keys.or(jobs) {
                return Err(e);
            }
        }
        Ok(seen_keys)
    }

    /// One write transaction for a whole group; moves each event into its record (no copies).
    /// A batch refused by a quota gets its error; the others are stored.
    #[allow(clippy::type_complexity)]
    fn write_group(
        &mut self,
        batches: Vec<Vec<Accepted>>,
        mut head: u64,
    ) -> Result<(Vec<Arc<Record>>, Vec<Result<Vec<Appended>, LogError>>, u64), LogError> {
        let start_head = head;
        let mut records = Vec::with_capacity(batches.iter().map(Vec::len).sum());
        let mut results = Vec::with_capacity(batches.len());
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(self.durability()).map_err(storage)?;
        {
            let mut g = Group::open(&txn)?;
            for batch in batches {
                // The state keys this batch adds (already looked up once, for the quota).
                let mut new_keys = match self.admit(&batch, &g.state, &g.slots) {
                    Ok(keys) => keys,
                    Err(e) => {
                        results.push(Err(e));
                        continue;
                    }
                };
                let mut out = Vec::with_capacity(batch.len());
                for acc in batch {
                    if let Some(id) = g.stored_key(&acc)? {
                        out.push(Appended { id: EventId(id), duplicate: true });
                        continue;
                    }
                    head += 1;
                    self.store(&mut g, &acc, head, &mut new_keys)?;
                    let Accepted { tenant, routing, mut event, .. } = acc;
                    event.id = head;
                    records.push(Arc::new(Record::new(event, tenant, routing)));
                    out.push(Appended { id: EventId(head), duplicate: false });
                }
                results.push(Ok(out));
            }
            g.finish(start_head, head)?;
        }
        let t0 = Instant::now();
        txn.commit().map_err(storage)?;
        self.commits.observe(t0.elapsed().as_secs_f64());
        Ok((records, results, head))
    }

    /// Writes one new event as `id`: the event, its streams, its key, its state slot.
    fn store(
        &mut self,
        g: &mut Group<'_>,
        acc: &Accepted,
        id: u64,
        new_keys: &mut HashSet<Vec<u8>>,
    ) -> Result<(), LogError> {
        // Field 1 (id, varint) prefixed to the body encoded without it.
        g.buf.clear();
        g.buf.push(0x08);
        prost::encoding::encode_varint(id, &mut g.buf);
        g.buf.extend_from_slice(&acc.body);
        g.events.insert(id, g.buf.as_slice()).map_err(storage)?;
        if let Some(slot) = &acc.routing.state {
            let key = state_key(&acc.tenant, slot, &acc.event.key);
            if new_keys.remove(&key) {
                self.usage.entry(acc.tenant.to_string()).or_default().keys += 1;
            }
            g.slots.insert(key, id);
        }
        let ms = g.ms;
        g.streams.insert((acc.tenant.as_str(), id), ms).map_err(storage)?;
        self.bump(acc.tenant.as_str());
        for ch in &acc.routing.channels {
            g.name.clear();
            g.name.push_str(acc.tenant.as_str());
            g.name.push(':');
            g.name.push_str(ch.as_str());
            g.streams.insert((g.name.as_str(), id), ms).map_err(storage)?;
            self.bump(&g.name);
        }
        if let Some(key) = &acc.idempotency_key {
            g.dedupe.insert((acc.tenant.as_str(), key.as_str()), (id, ms)).map_err(storage)?;
            g.dedupe_times.insert((ms, id), (acc.tenant.as_str(), key.as_str())).map_err(storage)?;
            g.fresh.insert((acc.tenant.clone(), key.clone()), id);
        }
        Ok(())
    }

    /// One more entry in stream `name` (a new keyed channel counts against its tenant's jobs).
    fn bump(&mut self, name: &str) {
        match self.counts.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                self.counts.insert(name.to_owned(), 1);
                if let Some(tenant) = keyed_owner(name) {
                    self.usage.entry(tenant.to_owned()).or_default().jobs += 1;
                }
            }
        }
    }

    /// Stream `name` holds no entries any more.
    fn forget(&mut self, name: &str) {
        if self.counts.remove(name).is_some()
            && let Some(u) = keyed_owner(name).and_then(|t| self.usage.get_mut(t))
        {
            u.jobs = u.jobs.saturating_sub(1);
        }
    }

    /// One slice of the round in progress: at most `trim_budget` rows visited or removed, in
    /// one transaction. Clears `round` when the round is done.
    fn trim_slice(&mut self) -> Result<(), LogError> {
        let Some(mut round) = self.round.take() else { return Ok(()) };
        let mut budget = self.config.trim_budget.max(1);
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(self.durability()).map_err(storage)?;
        let mut changed = false;
        let mut done = false;
        while budget > 0 && !done {
            changed |= match &mut round.phase {
                Phase::Streams { after } => {
                    let next = match after {
                        Some(a) => self.counts.range::<str, _>((Excluded(a.as_str()), Unbounded)).next(),
                        None => self.counts.iter().next(),
                    };
                    match next.map(|(name, count)| (name.clone(), *count)) {
                        Some((name, count)) => {
                            budget -= 1;
                            let (trimmed, finished) =
                                self.trim_stream(&txn, &name, count, &mut round.first_kept, round.now_ms, &mut budget)?;
                            if finished {
                                *after = Some(name);
                            }
                            trimmed
                        }
                        None => {
                            round.phase = Phase::Events;
                            false
                        }
                    }
                }
                Phase::Events => {
                    let (trimmed, finished) = self.trim_events(&txn, round.first_kept, round.now_ms, &mut budget)?;
                    if finished {
                        round.phase = Phase::Dedupe;
                    }
                    trimmed
                }
                Phase::Dedupe => {
                    let cutoff = round.now_ms.saturating_sub(self.config.retention.dedupe_window().as_millis() as u64);
                    let (trimmed, finished) = trim_dedupe(&txn, cutoff, &mut budget)?;
                    done = finished;
                    trimmed
                }
            };
        }
        if changed {
            txn.commit().map_err(storage)?;
        } else {
            txn.abort().map_err(storage)?;
        }
        if !done {
            self.round = Some(round);
        }
        Ok(())
    }

    /// Drops the entries of stream `name` past its retention, oldest first, within `budget`.
    /// Returns (removed any, reached the first kept entry or the end).
    fn trim_stream(
        &mut self,
        txn: &redb::WriteTransaction,
        name: &str,
        count: u64,
        first_kept: &mut u64,
        now_ms: u64,
        budget: &mut usize,
    ) -> Result<(bool, bool), LogError> {
        let limits = limits_of(&self.config.retention, name);
        let over = count.saturating_sub(limits.max_events);
        let cutoff = now_ms.saturating_sub(limits.max_age_secs.saturating_mul(1000));
        let mut streams = txn.open_table(STREAMS).map_err(storage)?;
        let mut drop_through: Option<u64> = None;
        let mut dropped = 0u64;
        let mut finished = true;
        for row in streams.range((name, 0)..=(name, u64::MAX)).map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            if *budget == 0 {
                finished = false;
                break;
            }
            if dropped < over || v.value() < cutoff {
                drop_through = Some(k.value().1);
                dropped += 1;
                *budget -= 1;
            } else {
                *first_kept = (*first_kept).min(k.value().1);
                break;
            }
        }
        let Some(through) = drop_through else { return Ok((false, finished)) };
        streams.retain_in((name, 0)..=(name, through), |_, _| false).map_err(storage)?;
        txn.open_table(META).map_err(storage)?.insert(format!("trim:{name}").as_str(), through).map_err(storage)?;
        if count == dropped {
            self.forget(name);
        } else {
            self.counts.insert(name.to_owned(), count - dropped);
        }
        Ok((true, finished))
    }

    /// Drops events below `keep_from` (no stream references them), within `budget`. An event
    /// that is its slot's current state stays, unless it belongs to a keyed channel
    /// (`jobs/<id>`): a job's state lives as long as its history. Then the `times` rows
    /// before the first kept event. Returns (removed any, finished).
    fn trim_events(
        &mut self,
        txn: &redb::WriteTransaction,
        keep_from: u64,
        now_ms: u64,
        budget: &mut usize,
    ) -> Result<(bool, bool), LogError> {
        let mut meta = txn.open_table(META).map_err(storage)?;
        let trimmed = meta.get("trim:*").map_err(storage)?.map_or(0, |v| v.value());
        let mut events = txn.open_table(EVENTS).map_err(storage)?;
        let mut state = txn.open_table(STATE).map_err(storage)?;
        let mut through = trimmed;
        let mut gone = Vec::new();
        let mut expired_slots = Vec::new();
        for row in events.range(trimmed.saturating_add(1)..keep_from.max(trimmed.saturating_add(1))).map_err(storage)? {
            if *budget == 0 {
                break;
            }
            *budget -= 1;
            let (k, v) = row.map_err(storage)?;
            let id = k.value();
            through = id;
            // Undecodable bytes can pin nothing.
            if let Ok(r) = Record::decode(v.value())
                && let Some(slot) = &r.routing.state
            {
                let key = state_key(&r.tenant, slot, &r.event.key);
                if state.get(key.as_slice()).map_err(storage)?.map(|v| v.value()) == Some(id) {
                    if !r.routing.channels.iter().any(|c| c.as_str().contains('/')) {
                        continue; // pinned
                    }
                    expired_slots.push((r.tenant.to_string(), key));
                }
            }
            gone.push(id);
        }
        let finished = *budget > 0;
        let through = if finished { keep_from.saturating_sub(1).max(trimmed) } else { through };
        for id in &gone {
            events.remove(id).map_err(storage)?;
        }
        for (tenant, key) in &expired_slots {
            state.remove(key.as_slice()).map_err(storage)?;
            if let Some(u) = self.usage.get_mut(tenant) {
                u.keys = u.keys.saturating_sub(1);
            }
        }
        let mut changed = !gone.is_empty();
        if through > trimmed {
            meta.insert("trim:*", through).map_err(storage)?;
            changed = true;
        }
        if !finished {
            return Ok((changed, false));
        }
        // Time rows before the first kept event point at nothing.
        let kept_ms = match events.range(keep_from..).map_err(storage)?.next().transpose().map_err(storage)? {
            Some((_, v)) => published_ms(v.value())?,
            None => now_ms,
        };
        let mut times = txn.open_table(TIMES).map_err(storage)?;
        let old: Vec<u64> = times
            .range(..kept_ms)
            .map_err(storage)?
            .take(*budget)
            .map(|r| r.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()
            .map_err(storage)?;
        *budget -= old.len();
        for ms in &old {
            times.remove(ms).map_err(storage)?;
        }
        Ok((changed || !old.is_empty(), *budget > 0))
    }
}

/// Forgets idempotency keys older than `cutoff`, oldest first, within `budget`, through the
/// time index (the work is the keys expired, never a scan). Returns (removed any, finished).
fn trim_dedupe(txn: &redb::WriteTransaction, cutoff: u64, budget: &mut usize) -> Result<(bool, bool), LogError> {
    let mut dedupe = txn.open_table(DEDUPE).map_err(storage)?;
    let mut times = txn.open_table(DEDUPE_TIMES).map_err(storage)?;
    let mut old = Vec::new();
    for row in times.range(..(cutoff, 0)).map_err(storage)? {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        let (k, v) = row.map_err(storage)?;
        let (tenant, key) = v.value();
        old.push((k.value(), tenant.to_owned(), key.to_owned()));
    }
    for ((ms, id), tenant, key) in &old {
        times.remove((*ms, *id)).map_err(storage)?;
        let current = dedupe.get((tenant.as_str(), key.as_str())).map_err(storage)?.map(|v| v.value().0);
        if current == Some(*id) {
            dedupe.remove((tenant.as_str(), key.as_str())).map_err(storage)?;
        }
    }
    Ok((!old.is_empty(), *budget > 0))
}

/// When a stored event was published, Unix ms.
fn published_ms(bytes: &[u8]) -> Result<u64, LogError> {
    Ok(Record::decode(bytes)?.published_ms())
}

/// A slot key as a page cursor: lowercase hex (slot keys hold `\0` and any UTF-8).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        auth::Principal,
        names::Channel,
        proto::v1::{Alert, Event, HealthCheck, JobProgress, event::Payload},
        validate::{Policy, accept},
    };

    fn alert() -> Accepted {
        let e =
            Event { tenant: "acme".into(), payload: Some(Payload::AlertInfo(Alert::default())), ..Default::default() };
        accept(&Principal::system(), e, &Policy::default()).unwrap()
    }

    #[tokio::test]
    async fn retention_by_age_and_count_keeps_ids_monotonic() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = EmbeddedConfig::default();
        config.retention.default = super::super::Limits { max_events: 1_000, max_age_secs: 60 };
        config.retention.channels.insert("alerts".into(), super::super::Limits { max_events: 3, max_age_secs: 60 });
        let log = EmbeddedLog::open(dir.path(), config.clone(), Feed::none()).unwrap();
        log.append((0..10).map(|_| alert()).collect()).await.unwrap();
        let alerts = Stream::Channel(Tenant::new("acme").unwrap(), Channel::new("alerts").unwrap());
        let tenant = Stream::Tenant(Tenant::new("acme").unwrap());
        // Count: the channel keeps its last 3; the tenant stream (default limits) keeps all.
        log.apply_retention(now_ms()).await.unwrap();
        let b = log.bounds(alerts.clone()).await.unwrap();
        assert_eq!((b.oldest.0, b.trimmed_through.0, b.head.0), (8, 7, 10));
        assert_eq!(log.read(alerts.clone(), EventId(0), 100).await.unwrap().len(), 3);
        assert_eq!(log.read(tenant.clone(), EventId(0), 100).await.unwrap().len(), 10);
        // Age: two minutes later everything is older than 60 s.
        log.apply_retention(now_ms() + 120_000).await.unwrap();
        assert!(log.read(tenant.clone(), EventId(0), 100).await.unwrap().is_empty());
        assert_eq!(log.stats().stored, 0, "events no stream references are dropped");
        let b = log.bounds(tenant).await.unwrap();
        assert_eq!(b.trimmed_through.0, 10);
        // Ids keep growing even though the log is empty, also across a reopen.
        drop(log);
        let log = EmbeddedLog::open(dir.path(), config, Feed::none()).unwrap();
        let a = log.append(vec![alert()]).await.unwrap();
        assert_eq!(a[0].id.0, 11);
    }

    #[tokio::test]
    async fn idempotency_keys_dedupe_within_a_group_and_across_groups() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path(), EmbeddedConfig::default(), Feed::none()).unwrap();
        let keyed = || {
            let mut a = alert();
            a.idempotency_key = Some("delivery-1".into());
            a
        };
        let r = log.append(vec![keyed(), keyed(), alert()]).await.unwrap();
        assert_eq!((r[0].id.0, r[0].duplicate), (1, false));
        assert_eq!((r[1].id.0, r[1].duplicate), (1, true));
        assert_eq!((r[2].id.0, r[2].duplicate), (2, false));
        let r = log.append(vec![keyed()]).await.unwrap();
        assert_eq!((r[0].id.0, r[0].duplicate), (1, true));
        assert_eq!(log.stats().stored, 2);
    }

    fn keyed(payload: Payload, key: &str) -> Accepted {
        let e = Event { tenant: "acme".into(), key: key.into(), payload: Some(payload), ..Default::default() };
        accept(&Principal::system(), e, &Policy::default()).unwrap()
    }

    /// Rows of every table retention removes from.
    fn rows(db: &Database) -> u64 {
        let txn = db.begin_read().unwrap();
        let n = |t: TableDefinition<'static, u64, &'static [u8]>| txn.open_table(t).unwrap().len().unwrap();
        n(EVENTS)
            + txn.open_table(STREAMS).unwrap().len().unwrap()
            + txn.open_table(DEDUPE).unwrap().len().unwrap()
            + txn.open_table(DEDUPE_TIMES).unwrap().len().unwrap()
            + txn.open_table(TIMES).unwrap().len().unwrap()
    }

    #[test]
    fn retention_runs_in_slices_that_each_do_a_bounded_amount() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = EmbeddedConfig::default();
        config.retention.default = super::super::Limits { max_events: 10, max_age_secs: 3600 };
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let log = EmbeddedLog::open(dir.path(), config.clone(), Feed::none()).unwrap();
        for i in 0..20 {
            let batch = (0..100)
                .map(|j| {
                    let mut a = alert();
                    a.idempotency_key = Some(format!("k-{i}-{j}"));
                    a
                })
                .collect();
            rt.block_on(log.append(batch)).unwrap();
        }
        drop(log);
        config.trim_budget = 100;
        let db = Arc::new(Database::create(dir.path().join("events.redb")).unwrap());
        let mut w = Writer::new(
            db.clone(),
            config,
            Feed::none(),
            Arc::new(AtomicU64::new(2_000)),
            0,
            Arc::new(Histogram::new(COMMIT_BUCKETS)),
        )
        .unwrap();
        // Count limits now; then, two days later, age and the idempotency window.
        for now in [now_ms(), now_ms() + 2 * 86_400_000] {
            w.round = Some(w.new_round(now));
            let mut slices = 0;
            while w.round.is_some() {
                let before = rows(&db);
                w.trim_slice().unwrap();
                let removed = before - rows(&db);
                // A budget unit removes at most two rows (an index row and what it points at).
                assert!(removed <= 200, "slice {slices} removed {removed} rows");
                slices += 1;
                assert!(slices < 1_000, "the round never finishes");
            }
            assert!(slices >= 10, "{slices} slices for thousands of rows");
        }
        let txn = db.begin_read().unwrap();
        assert_eq!(txn.open_table(EVENTS).unwrap().len().unwrap(), 0);
        assert_eq!(txn.open_table(DEDUPE).unwrap().len().unwrap(), 0, "expired keys are forgotten");
        assert_eq!(txn.open_table(DEDUPE_TIMES).unwrap().len().unwrap(), 0);
        assert_eq!(txn.open_table(META).unwrap().get("trim:*").unwrap().unwrap().value(), 2_000);
    }

    #[tokio::test]
    async fn quotas_refuse_new_keys_and_jobs_whole_batches_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = EmbeddedConfig {
            quotas: Quotas { max_keys_per_tenant: 3, max_jobs_per_tenant: 2 },
            ..EmbeddedConfig::default()
        };
        config.retention.channels.insert("jobs".into(), super::super::Limits { max_events: 1, max_age_secs: 60 });
        let log = EmbeddedLog::open(dir.path(), config.clone(), Feed::none()).unwrap();
        let health = |k: &str| keyed(Payload::SystemHealthCheck(HealthCheck::default()), k);
        let job = |k: &str| keyed(Payload::ImportJobProgress(JobProgress::default()), k);
        log.append(vec![health("a"), job("j1")]).await.unwrap();
        // A job over the jobs quota refuses its whole batch, with the field to fix.
        let err = log.append(vec![alert(), job("j2"), job("j3")]).await.unwrap_err();
        assert!(matches!(err, LogError::Quota { field: "key", .. }), "{err:?}");
        assert_eq!(log.stats().stored, 2, "nothing of a refused batch is stored");
        log.append(vec![job("j2")]).await.unwrap();
        // Three keys held (a, j1, j2): a new one is refused, replacing one is not.
        let err = log.append(vec![health("b")]).await.unwrap_err();
        assert!(err.to_string().contains("max_keys_per_tenant"), "{err}");
        log.append(vec![health("a"), job("j1")]).await.unwrap();
        // Usage is rebuilt on open.
        drop(log);
        let log = EmbeddedLog::open(dir.path(), config, Feed::none()).unwrap();
        assert!(log.append(vec![health("b")]).await.is_err());
        // A job's state lives as long as its history (here the tenant stream's 7 days): then its key and channel free up.
        log.apply_retention(now_ms() + 8 * 86_400_000).await.unwrap();
        let state = log.state(Stream::Tenant(Tenant::new("acme").unwrap()), EventId(0)).await.unwrap();
        let kinds: Vec<_> = state.records.iter().map(|r| r.event.key.as_str()).collect();
        assert_eq!(kinds, vec!["a"], "the snapshot stays; the jobs' state went with their history");
        log.append(vec![job("j3"), health("b")]).await.unwrap();
        assert!(log.append(vec![job("j4")]).await.is_err(), "back at three keys");
    }
}
