//! The HTTPS client every connector uses, and how it treats a platform that says "not now":
//! 429 waits for `Retry-After` (or backs off with jitter when there is none), 5xx and timeouts
//! back off and retry a bounded number of times, 401 goes back to the connector (which may
//! refresh its token), anything else is an error naming the call.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::connector::SyncError;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub attempts: u32,
    /// First backoff; doubles per attempt, with full jitter.
    pub backoff: Duration,
    /// Longest single wait, whatever Retry-After says: a platform asking for more is asked
    /// again sooner (and answers 429 again, which costs an attempt).
    pub max_wait: Duration,
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            backoff: Duration::from_millis(500),
            max_wait: Duration::from_secs(120),
            timeout: Duration::from_secs(30),
        }
    }
}

pub struct Http {
    client: reqwest::Client,
    pub policy: RetryPolicy,
    waited_ms: AtomicU64,
}

impl Http {
    pub fn new(policy: RetryPolicy) -> Result<Self, String> {
        // One TLS provider in the process (ring), as in the bridge.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(policy.timeout)
            .user_agent(concat!("switchyard-ingest/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { client, policy, waited_ms: AtomicU64::new(0) })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Total time the platform asked us to wait (Retry-After, throttles), before `max_wait`.
    pub fn waited(&self) -> Duration {
        Duration::from_millis(self.waited_ms.load(Ordering::Relaxed))
    }

    /// Waits `d` (at most `max_wait`), recording what was asked. For throttles a connector
    /// computes itself.
    pub async fn pause(&self, d: Duration) {
        self.waited_ms.fetch_add(d.as_millis() as u64, Ordering::Relaxed);
        tokio::time::sleep(d.min(self.policy.max_wait)).await;
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.policy.backoff.saturating_mul(1 << attempt.min(16)).min(self.policy.max_wait);
        cap.mul_f64(rand::random::<f64>())
    }

    /// Sends the request `build` makes (rebuilt per attempt), retrying as described above.
    /// `what` names the call in errors ("Shopify orders", "Xero balance sheet").
    pub async fn send(&self, what: &str, build: impl Fn() -> RequestBuilder) -> Result<Response, SyncError> {
        let span = tracing::info_span!(
            "upstream",
            otel.name = what,
            attempts = tracing::field::Empty,
            status = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let result = self.attempts(what, build, &span).instrument(span.clone()).await;
        if let Err(e) = &result {
            span.record("error", tracing::field::display(e));
        }
        result
    }

    async fn attempts(
        &self,
        what: &str,
        build: impl Fn() -> RequestBuilder,
        span: &tracing::Span,
    ) -> Result<Response, SyncError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.policy.attempts;
            let sent = build().send().await;
            span.record("attempts", attempt);
            if let Ok(r) = &sent {
                span.record("status", r.status().as_u16());
            }
            let error = match sent {
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED || r.status() == StatusCode::FORBIDDEN => {
                    let status = r.status().as_u16();
                    let body = r.text().await.unwrap_or_default();
                    return Err(SyncError::Unauthorized(format!("{what}: HTTP {status}: {}", snippet(&body))));
                }
                Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS => {
                    let wait = retry_after(&r).unwrap_or_else(|| self.backoff(attempt));
                    if last {
                        return Err(SyncError::RateLimited(format!("{what}: still HTTP 429 after {attempt} attempts")));
                    }
                    tracing::info!(what, wait_ms = wait.as_millis() as u64, "rate limited; waiting");
                    self.pause(wait).await;
                    continue;
                }
                Ok(r) if r.status().is_server_error() => {
                    let status = r.status().as_u16();
                    let body = r.text().await.unwrap_or_default();
                    SyncError::Upstream { status, message: format!("{what}: HTTP {status}: {}", snippet(&body)) }
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body = r.text().await.unwrap_or_default();
                    return Err(SyncError::Upstream {
                        status,
                        message: format!("{what}: HTTP {status}: {}", snippet(&body)),
                    });
                }
                Err(e) if e.is_timeout() => {
                    SyncError::Timeout(format!("{what}: no answer within {:?}", self.policy.timeout))
                }
                // Without the URL: a query string can carry credentials.
                Err(e) => SyncError::Network(format!("{what}: {}", e.without_url())),
            };
            if last {
                return Err(error);
            }
            tracing::info!(what, %error, attempt, "retrying");
            tokio::time::sleep(self.backoff(attempt)).await;
        }
    }

    /// Sends and decodes a JSON body; a body that is not the expected JSON is `Malformed`.
    pub async fn json<T: DeserializeOwned>(
        &self,
        what: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<T, SyncError> {
        self.page(what, build, |v| serde_json::from_value(v).map_err(|e| e.to_string())).await
    }

    /// Sends, decodes JSON and reads it with `read`. A 200 whose body is cut short or is not the
    /// shape `read` expects is asked for again, with backoff, up to the policy's attempts: a
    /// truncated page is usually a network hiccup, not worth failing the run and waiting an
    /// interval for. Only then is it `Malformed`.
    pub async fn page<T>(
        &self,
        what: &str,
        build: impl Fn() -> RequestBuilder,
        read: impl Fn(serde_json::Value) -> Result<T, String>,
    ) -> Result<T, SyncError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = self.send(what, &build).await?;
            let bytes = r.bytes().await.map_err(|e| SyncError::Network(format!("{what}: {}", e.without_url())));
            let error = match bytes.map(|b| serde_json::from_slice::<serde_json::Value>(&b)) {
                Ok(Ok(v)) => match read(v) {
                    Ok(t) => return Ok(t),
                    Err(e) => format!("{what}: {e}"),
                },
                Ok(Err(e)) => format!("{what}: the body is not complete JSON ({e})"),
                Err(SyncError::Network(e)) => e,
                Err(other) => return Err(other),
            };
            if attempt >= self.policy.attempts {
                return Err(SyncError::Malformed(error));
            }
            tracing::info!(what, %error, attempt, "malformed answer; asking again");
            tokio::time::sleep(self.backoff(attempt)).await;
        }
    }
}

/// `Retry-After` in seconds (the form every platform here uses).
fn retry_after(r: &Response) -> Option<Duration> {
    let v = r.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).map(Duration::from_secs_f64)
}

fn snippet(body: &str) -> String {
    body.chars().take(200).collect()
}
