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
//!
//! Files: this one opens the log and answers the [`Log`] trait; `tables` defines the tables and
//! what is rebuilt from them at open; `writer` is the writer thread and its group commit;
//! `quota` the per-tenant admission check; `retention` the sliced trimming; `read` every
//! read, on the caller's blocking thread.

mod quota;
mod read;
mod retention;
mod tables;
mod writer;

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use futures::future::BoxFuture;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use tokio::sync::oneshot;

use super::{
    Appended, Bounds, Feed, Fsync, Log, LogError, LogStats, Quotas, Record, Retention, StatePage, StateView, Stream,
};
use crate::{
    metrics::{COMMIT_BUCKETS, Histogram},
    names::EventId,
    validate::Accepted,
};

use self::{quota::*, read::*, retention::*, tables::*, writer::*};

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

pub(super) fn storage(e: impl std::fmt::Display) -> LogError {
    LogError::Storage(e.to_string())
}

pub(super) fn stream_name(stream: &Stream) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use redb::TableDefinition;

    use crate::{
        auth::Principal,
        log::now_ms,
        names::{Channel, Tenant},
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
