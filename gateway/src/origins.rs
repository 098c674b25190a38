//! Which `Host` and `Origin` values the gateway answers (DNS-rebinding protection): the
//! configured allow-lists plus loopback. One [`Origins`] judges every route (the HTTP
//! front layer) and the pass-through path alike; rmcp is configured from the same lists
//! for its own check on `/mcp`. No I/O here.
//!
//! Architecture invariant: a request with more than one `Host` or `Origin` header is
//! refused before anything reads either (readers that take the first and readers that
//! take the last must never disagree).
//!
//! Invariant: one judge for `Host` and `Origin` on every route; a repeated header or one
//! in doubt is refused.

use http::{HeaderMap, header};

/// Origins of pages served from this machine, any port.
pub const LOOPBACK_ORIGINS: &[&str] = &[
    "http://localhost:*",
    "http://127.0.0.1:*",
    "http://[::1]:*",
    "https://localhost:*",
    "https://127.0.0.1:*",
    "https://[::1]:*",
];

/// The allowed `Host` and `Origin` values.
#[derive(Debug, Clone)]
pub struct Origins {
    /// Allowed `Host` values (names, or `name:port`); `None`: any.
    hosts: Option<Vec<String>>,
    /// Allowed `Origin` values (`scheme://host:*` allows any port); `None`: any.
    origins: Option<Vec<String>>,
}

/// Why a request's `Host` or `Origin` is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// More than one `Host` or `Origin` header.
    Repeated(&'static str),
    /// A `Host` outside the allow-list (or none).
    Host,
    /// An `Origin` outside the allow-list.
    Origin,
}

impl Origins {
    /// From the configured lists (`*` allows any); loopback is always allowed.
    pub fn new(allowed_hosts: &[String], allowed_origins: &[String]) -> Self {
        let hosts = (!allowed_hosts.iter().any(|h| h == "*")).then(|| {
            service_kit::mcp::LOOPBACK_HOSTS
                .iter()
                .map(|h| h.to_string())
                .chain(allowed_hosts.iter().cloned())
                .collect()
        });
        let origins = (!allowed_origins.iter().any(|o| o == "*")).then(|| {
            LOOPBACK_ORIGINS
                .iter()
                .map(|o| o.to_string())
                .chain(allowed_origins.iter().cloned())
                .collect()
        });
        Self { hosts, origins }
    }

    /// Judges a request's headers. A same-origin `Origin` (the page came from this very
    /// `Host`, as the dashboard does) is allowed whenever the `Host` is.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refused> {
        // Each header is looked up once: its first value, and whether there is a second.
        let only = |name: header::HeaderName, shown: &'static str| {
            let mut values = headers.get_all(name).into_iter();
            let first = values.next();
            match values.next() {
                Some(_) => Err(Refused::Repeated(shown)),
                None => Ok(first),
            }
        };
        let host = only(header::HOST, "Host")?;
        let origin = only(header::ORIGIN, "Origin")?;
        let host = host.and_then(|v| v.to_str().ok());
        if let Some(allowed) = &self.hosts
            && !host.is_some_and(|h| host_allowed(h, allowed))
        {
            return Err(Refused::Host);
        }
        let Some(origin) = origin else {
            return Ok(());
        };
        let Ok(origin) = origin.to_str() else {
            return Err(Refused::Origin);
        };
        let same_origin = host.is_some_and(|h| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|authority| authority.eq_ignore_ascii_case(h))
        });
        match &self.origins {
            _ if same_origin => Ok(()),
            None => Ok(()),
            Some(allowed) if origin_allowed(origin, allowed) => Ok(()),
            Some(_) => Err(Refused::Origin),
        }
    }

    /// [`Self::check`] passes.
    pub fn trusted(&self, headers: &HeaderMap) -> bool {
        self.check(headers).is_ok()
    }
}

/// `host` (a `Host` header) names one of `allowed` (names, or `name:port`).
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    allowed.iter().any(|a| {
        a.eq_ignore_ascii_case(host)
            || a.eq_ignore_ascii_case(name)
            || a.trim_start_matches('[')
                .trim_end_matches(']')
                .eq_ignore_ascii_case(name)
    })
}

/// `origin` is one of `allowed`, where `scheme://host:*` allows any port.
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| {
        a == origin
            || a.strip_suffix(":*").is_some_and(|prefix| {
                origin.strip_prefix(prefix).is_some_and(|rest| {
                    rest.is_empty()
                        || rest
                            .strip_prefix(':')
                            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                })
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins_match_as_rmcp_lists_them() {
        let hosts: Vec<String> = ["localhost", "127.0.0.1", "::1", "gw.internal:8080"]
            .map(String::from)
            .to_vec();
        assert!(host_allowed("127.0.0.1:3001", &hosts));
        assert!(host_allowed("localhost", &hosts));
        assert!(host_allowed("[::1]:3001", &hosts));
        assert!(host_allowed("gw.internal:8080", &hosts));
        assert!(!host_allowed("gw.internal:9090", &hosts));
        assert!(!host_allowed("evil.example.com", &hosts));
        assert!(!host_allowed("127.0.0.1.evil.com", &hosts));
        let origins: Vec<String> = ["http://localhost:*", "https://app.example.com"]
            .map(String::from)
            .to_vec();
        assert!(origin_allowed("http://localhost:5173", &origins));
        assert!(origin_allowed("http://localhost", &origins));
        assert!(origin_allowed("https://app.example.com", &origins));
        assert!(!origin_allowed("http://localhost.evil.com", &origins));
        assert!(!origin_allowed("http://localhost:80x", &origins));
        assert!(!origin_allowed("https://app.example.com.evil", &origins));
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn every_copy_of_host_and_origin_counts() {
        let o = Origins::new(&[], &[]);
        assert_eq!(o.check(&headers(&[("host", "127.0.0.1:3001")])), Ok(()));
        assert_eq!(
            o.check(&headers(&[
                ("host", "127.0.0.1:3001"),
                ("host", "evil.example")
            ])),
            Err(Refused::Repeated("Host"))
        );
        assert_eq!(
            o.check(&headers(&[
                ("host", "127.0.0.1:3001"),
                ("origin", "http://localhost:1"),
                ("origin", "http://evil.example")
            ])),
            Err(Refused::Repeated("Origin"))
        );
        assert_eq!(
            o.check(&headers(&[("host", "evil.example")])),
            Err(Refused::Host)
        );
        assert_eq!(o.check(&headers(&[])), Err(Refused::Host));
        assert_eq!(
            o.check(&headers(&[
                ("host", "localhost:3001"),
                ("origin", "http://evil.example")
            ])),
            Err(Refused::Origin)
        );
        // The dashboard: a page of this very host.
        let o = Origins::new(&["gw.example.com".into()], &[]);
        assert_eq!(
            o.check(&headers(&[
                ("host", "gw.example.com"),
                ("origin", "https://gw.example.com")
            ])),
            Ok(())
        );
        let any = Origins::new(&["*".into()], &["*".into()]);
        assert_eq!(
            any.check(&headers(&[("host", "x"), ("origin", "http://y")])),
            Ok(())
        );
    }
}
