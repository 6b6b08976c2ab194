//! The deliverer against a scripted receiver, with tokio's clock paused: the whole retry
//! ladder (hours of it), `Retry-After`, dead letters, disabling, redrive and ordered delivery,
//! run in no time over a real embedded log and store.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::BoxFuture;
use switchyard::{
    auth::Principal,
    bus::Bus,
    hub::Hub,
    log::{
        Stream,
        embedded::{EmbeddedConfig, EmbeddedLog},
        kv::Kv,
    },
    names::{EventId, Tenant},
    proto::v1::{Alert, Event, event::Payload},
};
use switchyard_outbound::{
    Config, Outbound, Spec,
    ladder::Ladder,
    transport::{Outcome, Reason, Request, Transport},
};
use tokio::time::Instant;

/// One attempt as the receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    id: u64,
    /// Attempts of this id so far, this one included.
    nth: usize,
    body: bytes::Bytes,
}

type Answer = dyn Fn(u64, usize) -> Outcome + Send + Sync;

/// A receiver whose answers a test scripts, by event id and attempt number.
struct Scripted {
    seen: Mutex<Vec<Seen>>,
    answer: Mutex<Arc<Answer>>,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    most_in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl Scripted {
    fn new(answer: impl Fn(u64, usize) -> Outcome + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            seen: Mutex::default(),
            answer: Mutex::new(Arc::new(answer)),
            in_flight: Default::default(),
            most_in_flight: Default::default(),
        })
    }

    fn answer(&self, answer: impl Fn(u64, usize) -> Outcome + Send + Sync + 'static) {
        *self.answer.lock().unwrap() = Arc::new(answer);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Transport for Scripted {
    fn post(&self, request: Request) -> BoxFuture<'static, Outcome> {
        use std::sync::atomic::Ordering::SeqCst;
        // Messages for people carry no webhook-id: they count as id 0.
        let id: u64 = request.headers.iter().find(|(k, _)| *k == "webhook-id").map_or(0, |(_, v)| v.parse().unwrap());
        let nth = {
            let mut seen = self.seen.lock().unwrap();
            let nth = seen.iter().filter(|s| s.id == id).count() + 1;
            seen.push(Seen { at: Instant::now(), id, nth, body: request.body });
            nth
        };
        let outcome = (self.answer.lock().unwrap())(id, nth);
        let (now, most) = (self.in_flight.clone(), self.most_in_flight.clone());
        most.fetch_max(now.fetch_add(1, SeqCst) + 1, SeqCst);
        Box::pin(async move {
            // A receiver takes a moment to answer: attempts overlap where the endpoint allows.
            tokio::time::sleep(Duration::from_millis(10)).await;
            now.fetch_sub(1, SeqCst);
            outcome
        })
    }
}

fn ok() -> Outcome {
    Outcome::Delivered { status: 204 }
}

fn error(retry_after: Option<u64>) -> Outcome {
    Outcome::Failed {
        reason: Reason::Status,
        status: Some(500),
        retry_after: retry_after.map(Duration::from_secs),
        detail: "HTTP 500".into(),
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    bus: Bus,
    outbound: Outbound,
    kv: Arc<dyn Kv>,
    tenant: Tenant,
    _stop: tokio::sync::watch::Sender<bool>,
}

fn rig(transport: Arc<Scripted>, config: Config) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::default();
    let dispatch = Arc::new(switchyard_outbound::dispatch::Dispatch::default());
    let feed = {
        let (hub, dispatch) = (hub.clone(), dispatch.clone());
        switchyard::log::Feed::new(move |records| {
            hub.publish(records);
            dispatch.committed(records);
        })
    };
    let log = EmbeddedLog::open(dir.path(), EmbeddedConfig::default(), feed).unwrap();
    // The store in memory: the redb one commits on a thread, and while a test waits for a
    // thread, paused time jumps to the next timer, which would blur the gaps measured here.
    // (The redb store has its own tests; the e2e tests deliver through it.)
    let kv: Arc<dyn Kv> = Arc::new(switchyard::log::kv::MemoryKv::default());
    let bus = Bus::new(Arc::new(log), hub, Default::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let config =
        Config { allow_http_hosts: vec!["127.0.0.1".into()], allow_private_hosts: vec!["127.0.0.1".into()], ..config };
    let parts = switchyard_outbound::Parts { bus: bus.clone(), dispatch, kv: kv.clone(), transport };
    let outbound = Outbound::start(parts, config, b"server secret", "n1".into(), stopped).unwrap();
    Rig { _dir: dir, bus, outbound, kv, tenant: Tenant::new("acme").unwrap(), _stop: stop }
}

impl Rig {
    async fn endpoint(&self, spec: serde_json::Value) -> String {
        let mut spec = spec;
        spec["url"] = "http://127.0.0.1:9/hook".into();
        let spec: Spec = serde_json::from_value(spec).unwrap();
        self.outbound.create(&self.tenant, spec).await.unwrap().0.id.to_string()
    }

    async fn alert(&self, title: &str) -> u64 {
        self.bus.publish_one(&Principal::system(), alert_event(title)).await.unwrap().id.0
    }
}

fn alert_event(title: &str) -> Event {
    Event {
        tenant: "acme".into(),
        payload: Some(Payload::AlertCritical(Alert { title: title.into(), ..Default::default() })),
        ..Default::default()
    }
}

/// Waits (in paused time, so hours pass at once) until `f` holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never: {what}");
}

/// Polls `f` until it gives something. Its bound is real time, not a count of paused-time
/// sleeps: the store writes on real threads, and on a loaded machine paused time can run through
/// any count of sleeps before a write lands.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn secs(a: Instant, b: Instant) -> f64 {
    (b - a).as_secs_f64()
}

#[tokio::test(start_paused = true)]
async fn a_failing_receiver_sees_the_written_ladder_with_jitter_and_retry_after_stretches_it() {
    // 500, then 500 with Retry-After: 900, then 500, then 2xx.
    let receiver = Scripted::new(|_, nth| match nth {
        2 => error(Some(900)),
        1 | 3 => error(None),
        _ => ok(),
    });
    let rig = rig(receiver.clone(), Config::default());
    let id = rig.endpoint(serde_json::json!({})).await;
    let event = rig.alert("stock-out").await;
    until("delivered on the fourth attempt", || receiver.seen().len() >= 4).await;
    let seen = receiver.seen();
    assert!(seen.iter().all(|s| s.id == event));
    let gaps: Vec<f64> = seen.windows(2).map(|w| secs(w[0].at, w[1].at)).collect();
    assert!((4.0..=6.1).contains(&gaps[0]), "first retry after 5 s ± 20 %: {gaps:?}");
    assert!((899.9..=901.0).contains(&gaps[1]), "Retry-After 900 stretches the 5 min step: {gaps:?}");
    assert!((1440.0..=2160.1).contains(&gaps[2]), "then 30 min ± 20 %: {gaps:?}");
    let view = eventually("the delivery recorded", || async {
        Some(rig.outbound.get(&rig.tenant, &id).await.unwrap()).filter(|v| v.delivered == 1)
    })
    .await;
    assert_eq!((view.delivered, view.failed_attempts, view.owed, view.state), (1, 3, 0, "healthy"));
    assert_eq!(view.cursor, EventId(event));
    tokio::time::sleep(Duration::from_secs(36_000)).await;
    assert_eq!(receiver.seen().len(), 4, "nothing after the 2xx");
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_ladder_dead_letters_redrive_delivers_and_a_long_failure_disables_with_an_event() {
    let receiver = Scripted::new(|_, _| error(None));
    let config = Config {
        ladder: Ladder { steps_secs: vec![1, 1], jitter: 0.0 },
        disable_after_secs: 3600,
        ..Config::default()
    };
    let rig = rig(receiver.clone(), config);
    let id = rig.endpoint(serde_json::json!({ "types": ["alert:*"] })).await;
    let event = rig.alert("quality").await;
    until("three attempts", || receiver.seen().len() >= 3).await;
    let outbound = rig.outbound.clone();
    let tenant = rig.tenant.clone();
    let dead = eventually("a dead letter", || async {
        Some(outbound.dead_letters(&tenant, &id, 10).await.unwrap()).filter(|d| !d.is_empty())
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id, dead[0].attempts, dead[0].r#type.as_str()), (EventId(event), 3, "alert:critical"));
    // Redrive once the receiver is back: delivered, no longer dead.
    receiver.answer(|_, _| ok());
    assert_eq!(outbound.redrive(&tenant, &id).await.unwrap(), 1);
    until("the redriven delivery", || receiver.seen().len() >= 4).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(outbound.dead_letters(&tenant, &id, 10).await.unwrap().is_empty());
    assert_eq!(outbound.get(&tenant, &id).await.unwrap().delivered, 1);

    // Failing for longer than disable_after: disabled, and said as an event.
    receiver.answer(|_, _| error(None));
    let deadline = Instant::now() + Duration::from_secs(5 * 3600);
    while Instant::now() < deadline && outbound.get(&tenant, &id).await.unwrap().state != "disabled" {
        rig.alert("again").await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let view = outbound.get(&tenant, &id).await.unwrap();
    assert_eq!(view.state, "disabled", "{view:?}");
    let log = rig.bus.log();
    let disabled: Vec<_> = eventually("the disabled event", || async {
        let all = log.read(Stream::Tenant(tenant.clone()), EventId(0), 10_000).await.unwrap();
        let found: Vec<_> = all.into_iter().filter(|r| r.type_name() == "outbound:endpoint-disabled").collect();
        Some(found).filter(|f| !f.is_empty())
    })
    .await;
    assert_eq!(disabled.len(), 1, "one outbound:endpoint-disabled event");
    assert_eq!(disabled[0].event.key, id);
    let attempts = receiver.seen().len();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let after: Vec<_> = receiver.seen().into_iter().skip(attempts).collect();
    assert!(after.is_empty(), "a disabled endpoint gets nothing: {after:?}");
    // Enabled again: it resumes with what it owes.
    receiver.answer(|_, _| ok());
    outbound.enable(&tenant, &id).await.unwrap();
    until("deliveries resume", || receiver.seen().len() > attempts).await;
    drop(rig.kv);
}

#[tokio::test(start_paused = true)]
async fn an_ordered_endpoint_holds_later_events_behind_a_failing_one_and_sends_one_at_a_time() {
    // The first event tried fails twice.
    let first = Arc::new(std::sync::OnceLock::new());
    let f = first.clone();
    let receiver =
        Scripted::new(move |id, nth| if *f.get_or_init(|| id) == id && nth <= 2 { error(None) } else { ok() });
    let rig = rig(receiver.clone(), Config::default());
    rig.endpoint(serde_json::json!({ "ordered": true })).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(rig.alert(&format!("a{i}")).await);
    }
    until("all five delivered", || receiver.seen().iter().filter(|s| s.nth == 1 || s.id == ids[0]).count() >= 7).await;
    let seen = receiver.seen();
    let order: Vec<u64> = seen.iter().map(|s| s.id).collect();
    assert_eq!(order, [ids[0], ids[0], ids[0], ids[1], ids[2], ids[3], ids[4]], "in id order, the head retried first");
    assert_eq!(receiver.most_in_flight.load(std::sync::atomic::Ordering::SeqCst), 1, "one at a time");

    // Unordered endpoints overlap their attempts.
    let fast = Scripted::new(|_, _| ok());
    let rig = rig_unordered(fast.clone()).await;
    // One batch: all forty are there at once (published one by one, paused time would let each
    // attempt finish before the next event is committed).
    let batch = (0..40).map(|i| alert_event(&format!("b{i}"))).collect();
    assert!(rig.bus.publish(&Principal::system(), batch).await.iter().all(Result::is_ok));
    until("forty delivered", || fast.seen().len() >= 40).await;
    assert!(fast.most_in_flight.load(std::sync::atomic::Ordering::SeqCst) > 1);
}

async fn rig_unordered(t: Arc<Scripted>) -> Rig {
    let rig = rig(t, Config::default());
    rig.endpoint(serde_json::json!({})).await;
    rig
}

#[tokio::test(start_paused = true)]
async fn a_message_for_people_that_failed_is_retried_as_one_message_not_one_per_alert() {
    let receiver = Scripted::new(|_, nth| if nth == 1 { error(None) } else { ok() });
    let rig = rig(receiver.clone(), Config { group_window_ms: 1000, ..Config::default() });
    let id = rig.endpoint(serde_json::json!({ "kind": "slack", "types": ["alert:critical"] })).await;
    // One batch: a commit waits on the log's thread, and paused time jumps past the window then.
    let alerts = ["freezer 1", "freezer 2", "freezer 3"].map(alert_event).to_vec();
    rig.bus.publish_all(&Principal::system(), alerts).await.unwrap();
    until("the retry", || receiver.seen().len() >= 2).await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let seen = receiver.seen();
    assert_eq!(seen.len(), 2, "one message, then its one retry: {seen:?}");
    for s in &seen {
        let text = String::from_utf8_lossy(&s.body);
        assert!(text.contains("3 × alert:critical"), "{text}");
        assert!(["freezer 1", "freezer 2", "freezer 3"].iter().all(|t| text.contains(t)), "{text}");
    }
    let view = rig.outbound.get(&rig.tenant, &id).await.unwrap();
    assert_eq!((view.delivered, view.failed_attempts, view.owed), (3, 1, 0));
}

#[tokio::test]
async fn concurrent_creates_cannot_pass_the_per_tenant_endpoint_cap_together() {
    let rig = rig(Scripted::new(|_, _| ok()), Config { max_endpoints_per_tenant: 3, ..Config::default() });
    let spec = || serde_json::from_value::<Spec>(serde_json::json!({ "url": "http://127.0.0.1:9/hook" })).unwrap();
    let creates = (0..10).map(|_| rig.outbound.create(&rig.tenant, spec()));
    let results = futures::future::join_all(creates).await;
    let made = results.iter().filter(|r| r.is_ok()).count();
    let refused = results.iter().filter(|r| matches!(r, Err(switchyard_outbound::OutboundError::TooMany(3)))).count();
    assert_eq!((made, refused), (3, 7), "{results:?}");
    assert_eq!(rig.outbound.list(&rig.tenant).await.unwrap().len(), 3);
}
