//! gRPC fan-out load tool: the real `switchyard` binary in its own process, N `Subscribe`
//! streams and a paced publisher in this one (same machine, same two cores), on 127.0.0.1.
//!
//!   cargo build --release -p switchyard-bridge
//!   cargo bench -p switchyard-tests --bench grpc_fanout
//!
//! Env: `GRPC_FANOUT_SUBSCRIBERS` (default 1000), `GRPC_FANOUT_RATES` (events/s, comma list,
//! default `500,1000`), `GRPC_FANOUT_SECS` (per rate, default 10), `SWITCHYARD_BIN` (another
//! build to measure, e.g. one from before a change).
//!
//! Subscribers share 10 HTTP/2 connections (100 streams each, as services multiplexing calls
//! would) and decode only what they check: each event's id (every stream must see every id,
//! in order) and, on a sample, the publish time to measure latency. Reports deliveries/s,
//! whether anything was lost, the server's CPU seconds per million deliveries, and p50/p99.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use switchyard::{auth::Role, proto::v1::SubscribeRequest};
use switchyard_tests::{
    Process,
    load::{self, now_micros, pct},
};
use tonic::codegen::http::uri::PathAndQuery;

/// `SubscribeResponse` as far as this client reads it (prost skips the other fields).
#[derive(Clone, PartialEq, prost::Message)]
struct Response {
    #[prost(message, optional, tag = "2")]
    event: Option<Event>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(message, optional, tag = "62")]
    alert_warning: Option<Alert>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Alert {
    #[prost(string, tag = "2")]
    message: String,
}

const CONNECTIONS: usize = 10;

#[derive(Default)]
struct Counters {
    events: AtomicU64,
    connected: AtomicU64,
    /// Streams that saw an id out of order or skipped one.
    disorder: AtomicU64,
    /// Streams that ended with an error before the run stopped.
    failed: AtomicU64,
    latencies: std::sync::Mutex<Vec<u64>>,
}

async fn subscriber(channel: tonic::transport::Channel, token: String, sample: bool, c: Arc<Counters>) {
    let mut grpc = tonic::client::Grpc::new(channel);
    if grpc.ready().await.is_err() {
        c.failed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut req = tonic::Request::new(SubscribeRequest {
        tenant: "bench".into(),
        channels: vec!["alerts".into()],
        ..Default::default()
    });
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    let codec = tonic_prost::ProstCodec::<SubscribeRequest, Response>::default();
    let path = PathAndQuery::from_static("/switchyard.v1.EventBus/Subscribe");
    let Ok(resp) = grpc.server_streaming(req, path, codec).await else {
        c.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut stream = resp.into_inner();
    let mut last = 0u64;
    let mut connected = false;
    let mut lat = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(m)) => {
                if !connected {
                    connected = true;
                    c.connected.fetch_add(1, Ordering::Relaxed);
                }
                let Some(e) = m.event else { continue };
                if last != 0 && e.id != last + 1 {
                    c.disorder.fetch_add(1, Ordering::Relaxed);
                }
                last = e.id;
                c.events.fetch_add(1, Ordering::Relaxed);
                if sample && let Some(sent) = e.alert_warning.and_then(|a| a.message.parse::<u64>().ok()) {
                    lat.push(now_micros().saturating_sub(sent));
                }
            }
            Ok(None) => break,
            Err(_) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    c.latencies.lock().expect("latencies").extend(lat);
}

async fn run(n: usize, rate: u64, secs: u64) {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let server = Process::serve(&dir, &[]);
    let counters = Arc::new(Counters::default());
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        let ch = tonic::transport::Channel::from_shared(server.grpc_url.clone()).expect("url").connect().await;
        channels.push(ch.expect("connect"));
    }
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let token = server.token("bench", Role::Subscribe);
        let ch = channels[i % CONNECTIONS].clone();
        tasks.push(tokio::spawn(subscriber(ch, token, i % 50 == 0, counters.clone())));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while counters.connected.load(Ordering::Relaxed) < n as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connected = counters.connected.load(Ordering::Relaxed);
    let cpu_before = load::cpu_secs(server.pid());
    let start = Instant::now();
    let sent = load::publish_paced(&server.grpc_url, &server.token("bench", Role::Publish), rate, secs).await;
    let target = sent * n as u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while counters.events.load(Ordering::Relaxed) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = load::cpu_secs(server.pid()) - cpu_before;
    let events = counters.events.load(Ordering::Relaxed);
    let failed = counters.failed.load(Ordering::Relaxed);
    drop(server);
    for t in tasks {
        let _ = t.await;
    }
    let mut lat = std::mem::take(&mut *counters.latencies.lock().expect("latencies"));
    lat.sort_unstable();
    println!(
        "grpc_{n} at {rate}/s: {sent} events × {n} subscribers ({connected} connected, {CONNECTIONS} connections) = {events}/{target} deliveries in {elapsed:.2} s = {:.0} deliveries/s ({}; {} streams out of order, {failed} ended early); server CPU {cpu:.2} s = {:.2} CPU-s per million deliveries; publish→gRPC p50 {:.1} ms, p99 {:.1} ms ({} samples)",
        events as f64 / elapsed,
        if events == target { "nothing lost" } else { "MISSING" },
        counters.disorder.load(Ordering::Relaxed),
        cpu * 1e6 / events.max(1) as f64,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.len(),
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let n: usize = env("GRPC_FANOUT_SUBSCRIBERS", "1000").parse().expect("GRPC_FANOUT_SUBSCRIBERS");
    let secs: u64 = env("GRPC_FANOUT_SECS", "10").parse().expect("GRPC_FANOUT_SECS");
    rt.block_on(async {
        println!(
            "# switchyard gRPC fan-out ({} cores, load generator in the same machine)",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );
        for rate in env("GRPC_FANOUT_RATES", "500,1000").split(',') {
            run(n, rate.trim().parse().expect("GRPC_FANOUT_RATES"), secs).await;
        }
    });
}
