//! Events in and out of proto3 JSON, the form browsers, scripts and the HTTP API use.
//!
//! Two input forms are accepted:
//! - the envelope itself, proto3 JSON: `{"tenant":"acme","key":"42","shopifyOrderCreated":{…}}`;
//! - the short form: `{"type":"shopify:order-created","key":"42","data":{…}}`, where `data`
//!   is the payload message (or, for a type outside the catalog, any JSON, with `channels`).

use serde_json::{Map, Value};

use crate::{
    catalog::{Catalog, lower_camel},
    error::{PublishError, PublishErrorKind},
    proto::v1::Event,
};

/// Envelope fields the short form passes through unchanged.
const ENVELOPE: &[&str] = &["tenant", "occurredAt", "source", "key", "idempotencyKey", "trace"];

pub fn event_from_json(value: Value) -> Result<Event, PublishError> {
    let Value::Object(mut obj) = value else {
        return Err(PublishError::invalid(PublishErrorKind::InvalidJson, "event", "an event must be a JSON object"));
    };
    if let Some(ty) = obj.remove("type") {
        let ty = ty
            .as_str()
            .ok_or_else(|| PublishError::invalid(PublishErrorKind::InvalidType, "type", "must be a string"))?
            .to_owned();
        let data = obj.remove("data").unwrap_or(Value::Object(Map::new()));
        let mut envelope = Map::new();
        for k in ENVELOPE {
            if let Some(v) = obj.remove(*k) {
                envelope.insert((*k).to_owned(), v);
            }
        }
        match Catalog::global().by_name(&ty) {
            Some(spec) => {
                if let Some(extra) = obj.keys().next() {
                    return Err(PublishError::invalid(
                        PublishErrorKind::InvalidJson,
                        "event",
                        format!("unknown field '{extra}'"),
                    ));
                }
                envelope.insert(lower_camel(&spec.field_name), data);
            }
            None => {
                let channels = obj.remove("channels").unwrap_or(Value::Array(Vec::new()));
                let delivery = obj.remove("delivery");
                if let Some(extra) = obj.keys().next() {
                    return Err(PublishError::invalid(
                        PublishErrorKind::InvalidJson,
                        "event",
                        format!("unknown field '{extra}'"),
                    ));
                }
                let mut custom = Map::new();
                custom.insert("type".into(), Value::String(ty));
                custom.insert("json".into(), Value::String(data.to_string()));
                custom.insert("channels".into(), channels);
                if let Some(d) = delivery {
                    custom.insert("delivery".into(), d);
                }
                envelope.insert("custom".into(), Value::Object(custom));
            }
        }
        obj = envelope;
    }
    serde_json::from_value::<Event>(Value::Object(obj))
        .map_err(|e| PublishError::invalid(PublishErrorKind::InvalidJson, "event", e.to_string()))
}

/// The event as one line of proto3 JSON (the SSE `data:` and the polling API's items).
pub fn event_to_json(event: &Event) -> String {
    serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::event::Payload;

    #[test]
    fn short_form_and_envelope_agree() {
        let short = event_from_json(serde_json::json!({
            "type": "shopify:order-created", "key": "820982911946154508",
            "data": {"orderId": "820982911946154508", "total": {"amount": "10.50", "currency": "GBP"}}
        }))
        .unwrap();
        let long = event_from_json(serde_json::json!({
            "key": "820982911946154508",
            "shopifyOrderCreated": {"orderId": "820982911946154508", "total": {"amount": "10.50", "currency": "GBP"}}
        }))
        .unwrap();
        assert_eq!(short, long);
        let Some(Payload::ShopifyOrderCreated(o)) = &short.payload else { panic!("wrong payload") };
        assert_eq!(o.order_id, "820982911946154508");
        let back = event_to_json(&short);
        assert!(back.contains("\"shopifyOrderCreated\""), "{back}");
    }

    #[test]
    fn custom_types_and_errors() {
        let e =
            event_from_json(serde_json::json!({"type": "acme:thing", "data": {"n": 1}, "channels": ["ops"]})).unwrap();
        let Some(Payload::Custom(c)) = e.payload else { panic!() };
        assert_eq!(c.json, r#"{"n":1}"#);
        assert_eq!(c.channels, vec!["ops"]);
        assert_eq!(event_from_json(serde_json::json!([1])).unwrap_err().code(), "invalid_json");
        assert_eq!(
            event_from_json(serde_json::json!({"type": "alert:info", "data": {"nope": 1}})).unwrap_err().code(),
            "invalid_json"
        );
        assert_eq!(event_from_json(serde_json::json!({"type": 5})).unwrap_err().field(), "type");
    }
}
