//! Xero webhooks: `x-xero-signature` = base64 HMAC-SHA256 of the raw body keyed with the
//! webhook key's own bytes (not base64-decoded). Intent-to-receive deliveries carry no
//! events and get 200 with an empty body; bad signatures get 401. Events are thin
//! (a resource id and what happened), so they become `xero:data-updated`.

use serde::Deserialize;
use switchyard::proto::v1::{DashboardRefreshRequired, DataUpdated, Event, event::Payload};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
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
        let itr: Delivery =
            serde_json::from_str(r#"{"events":null,"lastEventSequence":0,"firstEventSequence":0,"entropy":"x"}"#)
                .unwrap();
        assert!(itr.events.is_empty());
        let d: Delivery = serde_json::from_str(r#"{"events":[{"resourceUrl":"https://api.xero.com/api.xro/2.0/Contacts/717f","resourceId":"717f","eventDateUtc":"2024-06-21T01:15:39.902","eventType":"UPDATE","eventCategory":"CONTACT","tenantId":"c2cc","tenantType":"ORGANISATION"}],"lastEventSequence":1,"firstEventSequence":1,"entropy":"x"}"#).unwrap();
        let e = &d.events[0];
        assert_eq!(e.idempotency_key(), "xero:c2cc:CONTACT:717f:2024-06-21T01:15:39.902:UPDATE");
        let Some(Payload::XeroDataUpdated(u)) = e.event().payload else { panic!() };
        assert_eq!((u.resource.as_str(), u.action.as_str()), ("CONTACT", "UPDATE"));
    }
}
