//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): what lets a receiver
//! trust a delivery without trusting the network, and refuse a replayed one.
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}`, HMAC-SHA256 with the
//! secret's bytes; `webhook-signature` carries `v1,<base64>` once per live secret, separated
//! by spaces, so a receiver holding either secret accepts during a rotation.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// The prefix Standard Webhooks libraries expect on a secret.
const PREFIX: &str = "whsec_";

/// A signing secret: `whsec_` and the base64 of 32 random bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

impl SigningSecret {
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Parses the `whsec_…` form.
    pub fn parse(s: &str) -> Option<Self> {
        let bytes = STANDARD.decode(s.strip_prefix(PREFIX)?).ok()?;
        (24..=64).contains(&bytes.len()).then_some(Self(bytes))
    }

    /// The form shown to the endpoint's owner (once) and given to their verifier.
    pub fn reveal(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// `v1,<base64 signature>` of one delivery.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: one signature per live secret.
pub fn header(secrets: &[SigningSecret], id: &str, timestamp: u64, body: &[u8]) -> String {
    secrets.iter().map(|s| s.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // The specification's example (standard-webhooks/spec, "Verifying").
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_round_trip_and_every_live_one_signs() {
        let (a, b) = (SigningSecret::generate(), SigningSecret::generate());
        assert_eq!(SigningSecret::parse(&a.reveal()), Some(a.clone()));
        assert!(SigningSecret::parse("whsec_c2hvcnQ=").is_none(), "too short to be a secret");
        let h = header(&[a.clone(), b.clone()], "1", 2, b"x");
        assert_eq!(h, format!("{} {}", a.sign("1", 2, b"x"), b.sign("1", 2, b"x")));
        assert!(format!("{a:?}").contains("***"));
    }
}
