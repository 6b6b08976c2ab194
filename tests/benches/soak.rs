//! Soak: the real `switchyard serve` binary in its own process under mixed load for a long
//! time, well-behaved and abusive clients together, all on 127.0.0.1. Shows that memory and
//! descriptors stay flat, that no well-behaved client sees an error, and that nothing is lost.
//!
//!   cargo build --release -p switchyard-bridge
//!   cargo bench -p switchyard-tests --bench soak
//!
//! Env: `SOAK_SECS` (default 1800), `SOAK_CLIENTS` (5,000), `SOAK_RATE` (events/s, 20),
//! `SOAK_SAMPLE_SECS` (30), `SOAK_CACHE_MIB` (the server's `log.cache_mib`, 256).
//!
//! Load, all at once:
//! - `SOAK_CLIENTS` SSE clients on `alerts`, each dropping its connection at random (every 60 s
//!   on average) and resuming with `Last-Event-ID`; each checks its ids only ever increase;
//! - a publisher: `SOAK_RATE` alerts/s through one `PublishStream`;
//! - Shopify webhooks, 5/s, signed; 10 pollers on `GET /api/events`, once a second each;
//! - abusive clients, every second: 20 connections that never send a byte, a request naming
//!   200 channels, a bad token, a 9 MiB body — each must get its refusal.
//!
//! Every `SOAK_SAMPLE_SECS` it prints the server's RSS, open descriptors and clients connected.
//! At the end every client must have received every published event exactly once, in order.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use switchyard::{auth::Role, proto::v1::PublishRequest};
use switchyard_bridge::webhooks::signature::sign_b64;
use switchyard_tests::{Process, events, fds, rss_kib};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const SHOP: &str = "soak.myshopify.com";

fn arg(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Default)]
struct Tally {
    connected: AtomicU64,
    reconnects: AtomicU64,
    evicted: AtomicU64,
    /// Well-behaved requests that failed: non-200 opens, gaps, refused webhooks or polls.
    errors: AtomicU64,
    /// Ids that did not increase (a duplicate or a reorder).
    disorder: AtomicU64,
    /// Abusive requests that did not get the refusal they should have.
    unrefused: AtomicU64,
    webhooks: AtomicU64,
    polls: AtomicU64,
}

/// One SSE client: returns (events received, last id) when `stop` is set and it has caught up to `last`.
async fn client(
    addr: String,
    token: String,
    seed: u64,
    t: Arc<Tally>,
    stop: Arc<AtomicBool>,
    last: Arc<AtomicU64>,
) -> (u64, u64) {
    let mut rng = seed;
    let mut next_rand = move || {
        // xorshift: cheap, and a different stream per client.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut received, mut last_id) = (0u64, 0u64);
    loop {
        if stop.load(Ordering::Relaxed) && last_id >= last.load(Ordering::Relaxed) {
            return (received, last_id);
        }
        let Ok(mut s) = TcpStream::connect(&addr).await else {
            error(&t, "sse connect failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // Always resuming (from 0 at first): a client gets every event whenever it first connects.
        let req = format!(
            "GET /api/sse/alerts?coalesce=false HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nLast-Event-ID: {last_id}\r\n\r\n"
        );
        if s.write_all(req.as_bytes()).await.is_err() {
            error(&t, "sse request write failed");
            continue;
        }
        // Drop the connection after an exponentially distributed time, 60 s on average.
        let u = (next_rand() % 1_000_000) as f64 / 1_000_000.0;
        let life = Duration::from_secs_f64(-60.0 * (1.0 - u).ln()).max(Duration::from_millis(200));
        let until = Instant::now() + life;
        let mut buf = vec![0u8; 16 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        let mut head_done = false;
        let mut counted = false;
        loop {
            let caught_up = stop.load(Ordering::Relaxed) && last_id >= last.load(Ordering::Relaxed);
            if caught_up {
                break;
            }
            let n = match tokio::time::timeout_at(until.into(), s.read(&mut buf)).await {
                Err(_) => break, // time to drop it
                Ok(Ok(0)) | Ok(Err(_)) => {
                    if !head_done {
                        error(&t, "sse closed before answering");
                    }
                    break;
                }
                Ok(Ok(n)) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            if !head_done {
                let Some(end) = memchr::memmem::find(&pending, b"\r\n\r\n") else { continue };
                if !pending.starts_with(b"HTTP/1.1 200") {
                    error(&t, &format!("sse open refused: {}", String::from_utf8_lossy(&pending[..end.min(200)])));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
                pending.drain(..end + 4);
                head_done = true;
                counted = true;
                t.connected.fetch_add(1, Ordering::Relaxed);
            }
            while let Some(end) = memchr::memmem::find(&pending, b"\n\n") {
                let frame = &pending[..end];
                let mut id = None;
                let mut kind = "";
                for line in frame.split(|b| *b == b'\n') {
                    if let Some(v) = line.strip_prefix(b"id: ") {
                        id = std::str::from_utf8(v).ok().and_then(|v| v.split('~').next()?.parse::<u64>().ok());
                    } else if let Some(v) = line.strip_prefix(b"event: ") {
                        kind = if v.starts_with(b"alert:") {
                            "alert"
                        } else if v == b"stream:gap" {
                            "gap"
                        } else {
                            "other"
                        };
                    } else if line.starts_with(b": disconnected") {
                        t.evicted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                match (kind, id) {
                    ("alert", Some(id)) => {
                        if id <= last_id {
                            t.disorder.fetch_add(1, Ordering::Relaxed);
                        } else {
                            last_id = id;
                            received += 1;
                        }
                    }
                    ("gap", _) => {
                        error(&t, "sse gap");
                    }
                    _ => {}
                }
                pending.drain(..end + 2);
            }
        }
        if counted {
            t.connected.fetch_sub(1, Ordering::Relaxed);
        }
        t.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

/// The load's HTTP client. Like any well-behaved keep-alive client, it drops idle connections
/// before the server would (the server closes a connection idle for 10 s between requests):
/// reusing one the server is closing at that moment fails the request, a race on the client's side.
fn http() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            switchyard_tests::http(); // installs the TLS provider
            reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(5)).build().expect("client")
        })
        .clone()
}

/// Counts an error a well-behaved client saw, and says what it was.
fn error(t: &Tally, what: &str) {
    t.errors.fetch_add(1, Ordering::Relaxed);
    eprintln!("error: {what}");
}

/// Publishes `rate` alerts/s until `stop`; returns how many were acknowledged and the last id.
async fn publisher(server: &Process, rate: u64, stop: Arc<AtomicBool>) -> (u64, u64) {
    let token = server.token("soak", Role::Publish);
    let mut c = switchyard_bridge::cli::tools::connect(&server.grpc_url, &token).await.expect("gRPC");
    let (tx, rx) = tokio::sync::mpsc::channel::<PublishRequest>(10_000);
    let acks = tokio::spawn(async move {
        let mut acks =
            c.publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("stream").into_inner();
        let (mut n, mut last) = (0u64, 0u64);
        while let Some(a) = acks.next().await {
            if let Some(switchyard::proto::v1::publish_ack::Result::Id(id)) = a.expect("ack").result {
                n += 1;
                last = id;
            }
        }
        (n, last)
    });
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let start = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let due = rate * start.elapsed().as_millis() as u64 / 1000;
        while sent < due {
            tx.send(PublishRequest { event: Some(events::alert(&format!("soak {sent}"))) }).await.expect("publisher");
            sent += 1;
        }
    }
    drop(tx);
    let (acked, last) = acks.await.expect("acks");
    assert_eq!(acked, sent, "every publish acknowledged");
    (acked, last)
}

async fn webhooks(url: String, t: Arc<Tally>, stop: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        let body =
            format!(r##"{{"id": {n}, "name": "#{n}", "currency": "GBP", "total_price": "12.50", "line_items": []}}"##);
        let r = http()
            .post(&url)
            .header("X-Shopify-Hmac-Sha256", sign_b64(b"soak-secret", &[body.as_bytes()]))
            .header("X-Shopify-Topic", "orders/create")
            .header("X-Shopify-Shop-Domain", SHOP)
            .header("X-Shopify-Event-Id", format!("soak-{n}"))
            .body(body)
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 200 => {
                t.webhooks.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => error(&t, &format!("webhook answered {}", r.status())),
            Err(e) => error(&t, &format!("webhook failed: {e:?}")),
        };
    }
}

async fn poller(base: String, token: String, t: Arc<Tally>, stop: Arc<AtomicBool>) {
    let mut after = String::from("0");
    let mut last = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let r = http()
            .get(format!("{base}/api/events?channels=alerts&limit=1000&after={after}"))
            .bearer_auth(&token)
            .send()
            .await;
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                error(&t, &format!("poll failed: {e:?}"));
                continue;
            }
        };
        let Some(r) = Some(r).filter(|r| r.status() == 200) else {
            error(&t, "poll refused");
            continue;
        };
        let Ok(page) = r.json::<serde_json::Value>().await else {
            error(&t, "poll body unreadable");
            continue;
        };
        for e in page["events"].as_array().into_iter().flatten() {
            let id: u64 = e["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
            if id <= last {
                t.disorder.fetch_add(1, Ordering::Relaxed);
            }
            last = id;
        }
        if let Some(next) = page["next"].as_str() {
            after = next.to_owned();
        }
        t.polls.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every second: silent connections, too many channels, a bad token, an oversized body.
async fn abuser(base: String, addr: String, token: String, t: Arc<Tally>, stop: Arc<AtomicBool>) {
    let mut silent: std::collections::VecDeque<(Instant, Vec<TcpStream>)> = Default::default();
    let channels: Vec<String> = (0..200).map(|i| format!("c{i}")).collect();
    let big = vec![b' '; 9 * 1024 * 1024];
    let expect = |r: Result<reqwest::Response, reqwest::Error>, status: u16| match r {
        Ok(r) if r.status() == status => {}
        // A server closing an oversized upload early is a refusal too.
        Err(_) if status == 413 => {}
        _ => {
            t.unrefused.fetch_add(1, Ordering::Relaxed);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut batch = Vec::new();
        for _ in 0..20 {
            if let Ok(s) = TcpStream::connect(&addr).await {
                batch.push(s);
            }
        }
        silent.push_back((Instant::now(), batch));
        // Kept 15 s by us; the server closes them at 10 s.
        while silent.front().is_some_and(|(at, _)| at.elapsed() > Duration::from_secs(15)) {
            silent.pop_front();
        }
        let url = format!("{base}/api/events?channels={}", channels.join(","));
        expect(http().get(url).bearer_auth(&token).send().await, 400);
        expect(http().get(format!("{base}/api/state")).bearer_auth("not-a-token").send().await, 401);
        expect(
            http()
                .post(format!("{base}/api/events"))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(big.clone())
                .send()
                .await,
            413,
        );
    }
}

fn main() {
    let secs = arg("SOAK_SECS", 1800);
    let clients = arg("SOAK_CLIENTS", 5_000) as usize;
    let rate = arg("SOAK_RATE", 20);
    let sample = arg("SOAK_SAMPLE_SECS", 30);
    let cache = arg("SOAK_CACHE_MIB", 256);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("soak.toml");
        std::fs::write(
            &config,
            format!(
                "[log]\ncache_mib = {cache}\n[sse]\nmax_connections = 19500\nmax_per_tenant = 19500\nmax_pending_per_ip = 0\n\
                 [webhooks.shopify]\nsecrets = [\"soak-secret\"]\n[webhooks.shopify.shops]\n\"{SHOP}\" = \"soak\"\n"
            ),
        )
        .expect("config");
        let server = Process::serve(dir.path(), &["--config", config.to_str().expect("utf-8")]);
        let pid = server.pid();
        let addr = server.http_url.trim_start_matches("http://").to_owned();
        println!("# soak: {clients} SSE clients, {rate} events/s, {secs} s, store cache {cache} MiB; server pid {pid}");
        let t = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(AtomicU64::new(u64::MAX));
        let mut tasks = Vec::with_capacity(clients);
        for i in 0..clients {
            let token = server.token("soak", Role::Subscribe);
            let seed = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1);
            tasks.push(tokio::spawn(client(addr.clone(), token, seed, t.clone(), stop.clone(), last.clone())));
            if i % 500 == 499 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while (t.connected.load(Ordering::Relaxed) as usize) < clients * 9 / 10 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let run_stop = Arc::new(AtomicBool::new(false));
        let publisher = {
            let (server_token, stop) = (&server, run_stop.clone());
            async move { publisher(server_token, rate, stop).await }
        };
        let base = server.http_url.clone();
        let side = vec![
            tokio::spawn(webhooks(format!("{base}/api/webhooks/shopify"), t.clone(), run_stop.clone())),
            tokio::spawn(abuser(
                base.clone(),
                addr.clone(),
                server.token("soak", Role::Publish),
                t.clone(),
                run_stop.clone(),
            )),
        ];
        let pollers: Vec<_> = (0..10)
            .map(|_| {
                tokio::spawn(poller(base.clone(), server.token("soak", Role::Subscribe), t.clone(), run_stop.clone()))
            })
            .collect();
        let started = Instant::now();
        let sampler = {
            let (t, run_stop) = (t.clone(), run_stop.clone());
            async move {
                println!("elapsed_s,rss_kib,fds,connected,reconnects,evicted,webhooks,polls,errors");
                loop {
                    println!(
                        "{},{},{},{},{},{},{},{},{}",
                        started.elapsed().as_secs(),
                        rss_kib(pid),
                        fds(pid),
                        t.connected.load(Ordering::Relaxed),
                        t.reconnects.load(Ordering::Relaxed),
                        t.evicted.load(Ordering::Relaxed),
                        t.webhooks.load(Ordering::Relaxed),
                        t.polls.load(Ordering::Relaxed),
                        t.errors.load(Ordering::Relaxed)
                    );
                    if started.elapsed() >= Duration::from_secs(secs) {
                        run_stop.store(true, Ordering::Relaxed);
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(sample).min(Duration::from_secs(secs))).await;
                }
            }
        };
        let ((published, last_id), ()) = tokio::join!(publisher, sampler);
        for s in side.into_iter().chain(pollers) {
            let _ = s.await;
        }
        // Let every client catch up to the last id, then stop them.
        last.store(last_id, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        let mut lost = 0u64;
        let mut short = 0usize;
        for task in tasks {
            match tokio::time::timeout(Duration::from_secs(120), task).await {
                Ok(Ok((got, _))) => {
                    if got < published {
                        lost += published - got;
                        short += 1;
                    }
                }
                _ => short += 1,
            }
        }
        println!(
            "soak: {secs} s, {clients} clients, {published} events published (last id {last_id}); \
             lost {lost} (clients short: {short}); out of order or duplicated {}; errors for well-behaved clients {}; \
             reconnects {}, evictions {}; webhooks {}, polls {}; abusive requests not refused {}; \
             server RSS {} KiB, fds {} at the end",
            t.disorder.load(Ordering::Relaxed),
            t.errors.load(Ordering::Relaxed),
            t.reconnects.load(Ordering::Relaxed),
            t.evicted.load(Ordering::Relaxed),
            t.webhooks.load(Ordering::Relaxed),
            t.polls.load(Ordering::Relaxed),
            t.unrefused.load(Ordering::Relaxed),
            rss_kib(pid),
            fds(pid),
        );
    });
}
