//! Standard Webhooks: id, timestamp and signature list from the input; verification never
//! panics, and the input's own correct signature always verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_bridge::webhooks::{signature, standard};

fuzz_target!(|data: &[u8]| {
    let key = standard::secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid secret");
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let (id, ts, sigs) = (parts.next(), parts.next(), parts.next());
    let body = parts.next().unwrap_or_default().as_bytes();
    let _ = standard::verify(std::slice::from_ref(&key), id, ts, sigs, body, 1_700_000_000);
    let _ = standard::secret_key(&text);
    let id = id.unwrap_or_default();
    let good = format!("v1,{}", signature::sign_b64(&key, &[id.as_bytes(), b".1700000000.", body]));
    let with_noise = format!("{} {good}", sigs.unwrap_or_default());
    assert_eq!(standard::verify(&[key], Some(id), Some("1700000000"), Some(&with_noise), body, 1_700_000_000), Ok(()));
});
