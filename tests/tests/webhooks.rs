//! Webhook ingress over real HTTP: verified on raw bytes, mapped to catalog events,
//! durable before 2xx, retries stored once.

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use switchyard::auth::{Role, now_secs};
use switchyard_bridge::{
    config::StandardHook,
    webhooks::{signature::sign_b64, standard::secret_key},
};
use switchyard_tests::{Server, Sse, section, sns};

const SHOP: &str = "acme-uk.myshopify.com";
const XERO_KEY: &str = "XERO_TEST_WEBHOOK_KEY_do_not_use";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A shop with a custom app of its own: its own secret.
const OWN_SHOP: &str = "globex.myshopify.com";

async fn server() -> Server {
    Server::start_with(|c| {
        c.bus.custom_channels = vec!["ops".into()];
        c.webhooks.platforms.insert(
            "shopify".into(),
            section(&format!(
                "secrets = [\"old-secret\", \"new-secret\"]\nlarge_order_total = 500.0\nlow_stock_threshold = 10\n\
                 [shops]\n\"{SHOP}\" = \"acme\"\n\"{OWN_SHOP}\" = \"globex\"\n\
                 [shop_secrets]\n\"{OWN_SHOP}\" = [\"globex-app-secret\"]\n"
            )),
        );
        c.webhooks
            .platforms
            .insert("xero".into(), section(&format!("keys = [\"{XERO_KEY}\"]\n[tenants]\nc2cc9b6e = \"acme\"\n")));
        c.webhooks.standard.insert(
            "billing".into(),
            StandardHook { secrets: vec![WHSEC.into()], tenant: "acme".into(), channels: vec!["ops".into()] },
        );
    })
    .await
}

async fn post(url: String, headers: &[(&str, String)], body: &[u8]) -> reqwest::Response {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    switchyard_tests::http().post(url).headers(h).body(body.to_vec()).send().await.unwrap()
}

fn head(server: &Server) -> u64 {
    server.running.bus.log().stats().head.get()
}

#[tokio::test]
async fn shopify_orders_verified_on_raw_bytes_and_stored_once() {
    let server = server().await;
    let url = format!("{}/api/webhooks/shopify", server.http_url);
    let mut sse = Sse::connect(
        &format!("{}/api/sse/dashboard", server.http_url),
        Some(&server.token("acme", Role::Subscribe, &[])),
        None,
    )
    .await;
    // Spaced JSON, as Shopify sends it: the signature is over these exact bytes.
    let body = br##"{"id": 820982911946154508, "name": "#1001", "currency": "GBP", "total_price": "25.00", "line_items": []}"##;
    let headers = |sig: String, event_id: &str| {
        vec![
            ("X-Shopify-Hmac-Sha256", sig),
            ("X-Shopify-Topic", "orders/create".to_owned()),
            ("X-Shopify-Shop-Domain", SHOP.to_owned()),
            ("X-Shopify-Event-Id", event_id.to_owned()),
            ("X-Shopify-Triggered-At", "2026-11-23T10:00:00Z".to_owned()),
        ]
    };
    // Signed with the previous secret during rotation: accepted.
    let r = post(url.clone(), &headers(sign_b64(b"old-secret", &[body]), "evt-1"), body).await;
    assert_eq!(r.status(), 200);
    let f = sse.next_event().await.unwrap();
    assert_eq!(f.event.as_deref(), Some("shopify:order-created"));
    let data = f.json();
    assert_eq!(data["shopifyOrderCreated"]["orderId"], "820982911946154508", "no float rounding");
    assert_eq!(data["shopifyOrderCreated"]["total"]["amount"], "25.00");
    assert_eq!(data["tenant"], "acme");
    assert_eq!(data["source"], "webhook:shopify");
    assert!(data["occurredAt"].as_str().unwrap().starts_with("2026-11-23T10:00:00"));
    let stored = head(&server);
    // The retry of the same event: 2xx, and nothing new stored.
    let r: Value =
        post(url.clone(), &headers(sign_b64(b"new-secret", &[body]), "evt-1"), body).await.json().await.unwrap();
    assert_eq!(r["duplicates"], 1);
    assert_eq!(head(&server), stored);
    // Signature over re-serialised JSON (the sources' mistake) does not verify these bytes.
    let compact = serde_json::to_vec(&serde_json::from_slice::<Value>(body).unwrap()).unwrap();
    let r = post(url.clone(), &headers(sign_b64(b"new-secret", &[&compact]), "evt-2"), body).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_signature");
    let r = post(url.clone(), &headers("garbage!".into(), "evt-3"), body).await;
    assert_eq!(r.status(), 401);
    assert_eq!(head(&server), stored, "nothing stored for refused deliveries");
    // The newer un-prefixed header set, another topic.
    let inv = br#"{"inventory_item_id":271878346596884015,"location_id":24826418,"available":6}"#;
    let r = post(
        url.clone(),
        &[
            ("shopify-hmac-sha256", sign_b64(b"new-secret", &[inv])),
            ("shopify-topic", "inventory_levels/update".into()),
            ("shopify-shop-domain", SHOP.into()),
            ("shopify-event-id", "evt-9".into()),
        ],
        inv,
    )
    .await;
    assert_eq!(r.status(), 200);
    // A large order also raises an info alert.
    let big = br##"{"id": 820982911946154509, "name": "#1002", "currency": "GBP", "total_price": "750.00"}"##;
    let r = post(url.clone(), &headers(sign_b64(b"new-secret", &[big]), "evt-10"), big).await;
    assert_eq!(r.status(), 200);
    let page = switchyard_tests::get_json(
        &format!("{}/api/events?channels=inventory,alerts", server.http_url),
        &server.token("acme", Role::Subscribe, &[]),
    )
    .await;
    let events = page["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["shopify:stock-updated", "shopify:low-stock-alert", "alert:info"]);
    assert_eq!(events[0]["event"]["shopifyStockUpdated"]["item"], "271878346596884015");
    assert_eq!(events[0]["event"]["key"], "271878346596884015:24826418");
    assert_eq!(events[1]["event"]["shopifyLowStockAlert"]["items"][0]["onHand"], "6");
    assert_eq!(events[2]["event"]["alertInfo"]["message"], "Order #1002 on acme-uk.myshopify.com: 750.00 GBP");
    // A shop nobody mapped is refused (so Shopify retries), not silently dropped.
    let r = post(
        url,
        &[
            ("X-Shopify-Hmac-Sha256", sign_b64(b"new-secret", &[body])),
            ("X-Shopify-Topic", "orders/create".into()),
            ("X-Shopify-Shop-Domain", "stranger.myshopify.com".into()),
        ],
        body,
    )
    .await;
    assert_eq!(r.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn a_genuine_order_with_800_lines_is_accepted_not_refused_for_size() {
    let server = server().await;
    let url = format!("{}/api/webhooks/shopify", server.http_url);
    let lines: Vec<String> = (0..800)
        .map(|i| {
            format!(
                r#"{{"id": {i}, "sku": "SKU-{i:05}", "title": "A product with a long descriptive title, variant {i}", "quantity": 1, "price": "1.25", "product_id": 632910392{i}, "variant_id": 808950810{i}}}"#
            )
        })
        .collect();
    let body = format!(
        r##"{{"id": 820982911946154600, "name": "#5000", "currency": "GBP", "total_price": "1000.00", "line_items": [{}]}}"##,
        lines.join(", ")
    );
    assert!(body.len() > 120_000, "a delivery Shopify sends for a big order: {} bytes", body.len());
    let headers = vec![
        ("X-Shopify-Hmac-Sha256", sign_b64(b"new-secret", &[body.as_bytes()])),
        ("X-Shopify-Topic", "orders/create".to_owned()),
        ("X-Shopify-Shop-Domain", SHOP.to_owned()),
        ("X-Shopify-Event-Id", "evt-big".to_owned()),
    ];
    let r = post(url, &headers, body.as_bytes()).await;
    assert_eq!(r.status(), 200, "never a permanent 4xx for a valid delivery: {}", r.text().await.unwrap());
    let page = switchyard_tests::get_json(
        &format!("{}/api/events?channels=dashboard", server.http_url),
        &server.token("acme", Role::Subscribe, &[]),
    )
    .await;
    let order = &page["events"][0]["event"]["shopifyOrderCreated"];
    assert_eq!(order["lineCount"], 800);
    assert_eq!(order["lines"].as_array().unwrap().len(), 100, "the first 100 lines; the totals cover all");
    assert_eq!(order["total"]["amount"], "1000.00");
}

#[tokio::test]
async fn xero_intent_to_receive_and_events() {
    let server = server().await;
    let url = format!("{}/api/webhooks/xero", server.http_url);
    let itr = br#"{"events":[],"firstEventSequence":0,"lastEventSequence":0,"entropy":"S0m3r4Nd0mt3xt"}"#;
    // The self-generated vector from platform-specs.md.
    let r =
        post(url.clone(), &[("x-xero-signature", "8FGFLY3WTjgQR66E3X/DqyFUvnGIzARcPJHaZCLBeDQ=".into())], itr).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.bytes().await.unwrap().is_empty(), "200 with an empty body");
    let r =
        post(url.clone(), &[("x-xero-signature", "8FGFLY3WTjgQR66E3X/DqyFUvnGIzARcPJHaZCLBeDQ=".into())], b"{}").await;
    assert_eq!(r.status(), 401);
    let r = post(url.clone(), &[], itr).await;
    assert_eq!(r.status(), 401);
    let mut sse = Sse::connect(
        &format!("{}/api/sse/working-capital", server.http_url),
        Some(&server.token("acme", Role::Subscribe, &[])),
        None,
    )
    .await;
    let body = json!({"events": [{"resourceUrl": "https://api.xero.com/api.xro/2.0/Invoices/717f", "resourceId": "717f",
        "eventDateUtc": "2026-11-23T01:15:39.902", "eventType": "UPDATE", "eventCategory": "INVOICE",
        "tenantId": "c2cc9b6e", "tenantType": "ORGANISATION"}], "lastEventSequence": 1, "firstEventSequence": 1, "entropy": "x"})
    .to_string();
    let sig = sign_b64(XERO_KEY.as_bytes(), &[body.as_bytes()]);
    let r = post(url.clone(), &[("x-xero-signature", sig.clone())], body.as_bytes()).await;
    assert_eq!(r.status(), 200);
    let f = sse.next_event().await.unwrap();
    assert_eq!(f.event.as_deref(), Some("xero:data-updated"));
    assert_eq!(f.json()["xeroDataUpdated"]["resource"], "INVOICE");
    let page = switchyard_tests::get_json(
        &format!("{}/api/events?channels=dashboard", server.http_url),
        &server.token("acme", Role::Subscribe, &[]),
    )
    .await;
    let refresh = &page["events"][1];
    assert_eq!(refresh["type"], "dashboard:refresh-required", "Xero events carry no figures: refetch");
    assert_eq!(refresh["event"]["dashboardRefreshRequired"]["sections"][0], "working-capital");
    let stored = head(&server);
    let r = post(url, &[("x-xero-signature", sig)], body.as_bytes()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(head(&server), stored, "Xero's retry is stored once");
    server.stop().await;
}

#[tokio::test]
async fn standard_webhooks_with_tolerance_and_dedupe() {
    let server = server().await;
    let url = format!("{}/api/webhooks/billing", server.http_url);
    let key = secret_key(WHSEC).unwrap();
    let body =
        br#"{"type":"invoice.paid","timestamp":"2026-11-23T09:00:00Z","data":{"invoice":"inv_1","amount":"99.00"}}"#;
    let sign = |id: &str, ts: u64| {
        let ts = ts.to_string();
        vec![
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", ts.clone()),
            ("webhook-signature", format!("v1,{}", sign_b64(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]))),
        ]
    };
    let mut sse = Sse::connect(
        &format!("{}/api/sse/ops", server.http_url),
        Some(&server.token("acme", Role::Subscribe, &[])),
        None,
    )
    .await;
    let r = post(url.clone(), &sign("msg_1", now_secs()), body).await;
    assert_eq!(r.status(), 200);
    let f = sse.next_event().await.unwrap();
    assert_eq!(f.event.as_deref(), Some("billing:invoice.paid"));
    let payload: Value = serde_json::from_str(f.json()["custom"]["json"].as_str().unwrap()).unwrap();
    assert_eq!(payload["invoice"], "inv_1");
    let stored = head(&server);
    let r: Value = post(url.clone(), &sign("msg_1", now_secs()), body).await.json().await.unwrap();
    assert_eq!(r["duplicates"], 1);
    assert_eq!(head(&server), stored);
    let r = post(url.clone(), &sign("msg_2", now_secs() - 600), body).await;
    assert_eq!(r.status(), 401, "outside the 5-minute tolerance");
    let r = post(format!("{}/api/webhooks/nobody", server.http_url), &sign("msg_3", now_secs()), body).await;
    assert_eq!(r.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn unleashed_notifications_with_window_and_dedupe() {
    let server = Server::start_with(|c| {
        c.webhooks.platforms.insert("unleashed".into(), section("keys = [\"signing-key\"]\ntenant = \"acme\"\n"));
    })
    .await;
    let url = format!("{}/api/webhooks/unleashed", server.http_url);
    let body = br#"{"subscriptionId":"s-1","eventNotificationId":"n-1","eventType":"salesorder.created","data":"{\"salesOrderGuid\":\"g-9\"}"}"#;
    let signed = |ts: u64| {
        let ts = ts.to_string();
        vec![
            ("x-unleashed-timestamp", ts.clone()),
            ("x-unleashed-signature", sign_b64(b"signing-key", &[ts.as_bytes(), b".", body])),
        ]
    };
    let r: Value = post(url.clone(), &signed(now_secs()), body).await.json().await.unwrap();
    assert_eq!(r["duplicates"], 0);
    let stored = head(&server);
    let page = switchyard_tests::get_json(
        &format!("{}/api/events?channels=dashboard", server.http_url),
        &server.token("acme", Role::Subscribe, &[]),
    )
    .await;
    assert_eq!(page["events"][0]["type"], "unleashed:data-updated");
    assert_eq!(page["events"][0]["event"]["unleashedDataUpdated"]["resourceId"], "g-9");
    let r: Value = post(url.clone(), &signed(now_secs()), body).await.json().await.unwrap();
    assert_eq!(r["duplicates"], 1);
    assert_eq!(head(&server), stored);
    assert_eq!(post(url.clone(), &signed(now_secs() - 900), body).await.status(), 401);
    assert_eq!(post(url, &[], body).await.status(), 401);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_webhook_send_delivers_a_signed_sample_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("s.toml");
    std::fs::write(
        &config,
        format!("[webhooks.shopify]\nsecrets = [\"cli-secret\"]\n[webhooks.shopify.shops]\n\"{SHOP}\" = \"acme\"\n"),
    )
    .unwrap();
    let p = switchyard_tests::Process::serve(dir.path(), &["--config", config.to_str().unwrap()]);
    let send = |secret: &str| {
        std::process::Command::new(switchyard_tests::binary())
            .args([
                "webhook",
                "send",
                "shopify",
                "orders/create",
                "--secret",
                secret,
                "--shop",
                SHOP,
                "--url",
                &p.http_url,
            ])
            .output()
            .unwrap()
    };
    let out = send("cli-secret");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("200 "));
    let page = switchyard_tests::get_json(
        &format!("{}/api/events?channels=dashboard", p.http_url),
        &p.token("acme", Role::Subscribe),
    )
    .await;
    assert_eq!(page["events"][0]["type"], "shopify:order-created");
    assert_eq!(page["events"][0]["event"]["shopifyOrderCreated"]["test"], true, "samples say they are samples");
    let out = send("wrong-secret");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("401 "));
}

async fn amazon_server() -> (Server, std::sync::Arc<sns::FakeAws>) {
    let aws = std::sync::Arc::new(sns::FakeAws::default());
    let server = Server::start_wired(
        |c| {
            c.webhooks.platforms.insert(
                "amazon".into(),
                section(&format!(
                    "topics = [\"{}\"]\nlow_stock_threshold = 10\n[sellers]\nA3TH9S8BH6GOGM = \"acme\"\n",
                    sns::TOPIC
                )),
            );
        },
        Some(aws.clone()),
    )
    .await;
    (server, aws)
}

/// An ORDER_CHANGE notification shaped like the example in amzn/selling-partner-api-models
/// (schemas/notifications/orderChangeNotification.json).
fn order_change(notification_id: &str) -> String {
    json!({"NotificationVersion": "1.0", "NotificationType": "ORDER_CHANGE", "PayloadVersion": "1.0",
        "EventTime": "2026-11-23T09:59:00.000Z",
        "Payload": {"OrderChangeNotification": {"NotificationLevel": "OrderLevel", "SellerId": "A3TH9S8BH6GOGM",
            "AmazonOrderId": "903-8868176-2219830", "OrderChangeType": "OrderStatusChange",
            "Summary": {"MarketplaceId": "A1F83G8C2ARO7P", "OrderStatus": "Pending",
                "OrderItems": [{"SellerSKU": "WIDGET-1", "Quantity": 3}]}}},
        "NotificationMetadata": {"NotificationId": notification_id}})
    .to_string()
}

async fn post_sns(server: &Server, message: &Value) -> reqwest::Response {
    let url = format!("{}/api/webhooks/amazon", server.http_url);
    post(
        url,
        &[("x-amz-sns-message-type", message["Type"].as_str().unwrap().to_owned())],
        message.to_string().as_bytes(),
    )
    .await
}

#[tokio::test]
async fn amazon_sns_both_signature_versions_unwrap_sp_api_notifications_once() {
    let (server, aws) = amazon_server().await;
    let mut sse = Sse::connect(
        &format!("{}/api/sse/dashboard", server.http_url),
        Some(&server.token("acme", Role::Subscribe, &[])),
        None,
    )
    .await;
    let v1 = sns::signed("Notification", "msg-1", &order_change("n-1"), "1", sns::CERT_URL);
    let r = post_sns(&server, &v1).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let f = sse.next_event().await.unwrap();
    assert_eq!(f.event.as_deref(), Some("amazon:order-created"));
    let data = f.json();
    assert_eq!(data["amazonOrderCreated"]["orderId"], "903-8868176-2219830");
    assert_eq!(data["amazonOrderCreated"]["lines"][0]["quantity"], 3);
    assert_eq!((data["tenant"].as_str(), data["source"].as_str()), (Some("acme"), Some("webhook:amazon")));

    // SignatureVersion 2 (SHA256), another notification.
    let v2 = sns::signed("Notification", "msg-2", &order_change("n-2"), "2", sns::CERT_URL);
    assert_eq!(post_sns(&server, &v2).await.status(), 200);
    assert_eq!(sse.next_event().await.unwrap().event.as_deref(), Some("amazon:order-created"));
    assert_eq!(aws.requested(), vec![sns::CERT_URL.to_owned()], "the certificate is fetched once, then cached");

    // SNS retries with the same message: stored once.
    let stored = head(&server);
    let r: Value = post_sns(&server, &v1).await.json().await.unwrap();
    assert_eq!(r["duplicates"], 1);
    assert_eq!(head(&server), stored);

    // Tampered message, unsupported version, foreign certificate hosts: refused, nothing fetched.
    let mut tampered = v2.clone();
    tampered["Message"] = json!(order_change("n-3"));
    assert_eq!(post_sns(&server, &tampered).await.status(), 401);
    let mut v3 = v2.clone();
    v3["SignatureVersion"] = json!("3");
    assert_eq!(post_sns(&server, &v3).await.status(), 401);
    for url in [
        "https://sns.eu-west-1.amazonaws.com.evil.example/SimpleNotificationService-test.pem",
        "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem",
        "https://s3.amazonaws.com/bucket/SimpleNotificationService-test.pem",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.txt",
    ] {
        let m = sns::signed("Notification", "msg-4", &order_change("n-4"), "2", url);
        let r = post_sns(&server, &m).await;
        assert_eq!(r.status(), 401, "{url}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_signature");
    }
    assert_eq!(aws.requested().len(), 1, "no refused URL was ever fetched");
    assert_eq!(head(&server), stored);
    // A genuine message replayed two hours later is not a delivery, and costs no fetch either.
    let old = sns::sign(switchyard_bridge::webhooks::sns::Message {
        kind: "Notification".into(),
        message_id: "msg-old".into(),
        topic_arn: sns::TOPIC.into(),
        message: order_change("n-old"),
        timestamp: "2026-01-01T00:00:00.000Z".into(),
        signature_version: "2".into(),
        signing_cert_url: "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-other.pem".into(),
        ..Default::default()
    });
    let r = post_sns(&server, &old).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("not within the last hour"));
    assert_eq!(aws.requested().len(), 1, "nothing fetched for a stale message");
    assert_eq!(head(&server), stored);

    // Unknown topic, unmapped seller, not JSON, unknown type: clear errors, never a 500.
    let mut other_topic = v2.clone();
    other_topic["TopicArn"] = json!("arn:aws:sns:eu-west-1:999999999999:someone-else");
    assert_eq!(post_sns(&server, &other_topic).await.status(), 404);
    let stranger = order_change("n-5").replace("A3TH9S8BH6GOGM", "A0STRANGER");
    let r = post_sns(&server, &sns::signed("Notification", "msg-5", &stranger, "2", sns::CERT_URL)).await;
    assert_eq!(r.status(), 404);
    let r = post(format!("{}/api/webhooks/amazon", server.http_url), &[], b"{not json").await;
    assert_eq!(r.status(), 400);
    let r = post_sns(&server, &sns::signed("Notification", "msg-6", "plain text", "2", sns::CERT_URL)).await;
    assert_eq!(r.status(), 200, "signed but not an SP-API notification: accepted so SNS stops retrying");
    assert_eq!(head(&server), stored);
    server.stop().await;
}

#[tokio::test]
async fn amazon_inventory_change_raises_refresh_and_low_stock() {
    let (server, _aws) = amazon_server().await;
    let message = json!({"notificationVersion": "1.0", "notificationType": "FBA_INVENTORY_AVAILABILITY_CHANGES",
        "eventTime": "2026-11-23T09:00:00Z",
        "payload": {"SellerId": "A3TH9S8BH6GOGM", "FNSKU": "X001ABCDEF", "ASIN": "B00001ABCD", "SKU": "WIDGET-1",
            "FulfillmentInventoryByMarketplace": [{"MarketplaceId": "A1F83G8C2ARO7P", "ItemName": "Widget",
                "FulfillmentInventory": {"Fulfillable": 4}}]},
        "notificationMetadata": {"notificationId": "n-inv-1"}});
    // Through EventBridge: the notification is the event's `detail`.
    let envelope =
        json!({"version": "0", "id": "eb-1", "detail-type": "FBA_INVENTORY_AVAILABILITY_CHANGES", "detail": message});
    let r = post_sns(&server, &sns::signed("Notification", "msg-inv", &envelope.to_string(), "2", sns::CERT_URL)).await;
    assert_eq!(r.status(), 200);
    let page = switchyard_tests::get_json(
        &format!("{}/api/events?channels=inventory,alerts,dashboard", server.http_url),
        &server.token("acme", Role::Subscribe, &[]),
    )
    .await;
    let types: Vec<&str> = page["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["amazon:data-updated", "dashboard:refresh-required", "amazon:low-stock-alert"]);
    let alert = &page["events"][2]["event"]["amazonLowStockAlert"];
    assert_eq!(
        (alert["items"][0]["sku"].as_str(), alert["items"][0]["onHand"].as_str()),
        (Some("WIDGET-1"), Some("4"))
    );
    server.stop().await;
}

#[tokio::test]
async fn sns_subscription_confirmed_only_for_configured_topics() {
    let (server, aws) = amazon_server().await;
    let confirm = sns::signed("SubscriptionConfirmation", "sub-1", "You have chosen to subscribe…", "1", sns::CERT_URL);
    let r = post_sns(&server, &confirm).await;
    assert_eq!(r.status(), 200);
    assert_eq!(aws.requested()[1], confirm["SubscribeURL"].as_str().unwrap(), "confirmed by GET on SubscribeURL");

    // A correctly signed confirmation whose SubscribeURL points elsewhere: refused, not fetched.
    let evil = sns::sign(switchyard_bridge::webhooks::sns::Message {
        kind: "SubscriptionConfirmation".into(),
        message_id: "sub-2".into(),
        topic_arn: sns::TOPIC.into(),
        message: "x".into(),
        timestamp: sns::now_rfc3339(),
        token: Some("t".into()),
        signature_version: "2".into(),
        signing_cert_url: sns::CERT_URL.into(),
        subscribe_url: Some("https://169.254.169.254/latest/meta-data/".into()),
        ..Default::default()
    });
    let r = post_sns(&server, &evil).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("SubscribeURL"));
    let mut other = confirm.clone();
    other["TopicArn"] = json!("arn:aws:sns:eu-west-1:999999999999:someone-else");
    assert_eq!(post_sns(&server, &other).await.status(), 404);
    assert_eq!(aws.requested().len(), 2, "nothing fetched for refused confirmations");

    // AWS unreachable: 502, so SNS retries.
    aws.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let again = sns::signed("SubscriptionConfirmation", "sub-3", "x", "2", sns::CERT_URL);
    assert_eq!(post_sns(&server, &again).await.status(), 502);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acked_delivery_survives_sigkill_and_its_retry_is_still_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("s.toml");
    std::fs::write(
        &config,
        format!("[webhooks.shopify]\nsecrets = [\"s\"]\n[webhooks.shopify.shops]\n\"{SHOP}\" = \"acme\"\n"),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let body = br##"{"id": 820982911946154508, "name": "#1001", "currency": "GBP", "total_price": "25.00"}"##;
    let headers = vec![
        ("X-Shopify-Hmac-Sha256", sign_b64(b"s", &[body])),
        ("X-Shopify-Topic", "orders/create".to_owned()),
        ("X-Shopify-Shop-Domain", SHOP.to_owned()),
        ("X-Shopify-Event-Id", "evt-crash".to_owned()),
    ];
    let p = switchyard_tests::Process::serve(dir.path(), &args);
    let r: Value = post(format!("{}/api/webhooks/shopify", p.http_url), &headers, body).await.json().await.unwrap();
    let id = r["ids"][0].as_str().unwrap().to_owned();
    p.kill();
    let p = switchyard_tests::Process::serve(dir.path(), &args);
    let page = switchyard_tests::get_json(
        &format!("{}/api/events?channels=dashboard", p.http_url),
        &p.token("acme", Role::Subscribe),
    )
    .await;
    assert_eq!(page["events"][0]["id"].as_str(), Some(id.as_str()), "acked, so durable");
    // Shopify retries after the crash: the dedupe window was persisted too.
    let r: Value = post(format!("{}/api/webhooks/shopify", p.http_url), &headers, body).await.json().await.unwrap();
    assert_eq!((r["ids"][0].as_str(), r["duplicates"].as_u64()), (Some(id.as_str()), Some(1)));
    p.kill();
}

#[tokio::test]
async fn oversized_and_unknown_deliveries_get_clear_answers() {
    let server = server().await;
    let url = format!("{}/api/webhooks/shopify", server.http_url);
    let huge = vec![b' '; 1024 * 1024 + 1];
    let r = post(url.clone(), &[("X-Shopify-Hmac-Sha256", sign_b64(b"new-secret", &[&huge]))], &huge).await;
    assert_eq!(r.status(), 413);
    let err: Value = r.json().await.unwrap();
    assert_eq!((err["error"]["code"].as_str(), err["error"]["field"].as_str()), (Some("body_too_large"), Some("body")));
    // A topic we have no mapping for: accepted (so Shopify stops retrying) and stored as data-updated.
    let body = br#"{"id": 42, "title": "Widget"}"#;
    let headers = vec![
        ("X-Shopify-Hmac-Sha256", sign_b64(b"new-secret", &[body])),
        ("X-Shopify-Topic", "products/update".to_owned()),
        ("X-Shopify-Shop-Domain", SHOP.to_owned()),
        ("X-Shopify-Webhook-Id", "wh-1".to_owned()),
    ];
    assert_eq!(post(url.clone(), &headers, body).await.status(), 200);
    // Correctly signed but not JSON: 400 naming the body, nothing stored.
    let stored = head(&server);
    let bad = b"{not json";
    let mut h = headers.clone();
    h[0].1 = sign_b64(b"new-secret", &[bad]);
    let r = post(url, &h, bad).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["field"], "body");
    assert_eq!(head(&server), stored);
    server.stop().await;
}

#[tokio::test]
async fn a_shop_with_its_own_secret_is_verified_with_that_secret_only() {
    let server = server().await;
    let url = format!("{}/api/webhooks/shopify", server.http_url);
    let body = br##"{"id": 7, "name": "#7", "currency": "GBP", "total_price": "5.00", "line_items": []}"##;
    let send = |shop: &str, secret: &[u8], event: &str| {
        let headers = vec![
            ("X-Shopify-Hmac-Sha256", sign_b64(secret, &[body])),
            ("X-Shopify-Topic", "orders/create".to_owned()),
            ("X-Shopify-Shop-Domain", shop.to_owned()),
            ("X-Shopify-Event-Id", event.to_owned()),
        ];
        let url = url.clone();
        async move { post(url, &headers, body).await }
    };
    assert_eq!(send(OWN_SHOP, b"globex-app-secret", "e1").await.status(), 200);
    assert_eq!(send(OWN_SHOP, b"new-secret", "e2").await.status(), 401, "the shared app's secret cannot sign for it");
    assert_eq!(send(SHOP, b"globex-app-secret", "e3").await.status(), 401, "nor its secret for another shop");
    assert_eq!(send(SHOP, b"new-secret", "e4").await.status(), 200);
    let page = switchyard_tests::get_json(
        &format!("{}/api/events?channels=dashboard", server.http_url),
        &server.token("globex", Role::Subscribe, &[]),
    )
    .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1, "the shop's order reached its tenant: {page}");
    server.stop().await;
}

/// The shop header is not signed: a body signed with the app's shared secret and delivered for
/// one shop, replayed under another shop's header (or with a fresh event id), moves nowhere and
/// is stored nowhere twice.
#[tokio::test]
async fn a_signed_shopify_delivery_cannot_be_moved_to_another_shop_or_replayed_as_new() {
    let server = Server::start_with(|c| {
        c.webhooks.platforms.insert(
            "shopify".into(),
            section(
                "secrets = [\"app-secret\"]\n[shops]\n\"a.myshopify.com\" = \"acme\"\n\"b.myshopify.com\" = \"beta\"\n",
            ),
        );
    })
    .await;
    let url = format!("{}/api/webhooks/shopify", server.http_url);
    let body = br##"{"id": 99, "name": "#99", "currency": "GBP", "total_price": "5.00", "line_items": []}"##;
    let send = |shop: &str, event: &str, topic: &str| {
        let headers = vec![
            ("X-Shopify-Hmac-Sha256", sign_b64(b"app-secret", &[body])),
            ("X-Shopify-Topic", topic.to_owned()),
            ("X-Shopify-Shop-Domain", shop.to_owned()),
            ("X-Shopify-Event-Id", event.to_owned()),
        ];
        let url = url.clone();
        async move { post(url, &headers, body).await.status() }
    };
    assert_eq!(send("a.myshopify.com", "e1", "orders/updated").await, 200);
    assert_eq!(send("b.myshopify.com", "e1", "orders/updated").await, 401, "not moved to beta");
    let again = send("a.myshopify.com", "e-fresh", "orders/updated").await;
    assert_eq!(again, 200, "a replay with a fresh event id is answered...");
    let count = |tenant: &'static str| {
        let (url, token) = (format!("{}/api/events", server.http_url), server.token(tenant, Role::Subscribe, &[]));
        async move { switchyard_tests::get_json(&url, &token).await["events"].as_array().unwrap().len() }
    };
    assert_eq!(count("acme").await, 1, "...as the duplicate it is");
    assert_eq!(count("beta").await, 0);
    server.stop().await;
}
