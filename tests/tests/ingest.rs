//! `switchyard-ingest` as its own process, pointed at fakes of Shopify and Xero, fills
//! `/api/sse/dashboard` with figures computed from their responses; a Xero webhook to the
//! bridge makes the Xero connector sync again at once (push triggers pull).

use std::{collections::BTreeMap, process::Command};

use serde_json::json;
use switchyard::auth::Role;
use switchyard_bridge::webhooks::signature::sign_b64;
use switchyard_tests::{KilledOnDrop, Server, Sse, built, platforms, section};

const XERO_KEY: &str = "XERO_INGEST_TEST_KEY";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchyard_ingest_fills_the_dashboard_and_webhooks_trigger_syncs() {
    let server = Server::start_with(|c| {
        c.webhooks
            .platforms
            .insert("xero".into(), section(&format!("keys = [\"{XERO_KEY}\"]\n[tenants]\norg-1 = \"acme\"\n")));
    })
    .await;
    let fake = platforms::fakes().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ingest.toml");
    std::fs::write(
        &config,
        format!(
            r#"state_dir = "{state}"
interval_secs = 3600
debounce_secs = 0

[retry]
backoff_ms = 1
max_wait_ms = 20

[shopify]
tenant = "acme"
stores = [{{ domain = "acme-uk.myshopify.com", access_token = "shpat_test", name = "UK", region = "GB", endpoint = "{fake}/shop/graphql.json" }}]

{xero}"#,
            state = dir.path().join("state").display(),
            fake = fake.uri(),
            xero = platforms::xero_section(&fake),
        ),
    )
    .unwrap();
    let token = server.token("*", Role::Admin, &[]);
    let _ingest = KilledOnDrop(
        Command::new(built("switchyard-ingest"))
            .args(["--bus", &server.grpc_url, "--config", config.to_str().unwrap()])
            .env("SWITCHYARD_TOKEN", &token)
            .env("SWITCHYARD_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("switchyard-ingest starts"),
    );
    let mut sse = Sse::connect(
        &format!("{}/api/sse/dashboard", server.http_url),
        Some(&server.token("acme", Role::Subscribe, &[])),
        Some(0),
    )
    .await;
    let mut seen = BTreeMap::new();
    while !(seen.contains_key("shopify:sync-completed") && seen.contains_key("xero:sync-completed")) {
        let f = sse.next_event().await.expect("stream open");
        seen.insert(f.event.clone().unwrap(), f.json());
    }
    let shopify = &seen["shopify:sync-completed"]["shopifySyncCompleted"]["last24h"];
    assert_eq!(
        (shopify["orders"].as_u64(), &shopify["revenue"]),
        (Some(2), &json!([{"amount": "150.50", "currency": "GBP"}]))
    );
    assert_eq!(seen["shopify:sync-completed"]["source"], "connector:shopify");
    let xero = &seen["xero:sync-completed"]["xeroSyncCompleted"];
    assert_eq!(xero["workingCapital"], json!({"amount": "600.00", "currency": "GBP"}));
    assert!(seen.contains_key("shopify:order-created") && seen.contains_key("shopify:store-synced"));

    // Push triggers pull: a Xero webhook reaches the bridge, and the connector syncs again now,
    // not in an hour.
    let balance_sheets = || async {
        fake.received_requests().await.unwrap().iter().filter(|r| r.url.path().ends_with("BalanceSheet")).count()
    };
    assert_eq!(balance_sheets().await, 1);
    let body = json!({"events": [{"resourceUrl": "https://api.xero.com/api.xro/2.0/Invoices/1", "resourceId": "inv-1",
        "eventDateUtc": "2026-11-23T01:15:39.902", "eventType": "UPDATE", "eventCategory": "INVOICE",
        "tenantId": "org-1", "tenantType": "ORGANISATION"}], "firstEventSequence": 1, "lastEventSequence": 1, "entropy": "x"})
    .to_string();
    let r = switchyard_tests::http()
        .post(format!("{}/api/webhooks/xero", server.http_url))
        .header("x-xero-signature", sign_b64(XERO_KEY.as_bytes(), &[body.as_bytes()]))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    loop {
        let f = sse.next_event().await.expect("stream open");
        if f.event.as_deref() == Some("xero:sync-completed") {
            break;
        }
    }
    assert_eq!(balance_sheets().await, 2, "the webhook triggered exactly one more sync");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_configured_connectors_in_process() {
    let fake = platforms::fakes().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ingest.toml");
    std::fs::write(
        &config,
        format!("interval_secs = 3600\n[retry]\nbackoff_ms = 1\nmax_wait_ms = 20\n{}", platforms::xero_section(&fake)),
    )
    .unwrap();
    let server = Server::start_with(|c| c.ingest = Some(config.clone())).await;
    let mut sse = Sse::connect(
        &format!("{}/api/sse/working-capital", server.http_url),
        Some(&server.token("acme", Role::Subscribe, &[])),
        Some(0),
    )
    .await;
    let f = sse.next_event().await.expect("stream open");
    assert_eq!(f.event.as_deref(), Some("xero:sync-completed"));
    assert_eq!(f.json()["xeroSyncCompleted"]["workingCapital"]["amount"], "600.00");
    // Cursors live in <data_dir>/ingest by default (saved right after the figures are published).
    let state = server.dir.path().join("ingest/xero.json");
    switchyard_tests::wait_for("the Xero cursor", || async { state.exists().then_some(()) }).await;
    server.stop().await;
}
