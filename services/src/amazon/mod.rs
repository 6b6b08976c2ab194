//! Amazon, through the Selling Partner API. Login with Amazon exchanges the refresh token for
//! an hour-long access token (SigV4 is no longer needed), sent as `x-amz-access-token`. Per run:
//! FBA inventory summaries (SKUs, units, SKUs under the reorder point; `nextToken` pages), orders
//! created since the last run through the current Orders API (v2026-01-01 `searchOrders`;
//! count, revenue, unshipped; `paginationToken` pages) and open inbound shipments.
//! A low-stock alert is raised once when a SKU crosses under the reorder point, not every run.
//! With `sqs` configured, [`sqs`] also drains the notification queue between syncs.

pub mod notification;
pub mod sqs;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard::proto::v1::{AmazonSyncCompleted, Order, StockItem, event::Payload};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    connector::{Connector, Run, Source, SyncError},
    http::Http,
    money::Totals,
    state::{CreationCursor, Crossings, StateFile},
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmazonConfig {
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    pub marketplace_id: String,
    /// `https://sellingpartnerapi-eu.amazon.com` (NA: `-na`, FE: `-fe`).
    #[serde(default = "api_url")]
    pub api_url: String,
    #[serde(default = "lwa_url")]
    pub lwa_url: String,
    /// Fulfillable units below this are low stock (the seeds' reorder point).
    #[serde(default = "reorder_point")]
    pub reorder_point: i64,
    #[serde(default = "lookback")]
    pub initial_lookback_days: u32,
    /// The SQS queue SP-API delivers notifications to (ORDER_CHANGE, FBA inventory changes).
    #[serde(default)]
    pub sqs: Option<sqs::SqsConfig>,
}

fn api_url() -> String {
    "https://sellingpartnerapi-eu.amazon.com".into()
}
fn lwa_url() -> String {
    "https://api.amazon.com/auth/o2/token".into()
}
fn reorder_point() -> i64 {
    10
}
fn lookback() -> u32 {
    30
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Where orders stand: `createdAfter` for the next run.
    orders: CreationCursor,
    /// SKUs under the reorder point.
    low: Crossings,
}

pub struct Amazon {
    config: AmazonConfig,
    http: Http,
    state: StateFile,
    access: Option<(String, Instant)>,
}

impl Amazon {
    pub fn new(config: AmazonConfig, http: Http, state: StateFile) -> Self {
        Self { config, http, state, access: None }
    }

    async fn token(&mut self) -> Result<String, SyncError> {
        if let Some((t, until)) = &self.access
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", self.config.refresh_token.as_str()),
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", self.config.client_secret.as_str()),
        ];
        let v: Value =
            self.http.json("Login with Amazon", || self.http.client().post(&self.config.lwa_url).form(&form)).await?;
        let token = v["access_token"]
            .as_str()
            .ok_or_else(|| SyncError::Malformed("Login with Amazon: no access_token".into()))?
            .to_owned();
        let ttl = v["expires_in"].as_u64().unwrap_or(3600).max(120) - 60;
        self.access = Some((token.clone(), Instant::now() + Duration::from_secs(ttl)));
        Ok(token)
    }

    async fn get(&mut self, what: &str, path: &str, query: &[(&str, String)]) -> Result<Value, SyncError> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let url = format!("{}{path}", self.config.api_url);
            let r = self
                .http
                .json::<Value>(what, || self.http.client().get(&url).header("x-amz-access-token", &token).query(query))
                .await;
            match r {
                Err(SyncError::Unauthorized(_)) if attempt == 0 => self.access = None,
                other => return other,
            }
        }
        unreachable!("the second attempt returns")
    }
}

impl Connector for Amazon {
    fn source(&self) -> Source {
        Source::Amazon
    }

    fn tenant(&self) -> &str {
        &self.config.tenant
    }

    async fn sync(&mut self, run: &Run) -> Result<(), SyncError> {
        let mut state: State = self.state.load().map_err(SyncError::State)?;
        let mp = self.config.marketplace_id.clone();

        // FBA inventory. Paging a full listing needs only nextToken (it expires in 30 s).
        run.jobs.progress("inventory", 10, "reading FBA inventory").await;
        let (mut skus, mut units, mut low_now) = (0u32, 0u64, Vec::new());
        let mut next: Option<String> = None;
        loop {
            let mut q = vec![
                ("granularityType", "Marketplace".to_owned()),
                ("granularityId", mp.clone()),
                ("marketplaceIds", mp.clone()),
                ("details", "true".to_owned()),
            ];
            if let Some(t) = &next {
                q.push(("nextToken", t.clone()));
            }
            let body = self.get("Amazon FBA inventory", "/fba/inventory/v1/summaries", &q).await?;
            let items = body["payload"]["inventorySummaries"]
                .as_array()
                .ok_or_else(|| SyncError::Malformed("Amazon FBA inventory: no payload.inventorySummaries".into()))?;
            for item in items {
                let sku = item["sellerSku"].as_str().unwrap_or_default().to_owned();
                let fulfillable = item["inventoryDetails"]["fulfillableQuantity"].as_i64().ok_or_else(|| {
                    SyncError::Malformed(format!("Amazon FBA inventory: {sku} has no fulfillableQuantity"))
                })?;
                skus += 1;
                units += item["totalQuantity"].as_u64().unwrap_or(fulfillable.max(0) as u64);
                if fulfillable < self.config.reorder_point {
                    let item = StockItem {
                        sku: sku.clone(),
                        name: item["productName"].as_str().unwrap_or_default().to_owned(),
                        on_hand: fulfillable,
                        threshold: self.config.reorder_point,
                    };
                    low_now.push((sku.clone(), item));
                }
            }
            next = body["pagination"]["nextToken"].as_str().filter(|t| !t.is_empty()).map(str::to_owned);
            if next.is_none() {
                break;
            }
        }

        // Orders created since the last run.
        run.jobs.progress("orders", 45, "reading orders").await;
        let after = match state.orders.since() {
            Some(s) => s.to_owned(),
            None => (OffsetDateTime::now_utc() - time::Duration::days(self.config.initial_lookback_days.into()))
                .format(&Rfc3339)
                .map_err(|e| SyncError::State(e.to_string()))?,
        };
        let (mut orders, mut unshipped, mut revenue) = (0u32, 0u32, Totals::default());
        let mut orders_cursor = state.orders.clone();
        let mut new_orders = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut q = vec![
                ("createdAfter", after.clone()),
                ("marketplaceIds", mp.clone()),
                ("includedData", "FULFILLMENT,PROCEEDS".to_owned()),
            ];
            if let Some(t) = &page {
                q.push(("paginationToken", t.clone()));
            }
            let body = self.get("Amazon orders", "/orders/2026-01-01/orders", &q).await?;
            let list = body["orders"]
                .as_array()
                .ok_or_else(|| SyncError::Malformed("Amazon orders: no orders array".into()))?;
            for o in list {
                let id = o["orderId"].as_str().unwrap_or_default().to_owned();
                let created = o["createdTime"].as_str().unwrap_or_default().to_owned();
                if state.orders.seen(&created, &id) {
                    continue;
                }
                orders += 1;
                let status = o["fulfillment"]["fulfillmentStatus"].as_str().unwrap_or_default().to_owned();
                if matches!(status.to_ascii_uppercase().as_str(), "UNSHIPPED" | "PARTIALLY_SHIPPED" | "PENDING") {
                    unshipped += 1;
                }
                let total = &o["proceeds"]["grandTotal"];
                let money = match (total["amount"].as_str(), total["currencyCode"].as_str()) {
                    (Some(a), Some(c)) => {
                        revenue.add(a, c).map_err(SyncError::Malformed)?;
                        Some(switchyard::proto::v1::Money { amount: a.to_owned(), currency: c.to_owned() })
                    }
                    _ => None,
                };
                orders_cursor.advance(&created, &id);
                let mut e = run.event(
                    &id,
                    Payload::AmazonOrderCreated(Order {
                        order_id: id.clone(),
                        store: mp.clone(),
                        total: money,
                        fulfillment_status: status,
                        topic: "searchOrders".into(),
                        ..Default::default()
                    }),
                );
                e.idempotency_key = format!("amazon:order-created:{id}");
                new_orders.push(e);
            }
            page = body["pagination"]["nextToken"].as_str().filter(|t| !t.is_empty()).map(str::to_owned);
            if page.is_none() {
                break;
            }
        }

        run.jobs.progress("inbound", 75, "reading inbound shipments").await;
        let mut inbound = 0u32;
        let mut next: Option<String> = None;
        loop {
            let mut q = vec![
                ("MarketplaceId", mp.clone()),
                ("QueryType", if next.is_some() { "NEXT_TOKEN" } else { "SHIPMENT" }.to_owned()),
                (
                    "ShipmentStatusList",
                    "WORKING,READY_TO_SHIP,SHIPPED,IN_TRANSIT,DELIVERED,CHECKED_IN,RECEIVING".to_owned(),
                ),
            ];
            if let Some(t) = &next {
                q.push(("NextToken", t.clone()));
            }
            let body = self.get("Amazon inbound shipments", "/fba/inbound/v0/shipments", &q).await?;
            let list = body["payload"]["ShipmentData"]
                .as_array()
                .ok_or_else(|| SyncError::Malformed("Amazon inbound shipments: no payload.ShipmentData".into()))?;
            inbound += list.len() as u32;
            next = body["payload"]["NextToken"].as_str().filter(|t| !t.is_empty()).map(str::to_owned);
            if next.is_none() {
                break;
            }
        }

        let currency = revenue.money("").map(|m| m.currency).unwrap_or_default();
        let mut events = new_orders;
        let low_skus = low_now.len() as u32;
        let entered = state.low.update(low_now).into_iter().map(|(_, item)| item).collect();
        if let Some(alert) = crate::connector::low_stock_alert(entered) {
            events.push(run.event("fba", Payload::AmazonLowStockAlert(alert)));
        }
        events.push(run.event(
            "amazon",
            Payload::AmazonSyncCompleted(AmazonSyncCompleted {
                run_id: run.run_id.clone(),
                total_skus: skus,
                total_units: units,
                low_stock_skus: low_skus,
                total_orders: orders,
                total_revenue: revenue.money(&currency),
                unshipped_orders: unshipped,
                inbound_shipments: inbound,
            }),
        ));
        run.publish(events).await?;
        state.orders = orders_cursor;
        self.state.save(&state).map_err(SyncError::State)?;
        Ok(())
    }
}
