//! Client addresses as the per-address limits count them (HTTP password attempts, the
//! lockout, MQTT handshakes and failed logins).

use std::net::{IpAddr, Ipv6Addr};

/// The key of a client address: the address itself for IPv4, its /64 network for IPv6,
/// because one IPv6 host usually holds a whole /64 and could otherwise rotate addresses to get
/// a fresh allowance (and a fresh lockout count) with every request. IPv4-mapped IPv6
/// addresses count as their IPv4 one.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let network = u128::from(v6) & (u128::MAX << 64);
                IpAddr::V6(Ipv6Addr::from(network))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_of_one_64_share_an_allowance() {
        assert_eq!(
            client_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            client_key("2001:db8:1:2:bbbb::2".parse().unwrap())
        );
        assert_ne!(
            client_key("2001:db8:1:2::1".parse().unwrap()),
            client_key("2001:db8:1:3::1".parse().unwrap())
        );
        assert_eq!(
            client_key("::ffff:192.0.2.7".parse().unwrap()),
            client_key("192.0.2.7".parse().unwrap())
        );
    }
}
