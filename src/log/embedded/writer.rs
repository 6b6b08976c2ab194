//! The writer thread, the only one that writes to the database: group commit (everything
//! queued goes into one transaction and one fsync), id reservation, and the hand-off of
//! committed records to the feed in id order.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use redb::{Database, Durability, ReadableTable};
use tokio::sync::oneshot;

use crate::log::{Appended, Feed, Fsync, LogError, Record, now_ms};
use crate::{
    metrics::Histogram,
    names::{EventId, Tenant},
    validate::Accepted,
};

use super::*;

/// Most events one write transaction takes before acking.
pub(super) const MAX_GROUP: usize = 16_384;

/// Ids reserved per durable reservation when acks may precede fsync (`batch`, `off`): one
/// fsync'd write per this many ids, so a crash can never hand an id out twice.
pub(super) const RESERVE: u64 = 100_000;

pub(super) type Reply = oneshot::Sender<Result<Vec<Appended>, LogError>>;

/// Work for the writer thread: the only thread that writes to the database.
pub(super) enum Job {
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

/// One group commit's open tables and what the group has written so far.
pub(super) struct Group<'t> {
    pub(super) events: redb::Table<'t, u64, &'static [u8]>,
    pub(super) streams: redb::Table<'t, (&'static str, u64), u64>,
    pub(super) dedupe: redb::Table<'t, (&'static str, &'static str), (u64, u64)>,
    pub(super) dedupe_times: redb::Table<'t, (u64, u64), (&'static str, &'static str)>,
    pub(super) meta: redb::Table<'t, &'static str, u64>,
    pub(super) state: redb::Table<'t, &'static [u8], u64>,
    pub(super) times: redb::Table<'t, u64, u64>,
    /// The group's time, stamped on every entry it writes.
    pub(super) ms: u64,
    /// Keys first seen in this same group, so a batch with repeats stores one.
    pub(super) fresh: HashMap<(Tenant, String), u64>,
    /// The group's last event per state slot, written once and in key order at the end:
    /// fewer B-tree updates, and neighbouring pages touched together.
    pub(super) slots: BTreeMap<Vec<u8>, u64>,
    pub(super) buf: Vec<u8>,
    pub(super) name: String,
}

impl<'t> Group<'t> {
    pub(super) fn open(txn: &'t redb::WriteTransaction) -> Result<Self, LogError> {
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
    pub(super) fn stored_key(&self, acc: &Accepted) -> Result<Option<u64>, LogError> {
        let Some(key) = &acc.idempotency_key else { return Ok(None) };
        if let Some(id) = self.fresh.get(&(acc.tenant.clone(), key.clone())) {
            return Ok(Some(*id));
        }
        Ok(self.dedupe.get((acc.tenant.as_str(), key.as_str())).map_err(storage)?.map(|v| v.value().0))
    }

    /// The state slots (same transaction as the events: state and history never disagree),
    /// the head, and the first id of this millisecond (an earlier group in the same ms keeps
    /// its row).
    pub(super) fn finish(&mut self, start_head: u64, head: u64) -> Result<(), LogError> {
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

pub(super) struct Writer {
    pub(super) db: Arc<Database>,
    pub(super) config: EmbeddedConfig,
    pub(super) feed: Feed,
    pub(super) head: Arc<AtomicU64>,
    /// Ids up to here are durably reserved (modes that ack before fsync).
    pub(super) reserved: u64,
    /// Entries per stream name, in name order (retention walks them with a cursor).
    pub(super) counts: BTreeMap<String, u64>,
    /// Per tenant: state keys, and keyed channels (`jobs/<id>`) holding history.
    pub(super) usage: HashMap<String, Usage>,
    /// The retention round in progress, if any: it runs in slices between groups.
    pub(super) round: Option<Round>,
    pub(super) last_trim: Instant,
    pub(super) last_sync: Instant,
    pub(super) commits: Arc<Histogram>,
    pub(super) unsynced: bool,
}

impl Writer {
    pub(super) fn new(
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

    pub(super) fn run(mut self, rx: mpsc::Receiver<Job>) {
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

    pub(super) fn durability(&self) -> Durability {
        match self.config.fsync {
            Fsync::Always => Durability::Immediate,
            Fsync::Batch | Fsync::Off => Durability::None,
        }
    }

    /// Before ids past the reservation are used: reserve the next stretch, durably. Only in the
    /// modes that ack before fsync; with `always` every commit is durable anyway.
    pub(super) fn reserve(&mut self, needed: u64) -> Result<(), LogError> {
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
    pub(super) fn mark_clean(&mut self) {
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
    pub(super) fn sync(&mut self) {
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

    pub(super) fn commit_group(&mut self, jobs: Vec<(Vec<Accepted>, Reply, Option<tracing::Span>)>) {
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

    /// One write transaction for a whole group; moves each event into its record (no copies).
    /// A batch refused by a quota gets its error; the others are stored.
    #[allow(clippy::type_complexity)]
    pub(super) fn write_group(
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
    pub(super) fn store(
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
    pub(super) fn bump(&mut self, name: &str) {
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
    pub(super) fn forget(&mut self, name: &str) {
        if self.counts.remove(name).is_some()
            && let Some(u) = keyed_owner(name).and_then(|t| self.usage.get_mut(t))
        {
            u.jobs = u.jobs.saturating_sub(1);
        }
    }
}
