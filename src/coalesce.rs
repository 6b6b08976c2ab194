//! Coalescing of state snapshots for live delivery.
//!
//! A snapshot (sync totals, progress) supersedes earlier snapshots of the same
//! (tenant, type, key). Per subscriber, the coalescer delivers the first one at
//! once (leading edge), holds later ones within the window, and delivers the
//! last held one when the window ends (trailing edge): at most two deliveries
//! per window, and the final state always arrives. Facts never come here.
//! (The sources' "same event type at most once per 2 s" dropped real events.)
//!
//! Keys are state slots (tenant, slot, key), so a job's completion shares its progress's
//! key: a fact that ends a job drops the progress still held for it ([`Coalescer::passed`]),
//! and so does a newer snapshot delivered by a catch-up read. What is still held when the
//! connection ends is owed to the client: [`Coalescer::floor`] is the id below which every
//! snapshot went out, carried in its resume cursor (`N~W`, see [`crate::names::Cursor`]).

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::{
    log::Record,
    names::{EventId, Tenant},
};

pub const DEFAULT_WINDOW: Duration = Duration::from_secs(2);

type Key = (Tenant, Arc<str>, String);

fn key_of(record: &Record) -> Option<Key> {
    let slot = record.routing.state.clone()?;
    Some((record.tenant.clone(), slot, record.event.key.clone()))
}

#[derive(Debug)]
pub struct Coalescer {
    window: Duration,
    /// When each key last went out.
    sent: HashMap<Key, Instant>,
    /// Held snapshots and when they are due.
    held: HashMap<Key, (Instant, Arc<Record>)>,
}

impl Coalescer {
    pub fn new(window: Duration) -> Self {
        Self { window, sent: HashMap::new(), held: HashMap::new() }
    }

    /// Offer a snapshot; returns it back when it should go out now.
    pub fn offer(&mut self, record: Arc<Record>, now: Instant) -> Option<Arc<Record>> {
        let Some(key) = key_of(&record) else { return Some(record) };
        match self.sent.get(&key) {
            Some(at) if now < *at + self.window => {
                let due = *at + self.window;
                self.held.insert(key, (due, record));
                None
            }
            _ => {
                // Anything held for this key is older than this one: superseded.
                self.held.remove(&key);
                self.sent.insert(key, now);
                if self.sent.len() > 4096 {
                    let window = self.window;
                    self.sent.retain(|_, at| now < *at + window);
                }
                Some(record)
            }
        }
    }

    /// `record` reached the subscriber without passing through [`Self::offer`] (a fact, or a
    /// catch-up read): whatever is held for its slot is older and must not follow it.
    /// Returns whether something was dropped.
    pub fn passed(&mut self, record: &Record) -> bool {
        let Some(key) = key_of(record) else { return false };
        match self.held.get(&key) {
            Some((_, held)) if held.id < record.id => {
                self.held.remove(&key);
                true
            }
            _ => false,
        }
    }

    /// Every snapshot with an id ≤ the floor went out; held ones are above it. `None` when
    /// nothing is held.
    pub fn floor(&self) -> Option<EventId> {
        self.held.values().map(|(_, r)| EventId(r.id.0 - 1)).min()
    }

    /// When the next held snapshot is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.held.values().map(|(due, _)| *due).min()
    }

    /// Held snapshots whose window has ended, oldest id first.
    pub fn take_due(&mut self, now: Instant) -> Vec<Arc<Record>> {
        let due: Vec<Key> = self.held.iter().filter(|(_, (d, _))| *d <= now).map(|(k, _)| k.clone()).collect();
        let mut out = Vec::with_capacity(due.len());
        for key in due {
            if let Some((_, r)) = self.held.remove(&key) {
                self.sent.insert(key, now);
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.id);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        names::Tenant,
        proto::v1::{Event, ShopifySyncCompleted, event::Payload},
        validate::route,
    };

    fn snapshot(id: u64, key: &str, orders: u32) -> Arc<Record> {
        let event = Event {
            id,
            tenant: "acme".into(),
            key: key.into(),
            payload: Some(Payload::ShopifySyncCompleted(ShopifySyncCompleted {
                total_orders: orders,
                ..Default::default()
            })),
            ..Default::default()
        };
        let routing = route(&event, None).unwrap();
        Arc::new(Record::new(event, Tenant::new("acme").unwrap(), routing))
    }

    fn orders(r: &Record) -> u32 {
        match &r.event.payload {
            Some(Payload::ShopifySyncCompleted(t)) => t.total_orders,
            _ => unreachable!(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ten_snapshots_in_a_second_give_a_leading_and_a_trailing_delivery() {
        let mut c = Coalescer::new(DEFAULT_WINDOW);
        let mut delivered = Vec::new();
        for n in 1..=10u32 {
            if let Some(r) = c.offer(snapshot(n as u64, "all", n), Instant::now()) {
                delivered.push(orders(&r));
            }
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert_eq!(delivered, vec![1], "only the leading edge so far");
        let due = c.next_due().expect("a trailing delivery is pending");
        assert!(c.take_due(Instant::now()).is_empty(), "not before the window ends");
        tokio::time::advance(due - Instant::now()).await;
        delivered.extend(c.take_due(Instant::now()).iter().map(|r| orders(r)));
        assert_eq!(delivered, vec![1, 10], "the final state arrives");
        assert_eq!(c.next_due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_independent_and_a_late_snapshot_supersedes_a_held_one() {
        let mut c = Coalescer::new(DEFAULT_WINDOW);
        assert!(c.offer(snapshot(1, "uk", 1), Instant::now()).is_some());
        assert!(c.offer(snapshot(2, "eu", 1), Instant::now()).is_some(), "another key is not held back");
        assert!(c.offer(snapshot(3, "uk", 2), Instant::now()).is_none());
        tokio::time::advance(Duration::from_secs(3)).await;
        // The held snapshot is due, but a newer one arrives first: it goes out, the old one is dropped.
        let r = c.offer(snapshot(4, "uk", 3), Instant::now()).expect("window over");
        assert_eq!(orders(&r), 3);
        assert!(c.take_due(Instant::now()).is_empty(), "superseded snapshot is not delivered after its successor");
    }
}
