//! The shared clock of every SSE stream: one task beats, every open stream holds a cheap
//! receiver instead of a timer and a shutdown future of its own.

use std::time::Duration;

/// The shared clock of every SSE stream: a beat every `sse.heartbeat_secs`, and `Stop` on
/// shutdown. One task drives it ([`run`]); each stream holds a cheap receiver instead
/// of a timer and a shutdown future of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pulse {
    Beat(u64),
    Stop,
}

/// A pulse beating every `period` (its task spawned) until `stopping` turns true.
pub fn start(period: Duration, stopping: tokio::sync::watch::Receiver<bool>) -> tokio::sync::watch::Receiver<Pulse> {
    let (tx, rx) = tokio::sync::watch::channel(Pulse::Beat(0));
    tokio::spawn(run(tx, period, stopping));
    rx
}

/// Beats until `stopping` turns true, then says `Stop`.
pub async fn run(
    tx: tokio::sync::watch::Sender<Pulse>,
    period: Duration,
    stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let stop = switchyard::grpc::stopped(stopping);
    tokio::pin!(stop);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = beat.tick() => {
                n += 1;
                let _ = tx.send(Pulse::Beat(n));
            }
        }
    }
    let _ = tx.send(Pulse::Stop);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Pulse, run};

    #[tokio::test(start_paused = true)]
    async fn the_pulse_beats_on_its_period_and_stops_on_shutdown() {
        let (tx, mut rx) = tokio::sync::watch::channel(Pulse::Beat(0));
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(tx, Duration::from_secs(15), stopping));
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), Pulse::Beat(1));
        let at = tokio::time::Instant::now();
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), Pulse::Beat(2));
        assert_eq!(at.elapsed(), Duration::from_secs(15));
        stop.send(true).unwrap();
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), Pulse::Stop);
        task.await.unwrap();
    }
}
