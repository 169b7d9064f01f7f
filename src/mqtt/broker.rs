//! The embedded MQTT broker (rmqtt) that runs in the server process by default.
//!
//! Its hooks make it iotbind's broker rather than an open one: a device logs in with client
//! id = username = its device id and its MQTT password, checked against the stored hash; it
//! may then publish only to its own upstream topics (its last will included) and subscribe
//! only to its own commands.
//! The backend's own client logs in with a credential of its own and has full access.
//!
//! Telemetry, by far the busiest stream, does not take the detour through that client: the
//! broker hands each telemetry message to the backend's intake in this process (see
//! [`TelemetryInProcess`]) and acknowledges a QoS 1 publish only once the intake's bounded
//! queue has taken it. A database that falls behind therefore slows the devices down instead
//! of filling the broker's queues until it drops what it already acknowledged.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU16, NonZeroU32};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rmqtt::codec::types::Publish;
use rmqtt::codec::v5::SubscribeAckReason;
use rmqtt::context::ServerContext;
use rmqtt::fitter::{DefaultFitter, Fitter, FitterManager};
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use rmqtt::session::Session;
use rmqtt::shared::{DefaultShared, Entry, RetainLoadCallback, Shared};
use rmqtt::subscribe::SharedSubscription;
use rmqtt::types::{
    AuthResult, ClientId, ConnectInfo, Disconnect, FitterType, ForwardedCount, ForwardedRecipients,
    From as Sender, Id, IsOnline, LastWill, ListenerConfig, MsgID, NodeId, PublishAclResult,
    Reason, SessionStatus, SharedGroup, SubRelations, SubRelationsMap, SubsSearchParams,
    SubsSearchResult, SubscribeAclResult, SubscriptionIdentifier, SubscriptionOptions, To,
    TopicFilter, TopicName,
};
use secrecy::SecretString;
use tokio::sync::watch;
use uuid::Uuid;

use super::client::Inbound;
use super::front_door::{FrontDoor, HandshakeLimits};
use super::topics::{self, DeviceTopic, TopicKind};

/// Largest MQTT packet the broker accepts: telemetry is at most 16 KiB and commands carry at
/// most the 64 KiB HTTP body they came in; bigger packets end the sender's connection.
const MAX_PACKET_BYTES: u32 = 128 * 1024;
/// QoS 1/2 messages in flight per session; with the queue below it bounds a slow
/// subscriber's memory.
const MAX_INFLIGHT: u16 = 64;
/// Messages queued per session while the subscriber is busy or offline; older ones drop
/// beyond it.
const MAX_QUEUED_MESSAGES: usize = 1_000;
/// The backend's own sessions receive every device's status and command results, and they
/// wait behind the telemetry writer's queue too: a whole fleet reconnecting after an outage
/// is a status message per device within seconds, which the device-sized queue above would
/// overflow within a blink. At a few hundred bytes a message this bounds it to some tens of
/// MiB.
const BACKEND_MAX_QUEUED_MESSAGES: usize = 200_000;
/// In-flight window towards the backend: large enough that acknowledgements crossing the
/// loopback never throttle delivery.
const BACKEND_MAX_INFLIGHT: u16 = 1_024;
/// How long a device's persistent session (clean session off) outlives its connection.
const SESSION_EXPIRY: Duration = Duration::from_secs(3600);
/// Addresses remembered as out of failed logins, at most.
const BLOCKED_ADDRESSES_CAPACITY: u64 = 100_000;

/// The username and password of the backend's own connection.
#[derive(Clone)]
pub struct BackendCredential {
    pub username: String,
    pub password: SecretString,
}

impl BackendCredential {
    /// A fresh random credential, for a backend that is the only client with full access.
    pub fn generate() -> BackendCredential {
        BackendCredential {
            username: format!("iotbind-backend-{}", Uuid::new_v4().simple()),
            password: SecretString::from(random_password()),
        }
    }
}

/// 256 random bits, URL-safe base64: a password nobody guesses.
fn random_password() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// A running embedded broker.
pub struct EmbeddedBroker {
    addr: SocketAddr,
    front_door: FrontDoor,
    task: tokio::task::JoinHandle<()>,
    access: Arc<DeviceAccess>,
    /// Where telemetry goes; empty until the backend's intake is ready and again from shutdown
    /// on. While it is empty a telemetry publish waits, unacknowledged.
    intake: watch::Sender<Option<Arc<dyn TelemetryIntake>>>,
}

/// How the embedded broker treats clients that have not logged in, or fail to.
#[derive(Debug, Clone, Copy)]
pub struct ConnectLimits {
    /// How long a new connection has to send its CONNECT.
    pub handshake_timeout: Duration,
    /// Connections one client address may have open before they have sent their CONNECT.
    pub handshakes_per_address: usize,
    /// Refused CONNECTs one client address may make per minute before its CONNECTs are
    /// refused unchecked until the allowance refills; `None`: no limit.
    pub failed_logins_per_minute: Option<NonZeroU32>,
}

impl EmbeddedBroker {
    /// Binds `listen` and starts serving devices, authenticated against `db`.
    pub async fn start(
        listen: SocketAddr,
        authenticator: Arc<dyn ClientAuthenticator>,
        backend_username: String,
        limits: ConnectLimits,
    ) -> anyhow::Result<EmbeddedBroker> {
        // The busy check samples CPU load to refuse connections when the machine is busy; we
        // would rather queue than refuse devices, and it is one task less.
        let scx = ServerContext::new().busy_check_enable(false).build().await;
        let (intake, intake_slot) = watch::channel(None);
        *scx.extends.shared_mut().await = Box::new(TelemetryInProcess {
            routing: DefaultShared::new(Some(scx.clone())),
            intake: intake_slot,
        });
        *scx.extends.shared_subscription_mut().await = Box::new(ShareByDevice);
        *scx.extends.fitter_mgr_mut().await = Box::new(SessionLimits { backend_username });

        let access = Arc::new(DeviceAccess {
            authenticator: RwLock::new(Some(authenticator)),
            failed_logins: FailedLogins::new(limits.failed_logins_per_minute),
        });
        let register = scx.extends.hook_mgr().register();
        for hook in [
            Type::ClientAuthenticate,
            Type::ClientSubscribeCheckAcl,
            Type::MessagePublishCheckAcl,
            Type::MessageDropped,
        ] {
            register
                .add(hook, Box::new(AccessHook(access.clone())))
                .await;
        }
        register.start().await;

        // Devices connect to the front door on `listen`; the broker itself listens on the
        // loopback only, for the front door's relayed connections, each opened with a PROXY
        // header that names the device's address.
        let public = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|err| bind_error(&err.into(), listen))?;
        let internal = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = Builder::new()
            .name("devices")
            .laddr(internal)
            .proxy_protocol(true)
            .handshake_timeout(limits.handshake_timeout)
            .allow_anonymous(false)
            .max_packet_size(MAX_PACKET_BYTES)
            .max_inflight(NonZeroU16::new(MAX_INFLIGHT).unwrap_or(NonZeroU16::MIN))
            .max_mqueue_len(MAX_QUEUED_MESSAGES)
            .session_expiry_interval(SESSION_EXPIRY)
            .max_session_expiry_interval(SESSION_EXPIRY)
            .nodelay(true)
            // A restart must not wait for the old connections' TIME_WAIT to clear.
            .reuseaddr(Some(true))
            .bind()
            .map_err(|err| anyhow::anyhow!("cannot open the broker's own listener: {err}"))?
            .tcp()
            .map_err(|err| anyhow::anyhow!("cannot serve MQTT on {internal}: {err}"))?;
        let broker_addr = listener
            .local_addr()
            .map_err(|err| anyhow::anyhow!("cannot read the MQTT listener's address: {err}"))?;
        let front_door = FrontDoor::open(
            public,
            broker_addr,
            HandshakeLimits {
                timeout: limits.handshake_timeout,
                per_address: limits.handshakes_per_address,
                max_packet_bytes: MAX_PACKET_BYTES as usize,
            },
        );
        let addr = front_door.addr();
        let server = MqttServer::new(scx).listener(listener).build();
        let upkeep_access = access.clone();
        let task = tokio::spawn(async move {
            // The failed-login allowance keeps every address it saw until told to forget
            // those that are whole again.
            let upkeep = async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    upkeep_access.failed_logins.forget_idle();
                }
            };
            tokio::select! {
                result = server.run() => {
                    if let Err(err) = result {
                        tracing::error!(error = %err, "the embedded MQTT broker stopped");
                    }
                }
                () = upkeep => {}
            }
        });
        tracing::info!("embedded MQTT broker listening on mqtt://{addr}");
        Ok(EmbeddedBroker {
            addr,
            front_door,
            task,
            access,
            intake,
        })
    }

    /// From now on, devices' telemetry goes to `inbound`, in this process. Publishes that
    /// arrived before were waiting for this and go on now.
    pub fn take_telemetry(&self, inbound: impl Inbound) {
        self.intake.send_replace(Some(Arc::new(inbound)));
    }

    /// Takes no more telemetry: a telemetry publish arriving from now on is never acknowledged,
    /// so a QoS 1 device still holds it and may send it again once it reconnects. Lets go of
    /// the intake, so the queue behind it can close.
    pub fn stop_taking_telemetry(&self) {
        self.intake.send_replace(None);
    }

    /// The address devices connect to (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections and lets go of the database and the telemetry intake.
    pub fn stop(&self) {
        self.stop_taking_telemetry();
        self.front_door.close();
        self.task.abort();
        self.access.release();
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind_error(err: &anyhow::Error, addr: SocketAddr) -> anyhow::Error {
    let in_use = err
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::AddrInUse);
    if in_use {
        anyhow::anyhow!(
            "cannot listen for MQTT on {addr}: port {} is already in use (is another broker \
             running?); set IOTBIND_MQTT_LISTEN (or --mqtt-listen) to a free address, e.g. \
             127.0.0.1:1884, or point IOTBIND_MQTT_URL at the broker that is already running",
            addr.port()
        )
    } else {
        anyhow::anyhow!("cannot listen for MQTT on {addr}: {err}; check IOTBIND_MQTT_LISTEN")
    }
}

/// Who may connect, and what each client may do.
struct DeviceAccess {
    /// rmqtt's server context refers to itself and so is never freed; the hooks inside it
    /// must therefore let go of what they hold (the authenticator holds the database) when
    /// the broker stops, or it outlives the broker (one leaked pool per server started in a
    /// process, as the tests do).
    authenticator: RwLock<Option<Arc<dyn ClientAuthenticator>>>,
    /// Refused CONNECTs per client address.
    failed_logins: FailedLogins,
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
    fn release(&self) {
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
struct FailedLogins {
    allowance: Option<governor::DefaultKeyedRateLimiter<IpAddr>>,
    /// Address → when it may be checked again.
    blocked: moka::sync::Cache<IpAddr, std::time::Instant>,
}

impl FailedLogins {
    fn new(per_minute: Option<NonZeroU32>) -> FailedLogins {
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

    fn forget_idle(&self) {
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

struct AccessHook(Arc<DeviceAccess>);

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

/// Per-session limits: a device's session gets the listener's (small) limits, the backend's
/// own session the larger ones it needs, since it alone receives every device's telemetry.
struct SessionLimits {
    backend_username: String,
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

/// Shared subscriptions for the embedded broker: each device's messages go to one member of
/// the group, chosen by the device, so one device's telemetry stays in order.
struct ShareByDevice;

#[async_trait]
impl SharedSubscription for ShareByDevice {
    fn is_supported(&self) -> bool {
        true
    }

    async fn choice(
        &self,
        _scx: &ServerContext,
        _group: &SharedGroup,
        publisher_id: &Id,
        _topic: &TopicName,
        ncs: &[(
            NodeId,
            ClientId,
            SubscriptionOptions,
            Option<Vec<SubscriptionIdentifier>>,
            Option<IsOnline>,
        )],
    ) -> Option<(usize, IsOnline)> {
        let online: Vec<usize> = ncs
            .iter()
            .enumerate()
            .filter(|(_, (.., is_online))| is_online.unwrap_or(true))
            .map(|(index, _)| index)
            .collect();
        let candidates = if online.is_empty() {
            (0..ncs.len()).collect()
        } else {
            online
        };
        if candidates.is_empty() {
            return None;
        }
        let hash = publisher_id.client_id.bytes().fold(0u64, |hash, byte| {
            hash.wrapping_mul(31).wrapping_add(u64::from(byte))
        });
        let index = candidates[(hash % candidates.len() as u64) as usize];
        Some((index, ncs[index].4.unwrap_or(true)))
    }
}

/// Messages rmqtt's routing could not deliver, and to whom.
type Undelivered = Vec<(To, Sender, rmqtt::types::Publish, Reason)>;

/// The backend's telemetry intake as the broker holds it: [`Inbound`] made object-safe.
trait TelemetryIntake: Send + Sync {
    fn take(
        &self,
        topic: DeviceTopic,
        payload: Bytes,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

impl<I: Inbound> TelemetryIntake for I {
    fn take(
        &self,
        topic: DeviceTopic,
        payload: Bytes,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.deliver(topic, payload))
    }
}

/// rmqtt's own message routing, except that device telemetry goes to the backend's intake in
/// this process instead of to subscribers.
///
/// rmqtt calls `forwards` for every publish that passed the ACL hook, from the publishing
/// device's session, and acknowledges a QoS 1 publish once it returns. Waiting here for room in
/// the intake's bounded queue is therefore backpressure all the way to the device: its
/// unacknowledged messages stay with it, and nothing the broker acknowledged can be dropped
/// later for want of room. It also spares every message a second trip through the broker and
/// the backend's MQTT client.
///
/// So telemetry is not routed to MQTT subscribers of this broker, other replicas included:
/// this process stores all of it. Every other message is routed as usual.
struct TelemetryInProcess {
    routing: DefaultShared,
    intake: watch::Receiver<Option<Arc<dyn TelemetryIntake>>>,
}

impl TelemetryInProcess {
    /// Hands one telemetry message to the intake, waiting while there is none.
    async fn take(&self, topic: DeviceTopic, payload: Bytes) {
        let mut slot = self.intake.clone();
        let intake = loop {
            if let Some(intake) = slot.borrow_and_update().clone() {
                break intake;
            }
            if slot.changed().await.is_err() {
                // The broker is gone, and the message with it: never acknowledge.
                std::future::pending::<()>().await;
            }
        };
        intake.take(topic, payload).await;
    }
}

#[async_trait]
impl Shared for TelemetryInProcess {
    fn entry(&self, id: Id) -> Box<dyn Entry> {
        self.routing.entry(id)
    }

    fn exist(&self, client_id: &str) -> bool {
        self.routing.exist(client_id)
    }

    async fn forwards(
        &self,
        msg_id: Option<MsgID>,
        from: Sender,
        publish: rmqtt::types::Publish,
    ) -> Result<ForwardedCount, (ForwardedCount, Undelivered)> {
        match DeviceTopic::parse(&publish.topic) {
            Some(topic)
                if topic.kind == TopicKind::Telemetry && publish.target_clientid.is_none() =>
            {
                self.take(topic, publish.payload.clone()).await;
                Ok(1)
            }
            _ => self.routing.forwards(msg_id, from, publish).await,
        }
    }

    async fn forwards_and_get_shareds(
        &self,
        from: Sender,
        publish: rmqtt::types::Publish,
    ) -> Result<(SubRelationsMap, ForwardedRecipients), (ForwardedRecipients, Undelivered)> {
        self.routing.forwards_and_get_shareds(from, publish).await
    }

    async fn forwards_to(
        &self,
        from: Sender,
        publish: &rmqtt::types::Publish,
        relations: SubRelations,
        msg_id: Option<MsgID>,
    ) -> Result<ForwardedRecipients, (ForwardedRecipients, Undelivered)> {
        self.routing
            .forwards_to(from, publish, relations, msg_id)
            .await
    }

    fn iter(&self) -> Box<dyn Iterator<Item = Box<dyn Entry>> + Sync + Send + '_> {
        self.routing.iter()
    }

    fn random_session(&self) -> Option<Session> {
        self.routing.random_session()
    }

    async fn session_status(&self, client_id: &str) -> Option<SessionStatus> {
        self.routing.session_status(client_id).await
    }

    async fn client_states_count(&self) -> usize {
        self.routing.client_states_count().await
    }

    fn sessions_count(&self) -> usize {
        self.routing.sessions_count()
    }

    async fn query_subscriptions(&self, q: &SubsSearchParams) -> Vec<SubsSearchResult> {
        self.routing.query_subscriptions(q).await
    }

    async fn subscriptions_count(&self) -> usize {
        self.routing.subscriptions_count().await
    }

    async fn retain_load_with(
        &self,
        topic_filter: &TopicFilter,
        cb: Arc<dyn RetainLoadCallback>,
    ) -> rmqtt::Result<Vec<(NodeId, MsgID)>> {
        self.routing.retain_load_with(topic_filter, cb).await
    }
}
