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
    let connect = || switchyard_bridge::tools::connect(&server.grpc_url, &token);
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
