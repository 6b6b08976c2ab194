//! A subscription: state or a resume point, then live, in id order, with explicit gaps.
//!
//! Shared by the gRPC `Subscribe` stream and the HTTP bridge. The recipe:
//! 1. subscribe to the hub's ring for the stream *first*;
//! 2. report whether the resume is complete (the `from` id is still in history);
//! 3. replay from the log page by page up to its head;
//! 4. switch to the ring, skipping ids already delivered (the seam has no gap
//!    and no duplicate because both sides carry the same ids);
//! 5. if the ring overflows (`Lagged`), go back to 3 from the last delivered id;
//!    if retention removed events the subscriber never saw, say so with a `Gap`.
//!
//! Starting from state, and healing a gap, are one mechanism: a *compacted replay*. The
//! state view (as of id A) is merged into the replay by id: state events older than the
//! history still held come first, history facts are delivered as they are, history snapshots
//! that state has superseded are skipped, and `StateEnd { as_of: A }` marks the seam before
//! the first event after A. A fresh start is the same with no history before A.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use futures::Stream as FutStream;
use tokio::sync::broadcast::error::RecvError;

use crate::{
    coalesce::Coalescer,
    log::{Bounds, Log, Record, StateView, Stream},
    names::{Channel, Cursor, EventId},
    proto::v1::Delivery,
};

/// Events a replay reads per page.
const PAGE: usize = 1024;

/// What a subscriber receives.
#[derive(Debug)]
pub enum Item {
    /// Always first.
    Status {
        complete: bool,
        bounds: Bounds,
    },
    Event(Arc<Record>),
    /// A snapshot delivered out of id order (the end of a coalescing window, or state owed by
    /// a `N~W` cursor); its id may be lower than events already delivered, so it must not move
    /// a resume cursor: `cursor` is where the subscriber stands after it.
    Coalesced(Arc<Record>, Cursor),
    /// The state part of a compacted replay is complete: the subscriber now holds the state
    /// as of `as_of`, and everything after comes as events. Cursor moves to `as_of`.
    StateEnd {
        as_of: EventId,
        /// State events delivered in this compacted replay.
        count: usize,
    },
    /// Coalescing now holds snapshots above this id back (or none): resume cursors written
    /// from here on are `N~floor`, so a reconnect gets those keys' state.
    Floor(Option<EventId>),
    /// Events in `(after, next)` are gone from history and were never delivered. The current
    /// state of what changed in it follows (a compacted replay ending with `StateEnd`).
    Gap {
        after: EventId,
        next: EventId,
        reason: &'static str,
    },
    /// The subscriber fell a whole ring behind and asked to be dropped rather than
    /// caught up (`Lag::Evict`); `after` is the last id it was given. Always last.
    Evicted {
        after: EventId,
    },
    /// The replay reached live delivery and the subscriber asked to take the live part
    /// over itself ([`Options::handoff`]): everything it needs to go on. Always last.
    Live(Box<Live>),
}

/// A subscription at its live seam, handed over (see [`Item::Live`]): the ring receiver
/// (subscribed before the replay began, so it holds every record since), the last id
/// delivered, what the subscriber wants, and its coalescing. Whoever takes it delivers
/// `ring` records with ids above `cursor` that `filter` wants, through `coalescer`.
pub struct Live {
    pub ring: crate::hub::Receiver,
    pub cursor: EventId,
    pub filter: Filter,
    pub coalescer: Option<Coalescer>,
    pub floor: Option<EventId>,
    /// Whatever the subscription kept alive while it lasted (its census entry): held as long
    /// as the live part lasts.
    pub keep: Keep,
}

/// What a subscription holds for its whole life (the bus's census entry for it).
pub type Keep = Box<dyn std::any::Any + Send + Sync>;

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("cursor", &self.cursor).field("floor", &self.floor).finish_non_exhaustive()
    }
}

/// What to do when a subscriber falls a whole ring behind live delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lag {
    /// Catch up from the log (internal services, remote bridges).
    #[default]
    CatchUp,
    /// End the subscription with `Item::Evicted`; the client resumes from its last id
    /// (browsers: a stalled tab must not hold a catch-up reader on the log).
    Evict,
}

/// A predicate over records: the token's channel globs.
pub type Allow = Arc<dyn Fn(&Record) -> bool + Send + Sync>;

/// Which events a subscriber gets.
#[derive(Clone)]
pub struct Filter {
    /// What history is read from.
    pub stream: Stream,
    /// Which hub ring live records come from: the stream's own, or for a keyed channel
    /// (`jobs/<id>`, one per job) its tenant's, filtered by `channels`, so short-lived channels
    /// never cost a ring each.
    pub ring: Stream,
    /// Deliver only records in one of these channels (for multi-channel and token-limited subscriptions).
    pub channels: Option<Vec<Channel>>,
    /// Extra predicate: the token's channel globs.
    pub allow: Option<Allow>,
}

impl Filter {
    pub fn wants(&self, r: &Record) -> bool {
        self.channels.as_ref().is_none_or(|chs| r.in_any(chs)) && self.allow.as_ref().is_none_or(|f| f(r))
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Live: events after the head at subscription.
    Live,
    /// Every event after the cursor (and the state it owes).
    After(Cursor),
    /// The current state, then every event after it. With an id (a page reloaded after
    /// seeing it): the whole state merged with the facts after that id, then live.
    State(Option<EventId>),
    /// Every event published at or after this time (Unix ms), resolved through the log's
    /// time index to an `After`.
    Since(u64),
}

pub struct Options {
    pub start: Start,
    pub coalesce: Option<Duration>,
    pub on_lag: Lag,
    /// End with [`Item::Live`] at the live seam instead of delivering live records: the
    /// subscriber has a cheaper way to deliver them (the SSE writers, `bridge::writers`).
    pub handoff: bool,
}

/// A compacted replay in progress: state events not yet delivered, and the seam.
struct Compaction {
    pending: VecDeque<Arc<Record>>,
    as_of: EventId,
    count: usize,
}

impl Compaction {
    fn new(view: StateView, filter: &Filter) -> Self {
        let pending: VecDeque<_> = view.records.into_iter().filter(|r| filter.wants(r)).collect();
        Self { as_of: view.as_of, count: pending.len(), pending }
    }

    /// State events to deliver before history record `next` (all of them when `None`).
    fn due_before(&mut self, next: Option<EventId>) -> Vec<Arc<Record>> {
        let n = self.pending.iter().take_while(|r| next.is_none_or(|id| r.id < id)).count();
        self.pending.drain(..n).collect()
    }

    /// Whether history record `r` (≤ `as_of`) is delivered: facts always; a snapshot only if
    /// it is the state view's own event for its slot (then it leaves `pending`).
    fn keeps(&mut self, r: &Record) -> bool {
        if self.pending.front().is_some_and(|p| p.id == r.id) {
            self.pending.pop_front();
            return true;
        }
        r.routing.delivery != Delivery::Snapshot
    }
}

/// Where a subscription begins: the items it opens with (its status, and the state a
/// coalescing connection still owed), where its replay starts, the state to merge into it, and
/// the time before which replayed events are dropped.
struct Begin {
    items: Vec<Item>,
    cursor: EventId,
    compaction: Option<Compaction>,
    since: Option<u64>,
}

async fn begin(log: &Arc<dyn Log>, filter: &Filter, start: Start) -> Result<Begin, crate::log::LogError> {
    // `since` starts at an id at most a little early: the replay drops what came before it.
    let mut since = None;
    let start = match start {
        Start::Since(ms) => {
            since = Some(ms);
            Start::After(Cursor::at(log.id_before(ms).await?))
        }
        other => other,
    };
    let bounds = log.bounds(filter.stream.clone()).await?;
    let mut items = Vec::with_capacity(1);
    let mut compaction = None;
    let mut cursor = bounds.head;
    match start {
        Start::Live | Start::Since(_) => items.push(Item::Status { complete: true, bounds }),
        Start::State(facts_after) => {
            let complete = facts_after.is_none_or(|n| n <= bounds.head && bounds.complete_after(n));
            items.push(Item::Status { complete, bounds });
            let view = log.state(filter.stream.clone(), EventId::ZERO).await?;
            cursor = match facts_after {
                Some(n) if n <= bounds.head => n.max(bounds.trimmed_through).min(view.as_of),
                _ => view.as_of,
            };
            compaction = Some(Compaction::new(view, filter));
        }
        Start::After(from) if from.after <= bounds.head && bounds.complete_after(from.after) => {
            items.push(Item::Status { complete: true, bounds });
            cursor = from.after;
            if let Some(w) = from.state_after {
                // State a coalescing connection still held when it ended: the current
                // event of each slot that changed in (w, after]; later ones come as events.
                let view = log.state(filter.stream.clone(), w).await?;
                let owed = view.records.into_iter().filter(|r| r.id <= from.after && filter.wants(r));
                items.extend(owed.map(|r| Item::Coalesced(r, Cursor::at(from.after))));
            }
        }
        Start::After(from) => {
            items.push(Item::Status { complete: false, bounds });
            // An id this log never issued (another history) heals with all of the state.
            let (base, history) = if from.after > bounds.head {
                (EventId::ZERO, None)
            } else {
                (from.after, Some(bounds.trimmed_through))
            };
            let view = log.state(filter.stream.clone(), base).await?;
            cursor = history.unwrap_or(view.as_of);
            compaction = Some(Compaction::new(view, filter));
        }
    }
    Ok(Begin { items, cursor, compaction, since })
}

/// The items one page of history gives, merging in a compaction's state events by id and
/// ending the compaction at its seam; `cursor` follows every record read.
fn replay(
    page: Vec<Arc<Record>>,
    cursor: &mut EventId,
    compaction: &mut Option<Compaction>,
    since: Option<u64>,
    filter: &Filter,
    mut coalescer: Option<&mut Coalescer>,
) -> Vec<Item> {
    let mut items = Vec::with_capacity(page.len());
    for r in page {
        if r.id <= *cursor {
            continue;
        }
        if let Some(c) = compaction.as_mut() {
            items.extend(c.due_before(Some(r.id)).into_iter().map(Item::Event));
            if r.id <= c.as_of && !c.keeps(&r) {
                *cursor = r.id;
                continue;
            }
            if r.id > c.as_of {
                items.push(Item::StateEnd { as_of: c.as_of, count: c.count });
                *compaction = None;
            }
        }
        *cursor = r.id;
        if since.is_some_and(|ms| r.published_ms() < ms) {
            continue;
        }
        if filter.wants(&r) {
            if let Some(c) = coalescer.as_deref_mut() {
                c.passed(&r);
            }
            items.push(Item::Event(r));
        }
    }
    items
}

/// Snapshots whose coalescing window has ended (sent with the cursor they owe), and the floor
/// when it moved.
pub fn due_now(c: &mut Coalescer, cursor: EventId, floor: &mut Option<EventId>) -> Vec<Item> {
    let due = c.take_due(tokio::time::Instant::now());
    let now_floor = c.floor();
    let mut items: Vec<Item> = due.into_iter().map(|r| Item::Coalesced(r, Cursor::owing(cursor, now_floor))).collect();
    if now_floor != *floor {
        *floor = now_floor;
        items.push(Item::Floor(now_floor));
    }
    items
}

/// A live record through the coalescer: the floor first when it moved, then the event unless
/// it is held back (a snapshot inside its key's window).
fn coalesce(c: &mut Coalescer, r: Arc<Record>, floor: &mut Option<EventId>) -> (Option<Item>, Option<Item>) {
    let out = if r.routing.delivery == Delivery::Snapshot {
        c.offer(r, tokio::time::Instant::now())
    } else {
        c.passed(&r);
        Some(r)
    };
    let moved = (c.floor() != *floor).then(|| {
        *floor = c.floor();
        Item::Floor(*floor)
    });
    (moved, out.map(Item::Event))
}

/// What a live record from the ring gives a subscriber at `cursor`: nothing if it was
/// delivered already or is not wanted (the cursor moves past it either way), else the record
/// through the coalescer (the floor first when it moved, then the event unless held back).
pub fn live(
    r: &Arc<Record>,
    cursor: &mut EventId,
    filter: &Filter,
    coalescer: Option<&mut Coalescer>,
    floor: &mut Option<EventId>,
) -> impl Iterator<Item = Item> + use<> {
    let (moved, out) = if r.id <= *cursor {
        (None, None)
    } else {
        *cursor = r.id;
        match coalescer {
            _ if !filter.wants(r) => (None, None),
            Some(c) => coalesce(c, r.clone(), floor),
            None => (None, Some(Item::Event(r.clone()))),
        }
    };
    moved.into_iter().chain(out)
}

/// Where the replay reaches the head: what a compaction still holds, its `StateEnd`, and the
/// coalescing floor if it moved.
fn seam(
    compaction: Option<Compaction>,
    cursor: &mut EventId,
    coalescer: Option<&Coalescer>,
    floor: &mut Option<EventId>,
) -> Vec<Item> {
    let mut items = Vec::new();
    if let Some(mut c) = compaction {
        items.extend(c.due_before(None).into_iter().map(Item::Event));
        *cursor = (*cursor).max(c.as_of);
        items.push(Item::StateEnd { as_of: c.as_of, count: c.count });
    }
    if let Some(c) = coalescer
        && c.floor() != *floor
    {
        *floor = c.floor();
        items.push(Item::Floor(*floor));
    }
    items
}

/// A subscriber the ring outran, at `cursor`: if retention already removed what it missed,
/// the gap to report, the state of what changed in it (to heal with) and where the replay
/// resumes. `None`: history still holds it all.
async fn fell_behind(
    log: &Arc<dyn Log>,
    filter: &Filter,
    cursor: EventId,
) -> Result<Option<(Item, Compaction, EventId)>, crate::log::LogError> {
    let b = log.bounds(filter.stream.clone()).await?;
    if b.trimmed_through <= cursor {
        return Ok(None);
    }
    let gap =
        Item::Gap { after: cursor, next: EventId(b.trimmed_through.0 + 1), reason: "subscriber fell behind retention" };
    let view = log.state(filter.stream.clone(), cursor).await?;
    Ok(Some((gap, Compaction::new(view, filter), b.trimmed_through)))
}

/// The item stream for one subscriber.
pub fn subscribe(
    log: Arc<dyn Log>,
    hub: &crate::hub::Hub,
    filter: Filter,
    options: Options,
    keep: Keep,
) -> impl FutStream<Item = Result<Item, crate::log::LogError>> + Send + 'static {
    let mut rx = hub.subscribe(filter.ring.clone());
    async_stream::try_stream! {
        let Begin { items, mut cursor, mut compaction, mut since } = begin(&log, &filter, options.start).await?;
        for item in items {
            yield item;
        }
        let mut coalescer = options.coalesce.map(Coalescer::new);
        let mut floor: Option<EventId> = None;
        loop {
            // Replay from the log up to its head (merging in a compaction's state events).
            loop {
                let page = log.read(filter.stream.clone(), cursor, PAGE).await?;
                let Some(last) = page.last().map(|r| r.id) else { break };
                for item in replay(page, &mut cursor, &mut compaction, since, &filter, coalescer.as_mut()) {
                    yield item;
                }
                cursor = cursor.max(last);
            }
            since = None;
            for item in seam(compaction.take(), &mut cursor, coalescer.as_ref(), &mut floor) {
                yield item;
            }
            if options.handoff {
                yield Item::Live(Box::new(Live { ring: rx, cursor, filter, coalescer, floor, keep }));
                return;
            }
            // Live from the ring.
            loop {
                let due = coalescer.as_ref().and_then(Coalescer::next_due);
                let received = tokio::select! {
                    biased;
                    m = rx.recv() => m,
                    _ = sleep_until_opt(due) => {
                        if let Some(c) = coalescer.as_mut() {
                            for item in due_now(c, cursor, &mut floor) {
                                yield item;
                            }
                        }
                        continue;
                    }
                };
                match received {
                    Ok(r) => {
                        for item in live(&r, &mut cursor, &filter, coalescer.as_mut(), &mut floor) {
                            yield item;
                        }
                    }
                    Err(RecvError::Lagged(_)) if options.on_lag == Lag::Evict => {
                        yield Item::Evicted { after: cursor };
                        return;
                    }
                    Err(RecvError::Lagged(_)) => {
                        // Too slow for the ring: catch up from the log.
                        if let Some((gap, healing, from)) = fell_behind(&log, &filter, cursor).await? {
                            yield gap;
                            compaction = Some(healing);
                            cursor = from;
                        }
                        break;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever without one (a timer branch that may have nothing to wait for).
pub async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;
    use crate::{
        auth::Principal,
        hub::Hub,
        log::embedded::{EmbeddedConfig, EmbeddedLog},
        names::Tenant,
        proto::v1::{Alert, Event, ShopifySyncCompleted, event::Payload},
        validate::{Accepted, Policy, accept},
    };

    fn accepted(payload: Payload, key: &str) -> Accepted {
        let e = Event { tenant: "acme".into(), key: key.into(), payload: Some(payload), ..Default::default() };
        accept(&Principal::system(), e, &Policy::default()).unwrap()
    }

    fn totals(n: u32) -> Accepted {
        accepted(Payload::ShopifySyncCompleted(ShopifySyncCompleted { total_orders: n, ..Default::default() }), "uk")
    }

    fn fact() -> Accepted {
        accepted(Payload::AlertInfo(Alert::default()), "")
    }

    /// The next item, or `None` if the stream has nothing for a while.
    async fn next<S: FutStream<Item = Result<Item, crate::log::LogError>> + Unpin>(s: &mut S) -> Option<Item> {
        tokio::time::timeout(Duration::from_millis(300), s.next()).await.ok().flatten().map(Result::unwrap)
    }

    #[tokio::test]
    async fn a_catch_up_after_lag_never_delivers_a_held_snapshot_after_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::new(16);
        let log: Arc<dyn Log> = Arc::new(EmbeddedLog::open(dir.path(), EmbeddedConfig::default(), hub.feed()).unwrap());
        let stream = Stream::Tenant(Tenant::new("acme").unwrap());
        let filter = Filter { ring: stream.clone(), stream, channels: None, allow: None };
        let options = Options {
            start: Start::Live,
            coalesce: Some(Duration::from_secs(600)),
            on_lag: Lag::CatchUp,
            handoff: false,
        };
        let mut s = Box::pin(subscribe(log.clone(), &hub, filter, options, Box::new(())));
        assert!(matches!(next(&mut s).await, Some(Item::Status { complete: true, .. })));
        assert!(next(&mut s).await.is_none(), "caught up, now live");
        let v1 = log.append(vec![totals(1)]).await.unwrap()[0].id;
        assert!(matches!(next(&mut s).await, Some(Item::Event(r)) if r.id == v1), "leading edge");
        let v2 = log.append(vec![totals(2)]).await.unwrap()[0].id;
        // v2 is taken from the ring and held: the subscriber is told its cursor now owes it.
        let item = next(&mut s).await;
        assert!(matches!(item, Some(Item::Floor(Some(w))) if w.0 == v2.0 - 1), "{item:?}");
        // Then far more than the ring holds, and a newer snapshot of the same key.
        log.append((0..40).map(|_| fact()).collect()).await.unwrap();
        let v3 = log.append(vec![totals(3)]).await.unwrap()[0].id;
        let mut seen = Vec::new();
        while let Some(item) = next(&mut s).await {
            seen.push(item);
        }
        let snapshots: Vec<EventId> = seen
            .iter()
            .filter_map(|i| match i {
                Item::Event(r) | Item::Coalesced(r, _) if r.routing.delivery == Delivery::Snapshot => Some(r.id),
                _ => None,
            })
            .collect();
        assert_eq!(snapshots, vec![v3], "caught up to v3; the held v2 never follows it");
        assert!(matches!(seen.last(), Some(Item::Floor(None))), "nothing is owed any more: {seen:?}");
    }

    /// A stored record with this id, published at `ms` (Unix ms).
    fn stored(a: Accepted, id: u64, ms: u64) -> Arc<Record> {
        let mut event = a.event;
        event.id = id;
        event.published_at = Some(crate::proto::Timestamp { seconds: (ms / 1000) as i64, nanos: 0 });
        Arc::new(Record::new(event, a.tenant, a.routing))
    }

    fn ids(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Event(r) => r.id.0.to_string(),
                Item::StateEnd { as_of, count } => format!("end@{}:{count}", as_of.0),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn everything() -> Filter {
        let stream = Stream::Tenant(Tenant::new("acme").unwrap());
        Filter { ring: stream.clone(), stream, channels: None, allow: None }
    }

    #[test]
    fn a_compacted_replay_keeps_facts_skips_superseded_snapshots_and_marks_the_seam() {
        // History 1..=5; the state view (as of 3) holds key uk's newest snapshot, id 3.
        let (uk1, fact2, uk3, fact4, fact5) = (
            stored(totals(1), 1, 0),
            stored(fact(), 2, 0),
            stored(totals(3), 3, 0),
            stored(fact(), 4, 0),
            stored(fact(), 5, 0),
        );
        let view = StateView { records: vec![uk3.clone()], as_of: EventId(3) };
        let mut compaction = Some(Compaction::new(view, &everything()));
        let mut cursor = EventId::ZERO;
        let page = vec![uk1, fact2, uk3, fact4, fact5];
        let items = replay(page, &mut cursor, &mut compaction, None, &everything(), None);
        assert_eq!(ids(&items), ["2", "3", "end@3:1", "4", "5"], "uk1 was superseded by uk3");
        assert!(compaction.is_none(), "the seam ended it");
        assert_eq!(cursor, EventId(5));
    }

    #[test]
    fn state_older_than_the_history_still_held_comes_first() {
        // Retention trimmed through 3: key uk's state (id 1) is no longer in history.
        let view = StateView { records: vec![stored(totals(1), 1, 0)], as_of: EventId(4) };
        let mut compaction = Some(Compaction::new(view, &everything()));
        let mut cursor = EventId(3);
        let items = replay(
            vec![stored(fact(), 4, 0), stored(fact(), 5, 0)],
            &mut cursor,
            &mut compaction,
            None,
            &everything(),
            None,
        );
        assert_eq!(ids(&items), ["1", "4", "end@4:1", "5"]);
    }

    #[test]
    fn a_seam_with_no_history_after_it_delivers_the_rest_of_the_state_and_moves_the_cursor() {
        let view = StateView { records: vec![stored(totals(1), 7, 0)], as_of: EventId(9) };
        let compaction = Some(Compaction::new(view, &everything()));
        let mut cursor = EventId(2);
        let items = seam(compaction, &mut cursor, None, &mut None);
        assert_eq!(ids(&items), ["7", "end@9:1"]);
        assert_eq!(cursor, EventId(9), "the subscriber holds the state as of 9");
        assert!(seam(None, &mut cursor, None, &mut None).is_empty(), "nothing owed, nothing said");
    }

    #[test]
    fn a_resume_never_repeats_what_it_delivered_and_since_drops_older_events_but_moves_on() {
        let page = vec![stored(fact(), 4, 1_000), stored(fact(), 5, 2_000), stored(fact(), 6, 3_000)];
        let mut cursor = EventId(4);
        let items = replay(page.clone(), &mut cursor, &mut None, None, &everything(), None);
        assert_eq!(ids(&items), ["5", "6"], "id 4 was delivered before the seam");
        let mut cursor = EventId::ZERO;
        let items = replay(page, &mut cursor, &mut None, Some(2_000), &everything(), None);
        assert_eq!(ids(&items), ["5", "6"], "published before 2 s: dropped");
        assert_eq!(cursor, EventId(6), "but read past");
    }

    #[test]
    fn a_channel_filter_narrows_state_and_history_alike() {
        let stream = Stream::Tenant(Tenant::new("acme").unwrap());
        let only_dashboard = Filter {
            ring: stream.clone(),
            stream,
            channels: Some(vec![Channel::new("dashboard").unwrap()]),
            allow: None,
        };
        let alerts_only = stored(fact(), 2, 0); // alert:info goes to alerts, not dashboard
        // shopify:sync-completed is on dashboard; the alert is not.
        let view = StateView { records: vec![stored(totals(1), 1, 0), stored(fact(), 2, 0)], as_of: EventId(2) };
        let c = Compaction::new(view, &only_dashboard);
        assert_eq!(c.pending.iter().map(|r| r.id.0).collect::<Vec<_>>(), [1]);
        let mut cursor = EventId::ZERO;
        let items = replay(vec![alerts_only], &mut cursor, &mut None, None, &only_dashboard, None);
        assert!(items.is_empty(), "an alerts event is not on dashboard");
        assert_eq!(cursor, EventId(2), "yet the cursor passed it");
    }
}
