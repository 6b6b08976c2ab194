//! Unleashed: timestamp and signature headers from the input, then the body; verification and
//! mapping never panic, and a correct signature inside the window always verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_services::{unleashed::webhook as unleashed, webhook::signature};

fuzz_target!(|data: &[u8]| {
    let keys = [b"unleashed-fuzz-key".to_vec()];
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (ts, sig, body) = (parts.next(), parts.next(), parts.next().unwrap_or_default());
    let _ = unleashed::verify(&keys, sig, ts, body.as_bytes(), 1_700_000_000);
    let good = signature::sign_b64(&keys[0], &[b"1700000000", b".", body.as_bytes()]);
    assert!(unleashed::verify(&keys, Some(&good), Some("1700000000"), body.as_bytes(), 1_700_000_100));
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some((_, key)) = unleashed::events(&value) {
            assert!(key.starts_with("unleashed:"));
        }
    }
});
