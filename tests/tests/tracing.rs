//! Traces end to end: one webhook delivered to an SSE subscriber is one connected trace,
//! exported by the real binary over OTLP/gRPC to a real receiver (a tonic server on the
//! OpenTelemetry protocol types) and checked span by span.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::{common::v1::any_value::Value as AnyValue, trace::v1::Span};
use switchyard::auth::{Role, now_secs};
use switchyard_bridge::webhooks::{signature::sign_b64, standard::secret_key};
use switchyard_tests::{Process, Sse, otlp::Collector};

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SENDER_SPAN: &str = "00f067aa0ba902b7";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()?.value.as_ref()).map(|v| match v {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    })
}

/// The spans of `trace_id` received once every span named in `wanted` is among them (spans
/// arrive in batches, the last at the server's exit), or after 10 s.
async fn spans_of(collector: &Collector, trace_id: &str, wanted: &[&str]) -> Vec<Span> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let spans: Vec<Span> =
            collector.0.lock().unwrap().iter().filter(|s| hex(&s.trace_id) == trace_id).cloned().collect();
        let done = wanted.iter().all(|n| spans.iter().any(|s| s.name == *n));
        if done || Instant::now() > deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_webhook_to_sse_delivery_is_one_connected_trace() {
    let (collector, otlp, receiver) = Collector::start().await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "[bus]\ncustom_channels = [\"ops\"]\n[telemetry]\notlp_endpoint = \"http://{otlp}\"\nlog_format = \"json\"\n\
             [webhooks.standard.billing]\nsecrets = [\"{WHSEC}\"]\ntenant = \"acme\"\nchannels = [\"ops\"]\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let server = Process::serve_logging(dir.path(), &["--config", config.to_str().unwrap()], &log);
    let mut sse =
        Sse::connect(&format!("{}/api/sse/ops", server.http_url), Some(&server.token("acme", Role::Subscribe)), None)
            .await;

    let body = br#"{"type":"invoice.paid","timestamp":"2026-11-30T09:00:00Z","data":{"invoice":"inv_1"}}"#;
    let (id, ts) = ("msg_trace_1", now_secs().to_string());
    let key = secret_key(WHSEC).unwrap();
    let signature = format!("v1,{}", sign_b64(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]));
    let r = switchyard_tests::http()
        .post(format!("{}/api/webhooks/billing", server.http_url))
        .header("webhook-id", id)
        .header("webhook-timestamp", &ts)
        .header("webhook-signature", signature)
        .header("traceparent", format!("00-{TRACE_ID}-{SENDER_SPAN}-01"))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let frame = sse.next_event().await.expect("the event arrives");
    // The event carries the trace to its subscribers: the webhook span is its parent.
    let traceparent = frame.json()["trace"]["traceparent"].as_str().expect("Event.trace is filled").to_owned();
    assert!(traceparent.starts_with(&format!("00-{TRACE_ID}-")), "{traceparent}");
    let event_id = frame.json()["id"].as_str().unwrap().to_owned();

    // A clean stop flushes the exporter (waited for off this runtime, which serves the receiver).
    drop(sse);
    let stopped = tokio::task::spawn_blocking(move || server.terminate()).await.unwrap();
    assert!(stopped.success());
    let spans = spans_of(&collector, TRACE_ID, &["sse.deliver"]).await;
    receiver.abort();
    let all = collector.len();
    assert!(!spans.is_empty(), "no span of the trace among the {all} received");

    let named = |n: &str| spans.iter().find(|s| s.name == n).unwrap_or_else(|| panic!("no {n} span in {spans:#?}"));
    let webhook = named("webhook billing");
    let verify = named("verify");
    let commit = named("commit");
    let deliver = named("sse.deliver");
    let validate = named("validate");
    let group = named("group_commit");
    let fan_out = named("fan_out");
    assert_eq!(hex(&webhook.parent_span_id), SENDER_SPAN, "the webhook continues the sender's trace");
    assert_eq!(attr(webhook, "platform").as_deref(), Some("billing"));
    assert_eq!(verify.parent_span_id, webhook.span_id, "verification is part of the delivery");
    assert_eq!(commit.parent_span_id, webhook.span_id, "so is the durable commit");
    assert_eq!(attr(commit, "events").as_deref(), Some("1"));
    assert_eq!(validate.parent_span_id, webhook.span_id, "validation of the translated events");
    assert_eq!(group.parent_span_id, commit.span_id, "the group commit the events joined");
    assert_eq!(attr(group, "batches").as_deref(), Some("1"));
    assert_eq!(attr(group, "events").as_deref(), Some("1"));
    assert_eq!(fan_out.parent_span_id, commit.span_id, "the hand-off to the subscribers' rings");
    assert!(fan_out.start_time_unix_nano >= group.end_time_unix_nano, "after the commit is durable");
    assert_eq!(
        traceparent.split('-').nth(2),
        Some(hex(&webhook.span_id).as_str()),
        "Event.trace names the webhook span"
    );
    assert_eq!(deliver.parent_span_id, webhook.span_id, "the SSE delivery joins the publisher's trace");
    assert_eq!(attr(deliver, "event.id"), Some(event_id));
    assert!(attr(deliver, "conn").is_some());

    // The JSON log's line for the delivery names the same trace, and the SSE stream's own
    // open and close lines carry the connection id the delivery span has.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    let delivery = lines.iter().find(|l| l["message"] == "webhook delivery").expect("a webhook delivery line");
    assert_eq!(delivery["trace_id"], TRACE_ID, "{delivery}");
    assert_eq!(delivery["fields"]["outcome"], "stored");
    assert_eq!(delivery["fields"]["tenant"], "acme");
    assert_eq!(delivery["spans"], serde_json::json!(["webhook"]));
    assert_eq!(delivery["level"], "INFO");
    let conn = attr(deliver, "conn").unwrap();
    for what in ["SSE stream opened", "SSE stream closed"] {
        let line = lines.iter().find(|l| l["message"] == what).unwrap_or_else(|| panic!("no '{what}' line"));
        assert_eq!(line["fields"]["conn"].to_string(), conn, "{line}");
    }
}

/// A connector run is one trace: the run, each platform call, the publish and commit of its
/// figures, and their delivery to a subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_run_is_one_trace_from_its_upstream_calls_to_each_delivery() {
    let (collector, otlp, receiver) = Collector::start().await;
    let fake = switchyard_tests::platforms::fakes().await;
    let dir = tempfile::tempdir().unwrap();
    let ingest = dir.path().join("ingest.toml");
    std::fs::write(
        &ingest,
        format!(
            "interval_secs = 3600\n[retry]\nbackoff_ms = 1\nmax_wait_ms = 20\n{}",
            switchyard_tests::platforms::xero_section(&fake)
        ),
    )
    .unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "ingest = \"{}\"\n[telemetry]\notlp_endpoint = \"http://{otlp}\"\nsample_ratio = 1.0\nlog_format = \"json\"\n",
            ingest.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let server = Process::serve_logging(dir.path(), &["--config", config.to_str().unwrap()], &log);
    let token = server.token("acme", Role::Subscribe);
    let url = format!("{}/api/sse/subscribe?channels=working-capital,dashboard", server.http_url);
    let mut sse = Sse::connect(&url, Some(&token), Some(0)).await;
    let frame = loop {
        let f = sse.next_event().await.expect("the figures arrive");
        if f.event.as_deref() == Some("xero:sync-completed") {
            break f;
        }
    };
    let traceparent = frame.json()["trace"]["traceparent"].as_str().expect("the run's trace").to_owned();
    // The run ends (and its span with it) once its status is published.
    while sse.next_event().await.expect("the run's status").event.as_deref() != Some("xero:sync-status") {}
    let trace_id = traceparent.split('-').nth(1).unwrap().to_owned();

    drop(sse);
    let stopped = tokio::task::spawn_blocking(move || server.terminate()).await.unwrap();
    assert!(stopped.success());
    // The run's own span ends last (after its status is published): wait for it too.
    let spans = spans_of(&collector, &trace_id, &["sse.deliver", "sync xero"]).await;
    receiver.abort();
    let named = |n: &str| spans.iter().find(|s| s.name == n).unwrap_or_else(|| panic!("no {n} span in {spans:#?}"));
    let sync = named("sync xero");
    assert!(sync.parent_span_id.is_empty(), "a run starts its own trace");
    assert_eq!(attr(sync, "tenant").as_deref(), Some("acme"));
    let upstream: Vec<&Span> =
        spans.iter().filter(|s| s.parent_span_id == sync.span_id && attr(s, "status").is_some()).collect();
    assert!(
        upstream.iter().any(|s| s.name == "Xero balance sheet" && attr(s, "status").as_deref() == Some("200")),
        "each platform call is a child of the run: {spans:#?}"
    );
    let publish = spans
        .iter()
        .find(|s| s.name == "publish_stream" && s.parent_span_id == sync.span_id)
        .expect("the run's publish continues its trace (traceparent metadata)");
    assert!(spans.iter().any(|s| s.name == "commit" && s.parent_span_id == publish.span_id));
    assert_eq!(traceparent.split('-').nth(2), Some(hex(&sync.span_id).as_str()), "Event.trace names the run");
    assert_eq!(named("sse.deliver").parent_span_id, sync.span_id, "the delivery joins the run's trace");

    // The connector's webhook watcher is a gRPC subscriber: its open and close lines carry its
    // connection id, tenant and channels, and the close line what it was sent and why it ended.
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&log).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let opened = lines.iter().find(|l| l["message"] == "gRPC subscription opened").expect("an open line");
    let conn = &opened["fields"]["conn"];
    assert_eq!(opened["fields"]["tenant"], "acme");
    let closed = lines
        .iter()
        .find(|l| l["message"] == "gRPC subscription closed" && l["fields"]["conn"] == *conn)
        .expect("its close line");
    assert_eq!(closed["fields"]["channels"], opened["fields"]["channels"]);
    assert_eq!(closed["fields"]["reason"], "server stopping");
    let (events, bytes) = (closed["fields"]["events"].as_u64().unwrap(), closed["fields"]["bytes"].as_u64().unwrap());
    assert!(events >= 1 && bytes > 50 * events, "{closed}");
}

/// Every outbound attempt is a span in the trace of the event it carries, saying which
/// endpoint, which attempt and what came of it: a failed first try and its retry are two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outbound_attempt_is_a_span_in_the_events_trace() {
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};
    let (collector, otlp, receiver) = Collector::start().await;
    let hook = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(503)).up_to_n_times(1).mount(&hook).await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(204)).mount(&hook).await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "[telemetry]\notlp_endpoint = \"http://{otlp}\"\n[outbound]\nallow_http_hosts = [\"127.0.0.1\"]\n\
             allow_private_hosts = [\"127.0.0.1\"]\n[outbound.ladder]\nsteps_secs = [1]\njitter = 0.0\n"
        ),
    )
    .unwrap();
    let server = Process::serve(dir.path(), &["--config", config.to_str().unwrap()]);
    let admin = server.token("acme", Role::Admin);
    let http = switchyard_tests::http();
    let created = http
        .post(format!("{}/api/outbound/endpoints", server.http_url))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "url": format!("{}/hook", hook.uri()), "types": ["alert:*"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let endpoint = created.json::<serde_json::Value>().await.unwrap()["endpoint"]["id"].as_str().unwrap().to_owned();
    let published = http
        .post(format!("{}/api/events", server.http_url))
        .bearer_auth(&admin)
        .header("traceparent", format!("00-{TRACE_ID}-{SENDER_SPAN}-01"))
        .json(&serde_json::json!({ "type": "alert:critical", "data": { "title": "Freezer 3 is warm" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 201);
    let deadline = Instant::now() + Duration::from_secs(20);
    while hook.received_requests().await.unwrap_or_default().len() < 2 {
        assert!(Instant::now() < deadline, "the retry never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stopped = tokio::task::spawn_blocking(move || server.terminate()).await.unwrap();
    assert!(stopped.success());
    let spans = spans_of(&collector, TRACE_ID, &["outbound.attempt"]).await;
    receiver.abort();
    let publish = spans.iter().find(|s| s.name == "publish").unwrap_or_else(|| panic!("no publish span: {spans:#?}"));
    assert_eq!(hex(&publish.parent_span_id), SENDER_SPAN);
    let mut attempts: Vec<&Span> = spans.iter().filter(|s| s.name == "outbound.attempt").collect();
    attempts.sort_by_key(|s| attr(s, "attempt"));
    assert_eq!(attempts.len(), 2, "one span per attempt: {spans:#?}");
    for (span, (n, outcome, status)) in attempts.iter().zip([("1", "status", "503"), ("2", "delivered", "204")]) {
        assert_eq!(span.parent_span_id, publish.span_id, "an attempt joins its event's trace");
        assert_eq!(attr(span, "endpoint").as_deref(), Some(endpoint.as_str()));
        assert_eq!(attr(span, "attempt").as_deref(), Some(n));
        assert_eq!(attr(span, "outcome").as_deref(), Some(outcome));
        assert_eq!(attr(span, "status").as_deref(), Some(status));
    }
}
