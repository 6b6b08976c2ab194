//! `switchyard serve`: bus + gRPC + HTTP bridge in one process.
//!
//! [`start`] binds both listeners before returning, so callers (main, tests)
//! know the real addresses (port 0 picks a free one) without sleeping; the
//! addresses are also printed and written to `<data_dir>/addr.json`.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use switchyard::{
    auth::{Role, Signer, Verifier},
    bus::Bus,
    hub::Hub,
    ledger::{JetStreamLedger, Ledger, LocalLedger},
    log::{
        embedded::EmbeddedLog,
        jetstream::JetStreamLog,
        kv::{JetStreamKv, Kv},
    },
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    app::App,
    config::Config,
    http::access::Access,
    http::limits::{Caps, Limits},
    metrics::Metrics,
    router::router,
    secret,
};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Secret(#[from] secret::SecretError),
    /// The revocation ledger (a file in the data dir, or the backplane's bucket) cannot open.
    #[error("revocation ledger: {0}")]
    Ledger(String),
    /// The in-process connectors (`ingest`) cannot start.
    #[error("ingest: {0}")]
    Ingest(String),
    /// A setting that cannot work (unreadable TLS files, a bad webhook or connector section):
    /// found before anything is bound or opened, and the operator's to fix (exit 64).
    #[error("configuration: {0}")]
    Config(String),
    #[error("data dir {dir}: {message}")]
    Log { dir: String, message: String },
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Where the history lives.
#[derive(Debug, Clone)]
pub enum Backend {
    /// This process is a bus node and serves gRPC (`switchyard serve`): the log is the embedded
    /// store in the data dir, or NATS JetStream when `backplane` is set.
    Embedded,
    /// Another bus's log over gRPC; this process is the HTTP edge only (`switchyard bridge`).
    Remote { bus_url: String },
}

/// A started server.
pub struct Running {
    /// `None` for a bridge, which serves HTTP only.
    pub grpc_addr: Option<SocketAddr>,
    pub http_addr: SocketAddr,
    pub bus: Bus,
    pub signer: Signer,
    stop: watch::Sender<bool>,
    grpc: JoinHandle<()>,
    http: JoinHandle<()>,
    /// In-process connectors (`ingest`); they stop with the server.
    ingest: Vec<JoinHandle<()>>,
}

impl Running {
    /// Graceful shutdown: streams are told to reconnect, in-flight requests finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        drain(self.grpc).await;
        drain(self.http).await;
        for t in self.ingest {
            t.abort();
        }
    }

    /// Resolves when the server has stopped (after [`Running::shutdown`] or a fatal error).
    pub async fn wait(self) {
        let _ = self.http.await;
        let _ = self.stop.send(true);
        drain(self.grpc).await;
    }

    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// How long open connections get to finish after a stop. A client that keeps an idle
/// connection open (or ignores GOAWAY) must not hold a restart up for good.
const DRAIN: Duration = Duration::from_secs(10);

async fn drain(mut server: JoinHandle<()>) {
    if tokio::time::timeout(DRAIN, &mut server).await.is_err() {
        tracing::warn!("connections still open {DRAIN:?} after the stop; closing them");
        server.abort();
    }
}

/// The token verifier: the HS256 secret plus any configured public keys. A key file that cannot
/// be read or parsed is the operator's to fix, like any bad setting (exit 64).
pub fn verifier(config: &Config, secret: &[u8]) -> Result<Verifier, ServeError> {
    let bad = |key: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        ServeError::Config(format!("{key} {}: {e}", path.display()))
    };
    let mut v = Verifier::hs256(secret);
    for path in &config.auth.public_keys {
        let pem = std::fs::read(path).map_err(|e| bad("auth.public_keys", path, &e))?;
        v.add_public_pem(&pem).map_err(|e| bad("auth.public_keys", path, &e))?;
    }
    if let Some(path) = &config.auth.jwks_file {
        let json = std::fs::read_to_string(path).map_err(|e| bad("auth.jwks_file", path, &e))?;
        v.add_jwks(&json).map_err(|e| bad("auth.jwks_file", path, &e))?;
    }
    Ok(v)
}

pub async fn start(config: Config) -> Result<Running, ServeError> {
    start_with(config, Backend::Embedded, Default::default()).await
}

/// How long the system token a bridge mints for its upstream lives. The bridge holds one
/// upstream connection for its lifetime; rotate the secret to revoke it.
const BRIDGE_TOKEN_TTL: u64 = 365 * 24 * 3600;

/// What `serve` needs that can be wrong, checked before anything is opened or bound: a bad
/// TLS file, webhook section, connector file or key is the operator's to fix (exit 64).
struct Plan {
    tls: Option<tokio_rustls::TlsAcceptor>,
    webhooks: crate::webhooks::Webhooks,
    ingest: Option<switchyard_services::config::IngestConfig>,
    secret: Vec<u8>,
    verifier: Arc<Verifier>,
    signer: Signer,
}

impl Plan {
    fn new(config: &Config, env: &switchyard_services::webhook::Env) -> Result<Self, ServeError> {
        let tls = match (&config.tls.cert_file, &config.tls.key_file) {
            (Some(cert), Some(key)) => {
                Some(crate::net::tls::acceptor(cert, key).map_err(|e| ServeError::Config(format!("tls: {e}")))?)
            }
            _ => None,
        };
        let webhooks = crate::webhooks::Webhooks::from_config(&config.webhooks, env)
            .map_err(|e| ServeError::Config(e.to_string()))?;
        let ingest = config.ingest_config().map_err(|e| ServeError::Config(e.to_string()))?;
        let secret = secret::load_or_create(&config.secret_file())?;
        let verifier = Arc::new(verifier(config, &secret)?);
        let signer = Signer::hs256(&secret);
        Ok(Self { tls, webhooks, ingest, secret, verifier, signer })
    }
}

/// Starts a server. `webhooks` is how webhook sources reach their platforms (SNS
/// certificates, subscription confirmations): the real HTTPS client by default, tests pass
/// their own.
pub async fn start_with(
    config: Config,
    backend: Backend,
    webhooks: switchyard_services::webhook::Env,
) -> Result<Running, ServeError> {
    crate::install_crypto_provider();
    let plan = Plan::new(&config, &webhooks)?;
    let hub = Hub::default();
    let connectors = Arc::new(crate::connectors::Connectors::default());
    let dispatch = Arc::new(switchyard_outbound::dispatch::Dispatch::default());
    let feed = feed(hub.clone(), connectors.clone(), dispatch.clone());
    let (log, ledger, kv) = open_log(&config, &backend, &plan, feed).await?;
    let bus = Bus::new(log, hub, config.bus_config());
    let (grpc_listener, http_listener) = bind(&config, &backend).await?;
    let grpc_addr = grpc_listener.as_ref().map(TcpListener::local_addr).transpose()?;
    let http_addr = http_listener.local_addr()?;
    // Where in-process connectors publish: this node's gRPC port, or the bus a bridge fronts.
    let backend_url = match &backend {
        Backend::Remote { bus_url } => Some(bus_url.clone()),
        Backend::Embedded => grpc_addr.map(|a| format!("http://{a}")),
    };
    write_addrs(&config.data_dir, grpc_addr, http_addr)?;

    let (stop, stopped) = watch::channel(false);
    let Plan { tls, webhooks, ingest, secret, verifier, signer } = plan;
    let metrics = Arc::new(Metrics::default());
    let access = Access::new((*verifier).clone(), config.auth.allow_query_token, &secret, ledger);
    let streams = streams(&config, &bus, Arc::new(access), &metrics, stopped.clone());
    let outbound = start_outbound(&config, (&bus, dispatch), kv, &secret, http_addr, stopped.clone()).await?;
    let inbound = crate::webhooks::Inbound { bus: bus.clone(), hooks: Arc::new(webhooks), metrics };
    let app = Arc::new(App::new(&config, streams, connectors, inbound, outbound));
    // One cap on connections that have not shown a request yet, HTTP and gRPC alike.
    let pending =
        crate::net::listener::Gate::new(config.sse.max_pending_connections.max(1), config.sse.max_pending_per_ip);
    let grpc = serve_grpc(&config, &app, grpc_listener, verifier, pending.clone(), stopped.clone());
    let ingest = match (ingest, &backend_url) {
        (Some(ic), Some(url)) => start_ingest(&ic, url, &signer, stopped.clone())?,
        _ => Vec::new(),
    };
    let http = serve_http(&config, app, http_listener, tls, pending, stopped)?;
    tracing::info!(grpc_addr = ?grpc_addr, %http_addr, data_dir = %config.data_dir.display(), "switchyard serving");
    Ok(Running { grpc_addr, http_addr, bus, signer, stop, grpc, http, ingest })
}

/// Serves gRPC (a bus node only: a bridge has no listener) until `stopped`: the bus's services,
/// and outbound's where this node delivers.
fn serve_grpc(
    config: &Config,
    app: &App,
    listener: Option<TcpListener>,
    verifier: Arc<Verifier>,
    pending: crate::net::listener::Gate,
    stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let bus = app.bus.clone();
    let (limits, subscriptions) = (config.grpc.limits(config.bus.max_event_bytes), app.limits.clone());
    let extra = match &app.outbound {
        Some(o) => tonic::service::Routes::new(switchyard_outbound::grpc::server(o.clone(), verifier.clone())),
        None => tonic::service::Routes::default(),
    };
    tokio::spawn(async move {
        let Some(listener) = listener else { return };
        let incoming = crate::net::listener::grpc(listener, pending);
        if let Err(error) =
            switchyard::grpc::serve(incoming, limits, bus, verifier, subscriptions, stopped, extra).await
        {
            tracing::error!(%error, "gRPC server failed");
        }
    })
}

/// Where the log hands committed records: the hub (fan-out), what watches connectors' statuses,
/// and outbound delivery's dispatch.
fn feed(
    hub: Hub,
    connectors: Arc<crate::connectors::Connectors>,
    dispatch: Arc<switchyard_outbound::dispatch::Dispatch>,
) -> switchyard::log::Feed {
    switchyard::log::Feed::new(move |records| {
        hub.publish(records);
        connectors.observe(records);
        dispatch.committed(records);
    })
}

/// `<data_dir>/addr.json`: where this process listens, for tools and tests.
fn write_addrs(dir: &std::path::Path, grpc: Option<SocketAddr>, http: SocketAddr) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let addrs =
        serde_json::json!({ "grpc": grpc.map(|a| a.to_string()), "http": http.to_string(), "pid": std::process::id() });
    std::fs::write(dir.join("addr.json"), addrs.to_string())
}

/// Outbound delivery on this node: its endpoints' deliverers, over the log's own store (none
/// without one: a bridge's bus delivers).
async fn start_outbound(
    config: &Config,
    (bus, dispatch): (&Bus, Arc<switchyard_outbound::dispatch::Dispatch>),
    kv: Option<Arc<dyn Kv>>,
    secret: &[u8],
    http_addr: SocketAddr,
    stopped: watch::Receiver<bool>,
) -> Result<Option<switchyard_outbound::Outbound>, ServeError> {
    let Some(kv) = kv else { return Ok(None) };
    let mut oc = config.outbound.clone();
    if oc.dashboard_url.is_empty() {
        oc.dashboard_url = format!("http://{http_addr}");
    }
    let limits = switchyard_outbound::transport::HttpLimits {
        connect: Duration::from_secs(oc.connect_timeout_secs),
        attempt: Duration::from_secs(oc.attempt_timeout_secs),
        ..Default::default()
    };
    let http = switchyard_outbound::transport::Http::new(Arc::new(oc.targets()), limits)
        .map_err(|e| ServeError::Config(format!("outbound: {e}")))?;
    let node = format!("{}-{:08x}", std::process::id(), rand_u32());
    let parts = switchyard_outbound::Parts { bus: bus.clone(), dispatch, kv, transport: Arc::new(http) };
    let outbound =
        switchyard_outbound::Outbound::start(parts, oc, secret, node, stopped).map_err(ServeError::Config)?;
    outbound.install_static().await.map_err(|e| ServeError::Config(e.to_string()))?;
    Ok(Some(outbound))
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now()) as u32
}

type Opened = (Arc<dyn switchyard::log::Log>, Arc<dyn Ledger>, Option<Arc<dyn Kv>>);

/// The history this process runs on, the ledger its nodes share, and the store of outbound
/// delivery's progress (none on a bridge: its bus delivers).
async fn open_log(
    config: &Config,
    backend: &Backend,
    plan: &Plan,
    feed: switchyard::log::Feed,
) -> Result<Opened, ServeError> {
    let revocations = plan.verifier.revocations().clone();
    let log_error = |dir: String| move |e: switchyard::log::LogError| ServeError::Log { dir, message: e.to_string() };
    let local_ledger = || -> Result<Arc<dyn Ledger>, ServeError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let file = config.data_dir.join("revoked.json");
        Ok(Arc::new(LocalLedger::open(file, revocations.clone()).map_err(|e| ServeError::Ledger(e.to_string()))?))
    };
    Ok(match (backend, config.jetstream()) {
        (Backend::Embedded, Some(js)) => {
            let (stream, replicas) = (js.stream.clone(), js.replicas);
            let log = JetStreamLog::connect(js, feed)
                .await
                .map_err(log_error(config.backplane.clone().unwrap_or_default()))?;
            let ledger = JetStreamLedger::open(log.context(), &stream, replicas, revocations.clone())
                .await
                .map_err(|e| ServeError::Ledger(e.to_string()))?;
            let kv = JetStreamKv::open(log.context(), &stream, replicas)
                .await
                .map_err(log_error(config.backplane.clone().unwrap_or_default()))?;
            (Arc::new(log), Arc::new(ledger), Some(Arc::new(kv)))
        }
        (Backend::Embedded, None) => {
            let dir = config.data_dir.display().to_string();
            let log = EmbeddedLog::open(&config.data_dir, config.log_config(), feed).map_err(log_error(dir.clone()))?;
            let kv = log.kv().map_err(log_error(dir))?;
            (Arc::new(log), local_ledger()?, Some(Arc::new(kv)))
        }
        (Backend::Remote { bus_url }, _) => {
            let token = plan.signer.mint("*", Role::Admin, Vec::new(), BRIDGE_TOKEN_TTL);
            let log = crate::remote::RemoteLog::new(bus_url, &token, feed).map_err(log_error(bus_url.clone()))?;
            (Arc::new(log), local_ledger()?, None)
        }
    })
}

/// The gRPC listener (a bus node only) and the HTTP one.
async fn bind(config: &Config, backend: &Backend) -> Result<(Option<TcpListener>, TcpListener), ServeError> {
    let bind = |what: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { what, addr, source })
    };
    let grpc = match backend {
        Backend::Embedded => Some(bind("gRPC", config.grpc_addr).await?),
        Backend::Remote { .. } => None,
    };
    Ok((grpc, bind("HTTP", config.http_addr).await?))
}

/// Connectors configured with `ingest` publish into this bus over gRPC, as a separate
/// `switchyard-ingest` would: one code path, and webhooks reach them the same way.
fn start_ingest(
    ic: &switchyard_services::config::IngestConfig,
    url: &str,
    signer: &Signer,
    stopped: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, ServeError> {
    let token = signer.mint("*", Role::Admin, Vec::new(), BRIDGE_TOKEN_TTL);
    let sink = Arc::new(switchyard_services::sink::GrpcSink::new(url, &token).map_err(ServeError::Ingest)?);
    let running = switchyard_services::config::start(ic, sink, Some((url.to_owned(), token)), stopped)
        .map_err(ServeError::Ingest)?;
    Ok(running.tasks)
}

/// The SSE streams' share of the server: the connection caps, the heartbeat clock (stopping
/// with the server), the writer tasks and the route table's own paths.
fn streams(
    config: &Config,
    bus: &Bus,
    access: Arc<Access>,
    metrics: &Arc<Metrics>,
    stopped: watch::Receiver<bool>,
) -> crate::sse::Streams {
    let sse = &config.sse;
    let pulse = crate::sse::pulse::start(std::time::Duration::from_secs(sse.heartbeat_secs), stopped);
    let caps = Caps { total: sse.max_connections, per_tenant: sse.max_per_tenant, per_token: sse.max_per_token };
    crate::sse::Streams::new(crate::sse::StreamState {
        bus: bus.clone(),
        access,
        limits: Limits::new(caps),
        sse: sse.clone(),
        writers: crate::sse::writers::Writers::new(bus.hub().clone(), pulse.clone()),
        pulse,
        metrics: metrics.clone(),
        own_paths: crate::router::routes().into_iter().map(|r| r.path).collect(),
    })
}

/// Serves HTTP (plain or TLS) until `stopped`.
fn serve_http(
    config: &Config,
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    pending: crate::net::listener::Gate,
    stopped: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, ServeError> {
    let stall = std::time::Duration::from_secs(config.sse.stall_timeout_secs);
    let idle = std::time::Duration::from_secs(config.sse.idle_timeout_secs);
    // Open HTTP connections: capped per address only (the total is the process's descriptors).
    let open = crate::net::listener::Gate::new(usize::MAX, config.sse.max_connections_per_ip);
    let until = switchyard::grpc::stopped(stopped);
    // SSE GETs are served below hyper unless TLS or CORS need hyper's handling.
    let direct = (tls.is_none() && config.auth.cors_origins.is_empty()).then(|| app.streams.clone());
    let service = router(app);
    Ok(match tls {
        Some(acceptor) => {
            // Browsers that reached us over HTTPS once never try plain HTTP for a year.
            let service = service.layer(axum::middleware::map_response(|mut r: axum::response::Response| async {
                let hsts = axum::http::HeaderValue::from_static("max-age=31536000");
                r.headers_mut().insert(axum::http::header::STRICT_TRANSPORT_SECURITY, hsts);
                r
            }));
            let listener = crate::net::tls::tls(listener, acceptor, stall, pending, open)?;
            tokio::spawn(crate::net::listener::serve(listener, service, idle, until))
        }
        None => {
            let listener = crate::net::listener::plain(listener, stall, direct, pending, open)?;
            tokio::spawn(crate::net::listener::serve(listener, service, idle, until))
        }
    })
}

/// How long the tokens `serve` prints live: stdout ends up in logs, so none outlives an hour
/// (`switchyard token` mints more).
pub const BANNER_TOKEN_TTL: u64 = 3600;

/// The dashboard's address with a subscribe token for tenant `default` in the fragment (never
/// sent to the server; the page moves it to sessionStorage and clears the address bar).
pub fn dashboard_url(running: &Running) -> String {
    let token = running.signer.mint("default", Role::Subscribe, Vec::new(), BANNER_TOKEN_TTL);
    format!("http://{}/#token={token}", running.http_addr)
}

/// What `serve` prints for people: a short-lived subscribe token for the `default` tenant and
/// a command that uses it.
pub fn try_it(running: &Running) -> String {
    let token = running.signer.mint("default", Role::Subscribe, Vec::new(), BANNER_TOKEN_TTL);
    format!("curl -N -H 'Authorization: Bearer {token}' http://{}/api/sse/dashboard", running.http_addr)
}
