//! The log of another Switchyard bus, over gRPC: what `switchyard bridge --bus URL` runs on.
//!
//! Appends are forwarded with `PublishStream`; history is read with `Read`; and one upstream
//! `Subscribe` for every tenant feeds the local hub (through the log's `Feed`), so a bridge holds one stream to the
//! bus however many browsers it serves. When the bus goes away the feed reconnects with
//! backoff and resumes after the last id it saw, so local subscribers see no gap.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::{StreamExt, future::BoxFuture};

use switchyard::{
    grpc::{Client, connect},
    log::{Appended, Bounds, Feed, Log, LogError, LogStats, Record, StateView, Stream},
    names::{EventId, Tenant},
    proto::v1::{
        Event, PublishBatchRequest, ReadRequest, StateRequest, SubscribeRequest, publish_ack,
        subscribe_response::Message,
    },
    validate::{Accepted, route},
};

pub struct RemoteLog {
    client: Client,
    head: Arc<AtomicU64>,
    connected: Arc<AtomicBool>,
    feed: tokio::task::JoinHandle<()>,
}

impl Drop for RemoteLog {
    fn drop(&mut self) {
        self.feed.abort();
    }
}

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(e.to_string())
}

impl RemoteLog {
    /// Connects lazily to `url` with a system token and starts the hub feed.
    pub fn new(url: &str, token: &str, live: Feed) -> Result<Self, LogError> {
        let client = connect(url, token).map_err(unavailable)?;
        let head = Arc::new(AtomicU64::new(0));
        let connected = Arc::new(AtomicBool::new(false));
        let feed = tokio::spawn(feed(client.clone(), live, head.clone(), connected.clone()));
        Ok(Self { client, head, connected, feed })
    }

    /// Whether the upstream subscription is currently up (readiness).
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn request(stream: &Stream, after: EventId, limit: usize) -> ReadRequest {
        let (tenant, channels) = scope(stream);
        ReadRequest { channels, after_id: after.get(), limit: limit.min(1000) as u32, tenant, ..Default::default() }
    }
}

/// A stream as the (tenant, channels) of a request.
fn scope(stream: &Stream) -> (String, Vec<String>) {
    match stream {
        Stream::All => ("*".to_owned(), Vec::new()),
        Stream::Tenant(t) => (t.to_string(), Vec::new()),
        Stream::Channel(t, c) => (t.to_string(), vec![c.to_string()]),
    }
}

fn record(event: Event) -> Result<Arc<Record>, LogError> {
    let tenant = Tenant::new(&event.tenant).map_err(|e| LogError::Corrupt(e.to_string()))?;
    let routing = route(&event, None).map_err(|e| LogError::Corrupt(e.to_string()))?;
    Ok(Arc::new(Record::new(event, tenant, routing)))
}

impl RemoteLog {}

/// One upstream subscription for everything, resumed after the last id seen.
async fn feed(mut client: Client, live: Feed, head: Arc<AtomicU64>, connected: Arc<AtomicBool>) {
    let mut backoff = Duration::from_millis(100);
    let mut last: Option<u64> = None;
    loop {
        let req = SubscribeRequest { tenant: "*".into(), from_id: last, coalesce: Some(false), ..Default::default() };
        match client.subscribe(req).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                while let Some(msg) = stream.next().await {
                    let Ok(msg) = msg else { break };
                    match msg.message {
                        Some(Message::Status(s)) => {
                            connected.store(true, Ordering::Relaxed);
                            backoff = Duration::from_millis(100);
                            head.fetch_max(s.head_id, Ordering::Relaxed);
                            if last.is_none() {
                                last = Some(s.head_id);
                            }
                            if !s.complete {
                                tracing::warn!(
                                    oldest = s.oldest_available_id,
                                    "upstream history no longer covers the bridge's position"
                                );
                            }
                        }
                        Some(Message::Event(event)) => {
                            let id = event.id;
                            let tenant = Tenant::new(&event.tenant);
                            let routing = route(&event, None);
                            if let (Ok(tenant), Ok(routing)) = (tenant, routing) {
                                live.committed(&[Arc::new(Record::new(event, tenant, routing))]);
                            }
                            last = Some(id);
                            head.fetch_max(id, Ordering::Relaxed);
                        }
                        Some(Message::Gap(g)) => {
                            tracing::warn!(after = g.after_id, next = g.next_id, "upstream gap");
                            last = Some(g.next_id.saturating_sub(1));
                        }
                        Some(Message::StateEnd(_)) | None => {}
                    }
                }
            }
            Err(status) => tracing::debug!(%status, "upstream subscribe failed"),
        }
        connected.store(false, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

impl Log for RemoteLog {
    fn append(&self, events: Vec<Accepted>) -> BoxFuture<'_, Result<Vec<Appended>, LogError>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let n = events.len();
            // One `PublishBatch`: the upstream stores all of them in one commit or none.
            let req = PublishBatchRequest { events: events.into_iter().map(|a| a.event).collect() };
            let acks = client.publish_batch(req).await.map_err(|status| match status.code() {
                tonic::Code::ResourceExhausted => {
                    LogError::Quota { field: "key", message: format!("upstream: {}", status.message()) }
                }
                _ => LogError::Unavailable(format!("upstream refused the batch: {}", status.message())),
            })?;
            let out: Vec<Appended> = acks
                .into_inner()
                .acks
                .into_iter()
                .filter_map(|ack| match ack.result {
                    Some(publish_ack::Result::Id(id)) => Some(Appended { id: EventId(id), duplicate: ack.duplicate }),
                    _ => None,
                })
                .collect();
            if out.len() != n {
                return Err(LogError::Unavailable("upstream acked fewer events than sent".into()));
            }
            Ok(out)
        })
    }

    fn read(&self, stream: Stream, after: EventId, limit: usize) -> BoxFuture<'_, Result<Vec<Arc<Record>>, LogError>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let page = client.read(Self::request(&stream, after, limit)).await.map_err(unavailable)?.into_inner();
            page.events.into_iter().map(record).collect()
        })
    }

    fn state(&self, stream: Stream, after: EventId) -> BoxFuture<'_, Result<StateView, LogError>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let (tenant, channels) = scope(&stream);
            // Every page of one walk: the bus pages its state, the view here is all of it.
            let (mut records, mut cursor, mut as_of) = (Vec::new(), String::new(), 0);
            loop {
                let req = StateRequest { channels: channels.clone(), tenant: tenant.clone(), limit: 10_000, cursor };
                let page = client.state(req).await.map_err(unavailable)?.into_inner();
                as_of = page.as_of_id.max(as_of);
                for e in page.events.into_iter().filter(|e| e.id > after.get()) {
                    records.push(record(e)?);
                }
                if page.next_cursor.is_empty() {
                    break;
                }
                cursor = page.next_cursor;
            }
            Ok(StateView { records, as_of: EventId(as_of) })
        })
    }

    fn id_before(&self, ms: u64) -> BoxFuture<'_, Result<EventId, LogError>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let since =
                pbjson_types::Timestamp { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 };
            let req = ReadRequest { tenant: "*".into(), since: Some(since), ..Default::default() };
            Ok(EventId(client.read(req).await.map_err(unavailable)?.into_inner().next_id))
        })
    }

    fn bounds(&self, stream: Stream) -> BoxFuture<'_, Result<Bounds, LogError>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let page = client.read(Self::request(&stream, EventId(0), 0)).await.map_err(unavailable)?.into_inner();
            self.head.fetch_max(page.head_id, Ordering::Relaxed);
            Ok(Bounds {
                oldest: EventId(page.oldest_available_id),
                trimmed_through: EventId(page.trimmed_through_id),
                head: EventId(page.head_id),
                lost: Default::default(),
            })
        })
    }

    fn apply_retention(&self, _now_ms: u64) -> BoxFuture<'_, Result<(), LogError>> {
        // The bus that owns the history applies retention.
        Box::pin(async { Ok(()) })
    }

    fn stats(&self) -> LogStats {
        LogStats { head: EventId(self.head.load(Ordering::Relaxed)), ..LogStats::default() }
    }

    fn backend(&self) -> &'static str {
        "remote"
    }
}
