//! Each connector against a local fake of its platform's API (wiremock on 127.0.0.1:0) that
//! answers in the platform's documented shapes, including several pages, 429 with Retry-After,
//! 401 with a token refresh, 500, and malformed bodies. The tests assert exact figures and the
//! exact events published, and that a second run (a restart: fresh connector, same state dir)
//! neither re-emits nor skips.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::BoxFuture;
use serde_json::{Value, json};
use switchyard::proto::v1::{Event, event::Payload};
use switchyard_services::{
    amazon::{Amazon, AmazonConfig},
    connector::SyncError,
    http::{Http, RetryPolicy},
    scheduler::run_once,
    shopify::{Shopify, ShopifyConfig, StoreConfig},
    sink::Sink,
    state::StateFile,
    unleashed::{Unleashed, UnleashedConfig, signature},
    xero::{Xero, XeroConfig},
};
use wiremock::{
    Mock, MockServer, Request, ResponseTemplate,
    matchers::{body_string_contains, header, method, path, query_param},
};

/// Records what a connector publishes, in order.
#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Sink for Recorder {
    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<(), String>> {
        self.0.lock().unwrap().extend(events);
        Box::pin(async { Ok(()) })
    }
}

impl Recorder {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn type_names(events: &[Event]) -> Vec<String> {
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

fn http() -> Http {
    Http::new(RetryPolicy { time_scale: 0.001, backoff: Duration::from_millis(200), ..RetryPolicy::default() }).unwrap()
}

fn payloads<T>(events: &[Event], pick: impl Fn(&Payload) -> Option<&T>) -> Vec<&T> {
    events.iter().filter_map(|e| e.payload.as_ref().and_then(&pick)).collect()
}

// ---------- Shopify ----------

fn order(id: u64, created: &str, total: &str, refunded: &str) -> Value {
    json!({"node": {"id": format!("gid://shopify/Order/{id}"), "legacyResourceId": id.to_string(), "name": format!("#{id}"),
        "createdAt": created, "test": false, "displayFinancialStatus": "PAID", "displayFulfillmentStatus": "UNFULFILLED",
        "totalPriceSet": {"shopMoney": {"amount": total, "currencyCode": "GBP"}},
        "totalRefundedSet": {"shopMoney": {"amount": refunded, "currencyCode": "GBP"}}}})
}

fn page(edges: Vec<Value>, next: Option<&str>) -> Value {
    json!({"data": {"orders": {"edges": edges, "pageInfo": {"hasNextPage": next.is_some(), "endCursor": next}}},
        "extensions": {"cost": {"requestedQueryCost": 52, "actualQueryCost": 12,
            "throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": 1988, "restoreRate": 100.0}}}})
}

fn shopify_config(server: &MockServer, dir: &std::path::Path) -> (ShopifyConfig, StateFile) {
    let store = |domain: &str, token: &str| StoreConfig {
        domain: domain.into(),
        access_token: token.into(),
        name: domain.split('.').next().unwrap().into(),
        region: "".into(),
        endpoint: Some(format!("{}/{domain}/graphql.json", server.uri())),
    };
    let config = ShopifyConfig {
        tenant: "acme".into(),
        stores: vec![store("acme-uk.myshopify.com", "shpat_uk"), store("acme-eu.myshopify.com", "shpat_eu")],
        api_version: "2025-10".into(),
        initial_lookback_days: 30,
        page_size: 2,
    };
    (config, StateFile::new(dir, "shopify"))
}

#[tokio::test]
async fn shopify_pages_throttle_and_cursor_across_a_restart() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let uk = "/acme-uk.myshopify.com/graphql.json";
    // UK: throttled once, then two pages.
    Mock::given(method("POST")).and(path(uk)).and(header("X-Shopify-Access-Token", "shpat_uk"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
            "extensions": {"cost": {"requestedQueryCost": 202, "throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": 2, "restoreRate": 100.0}}}})))
        .up_to_n_times(1).mount(&server).await;
    Mock::given(method("POST"))
        .and(path(uk))
        .and(body_string_contains("\"after\":null"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![
                order(5_000_000_000_000_001, "2026-11-20T10:00:00Z", "100.00", "0.00"),
                order(5_000_000_000_000_002, "2026-11-21T10:00:00Z", "50.50", "10.25"),
            ],
            Some("c2"),
        )))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(uk))
        .and(body_string_contains("\"after\":\"c2\""))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(page(vec![order(5_000_000_000_000_003, "2026-11-22T10:00:00Z", "0.10", "0.00")], None)),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    // EU: a 500 first (retried), then one page.
    let eu = "/acme-eu.myshopify.com/graphql.json";
    Mock::given(method("POST"))
        .and(path(eu))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(eu))
        .and(header("X-Shopify-Access-Token", "shpat_eu"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(page(vec![order(7, "2026-11-22T11:00:00Z", "20.00", "20.00")], None)),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;

    let (config, state) = shopify_config(&server, dir.path());
    let sink = Arc::new(Recorder::default());
    let h = http();
    let mut connector = Shopify::new(config.clone(), h, state.clone());
    run_once(&mut connector, sink.clone()).await.unwrap();
    let events = sink.take();
    assert_eq!(
        type_names(&events),
        [
            "shopify:sync-started",
            "shopify:order-created",
            "shopify:order-created",
            "shopify:order-created",
            "shopify:store-synced",
            "shopify:order-created",
            "shopify:store-synced",
            "shopify:sync-completed"
        ]
    );
    let stores = payloads(&events, |p| match p {
        Payload::ShopifyStoreSynced(s) => Some(s),
        _ => None,
    });
    assert_eq!((stores[0].orders, stores[0].revenue.as_ref().unwrap().amount.as_str()), (3, "150.60"));
    assert_eq!(stores[0].net_revenue.as_ref().unwrap().amount, "140.35");
    assert_eq!((stores[1].orders, stores[1].net_revenue.as_ref().unwrap().amount.as_str()), (1, "0.00"));
    let done = payloads(&events, |p| match p {
        Payload::ShopifySyncCompleted(s) => Some(s),
        _ => None,
    })[0];
    assert_eq!((done.success_count, done.total_stores, done.total_orders), (2, 2, 4));
    assert_eq!(done.total_revenue.as_ref().unwrap().amount, "170.60");
    assert_eq!(done.total_net_revenue.as_ref().unwrap().amount, "140.35");
    let orders = payloads(&events, |p| match p {
        Payload::ShopifyOrderCreated(o) => Some(o),
        _ => None,
    });
    assert_eq!(orders[0].order_id, "5000000000000001", "ids beyond 2^53 stay exact");
    let first = events.iter().find(|e| matches!(e.payload, Some(Payload::ShopifyOrderCreated(_)))).unwrap();
    assert_eq!(first.idempotency_key, "shopify:acme-uk.myshopify.com:order-created:5000000000000001");
    assert_eq!(first.tenant, "acme");
    // Progress of the run on jobs/<run id>, ending in completion.
    let job: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::WorkflowStage(_)) => Some("stage"),
            Some(Payload::WorkflowProgress(p)) if p.percent == 50 => Some("progress 50"),
            Some(Payload::WorkflowCompletion(c)) if c.r#final => Some("completed"),
            _ => None,
        })
        .collect();
    assert_eq!(job, ["stage", "progress 50", "completed"]);

    // Restart: a new connector on the same state. The UK store returns its newest order again
    // (`created_at >= cursor`) plus one new one; only the new one is published.
    Mock::given(method("POST"))
        .and(path(uk))
        .and(body_string_contains("created_at:>='2026-11-22T10:00:00Z'"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![
                order(5_000_000_000_000_003, "2026-11-22T10:00:00Z", "0.10", "0.00"),
                order(5_000_000_000_000_004, "2026-11-23T09:00:00Z", "9.99", "0.00"),
            ],
            None,
        )))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(eu))
        .and(body_string_contains("created_at:>='2026-11-22T11:00:00Z'"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(page(vec![order(7, "2026-11-22T11:00:00Z", "20.00", "20.00")], None)),
        )
        .mount(&server)
        .await;
    let mut restarted = Shopify::new(config, http(), state);
    run_once(&mut restarted, sink.clone()).await.unwrap();
    let events = sink.take();
    let orders = payloads(&events, |p| match p {
        Payload::ShopifyOrderCreated(o) => Some(&o.order_id),
        _ => None,
    });
    assert_eq!(orders, [&"5000000000000004".to_owned()], "no duplicate, nothing skipped");
    let done = payloads(&events, |p| match p {
        Payload::ShopifySyncCompleted(s) => Some(s),
        _ => None,
    })[0];
    assert_eq!((done.total_orders, done.total_revenue.as_ref().unwrap().amount.as_str()), (1, "9.99"));
}

#[tokio::test]
async fn shopify_unauthorized_store_is_reported_and_the_other_still_syncs() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    Mock::given(path("/acme-uk.myshopify.com/graphql.json"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"errors": "[API] Invalid API key or access token"})),
        )
        .mount(&server)
        .await;
    Mock::given(path("/acme-eu.myshopify.com/graphql.json"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(page(vec![order(9, "2026-11-22T11:00:00Z", "12.00", "0.00")], None)),
        )
        .mount(&server)
        .await;
    let (config, state) = shopify_config(&server, dir.path());
    let sink = Arc::new(Recorder::default());
    let err = run_once(&mut Shopify::new(config, http(), state), sink.clone()).await.unwrap_err();
    assert!(matches!(err, SyncError::Unauthorized(_)), "{err:?}");
    let events = sink.take();
    let names = type_names(&events);
    assert_eq!(names.last().unwrap(), "shopify:sync-error");
    let done = payloads(&events, |p| match p {
        Payload::ShopifySyncCompleted(s) => Some(s),
        _ => None,
    })[0];
    assert_eq!((done.success_count, done.total_stores, done.total_orders), (1, 2, 1));
    let error = payloads(&events, |p| match p {
        Payload::ShopifySyncError(s) => Some(s),
        _ => None,
    })[0];
    assert_eq!(error.code, "unauthorized");
    assert!(error.error.contains("acme-uk.myshopify.com") && error.error.contains("401"), "{}", error.error);
    assert!(!error.error.contains("shpat_uk"), "credentials never appear in errors");
}

// ---------- Xero ----------

fn report(sections: Value) -> Value {
    json!({"Reports": [{"ReportID": "BalanceSheet", "Rows": sections}]})
}

#[tokio::test]
async fn xero_reports_with_token_rotation_refresh_on_401_and_retry_after() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Token endpoint: each refresh token is good once and yields the next.
    for (old, new, access) in [("rt-1", "rt-2", "at-1"), ("rt-2", "rt-3", "at-2"), ("rt-3", "rt-4", "at-3")] {
        Mock::given(method("POST"))
            .and(path("/token"))
            .and(body_string_contains(format!("refresh_token={old}")))
            .and(header("authorization", "Basic Y2xpZW50OnNlY3JldA=="))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({"access_token": access, "expires_in": 1800, "token_type": "Bearer", "refresh_token": new}),
            ))
            .up_to_n_times(1)
            .mount(&server)
            .await;
    }
    // The first access token is rejected: the connector refreshes once and retries.
    Mock::given(header("authorization", "Bearer at-1")).respond_with(ResponseTemplate::new(401)).mount(&server).await;
    Mock::given(path("/api/Organisation"))
        .and(header("xero-tenant-id", "org-1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"Organisations": [{"Name": "Acme", "BaseCurrency": "GBP"}]})),
        )
        .mount(&server)
        .await;
    Mock::given(path("/api/Reports/BalanceSheet"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "7"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/Reports/BalanceSheet"))
        .respond_with(ResponseTemplate::new(200).set_body_json(report(json!([
        {"RowType": "Header", "Cells": [{"Value": ""}, {"Value": "23 Nov 2026"}]},
        {"RowType": "Section", "Title": "Current Assets", "Rows": [
            {"RowType": "Row", "Cells": [{"Value": "Accounts Receivable"}, {"Value": "12500.40"}]},
            {"RowType": "Row", "Cells": [{"Value": "Business Bank Account"}, {"Value": "30000.00"}]},
            {"RowType": "SummaryRow", "Cells": [{"Value": "Total Current Assets"}, {"Value": "42500.40"}]}]},
        {"RowType": "Section", "Title": "Current Liabilities", "Rows": [
            {"RowType": "Row", "Cells": [{"Value": "Accounts Payable"}, {"Value": "8000.15"}]},
            {"RowType": "SummaryRow", "Cells": [{"Value": "Total Current Liabilities"}, {"Value": "15000.15"}]}]}]))))
        .mount(&server)
        .await;
    Mock::given(path("/api/Reports/ProfitAndLoss")).respond_with(ResponseTemplate::new(200).set_body_json(report(json!([
        {"RowType": "Section", "Title": "Income", "Rows": [{"RowType": "SummaryRow", "Cells": [{"Value": "Total Income"}, {"Value": "9000.00"}]}]},
        {"RowType": "Section", "Title": "", "Rows": [{"RowType": "Row", "Cells": [{"Value": "Net Profit"}, {"Value": "-250.50"}]}]}]))))
        .mount(&server).await;
    let invoices =
        |n: usize| json!({"Invoices": (0..n).map(|i| json!({"InvoiceID": format!("inv-{i}")})).collect::<Vec<_>>()});
    Mock::given(path("/api/Invoices"))
        .and(query_param("page", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(invoices(100)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/Invoices"))
        .and(query_param("page", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(invoices(3)))
        .up_to_n_times(1)
        .mount(&server)
        .await;

    let config = XeroConfig {
        tenant: "acme".into(),
        client_id: "client".into(),
        client_secret: "secret".into(),
        refresh_token: Some("rt-1".into()),
        xero_tenant_id: "org-1".into(),
        token_url: format!("{}/token", server.uri()),
        api_url: format!("{}/api", server.uri()),
    };
    let state = StateFile::new(dir.path(), "xero");
    let sink = Arc::new(Recorder::default());
    let h = http();
    let mut xero = Xero::new(config.clone(), h, state.clone());
    run_once(&mut xero, sink.clone()).await.unwrap();
    let events = sink.take();
    assert_eq!(type_names(&events), ["xero:sync-started", "xero:sync-completed"]);
    let x = payloads(&events, |p| match p {
        Payload::XeroSyncCompleted(x) => Some(x),
        _ => None,
    })[0];
    let amount =
        |m: &Option<switchyard::proto::v1::Money>| m.as_ref().map(|m| format!("{} {}", m.amount, m.currency)).unwrap();
    assert_eq!(amount(&x.working_capital), "27500.25 GBP");
    assert_eq!((amount(&x.receivables), amount(&x.payables)), ("12500.40 GBP".into(), "8000.15 GBP".into()));
    assert_eq!((amount(&x.revenue), amount(&x.net_profit)), ("9000.00 GBP".into(), "-250.50 GBP".into()));
    assert_eq!(x.invoices_changed, 103);
    let saved = std::fs::read_to_string(dir.path().join("xero.json")).unwrap();
    assert!(saved.contains("rt-3"), "the rotated refresh token is persisted: {saved}");

    // Restart: the persisted token (rt-3) is used, not the configured one (rt-1, now dead), and
    // invoices are asked for with If-Modified-Since.
    Mock::given(path("/api/Invoices"))
        .and(wiremock::matchers::header_exists("If-Modified-Since"))
        .respond_with(ResponseTemplate::new(200).set_body_json(invoices(1)))
        .mount(&server)
        .await;
    let mut again = Xero::new(config, http(), state);
    run_once(&mut again, sink.clone()).await.unwrap();
    let events = sink.take();
    let x = payloads(&events, |p| match p {
        Payload::XeroSyncCompleted(x) => Some(x),
        _ => None,
    })[0];
    assert_eq!(x.invoices_changed, 1);
}

#[tokio::test]
async fn xero_retry_after_is_honoured_and_an_expired_grant_is_a_clear_error() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    Mock::given(path("/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant"})))
        .mount(&server)
        .await;
    let config = XeroConfig {
        tenant: "acme".into(),
        client_id: "c".into(),
        client_secret: "s".into(),
        refresh_token: Some("dead".into()),
        xero_tenant_id: "org".into(),
        token_url: format!("{}/token", server.uri()),
        api_url: format!("{}/api", server.uri()),
    };
    let sink = Arc::new(Recorder::default());
    let err =
        run_once(&mut Xero::new(config, http(), StateFile::new(dir.path(), "xero")), sink.clone()).await.unwrap_err();
    assert_eq!(err.code(), "unauthorized");
    assert!(err.to_string().contains("re-authorise"), "{err}");
    assert!(!err.to_string().contains("dead"), "the refresh token is not in the message");
}

#[tokio::test]
async fn http_waits_what_retry_after_says() {
    let server = MockServer::start().await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "7"))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(path("/x"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .mount(&server)
        .await;
    let h = http();
    let v: Value = h.json("x", || h.client().get(format!("{}/x", server.uri()))).await.unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(h.waited(), Duration::from_secs(14), "two Retry-After: 7 waits");
    Mock::given(path("/bad"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{not json"))
        .mount(&server)
        .await;
    let err = h.json::<Value>("bad", || h.client().get(format!("{}/bad", server.uri()))).await.unwrap_err();
    assert_eq!(err.code(), "malformed_response");
    Mock::given(path("/down")).respond_with(ResponseTemplate::new(503)).mount(&server).await;
    let err = h.send("down", || h.client().get(format!("{}/down", server.uri()))).await.unwrap_err();
    assert!(matches!(err, SyncError::Upstream { status: 503, .. }), "{err:?}");
    assert_eq!(
        server.received_requests().await.unwrap().iter().filter(|r| r.url.path() == "/down").count(),
        4,
        "bounded retries"
    );
}

// ---------- Amazon ----------

#[tokio::test]
async fn amazon_inventory_orders_inbound_and_low_stock_once_per_crossing() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    Mock::given(method("POST"))
        .and(path("/auth/o2/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains("refresh_token=Atzr%7Ctest"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "Atza|access", "token_type": "bearer", "expires_in": 3600})),
        )
        .mount(&server)
        .await;
    let summary = |sku: &str, n: i64| {
        json!({"sellerSku": sku, "productName": format!("{sku} name"), "totalQuantity": n + 5,
        "inventoryDetails": {"fulfillableQuantity": n}})
    };
    Mock::given(path("/fba/inventory/v1/summaries"))
        .and(header("x-amz-access-token", "Atza|access"))
        .and(wiremock::matchers::query_param_is_missing("nextToken"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"payload": {"inventorySummaries": [summary("A", 50), summary("B", 3)]},
            "pagination": {"nextToken": "p2"}})),
        )
        .mount(&server)
        .await;
    Mock::given(path("/fba/inventory/v1/summaries"))
        .and(query_param("nextToken", "p2"))
        .respond_with(ResponseTemplate::new(429).insert_header("x-amzn-RateLimit-Limit", "2.0"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/fba/inventory/v1/summaries"))
        .and(query_param("nextToken", "p2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"payload": {"inventorySummaries": [summary("C", 0)]}})),
        )
        .mount(&server)
        .await;
    let o = |id: &str, created: &str, amount: &str, status: &str| {
        json!({"orderId": id, "createdTime": created, "lastUpdatedTime": created,
        "orderItems": [], "salesChannel": {"marketplaceId": "A1F83G8C2ARO7P"},
        "fulfillment": {"fulfillmentStatus": status}, "proceeds": {"grandTotal": {"amount": amount, "currencyCode": "GBP"}}})
    };
    Mock::given(path("/orders/2026-01-01/orders"))
        .and(wiremock::matchers::query_param_is_missing("paginationToken"))
        .and(query_param("includedData", "FULFILLMENT,PROCEEDS"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"orders": [o("202-1", "2026-11-20T10:00:00Z", "19.99", "SHIPPED")],
            "pagination": {"nextToken": "o2"}})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/orders/2026-01-01/orders"))
        .and(query_param("paginationToken", "o2"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"orders": [o("202-2", "2026-11-21T10:00:00Z", "5.01", "UNSHIPPED")]})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/fba/inbound/v0/shipments"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"payload": {"ShipmentData": [{"ShipmentId": "FBA1"}, {"ShipmentId": "FBA2"}]}})),
        )
        .mount(&server)
        .await;
    let config = AmazonConfig {
        tenant: "acme".into(),
        client_id: "amzn1.application-oa2-client.x".into(),
        client_secret: "s".into(),
        refresh_token: "Atzr|test".into(),
        marketplace_id: "A1F83G8C2ARO7P".into(),
        api_url: server.uri(),
        lwa_url: format!("{}/auth/o2/token", server.uri()),
        reorder_point: 10,
        initial_lookback_days: 30,
        sqs: None,
    };
    let state = StateFile::new(dir.path(), "amazon");
    let sink = Arc::new(Recorder::default());
    run_once(&mut Amazon::new(config.clone(), http(), state.clone()), sink.clone()).await.unwrap();
    let events = sink.take();
    assert_eq!(
        type_names(&events),
        [
            "amazon:sync-started",
            "amazon:order-created",
            "amazon:order-created",
            "amazon:low-stock-alert",
            "amazon:sync-completed"
        ]
    );
    let a = payloads(&events, |p| match p {
        Payload::AmazonSyncCompleted(a) => Some(a),
        _ => None,
    })[0];
    assert_eq!((a.total_skus, a.total_units, a.low_stock_skus), (3, 68, 2));
    assert_eq!((a.total_orders, a.unshipped_orders, a.inbound_shipments), (2, 1, 2));
    assert_eq!(a.total_revenue.as_ref().unwrap().amount, "25.00");
    let alert = payloads(&events, |p| match p {
        Payload::AmazonLowStockAlert(a) => Some(a),
        _ => None,
    })[0];
    assert_eq!((alert.count, alert.critical_items), (2, 1));
    assert_eq!(alert.items.iter().map(|i| (i.sku.as_str(), i.on_hand)).collect::<Vec<_>>(), [("B", 3), ("C", 0)]);

    // Second run, same stock: still low, so no new alert; the last order is not re-emitted.
    Mock::given(path("/orders/2026-01-01/orders"))
        .and(query_param("createdAfter", "2026-11-21T10:00:00Z"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"orders": [o("202-2", "2026-11-21T10:00:00Z", "5.01", "UNSHIPPED")]})),
        )
        .mount(&server)
        .await;
    run_once(&mut Amazon::new(config, http(), state), sink.clone()).await.unwrap();
    let events = sink.take();
    assert_eq!(
        type_names(&events),
        ["amazon:sync-started", "amazon:sync-completed"],
        "no repeated alert, no repeated order"
    );
}

// ---------- Unleashed ----------

fn unleashed_config(server: &MockServer) -> UnleashedConfig {
    UnleashedConfig {
        tenant: "acme".into(),
        api_id: "api-id".into(),
        api_key: "api-key".into(),
        client_type: "acme/switchyard".into(),
        api_url: server.uri(),
        currency: "NZD".into(),
        page_size: 2,
        daily_capacity: Some(20),
    }
}

/// Answers only correctly signed requests, as Unleashed does (403 otherwise).
struct Signed(Value);

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

fn paged(items: Value, page: u64, pages: u64) -> Signed {
    Signed(
        json!({"Pagination": {"NumberOfItems": 3, "PageSize": 2, "PageNumber": page, "NumberOfPages": pages}, "Items": items}),
    )
}

#[tokio::test]
async fn unleashed_signed_pages_stock_assemblies_and_alerts() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    Mock::given(path("/Products/1")).respond_with(paged(json!([{"ProductCode": "WIDGET", "MinStockAlertLevel": 10}, {"ProductCode": "GADGET", "MinStockAlertLevel": 0}]), 1, 1)).mount(&server).await;
    Mock::given(path("/StockOnHand/1"))
        .respond_with(paged(
            json!([
        {"ProductCode": "WIDGET", "ProductDescription": "Widget", "QtyOnHand": 4.0, "TotalCost": 40.5},
        {"ProductCode": "GADGET", "ProductDescription": "Gadget", "QtyOnHand": 100.0, "TotalCost": 1000.25}]),
            1,
            2,
        ))
        .mount(&server)
        .await;
    Mock::given(path("/StockOnHand/2"))
        .respond_with(paged(json!([{"ProductCode": "BOLT", "QtyOnHand": 7, "TotalCost": "3.25"}]), 2, 2))
        .mount(&server)
        .await;
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let days_ago = |d: i64| format!("/Date({})/", now_ms - d * 86_400_000);
    Mock::given(path("/Assemblies/1")).respond_with(paged(json!([
        {"Guid": "g-1", "AssemblyNumber": "ASM-1", "AssemblyStatus": "Completed", "Quantity": 5, "AssembleBy": days_ago(1), "AssembledDate": format!("/Date({now_ms})/"), "Product": {"ProductCode": "WIDGET"}},
        {"Guid": "g-2", "AssemblyNumber": "ASM-2", "AssemblyStatus": "Parked", "Quantity": 3, "AssembleBy": days_ago(3), "Product": {"ProductCode": "GADGET"}},
        {"Guid": "g-3", "AssemblyNumber": "ASM-3", "AssemblyStatus": "Parked", "Quantity": 2, "AssembleBy": days_ago(-2), "Product": {"ProductCode": "GADGET"}}]), 1, 1)).mount(&server).await;
    let state = StateFile::new(dir.path(), "unleashed");
    let sink = Arc::new(Recorder::default());
    run_once(&mut Unleashed::new(unleashed_config(&server), http(), state.clone()), sink.clone()).await.unwrap();
    let events = sink.take();
    assert_eq!(
        type_names(&events),
        [
            "unleashed:sync-started",
            "unleashed:production-updated",
            "unleashed:production-updated",
            "unleashed:production-updated",
            "unleashed:quality-alert",
            "unleashed:low-stock-alert",
            "unleashed:sync-completed"
        ]
    );
    // ASM-2 was due three days ago and is not assembled: a high-severity shortfall. ASM-3 is not due yet.
    let q = payloads(&events, |p| match p {
        Payload::UnleashedQualityAlert(q) => Some(q),
        _ => None,
    })[0];
    assert_eq!((q.count, q.critical_issues), (1, 1));
    assert_eq!((q.issues[0].assembly_id.as_str(), q.issues[0].planned, q.issues[0].produced), ("ASM-2", 3, 0));
    let u = payloads(&events, |p| match p {
        Payload::UnleashedSyncCompleted(u) => Some(u),
        _ => None,
    })[0];
    assert_eq!((u.active_assemblies, u.completed_today, u.stock_items, u.low_stock_items), (2, 1, 3, 1));
    assert_eq!(u.stock_value.as_ref().map(|m| (m.amount.as_str(), m.currency.as_str())), Some(("1044.00", "NZD")));
    assert_eq!(u.yield_percent, "62.5", "5 of the 8 units due by now were assembled");
    assert_eq!(u.utilization_percent, "25.0", "5 units today of a daily capacity of 20");
    assert_eq!(u.quality_alerts, 1);
    // Second run: nothing changed, so no production, quality or stock alert events.
    run_once(&mut Unleashed::new(unleashed_config(&server), http(), state), sink.clone()).await.unwrap();
    assert_eq!(type_names(&sink.take()), ["unleashed:sync-started", "unleashed:sync-completed"]);
}

#[tokio::test]
async fn unleashed_malformed_body_and_bad_signature_become_sync_errors() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    Mock::given(path("/Products/1"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>maintenance</html>"))
        .mount(&server)
        .await;
    let sink = Arc::new(Recorder::default());
    let err =
        run_once(&mut Unleashed::new(unleashed_config(&server), http(), StateFile::new(dir.path(), "u")), sink.clone())
            .await
            .unwrap_err();
    assert_eq!(err.code(), "malformed_response");
    let names = type_names(&sink.take());
    assert_eq!(names, ["unleashed:sync-started", "unleashed:sync-error"]);

    let server = MockServer::start().await;
    Mock::given(path("/Products/1")).respond_with(paged(json!([]), 1, 1)).mount(&server).await;
    let mut wrong = unleashed_config(&server);
    wrong.api_key = "wrong-key".into();
    let err =
        run_once(&mut Unleashed::new(wrong, http(), StateFile::new(dir.path(), "u2")), sink.clone()).await.unwrap_err();
    assert_eq!(err.code(), "unauthorized", "Unleashed answers a bad signature with 403");
}

// ---------- Amazon SQS notifications ----------

/// A sink that refuses its first `fail` batches, as a bus that is briefly down.
struct Flaky {
    inner: Recorder,
    fail: Mutex<u32>,
}

impl Sink for Flaky {
    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<(), String>> {
        let mut f = self.fail.lock().unwrap();
        if *f > 0 {
            *f -= 1;
            return Box::pin(async { Err("bus unavailable".to_owned()) });
        }
        drop(f);
        self.inner.publish(events)
    }
}

#[tokio::test]
async fn sqs_messages_are_deleted_only_after_their_events_are_durable() {
    use switchyard_services::amazon::sqs::{Poller, SqsConfig};
    let server = MockServer::start().await;
    let notification = json!({"NotificationVersion": "1.0", "NotificationType": "ORDER_CHANGE", "PayloadVersion": "1.0",
        "EventTime": "2026-11-23T09:59:00.000Z",
        "Payload": {"OrderChangeNotification": {"SellerId": "A3TH9S8BH6GOGM", "AmazonOrderId": "903-1", "OrderChangeType": "OrderStatusChange",
            "Summary": {"OrderStatus": "Pending", "OrderItems": [{"SellerSKU": "W-1", "Quantity": 1}]}}},
        "NotificationMetadata": {"NotificationId": "n-sqs-1"}});
    // The same message is received until it is deleted, as SQS does after the visibility timeout.
    Mock::given(method("POST"))
        .and(header("x-amz-target", "AmazonSQS.ReceiveMessage"))
        .and(header("content-type", "application/x-amz-json-1.0"))
        .and(body_string_contains("\"QueueUrl\":\"https://sqs.eu-west-1.amazonaws.com/123456789012/sp-api\""))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Messages": [
            {"MessageId": "m-1", "ReceiptHandle": "rh-1", "MD5OfBody": "x", "Body": notification.to_string()}]})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(header("x-amz-target", "AmazonSQS.DeleteMessage"))
        .and(body_string_contains("rh-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&server)
        .await;
    let poller = Poller::new(
        SqsConfig {
            queue_url: "https://sqs.eu-west-1.amazonaws.com/123456789012/sp-api".into(),
            region: "eu-west-1".into(),
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            endpoint: Some(server.uri()),
            wait_secs: 0,
        },
        http(),
        "acme",
        10,
    );
    let sink = Flaky { inner: Recorder::default(), fail: Mutex::new(1) };
    let deletes = || async {
        server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.headers.get("x-amz-target").is_some_and(|v| v == "AmazonSQS.DeleteMessage"))
            .count()
    };
    let err = poller.poll_once(&sink).await.unwrap_err();
    assert_eq!(err.code(), "publish");
    assert_eq!(deletes().await, 0, "not durable, so not deleted: SQS will redeliver");
    assert_eq!(poller.poll_once(&sink).await.unwrap(), 1);
    assert_eq!(deletes().await, 1);
    let events = sink.inner.take();
    assert_eq!(type_names(&events), ["amazon:order-created"]);
    assert_eq!((events[0].tenant.as_str(), events[0].source.as_str()), ("acme", "sqs:amazon"));
    assert_eq!(events[0].idempotency_key, "amazon:notification:n-sqs-1", "the same key as the SNS route");
    // Every call is SigV4-signed for the sqs service.
    for r in server.received_requests().await.unwrap() {
        let auth = r.headers.get("authorization").unwrap().to_str().unwrap().to_owned();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"), "{auth}");
        assert!(auth.contains("/eu-west-1/sqs/aws4_request"), "{auth}");
        assert!(r.headers.contains_key("x-amz-date"));
    }
}

// ---------- scheduling and failures ----------

#[tokio::test]
async fn a_failing_connector_retries_with_backoff_and_never_stops_the_others() {
    use switchyard_services::scheduler::{Schedule, spawn};
    let unleashed = MockServer::start().await;
    for p in ["/Products/1", "/StockOnHand/1", "/Assemblies/1"] {
        Mock::given(path(p)).respond_with(paged(json!([]), 1, 1)).mount(&unleashed).await;
    }
    // Shopify is down: nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut shop_config, state) = shopify_config(&unleashed, dir.path());
    shop_config.stores.truncate(1);
    shop_config.stores[0].endpoint = Some(format!("http://{closed}/graphql.json"));
    let sink = Arc::new(Recorder::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let fast =
        Schedule { interval: Duration::from_secs(3600), retry: Duration::from_millis(20), ..Schedule::default() };
    let notify = || Arc::new(tokio::sync::Notify::new());
    let a = spawn(Shopify::new(shop_config, http(), state), sink.clone(), fast.clone(), notify(), stopped.clone());
    let b = spawn(
        Unleashed::new(unleashed_config(&unleashed), http(), StateFile::new(dir.path(), "unleashed")),
        sink.clone(),
        fast,
        notify(),
        stopped,
    );
    let seen = |name: &str| {
        let name = name.to_owned();
        let sink = sink.clone();
        move || type_names(&sink.0.lock().unwrap()).iter().filter(|n| **n == name).count()
    };
    let (errors, completed) = (seen("shopify:sync-error"), seen("unleashed:sync-completed"));
    for _ in 0..500 {
        if errors() >= 3 && completed() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(errors() >= 3, "Shopify kept retrying: {} errors", errors());
    assert_eq!(completed(), 1, "Unleashed synced once, on its own schedule");
    let error = sink.0.lock().unwrap().iter().find_map(|e| match &e.payload {
        Some(Payload::ShopifySyncError(s)) => Some(s.clone()),
        _ => None,
    });
    let error = error.unwrap();
    assert_eq!(error.code, "network");
    assert!(error.will_retry);
    assert!(!a.is_finished() && !b.is_finished(), "the process never gives up");
    stop.send(true).unwrap();
    let _ = tokio::join!(a, b);
}

#[tokio::test]
async fn a_platform_that_never_answers_is_a_timeout() {
    let server = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let h = Http::new(RetryPolicy {
        timeout: Duration::from_millis(100),
        attempts: 2,
        time_scale: 0.001,
        ..RetryPolicy::default()
    })
    .unwrap();
    let err = h.send("slow", || h.client().get(format!("{}/slow", server.uri()))).await.unwrap_err();
    assert_eq!(err.code(), "timeout", "{err}");
}
