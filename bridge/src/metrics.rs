//! Counters and histograms only the HTTP edge knows about, rendered by `GET /metrics`.
//! Its own module so every feature can count without depending on the others.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

/// Counters only the edge knows about.
#[derive(Debug, Default)]
pub struct Metrics {
    pub sse_frames: AtomicU64,
    pub sse_evicted: AtomicU64,
    pub http_published: AtomicU64,
    /// SSE streams that resumed after an id, and those whose resume had a gap.
    pub sse_resumes: AtomicU64,
    pub sse_gaps: AtomicU64,
    /// Publish → SSE write, observed once per run of frames a stream writes (its first event).
    pub sse_lag: Histogram,
    /// Webhook deliveries by source and outcome (`stored`, `answered`, or the refusal's code).
    /// Sources are configured names and outcomes a fixed set, so the label space is bounded.
    pub webhooks: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Metrics {
    pub fn webhook(&self, source: &str, outcome: &'static str) {
        if let Ok(mut m) = self.webhooks.lock() {
            *m.entry((source.to_owned(), outcome)).or_default() += 1;
        }
    }
}

/// Upper bounds (seconds) of the lag histogram's buckets.
const LAG_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A Prometheus histogram over [`LAG_BUCKETS`], lock-free: a count per bucket (not
/// cumulative; summed when rendered), the sum in microseconds, and the count.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LAG_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        let i = LAG_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(LAG_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((secs.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// The histogram in the text format, under `name` with `labels` (`key="value"`, or empty).
    pub fn render(&self, name: &str, help: &str, labels: &str, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let sep = if labels.is_empty() { "" } else { "," };
        let mut total = 0;
        for (i, bound) in LAG_BUCKETS.iter().map(|b| b.to_string()).chain(["+Inf".to_owned()]).enumerate() {
            total += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {total}");
        }
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}\n{name}_count{braces} {total}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let h = Histogram::default();
        for secs in [0.0005, 0.003, 0.003, 0.2, 30.0] {
            h.observe(secs);
        }
        let mut out = String::new();
        h.render("lag_seconds", "Lag.", "transport=\"sse\"", &mut out);
        assert!(out.contains("lag_seconds_bucket{transport=\"sse\",le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("lag_seconds_bucket{transport=\"sse\",le=\"0.005\"} 3\n"), "{out}");
        assert!(out.contains("lag_seconds_bucket{transport=\"sse\",le=\"0.25\"} 4\n"), "{out}");
        assert!(out.contains("lag_seconds_bucket{transport=\"sse\",le=\"+Inf\"} 5\n"), "{out}");
        assert!(out.contains("lag_seconds_count{transport=\"sse\"} 5\n"), "{out}");
        assert!(out.contains("lag_seconds_sum{transport=\"sse\"} 30.2065\n"), "{out}");
    }
}
