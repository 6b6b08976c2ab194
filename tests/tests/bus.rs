//! The foundation over real gRPC sockets: publish/subscribe, PublishStream,
//! durability across a killed process, ordering, coalescing, validation, tenancy.

use std::collections::HashMap;

use futures::StreamExt;
use switchyard::{
    auth::Role,
    proto::v1::{
        Event, PublishRequest, StatsRequest, SubscribeRequest, SubscribeResponse, event::Payload, publish_ack,
        subscribe_response::Message,
    },
};
use switchyard_bridge::cli::tools;
use switchyard_tests::{PATIENCE, Process, Server, events};
use tonic::{Code, Streaming};

async fn next_msg(s: &mut Streaming<SubscribeResponse>) -> Message {
    tokio::time::timeout(PATIENCE, s.next())
        .await
        .expect("timed out waiting for a message")
        .expect("stream open")
        .expect("no error")
        .message
        .expect("message set")
}

async fn next_event(s: &mut Streaming<SubscribeResponse>) -> Event {
    loop {
        if let Message::Event(e) = next_msg(s).await {
            return e;
        }
    }
}

fn sub(channels: &[&str], from: Option<u64>) -> SubscribeRequest {
    SubscribeRequest { channels: channels.iter().map(|s| s.to_string()).collect(), from_id: from, ..Default::default() }
}

#[tokio::test]
async fn publish_then_subscribe_round_trip() {
    let server = Server::start().await;
    let mut c = server.grpc("acme", Role::Publish).await;
    let mut s = c.subscribe(sub(&["alerts"], None)).await.unwrap().into_inner();
    let Message::Status(st) = next_msg(&mut s).await else { panic!("status first") };
    assert!(st.complete);
    let r = c.publish(PublishRequest { event: Some(events::alert("disk full")) }).await.unwrap().into_inner();
    assert!(r.id > 0);
    let e = next_event(&mut s).await;
    assert_eq!(e.id, r.id);
    assert_eq!(e.tenant, "acme");
    assert!(e.published_at.is_some());
    assert!(matches!(e.payload, Some(Payload::AlertWarning(ref a)) if a.title == "disk full"));
    // Stats is an admin's, and a tenant's admin sees its own tenant only.
    let denied = c.stats(StatsRequest {}).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let mut other = server.grpc("other", Role::Publish).await;
    let other_id = other.publish(PublishRequest { event: Some(events::alert("x")) }).await.unwrap().into_inner().id;
    let stats = server.grpc("acme", Role::Admin).await.stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.head_id, other_id);
    assert_eq!(
        (stats.published_total, stats.subscribers, stats.events_stored),
        (1, 1, 0),
        "acme's own, not the store's"
    );
    assert_eq!(stats.published_by_type.get("alert:warning"), Some(&1));
    server.stop().await;
}

#[tokio::test]
async fn publish_stream_acks_ten_thousand_in_order() {
    let server = Server::start().await;
    let mut c = server.grpc("acme", Role::Publish).await;
    let reqs: Vec<PublishRequest> = (0..10_000)
        .map(|i| PublishRequest {
            event: Some(if i == 5000 { Event::default() } else { events::order(&i.to_string()) }),
        })
        .collect();
    let mut acks = c.publish_stream(futures::stream::iter(reqs)).await.unwrap().into_inner();
    let mut last_id = 0;
    let mut n = 0u64;
    while let Some(ack) = acks.next().await {
        let ack = ack.unwrap();
        assert_eq!(ack.seq, n, "acks arrive in request order");
        match ack.result.unwrap() {
            publish_ack::Result::Id(id) => {
                assert!(id > last_id, "ids increase in request order");
                last_id = id;
            }
            publish_ack::Result::Error(e) => {
                assert_eq!(n, 5000, "only the empty event fails");
                assert_eq!(e.code, "unknown_type");
                assert_eq!(e.field, "event.payload");
            }
        }
        n += 1;
    }
    assert_eq!(n, 10_000);
    // All 9,999 good events are in history, in order.
    let mut s = c.subscribe(sub(&["dashboard"], Some(0))).await.unwrap().into_inner();
    let mut prev = 0;
    for _ in 0..9_999 {
        let e = next_event(&mut s).await;
        assert!(e.id > prev);
        prev = e.id;
    }
    assert_eq!(prev, last_id);
    server.stop().await;
}

#[tokio::test]
async fn resume_after_the_process_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let p = Process::serve(dir.path(), &[]);
    let token = p.token("acme", Role::Publish);
    let mut c = tools::connect(&p.grpc_url, &token).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(
            c.publish(PublishRequest { event: Some(events::order(&i.to_string())) }).await.unwrap().into_inner().id,
        );
    }
    // SIGKILL: every acked event must have been durable.
    p.kill();
    let p = Process::serve(dir.path(), &[]);
    let mut c = tools::connect(&p.grpc_url, &p.token("acme", Role::Publish)).await.unwrap();
    let mut s = c.subscribe(sub(&["dashboard"], Some(ids[49]))).await.unwrap().into_inner();
    let Message::Status(st) = next_msg(&mut s).await else { panic!() };
    assert!(st.complete);
    assert_eq!(st.head_id, ids[99]);
    for want in &ids[50..] {
        assert_eq!(next_event(&mut s).await.id, *want);
    }
    // Ids keep growing after the restart.
    let next = c.publish(PublishRequest { event: Some(events::order("after")) }).await.unwrap().into_inner().id;
    assert!(next > ids[99]);
    assert_eq!(next_event(&mut s).await.id, next);
}

#[tokio::test]
async fn ids_are_never_reused_after_a_crash_in_any_fsync_mode() {
    for mode in ["always", "batch", "off"] {
        let dir = tempfile::tempdir().unwrap();
        // With batch, nothing is fsynced on its own for ten minutes: a kill loses what was acked.
        let config = dir.path().join("s.toml");
        std::fs::write(&config, format!("[log]\nfsync = \"{mode}\"\nbatch_interval_ms = 600000\n")).unwrap();
        let args = ["--config", config.to_str().unwrap()];
        let p = Process::serve(dir.path(), &args);
        let mut c = tools::connect(&p.grpc_url, &p.token("acme", Role::Publish)).await.unwrap();
        let seen = switchyard_tests::publish_alerts(&mut c, 0..20).await;
        let last_seen = *seen.last().unwrap();
        p.kill();
        let p = Process::serve(dir.path(), &args);
        let mut c = tools::connect(&p.grpc_url, &p.token("acme", Role::Publish)).await.unwrap();
        let next = switchyard_tests::publish_alerts(&mut c, 20..21).await[0];
        assert!(next > last_seen, "{mode}: id {next} handed out again after a crash (a client saw {last_seen})");
        // A client that saw `last_seen` resumes: it gets the new event, and is told of a gap if
        // the crash took back events it saw. Never silence.
        let mut s = c.subscribe(sub(&["alerts"], Some(last_seen))).await.unwrap().into_inner();
        let Message::Status(st) = next_msg(&mut s).await else { panic!("status first") };
        let stored = c
            .read(switchyard::proto::v1::ReadRequest {
                channels: vec!["alerts".into()],
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        let lost = !stored.iter().any(|e| e.id == last_seen);
        assert_eq!(st.complete, !lost, "{mode}: the resume says whether events it saw were lost");
        if mode == "always" {
            assert!(!lost, "always: every acked event survives kill -9");
        }
        let first = loop {
            match next_msg(&mut s).await {
                Message::Event(e) => break e.id,
                _ => continue,
            }
        };
        assert_eq!(first, next, "{mode}: the next event arrives");
        eprintln!("fsync = {mode}: lost {lost}, next id {next} after {last_seen}");
    }
}

#[tokio::test]
async fn per_channel_order_under_concurrent_publishers() {
    let server = Server::start().await;
    let mut c = server.grpc("acme", Role::Publish).await;
    let mut s = c.subscribe(sub(&["dashboard"], None)).await.unwrap().into_inner();
    next_msg(&mut s).await;
    let mut tasks = Vec::new();
    for p in 0..4 {
        let mut c = server.grpc("acme", Role::Publish).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                c.publish(PublishRequest { event: Some(events::order(&format!("{p}-{i}"))) }).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut prev = 0;
    let mut per_publisher: HashMap<String, u32> = HashMap::new();
    for _ in 0..1000 {
        let e = next_event(&mut s).await;
        assert!(e.id > prev, "ids strictly increase");
        prev = e.id;
        let (p, i) = e.key.split_once('-').unwrap();
        let i: u32 = i.parse().unwrap();
        let expected = per_publisher.entry(p.to_owned()).or_insert(0);
        assert_eq!(i, *expected, "each publisher's events arrive in its publish order");
        *expected += 1;
    }
    assert!(per_publisher.values().all(|n| *n == 250));
    server.stop().await;
}

#[tokio::test]
async fn snapshots_coalesce_and_facts_do_not() {
    let server = Server::start().await;
    let mut c = server.grpc("acme", Role::Publish).await;
    let mut req = sub(&["dashboard"], None);
    req.coalesce = Some(true);
    let mut s = c.subscribe(req).await.unwrap().into_inner();
    next_msg(&mut s).await;
    // Ten snapshots of one key and ten orders, in one burst (well within a second).
    let mut burst: Vec<PublishRequest> =
        (1..=10).map(|n| PublishRequest { event: Some(events::totals("all", n)) }).collect();
    burst.extend((0..10).map(|i| PublishRequest { event: Some(events::order(&i.to_string())) }));
    let mut acks = c.publish_stream(futures::stream::iter(burst)).await.unwrap().into_inner();
    while acks.next().await.is_some() {}
    let (mut snapshots, mut orders) = (Vec::new(), 0);
    while snapshots.last() != Some(&10) || orders < 10 {
        match next_event(&mut s).await.payload {
            Some(Payload::ShopifySyncCompleted(t)) => snapshots.push(t.total_orders),
            Some(Payload::ShopifyOrderCreated(_)) => orders += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(orders, 10, "facts are never coalesced");
    assert!(snapshots.len() <= 2, "at most a leading and a trailing snapshot: {snapshots:?}");
    assert_eq!(snapshots.last(), Some(&10), "the final state arrives");
    server.stop().await;
}

#[tokio::test]
async fn validation_errors_name_the_field_over_grpc() {
    let server = Server::start_with(|c| c.bus.custom_channels = vec!["ops".into()]).await;
    let mut c = server.grpc("acme", Role::Publish).await;
    let shared = c.clone();
    let status = |e: Event| {
        let mut c = shared.clone();
        async move { c.publish(PublishRequest { event: Some(e) }).await.unwrap_err() }
    };
    let st = status(Event::default()).await;
    assert_eq!(st.code(), Code::InvalidArgument);
    assert!(st.message().starts_with("event.payload"), "{}", st.message());
    let st = status(events::progress("", 5)).await;
    assert!(st.message().starts_with("event.key"), "{}", st.message());
    let custom = |ch: &str| Event {
        payload: Some(Payload::Custom(switchyard::proto::v1::CustomEvent {
            r#type: "acme:thing".into(),
            json: "{}".into(),
            channels: vec![ch.into()],
            delivery: 0,
        })),
        ..Default::default()
    };
    let st = status(custom("unconfigured")).await;
    assert_eq!(st.code(), Code::InvalidArgument);
    assert!(st.message().starts_with("event.custom.channels"), "{}", st.message());
    c.publish(PublishRequest { event: Some(custom("ops")) }).await.expect("configured custom channel");
    let mut big = events::alert("x");
    big.source = "s".repeat(300);
    assert!(status(big).await.message().starts_with("event.source"));
    let mut huge = events::alert(&"x".repeat(70_000));
    huge.tenant = String::new();
    assert!(status(huge).await.message().contains("limit"));
    let st = status(events::with_tenant(events::alert("x"), "other")).await;
    assert_eq!(st.code(), Code::PermissionDenied);
    let st = c.publish(PublishRequest { event: None }).await.unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument);
    // Subscribers: bad and unknown channels, wrong role, no token.
    let st = c.subscribe(sub(&["Bad Channel"], None)).await.unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument);
    let st = c.subscribe(sub(&["nowhere"], None)).await.unwrap_err();
    assert_eq!(st.code(), Code::NotFound);
    let mut sub_only = server.grpc("acme", Role::Subscribe).await;
    let st = sub_only.publish(PublishRequest { event: Some(events::alert("x")) }).await.unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    let mut anon = tools::connect(&server.grpc_url, "not-a-jwt").await.unwrap();
    assert_eq!(anon.stats(StatsRequest {}).await.unwrap_err().code(), Code::Unauthenticated);
    server.stop().await;
}

#[tokio::test]
async fn a_tenant_never_sees_another_tenants_events() {
    let server = Server::start().await;
    let mut a = server.grpc("tenant-a", Role::Publish).await;
    let mut b = server.grpc("tenant-b", Role::Publish).await;
    let mut sa = a.subscribe(sub(&[], Some(0))).await.unwrap().into_inner();
    next_msg(&mut sa).await;
    for i in 0..50 {
        b.publish(PublishRequest { event: Some(events::alert(&format!("b{i}"))) }).await.unwrap();
        if i % 10 == 0 {
            a.publish(PublishRequest { event: Some(events::alert(&format!("a{i}"))) }).await.unwrap();
        }
    }
    let last = a.publish(PublishRequest { event: Some(events::alert("a-last")) }).await.unwrap().into_inner().id;
    let mut seen = 0;
    loop {
        let e = next_event(&mut sa).await;
        assert_eq!(e.tenant, "tenant-a");
        seen += 1;
        if e.id == last {
            break;
        }
    }
    assert_eq!(seen, 6);
    // Asking for another tenant explicitly is refused.
    let mut req = sub(&[], None);
    req.tenant = "tenant-b".into();
    assert_eq!(a.subscribe(req).await.unwrap_err().code(), Code::PermissionDenied);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_subscriber_that_falls_behind_catches_up_from_the_log() {
    let server = Server::start().await;
    let mut c = server.grpc("acme", Role::Publish).await;
    let mut s = c.subscribe(sub(&["dashboard"], None)).await.unwrap().into_inner();
    next_msg(&mut s).await;
    // Not reading while far more than a hub ring (4,096) is published: flow control
    // stops the server stream, the ring overflows, and the subscriber must catch up from the log.
    let total = 12_000u64;
    let reqs = (0..total).map(|i| PublishRequest { event: Some(events::order(&i.to_string())) });
    let mut acks = c.publish_stream(futures::stream::iter(reqs)).await.unwrap().into_inner();
    let mut ids = Vec::new();
    while let Some(a) = acks.next().await {
        if let Some(publish_ack::Result::Id(id)) = a.unwrap().result {
            ids.push(id);
        }
    }
    for want in ids {
        assert_eq!(next_event(&mut s).await.id, want, "nothing skipped, nothing repeated");
    }
    server.stop().await;
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let server = Server::start().await;
    let channel = tonic::transport::Channel::from_shared(server.grpc_url.clone()).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    let r = health.check(HealthCheckRequest { service: "switchyard.v1.EventBus".into() }).await.unwrap().into_inner();
    assert_eq!(r.status(), ServingStatus::Serving);
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = reflection.server_reflection_info(futures::stream::iter([req])).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.next().await.unwrap().unwrap().message_response else {
        panic!("list services")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"switchyard.v1.EventBus".to_owned()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_owned()), "{names:?}");
    // The older v1alpha protocol too (grpcio-reflection, Postman, older grpcurl).
    use tonic_reflection::pb::v1alpha as alpha;
    let mut reflection = alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let req = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut resp = reflection.server_reflection_info(futures::stream::iter([req])).await.unwrap().into_inner();
    let Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        resp.next().await.unwrap().unwrap().message_response
    else {
        panic!("list services over v1alpha")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for served in ["switchyard.v1.EventBus", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"] {
        assert!(names.iter().any(|n| n == served), "{served} over v1alpha: {names:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_publish_from_stdin_and_tail() {
    use std::{
        io::Write,
        process::{Command, Stdio},
    };
    let dir = tempfile::tempdir().unwrap();
    let p = Process::serve(dir.path(), &[]);
    let bin = switchyard_tests::binary();
    let mut tail = Command::new(&bin)
        .args(["tail", "--tenant", "acme", "--channels", "alerts", "--from", "0", "--bus", &p.grpc_url, "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut publish = Command::new(&bin)
        .args(["publish", "--tenant", "acme", "--bus", &p.grpc_url, "--data-dir"])
        .arg(dir.path())
        .arg("-")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = publish.stdin.take().unwrap();
    for i in 0..50 {
        writeln!(stdin, r#"{{"type":"alert:info","data":{{"title":"line {i}"}}}}"#).unwrap();
    }
    writeln!(stdin, r#"{{"type":"alert:info","data":{{"nope":1}}}}"#).unwrap();
    drop(stdin);
    let out = publish.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "one bad line fails the command");
    assert!(err.contains("published 50 events, 1 failed"), "{err}");
    assert!(err.contains("line 51"), "the bad line is named: {err}");
    // tail printed the 50 events as JSON lines.
    let stdout = tail.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout).lines().take(50).map(|l| l.unwrap()).collect::<Vec<_>>()
    });
    let lines = tokio::time::timeout(PATIENCE, lines).await.unwrap().unwrap();
    let _ = tail.kill();
    let _ = tail.wait();
    assert_eq!(lines.len(), 50);
    let last: serde_json::Value = serde_json::from_str(&lines[49]).unwrap();
    assert_eq!(last["alertInfo"]["title"], "line 49");
}

#[tokio::test]
async fn a_tenant_over_its_publish_rate_is_told_to_wait_and_others_are_not() {
    let server = Server::start_with(|c| {
        c.bus.publish_rate = 0.5;
        c.bus.publish_burst = 100.0;
    })
    .await;
    let mut acme = server.grpc("acme", Role::Publish).await;
    let batch =
        |n: u32| (0..n).map(|i| PublishRequest { event: Some(events::alert(&i.to_string())) }).collect::<Vec<_>>();
    // The burst goes through, then the next publish is refused with RESOURCE_EXHAUSTED.
    let mut acks = acme.publish_stream(futures::stream::iter(batch(100))).await.unwrap().into_inner();
    let mut ok = 0;
    while let Some(a) = acks.next().await {
        ok += matches!(a.unwrap().result, Some(switchyard::proto::v1::publish_ack::Result::Id(_))) as u32;
    }
    assert_eq!(ok, 100);
    let err = acme.publish(PublishRequest { event: Some(events::alert("one too many")) }).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // Over HTTP: 429 with Retry-After and the documented JSON error.
    let r = switchyard_tests::http()
        .post(format!("{}/api/events", server.http_url))
        .bearer_auth(server.token("acme", Role::Publish, &[]))
        .json(&serde_json::json!({"type": "alert:info", "data": {"title": "again"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another tenant publishes as usual.
    let mut globex = server.grpc("globex", Role::Publish).await;
    assert!(globex.publish(PublishRequest { event: Some(events::alert("fine")) }).await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn a_tenant_at_its_key_quota_gets_a_clear_429_and_others_are_not_held_back() {
    let server = Server::start_with(|c| c.log.quotas.max_keys_per_tenant = 2).await;
    let publish = |tenant: &'static str, key: &str| {
        let body = serde_json::json!({"type": "system:health-check", "key": key, "data": {"component": "db"}});
        switchyard_tests::http()
            .post(format!("{}/api/events", server.http_url))
            .bearer_auth(server.token(tenant, Role::Publish, &[]))
            .json(&body)
            .send()
    };
    for key in ["db", "cache", "db"] {
        assert_eq!(publish("acme", key).await.unwrap().status(), 201, "{key}: within the quota, or a key it holds");
    }
    let r = publish("acme", "queue").await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(!r.headers().contains_key("retry-after"), "waiting alone does not free a key");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded");
    assert_eq!(body["error"]["field"], "key");
    assert!(body["error"]["message"].as_str().unwrap().contains("max_keys_per_tenant"), "{body}");
    assert_eq!(publish("globex", "queue").await.unwrap().status(), 201, "quotas are per tenant");
    server.stop().await;
}

#[tokio::test]
async fn a_stream_over_its_rate_is_slowed_down_not_refused() {
    let server = Server::start_with(|c| {
        c.bus.publish_rate = 20.0;
        c.bus.publish_burst = 10.0;
    })
    .await;
    let mut acme = server.grpc("acme", Role::Publish).await;
    let started = std::time::Instant::now();
    let reqs = (0..40).map(|i| PublishRequest { event: Some(events::alert(&i.to_string())) }).collect::<Vec<_>>();
    let mut acks = acme.publish_stream(futures::stream::iter(reqs)).await.unwrap().into_inner();
    let mut ids = Vec::new();
    while let Some(a) = acks.next().await {
        match a.unwrap().result {
            Some(switchyard::proto::v1::publish_ack::Result::Id(id)) => ids.push(id),
            other => panic!("refused: {other:?}"),
        }
    }
    assert_eq!(ids.len(), 40, "every event stored");
    // 10 at once, the other 30 at 20/s: at least 1.5 s.
    assert!(started.elapsed() >= std::time::Duration::from_millis(1_400), "{:?}", started.elapsed());
    server.stop().await;
}
