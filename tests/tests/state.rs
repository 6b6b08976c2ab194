//! State, not just events: the state view (`GET /api/state`, the `State` RPC), streams that
//! start from state (`?start=state`, `Start::State`), gaps healed with state, resume cursors
//! that owe held snapshots (`N~W`), progress that never follows completion, and `since=`.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde_json::Value;
use switchyard::{
    auth::Role,
    log::now_ms,
    proto::v1::{
        Event, PublishRequest, ReadRequest, Start, StateRequest, SubscribeRequest, subscribe_response::Message,
    },
};
use switchyard_bridge::cli::tools;
use switchyard_tests::{PATIENCE, Process, Server, Sse, events, get_json, wait_for};

async fn publish(c: &mut tools::Client, e: Event) -> u64 {
    c.publish(PublishRequest { event: Some(e) }).await.expect("publish").into_inner().id
}

/// `(type, key) → (id, event JSON)` of a state or polling answer.
fn by_slot(events: &Value) -> BTreeMap<(String, String), (u64, Value)> {
    events
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let id: u64 = e["id"].as_str().unwrap().parse().unwrap();
            let key = e["event"]["key"].as_str().unwrap_or("").to_owned();
            ((e["type"].as_str().unwrap().to_owned(), key), (id, e["event"].clone()))
        })
        .collect()
}

fn ids(events: &Value) -> Vec<u64> {
    events.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().parse().unwrap()).collect()
}

#[tokio::test]
async fn the_state_view_holds_the_latest_per_key_and_outlives_retention() {
    let server = Server::start_with(|c| {
        c.log.retention.default = switchyard::log::Limits { max_events: 2, max_age_secs: 3600 };
    })
    .await;
    let mut c = server.grpc("acme", Role::Publish).await;
    let a1 = publish(&mut c, events::totals("uk", 1)).await;
    let b = publish(&mut c, events::totals("eu", 5)).await;
    let a2 = publish(&mut c, events::totals("uk", 2)).await;
    publish(&mut c, events::order("o-1")).await;
    publish(&mut c, events::alert("facts are not state")).await;
    let job = publish(&mut c, events::progress("j1", 40)).await;
    // Another tenant's state is not ours.
    let mut g = server.grpc("globex", Role::Publish).await;
    publish(&mut g, events::totals("uk", 99)).await;
    let token = server.token("acme", Role::Subscribe, &[]);
    let url = format!("{}/api/state?channels=dashboard", server.http_url);
    let state = get_json(&url, &token).await;
    let slots = by_slot(&state["events"]);
    assert_eq!(slots.len(), 2, "one entry per key of the dashboard's snapshots: {state}");
    assert_eq!(slots[&("shopify:sync-completed".into(), "uk".into())].0, a2);
    assert_eq!(slots[&("shopify:sync-completed".into(), "eu".into())].0, b);
    assert_eq!(ids(&state["events"]), vec![b, a2], "in id order");
    assert!(!ids(&state["events"]).contains(&a1), "superseded");
    let head = server.running.bus.log().stats().head.get();
    assert_eq!(state["asOf"], head.to_string());
    // Every channel the token allows, jobs included.
    let all = get_json(&format!("{}/api/state", server.http_url), &token).await;
    assert_eq!(ids(&all["events"]), vec![b, a2, job]);
    // Retention trims the history to two events per stream; state keeps every key.
    server.running.bus.log().apply_retention(now_ms() + 10_000).await.unwrap();
    let history = get_json(&format!("{}/api/events?channels=dashboard&after=0", server.http_url), &token).await;
    assert!(!ids(&history["events"]).contains(&b), "history was trimmed");
    assert_eq!(get_json(&url, &token).await["events"], state["events"]);
    // A token limited to alerts sees no dashboard state, and asking for it is refused.
    let alerts_only = server.token("acme", Role::Subscribe, &["alerts"]);
    let r = switchyard_tests::http().get(&url).bearer_auth(&alerts_only).send().await.unwrap();
    assert_eq!(r.status(), 403);
    server.stop().await;
}

#[tokio::test]
async fn state_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let p = Process::serve(dir.path(), &[]);
    let mut c = tools::connect(&p.grpc_url, &p.token("acme", Role::Publish)).await.unwrap();
    for i in 0..50u32 {
        publish(&mut c, events::totals(&format!("store-{}", i % 10), i)).await;
    }
    let token = p.token("acme", Role::Subscribe);
    let before = get_json(&format!("{}/api/state?channels=dashboard", p.http_url), &token).await;
    assert_eq!(before["events"].as_array().unwrap().len(), 10);
    p.kill();
    let p = Process::serve(dir.path(), &[]);
    let token = p.token("acme", Role::Subscribe);
    let after = get_json(&format!("{}/api/state?channels=dashboard", p.http_url), &token).await;
    assert_eq!(after, before, "every acknowledged snapshot's state survives SIGKILL");
    for (_, (_, e)) in by_slot(&after["events"]) {
        let n = e["shopifySyncCompleted"]["totalOrders"].as_u64().unwrap_or(0);
        assert!(n >= 40, "the latest of each key: {e}");
    }
}

/// Reads an SSE stream that started from state: the state events (up to `stream:state`), then
/// the live ones until `until` arrives.
async fn read_state_then_live(sse: &mut Sse, until: &str) -> (Vec<(u64, String, Value)>, u64, Vec<u64>) {
    let mut state = Vec::new();
    let as_of = loop {
        let f = sse.next_event().await.expect("state frames");
        if f.event.as_deref() == Some("stream:state") {
            let as_of: u64 = f.json()["asOf"].as_str().unwrap().parse().unwrap();
            assert_eq!(f.id_u64(), Some(as_of), "stream:state moves the cursor to asOf");
            break as_of;
        }
        state.push((f.id_u64().expect("state frames carry their own ids"), f.event.clone().unwrap(), f.json()));
    };
    let mut live = Vec::new();
    loop {
        let f = sse.next_event().await.expect("live frames");
        let id = f.id_u64().expect("an id");
        live.push(id);
        if f.json()["shopifyOrderCreated"]["orderId"] == until {
            break;
        }
    }
    (state, as_of, live)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_state_then_live_has_an_exact_seam_under_concurrent_publishing() {
    let server = Server::start().await;
    let mut c = server.grpc("acme", Role::Publish).await;
    for i in 0..200u32 {
        publish(&mut c, events::totals(&format!("k{}", i % 40), i)).await;
    }
    // Publish snapshots and facts without pause while clients open state-then-live streams.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (mut c, stop) = (server.grpc("acme", Role::Publish).await, stop.clone());
        tokio::spawn(async move {
            let mut n = 1000u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                publish(&mut c, events::totals(&format!("k{}", n % 40), n)).await;
                publish(&mut c, events::order(&n.to_string())).await;
                n += 1;
            }
        })
    };
    let token = server.token("acme", Role::Subscribe, &[]);
    let mut clients = Vec::new();
    for _ in 0..5 {
        let url = format!("{}/api/sse/dashboard?start=state&coalesce=false", server.http_url);
        clients.push(Sse::connect(&url, Some(&token), None).await);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.await.unwrap();
    let end = publish(&mut c, events::order("end")).await;
    for mut sse in clients {
        let (state, as_of, live) = read_state_then_live(&mut sse, "end").await;
        assert!(state.windows(2).all(|w| w[0].0 < w[1].0), "state in id order");
        assert!(state.iter().all(|s| s.0 <= as_of));
        let keys: std::collections::HashSet<_> =
            state.iter().map(|s| s.2["key"].as_str().unwrap().to_owned()).collect();
        assert_eq!(keys.len(), state.len(), "one event per key");
        // Live: exactly the dashboard's history after asOf, no gap, no duplicate.
        let history =
            get_json(&format!("{}/api/events?channels=dashboard&after={as_of}&limit=1000", server.http_url), &token)
                .await;
        let mut want = ids(&history["events"]);
        want.retain(|id| *id < end);
        let got: Vec<u64> = live.iter().copied().filter(|id| *id < end).collect();
        assert_eq!(got, want, "the seam at {as_of} is exact");
        // State + what followed = the current state.
        let mut latest: HashMap<String, u64> =
            state.iter().map(|s| (s.2["key"].as_str().unwrap().to_owned(), s.0)).collect();
        for e in history["events"].as_array().unwrap() {
            if e["type"] == "shopify:sync-completed" {
                latest
                    .insert(e["event"]["key"].as_str().unwrap().to_owned(), e["id"].as_str().unwrap().parse().unwrap());
            }
        }
        let now = get_json(&format!("{}/api/state?channels=dashboard", server.http_url), &token).await;
        let now: HashMap<String, u64> = by_slot(&now["events"]).into_iter().map(|((_, k), (id, _))| (k, id)).collect();
        assert_eq!(latest, now);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_disconnect_inside_the_coalescing_window_still_delivers_the_final_snapshot() {
    let server = Server::start_with(|c| c.bus.coalesce_window_ms = 60_000).await;
    let mut c = server.grpc("acme", Role::Publish).await;
    let token = server.token("acme", Role::Subscribe, &[]);
    let url = format!("{}/api/sse/subscribe?channels=dashboard,alerts", server.http_url);
    let mut sse = Sse::connect(&url, Some(&token), None).await;
    let ok = publish(&mut c, events::health("db", "ok")).await;
    let first = sse.next_event().await.unwrap();
    assert_eq!((first.id_u64(), first.json()["systemHealthCheck"]["status"].as_str()), (Some(ok), Some("ok")));
    // "down" falls inside the window and is held; the alert after it goes out at once.
    let down = publish(&mut c, events::health("db", "down")).await;
    let alert = publish(&mut c, events::alert("db is down")).await;
    let f = sse.next_event().await.unwrap();
    assert_eq!(f.event.as_deref(), Some("alert:warning"));
    let cursor = f.id.clone().unwrap();
    assert_eq!(cursor, format!("{alert}~{}", down - 1), "the cursor owes the held snapshot");
    // Disconnect inside the window and resume with the browser's Last-Event-ID.
    drop(sse);
    let mut sse = Sse::resume(&url, Some(&token), Some(&cursor)).await;
    assert_eq!(sse.response_headers["x-switchyard-resume"], "complete");
    let f = sse.next_event().await.unwrap();
    assert_eq!(f.json()["systemHealthCheck"]["status"], "down", "the final state arrives");
    assert_eq!(f.json()["id"], down.to_string());
    assert_eq!(f.id.as_deref(), Some(alert.to_string().as_str()), "and the cursor does not go back");
    // Nothing else is replayed: the next event is the next one published.
    let next = publish(&mut c, events::alert("next")).await;
    assert_eq!(sse.next_event().await.unwrap().id_u64(), Some(next));
    // The polling API honours the same cursor.
    let page =
        get_json(&format!("{}/api/events?channels=dashboard,alerts&after={cursor}", server.http_url), &token).await;
    assert_eq!(ids(&page["events"])[0], down);
    server.stop().await;
}

/// Live coalescing (done by the SSE writers): the leading edge goes out at once, what follows
/// inside the window is held, and at the window's end only the newest goes out, with a cursor
/// that owes nothing any more.
#[tokio::test]
async fn a_held_snapshot_goes_out_when_its_coalescing_window_ends() {
    let server = Server::start_with(|c| c.bus.coalesce_window_ms = 300).await;
    let mut c = server.grpc("acme", Role::Publish).await;
    let token = server.token("acme", Role::Subscribe, &[]);
    let mut sse = Sse::connect(&format!("{}/api/sse/dashboard", server.http_url), Some(&token), None).await;
    let first = publish(&mut c, events::totals("uk", 1)).await;
    assert_eq!(sse.next_event().await.unwrap().id_u64(), Some(first), "the leading edge at once");
    let held = publish(&mut c, events::totals("uk", 2)).await;
    let newest = publish(&mut c, events::totals("uk", 3)).await;
    let f = sse.next_event().await.unwrap();
    assert_eq!(f.json()["id"], newest.to_string(), "only the newest of the window ({held} was superseded)");
    assert_eq!(f.json()["shopifySyncCompleted"]["totalOrders"], 3);
    assert_eq!(f.id_u64(), Some(newest), "the cursor owes nothing once the window is out");
    server.stop().await;
}

#[tokio::test]
async fn progress_never_follows_completion() {
    let window = Duration::from_millis(300);
    let server = Server::start_with(|c| c.bus.coalesce_window_ms = 300).await;
    let mut c = server.grpc("acme", Role::Publish).await;
    let token = server.token("acme", Role::Subscribe, &[]);
    let mut sse = Sse::connect(&format!("{}/api/sse/jobs/j1", server.http_url), Some(&token), None).await;
    publish(&mut c, events::progress("j1", 10)).await;
    assert_eq!(sse.next_event().await.unwrap().json()["importJobProgress"]["percent"], 10);
    publish(&mut c, events::progress("j1", 75)).await; // held by the window
    let done = publish(&mut c, events::completed("j1")).await;
    let f = sse.next_event().await.unwrap();
    assert_eq!((f.event.as_deref(), f.id_u64()), (Some("import:job-completed"), Some(done)));
    // Let the window end: the held 75 % must not arrive after the completion.
    let t = Instant::now();
    wait_for("the coalescing window to end", || async { (t.elapsed() > window * 2).then_some(()) }).await;
    let later = publish(&mut c, events::progress("j2", 1)).await;
    let mut other = server.grpc("acme", Role::Publish).await;
    let marker = publish(&mut other, Event { key: "j1".into(), ..events::completed("j1") }).await;
    let f = sse.next_event().await.unwrap();
    assert_ne!(f.event.as_deref(), Some("import:job-progress"), "progress followed completion: {f:?}");
    assert_eq!(f.id_u64(), Some(marker));
    assert!(later < marker);
    // In the state view the job's slot holds its completion, not 75 %.
    let state = get_json(&format!("{}/api/state?channels=jobs/j1", server.http_url), &token).await;
    let slots = by_slot(&state["events"]);
    assert_eq!(slots.len(), 1);
    assert!(slots.contains_key(&("import:job-completed".to_owned(), "j1".to_owned())), "{state}");
    server.stop().await;
}

#[tokio::test]
async fn a_resume_into_a_gap_heals_with_the_state_of_what_changed() {
    let server = Server::start_with(|c| {
        c.log.retention.default = switchyard::log::Limits { max_events: 5, max_age_secs: 3600 };
    })
    .await;
    let mut c = server.grpc("acme", Role::Publish).await;
    let untouched = publish(&mut c, events::totals("quiet", 1)).await;
    let seen = publish(&mut c, events::totals("busy", 1)).await;
    // The client saw up to `seen`; then the busy key changed many times and history was trimmed.
    let mut busy = Vec::new();
    for i in 2..30u32 {
        busy.push(publish(&mut c, events::totals("busy", i)).await);
        publish(&mut c, events::order(&i.to_string())).await;
    }
    server.running.bus.log().apply_retention(now_ms()).await.unwrap();
    let token = server.token("acme", Role::Subscribe, &[]);
    let url = format!("{}/api/sse/dashboard?coalesce=false", server.http_url);
    let mut sse = Sse::connect(&url, Some(&token), Some(seen)).await;
    assert_eq!(sse.response_headers["x-switchyard-resume"], "gap");
    assert_eq!(sse.next_event().await.unwrap().event.as_deref(), Some("stream:gap"));
    let mut got = Vec::new();
    let as_of = loop {
        let f = sse.next_event().await.unwrap();
        if f.event.as_deref() == Some("stream:state") {
            break f.id_u64().unwrap();
        }
        got.push((f.id_u64().unwrap(), f.event.clone().unwrap(), f.json()));
    };
    let ids_got: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert!(ids_got.windows(2).all(|w| w[0] < w[1]), "in id order: {ids_got:?}");
    assert!(!ids_got.contains(&untouched), "unchanged keys are not resent");
    let snapshots: Vec<&(u64, String, Value)> = got.iter().filter(|g| g.1 == "shopify:sync-completed").collect();
    assert_eq!(snapshots.len(), 1, "one snapshot per changed key, the latest: {got:?}");
    assert_eq!(snapshots[0].0, *busy.last().unwrap());
    assert!(got.iter().any(|g| g.1 == "shopify:order-created"), "facts still held by history are replayed");
    // Then live, after asOf.
    let next = publish(&mut c, events::totals("busy", 100)).await;
    assert!(next > as_of);
    assert_eq!(sse.next_event().await.unwrap().id_u64(), Some(next));
    server.stop().await;
}

#[tokio::test]
async fn since_replays_from_a_time_over_sse_polling_and_grpc() {
    let server = Server::start().await;
    let mut c = server.grpc("acme", Role::Publish).await;
    let early = publish(&mut c, events::alert("early")).await;
    let mut sub = c
        .subscribe(SubscribeRequest { channels: vec!["alerts".into()], from_id: Some(0), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let published_ms = loop {
        if let Some(Message::Event(e)) = sub.next().await.unwrap().unwrap().message {
            let t = e.published_at.unwrap();
            break t.seconds as u64 * 1000 + t.nanos as u64 / 1_000_000;
        }
    };
    // The next event must fall in a later millisecond than `early`.
    wait_for("the clock to move on", || async { (now_ms() > published_ms).then_some(()) }).await;
    let late = publish(&mut c, events::alert("late")).await;
    let since_ms = published_ms + 1;
    let since = rfc3339(since_ms);
    let token = server.token("acme", Role::Subscribe, &[]);
    // SSE
    let mut sse = Sse::connect(&format!("{}/api/sse/alerts?since={since}", server.http_url), Some(&token), None).await;
    assert_eq!(sse.next_event().await.unwrap().id_u64(), Some(late));
    let mut sse =
        Sse::connect(&format!("{}/api/sse/alerts?since={}", server.http_url, rfc3339(0)), Some(&token), None).await;
    assert_eq!(sse.next_event().await.unwrap().id_u64(), Some(early));
    // Polling
    let page = get_json(&format!("{}/api/events?channels=alerts&since={since}", server.http_url), &token).await;
    assert_eq!(ids(&page["events"]), vec![late]);
    // gRPC Subscribe and Read
    let ts = pbjson_types_timestamp(since_ms);
    let mut s = c
        .subscribe(SubscribeRequest { channels: vec!["alerts".into()], since: Some(ts), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let first = loop {
        if let Some(Message::Event(e)) = s.next().await.unwrap().unwrap().message {
            break e.id;
        }
    };
    assert_eq!(first, late);
    let page = c
        .read(ReadRequest { channels: vec!["alerts".into()], since: Some(ts), limit: 10, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.events.iter().map(|e| e.id).collect::<Vec<_>>(), vec![late]);
    // A bad time is a clear 400 naming the field.
    let r = switchyard_tests::http()
        .get(format!("{}/api/sse/alerts?since=yesterday", server.http_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["error"]["code"].as_str(), body["error"]["field"].as_str()),
        (Some("invalid_since"), Some("since"))
    );
    server.stop().await;
}

fn pbjson_types_timestamp(ms: u64) -> switchyard::proto::Timestamp {
    switchyard::proto::Timestamp { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

fn rfc3339(ms: u64) -> String {
    let t = pbjson_types_timestamp(ms);
    serde_json::to_value(t).unwrap().as_str().unwrap().replace("+00:00", "Z")
}

#[tokio::test]
async fn grpc_state_rpc_and_a_subscription_that_starts_from_state() {
    let server = Server::start().await;
    let mut c = server.grpc("acme", Role::Publish).await;
    publish(&mut c, events::totals("uk", 1)).await;
    let uk = publish(&mut c, events::totals("uk", 2)).await;
    let eu = publish(&mut c, events::totals("eu", 3)).await;
    publish(&mut c, events::order("o")).await;
    let view =
        c.state(StateRequest { channels: vec!["dashboard".into()], ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(view.events.iter().map(|e| e.id).collect::<Vec<_>>(), vec![uk, eu]);
    assert_eq!(view.as_of_id, server.running.bus.log().stats().head.get());
    let req = SubscribeRequest { channels: vec!["dashboard".into()], start: Start::State as i32, ..Default::default() };
    let mut s = c.subscribe(req).await.unwrap().into_inner();
    let mut got = Vec::new();
    let as_of = loop {
        match tokio::time::timeout(PATIENCE, s.next()).await.unwrap().unwrap().unwrap().message {
            Some(Message::Event(e)) => got.push(e.id),
            Some(Message::StateEnd(end)) => {
                assert_eq!(end.events, 2);
                break end.as_of_id;
            }
            _ => {}
        }
    };
    assert_eq!(got, vec![uk, eu]);
    assert_eq!(as_of, view.as_of_id);
    let live = publish(&mut c, events::order("live")).await;
    let next = loop {
        if let Some(Message::Event(e)) = s.next().await.unwrap().unwrap().message {
            break e.id;
        }
    };
    assert_eq!(next, live);
    server.stop().await;
}

#[tokio::test]
async fn a_reloaded_page_gets_the_whole_state_and_the_facts_it_missed() {
    let server = Server::start().await;
    let mut c = server.grpc("acme", Role::Publish).await;
    let uk = publish(&mut c, events::totals("uk", 1)).await;
    let seen = publish(&mut c, events::order("seen")).await;
    // The page saw up to `seen`, then was closed; meanwhile:
    let missed = publish(&mut c, events::order("missed")).await;
    let eu_old = publish(&mut c, events::totals("eu", 1)).await;
    let eu = publish(&mut c, events::totals("eu", 2)).await;
    let token = server.token("acme", Role::Subscribe, &[]);
    let url = format!("{}/api/sse/dashboard?start=state&lastEventId={seen}&coalesce=false", server.http_url);
    let mut sse = Sse::connect(&url, Some(&token), None).await;
    assert_eq!(sse.response_headers["x-switchyard-resume"], "complete");
    let mut got = Vec::new();
    loop {
        let f = sse.next_event().await.unwrap();
        if f.event.as_deref() == Some("stream:state") {
            break;
        }
        got.push(f.id_u64().unwrap());
    }
    // Every key's state (uk from before `seen` too), the fact after `seen`, never the superseded eu.
    assert_eq!(got, vec![uk, missed, eu]);
    assert!(!got.contains(&eu_old));
    // EventSource reconnecting by itself (the header) resumes plainly, state or not in the URL.
    let mut sse = Sse::connect(&url, Some(&token), Some(missed)).await;
    assert_eq!(sse.next_event().await.unwrap().id_u64(), Some(eu_old));
    server.stop().await;
}

/// A polling cursor that owes state (`N~W`) gets all of it over as many pages as it takes, in
/// id order, each page's `next` still owing the rest; nothing owed is dropped for `limit`. Over
/// gRPC `Read` too (`next_cursor`).
#[tokio::test]
async fn a_polling_cursor_owing_state_gets_all_of_it_across_pages() {
    let server = Server::start().await;
    let mut c = server.grpc("acme", Role::Publish).await;
    let mut ids = Vec::new();
    for k in ["k1", "k2", "k3", "k4", "k5"] {
        ids.push(c.publish(PublishRequest { event: Some(events::totals(k, 1)) }).await.unwrap().into_inner().id);
    }
    let head = *ids.last().unwrap();
    let token = server.token("acme", Role::Subscribe, &[]);
    let (mut cursor, mut got) = (format!("{head}~0"), Vec::new());
    for _ in 0..5 {
        let page = switchyard_tests::get_json(
            &format!("{}/api/events?channels=dashboard&after={cursor}&limit=2", server.http_url),
            &token,
        )
        .await;
        got.extend(
            page["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().parse::<u64>().unwrap()),
        );
        cursor = page["next"].as_str().unwrap().to_owned();
        if !cursor.contains('~') {
            break;
        }
    }
    assert_eq!(got, ids, "every owed key, once, in id order");
    assert_eq!(cursor, head.to_string(), "then a plain cursor");
    let mut sub = server.grpc("acme", Role::Subscribe).await;
    let req =
        |cursor: String| ReadRequest { channels: vec!["dashboard".into()], cursor, limit: 3, ..Default::default() };
    let first = sub.read(req(format!("{head}~0"))).await.unwrap().into_inner();
    assert_eq!(first.events.len(), 3);
    assert_eq!(first.next_cursor, format!("{head}~{}", ids[2]));
    let second = sub.read(req(first.next_cursor)).await.unwrap().into_inner();
    assert_eq!(second.events.iter().map(|e| e.id).collect::<Vec<_>>(), ids[3..]);
    assert_eq!(second.next_cursor, head.to_string());
    server.stop().await;
}

/// `GET /api/state` answers a page at a time (1,000 keys by default), every page with the first
/// one's `asOf`. A key that changes during the walk leaves the pages, and the events after
/// `asOf` carry it: the pages plus what follows `asOf` are the truth, each key once.
#[tokio::test]
async fn the_state_is_read_a_page_at_a_time_consistent_with_one_as_of() {
    let server = Server::start().await;
    let publish = server.token("acme", Role::Publish, &[]);
    let url = format!("{}/api/events", server.http_url);
    let snapshot = |k: usize, orders: u32| serde_json::json!({"type": "shopify:sync-completed", "key": format!("k{k}"), "data": {"totalOrders": orders}});
    for chunk in (0..2_500).collect::<Vec<_>>().chunks(1_000) {
        let batch: Vec<Value> = chunk.iter().map(|&k| snapshot(k, 1)).collect();
        switchyard_tests::post_json(&url, &publish, &serde_json::json!(batch)).await;
    }
    let token = server.token("acme", Role::Subscribe, &[]);
    let page = |cursor: Option<String>| {
        let mut u = format!("{}/api/state?channels=dashboard", server.http_url);
        if let Some(c) = cursor {
            u += &format!("&cursor={c}");
        }
        let token = token.clone();
        async move { switchyard_tests::get_json(&u, &token).await }
    };
    let key = |e: &Value| e["event"]["key"].as_str().unwrap().to_owned();
    let first = page(None).await;
    let as_of = first["asOf"].as_str().unwrap().to_owned();
    let mut keys: Vec<String> = first["events"].as_array().unwrap().iter().map(key).collect();
    assert_eq!(keys.len(), 1_000);
    // Mid-walk: a key not yet given changes.
    switchyard_tests::post_json(&url, &publish, &snapshot(2_400, 7)).await;
    let mut cursor = first["next"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let p = page(Some(c)).await;
        assert_eq!(p["asOf"].as_str().unwrap(), as_of, "one asOf for the walk");
        keys.extend(p["events"].as_array().unwrap().iter().map(key));
        cursor = p["next"].as_str().map(str::to_owned);
    }
    assert_eq!(keys.len(), 2_499, "the changed key left the pages");
    assert!(!keys.contains(&"k2400".to_owned()));
    let after = switchyard_tests::get_json(&format!("{url}?channels=dashboard&after={as_of}"), &token).await;
    let later: Vec<String> = after["events"].as_array().unwrap().iter().map(key).collect();
    assert_eq!(later, ["k2400"], "what follows asOf carries it");
    keys.extend(later);
    let distinct: std::collections::BTreeSet<_> = keys.iter().collect();
    assert_eq!(distinct.len(), 2_500, "every key once");
    // Another tenant's cursor (or a made-up one) is no way into this tenant's keys, and no panic.
    for foreign in [format!("{as_of}.00"), format!("{as_of}.ffff"), format!("{as_of}.{}", "7a".repeat(40))] {
        let r = switchyard_tests::http()
            .get(format!("{}/api/state?channels=dashboard&cursor={foreign}", server.http_url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{foreign}");
    }
    // A bad cursor or limit names its field.
    let r = switchyard_tests::http()
        .get(format!("{}/api/state?cursor=nope&limit=0", server.http_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    server.stop().await;
}
