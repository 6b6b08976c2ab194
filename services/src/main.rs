//! `switchyard-ingest --bus http://HOST:PORT --config FILE`: the connectors as their own process,
//! publishing to a bus over gRPC with a publish token (`--token` or `SWITCHYARD_TOKEN`).

use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use clap::Parser;
use switchyard_services::{config::IngestConfig, sink::GrpcSink};

#[derive(Parser)]
#[command(name = "switchyard-ingest", version, about = "Switchyard ingestion connectors")]
struct Cli {
    /// The bus's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    bus: String,
    #[arg(long)]
    config: PathBuf,
    /// A token with the publish role (make one with `switchyard token --role publish`).
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    token: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let text = std::fs::read_to_string(&cli.config).with_context(|| format!("reading {}", cli.config.display()))?;
    let config =
        IngestConfig::from_toml(&text).map_err(anyhow::Error::msg).with_context(|| cli.config.display().to_string())?;
    let sink = Arc::new(GrpcSink::new(&cli.bus, &cli.token).map_err(anyhow::Error::msg)?);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running =
        switchyard_services::config::start(&config, sink, Some((cli.bus.clone(), cli.token.clone())), stopped)
            .map_err(anyhow::Error::msg)?;
    println!("switchyard-ingest: {} task(s), publishing to {}", running.tasks.len(), cli.bus);
    tokio::signal::ctrl_c().await.ok();
    let _ = stop.send(true);
    for t in running.tasks {
        let _ = t.await;
    }
    Ok(())
}
