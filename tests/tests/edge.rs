//! The edge against one client with no token, or a token and bad intentions: nothing is
//! allocated before it is allowed, and what a request may make the server hold is capped.

use bytes::Bytes;
use switchyard::auth::Role;
use switchyard_tests::{Process, Server, peak_rss_kib, raw_grpc, raw_grpc_many};

/// A 4 MiB `PublishBatchRequest` of two million empty events: the bytes `0a 00` repeated.
fn empty_event_flood() -> Bytes {
    Bytes::from([0x0a, 0x00].repeat(2 * 1024 * 1024))
}

const PUBLISH_BATCH: &str = "/switchyard.v1.EventBus/PublishBatch";

/// Four such calls at once on one connection, with no token (then with a bad one, then with a
/// good one): each is refused, and the server's peak memory hardly moves. Before, tonic decoded
/// each into two million `Event`s before the handler saw there was no token (3.2 GB).
#[tokio::test(flavor = "multi_thread")]
async fn an_unauthenticated_batch_flood_is_refused_before_it_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Process::serve(dir.path(), &[]);
    let before = peak_rss_kib(server.pid());
    let flood = vec![empty_event_flood(); 4];

    for answer in raw_grpc_many(&server.grpc_url, PUBLISH_BATCH, None, flood.clone()).await {
        assert_eq!(answer.0, "16", "UNAUTHENTICATED: {answer:?}");
    }
    for answer in raw_grpc_many(&server.grpc_url, PUBLISH_BATCH, Some("not.a.token"), flood.clone()).await {
        assert_eq!(answer.0, "16", "UNAUTHENTICATED: {answer:?}");
    }
    // A real publisher's token: the events are counted on the wire, past 10,000 the batch is refused.
    let token = server.token("acme", Role::Publish);
    for answer in raw_grpc_many(&server.grpc_url, PUBLISH_BATCH, Some(&token), flood).await {
        assert_eq!(answer.0, "3", "INVALID_ARGUMENT: {answer:?}");
        assert!(answer.1.contains("at most 10000"), "{answer:?}");
    }
    let rise = peak_rss_kib(server.pid()).saturating_sub(before);
    assert!(rise < 64 * 1024, "peak RSS rose {rise} KiB under 12 flood calls");
}

/// Each method reads only what it needs: a `Publish` bigger than one event and its envelope, or
/// a `Read` bigger than 64 KiB, is refused by its length.
#[tokio::test(flavor = "multi_thread")]
async fn each_method_decodes_only_the_size_it_needs() {
    let server = Server::start().await;
    let token = server.token("acme", Role::Publish, &[]);
    // An Event whose `key` (field 5) is 200 KiB: 64 KiB + 4 KiB is the most a Publish may hold.
    let mut event = vec![0x2a];
    prost::encoding::encode_varint(200 * 1024, &mut event);
    event.resize(event.len() + 200 * 1024, b'k');
    let mut publish = vec![0x0a];
    prost::encoding::encode_varint(event.len() as u64, &mut publish);
    publish.extend_from_slice(&event);
    let (status, message) =
        raw_grpc(&server.grpc_url, "/switchyard.v1.EventBus/Publish", Some(&token), Bytes::from(publish)).await;
    assert_eq!(status, "11", "OUT_OF_RANGE: {message}");
    assert!(message.contains("too large"), "{message}");
    let (status, message) =
        raw_grpc(&server.grpc_url, "/switchyard.v1.EventBus/Read", Some(&token), Bytes::from(vec![0; 100 * 1024]))
            .await;
    assert_eq!(status, "11", "OUT_OF_RANGE: {message}");
    server.stop().await;
}

/// `Subscribe` takes a place under the same per-token cap as SSE, and a token's open calls over
/// all its connections are capped too.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_subscriptions_and_calls_count_against_the_token_caps() {
    use switchyard::proto::v1::{PublishRequest, ReadRequest, SubscribeRequest};
    let server = Server::start_with(|c| {
        c.sse.max_per_token = 3;
        c.grpc.max_calls_per_token = 5;
    })
    .await;
    let token = server.token("acme", Role::Publish, &[]);
    let connect = || switchyard_bridge::cli::tools::connect(&server.grpc_url, &token);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut client = connect().await.unwrap();
        held.push(client.subscribe(SubscribeRequest::default()).await.expect("within the cap"));
    }
    let mut client = connect().await.unwrap();
    let refused = client.subscribe(SubscribeRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("connection limit"), "{refused:?}");
    // The token's SSE streams share those places.
    let sse = switchyard_tests::http()
        .get(format!("{}/api/sse/alerts", server.http_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 429);

    // Two open publish streams make five calls: a sixth, of any kind, on any connection, waits its turn.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = tokio::sync::mpsc::channel::<PublishRequest>(1);
        let mut c = connect().await.unwrap();
        let acks = c.publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("stream opens");
        streams.push((tx, acks));
    }
    let refused = connect().await.unwrap().read(ReadRequest { limit: 1, ..Default::default() }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("calls open"), "{refused:?}");

    // Places come back when the calls end.
    drop((held, streams));
    switchyard_tests::wait_for("the token's places to come back", || {
        let mut c = client.clone();
        async move { c.subscribe(SubscribeRequest::default()).await.ok() }
    })
    .await;
    server.stop().await;
}

/// An 8 MiB body of `[{},{},…]` (2.8 million items) is refused with a clear 400 as soon as the
/// batch cap is passed, within a second and with little memory: before, the whole body became
/// a JSON tree and an `Event` per item first.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_http_batch_is_refused_while_it_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Process::serve(dir.path(), &[]);
    let token = server.token("acme", Role::Publish);
    let mut body = Vec::with_capacity(8 * 1024 * 1024);
    body.push(b'[');
    while body.len() < 8 * 1024 * 1024 - 4 {
        body.extend_from_slice(b"{},");
    }
    body.extend_from_slice(b"{}]");
    let before = peak_rss_kib(server.pid());
    let started = std::time::Instant::now();
    let r = switchyard_tests::http()
        .post(format!("{}/api/events", server.http_url))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 400);
    let err: serde_json::Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "batch_too_large", "{err}");
    assert_eq!(err["error"]["field"], "events", "{err}");
    assert!(took < std::time::Duration::from_secs(1), "answered in {took:?}");
    let rise = peak_rss_kib(server.pid()).saturating_sub(before);
    assert!(rise < 200 * 1024, "peak RSS rose {rise} KiB");
    // A batch at the cap is still one all-or-nothing publish.
    let at_cap: Vec<_> =
        (0..10_000).map(|i| serde_json::json!({"type": "alert:info", "data": {"title": i.to_string()}})).collect();
    let r = switchyard_tests::http()
        .post(format!("{}/api/events", server.http_url))
        .bearer_auth(&token)
        .json(&at_cap)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// HTTP/2 connections that hold no stream are closed after the idle timeout (30 s by default)
/// though they answer pings, on the HTTP port (h2c) and the gRPC port; request bodies that
/// trickle in are cut with a 408 once their grace is over. 200 of each, on the defaults, all
/// gone within 60 s, and their descriptors with them.
#[tokio::test(flavor = "multi_thread")]
async fn idle_h2_connections_and_slow_bodies_are_closed_within_a_minute() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let server = Process::serve(dir.path(), &[]);
    let before = switchyard_tests::fds(server.pid());
    let started = std::time::Instant::now();
    let mut idle = Vec::new();
    for base in [&server.http_url, &server.grpc_url] {
        let addr = base.trim_start_matches("http://").to_owned();
        for _ in 0..200 {
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(std::time::Duration::from_secs(5))
                .keep_alive_while_idle(true)
                .handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .expect("h2 handshake");
            let conn = tokio::spawn(conn);
            // One request first: a connection that was used, then left idle.
            let req = hyper::Request::get(format!("{base}/healthz"))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let _ = sender.send_request(req).await;
            idle.push((sender, conn));
        }
    }
    let token = server.token("acme", Role::Publish);
    let addr = server.http_url.trim_start_matches("http://").to_owned();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /api/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n["
        );
        s.write_all(head.as_bytes()).await.unwrap();
        slow.push(s);
    }
    let held = switchyard_tests::wait_for("the server to hold them all", || async {
        let now = switchyard_tests::fds(server.pid());
        (now >= before + 600).then_some(now)
    })
    .await;
    assert!(held >= before + 600);
    // The slow bodies go on trickling, a byte every 2 s, until the server answers.
    let trickle = slow.into_iter().map(|mut s| {
        tokio::spawn(async move {
            let mut answer = Vec::new();
            loop {
                let mut buf = [0u8; 512];
                tokio::select! {
                    read = s.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return answer,
                        Ok(n) => answer.extend_from_slice(&buf[..n]),
                    },
                    () = tokio::time::sleep(std::time::Duration::from_secs(2)) => {
                        let _ = s.write_all(b" ").await;
                    }
                }
            }
        })
    });
    let deadline = std::time::Duration::from_secs(60);
    for answer in futures::future::join_all(trickle).await {
        let answer = String::from_utf8_lossy(&answer.unwrap()).into_owned();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("body_too_slow"), "{answer}");
    }
    assert!(started.elapsed() < deadline, "slow bodies cut after {:?}", started.elapsed());
    for (sender, conn) in idle {
        let left = deadline.saturating_sub(started.elapsed());
        tokio::time::timeout(left, conn).await.expect("the server closed the idle connection in time").unwrap().ok();
        drop(sender);
    }
    let took = started.elapsed();
    assert!(took > std::time::Duration::from_secs(25), "not before the idle timeout: {took:?}");
    let after = switchyard_tests::wait_for("descriptors freed", || async {
        let now = switchyard_tests::fds(server.pid());
        (now <= before + 10).then_some(now)
    })
    .await;
    assert!(after <= before + 10, "{before} → {after}");
}

/// A delivery to a platform (or Standard Webhooks source) that is not configured is answered
/// 404 from its head alone: the server does not wait for, or read, its body.
#[tokio::test(flavor = "multi_thread")]
async fn webhooks_for_sources_not_configured_are_refused_before_the_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start().await;
    for path in ["/api/webhooks/shopify", "/api/webhooks/billing"] {
        let mut s = tokio::net::TcpStream::connect(server.running.http_addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 900000\r\n\r\n{{"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("answered without the body")
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        assert!(answer.contains("not_configured"), "{answer}");
    }
    server.stop().await;
}

/// With the default 15 s heartbeat, a stream whose token expires while events keep coming gets
/// none published at or after `exp`, and ends saying why: SSE (through the writers) and gRPC.
/// Before, the check ran only on the heartbeat, and events flowed for up to 15 s after `exp`.
#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_delivered_after_a_token_expires() {
    use futures::StreamExt;
    use switchyard::proto::v1::{PublishRequest, SubscribeRequest, subscribe_response::Message};
    let server = Server::start().await;
    let short = server.running.signer.mint("acme", Role::Subscribe, vec![], 3);
    let exp_ms = switchyard::auth::now_secs() * 1000 + 3000;
    let mut sse =
        switchyard_tests::Sse::connect(&format!("{}/api/sse/alerts", server.http_url), Some(&short), None).await;
    assert_eq!(sse.status, 200);
    let mut grpc = switchyard_bridge::cli::tools::connect(&server.grpc_url, &short).await.unwrap();
    let mut sub = grpc
        .subscribe(SubscribeRequest { channels: vec!["alerts".into()], ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut publisher = server.grpc("acme", Role::Publish).await;
    let publishing = tokio::spawn(async move {
        for i in 0..60 {
            let event = Some(switchyard_tests::events::alert(&format!("a{i}")));
            publisher.publish(PublishRequest { event }).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    let published_ms = |e: &switchyard::proto::v1::Event| {
        let t = e.published_at.as_ref().expect("stamped");
        t.seconds as u64 * 1000 + t.nanos as u64 / 1_000_000
    };
    let mut sse_events = 0;
    let end = loop {
        let f = sse.next_event().await.expect("the stream says why it ends");
        if f.event.as_deref() == Some("stream:reconnect") {
            break f;
        }
        let ms = f.json()["publishedAt"].as_str().and_then(|t| switchyard::names::parse_time_ms(t).ok()).unwrap();
        assert!(ms < exp_ms, "SSE delivered an event published {} ms after exp", ms - exp_ms);
        sse_events += 1;
    };
    assert_eq!(end.json()["code"], "token_expired");
    let mut grpc_events = 0;
    let status = loop {
        match sub.next().await {
            Some(Ok(m)) => {
                if let Some(Message::Event(e)) = m.message {
                    assert!(published_ms(&e) < exp_ms, "gRPC delivered an event published after exp");
                    grpc_events += 1;
                }
            }
            Some(Err(status)) => break status,
            None => panic!("ended without a status"),
        }
    };
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(sse_events > 5 && grpc_events > 5, "events flowed before exp: {sse_events}, {grpc_events}");
    publishing.await.unwrap();
    server.stop().await;
}

/// One tenant's admin revoking as fast as it can (200 at once, each appended and synced off the
/// runtime) holds nobody else up: another tenant's revocation and ticket redemption succeed
/// meanwhile. (The per-tenant caps that keep a flood to its own share are shown by
/// `ledger::tests`: 10,000 revocations and 10,000 redeemed tickets a tenant.)
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_flooding_revocations_leaves_room_for_others() {
    let server = Server::start().await;
    let url = |p: &str| format!("{}{p}", server.http_url);
    let flood_admin = server.token("flood", Role::Admin, &[]);
    let revoke = |token: String, jti: String| {
        switchyard_tests::http()
            .post(url("/api/tokens/revoke"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "jti": jti }))
            .send()
    };
    let flood = tokio::spawn({
        let calls: Vec<_> = (0..200).map(|i| revoke(flood_admin.clone(), format!("f{i}"))).collect();
        async move { futures::future::join_all(calls).await }
    });
    // Meanwhile acme revokes, and redeems a ticket.
    let started = std::time::Instant::now();
    let r = revoke(server.token("acme", Role::Admin, &[]), "leaked".into()).await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let sub = server.token("acme", Role::Subscribe, &[]);
    let ticket = switchyard_tests::post_json(&url("/api/sse/ticket"), &sub, &serde_json::json!({})).await;
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    let r = switchyard_tests::http()
        .get(url(&format!("/api/events?channels=alerts&ticket={ticket}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let took = started.elapsed();
    let flooded = flood.await.unwrap();
    assert!(flooded.iter().all(|r| r.as_ref().is_ok_and(|r| r.status() == 200)), "within the tenant's share");
    assert!(took < std::time::Duration::from_secs(10), "acme waited {took:?}");
    server.stop().await;
}

/// Custom type names and job ids are the publisher's to choose: 5,000 of each leave `/metrics`
/// with the same series (custom types counted as `custom`, jobs as `jobs/*`), and neither
/// `/metrics` nor the system admin's status prints one of them.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_status_never_grow_with_names_tenants_choose() {
    let server = Server::start().await;
    let token = server.token("acme", Role::Publish, &[]);
    let url = format!("{}/api/events", server.http_url);
    let publish =
        |events: Vec<serde_json::Value>| switchyard_tests::http().post(&url).bearer_auth(&token).json(&events).send();
    let custom = |i: usize| serde_json::json!({"type": format!("acme:thing-{i}"), "channels": ["alerts"], "data": {}});
    let job = |i: usize| serde_json::json!({"type": "import:job-progress", "key": format!("job-{i}"), "data": {"jobId": format!("job-{i}"), "percent": 1}});
    assert_eq!(publish(vec![custom(0), job(0)]).await.unwrap().status(), 201);
    let series = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_owned()))
            .collect()
    };
    let metrics = || async {
        switchyard_tests::http().get(format!("{}/metrics", server.http_url)).send().await.unwrap().text().await.unwrap()
    };
    let before = series(&metrics().await);
    for chunk in (1..5_001).collect::<Vec<_>>().chunks(1_000) {
        let r = publish(chunk.iter().flat_map(|&i| [custom(i), job(i)]).collect()).await.unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
    }
    let text = metrics().await;
    assert_eq!(series(&text), before, "the same series after 5,000 custom types and jobs");
    assert!(!text.contains("thing-4999") && !text.contains("job-4999"), "no tenant-chosen name printed");
    assert!(text.contains("switchyard_published_total{type=\"custom\"}"), "custom types counted as one");
    let status = switchyard_tests::get_json(
        &format!("{}/api/sse/status", server.http_url),
        &server.token("*", Role::Admin, &[]),
    )
    .await;
    let status = status.to_string();
    assert!(!status.contains("thing-4999") && !status.contains("job-4999"), "status names none either");
    assert!(status.contains("jobs/*"), "jobs counted as jobs/*");
    server.stop().await;
}
