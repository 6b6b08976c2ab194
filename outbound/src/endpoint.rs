//! An endpoint: where one tenant wants events delivered, which ones, and how fast; and the
//! records that make its delivery durable (see the crate docs for the keys).

use serde::{Deserialize, Serialize};
use switchyard::names::EventId;

/// `ep_` and 16 hex digits, random: never guessable from another tenant's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EndpointId(String);

impl EndpointId {
    pub fn generate() -> Self {
        Self(format!("ep_{:016x}", rand::random::<u64>()))
    }

    /// An id as a client sends it; `None` unless it has the generated form.
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("ep_")?;
        (hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
            .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EndpointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a delivery becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A signed POST of each event (Standard Webhooks).
    Webhook { url: String },
    /// A Slack incoming webhook: one Block Kit message per group of alerts.
    Slack { url: String },
    /// E-mail through the operator's SMTP relay: one message per group of alerts.
    Email { to: Vec<String> },
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Webhook { .. } => "webhook",
            Self::Slack { .. } => "slack",
            Self::Email { .. } => "email",
        }
    }

    /// People read these: alerts arriving together are grouped into one message.
    pub fn for_people(&self) -> bool {
        !matches!(self, Self::Webhook { .. })
    }
}

/// What a tenant admin asks for (HTTP JSON, gRPC, or a static entry in the config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    /// `webhook` (the default), `slack` or `email`.
    #[serde(default = "webhook")]
    pub kind: String,
    /// Where a webhook or Slack message is posted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Who an e-mail goes to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// Event-type globs (`shopify:order-created`, `*:sync-error`); empty: every type.
    #[serde(default)]
    pub types: Vec<String>,
    /// Channel globs (`alerts`, `jobs/*`); empty: every channel.
    #[serde(default)]
    pub channels: Vec<String>,
    /// A condition on the payload's fields (see `filter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Most deliveries per second to this endpoint (none: as fast as it answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<u32>,
    /// Deliver one at a time, in id order: a failing event holds back the ones after it.
    #[serde(default)]
    pub ordered: bool,
    /// Where delivery starts: `now` (the default), an event id (deliver what follows it), or
    /// `since=<RFC 3339 or Unix ms>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

fn webhook() -> String {
    "webhook".into()
}

impl Spec {
    /// The target the spec names, or which field is wrong.
    pub fn target(&self) -> Result<Target, crate::filter::SelectError> {
        let bad = |field, message: &str| crate::filter::SelectError { field, message: message.into() };
        let url = || self.url.clone().ok_or_else(|| bad("url", "required for this kind"));
        Ok(match self.kind.as_str() {
            "webhook" => Target::Webhook { url: url()? },
            "slack" => Target::Slack { url: url()? },
            "email" if self.to.is_empty() => return Err(bad("to", "at least one address")),
            "email" if self.to.len() > 20 => return Err(bad("to", "at most 20 addresses")),
            "email" => Target::Email { to: self.to.clone() },
            _ => return Err(bad("kind", "must be webhook, slack or email")),
        })
    }
}

/// A signing secret as stored: sealed (see `seal`), with the time it stops being used (a
/// rotated-out secret signs alongside the new one until then).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSecret {
    pub sealed: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

/// Why an endpoint stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disabled {
    pub at_ms: u64,
    pub reason: String,
}

/// An endpoint as stored under `ep.<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub id: EndpointId,
    pub tenant: String,
    #[serde(flatten)]
    pub spec: Spec,
    pub secrets: Vec<StoredSecret>,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Disabled>,
    /// From the config file: changed by editing it, not through the API.
    #[serde(default)]
    pub r#static: bool,
    /// Bumped by every operation that changes what the deliverer must load (a replay, a
    /// redrive, enabling): whichever node delivers restarts it from the store.
    #[serde(default)]
    pub revision: u64,
}

/// Where delivery stands, under `pg.<id>`: every event with an id ≤ `cursor` that the
/// endpoint selects was delivered, dead-lettered or is owed (`q.<id>.<event>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub cursor: EventId,
    /// Since when attempts have failed with no success between (none: healthy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    #[serde(default)]
    pub last_success_ms: u64,
    #[serde(default)]
    pub delivered: u64,
    #[serde(default)]
    pub failed_attempts: u64,
    #[serde(default)]
    pub dead_lettered: u64,
    /// Events retention removed before they were delivered (a gap: said, never hidden).
    #[serde(default)]
    pub lost_to_retention: u64,
    /// Events above the cursor already finished (delivered, owed or dead) while one below them
    /// was still in flight: skipped on a restart, so nothing acknowledged is sent twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done_above: Vec<EventId>,
    /// Alert types sent to people and not yet resolved (a "resolved" follows when they clear).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_alerts: Vec<String>,
}

/// An event owed outside the cursor's order (a retry, a replay, a redrive), under
/// `q.<endpoint>.<event id, 20 digits>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owed {
    pub attempts: u32,
    pub next_ms: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
}

/// An event that used up the ladder, under `dl.<endpoint>.<event id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: EventId,
    pub r#type: String,
    pub attempts: u32,
    pub last_error: String,
    pub at_ms: u64,
}

/// The store's keys: one place, so every reader and writer agrees.
pub mod keys {
    use super::EndpointId;
    use switchyard::names::EventId;

    pub const ENDPOINTS: &str = "ep.";

    pub fn endpoint(id: &EndpointId) -> String {
        format!("ep.{id}")
    }
    pub fn progress(id: &EndpointId) -> String {
        format!("pg.{id}")
    }
    pub fn owed_prefix(id: &EndpointId) -> String {
        format!("q.{id}.")
    }
    pub fn owed(id: &EndpointId, event: EventId) -> String {
        format!("q.{id}.{:020}", event.0)
    }
    pub fn dead_prefix(id: &EndpointId) -> String {
        format!("dl.{id}.")
    }
    pub fn dead(id: &EndpointId, event: EventId) -> String {
        format!("dl.{id}.{:020}", event.0)
    }
    /// The event id at the end of an owed or dead-letter key.
    pub fn event_of(key: &str) -> Option<EventId> {
        key.rsplit('.').next()?.parse().ok().map(EventId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_read_as_admins_write_them_and_ids_have_one_form() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "kind": "webhook", "url": "https://example.com/h", "types": ["shopify:order-created"],
            "filter": "total.amount >= 1000", "ratePerSec": 10, "ordered": true
        }))
        .unwrap();
        assert_eq!(spec.target().unwrap(), Target::Webhook { url: "https://example.com/h".into() });
        let email: Spec = serde_json::from_value(serde_json::json!({"kind": "email"})).unwrap();
        assert_eq!(email.target().unwrap_err().field, "to");
        assert_eq!(spec.rate_per_sec, Some(10));
        let unknown = serde_json::from_value::<Spec>(serde_json::json!({"kind": "webhook", "url": "x", "nope": 1}));
        assert!(unknown.is_err());
        let id = EndpointId::generate();
        assert_eq!(EndpointId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(EndpointId::parse("ep_../../x"), None);
        assert_eq!(keys::event_of(&keys::owed(&id, EventId(42))), Some(EventId(42)));
    }
}
