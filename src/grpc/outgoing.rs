//! `Subscribe` messages encoded once per event, not once per subscriber.
//!
//! tonic's generated server encodes every message it is handed, so a thousand gRPC
//! subscribers would each clone the event and run prost over it. Here an event goes out as
//! its record: the `SubscribeResponse.event` field is encoded on first use, cached on the
//! record beside the SSE frame, and each subscriber's message is that shared field plus its
//! own cursor (protobuf fields may come in any order, so the two concatenate).
//! [`super::EventBusService`] routes `Subscribe` through [`OutgoingCodec`].

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, EncodeBuf, Encoder},
    codegen::BoxFuture,
    server::ServerStreamingService,
};

use super::{BoxStream, Service};
use crate::{
    log::Record,
    proto::v1::{SubscribeRequest, SubscribeResponse, subscribe_response},
};

/// `SubscribeResponse.event`'s field number (bus.proto); a test decodes the result.
const EVENT_FIELD: u32 = 2;
/// `SubscribeResponse.cursor`'s field number.
const CURSOR_FIELD: u32 = 5;

/// One `Subscribe` message on its way out.
#[derive(Debug)]
pub enum Outgoing {
    /// An event, sent as its record's shared encoding, with this subscriber's resume cursor
    /// when it is not simply the event's id.
    Event(Arc<Record>, Option<String>),
    /// Anything else (status, gap, state end): small, per subscriber, encoded as it is.
    Message(Box<SubscribeResponse>),
}

impl Outgoing {
    /// The message as the generated types have it (for in-process callers of the trait).
    pub fn into_message(self) -> SubscribeResponse {
        match self {
            Outgoing::Event(r, cursor) => SubscribeResponse {
                message: Some(subscribe_response::Message::Event(r.event.clone())),
                cursor: cursor.unwrap_or_default(),
            },
            Outgoing::Message(m) => *m,
        }
    }
}

/// The record's `SubscribeResponse.event` field (tag, length, event), encoded on first use.
pub(super) fn event_field(record: &Record) -> &Bytes {
    record.grpc_field.get_or_init(|| {
        let mut buf = BytesMut::with_capacity(prost::Message::encoded_len(&record.event) + 8);
        prost::encoding::message::encode(EVENT_FIELD, &record.event, &mut buf);
        buf.freeze()
    })
}

/// Encodes [`Outgoing`] (shared bytes copied into the stream's buffer), decodes requests with prost.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct OutgoingCodec;

impl Codec for OutgoingCodec {
    type Encode = Outgoing;
    type Decode = SubscribeRequest;
    type Encoder = OutgoingEncoder;
    type Decoder = tonic_prost::ProstDecoder<SubscribeRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        OutgoingEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<SubscribeResponse, SubscribeRequest>::raw_decoder(BufferSettings::default())
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct OutgoingEncoder;

impl Encoder for OutgoingEncoder {
    type Item = Outgoing;
    type Error = Status;

    fn encode(&mut self, item: Outgoing, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        encode_into(item, dst)
    }
}

/// Writes one message: an event's shared field (and cursor), or any other message by prost.
fn encode_into(item: Outgoing, dst: &mut impl BufMut) -> Result<(), Status> {
    match item {
        Outgoing::Event(record, cursor) => {
            dst.put_slice(event_field(&record));
            if let Some(c) = cursor {
                prost::encoding::string::encode(CURSOR_FIELD, &c, dst);
            }
            Ok(())
        }
        // EncodeBuf grows as needed, so prost's "buffer too small" cannot happen here.
        Outgoing::Message(m) => prost::Message::encode(m.as_ref(), dst).map_err(|e| Status::internal(e.to_string())),
    }
}

/// `Subscribe` as a tower service's method: the same handler, messages through [`OutgoingCodec`].
pub(super) struct Subscribe(pub(super) Arc<Service>);

impl ServerStreamingService<SubscribeRequest> for Subscribe {
    type Response = Outgoing;
    type ResponseStream = BoxStream<Outgoing>;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: tonic::Request<SubscribeRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.outgoing(request).await.map(tonic::Response::new) })
    }
}

/// The generated trait's stream, for in-process callers: the same subscription, decoded.
pub(super) fn into_messages(s: BoxStream<Outgoing>) -> BoxStream<SubscribeResponse> {
    Box::pin(s.map(|m| m.map(Outgoing::into_message)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        names::Tenant,
        proto::v1::{Alert, Event, event::Payload},
    };

    /// The shared field plus a cursor decodes as the message prost would have encoded.
    #[test]
    fn shared_encoding_decodes_as_the_generated_message() {
        let event = Event {
            id: 42,
            tenant: "acme".into(),
            payload: Some(Payload::AlertWarning(Alert {
                title: "t".into(),
                message: "m".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let routing = crate::validate::route(&event, None).expect("routing");
        let record = Arc::new(Record::new(event.clone(), Tenant::new("acme").expect("tenant"), routing));
        for cursor in [None, Some("42~40".to_owned())] {
            let mut buf = BytesMut::new();
            encode_into(Outgoing::Event(record.clone(), cursor.clone()), &mut buf).expect("encode");
            let decoded: SubscribeResponse = prost::Message::decode(&buf[..]).expect("decode");
            assert_eq!(
                decoded,
                SubscribeResponse {
                    message: Some(subscribe_response::Message::Event(event.clone())),
                    cursor: cursor.unwrap_or_default(),
                }
            );
        }
        // Encoded once: the second subscriber gets the very same bytes.
        assert_eq!(event_field(&record).as_ptr(), event_field(&record).as_ptr());
    }
}
