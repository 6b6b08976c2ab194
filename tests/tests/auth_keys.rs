//! Tokens signed by an outside issuer: ES256 verified with a PEM public key and with a JWKS
//! document; and CORS limited to the configured origins.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use switchyard::auth::{Claims, Role, TenantScope, Verifier, now_secs};
use switchyard_tests::Server;

fn claims() -> Claims {
    Claims {
        sub: Some("idp-user".into()),
        tenant: "acme".into(),
        channels: vec![],
        role: Role::Subscribe,
        exp: now_secs() + 60,
        nbf: None,
        jti: None,
    }
}

#[test]
fn es256_tokens_verify_with_a_pem_public_key_and_with_jwks() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims(),
        &EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();

    let mut pem = Verifier::hs256(b"an-unrelated-hs256-secret-0123456789");
    pem.add_public_pem(key.public_key_pem().as_bytes()).unwrap();
    let who = pem.verify(&token).unwrap();
    assert_eq!(who.tenant, TenantScope::One("acme".parse().unwrap()));

    // The same key as a JWKS document: the uncompressed point is 0x04 || X || Y.
    let point = key.public_key_raw();
    assert_eq!(point.len(), 65);
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])}]});
    let mut jwk = Verifier::hs256(b"an-unrelated-hs256-secret-0123456789");
    jwk.add_jwks(&jwks.to_string()).unwrap();
    assert!(jwk.verify(&token).is_ok());

    // Another key's signature, and the HS256 verifier alone, refuse it.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut wrong = Verifier::hs256(b"an-unrelated-hs256-secret-0123456789");
    wrong.add_public_pem(other.public_key_pem().as_bytes()).unwrap();
    assert!(wrong.verify(&token).is_err());
    assert!(Verifier::hs256(b"an-unrelated-hs256-secret-0123456789").verify(&token).is_err());
}

#[tokio::test]
async fn cors_answers_only_configured_origins() {
    let server = Server::start_with(|c| c.auth.cors_origins = vec!["https://ops.example.com".into()]).await;
    let preflight = |origin: &'static str| {
        let url = format!("{}/api/events", server.http_url);
        async move {
            switchyard_tests::http()
                .request(reqwest::Method::OPTIONS, url)
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "authorization,content-type")
                .send()
                .await
                .unwrap()
        }
    };
    let ok = preflight("https://ops.example.com").await;
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://ops.example.com");
    let other = preflight("https://evil.example.net").await;
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // With CORS configured, SSE goes through hyper so its responses carry the headers too.
    let token = server.token("acme", Role::Subscribe, &[]);
    let r = switchyard_tests::http()
        .get(format!("{}/api/sse/alerts", server.http_url))
        .bearer_auth(token)
        .header("origin", "https://ops.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://ops.example.com");
    server.stop().await;
}
