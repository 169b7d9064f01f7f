//! Who may log in to an MQTT broker as whom: the backend with its own credential, and each
//! device with client id = username = its device id and its MQTT password.
//!
//! One check for every broker: the embedded one asks it from its hooks (through the
//! [`ClientAuthenticator`] port the `mqtt` adapter defines), and an external broker asks it
//! over HTTP (`/api/v1/mqtt/auth`). What a logged-in client may then do on which topic is the
//! topic contract of [`crate::mqtt::topics`].
//!
//! Device secrets are 256 random bits stored as SHA-256, so a check costs a digest, not an
//! argon2 hash; the stored digest of each device is cached for a short while, so a reconnect
//! storm reads the database once per device. Rotating a device's password forgets its cached
//! digest here at once; other replicas refuse the old password once their cached copy expires
//! ([`CREDENTIAL_CACHE_TTL`]).

use std::time::Duration;

use async_trait::async_trait;
use sea_orm::DatabaseConnection;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{devices, secrets};
use crate::mqtt::broker::{ClientAuthenticator, LoginOutcome};
use crate::mqtt::topics;

/// How long a device's stored password digest is trusted without asking the database again:
/// also how long another replica may still accept a password that was just rotated.
pub const CREDENTIAL_CACHE_TTL: Duration = Duration::from_secs(10);
const CREDENTIAL_CACHE_CAPACITY: u64 = 100_000;

/// The backend's own broker login: full access to every device topic.
#[derive(Clone)]
pub struct BackendLogin {
    pub username: String,
    pub password: SecretString,
}

/// What a client asks to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicAccess {
    Publish,
    Subscribe,
}

/// Checks broker logins against the device records; cheap to clone.
#[derive(Clone)]
pub struct BrokerLogins {
    db: DatabaseConnection,
    backend: Option<BackendLogin>,
    /// Device id → SHA-256 of its MQTT password (`None`: no such device).
    digests: moka::future::Cache<Uuid, Option<String>>,
}

impl BrokerLogins {
    /// `backend` is the login that gets full access, if there is one.
    pub fn new(db: DatabaseConnection, backend: Option<BackendLogin>) -> BrokerLogins {
        BrokerLogins {
            db,
            backend,
            digests: moka::future::Cache::builder()
                .max_capacity(CREDENTIAL_CACHE_CAPACITY)
                .time_to_live(CREDENTIAL_CACHE_TTL)
                .build(),
        }
    }

    /// Decides a login.
    pub async fn login(&self, client_id: &str, username: &str, password: &[u8]) -> LoginOutcome {
        if let Some(backend) = &self.backend
            && username == backend.username
        {
            // In constant time: this login may publish any device's commands.
            let expected = backend.password.expose_secret().as_bytes();
            return if bool::from(password.ct_eq(expected)) {
                LoginOutcome::Backend
            } else {
                LoginOutcome::BadCredentials
            };
        }
        let Some(device_id) = topics::canonical_device_id(username) else {
            return LoginOutcome::BadCredentials;
        };
        if client_id != username {
            return LoginOutcome::NotAuthorized;
        }
        let db = self.db.clone();
        let stored = self
            .digests
            .try_get_with(device_id, async move {
                devices::mqtt_password_hash(&db, device_id).await
            })
            .await;
        match stored {
            // Comparing digests: timing reveals nothing usable about the password itself.
            Ok(Some(digest)) if digest == secrets::digest(password) => {
                LoginOutcome::Device(device_id)
            }
            Ok(_) => LoginOutcome::BadCredentials,
            Err(err) => {
                tracing::warn!(%device_id, error = %err, "cannot check a device's MQTT password");
                LoginOutcome::Unavailable
            }
        }
    }

    /// Whether the client logged in as `username` with `client_id` may use `topic` (a topic
    /// name to publish to, or a filter to subscribe to): the backend everything, a device its
    /// own topics, anyone else nothing. The broker authenticated the client before it asks.
    pub fn may(&self, client_id: &str, username: &str, access: TopicAccess, topic: &str) -> bool {
        if self
            .backend
            .as_ref()
            .is_some_and(|backend| backend.username == username)
        {
            return true;
        }
        match topics::canonical_device_id(username) {
            Some(device_id) if client_id == username => match access {
                TopicAccess::Publish => topics::device_may_publish(device_id, topic),
                TopicAccess::Subscribe => topics::device_may_subscribe(device_id, topic),
            },
            _ => false,
        }
    }

    /// Forgets what is cached of `device_id`'s credential, after it changed.
    pub async fn forget(&self, device_id: Uuid) {
        self.digests.invalidate(&device_id).await;
    }
}

#[async_trait]
impl ClientAuthenticator for BrokerLogins {
    async fn authenticate(&self, client_id: &str, username: &str, password: &[u8]) -> LoginOutcome {
        self.login(client_id, username, password).await
    }
}
