//! Webhook ingress over real HTTP: verified on raw bytes, mapped to catalog events,
//! durable before 2xx, retries stored once.

use std::collections::BTreeMap;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use switchyard::auth::{Role, now_secs};
use switchyard_bridge::{
    config::{ShopifyHooks, StandardHook, XeroHooks},
    webhooks::{signature::sign_b64, standard::secret_key},
};
use switchyard_tests::{Server, Sse};

const SHOP: &str = "acme-uk.myshopify.com";
const XERO_KEY: &str = "XERO_TEST_WEBHOOK_KEY_do_not_use";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn server() -> Server {
    Server::start_with(|c| {
        c.bus.custom_channels = vec!["ops".into()];
        c.webhooks.shopify = ShopifyHooks {
            secrets: vec!["old-secret".into(), "new-secret".into()],
            shops: BTreeMap::from([(SHOP.into(), "acme".into())]),
        };
        c.webhooks.xero =
            XeroHooks { keys: vec![XERO_KEY.into()], tenants: BTreeMap::from([("c2cc9b6e".into(), "acme".into())]) };
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
    reqwest::Client::new().post(url).headers(h).body(body.to_vec()).send().await.unwrap()
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
    let f = sse.next_event().await.unwrap();
    assert_eq!(f.event.as_deref(), Some("shopify:data-updated"));
    assert_eq!(f.json()["shopifyDataUpdated"]["resourceId"], "271878346596884015:24826418");
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
        c.webhooks.unleashed =
            switchyard_bridge::config::UnleashedHooks { keys: vec!["signing-key".into()], tenant: "acme".into() };
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
