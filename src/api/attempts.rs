//! Per-client-address rate limit on password attempts: at most
//! `IOTBIND_PASSWORD_ATTEMPTS_PER_MINUTE` (20) requests that carry a password (login, bind,
//! register, password change, unbind) per minute from one client address, across all
//! usernames.
//!
//! The per-account lockout stops guessing one account's password, but not one address trying
//! one or two passwords against every account (password spraying), which never trips any
//! account's lock; and every attempt costs an argon2 hash. Refused attempts are answered 429
//! `too_many_attempts` with `Retry-After`.
//!
//! Where it is taken: a handler takes [`ClientAttempts`] (the request's client's share) as an
//! argument and passes it into the service call as its [`AttemptSource`], and the service asks
//! it right before the work the brake exists to
//! save (see `service::credentials`). Checking it up front in the handler would answer 429 to
//! requests that the API orders ahead of credentials (an unknown bind ticket, a weak new
//! password) and spend an attempt on requests that never hash.
//!
//! The client is the one [`ClientAddress`] names: behind trusted proxies, the forwarded
//! address. It is kept in this process's memory (governor's GCRA, keyed by address), so N
//! replicas allow up to N times the limit: it is a brake on one noisy client, while the
//! lockout, which lives in the database, is the hard guarantee per account.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use poem::error::GetDataError;
use poem::{FromRequest, Request, RequestBody};

use super::client_address::ClientAddress;
use crate::net::client_key;
use crate::service::credentials::AttemptSource;

/// The limiter shared by every request; `None` inside when the limit is off.
pub struct PasswordAttempts {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
}

impl PasswordAttempts {
    /// `per_minute` attempts per client address per minute, which is also the burst it may
    /// make at once; `None` allows every attempt.
    pub fn new(per_minute: Option<NonZeroU32>) -> Self {
        PasswordAttempts {
            limiter: per_minute.map(|n| DefaultKeyedRateLimiter::keyed(Quota::per_minute(n))),
            clock: DefaultClock::default(),
        }
    }

    /// The attempts of `client`, for one request's service call.
    pub fn for_client(&self, client: &ClientAddress) -> ClientAttempts<'_> {
        let key = client_key(client.0);
        ClientAttempts {
            attempts: self,
            key,
            lockout_key: key.to_string(),
        }
    }

    /// Takes one attempt for `key`, or the seconds until the next one is allowed.
    fn take(&self, key: &IpAddr) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            // Rounded up: a client that waits the advertised seconds must not be refused again.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            secs.max(1)
        })
    }

    /// Forgets addresses whose allowance is full again, so the map does not grow with every
    /// address ever seen; called periodically.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// One client's share of [`PasswordAttempts`], handed to the service as its
/// [`AttemptSource`].
pub struct ClientAttempts<'a> {
    attempts: &'a PasswordAttempts,
    key: IpAddr,
    lockout_key: String,
}

/// A handler's argument: the attempts of the client the request envelope found, from the
/// limiter the app shares.
impl<'a> FromRequest<'a> for ClientAttempts<'a> {
    async fn from_request(request: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let attempts = request
            .data::<Arc<PasswordAttempts>>()
            .ok_or_else(|| GetDataError(std::any::type_name::<PasswordAttempts>()))?;
        let client = request
            .data::<ClientAddress>()
            .ok_or_else(|| GetDataError(std::any::type_name::<ClientAddress>()))?;
        Ok(attempts.for_client(client))
    }
}

impl AttemptSource for ClientAttempts<'_> {
    fn client(&self) -> &str {
        &self.lockout_key
    }

    fn admit(&self) -> Result<(), u64> {
        self.attempts.take(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PER_MINUTE: u32 = 20;

    fn remote(addr: &str) -> ClientAddress {
        ClientAddress(addr.parse::<std::net::SocketAddr>().unwrap().ip())
    }

    fn limited() -> PasswordAttempts {
        PasswordAttempts::new(NonZeroU32::new(PER_MINUTE))
    }

    #[test]
    fn an_address_gets_its_allowance_then_a_refusal_with_the_seconds_to_wait() {
        let attempts = limited();
        for _ in 0..PER_MINUTE {
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
        let attempts = limited();
        for _ in 0..=PER_MINUTE {
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
        let attempts = limited();
        for _ in 0..10 * PER_MINUTE {
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
    fn with_the_limit_off_every_attempt_is_admitted_and_the_lockout_key_stays() {
        let attempts = PasswordAttempts::new(None);
        for _ in 0..10 * PER_MINUTE {
            assert!(
                attempts
                    .for_client(&remote("192.0.2.1:1000"))
                    .admit()
                    .is_ok()
            );
        }
        assert_eq!(
            attempts
                .for_client(&remote("[2001:db8:1:2::9]:1000"))
                .client(),
            "2001:db8:1:2::"
        );
    }
}
