//! Helpers shared by the connector test files.
#![allow(dead_code, unreachable_pub)]

use std::{sync::Mutex, time::Duration};

use futures::future::BoxFuture;
use switchyard::proto::v1::{Event, event::Payload};
use switchyard_services::{
    http::{Http, RetryPolicy},
    shopify::{ShopifyConfig, StoreConfig},
    sink::Sink,
    state::StateFile,
};

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
    Http::new(RetryPolicy { time_scale: 0.001, backoff: Duration::from_millis(200), ..RetryPolicy::default() }).unwrap()
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
