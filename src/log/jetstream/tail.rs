//! The node's one ordered tail of the stream: it feeds the local hub in sequence order, reads
//! ahead by batched direct get whenever the consumer is silent, and reconnects after the last
//! sequence it delivered.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull},
};
use bytes::Bytes;
use futures::{StreamExt, future::BoxFuture};

use crate::log::{Feed, LogError};

use super::*;

/// What the tail needs: it feeds the hub and writes the state stream.
pub(super) struct Tail {
    pub(super) js: jetstream::Context,
    pub(super) stream: String,
    pub(super) head: Arc<AtomicU64>,
    pub(super) tailing: Arc<AtomicBool>,
    pub(super) feed: Feed,
    pub(super) names: Names,
    pub(super) applied: Arc<Applied>,
    pub(super) publisher: Publisher,
    /// State keys counted against quotas (every slot the tail writes, but a job's).
    pub(super) held: Arc<Held>,
    /// A job's state expires with its history: after the stream's `max_age`.
    pub(super) job_ttl: Duration,
}

/// One ordered consumer over the whole stream, feeding the hub in sequence order and writing
/// each slot event to the state stream; recreated after the last delivered sequence whenever
/// it breaks.
///
/// Beside it, a look every [`WATCHDOG`]: when the consumer delivered nothing since the last
/// look, the tail reads what follows its last sequence with a batched direct get, which any
/// replica answers without a consumer. After a stream leader is lost the consumer is silent
/// until it is recreated on the new leader; the direct read delivers the first events stored
/// after the election within one look, whatever the consumer is doing. Quiet for two looks
/// while the direct read found events: the consumer is stuck, and is recreated.
pub(super) async fn tail(t: Tail) {
    let mut delivered = t.applied.seen.load(Ordering::Acquire);
    let mut backoff = Duration::from_millis(100);
    let mut consumer: Option<pull::Ordered> = None;
    let mut opening: Option<BoxFuture<'static, Result<pull::Ordered, String>>> = None;
    let mut retry_at = tokio::time::Instant::now();
    let mut watchdog = tokio::time::interval(WATCHDOG);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut at_last_look, mut stuck_looks) = (delivered, 0u32);
    loop {
        if consumer.is_none() && opening.is_none() && tokio::time::Instant::now() >= retry_at {
            opening = Some(Box::pin(open_tail(t.js.clone(), t.stream.clone(), delivered + 1)));
        }
        let failed: Option<String> = tokio::select! {
            m = async { consumer.as_mut().expect("guarded").next().await }, if consumer.is_some() => match m {
                Some(Ok(m)) => match m.info() {
                    Ok(info) => {
                        deliver(&t, &mut delivered, info.stream_sequence, &m.payload).await;
                        None
                    }
                    Err(e) => Some(e.to_string()),
                },
                Some(Err(e)) => Some(e.to_string()),
                None => Some("the ordered consumer ended".into()),
            },
            opened = async { opening.as_mut().expect("guarded").await }, if opening.is_some() => {
                opening = None;
                match opened {
                    Ok(c) => {
                        consumer = Some(c);
                        t.tailing.store(true, Ordering::Relaxed);
                        backoff = Duration::from_millis(100);
                        None
                    }
                    Err(e) => Some(e),
                }
            }
            _ = watchdog.tick() => {
                let quiet = delivered == at_last_look;
                let mut failed = None;
                if quiet {
                    match catch_up(&t, &mut delivered).await {
                        Ok(0) => stuck_looks = 0,
                        Ok(n) => {
                            stuck_looks += 1;
                            tracing::info!(events = n, after = delivered, "JetStream tail: delivered by direct get while its consumer was silent");
                            if stuck_looks >= 2 && consumer.is_some() {
                                failed = Some(format!("no delivery from the consumer while the stream moved to {delivered}"));
                            }
                        }
                        Err(error) => tracing::debug!(%error, "JetStream tail: direct get failed"),
                    }
                } else {
                    // The consumer delivers: an earlier look that raced it proves nothing.
                    stuck_looks = 0;
                }
                at_last_look = delivered;
                failed
            }
        };
        if let Some(error) = failed {
            // Never freeze silently: say so, recreate after the last delivered sequence.
            tracing::warn!(%error, after = delivered, "JetStream tail interrupted; resuming by sequence");
            consumer = None;
            opening = None;
            stuck_looks = 0;
            t.tailing.store(false, Ordering::Relaxed);
            retry_at = tokio::time::Instant::now() + backoff;
            backoff = (backoff * 2).min(TAIL_BACKOFF);
        }
    }
}

/// A new ordered consumer over the whole stream from `start`.
pub(super) async fn open_tail(js: jetstream::Context, stream: String, start: u64) -> Result<pull::Ordered, String> {
    let s = js.get_stream_no_info(&stream).await.map_err(|e| e.to_string())?;
    let consumer = s
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: start },
            // Short pulls, so the idle heartbeat follows them down (from the client's 15 s).
            max_expires: TAIL_PULL,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    consumer.messages().await.map_err(|e| e.to_string())
}

/// Reads and delivers, by batched direct get, everything stored after `delivered`; returns
/// how many events it delivered.
pub(super) async fn catch_up(t: &Tail, delivered: &mut u64) -> Result<usize, LogError> {
    let mut total = 0;
    loop {
        let batch = direct_batch(&t.js, &t.stream, ">", *delivered + 1, CATCH_UP_BATCH).await?;
        let full = batch.len() == CATCH_UP_BATCH;
        total += batch.len();
        for (seq, payload) in batch {
            deliver(t, delivered, seq, &payload).await;
        }
        if !full {
            return Ok(total);
        }
    }
}

/// Hands the event at `seq` to the hub (and its slot to the state stream) unless it was
/// delivered already: the consumer and the direct reads may both bring it.
pub(super) async fn deliver(t: &Tail, delivered: &mut u64, seq: u64, payload: &[u8]) {
    if seq <= *delivered {
        return;
    }
    match record(payload, seq) {
        Ok(r) => {
            let r = Arc::new(r);
            if let Some(subject) = t.names.state_subject(&r) {
                let ttl = if r.routing.keyed_channels().next().is_some() {
                    Some(t.job_ttl)
                } else {
                    t.held.note(r.tenant.as_str(), &subject);
                    None
                };
                write_state(t, subject, &r, ttl).await;
            }
            t.feed.committed(&[r]);
        }
        Err(error) => tracing::error!(seq, %error, "unreadable event in the stream; skipped"),
    }
    *delivered = seq;
    t.applied.seen.fetch_max(seq, Ordering::AcqRel);
    t.head.fetch_max(seq, Ordering::Relaxed);
}

/// Up to `max` messages of `stream` from sequence `from` on whose subject matches `subject`,
/// as (sequence, payload), in one batched direct get (ADR-31, nats-server ≥ 2.11): any replica
/// answers it and no consumer is created. Empty when there is none.
pub(super) async fn direct_batch(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
    from: u64,
    max: usize,
) -> Result<Vec<(u64, Bytes)>, LogError> {
    let client = js.client();
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.map_err(unavailable)?;
    let request = serde_json::json!({ "seq": from, "batch": max, "next_by_subj": subject }).to_string();
    client
        .publish_with_reply(format!("$JS.API.DIRECT.GET.{stream}"), inbox, request.into())
        .await
        .map_err(unavailable)?;
    let deadline = tokio::time::Instant::now() + TAIL_API_TIMEOUT;
    let mut out = Vec::new();
    while out.len() < max {
        let m = tokio::time::timeout_at(deadline, answers.next())
            .await
            .map_err(|_| unavailable("direct get: no answer in time"))?
            .ok_or_else(|| unavailable("direct get: no answer"))?;
        match m.status.map(|s| s.as_u16()) {
            // 204: the end of the batch; 404: nothing from `from` on.
            Some(204 | 404) => break,
            Some(200) | None => {}
            Some(code) => {
                return Err(unavailable(format!("direct get: {code} {}", m.description.unwrap_or_default())));
            }
        }
        let seq = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Sequence"))
            .and_then(|v| v.as_str().parse().ok())
            .ok_or_else(|| LogError::Corrupt("direct get: an answer without Nats-Sequence".into()))?;
        out.push((seq, m.payload));
    }
    Ok(out)
}
