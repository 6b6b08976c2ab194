//! The SSE bridge over real HTTP: frames, resume seams, gaps, auth, limits,
//! slow clients, shutdown, polling, HTTP publish and the OpenAPI document.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde_json::{Value, json};
use switchyard::{
    auth::{Claims, Role, Signer, now_secs},
    log::now_ms,
    proto::v1::PublishRequest,
};
use switchyard_tests::{PATIENCE, Process, Server, Sse, events, fds, get_json, post_json, publish_alerts, rss_kib};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn publish(server: &Server, tenant: &str, e: switchyard::proto::v1::Event) -> u64 {
    let mut c = server.grpc(tenant, Role::Publish).await;
    c.publish(PublishRequest { event: Some(e) }).await.unwrap().into_inner().id
}

async fn error_of(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("JSON error body");
    (status, body["error"]["code"].as_str().expect("error.code").to_owned())
}

#[tokio::test]
async fn frames_and_headers() {
    let server = Server::start().await;
    let token = server.token("acme", Role::Subscribe, &[]);
    let mut sse = Sse::connect(&format!("{}/api/sse/alerts", server.http_url), Some(&token), None).await;
    assert_eq!(sse.status, 200);
    let h = &sse.response_headers;
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    assert_eq!(h["x-switchyard-resume"], "complete");
    let first = sse.next().await.unwrap();
    assert_eq!(first.retry, Some(2000), "retry hint comes first");
    let id = publish(&server, "acme", events::alert("disk full")).await;
    let f = sse.next_event().await.unwrap();
    assert_eq!(f.id_u64(), Some(id));
    assert_eq!(f.event.as_deref(), Some("alert:warning"));
    let data = f.json();
    assert_eq!(data["id"], id.to_string());
    assert_eq!(data["alertWarning"]["title"], "disk full");
    assert!(!f.data.contains('\n'), "data is one line");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_seam_has_no_gap_and_no_duplicate_under_concurrent_publishing() {
    let server = Server::start().await;
    let token = server.token("acme", Role::Subscribe, &[]);
    let url = format!("{}/api/sse/dashboard", server.http_url);
    let total = 3000u64;
    let mut c = server.grpc("acme", Role::Publish).await;
    // Subscribed before the first publish: a stream without Last-Event-ID starts at the head,
    // so connecting after the publisher started would (rightly) miss its first events.
    let mut first = Some(Sse::connect(&url, Some(&token), None).await);
    // Small PublishStream batches: publishing keeps going while the reader reconnects.
    let mut publisher = tokio::spawn(async move {
        let mut last = 0;
        for b in 0..total / 50 {
            let batch = (0..50).map(move |i| PublishRequest { event: Some(events::order(&(b * 50 + i).to_string())) });
            let mut acks = c.publish_stream(futures::stream::iter(batch)).await.expect("PublishStream").into_inner();
            while let Some(a) = acks.next().await {
                match a.expect("ack").result {
                    Some(switchyard::proto::v1::publish_ack::Result::Id(id)) => last = id,
                    other => panic!("publish refused: {other:?}"),
                }
            }
        }
        last
    });
    let mut last = None;
    let mut got: Vec<u64> = Vec::new();
    let mut resume_from = None;
    // Reconnect every ~300 events while the publisher keeps going.
    while got.len() as u64 != total {
        let mut sse = match first.take() {
            Some(sse) => sse,
            None => Sse::connect(&url, Some(&token), resume_from).await,
        };
        assert_eq!(sse.response_headers["x-switchyard-resume"], "complete");
        let mut n = 0;
        while n < 300 && got.len() as u64 != total {
            // A failing publisher surfaces its own error instead of a reader timeout.
            let f = tokio::select! {
                f = sse.next_event() => f.expect("stream open"),
                done = &mut publisher, if last.is_none() => {
                    last = Some(done.expect("publisher"));
                    continue;
                }
            };
            got.push(f.id_u64().unwrap());
            n += 1;
        }
        resume_from = got.last().copied();
    }
    let last = match last {
        Some(l) => l,
        None => publisher.await.expect("publisher"),
    };
    assert_eq!(*got.last().unwrap(), last);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "strictly increasing: no duplicate at any seam");
    // No gap: every id the log holds for this channel is here.
    let all = server.running.bus.log().read(
        switchyard::log::Stream::Channel("acme".parse().unwrap(), "dashboard".parse().unwrap()),
        switchyard::names::EventId(0),
        10_000,
    );
    let all: Vec<u64> = all.await.unwrap().iter().map(|r| r.id.get()).collect();
    assert_eq!(got, all);
    server.stop().await;
}

#[tokio::test]
async fn resume_older_than_retention_starts_with_a_gap() {
    let server = Server::start_with(|c| {
        c.log.retention.channels.insert("alerts".into(), switchyard::log::Limits { max_events: 5, max_age_secs: 3600 });
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(publish(&server, "acme", events::alert(&i.to_string())).await);
    }
    server.running.bus.log().apply_retention(now_ms()).await.unwrap();
    let token = server.token("acme", Role::Subscribe, &[]);
    let mut sse = Sse::connect(&format!("{}/api/sse/alerts", server.http_url), Some(&token), Some(ids[1])).await;
    assert_eq!(sse.response_headers["x-switchyard-resume"], "gap");
    let gap = sse.next_event().await.unwrap();
    assert_eq!(gap.event.as_deref(), Some("stream:gap"));
    assert_eq!(gap.json()["oldestAvailableId"], ids[15].to_string());
    assert_eq!(gap.json()["requestedId"], ids[1].to_string());
    for want in &ids[15..] {
        assert_eq!(sse.next_event().await.unwrap().id_u64(), Some(*want));
    }
    // A resume inside retention is complete; an unknown future id is a gap.
    let sse = Sse::connect(&format!("{}/api/sse/alerts", server.http_url), Some(&token), Some(ids[16])).await;
    assert_eq!(sse.response_headers["x-switchyard-resume"], "complete");
    let sse = Sse::connect(&format!("{}/api/sse/alerts", server.http_url), Some(&token), Some(ids[19] + 1000)).await;
    assert_eq!(sse.response_headers["x-switchyard-resume"], "gap");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_tenants_never_leak() {
    let server = Server::start().await;
    let tenants: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    let mut streams = Vec::new();
    for t in &tenants {
        // Some tokens are limited to alerts, some see every channel.
        let channels: &[&str] = if t.ends_with('1') { &["alerts"] } else { &[] };
        let token = server.token(t, Role::Subscribe, channels);
        streams.push(Sse::connect(&format!("{}/api/sse/subscribe", server.http_url), Some(&token), None).await);
    }
    let mut expected: HashMap<String, Vec<u64>> = HashMap::new();
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut clients = HashMap::new();
    for t in &tenants {
        clients.insert(t.clone(), server.grpc(t, Role::Publish).await);
    }
    for i in 0..400 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let t = &tenants[(seed % tenants.len() as u64) as usize];
        let e = if seed.is_multiple_of(3) { events::order(&i.to_string()) } else { events::alert(&i.to_string()) };
        let is_alert = !seed.is_multiple_of(3);
        let id = clients.get_mut(t).unwrap().publish(PublishRequest { event: Some(e) }).await.unwrap().into_inner().id;
        if is_alert || !t.ends_with('1') {
            expected.entry(t.clone()).or_default().push(id);
        }
    }
    for (t, sse) in tenants.iter().zip(streams.iter_mut()) {
        for want in expected.get(t).cloned().unwrap_or_default() {
            let f = sse.next_event().await.unwrap();
            assert_eq!(f.json()["tenant"], t.as_str(), "tenant {t} got another tenant's event");
            assert_eq!(f.id_u64(), Some(want));
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_refused_with_json_401() {
    let server = Server::start().await;
    let url = format!("{}/api/sse/alerts", server.http_url);
    let get = |auth: Option<String>| {
        let url = url.clone();
        async move {
            let mut r = switchyard_tests::http().get(url);
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            error_of(r.send().await.unwrap()).await
        }
    };
    let forged = Signer::hs256(b"not-the-server-secret-not-the-server").mint("acme", Role::Admin, vec![], 60);
    let expired = server.running.signer.sign(&Claims {
        sub: None,
        tenant: "acme".into(),
        channels: vec![],
        role: Role::Admin,
        exp: now_secs() - 600,
        nbf: None,
        jti: None,
    });
    let not_yet = server.running.signer.sign(&Claims {
        sub: None,
        tenant: "acme".into(),
        channels: vec![],
        role: Role::Admin,
        exp: now_secs() + 600,
        nbf: Some(now_secs() + 300),
        jti: None,
    });
    let alg_none =
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJ0ZW5hbnQiOiJhY21lIiwicm9sZSI6ImFkbWluIiwiZXhwIjo5OTk5OTk5OTk5fQ.";
    for (what, auth) in [
        ("missing", None),
        ("forged", Some(format!("Bearer {forged}"))),
        ("expired", Some(format!("Bearer {expired}"))),
        ("not yet valid", Some(format!("Bearer {not_yet}"))),
        ("alg none", Some(format!("Bearer {alg_none}"))),
        ("garbage", Some("Bearer x.y.z".into())),
    ] {
        assert_eq!(get(auth).await, (401, "unauthenticated".into()), "{what}");
    }
    // Query tokens are off by default.
    let token = server.token("acme", Role::Subscribe, &[]);
    let r = switchyard_tests::http().get(format!("{url}?access_token={token}")).send().await.unwrap();
    assert_eq!(error_of(r).await.0, 401);
    server.stop().await;
}

#[tokio::test]
async fn channel_rules_403_404_400() {
    let server = Server::start().await;
    let limited = server.token("acme", Role::Subscribe, &["dashboard", "jobs/*"]);
    let get = |path: &str| {
        let url = format!("{}{path}", server.http_url);
        let token = limited.clone();
        async move { switchyard_tests::http().get(url).bearer_auth(token).send().await.unwrap() }
    };
    assert_eq!(error_of(get("/api/sse/alerts").await).await, (403, "permission_denied".into()));
    assert_eq!(error_of(get("/api/sse/nowhere").await).await, (404, "not_found".into()));
    assert_eq!(error_of(get("/api/sse/Bad%20Name").await).await, (400, "invalid_channel".into()));
    assert_eq!(error_of(get("/api/sse/jobs/a%20b").await).await, (400, "invalid_channel".into()));
    assert_eq!(error_of(get("/api/sse/subscribe?channels=dashboard,alerts").await).await.0, 403);
    assert_eq!(get("/api/sse/jobs/42").await.status(), 200);
    let r = switchyard_tests::http()
        .get(format!("{}/api/sse/dashboard", server.http_url))
        .bearer_auth(&limited)
        .header("Last-Event-ID", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "invalid_last_event_id".into()));
    assert_eq!(error_of(get("/api/nothing-here").await).await, (404, "not_found".into()));
    server.stop().await;
}

#[tokio::test]
async fn job_channel_streams_one_jobs_progress() {
    let server = Server::start().await;
    let token = server.token("acme", Role::Subscribe, &[]);
    let mut sse =
        Sse::connect(&format!("{}/api/sse/jobs/import-7?coalesce=false", server.http_url), Some(&token), None).await;
    publish(&server, "acme", events::progress("import-8", 10)).await;
    let id = publish(&server, "acme", events::progress("import-7", 50)).await;
    let f = sse.next_event().await.unwrap();
    assert_eq!(f.id_u64(), Some(id));
    assert_eq!(f.json()["importJobProgress"]["percent"], 50);
    server.stop().await;
}

#[tokio::test]
async fn connection_limits_answer_429_with_retry_after() {
    let server = Server::start_with(|c| c.sse.max_per_token = 2).await;
    let token = server.token("acme", Role::Subscribe, &[]);
    let url = format!("{}/api/sse/alerts", server.http_url);
    let a = Sse::connect(&url, Some(&token), None).await;
    let _b = Sse::connect(&url, Some(&token), None).await;
    let r = switchyard_tests::http().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_of(r).await.1, "too_many_connections");
    drop(a);
    // The slot frees when the connection goes away.
    switchyard_tests::wait_for("a freed slot", || {
        let (url, token) = (url.clone(), token.clone());
        async move {
            let r = switchyard_tests::http().get(&url).bearer_auth(&token).send().await.unwrap();
            (r.status() == 200).then_some(())
        }
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_evicted_and_others_keep_up() {
    let server = Server::start().await;
    let token = server.token("acme", Role::Subscribe, &[]);
    let addr = server.running.http_addr;
    // A client that sends its request and then does not read.
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(
            format!("GET /api/sse/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut healthy = Sse::connect(&format!("{}/api/sse/alerts", server.http_url), Some(&token), None).await;
    let mut c = server.grpc("acme", Role::Publish).await;
    let big = "x".repeat(2000);
    let total = 12_000u64;
    let reader = tokio::spawn(async move {
        let mut lat = Vec::new();
        let mut n = 0;
        while n < total {
            let f = healthy.next_event().await.unwrap();
            let sent: u128 = f.json()["alertWarning"]["message"].as_str().unwrap().parse().unwrap();
            lat.push(now_micros() - sent);
            n += 1;
        }
        lat
    });
    for i in 0..total / 100 {
        let batch: Vec<PublishRequest> = (0..100)
            .map(|j| {
                let mut e = events::alert(&format!("{}-{big}", i * 100 + j));
                if let Some(switchyard::proto::v1::event::Payload::AlertWarning(a)) = &mut e.payload {
                    a.message = now_micros().to_string();
                }
                PublishRequest { event: Some(e) }
            })
            .collect();
        let mut acks = c.publish_stream(futures::stream::iter(batch)).await.unwrap().into_inner();
        while acks.next().await.is_some() {}
    }
    let mut lat = reader.await.unwrap();
    lat.sort();
    let p99 = lat[lat.len() * 99 / 100];
    assert!(p99 < 2_000_000, "healthy reader p99 {p99} µs while another client stalled");
    // Now the stalled client reads: it was cut off with a reason, well before the end,
    // and its response ended (the chunked body's last chunk).
    let mut buf = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut chunk = vec![0u8; 1 << 16];
        // A chunked body's last chunk (hyper), or the close that ends a close-delimited one.
        while !buf.ends_with(b"0\r\n\r\n") {
            let n = stalled.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("the stalled stream was ended by the server");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.contains(": disconnected: this client fell too far behind"), "eviction comment missing");
    let delivered = text.matches("\nevent: alert:warning").count() as u64;
    assert!(delivered < total, "the stalled client was dropped, not fed everything ({delivered})");
    let status = get_json(&format!("{}/api/sse/status", server.http_url), &server.token("*", Role::Admin, &[])).await;
    assert!(status["events"]["evicted"].as_u64().unwrap() >= 1);
    server.stop().await;
}

fn now_micros() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()
}

#[tokio::test]
async fn graceful_shutdown_tells_clients_to_reconnect() {
    let server = Server::start().await;
    let token = server.token("acme", Role::Subscribe, &[]);
    let mut sse = Sse::connect(&format!("{}/api/sse/alerts", server.http_url), Some(&token), None).await;
    sse.next().await.unwrap();
    let stop = tokio::spawn(server.running.shutdown());
    let f = sse.next_event().await.unwrap();
    assert_eq!(f.event.as_deref(), Some("stream:reconnect"));
    assert_eq!(f.retry, Some(1000));
    assert!(sse.next().await.is_none(), "the stream ends");
    tokio::time::timeout(PATIENCE, stop).await.expect("shutdown completes").unwrap();
}

#[tokio::test]
async fn tickets_are_single_use() {
    let server = Server::start().await;
    let token = server.token("acme", Role::Subscribe, &[]);
    let http = switchyard_tests::http();
    let ticket = post_json(&format!("{}/api/sse/ticket", server.http_url), &token, &json!({})).await;
    let t = ticket["ticket"].as_str().unwrap();
    assert!(ticket["expires_in"].as_u64().unwrap() <= 60);
    let url = format!("{}/api/sse/alerts?ticket={t}", server.http_url);
    let mut sse = Sse::connect(&url, None, None).await;
    assert_eq!(sse.status, 200);
    let id = publish(&server, "acme", events::alert("via ticket")).await;
    assert_eq!(sse.next_event().await.unwrap().id_u64(), Some(id));
    assert_eq!(error_of(http.get(&url).send().await.unwrap()).await.0, 401, "second use");
    server.stop().await;
}

#[tokio::test]
async fn polling_pages_through_history() {
    let server = Server::start().await;
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(publish(&server, "acme", events::alert(&i.to_string())).await);
        publish(&server, "acme", events::order(&i.to_string())).await;
    }
    let token = server.token("acme", Role::Subscribe, &[]);
    let http = switchyard_tests::http();
    let mut after = "0".to_owned();
    let mut got = Vec::new();
    loop {
        let page: Value =
            get_json(&format!("{}/api/events?channels=alerts&after={after}&limit=10", server.http_url), &token).await;
        assert_eq!(page["complete"], true);
        let evs = page["events"].as_array().unwrap();
        if evs.is_empty() {
            break;
        }
        for e in evs {
            assert_eq!(e["type"], "alert:warning");
            got.push(e["id"].as_str().unwrap().parse::<u64>().unwrap());
        }
        after = page["next"].as_str().unwrap().to_owned();
    }
    assert_eq!(got, ids);
    let bad = http.get(format!("{}/api/events?after=x", server.http_url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(error_of(bad).await, (400, "invalid_after".into()));
    let bad = http.get(format!("{}/api/events?limit=0", server.http_url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(error_of(bad).await, (400, "invalid_limit".into()));
    server.stop().await;
}

#[tokio::test]
async fn http_publish_is_all_or_nothing_and_dedupes() {
    let server = Server::start().await;
    let http = switchyard_tests::http();
    let url = format!("{}/api/events", server.http_url);
    let token = server.token("acme", Role::Publish, &[]);
    let head = || server.running.bus.log().stats().head.get();
    let bad = json!([
        {"type": "alert:info", "data": {"title": "ok"}},
        {"type": "import:job-progress", "data": {"percent": 5}}
    ]);
    let r = http.post(&url).bearer_auth(&token).json(&bad).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_key");
    assert_eq!(body["error"]["field"], "event.key");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("events[1]"));
    assert_eq!(head(), 0, "nothing stored");
    // An event's own trace context must be one: subscribers parse it.
    let bad = json!({"type": "alert:info", "data": {"title": "t"}, "trace": {"traceparent": "not-a-trace-01"}});
    let r = http.post(&url).bearer_auth(&token).json(&bad).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["error"]["code"].as_str(), body["error"]["field"].as_str()),
        (Some("invalid_trace"), Some("event.trace.traceparent"))
    );
    assert_eq!(head(), 0, "nothing stored");
    let good = json!([
        {"type": "alert:info", "data": {"title": "a"}, "idempotencyKey": "k1"},
        {"type": "alert:info", "data": {"title": "b"}}
    ]);
    let r: Value = http.post(&url).bearer_auth(&token).json(&good).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["ids"], json!(["1", "2"]));
    let again = json!({"type": "alert:info", "data": {"title": "a"}, "idempotencyKey": "k1"});
    let r = http.post(&url).bearer_auth(&token).json(&again).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let r: Value = r.json().await.unwrap();
    assert_eq!(r, json!({"id": "1", "duplicate": true}));
    for (body, code) in [
        ("{", "invalid_json"),
        ("[]", "empty_batch"),
        ("{\"type\":\"alert:info\",\"data\":{\"zz\":1}}", "invalid_json"),
    ] {
        let r = http
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(r).await, (400, code.into()), "{body}");
    }
    let sub = server.token("acme", Role::Subscribe, &[]);
    assert_eq!(error_of(http.post(&url).bearer_auth(sub).json(&again).send().await.unwrap()).await.0, 403);
    let huge = json!({"type": "alert:info", "data": {"title": "x".repeat(9 * 1024 * 1024)}});
    let r = http.post(&url).bearer_auth(&token).json(&huge).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["connection"], "close", "its unread rest makes the connection unusable");
    assert_eq!(head(), 2);
    // The client's next request (a fresh connection) goes through.
    assert_eq!(http.post(&url).bearer_auth(&token).json(&again).send().await.unwrap().status(), 201);
    server.stop().await;
}

#[tokio::test]
async fn status_metrics_health_and_broadcast() {
    let server = Server::start().await;
    let http = switchyard_tests::http();
    let admin = server.token("acme", Role::Admin, &[]);
    let sub = server.token("acme", Role::Subscribe, &[]);
    let mut sse = Sse::connect(&format!("{}/api/sse/alerts", server.http_url), Some(&sub), None).await;
    let r = http
        .post(format!("{}/api/sse/broadcast", server.http_url))
        .bearer_auth(&admin)
        .json(&json!({"event": {"type": "alert:critical", "data": {"title": "everyone out"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(sse.next_event().await.unwrap().json()["alertCritical"]["title"], "everyone out");
    let r = http
        .post(format!("{}/api/sse/broadcast", server.http_url))
        .bearer_auth(&sub)
        .json(&json!({"event": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let status: Value = get_json(&format!("{}/api/sse/status", server.http_url), &admin).await;
    assert_eq!(status["connections"]["current"], 1);
    assert_eq!(status["tenants"]["acme"]["byType"]["alert:critical"], 1);
    assert_eq!(status["tenants"]["acme"]["byChannel"]["alerts"], 1);
    assert_eq!(
        http.get(format!("{}/api/sse/status", server.http_url)).bearer_auth(&sub).send().await.unwrap().status(),
        403
    );
    let metrics = http.get(format!("{}/metrics", server.http_url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("switchyard_sse_connections 1"), "{metrics}");
    assert!(metrics.contains("switchyard_published_total{type=\"alert:critical\"} 1"), "{metrics}");
    assert!(!metrics.contains("acme"), "unauthenticated metrics name no tenant: {metrics}");
    // A tenant's admin sees its own tenant, never another's name or totals.
    let mut globex = server.grpc("globex", Role::Publish).await;
    switchyard_tests::publish_alerts(&mut globex, 0..3).await;
    let acme_admin = server.token("acme", Role::Admin, &[]);
    let mine: Value = get_json(&format!("{}/api/sse/status", server.http_url), &acme_admin).await;
    assert_eq!(mine["events"]["published"], 1, "{mine}");
    assert!(!mine.to_string().contains("globex"), "{mine}");
    assert_eq!(mine["connections"]["current"], 1);
    assert_eq!(http.get(format!("{}/healthz", server.http_url)).send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{}/readyz", server.http_url)).send().await.unwrap().status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let server = Server::start().await;
    let doc: Value = switchyard_tests::http()
        .get(format!("{}/api/openapi.json", server.http_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| (m.to_uppercase(), path.clone())))
        .collect();
    let routes = switchyard_bridge::router::routes();
    let routed: BTreeSet<(String, String)> = routes.iter().map(|r| (r.method.to_owned(), r.path.to_owned())).collect();
    assert_eq!(documented, routed);
    // Each listed route exists: never a 404/405 from the router for it.
    let admin = server.token("acme", Role::Admin, &[]);
    let http = {
        switchyard_bridge::install_crypto_provider();
        reqwest::Client::builder()
    }
    .timeout(Duration::from_secs(2))
    .build()
    .unwrap();
    for (method, path) in routes.iter().map(|r| (r.method, r.path.as_str())) {
        let url = format!(
            "{}{}",
            server.http_url,
            path.replace("{channel}", "alerts").replace("{job_id}", "1").replace("{source}", "x")
        );
        let req = match method {
            "GET" => http.get(&url),
            "DELETE" => http.delete(&url),
            _ => http.post(&url).json(&json!({})),
        };
        let status = match req.bearer_auth(&admin).send().await {
            // A handler's own 404 (e.g. an unconfigured webhook source) has its own code.
            Ok(r) if r.status() == 404 => match r.json::<Value>().await {
                Ok(v) if v["error"]["code"] != "not_found" => 200,
                _ => 404,
            },
            Ok(r) => r.status().as_u16(),
            Err(e) if e.is_timeout() => 200, // a stream that stayed open
            Err(e) => panic!("{method} {path}: {e}"),
        };
        assert!(status != 404 && status != 405, "{method} {path} answered {status}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_client_resumes_across_a_server_restart_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let p = Process::serve(dir.path(), &[]);
    let http_addr = p.http_url.trim_start_matches("http://").to_owned();
    let token = p.token("acme", Role::Subscribe);
    let publish_token = p.token("acme", Role::Publish);
    let mut c = switchyard_bridge::cli::tools::connect(&p.grpc_url, &publish_token).await.unwrap();
    let mut sse = Sse::connect(&format!("{}/api/sse/alerts", p.http_url), Some(&token), None).await;
    let mut published = publish_alerts(&mut c, 0..10).await;
    let mut got = sse.ids(10).await;
    // SIGTERM: the client is told to reconnect.
    p.terminate();
    let f = sse.next_event().await.unwrap();
    assert_eq!(f.event.as_deref(), Some("stream:reconnect"));
    // While it is down nothing can be published; publish right after restart, before the client is back.
    let p = Process::serve(dir.path(), &["--http-addr", &http_addr]);
    let mut c = switchyard_bridge::cli::tools::connect(&p.grpc_url, &publish_token).await.unwrap();
    published.extend(publish_alerts(&mut c, 10..20).await);
    let started = Instant::now();
    let mut sse = Sse::connect(&format!("{}/api/sse/alerts", p.http_url), Some(&token), got.last().copied()).await;
    assert_eq!(sse.response_headers["x-switchyard-resume"], "complete");
    got.extend(sse.ids(10).await);
    assert_eq!(got, published);
    assert!(started.elapsed() < PATIENCE);
}

#[tokio::test]
async fn idle_streams_get_heartbeats() {
    let server = Server::start_with(|c| c.sse.heartbeat_secs = 1).await;
    let token = server.token("acme", Role::Subscribe, &[]);
    let mut sse = Sse::connect(&format!("{}/api/sse/alerts", server.http_url), Some(&token), None).await;
    let beat = tokio::time::timeout(PATIENCE, async {
        loop {
            let f = sse.next().await.expect("stream open");
            if f.comments.iter().any(|c| c == "heartbeat") {
                return f;
            }
        }
    })
    .await
    .expect("a heartbeat within the timeout");
    assert!(beat.event.is_none());
    server.stop().await;
}

#[tokio::test]
async fn malformed_parameters_and_reserved_provenance_are_json_400s() {
    let server = Server::start().await;
    let sub = server.token("acme", Role::Subscribe, &[]);
    let publisher = server.token("acme", Role::Admin, &[]);
    let get = |path: &str| {
        let url = format!("{}{path}", server.http_url);
        let sub = sub.clone();
        async move { switchyard_tests::http().get(url).bearer_auth(sub).send().await.unwrap() }
    };
    for (path, code, mentions) in [
        ("/api/events?limit=abc", "invalid_query", "limit"),
        ("/api/sse/dashboard?coalesce=yes", "invalid_query", "coalesce"),
        ("/api/sse/%FF", "invalid_path", ""),
    ] {
        let r = get(path).await;
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json", "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(mentions), "{path}: {body}");
    }
    // Clients treat stream:* as the server's own control events and webhook:/connector: sources
    // as verified: a tenant cannot publish them, even with an admin token.
    for (event, code) in [
        (json!({"type": "stream:gap", "channels": ["alerts"], "data": {}}), "reserved_type"),
        (json!({"type": "alert:info", "source": "webhook:shopify", "data": {"title": "fake"}}), "reserved_source"),
        (json!({"type": "alert:info", "source": "connector:xero", "data": {"title": "fake"}}), "reserved_source"),
    ] {
        let r = switchyard_tests::http()
            .post(format!("{}/api/events", server.http_url))
            .bearer_auth(&publisher)
            .json(&event)
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(r).await, (400, code.to_owned()), "{event}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires_and_says_so() {
    let server = Server::start_with(|c| c.sse.heartbeat_secs = 1).await;
    let short = server.running.signer.mint("acme", Role::Subscribe, vec![], 2);
    let started = Instant::now();
    let mut sse = Sse::connect(&format!("{}/api/sse/alerts", server.http_url), Some(&short), None).await;
    assert_eq!(sse.status, 200);
    let end = loop {
        let f = sse.next_event().await.expect("the server says why before it closes");
        if f.event.as_deref() == Some("stream:reconnect") {
            break f;
        }
    };
    assert_eq!(end.json()["code"], "token_expired");
    assert!(sse.next().await.is_none(), "then the stream ends");
    assert!(started.elapsed() < Duration::from_secs(5), "within a heartbeat of expiry: {:?}", started.elapsed());
    // gRPC: the same token's subscription ends UNAUTHENTICATED.
    let short = server.running.signer.mint("acme", Role::Subscribe, vec![], 1);
    let mut c = switchyard_bridge::cli::tools::connect(&server.grpc_url, &short).await.unwrap();
    let req = switchyard::proto::v1::SubscribeRequest { channels: vec!["alerts".into()], ..Default::default() };
    let mut s = c.subscribe(req).await.unwrap().into_inner();
    let status = loop {
        match s.next().await {
            Some(Ok(_)) => continue,
            Some(Err(status)) => break status,
            None => panic!("ended without a status"),
        }
    };
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_revoked_token_is_refused_with_its_tickets_and_its_streams_end() {
    let server = Server::start_with(|c| c.sse.heartbeat_secs = 1).await;
    let with_jti = |role, jti: &str| {
        let claims = Claims {
            sub: None,
            tenant: "acme".into(),
            channels: vec![],
            role,
            exp: now_secs() + 3600,
            nbf: None,
            jti: Some(jti.into()),
        };
        server.running.signer.sign(&claims)
    };
    let (leaked, kept) = (with_jti(Role::Subscribe, "leaked-1"), with_jti(Role::Subscribe, "kept-1"));
    let url = |path: &str| format!("{}{path}", server.http_url);
    let ticket = post_json(&url("/api/sse/ticket"), &leaked, &json!({})).await["ticket"].as_str().unwrap().to_owned();
    let mut sse = Sse::connect(&url("/api/sse/alerts"), Some(&leaked), None).await;
    assert_eq!(sse.status, 200);
    let mut c = switchyard_bridge::cli::tools::connect(&server.grpc_url, &leaked).await.unwrap();
    let req = switchyard::proto::v1::SubscribeRequest { channels: vec!["alerts".into()], ..Default::default() };
    let mut grpc = c.subscribe(req).await.unwrap().into_inner();
    let revoke = |token: String, body: Value| {
        switchyard_tests::http().post(url("/api/tokens/revoke")).bearer_auth(token).json(&body).send()
    };
    // Only admins revoke; bad input names its field; another tenant's admin revokes only in its own tenant.
    assert_eq!(revoke(kept.clone(), json!({"jti": "leaked-1"})).await.unwrap().status(), 403);
    let r = revoke(server.token("acme", Role::Admin, &[]), json!({"jti": ""})).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["field"], "jti");
    let r = revoke(server.token("globex", Role::Admin, &[]), json!({"jti": "leaked-1"})).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["revoked"]["tenant"], "globex");
    assert_eq!(
        switchyard_tests::http().get(url("/api/state")).bearer_auth(&leaked).send().await.unwrap().status(),
        200
    );
    // acme's admin revokes it.
    let r = revoke(server.token("acme", Role::Admin, &[]), json!({"jti": "leaked-1"})).await.unwrap();
    assert_eq!(r.status(), 200);
    let end = loop {
        let f = sse.next_event().await.expect("the server says why before it closes");
        if f.event.as_deref() == Some("stream:reconnect") {
            break f;
        }
    };
    assert_eq!(end.json()["code"], "token_revoked");
    let r = switchyard_tests::http().get(url("/api/state")).bearer_auth(&leaked).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["message"], "token revoked");
    let r = switchyard_tests::http().get(url(&format!("/api/state?ticket={ticket}"))).send().await.unwrap();
    assert_eq!(r.status(), 401, "a ticket issued before the revocation goes with its token");
    assert_eq!(switchyard_tests::http().get(url("/api/state")).bearer_auth(&kept).send().await.unwrap().status(), 200);
    let status = loop {
        match grpc.next().await {
            Some(Ok(_)) => continue,
            Some(Err(status)) => break status,
            None => panic!("ended without a status"),
        }
    };
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let mut c = switchyard_bridge::cli::tools::connect(&server.grpc_url, &leaked).await.unwrap();
    let err = c.state(switchyard::proto::v1::StateRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_no_request_or_idle_between_requests_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    // One address opens them all: no per-address cap here (that has its own test).
    let config = dir.path().join("one-address.toml");
    std::fs::write(&config, "[sse]\nmax_pending_per_ip = 0\n").unwrap();
    let p = Process::serve(dir.path(), &["--config", config.to_str().unwrap()]);
    let addr = p.http_url.trim_start_matches("http://").to_owned();
    let before = fds(p.pid());
    // 300 connections that never send a byte, and 20 that send one request and then idle.
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let mut kept = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        kept.push(s);
    }
    let peak = fds(p.pid());
    assert!(peak >= before + 300, "the server holds them for now: {before} → {peak}");
    // Within the header timeout (10 s) the server closes every one: reads see EOF.
    let deadline = Instant::now() + Duration::from_secs(30);
    for s in silent.iter_mut().chain(kept.iter_mut()) {
        let mut buf = [0u8; 64];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, s.read(&mut buf)).await.expect("closed by the server").unwrap_or(0);
        assert_eq!(n, 0, "EOF, not data");
    }
    let after = switchyard_tests::wait_for("descriptors freed", || async {
        let now = fds(p.pid());
        (now <= before + 5).then_some(now)
    })
    .await;
    assert!(after <= before + 5, "{before} → {peak} → {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_to_many_channels_cost_memory_only_while_they_exist() {
    let dir = tempfile::tempdir().unwrap();
    let p = Process::serve(dir.path(), &[]);
    let addr = p.http_url.trim_start_matches("http://").to_owned();
    let token = p.token("acme", Role::Subscribe);
    let open = |path: String| {
        let (addr, token) = (addr.clone(), token.clone());
        async move {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        }
    };
    // Warm up (allocator, first connections), then measure.
    for i in 0..200 {
        open(format!("/api/sse/jobs/warm-{i}")).await;
    }
    let before = rss_kib(p.pid());
    for i in 0..3000 {
        open(format!("/api/sse/jobs/{:016x}-{i}", rand_u64(i))).await;
    }
    // Let the server notice the closed connections.
    let after = switchyard_tests::wait_for("memory to settle", || async {
        let now = rss_kib(p.pid());
        (now < before + 40 * 1024).then_some(now)
    })
    .await;
    eprintln!("RSS {before} KiB → {after} KiB after 3,000 one-shot job subscriptions");
}

fn rand_u64(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[tokio::test]
async fn requests_naming_too_many_channels_are_refused_at_once() {
    let server = Server::start_with(|c| c.bus.custom_channels = vec!["ops".into()]).await;
    let token = server.token("acme", Role::Admin, &[]);
    let many: Vec<String> = (0..65).map(|i| format!("jobs/j{i}")).collect();
    let r = switchyard_tests::http()
        .get(format!("{}/api/sse/subscribe?channels={}", server.http_url, many.join(",")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "too_many_channels".to_owned()));
    let r = switchyard_tests::http()
        .get(format!("{}/api/events?channels={}", server.http_url, many.join(",")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "too_many_channels".to_owned()));
    // 200,000 channels in one event: refused in milliseconds, not after quadratic work.
    let channels: Vec<String> = (0..200_000).map(|i| format!("c{i}")).collect();
    let started = Instant::now();
    let r = switchyard_tests::http()
        .post(format!("{}/api/events", server.http_url))
        .bearer_auth(&token)
        .json(&json!({"type": "acme:thing", "channels": channels, "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "too_many_channels".to_owned()));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    server.stop().await;
}

#[tokio::test]
async fn cookies_publish_only_same_origin_json_and_bodies_are_read_after_auth() {
    let server = Server::start().await;
    let token = server.token("acme", Role::Publish, &[]);
    let host = server.http_url.trim_start_matches("http://").to_owned();
    let post = |content_type: &str, origin: Option<String>| {
        let mut req = switchyard_tests::http()
            .post(format!("{}/api/events", server.http_url))
            .header("cookie", format!("switchyard_token={token}"))
            .header("content-type", content_type)
            .body(r#"{"type": "alert:info", "data": {"title": "csrf?"}}"#);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    // A cross-site form: text/plain, another origin. Refused, and nothing stored.
    let r = post("text/plain", Some("https://evil.example".into())).await.unwrap();
    assert_eq!(error_of(r).await, (401, "unauthenticated".to_owned()));
    let r = post("application/json", Some("https://evil.example".into())).await.unwrap();
    assert_eq!(r.status(), 401);
    let r = post("text/plain", Some(format!("http://{host}"))).await.unwrap();
    assert_eq!(r.status(), 401, "same origin but not JSON");
    let page = get_json(&format!("{}/api/events?channels=alerts", server.http_url), &token).await;
    assert!(page["events"].as_array().unwrap().is_empty(), "nothing was published");
    // The dashboard's own same-origin JSON request works; so does a bearer token from anywhere.
    assert_eq!(post("application/json", Some(format!("http://{host}"))).await.unwrap().status(), 201);
    // Without credentials the answer comes before any body is read: the 8 MB never sent is not waited for.
    let mut s = tokio::net::TcpStream::connect(&host).await.unwrap();
    s.write_all(
        b"POST /api/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 8000000\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("answered at once").unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 401"), "{}", String::from_utf8_lossy(&buf[..n]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_request_are_capped() {
    let server = Server::start_with(|c| {
        c.sse.max_pending_connections = 50;
        c.sse.max_pending_per_ip = 0;
    })
    .await;
    let addr = server.running.http_addr;
    // (One address here, with no per-address cap: the total cap alone.)
    // Past the cap, connections are closed at once: read sees EOF well before the header timeout.
    let (silent, closed_at_once) = switchyard_tests::silent_connections(addr, 100).await;
    assert!(closed_at_once >= 50, "only {closed_at_once} of 100 closed at once with a cap of 50");
    // Once the held ones are gone (header timeout), a real client is served as usual.
    drop(silent);
    let token = server.token("acme", Role::Subscribe, &[]);
    let ok = switchyard_tests::wait_for("a slot", || async {
        let r = switchyard_tests::http()
            .get(format!("{}/api/events?channels=alerts", server.http_url))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert_eq!(ok, ());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_pending_slot() {
    let server = Server::start_with(|c| c.sse.max_pending_per_ip = 10).await;
    let addr = server.running.http_addr;
    let (silent, closed_at_once) = switchyard_tests::silent_connections(addr, 30).await;
    assert!(closed_at_once >= 20, "only {closed_at_once} of 30 closed at once with 10 per address");
    drop(silent);
    server.stop().await;
}

/// Sends a request on a fresh connection: whether any response comes back before the server closes.
async fn answered(addr: std::net::SocketAddr, token: &str) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return false };
    let req = format!("GET /api/sse/alerts HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(PATIENCE, s.read(&mut buf)).await, Ok(Ok(n)) if n > 0 && buf.starts_with(b"HTTP/1.1 200"))
}

#[tokio::test]
async fn one_address_cannot_hold_more_open_connections_than_its_cap() {
    let server = Server::start_with(|c| {
        c.sse.max_connections_per_ip = 3;
        c.sse.heartbeat_secs = 1;
    })
    .await;
    let token = server.token("acme", Role::Subscribe, &[]);
    let url = format!("{}/api/sse/alerts", server.http_url);
    let mut open = Vec::new();
    for _ in 0..3 {
        let sse = Sse::connect(&url, Some(&token), None).await;
        assert_eq!(sse.status, 200);
        open.push(sse);
    }
    let addr = server.running.http_addr;
    assert!(!answered(addr, &token).await, "a fourth connection from the address is closed unanswered");
    // One leaves: its place frees up once the server sees it gone (at the next heartbeat).
    drop(open.pop());
    switchyard_tests::wait_for("a place to free up", || async { answered(addr, &token).await.then_some(()) }).await;
    server.stop().await;
}

/// The live part of direct streams is written by the writer tasks (a few, not a task per
/// stream); each stream gets every event once, in order, and a client that leaves frees its
/// stream and its connection at once (no event needed to find out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_are_written_by_a_few_writers_and_let_go_when_clients_leave() {
    let server = Server::start().await;
    let token = server.token("acme", Role::Subscribe, &[]);
    let admin = server.token("*", Role::Admin, &[]);
    let url = format!("{}/api/sse/status", server.http_url);
    let status = || get_json(&url, &admin);
    let mut streams = Vec::new();
    for _ in 0..40 {
        streams.push(Sse::connect(&format!("{}/api/sse/alerts", server.http_url), Some(&token), None).await);
    }
    switchyard_tests::wait_for("every stream to reach a writer", || async {
        (status().await["writers"]["streams"] == 40).then_some(())
    })
    .await;
    let s = status().await;
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    assert!((1..=cores).contains(&s["writers"]["tasks"].as_u64().unwrap()), "a writer per core at most: {s}");
    let mut c = server.grpc("acme", Role::Publish).await;
    let ids = publish_alerts(&mut c, 0..50).await;
    for sse in &mut streams {
        assert_eq!(sse.ids(ids.len()).await, ids, "every event once, in order");
    }
    drop(streams);
    switchyard_tests::wait_for("the writers to let go of every stream", || async {
        let s = status().await;
        (s["writers"]["streams"] == 0 && s["connections"]["current"] == 0).then_some(())
    })
    .await;
    server.stop().await;
}
