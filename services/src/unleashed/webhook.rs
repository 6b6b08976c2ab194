//! Unleashed webhooks: `x-unleashed-signature` = base64 HMAC-SHA256 of
//! `"{x-unleashed-timestamp}.{raw body}"` keyed with the subscription's signing key, within a
//! 5-minute window. The scheme is CORROBORATED (several independent client libraries agree),
//! not read on Unleashed's own page: see docs/webhooks.md.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard::{
    names::Tenant,
    proto::v1::{DashboardRefreshRequired, DataUpdated, Event, event::Payload},
    secret::Secret,
};

use crate::{
    delivery::stamp,
    webhook::{
        self, ConfigError, Delivery, Doc, Env, Imitate, Imitation, Outcome, Refusal, WebhookSource,
        signature::{sign_b64, verify_b64},
    },
};

/// `[webhooks.unleashed]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Signing key(s) returned when the webhook subscription was created.
    pub keys: Vec<Secret>,
    /// The tenant this Unleashed account belongs to.
    pub tenant: String,
}

pub const DOC: Doc = Doc {
    summary: "Unleashed deliveries, verified with x-unleashed-signature over `{x-unleashed-timestamp}.{body}`.",
    ok: "{ids, duplicates} once durable",
    errors: &[
        (400, "Not JSON, or no eventNotificationId."),
        (401, "Bad or stale signature."),
        (404, "Not configured."),
    ],
};

pub const IMITATION: Option<Imitation> = Some(Imitation { sign, sample });

fn sign(d: &Imitate<'_>) -> Vec<(String, String)> {
    let ts = d.now.to_string();
    let sig = sign_b64(d.secret.as_bytes(), &[ts.as_bytes(), b".", d.body]);
    vec![("x-unleashed-timestamp".into(), ts), ("x-unleashed-signature".into(), sig)]
}

/// `topic` is the event type (`salesorder.created`).
fn sample(topic: &str, id: u64) -> Value {
    json!({
        "subscriptionId": "sample", "eventNotificationId": format!("sample-{id}"), "eventType": topic,
        "createdOn": "2026-01-01T00:00:00Z", "data": {"salesOrderGuid": format!("sample-{id}")}
    })
}

#[derive(Debug)]
struct Source {
    keys: Vec<Vec<u8>>,
    tenant: Option<Tenant>,
}

pub fn build(section: &toml::Value, _: &Env) -> Result<Arc<dyn WebhookSource>, ConfigError> {
    let c: Config = webhook::section("unleashed", section)?;
    let tenant = match c.tenant.as_str() {
        "" if c.keys.is_empty() => None,
        "" => return Err(ConfigError::new("webhooks.unleashed.tenant", "required with keys")),
        t => Some(webhook::tenant("webhooks.unleashed.tenant", t)?),
    };
    Ok(Arc::new(Source { keys: c.keys.iter().map(|s| s.as_bytes().to_vec()).collect(), tenant }))
}

impl WebhookSource for Source {
    fn receive<'a>(&'a self, d: Delivery<'a>) -> BoxFuture<'a, Result<Outcome, Refusal>> {
        Box::pin(async move {
            let Some(tenant) = &self.tenant else {
                return Err(Refusal::NotConfigured(
                    "Unleashed webhooks are not configured (webhooks.unleashed)".into(),
                ));
            };
            if !verify(&self.keys, d.header("x-unleashed-signature"), d.header("x-unleashed-timestamp"), d.body, d.now)
            {
                return Err(Refusal::BadSignature(
                    "signature does not match, or the timestamp is outside 5 minutes".into(),
                ));
            }
            let value: Value = serde_json::from_slice(d.body)
                .map_err(|e| Refusal::bad_json("body", format!("body is not JSON: {e}")))?;
            let (mut events, key) = events(&value).ok_or_else(|| Refusal::BadRequest {
                code: "invalid_json",
                field: "eventNotificationId",
                message: "missing".into(),
            })?;
            stamp(&mut events, tenant.as_str(), &key);
            Ok(Outcome::Store(events))
        })
    }
}

pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Whether the delivery is authentic and fresh. `now` is Unix seconds.
pub fn verify(keys: &[Vec<u8>], signature: Option<&str>, timestamp: Option<&str>, body: &[u8], now: i64) -> bool {
    let (Some(sig), Some(ts)) = (signature, timestamp) else { return false };
    let ts = ts.trim();
    let Ok(at) = ts.parse::<i64>() else { return false };
    // Checked arithmetic: a timestamp near i64::MIN is stale, not an overflow.
    let fresh = now.checked_sub(at).and_then(i64::checked_abs).is_some_and(|d| d <= TOLERANCE_SECS);
    fresh && verify_b64(keys, &[ts.as_bytes(), b".", body], sig)
}

/// The dashboard sections an Unleashed resource feeds: assemblies are production, stock and
/// products are inventory. Notifications carry the changed record, not recomputed figures.
fn sections(resource: &str) -> Vec<String> {
    let r = resource.to_ascii_lowercase();
    let mut out = Vec::new();
    if r.contains("assembl") || r.contains("production") {
        out.push("production".to_owned());
    }
    if r.contains("stock") || r.contains("product") || r.contains("warehouse") {
        out.push("inventory".to_owned());
    }
    out
}

/// The events a notification becomes: `unleashed:data-updated`, then a `dashboard:refresh-required`
/// for the production or inventory sections it affects. `None` when it lacks its notification id
/// (no dedupe possible).
pub fn events(body: &Value) -> Option<(Vec<Event>, String)> {
    let (first, key) = event(body)?;
    let mut events = vec![first];
    let resource = match &events[0].payload {
        Some(Payload::UnleashedDataUpdated(d)) => d.resource.clone(),
        _ => String::new(),
    };
    let sections = sections(&resource);
    if !sections.is_empty() {
        events.push(Event {
            key: "unleashed".into(),
            source: "webhook:unleashed".into(),
            payload: Some(Payload::DashboardRefreshRequired(DashboardRefreshRequired {
                sections,
                reason: format!("Unleashed {resource} changed"),
            })),
            ..Default::default()
        });
    }
    Some((events, key))
}

fn event(body: &Value) -> Option<(Event, String)> {
    let id = body["eventNotificationId"].as_str().filter(|s| !s.is_empty())?.to_owned();
    let kind = body["eventType"].as_str().unwrap_or_default();
    let (resource, action) = kind.split_once('.').unwrap_or((kind, ""));
    // `data` arrives as an object or as a JSON string.
    let data = match &body["data"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
        other => other.clone(),
    };
    let resource_id = data
        .as_object()
        .and_then(|o| o.iter().find(|(k, v)| k.to_ascii_lowercase().ends_with("guid") && v.is_string()))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let event = Event {
        key: resource_id.clone(),
        source: "webhook:unleashed".into(),
        payload: Some(Payload::UnleashedDataUpdated(DataUpdated {
            resource: resource.to_owned(),
            resource_id,
            action: action.to_owned(),
            account: body["subscriptionId"].as_str().unwrap_or_default().to_owned(),
            detail_json: data.to_string(),
        })),
        ..Default::default()
    };
    Some((event, format!("unleashed:{id}")))
}

#[cfg(test)]
mod overflow {
    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        for ts in [i64::MIN.to_string(), i64::MAX.to_string(), "-9223372036854775808".into()] {
            assert!(!super::verify(&[b"k".to_vec()], Some("x"), Some(&ts), b"{}", 1_700_000_000));
            assert!(!super::verify(&[b"k".to_vec()], Some("x"), Some(&ts), b"{}", i64::MIN));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assemblies_and_stock_ask_for_a_refresh_of_their_sections() {
        let body = |kind: &str| serde_json::json!({"eventNotificationId": "n-1", "eventType": kind, "data": {}});
        let (made, key) = events(&body("assembly.completed")).unwrap();
        assert_eq!(key, "unleashed:n-1");
        let Some(Payload::DashboardRefreshRequired(r)) = &made[1].payload else { panic!("{made:?}") };
        assert_eq!(r.sections, ["production"]);
        let (made, _) = events_of("stockadjustment.created");
        let Some(Payload::DashboardRefreshRequired(r)) = &made[1].payload else { panic!("{made:?}") };
        assert_eq!(r.sections, ["inventory"]);
        assert_eq!(events_of("salesorder.created").0.len(), 1);

        fn events_of(kind: &str) -> (Vec<Event>, String) {
            events(&serde_json::json!({"eventNotificationId": "n", "eventType": kind})).unwrap()
        }
    }

    #[test]
    fn vector_and_window() {
        let keys = vec![b"UNLEASHED_TEST_API_KEY_do_not_use".to_vec()];
        let body = br#"{"eventType":"salesorder.created"}"#;
        let sig = Some("SP4fDJFiYi20uEyDFgBo6OQdHwwanezD7Szha50p9lY=");
        assert!(verify(&keys, sig, Some("1767225600"), body, 1767225600));
        assert!(!verify(&keys, sig, Some("1767225600"), body, 1767225600 + 301));
        assert!(!verify(&keys, sig, Some("1767225601"), body, 1767225600));
        assert!(!verify(&keys, None, Some("1767225600"), body, 1767225600));
    }

    #[test]
    fn data_as_string_or_object() {
        for data in [serde_json::json!({"salesOrderGuid": "g-1"}), serde_json::json!("{\"salesOrderGuid\":\"g-1\"}")] {
            let body = serde_json::json!({"eventNotificationId": "n-1", "eventType": "salesorder.updated", "subscriptionId": "s", "data": data});
            let (e, key) = event(&body).unwrap();
            assert_eq!(key, "unleashed:n-1");
            let Some(Payload::UnleashedDataUpdated(d)) = e.payload else { panic!() };
            assert_eq!(
                (d.resource.as_str(), d.action.as_str(), d.resource_id.as_str()),
                ("salesorder", "updated", "g-1")
            );
        }
        assert!(event(&serde_json::json!({"eventType": "x.y"})).is_none());
    }
}
