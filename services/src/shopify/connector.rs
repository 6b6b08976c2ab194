//! Shopify, through the Admin GraphQL API (REST is legacy for new apps): several stores per
//! tenant, each with its own access token (`X-Shopify-Access-Token`).
//!
//! Every run recomputes each store's figures whole from the orders created since the earlier of
//! local midnight and 24 hours ago (`orders(query: "created_at:>=…")`, cursor pages of up to 250):
//! orders, revenue and net revenue (after refunds) for today and for the rolling 24 hours, per
//! currency; test and cancelled orders are left out. A store whose calls fail publishes no
//! snapshot (its last good one stands) and a store-scoped `shopify:sync-error`; the consolidated
//! `shopify:sync-completed` covers the stores that synced and names the others, and is not
//! published at all when none did. Orders not published before are also published as
//! `shopify:order-created` facts (the persisted set of published ids keeps them from repeating).
//!
//! Throttling follows the query-cost model: every response reports `extensions.cost`; a
//! `THROTTLED` error waits until the bucket has refilled enough for the query.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard::proto::v1::{Event, Money, Order, ShopifyStoreSynced, ShopifySyncCompleted, event::Payload};

use crate::{
    connector::{Connector, Run, SyncError},
    http::Http,
    period::{Tallies, rfc3339},
    state::{SeenOrders, StateFile},
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
    /// Orders per page (Shopify allows at most 250).
    #[serde(default = "default_page")]
    pub page_size: u32,
}

fn default_version() -> String {
    DEFAULT_API_VERSION.into()
}
fn default_page() -> u32 {
    250
}

/// Per store, the orders already published as facts.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    #[serde(default)]
    published: std::collections::BTreeMap<String, SeenOrders>,
}

pub struct Shopify {
    config: ShopifyConfig,
    http: Http,
    state: StateFile,
}

const QUERY: &str = "query Orders($first: Int!, $after: String, $query: String!) {
  orders(first: $first, after: $after, query: $query, sortKey: CREATED_AT) {
    edges { node {
      id legacyResourceId name createdAt test cancelledAt
      displayFinancialStatus displayFulfillmentStatus
      totalPriceSet { shopMoney { amount currencyCode } }
      totalRefundedSet { shopMoney { amount currencyCode } }
    } }
    pageInfo { hasNextPage endCursor }
  }
}";

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

    /// One page of orders, re-asked (with backoff) when the answer is cut short or misshapen.
    async fn orders_page(
        &self,
        store: &StoreConfig,
        variables: &Value,
    ) -> Result<(Vec<Value>, Option<String>), SyncError> {
        let what = format!("Shopify orders ({})", store.domain);
        for _ in 0..self.http.policy.attempts {
            let body = self.query(store, variables).await?;
            let orders = &body["data"]["orders"];
            let Some(edges) = orders["edges"].as_array() else {
                tracing::info!(store = %store.domain, "no data.orders.edges; asking again");
                self.http.pause(self.http.policy.backoff).await;
                continue;
            };
            let next = match orders["pageInfo"]["hasNextPage"].as_bool() {
                Some(true) => Some(
                    orders["pageInfo"]["endCursor"]
                        .as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| SyncError::Malformed(format!("{what}: hasNextPage without endCursor")))?,
                ),
                _ => None,
            };
            return Ok((edges.clone(), next));
        }
        Err(SyncError::Malformed(format!("{what}: no data.orders.edges after {} attempts", self.http.policy.attempts)))
    }

    /// Reads one store's orders for the run's periods; returns its figures and the order facts
    /// not published before.
    async fn sync_store(
        &self,
        run: &Run,
        store: &StoreConfig,
        published: &mut SeenOrders,
    ) -> Result<(Tallies, Vec<Event>), SyncError> {
        let periods = &run.periods;
        let since = rfc3339(periods.orders_from());
        let mut tallies = Tallies::default();
        let mut after: Option<String> = None;
        let mut new_orders = Vec::new();
        let mut next = published.clone();
        loop {
            let vars =
                json!({ "first": self.config.page_size, "after": after, "query": format!("created_at:>='{since}'") });
            let (edges, page_after) = self.orders_page(store, &vars).await?;
            for edge in &edges {
                let n = &edge["node"];
                let id = n["legacyResourceId"].as_str().map(str::to_owned).unwrap_or_else(|| n["id"].to_string());
                let created_text = n["createdAt"].as_str().unwrap_or_default().to_owned();
                let created: jiff::Timestamp = created_text
                    .parse()
                    .map_err(|_| SyncError::Malformed(format!("Shopify order {id}: createdAt {created_text:?}")))?;
                let total = shop_money(&n["totalPriceSet"], &id)?;
                let refunded = shop_money(&n["totalRefundedSet"], &id)?;
                let test = n["test"].as_bool().unwrap_or(false);
                let cancelled = !n["cancelledAt"].is_null();
                if !test && !cancelled {
                    let pair = |m: &Option<Money>| m.as_ref().map(|m| (m.amount.clone(), m.currency.clone()));
                    let (t, r) = (pair(&total), pair(&refunded));
                    tallies
                        .add(
                            periods,
                            created,
                            t.as_ref().map(|(a, c)| (a.as_str(), c.as_str())),
                            r.as_ref().map(|(a, c)| (a.as_str(), c.as_str())),
                        )
                        .map_err(SyncError::Malformed)?;
                }
                // Published by an earlier run, or older than anything this run reads.
                if next.contains(&id) || created < periods.orders_from() {
                    continue;
                }
                next.insert(&id, created);
                new_orders.push(order_created(run, store, n, &id, total, test));
            }
            match page_after {
                Some(a) => after = Some(a),
                None => break,
            }
        }
        next.prune(periods.orders_from());
        *published = next;
        Ok((tallies, new_orders))
    }
}

impl Connector for Shopify {
    async fn sync(&mut self, run: &Run) -> Result<(), SyncError> {
        let mut state: State = self.state.load().map_err(SyncError::State)?;
        let mut all = Tallies::default();
        let (mut ok, mut failed) = (0u32, Vec::new());
        let mut first_error: Option<SyncError> = None;
        let n = self.config.stores.len();
        for (i, store) in self.config.stores.iter().enumerate() {
            run.jobs.progress("stores", (i * 100 / n.max(1)) as u32, &format!("syncing {}", store.domain)).await;
            let mut published = state.published.remove(&store.domain).unwrap_or_default();
            match self.sync_store(run, store, &mut published).await {
                Ok((t, mut events)) => {
                    ok += 1;
                    events.push(store_synced(run, store, &t));
                    run.publish(events).await?;
                    all.merge(&t);
                    state.published.insert(store.domain.clone(), published);
                    // Saved after each store: its new orders are on the bus, so never again.
                    self.state.save(&state).map_err(SyncError::State)?;
                }
                Err(e) => {
                    // One store failing does not hide the others, and publishes no figure of its own.
                    tracing::warn!(store = %store.domain, error = %e, "Shopify store sync failed");
                    run.publish(vec![run.failure(&store.domain, &e, &["shopify:store-synced"])]).await?;
                    failed.push(store.domain.clone());
                    first_error.get_or_insert(e);
                    state.published.insert(store.domain.clone(), published);
                }
            }
        }
        if ok > 0 {
            run.publish(vec![sync_completed(run, &all, ok, n as u32, failed.clone())]).await?;
        }
        match first_error {
            None => Ok(()),
            Some(e) => {
                let mut missing: Vec<String> = failed.iter().map(|s| format!("shopify:store-synced {s}")).collect();
                if ok == 0 {
                    missing.push("shopify:sync-completed".into());
                }
                Err(SyncError::Reported {
                    message: format!("{} of {n} stores failed: {e}", failed.len()),
                    code: if ok == 0 { e.code() } else { "partial" },
                    missing,
                })
            }
        }
    }
}

/// A money set's shop-currency amount: none when absent, malformed when half there.
fn shop_money(set: &Value, id: &str) -> Result<Option<Money>, SyncError> {
    let m = &set["shopMoney"];
    match (m["amount"].as_str(), m["currencyCode"].as_str()) {
        (Some(a), Some(c)) => Ok(Some(Money { amount: a.to_owned(), currency: c.to_owned() })),
        (None, None) => Ok(None),
        _ => Err(SyncError::Malformed(format!("Shopify order {id}: incomplete money {m}"))),
    }
}

/// A new order, as the orders/create webhook would say it (and with the same idempotency key,
/// so an order seen both ways is stored once).
fn order_created(run: &Run, store: &StoreConfig, n: &Value, id: &str, total: Option<Money>, test: bool) -> Event {
    let order = Order {
        order_id: id.to_owned(),
        name: n["name"].as_str().unwrap_or_default().to_owned(),
        store: store.domain.clone(),
        total,
        financial_status: n["displayFinancialStatus"].as_str().unwrap_or_default().to_lowercase(),
        fulfillment_status: n["displayFulfillmentStatus"].as_str().unwrap_or_default().to_lowercase(),
        topic: "orders/create".into(),
        test,
        ..Default::default()
    };
    let mut e = run.event(id, Payload::ShopifyOrderCreated(order));
    e.idempotency_key = format!("shopify:{}:order-created:{id}", store.domain);
    e
}

/// One store's figures for the run's periods: the whole state of its key.
fn store_synced(run: &Run, store: &StoreConfig, t: &Tallies) -> Event {
    let periods = &run.periods;
    let today = t.today.figures(periods, &periods.today);
    run.event(
        &store.domain,
        Payload::ShopifyStoreSynced(ShopifyStoreSynced {
            store_id: store.domain.clone(),
            store_name: store.name.clone(),
            region: store.region.clone(),
            orders: today.orders,
            revenue: single(&today.revenue),
            net_revenue: single(&today.net_revenue),
            run_id: run.run_id.clone(),
            today: Some(today),
            last_24h: Some(t.last_24h.figures(periods, &periods.last_24h)),
        }),
    )
}

/// The figures of every store that synced, consolidated, naming the ones that failed.
fn sync_completed(run: &Run, all: &Tallies, ok: u32, stores: u32, failed: Vec<String>) -> Event {
    let periods = &run.periods;
    let today = all.today.figures(periods, &periods.today);
    run.event(
        "shopify",
        Payload::ShopifySyncCompleted(ShopifySyncCompleted {
            run_id: run.run_id.clone(),
            success_count: ok,
            total_stores: stores,
            total_orders: today.orders,
            total_revenue: single(&today.revenue),
            total_net_revenue: single(&today.net_revenue),
            today: Some(today),
            last_24h: Some(all.last_24h.figures(periods, &periods.last_24h)),
            failed_stores: failed,
        }),
    )
}

/// The one total of a single-currency list (the legacy single-`Money` fields); none across currencies.
fn single(list: &[Money]) -> Option<Money> {
    match list {
        [one] => Some(one.clone()),
        _ => None,
    }
}
