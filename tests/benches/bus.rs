//! Bus benchmarks over real gRPC on loopback, with the durable log (fsync = always).
//!
//! `cargo bench -p switchyard-tests --bench bus` prints, per scenario, events/s or seconds.
//! Bounded: fixed event counts, 127.0.0.1 only. Client and server share the machine's cores.
//!
//! Scenarios:
//! - publish_stream: N events through `PublishStream` (pipelined batches), several streams at once;
//! - publish_unary: N unary `Publish` calls from C concurrent clients;
//! - resume_replay: a subscriber resuming from id 0 on a channel holding 100,000 events,
//!   timed from the request to the last event received;
//! - noisy_neighbour: a quiet tenant's unary publish latency (16 callers × 100/s) alone, then
//!   while another tenant floods through 4 `PublishStream`s as fast as it can (default limits:
//!   its stream is paced to 50,000/s, or `BENCH_NOISY_RATE`). Reports both p99s and their ratio.
//! - traced_publish (only with `BENCH_ONLY=traced_publish`; needs `cargo build --release -p
//!   switchyard-bridge`): `publish_stream` against the real binary without telemetry and
//!   exporting traces over OTLP at the default sampling (to a receiver in this process),
//!   alternating, `BENCH_ROUNDS` rounds each.

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
        if only.is_empty() || only == "noisy_neighbour" {
            noisy_neighbour(arg("BENCH_NOISY_SECS", 10)).await;
        }
        if only == "traced_publish" {
            traced_publish(arg("BENCH_STREAM_EVENTS", 400_000), arg("BENCH_ROUNDS", 3)).await;
        }
    });
}

async fn traced_publish(total: u64, rounds: u64) {
    let (collector, otlp, receiver) = switchyard_tests::otlp::Collector::start().await;
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, traced) in [false, true].into_iter().enumerate() {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = dir.path().join("traced.toml");
            // No per-tenant pacing: the bench measures the server, as the in-process ones do.
            let mut toml = "[bus]\npublish_rate = 1e12\npublish_burst = 1e12\n".to_owned();
            if traced {
                toml += &format!("[telemetry]\notlp_endpoint = \"http://{otlp}\"\n");
            }
            std::fs::write(&config, toml).expect("config");
            let server =
                switchyard_tests::Process::serve(dir.path(), &["--config", config.to_str().expect("utf-8 path")]);
            let token = server.token("bench", Role::Publish);
            rates[i].push(switchyard_tests::publish_stream_rate_at(&server.grpc_url, &token, total, 4).await);
            server.terminate();
        }
    }
    receiver.abort();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "traced_publish: {total} events over 4 streams, untraced {:.0?} events/s, traced (OTLP, default sampling) {:.0?} events/s; means {:.0} vs {:.0} = {:.1} % ({} spans received)",
        rates[0],
        rates[1],
        mean(&rates[0]),
        mean(&rates[1]),
        100.0 * mean(&rates[1]) / mean(&rates[0]),
        collector.len()
    );
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

/// Unary publishes by tenant `quiet` from 16 callers at 100/s each for `secs`: their ack latencies.
async fn quiet_latencies(server: &Server, secs: u64) -> Vec<Duration> {
    let base = server.grpc("quiet", Role::Publish).await;
    let mut tasks = Vec::new();
    for cl in 0..16 {
        let mut c = base.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut lat = Vec::new();
            for i in 0..secs * 100 {
                tick.tick().await;
                let t = Instant::now();
                c.publish(PublishRequest { event: Some(events::order(&format!("q{cl}-{i}"))) }).await.expect("publish");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("caller"));
    }
    lat.sort();
    lat
}

fn quantile(lat: &[Duration], q: f64) -> Duration {
    lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)]
}

async fn noisy_neighbour(secs: u64) {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    };
    use switchyard::proto::v1::publish_ack;
    // The product's default rate limits (the test config lifts them for the throughput benches),
    // or `BENCH_NOISY_RATE` events/s per tenant (burst: two seconds' worth).
    let rate = switchyard::rate::Rate::default();
    let per_sec = arg("BENCH_NOISY_RATE", rate.per_sec as u64) as f64;
    let burst = if per_sec == rate.per_sec { rate.burst } else { 2.0 * per_sec };
    let server = Server::start_with(|c| (c.bus.publish_rate, c.bus.publish_burst) = (per_sec, burst)).await;
    println!("noisy_neighbour: per-tenant rate {per_sec}/s, burst {burst}");
    let alone = quiet_latencies(&server, secs).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (stored, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // The flooder runs on its own thread and runtime, as a separate client would (it still
    // shares the two cores with the server).
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(server.grpc("noisy", Role::Publish).await);
    }
    let flood = {
        let (stop, stored, refused) = (stop.clone(), stored.clone(), refused.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let mut tasks = Vec::new();
                for (s, mut c) in clients.into_iter().enumerate() {
                    let (stop, stored, refused) = (stop.clone(), stored.clone(), refused.clone());
                    tasks.push(tokio::spawn(async move {
                        let reqs = futures::stream::iter(0u64..)
                            .take_while(move |_| std::future::ready(!stop.load(Ordering::Relaxed)))
                            .map(move |i| PublishRequest { event: Some(events::order(&format!("n{s}-{i}"))) });
                        let mut acks = c.publish_stream(reqs).await.expect("stream").into_inner();
                        while let Some(a) = acks.next().await {
                            match a.map(|a| a.result) {
                                Ok(Some(publish_ack::Result::Id(_))) => stored.fetch_add(1, Ordering::Relaxed),
                                _ => refused.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            })
        })
    };
    let started = Instant::now();
    let loaded = quiet_latencies(&server, secs).await;
    let flood_secs = started.elapsed().as_secs_f64();
    let flooded = (stored.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || flood.join()).await;
    let (a99, l99) = (quantile(&alone, 0.99), quantile(&loaded, 0.99));
    println!(
        "noisy_neighbour: quiet tenant alone p50 {:?} p99 {:?}; while another floods ({:.0} stored/s, {:.0} refused/s) p50 {:?} p99 {:?}; p99 ratio {:.2}x",
        quantile(&alone, 0.5),
        a99,
        flooded.0 as f64 / flood_secs,
        flooded.1 as f64 / flood_secs,
        quantile(&loaded, 0.5),
        l99,
        l99.as_secs_f64() / a99.as_secs_f64()
    );
    server.stop().await;
}
