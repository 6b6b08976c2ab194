//! `switchyard webhook sign|send`: sign a body the way a platform would, and deliver it to a
//! running bridge — for trying a setup end to end. `send` without `--file` posts a sample
//! payload shaped like the platform's documented one (clearly a sample: `"test": true`).

use std::time::{SystemTime, UNIX_EPOCH};

use switchyard_services::{
    platform,
    webhook::{Imitate, Imitation},
};

use crate::webhooks::{signature::sign_b64, standard::secret_key};

#[derive(Debug, thiserror::Error)]
pub enum WebhookToolError {
    #[error("{0}")]
    Input(String),
    #[error("cannot deliver to {url}: {message}")]
    Send { url: String, message: String },
}

/// What `--platform` may name: every platform whose deliveries can be imitated, and
/// `standard` (Standard Webhooks; `--source` names the configured sender).
pub fn platforms() -> Vec<&'static str> {
    platform::ALL.iter().filter(|p| p.webhook.imitation.is_some()).map(|p| p.name).chain(["standard"]).collect()
}

/// A signed delivery: headers and body.
#[derive(Debug, Clone)]
pub struct Signed {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn imitation(name: &str) -> Result<Imitation, WebhookToolError> {
    let p = platform::get(name)
        .ok_or_else(|| WebhookToolError::Input(format!("no platform '{name}' (one of {})", platforms().join(", "))))?;
    p.webhook.imitation.ok_or_else(|| {
        WebhookToolError::Input(format!(
            "{name} deliveries are signed by the platform's own key; they cannot be imitated"
        ))
    })
}

/// Signs `body` as `platform` would. `topic` is Shopify's topic or the Standard Webhooks type.
pub fn sign(platform: &str, secret: &str, topic: &str, shop: &str, body: Vec<u8>) -> Result<Signed, WebhookToolError> {
    let id = switchyard::auth::random_id();
    let headers = if platform == "standard" {
        let key = secret_key(secret).map_err(WebhookToolError::Input)?;
        let (msg, ts) = (format!("msg_{id}"), now().to_string());
        let sig = sign_b64(&key, &[msg.as_bytes(), b".", ts.as_bytes(), b".", &body]);
        vec![
            ("webhook-id".into(), msg),
            ("webhook-timestamp".into(), ts),
            ("webhook-signature".into(), format!("v1,{sig}")),
        ]
    } else {
        (imitation(platform)?.sign)(&Imitate { secret, topic, shop, body: &body, id: &id, now: now() })
    };
    Ok(Signed { headers, body })
}

/// A sample body for `platform`, marked as a test where the platform has such a flag.
pub fn sample(platform: &str, topic: &str) -> Result<Vec<u8>, WebhookToolError> {
    let id = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(1);
    let v = if platform == "standard" {
        serde_json::json!({"type": topic, "timestamp": "2026-01-01T00:00:00Z", "data": {"sample": true}})
    } else {
        (imitation(platform)?.sample)(topic, id)
    };
    Ok(v.to_string().into_bytes())
}

/// POSTs a signed delivery; returns the status and body.
pub async fn send(url: &str, signed: &Signed) -> Result<(u16, String), WebhookToolError> {
    let err = |e: reqwest::Error| WebhookToolError::Send { url: url.to_owned(), message: e.to_string() };
    let mut req = reqwest::Client::new().post(url).header("content-type", "application/json").body(signed.body.clone());
    for (k, v) in &signed.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req.send().await.map_err(err)?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.map_err(err)?))
}
