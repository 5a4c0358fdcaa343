//! Where JWKS fetches may connect (issue 8: no blind SSRF). The rule itself is
//! [`policy_store::jwt::address`], shared with the compile step; this applies it after DNS.

use std::net::{IpAddr, SocketAddr};

use policy_store::jwt::address;

/// Every address the JWKS host resolved to is one a fetch may not reach (see
/// [`CheckedResolver`]); found again in the request error's source chain.
#[derive(Debug, thiserror::Error)]
#[error("the JWKS host resolves only to non-public addresses")]
pub(super) struct NonPublicHost;

/// How host names become addresses: the system's resolver, or a fixed table in tests.
#[derive(Clone)]
pub(super) enum Lookup {
    System,
    #[cfg(test)]
    Fixed(std::sync::Arc<std::collections::HashMap<String, Vec<IpAddr>>>),
}

impl Lookup {
    async fn ips(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        match self {
            Lookup::System => Ok(tokio::net::lookup_host((host, 0))
                .await?
                .map(|a| a.ip())
                .collect()),
            #[cfg(test)]
            Lookup::Fixed(table) => table
                .get(host)
                .cloned()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such host")),
        }
    }
}

/// The JWKS client's resolver: it resolves the host, drops every address a fetch may not
/// reach, and hands reqwest only the rest. reqwest connects to exactly those (it does no
/// lookup of its own), so the address connected to is the address that was checked: a DNS
/// answer that changes between check and connect (rebinding) cannot slip through.
pub(super) struct CheckedResolver {
    pub(super) lookup: Lookup,
    pub(super) allow_loopback: bool,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let (lookup, allow_loopback) = (self.lookup.clone(), self.allow_loopback);
        Box::pin(async move {
            let (allowed, refused): (Vec<IpAddr>, Vec<IpAddr>) = lookup
                .ips(&host)
                .await?
                .into_iter()
                .partition(|ip| address::fetch_allowed(*ip, allow_loopback));
            if !refused.is_empty() {
                tracing::warn!(
                    jwks_host = %host,
                    ?refused,
                    usable = allowed.len(),
                    allow_loopback,
                    "JWKS host resolves to non-public addresses; they are never fetched from"
                );
            }
            if allowed.is_empty() {
                return Err(Box::new(NonPublicHost) as Box<dyn std::error::Error + Send + Sync>);
            }
            let addrs: reqwest::dns::Addrs =
                Box::new(allowed.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// Whether `e` (or what caused it) is the resolver's refusal.
pub(super) fn is_non_public_host(e: &reqwest::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<NonPublicHost>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The address written in `url`, if its host is one (such hosts skip the resolver).
pub(super) fn literal_ip(url: &str) -> Option<IpAddr> {
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}
