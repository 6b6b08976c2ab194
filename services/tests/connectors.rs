//! Connector plumbing against local fakes of each platform's API (wiremock on 127.0.0.1:0):
//! token rotation and refresh on 401, Retry-After, bounded retries, signatures, malformed bodies,
//! SQS deletes, scheduling. The figures themselves are tested in figures.rs.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{Recorder, Signed, acme, http, payloads, run, shopify_config, type_names, xero_config, xero_report};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use switchyard::proto::v1::{Event, event::Payload};
use switchyard_services::{
    connector::SyncError,
    http::{Http, RetryPolicy},
    shopify::Shopify,
    sink::Sink,
    state::StateFile,
    unleashed::{Unleashed, UnleashedConfig},
    xero::{Xero, XeroConfig},
};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_string_contains, header, method, path, query_param},
};

// ---------- Xero ----------

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
        .respond_with(ResponseTemplate::new(200).set_body_json(xero_report(json!([
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
    Mock::given(path("/api/Reports/ProfitAndLoss")).respond_with(ResponseTemplate::new(200).set_body_json(xero_report(json!([
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
    run(&acme(switchyard_services::xero::SOURCE), &mut xero, &sink).await.unwrap();
    let events = sink.take();
    assert_eq!(type_names(&events), ["xero:sync-started", "xero:sync-completed", "xero:sync-status"]);
    let x = payloads(&events, |p| match p {
        Payload::XeroSyncCompleted(x) => Some(x),
        _ => None,
    })[0];
    let amount =
        |m: &Option<switchyard::proto::v1::Money>| m.as_ref().map(|m| format!("{} {}", m.amount, m.currency)).unwrap();
    assert_eq!(amount(&x.working_capital), "27500.25 GBP");
    assert_eq!((amount(&x.receivables), amount(&x.payables)), ("12500.40 GBP".into(), "8000.15 GBP".into()));
    assert_eq!((amount(&x.revenue), amount(&x.net_profit)), ("9000.00 GBP".into(), "-250.50 GBP".into()));
    assert_eq!(x.invoices_changed, Some(103));
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
    run(&acme(switchyard_services::xero::SOURCE), &mut again, &sink).await.unwrap();
    let events = sink.take();
    let x = payloads(&events, |p| match p {
        Payload::XeroSyncCompleted(x) => Some(x),
        _ => None,
    })[0];
    assert_eq!(x.invoices_changed, Some(1));
}

#[tokio::test]
async fn xero_retry_after_is_honoured_and_an_expired_grant_is_a_clear_error() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    Mock::given(path("/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant"})))
        .mount(&server)
        .await;
    let config = xero_config(&server.uri(), "dead");
    let sink = Arc::new(Recorder::default());
    let err = run(
        &acme(switchyard_services::xero::SOURCE),
        &mut Xero::new(config, http(), StateFile::new(dir.path(), "xero")),
        &sink,
    )
    .await
    .unwrap_err();
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

// ---------- Unleashed ----------

fn unleashed_config(server: &MockServer) -> UnleashedConfig {
    common::unleashed_config(&server.uri(), 2)
}

fn paged(items: Value, page: u64, pages: u64) -> Signed {
    Signed(
        json!({"Pagination": {"NumberOfItems": 3, "PageSize": 2, "PageNumber": page, "NumberOfPages": pages}, "Items": items}),
    )
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
    let err = run(
        &acme(switchyard_services::unleashed::SOURCE),
        &mut Unleashed::new(unleashed_config(&server), http(), StateFile::new(dir.path(), "u")),
        &sink,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "malformed_response");
    let names = type_names(&sink.take());
    assert_eq!(names, ["unleashed:sync-started", "unleashed:sync-error", "unleashed:sync-status"]);

    let server = MockServer::start().await;
    Mock::given(path("/Products/1")).respond_with(paged(json!([]), 1, 1)).mount(&server).await;
    let mut wrong = unleashed_config(&server);
    wrong.api_key = "wrong-key".into();
    let err = run(
        &acme(switchyard_services::unleashed::SOURCE),
        &mut Unleashed::new(wrong, http(), StateFile::new(dir.path(), "u2")),
        &sink,
    )
    .await
    .unwrap_err();
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
    let (mut shop_config, state) = shopify_config(&unleashed.uri(), dir.path(), 250);
    shop_config.stores.truncate(1);
    shop_config.stores[0].endpoint = Some(format!("http://{closed}/graphql.json"));
    let sink = Arc::new(Recorder::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let fast =
        Schedule { interval: Duration::from_secs(3600), retry: Duration::from_millis(20), ..Schedule::default() };
    let notify = || Arc::new(tokio::sync::Notify::new());
    let a = spawn(
        Shopify::new(shop_config, http(), state),
        acme(switchyard_services::shopify::SOURCE),
        sink.clone(),
        fast.clone(),
        notify(),
        stopped.clone(),
    );
    let b = spawn(
        Unleashed::new(unleashed_config(&unleashed), http(), StateFile::new(dir.path(), "unleashed")),
        acme(switchyard_services::unleashed::SOURCE),
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
        backoff: Duration::from_millis(1),
        ..RetryPolicy::default()
    })
    .unwrap();
    let err = h.send("slow", || h.client().get(format!("{}/slow", server.uri()))).await.unwrap_err();
    assert_eq!(err.code(), "timeout", "{err}");
}
