//! Xero: any bytes either parse as a delivery whose events all map, or are refused cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_services::{webhook::signature, xero::webhook as xero};

fuzz_target!(|data: &[u8]| {
    let keys = [b"XERO_FUZZ_KEY".to_vec()];
    assert!(signature::verify_b64(&keys, &[data], &signature::sign_b64(&keys[0], &[data])));
    if let Ok(delivery) = serde_json::from_slice::<xero::Body>(data) {
        for e in &delivery.events {
            let event = e.event();
            assert_eq!(event.key, e.resource_id);
            assert!(e.idempotency_key().starts_with("xero:"));
        }
    }
});
