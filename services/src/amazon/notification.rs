//! Amazon Selling Partner API notifications → catalog events, wherever they arrive from: an SQS
//! message body (the Amazon connector polls the queue) or a verified SNS message on
//! `POST /api/webhooks/amazon` (EventBridge → SNS → HTTPS). The payload is either the SP-API
//! notification or an EventBridge event whose `detail` is. Notifications are documented in PascalCase for older
//! types and camelCase for newer ones, so fields are looked up in both.

use serde_json::Value;
use switchyard::proto::v1::{
    DashboardRefreshRequired, DataUpdated, Event, LowStockAlert, Order, OrderLine, StockItem, event::Payload,
};

/// `obj[name]`, or `obj[camelCase(name)]`.
fn field<'a>(obj: &'a Value, name: &str) -> &'a Value {
    match &obj[name] {
        Value::Null => {
            let mut camel = name.to_owned();
            if let Some(first) = camel.get_mut(0..1) {
                first.make_ascii_lowercase();
            }
            &obj[camel.as_str()]
        }
        found => found,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// An SP-API notification: its type, its id (for dedupe) and its seller.
#[derive(Debug)]
pub struct Notification<'a> {
    pub kind: String,
    pub id: String,
    pub seller: String,
    pub event_time: String,
    payload: &'a Value,
}

/// Finds the SP-API notification inside an SNS `Message` value (directly or as EventBridge `detail`).
pub fn notification(message: &Value) -> Option<Notification<'_>> {
    let n = match &message["detail"] {
        detail @ Value::Object(_) => detail,
        _ => message,
    };
    let kind = text(field(n, "NotificationType"));
    if kind.is_empty() {
        return None;
    }
    let payload = field(n, "Payload");
    let order = field(payload, "OrderChangeNotification");
    let seller = [field(order, "SellerId"), field(payload, "SellerId"), field(n, "SellerId")]
        .into_iter()
        .map(text)
        .find(|s| !s.is_empty())
        .unwrap_or_default();
    Some(Notification {
        id: text(field(field(n, "NotificationMetadata"), "NotificationId")),
        event_time: text(field(n, "EventTime")),
        kind,
        seller,
        payload,
    })
}

impl Notification<'_> {
    /// The catalog events this notification becomes (tenant and envelope left to the caller).
    /// The notification id survives every route (SQS, SNS), so keying by it stores a
    /// notification that arrives both ways once.
    pub fn idempotency_key(&self) -> Option<String> {
        (!self.id.is_empty()).then(|| format!("amazon:notification:{}", self.id))
    }

    /// `source` records the route it came by (`webhook:amazon`, `sqs:amazon`).
    pub fn events(&self, low_stock_threshold: i64, source: &str) -> Vec<Event> {
        let event = |key: String, payload| Event {
            key,
            source: source.to_owned(),
            payload: Some(payload),
            ..Default::default()
        };
        match self.kind.as_str() {
            "ORDER_CHANGE" => {
                let (key, payload) = self.order_change();
                vec![event(key, payload)]
            }
            "FBA_INVENTORY_AVAILABILITY_CHANGES" => {
                let sku = text(field(self.payload, "SKU"));
                let markets = field(self.payload, "FulfillmentInventoryByMarketplace").as_array();
                let fulfillable: i64 = markets
                    .into_iter()
                    .flatten()
                    .filter_map(|m| field(field(m, "FulfillmentInventory"), "Fulfillable").as_i64())
                    .sum();
                let name = markets.and_then(|m| m.first()).map(|m| text(field(m, "ItemName"))).unwrap_or_default();
                let mut events = vec![
                    event(sku.clone(), Payload::AmazonDataUpdated(self.data_updated(&sku))),
                    event(
                        "amazon".into(),
                        Payload::DashboardRefreshRequired(DashboardRefreshRequired {
                            sections: vec!["inventory".into()],
                            reason: "Amazon FBA inventory changed".into(),
                        }),
                    ),
                ];
                if fulfillable < low_stock_threshold {
                    events.push(event(
                        sku.clone(),
                        Payload::AmazonLowStockAlert(LowStockAlert {
                            count: 1,
                            critical_items: u32::from(fulfillable <= 0),
                            items: vec![StockItem { sku, name, on_hand: fulfillable, threshold: low_stock_threshold }],
                        }),
                    ));
                }
                events
            }
            _ => vec![event(String::new(), Payload::AmazonDataUpdated(self.data_updated("")))],
        }
    }

    /// An order change as an order event and its key (the order id): created for the first
    /// notification (a status change into Pending), updated after.
    fn order_change(&self) -> (String, Payload) {
        let o = field(self.payload, "OrderChangeNotification");
        let summary = field(o, "Summary");
        let change = text(field(o, "OrderChangeType"));
        let status = text(field(summary, "OrderStatus"));
        let order = Order {
            order_id: text(field(o, "AmazonOrderId")),
            store: text(field(summary, "MarketplaceId")),
            fulfillment_status: status.clone(),
            lines: field(summary, "OrderItems")
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|i| OrderLine {
                            sku: text(field(i, "SellerSKU")),
                            quantity: field(i, "Quantity").as_u64().unwrap_or(0).min(u32::MAX as u64) as u32,
                            ..Default::default()
                        })
                        .collect()
                })
                .unwrap_or_default(),
            topic: format!("ORDER_CHANGE/{change}"),
            ..Default::default()
        };
        // An order's first notification is a status change into Pending.
        let payload = if change == "OrderStatusChange" && status == "Pending" {
            Payload::AmazonOrderCreated(order)
        } else {
            Payload::AmazonOrderUpdated(order)
        };
        let key = match &payload {
            Payload::AmazonOrderCreated(o) | Payload::AmazonOrderUpdated(o) => o.order_id.clone(),
            _ => String::new(),
        };
        (key, payload)
    }

    fn data_updated(&self, resource_id: &str) -> DataUpdated {
        DataUpdated {
            resource: self.kind.clone(),
            resource_id: resource_id.to_owned(),
            action: "notification".into(),
            account: self.seller.clone(),
            detail_json: self.payload.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like the ORDER_CHANGE example in amzn/selling-partner-api-models
    // schemas/notifications/orderChangeNotification.json.
    const ORDER_CHANGE: &str = r#"{"NotificationVersion":"1.0","NotificationType":"ORDER_CHANGE","PayloadVersion":"1.0",
        "EventTime":"2020-01-11T00:09:53.109Z",
        "Payload":{"OrderChangeNotification":{"NotificationLevel":"OrderLevel","SellerId":"A3TH9S8BH6GOGM",
          "AmazonOrderId":"903-8868176-2219830","OrderChangeType":"OrderStatusChange",
          "OrderChangeTrigger":{"TimeOfOrderChange":"2022-11-29T19:42:04.284Z","ChangeReason":"Order status changed"},
          "Summary":{"MarketplaceId":"ATVPDKIKX0DER","OrderStatus":"Pending","FulfillmentType":"MFN",
            "OrderItems":[{"OrderItemId":"OIID34853450","SellerSKU":"SellerSKUID1","Quantity":2}]}}},
        "NotificationMetadata":{"ApplicationId":"app-id","SubscriptionId":"sub-id","PublishTime":"2020-07-13T19:42:04.284Z",
          "NotificationId":"d0e9e693-c3ad-4373-979f-ed4ec98dd746"}}"#;

    #[test]
    fn order_change_becomes_an_order_event() {
        let v: Value = serde_json::from_str(ORDER_CHANGE).unwrap();
        let n = notification(&v).unwrap();
        assert_eq!((n.kind.as_str(), n.seller.as_str()), ("ORDER_CHANGE", "A3TH9S8BH6GOGM"));
        assert_eq!(n.id, "d0e9e693-c3ad-4373-979f-ed4ec98dd746");
        let events = n.events(10, "webhook:amazon");
        let Some(Payload::AmazonOrderCreated(o)) = &events[0].payload else { panic!("{events:?}") };
        assert_eq!(o.order_id, "903-8868176-2219830");
        assert_eq!((o.lines[0].sku.as_str(), o.lines[0].quantity), ("SellerSKUID1", 2));
        let shipped = ORDER_CHANGE.replace(r#""OrderStatus":"Pending""#, r#""OrderStatus":"Shipped""#);
        let v: Value = serde_json::from_str(&shipped).unwrap();
        assert!(matches!(
            notification(&v).unwrap().events(10, "webhook:amazon")[0].payload,
            Some(Payload::AmazonOrderUpdated(_))
        ));
    }

    #[test]
    fn inventory_change_inside_eventbridge_raises_refresh_and_low_stock() {
        // EventBridge envelope; payload as in FBAInventoryAvailabilityChangeNotification.json's example.
        let v = serde_json::json!({"version":"0","id":"eb-1","detail-type":"FBA_INVENTORY_AVAILABILITY_CHANGES",
            "detail":{"notificationType":"FBA_INVENTORY_AVAILABILITY_CHANGES","eventTime":"2020-07-13T19:42:04.284Z",
              "payload":{"SellerId":"A3TH9S8BH6GOGM","FNSKU":"X001ABCDEF","ASIN":"B00001ABCD","SKU":"SELLERSKU-1",
                "FulfillmentInventoryByMarketplace":[
                  {"MarketplaceId":"ATVPDKIKX0DER","ItemName":"Product Title","FulfillmentInventory":{"Fulfillable":5}},
                  {"MarketplaceId":"A2EUQ1WTGCTBG2","ItemName":"Product Title","FulfillmentInventory":{"Fulfillable":3}}]},
              "notificationMetadata":{"notificationId":"n-2"}}});
        let n = notification(&v).unwrap();
        assert_eq!((n.seller.as_str(), n.id.as_str()), ("A3TH9S8BH6GOGM", "n-2"));
        let events = n.events(10, "webhook:amazon");
        assert_eq!(events.len(), 3);
        let Some(Payload::AmazonLowStockAlert(a)) = &events[2].payload else { panic!("{events:?}") };
        assert_eq!((a.items[0].on_hand, a.items[0].threshold, a.items[0].sku.as_str()), (8, 10, "SELLERSKU-1"));
        assert_eq!(n.events(8, "webhook:amazon").len(), 2, "8 units is not below a threshold of 8");
    }
}
