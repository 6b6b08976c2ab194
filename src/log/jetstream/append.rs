//! Appends: subjects and `Nats-Msg-Id`s for each event, per-tenant admission, atomic batches
//! where the server has them, and retries through leader elections until `publish_deadline`.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use crate::log::{Appended, LogError};
use crate::{names::EventId, validate::Accepted};

use super::*;

/// JetStream's answer to an atomic batch holding a `Nats-Msg-Id` it has stored before.
pub(super) const BATCH_DUPLICATE: u64 = 10_201;

impl JetStreamLog {
    /// Whether `events` fit their tenants' key quotas (all or none of them).
    pub(super) fn admit(&self, events: &[Accepted]) -> Result<(), LogError> {
        let wanted = events
            .iter()
            .filter(|a| a.routing.keyed_channels().next().is_none())
            .filter_map(|a| {
                let slot = a.routing.state.as_deref()?;
                Some((a.tenant.as_str(), self.names.slot_subject(a.tenant.as_str(), slot, &a.event.key)))
            })
            .collect::<Vec<_>>();
        if wanted.is_empty() {
            return Ok(());
        }
        self.held.admit(wanted, self.config.quotas.max_keys_per_tenant)
    }

    /// Each event's subject and `Nats-Msg-Id`. Keys are per tenant, as in the embedded log: the
    /// Msg-Id carries the tenant (which holds no `:`), so one tenant's key never answers for
    /// another's event. Without a key, a fresh id still makes this call's own retries idempotent.
    pub(super) fn addressed(&self, events: &[Accepted]) -> Vec<Address> {
        events
            .iter()
            .map(|a| Address {
                subject: self.subject(a),
                id: match &a.idempotency_key {
                    Some(k) => format!("{}:{k}", a.tenant),
                    None => format!("sy-{:032x}", rand::random::<u128>()),
                },
            })
            .collect()
    }

    /// Publishes every event (same Msg-Ids on every retry) until all are acknowledged or the
    /// deadline passes.
    /// Past the publish deadline: unavailable (the caller retries with the same keys). Before
    /// it: waits a little, for the next attempt with the same `Nats-Msg-Id`s.
    pub(super) async fn retry_or_give_up(&self, deadline: Instant, last_error: &str) -> Result<(), LogError> {
        if Instant::now() >= deadline {
            return Err(unavailable(format!(
                "JetStream did not acknowledge within {:?} ({last_error}); retry with the same idempotency keys",
                self.config.publish_deadline
            )));
        }
        tracing::info!(error = %last_error, "JetStream publish not acknowledged; retrying with the same Msg-Ids");
        tokio::time::sleep(Duration::from_millis(250)).await;
        Ok(())
    }

    pub(super) async fn publish_with_retry(
        &self,
        events: &[Accepted],
        to: &[Address],
    ) -> Result<Vec<Appended>, LogError> {
        let deadline = Instant::now() + self.config.publish_deadline;
        let mut out: Vec<Option<Appended>> = vec![None; events.len()];
        let mut last_error = String::new();
        loop {
            // While disconnected nothing is sent: the client would buffer it and deliver it after
            // we answered "unavailable", storing an event its publisher was told failed.
            if let Err(e) = self.connected() {
                last_error = e.to_string();
            } else {
                let unanswered: Vec<usize> = (0..events.len()).filter(|i| out[*i].is_none()).collect();
                // The bodies are shared, not copied, on every attempt.
                let messages = unanswered
                    .iter()
                    .map(|&i| Outgoing::with_id(to[i].subject.clone(), &to[i].id, events[i].body.clone()))
                    .collect();
                let pending = self.publisher.send(messages, ACK_WAIT).await;
                for (&i, answer) in unanswered.iter().zip(pending.answers(ACK_WAIT).await) {
                    match answer {
                        Ok(ack) => {
                            self.head.fetch_max(ack.sequence, Ordering::Relaxed);
                            out[i] = Some(Appended { id: EventId(ack.sequence), duplicate: ack.duplicate });
                        }
                        Err(e) => last_error = e,
                    }
                }
            }
            if out.iter().all(Option::is_some) {
                return Ok(out.into_iter().flatten().collect());
            }
            self.retry_or_give_up(deadline, &last_error).await?;
        }
    }

    /// Several events as one atomic batch: all stored, in consecutive sequences, or none.
    /// Retried with the same `Nats-Msg-Id`s until the publish deadline. A batch holding a key
    /// JetStream has stored before is refused whole; then (a retry whose first attempt did
    /// commit, or a batch mixing old keys with new events) each event goes on its own, so the
    /// stored ones answer as duplicates with their ids and only new ones are added.
    pub(super) async fn publish_atomic(&self, events: &[Accepted], to: &[Address]) -> Result<Vec<Appended>, LogError> {
        let deadline = Instant::now() + self.config.publish_deadline;
        let mut last_error;
        loop {
            if let Err(e) = self.connected() {
                last_error = e.to_string();
            } else {
                match tokio::time::timeout_at(deadline.into(), self.send_batch(events, to)).await {
                    Ok(Ok(ack)) => match ack.error {
                        None if ack.count == events.len() as u64 => {
                            self.head.fetch_max(ack.seq, Ordering::Relaxed);
                            let first = ack.seq + 1 - ack.count;
                            return Ok((0..ack.count)
                                .map(|i| Appended { id: EventId(first + i), duplicate: false })
                                .collect());
                        }
                        None => last_error = format!("batch ack counts {} of {}", ack.count, events.len()),
                        Some(e) if e.err_code == BATCH_DUPLICATE => {
                            return self.publish_with_retry(events, to).await;
                        }
                        Some(e) => last_error = e.description,
                    },
                    Ok(Err(e)) => last_error = e,
                    Err(_) => last_error = "no answer to the batch commit".into(),
                }
            }
            self.retry_or_give_up(deadline, &last_error).await?;
        }
    }

    /// One attempt: the messages under a fresh batch id, the first and the commit as requests.
    pub(super) async fn send_batch(&self, events: &[Accepted], to: &[Address]) -> Result<BatchAck, String> {
        let batch = format!("sy-{:032x}", rand::random::<u128>());
        let n = events.len();
        for i in 0..n {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Batch-Id", batch.as_str());
            headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
            headers.insert("Nats-Msg-Id", to[i].id.as_str());
            let body = events[i].body.clone();
            if i + 1 == n {
                headers.insert("Nats-Batch-Commit", "1");
                let reply = self
                    .client
                    .request_with_headers(to[i].subject.clone(), headers, body)
                    .await
                    .map_err(|e| e.to_string())?;
                return serde_json::from_slice(&reply.payload).map_err(|e| format!("batch ack: {e}"));
            } else if i == 0 {
                // The first message as a request: the server has opened the batch before the rest go.
                let reply = self
                    .client
                    .request_with_headers(to[i].subject.clone(), headers, body)
                    .await
                    .map_err(|e| e.to_string())?;
                if !reply.payload.is_empty()
                    && let Ok(BatchAck { error: Some(e), .. }) = serde_json::from_slice::<BatchAck>(&reply.payload)
                {
                    return Ok(BatchAck { seq: 0, count: 0, error: Some(e) });
                }
            } else {
                self.client
                    .publish_with_headers(to[i].subject.clone(), headers, body)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Err("empty batch".into())
    }
}

/// What JetStream answers to an atomic batch's commit.
#[derive(serde::Deserialize)]
pub(super) struct BatchAck {
    #[serde(default)]
    pub(super) seq: u64,
    #[serde(default)]
    pub(super) count: u64,
    pub(super) error: Option<BatchAckError>,
}

#[derive(serde::Deserialize)]
pub(super) struct BatchAckError {
    #[serde(default)]
    pub(super) err_code: u64,
    #[serde(default)]
    pub(super) description: String,
}

/// Where one event goes: its subject, and its `Nats-Msg-Id` (tenant-scoped idempotency key,
/// or a random one).
pub(super) struct Address {
    pub(super) subject: String,
    pub(super) id: String,
}
