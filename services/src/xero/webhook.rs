//! Xero webhooks: `x-xero-signature` = base64 HMAC-SHA256 of the raw body keyed with the
//! webhook key's own bytes (not base64-decoded). Intent-to-receive deliveries carry no
//! events and get 200 with an empty body; bad signatures get 401. Events are thin
//! (a resource id and what happened), so they become `xero:data-updated`.

use std::{collections::BTreeMap, sync::Arc};

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;
use switchyard::{
    names::Tenant,
    proto::v1::{DashboardRefreshRequired, DataUpdated, Event, event::Payload},
    secret::Secret,
};

use crate::{
    delivery::stamp,
    webhook::{self, ConfigError, Delivery, Doc, Env, Imitate, Imitation, Outcome, Refusal, WebhookSource, signature},
};

/// `[webhooks.xero]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The webhook key(s) from the Xero developer portal, used as their own bytes.
    pub keys: Vec<Secret>,
    /// Xero `tenantId` → tenant.
    pub tenants: BTreeMap<String, String>,
}

pub const DOC: Doc = Doc {
    summary: "Xero deliveries and intent-to-receive, verified with x-xero-signature.",
    ok: "Empty body, once durable",
    errors: &[(401, "Bad signature (empty body)."), (404, "Not configured, or a Xero tenant not mapped.")],
};

/// An intent-to-receive check: signed, no events.
pub const IMITATION: Option<Imitation> = Some(Imitation {
    sign: |d: &Imitate<'_>| vec![("x-xero-signature".into(), signature::sign_b64(d.secret.as_bytes(), &[d.body]))],
    sample: |_, _| json!({"events": [], "firstEventSequence": 0, "lastEventSequence": 0, "entropy": "sample"}),
});

#[derive(Debug)]
struct Source {
    keys: Vec<Vec<u8>>,
    tenants: BTreeMap<String, Tenant>,
}

pub fn build(section: &toml::Value, _: &Env) -> Result<Arc<dyn WebhookSource>, ConfigError> {
    let c: Config = webhook::section("xero", section)?;
    let mut tenants = BTreeMap::new();
    for (id, t) in &c.tenants {
        tenants.insert(id.clone(), webhook::tenant("webhooks.xero.tenants", t)?);
    }
    Ok(Arc::new(Source { keys: c.keys.iter().map(|s| s.as_bytes().to_vec()).collect(), tenants }))
}

impl WebhookSource for Source {
    fn receive<'a>(&'a self, d: Delivery<'a>) -> BoxFuture<'a, Result<Outcome, Refusal>> {
        Box::pin(async move {
            if self.keys.is_empty() {
                return Err(Refusal::NotConfigured("Xero webhooks are not configured (webhooks.xero.keys)".into()));
            }
            let sig = d.header("x-xero-signature").unwrap_or_default();
            if !signature::verify_b64(&self.keys, &[d.body], sig) {
                return Err(Refusal::BadSignature("signature does not match".into()));
            }
            let delivery: Body = serde_json::from_slice(d.body)
                .map_err(|e| Refusal::bad_json("body", format!("not a Xero webhook payload: {e}")))?;
            let mut events = Vec::with_capacity(delivery.events.len() * 2);
            for x in &delivery.events {
                let tenant = self.tenants.get(&x.tenant_id).ok_or_else(|| {
                    Refusal::NotConfigured(format!("Xero tenant '{}' is not mapped to a tenant", x.tenant_id))
                })?;
                let mut e = vec![x.event(), refresh_required()];
                stamp(&mut e, tenant.as_str(), &x.idempotency_key());
                events.extend(e);
            }
            // Intent to receive: correctly signed and empty; stored as nothing.
            Ok(Outcome::Store(events))
        })
    }

    fn bare(&self) -> bool {
        true
    }
}

/// One Xero delivery body: its events (none in an intent-to-receive check).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Body {
    // `null` has been seen in intent-to-receive requests; treat it as empty.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub events: Vec<XeroEvent>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct XeroEvent {
    #[serde(default)]
    pub resource_url: String,
    pub resource_id: String,
    #[serde(default)]
    pub event_date_utc: String,
    pub event_type: String,
    pub event_category: String,
    pub tenant_id: String,
    #[serde(default)]
    pub tenant_type: String,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<XeroEvent>, D::Error> {
    Ok(Option::<Vec<XeroEvent>>::deserialize(d)?.unwrap_or_default())
}

impl XeroEvent {
    /// Xero sends no event id; these fields together identify one change.
    pub fn idempotency_key(&self) -> String {
        format!(
            "xero:{}:{}:{}:{}:{}",
            self.tenant_id, self.event_category, self.resource_id, self.event_date_utc, self.event_type
        )
    }

    pub fn event(&self) -> Event {
        Event {
            key: self.resource_id.clone(),
            source: "webhook:xero".into(),
            payload: Some(Payload::XeroDataUpdated(DataUpdated {
                resource: self.event_category.clone(),
                resource_id: self.resource_id.clone(),
                action: self.event_type.clone(),
                account: self.tenant_id.clone(),
                detail_json: serde_json::to_string(self).unwrap_or_default(),
            })),
            ..Default::default()
        }
    }
}

/// Xero events name what changed, not the new figures: dashboards refetch. A snapshot keyed
/// `xero`, so a burst of changes coalesces into one refresh for slow clients.
pub fn refresh_required() -> Event {
    Event {
        key: "xero".into(),
        source: "webhook:xero".into(),
        payload: Some(Payload::DashboardRefreshRequired(DashboardRefreshRequired {
            sections: vec!["working-capital".into()],
            reason: "Xero data changed".into(),
        })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_to_receive_and_events_parse() {
        let itr: Body =
            serde_json::from_str(r#"{"events":null,"lastEventSequence":0,"firstEventSequence":0,"entropy":"x"}"#)
                .unwrap();
        assert!(itr.events.is_empty());
        let d: Body = serde_json::from_str(r#"{"events":[{"resourceUrl":"https://api.xero.com/api.xro/2.0/Contacts/717f","resourceId":"717f","eventDateUtc":"2024-06-21T01:15:39.902","eventType":"UPDATE","eventCategory":"CONTACT","tenantId":"c2cc","tenantType":"ORGANISATION"}],"lastEventSequence":1,"firstEventSequence":1,"entropy":"x"}"#).unwrap();
        let e = &d.events[0];
        assert_eq!(e.idempotency_key(), "xero:c2cc:CONTACT:717f:2024-06-21T01:15:39.902:UPDATE");
        let Some(Payload::XeroDataUpdated(u)) = e.event().payload else { panic!() };
        assert_eq!((u.resource.as_str(), u.action.as_str()), ("CONTACT", "UPDATE"));
    }
}
