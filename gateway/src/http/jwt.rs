//! JWT bearer tokens (`jwt` in the configuration): HS256 with a shared secret, RS256 and
//! ES256 with keys from a JWKS file or URL. The issuer, the audience (the gateway's own
//! resource URL unless configured), the expiry and not-before are enforced, with 30 s
//! of leeway; the token's algorithm must be one its key is for (no algorithm confusion).
//! The `scope` claim (space-separated) gives the scopes; `sub` names the identity
//! (`jwt:<sub>`), which MCP sessions are bound to.

use std::{path::Path, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation, decode, decode_header,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm},
};
use serde::Deserialize;

use super::auth::{Identity, Scopes};
use crate::config::JwtConfig;

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
    pub fn new(config: &JwtConfig, audience: String) -> Result<Self, String> {
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
        let http = reqwest::Client::new();
        loop {
            match fetch(&http, &url).await {
                Ok(keys) => self.keys.store(Arc::new(keys)),
                Err(e) => tracing::warn!(%url, "cannot read the JWKS: {e}"),
            }
            tokio::time::sleep(every).await;
        }
    }

    /// The identity a valid token stands for, or why it is not valid.
    pub fn verify(&self, token: &str) -> Result<Identity, String> {
        let header = decode_header(token).map_err(|_| "malformed token".to_string())?;
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
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
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
        Ok(Identity {
            name: format!("jwt:{}", claims.sub.as_deref().unwrap_or("")).into(),
            scopes: Scopes::from_claim(claims.scope.as_deref().unwrap_or_default()),
            allow: None,
        })
    }
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
