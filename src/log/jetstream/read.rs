//! Reads: history pages and the state view through short-lived consumers, and bounds, each
//! retried while the stream is electing a leader.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, pull},
};
use futures::StreamExt;

use crate::log::{Bounds, LogError, Record, StateView, Stream};
use crate::names::EventId;

use super::*;

impl JetStreamLog {
    /// Retries a read through transient answers (a consumer not yet ready, "no responders"
    /// while a leader is elected) for up to two seconds: a healthy cluster never fails a read,
    /// and an SSE open never ends on one.
    pub(super) async fn retrying<T, F, Fut>(&self, mut f: F) -> Result<T, LogError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, LogError>>,
    {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut wait = Duration::from_millis(25);
        loop {
            match f().await {
                Err(LogError::Unavailable(e)) if Instant::now() + wait < deadline && self.connected().is_ok() => {
                    tracing::debug!(error = %e, "transient JetStream read failure; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(400));
                }
                other => return other,
            }
        }
    }

    pub(super) async fn read_once(
        &self,
        stream: &Stream,
        after: EventId,
        limit: usize,
    ) -> Result<Vec<Arc<Record>>, LogError> {
        self.connected()?;
        let s = self.js.get_stream_no_info(&self.config.stream).await.map_err(unavailable)?;
        let policy = DeliverPolicy::ByStartSequence { start_sequence: after.get() + 1 };
        let reader = Reader::open(&s, self.filters(stream), policy).await?;
        let consumer = &reader.consumer;
        let mut out = Vec::new();
        'fetch: while out.len() < limit {
            let want = (limit - out.len()).clamp(1, 1000);
            let mut batch = consumer.fetch().max_messages(want).messages().await.map_err(unavailable)?;
            let mut got = 0;
            while let Some(m) = batch.next().await {
                let m = m.map_err(unavailable)?;
                got += 1;
                let seq = m.info().map_err(unavailable)?.stream_sequence;
                let r = record(&m.payload, seq)?;
                let wanted = match &stream {
                    Stream::Channel(_, c) => r.in_any(std::slice::from_ref(c)),
                    _ => true,
                };
                if wanted {
                    out.push(Arc::new(r));
                    if out.len() == limit {
                        break 'fetch;
                    }
                }
            }
            if got == 0 {
                break;
            }
        }
        Ok(out)
    }

    pub(super) async fn state_once(&self, stream: &Stream, after: EventId) -> Result<StateView, LogError> {
        self.connected()?;
        let names = Names::new(&self.config);
        // Read the watermark first: everything up to it is in the state stream now.
        let as_of = self.applied.watermark();
        let filter = match stream {
            Stream::All => format!("{}.*.>", names.state_prefix),
            Stream::Tenant(t) | Stream::Channel(t, _) => format!("{}.{t}.>", names.state_prefix),
        };
        let s = self.js.get_stream_no_info(&names.state_stream).await.map_err(unavailable)?;
        let mut records = Vec::new();
        for m in fetch_all(&s, filter, DeliverPolicy::All).await? {
            // The watermark message (`_meta`, never a tenant) has no id field.
            let Some(id) = stored_id(&m.payload) else { continue };
            if id <= after.get() || id > as_of {
                continue;
            }
            let r = record(&m.payload, id)?;
            if StateView::keeps(stream, &r) {
                records.push(Arc::new(r));
            }
        }
        records.sort_unstable_by_key(|r| r.id);
        Ok(StateView { records, as_of: EventId(as_of) })
    }

    pub(super) async fn bounds_once(&self) -> Result<Bounds, LogError> {
        self.connected()?;
        let s = tokio::time::timeout(Duration::from_secs(3), self.js.get_stream(&self.config.stream))
            .await
            .map_err(|_| unavailable("JetStream did not answer within 3 s"))?
            .map_err(unavailable)?;
        let state = s.cached_info().state.clone();
        self.head.fetch_max(state.last_sequence, Ordering::Relaxed);
        self.oldest.store(if state.messages == 0 { 0 } else { state.first_sequence }, Ordering::Relaxed);
        self.stored.store(state.messages, Ordering::Relaxed);
        // Stream-wide: anything before the first sequence was removed by JetStream's limits.
        // For one channel this may report a gap that only other channels had; never the reverse.
        Ok(Bounds {
            oldest: EventId(if state.messages == 0 { 0 } else { state.first_sequence }),
            trimmed_through: EventId(state.first_sequence.saturating_sub(1)),
            head: EventId(state.last_sequence),
            lost: Default::default(),
        })
    }
}

/// Every message of `s` matching `filter` from `policy` on, through a short-lived consumer.
pub(super) async fn fetch_all(
    s: &jetstream::stream::Stream<()>,
    filter: String,
    policy: DeliverPolicy,
) -> Result<Vec<jetstream::Message>, LogError> {
    let reader = Reader::open(s, vec![filter], policy).await?;
    let mut out = Vec::new();
    loop {
        let mut batch = reader.consumer.fetch().max_messages(1000).messages().await.map_err(unavailable)?;
        let before = out.len();
        while let Some(m) = batch.next().await {
            out.push(m.map_err(unavailable)?);
        }
        if out.len() == before {
            break;
        }
    }
    Ok(out)
}

/// A short-lived, in-memory consumer for one read; deleted (in the background) when dropped.
pub(super) struct Reader {
    pub(super) stream: jetstream::stream::Stream<()>,
    pub(super) consumer: jetstream::consumer::Consumer<pull::Config>,
}

impl Reader {
    pub(super) async fn open(
        stream: &jetstream::stream::Stream<()>,
        filter_subjects: Vec<String>,
        deliver_policy: DeliverPolicy,
    ) -> Result<Self, LogError> {
        let consumer = stream
            .create_consumer(pull::Config {
                filter_subjects,
                deliver_policy,
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        Ok(Self { stream: stream.clone(), consumer })
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let (stream, name) = (self.stream.clone(), self.consumer.cached_info().name.clone());
        tokio::spawn(async move {
            let _ = stream.delete_consumer(&name).await;
        });
    }
}
