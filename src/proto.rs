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
