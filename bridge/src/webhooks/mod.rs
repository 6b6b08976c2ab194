//! Webhook ingress: `POST /api/webhooks/{shopify,xero,unleashed,amazon,<source>}`.
//!
//! Every delivery is verified on its raw body bytes, before any parsing, with a constant-time
//! comparison; turned into catalog events; appended as one all-or-nothing batch with an
//! idempotency key from the platform's delivery or event id; and only then answered 2xx.
//! A retried delivery finds its key already stored and is answered 2xx without a second event.
//! See ../shared/platform-specs.md (copied into docs/webhooks.md) for each scheme's source.

/// SP-API notifications are translated by the Amazon connector's code: the same notification
/// may also arrive through SQS.
pub use switchyard_services::amazon::notification as amazon;
pub mod shopify;
pub mod signature;
pub mod sns;
pub mod standard;
pub mod unleashed;
pub mod xero;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use axum::{
    Json,
    extract::{FromRef, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use switchyard::{
    auth::{Principal, now_secs},
    names::Tenant,
    proto::v1::{CustomEvent, Delivery as DeliveryKind, Event, event::Payload},
};

use switchyard::bus::Bus;

use crate::{
    config::{ConfigError, WebhooksConfig, bad},
    error::{ApiError, Path, RawBody},
    openapi::error_response,
    route::Route,
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
    vec![
        Route::post("/api/webhooks/shopify", shopify, json!({ "summary": "Shopify deliveries (every topic), verified with X-Shopify-Hmac-Sha256 over the raw body.", "security": [],
            "responses": { "200": { "description": "{ids, duplicates} once durable" }, "401": error_response("Bad signature."), "404": error_response("Not configured, or the shop is not mapped to a tenant.") } })).body_limit(MAX_BODY),
        Route::post("/api/webhooks/xero", xero, json!({ "summary": "Xero deliveries and intent-to-receive, verified with x-xero-signature.", "security": [],
            "responses": { "200": { "description": "Empty body, once durable" }, "401": { "description": "Bad signature (empty body)." } } })).body_limit(MAX_BODY),
        Route::post("/api/webhooks/unleashed", unleashed, json!({ "summary": "Unleashed deliveries, verified with x-unleashed-signature over `{x-unleashed-timestamp}.{body}`.", "security": [],
            "responses": { "200": { "description": "{ids, duplicates} once durable" }, "401": error_response("Bad or stale signature."), "404": error_response("Not configured.") } })).body_limit(MAX_BODY),
        Route::post("/api/webhooks/amazon", amazon, json!({ "summary": "AWS SNS messages (EventBridge → SNS → HTTPS) carrying SP-API notifications; RSA signature versions 1 and 2, certificates only from sns.<region>.amazonaws.com.", "security": [],
            "responses": { "200": { "description": "{ids, duplicates} once durable; {confirmed} for a subscription confirmation" }, "400": error_response("Not an SNS message."), "401": error_response("Bad signature or certificate URL."), "404": error_response("Not configured, topic not allowed, or seller not mapped."), "502": error_response("AWS unreachable (certificate or confirmation); SNS retries.") } })).body_limit(MAX_BODY),
        Route::post("/api/webhooks/{source}", standard, json!({ "summary": "Standard Webhooks senders configured under webhooks.standard.<source>.", "security": [],
            "parameters": [{ "name": "source", "in": "path", "required": true, "schema": { "type": "string" } }],
            "responses": { "200": { "description": "{ids, duplicates} once durable" }, "401": error_response("Bad or stale signature."), "404": error_response("Unknown source.") } })).body_limit(MAX_BODY),
    ]
}

/// What the webhook handlers need: the bus they append to and the verified settings.
#[derive(Clone)]
pub struct Inbound {
    pub bus: Bus,
    pub hooks: Arc<Webhooks>,
}

/// Verified-webhook settings, resolved from config once.
#[derive(Debug)]
pub struct Webhooks {
    shopify_secrets: Vec<Vec<u8>>,
    /// Shops with secrets of their own: verified with those only.
    shop_secrets: BTreeMap<String, Vec<Vec<u8>>>,
    shops: BTreeMap<String, Tenant>,
    shopify_thresholds: shopify::Thresholds,
    xero_keys: Vec<Vec<u8>>,
    xero_tenants: BTreeMap<String, Tenant>,
    unleashed_keys: Vec<Vec<u8>>,
    unleashed_tenant: Option<Tenant>,
    standard: BTreeMap<String, StandardSource>,
    amazon: Option<Amazon>,
}

#[derive(Debug)]
struct Amazon {
    topics: BTreeSet<String>,
    sellers: BTreeMap<String, Tenant>,
    low_stock_threshold: i64,
    sns: sns::Verifier,
}

#[derive(Debug)]
struct StandardSource {
    keys: Vec<Vec<u8>>,
    tenant: Tenant,
    channels: Vec<String>,
}

impl Webhooks {
    /// Fails with the config key at fault. `aws` reaches AWS for SNS certificates and
    /// subscription confirmations; `None` means the real HTTPS client (tests pass their own).
    pub fn from_config(c: &WebhooksConfig, aws: Option<Arc<dyn sns::AwsHttps>>) -> Result<Self, ConfigError> {
        let tenant = |key: &str, t: &str| Tenant::new(t).map_err(|e| bad(key, format!("'{t}': {e}")));
        let mut shops = BTreeMap::new();
        for (domain, t) in &c.shopify.shops {
            shops.insert(domain.to_ascii_lowercase(), tenant("webhooks.shopify.shops", t)?);
        }
        let mut xero_tenants = BTreeMap::new();
        for (id, t) in &c.xero.tenants {
            xero_tenants.insert(id.clone(), tenant("webhooks.xero.tenants", t)?);
        }
        let mut standard = BTreeMap::new();
        for (source, s) in &c.standard {
            let keys = s
                .secrets
                .iter()
                .map(|k| standard::secret_key(k).map_err(|e| bad(&format!("webhooks.standard.{source}.secrets"), e)))
                .collect::<Result<Vec<_>, _>>()?;
            if keys.is_empty() {
                return Err(bad(&format!("webhooks.standard.{source}.secrets"), "at least one secret"));
            }
            if s.channels.is_empty() {
                return Err(bad(&format!("webhooks.standard.{source}.channels"), "at least one channel"));
            }
            let tenant = tenant(&format!("webhooks.standard.{source}.tenant"), &s.tenant)?;
            standard.insert(source.clone(), StandardSource { keys, tenant, channels: s.channels.clone() });
        }
        let unleashed_tenant = match c.unleashed.tenant.as_str() {
            "" if c.unleashed.keys.is_empty() => None,
            "" => return Err(bad("webhooks.unleashed.tenant", "required with keys")),
            t => Some(tenant("webhooks.unleashed.tenant", t)?),
        };
        let amazon = if c.amazon.topics.is_empty() {
            None
        } else {
            let mut sellers = BTreeMap::new();
            for (id, t) in &c.amazon.sellers {
                sellers.insert(id.clone(), tenant("webhooks.amazon.sellers", t)?);
            }
            if let Some(arn) = c.amazon.topics.iter().find(|t| !t.starts_with("arn:aws")) {
                return Err(bad("webhooks.amazon.topics", format!("'{arn}' is not an SNS topic ARN")));
            }
            let aws = match aws {
                Some(aws) => aws,
                None => Arc::new(
                    sns::HttpsFetcher::new().map_err(|e| bad("webhooks.amazon", format!("HTTPS client: {e}")))?,
                ),
            };
            Some(Amazon {
                topics: c.amazon.topics.iter().cloned().collect(),
                sellers,
                low_stock_threshold: c.amazon.low_stock_threshold,
                sns: sns::Verifier::new(aws),
            })
        };
        Ok(Self {
            amazon,
            shopify_thresholds: shopify::Thresholds {
                large_order_total: c.shopify.large_order_total,
                low_stock: c.shopify.low_stock_threshold,
            },
            unleashed_keys: c.unleashed.keys.iter().map(|s| s.as_bytes().to_vec()).collect(),
            unleashed_tenant,
            shopify_secrets: c.shopify.secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
            shop_secrets: c
                .shopify
                .shop_secrets
                .iter()
                .map(|(shop, keys)| (shop.to_ascii_lowercase(), keys.iter().map(|k| k.as_bytes().to_vec()).collect()))
                .collect(),
            shops,
            xero_keys: c.xero.keys.iter().map(|s| s.as_bytes().to_vec()).collect(),
            xero_tenants,
            standard,
        })
    }
}

/// 404 with its own code, so it is never mistaken for a missing route.
fn not_configured(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_configured", message)
}

fn unauthorized(why: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", why)
}

fn stamp(events: &mut [Event], tenant: &Tenant, key: &str) {
    switchyard_services::delivery::stamp(events, tenant.as_str(), key);
}

/// Appends the delivery's events in one batch; answers once they are durable.
async fn commit(bus: &Bus, events: Vec<Event>) -> Result<(Vec<String>, usize), ApiError> {
    let appended = bus.publish_all(&Principal::system(), events).await.map_err(|(_, e)| ApiError::from(e))?;
    let dups = appended.iter().filter(|a| a.duplicate).count();
    Ok((appended.iter().map(|a| a.id.to_string()).collect(), dups))
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", "body", format!("body is not JSON: {e}")))
}

/// `POST /api/webhooks/shopify`: every topic.
pub async fn shopify(
    State(inbound): State<Inbound>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let hooks = &inbound.hooks;
    if hooks.shopify_secrets.is_empty() && hooks.shop_secrets.is_empty() {
        return Err(not_configured("Shopify webhooks are not configured (webhooks.shopify.secrets)"));
    }
    let shop = shopify::header(&headers, "shop-domain")
        .ok_or_else(|| ApiError::bad_request("missing_header", "X-Shopify-Shop-Domain", "missing"))?
        .to_ascii_lowercase();
    let sig = shopify::header(&headers, "hmac-sha256").ok_or_else(|| unauthorized("missing X-Shopify-Hmac-Sha256"))?;
    // The header only picks the key: the MAC covers the body, so naming another shop gets
    // that shop's key, which the sender does not have.
    let keys = hooks.shop_secrets.get(&shop).unwrap_or(&hooks.shopify_secrets);
    if !signature::verify_b64(keys, &[&body], sig) {
        tracing::warn!(%shop, "Shopify webhook with a bad signature");
        return Err(unauthorized("signature does not match"));
    }
    let topic = shopify::header(&headers, "topic")
        .ok_or_else(|| ApiError::bad_request("missing_header", "X-Shopify-Topic", "missing"))?;
    // Unknown shops are refused (not dropped), so Shopify retries while the mapping is added.
    let tenant =
        hooks.shops.get(&shop).ok_or_else(|| not_configured(format!("shop '{shop}' is not mapped to a tenant")))?;
    let value = parse_json(&body)?;
    let mut events = shopify::events(topic, &shop, &value, &body, &hooks.shopify_thresholds);
    stamp(&mut events, tenant, &shopify::idempotency_key(&shop, topic, &value, &headers).unwrap_or_default());
    if let Some(at) = shopify::header(&headers, "triggered-at") {
        let at = serde_json::from_value(json!(at)).ok();
        for e in &mut events {
            e.occurred_at.clone_from(&at);
        }
    }
    let (ids, dups) = commit(&inbound.bus, events).await?;
    Ok((StatusCode::OK, Json(json!({ "ids": ids, "duplicates": dups }))).into_response())
}

/// `POST /api/webhooks/xero`: 200 with an empty body (and no cookies) once stored; 401 on a bad signature.
pub async fn xero(
    State(inbound): State<Inbound>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let hooks = &inbound.hooks;
    if hooks.xero_keys.is_empty() {
        return Err(not_configured("Xero webhooks are not configured (webhooks.xero.keys)"));
    }
    let sig = headers.get("x-xero-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !signature::verify_b64(&hooks.xero_keys, &[&body], sig) {
        return Ok(StatusCode::UNAUTHORIZED.into_response());
    }
    let delivery: xero::Delivery = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", "body", format!("not a Xero webhook payload: {e}")))?;
    let mut events = Vec::with_capacity(delivery.events.len() + 1);
    for x in &delivery.events {
        let tenant = hooks
            .xero_tenants
            .get(&x.tenant_id)
            .ok_or_else(|| not_configured(format!("Xero tenant '{}' is not mapped to a tenant", x.tenant_id)))?;
        let mut e = vec![x.event(), xero::refresh_required()];
        stamp(&mut e, tenant, &x.idempotency_key());
        events.extend(e);
    }
    // Intent to receive: correctly signed and empty.
    if !events.is_empty() {
        commit(&inbound.bus, events).await?;
    }
    Ok(StatusCode::OK.into_response())
}

/// `POST /api/webhooks/unleashed`.
pub async fn unleashed(
    State(inbound): State<Inbound>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let hooks = &inbound.hooks;
    let Some(tenant) = &hooks.unleashed_tenant else {
        return Err(not_configured("Unleashed webhooks are not configured (webhooks.unleashed)"));
    };
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if !unleashed::verify(
        &hooks.unleashed_keys,
        h("x-unleashed-signature"),
        h("x-unleashed-timestamp"),
        &body,
        now_secs() as i64,
    ) {
        return Err(unauthorized("signature does not match, or the timestamp is outside 5 minutes"));
    }
    let value = parse_json(&body)?;
    let (mut events, key) = unleashed::events(&value)
        .ok_or_else(|| ApiError::bad_request("invalid_json", "eventNotificationId", "missing"))?;
    stamp(&mut events, tenant, &key);
    let (ids, dups) = commit(&inbound.bus, events).await?;
    Ok((StatusCode::OK, Json(json!({ "ids": ids, "duplicates": dups }))).into_response())
}

/// `POST /api/webhooks/{source}`: any Standard Webhooks sender configured under `webhooks.standard.<source>`.
pub async fn standard(
    State(inbound): State<Inbound>,
    Path(source): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let s = inbound
        .hooks
        .standard
        .get(&source)
        .ok_or_else(|| not_configured(format!("no webhook source '{source}' is configured")))?;
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    standard::verify(
        &s.keys,
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
        &body,
        now_secs() as i64,
    )
    .map_err(|e| unauthorized(e.to_string()))?;
    let value = parse_json(&body)?;
    let kind = value["type"].as_str().unwrap_or("event");
    let mut event = Event {
        tenant: s.tenant.to_string(),
        source: format!("webhook:{source}"),
        idempotency_key: format!("standard:{source}:{}", h("webhook-id").unwrap_or_default()),
        payload: Some(Payload::Custom(CustomEvent {
            r#type: format!("{source}:{kind}"),
            json: value.get("data").unwrap_or(&value).to_string(),
            channels: s.channels.clone(),
            delivery: DeliveryKind::Fact as i32,
        })),
        ..Default::default()
    };
    if let Some(ts) = value["timestamp"].as_str() {
        event.occurred_at = serde_json::from_value(json!(ts)).ok();
    }
    let (ids, dups) = commit(&inbound.bus, vec![event]).await?;
    Ok((StatusCode::OK, Json(json!({ "ids": ids, "duplicates": dups }))).into_response())
}

/// `POST /api/webhooks/amazon`: AWS SNS messages (EventBridge → SNS → HTTPS) carrying SP-API
/// notifications. Only configured topics are verified, confirmed or accepted.
pub async fn amazon(State(inbound): State<Inbound>, RawBody(body): RawBody) -> Result<Response, ApiError> {
    let Some(a) = &inbound.hooks.amazon else {
        return Err(not_configured("Amazon (SNS) webhooks are not configured (webhooks.amazon.topics)"));
    };
    let m: sns::Message = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", "body", format!("not an SNS message: {e}")))?;
    // Before any certificate is fetched: a message for a topic we never subscribed costs nothing.
    if !a.topics.contains(&m.topic_arn) {
        return Err(not_configured(format!("SNS topic '{}' is not in webhooks.amazon.topics", m.topic_arn)));
    }
    a.sns.verify(&m).await.map_err(|e| match e {
        sns::Reject::Fetch(_) => upstream(e.to_string()),
        _ => unauthorized(e.to_string()),
    })?;
    match m.kind.as_str() {
        "SubscriptionConfirmation" => {
            let url = sns::check_url("SubscribeURL", m.subscribe_url.as_deref().unwrap_or_default())
                .map_err(|e| unauthorized(e.to_string()))?;
            a.sns.https().get(url.as_str()).await.map_err(|e| upstream(format!("confirming the subscription: {e}")))?;
            tracing::info!(topic = %m.topic_arn, "SNS subscription confirmed");
            Ok(Json(json!({ "confirmed": m.topic_arn })).into_response())
        }
        "UnsubscribeConfirmation" => {
            tracing::warn!(topic = %m.topic_arn, "SNS says this endpoint was unsubscribed");
            Ok(Json(json!({ "unsubscribed": m.topic_arn })).into_response())
        }
        "Notification" => {
            let value: Value = serde_json::from_str(&m.message).unwrap_or(Value::Null);
            // Accepted (so SNS stops retrying) but not understood: say so, loudly.
            let Some(n) = amazon::notification(&value) else {
                tracing::warn!(message_id = %m.message_id, "SNS message is not an SP-API notification; ignored");
                return Ok(Json(json!({ "ids": [], "ignored": "not an SP-API notification" })).into_response());
            };
            let tenant = a
                .sellers
                .get(&n.seller)
                .ok_or_else(|| not_configured(format!("seller '{}' is not in webhooks.amazon.sellers", n.seller)))?;
            let mut events = n.events(a.low_stock_threshold, "webhook:amazon");
            let key = n.idempotency_key().unwrap_or_else(|| format!("sns:{}", m.message_id));
            stamp(&mut events, tenant, &key);
            let at = serde_json::from_value(json!(n.event_time)).ok();
            for e in &mut events {
                e.occurred_at.clone_from(&at);
            }
            let (ids, dups) = commit(&inbound.bus, events).await?;
            Ok(Json(json!({ "ids": ids, "duplicates": dups })).into_response())
        }
        other => Err(ApiError::bad_request("invalid_field", "Type", format!("unknown SNS message type '{other}'"))),
    }
}

/// Our side could not reach AWS: 502, so SNS retries the delivery.
fn upstream(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "upstream_unavailable", message)
}
