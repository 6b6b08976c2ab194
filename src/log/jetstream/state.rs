//! The state stream: the latest event of every slot, written by each node's tail in sequence
//! order, the watermark that says how far a node has applied it, and the per-tenant count of
//! state keys quotas are checked against.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;

use crate::log::{LogError, Record};

use super::*;

/// The state keys each tenant holds, counted against `Quotas::max_keys_per_tenant`: the state
/// stream's subjects when the node starts, every slot its tail writes after, and the new keys
/// its own appends were admitted with (kept even if that append then fails: the count errs high,
/// never low). A job's state is not counted: it expires with the job's
/// history (`Nats-TTL`). Nodes count apart, so nodes admitting new keys in the same instant may
/// together pass a quota by what they admit in it (the embedded log's count is exact).
#[derive(Default)]
pub(super) struct Held(Mutex<HashMap<String, HashSet<String>>>);

impl Held {
    pub(super) fn note(&self, tenant: &str, subject: &str) {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let keys = match held.get_mut(tenant) {
            Some(keys) => keys,
            None => held.entry(tenant.to_owned()).or_default(),
        };
        if !keys.contains(subject) {
            keys.insert(subject.to_owned());
        }
    }

    /// Admits `wanted` (tenant, state subject) whole, or refuses it whole naming the quota.
    pub(super) fn admit(&self, wanted: Vec<(&str, String)>, max: u64) -> Result<(), LogError> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut added: HashMap<&str, HashSet<&String>> = HashMap::new();
        for (tenant, subject) in &wanted {
            if !held.get(*tenant).is_some_and(|k| k.contains(subject)) {
                added.entry(tenant).or_default().insert(subject);
            }
        }
        for (tenant, new) in &added {
            let have = held.get(*tenant).map_or(0, HashSet::len) as u64;
            if have + new.len() as u64 > max {
                return Err(LogError::Quota {
                    field: "key",
                    message: format!(
                        "tenant {tenant} holds {have} state keys, its quota is {max} \
                         (log.quotas.max_keys_per_tenant): reuse keys, or ask for a larger quota"
                    ),
                });
            }
        }
        for (tenant, new) in added {
            held.entry(tenant.to_owned()).or_default().extend(new.into_iter().cloned());
        }
        Ok(())
    }
}

/// How far this node's tail has written the state stream.
#[derive(Default)]
pub(super) struct Applied {
    /// Every sequence up to here was seen by the tail...
    pub(super) seen: AtomicU64,
    /// ...and these slot events among them are not yet acknowledged by the state stream.
    /// (A std mutex: held only to insert, remove or read the first entry.)
    pub(super) pending: Mutex<BTreeSet<u64>>,
}

impl Applied {
    /// The state stream holds every slot event up to the returned sequence. `seen` is read
    /// first: a slot event is made pending before `seen` passes it, so none can slip between.
    pub(super) fn watermark(&self) -> u64 {
        let seen = self.seen.load(Ordering::Acquire);
        let first_pending = self.pending.lock().unwrap_or_else(|e| e.into_inner()).first().copied();
        first_pending.map_or(seen, |p| seen.min(p - 1))
    }
}

/// Writes a slot event to the state stream: sent now, in sequence order (so one subject's
/// writes arrive oldest first), acknowledged in the background; retried until stored.
pub(super) async fn write_state(t: &Tail, subject: String, r: &Record, ttl: Option<Duration>) {
    use prost::Message;
    let seq = r.id.get();
    t.applied.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(seq);
    let body = Bytes::from(r.event.encode_to_vec());
    let mut message = Outgoing::with_id(subject.clone(), &format!("state-{seq}"), body);
    if let Some(ttl) = ttl {
        message.headers.insert("Nats-TTL", ttl.as_secs().to_string().as_str());
    }
    let mut pending = t.publisher.send(vec![message.clone()], ACK_WAIT).await;
    let (publisher, applied, js, names) = (t.publisher.clone(), t.applied.clone(), t.js.clone(), t.names.clone());
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            // One message sent, one answer back; the slot leaves `pending` only once stored.
            match pending.answers(ACK_WAIT).await.pop().unwrap_or_else(|| Err("unanswered".into())) {
                Ok(_) => break,
                Err(error) => tracing::warn!(seq, %error, "state write not acknowledged; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            // A retry must not overwrite a newer write of the same slot that got through meanwhile.
            if let Ok(s) = js.get_stream_no_info(&names.state_stream).await
                && let Ok(m) = s.direct_get_last_for_subject(subject.clone()).await
                && stored_id(&m.payload).is_some_and(|id| id >= seq)
            {
                break;
            }
            pending = publisher.send(vec![message.clone()], ACK_WAIT).await;
        }
        applied.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&seq);
    });
}

/// The id of a stored state event without decoding all of it (field 1 first when set).
pub(super) fn stored_id(bytes: &[u8]) -> Option<u64> {
    let mut rest = bytes.strip_prefix(&[0x08])?;
    prost::encoding::decode_varint(&mut rest).ok()
}

/// Records the watermark in the state stream every second it moved, so a restarted node
/// re-applies only what came after it.
pub(super) async fn persist_watermark(names: Names, applied: Arc<Applied>, publisher: Publisher) {
    let mut last = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let w = applied.watermark();
        if w == last {
            continue;
        }
        let message = Outgoing {
            subject: names.watermark_subject(),
            headers: Default::default(),
            payload: Bytes::from(w.to_string()),
        };
        let pending = publisher.send(vec![message], ACK_WAIT).await;
        if matches!(pending.answers(ACK_WAIT).await.pop(), Some(Ok(_))) {
            last = w;
        }
    }
}
