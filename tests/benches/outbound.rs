//! Outbound delivery: what it sustains and what it costs, over real HTTP on loopback.
//!
//! `cargo bench -p switchyard-tests --bench outbound` prints, in one run:
//! 1. deliveries/s to one fast local receiver of `BENCH_OUTBOUND_EVENTS` orders (default
//!    40,000), live (published while the endpoint waits: timed from the first publish) and
//!    replaying history (stored first, then an endpoint created with `start = 0`);
//! 2. the same to 100 endpoints, `BENCH_OUTBOUND_EACH` (2,000) each;
//! 3. durable publish throughput with no endpoint and with 100 idle ones (endpoints that
//!    select a type nobody publishes), three runs each, the median compared;
//! 4. delivery latency at 1,000 events/s for 10 s: receiver arrival minus the event's
//!    `published_at` (stamped when the bus accepts it, just before commit), p50/p99/max.
//!
//! The receiver is an axum server in this process answering 204 at once; every request is a
//! signed POST with a JSON body, and the receiver parses each body (for its id and
//! timestamp). Receiver, server and publisher share the machine's cores; fsync is the
//! default (always) for the log and for delivery progress. Bounded: fixed counts, 127.0.0.1.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{body::Bytes, extract::State, http::StatusCode};
use serde_json::{Value, json};
use switchyard::auth::Role;
use switchyard_tests::{Server, http, publish_stream_rate};

fn arg(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Default)]
struct Received {
    count: AtomicU64,
    ids: Mutex<HashSet<(String, String)>>,
    /// Receipt minus `published_at`, ms, when measuring latency.
    latencies: Mutex<Option<Vec<f64>>>,
}

async fn hook(
    State(r): State<Arc<Received>>,
    axum::extract::Path(path): axum::extract::Path<String>,
    body: Bytes,
) -> StatusCode {
    let v: Value = serde_json::from_slice(&body).expect("a JSON body");
    let id = v["id"].as_str().expect("an id").to_owned();
    if let Some(l) = r.latencies.lock().unwrap().as_mut() {
        let ts: switchyard::proto::Timestamp = serde_json::from_value(v["timestamp"].clone()).expect("a timestamp");
        let published = ts.seconds as f64 * 1000.0 + f64::from(ts.nanos) / 1e6;
        l.push(switchyard::log::now_ms() as f64 - published);
    }
    r.ids.lock().unwrap().insert((path, id));
    r.count.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

async fn receiver() -> (String, Arc<Received>) {
    let r = Arc::new(Received::default());
    let app = axum::Router::new().route("/h/{path}", axum::routing::post(hook)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/h", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, r)
}

async fn server() -> Server {
    Server::start_with(|c| {
        c.outbound.allow_http_hosts = vec!["127.0.0.1".into()];
        c.outbound.allow_private_hosts = vec!["127.0.0.1".into()];
        c.outbound.max_endpoints_per_tenant = 1000;
        if let Ok(n) = std::env::var("BENCH_IN_FLIGHT_TOTAL") {
            c.outbound.max_in_flight_total = n.parse().expect("a number");
        }
    })
    .await
}

async fn endpoint(server: &Server, spec: Value) {
    let token = server.token("bench", Role::Admin, &[]);
    let r = http()
        .post(format!("{}/api/outbound/endpoints", server.http_url))
        .bearer_auth(token)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// Waits until `n` distinct (endpoint, event) pairs arrived.
async fn wait_count(r: &Received, n: u64, limit: Duration) -> Duration {
    let start = Instant::now();
    let distinct = || r.ids.lock().unwrap().len() as u64;
    while distinct() < n {
        assert!(start.elapsed() < limit, "only {} of {n} delivered in {limit:?}", distinct());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

/// Deliveries/s (distinct) and how many arrived twice: `live`, endpoints first and the events
/// published while they wait; else the events first and the endpoints replaying them (`start = 0`).
async fn throughput(endpoints: u64, each: u64, live: bool) -> (f64, u64) {
    let server = server().await;
    let (url, received) = receiver().await;
    let create = async || {
        for i in 0..endpoints {
            endpoint(&server, json!({ "url": format!("{url}/{i}"), "start": "0", "types": ["shopify:order-created"] }))
                .await;
        }
    };
    if live {
        create().await;
    } else {
        publish_stream_rate(&server, each, 8).await;
    }
    let start = Instant::now();
    if live {
        publish_stream_rate(&server, each, 8).await;
    } else {
        create().await;
    }
    wait_count(&received, endpoints * each, Duration::from_secs(600)).await;
    let rate = (endpoints * each) as f64 / start.elapsed().as_secs_f64();
    let twice = received.count.load(Ordering::Relaxed) - endpoints * each;
    server.stop().await;
    (rate, twice)
}

async fn publish_cost(idle: u64, total: u64) -> f64 {
    let server = server().await;
    for i in 0..idle {
        endpoint(&server, json!({ "url": format!("http://127.0.0.1:9/{i}"), "types": ["unleashed:quality-alert"] }))
            .await;
    }
    let rate = publish_stream_rate(&server, total, 8).await;
    server.stop().await;
    rate
}

async fn latency(per_sec: u64, secs: u64) -> Vec<f64> {
    let server = server().await;
    let (url, received) = receiver().await;
    endpoint(&server, json!({ "url": format!("{url}/0") })).await;
    *received.latencies.lock().unwrap() = Some(Vec::new());
    let client = server.grpc("bench", Role::Publish).await;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_sec));
    let mut sent = Vec::new();
    for i in 0..per_sec * secs {
        tick.tick().await;
        let mut c = client.clone();
        sent.push(tokio::spawn(async move {
            let event = switchyard_tests::events::order(&format!("l{i}"));
            c.publish(switchyard::proto::v1::PublishRequest { event: Some(event) }).await.expect("published");
        }));
    }
    for s in sent {
        s.await.unwrap();
    }
    wait_count(&received, per_sec * secs, Duration::from_secs(60)).await;
    let mut l = received.latencies.lock().unwrap().take().unwrap();
    l.sort_by(f64::total_cmp);
    server.stop().await;
    l
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let events = arg("BENCH_OUTBOUND_EVENTS", 40_000);
    let each = arg("BENCH_OUTBOUND_EACH", 2_000);
    // `BENCH_ONLY=many` runs only 100 endpoints live (for profiling), `many_replay` replaying.
    if let Ok(only @ ("many" | "many_replay")) = std::env::var("BENCH_ONLY").as_deref() {
        let live = only == "many";
        let (many, twice) = throughput(100, each, live).await;
        let how = if live { "live" } else { "replaying history" };
        println!("100 endpoints, {how}: {} deliveries, {many:.0}/s in all ({twice} sent twice)", 100 * each);
        return;
    }
    for live in [true, false] {
        let how = if live { "live" } else { "replaying history" };
        let (one, twice) = throughput(1, events, live).await;
        println!("one endpoint, {how}: {events} deliveries, {one:.0}/s ({twice} sent twice)");
        let (many, twice) = throughput(100, each, live).await;
        println!("100 endpoints, {how}: {} deliveries, {many:.0}/s in all ({twice} sent twice)", 100 * each);
    }
    let total = arg("BENCH_OUTBOUND_PUBLISH", 100_000);
    let (mut bare, mut idle) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        bare.push(publish_cost(0, total).await);
        idle.push(publish_cost(100, total).await);
    }
    let (b, i) = (median(bare.clone()), median(idle.clone()));
    println!(
        "publish, no endpoint: {bare:.0?} events/s; with 100 idle endpoints: {idle:.0?}; medians {b:.0} vs {i:.0}: cost {:.1} %",
        (1.0 - i / b) * 100.0
    );
    let l = latency(1000, 10).await;
    let q = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)];
    println!(
        "latency at 1,000/s for 10 s ({} deliveries): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        l.len(),
        q(0.5),
        q(0.99),
        l[l.len() - 1]
    );
}
