//! Who the client is: the TCP peer, or, when the peer is a trusted reverse proxy, the address
//! that the proxy forwarded in `X-Forwarded-For` or RFC 7239 `Forwarded`.
//!
//! A mini program may only call an `https://` domain, so in production every request arrives
//! through a TLS-terminating proxy and the TCP peer is the proxy. Forwarding headers are
//! believed only from the proxies listed in `IOTBIND_TRUSTED_PROXIES`: from anyone else they
//! are the client's own words and are ignored. Each proxy appends the address it received the
//! request from, so the chain is read from the right, skipping trusted proxies; the first
//! address that is not one of them is the client. Anything to its left was written by that
//! client and is never looked at, so a forged or garbled prefix changes nothing.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use poem::http::HeaderMap;
use poem::http::header::FORWARDED;

/// The address a request came from, as the rate limits, the lockout and the logs count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// The reverse proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request from `peer` with these headers.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> ClientAddress {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return ClientAddress(peer);
        }
        let forwarded = if headers.contains_key("x-forwarded-for") {
            chain(headers, "x-forwarded-for", parse_x_forwarded_for_element)
        } else {
            chain(headers, FORWARDED.as_str(), parse_forwarded_element)
        };
        let Some(elements) = forwarded else {
            return ClientAddress(peer);
        };
        // Right to left; the first untrusted address is the client. Every address in the chain
        // being a trusted proxy means the request started inside the deployment: the left-most
        // is then the best account of it.
        let mut leftmost = None;
        for element in elements.iter().rev() {
            match element {
                Some(ip) if self.trusts(*ip) => leftmost = Some(*ip),
                Some(ip) => return ClientAddress(*ip),
                // Garbage before any untrusted address: the chain cannot be read.
                None => return ClientAddress(peer),
            }
        }
        ClientAddress(leftmost.unwrap_or(peer))
    }

    /// For the start-up log.
    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            "none (the TCP peer is the client; forwarding headers are ignored)".to_owned()
        } else {
            self.0
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// The elements of every instance of header `name`, in order, each parsed to an address or
/// `None`; `None` overall when the header is absent or not text.
fn chain(
    headers: &HeaderMap,
    name: &str,
    parse: fn(&str) -> Option<IpAddr>,
) -> Option<Vec<Option<IpAddr>>> {
    let mut elements = Vec::new();
    for value in headers.get_all(name) {
        let text = value.to_str().ok()?;
        elements.extend(split_outside_quotes(text, ',').map(|e| parse(e.trim()).map(canonical)));
    }
    (!elements.is_empty()).then_some(elements)
}

/// An `X-Forwarded-For` element: an address, possibly with a port (`[2001:db8::1]:443`).
fn parse_x_forwarded_for_element(element: &str) -> Option<IpAddr> {
    parse_node(element)
}

/// A `Forwarded` element's `for=` node: `for=192.0.2.60;proto=https`,
/// `for="[2001:db8:cafe::17]:4711"`. `unknown` and obfuscated names have no address.
fn parse_forwarded_element(element: &str) -> Option<IpAddr> {
    let node = split_outside_quotes(element, ';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.trim().eq_ignore_ascii_case("for").then(|| value.trim())
    })?;
    let node = node
        .strip_prefix('"')
        .and_then(|n| n.strip_suffix('"'))
        .unwrap_or(node);
    parse_node(node)
}

/// An address, an IPv4 address with a port, or a bracketed IPv6 address with or without one.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    node.strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .and_then(|n| n.parse::<IpAddr>().ok())
}

/// Splits on `separator` except inside double quotes.
fn split_outside_quotes(text: &str, separator: char) -> impl Iterator<Item = &str> {
    let mut in_quotes = false;
    text.split(move |c: char| {
        if c == '"' {
            in_quotes = !in_quotes;
        }
        c == separator && !in_quotes
    })
}

/// An IPv4 peer reached over an IPv6 socket is the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::HeaderValue;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn client(trusted: &TrustedProxies, peer: &str, pairs: &[(&'static str, &str)]) -> IpAddr {
        trusted.client(ip(peer), &headers(pairs)).0
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_headers_say() {
        let none = TrustedProxies::default();
        assert_eq!(
            client(&none, "203.0.113.9", &[("x-forwarded-for", "198.51.100.1")]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client(&none, "203.0.113.9", &[("forwarded", "for=198.51.100.1")]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_peer_that_is_not_trusted_cannot_name_a_client() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            client(
                &trusted,
                "203.0.113.9",
                &[("x-forwarded-for", "198.51.100.1")]
            ),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_right_most_untrusted_address_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        // The client forged "1.2.3.4"; the proxy appended the address it saw.
        assert_eq!(
            client(
                &trusted,
                "10.0.0.2",
                &[("x-forwarded-for", "1.2.3.4, 198.51.100.7, 10.0.0.1")]
            ),
            ip("198.51.100.7")
        );
        assert_eq!(
            client(
                &trusted,
                "2001:db8:ffff::1",
                &[("x-forwarded-for", "2001:db8:1::7")]
            ),
            ip("2001:db8:1::7")
        );
    }

    #[test]
    fn several_header_lines_are_one_chain_in_order() {
        let trusted = proxies(&["10.0.0.1/32"]);
        assert_eq!(
            client(
                &trusted,
                "10.0.0.1",
                &[
                    ("x-forwarded-for", "198.51.100.7"),
                    ("x-forwarded-for", "198.51.100.8")
                ]
            ),
            ip("198.51.100.8")
        );
    }

    #[test]
    fn when_every_address_is_a_trusted_proxy_the_left_most_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            client(
                &trusted,
                "10.0.0.3",
                &[("x-forwarded-for", "10.1.1.1, 10.0.0.2")]
            ),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn garbage_left_of_the_client_is_ignored_and_garbage_right_of_it_falls_back_to_the_peer() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            client(
                &trusted,
                "10.0.0.2",
                &[("x-forwarded-for", "not-an-ip, 198.51.100.7")]
            ),
            ip("198.51.100.7")
        );
        assert_eq!(
            client(
                &trusted,
                "10.0.0.2",
                &[("x-forwarded-for", "198.51.100.7, not-an-ip")]
            ),
            ip("10.0.0.2")
        );
        assert_eq!(
            client(&trusted, "10.0.0.2", &[("x-forwarded-for", "")]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn the_rfc_7239_forwarded_header_names_the_client_too() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            client(
                &trusted,
                "10.0.0.2",
                &[(
                    "forwarded",
                    r#"for=1.2.3.4, for="[2001:db8:cafe::17]:4711";proto=https, For=10.0.0.1"#
                )]
            ),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            client(
                &trusted,
                "10.0.0.2",
                &[("forwarded", "for=198.51.100.7:8443;by=10.0.0.2")]
            ),
            ip("198.51.100.7")
        );
        assert_eq!(
            client(&trusted, "10.0.0.2", &[("forwarded", "for=unknown")]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn an_ipv4_mapped_peer_is_its_ipv4_address() {
        let trusted = proxies(&["10.0.0.1/32"]);
        assert_eq!(
            client(
                &trusted,
                "::ffff:10.0.0.1",
                &[("x-forwarded-for", "198.51.100.7")]
            ),
            ip("198.51.100.7")
        );
    }
}
