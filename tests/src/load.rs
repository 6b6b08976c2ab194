//! What the load benches share: a publishing schedule, a paced publisher over one
//! `PublishStream`, percentiles, and a process's CPU time and core affinity (Linux /proc).

use std::{
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use switchyard::proto::v1::{PublishRequest, event::Payload};

use crate::events;

/// Now, in µs since the epoch: published events carry it (in an alert's `message`) so a
/// subscriber can tell each delivery's latency.
pub fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// A publishing schedule: 10 ms ticks for `secs`, each saying how many events are due by then
/// (exact for rates below one per tick too).
pub struct Pace {
    tick: tokio::time::Interval,
    start: Instant,
    end: Instant,
    rate: u64,
}

impl Pace {
    pub fn new(rate: u64, secs: u64) -> Self {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let start = Instant::now();
        Self { tick, start, end: start + Duration::from_secs(secs), rate }
    }

    /// Events due in all since the start, or `None` once the time is up.
    pub async fn tick(&mut self) -> Option<u64> {
        if Instant::now() >= self.end {
            return None;
        }
        self.tick.tick().await;
        Some(self.rate * self.start.elapsed().as_millis() as u64 / 1000)
    }
}

/// Publishes `rate` `alert:warning` events/s for `secs` through one long-lived `PublishStream`
/// (10 ms ticks, each its share), not waiting on acks between ticks. Each alert's `message` is
/// its publish time ([`now_micros`]), its title a 100-byte padded count. Returns the count,
/// after every one was acknowledged.
pub async fn publish_paced(grpc_url: &str, token: &str, rate: u64, secs: u64) -> u64 {
    let mut c = switchyard_bridge::cli::tools::connect(grpc_url, token).await.expect("gRPC");
    let (tx, rx) = tokio::sync::mpsc::channel::<PublishRequest>(100_000);
    let acks = tokio::spawn(async move {
        let mut acks =
            c.publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("stream").into_inner();
        let mut n = 0u64;
        while let Some(a) = acks.next().await {
            a.expect("ack");
            n += 1;
        }
        n
    });
    let big = "x".repeat(100);
    let mut pace = Pace::new(rate, secs);
    let mut sent = 0u64;
    while let Some(due) = pace.tick().await {
        while sent < due {
            let mut e = events::alert(&format!("{sent}-{big}"));
            if let Some(Payload::AlertWarning(a)) = &mut e.payload {
                a.message = now_micros().to_string();
            }
            tx.send(PublishRequest { event: Some(e) }).await.expect("publisher");
            sent += 1;
        }
    }
    drop(tx);
    let acked = acks.await.expect("acks");
    assert_eq!(acked, sent, "every publish acked");
    sent
}

/// The `q` quantile of sorted µs values, in ms.
pub fn pct(sorted_micros: &[u64], q: f64) -> f64 {
    if sorted_micros.is_empty() {
        return f64::NAN;
    }
    sorted_micros[((sorted_micros.len() as f64 * q) as usize).min(sorted_micros.len() - 1)] as f64 / 1000.0
}

/// CPU seconds (user + system, all threads) a process has used so far.
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return f64::NAN };
    // Fields after the `(comm)`, which may itself hold spaces: utime and stime are 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return f64::NAN };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// `sysconf(_SC_CLK_TCK)`, the unit of /proc's CPU times.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Lets every thread of `pid` run on any online core again (after [`pin`]).
pub fn unpin(pid: u32) {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_else(|_| "0".into());
    pin(pid, online.trim());
}

/// Pins every thread of `pid` (and threads it starts later) to `cpus`, a `taskset` list
/// such as `0` or `0,1`.
pub fn pin(pid: u32, cpus: &str) {
    // A thread that exits while taskset walks them fails the call: try again.
    let ok = (0..5).any(|_| {
        Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(ok, "taskset -a -p -c {cpus} {pid} failed (util-linux installed?)");
}
