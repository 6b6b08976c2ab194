//! `POST /api/webhooks/amazon`: AWS SNS messages (EventBridge → SNS → HTTPS) carrying SP-API
//! notifications. Only configured topics are verified, confirmed or accepted; the message is
//! verified by [`super::sns`], the notification translated by [`super::notification`] (shared
//! with the SQS poller, so one notification arriving both ways is stored once).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard::names::Tenant;

use super::{notification, sns};
use crate::{
    delivery::stamp,
    webhook::{self, ConfigError, Delivery, Doc, Env, Imitation, Outcome, Refusal, WebhookSource},
};

/// `[webhooks.amazon]`: SP-API notifications arriving through EventBridge → SNS → HTTPS.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// SNS topic ARNs whose messages are accepted and whose subscriptions are confirmed.
    pub topics: Vec<String>,
    /// Selling partner (seller) id → tenant.
    pub sellers: BTreeMap<String, String>,
    /// Fulfillable FBA units below this raise `amazon:low-stock-alert` (the seeds' reorder point).
    pub low_stock_threshold: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self { topics: Vec::new(), sellers: BTreeMap::new(), low_stock_threshold: 10 }
    }
}

pub const DOC: Doc = Doc {
    summary: "AWS SNS messages (EventBridge → SNS → HTTPS) carrying SP-API notifications; RSA signature versions 1 and 2, certificates only from sns.<region>.amazonaws.com.",
    ok: "{ids, duplicates} once durable; {confirmed} for a subscription confirmation",
    errors: &[
        (400, "Not an SNS message."),
        (401, "Bad signature or certificate URL."),
        (404, "Not configured, topic not allowed, or seller not mapped."),
        (502, "AWS unreachable (certificate or confirmation); SNS retries."),
    ],
};

/// SNS signs with AWS's own key: nothing else can sign a delivery.
pub const IMITATION: Option<Imitation> = None;

struct Source {
    topics: BTreeSet<String>,
    sellers: BTreeMap<String, Tenant>,
    low_stock_threshold: i64,
    sns: sns::Verifier,
}

pub fn build(section: &toml::Value, env: &Env) -> Result<Arc<dyn WebhookSource>, ConfigError> {
    let c: Config = webhook::section("amazon", section)?;
    let mut sellers = BTreeMap::new();
    for (id, t) in &c.sellers {
        sellers.insert(id.clone(), webhook::tenant("webhooks.amazon.sellers", t)?);
    }
    if let Some(arn) = c.topics.iter().find(|t| !t.starts_with("arn:aws")) {
        return Err(ConfigError::new("webhooks.amazon.topics", format!("'{arn}' is not an SNS topic ARN")));
    }
    let fetch = env.fetch().map_err(|e| ConfigError::new("webhooks.amazon", format!("HTTPS client: {e}")))?;
    Ok(Arc::new(Source {
        topics: c.topics.iter().cloned().collect(),
        sellers,
        low_stock_threshold: c.low_stock_threshold,
        sns: sns::Verifier::new(fetch),
    }))
}

impl WebhookSource for Source {
    fn receive<'a>(&'a self, d: Delivery<'a>) -> BoxFuture<'a, Result<Outcome, Refusal>> {
        Box::pin(async move {
            if self.topics.is_empty() {
                return Err(Refusal::NotConfigured(
                    "Amazon (SNS) webhooks are not configured (webhooks.amazon.topics)".into(),
                ));
            }
            let m: sns::Message = serde_json::from_slice(d.body)
                .map_err(|e| Refusal::bad_json("body", format!("not an SNS message: {e}")))?;
            // Before any certificate is fetched: a message for a topic we never subscribed costs nothing.
            if !self.topics.contains(&m.topic_arn) {
                return Err(Refusal::NotConfigured(format!(
                    "SNS topic '{}' is not in webhooks.amazon.topics",
                    m.topic_arn
                )));
            }
            self.sns.verify(&m).await.map_err(|e| match e {
                sns::Reject::Fetch(_) => Refusal::Upstream(e.to_string()),
                _ => Refusal::BadSignature(e.to_string()),
            })?;
            match m.kind.as_str() {
                "SubscriptionConfirmation" => {
                    let url = sns::check_url("SubscribeURL", m.subscribe_url.as_deref().unwrap_or_default())
                        .map_err(|e| Refusal::BadSignature(e.to_string()))?;
                    self.sns
                        .https()
                        .get(url.as_str())
                        .await
                        .map_err(|e| Refusal::Upstream(format!("confirming the subscription: {e}")))?;
                    tracing::info!(topic = %m.topic_arn, "SNS subscription confirmed");
                    Ok(Outcome::Answer(json!({ "confirmed": m.topic_arn })))
                }
                "UnsubscribeConfirmation" => {
                    tracing::warn!(topic = %m.topic_arn, "SNS says this endpoint was unsubscribed");
                    Ok(Outcome::Answer(json!({ "unsubscribed": m.topic_arn })))
                }
                "Notification" => self.notification(&m),
                other => Err(Refusal::BadRequest {
                    code: "invalid_field",
                    field: "Type",
                    message: format!("unknown SNS message type '{other}'"),
                }),
            }
        })
    }
}

impl Source {
    fn notification(&self, m: &sns::Message) -> Result<Outcome, Refusal> {
        let value: Value = serde_json::from_str(&m.message).unwrap_or(Value::Null);
        // Accepted (so SNS stops retrying) but not understood: say so, loudly.
        let Some(n) = notification::notification(&value) else {
            tracing::warn!(message_id = %m.message_id, "SNS message is not an SP-API notification; ignored");
            return Ok(Outcome::Answer(json!({ "ids": [], "ignored": "not an SP-API notification" })));
        };
        let tenant = self.sellers.get(&n.seller).ok_or_else(|| {
            Refusal::NotConfigured(format!("seller '{}' is not in webhooks.amazon.sellers", n.seller))
        })?;
        let mut events = n.events(self.low_stock_threshold, "webhook:amazon");
        let key = n.idempotency_key().unwrap_or_else(|| format!("sns:{}", m.message_id));
        stamp(&mut events, tenant.as_str(), &key);
        let at = serde_json::from_value(json!(n.event_time)).ok();
        for e in &mut events {
            e.occurred_at.clone_from(&at);
        }
        Ok(Outcome::Store(events))
    }
}
