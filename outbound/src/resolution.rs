//! Which event says an alert's condition cleared: the pairs the catalog's types imply.
//!
//! People sent an alert want to hear when it is over ("resolved"), not to guess from silence.
//! An alert stays open on an endpoint until an event of its clearing type arrives whose payload
//! says the condition is gone; only then is a "resolved" message sent, once. A type with no pair
//! here never resolves: an operator dismisses it on the dashboard.

use serde_json::Value;
use switchyard::catalog::Catalog;

/// One alert type and the event that clears it.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The alert, e.g. `amazon:low-stock-alert`.
    pub alert: String,
    /// The type whose events may clear it, e.g. `amazon:sync-completed`.
    pub by: String,
    /// What the clearing event must say.
    when: Condition,
    /// The resolved message's title.
    pub title: String,
}

#[derive(Debug, Clone, Copy)]
enum Condition {
    /// The boolean field is true.
    True(&'static str),
    /// The count field is zero (proto3 JSON leaves a zero out: a missing count is zero).
    Zero(&'static str),
}

impl Pair {
    /// Whether `data` (the clearing event's payload) says the condition cleared.
    pub fn cleared(&self, data: &Value) -> bool {
        match self.when {
            Condition::True(field) => data.get(field).and_then(Value::as_bool) == Some(true),
            Condition::Zero(field) => data.get(field).map_or(Some(0), Value::as_u64) == Some(0),
        }
    }
}

/// Every pair: each platform's `sync-status` (when `ok`) clears its `sync-error`; a completed
/// Amazon or Unleashed sync that counts no low stock clears that platform's low-stock alert
/// (Shopify's alerts come from webhooks, per item, with no run that counts them all).
pub fn pairs() -> Vec<Pair> {
    let catalog = Catalog::global();
    let known = |name: &str| catalog.by_name(name).is_some();
    let mut pairs: Vec<Pair> = catalog
        .specs()
        .into_iter()
        .filter_map(|s| {
            let platform = s.name.strip_suffix(":sync-error")?;
            let status = format!("{platform}:sync-status");
            known(&status).then(|| Pair {
                alert: s.name.to_string(),
                by: status,
                when: Condition::True("ok"),
                title: format!("Resolved: {platform} syncs are succeeding again"),
            })
        })
        .collect();
    let low_stock = [
        ("amazon", "lowStockSkus", "no Amazon SKU is below its reorder point"),
        ("unleashed", "lowStockItems", "no Unleashed product is below its minimum stock level"),
    ];
    for (platform, count, title) in low_stock {
        let (alert, by) = (format!("{platform}:low-stock-alert"), format!("{platform}:sync-completed"));
        if known(&alert) && known(&by) {
            pairs.push(Pair { alert, by, when: Condition::Zero(count), title: format!("Resolved: {title}") });
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pair(alert: &str) -> Pair {
        pairs().into_iter().find(|p| p.alert == alert).unwrap_or_else(|| panic!("no pair for {alert}"))
    }

    #[test]
    fn every_platform_sync_error_is_cleared_by_its_status_saying_ok() {
        for platform in ["shopify", "xero", "amazon", "unleashed"] {
            let p = pair(&format!("{platform}:sync-error"));
            assert_eq!(p.by, format!("{platform}:sync-status"));
            assert!(p.cleared(&json!({"ok": true})));
            assert!(!p.cleared(&json!({"ok": false})));
            assert!(!p.cleared(&json!({})), "a status that does not say ok clears nothing");
        }
    }

    #[test]
    fn low_stock_clears_when_a_completed_sync_counts_none() {
        let amazon = pair("amazon:low-stock-alert");
        assert_eq!(amazon.by, "amazon:sync-completed");
        assert!(!amazon.cleared(&json!({"lowStockSkus": 3})));
        assert!(amazon.cleared(&json!({"lowStockSkus": 0})));
        assert!(amazon.cleared(&json!({"totalSkus": 40})), "proto3 JSON leaves a zero count out");
        let unleashed = pair("unleashed:low-stock-alert");
        assert!(!unleashed.cleared(&json!({"lowStockItems": 5})));
        assert!(unleashed.cleared(&json!({"stockItems": 420})));
        assert!(pairs().iter().all(|p| p.alert != "shopify:low-stock-alert"));
    }
}
