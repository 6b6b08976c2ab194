//! Coalescing of state snapshots for live delivery.
//!
//! A snapshot (sync totals, progress) supersedes earlier snapshots of the same
//! (tenant, type, key). Per subscriber, the coalescer delivers the first one at
//! once (leading edge), holds later ones within the window, and delivers the
//! last held one when the window ends (trailing edge): at most two deliveries
//! per window, and the final state always arrives. Facts never come here.
//! (The sources' "same event type at most once per 2 s" dropped real events.)

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::{log::Record, names::Tenant};

pub const DEFAULT_WINDOW: Duration = Duration::from_secs(2);

type Key = (Tenant, Arc<str>, String);

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
        let key = (record.tenant.clone(), record.routing.type_name.clone(), record.event.key.clone());
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
