//! Per-client-address rate limit on password attempts: at most
//! [`ATTEMPTS_PER_MINUTE`] requests that carry a password (login, bind, password change,
//! unbind) per minute from one address, across all usernames.
//!
//! The per-account lockout of DESIGN §3.1 stops guessing one account's password, but not one
//! address trying one or two passwords against every account (password spraying), which never
//! trips any account's lock; and every attempt costs an argon2 hash. Refused attempts are
//! answered 429 `too_many_attempts` with `Retry-After`.
//!
//! Where it is taken: a handler passes [`PasswordAttempts::for_client`] into the service call
//! as its [`AttemptGate`], and the service asks it right before it would hash a password (see
//! `service::credentials`). Checking it up front in the handler would answer 429 to requests
//! that DESIGN §3 orders ahead of credentials (an unknown bind ticket, a weak new password) and
//! spend an attempt on requests that never hash; splitting each service call around the check
//! would leak its half-done state into the API layer. The gate keeps the check in the one
//! place that knows when hashing starts, and the limit (an HTTP concern: client addresses)
//! out of the service layer.
//!
//! It is kept in this process's memory (governor's GCRA, keyed by address), so N replicas
//! behind a load balancer allow up to N times the limit: it is a brake on one noisy client,
//! while the lockout, which lives in the database, is the hard guarantee per account. Behind a
//! reverse proxy every client has the proxy's address; the deployment must then rate limit at
//! the proxy (DESIGN leaves TLS termination and the edge to the deployer).

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use poem::web::RemoteAddr;

use crate::service::credentials::AttemptGate;

/// Password attempts one client address may make per minute; also the burst it may make at
/// once. A person mistyping needs a handful; a script spraying passwords needs thousands.
pub const ATTEMPTS_PER_MINUTE: u32 = 20;

/// The limiter shared by every request; cheap to clone behind the `Arc` in the state.
pub struct PasswordAttempts {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl Default for PasswordAttempts {
    fn default() -> Self {
        Self::new()
    }
}

impl PasswordAttempts {
    pub fn new() -> Self {
        let per_minute = NonZeroU32::new(ATTEMPTS_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        PasswordAttempts {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_minute(per_minute)),
            clock: DefaultClock::default(),
        }
    }

    /// The gate of the client at `remote`, for one request's service call. A request whose
    /// peer address is not IP (it cannot happen on the TCP listener) is not limited rather
    /// than refused.
    pub fn for_client(&self, remote: &RemoteAddr) -> ClientAttempts<'_> {
        ClientAttempts {
            attempts: self,
            key: remote.as_socket_addr().map(|addr| client_key(addr.ip())),
        }
    }

    /// Takes one attempt for `key`, or the seconds until the next one is allowed.
    fn take(&self, key: &IpAddr) -> Result<(), u64> {
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            // Rounded up: a client that waits the advertised seconds must not be refused again.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            secs.max(1)
        })
    }

    /// Forgets addresses whose allowance is full again, so the map does not grow with every
    /// address ever seen; called periodically.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// One client's share of [`PasswordAttempts`], handed to the service as its [`AttemptGate`].
pub struct ClientAttempts<'a> {
    attempts: &'a PasswordAttempts,
    key: Option<IpAddr>,
}

impl AttemptGate for ClientAttempts<'_> {
    fn admit(&self) -> Result<(), u64> {
        match &self.key {
            Some(key) => self.attempts.take(key),
            None => Ok(()),
        }
    }
}

/// The key of a client address: the address itself for IPv4, its /64 network for IPv6,
/// because one IPv6 host usually holds a whole /64 and could otherwise rotate addresses to get
/// a fresh allowance with every request. IPv4-mapped IPv6 addresses count as their IPv4 one.
fn client_key(ip: IpAddr) -> IpAddr {
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

    fn remote(addr: &str) -> RemoteAddr {
        RemoteAddr(poem::Addr::SocketAddr(addr.parse().unwrap()))
    }

    #[test]
    fn an_address_gets_its_allowance_then_a_refusal_with_the_seconds_to_wait() {
        let attempts = PasswordAttempts::new();
        for _ in 0..ATTEMPTS_PER_MINUTE {
            assert!(
                attempts
                    .for_client(&remote("192.0.2.1:1000"))
                    .admit()
                    .is_ok()
            );
        }
        let retry_after = attempts
            .for_client(&remote("192.0.2.1:1001"))
            .admit()
            .unwrap_err();
        assert!((1..=60).contains(&retry_after), "{retry_after}");
    }

    #[test]
    fn other_addresses_keep_their_own_allowance() {
        let attempts = PasswordAttempts::new();
        for _ in 0..=ATTEMPTS_PER_MINUTE {
            let _ = attempts.for_client(&remote("192.0.2.1:1000")).admit();
        }
        assert!(
            attempts
                .for_client(&remote("192.0.2.2:1000"))
                .admit()
                .is_ok()
        );
    }

    #[test]
    fn a_gate_that_is_never_asked_takes_nothing() {
        let attempts = PasswordAttempts::new();
        for _ in 0..10 * ATTEMPTS_PER_MINUTE {
            let _unused = attempts.for_client(&remote("192.0.2.1:1000"));
        }
        assert!(
            attempts
                .for_client(&remote("192.0.2.1:1000"))
                .admit()
                .is_ok()
        );
    }

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
