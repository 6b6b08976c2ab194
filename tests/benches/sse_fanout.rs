//! SSE fan-out load tool: the real `switchyard` binary in its own process, N SSE
//! clients and a publisher in this one (same machine, same two cores), all on 127.0.0.1.
//!
//! Build the server first, then run:
//!   cargo build --release -p switchyard-bridge
//!   cargo bench -p switchyard-tests --bench sse_fanout
//! Env: `FANOUT_SCENARIOS` (comma list of the names below), `FANOUT_SECS` (per scenario, default 10),
//! `FANOUT_BACKPLANE=nats://127.0.0.1:4222` to run the server on a JetStream backplane.
//!
//! Throughput and latency scenarios run twice in one invocation: first against the raw baseline
//! ([`switchyard_tests::raw_sse`]: pre-encoded frames, N sockets, coalesced writes, nothing else,
//! in its own process), then against Switchyard, and print Switchyard's figure as a ratio to it.
//!
//! Scenarios (bounded in count and time):
//! - `throughput_1k`: 1,000 subscribers × 1,000 events/s (1,000,000 deliveries/s offered) → delivered/s;
//! - `throughput_1k_2x`: the same at 2,000 events/s, to see where it saturates;
//! - `saturate_1k` (not in the default set): 1,000 subscribers at 1,000 to 8,000 (in steps of 500 to 4,000)
//!   events/s → the most deliveries/s with nothing lost and p99 ≤ 100 ms, for each server;
//! - `latency_1k`: 1,000 subscribers × 100 events/s → publish→SSE p50/p99/max;
//! - `latency_10k`: 10,000 subscribers × 10 events/s → publish→SSE p50/p99/max;
//! - `cores_1k` (not in the default set): `saturate_1k` for Switchyard with the server pinned to
//!   1 core, then to 2 (`taskset`), to show fan-out spreads over cores;
//! - `h2_1k` (not in the default set): 1,000 subscribers × 2,000 events/s (`FANOUT_H2_RATE`) over HTTP/1.1, then
//!   over HTTP/2 (100 streams a connection, cleartext prior knowledge);
//! - `traced_1k` (not in the default set): 1,000 subscribers × 2,000 events/s
//!   (`FANOUT_TRACED_RATE`) without telemetry, then exporting traces over OTLP at the default sampling;
//! - `idle_10k`: server RSS per idle connection at 10,000 connections;
//! - `connections_19k`: 19,000 concurrent SSE connections held open.
//!
//! Latency is measured on every frame of a sample of clients (the publish time, µs since the
//! epoch, travels in the alert's `message`); every client counts every frame.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use switchyard::auth::Role;
use switchyard_tests::{
    Process,
    load::{self, Pace, now_micros, pct},
    raw_sse::{self, RawServer},
    rss_kib,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{Mutex, Notify},
};

struct Counters {
    frames: AtomicU64,
    connected: AtomicU64,
    /// Streams the server ended before the run stopped (an eviction, say): such a client does
    /// not resume here, so what it missed shows as missing deliveries.
    ended: AtomicU64,
    latencies: Mutex<Vec<u64>>,
}

/// Opens one SSE connection and reads it until `stop`; counts frames, samples latency.
/// One EventSource-like client: when the server turns a connection away before its stream
/// opens (its cap on connections still in their handshake, under a burst of thousands), it
/// tries again after a short random delay, as a browser does.
async fn client(addr: String, token: String, sample: bool, c: Arc<Counters>, stop: Arc<tokio::sync::Notify>) {
    while !session(&addr, &token, sample, &c, &stop).await {
        let wait = Duration::from_millis(50 + now_micros() % 200);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.notified() => return,
        }
    }
}

/// One connection; `false` when it was turned away before the stream opened.
async fn session(addr: &str, token: &str, sample: bool, c: &Counters, stop: &tokio::sync::Notify) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else { return false };
    let req =
        format!("GET /api/sse/alerts?coalesce=false HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut reader = Reader::new(sample);
    loop {
        let n = tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = stop.notified() => return reader.finish(c, false).await,
        };
        reader.feed(&buf[..n], c);
    }
    reader.finish(c, true).await
}

/// Counts the frames of one SSE stream however its bytes arrive (split anywhere), and on a
/// sample of streams reads each frame's publish time for latency.
struct Reader {
    sample: bool,
    connected: bool,
    /// The end of the previous chunk, so patterns split across chunks still count.
    carry: Vec<u8>,
    /// Unparsed bytes of a sampled stream.
    tail: Vec<u8>,
    latencies: Vec<u64>,
}

impl Reader {
    fn new(sample: bool) -> Self {
        Self { sample, connected: false, carry: Vec::new(), tail: Vec::new(), latencies: Vec::new() }
    }

    fn feed(&mut self, bytes: &[u8], c: &Counters) {
        let keep = self.carry.len();
        self.carry.extend_from_slice(bytes);
        let chunk = &self.carry[..];
        if !self.connected && find(chunk, b"retry:").is_some() {
            self.connected = true;
            c.connected.fetch_add(1, Ordering::Relaxed);
        }
        const PATTERN: &[u8] = b"\nevent: alert:warning";
        // Only matches that end in the new bytes: the carried part was counted last time.
        let frames = memchr::memmem::find_iter(chunk, PATTERN).filter(|i| i + PATTERN.len() > keep).count();
        if frames > 0 {
            c.frames.fetch_add(frames as u64, Ordering::Relaxed);
        }
        if self.sample && frames > 0 {
            let now = now_micros();
            self.tail.extend_from_slice(&chunk[keep..]);
            let mut rest: &[u8] = &self.tail;
            while let Some(i) = find(rest, b"\"message\":\"") {
                let after = &rest[i + 11..];
                let Some(end) = after.iter().position(|b| *b == b'"') else { break };
                if let Some(sent) = std::str::from_utf8(&after[..end]).ok().and_then(|s| s.parse::<u64>().ok()) {
                    self.latencies.push(now.saturating_sub(sent));
                }
                rest = &after[end..];
            }
            let left = rest.len();
            self.tail.drain(..self.tail.len() - left);
        }
        let from = self.carry.len().saturating_sub(PATTERN.len() - 1);
        self.carry.drain(..from);
    }

    /// Records what the stream gave; `false` when it was turned away before it opened.
    /// `ended_by_server`: the stream closed before the run stopped.
    async fn finish(self, c: &Counters, ended_by_server: bool) -> bool {
        if !self.connected {
            return !ended_by_server;
        }
        if ended_by_server {
            c.ended.fetch_add(1, Ordering::Relaxed);
        }
        c.connected.fetch_sub(1, Ordering::Relaxed);
        c.latencies.lock().await.extend(self.latencies);
        true
    }
}

/// Streams one HTTP/2 connection carries in the `h2` runs (a browser multiplexes every
/// EventSource of an origin over one connection).
const STREAMS_PER_H2: usize = 100;

/// One HTTP/2 connection (cleartext, prior knowledge) carrying a stream per token; with
/// `sample`, its first stream's latencies are measured.
async fn h2_connection(addr: String, tokens: Vec<String>, sample: bool, c: Arc<Counters>, stop: Arc<Notify>) {
    use http_body_util::BodyExt;
    let Ok(tcp) = TcpStream::connect(&addr).await else { return };
    let io = hyper_util::rt::TokioIo::new(tcp);
    let Ok((sender, conn)) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await
    else {
        return;
    };
    tokio::spawn(conn);
    let mut streams = Vec::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let mut sender = sender.clone();
        let req = hyper::Request::get(format!("http://{addr}/api/sse/alerts?coalesce=false"))
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let (c, stop) = (c.clone(), stop.clone());
        streams.push(tokio::spawn(async move {
            let mut reader = Reader::new(sample && i == 0);
            let Ok(resp) = sender.send_request(req).await else { return };
            let mut body = resp.into_body();
            loop {
                tokio::select! {
                    f = body.frame() => match f {
                        Some(Ok(f)) => if let Some(d) = f.data_ref() { reader.feed(d, &c) },
                        _ => break,
                    },
                    _ = stop.notified() => {
                        reader.finish(&c, false).await;
                        return;
                    }
                }
            }
            reader.finish(&c, true).await;
        }));
    }
    for s in streams {
        let _ = s.await;
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    memchr::memmem::find(h, n)
}

/// What the clients connect to: Switchyard, or the raw baseline ([`switchyard_tests::raw_sse`]).
enum Target {
    Switchyard(Process),
    Raw(RawServer),
}

impl Target {
    fn pid(&self) -> u32 {
        match self {
            Target::Switchyard(p) => p.pid(),
            Target::Raw(r) => r.pid(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Target::Switchyard(_) => "switchyard",
            Target::Raw(_) => "baseline",
        }
    }

    /// A subscriber's token (the baseline checks none).
    fn token(&self) -> String {
        match self {
            Target::Switchyard(p) => p.token("bench", Role::Subscribe),
            Target::Raw(_) => "none".into(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Switchyard,
    Baseline,
}

struct Run {
    server: Target,
    addr: String,
    token: String,
    counters: Arc<Counters>,
    stop: Arc<tokio::sync::Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn open(kind: Kind, n: usize, samples: usize) -> Run {
    open_over(kind, n, samples, Setup::default()).await
}

/// `open`, set up as `setup` says (`h2`: the streams multiplexed [`STREAMS_PER_H2`] to an
/// HTTP/2 connection; `otlp`: the server exporting traces there).
async fn open_over(kind: Kind, n: usize, samples: usize, setup: Setup) -> Run {
    let h2 = setup.h2;
    let server = match kind {
        Kind::Switchyard => Target::Switchyard(switchyard(setup.otlp)),
        Kind::Baseline => Target::Raw(RawServer::start()),
    };
    let addr = match &server {
        Target::Switchyard(p) => p.http_url.trim_start_matches("http://").to_owned(),
        Target::Raw(r) => r.sse_addr.clone(),
    };
    let token = server.token();
    let counters = Arc::new(Counters {
        frames: AtomicU64::new(0),
        connected: AtomicU64::new(0),
        ended: AtomicU64::new(0),
        latencies: Mutex::new(Vec::new()),
    });
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::with_capacity(n);
    let every = (n / samples.max(1)).max(1);
    if h2 {
        for first in (0..n).step_by(STREAMS_PER_H2) {
            let tokens = (first..n.min(first + STREAMS_PER_H2)).map(|_| server.token()).collect();
            let (c, stop) = (counters.clone(), stop.clone());
            tasks.push(tokio::spawn(h2_connection(addr.clone(), tokens, first % every == 0, c, stop)));
        }
    }
    for i in (0..n).filter(|_| !h2) {
        // One token per client, as each browser would have: per-token limits stay meaningful.
        let token = server.token();
        tasks.push(tokio::spawn(client(addr.clone(), token, i % every == 0, counters.clone(), stop.clone())));
        if i % 500 == 499 {
            tokio::task::yield_now().await;
        }
        // Thousands of browsers do not connect in the same instant: ramp up a thousand at a
        // time, so the listen backlog is not flooded (dropped SYNs back off for up to a minute).
        if i % 1000 == 999 {
            let ramp = Instant::now() + Duration::from_secs(10);
            while counters.connected.load(Ordering::Relaxed) + 1000 < i as u64 && Instant::now() < ramp {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while counters.connected.load(Ordering::Relaxed) < n as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Run { server, addr, token, counters, stop, tasks }
}

/// The real server, in its own process; with `otlp`, exporting traces there at the default sampling.
fn switchyard(otlp: Option<std::net::SocketAddr>) -> Process {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    // One tenant holds every connection here; lift the per-tenant cap to the process cap.
    let config = dir.join("bench.toml");
    let mut toml = "[sse]\nmax_connections = 19500\nmax_per_tenant = 19500\nmax_pending_per_ip = 0\n".to_owned();
    if let Some(addr) = otlp {
        toml += &format!("[telemetry]\notlp_endpoint = \"http://{addr}\"\n");
    }
    std::fs::write(&config, toml).expect("config");
    let mut args = vec!["--config", config.to_str().expect("utf-8 path")];
    let backplane = std::env::var("FANOUT_BACKPLANE").unwrap_or_default();
    if !backplane.is_empty() {
        args.extend(["--backplane", backplane.as_str()]);
    }
    Process::serve(&dir, &args)
}

impl Run {
    async fn close(self) -> Vec<u64> {
        self.stop.notify_waiters();
        for t in self.tasks {
            let _ = t.await;
        }
        let mut lat = std::mem::take(&mut *self.counters.latencies.lock().await);
        lat.sort_unstable();
        let _ = (self.addr, self.token);
        drop(self.server);
        lat
    }
}

/// Publishes `rate` events/s for `secs` (see [`load::publish_paced`]), to whichever server runs.
async fn publish(run: &Run, rate: u64, secs: u64) -> u64 {
    match &run.server {
        Target::Switchyard(p) => load::publish_paced(&p.grpc_url, &p.token("bench", Role::Publish), rate, secs).await,
        Target::Raw(r) => publish_raw(r, rate, secs).await,
    }
}

/// `rate` events/s for `secs` to the baseline: frames shaped like Switchyard's (`id`, `event:
/// alert:warning`, an envelope with the title and the publish time), pre-encoded here.
async fn publish_raw(r: &RawServer, rate: u64, secs: u64) -> u64 {
    let mut control = TcpStream::connect(&r.control_addr).await.expect("control");
    let big = "x".repeat(100);
    let mut pace = Pace::new(rate, secs);
    let mut sent = 0u64;
    let mut out = Vec::new();
    while let Some(due) = pace.tick().await {
        while sent < due {
            let id = sent + 1;
            let frame = format!(
                "id: {id}\nevent: alert:warning\ndata: {{\"id\":\"{id}\",\"tenant\":\"bench\",\"publishedAt\":\"2026-11-30T00:00:00Z\",\"alertWarning\":{{\"title\":\"{sent}-{big}\",\"message\":\"{}\"}}}}\n\n",
                now_micros()
            );
            out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            out.extend_from_slice(frame.as_bytes());
            sent += 1;
        }
        control.write_all(&out).await.expect("control write");
        out.clear();
    }
    sent
}

async fn latency(kind: Kind, n: usize, rate: u64, secs: u64) -> f64 {
    let run = open(kind, n, 20).await;
    let name = run.server.name();
    let connected = run.counters.connected.load(Ordering::Relaxed);
    let sent = publish(&run, rate, secs).await;
    let target = sent * n as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while run.counters.frames.load(Ordering::Relaxed) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let frames = run.counters.frames.load(Ordering::Relaxed);
    let ended = run.counters.ended.load(Ordering::Relaxed);
    let lat = run.close().await;
    println!(
        "latency_{n} {name}: {connected} subscribers, {sent} events at {rate}/s for {secs} s; delivered {frames}/{target} ({}; {ended} streams ended by the server); publish→SSE p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
        if frames == target { "nothing lost" } else { "MISSING" },
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().map(|v| *v as f64 / 1000.0).unwrap_or(f64::NAN),
        lat.len()
    );
    pct(&lat, 0.99)
}

/// Deliveries/s, whether nothing was lost, and the p99 (ms).
/// Where `throughput` runs: the server's and this load client's cores (`taskset` lists), or
/// wherever the scheduler puts them.
#[derive(Clone, Copy)]
struct Cores {
    server: &'static str,
    client: &'static str,
}

/// How a `throughput` run is set up beyond its load.
#[derive(Clone, Copy, Default)]
struct Setup {
    /// Pin server and client (else the scheduler places them).
    cores: Option<Cores>,
    /// Streams over HTTP/2 connections instead of one HTTP/1.1 connection each.
    h2: bool,
    /// Where the server exports traces (none: tracing off).
    otlp: Option<std::net::SocketAddr>,
}

/// Deliveries/s, whether nothing was lost, and the p99 (ms); also prints the server's CPU
/// seconds per million deliveries.
async fn throughput(kind: Kind, n: usize, rate: u64, secs: u64) -> (f64, bool, f64) {
    throughput_on(kind, n, rate, secs, Setup::default()).await
}

async fn throughput_on(kind: Kind, n: usize, rate: u64, secs: u64, setup: Setup) -> (f64, bool, f64) {
    let run = open_over(kind, n, 10, setup).await;
    let cores = setup.cores;
    if let Some(c) = cores {
        load::pin(run.server.pid(), c.server);
        load::pin(std::process::id(), c.client);
    }
    let cpu_before = load::cpu_secs(run.server.pid());
    let client_before = load::cpu_secs(std::process::id());
    let name = run.server.name();
    let connected = run.counters.connected.load(Ordering::Relaxed);
    let start = Instant::now();
    let sent = publish(&run, rate, secs).await;
    let target = sent * n as u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while run.counters.frames.load(Ordering::Relaxed) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = load::cpu_secs(run.server.pid()) - cpu_before;
    let client_cpu = load::cpu_secs(std::process::id()) - client_before;
    let frames = run.counters.frames.load(Ordering::Relaxed);
    let ended = run.counters.ended.load(Ordering::Relaxed);
    let lat = run.close().await;
    if cores.is_some() {
        load::unpin(std::process::id());
    }
    let mut pinned =
        cores.map(|c| format!(" [server on cores {}, client on {}]", c.server, c.client)).unwrap_or_default();
    if setup.h2 {
        pinned += &format!(" [HTTP/2: {STREAMS_PER_H2} streams a connection]");
    }
    if setup.otlp.is_some() {
        pinned += " [traces exported over OTLP, default sampling]";
    }
    println!(
        "throughput_{n} {name}{pinned} at {rate}/s: {sent} events × {n} subscribers ({connected} connected) = {frames}/{target} deliveries in {elapsed:.2} s = {:.0} deliveries/s ({}; {ended} streams ended by the server); server CPU {cpu:.2} s = {:.2} CPU-s per million deliveries (load client {client_cpu:.2} s); publish→SSE p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        frames as f64 / elapsed,
        if frames == target { "nothing lost" } else { "MISSING" },
        cpu * 1e6 / frames.max(1) as f64,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().map(|v| *v as f64 / 1000.0).unwrap_or(f64::NAN),
    );
    (frames as f64 / elapsed, frames == target, pct(&lat, 0.99))
}

/// The most deliveries/s with nothing lost and p99 ≤ 100 ms, offering `n` subscribers ever
/// more events/s (stopping at the first rate that fails).
async fn max_sustainable(kind: Kind, n: usize, secs: u64, setup: Setup) -> f64 {
    let mut top = 0f64;
    for rate in [1_000, 1_500, 2_000, 2_500, 3_000, 3_500, 4_000, 5_000, 6_000, 8_000] {
        let (per_s, complete, p99) = throughput_on(kind, n, rate, secs, setup).await;
        if !(complete && p99 <= 100.0) {
            break;
        }
        top = top.max(per_s);
    }
    top
}

/// [`max_sustainable`] for the baseline, then Switchyard, in one run.
async fn saturate(n: usize, secs: u64) {
    // `FANOUT_SATURATE=switchyard` measures Switchyard alone (comparing changes between runs).
    let only = std::env::var("FANOUT_SATURATE").unwrap_or_default();
    let baseline = match only.as_str() {
        "switchyard" => f64::NAN,
        _ => max_sustainable(Kind::Baseline, n, secs, Setup::default()).await,
    };
    let switchyard = max_sustainable(Kind::Switchyard, n, secs, Setup::default()).await;
    println!(
        "saturate_{n}: max sustainable (nothing lost, p99 ≤ 100 ms): baseline {baseline:.0}/s, switchyard {switchyard:.0}/s = {:.0} % of the baseline",
        100.0 * switchyard / baseline
    );
}

async fn idle(n: usize) {
    let run = open(Kind::Switchyard, 0, 0).await;
    let pid = server_pid(&run.server);
    let before = rss_kib(pid);
    let run2 = {
        let mut tasks = Vec::new();
        for _ in 0..n {
            let token = run.server.token();
            tasks.push(tokio::spawn(client(run.addr.clone(), token, false, run.counters.clone(), run.stop.clone())));
        }
        tasks
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.counters.connected.load(Ordering::Relaxed) < n as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connected = run.counters.connected.load(Ordering::Relaxed);
    let after = rss_kib(pid);
    println!(
        "idle_{n}: {connected} idle SSE connections; server RSS {before} KiB → {after} KiB = {:.2} KiB per connection",
        (after.saturating_sub(before)) as f64 / connected.max(1) as f64
    );
    run.stop.notify_waiters();
    for t in run2 {
        let _ = t.await;
    }
    let _ = run.close().await;
}

/// Switchyard's figure over the baseline's, measured one after the other in this run.
fn ratio(baseline: f64, switchyard: f64, what: &str) {
    println!("{what}: switchyard {switchyard:.1} / baseline {baseline:.1} = {:.2}×", switchyard / baseline);
}

/// `throughput` against the baseline, then Switchyard, with the ratio.
async fn both(n: usize, rate: u64, secs: u64) {
    let (b, _, _) = throughput(Kind::Baseline, n, rate, secs).await;
    let (s, _, _) = throughput(Kind::Switchyard, n, rate, secs).await;
    println!("deliveries/s: switchyard {s:.0} / baseline {b:.0} = {:.0} % of the baseline", 100.0 * s / b);
}

/// Whether fan-out spreads over cores: Switchyard's [`max_sustainable`] rate with the server
/// pinned to one core (this client on the other), then on both (sharing them with the client:
/// a 2-core machine has no third core to give the client).
async fn cores(n: usize, secs: u64) {
    let one = Cores { server: "0", client: "1" };
    let two = Cores { server: "0,1", client: "0,1" };
    let a = max_sustainable(Kind::Switchyard, n, secs, Setup { cores: Some(one), ..Setup::default() }).await;
    let b = max_sustainable(Kind::Switchyard, n, secs, Setup { cores: Some(two), ..Setup::default() }).await;
    println!("cores_{n}: max sustainable with the server on 1 core {a:.0}/s, on 2 cores {b:.0}/s = {:.2}×", b / a);
}

/// The same load over HTTP/1.1 (a connection a stream) and over HTTP/2 (streams multiplexed).
async fn h2(n: usize, rate: u64, secs: u64) {
    let (a, _, _) = throughput_on(Kind::Switchyard, n, rate, secs, Setup::default()).await;
    let (b, _, _) = throughput_on(Kind::Switchyard, n, rate, secs, Setup { h2: true, ..Setup::default() }).await;
    println!("h2_{n}: HTTP/1.1 {a:.0} deliveries/s, HTTP/2 {b:.0} deliveries/s = {:.2}×", b / a);
}

/// What tracing costs fan-out: the same load without telemetry, then exporting traces over
/// OTLP (to a receiver in this process) at the default sampling, in one run.
async fn traced(n: usize, rate: u64, secs: u64) {
    let (collector, addr, receiver) = switchyard_tests::otlp::Collector::start().await;
    let (a, _, _) = throughput_on(Kind::Switchyard, n, rate, secs, Setup::default()).await;
    let (b, _, _) =
        throughput_on(Kind::Switchyard, n, rate, secs, Setup { otlp: Some(addr), ..Setup::default() }).await;
    receiver.abort();
    println!(
        "traced_{n}: untraced {a:.0} deliveries/s, traced {b:.0} deliveries/s = {:.1} % ({} spans received)",
        100.0 * b / a,
        collector.len()
    );
}

fn server_pid(t: &Target) -> u32 {
    t.pid()
}

async fn hold(n: usize) {
    let run = open(Kind::Switchyard, n, 0).await;
    let connected = run.counters.connected.load(Ordering::Relaxed);
    let pid = server_pid(&run.server);
    let sent = publish(&run, 10, 2).await;
    let target = sent * n as u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while run.counters.frames.load(Ordering::Relaxed) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let frames = run.counters.frames.load(Ordering::Relaxed);
    println!(
        "connections_{n}: {connected} concurrent SSE connections open on one server process (RSS {} KiB); {sent} events delivered to all: {frames}/{target}",
        rss_kib(pid)
    );
    let _ = run.close().await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    if std::env::var_os(raw_sse::ENV).is_some() {
        return rt.block_on(raw_sse::serve());
    }
    let which = std::env::var("FANOUT_SCENARIOS")
        .unwrap_or_else(|_| "throughput_1k,latency_1k,latency_10k,idle_10k,connections_19k".into());
    let secs: u64 = std::env::var("FANOUT_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    rt.block_on(async {
        println!(
            "# switchyard SSE fan-out ({} cores, load generator in the same machine)",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );
        for s in which.split(',') {
            match s.trim() {
                "throughput_1k" => both(1000, 1000, secs).await,
                "throughput_1k_2x" => both(1000, 2000, secs).await,
                "saturate_1k" => saturate(1000, secs).await,
                "latency_1k" => ratio(
                    latency(Kind::Baseline, 1000, 100, secs).await,
                    latency(Kind::Switchyard, 1000, 100, secs).await,
                    "latency_1000 p99",
                ),
                "latency_10k" => ratio(
                    latency(Kind::Baseline, 10_000, 10, secs).await,
                    latency(Kind::Switchyard, 10_000, 10, secs).await,
                    "latency_10000 p99",
                ),
                "cores_1k" => cores(1000, secs).await,
                "traced_1k" => traced(1000, env_u64("FANOUT_TRACED_RATE", 2000), secs).await,
                "h2_1k" => h2(1000, env_u64("FANOUT_H2_RATE", 2000), secs).await,
                "idle_10k" => idle(10_000).await,
                "connections_19k" => hold(19_000).await,
                other => eprintln!("unknown scenario {other}"),
            }
        }
    });
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
