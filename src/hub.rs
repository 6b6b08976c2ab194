//! In-process fan-out of committed records.
//!
//! The log hands every committed batch to [`Hub::publish`], in id order. The
//! hub keeps one bounded broadcast ring per stream that has subscribers (all
//! events, one tenant, one tenant channel), so an event only wakes subscribers
//! that want it, and a record is shared by `Arc`, never copied per subscriber.
//! A subscriber that falls behind the ring gets `Lagged` and catches up from
//! the log (see [`crate::subscription`]); publishers never wait for anyone.
//! The hub also counts what passes through it, for `Stats` and `/api/sse/status`: by labels
//! from bounded sets (catalog types, every custom type as `custom`; channels with every
//! `jobs/<id>` as `jobs/*`), so what a tenant names never grows the counters or shows in them,
//! and in atomics a reader sums without holding up a publish.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::broadcast;

use crate::{
    log::{Feed, Record, Stream},
    names::Tenant,
};

/// Records a ring holds before a slow subscriber is told it lagged.
pub const DEFAULT_RING: usize = 4096;

#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    ring: usize,
    // std Mutex: held only to look up senders and bump counters, never across an await.
    streams: Mutex<HashMap<Stream, broadcast::Sender<Arc<Record>>>>,
    total: AtomicU64,
    tenants: RwLock<HashMap<String, Arc<TenantCells>>>,
}

/// One tenant's counts, bumped by the publish path under read locks only (a label's first
/// count, from a bounded set, takes its map's write lock once).
#[derive(Default)]
struct TenantCells {
    total: AtomicU64,
    types: Tally,
    channels: Tally,
}

#[derive(Default)]
struct Tally(RwLock<HashMap<String, AtomicU64>>);

impl Tally {
    fn bump(&self, label: &str) {
        if let Some(n) = self.0.read().unwrap_or_else(|e| e.into_inner()).get(label) {
            n.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(label.to_owned())
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> BTreeMap<String, u64> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, n)| (k.clone(), n.load(Ordering::Relaxed))).collect()
    }
}

impl TenantCells {
    fn read(&self) -> TenantCounters {
        TenantCounters {
            total: self.total.load(Ordering::Relaxed),
            by_type: self.types.read(),
            by_channel: self.channels.read(),
        }
    }
}

/// The label a record's type is counted under: its catalog name, or `custom` for any type a
/// publisher named itself.
pub fn type_label(r: &Record) -> &str {
    match r.event.payload {
        Some(crate::proto::v1::event::Payload::Custom(_)) => "custom",
        _ => r.type_name(),
    }
}

/// What has been published, per tenant.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub total: u64,
    pub by_tenant: BTreeMap<String, TenantCounters>,
}

#[derive(Debug, Clone, Default)]
pub struct TenantCounters {
    pub total: u64,
    pub by_type: BTreeMap<String, u64>,
    pub by_channel: BTreeMap<String, u64>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new(DEFAULT_RING)
    }
}

impl Hub {
    pub fn new(ring: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                ring: ring.max(16),
                streams: Mutex::new(HashMap::new()),
                total: AtomicU64::new(0),
                tenants: RwLock::default(),
            }),
        }
    }

    /// Subscribe to live records of a stream. Subscribe *before* reading history, so nothing falls between.
    /// The stream's ring is freed when its last receiver is dropped, so memory follows the
    /// subscriptions that exist, not every stream anyone ever asked for.
    pub fn subscribe(&self, stream: Stream) -> Receiver {
        let mut streams = self.inner.streams.lock().unwrap_or_else(|e| e.into_inner());
        let rx = streams.entry(stream.clone()).or_insert_with(|| broadcast::channel(self.inner.ring).0).subscribe();
        Receiver { rx: Some(rx), hub: self.clone(), stream }
    }

    /// The intake a log hands its committed records to.
    pub fn feed(&self) -> Feed {
        let hub = self.clone();
        Feed::new(move |records| hub.publish(records))
    }

    /// Streams that currently have a ring (for tests and status).
    pub fn rings(&self) -> usize {
        self.inner.streams.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Runs `f` while no publish is between rings (`f` must not subscribe or publish: it runs
    /// under the hub's lock). A publish sends each record to every ring it
    /// goes to under one lock, so inside `f` a record seen on one ring is on all of its rings,
    /// and a record not yet seen is on none: what moving a subscriber from its own ring to a
    /// shared one needs to lose nothing.
    pub fn between_publishes<R>(&self, f: impl FnOnce() -> R) -> R {
        let _no_publish = self.inner.streams.lock().unwrap_or_else(|e| e.into_inner());
        f()
    }

    /// Hand committed records (ascending ids) to live subscribers.
    pub fn publish(&self, records: &[Arc<Record>]) {
        if records.is_empty() {
            return;
        }
        {
            let mut streams = self.inner.streams.lock().unwrap_or_else(|e| e.into_inner());
            if !streams.is_empty() {
                let mut dead: Vec<Stream> = Vec::new();
                let mut send =
                    |key: Stream, r: &Arc<Record>, streams: &HashMap<Stream, broadcast::Sender<Arc<Record>>>| {
                        if let Some(tx) = streams.get(&key)
                            && tx.send(r.clone()).is_err()
                        {
                            dead.push(key);
                        }
                    };
                for r in records {
                    send(Stream::All, r, &streams);
                    send(Stream::Tenant(r.tenant.clone()), r, &streams);
                    for ch in &r.routing.channels {
                        send(Stream::Channel(r.tenant.clone(), ch.clone()), r, &streams);
                    }
                }
                // A ring with no receivers left is dropped; the next subscriber makes a new one.
                for key in dead {
                    if streams.get(&key).is_some_and(|tx| tx.receiver_count() == 0) {
                        streams.remove(&key);
                    }
                }
            }
        }
        self.inner.total.fetch_add(records.len() as u64, Ordering::Relaxed);
        let mut cells: Option<(&Tenant, Arc<TenantCells>)> = None;
        for r in records {
            // A batch is mostly one tenant's: its cells are looked up once.
            if cells.as_ref().is_none_or(|(tenant, _)| *tenant != &r.tenant) {
                cells = Some((&r.tenant, self.cells(&r.tenant)));
            }
            let Some((_, t)) = &cells else { continue };
            t.total.fetch_add(1, Ordering::Relaxed);
            t.types.bump(type_label(r));
            for ch in &r.routing.channels {
                t.channels.bump(&crate::metrics::channel_label(ch.as_str()));
            }
        }
    }

    fn cells(&self, tenant: &Tenant) -> Arc<TenantCells> {
        if let Some(c) = self.inner.tenants.read().unwrap_or_else(|e| e.into_inner()).get(tenant.as_str()) {
            return c.clone();
        }
        self.inner.tenants.write().unwrap_or_else(|e| e.into_inner()).entry(tenant.to_string()).or_default().clone()
    }

    /// What has been published so far, summed from the counters without holding up a publish.
    pub fn counters(&self) -> Counters {
        let tenants = self.inner.tenants.read().unwrap_or_else(|e| e.into_inner());
        Counters {
            total: self.inner.total.load(Ordering::Relaxed),
            by_tenant: tenants.iter().map(|(t, c)| (t.clone(), c.read())).collect(),
        }
    }

    pub fn tenant_counters(&self, tenant: &Tenant) -> TenantCounters {
        let tenants = self.inner.tenants.read().unwrap_or_else(|e| e.into_inner());
        tenants.get(tenant.as_str()).map(|c| c.read()).unwrap_or_default()
    }
}

/// A live subscription to one stream's ring; the ring goes when its last receiver does.
pub struct Receiver {
    rx: Option<broadcast::Receiver<Arc<Record>>>,
    hub: Hub,
    stream: Stream,
}

impl Receiver {
    pub async fn recv(&mut self) -> Result<Arc<Record>, broadcast::error::RecvError> {
        match self.rx.as_mut() {
            Some(rx) => rx.recv().await,
            None => Err(broadcast::error::RecvError::Closed),
        }
    }

    /// The next record if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Result<Arc<Record>, broadcast::error::TryRecvError> {
        match self.rx.as_mut() {
            Some(rx) => rx.try_recv(),
            None => Err(broadcast::error::TryRecvError::Closed),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut streams = self.hub.inner.streams.lock().unwrap_or_else(|e| e.into_inner());
        if streams.get(&self.stream).is_some_and(|tx| tx.receiver_count() == 0) {
            streams.remove(&self.stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        auth::Principal,
        names::Channel,
        proto::v1::{Alert, Event, event::Payload},
        validate::{Policy, accept},
    };

    fn record(id: u64, tenant: &str) -> Arc<Record> {
        let e =
            Event { tenant: tenant.into(), payload: Some(Payload::AlertInfo(Alert::default())), ..Default::default() };
        let a = accept(&Principal::system(), e, &Policy::default()).unwrap();
        let mut event = a.event;
        event.id = id;
        Arc::new(Record::new(event, a.tenant, a.routing))
    }

    #[tokio::test]
    async fn rings_exist_only_while_someone_listens_and_each_stream_gets_its_own() {
        let hub = Hub::new(16);
        let acme = Tenant::new("acme").unwrap();
        hub.publish(&[record(1, "acme")]);
        assert_eq!(hub.rings(), 0, "publishing to nobody allocates nothing");
        let mut alerts = hub.subscribe(Stream::Channel(acme.clone(), Channel::new("alerts").unwrap()));
        let mut other = hub.subscribe(Stream::Tenant(Tenant::new("globex").unwrap()));
        let second = hub.subscribe(Stream::Channel(acme.clone(), Channel::new("alerts").unwrap()));
        assert_eq!(hub.rings(), 2, "one ring per stream, shared by its receivers");
        hub.publish(&[record(2, "acme"), record(3, "acme")]);
        assert_eq!(alerts.recv().await.unwrap().id.get(), 2);
        assert_eq!(alerts.recv().await.unwrap().id.get(), 3);
        assert!(other.rx.as_mut().unwrap().try_recv().is_err(), "another tenant's stream sees nothing");
        drop(second);
        assert_eq!(hub.rings(), 2, "a ring stays while a receiver is left");
        drop((alerts, other));
        assert_eq!(hub.rings(), 0, "and goes with the last one");
        let c = hub.tenant_counters(&acme);
        assert_eq!((c.total, c.by_type["alert:info"], c.by_channel["alerts"]), (3, 3, 3));
    }

    #[tokio::test]
    async fn a_receiver_a_whole_ring_behind_is_told_it_lagged_and_publishers_never_wait() {
        let hub = Hub::new(16);
        let mut all = hub.subscribe(Stream::All);
        let batch: Vec<_> = (1..=40).map(|id| record(id, "acme")).collect();
        hub.publish(&batch); // returns though nobody read: the ring overwrites
        match all.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 24, "40 sent into a ring of 16"),
            other => panic!("expected Lagged, got {:?}", other.map(|r| r.id)),
        }
        assert_eq!(all.recv().await.unwrap().id.get(), 25, "then the oldest the ring still holds");
    }

    #[tokio::test]
    async fn every_record_reaches_all_its_tenant_and_each_of_its_channels_once() {
        let hub = Hub::new(16);
        let acme = Tenant::new("acme").unwrap();
        let mut all = hub.subscribe(Stream::All);
        let mut tenant = hub.subscribe(Stream::Tenant(acme.clone()));
        let mut alerts = hub.subscribe(Stream::Channel(acme.clone(), Channel::new("alerts").unwrap()));
        let mut dashboard = hub.subscribe(Stream::Channel(acme, Channel::new("dashboard").unwrap()));
        hub.publish(&[record(1, "acme"), record(2, "globex")]);
        assert_eq!(all.recv().await.unwrap().id.get(), 1);
        assert_eq!(all.recv().await.unwrap().id.get(), 2, "all sees every tenant");
        assert_eq!(tenant.recv().await.unwrap().id.get(), 1);
        assert!(tenant.rx.as_mut().unwrap().try_recv().is_err(), "not globex's");
        assert_eq!(alerts.recv().await.unwrap().id.get(), 1);
        assert!(dashboard.rx.as_mut().unwrap().try_recv().is_err(), "alert:info is not on dashboard");
    }

    /// What a writer taking a stream over relies on: between publishes, the All ring and a
    /// channel ring subscribed together have been given exactly the same records, however busy
    /// the publisher on another thread is.
    #[test]
    fn between_publishes_no_record_is_on_one_of_its_rings_and_not_another() {
        let hub = Hub::new(1 << 16);
        let acme = Tenant::new("acme").unwrap();
        // Subscribed before anything is published, so both start at the same record.
        let mut all = hub.subscribe(Stream::All);
        let mut alerts = hub.subscribe(Stream::Channel(acme, Channel::new("alerts").unwrap()));
        let publisher = {
            let hub = hub.clone();
            std::thread::spawn(move || {
                for id in 1..=20_000 {
                    hub.publish(&[record(id, "acme")]);
                }
            })
        };
        let drain = |r: &mut Receiver| std::iter::from_fn(|| r.try_recv().ok()).count();
        let (mut on_all, mut on_alerts) = (0, 0);
        while !publisher.is_finished() {
            let (a, b) = hub.between_publishes(|| (drain(&mut all), drain(&mut alerts)));
            on_all += a;
            on_alerts += b;
            assert_eq!(on_all, on_alerts, "a record on one ring and not yet on the other");
        }
        publisher.join().unwrap();
    }
}
