//! Failover: three nats-server processes (R3) and two `switchyard serve --backplane` nodes on
//! 127.0.0.1. The stream leader is killed with SIGKILL again and again while a publisher keeps
//! publishing through node A and both nodes stream to an SSE client each.
//!
//!   cargo build --release -p switchyard-bridge
//!   cargo bench -p switchyard-tests --bench failover
//!
//! Env: `FAILOVER_KILLS` (default 20), `FAILOVER_READS` (10,000 polls), `FAILOVER_OPENS` (1,000
//! SSE opens) for the healthy-cluster read scenario that runs first.
//!
//! Per kill it reports the publish stall (kill → first acknowledged publish) and the recovery:
//! from that first acknowledged publish to its delivery on the slower of the two nodes' SSE
//! streams. Target: recovery ≤ 2 s in every kill. Every acknowledged event must reach both
//! streams, in order, once.

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
use switchyard_tests::{Process, Sse, http, nats};

fn arg(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
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

/// When each id arrived on one node's SSE stream.
type Arrivals = Arc<Mutex<HashMap<u64, Instant>>>;

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

async fn healthy_reads(a: &Process, b: &Process, reads: u64, opens: u64) {
    let token = a.token("acme", Role::Subscribe);
    let started = Instant::now();
    let mut failed = 0u64;
    let mut lat = Vec::with_capacity(reads as usize);
    for i in 0..reads {
        let p = if i % 2 == 0 { a } else { b };
        let t = Instant::now();
        let r = http()
            .get(format!("{}/api/events?channels=alerts&after={}&limit=100", p.http_url, i % 50))
            .bearer_auth(&token)
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 200 => lat.push(t.elapsed()),
            _ => failed += 1,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    let q = |f: f64| {
        lat.get(((lat.len() as f64 * f) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or_default()
    };
    println!(
        "healthy_reads: {reads} polls over two nodes in {secs:.1} s ({:.0}/s), failed {failed}; p50 {:?} p99 {:?}",
        reads as f64 / secs,
        q(0.5),
        q(0.99)
    );
    let mut ended = 0u64;
    let started = Instant::now();
    for i in 0..opens {
        let p = if i % 2 == 0 { a } else { b };
        let mut sse = Sse::connect(&format!("{}/api/sse/alerts", p.http_url), Some(&token), Some(0)).await;
        // A good open answers 200 and then says nothing until an event or a heartbeat.
        let ok = sse.status == 200
            && tokio::time::timeout(Duration::from_millis(20), sse.next()).await.map_or(true, |f| f.is_some());
        if !ok {
            ended += 1;
        }
    }
    println!(
        "healthy_opens: {opens} SSE opens (resuming from 0) in {:.1} s, failed or ended at once {ended}",
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let kills = arg("FAILOVER_KILLS", 20);
    let reads = arg("FAILOVER_READS", 10_000);
    let opens = arg("FAILOVER_OPENS", 1_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let specs = nats::Spec::cluster(&dir.path().join("nats"));
        let mut servers: Vec<Option<nats::Server>> = specs.iter().map(|s| Some(s.start())).collect();
        let urls = specs.iter().map(|s| s.url()).collect::<Vec<_>>().join(",");
        let a = node(&dir.path().join("a"), &urls, None);
        let b = node(&dir.path().join("b"), &urls, Some(&dir.path().join("a")));
        println!("# failover: 3 nats-server (R3), 2 nodes, {kills} leader kills");
        // Something to read, then the healthy-cluster reads.
        let mut client =
            switchyard_bridge::tools::connect(&a.grpc_url, &a.token("acme", Role::Publish)).await.expect("gRPC");
        let mut acked = switchyard_tests::publish_alerts(&mut client, 0..100).await;
        healthy_reads(&a, &b, reads, opens).await;

        let disorder = Arc::new(AtomicU64::new(0));
        let from = *acked.iter().max().expect("acked");
        let (on_a, follow_a) = follow(&a, from, disorder.clone());
        let (on_b, follow_b) = follow(&b, from, disorder.clone());
        let publisher_token = a.token("acme", Role::Publish);
        let mut n = 100u32;
        let mut recoveries = Vec::new();
        for k in 0..kills {
            // Steady traffic before the kill.
            let steady = switchyard_tests::publish_alerts(&mut client, n..n + 20).await;
            n += 20;
            // Both streams are live (they have the steady traffic) before the kill: a stream
            // still reading its history when the leader dies is a resume during an election,
            // not the live delivery this measures.
            let last = *steady.iter().max().expect("acked");
            acked.extend(steady);
            let deadline = Instant::now() + Duration::from_secs(30);
            while !(on_a.lock().expect("a").contains_key(&last) && on_b.lock().expect("b").contains_key(&last))
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let leader = loop {
                let mut found = None;
                for s in servers.iter().flatten() {
                    if let Some((_, _, l)) = s.stream_state("SWITCHYARD").await
                        && !l.is_empty()
                    {
                        found = Some(l);
                    }
                }
                if let Some(l) = found {
                    break l;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let idx = specs.iter().position(|s| s.name == leader).expect("leader is ours");
            let killed_at = Instant::now();
            servers[idx] = None; // SIGKILL
            // Publish every 50 ms until one is acknowledged: the first after the election.
            let first = loop {
                let req = switchyard::proto::v1::PublishRequest {
                    event: Some(switchyard_tests::events::alert(&format!("after kill {k}"))),
                };
                let mut c = switchyard_bridge::tools::connect(&a.grpc_url, &publisher_token).await.expect("gRPC");
                if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(5), c.publish(req)).await {
                    break (r.into_inner().id, Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            acked.push(first.0);
            let stall = first.1 - killed_at;
            // Its delivery on both nodes.
            let deadline = Instant::now() + Duration::from_secs(120);
            let delivered = loop {
                let (x, y) =
                    (on_a.lock().expect("a").get(&first.0).copied(), on_b.lock().expect("b").get(&first.0).copied());
                if let (Some(x), Some(y)) = (x, y) {
                    break Some(x.max(y));
                }
                if Instant::now() > deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            let recovery = delivered.map(|d| d.saturating_duration_since(first.1));
            println!("kill {k}: leader {leader}; publish stall {stall:?}; recovery {recovery:?}");
            recoveries.push(recovery);
            servers[idx] = Some(specs[idx].start());
            // Let the restarted server catch up before the next kill.
            let max = *acked.iter().max().expect("acked");
            let s = servers[idx].as_ref().expect("restarted");
            let deadline = Instant::now() + Duration::from_secs(60);
            while s.stream_state("SWITCHYARD").await.is_none_or(|(_, last, _)| last < max) && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let met = recoveries.iter().filter(|r| r.is_some_and(|r| r <= Duration::from_secs(2))).count();
        let worst = recoveries.iter().flatten().max().copied();
        println!("failover: recovery ≤ 2 s in {met} of {kills} kills; worst {worst:?}");
        // Every acknowledged event on both streams, once, in order.
        let mut want = acked.clone();
        want.sort();
        want.dedup();
        tokio::time::sleep(Duration::from_secs(2)).await;
        follow_a.abort();
        follow_b.abort();
        for (name, arrivals) in [("A", &on_a), ("B", &on_b)] {
            let got = arrivals.lock().expect("arrivals");
            let missing = want.iter().filter(|id| **id > from && !got.contains_key(id)).count();
            println!("node {name}: {} events streamed; acknowledged but missing: {missing}", got.len());
        }
        println!("out of order or duplicated: {}", disorder.load(Ordering::Relaxed));
    });
}
