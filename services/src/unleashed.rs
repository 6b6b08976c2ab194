//! Unleashed, through its REST API: `api-auth-id`, and `api-auth-signature` = base64
//! HMAC-SHA256 of the query string only (no path, no `?`; empty when there is none), keyed with
//! the API key; `client-type` names us. Pages are in the path (`/StockOnHand/2?pageSize=200`).
//! Per run: stock on hand (items, value, items under their product's minimum level), assemblies
//! (active, completed today; `unleashed:production-updated` when one changes status), and a
//! low-stock alert once per crossing.
//!
//! Against plan: an assembly is planned for its `AssembleBy` date and produces its `Quantity`
//! when completed (Unleashed records no partial output). Yield is the quantity completed of what
//! was due by now; each assembly past its date and not completed is a shortfall, raised once as an
//! `unleashed:quality-alert`. Utilisation is today's completed quantity over `daily_capacity`,
//! which only the operator knows: without it the figure stays empty (docs/connectors.md).

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use switchyard::proto::v1::{
    ProductionUpdated, QualityAlert, QualityIssue, StockItem, UnleashedSyncCompleted, event::Payload,
};
use time::OffsetDateTime;

use crate::{
    connector::{Connector, Run, Source, SyncError},
    http::Http,
    money::{self, decimal},
    state::{Crossings, StateFile},
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnleashedConfig {
    pub tenant: String,
    pub api_id: String,
    pub api_key: String,
    /// `account/app`, lowercase, no spaces.
    #[serde(default = "client_type")]
    pub client_type: String,
    #[serde(default = "api_url")]
    pub api_url: String,
    /// The account's base currency (Unleashed reports values in it).
    pub currency: String,
    #[serde(default = "page_size")]
    pub page_size: u32,
    /// Units the plant can assemble per day, for utilisation (unset: not computed).
    #[serde(default)]
    pub daily_capacity: Option<u64>,
}

fn client_type() -> String {
    "switchyard/ingest".into()
}
fn api_url() -> String {
    "https://api.unleashedsoftware.com".into()
}
fn page_size() -> u32 {
    200
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Product codes under their minimum level.
    low: Crossings,
    /// Assembly guid → last status seen.
    assemblies: BTreeMap<String, String>,
    /// Assemblies past their date and not completed (a quality alert fires once per crossing).
    #[serde(default)]
    overdue: Crossings,
}

/// The signature Unleashed expects for `query` (the part after `?`, exactly as sent).
pub fn signature(api_key: &str, query: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(api_key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(query.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

pub struct Unleashed {
    config: UnleashedConfig,
    http: Http,
    state: StateFile,
}

impl Unleashed {
    pub fn new(config: UnleashedConfig, http: Http, state: StateFile) -> Self {
        Self { config, http, state }
    }

    /// Every item of a paginated endpoint.
    async fn all(&self, what: &str, endpoint: &str) -> Result<Vec<Value>, SyncError> {
        let mut items = Vec::new();
        for page in 1.. {
            // Built once and used for both the URL and the signature, so they always match.
            let query = format!("pageSize={}", self.config.page_size);
            let url = format!("{}/{endpoint}/{page}?{query}", self.config.api_url);
            let sig = signature(&self.config.api_key, &query);
            let body: Value = self
                .http
                .json(what, || {
                    self.http
                        .client()
                        .get(&url)
                        .header("api-auth-id", &self.config.api_id)
                        .header("api-auth-signature", &sig)
                        .header("client-type", &self.config.client_type)
                        .header("Accept", "application/json")
                        .header("Content-Type", "application/json")
                })
                .await?;
            let page_items =
                body["Items"].as_array().ok_or_else(|| SyncError::Malformed(format!("{what}: no Items array")))?;
            items.extend(page_items.iter().cloned());
            let pages = body["Pagination"]["NumberOfPages"].as_u64().unwrap_or(1);
            if page >= pages {
                break;
            }
        }
        Ok(items)
    }
}

/// Unleashed dates are `/Date(1700000000000)/` (milliseconds since the epoch).
fn ms_date(v: &Value) -> Option<OffsetDateTime> {
    let s = v.as_str()?;
    let ms: i64 = s.strip_prefix("/Date(")?.split([')', '+', '-']).next()?.parse().ok()?;
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).ok()
}

impl Connector for Unleashed {
    fn source(&self) -> Source {
        Source::Unleashed
    }

    fn tenant(&self) -> &str {
        &self.config.tenant
    }

    async fn sync(&mut self, run: &Run) -> Result<(), SyncError> {
        let mut state: State = self.state.load().map_err(SyncError::State)?;
        run.jobs.progress("products", 10, "reading minimum stock levels").await;
        let products = self.all("Unleashed products", "Products").await?;
        let minimum: BTreeMap<String, Decimal> = products
            .iter()
            .filter_map(|p| Some((p["ProductCode"].as_str()?.to_owned(), decimal(&p["MinStockAlertLevel"])?)))
            .filter(|(_, min)| *min > Decimal::ZERO)
            .collect();

        run.jobs.progress("stock", 35, "reading stock on hand").await;
        let stock = self.all("Unleashed stock on hand", "StockOnHand").await?;
        let (mut value, mut low_now) = (Decimal::ZERO, Vec::new());
        for s in &stock {
            let code = s["ProductCode"].as_str().unwrap_or_default().to_owned();
            let on_hand = decimal(&s["QtyOnHand"])
                .ok_or_else(|| SyncError::Malformed(format!("Unleashed stock on hand: {code} has no QtyOnHand")))?;
            value += decimal(&s["TotalCost"]).unwrap_or_default();
            if let Some(min) = minimum.get(&code).filter(|min| on_hand < **min) {
                let item = StockItem {
                    sku: code.clone(),
                    name: s["ProductDescription"].as_str().unwrap_or_default().to_owned(),
                    on_hand: whole(on_hand),
                    threshold: whole(*min),
                };
                low_now.push((code, item));
            }
        }

        run.jobs.progress("assemblies", 65, "reading assemblies").await;
        let assemblies = self.all("Unleashed assemblies", "Assemblies").await?;
        let today = OffsetDateTime::now_utc().date();
        let now = OffsetDateTime::now_utc();
        let (mut active, mut completed_today, mut completed_today_qty) = (0u32, 0u32, 0i64);
        let (mut due_qty, mut due_done_qty) = (0i64, 0i64);
        let mut overdue_now = Vec::new();
        let mut events = Vec::new();
        let mut seen = BTreeMap::new();
        for a in &assemblies {
            let guid = a["Guid"].as_str().unwrap_or_default().to_owned();
            let status = a["AssemblyStatus"].as_str().unwrap_or_default().to_owned();
            let qty = decimal(&a["Quantity"]).map(whole).unwrap_or(0);
            let done = status == "Completed";
            match status.as_str() {
                "Completed" => {
                    if ms_date(&a["AssembledDate"]).is_some_and(|d| d.date() == today) {
                        completed_today += 1;
                        completed_today_qty += qty;
                    }
                }
                "Deleted" => {}
                _ => active += 1,
            }
            if status != "Deleted"
                && let Some(due) = ms_date(&a["AssembleBy"]).filter(|d| *d <= now)
            {
                due_qty += qty;
                if done {
                    due_done_qty += qty;
                } else {
                    let days_late = (now - due).whole_days();
                    let issue = QualityIssue {
                        assembly_id: a["AssemblyNumber"].as_str().unwrap_or(&guid).to_owned(),
                        product: a["Product"]["ProductCode"].as_str().unwrap_or_default().to_owned(),
                        planned: qty,
                        produced: 0,
                        severity: if days_late >= 2 { "High" } else { "Medium" }.into(),
                    };
                    overdue_now.push((guid.clone(), issue));
                }
            }
            if state.assemblies.get(&guid) != Some(&status) {
                events.push(run.event(
                    &guid,
                    Payload::UnleashedProductionUpdated(ProductionUpdated {
                        assembly_id: guid.clone(),
                        assembly_number: a["AssemblyNumber"].as_str().unwrap_or_default().to_owned(),
                        status: status.clone(),
                        product: a["Product"]["ProductCode"].as_str().unwrap_or_default().to_owned(),
                        planned_quantity: qty,
                        produced_quantity: if status == "Completed" { qty } else { 0 },
                    }),
                ));
            }
            seen.insert(guid, status);
        }

        let overdue_count = overdue_now.len() as u32;
        let entered: Vec<QualityIssue> = state.overdue.update(overdue_now).into_iter().map(|(_, i)| i).collect();
        if !entered.is_empty() {
            let critical = entered.iter().filter(|i| i.severity == "High").count() as u32;
            events.push(run.event(
                "production",
                Payload::UnleashedQualityAlert(QualityAlert {
                    count: entered.len() as u32,
                    critical_issues: critical,
                    issues: entered,
                }),
            ));
        }
        let percent = |part: i64, whole: i64| format!("{:.1}", part as f64 * 100.0 / whole as f64);
        let low_items = low_now.len() as u32;
        let entered = state.low.update(low_now).into_iter().map(|(_, item)| item).collect();
        if let Some(alert) = crate::connector::low_stock_alert(entered) {
            events.push(run.event("stock", Payload::UnleashedLowStockAlert(alert)));
        }
        events.push(run.event(
            "unleashed",
            Payload::UnleashedSyncCompleted(UnleashedSyncCompleted {
                run_id: run.run_id.clone(),
                active_assemblies: active,
                completed_today,
                yield_percent: if due_qty > 0 { percent(due_done_qty, due_qty) } else { String::new() },
                utilization_percent: match self.config.daily_capacity {
                    Some(cap) if cap > 0 => percent(completed_today_qty, cap as i64),
                    _ => String::new(),
                },
                stock_items: stock.len() as u32,
                stock_value: Some(money::money(value, &self.config.currency)),
                low_stock_items: low_items,
                quality_alerts: overdue_count,
            }),
        ));
        run.publish(events).await?;
        state.assemblies = seen;
        self.state.save(&state).map_err(SyncError::State)?;
        Ok(())
    }
}

/// Whole units, rounding toward zero (stock levels are reported with decimals).
fn whole(d: Decimal) -> i64 {
    i64::try_from(d.trunc()).unwrap_or(if d.is_sign_negative() { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_over_the_query_string_only() {
        // Vectors from ../shared/platform-specs.md §4.1 (recomputed there in Python).
        let key = "UNLEASHED_TEST_API_KEY_do_not_use";
        assert_eq!(signature(key, ""), "BsU2p/gJi/O3rdY0T9f3Zo5pu1iT17l+d9qJtJS/oV8=");
        assert_eq!(signature(key, "customerCode=ACME"), "MSnVlTcHai6Ncnu3OoXj4xxw/sZCVvpx1gqMjxoChHU=");
        assert_eq!(
            signature(key, "pageSize=500&modifiedSince=2026-01-01"),
            "hzUYfNTD8HhDm/ymbPIkZJwQNiKkrqmp+npEu9OtEXw="
        );
        assert_eq!(ms_date(&Value::from("/Date(1700000000000)/")).unwrap().unix_timestamp(), 1_700_000_000);
        assert_eq!(whole(Decimal::new(495, 1)), 49);
    }
}
