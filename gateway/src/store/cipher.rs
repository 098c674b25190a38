//! Secrets at rest in the shared store, sealed with the cluster key: ChaCha20-Poly1305
//! (ring) under a key derived from `cluster_key` by HKDF-SHA256, a random nonce per
//! value, and the row's identity as associated data, so a sealed value moved to another
//! row (or another column) no longer opens.
//!
//! Invariant: no upstream credential or stdio command reaches PostgreSQL unsealed.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{aead, hkdf, rand::SecureRandom as _};

/// What every sealed value starts with (the format's version).
const PREFIX: &str = "v1.";

/// A 32-byte key for `purpose`, derived from the cluster's `secret` (HKDF-SHA256 from
/// the same [`prk`] as [`Cipher`], another info string): what every replica must seal alike and
/// open alike (a 2026-07-28 client's `requestState`, task ids) without sharing the
/// store's key.
pub fn derive(secret: &str, purpose: &[u8]) -> [u8; 32] {
    struct Len;
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            32
        }
    }
    let info: &[&[u8]] = &[purpose];
    let mut key = [0u8; 32];
    prk(secret)
        .expand(info, Len)
        .and_then(|okm| okm.fill(&mut key))
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    key
}

/// HKDF-SHA256's pseudorandom key of the cluster's `secret`, which every key derived
/// from it starts from.
fn prk(secret: &str) -> hkdf::Prk {
    hkdf::Salt::new(hkdf::HKDF_SHA256, b"mcp-federation cluster_key v1").extract(secret.as_bytes())
}

pub struct Cipher {
    key: aead::LessSafeKey,
    rng: ring::rand::SystemRandom,
}

impl Cipher {
    /// The cipher of `secret` (the configuration's `cluster_key`).
    pub fn new(secret: &str) -> Self {
        let prk = prk(secret);
        let info: &[&[u8]] = &[b"store secrets"];
        let okm = prk
            .expand(info, &aead::CHACHA20_POLY1305)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self {
            key: aead::LessSafeKey::new(aead::UnboundKey::from(okm)),
            rng: ring::rand::SystemRandom::new(),
        }
    }

    /// `plain` sealed, bound to `context` (which must be given again to open it).
    pub fn seal(&self, plain: &str, context: &str) -> String {
        let mut nonce = [0u8; aead::NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the system's random source works");
        let mut data = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(context.as_bytes()),
                &mut data,
            )
            .expect("sealing a value in memory cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// The value `sealed` holds, if this key sealed it for `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Option<String> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed.strip_prefix(PREFIX)?).ok()?;
        if bytes.len() < aead::NONCE_LEN + aead::CHACHA20_POLY1305.tag_len() {
            return None;
        }
        let (nonce, data) = bytes.split_at(aead::NONCE_LEN);
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, aead::Aad::from(context.as_bytes()), &mut data)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_by_purpose_and_secret_and_repeat_for_both() {
        let a = derive("a cluster key of some length", b"requestState");
        assert_eq!(a, derive("a cluster key of some length", b"requestState"));
        assert_ne!(a, derive("a cluster key of some length", b"tasks"));
        assert_ne!(a, derive("another cluster key entirely", b"requestState"));
    }

    #[test]
    fn a_value_opens_only_with_its_key_and_its_context() {
        let cipher = Cipher::new("a cluster key of some length");
        let sealed = cipher.seal(r#"{"bearer":"s3cret"}"#, "auth\0svc\0http://h/mcp");
        assert!(!sealed.contains("s3cret"), "{sealed}");
        assert_eq!(
            cipher.open(&sealed, "auth\0svc\0http://h/mcp").as_deref(),
            Some(r#"{"bearer":"s3cret"}"#)
        );
        // Moved to another row, or opened with another cluster's key: nothing.
        assert_eq!(cipher.open(&sealed, "auth\0svc\0http://other/mcp"), None);
        assert_eq!(
            Cipher::new("another cluster's key").open(&sealed, "auth\0svc\0http://h/mcp"),
            None
        );
        // Two seals of one value differ (a fresh nonce each), and garbage opens to nothing.
        assert_ne!(
            sealed,
            cipher.seal(r#"{"bearer":"s3cret"}"#, "auth\0svc\0http://h/mcp")
        );
        assert_eq!(cipher.open("v1.AAAA", "x"), None);
        assert_eq!(cipher.open("plain text", "x"), None);
    }
}
