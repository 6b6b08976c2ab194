//! Where an endpoint may point. A URL a tenant writes is a request the server makes on their
//! behalf from inside the operator's network, so it must not reach what the tenant could not:
//! loopback, private, link-local (cloud metadata at 169.254.169.254) and other non-public
//! addresses are refused unless the operator allows that host. The check is made on the
//! addresses the connection will use, at every connection (a name may resolve differently
//! at delivery than at creation), through the HTTP client's resolver.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use serde::Deserialize;
use url::Url;

/// What the operator allows beyond public HTTPS targets.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetPolicy {
    /// Hosts (names or address literals) that may be reached over plain `http`.
    pub allow_http_hosts: Vec<String>,
    /// Hosts that may resolve to loopback, private or link-local addresses.
    pub allow_private_hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("not a URL: {0}")]
    Syntax(String),
    #[error("the URL must use https (http is allowed only for hosts the operator lists)")]
    Scheme,
    #[error("the URL must not carry a user name or password")]
    Credentials,
    #[error("the URL has no host")]
    NoHost,
    #[error("{host} is a {kind} address, which endpoints may not target")]
    Private { host: String, kind: &'static str },
    #[error("{0} resolves to no address endpoints may target")]
    NoPublicAddress(String),
}

impl TargetPolicy {
    fn allows_http(&self, host: &str) -> bool {
        self.allow_http_hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    pub fn allows_private(&self, host: &str) -> bool {
        self.allow_private_hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// The URL's form: scheme, no credentials, a host; an address literal is checked here (the
    /// resolver never sees one).
    pub fn check_url(&self, raw: &str) -> Result<Url, TargetError> {
        let url = Url::parse(raw).map_err(|e| TargetError::Syntax(e.to_string()))?;
        let host = url.host_str().ok_or(TargetError::NoHost)?.trim_matches(['[', ']']).to_owned();
        match url.scheme() {
            "https" => {}
            "http" if self.allows_http(&host) => {}
            _ => return Err(TargetError::Scheme),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TargetError::Credentials);
        }
        if let Ok(ip) = host.parse::<IpAddr>()
            && let Some(kind) = non_public(ip)
            && !self.allows_private(&host)
        {
            return Err(TargetError::Private { host, kind });
        }
        Ok(url)
    }

    /// The addresses of `host` a connection may use: all of them for an allowed host, else the
    /// public ones only.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, TargetError> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| TargetError::NoPublicAddress(host.to_owned()))?
            .collect();
        if self.allows_private(host) {
            return Ok(found);
        }
        let public: Vec<_> = found.iter().copied().filter(|a| non_public(a.ip()).is_none()).collect();
        match (public.is_empty(), found.first()) {
            (true, Some(a)) => {
                Err(TargetError::Private { host: host.to_owned(), kind: non_public(a.ip()).unwrap_or("") })
            }
            (true, None) => Err(TargetError::NoPublicAddress(host.to_owned())),
            (false, _) => Ok(public),
        }
    }

    /// Checks a URL fully, its name resolved: what endpoint creation answers with.
    pub async fn check(&self, raw: &str) -> Result<Url, TargetError> {
        let url = self.check_url(raw)?;
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
        if host.parse::<IpAddr>().is_err() {
            self.resolve(host, url.port_or_known_default().unwrap_or(443)).await?;
        }
        Ok(url)
    }
}

/// Why an address is not public, or `None` when it is.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => non_public_v4(v4),
            None => non_public_v6(v6),
        },
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match () {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local",
        _ if ip.is_unspecified() || a == 0 => "unspecified",
        _ if ip.is_broadcast() || ip.is_multicast() || a >= 240 => "reserved",
        _ if a == 100 && (64..128).contains(&b) => "shared (carrier-grade NAT)",
        _ if ip.is_documentation() || (a == 198 && (b == 18 || b == 19)) => "reserved",
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(match () {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_multicast() => "reserved",
        _ if first & 0xfe00 == 0xfc00 => "private",
        _ if first & 0xffc0 == 0xfe80 => "link-local",
        _ if first == 0x2001 && ip.segments()[1] == 0x0db8 => "reserved",
        _ if first == 0x0064 && ip.segments()[1] == 0xff9b => "translated (NAT64)",
        _ => return None,
    })
}

/// The HTTP client's resolver: every connection resolves through the policy.
pub struct Resolver(pub Arc<TargetPolicy>);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let addrs = policy.resolve(name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_named() {
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("192.168.0.1", "private"),
            ("172.16.0.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("::1", "loopback"),
            ("fd00::1", "private"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
        ] {
            assert_eq!(non_public(ip.parse().unwrap()), Some(kind), "{ip}");
        }
        assert_eq!(non_public("93.184.216.34".parse().unwrap()), None);
        assert_eq!(non_public("2606:2800:220:1::1".parse().unwrap()), None);
    }

    #[tokio::test]
    async fn urls_are_https_public_and_without_credentials_unless_allowed() {
        let strict = TargetPolicy::default();
        assert!(strict.check_url("https://example.com/hook").is_ok());
        assert_eq!(strict.check_url("http://example.com/").unwrap_err(), TargetError::Scheme);
        assert_eq!(strict.check_url("ftp://example.com/").unwrap_err(), TargetError::Scheme);
        assert_eq!(strict.check_url("https://u:p@example.com/").unwrap_err(), TargetError::Credentials);
        assert!(matches!(strict.check_url("https://169.254.169.254/").unwrap_err(), TargetError::Private { .. }));
        assert!(matches!(strict.check_url("https://[::1]:8443/").unwrap_err(), TargetError::Private { .. }));
        // A name is resolved and its addresses checked: localhost is loopback.
        let refused = strict.check("https://localhost:9/").await.unwrap_err();
        assert_eq!(refused, TargetError::Private { host: "localhost".into(), kind: "loopback" });
        let open =
            TargetPolicy { allow_http_hosts: vec!["127.0.0.1".into()], allow_private_hosts: vec!["127.0.0.1".into()] };
        assert!(open.check("http://127.0.0.1:9/hook").await.is_ok());
        assert!(open.check("http://localhost:9/hook").await.is_err(), "allowing one host allows no other");
    }
}
