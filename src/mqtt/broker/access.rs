//! Who may connect to the embedded broker and what each client may do: logins checked through
//! [`ClientAuthenticator`], a failed-login allowance per client address, and the per-device
//! publish and subscribe rules of [`topics`].

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use rmqtt::codec::v5::SubscribeAckReason;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::types::{AuthResult, Id, LastWill, PublishAclResult, Reason, SubscribeAclResult};
use uuid::Uuid;

use crate::mqtt::topics;

/// Addresses remembered as out of failed logins, at most.
const BLOCKED_ADDRESSES_CAPACITY: u64 = 100_000;

/// Who may connect, and what each client may do.
pub(super) struct DeviceAccess {
    /// rmqtt's server context refers to itself and so is never freed; the hooks inside it
    /// must therefore let go of what they hold (the authenticator holds the database) when
    /// the broker stops, or it outlives the broker (one leaked pool per server started in a
    /// process, as the tests do).
    pub(super) authenticator: RwLock<Option<Arc<dyn ClientAuthenticator>>>,
    /// Refused CONNECTs per client address.
    pub(super) failed_logins: FailedLogins,
}

/// What a broker login amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// The backend's own login: every topic.
    Backend,
    /// This device: its own topics only.
    Device(Uuid),
    /// Unknown client or wrong password.
    BadCredentials,
    /// Known, but not like this (a client id other than the username).
    NotAuthorized,
    /// The check could not be made (the database is away): refused, never let through.
    Unavailable,
}

/// The port through which the broker checks a login; the service layer implements it.
#[async_trait]
pub trait ClientAuthenticator: Send + Sync + 'static {
    async fn authenticate(&self, client_id: &str, username: &str, password: &[u8]) -> LoginOutcome;
}

impl DeviceAccess {
    pub(super) fn release(&self) {
        if let Ok(mut authenticator) = self.authenticator.write() {
            authenticator.take();
        }
    }

    /// Decides a CONNECT from `client` (its address, when the broker knows it). An address
    /// that has used up its failed-login allowance is refused before anything is looked up;
    /// every refusal counts against it.
    async fn authenticate(
        &self,
        client: Option<IpAddr>,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
        will_topic: Option<&str>,
    ) -> AuthResult {
        let key = client.map(crate::net::client_key);
        if key.is_some_and(|key| self.failed_logins.is_blocked(key)) {
            metrics::counter!(crate::metrics::MQTT_LOGINS_REFUSED, "reason" => "throttled")
                .increment(1);
            return AuthResult::NotAuthorized;
        }
        let result = self.check(client_id, username, password, will_topic).await;
        if !matches!(result, AuthResult::Allow(..)) {
            let reason = match result {
                AuthResult::BadUsernameOrPassword => "bad_credentials",
                _ => "not_authorized",
            };
            metrics::counter!(crate::metrics::MQTT_LOGINS_REFUSED, "reason" => reason).increment(1);
            if let Some(key) = key {
                self.failed_logins.count(key);
            }
        }
        result
    }

    async fn check(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
        will_topic: Option<&str>,
    ) -> AuthResult {
        let (Some(username), Some(password)) = (username, password) else {
            return AuthResult::BadUsernameOrPassword;
        };
        let Some(authenticator) = self.authenticator.read().ok().and_then(|a| a.clone()) else {
            return AuthResult::NotAuthorized;
        };
        match authenticator
            .authenticate(client_id, username, password)
            .await
        {
            LoginOutcome::Backend => AuthResult::Allow(true, None),
            // rmqtt publishes a last will without the publish check, so it is checked here,
            // once: a will on another device's topic would let this device vanish and speak
            // for that one.
            LoginOutcome::Device(device_id) => match will_topic {
                Some(topic) if !topics::device_may_publish(device_id, topic) => {
                    metrics::counter!(crate::metrics::MQTT_FORBIDDEN, "action" => "publish")
                        .increment(1);
                    tracing::debug!(%device_id, %topic, "connection with a forbidden last will refused");
                    AuthResult::NotAuthorized
                }
                _ => AuthResult::Allow(false, None),
            },
            LoginOutcome::BadCredentials => AuthResult::BadUsernameOrPassword,
            LoginOutcome::NotAuthorized | LoginOutcome::Unavailable => AuthResult::NotAuthorized,
        }
    }
}

/// Refused CONNECTs per client address: a keyed GCRA allowance (governor), and the addresses
/// that ran out of it, refused unchecked until they may try again. Without it, one address
/// could try thousands of passwords a second; with it, ten a minute.
pub(super) struct FailedLogins {
    allowance: Option<governor::DefaultKeyedRateLimiter<IpAddr>>,
    /// Address → when it may be checked again.
    blocked: moka::sync::Cache<IpAddr, std::time::Instant>,
}

impl FailedLogins {
    pub(super) fn new(per_minute: Option<NonZeroU32>) -> FailedLogins {
        FailedLogins {
            allowance: per_minute
                .map(|n| governor::DefaultKeyedRateLimiter::keyed(governor::Quota::per_minute(n))),
            // Entries outlive their block by little: a block lasts until one failure's worth of
            // allowance is back, at most a minute.
            blocked: moka::sync::Cache::builder()
                .max_capacity(BLOCKED_ADDRESSES_CAPACITY)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }

    fn is_blocked(&self, key: IpAddr) -> bool {
        self.blocked
            .get(&key)
            .is_some_and(|until| until > std::time::Instant::now())
    }

    /// Counts a refusal; the one that finds the allowance empty blocks the address.
    fn count(&self, key: IpAddr) {
        use governor::clock::{Clock, DefaultClock};
        let Some(allowance) = &self.allowance else {
            return;
        };
        if let Err(not_until) = allowance.check_key(&key) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            self.blocked.insert(key, std::time::Instant::now() + wait);
            tracing::info!(client = %key, "too many failed MQTT logins; refusing this address for {} s", wait.as_secs().max(1));
        }
    }

    pub(super) fn forget_idle(&self) {
        if let Some(allowance) = &self.allowance {
            allowance.retain_recent();
        }
    }
}

/// The device id of a session that logged in as a device (never the backend: superusers do
/// not reach the ACL hooks).
fn session_device(id: &Id) -> Option<Uuid> {
    id.username
        .as_ref()
        .and_then(|username| topics::canonical_device_id(username))
}

/// The rmqtt hooks that put [`DeviceAccess`] in front of every CONNECT, SUBSCRIBE and PUBLISH.
pub(super) struct AccessHook(pub(super) Arc<DeviceAccess>);

#[async_trait]
impl Handler for AccessHook {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::ClientAuthenticate(connect) => {
                let password = connect.password().map(|p| p.as_ref());
                let will = connect.last_will();
                let will_topic = will.as_ref().map(|will| match will {
                    LastWill::V3(will) => &*will.topic,
                    LastWill::V5(will) => &*will.topic,
                });
                let client = connect.id().remote_addr.map(|addr| addr.ip());
                let result = self
                    .0
                    .authenticate(
                        client,
                        connect.client_id(),
                        connect.username().map(|u| &**u),
                        password,
                        will_topic,
                    )
                    .await;
                (false, Some(HookResult::AuthResult(result)))
            }
            Parameter::ClientSubscribeCheckAcl(session, subscribe) => {
                let allowed = !subscribe.opts.has_shared_group()
                    && session_device(&session.id).is_some_and(|device| {
                        topics::device_may_subscribe(device, &subscribe.topic_filter)
                    });
                let result = if allowed {
                    SubscribeAclResult::new_success(subscribe.opts.qos(), None)
                } else {
                    metrics::counter!(crate::metrics::MQTT_FORBIDDEN, "action" => "subscribe")
                        .increment(1);
                    tracing::debug!(client = %session.id.client_id, filter = %subscribe.topic_filter, "forbidden subscription refused");
                    SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized)
                };
                (false, Some(HookResult::SubscribeAclResult(result)))
            }
            Parameter::MessagePublishCheckAcl(session, publish) => {
                let topic = &publish.inner.topic;
                let allowed = session_device(&session.id)
                    .is_some_and(|device| topics::device_may_publish(device, topic));
                let result = if allowed {
                    PublishAclResult::allow()
                } else {
                    metrics::counter!(crate::metrics::MQTT_FORBIDDEN, "action" => "publish")
                        .increment(1);
                    tracing::debug!(client = %session.id.client_id, %topic, "forbidden publish dropped");
                    PublishAclResult::rejected(false, None)
                };
                (false, Some(HookResult::PublishAclResult(result)))
            }
            Parameter::MessageDropped(_, _, _, reason) => {
                metrics::counter!(crate::metrics::MQTT_BROKER_DROPPED, "reason" => dropped_label(reason))
                    .increment(1);
                (true, acc)
            }
            _ => (true, acc),
        }
    }
}

/// A short, bounded label for why the broker dropped a message.
fn dropped_label(reason: &Reason) -> &'static str {
    match reason {
        Reason::MessageQueueFull => "queue_full",
        Reason::InflightWindowFull => "inflight_full",
        Reason::MessageExpiration => "expired",
        Reason::SessionExpiration => "session_expired",
        _ => "other",
    }
}
