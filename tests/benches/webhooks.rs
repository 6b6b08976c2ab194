//! Verified webhook deliveries per second, per platform, over real HTTP on loopback, each one
//! durable (fsync = always, the default) before its 2xx.
//!
//! `cargo bench -p switchyard-tests --bench webhooks` prints deliveries/s and latency per platform.
//! Every delivery is distinct (its own event id), so each one is verified, translated and
//! appended; requests are signed before the clock starts, so the client's HMAC/RSA cost is not
//! counted. Bounded: a fixed number of deliveries, 127.0.0.1 only; client and server share cores.
//! `BENCH_WEBHOOKS` (default 40,000; SNS uses a quarter), `BENCH_WEBHOOK_CLIENTS` (default 64),
//! `BENCH_ONLY=shopify|xero|unleashed|standard|amazon`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use switchyard::auth::now_secs;
use switchyard_bridge::{
    config::StandardHook,
    webhooks::{signature::sign_b64, standard::secret_key},
};
use switchyard_tests::{Server, http, section, sns};

const SHOP: &str = "acme-uk.myshopify.com";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn arg(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One prepared delivery: headers and body.
type Delivery = (Vec<(&'static str, String)>, Vec<u8>);
/// A platform: name, route, how one delivery is made, how many are sent.
type Platform = (&'static str, &'static str, fn(u64) -> Delivery, u64);

fn shopify(i: u64) -> Delivery {
    let body = format!(
        r##"{{"id": {}, "name": "#{i}", "currency": "GBP", "total_price": "25.00", "line_items": [{{"sku": "A-1", "quantity": 1, "price": "25.00"}}]}}"##,
        820982911946154508 + i
    )
    .into_bytes();
    let headers = vec![
        ("X-Shopify-Hmac-Sha256", sign_b64(b"bench-secret", &[&body])),
        ("X-Shopify-Topic", "orders/create".into()),
        ("X-Shopify-Shop-Domain", SHOP.into()),
        ("X-Shopify-Event-Id", format!("evt-{i}")),
    ];
    (headers, body)
}

fn xero(i: u64) -> Delivery {
    let body = json!({"events": [{"resourceUrl": format!("https://api.xero.com/api.xro/2.0/Invoices/{i}"),
        "resourceId": i.to_string(), "eventDateUtc": "2026-11-23T01:15:39.902", "eventType": "UPDATE",
        "eventCategory": "INVOICE", "tenantId": "c2cc9b6e", "tenantType": "ORGANISATION"}],
        "lastEventSequence": 1, "firstEventSequence": 1, "entropy": "x"})
    .to_string()
    .into_bytes();
    (vec![("x-xero-signature", sign_b64(b"XERO_BENCH_KEY", &[&body]))], body)
}

fn unleashed(i: u64) -> Delivery {
    let body = format!(
        r#"{{"subscriptionId":"s-1","eventNotificationId":"n-{i}","eventType":"salesorder.created","data":{{"salesOrderGuid":"g-{i}"}}}}"#
    )
    .into_bytes();
    let ts = now_secs().to_string();
    let sig = sign_b64(b"unleashed-key", &[ts.as_bytes(), b".", &body]);
    (vec![("x-unleashed-timestamp", ts), ("x-unleashed-signature", sig)], body)
}

fn standard(i: u64) -> Delivery {
    let body = format!(r#"{{"type":"invoice.paid","data":{{"invoice":"inv_{i}","amount":"99.00"}}}}"#).into_bytes();
    let (id, ts) = (format!("msg_{i}"), now_secs().to_string());
    let key = secret_key(WHSEC).expect("secret");
    let sig = format!("v1,{}", sign_b64(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", &body]));
    (vec![("webhook-id", id), ("webhook-timestamp", ts), ("webhook-signature", sig)], body)
}

fn amazon(i: u64) -> Delivery {
    let notification = json!({"NotificationType": "ORDER_CHANGE", "EventTime": "2026-11-23T09:59:00.000Z",
        "Payload": {"OrderChangeNotification": {"SellerId": "A3TH9S8BH6GOGM", "AmazonOrderId": format!("903-{i}"),
            "OrderChangeType": "OrderStatusChange", "Summary": {"OrderStatus": "Pending",
                "OrderItems": [{"SellerSKU": "W-1", "Quantity": 1}]}}},
        "NotificationMetadata": {"NotificationId": format!("n-{i}")}});
    let m = sns::signed("Notification", &format!("m-{i}"), &notification.to_string(), "2", sns::CERT_URL);
    (vec![("x-amz-sns-message-type", "Notification".into())], m.to_string().into_bytes())
}

async fn run(name: &str, path: &str, server: &Server, deliveries: Vec<Delivery>, clients: usize) {
    let total = deliveries.len();
    let url = Arc::new(format!("{}{path}", server.http_url));
    let mut queues: Vec<Vec<Delivery>> = (0..clients).map(|_| Vec::new()).collect();
    for (i, d) in deliveries.into_iter().enumerate() {
        queues[i % clients].push(d);
    }
    let head_before = server.running.bus.log().stats().head.get();
    let start = Instant::now();
    let tasks: Vec<_> = queues
        .into_iter()
        .map(|queue| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = http();
                let mut latencies = Vec::with_capacity(queue.len());
                for (headers, body) in queue {
                    let mut req = client.post(url.as_str()).body(body);
                    for (k, v) in headers {
                        req = req.header(k, v);
                    }
                    let t = Instant::now();
                    let r = req.send().await.expect("request");
                    assert!(r.status().is_success(), "{}: {}", r.status(), r.text().await.unwrap_or_default());
                    r.bytes().await.expect("body");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::with_capacity(total);
    for t in tasks {
        latencies.extend(t.await.expect("client"));
    }
    let elapsed = start.elapsed();
    let stored = server.running.bus.log().stats().head.get() - head_before;
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "{name:<10} {total} deliveries ({stored} events stored) in {:.2} s: {:.0} deliveries/s, p50 {:.1} ms, p99 {:.1} ms ({clients} clients)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
}

/// Signs `n` deliveries on every core (RSA signing for SNS is slow; HMAC is not).
async fn prepare(n: u64, make: fn(u64) -> Delivery) -> Vec<Delivery> {
    let cores = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(2);
    let chunk = n.div_ceil(cores);
    let parts: Vec<_> = (0..cores)
        .map(|c| {
            tokio::task::spawn_blocking(move || (c * chunk..((c + 1) * chunk).min(n)).map(make).collect::<Vec<_>>())
        })
        .collect();
    let mut out = Vec::with_capacity(n as usize);
    for p in parts {
        out.extend(p.await.expect("signer"));
    }
    out
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        println!(
            "# switchyard webhook bench ({} cores, fsync=always)",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );
        let n = arg("BENCH_WEBHOOKS", 40_000);
        let clients = arg("BENCH_WEBHOOK_CLIENTS", 64) as usize;
        let only = std::env::var("BENCH_ONLY").unwrap_or_default();
        let aws = Arc::new(sns::FakeAws::default());
        let server = Server::start_wired(
            |c| {
                c.bus.custom_channels = vec!["ops".into()];
                let mut hooks = |name: &str, text: String| c.webhooks.platforms.insert(name.into(), section(&text));
                hooks("shopify", format!("secrets = [\"bench-secret\"]\n[shops]\n\"{SHOP}\" = \"acme\"\n"));
                hooks("xero", "keys = [\"XERO_BENCH_KEY\"]\n[tenants]\nc2cc9b6e = \"acme\"\n".into());
                hooks("unleashed", "keys = [\"unleashed-key\"]\ntenant = \"acme\"\n".into());
                hooks("amazon", format!("topics = [\"{}\"]\n[sellers]\nA3TH9S8BH6GOGM = \"acme\"\n", sns::TOPIC));
                c.webhooks.standard.insert(
                    "billing".into(),
                    StandardHook { secrets: vec![WHSEC.into()], tenant: "acme".into(), channels: vec!["ops".into()] },
                );
            },
            Some(aws),
        )
        .await;
        let platforms: [Platform; 5] = [
            ("shopify", "/api/webhooks/shopify", shopify, n),
            ("xero", "/api/webhooks/xero", xero, n),
            ("unleashed", "/api/webhooks/unleashed", unleashed, n),
            ("standard", "/api/webhooks/billing", standard, n),
            ("amazon", "/api/webhooks/amazon", amazon, n / 4),
        ];
        for (name, path, make, count) in platforms {
            if only.is_empty() || only == name {
                let deliveries = prepare(count, make).await;
                run(name, path, &server, deliveries, clients).await;
            }
        }
        server.stop().await;
    });
}
