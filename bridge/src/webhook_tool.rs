//! `switchyard webhook sign|send`: sign a body the way a platform would, and deliver it to a
//! running bridge — for trying a setup end to end. `send` without `--file` posts a sample
//! payload shaped like the platform's documented one (clearly a sample: `"test": true`).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::webhooks::{signature::sign_b64, standard::secret_key};

#[derive(Debug, thiserror::Error)]
pub enum WebhookToolError {
    #[error("{0}")]
    Input(String),
    #[error("cannot deliver to {url}: {message}")]
    Send { url: String, message: String },
}

/// The platform a delivery imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Platform {
    Shopify,
    Xero,
    Unleashed,
    /// Standard Webhooks (`--source` names the configured sender).
    Standard,
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

/// Signs `body` as `platform` would. `topic` is Shopify's topic or the Standard Webhooks type.
pub fn sign(
    platform: Platform,
    secret: &str,
    topic: &str,
    shop: &str,
    body: Vec<u8>,
) -> Result<Signed, WebhookToolError> {
    let id = switchyard::auth::random_id();
    let headers = match platform {
        Platform::Shopify => vec![
            ("X-Shopify-Hmac-Sha256".into(), sign_b64(secret.as_bytes(), &[&body])),
            ("X-Shopify-Topic".into(), topic.into()),
            ("X-Shopify-Shop-Domain".into(), shop.into()),
            ("X-Shopify-Event-Id".into(), id.clone()),
            ("X-Shopify-Webhook-Id".into(), id),
            ("X-Shopify-API-Version".into(), "2025-10".into()),
        ],
        Platform::Xero => vec![("x-xero-signature".into(), sign_b64(secret.as_bytes(), &[&body]))],
        Platform::Unleashed => {
            let ts = now().to_string();
            vec![
                ("x-unleashed-timestamp".into(), ts.clone()),
                ("x-unleashed-signature".into(), sign_b64(secret.as_bytes(), &[ts.as_bytes(), b".", &body])),
            ]
        }
        Platform::Standard => {
            let key = secret_key(secret).map_err(WebhookToolError::Input)?;
            let (msg, ts) = (format!("msg_{id}"), now().to_string());
            let sig = sign_b64(&key, &[msg.as_bytes(), b".", ts.as_bytes(), b".", &body]);
            vec![
                ("webhook-id".into(), msg),
                ("webhook-timestamp".into(), ts),
                ("webhook-signature".into(), format!("v1,{sig}")),
            ]
        }
    };
    Ok(Signed { headers: headers.into_iter().collect(), body })
}

/// A sample body for `platform`, marked as a test where the platform has such a flag.
pub fn sample(platform: Platform, topic: &str) -> Vec<u8> {
    let id = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(1);
    let v = match platform {
        Platform::Shopify if topic.starts_with("orders/") => serde_json::json!({
            "id": 820982911946154508u64.wrapping_add(id % 1_000_000), "name": format!("#T{}", id % 100_000),
            "currency": "GBP", "total_price": "42.00", "subtotal_price": "35.00", "total_tax": "7.00",
            "financial_status": "paid", "fulfillment_status": null, "test": true,
            "line_items": [{"sku": "SAMPLE-1", "title": "Sample item", "quantity": 1, "price": "35.00"}]
        }),
        Platform::Shopify => serde_json::json!({"id": id, "test": true}),
        Platform::Xero => {
            serde_json::json!({"events": [], "firstEventSequence": 0, "lastEventSequence": 0, "entropy": "sample"})
        }
        Platform::Unleashed => serde_json::json!({
            "subscriptionId": "sample", "eventNotificationId": format!("sample-{id}"), "eventType": topic,
            "createdOn": "2026-01-01T00:00:00Z", "data": {"salesOrderGuid": format!("sample-{id}")}
        }),
        Platform::Standard => {
            serde_json::json!({"type": topic, "timestamp": "2026-01-01T00:00:00Z", "data": {"sample": true}})
        }
    };
    v.to_string().into_bytes()
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
