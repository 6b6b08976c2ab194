//! Outbound delivery end to end: a real server, real HTTP, receivers that verify signatures
//! with the independent `standardwebhooks` package (tests/python/webhook_receiver.py), a real
//! SMTP server (aiosmtpd), kill -9, and a JetStream backplane that loses its delivering node.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::{Value, json};
use switchyard::{
    auth::Role,
    proto::v1::{Event, Money, Order, event::Payload},
};
use switchyard_tests::{KilledOnDrop, Server, events, http, wait_for};

/// A Python receiver and the files it reads (secrets) and writes (one line per request).
struct Receiver {
    _child: KilledOnDrop,
    url: String,
    secrets: PathBuf,
    log: PathBuf,
}

impl Receiver {
    fn start(dir: &Path, mode: &str) -> Self {
        let (secrets, log) = (dir.join("secrets.txt"), dir.join("received.jsonl"));
        std::fs::write(&secrets, "").unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/webhook_receiver.py");
        let (child, port) = python(Command::new("python3").arg(script).arg(&secrets).arg(&log).arg(mode));
        Self { _child: child, url: format!("http://127.0.0.1:{port}/hook"), secrets, log }
    }

    fn trust(&self, secret: &str) {
        let mut all = std::fs::read_to_string(&self.secrets).unwrap();
        all.push_str(secret);
        all.push('\n');
        std::fs::write(&self.secrets, all).unwrap();
    }

    fn forget_all_but(&self, secret: &str) {
        std::fs::write(&self.secrets, format!("{secret}\n")).unwrap();
    }

    fn lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// The first request that carried `webhook-id: id`.
    fn line_of(&self, id: u64) -> Value {
        let id = id.to_string();
        self.lines().into_iter().find(|l| l["id"].as_str() == Some(id.as_str())).expect("delivered")
    }

    /// Verified, accepted deliveries by `webhook-id`: how many times each arrived.
    fn accepted(&self) -> BTreeMap<u64, usize> {
        let mut out = BTreeMap::new();
        for l in self.lines().into_iter().filter(|l| l["verified"] == true && l["status"].as_u64() == Some(204)) {
            *out.entry(l["id"].as_str().unwrap().parse().unwrap()).or_default() += 1;
        }
        out
    }
}

/// Starts a helper script and reads the `port=<n>` it prints.
fn python(cmd: &mut Command) -> (KilledOnDrop, u16) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("python3 runs");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port = line.trim().strip_prefix("port=").unwrap_or_else(|| panic!("helper printed {line:?}")).parse().unwrap();
    (KilledOnDrop(child), port)
}

fn order(id: &str, amount: &str) -> Event {
    Event {
        key: id.into(),
        payload: Some(Payload::ShopifyOrderCreated(Order {
            order_id: id.into(),
            total: Some(Money { amount: amount.into(), currency: "GBP".into() }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A server whose endpoints may target 127.0.0.1 over http (the receivers are local).
async fn server() -> Server {
    server_with(|_| {}).await
}

/// [`server`], with more settings.
async fn server_with(tweak: impl FnOnce(&mut switchyard_bridge::config::Config)) -> Server {
    Server::start_with(|c| {
        c.outbound.allow_http_hosts = vec!["127.0.0.1".into()];
        c.outbound.allow_private_hosts = vec!["127.0.0.1".into()];
        tweak(c);
    })
    .await
}

async fn create(server: &Server, token: &str, spec: Value) -> (u16, Value) {
    create_at(&server.http_url, token, spec).await
}

/// `POST /api/outbound/endpoints` on the server at `http_url`: the status and the JSON answer.
async fn create_at(http_url: &str, token: &str, spec: Value) -> (u16, Value) {
    let r =
        http().post(format!("{http_url}/api/outbound/endpoints")).bearer_auth(token).json(&spec).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// An endpoint for `receiver` on the server at `http_url`, its secret given to the receiver.
async fn endpoint_for(receiver: &Receiver, http_url: &str, admin: &str) -> Value {
    let (status, created) = create_at(http_url, admin, json!({ "url": receiver.url })).await;
    assert_eq!(status, 201, "{created}");
    receiver.trust(created["secret"].as_str().unwrap());
    created
}

async fn publish(server: &Server, events: Vec<Event>) -> Vec<u64> {
    let mut client = server.grpc("acme", Role::Publish).await;
    let mut ids = Vec::new();
    for e in events {
        let request = switchyard::proto::v1::PublishRequest { event: Some(e) };
        ids.push(client.publish(request).await.expect("published").into_inner().id);
    }
    ids
}

#[tokio::test]
async fn signed_deliveries_verify_with_standard_webhooks_once_per_id_and_the_filter_picks_large_orders() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), "ok");
    let admin = server.token("acme", Role::Admin, &[]);
    let (status, created) = create(
        &server,
        &admin,
        json!({
            "url": receiver.url, "types": ["shopify:order-created"], "filter": "total.amount >= 1000"
        }),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    receiver.trust(&secret);
    let amounts = ["10.00", "1000.00", "999.99", "25000", "1000", "0.5", "1500.25"];
    let mut batch: Vec<Event> = amounts.iter().enumerate().map(|(i, a)| order(&format!("o{i}"), a)).collect();
    batch.push(events::alert("not an order"));
    let ids = publish(&server, batch).await;
    let large: BTreeSet<u64> = [1, 3, 4, 6].iter().map(|i| ids[*i]).collect();
    wait_for("the large orders", || async { (receiver.accepted().len() >= large.len()).then_some(()) }).await;
    // Give a wrong extra delivery the time to arrive before judging.
    publish(&server, vec![order("marker", "5000")]).await;
    wait_for("the marker", || async { (receiver.accepted().len() > large.len()).then_some(()) }).await;
    let got = receiver.accepted();
    let mut want = large.clone();
    want.insert(*got.keys().last().unwrap());
    assert_eq!(got.keys().copied().collect::<BTreeSet<_>>(), want, "exactly the orders of 1000 or more");
    assert!(got.values().all(|n| *n == 1), "each id once: {got:?}");
    assert!(receiver.lines().iter().all(|l| l["verified"] == true), "every delivery verifies");
    let first = receiver.line_of(ids[1]);
    assert_eq!(first["type"], "shopify:order-created");
    assert_eq!(first["data"]["total"]["amount"], "1000.00");

    // Rotation: the new secret alone verifies what follows, and so does the old one meanwhile.
    let id = created["endpoint"]["id"].as_str().unwrap();
    let rotated: Value = http()
        .post(format!("{}/api/outbound/endpoints/{id}/rotate-secret", server.http_url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, secret);
    receiver.forget_all_but(&new);
    let after = publish(&server, vec![order("r1", "2000")]).await[0];
    wait_for("a delivery under the new secret", || async { receiver.accepted().contains_key(&after).then_some(()) })
        .await;
    let line = receiver.line_of(after);
    assert_eq!(line["signatures"], 2, "old and new secrets both sign during the overlap");
    receiver.forget_all_but(&secret);
    let old = publish(&server, vec![order("r2", "2000")]).await[0];
    wait_for("a delivery under the old secret", || async { receiver.accepted().contains_key(&old).then_some(()) })
        .await;
    server.stop().await;
}

#[tokio::test]
async fn endpoints_are_refused_for_private_targets_and_bad_fields_and_are_tenant_scoped() {
    let strict = Server::start().await;
    let admin = strict.token("acme", Role::Admin, &[]);
    for (url, field) in [
        ("http://127.0.0.1:9/hook", "url"),
        ("https://127.0.0.1:9/hook", "url"),
        ("https://10.1.2.3/hook", "url"),
        ("https://169.254.169.254/latest/meta-data", "url"),
        ("https://localhost:9/hook", "url"),
        ("https://[::1]/hook", "url"),
    ] {
        let (status, body) = create(&strict, &admin, json!({ "url": url })).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["error"]["field"], field, "{url}: {body}");
    }
    let (status, body) =
        create(&strict, &admin, json!({ "url": "https://example.com/h", "filter": "total.amount >=" })).await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("filter")), "{body}");
    let (status, body) = create(&strict, &admin, json!({ "url": "https://example.com/h", "typez": [] })).await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("body")), "{body}");
    let publisher = strict.token("acme", Role::Publish, &[]);
    let (status, _) = create(&strict, &publisher, json!({ "url": "https://example.com/h" })).await;
    assert_eq!(status, 403, "only admins manage endpoints");
    strict.stop().await;

    let open = server().await;
    let acme = open.token("acme", Role::Admin, &[]);
    let globex = open.token("globex", Role::Admin, &[]);
    let (status, created) = create(&open, &acme, json!({ "url": "http://127.0.0.1:9/hook" })).await;
    assert_eq!(status, 201, "{created}");
    let id = created["endpoint"]["id"].as_str().unwrap();
    let theirs =
        http().get(format!("{}/api/outbound/endpoints/{id}", open.http_url)).bearer_auth(&globex).send().await.unwrap();
    assert_eq!(theirs.status(), 404, "another tenant's endpoint does not exist for globex");
    let deleted = http()
        .delete(format!("{}/api/outbound/endpoints/{id}", open.http_url))
        .bearer_auth(&globex)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 404);
    let list: Value = http()
        .get(format!("{}/api/outbound/endpoints", open.http_url))
        .bearer_auth(&globex)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["endpoints"], json!([]));
    let mine: Value = http()
        .get(format!("{}/api/outbound/endpoints/{id}", open.http_url))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["endpoint"]["url"], "http://127.0.0.1:9/hook");
    assert!(mine.to_string().find("whsec_").is_none(), "the secret is shown once, at creation");
    open.stop().await;
}

/// The binary's config for tests: endpoints may target 127.0.0.1 (plus `extra` TOML).
fn config_file(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("switchyard.toml");
    let toml =
        format!("[outbound]\nallow_http_hosts = [\"127.0.0.1\"]\nallow_private_hosts = [\"127.0.0.1\"]\n{extra}");
    std::fs::write(&path, toml).unwrap();
    path
}

async fn publish_alerts_http(http_url: &str, token: &str, from: usize, n: usize) -> Vec<u64> {
    let batch: Vec<Value> =
        (from..from + n).map(|i| json!({ "type": "alert:critical", "data": { "title": format!("a{i}") } })).collect();
    let r: Value = http()
        .post(format!("{http_url}/api/events"))
        .bearer_auth(token)
        .json(&batch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["ids"].as_array().unwrap_or_else(|| panic!("{r}")).iter().map(|v| v.as_str().unwrap().parse().unwrap()).collect()
}

#[tokio::test]
async fn kill_9_during_delivery_loses_nothing_and_every_resend_carries_the_same_webhook_id() {
    use switchyard_tests::Process;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config_file(dir.path(), "");
    let config = config.to_str().unwrap();
    let receiver = Receiver::start(dir.path(), "ok");
    let node = Process::serve(&data, &["--config", config]);
    let admin = node.token("acme", Role::Admin);
    endpoint_for(&receiver, &node.http_url, &admin).await;
    let publisher = node.token("acme", Role::Publish);
    let mut published: BTreeSet<u64> =
        publish_alerts_http(&node.http_url, &publisher, 0, 600).await.into_iter().collect();
    wait_for("deliveries under way", || async { (receiver.accepted().len() >= 100).then_some(()) }).await;
    node.kill();
    let delivered_before = receiver.accepted().len();
    assert!(delivered_before < published.len(), "killed during delivery ({delivered_before} of {})", published.len());

    // Again, on the same data dir, with more published while it runs; then a second kill.
    let node = Process::serve(&data, &["--config", config]);
    published.extend(publish_alerts_http(&node.http_url, &publisher, 600, 200).await);
    wait_for("more deliveries", || async { (receiver.accepted().len() >= delivered_before + 100).then_some(()) }).await;
    node.kill();
    let node = Process::serve(&data, &["--config", config]);
    wait_for("every event delivered", || async { (receiver.accepted().len() >= published.len()).then_some(()) }).await;
    let accepted = receiver.accepted();
    assert_eq!(accepted.keys().copied().collect::<BTreeSet<_>>(), published, "every event, and no other, arrived");
    let resent: usize = accepted.values().map(|n| n - 1).sum();
    // At-least-once: what was in flight when the process died is sent again, under the same
    // webhook-id (the counts above are by id); what was acknowledged and recorded is not.
    assert!(resent <= 2 * 32, "{resent} resent after two kills (32 in flight at most)");
    eprintln!("kill -9 ×2: {} events delivered, {resent} sent twice", published.len());
    drop(node);
}

#[tokio::test]
async fn slack_gets_one_grouped_block_kit_message_for_a_burst_of_alerts_with_a_link_back() {
    let (server, got, serving) = slack_endpoint(&["shopify:low-stock-alert"], 300).await;
    let low = |sku: &str| Event {
        key: sku.into(),
        payload: Some(Payload::ShopifyLowStockAlert(switchyard::proto::v1::LowStockAlert {
            count: 1,
            items: vec![switchyard::proto::v1::StockItem {
                sku: sku.into(),
                name: format!("Widget {sku}"),
                on_hand: 2,
                threshold: 10,
            }],
            ..Default::default()
        })),
        ..Default::default()
    };
    publish(&server, (0..5).map(|i| low(&format!("SKU-{i}"))).chain([events::alert("not selected")]).collect()).await;
    wait_for("a Slack message", || async { (!got.lock().unwrap().is_empty()).then_some(()) }).await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let messages = got.lock().unwrap().clone();
    assert_eq!(messages.len(), 1, "five alerts, one message: {messages:?}");
    let m = &messages[0];
    assert!(m["text"].as_str().unwrap().starts_with("5 × shopify:low-stock-alert"), "{m}");
    let blocks = m["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    let text = blocks.iter().filter_map(|b| b["text"]["text"].as_str()).collect::<Vec<_>>().join("\n");
    for i in 0..5 {
        assert!(text.contains(&format!("SKU-{i}")), "every item is named: {text}");
    }
    let button = &blocks.last().unwrap()["elements"][0];
    assert!(button["url"].as_str().unwrap().starts_with(&server.http_url), "links back to the dashboard: {button}");
    server.stop().await;
    serving.abort();
}

#[tokio::test]
async fn email_goes_through_a_real_smtp_server_over_starttls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(made.success());
    let log = dir.path().join("mail.jsonl");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/smtp_sink.py");
    let (_smtp, port) = python(Command::new("python3").arg(script).arg(&cert).arg(&key).arg(&log));
    let cert_path = cert.clone();
    let server = Server::start_with(move |c| {
        c.outbound.group_window_ms = 200;
        c.outbound.smtp = Some(
            toml::from_str(&format!(
                "host = \"127.0.0.1\"\nport = {port}\nfrom = \"Switchyard <alerts@example.com>\"\nca_file = {:?}",
                cert_path.to_str().unwrap()
            ))
            .unwrap(),
        );
    })
    .await;
    let admin = server.token("acme", Role::Admin, &[]);
    let (status, body) = create(
        &server,
        &admin,
        json!({ "kind": "email", "to": ["ops@example.com"], "types": ["unleashed:quality-alert"] }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let quality = Event {
        key: "asm-1".into(),
        payload: Some(Payload::UnleashedQualityAlert(switchyard::proto::v1::QualityAlert {
            count: 1,
            critical_issues: 1,
            issues: vec![switchyard::proto::v1::QualityIssue {
                assembly_id: "ASM-77".into(),
                product: "Gear".into(),
                planned: 100,
                produced: 80,
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    publish(&server, vec![quality]).await;
    let mail = wait_for("an e-mail", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().next().map(|l| serde_json::from_str::<Value>(l).unwrap())
    })
    .await;
    assert_eq!(mail["tls"], true, "STARTTLS was used");
    assert_eq!(mail["to"], json!(["ops@example.com"]));
    assert!(mail["subject"].as_str().unwrap().starts_with("unleashed:quality-alert"), "{mail}");
    let body = mail["body"].as_str().unwrap();
    assert!(body.contains("ASM-77") && body.contains(&server.http_url), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn on_jetstream_killing_the_delivering_node_moves_delivery_to_another_with_nothing_lost() {
    use switchyard_tests::{Process, nats};
    let dir = tempfile::tempdir().unwrap();
    let spec = nats::Spec::single(&dir.path().join("nats"));
    let _nats = spec.start();
    let backplane = spec.url();
    let receiver = Receiver::start(dir.path(), "ok");
    let start = |name: &str, secret_from: Option<&Path>| {
        let node_dir = dir.path().join(name);
        std::fs::create_dir_all(&node_dir).unwrap();
        if let Some(from) = secret_from {
            std::fs::copy(from.join("secret.key"), node_dir.join("secret.key")).unwrap();
        }
        let config = config_file(&node_dir, "");
        Process::serve(&node_dir, &["--backplane", &backplane, "--config", config.to_str().unwrap()])
    };
    let a = start("a", None);
    let b = start("b", Some(&dir.path().join("a")));
    let admin = a.token("acme", Role::Admin);
    let created = endpoint_for(&receiver, &a.http_url, &admin).await;
    let id = created["endpoint"]["id"].as_str().unwrap().to_owned();
    let publisher = a.token("acme", Role::Publish);
    let mut published: BTreeSet<u64> = publish_alerts_http(&a.http_url, &publisher, 0, 300).await.into_iter().collect();
    wait_for("deliveries under way", || async { (receiver.accepted().len() >= 50).then_some(()) }).await;
    let view: Value = switchyard_tests::get_json(&format!("{}/api/outbound/endpoints/{id}", b.http_url), &admin).await;
    let holder = view["endpoint"]["deliverer"].as_str().unwrap_or_else(|| panic!("a deliverer in {view}")).to_owned();
    let (dead, alive) = if holder.starts_with(&format!("{}-", a.pid())) { (a, b) } else { (b, a) };
    dead.kill();
    published.extend(publish_alerts_http(&alive.http_url, &publisher, 300, 100).await);
    // The lease lapses (10 s) and the survivor takes the endpoint over from the shared cursor.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(40);
    while receiver.accepted().len() < published.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} delivered",
            receiver.accepted().len(),
            published.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let accepted = receiver.accepted();
    assert_eq!(accepted.keys().copied().collect::<BTreeSet<_>>(), published);
    let resent: usize = accepted.values().map(|n| n - 1).sum();
    assert!(resent <= 32, "{resent} resent: only what was in flight on the dead node");
    let view: Value =
        switchyard_tests::get_json(&format!("{}/api/outbound/endpoints/{id}", alive.http_url), &admin).await;
    assert!(view["endpoint"]["deliverer"].as_str().unwrap().starts_with(&format!("{}-", alive.pid())), "{view}");
    eprintln!("failover: {} delivered, {resent} sent twice", published.len());
}

#[tokio::test]
async fn the_grpc_outbound_service_manages_endpoints_for_admins_of_the_tenant_only() {
    use switchyard::proto::v1::{
        CreateEndpointRequest, EndpointRef, EndpointSpec, ListEndpointsRequest, ReplayRequest,
        outbound_client::OutboundClient,
    };
    let server = server().await;
    let connect = |token: String| {
        let url = server.grpc_url.clone();
        async move {
            let channel = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await.unwrap();
            let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
            OutboundClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
                r.metadata_mut().insert("authorization", bearer.clone());
                Ok(r)
            })
        }
    };
    let mut admin = connect(server.token("acme", Role::Admin, &[])).await;
    let spec =
        EndpointSpec { url: "http://127.0.0.1:9/hook".into(), types: vec!["alert:*".into()], ..Default::default() };
    let created = admin
        .create_endpoint(CreateEndpointRequest { tenant: String::new(), spec: Some(spec) })
        .await
        .unwrap()
        .into_inner();
    assert!(created.secret.starts_with("whsec_"));
    let id = created.endpoint.unwrap().id;
    let list = admin.list_endpoints(ListEndpointsRequest::default()).await.unwrap().into_inner();
    assert_eq!(list.endpoints.len(), 1);
    assert_eq!(list.endpoints[0].spec.as_ref().unwrap().types, vec!["alert:*"]);
    let bad = EndpointSpec { url: "https://10.0.0.1/".into(), ..Default::default() };
    let refused =
        admin.create_endpoint(CreateEndpointRequest { tenant: String::new(), spec: Some(bad) }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("url"), "{}", refused.message());
    let ids = publish(&server, vec![events::alert("x")]).await;
    let owed = admin
        .replay(ReplayRequest { id: id.clone(), event_id: ids[0], ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(owed.owed, 1);

    // Another tenant's admin sees nothing of it; a publisher may not call at all.
    let mut theirs = connect(server.token("globex", Role::Admin, &[])).await;
    let missing = theirs.get_endpoint(EndpointRef { tenant: String::new(), id: id.clone() }).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let other = theirs.get_endpoint(EndpointRef { tenant: "acme".into(), id: id.clone() }).await.unwrap_err();
    assert_eq!(other.code(), tonic::Code::PermissionDenied);
    let mut publisher = connect(server.token("acme", Role::Publish, &[])).await;
    assert_eq!(
        publisher.list_endpoints(ListEndpointsRequest::default()).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    let mut nobody = connect("not-a-token".into()).await;
    assert_eq!(
        nobody.list_endpoints(ListEndpointsRequest::default()).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    admin.delete_endpoint(EndpointRef { tenant: String::new(), id }).await.unwrap();
    assert!(admin.list_endpoints(ListEndpointsRequest::default()).await.unwrap().into_inner().endpoints.is_empty());
    server.stop().await;
}

/// `POST /api/outbound/endpoints/{id}/<action>` with a JSON body: the status and the answer.
async fn act(server: &Server, token: &str, id: &str, action: &str, body: Value) -> (u16, Value) {
    let url = format!("{}/api/outbound/endpoints/{id}/{action}", server.http_url);
    let r = http().post(url).bearer_auth(token).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test]
async fn replay_by_id_range_and_by_time_range_and_resend_deliver_again_under_the_same_webhook_ids() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), "ok");
    let admin = server.token("acme", Role::Admin, &[]);
    let created = endpoint_for(&receiver, &server.http_url, &admin).await;
    let id = created["endpoint"]["id"].as_str().unwrap();
    let first = publish(&server, (0..3).map(|i| events::alert(&format!("a{i}"))).collect()).await;
    // The first batch was stamped at or before now; the range starts a millisecond later.
    let since = now_ms() + 1;
    while now_ms() < since {
        tokio::task::yield_now().await;
    }
    let second = publish(&server, (3..5).map(|i| events::alert(&format!("a{i}"))).collect()).await;
    let until = now_ms() + 1;
    let counts = |want: usize| {
        let receiver = &receiver;
        async move { Some(receiver.accepted()).filter(|got| got.values().sum::<usize>() >= want) }
    };
    let once = wait_for("each event once", || counts(5)).await;
    assert!(once.values().all(|n| *n == 1), "{once:?}");

    // Ids after first[0] up to and including first[2]: two events again.
    let (status, owed) = act(&server, &admin, id, "replay", json!({ "afterId": first[0], "toId": first[2] })).await;
    assert_eq!((status, owed["owed"].as_u64()), (200, Some(2)), "{owed}");
    wait_for("the id range again", || counts(7)).await;
    // Published at or after `since` and before `until`: the second batch.
    let (status, owed) = act(&server, &admin, id, "replay", json!({ "sinceMs": since, "untilMs": until })).await;
    assert_eq!((status, owed["owed"].as_u64()), (200, Some(2)), "{owed}");
    wait_for("the time range again", || counts(9)).await;
    let (status, owed) = act(&server, &admin, id, "resend", json!({ "eventId": first[0].to_string() })).await;
    assert_eq!((status, owed["owed"].as_u64()), (200, Some(1)), "{owed}");
    let got = wait_for("the resent event", || counts(10)).await;
    let twice: BTreeMap<u64, usize> = first.iter().chain(&second).map(|i| (*i, 2)).collect();
    assert_eq!(got, twice, "every event twice by webhook-id: once live, once replayed or resent");

    // Mistakes are named, and owe nothing.
    let (status, body) = act(&server, &admin, id, "replay", json!({})).await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("afterId")), "{body}");
    let (status, body) = act(&server, &admin, id, "resend", json!({ "eventId": "999999" })).await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("eventId")), "{body}");
    let (status, body) = act(&server, &admin, id, "resend", json!({ "eventId": "x" })).await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("eventId")), "{body}");
    let theirs = server.token("globex", Role::Admin, &[]);
    let (status, _) = act(&server, &theirs, id, "resend", json!({ "eventId": first[0].to_string() })).await;
    assert_eq!(status, 404, "another tenant's admin cannot target the endpoint");
    publish(&server, vec![events::alert("marker")]).await;
    let last = wait_for("the marker", || counts(11)).await;
    assert_eq!(last.values().sum::<usize>(), 11, "nothing more was owed: {last:?}");
    server.stop().await;
}

/// A Slack-shaped receiver: the JSON bodies it was sent.
async fn slack_receiver() -> (String, Messages, tokio::task::JoinHandle<()>) {
    use std::sync::{Arc, Mutex};
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/services/T000/B000/XXXX",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/services/T000/B000/XXXX", listener.local_addr().unwrap());
    let serving = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got, serving)
}

/// A server with a Slack endpoint for `types` (alerts grouped for `window_ms`), its receiver's
/// messages, and the receiver's task.
async fn slack_endpoint(types: &[&str], window_ms: u64) -> (Server, Messages, tokio::task::JoinHandle<()>) {
    let (slack, got, serving) = slack_receiver().await;
    let server = server_with(|c| c.outbound.group_window_ms = window_ms).await;
    let admin = server.token("acme", Role::Admin, &[]);
    let (status, body) = create(&server, &admin, json!({ "kind": "slack", "url": slack, "types": types })).await;
    assert_eq!(status, 201, "{body}");
    (server, got, serving)
}

type Messages = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;

/// An event as `connector:<source>` publishes it for tenant acme.
fn from_connector(source: &str, key: &str, payload: Payload) -> Event {
    Event {
        tenant: "acme".into(),
        key: key.into(),
        source: format!("connector:{source}"),
        payload: Some(payload),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_sync_error_sent_to_people_is_followed_by_resolved_when_the_platform_syncs_again() {
    let (server, got, serving) = slack_endpoint(&["*:sync-error"], 100).await;
    let connector = |payload: Payload| from_connector("xero", "xero", payload);
    let status_ok = |ok: bool| {
        Payload::XeroSyncStatus(switchyard::proto::v1::SyncStatus {
            ok,
            error: if ok { String::new() } else { "HTTP 429".into() },
            ..Default::default()
        })
    };
    let mut system = server.grpc("*", Role::Admin).await;
    let mut send = async |e: Event| {
        system.publish(switchyard::proto::v1::PublishRequest { event: Some(e) }).await.expect("published");
    };
    // A healthy status before any alert resolves nothing.
    send(connector(status_ok(true))).await;
    let error = Payload::XeroSyncError(switchyard::proto::v1::SyncError {
        error: "Xero balance sheet: HTTP 429".into(),
        code: "rate_limited".into(),
        ..Default::default()
    });
    send(connector(error.clone())).await;
    send(connector(status_ok(false))).await;
    wait_for("the alert", || async { (!got.lock().unwrap().is_empty()).then_some(()) }).await;
    send(connector(status_ok(true))).await;
    wait_for("the resolution", || async { (got.lock().unwrap().len() >= 2).then_some(()) }).await;
    send(connector(status_ok(true))).await;
    // A second alert after it: the endpoint delivers in order, so once this arrives, anything
    // the extra healthy status caused would have arrived before it.
    send(connector(error)).await;
    wait_for("the next alert", || async { (got.lock().unwrap().len() >= 3).then_some(()) }).await;
    let messages = got.lock().unwrap().clone();
    assert_eq!(messages.len(), 3, "the alert, one resolved, the next alert: {messages:?}");
    assert!(messages[2]["text"].as_str().unwrap().starts_with("xero:sync-error"), "{}", messages[2]);
    assert!(messages[0]["text"].as_str().unwrap().starts_with("xero:sync-error"), "{}", messages[0]);
    assert!(messages[0].to_string().contains("HTTP 429"));
    assert_eq!(messages[1]["text"], "Resolved: xero syncs are succeeding again");
    server.stop().await;
    serving.abort();
}

#[tokio::test]
async fn a_low_stock_alert_is_resolved_once_a_completed_sync_counts_no_low_stock() {
    use switchyard::proto::v1::{AmazonSyncCompleted, LowStockAlert, StockItem};
    let (server, got, serving) = slack_endpoint(&["amazon:low-stock-alert"], 100).await;
    let connector = |key: &str, payload: Payload| from_connector("amazon", key, payload);
    let completed = |low: u32| {
        connector("eu", Payload::AmazonSyncCompleted(AmazonSyncCompleted { low_stock_skus: low, ..Default::default() }))
    };
    let item = StockItem { sku: "SKU-1".into(), name: "Widget".into(), on_hand: 2, threshold: 5 };
    let alert = LowStockAlert { count: 1, items: vec![item], ..Default::default() };
    let mut system = server.grpc("*", Role::Admin).await;
    let mut send = async |e: Event| {
        system
            .publish(switchyard::proto::v1::PublishRequest { event: Some(e) })
            .await
            .expect("published")
            .into_inner()
            .id
    };
    send(connector("stock", Payload::AmazonLowStockAlert(alert.clone()))).await;
    wait_for("the alert", || async { (!got.lock().unwrap().is_empty()).then_some(()) }).await;
    // Still low: no resolution, and a completed sync is not itself sent (not selected).
    send(completed(1)).await;
    let cleared = send(completed(0)).await;
    wait_for("the resolution", || async { (got.lock().unwrap().len() >= 2).then_some(()) }).await;
    send(completed(0)).await;
    // The next alert, delivered in order after anything the extra completed sync caused.
    send(connector("stock", Payload::AmazonLowStockAlert(alert))).await;
    wait_for("the next alert", || async { (got.lock().unwrap().len() >= 3).then_some(()) }).await;
    let messages = got.lock().unwrap().clone();
    assert_eq!(messages.len(), 3, "the alert, one resolved, the next alert: {messages:?}");
    assert!(messages[2]["text"].as_str().unwrap().starts_with("amazon:low-stock-alert"), "{}", messages[2]);
    assert!(messages[0]["text"].as_str().unwrap().starts_with("amazon:low-stock-alert"), "{}", messages[0]);
    assert_eq!(messages[1]["text"], "Resolved: no Amazon SKU is below its reorder point");
    let link = format!("#after={}\"", cleared - 1);
    assert!(messages[1].to_string().contains(&link), "resolved by the sync that counted none: {}", messages[1]);
    server.stop().await;
    serving.abort();
}
