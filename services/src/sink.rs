//! Where connectors' events go: the EventBus, over gRPC with a publish token, in order, each
//! event acknowledged. Idempotency keys make a retried batch safe.

use futures::future::BoxFuture;
use switchyard::proto::v1::{Event, PublishRequest, publish_ack};
use tokio_stream::StreamExt;

pub trait Sink: Send + Sync + 'static {
    /// Publishes every event or fails; a failure may leave a prefix published, which the
    /// events' idempotency keys make harmless to retry.
    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<(), String>>;
}

pub struct GrpcSink {
    client: switchyard::grpc::Client,
}

impl GrpcSink {
    pub fn new(bus_url: &str, token: &str) -> Result<Self, String> {
        Ok(Self { client: switchyard::grpc::connect(bus_url, token)? })
    }
}

impl Sink for GrpcSink {
    fn publish(&self, mut events: Vec<Event>) -> BoxFuture<'_, Result<(), String>> {
        let mut client = self.client.clone();
        // A sampled sync's events carry its trace, so their commit and deliveries join it.
        let traceparent = switchyard::trace::stamp(events.iter_mut()).map(|t| t.traceparent);
        Box::pin(async move {
            let n = events.len();
            let reqs = tokio_stream::iter(events.into_iter().map(|e| PublishRequest { event: Some(e) }));
            let mut req = tonic::Request::new(reqs);
            if let Some(v) = traceparent.and_then(|t| t.parse().ok()) {
                req.metadata_mut().insert("traceparent", v);
            }
            let mut acks = client.publish_stream(req).await.map_err(|s| s.message().to_owned())?.into_inner();
            let mut ok = 0;
            while let Some(ack) = acks.next().await {
                match ack.map_err(|s| s.message().to_owned())?.result {
                    Some(publish_ack::Result::Id(_)) => ok += 1,
                    Some(publish_ack::Result::Error(e)) => return Err(format!("{}: {}", e.code, e.message)),
                    None => return Err("empty acknowledgement".into()),
                }
            }
            if ok == n { Ok(()) } else { Err(format!("{ok} of {n} events acknowledged")) }
        })
    }
}
