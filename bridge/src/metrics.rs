//! Counters only the HTTP edge knows about, and the recent webhook deliveries the operator
//! console lists. Its own module so every feature can count without depending on the others;
//! `prometheus` renders them with the bus's own.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Mutex, atomic::AtomicU64},
};

use serde::Serialize;
use switchyard::{catalog::Catalog, proto::v1::Event};

/// Counters only the edge knows about.
#[derive(Debug, Default)]
pub struct Metrics {
    pub sse_frames: AtomicU64,
    pub sse_evicted: AtomicU64,
    pub http_published: AtomicU64,
    /// SSE streams that resumed after an id, and those whose resume had a gap.
    pub sse_resumes: AtomicU64,
    pub sse_gaps: AtomicU64,
    /// Webhook deliveries by source and outcome (`stored`, `answered`, or the refusal's code).
    /// Sources are configured names and outcomes a fixed set, so the label space is bounded.
    pub webhooks: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// The latest [`RECENT`] webhook deliveries of each tenant (and of those refused before a
    /// tenant was known), newest last: one tenant's flood of deliveries never pushes another's
    /// out of the console. Tenants here are the configured sources', so the map is bounded.
    pub recent_webhooks: Mutex<BTreeMap<Option<String>, VecDeque<Seen>>>,
}

/// Webhook deliveries the console keeps, per tenant.
pub const RECENT: usize = 50;

/// One webhook delivery as an operator sees it: when, from which source, what came of it and
/// why, which tenant and event types it carried, and the ids it was stored as.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    pub at_ms: u64,
    pub source: String,
    /// `stored`, `answered`, `not_stored`, or the refusal's code.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub types: Vec<String>,
    pub ids: Vec<String>,
}

/// The longest reason kept: refusals can quote what the sender sent.
const REASON_CHARS: usize = 200;

impl Seen {
    pub fn new(source: &str) -> Self {
        Self {
            at_ms: switchyard::log::now_ms(),
            source: source.to_owned(),
            outcome: "answered",
            reason: None,
            tenant: None,
            types: Vec::new(),
            ids: Vec::new(),
        }
    }

    /// The tenant and the distinct event types of what the delivery carries.
    pub fn events(&mut self, events: &[Event]) {
        self.tenant = events.first().map(|e| e.tenant.clone());
        for e in events {
            let name = e.payload.as_ref().and_then(|p| Catalog::global().by_field(p.field_number()));
            if let Some(spec) = name
                && !self.types.iter().any(|t| **t == *spec.name)
            {
                self.types.push(spec.name.to_string());
            }
        }
    }

    /// Why it was refused. Refusals can quote the sender: control characters are dropped, so a
    /// reason cannot forge a line in a text log.
    pub fn reason(&mut self, why: &str) {
        self.reason = Some(why.chars().filter(|c| !c.is_control()).take(REASON_CHARS).collect());
    }
}

impl Metrics {
    /// Counts a webhook delivery by source and outcome, and keeps it among the recent ones.
    pub fn webhook(&self, seen: Seen) {
        if let Ok(mut m) = self.webhooks.lock() {
            *m.entry((seen.source.clone(), seen.outcome)).or_default() += 1;
        }
        if let Ok(mut recent) = self.recent_webhooks.lock() {
            let recent = recent.entry(seen.tenant.clone()).or_default();
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(seen);
        }
    }

    /// The recent deliveries `allowed` (by tenant; `None`: refused before a tenant was known),
    /// newest first, at most [`RECENT`].
    pub fn recent_webhooks(&self, allowed: impl Fn(Option<&str>) -> bool) -> Vec<Seen> {
        let Ok(recent) = self.recent_webhooks.lock() else { return Vec::new() };
        let mut seen: Vec<Seen> =
            recent.iter().filter(|(t, _)| allowed(t.as_deref())).flat_map(|(_, r)| r.iter().rev().cloned()).collect();
        seen.sort_by_key(|w| std::cmp::Reverse(w.at_ms));
        seen.truncate(RECENT);
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_bounded_single_lines_and_the_recent_list_keeps_the_newest() {
        let m = Metrics::default();
        for i in 0..RECENT + 5 {
            let mut seen = Seen::new("billing");
            seen.outcome = "invalid_signature";
            seen.reason(&format!("{i}: forged\nINFO fake line{}", "x".repeat(500)));
            m.webhook(seen);
        }
        let recent = m.recent_webhooks(|_| true);
        assert_eq!(recent.len(), RECENT);
        let newest = recent[0].reason.clone().unwrap();
        assert!(newest.starts_with(&format!("{}: forged", RECENT + 4)), "{newest}");
        assert!(!newest.contains('\n') && newest.chars().count() == REASON_CHARS, "{newest}");
        assert_eq!(m.webhooks.lock().unwrap()[&("billing".to_owned(), "invalid_signature")], (RECENT + 5) as u64);
    }

    #[test]
    fn one_tenants_flood_of_deliveries_leaves_anothers_in_the_console() {
        let m = Metrics::default();
        let mut mine = Seen::new("shopify");
        mine.tenant = Some("acme".into());
        m.webhook(mine);
        for _ in 0..1_000 {
            let mut flood = Seen::new("billing");
            flood.tenant = Some("flood".into());
            m.webhook(flood);
        }
        let acme = m.recent_webhooks(|t| t == Some("acme"));
        assert_eq!(acme.len(), 1, "acme's delivery is still listed");
        assert_eq!(m.recent_webhooks(|t| t == Some("flood")).len(), RECENT);
    }
}
