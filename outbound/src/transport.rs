//! How a delivery leaves the process: one POST (or one e-mail) and what came of it. The seam
//! the worker is tested through; [`Http`] is the real one.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::{StreamExt, future::BoxFuture};

use crate::target::{Resolver, TargetPolicy};

/// One request to send.
#[derive(Debug, Clone)]
pub struct Request {
    pub url: url::Url,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

/// Why an attempt failed, from a small fixed set (metrics label by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The receiver answered, but not 2xx.
    Status,
    Timeout,
    Connect,
    /// The target resolved to an address the policy refuses.
    Refused,
    /// The SMTP server refused or failed.
    Smtp,
    Other,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Refused => "refused",
            Self::Smtp => "smtp",
            Self::Other => "other",
        }
    }

    pub const ALL: [Reason; 6] = [Self::Status, Self::Timeout, Self::Connect, Self::Refused, Self::Smtp, Self::Other];
}

/// What came of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered { status: u16 },
    Failed { reason: Reason, status: Option<u16>, retry_after: Option<Duration>, detail: String },
}

impl Outcome {
    /// A failure with no answer from a receiver (refused, no relay, a local error).
    pub fn failed(reason: Reason, detail: impl Into<String>) -> Self {
        Self::Failed { reason, status: None, retry_after: None, detail: detail.into() }
    }
}

pub trait Transport: Send + Sync + 'static {
    fn post(&self, request: Request) -> BoxFuture<'static, Outcome>;
}

/// Timeouts and bounds of the real client.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub connect: Duration,
    /// The whole attempt: connect, send, and the response head and the part of its body read.
    pub attempt: Duration,
    /// Most response-body bytes read (kept for the last-error detail); the rest is dropped.
    pub response_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self { connect: Duration::from_secs(5), attempt: Duration::from_secs(15), response_bytes: 4096 }
    }
}

/// HTTPS with the target policy in its resolver, no redirects, bounded in time and bytes.
pub struct Http {
    client: reqwest::Client,
    limits: HttpLimits,
}

impl Http {
    pub fn new(policy: Arc<TargetPolicy>, limits: HttpLimits) -> Result<Self, reqwest::Error> {
        // One TLS provider in the process (ring), as in the bridge.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(limits.connect)
            .timeout(limits.attempt)
            .dns_resolver(Arc::new(Resolver(policy)))
            .pool_max_idle_per_host(64)
            .user_agent(concat!("switchyard-outbound/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, limits })
    }
}

impl Transport for Http {
    fn post(&self, request: Request) -> BoxFuture<'static, Outcome> {
        let mut builder = self.client.post(request.url).body(request.body);
        for (k, v) in request.headers {
            builder = builder.header(k, v);
        }
        let max = self.limits.response_bytes;
        Box::pin(async move {
            let response = match builder.send().await {
                Ok(r) => r,
                Err(e) => return failed(&e),
            };
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| crate::ladder::retry_after(v, switchyard::log::now_ms()));
            // Read at most `max` bytes of what the receiver says; a body that never ends is cut.
            let mut detail = Vec::new();
            let mut body = response.bytes_stream();
            while detail.len() < max {
                match body.next().await {
                    Some(Ok(chunk)) => detail.extend_from_slice(&chunk[..chunk.len().min(max - detail.len())]),
                    _ => break,
                }
            }
            if (200..300).contains(&status) {
                return Outcome::Delivered { status };
            }
            let text = String::from_utf8_lossy(&detail[..detail.len().min(200)]).into_owned();
            Outcome::Failed {
                reason: Reason::Status,
                status: Some(status),
                retry_after,
                detail: format!("HTTP {status}: {text}"),
            }
        })
    }
}

fn failed(e: &reqwest::Error) -> Outcome {
    let mut chain = std::iter::successors(std::error::Error::source(e), |s| s.source());
    let refused = chain.any(|s| s.downcast_ref::<crate::target::TargetError>().is_some());
    let reason = if e.is_timeout() {
        Reason::Timeout
    } else if refused {
        Reason::Refused
    } else if e.is_connect() {
        Reason::Connect
    } else {
        Reason::Other
    };
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    Outcome::failed(reason, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_that_resolves_to_a_private_address_is_refused_when_connecting() {
        // http is allowed for the name, private addresses are not: the resolver refuses it.
        let policy = TargetPolicy { allow_http_hosts: vec!["localhost".into()], ..Default::default() };
        let http = Http::new(Arc::new(policy), HttpLimits::default()).unwrap();
        let request =
            Request { url: "http://localhost:9/hook".parse().unwrap(), headers: Vec::new(), body: Bytes::new() };
        match http.post(request).await {
            Outcome::Failed { reason, detail, .. } => assert_eq!(reason, Reason::Refused, "{detail}"),
            other => panic!("{other:?}"),
        }
    }
}
