//! `include: remote`: a CI file fetched over HTTPS when a pipeline is made, as GitLab
//! does — only `https://`, within 10 seconds, at most 1 MiB, no redirects, with the
//! machine's trusted roots. Its host must not resolve to a loopback, private, link-local
//! or otherwise non-public address unless the operator allows it
//! (`USHER_REMOTE_INCLUDES_LOCAL_NETWORK=1`): whoever writes a CI file must not be able to
//! make the server read its own network. The addresses checked are the ones connected
//! to (the request is pinned to them), so a name that resolves differently the second
//! time cannot slip past.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How long a remote include may take, resolving included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest remote include.
pub const MAX_BYTES: usize = 1024 * 1024;

/// The text at `url`, or why it cannot be included.
pub(crate) async fn fetch(url: &str, local_network_allowed: bool) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if parsed.scheme() != "https" {
        return Err("only https:// URLs are included".into());
    }
    let host = parsed.host_str().ok_or("the URL has no host")?.to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let lookup = tokio::time::timeout(TIMEOUT, tokio::net::lookup_host((host.trim_matches(['[', ']']), port)))
        .await
        .map_err(|_| format!("resolving {host} took longer than {} s", TIMEOUT.as_secs()))?
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let addrs: Vec<SocketAddr> = lookup.collect();
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    if !local_network_allowed && let Some(local) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(format!(
            "{host} is an address of a local network ({}); an operator can allow that with \
             USHER_REMOTE_INCLUDES_LOCAL_NETWORK=1",
            local.ip()
        ));
    }
    let mut builder = reqwest::Client::builder()
        .resolve_to_addrs(&host, &addrs)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT);
    for cert in rustls_native_certs::load_native_certs().certs {
        if let Ok(cert) = reqwest::Certificate::from_der(&cert) {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    let mut response = client.get(parsed).send().await.map_err(|e| causes(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("the server answered {status}"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| causes(&e))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BYTES {
            return Err(format!("it is larger than {} KiB", MAX_BYTES / 1024));
        }
    }
    String::from_utf8(body).map_err(|_| "it is not UTF-8 text".to_string())
}

/// An error with its causes (reqwest keeps the interesting part below).
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(&format!(": {e}"));
        cause = e.source();
    }
    text
}

/// Whether `ip` is an address of the public internet: not loopback, private, link-local,
/// shared (carrier NAT), unspecified, broadcast, multicast, documentation or benchmarking,
/// nor IPv6's unique-local, link-local or an IPv4-mapped one of those.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for local in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(local.parse().unwrap()), "{local}");
        }
        for public in ["1.1.1.1", "140.82.112.3", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn only_https_and_no_local_network() {
        let err = fetch("http://example.com/ci.yml", false).await.unwrap_err();
        assert!(err.contains("only https"), "{err}");
        let err = fetch("https://127.0.0.1:9/ci.yml", false).await.unwrap_err();
        assert!(
            err.contains("local network") && err.contains("USHER_REMOTE_INCLUDES_LOCAL_NETWORK"),
            "{err}"
        );
        let err = fetch("https://[::1]:9/ci.yml", false).await.unwrap_err();
        assert!(err.contains("local network"), "{err}");
    }
}
