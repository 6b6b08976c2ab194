//! Signing secrets at rest: an endpoint's secret must be usable (HMAC needs the secret itself,
//! so it cannot be stored hashed) but a copy of the store must not hand it out. Each secret is
//! sealed with ChaCha20-Poly1305 under a key derived from the server's own secret file, which
//! never enters the store.

use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    ChaCha20Poly1305, Key, Nonce,
    aead::{Aead, KeyInit},
};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::signature::SigningSecret;

/// Seals and opens secrets with one key.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a stored signing secret cannot be opened with this server's secret (was the secret file replaced?)")]
pub struct Unsealable;

impl Sealer {
    /// The key: HMAC-SHA256 of a fixed label under the server secret (so the token-signing key
    /// itself is never used as a cipher key).
    pub fn new(server_secret: &[u8]) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(server_secret).expect("HMAC takes any key length");
        mac.update(b"switchyard outbound signing secrets v1");
        let key = mac.finalize().into_bytes();
        Self { cipher: ChaCha20Poly1305::new(&Key::from(<[u8; 32]>::from(key))) }
    }

    /// `base64(nonce ‖ ciphertext)`.
    pub fn seal(&self, secret: &SigningSecret) -> String {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self.cipher.encrypt(&Nonce::from(nonce), secret.bytes()).expect("sealing cannot fail");
        STANDARD.encode([nonce.as_slice(), &sealed].concat())
    }

    pub fn open(&self, sealed: &str) -> Result<SigningSecret, Unsealable> {
        let raw = STANDARD.decode(sealed).map_err(|_| Unsealable)?;
        if raw.len() < 12 {
            return Err(Unsealable);
        }
        let (nonce, body) = raw.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| Unsealable)?;
        let bytes = self.cipher.decrypt(&Nonce::from(nonce), body).map_err(|_| Unsealable)?;
        SigningSecret::parse(&format!("whsec_{}", STANDARD.encode(bytes))).ok_or(Unsealable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_the_same_server_secret() {
        let secret = SigningSecret::generate();
        let sealed = Sealer::new(b"server").seal(&secret);
        assert!(!sealed.contains(&secret.reveal()[6..]), "the stored form is not the secret");
        assert_eq!(Sealer::new(b"server").open(&sealed).unwrap(), secret);
        assert!(Sealer::new(b"other").open(&sealed).is_err());
        assert!(Sealer::new(b"server").open("AAAA").is_err());
    }
}
