//! `switchyard bridge --bus URL`: the HTTP edge as its own process, fed by one upstream
//! gRPC stream, surviving a bus restart without loss.

use serde_json::json;
use switchyard::auth::Role;
use switchyard_bridge::cli::tools;
use switchyard_tests::{Process, Sse, post_json, publish_alerts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_bridge_survives_a_bus_restart_without_loss() {
    let bus_dir = tempfile::tempdir().unwrap();
    let bus = Process::serve(bus_dir.path(), &[]);
    let grpc_addr = bus.grpc_url.trim_start_matches("http://").to_owned();
    // The bridge verifies client tokens with the bus's secret.
    let bridge_dir = tempfile::tempdir().unwrap();
    std::fs::copy(bus_dir.path().join("secret.key"), bridge_dir.path().join("secret.key")).unwrap();
    let bridge = Process::bridge(bridge_dir.path(), &bus.grpc_url);
    let sub = bridge.token("acme", Role::Subscribe);
    let publish_token = bus.token("acme", Role::Publish);

    let mut sse = Sse::connect(&format!("{}/api/sse/alerts", bridge.http_url), Some(&sub), None).await;
    assert_eq!(sse.status, 200);
    let mut c = tools::connect(&bus.grpc_url, &publish_token).await.unwrap();
    let mut published = publish_alerts(&mut c, 0..10).await;
    let mut got = sse.ids(10).await;

    // The bus dies hard and comes back on the same address; the browser's connection to the
    // bridge stays up, and the bridge resumes its upstream stream after the last id it saw.
    bus.kill();
    let bus = Process::serve(bus_dir.path(), &["--grpc-addr", &grpc_addr]);
    let mut c = tools::connect(&bus.grpc_url, &publish_token).await.unwrap();
    published.extend(publish_alerts(&mut c, 10..20).await);
    // Publishing through the bridge's HTTP API goes to the bus too.
    let r = post_json(
        &format!("{}/api/events", bridge.http_url),
        &bridge.token("acme", Role::Publish),
        &json!({"type": "alert:warning", "data": {"title": "via bridge"}}),
    )
    .await;
    published.push(r["id"].as_str().unwrap().parse().unwrap());
    got.extend(sse.ids(11).await);
    assert_eq!(got, published, "same ids, same order, nothing lost across the bus restart");

    // A client resuming on the bridge replays from the bus's history.
    let mut late = Sse::connect(&format!("{}/api/sse/alerts", bridge.http_url), Some(&sub), Some(published[4])).await;
    assert_eq!(late.response_headers["x-switchyard-resume"], "complete");
    for want in &published[5..] {
        assert_eq!(late.next_event().await.unwrap().id_u64(), Some(*want));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_through_a_bridge_is_stored_all_or_nothing() {
    let bus_dir = tempfile::tempdir().unwrap();
    // The bus holds a tenant to one state key; the bridge does not know, so only the bus refuses.
    let config = bus_dir.path().join("bus.toml");
    std::fs::write(&config, "[log.quotas]\nmax_keys_per_tenant = 1\n").unwrap();
    let bus = Process::serve(bus_dir.path(), &["--config", config.to_str().unwrap()]);
    let bridge_dir = tempfile::tempdir().unwrap();
    std::fs::copy(bus_dir.path().join("secret.key"), bridge_dir.path().join("secret.key")).unwrap();
    let bridge = Process::bridge(bridge_dir.path(), &bus.grpc_url);
    let health = |key: &str| json!({"type": "system:health-check", "key": key, "data": {"component": key}});
    let r = switchyard_tests::http()
        .post(format!("{}/api/events", bridge.http_url))
        .bearer_auth(bridge.token("acme", Role::Publish))
        .json(&json!([{"type": "alert:info", "data": {"title": "first"}}, health("db"), health("cache")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
    let page =
        switchyard_tests::get_json(&format!("{}/api/events", bus.http_url), &bus.token("acme", Role::Subscribe)).await;
    assert_eq!(page["events"], json!([]), "nothing of the batch was stored: {page}");
    let r = post_json(
        &format!("{}/api/events", bridge.http_url),
        &bridge.token("acme", Role::Publish),
        &json!([health("db")]),
    )
    .await;
    assert_eq!(r["ids"].as_array().map(Vec::len), Some(1), "{r}");
}
