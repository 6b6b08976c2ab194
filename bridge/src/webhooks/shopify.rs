//! Shopify webhooks: `X-Shopify-Hmac-Sha256` (or the newer un-prefixed `shopify-*` headers)
//! = base64 HMAC-SHA256 of the raw body with the app's client secret; the topic from the
//! header; orders become typed order events, every other topic `shopify:data-updated`.
//! Ids are kept as strings: Shopify's exceed 2^53.

use axum::http::HeaderMap;
use serde_json::Value;
use switchyard::proto::v1::{DataUpdated, Event, Money, Order, OrderLine, event::Payload};

/// A header in either the `X-Shopify-*` or the Events-API `shopify-*` form.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(format!("x-shopify-{name}"))
        .or_else(|| headers.get(format!("shopify-{name}")))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Shopify's own dedupe advice: the event id is the same on every retry of one event.
pub fn idempotency_key(shop: &str, topic: &str, headers: &HeaderMap) -> Option<String> {
    match (header(headers, "event-id"), header(headers, "webhook-id")) {
        (Some(event), _) => Some(format!("shopify:{shop}:{topic}:{event}")),
        (None, Some(delivery)) => Some(format!("shopify:{shop}:delivery:{delivery}")),
        (None, None) => None,
    }
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

/// The event a delivery becomes (tenant and envelope filled by the caller).
pub fn event(topic: &str, shop: &str, body: &Value, raw_len: usize, raw: &[u8]) -> Event {
    let payload = match topic {
        "orders/create"
        | "orders/updated"
        | "orders/paid"
        | "orders/cancelled"
        | "orders/fulfilled"
        | "orders/partially_fulfilled"
        | "orders/edited" => {
            let currency = body["currency"].as_str().unwrap_or_default();
            let order = Order {
                order_id: text(&body["id"]),
                name: text(&body["name"]),
                store: shop.to_owned(),
                total: money(&body["total_price"], currency),
                subtotal: money(&body["subtotal_price"], currency),
                tax: money(&body["total_tax"], currency),
                financial_status: text(&body["financial_status"]),
                fulfillment_status: text(&body["fulfillment_status"]),
                lines: body["line_items"]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
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
            };
            if topic == "orders/create" {
                Payload::ShopifyOrderCreated(order)
            } else {
                Payload::ShopifyOrderUpdated(order)
            }
        }
        _ => {
            // Inventory levels have no id of their own: (item, location) is the key.
            let resource_id = match (&body["inventory_item_id"], &body["location_id"]) {
                (item @ Value::Number(_), location @ Value::Number(_)) => format!("{}:{}", text(item), text(location)),
                _ => text(&body["id"]),
            };
            let (resource, action) = topic.split_once('/').unwrap_or((topic, ""));
            Payload::ShopifyDataUpdated(DataUpdated {
                resource: resource.to_owned(),
                resource_id,
                action: action.to_owned(),
                account: shop.to_owned(),
                // The notification itself, when small enough to travel with the event.
                detail_json: if raw_len <= 16 * 1024 {
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
        let e = event("orders/create", "acme-uk.myshopify.com", &body, 0, b"");
        let Some(Payload::ShopifyOrderCreated(o)) = e.payload else { panic!() };
        assert_eq!(o.order_id, "820982911946154508");
        assert_eq!(e.key, "820982911946154508");
        assert_eq!(o.total.unwrap().amount, "12.50");
        assert_eq!(o.lines[0].quantity, 2);
        assert_eq!(o.lines[0].product_id, "632910392");
    }

    #[test]
    fn inventory_levels_key_by_item_and_location() {
        let raw = br#"{"inventory_item_id":271878346596884015,"location_id":24826418,"available":6}"#;
        let body: Value = serde_json::from_slice(raw).unwrap();
        let e = event("inventory_levels/update", "s.myshopify.com", &body, raw.len(), raw);
        let Some(Payload::ShopifyDataUpdated(d)) = e.payload else { panic!() };
        assert_eq!(d.resource_id, "271878346596884015:24826418");
        assert_eq!((d.resource.as_str(), d.action.as_str()), ("inventory_levels", "update"));
        assert!(d.detail_json.contains("available"));
    }
}
