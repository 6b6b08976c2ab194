//! The state view measured: reading it, starting a stream from it, and what keeping it costs.
//!
//! `cargo bench -p switchyard-tests --bench state` prints:
//! - `state_read`: 10,000 keys of state (one snapshot each, after 2 updates per key and as many
//!   facts), read whole (every page, 10,000 keys a page) over HTTP (`GET /api/state`, JSON) and
//!   gRPC (`State`), embedded and, when a nats-server is on PATH, JetStream; p50/max over 10 reads;
//! - `concurrent_reads`: 32 readers at once walking the state in default 1,000-key pages, 3 walks
//!   each: p50/p99/max of one page request;
//! - `state_then_live`: `GET /api/sse/dashboard?start=state` on the same 10,000 keys: time to the
//!   response head, to the first state frame, and to `stream:state` (all 10,000 delivered);
//! - `publish_cost`: durable `PublishStream` throughput of custom events that are snapshots
//!   (each one written to the state view in the same transaction) against identical events
//!   that are facts (no state write); alternating runs.
//!
//! Env: `BENCH_KEYS` (10,000), `BENCH_EVENTS` (200,000 for publish_cost), `BENCH_ONLY`.
//! Bounded counts, 127.0.0.1 only; client and server share the machine's cores.

use std::time::{Duration, Instant};

use futures::StreamExt;
use switchyard::{
    auth::Role,
    proto::v1::{CustomEvent, Delivery, Event, PublishRequest, StateRequest, event::Payload},
};
use switchyard_tests::{Server, events, nats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn arg(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn p50_max(mut v: Vec<Duration>) -> String {
    v.sort();
    format!("p50 {:.1} ms, max {:.1} ms", ms(v[v.len() / 2]), ms(*v.last().unwrap()))
}

/// Publishes `keys` keys of Shopify totals, each updated twice, with a fact between updates.
async fn fill(server: &Server, keys: u64) {
    let mut c = server.grpc("bench", Role::Publish).await;
    let reqs = (0..2 * keys).flat_map(|i| {
        [
            PublishRequest { event: Some(events::totals(&format!("store-{}", i % keys), i as u32)) },
            PublishRequest { event: Some(events::order(&i.to_string())) },
        ]
    });
    let mut acks =
        c.publish_stream(futures::stream::iter(reqs.collect::<Vec<_>>())).await.expect("stream").into_inner();
    while acks.next().await.is_some() {}
}

/// Every page of `GET /api/state?channels=dashboard` (at `limit` keys a page): the keys read,
/// the bytes, and each page's time.
async fn walk(server: &Server, token: &str, limit: usize) -> (usize, usize, Vec<Duration>) {
    let http = switchyard_tests::http();
    let (mut keys, mut bytes, mut times, mut cursor) = (0, 0, Vec::new(), String::new());
    loop {
        let url = format!("{}/api/state?channels=dashboard&limit={limit}&cursor={cursor}", server.http_url);
        let t = Instant::now();
        let body = http.get(&url).bearer_auth(token).send().await.unwrap().bytes().await.unwrap();
        times.push(t.elapsed());
        bytes += body.len();
        let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
        keys += page["events"].as_array().map_or(0, Vec::len);
        match page["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return (keys, bytes, times),
        }
    }
}

/// JetStream: a node's state writes trail its tail; waits until every key is there.
async fn wait_for_state(server: &Server, keys: u64) {
    let token = server.token("bench", Role::Subscribe, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while walk(server, &token, 10_000).await.0 != keys as usize {
        assert!(Instant::now() < deadline, "state never reached {keys} keys");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whole walks (every page, 10,000 keys a page) over HTTP and gRPC.
async fn state_read(label: &str, server: &Server, keys: u64) {
    let token = server.token("bench", Role::Subscribe, &[]);
    let (mut over_http, mut bytes) = (Vec::new(), 0);
    for _ in 0..10 {
        let t = Instant::now();
        let (read, b, _) = walk(server, &token, 10_000).await;
        over_http.push(t.elapsed());
        assert_eq!(read, keys as usize);
        bytes = b;
    }
    let mut c = server.grpc("bench", Role::Subscribe).await;
    let mut over_grpc = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let (mut read, mut cursor) = (0, String::new());
        loop {
            let req = StateRequest { channels: vec!["dashboard".into()], limit: 10_000, cursor, ..Default::default() };
            let page = c.state(req).await.unwrap().into_inner();
            read += page.events.len();
            if page.next_cursor.is_empty() {
                break;
            }
            cursor = page.next_cursor;
        }
        over_grpc.push(t.elapsed());
        assert_eq!(read, keys as usize);
    }
    println!(
        "state_read {label:<9} {keys} keys: HTTP JSON ({} KiB) {}; gRPC State {}",
        bytes / 1024,
        p50_max(over_http),
        p50_max(over_grpc)
    );
}

/// 32 readers at once, each reading the state's pages at the default size (1,000 keys) in a
/// loop: the latency of one request while others are being answered.
async fn concurrent_reads(label: &str, server: &Server, keys: u64) {
    let token = server.token("bench", Role::Subscribe, &[]);
    let readers = (0..32).map(|_| {
        let token = token.clone();
        async move {
            let mut times = Vec::new();
            for _ in 0..3 {
                let (read, _, t) = walk(server, &token, 1_000).await;
                assert_eq!(read, keys as usize);
                times.extend(t);
            }
            times
        }
    });
    let mut times: Vec<Duration> = futures::future::join_all(readers).await.into_iter().flatten().collect();
    times.sort();
    let at = |q: f64| ms(times[((times.len() as f64 * q) as usize).min(times.len() - 1)]);
    println!(
        "concurrent_reads {label:<9} {keys} keys, 32 readers × 3 walks of 1,000-key pages ({} requests): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        times.len(),
        at(0.5),
        at(0.99),
        ms(*times.last().unwrap())
    );
}

/// Raw HTTP/1.1 so the head, the first frame and the end of state are timed as they arrive.
async fn state_then_live(label: &str, server: &Server, keys: u64) {
    let token = server.token("bench", Role::Subscribe, &[]);
    let addr = server.http_url.trim_start_matches("http://").to_owned();
    let (mut head, mut first, mut all) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..10 {
        let t = Instant::now();
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let req = format!(
            "GET /api/sse/dashboard?start=state&coalesce=false HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::with_capacity(1 << 20);
        let (mut h, mut f, mut frames) = (None, None, 0u64);
        let mut scanned = 0;
        loop {
            let mut chunk = [0u8; 65536];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "stream ended early");
            buf.extend_from_slice(&chunk[..n]);
            if h.is_none() && memchr::memmem::find(&buf, b"\r\n\r\n").is_some() {
                h = Some(t.elapsed());
            }
            if f.is_none() && memchr::memmem::find(&buf, b"\nevent: shopify:sync-completed").is_some() {
                f = Some(t.elapsed());
            }
            frames += memchr::memmem::find_iter(&buf[scanned.min(buf.len())..], b"event: shopify:sync-completed")
                .count() as u64;
            scanned = buf.len().saturating_sub(40);
            if memchr::memmem::find(&buf, b"event: stream:state").is_some() {
                all.push(t.elapsed());
                break;
            }
        }
        let _ = frames;
        head.push(h.unwrap());
        first.push(f.unwrap());
        let text = String::from_utf8_lossy(&buf);
        assert_eq!(text.matches("event: shopify:sync-completed").count(), keys as usize, "every key's state");
    }
    println!(
        "state_then_live {label:<9} {keys} keys: response head {}; first state frame {}; stream:state (all {keys}) {}",
        p50_max(head),
        p50_max(first),
        p50_max(all)
    );
}

fn custom(i: u64, keys: u64, delivery: Delivery) -> PublishRequest {
    PublishRequest {
        event: Some(Event {
            key: format!("k{}", i % keys),
            payload: Some(Payload::Custom(CustomEvent {
                r#type: "bench:figure".into(),
                json: format!("{{\"n\":{i},\"value\":\"1234.50\",\"currency\":\"GBP\"}}"),
                channels: vec!["figures".into()],
                delivery: delivery as i32,
            })),
            ..Default::default()
        }),
    }
}

/// Events/s through 4 concurrent PublishStreams (every event acked, durable).
async fn publish_rate(delivery: Delivery, n: u64, keys: u64) -> f64 {
    let server = Server::start_with(|c| c.bus.custom_channels = vec!["figures".into()]).await;
    let streams = 4;
    let per = n / streams;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..streams {
        let mut c = server.grpc("bench", Role::Publish).await;
        tasks.push(tokio::spawn(async move {
            let reqs: Vec<_> = (0..per).map(|i| custom(s * per + i, keys, delivery)).collect();
            let mut acks = c.publish_stream(futures::stream::iter(reqs)).await.unwrap().into_inner();
            let mut ok = 0;
            while let Some(a) = acks.next().await {
                if matches!(a.unwrap().result, Some(switchyard::proto::v1::publish_ack::Result::Id(_))) {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    assert_eq!(ok, per * streams);
    let rate = ok as f64 / start.elapsed().as_secs_f64();
    server.stop().await;
    rate
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        println!("# switchyard state bench ({cores} cores)");
        let keys = arg("BENCH_KEYS", 10_000);
        let only = std::env::var("BENCH_ONLY").unwrap_or_default();
        let run = |name: &str| only.is_empty() || only == name;
        if run("state_read") || run("state_then_live") || run("concurrent_reads") {
            let server = Server::start().await;
            fill(&server, keys).await;
            if run("state_read") {
                state_read("embedded", &server, keys).await;
            }
            if run("concurrent_reads") {
                concurrent_reads("embedded", &server, keys).await;
            }
            if run("state_then_live") {
                state_then_live("embedded", &server, keys).await;
            }
            server.stop().await;
            let has_nats = std::process::Command::new(nats::binary()).arg("--version").output().is_ok();
            if has_nats {
                let dir = tempfile::tempdir().expect("tempdir");
                let spec = nats::Spec::single(&dir.path().join("nats"));
                let _nats = spec.start();
                let server = Server::start_with(|c| c.backplane = Some(spec.url())).await;
                fill(&server, keys).await;
                wait_for_state(&server, keys).await;
                if run("state_read") {
                    state_read("jetstream", &server, keys).await;
                }
                if run("concurrent_reads") {
                    concurrent_reads("jetstream", &server, keys).await;
                }
                if run("state_then_live") {
                    state_then_live("jetstream", &server, keys).await;
                }
                server.stop().await;
            } else {
                println!("(no nats-server on PATH: JetStream skipped)");
            }
        }
        if run("publish_cost") {
            let n = arg("BENCH_EVENTS", 200_000);
            let (mut facts, mut snapshots) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                facts.push(publish_rate(Delivery::Fact, n, keys).await);
                snapshots.push(publish_rate(Delivery::Snapshot, n, keys).await);
            }
            let fmt = |v: &[f64]| v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(" / ");
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            println!(
                "publish_cost {n} events over {keys} keys, PublishStream ×4, fsync=always: facts {} events/s; snapshots (state view written) {} events/s; snapshots/facts = {:.1} %",
                fmt(&facts),
                fmt(&snapshots),
                100.0 * mean(&snapshots) / mean(&facts)
            );
        }
    });
}
