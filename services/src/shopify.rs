//! Shopify, through the Admin GraphQL API (REST is legacy for new apps): several stores per
//! tenant, each with its own access token (`X-Shopify-Access-Token`). Per run and store: the
//! orders created since the last sync (cursor pagination), their revenue and net revenue (after
//! refunds), `shopify:order-created` for each new order, then consolidated totals.
//!
//! Throttling follows the query-cost model: every response reports `extensions.cost`; a
//! `THROTTLED` error waits until the bucket has refilled enough for the query.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard::proto::v1::{Money, Order, ShopifyStoreSynced, ShopifySyncCompleted, event::Payload};

use crate::{
    connector::{Connector, Run, Source, SyncError},
    http::Http,
    money::Totals,
    state::{CreationCursor, StateFile},
};

pub const DEFAULT_API_VERSION: &str = "2025-10";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `acme-uk.myshopify.com`
    pub domain: String,
    pub access_token: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub region: String,
    /// Overrides `https://<domain>/admin/api/<version>/graphql.json` (tests, proxies).
    #[serde(default)]
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopifyConfig {
    pub tenant: String,
    pub stores: Vec<StoreConfig>,
    #[serde(default = "default_version")]
    pub api_version: String,
    /// How far back the first sync looks.
    #[serde(default = "default_lookback")]
    pub initial_lookback_days: u32,
    #[serde(default = "default_page")]
    pub page_size: u32,
}

fn default_version() -> String {
    DEFAULT_API_VERSION.into()
}
fn default_lookback() -> u32 {
    30
}
fn default_page() -> u32 {
    100
}

/// Per store, where its orders stand (read in creation order).
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    stores: std::collections::BTreeMap<String, CreationCursor>,
}

pub struct Shopify {
    config: ShopifyConfig,
    http: Http,
    state: StateFile,
}

const QUERY: &str = "query Orders($first: Int!, $after: String, $query: String!) {
  orders(first: $first, after: $after, query: $query, sortKey: CREATED_AT) {
    edges { node {
      id legacyResourceId name createdAt test
      displayFinancialStatus displayFulfillmentStatus
      totalPriceSet { shopMoney { amount currencyCode } }
      totalRefundedSet { shopMoney { amount currencyCode } }
    } }
    pageInfo { hasNextPage endCursor }
  }
}";

/// One store's figures for this run.
#[derive(Debug, Default)]
struct StoreFigures {
    orders: u32,
    revenue: Totals,
    refunded: Totals,
}

impl Shopify {
    pub fn new(config: ShopifyConfig, http: Http, state: StateFile) -> Self {
        Self { config, http, state }
    }

    fn endpoint(&self, store: &StoreConfig) -> String {
        store
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://{}/admin/api/{}/graphql.json", store.domain, self.config.api_version))
    }

    /// One GraphQL call, waiting out `THROTTLED` answers by the reported restore rate.
    async fn query(&self, store: &StoreConfig, variables: &Value) -> Result<Value, SyncError> {
        let what = format!("Shopify orders ({})", store.domain);
        let url = self.endpoint(store);
        for _ in 0..self.http.policy.attempts {
            let body: Value = self
                .http
                .json(&what, || {
                    self.http
                        .client()
                        .post(&url)
                        .header("X-Shopify-Access-Token", &store.access_token)
                        .json(&json!({ "query": QUERY, "variables": variables }))
                })
                .await?;
            let throttled = body["errors"]
                .as_array()
                .is_some_and(|errs| errs.iter().any(|e| e["extensions"]["code"] == "THROTTLED"));
            if throttled {
                let cost = &body["extensions"]["cost"];
                let needed = cost["requestedQueryCost"].as_f64().unwrap_or(100.0);
                let available = cost["throttleStatus"]["currentlyAvailable"].as_f64().unwrap_or(0.0);
                let rate = cost["throttleStatus"]["restoreRate"].as_f64().filter(|r| *r > 0.0).unwrap_or(50.0);
                let wait = Duration::from_secs_f64(((needed - available) / rate).max(0.1));
                tracing::info!(store = %store.domain, wait_ms = wait.as_millis() as u64, "Shopify throttled");
                self.http.pause(wait).await;
                continue;
            }
            if let Some(errors) = body["errors"].as_array().filter(|e| !e.is_empty()) {
                let msg = errors.iter().filter_map(|e| e["message"].as_str()).collect::<Vec<_>>().join("; ");
                return Err(SyncError::Upstream { status: 200, message: format!("{what}: {msg}") });
            }
            return Ok(body);
        }
        Err(SyncError::RateLimited(format!("{what}: still throttled")))
    }

    async fn sync_store(
        &self,
        run: &Run,
        store: &StoreConfig,
        cursor: &mut CreationCursor,
    ) -> Result<StoreFigures, SyncError> {
        let since = match cursor.since() {
            Some(s) => s.to_owned(),
            None => {
                let t =
                    time::OffsetDateTime::now_utc() - time::Duration::days(self.config.initial_lookback_days.into());
                t.format(&time::format_description::well_known::Rfc3339).map_err(|e| SyncError::State(e.to_string()))?
            }
        };
        let mut figures = StoreFigures::default();
        let mut after: Option<String> = None;
        let mut new_orders = Vec::new();
        let mut next = cursor.clone();
        loop {
            let vars =
                json!({ "first": self.config.page_size, "after": after, "query": format!("created_at:>='{since}'") });
            let body = self.query(store, &vars).await?;
            let orders = &body["data"]["orders"];
            let edges = orders["edges"].as_array().ok_or_else(|| {
                SyncError::Malformed(format!("Shopify orders ({}): no data.orders.edges", store.domain))
            })?;
            for edge in edges {
                let n = &edge["node"];
                let id = n["legacyResourceId"].as_str().map(str::to_owned).unwrap_or_else(|| n["id"].to_string());
                let created = n["createdAt"].as_str().unwrap_or_default().to_owned();
                if cursor.seen(&created, &id) {
                    continue; // seen at the boundary last run
                }
                let money = |set: &Value| -> Result<Option<Money>, SyncError> {
                    let m = &set["shopMoney"];
                    match (m["amount"].as_str(), m["currencyCode"].as_str()) {
                        (Some(a), Some(c)) => Ok(Some(Money { amount: a.to_owned(), currency: c.to_owned() })),
                        (None, None) => Ok(None),
                        _ => Err(SyncError::Malformed(format!("Shopify order {id}: incomplete money {m}"))),
                    }
                };
                let total = money(&n["totalPriceSet"])?;
                let refunded = money(&n["totalRefundedSet"])?;
                if let Some(t) = &total {
                    figures.revenue.add(&t.amount, &t.currency).map_err(SyncError::Malformed)?;
                }
                if let Some(r) = &refunded {
                    figures.refunded.add(&r.amount, &r.currency).map_err(SyncError::Malformed)?;
                }
                figures.orders += 1;
                next.advance(&created, &id);
                let order = Order {
                    order_id: id.clone(),
                    name: n["name"].as_str().unwrap_or_default().to_owned(),
                    store: store.domain.clone(),
                    total,
                    financial_status: n["displayFinancialStatus"].as_str().unwrap_or_default().to_lowercase(),
                    fulfillment_status: n["displayFulfillmentStatus"].as_str().unwrap_or_default().to_lowercase(),
                    topic: "orders/create".into(),
                    test: n["test"].as_bool().unwrap_or(false),
                    ..Default::default()
                };
                let mut e = run.event(&id, Payload::ShopifyOrderCreated(order));
                // The same key as the orders/create webhook: an order seen both ways is stored once.
                e.idempotency_key = format!("shopify:{}:order-created:{id}", store.domain);
                new_orders.push(e);
            }
            if orders["pageInfo"]["hasNextPage"].as_bool() == Some(true) {
                after = orders["pageInfo"]["endCursor"].as_str().map(str::to_owned);
                if after.is_none() {
                    return Err(SyncError::Malformed(format!(
                        "Shopify orders ({}): hasNextPage without endCursor",
                        store.domain
                    )));
                }
            } else {
                break;
            }
        }
        run.publish(new_orders).await?;
        *cursor = next;
        Ok(figures)
    }
}

impl Connector for Shopify {
    fn source(&self) -> Source {
        Source::Shopify
    }

    fn tenant(&self) -> &str {
        &self.config.tenant
    }

    async fn sync(&mut self, run: &Run) -> Result<(), SyncError> {
        let mut state: State = self.state.load().map_err(SyncError::State)?;
        let (mut revenue, mut refunded, mut orders, mut ok) = (Totals::default(), Totals::default(), 0u32, 0u32);
        let mut first_error = None;
        let n = self.config.stores.len();
        for (i, store) in self.config.stores.iter().enumerate() {
            run.jobs.progress("stores", (i * 100 / n.max(1)) as u32, &format!("syncing {}", store.domain)).await;
            let mut cursor = state.stores.remove(&store.domain).unwrap_or_default();
            match self.sync_store(run, store, &mut cursor).await {
                Ok(f) => {
                    ok += 1;
                    orders += f.orders;
                    let net = f.revenue.minus(&f.refunded);
                    let currency = f.revenue.money("").map(|m| m.currency).unwrap_or_default();
                    run.publish(vec![run.event(
                        &store.domain,
                        Payload::ShopifyStoreSynced(ShopifyStoreSynced {
                            store_id: store.domain.clone(),
                            store_name: store.name.clone(),
                            region: store.region.clone(),
                            orders: f.orders,
                            revenue: f.revenue.money(&currency),
                            net_revenue: net.money(&currency),
                            run_id: run.run_id.clone(),
                        }),
                    )])
                    .await?;
                    revenue.merge(&f.revenue);
                    refunded.merge(&f.refunded);
                }
                Err(e) => {
                    // One store failing does not hide the others; the run reports it at the end.
                    tracing::warn!(store = %store.domain, error = %e, "Shopify store sync failed");
                    first_error.get_or_insert(e);
                }
            }
            state.stores.insert(store.domain.clone(), cursor);
            // Saved after each store: its new orders are on the bus, so never again.
            self.state.save(&state).map_err(SyncError::State)?;
        }
        let currency = revenue.money("").map(|m| m.currency).unwrap_or_default();
        run.publish(vec![run.event(
            "shopify",
            Payload::ShopifySyncCompleted(ShopifySyncCompleted {
                run_id: run.run_id.clone(),
                success_count: ok,
                total_stores: n as u32,
                total_orders: orders,
                total_revenue: revenue.money(&currency),
                total_net_revenue: revenue.minus(&refunded).money(&currency),
            }),
        )])
        .await?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
