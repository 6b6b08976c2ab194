//! A platform's webhook, as the bridge serves it: `POST /api/webhooks/<platform>` hands the
//! headers and the raw body to that platform's [`WebhookSource`], which verifies the signature
//! on the bytes as received and translates the delivery into tenant-stamped events with
//! idempotency keys. The bridge's one generic handler stores them and answers; nothing in it
//! knows a platform. Each platform's source lives in its own folder (`shopify/webhook.rs`, ...)
//! and is registered in [`crate::platform::ALL`].

pub mod signature;

use std::sync::Arc;

use futures::future::BoxFuture;
use reqwest::header::HeaderMap;
use serde_json::Value;
use switchyard::proto::v1::Event;

/// One delivery as received.
pub struct Delivery<'a> {
    pub headers: &'a HeaderMap,
    /// Untouched: every platform signs the bytes it sent.
    pub body: &'a [u8],
    /// Unix seconds: signature freshness windows are checked against it.
    pub now: i64,
}

impl Delivery<'_> {
    /// A header's value as text, when it is.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a verified delivery asks for.
pub enum Outcome {
    /// Store these (one batch, all or nothing), then answer with their ids; a retried delivery
    /// derives the same keys and is answered with the first ids.
    Store(Vec<Event>),
    /// Nothing to store; answer this (a subscription confirmation, an ignored message).
    Answer(Value),
}

/// Why a delivery was refused. Each is one HTTP answer, so the platform knows whether to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 404 `not_configured`: a shop, tenant or topic not mapped yet; platforms retry, so
    /// deliveries wait (in the platform) while the mapping is added.
    #[error("{0}")]
    NotConfigured(String),
    /// 401 `invalid_signature`.
    #[error("{0}")]
    BadSignature(String),
    /// 400 with `code` and the `field` at fault.
    #[error("{field}: {message}")]
    BadRequest { code: &'static str, field: &'static str, message: String },
    /// 502 `upstream_unavailable`: we could not reach the platform (a certificate, a
    /// confirmation); the platform retries.
    #[error("{0}")]
    Upstream(String),
}

impl Refusal {
    pub fn bad_json(field: &'static str, message: impl std::fmt::Display) -> Self {
        Self::BadRequest { code: "invalid_json", field, message: message.to_string() }
    }
}

/// One platform's configured webhook.
pub trait WebhookSource: Send + Sync + 'static {
    /// Verifies `delivery` on its raw bytes (parsing only what finds the key, if anything),
    /// then translates it.
    fn receive<'a>(&'a self, delivery: Delivery<'a>) -> BoxFuture<'a, Result<Outcome, Refusal>>;

    /// Whether answers carry no body: Xero's intent-to-receive check reads only the status.
    fn bare(&self) -> bool {
        false
    }
}

/// How a platform's `POST /api/webhooks/<name>` is described in the OpenAPI document.
pub struct Doc {
    pub summary: &'static str,
    /// What a 200 carries.
    pub ok: &'static str,
    /// Every refusal it can answer, by status.
    pub errors: &'static [(u16, &'static str)],
}

/// How `switchyard webhook sign|send` imitates a platform, for trying a setup end to end.
#[derive(Clone, Copy)]
pub struct Imitation {
    /// The headers the platform would send with the delivery, signed with its secret.
    pub sign: fn(&Imitate<'_>) -> Vec<(String, String)>,
    /// A sample delivery (for `topic`, where the platform has topics), marked as a test where
    /// the platform has such a flag.
    pub sample: fn(topic: &str, id: u64) -> Value,
}

/// What an imitated delivery is signed from.
pub struct Imitate<'a> {
    pub secret: &'a str,
    /// Shopify's topic; ignored by platforms without topics.
    pub topic: &'a str,
    /// Shopify's shop domain.
    pub shop: &'a str,
    pub body: &'a [u8],
    /// A fresh delivery id.
    pub id: &'a str,
    /// Unix seconds.
    pub now: u64,
}

/// HTTPS GETs a source makes to its platform (SNS certificates and confirmations). Behind a
/// trait so tests serve their own.
pub trait Fetch: Send + Sync + 'static {
    /// The body of a 2xx answer to `GET url`, or why there is none.
    fn get<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Vec<u8>, String>>;
}

/// What sources are built with besides their own config section.
#[derive(Clone, Default)]
pub struct Env {
    /// `None`: the real HTTPS client ([`HttpsFetcher`]).
    pub fetch: Option<Arc<dyn Fetch>>,
}

impl Env {
    pub fn fetch(&self) -> Result<Arc<dyn Fetch>, String> {
        match &self.fetch {
            Some(f) => Ok(f.clone()),
            None => Ok(Arc::new(HttpsFetcher::new()?)),
        }
    }
}

/// A config section that does not hold: the key at fault, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self { key: key.into(), message: message.to_string() }
    }
}

/// Reads a platform's `[webhooks.<name>]` section into its config type.
pub fn section<T: serde::de::DeserializeOwned>(name: &str, value: &toml::Value) -> Result<T, ConfigError> {
    T::deserialize(value.clone()).map_err(|e| ConfigError::new(format!("webhooks.{name}"), e.message()))
}

/// A configured tenant name, checked.
pub fn tenant(key: &str, name: &str) -> Result<switchyard::names::Tenant, ConfigError> {
    switchyard::names::Tenant::new(name).map_err(|e| ConfigError::new(key, format!("'{name}': {e}")))
}

/// The real fetcher: reqwest over rustls with the platform's trust roots; https only, no
/// redirects, 5 s, at most 64 KiB.
pub struct HttpsFetcher {
    client: reqwest::Client,
}

impl HttpsFetcher {
    pub fn new() -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { client })
    }
}

impl Fetch for HttpsFetcher {
    fn get<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let response = self.client.get(url).send().await.map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("{url} answered {}", response.status()));
            }
            // Certificates and confirmation answers are a few KiB.
            let body = response.bytes().await.map_err(|e| e.to_string())?;
            if body.len() > 64 * 1024 {
                return Err(format!("{url} answered more than 64 KiB"));
            }
            Ok(body.to_vec())
        })
    }
}
