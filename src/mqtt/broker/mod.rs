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
//! [`routing`]) and acknowledges a QoS 1 publish only once the intake's bounded
//! queue has taken it. A database that falls behind therefore slows the devices down instead
//! of filling the broker's queues until it drops what it already acknowledged.
//!
//! The parts, by concern: [`access`] (who may connect, publish and subscribe), [`limits`]
//! (per-session queues and windows) and [`routing`] (shared subscriptions and telemetry into
//! this process); this file starts and stops the broker.

pub mod access;
pub mod limits;
pub mod routing;

use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rmqtt::context::ServerContext;
use rmqtt::hook::Type;
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use rmqtt::shared::DefaultShared;
use secrecy::SecretString;
use tokio::sync::watch;
use uuid::Uuid;

use self::access::{AccessHook, DeviceAccess, FailedLogins};
pub use self::access::{ClientAuthenticator, LoginOutcome};
use self::limits::SessionLimits;
use self::routing::{ShareByDevice, TelemetryInProcess, TelemetryIntake};
use super::client::Inbound;
use super::front_door::{FrontDoor, HandshakeLimits};

/// Largest MQTT packet the broker accepts: telemetry is at most 16 KiB and commands carry at
/// most the 64 KiB HTTP body they came in; bigger packets end the sender's connection.
const MAX_PACKET_BYTES: u32 = 128 * 1024;
/// QoS 1/2 messages in flight per session; with the queue below it bounds a slow
/// subscriber's memory.
const MAX_INFLIGHT: u16 = 64;
/// Messages queued per session while the subscriber is busy or offline; older ones drop
/// beyond it.
const MAX_QUEUED_MESSAGES: usize = 1_000;
/// How long a device's persistent session (clean session off) outlives its connection.
const SESSION_EXPIRY: Duration = Duration::from_secs(3600);
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
