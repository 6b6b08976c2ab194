//! What the bus measures about delivery, for both transports: publish → write lag, and the
//! subscriptions open per transport and channel. It lives in the core because gRPC delivery
//! is here and SSE delivery is in the bridge, and an operator compares the two side by side.
//! Rendering (Prometheus text) is the bridge's; this module only counts, lock-free on the
//! delivery path.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

/// Upper bounds (seconds) of the publish → delivery lag buckets.
pub const LAG_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Upper bounds (seconds) of the durable-commit buckets: a local fsync takes 0.1–10 ms.
pub const COMMIT_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Upper bounds (seconds) of connector sync durations: a run calls a platform's API many times.
pub const SYNC_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// A histogram over fixed bucket bounds, lock-free: a count per bucket (not cumulative;
/// summed when read), and the sum in microseconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
}

/// A histogram read at one moment: cumulative counts per bound (the last is `+Inf`), the sum
/// and the count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets {
    pub bounds: &'static [f64],
    pub cumulative: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum_micros: AtomicU64::new(0) }
    }

    pub fn observe(&self, secs: f64) {
        let i = self.bounds.iter().position(|b| secs <= *b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((secs.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn read(&self) -> Buckets {
        let mut total = 0;
        let cumulative = self
            .counts
            .iter()
            .map(|c| {
                total += c.load(Ordering::Relaxed);
                total
            })
            .collect();
        Buckets {
            bounds: self.bounds,
            cumulative,
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: total,
        }
    }
}

impl Buckets {
    /// The bound at or below which `q` (0–1) of the observations fall: the upper bound of the
    /// bucket holding that rank (`+Inf` as `f64::INFINITY`); `None` when nothing was observed.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let i = self.cumulative.iter().position(|c| *c >= rank).unwrap_or(self.bounds.len());
        Some(self.bounds.get(i).copied().unwrap_or(f64::INFINITY))
    }
}

/// How a subscriber is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    Sse,
    Grpc,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Sse, Transport::Grpc];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Grpc => "grpc",
        }
    }
}

/// Delivery measures, shared by every subscription of a bus.
#[derive(Debug)]
pub struct Deliveries {
    lag: [Histogram; 2],
    /// Open subscriptions per channel label (see [`channel_labels`]), per transport. The keys
    /// are shared with the subscriptions counted under them, so counting one allocates nothing
    /// per subscription once its label exists (idle connections are what memory is sized by).
    open: Mutex<BTreeMap<Arc<str>, [u64; 2]>>,
}

/// The labels one subscription is counted under, shared with the census's keys.
#[derive(Debug)]
pub struct Labels {
    first: Arc<str>,
    /// Empty (no allocation) for the usual one channel, or all.
    rest: Vec<Arc<str>>,
}

impl Labels {
    fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        std::iter::once(&self.first).chain(&self.rest)
    }
}

impl Default for Deliveries {
    fn default() -> Self {
        Self { lag: [Histogram::new(LAG_BUCKETS), Histogram::new(LAG_BUCKETS)], open: Mutex::default() }
    }
}

impl Deliveries {
    /// Publish → write lag of one delivery of an event published at `published_ms`.
    pub fn observe_lag(&self, transport: Transport, published_ms: u64) {
        if published_ms > 0 {
            // Not `log::now_ms`: the log depends on this module (its commit histogram).
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            self.lag[transport as usize].observe(now.saturating_sub(published_ms) as f64 / 1000.0);
        }
    }

    pub fn lag(&self, transport: Transport) -> Buckets {
        self.lag[transport as usize].read()
    }

    /// Counts a subscription to `channels` open; the returned labels close it.
    pub(crate) fn opened(&self, transport: Transport, channels: &[String]) -> Labels {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mut interned = channel_labels(channels).into_iter().map(|l| {
            let key = match open.get_key_value(l.as_str()) {
                Some((k, _)) => k.clone(),
                None => Arc::from(l),
            };
            open.entry(key.clone()).or_default()[transport as usize] += 1;
            key
        });
        let first = interned.next().unwrap_or_else(|| Arc::from("*"));
        Labels { first, rest: interned.collect() }
    }

    pub(crate) fn closed(&self, transport: Transport, labels: &Labels) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        for l in labels.iter() {
            if let Some(n) = open.get_mut(l) {
                n[transport as usize] = n[transport as usize].saturating_sub(1);
                if *n == [0, 0] {
                    open.remove(l);
                }
            }
        }
    }

    /// Open subscriptions by transport and channel label. A subscription to several channels
    /// counts once under each.
    pub fn open(&self) -> BTreeMap<(Transport, String), u64> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.iter()
            .flat_map(|(l, n)| Transport::ALL.into_iter().map(move |t| ((t, l.to_string()), n[t as usize])))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// The label one channel is counted under: its name, or `<prefix>/*` for a keyed channel
/// (`jobs/<id>`), whose ids are the publisher's and unbounded.
pub fn channel_label(channel: &str) -> std::borrow::Cow<'_, str> {
    match channel.split_once('/') {
        // The catalog's one keyed channel, counted on every publish: no allocation for it.
        Some(("jobs", _)) => "jobs/*".into(),
        Some((prefix, _)) => format!("{prefix}/*").into(),
        None => channel.into(),
    }
}

/// The labels a subscription to `channels` is counted under: catalog and configured channels
/// by name, every `jobs/<id>` as `jobs/*` (ids are unbounded; a label per id would be a
/// cardinality bomb), and `*` for a subscription to every channel it may see.
fn channel_labels(channels: &[String]) -> Vec<String> {
    if channels.is_empty() {
        return vec!["*".to_owned()];
    }
    let mut labels: Vec<String> = channels.iter().map(|c| channel_label(c).into_owned()).collect();
    labels.sort();
    labels.dedup();
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_with_sum_count_and_quantiles() {
        let h = Histogram::new(LAG_BUCKETS);
        for secs in [0.0005, 0.003, 0.003, 0.2, 30.0] {
            h.observe(secs);
        }
        let b = h.read();
        assert_eq!(b.cumulative[0], 1);
        assert_eq!(b.cumulative[1], 3);
        assert_eq!(b.cumulative[6], 4, "le 0.25");
        assert_eq!(*b.cumulative.last().unwrap(), 5);
        assert_eq!(b.count, 5);
        assert!((b.sum - 30.2065).abs() < 1e-9, "{}", b.sum);
        assert_eq!(b.quantile(0.5), Some(0.005));
        assert_eq!(b.quantile(0.8), Some(0.25));
        assert_eq!(b.quantile(0.99), Some(f64::INFINITY));
        assert_eq!(Histogram::new(LAG_BUCKETS).read().quantile(0.5), None);
    }

    #[test]
    fn job_channels_share_one_label_and_counts_go_when_subscriptions_do() {
        let labels = channel_labels(&["jobs/a".into(), "dashboard".into(), "jobs/b".into()]);
        assert_eq!(labels, ["dashboard", "jobs/*"]);
        assert_eq!(channel_labels(&[]), ["*"]);
        let d = Deliveries::default();
        let channels = ["jobs/a".to_owned(), "dashboard".to_owned()];
        let a = d.opened(Transport::Sse, &channels);
        let b = d.opened(Transport::Sse, &["jobs/c".to_owned(), "dashboard".to_owned()]);
        assert!(Arc::ptr_eq(&a.first, &b.first), "one label, shared");
        let all = d.opened(Transport::Grpc, &[]);
        assert_eq!(d.open()[&(Transport::Sse, "jobs/*".to_owned())], 2);
        assert_eq!(d.open()[&(Transport::Grpc, "*".to_owned())], 1);
        d.closed(Transport::Sse, &a);
        d.closed(Transport::Sse, &b);
        assert_eq!(d.open().into_iter().collect::<Vec<_>>(), [((Transport::Grpc, "*".to_owned()), 1)]);
        d.closed(Transport::Grpc, &all);
        assert!(d.open().is_empty() && d.open.lock().unwrap().is_empty(), "labels go with their last subscription");
    }
}
