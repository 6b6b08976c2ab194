//! Failover: three nats-server processes (R3) and two `switchyard serve --backplane` nodes on
//! 127.0.0.1. The stream leader is killed with SIGKILL again and again while a publisher keeps
//! publishing through node A and both nodes stream to an SSE client each
//! (`switchyard_tests::failover`, which the test script also runs with a few kills).
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

use std::time::{Duration, Instant};

use switchyard::auth::Role;
use switchyard_tests::{Process, Sse, failover::Cluster, http};

fn arg(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
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
    let kills = arg("FAILOVER_KILLS", 20) as u32;
    let reads = arg("FAILOVER_READS", 10_000);
    let opens = arg("FAILOVER_OPENS", 1_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cluster = Cluster::start(dir.path()).await;
        println!("# failover: 3 nats-server (R3), 2 nodes, {kills} leader kills");
        healthy_reads(&cluster.a, &cluster.b, reads, opens).await;
        let streams = cluster.follow();
        let mut recoveries = Vec::new();
        for k in 0..kills {
            let kill = cluster.kill_leader(k, &streams).await;
            println!("kill {k}: leader {}; publish stall {:?}; recovery {:?}", kill.leader, kill.stall, kill.recovery);
            recoveries.push(kill.recovery);
        }
        let met = recoveries.iter().filter(|r| r.is_some_and(|r| r <= Duration::from_secs(2))).count();
        let worst = recoveries.iter().flatten().max().copied();
        println!("failover: recovery ≤ 2 s in {met} of {kills} kills; worst {worst:?}");
        let (missing_a, missing_b, disorder) = streams.finish(&cluster.acked, Duration::from_secs(10)).await;
        println!("acknowledged but missing: node A {missing_a}, node B {missing_b} (of {})", cluster.acked.len());
        println!("out of order or duplicated: {disorder}");
    });
}
