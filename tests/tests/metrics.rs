//! `/metrics` after a scripted scenario: every family the operator relies on, with the value
//! the scenario must have produced.

use serde_json::json;
use switchyard::{
    auth::{Role, now_secs},
    proto::v1::{SubscribeRequest, subscribe_response},
};
use switchyard_bridge::{
    config::StandardHook,
    webhooks::{signature::sign_b64, standard::secret_key},
};
use switchyard_tests::{Server, Sse};

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The value of the one sample whose line starts with `series` (name and labels).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_scripted_scenario_shows_in_every_family() {
    let server = Server::start_with(|c| {
        c.bus.custom_channels = vec!["ops".into()];
        c.webhooks.standard.insert(
            "billing".into(),
            StandardHook { secrets: vec![WHSEC.into()], tenant: "acme".into(), channels: vec!["ops".into()] },
        );
    })
    .await;
    let http = switchyard_tests::http();
    let publish = server.token("acme", Role::Publish, &[]);
    let events = format!("{}/api/events", server.http_url);

    // Two events stored, then one refused (a job's progress needs a key) and a batch of two
    // refused whole (all or nothing) for the same reason.
    for title in ["a", "b"] {
        let r = http
            .post(&events)
            .bearer_auth(&publish)
            .json(&json!({"type": "alert:info", "data": {"title": title}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let bad = json!({"type": "import:job-progress", "data": {"percent": 5}});
    assert_eq!(http.post(&events).bearer_auth(&publish).json(&bad).send().await.unwrap().status(), 400);
    let batch = json!([{"type": "alert:info", "data": {"title": "c"}}, bad]);
    assert_eq!(http.post(&events).bearer_auth(&publish).json(&batch).send().await.unwrap().status(), 400);

    // A subscriber resumes after the first event and is written the second: one resume, no gap,
    // one lag observation.
    let sub = server.token("acme", Role::Subscribe, &[]);
    let mut sse = Sse::connect(&format!("{}/api/sse/alerts", server.http_url), Some(&sub), Some(1)).await;
    assert_eq!(sse.ids(1).await, vec![2]);
    // A gRPC subscriber to the same channel from the start: its first delivery is measured.
    let mut grpc = server.grpc("acme", Role::Subscribe).await;
    let req = SubscribeRequest { channels: vec!["alerts".into()], from_id: Some(0), ..Default::default() };
    let mut stream = grpc.subscribe(req).await.unwrap().into_inner();
    let first = loop {
        if let Some(subscribe_response::Message::Event(e)) = stream.message().await.unwrap().unwrap().message {
            break e;
        }
    };
    assert_eq!(first.id, 1);

    // Tickets: one issued and redeemed, the same one again (used), and a forged one.
    let r = http.post(format!("{}/api/sse/ticket", server.http_url)).bearer_auth(&sub).send().await.unwrap();
    let ticket = r.json::<serde_json::Value>().await.unwrap()["ticket"].as_str().unwrap().to_owned();
    for (t, status) in [(ticket.as_str(), 200), (ticket.as_str(), 401), ("eyJ.AAAA", 401)] {
        let url = format!("{}/api/sse/alerts?ticket={t}", server.http_url);
        assert_eq!(http.get(url).send().await.unwrap().status(), status);
    }

    // Connector statuses (as a connector publishes them): a failed Xero run, then a good one.
    let status = |ok: bool, secs: u32| {
        json!({"type": "xero:sync-status", "key": "xero", "tenant": "acme", "source": "connector:xero", "data": {
            "ok": ok, "code": if ok { "" } else { "timeout" }, "duration": format!("{secs}s"),
            "lastSuccess": if ok { Some("2026-11-30T09:00:00Z") } else { None },
        }})
    };
    let connector = server.token("*", Role::Admin, &[]);
    for s in [status(false, 3), status(true, 40)] {
        assert_eq!(http.post(&events).bearer_auth(&connector).json(&s).send().await.unwrap().status(), 201);
    }

    // Webhooks: one stored, one with a bad signature.
    let body = br#"{"type":"invoice.paid","timestamp":"2026-11-30T09:00:00Z","data":{"invoice":"inv_1"}}"#;
    let ts = now_secs().to_string();
    let key = secret_key(WHSEC).unwrap();
    let good = format!("v1,{}", sign_b64(&key, &[b"msg_1.", ts.as_bytes(), b".", body]));
    for signature in [good.as_str(), "v1,AAAA"] {
        let r = http
            .post(format!("{}/api/webhooks/billing", server.http_url))
            .header("webhook-id", "msg_1")
            .header("webhook-timestamp", &ts)
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), if signature == good { 200 } else { 401 });
    }

    let m = http.get(format!("{}/metrics", server.http_url)).send().await.unwrap().text().await.unwrap();
    assert_eq!(sample(&m, "switchyard_published_total{type=\"alert:info\"}"), 2.0);
    assert_eq!(sample(&m, "switchyard_publish_rejected_total{reason=\"missing_key\"}"), 3.0, "1 + a batch of 2");
    assert_eq!(sample(&m, "switchyard_sse_connections"), 1.0);
    assert_eq!(sample(&m, "switchyard_sse_resumes_total"), 1.0);
    assert_eq!(sample(&m, "switchyard_sse_gaps_total"), 0.0);
    assert_eq!(sample(&m, "switchyard_delivery_lag_seconds_count{transport=\"sse\"}"), 1.0);
    assert_eq!(sample(&m, "switchyard_delivery_lag_seconds_bucket{transport=\"sse\",le=\"+Inf\"}"), 1.0);
    assert!(sample(&m, "switchyard_delivery_lag_seconds_sum{transport=\"sse\"}") < 10.0);
    assert_eq!(sample(&m, "switchyard_webhook_deliveries_total{source=\"billing\",outcome=\"stored\"}"), 1.0);
    assert_eq!(
        sample(&m, "switchyard_webhook_deliveries_total{source=\"billing\",outcome=\"invalid_signature\"}"),
        1.0
    );
    assert!(sample(&m, "process_resident_memory_bytes") > 1e6);
    assert!(sample(&m, "process_open_fds") >= 3.0);
    assert!(sample(&m, "process_cpu_seconds_total") >= 0.0);
    assert_eq!(sample(&m, "switchyard_delivery_lag_seconds_count{transport=\"grpc\"}"), 1.0);
    assert_eq!(sample(&m, "switchyard_subscriptions{transport=\"sse\",channel=\"alerts\"}"), 1.0);
    assert_eq!(sample(&m, "switchyard_subscriptions{transport=\"grpc\",channel=\"alerts\"}"), 1.0);
    assert_eq!(sample(&m, "switchyard_tickets_issued_total"), 1.0);
    assert_eq!(sample(&m, "switchyard_tickets_redeemed_total"), 1.0);
    assert_eq!(sample(&m, "switchyard_tickets_refused_total{reason=\"used\"}"), 1.0);
    assert_eq!(sample(&m, "switchyard_tickets_refused_total{reason=\"forged\"}"), 1.0);
    assert_eq!(sample(&m, "switchyard_connector_syncs_total{source=\"xero\",outcome=\"ok\"}"), 1.0);
    assert_eq!(sample(&m, "switchyard_connector_syncs_total{source=\"xero\",outcome=\"failed\"}"), 1.0);
    assert_eq!(sample(&m, "switchyard_connector_sync_errors_total{source=\"xero\",code=\"timeout\"}"), 1.0);
    assert_eq!(sample(&m, "switchyard_connector_sync_duration_seconds_bucket{source=\"xero\",le=\"5\"}"), 1.0);
    assert_eq!(sample(&m, "switchyard_connector_sync_duration_seconds_sum{source=\"xero\"}"), 43.0);
    assert_eq!(sample(&m, "switchyard_connector_last_success_timestamp_seconds{source=\"xero\"}"), 1796029200.0);
    assert_eq!(sample(&m, "switchyard_connector_failing{source=\"xero\"}"), 0.0);
    assert!(sample(&m, "switchyard_log_size_bytes") > 0.0);
    assert!(sample(&m, "switchyard_log_commit_seconds_count") >= 4.0, "a commit per publish at least");
    assert!(!m.contains("acme"), "unauthenticated metrics name no tenant");
    // The text format: every sample line is `name{labels} value` under its family's TYPE.
    for line in m.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {line}");
        let name = series.split('{').next().unwrap();
        let family = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
        assert!(
            m.contains(&format!("# TYPE {family} ")) || m.contains(&format!("# TYPE {name} ")),
            "no TYPE for {line}"
        );
    }
    every_documented_family_is_served(&m);
    drop(stream);
    server.stop().await;
}

/// Every metric the docs' table and the Grafana dashboard name is one `/metrics` serves (the
/// opt-in tenant families aside: `tenant_labels_are_opt_in_and_capped` covers those; and the
/// JetStream tail's, which `cluster::a_node_recovers_when_nats_restarts_without_restarting_itself` reads).
fn every_documented_family_is_served(m: &str) {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for file in ["docs/grafana/switchyard.json", "docs/observability.md"] {
        let text = std::fs::read_to_string(repo.join(file)).unwrap();
        let names: std::collections::BTreeSet<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|t| (t.starts_with("switchyard_") || t.starts_with("process_")) && !t.contains("_tenant_"))
            .filter(|t| *t != "switchyard_bridge" && !t.starts_with("switchyard_log_tail_"))
            .collect();
        assert!(names.len() > 20, "{file}: {names:?}");
        for name in names {
            let family = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
            assert!(m.contains(&format!("# TYPE {family} ")), "{file} names {name}, which /metrics does not serve");
        }
    }
}

#[tokio::test]
async fn tenant_labels_are_opt_in_and_capped() {
    let server = Server::start_with(|c| {
        c.metrics.tenant_labels = true;
        c.metrics.max_tenants = 1;
    })
    .await;
    let http = switchyard_tests::http();
    for (tenant, n) in [("acme", 3), ("beta", 1), ("gamma", 1)] {
        let token = server.token(tenant, Role::Publish, &[]);
        for i in 0..n {
            let e = json!({"type": "alert:info", "data": {"title": format!("{tenant}-{i}")}});
            let r = http.post(format!("{}/api/events", server.http_url)).bearer_auth(&token).json(&e).send().await;
            assert_eq!(r.unwrap().status(), 201);
        }
    }
    let m = http.get(format!("{}/metrics", server.http_url)).send().await.unwrap().text().await.unwrap();
    assert_eq!(sample(&m, "switchyard_tenant_published_total{tenant=\"acme\"}"), 3.0);
    assert_eq!(sample(&m, "switchyard_tenant_published_total{tenant=\"_other\"}"), 2.0);
    assert!(!m.contains("beta") && !m.contains("gamma"), "tenants past the cap are not named");
    server.stop().await;
}

/// The console's data: a system admin sees every tenant's connectors and the delivery
/// figures; a tenant's admin sees its own connectors only, and nothing summed over tenants.
#[tokio::test]
async fn status_activity_is_scoped_to_the_admins_tenant() {
    let server = Server::start().await;
    let http = switchyard_tests::http();
    for tenant in ["acme", "beta"] {
        let status = json!({"type": "xero:sync-status", "key": "xero", "tenant": tenant, "source": "connector:xero",
            "data": {"ok": false, "code": "network", "error": format!("{tenant} unreachable")}});
        let r = http
            .post(format!("{}/api/events", server.http_url))
            .bearer_auth(server.token("*", Role::Admin, &[]))
            .json(&status)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let url = format!("{}/api/sse/status", server.http_url);
    let status = |token: String| {
        let request = http.get(&url).bearer_auth(token);
        async move { request.send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };
    let all = status(server.token("*", Role::Admin, &[])).await;
    let tenants: Vec<&str> =
        all["activity"]["connectors"].as_array().unwrap().iter().map(|c| c["tenant"].as_str().unwrap()).collect();
    assert_eq!(tenants, ["acme", "beta"]);
    assert_eq!(all["activity"]["connectors"][0]["error"], "acme unreachable");
    assert!(all["activity"]["delivery"]["lag"]["sse"].is_object(), "{all}");
    let acme = status(server.token("acme", Role::Admin, &[])).await;
    let connectors = acme["activity"]["connectors"].as_array().unwrap();
    assert_eq!(connectors.len(), 1);
    assert_eq!(connectors[0]["tenant"], "acme");
    assert!(acme["activity"].get("delivery").is_none(), "no cross-tenant sums for a tenant's admin: {acme}");
    assert!(!acme.to_string().contains("beta"), "{acme}");
    server.stop().await;
}
