//! SP-API notifications delivered to an SQS queue (the destination SP-API supports for
//! ORDER_CHANGE, FBA_INVENTORY_AVAILABILITY_CHANGES and most other types). The poller long-polls
//! the queue, turns each message into events, publishes them, and deletes a message only once
//! its events are durable on the bus: a crash in between means SQS redelivers it, and the
//! notification id as idempotency key stores it once.
//!
//! SQS speaks its JSON protocol (`X-Amz-Target: AmazonSQS.ReceiveMessage`), signed with SigV4
//! by the `aws-sigv4` crate (AWS's own signer), so the full AWS SDK is not needed here.

use std::{sync::Arc, time::Duration};

use aws_credential_types::Credentials;
use aws_sigv4::{
    http_request::{SignableBody, SignableRequest, SigningSettings, sign},
    sign::v4,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use super::notification;
use crate::{connector::SyncError, delivery, http::Http, sink::Sink};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsConfig {
    /// `https://sqs.eu-west-1.amazonaws.com/123456789012/sp-api-notifications`
    pub queue_url: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default)]
    pub session_token: Option<String>,
    /// Where to send SQS calls, when not the queue URL's host (tests, VPC endpoints).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Long-poll wait, 0–20 seconds.
    #[serde(default = "wait")]
    pub wait_secs: u32,
}

fn wait() -> u32 {
    20
}

/// One received message.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Message {
    message_id: String,
    receipt_handle: String,
    body: String,
}

pub struct Poller {
    config: SqsConfig,
    http: Http,
    /// Seller id → tenant.
    tenant: String,
    low_stock_threshold: i64,
}

impl Poller {
    pub fn new(config: SqsConfig, http: Http, tenant: &str, low_stock_threshold: i64) -> Self {
        Self { config, http, tenant: tenant.to_owned(), low_stock_threshold }
    }

    /// One signed SQS JSON-protocol call.
    async fn call(&self, action: &str, body: Value) -> Result<Value, SyncError> {
        let url = self.config.endpoint.clone().unwrap_or_else(|| {
            let u = url::Url::parse(&self.config.queue_url).ok();
            u.map(|u| format!("{}://{}/", u.scheme(), u.host_str().unwrap_or_default()))
                .unwrap_or_else(|| self.config.queue_url.clone())
        });
        let body = body.to_string();
        let target = format!("AmazonSQS.{action}");
        let what = format!("SQS {action}");
        self.http
            .json(&what, || {
                let mut req = self
                    .http
                    .client()
                    .post(&url)
                    .header("content-type", "application/x-amz-json-1.0")
                    .header("x-amz-target", &target)
                    .body(body.clone());
                // Signed per attempt: the signature covers the time.
                match self.signature(&url, &target, &body) {
                    Ok(headers) => {
                        for (k, v) in headers {
                            req = req.header(k, v);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "SQS request could not be signed"),
                }
                req
            })
            .await
    }

    fn signature(&self, url: &str, target: &str, body: &str) -> Result<Vec<(&'static str, String)>, String> {
        let identity = Credentials::new(
            &self.config.access_key_id,
            &self.config.secret_access_key,
            self.config.session_token.clone(),
            None,
            "switchyard-config",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.config.region)
            .name("sqs")
            .time(std::time::SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let headers = [("content-type", "application/x-amz-json-1.0"), ("x-amz-target", target)];
        let request = SignableRequest::new("POST", url, headers.into_iter(), SignableBody::Bytes(body.as_bytes()))
            .map_err(|e| e.to_string())?;
        let (instructions, _) = sign(request, &params).map_err(|e| e.to_string())?.into_parts();
        let (headers, _) = instructions.into_parts();
        Ok(headers.into_iter().map(|h| (h.name(), h.value().to_owned())).collect())
    }

    /// Receives one batch, publishes its events, deletes what is durable. Returns how many
    /// messages were handled.
    pub async fn poll_once(&self, sink: &dyn Sink) -> Result<usize, SyncError> {
        let r = self
            .call(
                "ReceiveMessage",
                json!({ "QueueUrl": self.config.queue_url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": self.config.wait_secs }),
            )
            .await?;
        let messages: Vec<Message> = serde_json::from_value(r["Messages"].clone()).unwrap_or_default();
        for m in &messages {
            let value: Value = serde_json::from_str(&m.body).unwrap_or(Value::Null);
            let events = match notification::notification(&value) {
                Some(n) => {
                    let mut events = n.events(self.low_stock_threshold, "sqs:amazon");
                    let key = n.idempotency_key().unwrap_or_else(|| format!("sqs:{}", m.message_id));
                    delivery::stamp(&mut events, &self.tenant, &key);
                    events
                }
                None => {
                    // Not ours to understand (a test message, another producer): say so and let it go.
                    tracing::warn!(message_id = %m.message_id, "SQS message is not an SP-API notification; deleting");
                    Vec::new()
                }
            };
            if !events.is_empty() {
                // Not durable: leave the message; it becomes visible again and is retried.
                sink.publish(events).await.map_err(SyncError::Publish)?;
            }
            self.call("DeleteMessage", json!({ "QueueUrl": self.config.queue_url, "ReceiptHandle": m.receipt_handle }))
                .await?;
        }
        Ok(messages.len())
    }
}

/// Polls until `stop`; wakes the Amazon connector (`trigger`) after messages arrive, so the
/// figures follow the notifications.
pub fn spawn(
    poller: Poller,
    sink: Arc<dyn Sink>,
    trigger: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            let pause = tokio::select! {
                r = poller.poll_once(sink.as_ref()) => match r {
                    Ok(n) => {
                        failures = 0;
                        if n > 0 {
                            trigger.notify_one();
                        }
                        Duration::ZERO
                    }
                    Err(error) => {
                        failures += 1;
                        tracing::warn!(%error, "SQS poll failed");
                        Duration::from_secs(1 << failures.min(6))
                    }
                },
                _ = stop.changed() => return,
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
        }
    })
}
