//! A subscription: resume from an id, then live, in id order, with explicit gaps.
//!
//! Shared by the gRPC `Subscribe` stream and the HTTP bridge. The recipe:
//! 1. subscribe to the hub's ring for the stream *first*;
//! 2. report whether the resume is complete (the `from` id is still in history);
//! 3. replay from the log page by page up to its head;
//! 4. switch to the ring, skipping ids already delivered (the seam has no gap
//!    and no duplicate because both sides carry the same ids);
//! 5. if the ring overflows (`Lagged`), go back to 3 from the last delivered id;
//!    if retention removed events the subscriber never saw, say so with a `Gap`.

use std::{sync::Arc, time::Duration};

use futures::Stream as FutStream;
use tokio::sync::broadcast::error::RecvError;

use crate::{
    coalesce::Coalescer,
    log::{Bounds, Log, Record, Stream},
    names::{Channel, EventId},
    proto::v1::Delivery,
};

/// Events a replay reads per page.
const PAGE: usize = 1024;

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum Item {
    /// Always first.
    Status {
        complete: bool,
        bounds: Bounds,
    },
    Event(Arc<Record>),
    /// A snapshot held back by coalescing and delivered at the end of its window;
    /// its id may be lower than events already delivered, so it must not move a resume cursor.
    Coalesced(Arc<Record>),
    /// Events in `(after, next)` are gone from history and were never delivered.
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
    pub stream: Stream,
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

pub struct Options {
    pub from: Option<EventId>,
    pub coalesce: Option<Duration>,
    pub on_lag: Lag,
}

/// The item stream for one subscriber.
pub fn subscribe(
    log: Arc<dyn Log>,
    hub: &crate::hub::Hub,
    filter: Filter,
    options: Options,
) -> impl FutStream<Item = Result<Item, crate::log::LogError>> + Send + 'static {
    let mut rx = hub.subscribe(filter.stream.clone());
    async_stream::try_stream! {
        let bounds = log.bounds(filter.stream.clone()).await?;
        let (complete, mut cursor) = match options.from {
            None => (true, bounds.head),
            Some(from) if from > bounds.head => (false, bounds.head),
            Some(from) => (bounds.complete_after(from), from.max(bounds.trimmed_through)),
        };
        yield Item::Status { complete, bounds };
        let mut coalescer = options.coalesce.map(Coalescer::new);
        loop {
            // Replay from the log up to its head.
            loop {
                let page = log.read(filter.stream.clone(), cursor, PAGE).await?;
                let Some(last) = page.last() else { break };
                let last = last.id;
                for r in page {
                    if r.id > cursor && filter.wants(&r) {
                        yield Item::Event(r);
                    }
                }
                cursor = cursor.max(last);
            }
            // Live from the ring.
            loop {
                let due = coalescer.as_ref().and_then(Coalescer::next_due);
                let received = tokio::select! {
                    biased;
                    m = rx.recv() => m,
                    _ = sleep_until_opt(due) => {
                        let now = tokio::time::Instant::now();
                        if let Some(c) = coalescer.as_mut() {
                            for r in c.take_due(now) {
                                yield Item::Coalesced(r);
                            }
                        }
                        continue;
                    }
                };
                match received {
                    Ok(r) => {
                        if r.id <= cursor {
                            continue;
                        }
                        cursor = r.id;
                        if !filter.wants(&r) {
                            continue;
                        }
                        match (&mut coalescer, r.routing.delivery) {
                            (Some(c), Delivery::Snapshot) => {
                                if let Some(r) = c.offer(r, tokio::time::Instant::now()) {
                                    yield Item::Event(r);
                                }
                            }
                            _ => yield Item::Event(r),
                        }
                    }
                    Err(RecvError::Lagged(_)) if options.on_lag == Lag::Evict => {
                        yield Item::Evicted { after: cursor };
                        return;
                    }
                    Err(RecvError::Lagged(_)) => {
                        // Too slow for the ring: catch up from the log. If retention
                        // already removed what this subscriber missed, say so.
                        let b = log.bounds(filter.stream.clone()).await?;
                        if b.trimmed_through > cursor {
                            yield Item::Gap {
                                after: cursor,
                                next: EventId(b.trimmed_through.0 + 1),
                                reason: "subscriber fell behind retention",
                            };
                            cursor = b.trimmed_through;
                        }
                        break;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
