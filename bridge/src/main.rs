//! The `switchyard` binary: parses the command line and calls the library.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard::{auth::Role, catalog::Catalog, log::Fsync};
use switchyard_bridge::{
    cli::tools,
    cli::webhook,
    config::{Config, Overrides, process_env},
    serve, telemetry,
};

/// EX_USAGE: bad flags or configuration.
const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(name = "switchyard", version, about = "Switchyard: a real-time event backbone (gRPC EventBus + SSE bridge)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// TOML config file (env SWITCHYARD_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (env SWITCHYARD_DATA_DIR) [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// gRPC listen address; port 0 picks one (env SWITCHYARD_GRPC_ADDR) [default: 127.0.0.1:50051].
    #[arg(long)]
    grpc_addr: Option<SocketAddr>,
    /// HTTP listen address; port 0 picks one (env SWITCHYARD_HTTP_ADDR) [default: 127.0.0.1:8080].
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    /// When appends are acknowledged: always (after fsync), batch, off (env SWITCHYARD_FSYNC).
    #[arg(long)]
    fsync: Option<Fsync>,
    /// Keep the history on NATS JetStream: nats://HOST:PORT[,…] (env SWITCHYARD_BACKPLANE).
    #[arg(long)]
    backplane: Option<String>,
}

#[derive(clap::Args, Clone)]
struct ClientArgs {
    /// Bus gRPC URL [default: from <data-dir>/addr.json, else http://127.0.0.1:50051].
    #[arg(long)]
    bus: Option<String>,
    /// Bearer token (env SWITCHYARD_TOKEN); when absent one is minted from the local data dir's secret.
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Tenant for a minted token.
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Data dir holding secret.key and addr.json.
    #[arg(long, default_value = "./data", env = "SWITCHYARD_DATA_DIR")]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bus, gRPC API and HTTP bridge in one process.
    Serve(ServeArgs),
    /// Run the HTTP edge alone, fed by a bus over gRPC (one upstream stream, fanned out locally).
    /// Verifies client tokens with the same secret as the bus (`auth.secret_file`, or a shared data dir).
    Bridge {
        /// The bus's gRPC URL, e.g. http://127.0.0.1:50051.
        #[arg(long)]
        bus: String,
        #[command(flatten)]
        args: ServeArgs,
    },
    /// Mint a token signed with the data dir's secret.
    Token {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "subscribe")]
        role: Role,
        /// Comma-separated channel globs the token allows (default: all).
        #[arg(long, value_delimiter = ',')]
        channels: Vec<String>,
        /// Lifetime in seconds (at most 366 days: a longer-lived token is refused).
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=switchyard::auth::MAX_TOKEN_LIFETIME_SECS))]
        ttl: u64,
        #[arg(long, default_value = "./data", env = "SWITCHYARD_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Print events as JSON lines as they arrive (over gRPC).
    Tail {
        #[command(flatten)]
        client: ClientArgs,
        /// Comma-separated channels (default: all the token allows).
        #[arg(long, value_delimiter = ',')]
        channels: Vec<String>,
        /// Resume after this event id.
        #[arg(long, conflicts_with = "state")]
        from: Option<u64>,
        /// Start with the current state (the latest snapshot of every key), then follow.
        #[arg(long)]
        state: bool,
    },
    /// Publish events (over gRPC). With `-`, reads newline-delimited JSON events from stdin
    /// and streams them through PublishStream.
    Publish {
        #[command(flatten)]
        client: ClientArgs,
        /// Catalog type, e.g. alert:info (see `switchyard catalog`).
        #[arg(long = "type")]
        event_type: Option<String>,
        /// The payload as JSON.
        #[arg(long, default_value = "{}")]
        json: String,
        /// The event key (order id, job id...).
        #[arg(long)]
        key: Option<String>,
        /// `-` to read events from stdin.
        input: Option<String>,
    },
    /// Print the event catalog as Markdown (docs/events.md), or the browser client's types.
    Catalog {
        /// Print bridge/assets/client.d.ts (one payload type per event) instead.
        #[arg(long)]
        typescript: bool,
    },
    /// Sign webhook bodies as a platform would, or deliver one to a running bridge.
    #[command(subcommand)]
    Webhook(WebhookCommand),
}

#[derive(Subcommand)]
enum WebhookCommand {
    /// Print the signature headers for a body.
    Sign {
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(webhook::platforms()))]
        platform: String,
        /// Secret / webhook key / signing key / whsec_ secret, as configured on the bridge.
        #[arg(long, env = "SWITCHYARD_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// Body file (default: stdin).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Shopify topic / Standard Webhooks type.
        #[arg(long, default_value = "orders/create")]
        topic: String,
        #[arg(long, default_value = "example.myshopify.com")]
        shop: String,
    },
    /// Sign and POST a delivery (a sample one without --file) to /api/webhooks/<platform>.
    Send {
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(webhook::platforms()))]
        platform: String,
        /// Shopify topic (orders/create), Unleashed event type, or Standard Webhooks type.
        #[arg(default_value = "orders/create")]
        topic: String,
        #[arg(long, env = "SWITCHYARD_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        #[arg(long)]
        file: Option<PathBuf>,
        /// Shopify shop domain (must be mapped to a tenant on the bridge).
        #[arg(long, default_value = "example.myshopify.com")]
        shop: String,
        /// Standard Webhooks source name (the URL path segment).
        #[arg(long, default_value = "example")]
        source: String,
        /// The bridge's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    switchyard_bridge::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => return serve_command(args, serve::Backend::Embedded).await,
        Command::Bridge { bus, args } => return serve_command(args, serve::Backend::Remote { bus_url: bus }).await,
        Command::Token { tenant, role, channels, ttl, data_dir } => {
            tools::mint(&data_dir.join("secret.key"), &tenant, role, channels, ttl)
                .map(|t| println!("{t}"))
                .map_err(Into::into)
        }
        Command::Tail { client, channels, from, state } => tail(client, channels, from, state).await,
        Command::Publish { client, event_type, json, key, input } => {
            publish(client, event_type, json, key, input).await
        }
        Command::Webhook(cmd) => webhook(cmd).await,
        Command::Catalog { typescript } => {
            match typescript {
                true => print!("{}", switchyard_bridge::cli::typescript::client_types()),
                false => print!("{}", Catalog::global().to_markdown()),
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_command(args: ServeArgs, backend: serve::Backend) -> ExitCode {
    let flags = Overrides {
        data_dir: args.data_dir,
        grpc_addr: args.grpc_addr,
        http_addr: args.http_addr,
        fsync: args.fsync,
        backplane: args.backplane,
    };
    let config = match Config::load(args.config.as_deref(), &process_env, &flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard: configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let telemetry = match telemetry::init(&config.telemetry) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("switchyard: configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let running = match serve::start_with(config, backend, Default::default()).await {
        Ok(r) => r,
        Err(e @ serve::ServeError::Config(_)) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(EX_USAGE);
        }
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One machine-readable line first (scripts and tests read it), then one for people.
    match running.grpc_addr {
        Some(grpc) => println!("switchyard: grpc={grpc} http={}", running.http_addr),
        None => println!("switchyard: http={}", running.http_addr),
    }
    println!("switchyard: dashboard (token valid 1 h): {}", serve::dashboard_url(&running));
    // No admin token is printed: stdout ends up in logs, and an admin token reads every tenant.
    println!(
        "switchyard: operator console: http://{}/console (sign in with: switchyard token --tenant '*' --role admin)",
        running.http_addr
    );
    println!("switchyard: try (token valid 1 h): {}", serve::try_it(&running));
    let stop = running.stopper();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    running.wait().await;
    // Flushing blocks until the exporter is done, and the exporter's gRPC client runs on this
    // runtime: flush from a blocking thread so the runtime's workers stay free to send.
    let _ = tokio::task::spawn_blocking(move || drop(telemetry)).await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn client(args: &ClientArgs, role: Role) -> anyhow::Result<tools::Client> {
    let url = args.bus.clone().unwrap_or_else(|| tools::local_bus_url(&args.data_dir));
    let token = match &args.token {
        Some(t) => t.clone(),
        None => tools::mint(&args.data_dir.join("secret.key"), &args.tenant, role, Vec::new(), 3600)
            .context("no --token given and no local secret to mint one")?,
    };
    Ok(tools::connect(&url, &token).await?)
}

async fn tail(args: ClientArgs, channels: Vec<String>, from: Option<u64>, state: bool) -> anyhow::Result<()> {
    let mut c = client(&args, Role::Subscribe).await?;
    let mut out = std::io::stdout();
    let start = if state { tools::TailFrom::State } else { from.map_or(tools::TailFrom::Live, tools::TailFrom::After) };
    tools::tail(&mut c, channels, start, String::new(), &mut out).await?;
    Ok(())
}

async fn publish(
    args: ClientArgs,
    event_type: Option<String>,
    json: String,
    key: Option<String>,
    input: Option<String>,
) -> anyhow::Result<()> {
    let mut c = client(&args, Role::Publish).await?;
    match (input.as_deref(), event_type) {
        (Some("-"), _) => {
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            let (ok, failed) = tools::publish_lines(&mut c, stdin).await?;
            eprintln!("published {ok} events, {failed} failed");
            if failed > 0 {
                anyhow::bail!("{failed} events were not published");
            }
        }
        (Some(other), _) => anyhow::bail!("unexpected argument {other:?}; use - to read stdin"),
        (None, Some(ty)) => {
            let data: serde_json::Value = serde_json::from_str(&json).context("--json is not JSON")?;
            let mut line = serde_json::json!({ "type": ty, "data": data });
            if let Some(k) = key {
                line["key"] = k.into();
            }
            let id = tools::publish_one(&mut c, &line.to_string()).await?;
            println!("{id}");
        }
        (None, None) => anyhow::bail!("give --type and --json, or - to read events from stdin"),
    }
    Ok(())
}

fn body_from(file: Option<PathBuf>) -> anyhow::Result<Option<Vec<u8>>> {
    Ok(match file {
        Some(f) => Some(std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?),
        None => None,
    })
}

async fn webhook(cmd: WebhookCommand) -> anyhow::Result<()> {
    match cmd {
        WebhookCommand::Sign { platform, secret, file, topic, shop } => {
            let body = match body_from(file)? {
                Some(b) => b,
                None => {
                    let mut b = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
                    b
                }
            };
            for (k, v) in webhook::sign(&platform, &secret, &topic, &shop, body)?.headers {
                println!("{k}: {v}");
            }
        }
        WebhookCommand::Send { platform, topic, secret, file, shop, source, url } => {
            let body = match body_from(file)? {
                Some(b) => b,
                None => webhook::sample(&platform, &topic)?,
            };
            let signed = webhook::sign(&platform, &secret, &topic, &shop, body)?;
            let path = if platform == "standard" { source } else { platform };
            let target = format!("{}/api/webhooks/{path}", url.trim_end_matches('/'));
            let (status, text) = webhook::send(&target, &signed).await?;
            println!("{status} {text}");
            if !(200..300).contains(&status) {
                anyhow::bail!("the bridge answered {status}");
            }
        }
    }
    Ok(())
}
