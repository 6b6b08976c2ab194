//! Leader kills on a live cluster: three nats-server processes (R3) and two `switchyard serve
//! --backplane` nodes on 127.0.0.1, a publisher on node A and an SSE client on each node. The
//! stream leader is killed with SIGKILL again and again; each kill measures the publish stall
//! (kill → first acknowledged publish) and the recovery (that publish → its delivery on the
//! slower of the two SSE streams), then restarts the server on its store and waits until it has
//! caught up. Shared by the failover test (a few kills, in the test script) and the failover
//! bench (twenty, with figures).

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use switchyard::auth::Role;

use crate::{Process, Sse, nats};

/// The cluster, its two nodes, and every id acknowledged so far.
pub struct Cluster {
    pub specs: Vec<nats::Spec>,
    pub servers: Vec<Option<nats::Server>>,
    pub a: Process,
    pub b: Process,
    pub acked: Vec<u64>,
    client: switchyard_bridge::cli::tools::Client,
    published: u32,
}

/// What one kill measured.
#[derive(Debug)]
pub struct Kill {
    pub leader: String,
    pub stall: Duration,
    /// `None`: not delivered on both nodes within two minutes.
    pub recovery: Option<Duration>,
}

/// What both SSE clients saw.
pub struct Streams {
    from: u64,
    on_a: Arrivals,
    on_b: Arrivals,
    disorder: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// When each id arrived on one node's SSE stream.
type Arrivals = Arc<Mutex<HashMap<u64, Instant>>>;

impl Cluster {
    /// Starts the servers and both nodes under `dir`, and publishes 100 alerts through A.
    pub async fn start(dir: &Path) -> Self {
        let specs = nats::Spec::cluster(&dir.join("nats"));
        let servers: Vec<Option<nats::Server>> = specs.iter().map(|s| Some(s.start())).collect();
        let urls = specs.iter().map(|s| s.url()).collect::<Vec<_>>().join(",");
        let a = node(&dir.join("a"), &urls, None);
        let b = node(&dir.join("b"), &urls, Some(&dir.join("a")));
        let mut client =
            switchyard_bridge::cli::tools::connect(&a.grpc_url, &a.token("acme", Role::Publish)).await.expect("gRPC");
        let acked = crate::publish_alerts(&mut client, 0..100).await;
        Self { specs, servers, a, b, acked, client, published: 100 }
    }

    /// An SSE client on each node, following `alerts` from the last acknowledged id.
    pub fn follow(&self) -> Streams {
        let from = *self.acked.iter().max().expect("acked");
        let disorder = Arc::new(AtomicU64::new(0));
        let (on_a, task_a) = follow(&self.a, from, disorder.clone());
        let (on_b, task_b) = follow(&self.b, from, disorder.clone());
        Streams { from, on_a, on_b, disorder, tasks: vec![task_a, task_b] }
    }

    /// Publishes 20 alerts, waits until both streams have them, kills the leader, measures,
    /// restarts it and waits until it caught up.
    pub async fn kill_leader(&mut self, k: u32, streams: &Streams) -> Kill {
        let steady = crate::publish_alerts(&mut self.client, self.published..self.published + 20).await;
        self.published += 20;
        // Both streams are live before the kill: a stream still reading its history when the
        // leader dies is a resume during an election, not the live delivery measured here.
        let last = *steady.iter().max().expect("acked");
        self.acked.extend(steady);
        streams.delivered(last, Duration::from_secs(30)).await;
        let leader = self.leader().await;
        let idx = self.specs.iter().position(|s| s.name == leader).expect("leader is ours");
        let killed_at = Instant::now();
        self.servers[idx] = None; // SIGKILL
        let (first, acked_at) = self.first_ack_after(k).await;
        self.acked.push(first);
        let recovery =
            streams.delivered(first, Duration::from_secs(120)).await.map(|d| d.saturating_duration_since(acked_at));
        self.servers[idx] = Some(self.specs[idx].start());
        self.caught_up(idx).await;
        Kill { leader, stall: acked_at - killed_at, recovery }
    }

    async fn leader(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "no server names a stream leader after 60 s");
            for s in self.servers.iter().flatten() {
                if let Some((_, _, l)) = s.stream_state("SWITCHYARD").await
                    && !l.is_empty()
                {
                    return l;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes through A every 50 ms until one is acknowledged: the first after the election.
    async fn first_ack_after(&self, k: u32) -> (u64, Instant) {
        let token = self.a.token("acme", Role::Publish);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(Instant::now() < deadline, "kill {k}: no publish acknowledged within 120 s");
            let req =
                switchyard::proto::v1::PublishRequest { event: Some(crate::events::alert(&format!("after kill {k}"))) };
            let mut c = switchyard_bridge::cli::tools::connect(&self.a.grpc_url, &token).await.expect("gRPC");
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(5), c.publish(req)).await {
                return (r.into_inner().id, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to a minute) until the restarted server `idx` holds every acknowledged event.
    async fn caught_up(&self, idx: usize) {
        let max = *self.acked.iter().max().expect("acked");
        let s = self.servers[idx].as_ref().expect("restarted");
        let deadline = Instant::now() + Duration::from_secs(60);
        while s.stream_state("SWITCHYARD").await.is_none_or(|(_, last, _)| last < max) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Streams {
    /// When `id` had reached both streams (the later arrival), waiting up to `wait`.
    async fn delivered(&self, id: u64, wait: Duration) -> Option<Instant> {
        let deadline = Instant::now() + wait;
        loop {
            let (x, y) =
                (self.on_a.lock().expect("a").get(&id).copied(), self.on_b.lock().expect("b").get(&id).copied());
            if let (Some(x), Some(y)) = (x, y) {
                return Some(x.max(y));
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until every acknowledged id after the start reached both streams (up to `wait`),
    /// stops following, and returns how many were missing on A and on B, and how many ids
    /// arrived out of order or twice.
    pub async fn finish(self, acked: &[u64], wait: Duration) -> (usize, usize, u64) {
        let want: Vec<u64> = acked.iter().copied().filter(|id| *id > self.from).collect();
        let missing = |on: &Arrivals| {
            let got = on.lock().expect("arrivals");
            want.iter().filter(|id| !got.contains_key(id)).count()
        };
        let deadline = Instant::now() + wait;
        while (missing(&self.on_a) > 0 || missing(&self.on_b) > 0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for t in &self.tasks {
            t.abort();
        }
        (missing(&self.on_a), missing(&self.on_b), self.disorder.load(Ordering::Relaxed))
    }
}

fn node(dir: &Path, urls: &str, secret_from: Option<&Path>) -> Process {
    std::fs::create_dir_all(dir).expect("dir");
    if let Some(from) = secret_from {
        std::fs::copy(from.join("secret.key"), dir.join("secret.key")).expect("secret");
    }
    let config = dir.join("node.toml");
    std::fs::write(&config, "[nats]\nreplicas = 3\npublish_deadline_secs = 30\n").expect("config");
    // The cluster may still be electing its meta leader: retry the start for a while.
    for _ in 0..40 {
        let started = std::panic::catch_unwind(|| {
            Process::serve(dir, &["--backplane", urls, "--config", config.to_str().expect("utf-8")])
        });
        if let Ok(p) = started {
            return p;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("node did not start");
}

/// Follows `alerts` on node `p` after id `from`, resuming after the last id if the stream
/// ends; counts ids that do not increase (duplicates, reorders).
fn follow(p: &Process, from: u64, disorder: Arc<AtomicU64>) -> (Arrivals, tokio::task::JoinHandle<()>) {
    let arrivals: Arrivals = Arc::default();
    let (url, token, a) =
        (format!("{}/api/sse/alerts", p.http_url), p.token("acme", Role::Subscribe), arrivals.clone());
    let task = tokio::spawn(async move {
        // Resuming from `from`, so nothing published while it connects is missed.
        let mut last = Some(from);
        loop {
            let mut sse = Sse::connect(&url, Some(&token), last).await;
            while let Some(f) = sse.next().await {
                if let (Some(id), Some(kind)) = (f.id_u64(), f.event.as_deref())
                    && kind.starts_with("alert:")
                {
                    if last.is_some_and(|l| id <= l) {
                        disorder.fetch_add(1, Ordering::Relaxed);
                    }
                    a.lock().expect("arrivals").insert(id, Instant::now());
                    last = Some(id);
                }
            }
            eprintln!("SSE stream ended; resuming after {last:?}");
        }
    });
    (arrivals, task)
}
