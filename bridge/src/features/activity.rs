//! What the bus is doing now, as the operator console shows it: delivery lag, open
//! subscriptions, the log's size and commit latency, each connector's latest sync, the recent
//! webhook deliveries and ticket counts. It is the `activity` part of `GET /api/sse/status`
//! (admin), read from the same counters `/metrics` renders.
//!
//! A tenant's admin sees its own tenant's connectors and webhook deliveries only, and nothing
//! that sums over tenants.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use switchyard::{
    auth::TenantScope,
    metrics::{Buckets, Transport},
};

use crate::app::App;

/// The activity `scope` may see.
pub fn activity(app: &App, scope: &TenantScope) -> Value {
    let mine = |tenant: &str| match scope {
        TenantScope::All => true,
        TenantScope::One(t) => t.as_str() == tenant,
    };
    let connectors: Vec<Value> = app
        .connectors
        .latest()
        .into_iter()
        .filter(|((tenant, _), _)| mine(tenant))
        .map(|((tenant, source), l)| {
            let s = &l.status;
            json!({
                "tenant": tenant, "source": source, "id": l.id.to_string(), "ok": s.ok, "runId": s.run_id,
                "lastSuccess": s.last_success,
                "failingSince": s.failing_since,
                "nextRun": s.next_run,
                "durationSecs": s.duration.as_ref().map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9),
                "error": s.error, "code": s.code, "missing": s.missing,
            })
        })
        .collect();
    // A refusal before verification has no tenant: only the system admin sees those.
    let webhooks: Vec<Value> = app
        .metrics
        .recent_webhooks(|t| t.is_some_and(&mine) || matches!(scope, TenantScope::All))
        .iter()
        .map(|w| json!(w))
        .collect();
    let mut out = json!({ "connectors": connectors, "webhooks": webhooks });
    if matches!(scope, TenantScope::All) {
        out["delivery"] = delivery(app);
    }
    out
}

/// Lag, subscriptions, the log and tickets: sums over every tenant.
fn delivery(app: &App) -> Value {
    let d = app.bus.deliveries();
    let lag: serde_json::Map<String, Value> =
        Transport::ALL.iter().map(|t| (t.as_str().to_owned(), quantiles(&d.lag(*t)))).collect();
    let subscriptions: Vec<Value> = d
        .open()
        .into_iter()
        .map(|((t, channel), open)| json!({ "transport": t.as_str(), "channel": channel, "open": open }))
        .collect();
    let log = app.bus.log().stats();
    let t = &app.access.tickets;
    json!({
        "lag": lag,
        "subscriptions": subscriptions,
        "log": {
            "sizeBytes": log.size_bytes,
            "commit": log.commits.as_ref().map(quantiles),
        },
        "tickets": {
            "issued": t.issued.load(Ordering::Relaxed),
            "redeemed": t.redeemed.load(Ordering::Relaxed),
            "refused": t.refused.lock().map(|m| m.values().sum::<u64>()).unwrap_or(0),
        },
    })
}

/// Count and the p50/p99 bucket bounds, in seconds (`null` when nothing was observed; a
/// string `"+Inf"` above the last bound).
fn quantiles(b: &Buckets) -> Value {
    let q = |q: f64| match b.quantile(q) {
        None => Value::Null,
        Some(v) if v.is_infinite() => json!("+Inf"),
        Some(v) => json!(v),
    };
    json!({ "count": b.count, "p50": q(0.5), "p99": q(0.99) })
}
