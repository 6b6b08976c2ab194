//! Webhook ingress: `POST /api/webhooks/<platform>` for every platform in
//! [`switchyard_services::platform::ALL`], and `POST /api/webhooks/{source}` for any Standard
//! Webhooks sender configured under `webhooks.standard.<source>`.
//!
//! One handler serves them all, knowing no platform: the source verifies the delivery on its
//! raw body bytes (constant-time) and turns it into catalog events keyed by the platform's
//! delivery or event id; the handler appends them as one all-or-nothing batch and only then
//! answers 2xx. A retried delivery finds its key already stored and is answered 2xx without a
//! second event. See ../shared/platform-specs.md (copied into docs/webhooks.md) for each
//! scheme's source.

pub use switchyard_services::{amazon::sns, webhook::signature};
pub mod standard;

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json,
    body::Bytes,
    extract::{FromRef, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use switchyard::{auth::Principal, auth::now_secs, bus::Bus, proto::v1::Event};
use switchyard_services::{
    platform,
    webhook::{Delivery, Doc, Env, Outcome, Refusal, WebhookSource},
};
use tracing::Instrument;

use crate::{
    config::{ConfigError, WebhooksConfig},
    http::body::RawBody,
    http::error::{ApiError, Path},
    http::openapi::error_response,
    http::route::Route,
    metrics::Seen,
};

/// Largest webhook delivery. Platforms send kilobytes; a megabyte is an attack or a mistake.
pub const MAX_BODY: usize = 1024 * 1024;

/// One path per platform, and one for any Standard Webhooks sender; each verifies its own
/// signature, so none takes the bearer token.
pub fn routes<S>() -> Vec<Route<S>>
where
    S: Clone + Send + Sync + 'static,
    Inbound: FromRef<S>,
{
    let mut routes: Vec<Route<S>> = platform::ALL
        .iter()
        .map(|p| {
            let name = p.name;
            let handler = move |State(inbound): State<Inbound>, req: axum::extract::Request| async move {
                let source =
                    inbound.hooks.platforms.get(name).ok_or_else(|| {
                        not_configured(format!("{name} webhooks are not configured ([webhooks.{name}])"))
                    })?;
                let (headers, body) = read(req).await?;
                deliver(&inbound, source.as_ref(), name, &headers, &body).await
            };
            Route::post(format!("/api/webhooks/{name}"), handler, doc(&p.webhook.doc)).body_limit(MAX_BODY)
        })
        .collect();
    routes.push(
        Route::post("/api/webhooks/{source}", standard, json!({ "summary": "Standard Webhooks senders configured under webhooks.standard.<source>.", "security": [],
            "parameters": [{ "name": "source", "in": "path", "required": true, "schema": { "type": "string" } }],
            "responses": { "200": { "description": "{ids, duplicates} once durable" }, "401": error_response("Bad or stale signature."), "404": error_response("Unknown source.") } })).body_limit(MAX_BODY),
    );
    routes
}

/// A platform's [`Doc`] as an OpenAPI operation.
fn doc(d: &Doc) -> Value {
    let mut responses = json!({ "200": { "description": d.ok } });
    for (status, why) in d.errors {
        responses[status.to_string()] = error_response(why);
    }
    json!({ "summary": d.summary, "security": [], "responses": responses })
}

/// What the webhook handlers need: the bus they append to and the configured sources.
#[derive(Clone)]
pub struct Inbound {
    pub bus: Bus,
    pub hooks: Arc<Webhooks>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The configured sources, built from config once.
pub struct Webhooks {
    platforms: BTreeMap<&'static str, Arc<dyn WebhookSource>>,
    standard: BTreeMap<String, standard::Source>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("platforms", &self.platforms.keys().collect::<Vec<_>>())
            .field("standard", &self.standard.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Webhooks {
    /// Fails with the config key at fault. `env` is how sources reach their platform (SNS
    /// certificates and confirmations); tests pass their own.
    pub fn from_config(c: &WebhooksConfig, env: &Env) -> Result<Self, ConfigError> {
        let mut platforms = BTreeMap::new();
        for (name, section) in &c.platforms {
            let Some(p) = platform::get(name) else {
                let known: Vec<_> = platform::ALL.iter().map(|p| p.name).chain(["standard"]).collect();
                return Err(ConfigError::Value {
                    key: format!("webhooks.{name}"),
                    message: format!("no such platform (known: {})", known.join(", ")),
                });
            };
            let source =
                (p.webhook.build)(section, env).map_err(|e| ConfigError::Value { key: e.key, message: e.message })?;
            platforms.insert(p.name, source);
        }
        let mut standard = BTreeMap::new();
        for (name, s) in &c.standard {
            if platform::get(name).is_some() {
                return Err(ConfigError::Value {
                    key: format!("webhooks.standard.{name}"),
                    message: format!("'{name}' is a platform's path; name this source otherwise"),
                });
            }
            standard.insert(name.clone(), standard::Source::from_config(name, s)?);
        }
        Ok(Self { platforms, standard })
    }
}

/// 404 with its own code, so it is never mistaken for a missing route.
fn not_configured(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_configured", message)
}

/// `POST /api/webhooks/{source}`: a Standard Webhooks sender.
pub async fn standard(
    State(inbound): State<Inbound>,
    Path(source): Path<String>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let s = inbound
        .hooks
        .standard
        .get(&source)
        .ok_or_else(|| not_configured(format!("no webhook source '{source}' is configured")))?;
    let (headers, body) = read(req).await?;
    deliver(&inbound, s, &source, &headers, &body).await
}

/// A delivery's headers and body, read once its source is known to be configured: a delivery
/// to a source that is not costs no body read.
async fn read(req: axum::extract::Request) -> Result<(HeaderMap, Bytes), ApiError> {
    let headers = req.headers().clone();
    let RawBody(body) = RawBody::after_auth(req).await?;
    Ok((headers, body))
}

/// The one path every delivery takes: verify and translate (the source's), store, answer.
async fn deliver(
    inbound: &Inbound,
    source: &dyn WebhookSource,
    name: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    // One span per delivery, continuing the sender's trace when it names one; the events it
    // stores carry it to their subscribers.
    let span =
        tracing::info_span!("webhook", otel.name = format!("webhook {name}"), platform = name, bytes = body.len());
    switchyard::trace::adopt(&span, switchyard::trace::Fields::headers(headers));
    let verify = tracing::info_span!(parent: &span, "verify");
    let outcome = source.receive(Delivery { headers, body, now: now_secs() as i64 }).instrument(verify).await;
    let bare = source.bare();
    let mut seen = Seen::new(name);
    let outcome = match outcome {
        Ok(Outcome::Store(events)) => {
            seen.events(&events);
            let committed = commit(&inbound.bus, events).instrument(span.clone()).await;
            match committed {
                Ok((ids, dups)) => {
                    seen.outcome = "stored";
                    seen.ids = ids.iter().take(RECENT_IDS).cloned().collect();
                    Ok(if bare {
                        StatusCode::OK.into_response()
                    } else {
                        Json(json!({ "ids": ids, "duplicates": dups })).into_response()
                    })
                }
                Err(e) => {
                    seen.outcome = "not_stored";
                    seen.reason(&format!("{}: {}", e.code, e.message));
                    Err(e)
                }
            }
        }
        Ok(Outcome::Answer(v)) => {
            seen.outcome = "answered";
            Ok(Json(v).into_response())
        }
        Err(r) => {
            seen.outcome = refusal_code(&r);
            seen.reason(&r.to_string());
            match r {
                Refusal::BadSignature(_) if bare => Ok(StatusCode::UNAUTHORIZED.into_response()),
                r => Err(refused(r)),
            }
        }
    };
    tracing::info!(parent: &span, source = name, outcome = seen.outcome, tenant = seen.tenant.as_deref(), ids = ?seen.ids, reason = seen.reason.as_deref(), "webhook delivery");
    inbound.metrics.webhook(seen);
    outcome
}

/// Ids a recent delivery lists (a delivery may carry many events).
const RECENT_IDS: usize = 8;

/// Appends the delivery's events in one batch; answers once they are durable.
async fn commit(bus: &Bus, events: Vec<Event>) -> Result<(Vec<String>, usize), ApiError> {
    if events.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let appended = bus.publish_all(&Principal::system(), events).await.map_err(|(_, e)| ApiError::from(e))?;
    let dups = appended.iter().filter(|a| a.duplicate).count();
    Ok((appended.iter().map(|a| a.id.to_string()).collect(), dups))
}

/// A refusal as the platform must see it: 404 retries later, 401 is a bad signature, 400 a
/// malformed delivery, 502 our side could not reach the platform (it retries).
fn refused(r: Refusal) -> ApiError {
    let code = refusal_code(&r);
    match r {
        Refusal::NotConfigured(m) => not_configured(m),
        Refusal::BadSignature(m) => ApiError::new(StatusCode::UNAUTHORIZED, code, m),
        Refusal::BadRequest { code, field, message } => ApiError::bad_request(code, field, message),
        Refusal::Upstream(m) => ApiError::new(StatusCode::BAD_GATEWAY, code, m),
    }
}

/// A refusal's wire code (also its outcome in the webhook metrics).
fn refusal_code(r: &Refusal) -> &'static str {
    match r {
        Refusal::NotConfigured(_) => "not_configured",
        Refusal::BadSignature(_) => "invalid_signature",
        Refusal::BadRequest { code, .. } => code,
        Refusal::Upstream(_) => "upstream_unavailable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StandardHook;

    #[test]
    fn sections_are_read_by_their_platform_and_mistakes_name_the_key() {
        let mut c = WebhooksConfig::default();
        c.platforms.insert(
            "shopify".into(),
            toml::from_str("secrets = [\"s\"]\n[shops]\n\"a.myshopify.com\" = \"acme\"").unwrap(),
        );
        let hooks = Webhooks::from_config(&c, &Env::default()).unwrap();
        assert_eq!(hooks.platforms.keys().copied().collect::<Vec<_>>(), ["shopify"]);

        let mut typo = c.clone();
        typo.platforms.insert("shopfiy".into(), toml::Value::Table(Default::default()));
        let e = Webhooks::from_config(&typo, &Env::default()).unwrap_err().to_string();
        assert!(e.starts_with("webhooks.shopfiy: no such platform") && e.contains("shopify"), "{e}");

        let mut field = c.clone();
        field.platforms.insert("xero".into(), toml::from_str("key = [\"k\"]").unwrap());
        let e = Webhooks::from_config(&field, &Env::default()).unwrap_err().to_string();
        assert!(e.starts_with("webhooks.xero: unknown field `key`"), "{e}");

        let mut tenant = c.clone();
        tenant
            .platforms
            .insert("shopify".into(), toml::from_str("[shops]\n\"a.myshopify.com\" = \"Not A Tenant\"").unwrap());
        let e = Webhooks::from_config(&tenant, &Env::default()).unwrap_err().to_string();
        assert!(e.starts_with("webhooks.shopify.shops: 'Not A Tenant'"), "{e}");

        let mut shadow = c;
        let hook = StandardHook {
            secrets: vec!["whsec_c2VjcmV0".into()],
            tenant: "acme".into(),
            channels: vec!["alerts".into()],
        };
        shadow.standard.insert("xero".into(), hook);
        let e = Webhooks::from_config(&shadow, &Env::default()).unwrap_err().to_string();
        assert!(e.starts_with("webhooks.standard.xero: 'xero' is a platform's path"), "{e}");
    }
}
