//! Unleashed, through its REST API: `api-auth-id`, and `api-auth-signature` = base64
//! HMAC-SHA256 of the query string only (no path, no `?`; empty when there is none), keyed with
//! the API key; `client-type` names us. Pages are in the path (`/StockOnHand/2?pageSize=200`).
//! Per run: stock on hand (items, value, items under their product's minimum level), assemblies
//! (active, completed today; `unleashed:production-updated` when one changes status), and a
//! low-stock alert once per crossing.
//!
//! Production, recomputed whole each run, "today" in the tenant's timezone:
//! - completed today: assemblies `Completed` whose completion date is today. The date's field
//!   name is not in Unleashed's published docs: `AssembledDate` (client libraries), then
//!   `CompletedDate`, then `AssemblyDate` (the platform's Assembly Date, which Completed
//!   assemblies carry) is read; a completed assembly with none makes the figure unavailable and
//!   raises a visible `unleashed:sync-error` (`missing_field`), never a silent 0;
//! - yield: of the quantity planned on assemblies completed today, the share produced. Produced
//!   is the planned `Quantity` less any short quantity the platform reports (`AssembledQuantity`
//!   or `ProducedQuantity` below `Quantity`); wastage recorded on a component line
//!   (`AssemblyLines[].WastageQuantity`) or a short quantity is the yield shortfall operators mean,
//!   raised once per assembly as an `unleashed:quality-alert`;
//! - overdue: assemblies past their `AssembleBy` date and not completed, a figure of its own;
//! - utilisation: today's completed quantity over `daily_capacity`, which only the operator
//!   knows: without it the figure stays empty (docs/connectors.md).

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
    connector::{Connector, Run, SyncError},
    http::Http,
    money::{self, decimal},
    state::{Crossings, StateFile},
};

/// Field names the completion date may have (not in Unleashed's published docs; see above).
/// In this order: `AssemblyDate` (the platform's "Assembly Date") is what a Completed assembly
/// carries in practice, but an explicit assembled or completed date says it more exactly.
const COMPLETED_DATE: [&str; 3] = ["AssembledDate", "CompletedDate", "AssemblyDate"];
/// Field names a produced quantity may have, when the platform reports one below plan.
const PRODUCED_QTY: [&str; 2] = ["AssembledQuantity", "ProducedQuantity"];

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
    /// Where an operator opens an assembly, with `{guid}` (e.g. your Unleashed app URL); quality
    /// alerts link to it. Unset: no link.
    #[serde(default)]
    pub assembly_link: Option<String>,
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
    /// Completed assemblies with a yield shortfall (a quality alert fires once for each).
    #[serde(default)]
    shortfall: Crossings,
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
    async fn sync(&mut self, run: &Run) -> Result<(), SyncError> {
        let mut state: State = self.state.load().map_err(SyncError::State)?;
        run.jobs.progress("products", 10, "reading minimum stock levels").await;
        let products = self.all("Unleashed products", "Products").await?;
        run.jobs.progress("stock", 35, "reading stock on hand").await;
        let stock = self.all("Unleashed stock on hand", "StockOnHand").await?;
        let (value, low_now) = stock_levels(&products, &stock)?;

        run.jobs.progress("assemblies", 65, "reading assemblies").await;
        let assemblies = self.all("Unleashed assemblies", "Assemblies").await?;
        let p = self.production(run, &assemblies, &state.assemblies);
        let mut events = p.events;
        let mut unavailable = Vec::new();
        if let Some(reason) = &p.missing_date {
            events.push(missing_field(run, reason));
            unavailable
                .push(switchyard::proto::v1::Unavailable { figure: "completed_today".into(), reason: reason.clone() });
        }
        let quality_alerts = p.shortfall.len() as u32;
        let entered: Vec<QualityIssue> = state.shortfall.update(p.shortfall).into_iter().map(|(_, i)| i).collect();
        if !entered.is_empty() {
            let critical = entered.iter().filter(|i| i.severity == "High").count() as u32;
            let alert = QualityAlert { count: entered.len() as u32, critical_issues: critical, issues: entered };
            events.push(run.event("production", Payload::UnleashedQualityAlert(alert)));
        }
        let low_items = low_now.len() as u32;
        let entered = state.low.update(low_now).into_iter().map(|(_, item)| item).collect();
        if let Some(alert) = crate::connector::low_stock_alert(entered) {
            events.push(run.event("stock", Payload::UnleashedLowStockAlert(alert)));
        }
        events.push(run.event(
            "unleashed",
            Payload::UnleashedSyncCompleted(UnleashedSyncCompleted {
                run_id: run.run_id.clone(),
                active_assemblies: p.active,
                completed_today: p.missing_date.is_none().then_some(p.completed_today),
                yield_percent: if p.planned_today > Decimal::ZERO {
                    percent(p.produced_today, p.planned_today)
                } else {
                    String::new()
                },
                utilization_percent: match (self.config.daily_capacity, &p.missing_date) {
                    (Some(cap), None) if cap > 0 => percent(p.produced_today, Decimal::from(cap)),
                    _ => String::new(),
                },
                stock_items: stock.len() as u32,
                stock_value: Some(money::money(value, &self.config.currency)),
                low_stock_items: low_items,
                quality_alerts,
                overdue_assemblies: p.overdue,
                unavailable,
            }),
        ));
        run.publish(events).await?;
        state.assemblies = p.seen;
        self.state.save(&state).map_err(SyncError::State)?;
        Ok(())
    }
}

/// A completed assembly without a completion date, said as the sync error it is (the figure
/// it would have counted is unavailable, never a silent 0).
fn missing_field(run: &Run, reason: &str) -> switchyard::proto::v1::Event {
    let e = SyncError::Malformed(reason.to_owned());
    let mut report = run.failure("completed_today", &e, &["completed_today"]);
    if let Some(Payload::UnleashedSyncError(err)) = report.payload.as_mut() {
        err.code = "missing_field".into();
    }
    report
}

/// `part` of `whole`, percent, one decimal place.
fn percent(part: Decimal, whole: Decimal) -> String {
    let mut v = (part * Decimal::ONE_HUNDRED / whole).round_dp(1);
    v.rescale(1);
    v.to_string()
}

/// The stock's total cost and the items below their minimum (by product code).
fn stock_levels(products: &[Value], stock: &[Value]) -> Result<(Decimal, Vec<(String, StockItem)>), SyncError> {
    let minimum: BTreeMap<String, Decimal> = products
        .iter()
        .filter_map(|p| Some((p["ProductCode"].as_str()?.to_owned(), decimal(&p["MinStockAlertLevel"])?)))
        .filter(|(_, min)| *min > Decimal::ZERO)
        .collect();
    let (mut value, mut low_now) = (Decimal::ZERO, Vec::new());
    for s in stock {
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
    Ok((value, low_now))
}

/// What the assemblies say this run.
#[derive(Default)]
struct Production {
    active: u32,
    overdue: u32,
    completed_today: u32,
    planned_today: Decimal,
    produced_today: Decimal,
    /// Why `completed_today` cannot be computed, if it cannot.
    missing_date: Option<String>,
    shortfall: Vec<(String, QualityIssue)>,
    events: Vec<switchyard::proto::v1::Event>,
    seen: BTreeMap<String, String>,
}

/// The first of `names` present on `v`.
fn field<'a>(v: &'a Value, names: &[&str]) -> Option<&'a Value> {
    names.iter().map(|n| &v[*n]).find(|f| !f.is_null())
}

impl Unleashed {
    /// A completed assembly that made less than planned, or wasted material: how bad, and where
    /// to look.
    fn quality_issue(
        &self,
        a: &Value,
        guid: &str,
        number: &str,
        product: &str,
        planned: Decimal,
        produced: Decimal,
    ) -> Option<QualityIssue> {
        let wastage: Decimal =
            a["AssemblyLines"].as_array().into_iter().flatten().filter_map(|l| decimal(&l["WastageQuantity"])).sum();
        let kind = if produced < planned {
            "short"
        } else if wastage > Decimal::ZERO {
            "wastage"
        } else {
            return None;
        };
        let short = planned > Decimal::ZERO && (planned - produced) / planned >= Decimal::new(1, 1);
        Some(QualityIssue {
            assembly_id: number.to_owned(),
            product: product.to_owned(),
            planned: whole(planned),
            produced: whole(produced),
            severity: if short { "High" } else { "Medium" }.into(),
            kind: kind.into(),
            link: self.config.assembly_link.as_ref().map(|l| l.replace("{guid}", guid)).unwrap_or_default(),
        })
    }

    fn production(&self, run: &Run, assemblies: &[Value], before: &BTreeMap<String, String>) -> Production {
        let now =
            OffsetDateTime::from_unix_timestamp(run.periods.today.to.as_second()).unwrap_or(OffsetDateTime::now_utc());
        let today = run.zone.date(run.periods.today.to);
        let mut p = Production::default();
        for a in assemblies {
            let guid = a["Guid"].as_str().unwrap_or_default().to_owned();
            let number = a["AssemblyNumber"].as_str().unwrap_or(&guid).to_owned();
            let product = a["Product"]["ProductCode"].as_str().unwrap_or_default().to_owned();
            let status = a["AssemblyStatus"].as_str().unwrap_or_default().to_owned();
            let planned = decimal(&a["Quantity"]).unwrap_or_default();
            let produced = field(a, &PRODUCED_QTY).and_then(decimal).unwrap_or(planned);
            match status.as_str() {
                "Completed" => match field(a, &COMPLETED_DATE).and_then(ms_date) {
                    Some(d)
                        if run.zone.date(jiff::Timestamp::from_second(d.unix_timestamp()).unwrap_or_default())
                            == today =>
                    {
                        p.completed_today += 1;
                        p.planned_today += planned;
                        p.produced_today += produced;
                        if let Some(issue) = self.quality_issue(a, &guid, &number, &product, planned, produced) {
                            p.shortfall.push((guid.clone(), issue));
                        }
                    }
                    Some(_) => {}
                    None => {
                        p.missing_date.get_or_insert_with(|| {
                            format!("Unleashed assembly {number} is Completed but has none of {COMPLETED_DATE:?}")
                        });
                    }
                },
                "Deleted" => {}
                _ => {
                    p.active += 1;
                    if ms_date(&a["AssembleBy"]).is_some_and(|d| d <= now) {
                        p.overdue += 1;
                    }
                }
            }
            if before.get(&guid) != Some(&status) {
                let updated = ProductionUpdated {
                    assembly_id: guid.clone(),
                    assembly_number: number,
                    status: status.clone(),
                    product,
                    planned_quantity: whole(planned),
                    produced_quantity: if status == "Completed" { whole(produced) } else { 0 },
                };
                p.events.push(run.event(&guid, Payload::UnleashedProductionUpdated(updated)));
            }
            p.seen.insert(guid, status);
        }
        p
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
