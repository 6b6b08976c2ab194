//! Shopify: any body verifies against its own HMAC and no other; any JSON maps to events
//! for every topic without panicking, and order ids survive as text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_services::{shopify::webhook as shopify, webhook::signature};

const LIMITS: shopify::Thresholds = shopify::Thresholds { large_order_total: 1000.0, low_stock: 10 };

fuzz_target!(|data: &[u8]| {
    let keys = [b"fuzz-secret".to_vec()];
    let good = signature::sign_b64(&keys[0], &[data]);
    assert!(signature::verify_b64(&keys, &[data], &good));
    // The body itself, as a header value: verifies only by a 2^-256 accident.
    assert!(!signature::verify_b64(&keys, &[data], &String::from_utf8_lossy(data)) || data.is_empty());
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        for topic in ["orders/create", "orders/updated", "inventory_levels/update", "products/update", ""] {
            let events = shopify::events(topic, "fuzz.myshopify.com", &value, data, &LIMITS);
            assert!(!events.is_empty() && events.len() <= 2);
        }
    }
});
