//! Finding a peer's address: resolved again on every connection attempt,
//! because a recreated pod keeps its DNS name but gets a new IP.
//!
//! Names are resolved with hickory-resolver, which needs only
//! `/etc/resolv.conf` (and reads `/etc/hosts`), so a minimal image without
//! glibc's NSS files can still find its peers.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use hickory_resolver::TokioResolver;

/// A shared resolver without a cache: a stale answer would send us to the
/// address of a pod that no longer exists.
fn resolver() -> Result<Arc<TokioResolver>, String> {
    static RESOLVER: OnceLock<Result<Arc<TokioResolver>, String>> = OnceLock::new();
    RESOLVER
        .get_or_init(|| {
            let mut builder = TokioResolver::builder_tokio().map_err(|e| {
                format!("cannot read the DNS configuration (/etc/resolv.conf): {e}")
            })?;
            builder.options_mut().cache_size = 0;
            builder
                .build()
                .map(Arc::new)
                .map_err(|e| format!("cannot build a DNS resolver: {e}"))
        })
        .clone()
}

/// Resolves `host:port` to socket addresses, IPv4 first.
pub async fn resolve(addr: &str) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("address {addr:?} has no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("address {addr:?} has a bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let lookup = resolver()?
        .lookup_ip(host)
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
    addrs.sort_by_key(|a| a.is_ipv6());
    if addrs.is_empty() {
        return Err(format!("{host} has no addresses"));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_need_no_dns() {
        assert_eq!(
            resolve("127.0.0.1:7000").await.unwrap(),
            vec!["127.0.0.1:7000".parse().unwrap()]
        );
        assert_eq!(
            resolve("[::1]:7000").await.unwrap(),
            vec!["[::1]:7000".parse().unwrap()]
        );
        assert!(resolve("nohost").await.is_err());
    }
}
