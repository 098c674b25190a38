//! JWT bearer tokens (`jwt` in the configuration): HS256 with a shared secret, RS256 and
//! ES256 with keys from a JWKS file or URL. The issuer, the audience (the gateway's own
//! resource URL unless configured), the expiry and not-before are enforced, with 30 s
//! of leeway; the token's algorithm must be one its key is for (no algorithm confusion).
//! The `scope` claim (space-separated) gives the scopes; `sub`, which every token must
//! have, names the identity (`jwt:<sub>`), which MCP sessions are bound to. The gateway
//! understands no JWS extension, so a token whose header has `crit` is refused
//! (RFC 7515, 4.1.11).
//!
//! Invariant: a token is accepted only with a valid signature by a configured key, the
//! configured issuer and audience, and no unknown `crit` extension.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation, decode, decode_header,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm},
};
use serde::{Deserialize, Serialize};

use crate::vocab::{Identity, Invalid, Scopes};

/// Where JWTs come from and what they must say.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry; default: `public_url` + `/mcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// HS256 shared secret (32 bytes or more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hs256_secret: Option<String>,
    /// RS256/ES256 public keys, a JWKS file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// RS256/ES256 public keys, a JWKS document fetched (and refreshed every 5 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
}

/// A verification key and the algorithm it is for.
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Verifies JWTs as configured.
pub struct JwtVerifier {
    issuer: String,
    audience: String,
    hs256: Option<DecodingKey>,
    keys: ArcSwap<Vec<Key>>,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

impl JwtVerifier {
    /// From the configuration; `audience` is the default when none is configured. Keys
    /// from `jwks_file` are read now; from `jwks_url`, by [`Self::refresh_from`].
    pub fn new(config: &JwtConfig, audience: String) -> Result<Self, Invalid> {
        let keys = match &config.jwks_file {
            Some(path) => load_file(path)?,
            None => Vec::new(),
        };
        Ok(Self {
            issuer: config.issuer.clone(),
            audience: config.audience.clone().unwrap_or(audience),
            hs256: config
                .hs256_secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.as_bytes())),
            keys: ArcSwap::from_pointee(keys),
        })
    }

    /// Keeps the keys of `url` (a JWKS document) current: now, then every `every`.
    pub async fn refresh_from(self: Arc<Self>, url: String, every: Duration) {
        let http = service_kit::client::http_client(Duration::from_secs(10));
        loop {
            match fetch(&http, &url).await {
                Ok(keys) => self.keys.store(Arc::new(keys)),
                Err(e) => tracing::warn!(%url, "cannot read the JWKS: {e}"),
            }
            tokio::time::sleep(every).await;
        }
    }

    /// The identity a valid token stands for, or why it is not valid.
    pub fn verify(&self, token: &str) -> Result<Identity, Invalid> {
        let header = decode_header(token).map_err(|_| "malformed token".to_string())?;
        if header.crit.is_some() || header_has_crit(token) {
            return Err(
                "the token's header lists critical extensions the gateway does not understand"
                    .into(),
            );
        }
        let keys = self.keys.load();
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            alg => keys
                .iter()
                .find(|k| {
                    k.alg == alg
                        && (header.kid.is_none() || k.kid.as_deref() == header.kid.as_deref())
                })
                .map(|k| &k.key),
        }
        .ok_or_else(|| {
            format!(
                "no key for this token (alg {:?}, kid {})",
                header.alg,
                header.kid.as_deref().unwrap_or("none")
            )
        })?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        let data = decode::<Claims>(token, key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => "the token has expired".to_string(),
            ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_string(),
            ErrorKind::InvalidAudience => {
                format!("the token's audience is not {}", self.audience)
            }
            ErrorKind::InvalidIssuer => format!("the token's issuer is not {}", self.issuer),
            ErrorKind::InvalidSignature => "the token's signature does not verify".to_string(),
            ErrorKind::MissingRequiredClaim(c) => format!("the token has no {c} claim"),
            _ => "malformed token".to_string(),
        })?;
        let claims = data.claims;
        // Without a subject every such token would be the one identity `jwt:`.
        let sub = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or_else(|| "the token has no sub claim".to_string())?;
        Ok(Identity {
            name: format!("jwt:{sub}").into(),
            scopes: Scopes::from_claim(claims.scope.as_deref().unwrap_or_default()),
            allow: None,
        })
    }
}

/// Whether the header of `token` (a JWS in compact form) has a `crit` member, whatever
/// its value (`Header::crit` cannot tell `"crit": null` from no `crit`); an undecodable
/// header counts as having one.
fn header_has_crit(token: &str) -> bool {
    let encoded = token.split('.').next().unwrap_or_default();
    base64url(encoded)
        .and_then(|json| {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&json).ok()
        })
        .is_none_or(|members| members.contains_key("crit"))
}

/// The bytes of unpadded base64url `text` (RFC 4648, 5); `None` for any other character.
fn base64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in text.bytes() {
        let sextet = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn load_file(path: &Path) -> Result<Vec<Key>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_jwks(&text).map_err(|e| format!("{}: {e}", path.display()))
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<Vec<Key>, String> {
    let text = http
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    parse_jwks(&text)
}

/// The signing keys of a JWKS document, each with the one algorithm it verifies.
fn parse_jwks(text: &str) -> Result<Vec<Key>, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(KeyAlgorithm::RS256), _) => Algorithm::RS256,
            (Some(KeyAlgorithm::ES256), _) => Algorithm::ES256,
            (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (None, AlgorithmParameters::EllipticCurve(p)) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            // Other algorithms are not accepted.
            _ => continue,
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("bad key: {e}"))?;
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    if keys.is_empty() {
        return Err("no RS256 or ES256 key in the JWKS".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::{Value, json};

    use super::*;

    const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
    const ISSUER: &str = "https://auth.example.test";
    const AUDIENCE: &str = "https://gw.example.test/mcp";

    fn verifier() -> JwtVerifier {
        let config = JwtConfig {
            issuer: ISSUER.into(),
            audience: None,
            hs256_secret: Some(SECRET.into()),
            jwks_file: None,
            jwks_url: None,
        };
        JwtVerifier::new(&config, AUDIENCE.into()).expect("verifier")
    }

    /// Valid claims for subject `sub` (none when `None`).
    fn claims(sub: Option<&str>) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        let mut c = json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "scope": "list"});
        if let Some(sub) = sub {
            c["sub"] = json!(sub);
        }
        c
    }

    fn signed(header: &Header, claims: &Value) -> String {
        encode(header, claims, &EncodingKey::from_secret(SECRET.as_bytes())).expect("sign")
    }

    /// A token signed with the secret whose header is exactly `header` (JSON text).
    fn with_raw_header(header: &str, claims: &Value) -> String {
        fn b64(bytes: &[u8]) -> String {
            const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
                for i in 0..=chunk.len() {
                    out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
                }
            }
            out
        }
        let message = format!(
            "{}.{}",
            b64(header.as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .expect("sign");
        format!("{message}.{signature}")
    }

    #[test]
    fn a_token_names_its_subject_or_is_refused() {
        let v = verifier();
        let header = Header::new(Algorithm::HS256);
        let alice = v
            .verify(&signed(&header, &claims(Some("alice"))))
            .expect("valid");
        assert_eq!(&*alice.name, "jwt:alice");
        for sub in [None, Some("")] {
            let refused = v.verify(&signed(&header, &claims(sub)));
            assert_eq!(
                refused.err().as_deref(),
                Some("the token has no sub claim"),
                "{sub:?}"
            );
        }
        let mut null_sub = claims(None);
        null_sub["sub"] = Value::Null;
        let refused = v.verify(&signed(&header, &null_sub));
        assert_eq!(refused.err().as_deref(), Some("the token has no sub claim"));
    }

    #[test]
    fn a_header_with_critical_extensions_is_refused() {
        let v = verifier();
        let good = claims(Some("alice"));
        let crit = "the token's header lists critical extensions the gateway does not understand";
        for extensions in [vec!["b64".to_string()], vec!["exp".to_string()], vec![]] {
            let mut header = Header::new(Algorithm::HS256);
            header.crit = Some(extensions.clone());
            let refused = v.verify(&signed(&header, &good));
            assert_eq!(refused.err().as_deref(), Some(crit), "{extensions:?}");
        }
        // Any value: `null` too, which the typed header reads as no `crit` at all.
        let token = with_raw_header(r#"{"alg":"HS256","typ":"JWT","crit":null}"#, &good);
        assert_eq!(v.verify(&token).err().as_deref(), Some(crit));
        // The same token without it is fine: the raw header is read correctly.
        let token = with_raw_header(r#"{"alg":"HS256","typ":"JWT"}"#, &good);
        assert_eq!(&*v.verify(&token).expect("valid").name, "jwt:alice");
        // A `crit` that is not even a list is malformed.
        let token = with_raw_header(r#"{"alg":"HS256","crit":"b64"}"#, &good);
        assert!(v.verify(&token).is_err());
    }

    #[test]
    fn base64url_decodes_what_it_must_and_refuses_the_rest() {
        assert_eq!(base64url("").as_deref(), Some(&b""[..]));
        assert_eq!(base64url("Zg").as_deref(), Some(&b"f"[..]));
        assert_eq!(base64url("Zm8").as_deref(), Some(&b"fo"[..]));
        assert_eq!(base64url("Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(base64url("-_-_").as_deref(), Some(&[0xfb, 0xff, 0xbf][..]));
        for bad in ["Zm9v=", "Zm+v", "Zm/v", "Zm v", "Zé"] {
            assert_eq!(base64url(bad), None, "{bad}");
        }
    }
}
