//! Helpers shared by the connector test files.
#![allow(dead_code, unreachable_pub)]

use std::{sync::Mutex, time::Duration};

use futures::future::BoxFuture;
use serde_json::Value;
use switchyard::proto::v1::{Event, event::Payload};
use switchyard_services::{
    connector::{Connector, Scope, Source, SyncError},
    http::{Http, RetryPolicy},
    period::Zone,
    scheduler::{Health, run_once},
    shopify::{ShopifyConfig, StoreConfig},
    sink::Sink,
    state::StateFile,
    unleashed::{UnleashedConfig, signature},
    xero::XeroConfig,
};
use wiremock::{Request, ResponseTemplate};

/// Records what a connector publishes, in order.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<Event>>);

impl Sink for Recorder {
    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<(), String>> {
        self.0.lock().unwrap().extend(events);
        Box::pin(async { Ok(()) })
    }
}

impl Recorder {
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

pub fn type_names(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| {
            !matches!(
                e.payload,
                Some(
                    Payload::WorkflowStage(_)
                        | Payload::WorkflowProgress(_)
                        | Payload::WorkflowCompletion(_)
                        | Payload::WorkflowError(_)
                )
            )
        })
        .map(|e| {
            let field = e.payload.as_ref().map(|p| p.field_number()).unwrap_or_default();
            switchyard::catalog::Catalog::global().by_field(field).map(|s| s.name.to_string()).unwrap_or_default()
        })
        .collect()
}

pub fn http() -> Http {
    // Real waits, kept short: Retry-After is still recorded in full (`Http::waited`).
    Http::new(RetryPolicy {
        backoff: Duration::from_millis(1),
        max_wait: Duration::from_millis(20),
        ..RetryPolicy::default()
    })
    .unwrap()
}

/// Like [`payloads`], as owned values.
pub fn owned<T: Clone>(events: &[Event], pick: impl Fn(&Payload) -> Option<&T>) -> Vec<T> {
    payloads(events, pick).into_iter().cloned().collect()
}

pub fn payloads<T>(events: &[Event], pick: impl Fn(&Payload) -> Option<&T>) -> Vec<&T> {
    events.iter().filter_map(|e| e.payload.as_ref().and_then(&pick)).collect()
}

/// Two Shopify stores (UK, EU) whose GraphQL endpoints are `{base}/{domain}/graphql.json`.
pub fn shopify_config(base: &str, dir: &std::path::Path, page_size: u32) -> (ShopifyConfig, StateFile) {
    let store = |domain: &str, token: &str| StoreConfig {
        domain: domain.into(),
        access_token: token.into(),
        name: domain.split('.').next().unwrap().into(),
        region: "".into(),
        endpoint: Some(format!("{base}/{domain}/graphql.json")),
    };
    let config = ShopifyConfig {
        tenant: "acme".into(),
        stores: vec![store("acme-uk.myshopify.com", "shpat_uk"), store("acme-eu.myshopify.com", "shpat_eu")],
        api_version: "2025-10".into(),
        page_size,
    };
    (config, StateFile::new(dir, "shopify"))
}

/// Tenant `acme`'s scope for `source`, in UTC.
pub fn acme(source: Source) -> Scope {
    Scope { source, tenant: "acme".into(), zone: Zone::utc() }
}

/// One run of `connector` for `scope` into `sink`, with fresh sync health.
pub async fn run<C: Connector>(
    scope: &Scope,
    connector: &mut C,
    sink: &std::sync::Arc<Recorder>,
) -> Result<(), SyncError> {
    run_once(connector, scope, sink.clone(), &mut Health::new(Default::default())).await
}

/// Answers only requests signed as Unleashed requires (API id `api-id`, key `api-key`, client
/// type `acme/switchyard`), with 403 otherwise, as Unleashed does.
pub struct Signed(pub Value);

impl wiremock::Respond for Signed {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let query = req.url.query().unwrap_or_default();
        let ok = req.headers.get("api-auth-signature").and_then(|v| v.to_str().ok())
            == Some(signature("api-key", query).as_str())
            && req.headers.get("api-auth-id").is_some_and(|v| v == "api-id")
            && req.headers.get("client-type").is_some_and(|v| v == "acme/switchyard");
        if ok { ResponseTemplate::new(200).set_body_json(self.0.clone()) } else { ResponseTemplate::new(403) }
    }
}

/// A Xero connection at `{base}/token` and `{base}/api`, starting from `refresh_token`.
pub fn xero_config(base: &str, refresh_token: &str) -> XeroConfig {
    XeroConfig {
        tenant: "acme".into(),
        client_id: "c".into(),
        client_secret: "s".into(),
        refresh_token: Some(refresh_token.into()),
        xero_tenant_id: "org".into(),
        token_url: format!("{base}/token"),
        api_url: format!("{base}/api"),
    }
}

/// An Unleashed account at `base`, paging `page_size` items, with a daily capacity of 20.
pub fn unleashed_config(base: &str, page_size: u32) -> UnleashedConfig {
    UnleashedConfig {
        tenant: "acme".into(),
        api_id: "api-id".into(),
        api_key: "api-key".into(),
        client_type: "acme/switchyard".into(),
        api_url: base.into(),
        currency: "NZD".into(),
        page_size,
        daily_capacity: Some(20),
        assembly_link: None,
    }
}

/// The one payload `pick` selects (the first, when there are several).
pub fn first<T: Clone>(events: &[Event], pick: impl Fn(&Payload) -> Option<&T>) -> T {
    owned(events, pick).into_iter().next().expect("the event was published")
}

/// A Xero report (`Reports[0].Rows`) as the Accounting API returns it.
pub fn xero_report(rows: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"Reports": [{"ReportID": "Report", "Rows": rows}]})
}
