//! Bearer JWTs through the gateway's verifier (HS256 secret, and RS256/ES256 keys from
//! the test JWKS). Input `header.claims.signature`: the first two parts are taken as
//! raw JSON and base64url-encoded, so mutations reach the JSON parsers; the token is
//! tried as given (its signature rarely verifies) and signed with the HS256 secret (so
//! claim checks, iss/aud/exp/nbf/scope, see every shape). The whole input is also tried
//! as a token verbatim.
//!
//! The properties, checked on every input (a violation panics, which libFuzzer reports):
//! - no panic;
//! - only a token signed with a trusted key passes: whatever the verifier accepts has a
//!   signature that jsonwebtoken's own crypto verifies with the HS256 secret (or, for
//!   RS256/ES256, a key of the test JWKS); the fuzzed claims signed with another secret,
//!   or with no signature at all, never pass;
//! - a token signed with the secret whose header and claims are plainly valid (below)
//!   passes, as the identity `jwt:<sub>`.

#![no_main]

use std::sync::OnceLock;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use gateway::{config::JwtConfig, jwt::JwtVerifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, crypto, jwk::JwkSet};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::{Map, Value};

const SECRET: &str = "fuzzing-secret-of-at-least-32-bytes!!";
const NOT_THE_SECRET: &str = "another-secret-of-at-least-32-bytes!!";
const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "http://127.0.0.1:3001/mcp";

fn jwks_path() -> &'static str {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/jwt/jwks.json"
    )
}

fn verifier() -> &'static JwtVerifier {
    static V: OnceLock<JwtVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let config = JwtConfig {
            issuer: ISSUER.into(),
            audience: Some(AUDIENCE.into()),
            hs256_secret: Some(SECRET.into()),
            jwks_file: Some(jwks_path().into()),
            jwks_url: None,
        };
        JwtVerifier::new(&config, AUDIENCE.into()).expect("verifier")
    })
}

/// The public keys of the test JWKS, read independently of the verifier.
fn jwks_keys() -> &'static [DecodingKey] {
    static K: OnceLock<Vec<DecodingKey>> = OnceLock::new();
    K.get_or_init(|| {
        let text = std::fs::read_to_string(jwks_path()).expect("the test JWKS");
        let set: JwkSet = serde_json::from_str(&text).expect("a JWKS");
        set.keys
            .iter()
            .map(|jwk| DecodingKey::from_jwk(jwk).expect("a key"))
            .collect()
    })
}

/// Whether `token`'s signature verifies with a key the verifier trusts, by jsonwebtoken's
/// crypto directly (not by the verifier under test).
fn signed_by_a_trusted_key(token: &str) -> bool {
    let Some((message, signature)) = token.rsplit_once('.') else {
        return false;
    };
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return false;
    };
    let verifies = |key: &DecodingKey| {
        crypto::verify(signature, message.as_bytes(), key, header.alg).unwrap_or(false)
    };
    match header.alg {
        Algorithm::HS256 => verifies(&DecodingKey::from_secret(SECRET.as_bytes())),
        Algorithm::RS256 | Algorithm::ES256 => jwks_keys().iter().any(verifies),
        _ => false,
    }
}

/// Fails the run if the verifier accepts `token` without a trusted signature on it.
fn only_trusted_signatures_pass(token: &str) {
    if let Ok(identity) = verifier().verify(token) {
        assert!(
            signed_by_a_trusted_key(token),
            "accepted a token no trusted key signed (as {}): {token}",
            identity.name
        );
    }
}

/// A header with nothing but `alg` (and `typ`), each given once.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainHeader {
    alg: String,
    #[serde(default)]
    #[allow(dead_code)]
    typ: Option<String>,
}

/// Claims with nothing unusual, each given once (duplicates and other members are not
/// judged here).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainClaims {
    iss: String,
    aud: String,
    sub: String,
    exp: u64,
    #[serde(default)]
    #[allow(dead_code)]
    nbf: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    scope: Option<Value>,
}

/// The subject of `header` and `claims` when they are plainly valid for the verifier:
/// HS256, the right issuer and audience, a subject, an expiry well in the future (beyond
/// the 30 s leeway, within a century), a not-before (if any) well in the past, a
/// string scope (if any).
fn plainly_valid(header: &[u8], claims: &[u8]) -> Option<String> {
    let h: PlainHeader = serde_json::from_slice(header).ok()?;
    let members: Map<String, Value> = serde_json::from_slice(header).ok()?;
    if h.alg != "HS256" || members.get("typ").is_some_and(|t| !t.is_string()) {
        return None;
    }
    let c: PlainClaims = serde_json::from_slice(claims).ok()?;
    let members: Map<String, Value> = serde_json::from_slice(claims).ok()?;
    let now = jsonwebtoken::get_current_timestamp();
    let nbf_ok = match members.get("nbf") {
        None => true,
        Some(nbf) => nbf.as_u64().is_some_and(|t| t + 120 < now),
    };
    let scope_ok = members.get("scope").is_none_or(Value::is_string);
    let exp_ok = c.exp > now + 120 && c.exp < now + 100 * 365 * 86_400;
    (c.iss == ISSUER && c.aud == AUDIENCE && !c.sub.is_empty() && exp_ok && nbf_ok && scope_ok)
        .then_some(c.sub)
}

fuzz_target!(|data: &[u8]| {
    let v = verifier();
    if let Ok(text) = std::str::from_utf8(data) {
        only_trusted_signatures_pass(text);
    }
    let mut parts = data.splitn(3, |b| *b == b'.');
    let (header_json, claims_json) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let header = URL_SAFE_NO_PAD.encode(header_json);
    let claims = URL_SAFE_NO_PAD.encode(claims_json);
    let signature = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    only_trusted_signatures_pass(&format!("{header}.{claims}.{signature}"));

    let message = format!("{header}.{claims}");
    // Unsigned, or signed with another secret: never accepted, whatever the claims.
    for forged in [
        format!("{message}."),
        format!(
            "{message}.{}",
            crypto::sign(
                message.as_bytes(),
                &EncodingKey::from_secret(NOT_THE_SECRET.as_bytes()),
                Algorithm::HS256
            )
            .expect("HMAC signs anything")
        ),
    ] {
        assert!(
            v.verify(&forged).is_err(),
            "accepted a forged token: {forged}"
        );
    }
    // Signed with the secret: accepted when plainly valid, and only when trusted.
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let signed =
        crypto::sign(message.as_bytes(), &key, Algorithm::HS256).expect("HMAC signs anything");
    let token = format!("{message}.{signed}");
    only_trusted_signatures_pass(&token);
    if let Some(sub) = plainly_valid(header_json, claims_json) {
        match v.verify(&token) {
            Ok(identity) => assert_eq!(&*identity.name, format!("jwt:{sub}")),
            Err(why) => panic!("refused a valid token signed with the secret ({why}): {token}"),
        }
    }
});
