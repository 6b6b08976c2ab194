//! Bus benchmarks over real gRPC on loopback, with the durable log (fsync = always).
//!
//! `cargo bench -p switchyard-tests --bench bus` prints, per scenario, events/s or seconds.
//! Bounded: fixed event counts, 127.0.0.1 only. Client and server share the machine's cores.
//!
//! Scenarios:
//! - publish_stream: N events through `PublishStream` (pipelined batches), several streams at once;
//! - publish_unary: N unary `Publish` calls from C concurrent clients;
//! - resume_replay: a subscriber resuming from id 0 on a channel holding 100,000 events,
//!   timed from the request to the last event received.

use std::time::{Duration, Instant};

use futures::StreamExt;
use switchyard::{
    auth::Role,
    proto::v1::{PublishRequest, SubscribeRequest, subscribe_response::Message},
};
use switchyard_tests::{Server, events};

fn arg(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        println!(
            "# switchyard bus bench ({} cores)",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );
        let only = std::env::var("BENCH_ONLY").unwrap_or_default();
        if only.is_empty() || only == "publish_stream" {
            publish_stream(arg("BENCH_STREAM_EVENTS", 400_000), arg("BENCH_STREAMS", 4)).await;
        }
        if only.is_empty() || only == "publish_unary" {
            publish_unary(arg("BENCH_UNARY_EVENTS", 40_000), arg("BENCH_UNARY_CLIENTS", 128)).await;
        }
        if only.is_empty() || only == "resume_replay" {
            resume_replay(arg("BENCH_REPLAY_EVENTS", 100_000)).await;
        }
    });
}

async fn publish_stream(total: u64, streams: u64) {
    let server = Server::start().await;
    let rate = switchyard_tests::publish_stream_rate(&server, total, streams).await;
    println!("publish_stream: {total} events over {streams} streams = {rate:.0} events/s (durable, fsync=always)");
    server.stop().await;
}

async fn publish_unary(total: u64, clients: u64) {
    let server = Server::start().await;
    let per = total / clients;
    let base = server.grpc("bench", Role::Publish).await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for cl in 0..clients {
        let mut c = base.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per as usize);
            for i in 0..per {
                let t = Instant::now();
                c.publish(PublishRequest { event: Some(events::order(&format!("{cl}-{i}"))) }).await.expect("publish");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "publish_unary: {} events from {clients} concurrent callers in {secs:.3} s = {:.0} events/s; ack latency p50 {:?} p99 {:?}",
        lat.len(),
        lat.len() as f64 / secs,
        p(0.5),
        p(0.99)
    );
    server.stop().await;
}

async fn resume_replay(n: u64) {
    let server = Server::start().await;
    let mut c = server.grpc("bench", Role::Publish).await;
    let reqs = futures::stream::iter((0..n).map(|i| PublishRequest { event: Some(events::order(&i.to_string())) }));
    let mut acks = c.publish_stream(reqs).await.expect("stream").into_inner();
    while acks.next().await.is_some() {}
    // Noise on another channel, so the resume must use the channel index rather than scan.
    let noise = futures::stream::iter((0..n).map(|i| PublishRequest { event: Some(events::alert(&i.to_string())) }));
    let mut acks = c.publish_stream(noise).await.expect("stream").into_inner();
    while acks.next().await.is_some() {}
    for round in 0..3 {
        let start = Instant::now();
        let mut s = c
            .subscribe(SubscribeRequest { channels: vec!["dashboard".into()], from_id: Some(0), ..Default::default() })
            .await
            .expect("subscribe")
            .into_inner();
        let mut got = 0u64;
        let mut first = None;
        while got < n {
            match s.next().await.expect("open").expect("ok").message {
                Some(Message::Event(_)) => {
                    if first.is_none() {
                        first = Some(start.elapsed());
                    }
                    got += 1;
                }
                Some(_) => {}
                None => {}
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "resume_replay (round {round}): {got} events of one channel (log holds {}) replayed over gRPC in {secs:.3} s = {:.0} events/s; first event after {:?}",
            2 * n,
            got as f64 / secs,
            first.unwrap_or_default()
        );
    }
    server.stop().await;
}
