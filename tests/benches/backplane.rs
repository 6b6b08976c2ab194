//! The JetStream backplane measured in one run on one machine, against JetStream itself and the
//! embedded default. Starts its own nats-server (R1, file storage) on a free loopback port.
//!
//! `cargo bench -p switchyard-tests --bench backplane` prints:
//! - `jetstream_raw`: async-nats pipelined publishes of 200-byte messages, 256 in flight, with and
//!   without `Nats-Msg-Id` (JetStream's own rate), and with `Nats-Msg-Id` at 4,096 in flight
//!   (`jetstream_raw_deep`: a deeper pipeline, as deep as a node's own);
//! - `switchyard_jetstream` / `switchyard_embedded`: events/s through `PublishStream` into a node on
//!   the backplane, and into the embedded store (fsync = always), same client;
//! - `resume_other_node`: an SSE client resuming on node B from an id published on node A: time
//!   from request to its first missed event, p50/max over 50 tries.
//!
//! Every row publishes the same count, `BENCH_EVENTS` (default 200,000), so no row's figure holds
//! more start-up than another's. Env: `BENCH_EVENTS`, `BENCH_ONLY`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard::auth::Role;
use switchyard_tests::{Server, Sse, nats};

fn arg(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn raw(url: &str, n: u64, dedupe: bool, window: usize) -> f64 {
    let client = async_nats::connect(url).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let name = if dedupe { "RAW_DEDUPE" } else { "RAW" };
    let _ = js.delete_stream(name).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.into(),
        subjects: vec![format!("raw.{name}")],
        storage: async_nats::jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .expect("stream");
    let payload = Bytes::from(vec![b'x'; 200]);
    let start = Instant::now();
    let mut in_flight = std::collections::VecDeque::new();
    for i in 0..n {
        let mut msg = async_nats::jetstream::message::PublishMessage::build().payload(payload.clone());
        if dedupe {
            msg = msg.message_id(format!("m-{i}"));
        }
        in_flight.push_back(js.send_publish(format!("raw.{name}"), msg).await.expect("send"));
        if in_flight.len() >= window {
            in_flight.pop_front().unwrap().await.expect("ack");
        }
    }
    for f in in_flight {
        f.await.expect("ack");
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    // Leave the server as empty as the next measurement found it.
    js.delete_stream(name).await.expect("delete stream");
    rate
}

/// Events/s through PublishStream: 4 concurrent streams, every event acked.
async fn through(server: &Server, n: u64) -> f64 {
    switchyard_tests::publish_stream_rate(server, n, 4).await
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        let version = std::process::Command::new(nats::binary()).arg("--version").output().expect("nats-server");
        println!("# switchyard backplane bench ({cores} cores, {})", String::from_utf8_lossy(&version.stdout).trim());
        let n = arg("BENCH_EVENTS", 200_000);
        let only = std::env::var("BENCH_ONLY").unwrap_or_default();
        let run = |name: &str| only.is_empty() || only == name;
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = nats::Spec::single(&dir.path().join("nats"));
        let _server = spec.start();
        let url = spec.url();

        if run("jetstream_raw") {
            let with = raw(&url, n, true, 256).await;
            let without = raw(&url, n, false, 256).await;
            println!("jetstream_raw        {:>9.0} msg/s with Msg-Id, {without:>9.0} msg/s without (200 B, 256 in flight)", with);
            let deep = raw(&url, n, true, 4096).await;
            println!("jetstream_raw_deep   {deep:>9.0} msg/s with Msg-Id (200 B, 4,096 in flight)");
        }
        if run("switchyard_jetstream") {
            let node = Server::start_with(|c| c.backplane = Some(url.clone())).await;
            let rate = through(&node, n).await;
            println!("switchyard_jetstream {rate:>9.0} events/s (PublishStream ×4, every event with Msg-Id)");
            node.stop().await;
        }
        if run("switchyard_embedded") {
            let node = Server::start().await;
            let rate = through(&node, n).await;
            println!("switchyard_embedded  {rate:>9.0} events/s (PublishStream ×4, fsync = always)");
            node.stop().await;
        }
        if run("resume_other_node") {
            let a = Server::start_with(|c| c.backplane = Some(url.clone())).await;
            let b = Server::start_with(|c| c.backplane = Some(url.clone())).await;
            let mut client = a.grpc("bench", Role::Publish).await;
            let ids = switchyard_tests::publish_alerts(&mut client, 0..200).await;
            let token = b.token("bench", Role::Subscribe, &[]);
            let mut took = Vec::new();
            for i in 0..50 {
                let from = ids[i * 3];
                let start = Instant::now();
                let mut sse = Sse::connect(&format!("{}/api/sse/alerts", b.http_url), Some(&token), Some(from)).await;
                let first = sse.ids(1).await[0];
                took.push(start.elapsed());
                assert_eq!(first, ids[i * 3 + 1]);
            }
            took.sort();
            println!(
                "resume_other_node    first missed event p50 {:.1} ms, max {:.1} ms (50 resumes on node B of ids published on node A)",
                took[took.len() / 2].as_secs_f64() * 1e3,
                took.last().unwrap().as_secs_f64() * 1e3
            );
            a.stop().await;
            b.stop().await;
        }
    });
}
