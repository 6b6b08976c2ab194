//! Shopify webhooks: `X-Shopify-Hmac-Sha256` (or the newer un-prefixed `shopify-*` headers)
//! = base64 HMAC-SHA256 of the raw body with the app's client secret; the topic from the
//! header; orders become typed order events, every other topic `shopify:data-updated`.
//! Ids are kept as strings: Shopify's exceed 2^53.

use std::{collections::BTreeMap, sync::Arc};

use futures::future::BoxFuture;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard::{
    names::Tenant,
    proto::v1::{
        Alert, DataUpdated, Event, LowStockAlert, Money, Order, OrderLine, StockItem, StockLevel, event::Payload,
    },
    secret::Secret,
};

use crate::{
    delivery::stamp,
    webhook::{self, ConfigError, Delivery, Doc, Env, Imitate, Imitation, Outcome, Refusal, WebhookSource, signature},
};

/// `[webhooks.shopify]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The app's client secret; add the previous one during rotation.
    pub secrets: Vec<Secret>,
    /// Shop domain (`acme-uk.myshopify.com`) → tenant. Several shops may share a tenant.
    pub shops: BTreeMap<String, String>,
    /// Shop domain → that shop's own secrets (a custom app per shop). A shop listed here is
    /// verified with these only; other shops with `secrets`.
    pub shop_secrets: BTreeMap<String, Vec<Secret>>,
    /// An order whose total is above this (in its own currency) also raises `alert:info`.
    pub large_order_total: f64,
    /// An inventory level below this raises `shopify:low-stock-alert`.
    pub low_stock_threshold: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            secrets: Vec::new(),
            shops: BTreeMap::new(),
            shop_secrets: BTreeMap::new(),
            large_order_total: 1000.0,
            low_stock_threshold: 10,
        }
    }
}

pub const DOC: Doc = Doc {
    summary: "Shopify deliveries (every topic), verified with X-Shopify-Hmac-Sha256 over the raw body.",
    ok: "{ids, duplicates} once durable",
    errors: &[
        (400, "Missing shop or topic header, or a body that is not JSON."),
        (401, "Bad signature."),
        (404, "Not configured, or the shop is not mapped to a tenant."),
    ],
};

pub const IMITATION: Option<Imitation> = Some(Imitation { sign, sample });

fn sign(d: &Imitate<'_>) -> Vec<(String, String)> {
    vec![
        ("X-Shopify-Hmac-Sha256".into(), signature::sign_b64(d.secret.as_bytes(), &[d.body])),
        ("X-Shopify-Topic".into(), d.topic.into()),
        ("X-Shopify-Shop-Domain".into(), d.shop.into()),
        ("X-Shopify-Event-Id".into(), d.id.into()),
        ("X-Shopify-Webhook-Id".into(), d.id.into()),
        ("X-Shopify-API-Version".into(), "2025-10".into()),
    ]
}

fn sample(topic: &str, id: u64) -> Value {
    if topic.starts_with("orders/") {
        json!({
            "id": 820982911946154508u64.wrapping_add(id % 1_000_000), "name": format!("#T{}", id % 100_000),
            "currency": "GBP", "total_price": "42.00", "subtotal_price": "35.00", "total_tax": "7.00",
            "financial_status": "paid", "fulfillment_status": null, "test": true,
            "line_items": [{"sku": "SAMPLE-1", "title": "Sample item", "quantity": 1, "price": "35.00"}]
        })
    } else {
        json!({"id": id, "test": true})
    }
}

/// The configured Shopify webhook: keys resolved, shops mapped.
#[derive(Debug)]
struct Source {
    secrets: Vec<Vec<u8>>,
    /// Shops with secrets of their own: verified with those only.
    shop_secrets: BTreeMap<String, Vec<Vec<u8>>>,
    shops: BTreeMap<String, Tenant>,
    thresholds: Thresholds,
    bound: Bindings,
}

/// Which shop each signed body was first delivered for, for as long as Shopify retries. The
/// shop-domain header is not signed: with an app secret shared by many shops, the same signed
/// body replayed under another shop's header would verify, and land in that shop's tenant.
/// Here it is refused. (Per node: on a cluster a replay sent to another node is caught only by
/// that node's own memory of the body.)
#[derive(Debug, Default)]
struct Bindings(std::sync::Mutex<Bound>);

/// Digest → shop, and the digests in the order they were first seen (with when).
type Bound = (std::collections::HashMap<[u8; 32], String>, std::collections::VecDeque<([u8; 32], u64)>);

/// Bodies remembered at most, and for how long (Shopify retries a delivery for up to 48 hours).
const BOUND_MAX: usize = 100_000;
const BOUND_SECS: u64 = 48 * 3600;

impl Bindings {
    /// Binds `digest` to `shop`, or names the shop it is bound to already.
    fn bind(&self, digest: [u8; 32], shop: &str, now: u64) -> Result<(), String> {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *guard;
        while order.front().is_some_and(|(_, at)| at + BOUND_SECS < now) || order.len() > BOUND_MAX {
            if let Some((d, _)) = order.pop_front() {
                map.remove(&d);
            }
        }
        match map.get(&digest) {
            Some(first) if first != shop => Err(first.clone()),
            Some(_) => Ok(()),
            None => {
                map.insert(digest, shop.to_owned());
                order.push_back((digest, now));
                Ok(())
            }
        }
    }
}

pub fn build(section: &toml::Value, _: &Env) -> Result<Arc<dyn WebhookSource>, ConfigError> {
    let c: Config = webhook::section("shopify", section)?;
    let mut shops = BTreeMap::new();
    for (domain, t) in &c.shops {
        shops.insert(domain.to_ascii_lowercase(), webhook::tenant("webhooks.shopify.shops", t)?);
    }
    let bytes = |keys: &[Secret]| keys.iter().map(|k| k.as_bytes().to_vec()).collect::<Vec<_>>();
    Ok(Arc::new(Source {
        secrets: bytes(&c.secrets),
        shop_secrets: c.shop_secrets.iter().map(|(shop, keys)| (shop.to_ascii_lowercase(), bytes(keys))).collect(),
        shops,
        thresholds: Thresholds { large_order_total: c.large_order_total, low_stock: c.low_stock_threshold },
        bound: Bindings::default(),
    }))
}

impl WebhookSource for Source {
    fn receive<'a>(&'a self, d: Delivery<'a>) -> BoxFuture<'a, Result<Outcome, Refusal>> {
        Box::pin(async move { self.receive_now(&d) })
    }
}

impl Source {
    fn receive_now(&self, d: &Delivery<'_>) -> Result<Outcome, Refusal> {
        if self.secrets.is_empty() && self.shop_secrets.is_empty() {
            return Err(Refusal::NotConfigured(
                "Shopify webhooks are not configured (webhooks.shopify.secrets)".into(),
            ));
        }
        let missing = |field| Refusal::BadRequest { code: "missing_header", field, message: "missing".into() };
        let shop =
            header(d.headers, "shop-domain").ok_or_else(|| missing("X-Shopify-Shop-Domain"))?.to_ascii_lowercase();
        let sig = header(d.headers, "hmac-sha256")
            .ok_or_else(|| Refusal::BadSignature("missing X-Shopify-Hmac-Sha256".into()))?;
        // The header only picks the key: the MAC covers the body, so naming another shop gets
        // that shop's key, which the sender does not have.
        let keys = self.shop_secrets.get(&shop).unwrap_or(&self.secrets);
        if !signature::verify_b64(keys, &[d.body], sig) {
            tracing::warn!(%shop, "Shopify webhook with a bad signature");
            return Err(Refusal::BadSignature("signature does not match".into()));
        }
        let topic = header(d.headers, "topic").ok_or_else(|| missing("X-Shopify-Topic"))?;
        // Unknown shops are refused (not dropped), so Shopify retries while the mapping is added.
        let tenant = self
            .shops
            .get(&shop)
            .ok_or_else(|| Refusal::NotConfigured(format!("shop '{shop}' is not mapped to a tenant")))?;
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(d.body).into();
        // A shop's own secret proves the shop; the app's shared one proves only the app.
        let shared = !self.shop_secrets.contains_key(&shop);
        if shared && let Err(first) = self.bound.bind(digest, &shop, d.now.max(0) as u64) {
            tracing::warn!(%shop, %first, "a signed Shopify delivery replayed under another shop's header");
            return Err(Refusal::BadSignature(format!(
                "this signed delivery was first delivered for another shop ({first}); the shop header cannot move it"
            )));
        }
        let value: Value =
            serde_json::from_slice(d.body).map_err(|e| Refusal::bad_json("body", format!("body is not JSON: {e}")))?;
        let mut events = events(topic, &shop, &value, d.body, &self.thresholds);
        stamp(&mut events, tenant.as_str(), &idempotency_key(&shop, topic, &value, &digest));
        if let Some(at) = header(d.headers, "triggered-at") {
            let at = serde_json::from_value(json!(at)).ok();
            for e in &mut events {
                e.occurred_at.clone_from(&at);
            }
        }
        Ok(Outcome::Store(events))
    }
}

/// Order lines kept in an event: a Shopify order may have hundreds (a 134 KB delivery), and the
/// event must fit the bus's size limit so a genuine delivery is never refused.
const MAX_LINES: usize = 100;

/// When a delivery also raises an alert.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// `alert:info` for an order whose total is above this, in the order's currency.
    pub large_order_total: f64,
    /// `shopify:low-stock-alert` for an inventory level below this.
    pub low_stock: i64,
}

/// A header in either the `X-Shopify-*` or the Events-API `shopify-*` form.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(format!("x-shopify-{name}"))
        .or_else(|| headers.get(format!("shopify-{name}")))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// What a delivery is deduplicated by, from what is signed: a new order by the order itself
/// (the key the Shopify connector uses too, so an order that arrives both by webhook and by
/// polling is stored once); anything else by its topic and its body's digest, the same on every
/// retry. Not by the `X-Shopify-Event-Id` header: it is not signed, and a replayed body with a
/// fresh one would be stored again.
pub fn idempotency_key(shop: &str, topic: &str, body: &Value, digest: &[u8; 32]) -> String {
    if topic == "orders/create" {
        let id = text(&body["id"]);
        if !id.is_empty() {
            return format!("shopify:{shop}:order-created:{id}");
        }
    }
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("shopify:{shop}:{topic}:{hex}")
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn money(amount: &Value, currency: &str) -> Option<Money> {
    let amount = text(amount);
    (!amount.is_empty()).then(|| Money { amount, currency: currency.to_owned() })
}

/// The events a delivery becomes (tenant and envelope filled by the caller): the delivery's
/// own event first, then any alert it raises.
pub fn events(topic: &str, shop: &str, body: &Value, raw: &[u8], limits: &Thresholds) -> Vec<Event> {
    let first = event(topic, shop, body, raw);
    let alert = match &first.payload {
        Some(Payload::ShopifyOrderCreated(o)) => {
            let total = o.total.as_ref().and_then(|m| m.amount.parse::<f64>().ok().map(|v| (v, m)));
            match total {
                Some((value, money)) if value > limits.large_order_total => Some(Payload::AlertInfo(Alert {
                    title: "Large order".into(),
                    message: format!("Order {} on {shop}: {} {}", o.name, money.amount, money.currency),
                    origin: "shopify".into(),
                    link: String::new(),
                })),
                _ => None,
            }
        }
        Some(Payload::ShopifyStockUpdated(level)) if level.available < limits.low_stock => {
            Some(Payload::ShopifyLowStockAlert(LowStockAlert {
                count: 1,
                critical_items: u32::from(level.available <= 0),
                items: vec![StockItem {
                    sku: level.item.clone(),
                    name: format!("inventory item {} at location {}", level.item, level.location),
                    on_hand: level.available,
                    threshold: limits.low_stock,
                }],
            }))
        }
        _ => None,
    };
    let key = first.key.clone();
    let mut out = vec![first];
    out.extend(alert.map(|payload| Event {
        key,
        source: "webhook:shopify".into(),
        payload: Some(payload),
        ..Default::default()
    }));
    out
}

/// An order notification as an `Order`: its money in its own currency, at most [`MAX_LINES`]
/// lines (with the full count).
fn order(topic: &str, shop: &str, body: &Value) -> Order {
    let currency = body["currency"].as_str().unwrap_or_default();
    Order {
        order_id: text(&body["id"]),
        name: text(&body["name"]),
        store: shop.to_owned(),
        total: money(&body["total_price"], currency),
        subtotal: money(&body["subtotal_price"], currency),
        tax: money(&body["total_tax"], currency),
        financial_status: text(&body["financial_status"]),
        fulfillment_status: text(&body["fulfillment_status"]),
        line_count: body["line_items"].as_array().map_or(0, |l| l.len().min(u32::MAX as usize) as u32),
        lines: body["line_items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .take(MAX_LINES)
                    .map(|l| OrderLine {
                        sku: text(&l["sku"]),
                        title: text(&l["title"]),
                        quantity: l["quantity"].as_u64().unwrap_or(0).min(u32::MAX as u64) as u32,
                        price: money(&l["price"], currency),
                        product_id: text(&l["product_id"]),
                        variant_id: text(&l["variant_id"]),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        topic: topic.to_owned(),
        test: body["test"].as_bool().unwrap_or(false),
    }
}

fn event(topic: &str, shop: &str, body: &Value, raw: &[u8]) -> Event {
    let payload = match topic {
        "orders/create"
        | "orders/updated"
        | "orders/paid"
        | "orders/cancelled"
        | "orders/fulfilled"
        | "orders/partially_fulfilled"
        | "orders/edited" => {
            let order = order(topic, shop, body);
            if topic == "orders/create" {
                Payload::ShopifyOrderCreated(order)
            } else {
                Payload::ShopifyOrderUpdated(order)
            }
        }
        "inventory_levels/update" if body["available"].is_i64() => Payload::ShopifyStockUpdated(StockLevel {
            item: text(&body["inventory_item_id"]),
            location: text(&body["location_id"]),
            available: body["available"].as_i64().unwrap_or_default(),
            store: shop.to_owned(),
        }),
        _ => {
            let resource_id = text(&body["id"]);
            let (resource, action) = topic.split_once('/').unwrap_or((topic, ""));
            Payload::ShopifyDataUpdated(DataUpdated {
                resource: resource.to_owned(),
                resource_id,
                action: action.to_owned(),
                account: shop.to_owned(),
                // The notification itself, when small enough to travel with the event.
                detail_json: if raw.len() <= 16 * 1024 {
                    String::from_utf8_lossy(raw).into_owned()
                } else {
                    String::new()
                },
            })
        }
    };
    let key = match &payload {
        Payload::ShopifyOrderCreated(o) | Payload::ShopifyOrderUpdated(o) => o.order_id.clone(),
        Payload::ShopifyDataUpdated(d) => d.resource_id.clone(),
        // Inventory levels have no id of their own: (item, location) is the key.
        Payload::ShopifyStockUpdated(l) => format!("{}:{}", l.item, l.location),
        _ => String::new(),
    };
    Event { key, source: "webhook:shopify".into(), payload: Some(payload), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_beyond_2_pow_53_survive() {
        let body: Value = serde_json::from_str(
            r##"{"id":820982911946154508,"name":"#1001","currency":"GBP","total_price":"12.50","line_items":[{"sku":"A-1","quantity":2,"price":"6.25","product_id":632910392}]}"##,
        )
        .unwrap();
        let e = event("orders/create", "acme-uk.myshopify.com", &body, b"");
        let Some(Payload::ShopifyOrderCreated(o)) = e.payload else { panic!() };
        assert_eq!(o.order_id, "820982911946154508");
        assert_eq!(e.key, "820982911946154508");
        assert_eq!(o.total.unwrap().amount, "12.50");
        assert_eq!(o.lines[0].quantity, 2);
        assert_eq!(o.lines[0].product_id, "632910392");
    }

    const LIMITS: Thresholds = Thresholds { large_order_total: 1000.0, low_stock: 10 };

    #[test]
    fn inventory_levels_become_stock_updates_and_low_stock_alerts() {
        let raw = br#"{"inventory_item_id":271878346596884015,"location_id":24826418,"available":6}"#;
        let body: Value = serde_json::from_slice(raw).unwrap();
        let events = events("inventory_levels/update", "s.myshopify.com", &body, raw, &LIMITS);
        let Some(Payload::ShopifyStockUpdated(l)) = &events[0].payload else { panic!("{events:?}") };
        assert_eq!((l.item.as_str(), l.available), ("271878346596884015", 6));
        assert_eq!(events[0].key, "271878346596884015:24826418");
        let Some(Payload::ShopifyLowStockAlert(a)) = &events[1].payload else { panic!("{events:?}") };
        assert_eq!((a.items[0].on_hand, a.items[0].threshold), (6, 10));
        let plenty = serde_json::json!({"inventory_item_id":1,"location_id":2,"available":10});
        assert_eq!(events_of(&plenty, "inventory_levels/update").len(), 1, "10 is not below 10");
    }

    fn events_of(body: &Value, topic: &str) -> Vec<Event> {
        events(topic, "s.myshopify.com", body, body.to_string().as_bytes(), &LIMITS)
    }

    #[test]
    fn large_orders_raise_an_info_alert() {
        let big = serde_json::json!({"id":1,"name":"#1001","currency":"GBP","total_price":"1000.01"});
        let events = events_of(&big, "orders/create");
        let Some(Payload::AlertInfo(a)) = &events[1].payload else { panic!("{events:?}") };
        assert_eq!(a.message, "Order #1001 on s.myshopify.com: 1000.01 GBP");
        let small = serde_json::json!({"id":1,"name":"#1001","currency":"GBP","total_price":"1000.00"});
        assert_eq!(events_of(&small, "orders/create").len(), 1);
        assert_eq!(events_of(&big, "orders/updated").len(), 1, "only new orders alert");
    }
}
