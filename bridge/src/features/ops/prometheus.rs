//! `GET /metrics`: every family in the Prometheus text format, read at scrape time from the bus
//! (publishes, refusals, delivery lag, open subscriptions), the log (head, size, commits), the
//! edge (SSE, tickets, webhooks), the connectors' statuses and the process. docs/observability.md
//! lists each family with its labels.
//!
//! `/metrics` is unauthenticated, so it names no tenant unless `metrics.tenant_labels` is on,
//! and then only the busiest `metrics.max_tenants` (the rest as `_other`): the label space is
//! bounded whatever the tenants do.

use std::{
    collections::BTreeMap,
    fmt::{Display, Write},
    sync::atomic::{AtomicU64, Ordering},
};

use switchyard::metrics::{Buckets, Transport};

use crate::app::App;

/// The whole page.
pub fn render(app: &App) -> String {
    let mut s = String::new();
    publishes(app, &mut s);
    deliveries(app, &mut s);
    log(app, &mut s);
    edge(app, &mut s);
    connectors(app, &mut s);
    outbound(app, &mut s);
    process(&mut s);
    s
}

/// One family of samples: `(labels, value)` pairs under one HELP and TYPE.
fn family<V: Display>(
    s: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    samples: impl IntoIterator<Item = (String, V)>,
) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(s, "{name}{braces} {v}");
    }
}

/// A family with one unlabelled sample.
fn single<V: Display>(s: &mut String, name: &str, help: &str, kind: &str, v: V) {
    family(s, name, help, kind, [(String::new(), v)]);
}

fn load(v: &AtomicU64) -> u64 {
    v.load(Ordering::Relaxed)
}

/// A histogram family: one series per `(labels, buckets)`.
fn histogram(s: &mut String, name: &str, help: &str, series: impl IntoIterator<Item = (String, Buckets)>) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (labels, b) in series {
        let sep = if labels.is_empty() { "" } else { "," };
        let bounds = b.bounds.iter().map(ToString::to_string).chain(["+Inf".to_owned()]);
        for (bound, n) in bounds.zip(&b.cumulative) {
            let _ = writeln!(s, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
        }
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(s, "{name}_sum{braces} {}\n{name}_count{braces} {}", b.sum, b.count);
    }
}

/// Label values are names the bus validated, but escape anyway: a broken line breaks a scrape.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A family labelled by tenant, only when tenant labels are on: `values` (read only then) cut
/// to the configured number of tenants. `what`: name, help, type.
fn by_tenant(app: &App, s: &mut String, what: (&str, &str, &str), values: impl FnOnce() -> BTreeMap<String, u64>) {
    if app.metrics_config.tenant_labels {
        let rows = capped(values(), app.metrics_config.max_tenants);
        family(s, what.0, what.1, what.2, rows.into_iter().map(|(t, n)| (format!("tenant=\"{}\"", esc(&t)), n)));
    }
}

/// `tenant → value` cut to the `max` largest by value (ties by name), the rest summed as `_other`.
pub fn capped(values: BTreeMap<String, u64>, max: usize) -> Vec<(String, u64)> {
    let mut sorted: Vec<(String, u64)> = values.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if sorted.len() > max {
        let other: u64 = sorted.drain(max..).map(|(_, v)| v).sum();
        sorted.push(("_other".to_owned(), other));
    }
    sorted
}

fn publishes(app: &App, s: &mut String) {
    let counters = app.bus.hub().counters();
    let mut by_type: BTreeMap<&str, u64> = BTreeMap::new();
    for c in counters.by_tenant.values() {
        for (ty, n) in &c.by_type {
            *by_type.entry(ty.as_str()).or_default() += n;
        }
    }
    let help = "Events committed, by type (all tenants).";
    family(
        s,
        "switchyard_published_total",
        help,
        "counter",
        by_type.into_iter().map(|(t, n)| (format!("type=\"{}\"", esc(t)), n)),
    );
    let totals = || counters.by_tenant.iter().map(|(t, c)| (t.clone(), c.total)).collect();
    let help = "Events committed, by tenant (opt-in; capped).";
    by_tenant(app, s, ("switchyard_tenant_published_total", help, "counter"), totals);
    let rejected = app.bus.rejections().into_iter().map(|(code, n)| (format!("reason=\"{code}\""), n));
    family(s, "switchyard_publish_rejected_total", "Events refused, by reason (the error code).", "counter", rejected);
    single(
        s,
        "switchyard_http_published_total",
        "Events published over HTTP.",
        "counter",
        load(&app.metrics.http_published),
    );
}

fn deliveries(app: &App, s: &mut String) {
    let d = app.bus.deliveries();
    let lag = Transport::ALL.map(|t| (format!("transport=\"{}\"", t.as_str()), d.lag(t)));
    let help = "Publish to write: SSE once per run of frames a stream writes, gRPC one in 32 deliveries per stream.";
    histogram(s, "switchyard_delivery_lag_seconds", help, lag);
    let open =
        d.open().into_iter().map(|((t, ch), n)| (format!("transport=\"{}\",channel=\"{}\"", t.as_str(), esc(&ch)), n));
    let help = "Open subscriptions by transport and channel (jobs/* for every job; * for all channels).";
    family(s, "switchyard_subscriptions", help, "gauge", open);
    let subs = app.bus.subscribers();
    single(s, "switchyard_subscribers", "Open subscriptions (SSE and gRPC).", "gauge", subs.current);
    single(s, "switchyard_subscribers_peak", "Most subscriptions open at once.", "gauge", subs.peak);
}

fn log(app: &App, s: &mut String) {
    let log = app.bus.log().stats();
    single(s, "switchyard_log_head_id", "Newest event id.", "gauge", log.head.get());
    single(s, "switchyard_log_oldest_id", "Oldest event id held.", "gauge", log.oldest.get());
    single(s, "switchyard_log_events", "Events held.", "gauge", log.stored);
    if let Some(tail) = log.tail {
        let help = "1 while this node's tail follows the shared stream (JetStream), 0 while it is down.";
        single(s, "switchyard_log_tail_following", help, "gauge", u64::from(tail.following));
        let help = "Events stored in the shared stream that this node has not yet handed to its subscribers.";
        single(s, "switchyard_log_tail_behind_events", help, "gauge", tail.behind);
    }
    if let Some(bytes) = log.size_bytes {
        single(s, "switchyard_log_size_bytes", "The log's file size on disk.", "gauge", bytes);
    }
    if let Some(commits) = log.commits {
        let help = "Durable commits (a group commit, with its fsync; or a deferred fsync).";
        histogram(s, "switchyard_log_commit_seconds", help, [(String::new(), commits)]);
    }
}

fn edge(app: &App, s: &mut String) {
    let m = &app.metrics;
    let conns = app.limits.stats();
    single(s, "switchyard_sse_connections", "Open SSE connections.", "gauge", conns.current);
    single(s, "switchyard_sse_connections_peak", "Most SSE connections open at once.", "gauge", conns.peak);
    single(s, "switchyard_sse_connections_total", "SSE connections accepted.", "counter", conns.total);
    let (_, written) = app.streams.writers.counts();
    let help = "Live SSE streams written by the writer tasks.";
    single(s, "switchyard_sse_writer_streams", help, "gauge", written);
    let open = || conns.by_tenant.iter().map(|(t, n)| (t.clone(), *n as u64)).collect();
    let help = "Open SSE connections by tenant (opt-in; capped).";
    by_tenant(app, s, ("switchyard_tenant_sse_connections", help, "gauge"), open);
    let t = &app.access.tickets;
    let counters: [(&str, &str, &AtomicU64); 6] = [
        ("switchyard_sse_frames_total", "Event frames written to SSE clients.", &m.sse_frames),
        ("switchyard_sse_evicted_total", "SSE clients dropped for falling behind.", &m.sse_evicted),
        ("switchyard_sse_resumes_total", "SSE streams that resumed after an id.", &m.sse_resumes),
        ("switchyard_sse_gaps_total", "SSE resumes that could not be complete (a gap).", &m.sse_gaps),
        ("switchyard_tickets_issued_total", "SSE tickets issued.", &t.issued),
        ("switchyard_tickets_redeemed_total", "SSE tickets redeemed.", &t.redeemed),
    ];
    for (name, help, v) in counters {
        single(s, name, help, "counter", load(v));
    }
    let refused: Vec<(String, u64)> =
        t.refused.lock().map(|m| m.iter().map(|(r, n)| (format!("reason=\"{r}\""), *n)).collect()).unwrap_or_default();
    family(s, "switchyard_tickets_refused_total", "SSE tickets refused, by reason.", "counter", refused);
    let hooks: Vec<(String, u64)> = m
        .webhooks
        .lock()
        .map(|w| w.iter().map(|((src, out), n)| (format!("source=\"{}\",outcome=\"{out}\"", esc(src)), *n)).collect())
        .unwrap_or_default();
    family(s, "switchyard_webhook_deliveries_total", "Webhook deliveries by source and outcome.", "counter", hooks);
}

fn connectors(app: &App, s: &mut String) {
    let runs = app.connectors.runs();
    let outcomes = runs.iter().flat_map(|(src, r)| {
        [
            (format!("source=\"{}\",outcome=\"ok\"", esc(src)), r.ok),
            (format!("source=\"{}\",outcome=\"failed\"", esc(src)), r.failed),
        ]
    });
    family(s, "switchyard_connector_syncs_total", "Connector sync runs by source and outcome.", "counter", outcomes);
    let errors = runs.iter().flat_map(|(src, r)| {
        r.errors.iter().map(move |(code, n)| (format!("source=\"{}\",code=\"{code}\"", esc(src)), *n))
    });
    family(
        s,
        "switchyard_connector_sync_errors_total",
        "Failed connector syncs by source and error code.",
        "counter",
        errors,
    );
    let durations = runs.iter().map(|(src, r)| (format!("source=\"{}\"", esc(src)), r.durations.clone()));
    histogram(s, "switchyard_connector_sync_duration_seconds", "Connector sync run durations, by source.", durations);
    // Across a source's tenants, the stalest: an alert on it fires when any tenant's is stale.
    let mut oldest: BTreeMap<String, i64> = BTreeMap::new();
    let mut failing: BTreeMap<String, u64> = BTreeMap::new();
    for ((_, src), latest) in app.connectors.latest() {
        let at = latest.status.last_success.as_ref().map_or(0, |t| t.seconds);
        oldest.entry(src.clone()).and_modify(|v| *v = (*v).min(at)).or_insert(at);
        *failing.entry(src).or_default() += u64::from(!latest.status.ok);
    }
    let help = "Unix time of the last successful sync: the oldest across the source's tenants (0: none yet).";
    family(
        s,
        "switchyard_connector_last_success_timestamp_seconds",
        help,
        "gauge",
        oldest.into_iter().map(|(src, t)| (format!("source=\"{}\"", esc(&src)), t)),
    );
    let help = "Tenants whose latest sync of the source failed.";
    family(
        s,
        "switchyard_connector_failing",
        help,
        "gauge",
        failing.into_iter().map(|(src, n)| (format!("source=\"{}\"", esc(&src)), n)),
    );
}

/// Most endpoints named in the per-endpoint families; the rest are summed as `_other`.
const MAX_ENDPOINT_LABELS: usize = 100;

/// Outbound delivery: counts by outcome and reason, attempts by their number, and lag and owed
/// events per endpoint this node delivers for (endpoint ids are random: they name no tenant).
fn outbound(app: &App, s: &mut String) {
    let Some(o) = &app.outbound else { return };
    let m = o.metrics();
    single(
        s,
        "switchyard_outbound_delivered_total",
        "Events (or alert groups) delivered with a 2xx (or SMTP success).",
        "counter",
        load(&m.delivered),
    );
    family(
        s,
        "switchyard_outbound_failures_total",
        "Failed attempts, by reason.",
        "counter",
        m.failures().map(|(r, n)| (format!("reason=\"{r}\""), n)),
    );
    attempt_numbers(s, m.attempts());
    let head = app.bus.log().stats().head.0;
    let local = o.local();
    let lag = |f: &dyn Fn(&switchyard_outbound::Local) -> u64| {
        let mut out: Vec<(String, u64)> =
            local.iter().take(MAX_ENDPOINT_LABELS).map(|l| (format!("endpoint=\"{}\"", l.id), f(l))).collect();
        let rest: u64 = local.iter().skip(MAX_ENDPOINT_LABELS).map(f).sum();
        if local.len() > MAX_ENDPOINT_LABELS {
            out.push(("endpoint=\"_other\"".into(), rest));
        }
        out
    };
    family(
        s,
        "switchyard_outbound_lag_events",
        "Events in the history after an endpoint's cursor (an upper bound on what it still owes).",
        "gauge",
        lag(&|l| head.saturating_sub(l.cursor.0)),
    );
    family(
        s,
        "switchyard_outbound_owed_events",
        "Events an endpoint owes outside its cursor's order (retries, replays).",
        "gauge",
        lag(&|l| l.owed as u64),
    );
    let failing = local.iter().filter(|l| l.failing).count();
    family(
        s,
        "switchyard_outbound_endpoints",
        "Endpoints this node delivers for, by state.",
        "gauge",
        [("state=\"healthy\"".to_owned(), local.len() - failing), ("state=\"retrying\"".to_owned(), failing)],
    );
}

/// The attempts histogram: `(attempt number, count)` rows, the last one `N+` for the rest.
fn attempt_numbers(s: &mut String, rows: impl Iterator<Item = (String, u64)>) {
    let _ = writeln!(
        s,
        "# HELP switchyard_outbound_attempt_number Attempts by their number in the retry ladder (1 = first try).\n# TYPE switchyard_outbound_attempt_number histogram"
    );
    let mut cumulative = 0;
    let mut sum = 0;
    for (label, n) in rows {
        cumulative += n;
        sum += n * label.trim_end_matches('+').parse::<u64>().unwrap_or(10);
        let le = if label.ends_with('+') { "+Inf".to_owned() } else { label };
        let _ = writeln!(s, "switchyard_outbound_attempt_number_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(
        s,
        "switchyard_outbound_attempt_number_sum {sum}\nswitchyard_outbound_attempt_number_count {cumulative}"
    );
}

fn process(s: &mut String) {
    let p = crate::features::ops::process::Usage::now();
    single(s, "process_cpu_seconds_total", "User and system CPU time.", "counter", p.cpu_secs);
    single(s, "process_resident_memory_bytes", "Resident memory.", "gauge", p.rss_bytes);
    single(s, "process_open_fds", "Open file descriptors.", "gauge", p.open_fds);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_beyond_the_cap_are_summed_as_other() {
        let values = [("a", 5), ("b", 9), ("c", 1), ("d", 5)].map(|(t, n)| (t.to_owned(), n)).into_iter().collect();
        let got = capped(values, 2);
        assert_eq!(got, [("b".to_owned(), 9), ("a".to_owned(), 5), ("_other".to_owned(), 6)]);
        let few: BTreeMap<String, u64> = [("a".to_owned(), 1)].into_iter().collect();
        assert_eq!(capped(few.clone(), 2), [("a".to_owned(), 1)]);
        assert_eq!(capped(few, 0), [("_other".to_owned(), 1)], "a cap of 0 names no tenant");
    }

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        let h = switchyard::metrics::Histogram::new(switchyard::metrics::LAG_BUCKETS);
        for secs in [0.0005, 0.003, 0.2] {
            h.observe(secs);
        }
        let mut out = String::new();
        histogram(&mut out, "lag_seconds", "Lag.", [("transport=\"sse\"".to_owned(), h.read())]);
        assert!(out.contains("lag_seconds_bucket{transport=\"sse\",le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("lag_seconds_bucket{transport=\"sse\",le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("lag_seconds_bucket{transport=\"sse\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("lag_seconds_count{transport=\"sse\"} 3\n"), "{out}");
        assert!(out.contains("lag_seconds_sum{transport=\"sse\"} 0.2035\n"), "{out}");
    }
}
