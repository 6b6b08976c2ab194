//! The public contract: another toolchain can use proto/ alone, and docs/events.md
//! is exactly what the catalog in proto/ generates.

use std::{path::Path, process::Command};

use switchyard::{auth::Role, catalog::Catalog};
use switchyard_tests::Server;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root")
}

/// Fails when the generated file at `rel` differs from `generated` (SWITCHYARD_BLESS=1 rewrites it).
fn generated_file_is_current(rel: &str, generated: &str, command: &str) {
    let path = repo().join(rel);
    if std::env::var_os("SWITCHYARD_BLESS").is_some() {
        std::fs::write(&path, generated).expect("write the generated file");
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(on_disk == generated, "{rel} is stale: run `{command} > {rel}` (or SWITCHYARD_BLESS=1 cargo test)");
}

#[test]
fn docs_events_md_is_generated_from_the_catalog() {
    generated_file_is_current("docs/events.md", &Catalog::global().to_markdown(), "cargo run -q -- catalog");
}

#[test]
fn client_d_ts_is_generated_from_the_catalog() {
    let generated = switchyard_bridge::cli::typescript::client_types();
    generated_file_is_current("bridge/assets/client.d.ts", &generated, "cargo run -q -- catalog --typescript");
    for name in ["'shopify:order-created': Order;", "export interface Money {", "amount?: string;"] {
        assert!(generated.contains(name), "{name} missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpc_client_built_from_proto_alone_publishes_and_subscribes() {
    let server = Server::start().await;
    let token = server.token("acme", Role::Publish, &[]);
    let target = server.grpc_url.trim_start_matches("http://").to_owned();
    let proto = repo().join("proto");
    let script = repo().join("tests/python/cross_client.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg(script).arg(proto).arg(target).arg(token).output().expect("python3 runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "python client failed (scripts/test installs grpcio-tools):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("an id");
    assert_eq!(server.running.bus.log().stats().head.get(), id);
    server.stop().await;
}
