//! Generated code for `proto/switchyard/v1`: messages, the EventBus client and
//! server, proto3 JSON (serde) impls and the encoded descriptor set.
#![allow(clippy::all, unreachable_pub, missing_docs)]

pub mod v1 {
    tonic::include_proto!("switchyard.v1");
    include!(concat!(env!("OUT_DIR"), "/switchyard.v1.serde.rs"));
    include!(concat!(env!("OUT_DIR"), "/payload_field.rs"));
}

/// `google.protobuf.Timestamp` as the generated code uses it (for `since` and event times).
pub use pbjson_types::Timestamp;

/// Every file of proto/ (with its imports), encoded: for server reflection and the catalog.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/switchyard_descriptor.bin"));

/// A payload's message as type `M`, for code that handles one message type whatever event
/// carries it (every `<source>:sync-status` is a `SyncStatus`). The caller knows the payload's
/// message type from the catalog (`EventSpec::message`); bytes of another type decode wrongly
/// or not at all.
pub fn payload_as<M: prost::Message + Default>(payload: &v1::event::Payload) -> Option<M> {
    let mut buf = Vec::with_capacity(payload.encoded_len());
    payload.encode(&mut buf);
    let mut rest = &buf[..];
    // The oneof field's key, then its length: what follows is the message.
    prost::encoding::decode_key(&mut rest).ok()?;
    prost::encoding::decode_varint(&mut rest).ok()?;
    M::decode(rest).ok()
}

#[cfg(test)]
mod tests {
    use super::v1::{SyncStatus, event::Payload};

    #[test]
    fn a_payload_reads_as_its_message_type() {
        let status = SyncStatus { ok: false, error: "HTTP 503".into(), run_id: "r1".into(), ..Default::default() };
        let got: SyncStatus = super::payload_as(&Payload::XeroSyncStatus(status.clone())).unwrap();
        assert_eq!(got, status);
    }
}
