//! What a gRPC call must show before a byte of its body is read.
//!
//! tonic decodes a request message before the handler runs, so a token checked in the handler
//! came after the server had buffered and decoded whatever the caller sent: four
//! unauthenticated 4 MiB `PublishBatch` calls of empty events took the process from 17 MB to
//! 3.2 GB. [`EventBusService`] sits in front of the generated server instead: it checks the
//! credentials from the headers alone, counts the token's open calls, and gives each method the
//! message size it needs; only then does tonic read the body. A `PublishBatch` is counted on
//! its raw bytes before prost allocates an event ([`BatchDecoder`]).

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use tonic::{
    Status,
    body::Body,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
    codegen::{Body as HttpBody, BoxFuture, Service as TowerService, StdError, http},
    server::{NamedService, UnaryService},
};

use super::{Limits, Service, outgoing};
use crate::{
    auth::{Principal, TenantScope},
    bus::MAX_BATCH,
    proto::v1::{PublishBatchRequest, PublishBatchResponse, event_bus_server::EventBusServer},
};

/// A request message of any method that carries no events (`Subscribe`, `Read`, `State`,
/// `Stats`): a tenant, up to 64 channel names and a cursor fit many times over.
const SMALL_MESSAGE: usize = 64 * 1024;

const PREFIX: &str = "/switchyard.v1.EventBus/";

/// The methods by what their requests may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// `Publish`, and each message of `PublishStream`: one event.
    Publish,
    PublishBatch,
    Subscribe,
    /// Everything else: no events in the request.
    Small,
}

impl Method {
    fn of(path: &str) -> Self {
        match path.strip_prefix(PREFIX) {
            Some("Publish" | "PublishStream") => Self::Publish,
            Some("PublishBatch") => Self::PublishBatch,
            Some("Subscribe") => Self::Subscribe,
            _ => Self::Small,
        }
    }
}

/// Calls open at once per token. System tokens (tenant `*`: a bridge, in-process connectors)
/// are the operator's own and not counted.
#[derive(Clone)]
struct Calls {
    per_token: usize,
    // std Mutex: one map update per call start and end, never held across an await.
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One call's place among its token's, given back when the response ends.
struct Call {
    open: Arc<Mutex<HashMap<String, usize>>>,
    token: String,
}

impl Calls {
    fn enter(&self, who: &Principal) -> Result<Option<Call>, Status> {
        if matches!(who.tenant, TenantScope::All) {
            return Ok(None);
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(who.token_id.clone()).or_default();
        if *n >= self.per_token {
            return Err(Status::resource_exhausted(format!(
                "this token has {} calls open, its limit; finish some first",
                self.per_token
            )));
        }
        *n += 1;
        Ok(Some(Call { open: self.open.clone(), token: who.token_id.clone() }))
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.token);
            }
        }
    }
}

/// The EventBus as served: admission first, then `Subscribe` with the shared encoding,
/// `PublishBatch` counted before it is decoded, and the rest by the generated server with the
/// message size of its method.
#[derive(Clone)]
pub struct EventBusService {
    service: Arc<Service>,
    calls: Calls,
    limits: Limits,
    small: EventBusServer<Service>,
    publish: EventBusServer<Service>,
}

impl EventBusService {
    pub fn new(service: Service, limits: Limits) -> Self {
        let service = Arc::new(service);
        let generated = |max| EventBusServer::from_arc(service.clone()).max_decoding_message_size(max);
        Self {
            small: generated(SMALL_MESSAGE),
            publish: generated(limits.max_publish_bytes),
            calls: Calls { per_token: limits.max_calls_per_token, open: Arc::default() },
            limits,
            service,
        }
    }
}

impl NamedService for EventBusService {
    const NAME: &'static str = <EventBusServer<Service> as NamedService>::NAME;
}

impl<B> TowerService<http::Request<B>> for EventBusService
where
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // From the headers alone: a refused call's body is never read (h2 resets the stream,
        // and flow control lets the client send no more than a window before it).
        let admitted =
            self.service.authenticate(req.headers()).and_then(|who| self.calls.enter(&who).map(|call| (who, call)));
        let (who, call) = match admitted {
            Ok(ok) => ok,
            Err(status) => return Box::pin(std::future::ready(Ok(status.into_http()))),
        };
        req.extensions_mut().insert(who);
        let method = Method::of(req.uri().path());
        let response: Self::Future = match method {
            Method::Subscribe => {
                let service = self.service.clone();
                Box::pin(async move {
                    let mut grpc = tonic::server::Grpc::new(outgoing::OutgoingCodec)
                        .apply_max_message_size_config(Some(SMALL_MESSAGE), None);
                    Ok(grpc.server_streaming(outgoing::Subscribe(service), req).await)
                })
            }
            Method::PublishBatch => {
                let (service, max) = (self.service.clone(), self.limits.max_message_bytes);
                Box::pin(async move {
                    let mut grpc = tonic::server::Grpc::new(BatchCodec).apply_max_message_size_config(Some(max), None);
                    Ok(grpc.unary(PublishBatch(service), req).await)
                })
            }
            Method::Publish => self.publish.call(req),
            Method::Small => self.small.call(req),
        };
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Body::new(super::idle::Held::new(body, call))))
        })
    }
}

struct PublishBatch(Arc<Service>);

impl UnaryService<PublishBatchRequest> for PublishBatch {
    type Response = PublishBatchResponse;
    type Future = BoxFuture<tonic::Response<PublishBatchResponse>, Status>;

    fn call(&mut self, request: tonic::Request<PublishBatchRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { crate::proto::v1::event_bus_server::EventBus::publish_batch(&*service, request).await })
    }
}

/// prost's codec, with a decoder that counts a batch's events before decoding any.
#[derive(Debug, Clone, Copy, Default)]
struct BatchCodec;

impl Codec for BatchCodec {
    type Encode = PublishBatchResponse;
    type Decode = PublishBatchRequest;
    type Encoder = tonic_prost::ProstEncoder<PublishBatchResponse>;
    type Decoder = BatchDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstCodec::<PublishBatchResponse, PublishBatchRequest>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        BatchDecoder
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct BatchDecoder;

impl Decoder for BatchDecoder {
    type Item = PublishBatchRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        use bytes::Buf;
        if count_events(buf.chunk()) > MAX_BATCH {
            return Err(Status::invalid_argument(crate::bus::too_many_events(MAX_BATCH).to_string()));
        }
        prost::Message::decode(buf).map(Some).map_err(|e| Status::invalid_argument(format!("malformed batch: {e}")))
    }
}

/// `PublishBatchRequest.events`' field number (bus.proto).
const EVENTS_FIELD: u64 = 1;

/// How many `events` fields a `PublishBatchRequest` encoding holds, read from the wire format
/// without decoding one; stops counting past [`MAX_BATCH`]. Malformed input is left for prost to
/// name (the count so far is returned).
fn count_events(mut b: &[u8]) -> usize {
    let mut n = 0;
    while !b.is_empty() && n <= MAX_BATCH {
        let Ok(key) = prost::encoding::decode_varint(&mut b) else { break };
        let skip = match key & 7 {
            0 => match prost::encoding::decode_varint(&mut b) {
                Ok(_) => 0,
                Err(_) => break,
            },
            1 => 8,
            2 => match prost::encoding::decode_varint(&mut b).ok().and_then(|l| usize::try_from(l).ok()) {
                Some(len) => {
                    if key >> 3 == EVENTS_FIELD {
                        n += 1;
                    }
                    len
                }
                None => break,
            },
            5 => 4,
            _ => break,
        };
        if skip > b.len() {
            break;
        }
        b = &b[skip..];
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::Event;

    #[test]
    fn events_are_counted_on_the_wire_without_decoding() {
        let batch = PublishBatchRequest { events: vec![Event::default(); 7] };
        assert_eq!(count_events(&prost::Message::encode_to_vec(&batch)), 7);
        let full = PublishBatchRequest {
            events: (0..3).map(|i| Event { key: format!("k{i}"), id: i, ..Default::default() }).collect(),
        };
        assert_eq!(count_events(&prost::Message::encode_to_vec(&full)), 3);
        // The attack's shape: `0a 00` repeated is two million empty events in 4 MiB.
        let flood = [0x0a, 0x00].repeat(2 * 1024 * 1024);
        assert_eq!(count_events(&flood), MAX_BATCH + 1, "stops counting past the cap");
        assert_eq!(count_events(&[0x0a, 0xff]), 0, "a truncated length is left to prost");
    }

    #[test]
    fn methods_get_their_size_class() {
        assert_eq!(Method::of("/switchyard.v1.EventBus/Publish"), Method::Publish);
        assert_eq!(Method::of("/switchyard.v1.EventBus/PublishStream"), Method::Publish);
        assert_eq!(Method::of("/switchyard.v1.EventBus/PublishBatch"), Method::PublishBatch);
        assert_eq!(Method::of("/switchyard.v1.EventBus/Subscribe"), Method::Subscribe);
        assert_eq!(Method::of("/switchyard.v1.EventBus/Read"), Method::Small);
    }
}
