//! Bearer JWTs through the gateway's verifier (HS256 secret, and RS256/ES256 keys from
//! the test JWKS). Input `header.claims.signature`: the first two parts are taken as
//! raw JSON and base64url-encoded, so mutations reach the JSON parsers; the token is
//! tried as given (its signature rarely verifies) and signed with the HS256 secret (so
//! claim checks, iss/aud/exp/nbf/scope, see every shape). The whole input is also tried
//! as a token verbatim. No panic, and only a token signed with the secret can pass.

#![no_main]

use std::sync::OnceLock;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use gateway::{config::JwtConfig, http::jwt::JwtVerifier};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzzing-secret-of-at-least-32-bytes!!";

fn verifier() -> &'static JwtVerifier {
    static V: OnceLock<JwtVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let jwks = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/jwt/jwks.json"
        );
        let config = JwtConfig {
            issuer: "https://issuer.example".into(),
            audience: Some("http://127.0.0.1:3001/mcp".into()),
            hs256_secret: Some(SECRET.into()),
            jwks_file: Some(jwks.into()),
            jwks_url: None,
        };
        JwtVerifier::new(&config, "http://127.0.0.1:3001/mcp".into()).expect("verifier")
    })
}

fuzz_target!(|data: &[u8]| {
    let v = verifier();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = v.verify(text);
    }
    let mut parts = data.splitn(3, |b| *b == b'.');
    let header = URL_SAFE_NO_PAD.encode(parts.next().unwrap_or_default());
    let claims = URL_SAFE_NO_PAD.encode(parts.next().unwrap_or_default());
    let signature = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let _ = v.verify(&format!("{header}.{claims}.{signature}"));
    let message = format!("{header}.{claims}");
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    if let Ok(signed) = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256) {
        let _ = v.verify(&format!("{message}.{signed}"));
    }
});
