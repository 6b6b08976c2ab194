//! Amazon, through the Selling Partner API. Login with Amazon exchanges the refresh token for
//! an hour-long access token (SigV4 is no longer needed), sent as `x-amz-access-token`. Every run
//! recomputes, whole: FBA inventory summaries (SKUs; total units as Amazon counts them,
//! `totalQuantity`, and fulfillable units; SKUs under the reorder point by fulfillable quantity;
//! `nextToken` pages), orders created in the last `open_order_days` through the current Orders
//! API (v2026-01-01 `searchOrders`, `paginationToken` pages): today's and the rolling 24 hours'
//! count and revenue per currency, orders waiting to ship (Unshipped, PartiallyShipped) and
//! orders not yet payable (Pending) counted apart; and open inbound shipments, a side figure: when
//! that call fails (404, role not granted) the rest is still published, inbound marked unavailable.
//! New orders are also published as facts. A low-stock alert is raised once when a SKU crosses
//! under the reorder point, not every run.
//! With `sqs` configured, [`super::sqs`] also drains the notification queue between syncs.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard::proto::v1::{AmazonSyncCompleted, Event, Order, StockItem, Unavailable, event::Payload};

use crate::{
    connector::{Connector, Run, SyncError},
    http::Http,
    period::{Tallies, rfc3339},
    state::{Crossings, SeenOrders, StateFile},
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
    /// How far back orders are read for the unshipped and pending counts (days).
    #[serde(default = "open_order_days")]
    pub open_order_days: u32,
    /// The SQS queue SP-API delivers notifications to (ORDER_CHANGE, FBA inventory changes).
    #[serde(default)]
    pub sqs: Option<super::sqs::SqsConfig>,
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
fn open_order_days() -> u32 {
    7
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Orders already published as facts.
    #[serde(default)]
    published: SeenOrders,
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
    async fn sync(&mut self, run: &Run) -> Result<(), SyncError> {
        let mut state: State = self.state.load().map_err(SyncError::State)?;
        run.jobs.progress("inventory", 10, "reading FBA inventory").await;
        let inventory = self.inventory().await?;
        run.jobs.progress("orders", 45, "reading orders").await;
        let orders = self.orders(run, &state.published).await?;
        run.jobs.progress("inbound", 75, "reading inbound shipments").await;
        let mut unavailable = inventory.unavailable.clone();
        let inbound = crate::connector::partial(self.inbound().await, "inbound_shipments", &mut unavailable)?;

        let periods = &run.periods;
        let today = orders.tallies.today.figures(periods, &periods.today);
        let mut events = orders.new_orders;
        let entered = state.low.update(inventory.low).into_iter().map(|(_, item)| item).collect();
        if let Some(alert) = crate::connector::low_stock_alert(entered) {
            events.push(run.event("fba", Payload::AmazonLowStockAlert(alert)));
        }
        events.push(run.event(
            &self.config.marketplace_id,
            Payload::AmazonSyncCompleted(AmazonSyncCompleted {
                run_id: run.run_id.clone(),
                total_skus: inventory.skus,
                total_units: inventory.total_units,
                low_stock_skus: inventory.low_skus,
                total_orders: today.orders,
                total_revenue: match today.revenue.as_slice() {
                    [one] => Some(one.clone()),
                    _ => None,
                },
                unshipped_orders: orders.unshipped,
                inbound_shipments: inbound,
                fulfillable_units: inventory.fulfillable_units,
                pending_orders: orders.pending,
                today: Some(today),
                last_24h: Some(orders.tallies.last_24h.figures(periods, &periods.last_24h)),
                unavailable,
            }),
        ));
        run.publish(events).await?;
        state.published = orders.published;
        self.state.save(&state).map_err(SyncError::State)?;
        Ok(())
    }
}

/// What the FBA inventory summaries say this run.
struct Inventory {
    skus: u32,
    /// None when a summary had no totalQuantity (listed in `unavailable`).
    total_units: Option<u64>,
    fulfillable_units: u64,
    low_skus: u32,
    low: Vec<(String, StockItem)>,
    unavailable: Vec<Unavailable>,
}

/// Orders read this run.
struct Orders {
    tallies: Tallies,
    unshipped: u32,
    pending: u32,
    new_orders: Vec<Event>,
    published: SeenOrders,
}

impl Inventory {
    /// One FBA inventory summary, counted; a SKU under `reorder_point` is low. A summary without
    /// a fulfillable quantity is malformed; one without a total makes the total unavailable.
    fn take(&mut self, item: &Value, reorder_point: i64) -> Result<(), SyncError> {
        let sku = item["sellerSku"].as_str().unwrap_or_default().to_owned();
        let fulfillable = item["inventoryDetails"]["fulfillableQuantity"].as_i64().ok_or_else(|| {
            SyncError::Malformed(format!("Amazon FBA inventory: {sku} has no inventoryDetails.fulfillableQuantity"))
        })?;
        self.skus += 1;
        self.fulfillable_units += fulfillable.max(0) as u64;
        match (item["totalQuantity"].as_u64(), self.total_units.as_mut()) {
            (Some(t), Some(sum)) => *sum += t,
            (None, Some(_)) => {
                self.total_units = None;
                self.unavailable.push(Unavailable {
                    figure: "total_units".into(),
                    reason: format!("Amazon FBA inventory: {sku} has no totalQuantity"),
                });
            }
            _ => {}
        }
        if fulfillable < reorder_point {
            self.low_skus += 1;
            let item = StockItem {
                sku: sku.clone(),
                name: item["productName"].as_str().unwrap_or_default().to_owned(),
                on_hand: fulfillable,
                threshold: reorder_point,
            };
            self.low.push((sku, item));
        }
        Ok(())
    }
}

impl Orders {
    /// One listed order: counted in its status and in the period tallies (unless cancelled),
    /// and an order event if it is new since `from` and not published by an earlier run.
    fn take(&mut self, o: &Value, run: &Run, from: jiff::Timestamp, mp: &str) -> Result<(), SyncError> {
        let id = o["orderId"].as_str().unwrap_or_default().to_owned();
        let created_text = o["createdTime"].as_str().unwrap_or_default().to_owned();
        let created: jiff::Timestamp = created_text
            .parse()
            .map_err(|_| SyncError::Malformed(format!("Amazon order {id}: createdTime {created_text:?}")))?;
        let status = o["fulfillment"]["fulfillmentStatus"].as_str().unwrap_or_default().to_owned();
        let canonical = status.to_ascii_uppercase().replace('_', "");
        match canonical.as_str() {
            "UNSHIPPED" | "PARTIALLYSHIPPED" => self.unshipped += 1,
            "PENDING" => self.pending += 1,
            _ => {}
        }
        let total = &o["proceeds"]["grandTotal"];
        let money = match (total["amount"].as_str(), total["currencyCode"].as_str()) {
            (Some(a), Some(c)) => Some((a.to_owned(), c.to_owned())),
            _ => None,
        };
        if !matches!(canonical.as_str(), "CANCELED" | "CANCELLED") {
            let m = money.as_ref().map(|(a, c)| (a.as_str(), c.as_str()));
            self.tallies.add(&run.periods, created, m, None).map_err(SyncError::Malformed)?;
        }
        if self.published.contains(&id) || created < from {
            return Ok(());
        }
        self.published.insert(&id, created);
        let mut e = run.event(
            &id,
            Payload::AmazonOrderCreated(Order {
                order_id: id.clone(),
                store: mp.to_owned(),
                total: money.map(|(amount, currency)| switchyard::proto::v1::Money { amount, currency }),
                fulfillment_status: status,
                topic: "searchOrders".into(),
                ..Default::default()
            }),
        );
        e.idempotency_key = format!("amazon:order-created:{id}");
        self.new_orders.push(e);
        Ok(())
    }
}

impl Amazon {
    /// Every FBA inventory summary. Paging a full listing needs only nextToken (it expires in 30 s).
    async fn inventory(&mut self) -> Result<Inventory, SyncError> {
        let mp = self.config.marketplace_id.clone();
        let mut inv = Inventory {
            skus: 0,
            total_units: Some(0),
            fulfillable_units: 0,
            low_skus: 0,
            low: Vec::new(),
            unavailable: Vec::new(),
        };
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
                inv.take(item, self.config.reorder_point)?;
            }
            next = body["pagination"]["nextToken"].as_str().filter(|t| !t.is_empty()).map(str::to_owned);
            if next.is_none() {
                return Ok(inv);
            }
        }
    }

    /// Orders created since the earliest period start (or `open_order_days` ago, if earlier).
    async fn orders(&mut self, run: &Run, published: &SeenOrders) -> Result<Orders, SyncError> {
        let mp = self.config.marketplace_id.clone();
        let periods = &run.periods;
        let open_from = periods
            .today
            .to
            .checked_sub(jiff::SignedDuration::from_hours(24 * i64::from(self.config.open_order_days)))
            .unwrap_or(periods.today.to);
        let from = open_from.min(periods.orders_from());
        let after = rfc3339(from);
        let mut out = Orders {
            tallies: Tallies::default(),
            unshipped: 0,
            pending: 0,
            new_orders: Vec::new(),
            published: published.clone(),
        };
        let mut page: Option<String> = None;
        loop {
            let mut q = vec![
                ("createdAfter", after.clone()),
                ("marketplaceIds", mp.clone()),
                ("includedData", "FULFILLMENT,PROCEEDS".to_owned()),
                ("maxResultsPerPage", "100".to_owned()),
            ];
            if let Some(t) = &page {
                q.push(("paginationToken", t.clone()));
            }
            let body = self.get("Amazon orders", "/orders/2026-01-01/orders", &q).await?;
            let list = body["orders"]
                .as_array()
                .ok_or_else(|| SyncError::Malformed("Amazon orders: no orders array".into()))?;
            for o in list {
                out.take(o, run, from, &mp)?;
            }
            page = body["pagination"]["nextToken"].as_str().filter(|t| !t.is_empty()).map(str::to_owned);
            if page.is_none() {
                out.published.prune(from);
                return Ok(out);
            }
        }
    }

    /// Open inbound shipments, counted over every page.
    async fn inbound(&mut self) -> Result<u32, SyncError> {
        let mp = self.config.marketplace_id.clone();
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
                return Ok(inbound);
            }
        }
    }
}
