//! One endpoint's deliverer: a durable subscriber of the bus. It follows the tenant's history
//! from its cursor (the log, then what the dispatch hands it live, the log again when it falls
//! behind), sends what the endpoint selects, and records what came of it before it counts as
//! done.
//!
//! Invariants:
//! - every selected event ≤ `Progress.cursor` was delivered, dead-lettered, or is owed (a key
//!   `q.<endpoint>.<event>`), and that is committed before the cursor passes it, so a crash
//!   at any point loses nothing; what was sent but not yet recorded is sent again, with the
//!   same `webhook-id`;
//! - an ordered endpoint has at most one attempt in flight, and owes at most the event at its
//!   head: nothing after it is sent until that one is delivered or dead-lettered.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use switchyard::{
    log::{Log, LogError, Record, Stream, kv::Writes},
    names::{EventId, Tenant},
    subscription,
};
use tokio::{sync::watch, time::Instant};
use tracing::Instrument;

use crate::{
    Shared,
    dispatch::Registration,
    endpoint::{DeadLetter, Endpoint, EndpointId, Owed, Progress, Target, keys},
    filter::Selector,
    render::{self, Message},
    signature::{self, SigningSecret},
    transport::{Outcome, Request},
};

/// What the console and `/metrics` read of a running deliverer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Status {
    pub progress: Progress,
    pub owed: usize,
    pub in_flight: usize,
}

/// One finished attempt: for which events (a group for people), which try it was, whether
/// they came from the owed queue.
struct Done {
    ids: Vec<EventId>,
    attempt: u32,
    owed: bool,
    outcome: Outcome,
}

pub(crate) struct Worker {
    shared: Arc<Shared>,
    ep: Endpoint,
    tenant: Tenant,
    target: Target,
    selector: Selector,
    secrets: Vec<SigningSecret>,
    progress: Progress,
    owed: BTreeMap<EventId, Owed>,
    /// Records of owed events already read, so a retry does not read the log again.
    held: BTreeMap<EventId, Arc<Record>>,
    /// Events from the stream not yet finished: the cursor stays below the lowest.
    pending: BTreeSet<EventId>,
    /// Highest id taken from the stream.
    high: EventId,
    /// Finished events above the lowest pending one (the cursor cannot pass them yet).
    done_above: BTreeSet<EventId>,
    /// Owed events being attempted now.
    trying: BTreeSet<EventId>,
    /// Alerts collecting for one message (people kinds), and when it goes.
    group: Vec<Arc<Record>>,
    group_due: Option<Instant>,
    ready_at: Instant,
    clock: crate::clock::Clock,
    status: Arc<Mutex<Status>>,
    /// Events being sent as "resolved" messages, with their titles.
    resolutions: BTreeMap<EventId, String>,
    /// Where progress goes to be recorded (see [`committer`]); `None` once the worker stops.
    committer: Option<tokio::sync::mpsc::UnboundedSender<Writes>>,
    committed: Option<tokio::task::JoinHandle<()>>,
}

type Attempt = BoxFuture<'static, Done>;

/// One attempt's span, in the trace of the event's publisher (the first event's, for a group):
/// sampled events only, like every delivery span.
fn attempt_span(first: &Record, endpoint: &EndpointId, attempt: u32, events: usize) -> tracing::Span {
    let event = &first.event;
    let span = tracing::info_span!(
        "outbound",
        otel.name = "outbound.attempt",
        event.id = event.id,
        endpoint = %endpoint,
        attempt,
        events,
        outcome = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    switchyard::trace::follow(&span, event);
    span
}

impl Worker {
    pub(crate) async fn load(shared: Arc<Shared>, ep: Endpoint, status: Arc<Mutex<Status>>) -> Result<Self, String> {
        let tenant = Tenant::new(&ep.tenant).map_err(|e| e.to_string())?;
        let target = ep.spec.target().map_err(|e| e.to_string())?;
        let selector =
            Selector::new(&ep.spec.types, &ep.spec.channels, ep.spec.filter.as_deref()).map_err(|e| e.to_string())?;
        let selector = if target.for_people() { selector.with_resolutions() } else { selector };
        let now = shared.clock_ms();
        let secrets = ep
            .secrets
            .iter()
            .filter(|s| s.expires_ms.is_none_or(|e| e > now))
            .map(|s| shared.sealer.open(&s.sealed).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let kv = &shared.kv;
        let progress: Progress = match kv.get(&keys::progress(&ep.id)).await.map_err(|e| e.to_string())? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string())?,
            None => Progress::default(),
        };
        let mut owed = BTreeMap::new();
        for (k, v) in kv.scan(&keys::owed_prefix(&ep.id)).await.map_err(|e| e.to_string())? {
            if let (Some(id), Ok(o)) = (keys::event_of(&k), serde_json::from_slice::<Owed>(&v)) {
                owed.insert(id, o);
            }
        }
        let high = progress.cursor;
        let done_above = progress.done_above.iter().copied().collect();
        let shared_clock = shared.clock;
        Ok(Self {
            shared,
            ep,
            tenant,
            target,
            selector,
            secrets,
            progress,
            owed,
            held: BTreeMap::new(),
            pending: BTreeSet::new(),
            high,
            done_above,
            trying: BTreeSet::new(),
            group: Vec::new(),
            group_due: None,
            ready_at: Instant::now(),
            clock: shared_clock,
            status,
            resolutions: BTreeMap::new(),
            committer: None,
            committed: None,
        })
    }

    fn window(&self) -> usize {
        if self.ep.spec.ordered { 1 } else { self.shared.config.max_in_flight.max(1) }
    }

    /// Delivers until `stop`, the endpoint is disabled, or its source ends.
    pub(crate) async fn run(mut self, stop: watch::Receiver<bool>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.committer = Some(tx);
        self.committed = Some(tokio::spawn(committer(self.shared.clone(), self.ep.id.to_string(), rx)));
        self.deliver(stop).await;
        // What was recorded so far is on disk before the next deliverer for this endpoint loads it.
        self.committer = None;
        if let Some(c) = self.committed.take() {
            let _ = c.await;
        }
        self.shared.wake.notify_one();
    }

    async fn deliver(&mut self, mut stop: watch::Receiver<bool>) {
        let mut source = Source::new(self);
        let mut attempts: FuturesUnordered<Attempt> = FuturesUnordered::new();
        loop {
            self.publish_status(attempts.len());
            let room = attempts.len() < self.window() && Instant::now() >= self.ready_at;
            let take = room && self.owed.len() < self.shared.config.max_owed && !self.blocked();
            let due = self.next_due(room);
            tokio::select! {
                _ = stop.changed() => return,
                Some(done) = attempts.next(), if !attempts.is_empty() => {
                    let mut finished = vec![done];
                    while let Some(Some(more)) = attempts.next().now_or_never() {
                        finished.push(more);
                    }
                    if !self.finish(finished).await {
                        return;
                    }
                }
                next = source.next(), if take => match next {
                    Ok(Next::Record(r)) => {
                        if let Some(a) = self.take(r) {
                            attempts.push(a);
                        }
                    }
                    Ok(Next::Lost(n)) => {
                        self.progress.lost_to_retention += n;
                        tracing::warn!(endpoint = %self.ep.id, lost = n, "events removed by retention before delivery");
                    }
                    Ok(Next::End) => return,
                    Err(error) => {
                        tracing::warn!(endpoint = %self.ep.id, %error, "outbound cannot read the log; it restarts");
                        return;
                    }
                },
                _ = sleep_until(due) => {
                    if let Some(a) = self.dispatch_due().await {
                        attempts.push(a);
                    }
                }
                _ = sleep_until(Some(self.ready_at)), if !room && attempts.len() < self.window() => {}
            }
        }
    }

    /// Ordered endpoints hold the stream while they owe anything (their head).
    fn blocked(&self) -> bool {
        self.ep.spec.ordered && !self.owed.is_empty()
    }

    /// The owed event to try next: an ordered endpoint's head, else the earliest due.
    fn next_owed(&self) -> Option<(EventId, &Owed)> {
        let free = |(id, _): &(&EventId, &Owed)| !self.trying.contains(id);
        match self.ep.spec.ordered {
            true => self.owed.iter().next().filter(free),
            false => self.owed.iter().filter(free).min_by_key(|(_, o)| o.next_ms),
        }
        .map(|(id, o)| (*id, o))
    }

    /// When something owed or a group is next due (only when there is room to send it).
    fn next_due(&self, room: bool) -> Option<Instant> {
        if !room {
            return None;
        }
        let owed = self.next_owed().map(|(_, o)| self.clock.instant(o.next_ms));
        [owed, self.group_due].into_iter().flatten().min()
    }

    fn take(&mut self, r: Arc<Record>) -> Option<Attempt> {
        if r.id <= self.high {
            return None;
        }
        self.high = r.id;
        if self.done_above.contains(&r.id) {
            return None;
        }
        if !self.selector.resolutions(r.type_name()).is_empty() {
            if let Some(resolved) = self.resolve(&r) {
                return Some(resolved);
            }
            if !self.selector.chosen(&r) {
                return None;
            }
        }
        if self.target.for_people() && self.selector.clears(r.type_name()) {
            let ty = r.type_name().to_owned();
            if !self.progress.open_alerts.contains(&ty) {
                self.progress.open_alerts.push(ty);
            }
        }
        self.pending.insert(r.id);
        if self.target.for_people() {
            if self.group.first().is_some_and(|g| g.type_name() != r.type_name()) {
                let flushed = self.flush_group();
                self.group.push(r);
                self.group_due = Some(Instant::now() + self.shared.config.group_window());
                return flushed;
            }
            self.group.push(r);
            self.group_due.get_or_insert_with(|| Instant::now() + self.shared.config.group_window());
            return (self.group.len() >= crate::MAX_GROUP).then(|| self.flush_group()).flatten();
        }
        Some(self.attempt(vec![r], 1, false))
    }

    /// A "resolved" message when `r` clears alerts still open here, else nothing.
    fn resolve(&mut self, r: &Arc<Record>) -> Option<Attempt> {
        let data = render::data(r);
        let mut title = None;
        for pair in self.selector.resolutions(r.type_name()) {
            let open = self.progress.open_alerts.iter().position(|a| *a == pair.alert);
            if let (true, Some(i)) = (pair.cleared(&data), open) {
                self.progress.open_alerts.remove(i);
                title.get_or_insert_with(|| pair.title.clone());
            }
        }
        self.resolutions.insert(r.id, title?);
        self.pending.insert(r.id);
        Some(self.attempt(vec![r.clone()], 1, false))
    }

    fn flush_group(&mut self) -> Option<Attempt> {
        self.group_due = None;
        let group = std::mem::take(&mut self.group);
        (!group.is_empty()).then(|| self.attempt(group, 1, false))
    }

    /// Sends what is due: the alert group, or the earliest owed event.
    async fn dispatch_due(&mut self) -> Option<Attempt> {
        if self.group_due.is_some_and(|d| d <= Instant::now()) {
            return self.flush_group();
        }
        let (id, owed) = self.next_owed()?;
        if owed.next_ms > self.clock.now_ms() {
            return None;
        }
        let attempt = owed.attempts + 1;
        let first = self.owed_record(id).await?;
        let mut records = vec![first];
        if self.target.for_people() && !self.resolutions.contains_key(&id) {
            // A group that failed is retried as one message, not one per alert.
            records.extend(self.due_with(&records[0], attempt));
        }
        for r in &records {
            self.trying.insert(r.id);
        }
        Some(self.attempt(records, attempt, true))
    }

    /// Held alerts of `first`'s type due with it on the same attempt: the rest of its failed
    /// group (still held since that attempt; nothing is read again to find them).
    fn due_with(&self, first: &Arc<Record>, attempt: u32) -> Vec<Arc<Record>> {
        let now = self.clock.now_ms();
        let joins = |(other, o): &(&EventId, &Owed)| {
            **other != first.id
                && o.attempts + 1 == attempt
                && o.next_ms <= now
                && !self.trying.contains(other)
                && !self.resolutions.contains_key(other)
        };
        let held = |(other, _): (&EventId, &Owed)| self.held.get(other).filter(|r| r.type_name() == first.type_name());
        self.owed.iter().filter(joins).filter_map(held).take(crate::MAX_GROUP - 1).cloned().collect()
    }

    /// An owed event's record, held or read again; `None` when retention removed it first.
    async fn owed_record(&mut self, id: EventId) -> Option<Arc<Record>> {
        if let Some(r) = self.held.get(&id) {
            return Some(r.clone());
        }
        let found = self.read(id).await;
        if found.is_none() {
            // Retention removed it before it could be delivered again: say so, owe it no more.
            self.progress.lost_to_retention += 1;
            self.owed.remove(&id);
            self.commit(vec![(keys::owed(&self.ep.id, id), None)]);
        }
        found
    }

    async fn read(&self, id: EventId) -> Option<Arc<Record>> {
        let log = self.shared.bus.log();
        let found = log.read(Stream::Tenant(self.tenant.clone()), EventId(id.0.saturating_sub(1)), 1).await.ok()?;
        found.into_iter().next().filter(|r| r.id == id)
    }

    /// One attempt for `records` (one event, or a group for people), paced by the rate limit.
    fn attempt(&mut self, records: Vec<Arc<Record>>, attempt: u32, owed: bool) -> Attempt {
        if let Some(rate) = self.ep.spec.rate_per_sec.filter(|r| *r > 0) {
            self.ready_at = Instant::now().max(self.ready_at) + Duration::from_secs_f64(1.0 / f64::from(rate));
        }
        // Held until settled: a retry sends the same record without reading the log again.
        for r in &records {
            self.held.insert(r.id, r.clone());
        }
        let ids: Vec<EventId> = records.iter().map(|r| r.id).collect();
        let first = records[0].clone();
        let send = self.send(&records);
        let span = match switchyard::trace::sampled(&first.event) {
            true => attempt_span(&first, &self.ep.id, attempt, ids.len()),
            false => tracing::Span::none(),
        };
        let shared = self.shared.clone();
        Box::pin(
            async move {
                // The node's cap on attempts in flight; the attempt's own timeout starts after.
                let _permit = shared.attempts.clone().acquire_owned().await;
                let outcome = send.await;
                let span = tracing::Span::current();
                match &outcome {
                    Outcome::Delivered { status } => span.record("outcome", "delivered").record("status", status),
                    Outcome::Failed { reason, status, .. } => {
                        span.record("outcome", reason.as_str()).record("status", status.unwrap_or_default())
                    }
                };
                shared.metrics.attempted(attempt, &outcome);
                Done { ids, attempt, owed, outcome }
            }
            .instrument(span),
        )
    }

    fn send(&self, records: &[Arc<Record>]) -> BoxFuture<'static, Outcome> {
        match &self.target {
            Target::Webhook { url } => {
                let r = &records[0];
                let body = render::webhook_body(r);
                let (id, ts) = (r.id.to_string(), self.clock.now_ms() / 1000);
                let headers = vec![
                    ("content-type", "application/json".to_owned()),
                    ("webhook-signature", signature::header(&self.secrets, &id, ts, &body)),
                    ("webhook-id", id),
                    ("webhook-timestamp", ts.to_string()),
                ];
                self.post(url, headers, body)
            }
            Target::Slack { url } => {
                let body = self.message(records).slack();
                self.post(url, vec![("content-type", "application/json".to_owned())], body)
            }
            Target::Email { to } => match &self.shared.mailer {
                Some(m) => {
                    let msg = self.message(records);
                    m.send(to, &msg.title, msg.text(), &format!("{}.{}", self.ep.id, records[0].id))
                }
                None => Box::pin(futures::future::ready(Outcome::failed(
                    crate::transport::Reason::Smtp,
                    "no [outbound.smtp] relay is configured",
                ))),
            },
        }
    }

    fn message(&self, records: &[Arc<Record>]) -> Message {
        let dashboard = &self.shared.config.dashboard_url;
        match self.resolutions.get(&records[0].id) {
            Some(title) => Message::resolved(&records[0], title, dashboard),
            None => Message::new(records, dashboard),
        }
    }

    fn post(&self, url: &str, headers: Vec<(&'static str, String)>, body: bytes::Bytes) -> BoxFuture<'static, Outcome> {
        match self.shared.policy.check_url(url) {
            Ok(url) => self.shared.transport.post(Request { url, headers, body }),
            Err(e) => {
                Box::pin(futures::future::ready(Outcome::failed(crate::transport::Reason::Refused, e.to_string())))
            }
        }
    }

    /// Records what finished, durably; `false` when the endpoint was disabled and stops.
    async fn finish(&mut self, finished: Vec<Done>) -> bool {
        let now = self.clock.now_ms();
        let mut writes: Writes = Vec::new();
        for done in finished {
            // One wait per attempt, so a group that failed comes due again together.
            let wait = match &done.outcome {
                Outcome::Failed { retry_after, .. } => self.shared.config.ladder.next(done.attempt, *retry_after),
                Outcome::Delivered { .. } => None,
            };
            for id in &done.ids {
                self.trying.remove(id);
                if matches!(done.outcome, Outcome::Delivered { .. }) {
                    self.resolutions.remove(id);
                }
                if self.pending.remove(id) {
                    self.done_above.insert(*id);
                }
                self.settle(*id, &done, wait, now, &mut writes);
            }
            match &done.outcome {
                Outcome::Delivered { .. } => {
                    self.progress.delivered += done.ids.len() as u64;
                    self.progress.last_success_ms = now;
                    self.progress.failing_since_ms = None;
                }
                Outcome::Failed { detail, .. } => {
                    self.progress.failed_attempts += 1;
                    self.progress.last_error = detail.chars().take(300).collect();
                    self.progress.failing_since_ms.get_or_insert(now);
                }
            }
        }
        let floor = self.pending.iter().next().map_or(self.high, |p| EventId(p.0 - 1));
        self.progress.cursor = self.progress.cursor.max(floor);
        let cursor = self.progress.cursor;
        self.done_above.retain(|id| *id > cursor);
        self.progress.done_above = self.done_above.iter().copied().collect();
        writes.push((keys::progress(&self.ep.id), Some(serde_json::to_vec(&self.progress).unwrap_or_default())));
        self.commit(writes);
        let disable_after = self.shared.config.disable_after();
        match self.progress.failing_since_ms {
            Some(since) if now.saturating_sub(since) >= disable_after.as_millis() as u64 => {
                self.shared.disable(&self.ep, &self.progress, now).await;
                false
            }
            _ => true,
        }
    }

    /// One event's result: delivered (owe it no more), or retried after `wait`, or (no wait
    /// left on the ladder) dead-lettered.
    fn settle(&mut self, id: EventId, done: &Done, wait: Option<Duration>, now: u64, writes: &mut Writes) {
        let key = keys::owed(&self.ep.id, id);
        let error = match &done.outcome {
            Outcome::Delivered { .. } => {
                self.held.remove(&id);
                if self.owed.remove(&id).is_some() || done.owed {
                    writes.push((key, None));
                }
                return;
            }
            Outcome::Failed { detail, .. } => detail.chars().take(300).collect(),
        };
        match wait {
            Some(wait) => {
                let owed = Owed { attempts: done.attempt, next_ms: now + wait.as_millis() as u64, last_error: error };
                writes.push((key, Some(serde_json::to_vec(&owed).unwrap_or_default())));
                self.owed.insert(id, owed);
            }
            None => {
                let type_name = self.held.remove(&id).map(|r| r.type_name().to_owned()).unwrap_or_default();
                self.owed.remove(&id);
                self.progress.dead_lettered += 1;
                let dead = DeadLetter { id, r#type: type_name, attempts: done.attempt, last_error: error, at_ms: now };
                writes.push((key, None));
                writes.push((keys::dead(&self.ep.id, id), Some(serde_json::to_vec(&dead).unwrap_or_default())));
            }
        }
    }

    /// Hands `writes` to the committer: in order, merged with whatever else is waiting.
    fn commit(&self, writes: Writes) {
        if let Some(c) = &self.committer {
            let _ = c.send(writes);
        }
    }

    fn publish_status(&self, in_flight: usize) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.progress.clone_from(&self.progress);
        s.owed = self.owed.len();
        s.in_flight = in_flight;
    }
}

/// Records one deliverer's progress, in order: whatever queued while a commit synced goes in
/// the next one, a later write of a key replacing an earlier one. It retries until the store
/// takes it: progress that cannot be recorded is never counted done.
async fn committer(shared: Arc<Shared>, endpoint: String, mut rx: tokio::sync::mpsc::UnboundedReceiver<Writes>) {
    while let Some(first) = rx.recv().await {
        let mut merged: BTreeMap<String, Option<Vec<u8>>> = first.into_iter().collect();
        while let Ok(more) = rx.try_recv() {
            merged.extend(more);
        }
        // Progress last: where the store applies keys one at a time (JetStream), what an
        // endpoint owes is on record before its cursor moves past it.
        let (progress, mut writes): (Writes, Writes) = merged.into_iter().partition(|(k, _)| k.starts_with("pg."));
        writes.extend(progress);
        let mut wait = Duration::from_millis(50);
        while let Err(error) = shared.kv.commit(writes.clone()).await {
            tracing::warn!(%endpoint, %error, "cannot record outbound progress; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    subscription::sleep_until_opt(at).await
}

/// Events a catch-up reads from the log at a time.
const PAGE: usize = 1024;

enum Next {
    Record(Arc<Record>),
    /// Retention removed this many ids the endpoint had not reached.
    Lost(u64),
    End,
}

/// Where a deliverer's records come from: the log from its cursor, then its dispatch queue
/// (see `dispatch`), and the log again whenever the queue overflowed. It registers before its
/// first read, so nothing committed in between is missed, and skips ids it already gave.
struct Source {
    log: Arc<dyn Log>,
    tenant: Tenant,
    selector: Selector,
    registration: Registration,
    page: VecDeque<Arc<Record>>,
    catching_up: bool,
    checked_trim: bool,
    /// Every record with an id up to this one was read (given, or not selected).
    read_at: EventId,
}

impl Source {
    fn new(w: &Worker) -> Self {
        let registration = w.shared.dispatch.register(w.tenant.as_str(), w.selector.clone());
        Self {
            log: w.shared.bus.log().clone(),
            tenant: w.tenant.clone(),
            selector: w.selector.clone(),
            registration,
            page: VecDeque::new(),
            catching_up: true,
            checked_trim: false,
            read_at: w.high,
        }
    }

    async fn next(&mut self) -> Result<Next, LogError> {
        loop {
            if let Some(r) = self.page.pop_front() {
                return Ok(Next::Record(r));
            }
            if self.catching_up {
                if let Some(lost) = self.trimmed().await? {
                    return Ok(Next::Lost(lost));
                }
                let page = self.log.read(Stream::Tenant(self.tenant.clone()), self.read_at, PAGE).await?;
                match page.last() {
                    None => self.catching_up = false,
                    Some(last) => {
                        self.read_at = last.id;
                        self.page = page.into_iter().filter(|r| self.selector.matches(r)).collect();
                    }
                }
                continue;
            }
            if self.registration.lagged.swap(false, std::sync::atomic::Ordering::AcqRel) {
                while self.registration.rx.try_recv().is_ok() {}
                (self.catching_up, self.checked_trim) = (true, false);
                continue;
            }
            match self.registration.rx.recv().await {
                Some(r) if r.id > self.read_at && self.selector.matches(&r) => {
                    self.read_at = r.id;
                    return Ok(Next::Record(r));
                }
                Some(_) => continue,
                None => return Ok(Next::End),
            }
        }
    }

    /// Once per catch-up: ids retention removed past where this source stands.
    async fn trimmed(&mut self) -> Result<Option<u64>, LogError> {
        if std::mem::replace(&mut self.checked_trim, true) {
            return Ok(None);
        }
        let b = self.log.bounds(Stream::Tenant(self.tenant.clone())).await?;
        if b.trimmed_through <= self.read_at {
            return Ok(None);
        }
        let lost = b.trimmed_through.0 - self.read_at.0;
        self.read_at = b.trimmed_through;
        Ok(Some(lost))
    }
}
