//! Bearer-token authentication as a tower layer (`http::Gate`, deciding at once): every
//! protected route gets the same check, compared in constant time against every
//! configured credential. The request carries the matching [`Identity`] on; a route that
//! needs a scope the credential lacks gets 403 `insufficient_scope`. A missing or wrong
//! token is a 401 with `WWW-Authenticate: Bearer` naming the RFC 9728 metadata
//! (`resource_metadata`) and a JSON body saying what was wrong.
//!
//! Invariant: every route but the public ones passes here; a token is compared in
//! constant time, and a request without an `Identity` never reaches a handler.

use std::sync::Arc;

use axum::{extract::Request, response::Response};
use http::header;
use service_kit::auth::bearer;
use subtle::ConstantTimeEq;

use std::{borrow::Cow, time::Duration};

use crate::jwt::JwtVerifier;
use crate::refusal::unauthorized;
pub use crate::refusal::{Metadata, MetadataUrl, insufficient_scope, too_many_requests};
pub use crate::vocab::{Allow, Identity, Scopes};

/// The accepted credentials, shared by the middleware.
#[derive(Clone)]
pub struct Auth {
    credentials: Arc<[(Box<[u8]>, Identity)]>,
    limits: Arc<crate::limits::Limits>,
    jwt: Option<Arc<JwtVerifier>>,
    metadata: Metadata,
    failures: Arc<Failures>,
}

/// Failed authentications per client address: past `auth_failures_per_second` (burst:
/// ten seconds' worth), the address is refused (429) without its token being looked at
/// until it has budget again, so guessing runs at that rate at most.
pub struct Failures {
    budget: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    clock: governor::clock::DefaultClock,
    /// Addresses out of budget, until when.
    blocked: dashmap::DashMap<std::net::IpAddr, std::time::Instant>,
}

impl Failures {
    fn new(per_second: u32) -> Self {
        let rate =
            std::num::NonZeroU32::new(per_second.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        let burst =
            rate.saturating_mul(std::num::NonZeroU32::new(10).unwrap_or(std::num::NonZeroU32::MIN));
        Self {
            budget: governor::RateLimiter::keyed(
                governor::Quota::per_second(rate).allow_burst(burst),
            ),
            clock: governor::clock::DefaultClock::default(),
            blocked: dashmap::DashMap::new(),
        }
    }

    /// How long `ip` must still wait, if it is out of budget.
    fn blocked(&self, ip: std::net::IpAddr) -> Option<Duration> {
        let until = *self.blocked.get(&ip)?;
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            self.blocked.remove(&ip);
            return None;
        }
        Some(left)
    }

    /// Books a failure of `ip`; how long it must wait when that was one too many.
    fn failed(&self, ip: std::net::IpAddr) -> Option<Duration> {
        use governor::clock::Clock;
        let wait = self
            .budget
            .check_key(&ip)
            .err()?
            .wait_time_from(self.clock.now());
        if self.blocked.len() > 4096 {
            let now = std::time::Instant::now();
            self.blocked.retain(|_, until| *until > now);
            self.budget.retain_recent();
        }
        self.blocked.insert(ip, std::time::Instant::now() + wait);
        Some(wait)
    }
}

impl Auth {
    /// The configured `token` (every scope, named `default`) and the `credentials`.
    pub fn new(
        config: &crate::Config,
        metadata: Metadata,
        limits: Arc<crate::limits::Limits>,
    ) -> Self {
        let default = Identity {
            name: "default".into(),
            scopes: Scopes::ALL,
            allow: None,
        };
        let credentials = std::iter::once((config.token.as_bytes().into(), default))
            .chain(config.credentials.iter().map(|c| {
                let identity = Identity {
                    name: c.name.as_str().into(),
                    scopes: Scopes::parse(&c.scopes).unwrap_or(Scopes::NONE),
                    allow: Allow::new(
                        c.services.as_deref(),
                        c.tools.as_deref(),
                        c.virtual_servers.as_deref(),
                    )
                    .map(Arc::new),
                };
                (c.token.as_bytes().into(), identity)
            }))
            .collect();
        let jwt = config.jwt.as_ref().and_then(|jwt| {
            let audience = config.jwt_audience()?;
            let verifier = match JwtVerifier::new(jwt, audience) {
                Ok(v) => Arc::new(v),
                Err(why) => {
                    tracing::error!("JWTs refused: {why}");
                    return None;
                }
            };
            if let Some(url) = &jwt.jwks_url {
                tokio::spawn(
                    Arc::clone(&verifier).refresh_from(url.clone(), Duration::from_secs(300)),
                );
            }
            Some(verifier)
        });
        Self {
            credentials,
            limits,
            jwt,
            metadata,
            failures: Arc::new(Failures::new(config.auth_failures_per_second)),
        }
    }

    /// The identity whose token was presented. Every credential is compared, each in
    /// constant time, so the time taken does not say which one matched.
    fn identify(&self, presented: &[u8]) -> Option<Identity> {
        let mut found = None;
        for (token, identity) in self.credentials.iter() {
            // Lengths are compared in the clear (a token's length is not a secret worth
            // a side channel); the bytes in constant time.
            if presented.len() == token.len() && bool::from(presented.ct_eq(token)) {
                found = Some(identity.clone());
            }
        }
        found
    }
}

/// The scope a route needs beyond a valid token (`/mcp` is checked per JSON-RPC method
/// in `mcp::entry`).
fn route_scope(method: &http::Method, path: &str) -> Option<Scopes> {
    if path == "/register" || path == "/registry/import" {
        return Some(Scopes::REGISTER);
    }
    if matches!(path, "/calls" | "/stats" | "/metrics")
        || path == "/virtual-servers"
        || path.starts_with("/virtual-servers/")
    {
        return Some(Scopes::OPERATE);
    }
    if path == "/services" || path.starts_with("/services/") {
        return Some(if method == http::Method::DELETE {
            Scopes::REGISTER
        } else {
            Scopes::OPERATE
        });
    }
    None
}

/// The refusal of a request unless it carries `Authorization: Bearer <token>` of a known
/// credential with the scope the route needs; otherwise `None`, and the request carries
/// its [`Identity`] on.
pub fn require_bearer(auth: &Auth, request: &mut Request) -> Option<Response> {
    let client = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(wait) = client.and_then(|ip| auth.failures.blocked(ip)) {
        return Some(failed_too_often(wait));
    }
    let header = request.headers().get(header::AUTHORIZATION);
    let verdict = match header {
        None => Err((
            "missing_token",
            Cow::Borrowed("missing Authorization header; send \"Authorization: Bearer <token>\""),
        )),
        Some(value) => match bearer(value) {
            None => Err((
                "invalid_request",
                Cow::Borrowed(
                    "Authorization header must use the Bearer scheme: \"Authorization: Bearer <token>\"",
                ),
            )),
            Some(t) => match auth.identify(t) {
                Some(identity) => Ok(identity),
                // Not a static credential: a JWT, if they are accepted.
                None => match (&auth.jwt, std::str::from_utf8(t)) {
                    (Some(jwt), Ok(token)) if token.matches('.').count() == 2 => jwt
                        .verify(token)
                        .map_err(|why| ("invalid_token", Cow::Owned(why.0))),
                    _ => Err(("invalid_token", Cow::Borrowed("invalid bearer token"))),
                },
            },
        },
    };
    let metadata = || {
        auth.metadata
            .document_url(request.headers(), request.uri().path())
    };
    match verdict {
        Ok(identity) => {
            if let Some(needed) = route_scope(request.method(), request.uri().path())
                && !identity.scopes.contains(needed)
            {
                return Some(insufficient_scope(&identity, needed, &metadata()));
            }
            // `/mcp` answers its own rate limiting, in JSON-RPC.
            if !crate::vocab::is_mcp_path(request.uri().path())
                && let Err(wait) = auth.limits.credential(&identity.name)
            {
                let message = format!(
                    "credential \"{}\" is over its rate limit; retry in {} ms",
                    identity.name,
                    crate::limits::retry_ms(wait)
                );
                return Some(too_many_requests(&message, wait));
            }
            request.extensions_mut().insert(identity);
            request
                .extensions_mut()
                .insert(MetadataUrl(auth.metadata.clone()));
            None
        }
        Err((code, message)) => {
            if let Some(wait) = client.and_then(|ip| auth.failures.failed(ip)) {
                return Some(failed_too_often(wait));
            }
            Some(unauthorized(code, message, &metadata()))
        }
    }
}

/// 429 for an address that failed to authenticate too often.
fn failed_too_often(wait: Duration) -> Response {
    too_many_requests(
        &format!(
            "too many failed authentications from this address; retry in {} ms",
            crate::limits::retry_ms(wait)
        ),
        wait,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_token_exact() {
        let auth = Auth::new(
            &crate::Config::default(),
            Metadata::default(),
            Arc::new(crate::limits::Limits::new(0, 0)),
        );
        let v = HeaderValue::from_static("bearer mcp-token-123");
        let who = auth.identify(bearer(&v).unwrap()).expect("default token");
        assert_eq!((&*who.name, who.scopes), ("default", Scopes::ALL));
        let v = HeaderValue::from_static("Bearer mcp-token-12");
        assert!(auth.identify(bearer(&v).unwrap()).is_none());
        let v = HeaderValue::from_static("Basic bWNwOg==");
        assert!(bearer(&v).is_none());
        let v = HeaderValue::from_static("Bearer");
        assert!(bearer(&v).is_none());
    }
}
