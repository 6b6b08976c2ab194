//! Compiles proto/ with protox (pure Rust: no system protoc) into
//! - prost messages + tonic client/server (`switchyard.v1.rs`),
//! - pbjson serde impls for proto3 JSON (`switchyard.v1.serde.rs`),
//! - the encoded descriptor set, for server reflection and the run-time catalog,
//! - `payload_field.rs`: the oneof case → field number map the catalog keys on.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "proto/switchyard/v1/options.proto",
    "proto/switchyard/v1/events.proto",
    "proto/switchyard/v1/bus.proto",
    "proto/switchyard/v1/outbound.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;
    // Encoded by protox itself: prost_types would drop the custom options the catalog lives in.
    let fds_bytes = compiler.encode_file_descriptor_set();
    let fds = compiler.file_descriptor_set();
    fs::write(out.join("switchyard_descriptor.bin"), &fds_bytes)?;

    tonic_prost_build::configure()
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds.clone())?;

    pbjson_build::Builder::new()
        .register_descriptors(&fds_bytes)?
        .extern_path(".google.protobuf", "::pbjson_types")
        .build(&[".switchyard"])?;

    fs::write(out.join("payload_field.rs"), payload_field_map(&fds))?;
    Ok(())
}

/// prost's oneof enums do not expose field numbers; the catalog is keyed by them.
fn payload_field_map(fds: &prost_types::FileDescriptorSet) -> String {
    let event = fds
        .file
        .iter()
        .flat_map(|f| f.message_type.iter())
        .find(|m| m.name() == "Event")
        .expect("events.proto defines Event");
    let mut arms = String::new();
    for field in event.field.iter().filter(|f| f.oneof_index.is_some()) {
        let variant: String = field
            .name()
            .split('_')
            .map(|part| {
                let mut chars = part.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                    None => String::new(),
                }
            })
            .collect();
        arms.push_str(&format!("            Self::{variant}(_) => {},\n", field.number()));
    }
    format!(
        "impl event::Payload {{\n    /// The payload's field number in `Event.payload`: the catalog's key.\n    pub fn field_number(&self) -> u32 {{\n        match self {{\n{arms}        }}\n    }}\n}}\n"
    )
}
