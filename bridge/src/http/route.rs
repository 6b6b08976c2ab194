//! The route table. Each feature (`sse`, `api`, `webhooks`, `assets`) lists its endpoints as
//! [`Route`]s, the OpenAPI operation beside the handler; the router ([`crate::router`]), the OpenAPI
//! document ([`crate::http::openapi`]) and the direct SSE path ([`crate::sse::direct`]) all read that one
//! list. So a route cannot be served undocumented, documented but not served, or mistaken by
//! the direct path for a channel name.

use axum::{
    extract::DefaultBodyLimit,
    handler::Handler,
    routing::{MethodRouter, delete, get, post},
};
use serde_json::Value;

/// One method on one path, for a router whose state is `S` (the app's: `Arc<App>`).
pub struct Route<S> {
    pub method: &'static str,
    pub path: String,
    pub handler: MethodRouter<S>,
    /// Its OpenAPI operation object (`summary`, `parameters`, `responses`, ...).
    pub doc: Value,
}

impl<S: Clone + Send + Sync + 'static> Route<S> {
    pub fn get<H: Handler<T, S>, T: 'static>(path: impl Into<String>, handler: H, doc: Value) -> Self {
        Self { method: "GET", path: path.into(), handler: get(handler), doc }
    }

    pub fn post<H: Handler<T, S>, T: 'static>(path: impl Into<String>, handler: H, doc: Value) -> Self {
        Self { method: "POST", path: path.into(), handler: post(handler), doc }
    }

    pub fn delete<H: Handler<T, S>, T: 'static>(path: impl Into<String>, handler: H, doc: Value) -> Self {
        Self { method: "DELETE", path: path.into(), handler: delete(handler), doc }
    }

    /// A smaller body limit than the router's default (webhooks: platforms send kilobytes).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.handler = self.handler.layer(DefaultBodyLimit::max(bytes));
        self
    }
}
