//! Transport: HTTPS with HTTP/2 (ALPN) and HTTP/1.1 for SSE, and the write-stall guard
//! that closes connections whose client stopped reading entirely.

use std::{sync::Arc, time::Duration};

use http_body_util::BodyExt;
use serde_json::Value;
use switchyard::{auth::Role, proto::v1::PublishRequest};
use switchyard_tests::{PATIENCE, Server, events, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{
    TlsConnector,
    rustls::{self, pki_types::ServerName},
};

fn tls_client(cert_der: Vec<u8>, alpn: &[u8]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der.into()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_over_tls_with_http2_and_http1() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let server = Server::start_with(|c| {
        c.tls.cert_file = Some(cert_path.clone());
        c.tls.key_file = Some(key_path.clone());
    })
    .await;
    let addr = server.running.http_addr;
    let token = server.token("acme", Role::Subscribe, &[]);
    let name = ServerName::try_from("localhost").unwrap();

    // HTTP/2, as a browser gets it: one connection, several SSE streams multiplexed.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tls_client(cert.cert.der().to_vec(), b"h2").connect(name.clone(), tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN picked HTTP/2");
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut bodies = Vec::new();
    for channel in ["alerts", "dashboard"] {
        let req = hyper::Request::get(format!("https://localhost/api/sse/{channel}"))
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = h2.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        let hsts = resp.headers().get("strict-transport-security").map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(hsts.as_deref(), Some("max-age=31536000"), "HSTS once TLS is on");
        bodies.push(resp.into_body());
    }
    let alert =
        server.grpc("acme", Role::Publish).await.publish(PublishRequest { event: Some(events::alert("tls")) }).await;
    let id = alert.unwrap().into_inner().id;
    let mut text = String::new();
    tokio::time::timeout(PATIENCE, async {
        while !text.contains(&format!("id: {id}\n")) {
            let frame = bodies[0].frame().await.unwrap().unwrap();
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    })
    .await
    .expect("the event arrives over HTTP/2");

    // HTTP/1.1 over TLS still works for clients that do not speak HTTP/2.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tls_client(cert.cert.der().to_vec(), b"http/1.1").connect(name, tcp).await.unwrap();
    tls.write_all(
        format!(
            "GET /api/sse/alerts?lastEventId=0 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 8192];
    let mut got = String::new();
    tokio::time::timeout(PATIENCE, async {
        while !got.contains(&format!("id: {id}\n")) {
            let n = tls.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .expect("the event is replayed over HTTP/1.1");
    assert!(got.starts_with("HTTP/1.1 200"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_after_the_stall_timeout() {
    let server = Server::start_with(|c| c.sse.stall_timeout_secs = 1).await;
    let token = server.token("acme", Role::Subscribe, &[]);
    let mut stalled = tokio::net::TcpStream::connect(server.running.http_addr).await.unwrap();
    stalled
        .write_all(
            format!("GET /api/sse/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let admin = server.token("acme", Role::Admin, &[]);
    let status = || {
        let (url, admin) = (format!("{}/api/sse/status", server.http_url), admin.clone());
        async move {
            let v: Value =
                switchyard_tests::http().get(url).bearer_auth(admin).send().await.unwrap().json().await.unwrap();
            v["connections"]["current"].as_u64().unwrap()
        }
    };
    wait_for("the stalled client to be connected", || async { (status().await == 1).then_some(()) }).await;
    // Far more than the socket buffers hold (but less than a hub ring), so writes stall.
    let mut c = server.grpc("acme", Role::Publish).await;
    let big = "x".repeat(8000);
    for b in 0..8 {
        let batch: Vec<_> =
            (0..250).map(|i| PublishRequest { event: Some(events::alert(&format!("{b}-{i}-{big}"))) }).collect();
        let mut acks = c.publish_stream(futures::stream::iter(batch)).await.unwrap().into_inner();
        while futures::StreamExt::next(&mut acks).await.is_some() {}
    }
    wait_for("the server to drop the stalled connection", || async { (status().await == 0).then_some(()) }).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_connections_must_show_a_preface_and_are_capped() {
    let server = Server::start_with(|c| {
        c.sse.max_pending_connections = 50;
        c.grpc.max_concurrent_streams = 100;
    })
    .await;
    let addr = server.running.grpc_addr.expect("gRPC is served");
    // Past the shared cap, silent connections are closed at once, well before the preface timeout.
    let (silent, closed_at_once) = switchyard_tests::silent_connections(addr, 100).await;
    assert!(closed_at_once >= 50, "only {closed_at_once} of 100 closed at once with a cap of 50");
    drop(silent);

    // A real client is served once the slots are free again.
    let id = wait_for("a gRPC slot", || async {
        let mut c = server.grpc("acme", Role::Publish).await;
        c.publish(PublishRequest { event: Some(events::alert("after the flood")) })
            .await
            .ok()
            .map(|r| r.into_inner().id)
    })
    .await;
    assert!(id > 0, "published with an id");

    // The server's HTTP/2 SETTINGS cap the calls one connection may hold open.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(head[3], 0x4, "the server's first frame is SETTINGS");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    let settings: Vec<(u16, u32)> = body
        .chunks_exact(6)
        .map(|c| (u16::from_be_bytes([c[0], c[1]]), u32::from_be_bytes([c[2], c[3], c[4], c[5]])))
        .collect();
    assert!(settings.contains(&(0x3, 100)), "grpc.max_concurrent_streams in {settings:?}");
    assert!(settings.contains(&(0x6, 16 * 1024)), "MAX_HEADER_LIST_SIZE 16 KiB in {settings:?}");

    // A connection that never sends its preface is closed after the header timeout.
    let mut quiet = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(PATIENCE + Duration::from_secs(15), quiet.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed, not held: {read:?}");
    // `s` is still open and ignores GOAWAY: the stop waits for it a bounded time only.
    tokio::time::timeout(PATIENCE, server.stop()).await.expect("an idle client cannot hold the stop up");
    drop(s);
}

#[test]
fn unreadable_tls_files_are_a_usage_error_found_before_anything_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tls.toml");
    std::fs::write(&config, "[tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n")
        .unwrap();
    let data = dir.path().join("data");
    let out = std::process::Command::new(switchyard_tests::binary())
        .args(["serve", "--data-dir", data.to_str().unwrap(), "--config", config.to_str().unwrap()])
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("tls"), "{stderr}");
    assert!(!data.join("events.redb").exists(), "the log was not opened");
}

#[test]
fn unreadable_or_bad_key_files_are_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key").unwrap();
    for (name, body) in [
        ("keys.toml", "[auth]\npublic_keys = [\"/nonexistent/key.pem\"]\n".to_owned()),
        ("bad.toml", format!("[auth]\npublic_keys = [{:?}]\n", garbage.display().to_string())),
        ("jwks.toml", format!("[auth]\njwks_file = {:?}\n", garbage.display().to_string())),
    ] {
        let config = dir.path().join(name);
        std::fs::write(&config, body).unwrap();
        let out = std::process::Command::new(switchyard_tests::binary())
            .args(["serve", "--data-dir", dir.path().join("data").to_str().unwrap(), "--config"])
            .arg(&config)
            .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{name}: {stderr}");
        assert!(stderr.contains("auth."), "{name} names the key: {stderr}");
    }
}
