//! `/metrics` after a scripted scenario: every family the operator relies on, with the value
//! the scenario must have produced.

use serde_json::json;
use switchyard::auth::{Role, now_secs};
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
    assert!(!m.contains("acme"), "unauthenticated metrics name no tenant");
    server.stop().await;
}
