//! Which address a request comes from: the connection's peer — unless the peer is one of
//! the reverse proxies the operator trusts (`--trusted-proxies`). Then it is the client
//! the proxies name (`Forwarded: for=`, else `X-Forwarded-For`): the right-most address
//! that is not itself a trusted proxy, since each proxy appends the address it got the
//! request from, and whatever a client wrote into the header itself is further left.
//! A header from a peer that is not trusted is ignored: anyone can write one.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The reverse proxies whose forwarding headers are believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// From `10.0.0.0/8`, `192.0.2.7`, `::1`, … (an address alone is a network of one).
    pub fn parse(list: &[String]) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for item in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("--trusted-proxies: {item:?} is not an address or a network (10.0.0.0/8)"))?;
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops = forwarded_for(headers);
        hops.iter()
            .rev()
            .copied()
            .find(|ip| !self.trusts(*ip))
            .or_else(|| hops.first().copied())
            .unwrap_or(peer)
    }
}

/// The addresses the forwarding headers name, left to right: `Forwarded`'s `for=` when
/// there is one (RFC 7239), else `X-Forwarded-For`. Names a proxy could not or would not
/// give (`unknown`, `_hidden`) are left out.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let forwarded: Vec<IpAddr> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .flat_map(|element| element.split(';'))
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case("for")
                .then(|| parse_node(value.trim().trim_matches('"')))?
        })
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|node| parse_node(node.trim()))
        .collect()
}

/// `192.0.2.7`, `192.0.2.7:4711`, `[2001:db8::1]:4711` or `2001:db8::1`.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    text.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_proxys_header_is_believed_and_its_right_most_client() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into(), "192.0.2.1".into()]).unwrap();
        let spoofed = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9")]);
        // From the proxy: what it appended (the right-most untrusted), not what the client wrote.
        assert_eq!(proxies.client(ip("10.1.2.3"), &spoofed), ip("203.0.113.9"));
        // Two proxies in a row: the inner one is trusted too.
        let chain = headers(&[("x-forwarded-for", "203.0.113.9, 10.0.0.5")]);
        assert_eq!(proxies.client(ip("192.0.2.1"), &chain), ip("203.0.113.9"));
        // From anyone else: the header means nothing.
        assert_eq!(proxies.client(ip("198.51.100.4"), &spoofed), ip("198.51.100.4"));
        // No header: the peer.
        assert_eq!(proxies.client(ip("10.1.2.3"), &HeaderMap::new()), ip("10.1.2.3"));
        // Nobody trusted (the default): always the peer.
        assert_eq!(TrustedProxies::default().client(ip("10.1.2.3"), &spoofed), ip("10.1.2.3"));
    }

    #[test]
    fn forwarded_is_read_with_ports_brackets_and_case() {
        let proxies = TrustedProxies::parse(&["127.0.0.1".into()]).unwrap();
        let h = headers(&[("forwarded", "for=unknown, For=\"[2001:db8::7]:4711\";proto=https")]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &h), ip("2001:db8::7"));
        let h = headers(&[("forwarded", "for=198.51.100.4:80"), ("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &h), ip("198.51.100.4"), "Forwarded wins");
        assert!(TrustedProxies::parse(&["not-a-net".into()]).is_err());
        assert_eq!(
            proxies.client(ip("::ffff:127.0.0.1"), &h),
            ip("198.51.100.4"),
            "an IPv4-mapped peer"
        );
    }
}
