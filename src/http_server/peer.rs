//! Who sent a request, for the log line of every refusal: the peer's address, and behind a
//! proxy listed in `server.trusted_proxies`, the client that proxy saw (from
//! `X-Forwarded-For`). The header is never believed from anyone else: any client can send
//! one.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

/// The remote address of the connection a request came on (a request extension, set by
/// the accept loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// `server.trusted_proxies`: addresses and networks (`10.0.0.0/8`) whose
/// `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses the entries (`127.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`); the error
    /// names the first that is neither an address nor a network.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, (usize, String)> {
        let mut out = Vec::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let bad = || {
                (
                    i,
                    format!(
                        "expected an IP address or a network such as 10.0.0.0/8, found {entry:?}"
                    ),
                )
            };
            let (ip, len) = match entry.trim().split_once('/') {
                None => {
                    let ip: IpAddr = entry.trim().parse().map_err(|_| bad())?;
                    (ip, if ip.is_ipv4() { 32 } else { 128 })
                }
                Some((ip, len)) => {
                    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
                    let len: u8 = len.parse().map_err(|_| bad())?;
                    if len > if ip.is_ipv4() { 32 } else { 128 } {
                        return Err(bad());
                    }
                    (ip, len)
                }
            };
            out.push((ip, len));
        }
        Ok(TrustedProxies(out))
    }

    /// True when no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Is `ip` one of the trusted proxies?
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0
            .iter()
            .any(|(net, len)| in_network(ip, canonical(*net), *len))
    }

    /// The client behind `peer` according to `X-Forwarded-For`, when `peer` is trusted:
    /// the rightmost address that is not itself a trusted proxy (each proxy appends the
    /// address it saw, so addresses left of it were written by the client).
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> Option<IpAddr> {
        if !self.contains(peer.ip()) {
            return None;
        }
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|hop| hop.trim().parse().ok())
            .collect();
        hops.iter()
            .rev()
            .find(|ip| !self.contains(**ip))
            .or(hops.first())
            .copied()
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_from_trusted_proxies_only() {
        let trusted = TrustedProxies::parse(["127.0.0.1", "10.0.0.0/8"]).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "198.51.100.7, 203.0.113.9, 10.1.2.3".parse().unwrap(),
        );
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let stranger: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        assert_eq!(
            trusted.client(proxy, &headers),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(trusted.client(stranger, &headers), None);
        let mapped: SocketAddr = "[::ffff:10.9.9.9]:1".parse().unwrap();
        assert!(trusted.contains(mapped.ip()));
        assert_eq!(trusted.client(proxy, &HeaderMap::new()), None);
        assert!(TrustedProxies::default().client(proxy, &headers).is_none());
    }

    #[test]
    fn entries_are_addresses_or_networks() {
        assert!(TrustedProxies::parse(["::1", "fd00::/8", "0.0.0.0/0"]).is_ok());
        assert_eq!(TrustedProxies::parse(["10.0.0.0/33"]).unwrap_err().0, 0);
        assert_eq!(TrustedProxies::parse(["::1", "proxy"]).unwrap_err().0, 1);
        let all = TrustedProxies::parse(["0.0.0.0/0"]).unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
    }
}
