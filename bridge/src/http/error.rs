//! HTTP errors: every failure the edge returns is `{"error": {"code", "message", "field"?}}`
//! with the right status. Library errors are mapped here, once. Nothing a
//! client sends can produce a 500; internal detail stays in the logs.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use switchyard::{auth::AuthError, bus::SubscribeError, error::PublishError};

/// Query parameters, with a malformed one (`?limit=abc`, `?coalesce=yes`) answered as the
/// documented JSON 400 naming it, not axum's plain-text rejection.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|r| ApiError::bad_request("invalid_query", "query", r.body_text()))
    }
}

/// A path parameter, with one that cannot be read (not UTF-8, `/api/sse/%FF`) answered as JSON.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> axum::extract::FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|r| ApiError::bad_request("invalid_path", "path", r.body_text()))
    }
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<&'static str>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, retry_after: None }
    }

    pub fn bad_request(code: &'static str, field: &'static str, message: impl Into<String>) -> Self {
        Self { field: Some(field), ..Self::new(StatusCode::BAD_REQUEST, code, message) }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn too_many(message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_connections", message)
        }
    }

    /// The log (or the bus behind a bridge) cannot answer. The detail (storage paths, NATS
    /// errors) goes to the log, not to the client: the body says only what to do.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        tracing::warn!(detail = %detail.into(), "answering 503");
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the event log is unavailable; retry shortly")
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = if e.unauthenticated() { StatusCode::UNAUTHORIZED } else { StatusCode::FORBIDDEN };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        let code = e.code();
        match e {
            PublishError::Invalid { field, message, .. } => {
                Self::bad_request(code, field, format!("{field}: {message}"))
            }
            PublishError::Denied(a) => a.into(),
            PublishError::Unavailable(m) => Self::unavailable(m),
            PublishError::Throttled(wait) => Self {
                retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, e_text(wait))
            },
            // 429 as gRPC's RESOURCE_EXHAUSTED maps to, without Retry-After: time alone may not free it.
            PublishError::Quota { field, message } => {
                Self { field: Some(field), ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message) }
            }
        }
    }
}

fn e_text(wait: std::time::Duration) -> String {
    format!("this tenant is publishing faster than its rate; retry after {:.1} s", wait.as_secs_f64())
}

impl From<SubscribeError> for ApiError {
    fn from(e: SubscribeError) -> Self {
        match e {
            SubscribeError::Invalid { code, field, message } => Self::bad_request(code, field, message),
            SubscribeError::UnknownChannel(c) => Self::not_found(format!("unknown channel '{c}'")),
            SubscribeError::Denied(a) => a.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": { "code": self.code, "message": self.message } });
        if let Some(f) = self.field {
            body["error"]["field"] = json!(f);
        }
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        // The rest of an oversized body is never read, so the connection cannot carry another
        // request: say so, or a keep-alive client would send its next request into a closing
        // connection and see it fail.
        if self.status == StatusCode::PAYLOAD_TOO_LARGE || self.status == StatusCode::REQUEST_TIMEOUT {
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
