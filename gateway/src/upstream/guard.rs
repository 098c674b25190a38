//! Where the gateway may connect: `POST /register` makes it connect wherever it is told,
//! so every upstream address is checked against the configured networks
//! (`upstream_networks`, loopback by default).
//!
//! - At registration (and when an instance connects) the URL's host is resolved and
//!   refused when none of its addresses is allowed ([`Guard::check_url`]).
//! - At every connection the addresses are filtered again, by the resolver of the
//!   upstream HTTP clients ([`Guard::resolver`]) and by the pass-through path's own
//!   connect ([`Guard::resolve`]): a DNS answer that changes between the check and the
//!   connection cannot take the gateway elsewhere.
//!
//! `*` allows any address except the ones no upstream should ever be: link-local
//! (which holds the cloud metadata services, `169.254.169.254`), the unspecified,
//! multicast and broadcast addresses. Those are reachable only when a configured
//! network names them explicitly.
//!
//! Invariant: no connection reaches an address outside `upstream_networks`, checked at
//! registration and again for every connection.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use ipnet::IpNet;

/// Why an upstream address cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It resolves, but outside the allowed networks.
    #[error("{0}")]
    NotAllowed(String),
    /// It does not resolve (or the URL is unusable): nothing to connect to.
    #[error("{0}")]
    Unresolvable(String),
}

/// The networks upstreams may live in.
#[derive(Debug, Clone)]
pub struct Guard {
    networks: Vec<IpNet>,
    any: bool,
}

/// The default: upstreams on this machine only.
pub const LOOPBACK_NETWORKS: &[&str] = &["127.0.0.0/8", "::1/128"];

impl Default for Guard {
    fn default() -> Self {
        Self::new(LOOPBACK_NETWORKS).expect("static networks parse")
    }
}

impl Guard {
    /// From configured entries: CIDR networks (`10.0.0.0/8`), single addresses, or `*`.
    pub fn new<S: AsRef<str>>(entries: &[S]) -> Result<Self, crate::vocab::Invalid> {
        let mut networks = Vec::new();
        let mut any = false;
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry == "*" {
                any = true;
                continue;
            }
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!("{entry:?} is not a network (like 10.0.0.0/8), an address or *")
                })?;
            networks.push(net);
        }
        Ok(Self { networks, any })
    }

    /// Whether an upstream may be at `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.networks.iter().any(|n| n.contains(&ip)) || (self.any && !never_by_default(ip))
    }

    /// The allowed addresses `host:port` resolves to; an error naming what it resolved
    /// to when none is allowed.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let found: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| Refusal::Unresolvable(format!("cannot resolve {host}: {e}")))?
                .collect(),
        };
        let allowed: Vec<SocketAddr> = found
            .iter()
            .copied()
            .filter(|a| self.allows(a.ip()))
            .collect();
        if allowed.is_empty() {
            let ips: Vec<String> = found.iter().map(|a| a.ip().to_string()).collect();
            return Err(Refusal::NotAllowed(format!(
                "{host} ({}) is outside the networks upstreams may be in ({}); see upstream_networks",
                ips.join(", "),
                self.describe()
            )));
        }
        Ok(allowed)
    }

    /// Refuses an upstream URL whose host resolves to no allowed address.
    pub async fn check_url(&self, url: &str) -> Result<(), Refusal> {
        let unusable = |why: String| Refusal::Unresolvable(why);
        let parsed =
            url::Url::parse(url).map_err(|e| unusable(format!("invalid URL {url:?}: {e}")))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| unusable(format!("URL {url:?} has no host")))?;
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| unusable(format!("URL {url:?} has no port")))?;
        self.resolve(host, port).await.map(|_| ())
    }

    /// A resolver for reqwest that only ever hands out allowed addresses.
    pub fn resolver(self: &Arc<Self>) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver(Arc::clone(self)))
    }

    fn describe(&self) -> String {
        let mut parts: Vec<String> = self.networks.iter().map(|n| n.to_string()).collect();
        if self.any {
            parts.push("* (but not link-local, metadata, multicast or unspecified)".into());
        }
        if parts.is_empty() {
            return "none".into();
        }
        parts.join(", ")
    }
}

/// See [`Guard::resolver`].
pub struct GuardedResolver(Arc<Guard>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = Arc::clone(&self.0);
        Box::pin(async move {
            let addrs = guard
                .resolve(name.as_str(), 0)
                .await
                .map_err(|why| -> Box<dyn std::error::Error + Send + Sync> { Box::new(why) })?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Addresses `*` does not cover: link-local (cloud metadata lives there), unspecified,
/// multicast, broadcast, and the metadata addresses outside link-local.
fn never_by_default(ip: IpAddr) -> bool {
    const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    const ALIBABA_METADATA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
    match ip {
        IpAddr::V4(v4) => {
            v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4 == ALIBABA_METADATA
        }
        IpAddr::V6(v6) => {
            v6.is_unicast_link_local()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6 == METADATA_V6
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn loopback_only_by_default() {
        let g = Guard::default();
        assert!(g.allows(ip("127.0.0.1")));
        assert!(g.allows(ip("127.8.9.10")));
        assert!(g.allows(ip("::1")));
        assert!(g.allows(ip("::ffff:127.0.0.1")), "IPv4-mapped loopback");
        assert!(!g.allows(ip("10.0.0.1")));
        assert!(!g.allows(ip("169.254.169.254")));
        assert!(!g.allows(ip("0.0.0.0")));
    }

    #[test]
    fn any_still_refuses_metadata_and_link_local_unless_named() {
        let g = Guard::new(&["*"]).expect("parses");
        assert!(g.allows(ip("10.1.2.3")));
        assert!(g.allows(ip("8.8.8.8")));
        assert!(!g.allows(ip("169.254.169.254")));
        assert!(!g.allows(ip("::ffff:169.254.169.254")));
        assert!(!g.allows(ip("fe80::1")));
        assert!(!g.allows(ip("fd00:ec2::254")));
        assert!(!g.allows(ip("100.100.100.200")));
        assert!(!g.allows(ip("0.0.0.0")));
        assert!(!g.allows(ip("224.0.0.1")));
        let g = Guard::new(&["*", "169.254.0.0/16"]).expect("parses");
        assert!(g.allows(ip("169.254.169.254")), "named explicitly");
    }

    #[test]
    fn networks_and_single_addresses_parse_and_bad_entries_say_why() {
        let g = Guard::new(&["10.0.0.0/8", "192.168.1.7", "fd00::/8"]).expect("parses");
        assert!(g.allows(ip("10.200.0.1")));
        assert!(g.allows(ip("192.168.1.7")));
        assert!(!g.allows(ip("192.168.1.8")));
        assert!(g.allows(ip("fd12::1")));
        assert!(!g.allows(ip("127.0.0.1")));
        let e = Guard::new(&["10.0.0.0/33"]).expect_err("bad prefix");
        assert!(e.contains("10.0.0.0/33"), "{e}");
        assert!(Guard::new(&["example.com"]).is_err());
    }

    #[tokio::test]
    async fn names_are_resolved_and_filtered() {
        let loopback = Guard::default();
        let addrs = loopback.resolve("localhost", 80).await.expect("allowed");
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        let elsewhere = Guard::new(&["10.0.0.0/8"]).expect("parses");
        let e = elsewhere
            .resolve("localhost", 80)
            .await
            .expect_err("refused");
        let Refusal::NotAllowed(e) = e else {
            panic!("{e:?}")
        };
        assert!(e.contains("localhost") && e.contains("10.0.0.0/8"), "{e}");
        let e = loopback
            .resolve("no-such-host.invalid", 80)
            .await
            .expect_err("unresolvable");
        assert!(matches!(e, Refusal::Unresolvable(_)), "{e:?}");
        // The resolver the HTTP clients connect through filters the same way.
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        let addrs: Vec<_> = Arc::new(Guard::default())
            .resolver()
            .resolve(name)
            .await
            .expect("loopback allowed")
            .collect();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()));
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        let refused = Arc::new(elsewhere).resolver().resolve(name).await;
        assert!(refused.is_err(), "no address handed out");
        let e = Guard::default()
            .check_url("http://169.254.169.254/latest/meta-data")
            .await
            .expect_err("metadata");
        assert!(e.to_string().contains("169.254.169.254"), "{e}");
    }
}
