//! Amazon over SNS: message parsing, URL checks, the string to sign, RSA verification and
//! SP-API unwrapping never panic; no URL that passes the check leaves AWS's SNS hosts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_services::amazon::{notification as amazon, sns};

const CERT: &[u8] = include_bytes!("../../tests/fixtures/sns/signing.pem");

fuzz_target!(|data: &[u8]| {
    static KEY: std::sync::OnceLock<rsa::RsaPublicKey> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| sns::public_key(CERT).expect("fixture certificate"));
    let _ = sns::public_key(data);
    if let Ok(text) = std::str::from_utf8(data) {
        for field in ["SigningCertURL", "SubscribeURL"] {
            if let Ok(url) = sns::check_url(field, text) {
                let host = url.host_str().unwrap_or_default();
                assert!(
                    host.starts_with("sns.")
                        && (host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn"))
                );
                assert_eq!(url.scheme(), "https");
            }
        }
    }
    if let Ok(m) = serde_json::from_slice::<sns::Message>(data) {
        let _ = sns::string_to_sign(&m);
        assert!(sns::verify_with(key, &m).is_err(), "no fuzzer finds an RSA signature");
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&m.message) {
            if let Some(n) = amazon::notification(&value) {
                let _ = n.events(10, "webhook:amazon");
            }
        }
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Some(n) = amazon::notification(&value) {
            assert!(!n.events(10, "webhook:amazon").is_empty());
        }
    }
});
