//! HMAC-SHA256 over raw bytes, compared in constant time. Every webhook scheme here is a
//! variation of this: which bytes are signed, which key, which header.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Whether `signature_b64` (standard base64) is the HMAC of `parts` under any of `keys`.
/// Malformed base64 is simply a mismatch. `verify_slice` compares in constant time.
pub fn verify_b64(keys: &[Vec<u8>], parts: &[&[u8]], signature_b64: &str) -> bool {
    let Ok(sig) = STANDARD.decode(signature_b64.trim()) else { return false };
    keys.iter().any(|key| {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
        for p in parts {
            mac.update(p);
        }
        mac.verify_slice(&sig).is_ok()
    })
}

/// Standard base64 of an HMAC, for signing (tests, `switchyard webhook sign`).
pub fn sign_b64(key: &[u8], parts: &[&[u8]]) -> String {
    STANDARD.encode(hmac_sha256(key, parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shopify_vector_from_shopifys_own_test_suite() {
        // Shopify/shopify-app-js validate.test.ts: secret test_secret_key, body {"foo": "bar"}.
        let keys = vec![b"test_secret_key".to_vec()];
        assert!(verify_b64(&keys, &[br#"{"foo": "bar"}"#], "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g="));
        assert!(
            !verify_b64(&keys, &[br#"{"foo":"bar"}"#], "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g="),
            "re-serialised JSON must fail"
        );
        assert!(!verify_b64(&keys, &[br#"{"foo": "bar"}"#], "not base64!"));
    }

    #[test]
    fn xero_vector_key_used_as_its_own_bytes() {
        let keys = vec![b"XERO_TEST_WEBHOOK_KEY_do_not_use".to_vec()];
        let body = br#"{"events":[],"firstEventSequence":0,"lastEventSequence":0,"entropy":"S0m3r4Nd0mt3xt"}"#;
        assert!(verify_b64(&keys, &[body], "8FGFLY3WTjgQR66E3X/DqyFUvnGIzARcPJHaZCLBeDQ="));
    }

    #[test]
    fn any_of_several_keys_matches_for_rotation() {
        let keys = vec![b"old".to_vec(), b"new".to_vec()];
        let sig = sign_b64(b"new", &[b"body"]);
        assert!(verify_b64(&keys, &[b"body"], &sig));
        assert!(!verify_b64(&keys[..1], &[b"body"], &sig));
    }
}
