//! Standard Webhooks (standardwebhooks.com, spec v1): `webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<b64> [v1,<b64> …]` over `{id}.{timestamp}.{body}`, keyed with the
//! base64-decoded `whsec_` secret, timestamps within 5 minutes either way.

use base64::{Engine, engine::general_purpose::STANDARD};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use switchyard::{
    names::Tenant,
    proto::v1::{CustomEvent, Delivery as DeliveryKind, Event, event::Payload},
};
use switchyard_services::webhook::{Delivery, Outcome, Refusal, WebhookSource};

use super::signature::verify_b64;
use crate::config::{ConfigError, StandardHook, bad};

/// One configured sender: its keys, and where its events go.
#[derive(Debug)]
pub struct Source {
    name: String,
    keys: Vec<Vec<u8>>,
    tenant: Tenant,
    channels: Vec<String>,
}

impl Source {
    pub fn from_config(name: &str, s: &StandardHook) -> Result<Self, ConfigError> {
        let key = |field: &str| format!("webhooks.standard.{name}.{field}");
        let keys = s
            .secrets
            .iter()
            .map(|k| secret_key(k).map_err(|e| bad(&key("secrets"), e)))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(bad(&key("secrets"), "at least one secret"));
        }
        if s.channels.is_empty() {
            return Err(bad(&key("channels"), "at least one channel"));
        }
        let tenant = Tenant::new(&s.tenant).map_err(|e| bad(&key("tenant"), format!("'{}': {e}", s.tenant)))?;
        Ok(Self { name: name.to_owned(), keys, tenant, channels: s.channels.clone() })
    }
}

impl WebhookSource for Source {
    fn receive<'a>(&'a self, d: Delivery<'a>) -> BoxFuture<'a, Result<Outcome, Refusal>> {
        Box::pin(async move {
            verify(
                &self.keys,
                d.header("webhook-id"),
                d.header("webhook-timestamp"),
                d.header("webhook-signature"),
                d.body,
                d.now,
            )
            .map_err(|e| Refusal::BadSignature(e.to_string()))?;
            let value: Value = serde_json::from_slice(d.body)
                .map_err(|e| Refusal::bad_json("body", format!("body is not JSON: {e}")))?;
            let kind = value["type"].as_str().unwrap_or("event");
            let source = &self.name;
            let mut event = Event {
                tenant: self.tenant.to_string(),
                source: format!("webhook:{source}"),
                idempotency_key: format!("standard:{source}:{}", d.header("webhook-id").unwrap_or_default()),
                payload: Some(Payload::Custom(CustomEvent {
                    r#type: format!("{source}:{kind}"),
                    json: value.get("data").unwrap_or(&value).to_string(),
                    channels: self.channels.clone(),
                    delivery: DeliveryKind::Fact as i32,
                })),
                ..Default::default()
            };
            if let Some(ts) = value["timestamp"].as_str() {
                event.occurred_at = serde_json::from_value(json!(ts)).ok();
            }
            Ok(Outcome::Store(vec![event]))
        })
    }
}

pub const TOLERANCE_SECS: i64 = 5 * 60;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("webhook-timestamp is not a Unix time")]
    BadTimestamp,
    #[error("webhook-timestamp is outside the 5-minute tolerance")]
    Stale,
    #[error("no v1 signature matches")]
    Signature,
}

/// Decodes a `whsec_…` secret into its key bytes (unpadded base64 tolerated).
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret).trim_end_matches('=');
    if b64.is_empty() {
        return Err("empty secret".into());
    }
    let padded = format!("{b64}{}", "=".repeat((4 - b64.len() % 4) % 4));
    STANDARD.decode(padded).map_err(|e| format!("secret is not base64: {e}"))
}

/// Verifies one delivery. `now` is Unix seconds.
pub fn verify(
    keys: &[Vec<u8>],
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), Reject> {
    let id = id.ok_or(Reject::Missing("webhook-id"))?;
    let ts_raw = timestamp.ok_or(Reject::Missing("webhook-timestamp"))?;
    let signatures = signatures.ok_or(Reject::Missing("webhook-signature"))?;
    let ts: i64 = ts_raw.trim().parse().map_err(|_| Reject::BadTimestamp)?;
    // Checked arithmetic: a timestamp near i64::MIN is stale, not an overflow.
    if now.checked_sub(ts).and_then(i64::checked_abs).is_none_or(|d| d > TOLERANCE_SECS) {
        return Err(Reject::Stale);
    }
    let ok = signatures
        .split(' ')
        .filter_map(|s| s.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .any(|(_, sig)| verify_b64(keys, &[id.as_bytes(), b".", ts_raw.trim().as_bytes(), b".", body], sig));
    if ok { Ok(()) } else { Err(Reject::Signature) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_from_the_reference_libraries() {
        // standard-webhooks libraries/{go,javascript}: TestWebhookSign / "sign function works".
        let keys = vec![secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()];
        let body = br#"{"test": 2432232314}"#;
        let (id, ts) = ("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330");
        let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(verify(&keys, Some(id), Some(ts), Some(good), body, 1614265330), Ok(()));
        // Several signatures, one valid, unknown versions ignored.
        let multi = format!("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1a,abc {good}");
        assert_eq!(verify(&keys, Some(id), Some(ts), Some(&multi), body, 1614265330), Ok(()));
        let bad = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=";
        assert_eq!(verify(&keys, Some(id), Some(ts), Some(bad), body, 1614265330), Err(Reject::Signature));
        assert_eq!(verify(&keys, Some(id), Some(ts), Some("v1,"), body, 1614265330), Err(Reject::Signature));
        assert_eq!(verify(&keys, Some(id), Some(ts), Some(good), body, 1614265330 + 301), Err(Reject::Stale));
        assert_eq!(verify(&keys, Some(id), Some(ts), Some(good), body, 1614265330 - 301), Err(Reject::Stale));
        assert_eq!(verify(&keys, None, Some(ts), Some(good), body, 1614265330), Err(Reject::Missing("webhook-id")));
        // Rust library vector.
        let key = secret_key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let sig = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
        assert_eq!(
            verify(&[key], Some("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"), Some("1649367553"), Some(sig), body, 1649367553),
            Ok(())
        );
        assert!(secret_key("whsec_").is_err());
        assert!(secret_key("").is_err());
    }
}
