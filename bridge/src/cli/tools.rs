//! Command-line tools for people and scripts, speaking gRPC to a running bus:
//! `tail`, `publish`, and `token` (minted from the local data dir's secret).

use std::{io::Write, path::Path};

use futures::StreamExt;
use switchyard::{
    auth::{Role, Signer},
    json::{event_from_json, event_to_json},
    proto::v1::{PublishRequest, Start, SubscribeRequest, publish_ack, subscribe_response},
};
use tokio::io::AsyncBufReadExt;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot reach the bus at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("{}: {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
}

pub use switchyard::grpc::Client;

/// Connects now (so a wrong address fails here, with the URL in the error).
pub async fn connect(url: &str, token: &str) -> Result<Client, ToolError> {
    let client =
        switchyard::grpc::connect(url, token).map_err(|message| ToolError::Connect { url: url.into(), message })?;
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| ToolError::Connect { url: url.into(), message: e.to_string() })?
        .connect()
        .await
        .map_err(|e| ToolError::Connect { url: url.into(), message: e.to_string() })?;
    Ok(client)
}

/// The gRPC URL of a local `serve` from its addr.json, else the default.
pub fn local_bus_url(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("addr.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["grpc"].as_str().map(|a| format!("http://{a}")))
        .unwrap_or_else(|| "http://127.0.0.1:50051".into())
}

/// Mints a token with the secret in `secret_file`.
pub fn mint(
    secret_file: &Path,
    tenant: &str,
    role: Role,
    channels: Vec<String>,
    ttl_secs: u64,
) -> Result<String, ToolError> {
    let secret = crate::secret::load_or_create(secret_file)?;
    Ok(Signer::hs256(&secret).mint(tenant, role, channels, ttl_secs))
}

/// Where `tail` starts.
#[derive(Debug, Clone, Copy)]
pub enum TailFrom {
    Live,
    After(u64),
    State,
}

/// Prints events as JSON lines as they arrive, like `nats sub`.
pub async fn tail(
    client: &mut Client,
    channels: Vec<String>,
    from: TailFrom,
    tenant: String,
    out: &mut (dyn Write + Send),
) -> Result<(), ToolError> {
    let (from_id, start) = match from {
        TailFrom::Live => (None, Start::Unspecified),
        TailFrom::After(id) => (Some(id), Start::Unspecified),
        TailFrom::State => (None, Start::State),
    };
    let req = SubscribeRequest {
        channels,
        from_id,
        tenant,
        coalesce: Some(false),
        start: start as i32,
        ..Default::default()
    };
    let mut stream = client.subscribe(req).await?.into_inner();
    while let Some(msg) = stream.next().await {
        match msg?.message {
            Some(subscribe_response::Message::Status(s)) if !s.complete => {
                eprintln!("# resume incomplete: history starts at id {}", s.oldest_available_id);
            }
            Some(subscribe_response::Message::Status(_)) => {}
            Some(subscribe_response::Message::Event(e)) => {
                writeln!(out, "{}", event_to_json(&e))?;
                out.flush()?;
            }
            Some(subscribe_response::Message::Gap(g)) => {
                eprintln!("# gap: events after {} before {} are gone ({})", g.after_id, g.next_id, g.reason);
            }
            Some(subscribe_response::Message::StateEnd(s)) => {
                eprintln!("# state as of id {} ({} events); following", s.as_of_id, s.events);
            }
            None => {}
        }
    }
    Ok(())
}

/// Publishes one event given as its type and payload JSON; prints the id.
pub async fn publish_one(client: &mut Client, line: &str) -> Result<u64, ToolError> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| ToolError::Input(format!("not JSON: {e}")))?;
    let event = event_from_json(value).map_err(|e| ToolError::Input(e.to_string()))?;
    let r = client.publish(PublishRequest { event: Some(event) }).await?.into_inner();
    Ok(r.id)
}

/// Reads newline-delimited JSON events from stdin and streams them through
/// `PublishStream`, pipelined. Returns (published, failed).
pub async fn publish_lines<R: tokio::io::AsyncBufRead + Unpin + Send + 'static>(
    client: &mut Client,
    input: R,
) -> Result<(u64, u64), ToolError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<PublishRequest>(4096);
    let (bad_tx, mut bad_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, String)>();
    let reader = tokio::spawn(async move {
        let mut lines = input.lines();
        let mut n = 0u64;
        let mut sent = 0u64;
        while let Ok(Some(line)) = lines.next_line().await {
            n += 1;
            if line.trim().is_empty() {
                continue;
            }
            let event = serde_json::from_str::<serde_json::Value>(&line)
                .map_err(|e| format!("not JSON: {e}"))
                .and_then(|v| event_from_json(v).map_err(|e| e.to_string()));
            match event {
                Ok(e) => {
                    if tx.send(PublishRequest { event: Some(e) }).await.is_err() {
                        break;
                    }
                    sent += 1;
                }
                Err(m) => {
                    let _ = bad_tx.send((n, m));
                }
            }
        }
        sent
    });
    let mut acks = client.publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let (mut ok, mut failed) = (0u64, 0u64);
    while let Some(ack) = acks.next().await {
        let ack = ack?;
        match ack.result {
            Some(publish_ack::Result::Id(_)) => ok += 1,
            Some(publish_ack::Result::Error(e)) => {
                failed += 1;
                // seq counts events sent, i.e. lines that parsed.
                eprintln!("event #{}: {}: {}", ack.seq + 1, e.code, e.message);
            }
            None => {}
        }
    }
    let _sent = reader.await.map_err(|e| ToolError::Input(e.to_string()))?;
    while let Ok((line, m)) = bad_rx.try_recv() {
        failed += 1;
        eprintln!("line {line}: {m}");
    }
    Ok((ok, failed))
}
