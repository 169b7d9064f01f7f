//! Per-session limits of the embedded broker: devices get the listener's small queue and
//! in-flight window, the backend's own session the larger ones it needs.

use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmqtt::codec::types::Publish;
use rmqtt::fitter::{DefaultFitter, Fitter, FitterManager};
use rmqtt::types::{ConnectInfo, Disconnect, FitterType, Id, ListenerConfig};

/// The backend's own sessions receive every device's status and command results, and they
/// wait behind the telemetry writer's queue too: a whole fleet reconnecting after an outage
/// is a status message per device within seconds, which the device-sized queue above would
/// overflow within a blink. At a few hundred bytes a message this bounds it to some tens of
/// MiB.
const BACKEND_MAX_QUEUED_MESSAGES: usize = 200_000;
/// In-flight window towards the backend: large enough that acknowledgements crossing the
/// loopback never throttle delivery.
const BACKEND_MAX_INFLIGHT: u16 = 1_024;
/// Per-session limits: a device's session gets the listener's (small) limits, the backend's
/// own session the larger ones it needs, since it alone receives every device's telemetry.
pub(super) struct SessionLimits {
    pub(super) backend_username: String,
}

impl FitterManager for SessionLimits {
    fn create(&self, conn_info: Arc<ConnectInfo>, id: Id, cfg: ListenerConfig) -> FitterType {
        let is_backend = id.username.as_deref() == Some(self.backend_username.as_str());
        let defaults = DefaultFitter::new(conn_info, id, cfg);
        if is_backend {
            Arc::new(BackendLimits(defaults))
        } else {
            Arc::new(defaults)
        }
    }
}

/// The listener's limits except for the backend's queue and in-flight window.
struct BackendLimits(DefaultFitter);

#[async_trait]
impl Fitter for BackendLimits {
    fn keep_alive(&self, keep_alive: &mut u16) -> rmqtt::Result<u16> {
        self.0.keep_alive(keep_alive)
    }

    fn max_mqueue_len(&self) -> usize {
        BACKEND_MAX_QUEUED_MESSAGES
    }

    fn mqueue_rate_limit(&self) -> (NonZeroU32, Duration) {
        self.0.mqueue_rate_limit()
    }

    fn max_inflight(&self) -> NonZeroU16 {
        NonZeroU16::new(BACKEND_MAX_INFLIGHT).unwrap_or(NonZeroU16::MIN)
    }

    fn session_expiry_interval(&self, disconnect: Option<&Disconnect>) -> Duration {
        self.0.session_expiry_interval(disconnect)
    }

    fn message_expiry_interval(&self, publish: &Publish) -> Duration {
        self.0.message_expiry_interval(publish)
    }

    fn max_client_topic_aliases(&self) -> u16 {
        self.0.max_client_topic_aliases()
    }

    fn max_server_topic_aliases(&self) -> u16 {
        self.0.max_server_topic_aliases()
    }
}
