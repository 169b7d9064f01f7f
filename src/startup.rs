//! Building the application from [`Settings`] (database, listeners, state) and running it
//! until a shutdown signal.
//!
//! Building and running are separate so tests can bind port 0, read the real port, and then
//! run the server in the background (the zero2prod pattern).

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api;
use crate::api::attempts::PasswordAttempts;
use crate::api::client_address::TrustedProxies;
use crate::config::{BrokerSettings, Settings};
use crate::db;
use crate::mqtt::broker::{BackendCredential, ConnectLimits, EmbeddedBroker};
use crate::mqtt::client::{ClientConfig, MqttClient, TelemetryRoute};
use crate::mqtt::dynsec::{BackendRole, DynamicSecurity, DynsecError, PendingAnswers};
use crate::service::auth::Logins;
use crate::service::broker_logins::{BackendLogin, BrokerLogins};
use crate::service::clock::Clock;
use crate::service::code_exchange::CodeExchange;
use crate::service::commands::{self, CommandRelay};
use crate::service::credentials::{self, Credentials};
use crate::service::device_messages::DeviceMessages;
use crate::service::me::Accounts;
use crate::service::passwords::PasswordHasher;
use crate::service::{devices, telemetry, tokens};
use crate::state::AppState;
use crate::wechat::client::WechatClient;

/// How long in-flight requests may take to finish after a shutdown signal.
const GRACEFUL_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// A built, not yet running, iotbind server.
pub struct Application {
    http: TcpListener,
    http_addr: SocketAddr,
    state: AppState,
    /// Password attempts per client address (in memory, per replica): the HTTP layer's brake.
    password_attempts: Arc<PasswordAttempts>,
    /// Present when the broker runs in this process.
    broker: Option<EmbeddedBroker>,
    /// Where devices connect.
    device_broker: (String, u16),
    telemetry_writer: tokio::task::JoinHandle<()>,
}

impl Application {
    /// Opens and migrates the database and binds the listeners; fails with a message that
    /// says what to change.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let db = db::connect(&settings.database).await?;
        db::migrate(&db).await?;

        let listener = tokio::net::TcpListener::bind(settings.http.addr)
            .await
            .map_err(|err| bind_error(err, settings.http.addr))?;
        let http_addr = listener
            .local_addr()
            .context("cannot read the HTTP listener's address")?;

        if settings.wechat_is_fake() {
            tracing::warn!(
                "DEVELOPMENT MODE: no IOTBIND_WECHAT_SECRET, so logins use the FAKE WeChat API \
                 at /dev/wechat. Never expose this server to real users."
            );
        }

        let clock = Clock::default();
        let signing_secret =
            tokens::signing_secret(&db, settings.tokens.jwt_secret.as_ref()).await?;
        let token_service = Arc::new(tokens::TokenService::new(
            &signing_secret,
            settings.tokens.access_ttl,
            settings.tokens.refresh_ttl,
            settings.tokens.refresh_reuse_grace,
            clock.clone(),
        ));
        let wechat = WechatClient::from_settings(&settings, http_addr)?;

        let mqtt_settings = &settings.mqtt;
        let (broker, logins, client_config) = match &mqtt_settings.broker {
            BrokerSettings::Embedded(embedded) => {
                // A configured credential lets other replicas share this broker; otherwise
                // only this process's client gets full access.
                let backend = match (&mqtt_settings.username, &mqtt_settings.password) {
                    (Some(username), Some(password)) => BackendCredential {
                        username: username.clone(),
                        password: password.clone(),
                    },
                    _ => BackendCredential::generate(),
                };
                let limits = ConnectLimits {
                    handshake_timeout: embedded.handshake_timeout,
                    handshakes_per_address: embedded.handshakes_per_address,
                    failed_logins_per_minute: embedded.failed_connects_per_minute,
                };
                let logins = BrokerLogins::new(
                    db.clone(),
                    Some(BackendLogin {
                        username: backend.username.clone(),
                        password: backend.password.clone(),
                    }),
                );
                let broker = EmbeddedBroker::start(
                    embedded.listen,
                    Arc::new(logins.clone()),
                    backend.username.clone(),
                    limits,
                )
                .await?;
                let addr = broker.addr();
                let host = if addr.ip().is_unspecified() {
                    "127.0.0.1".to_owned()
                } else {
                    addr.ip().to_string()
                };
                let config = ClientConfig {
                    host,
                    port: addr.port(),
                    username: Some(backend.username),
                    password: Some(backend.password),
                    telemetry: TelemetryRoute::InProcess,
                    // The embedded broker lives and dies with this process: a session that
                    // outlived the connection would have nobody to come back to it.
                    client_id: None,
                    dynsec_answers: None,
                    device_messages: true,
                };
                (Some(broker), logins, config)
            }
            BrokerSettings::External(external) => (
                None,
                // Answers the broker hooks: the backend's own login is the superuser.
                BrokerLogins::new(
                    db.clone(),
                    mqtt_settings
                        .username
                        .clone()
                        .zip(mqtt_settings.password.clone())
                        .map(|(username, password)| BackendLogin { username, password }),
                ),
                ClientConfig {
                    host: external.host.clone(),
                    port: external.port,
                    username: mqtt_settings.username.clone(),
                    password: mqtt_settings.password.clone(),
                    telemetry: if external.shared_subscription {
                        TelemetryRoute::Shared(external.share_group.clone())
                    } else {
                        TelemetryRoute::Plain
                    },
                    client_id: external.client_id.clone(),
                    dynsec_answers: external.dynsec.then(|| Arc::new(PendingAnswers::default())),
                    device_messages: true,
                },
            ),
        };
        let device_broker = (client_config.host.clone(), client_config.port);
        let dynsec_answers = client_config.dynsec_answers.clone();
        let (mqtt, connection) = MqttClient::new(client_config);
        let dynsec = dynsec_answers.map(|answers| DynamicSecurity::new(mqtt.clone(), answers));
        let command_relay = Arc::new(CommandRelay::new(db.clone(), mqtt.clone()));
        let (telemetry_queue, telemetry_writer) =
            telemetry::start_writer(db.clone(), settings.telemetry_queue);
        let device_messages = DeviceMessages {
            queue: telemetry_queue,
            commands: command_relay.clone(),
        };
        if let Some(broker) = &broker {
            broker.take_telemetry(device_messages.clone());
        }
        // The backend's role is settled on a connection of its own before the main one
        // starts: assigning it makes Mosquitto drop the client's connections, and the main
        // connection should subscribe once, with the rights already in place.
        if let (BrokerSettings::External(external), Some(username)) =
            (&settings.mqtt.broker, &settings.mqtt.username)
            && external.dynsec
            && let Err(err) = settle_backend_role(&settings, username).await
        {
            tracing::warn!(error = %err, "cannot settle the backend's role in Mosquitto's dynamic security yet; retrying in the background");
            if let Some(dynsec) = &dynsec {
                tokio::spawn(ensure_backend_role(
                    dynsec.clone(),
                    mqtt.clone(),
                    username.clone(),
                    external.share_group.clone(),
                ));
            }
        }
        mqtt.run(connection, device_messages);

        let password_attempts = Arc::new(PasswordAttempts::new(
            settings.http.password_attempts_per_minute,
        ));
        let credentials = Credentials::new(PasswordHasher::for_this_machine(), clock.clone());
        let state = AppState {
            logins: Logins {
                db: db.clone(),
                credentials: credentials.clone(),
                tokens: token_service.clone(),
                code_exchange: Arc::new(CodeExchange::new(wechat)),
                wechat_appid: settings.wechat.appid.clone(),
                bind_ticket_ttl: settings.tokens.bind_ticket_ttl,
                clock: clock.clone(),
            },
            accounts: Accounts {
                db: db.clone(),
                inline_reads: db::inline::InlineReader::for_url(&settings.database)?.map(Arc::new),
                credentials,
                wechat_appid: settings.wechat.appid.clone(),
            },
            db,
            settings: Arc::new(settings),
            tokens: token_service,
            metrics: crate::metrics::handle(),
            mqtt,
            commands: command_relay,
            broker_logins: logins,
            dynsec,
            clock,
        };
        Ok(Application {
            http: listener,
            http_addr,
            state,
            password_attempts,
            broker,
            device_broker,
            telemetry_writer,
        })
    }

    /// The address the HTTP API listens on (the real port when 0 was asked for).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where devices connect: the embedded broker's real address, or the external broker.
    pub fn device_broker_addr(&self) -> (String, u16) {
        self.device_broker.clone()
    }

    /// The shared state, for tests that inspect the database directly.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
    /// (up to 30 s), stops MQTT intake, writes the pending telemetry batch and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let upkeep = tokio::spawn(metrics_upkeep(
            self.state.metrics.clone(),
            self.password_attempts.clone(),
        ));
        let purge = tokio::spawn(purge_periodically(self.state.clone()));
        let sweeper = tokio::spawn(expire_overdue_commands(self.state.db.clone()));
        tracing::info!(
            "iotbind listening on http://{} (Swagger UI at /docs)",
            self.http_addr
        );
        let settings = &self.state.settings;
        tracing::info!(
            trusted_proxies = %TrustedProxies::new(settings.http.trusted_proxies.clone()).describe(),
            password_attempts_per_minute = %settings
                .http
                .password_attempts_per_minute
                .map_or("off".to_owned(), |n| format!("{n} per client address")),
            "client addresses and the password attempt limit"
        );
        let app = api::app(self.state.clone(), self.password_attempts.clone());
        let served = api::server::serve(
            self.http,
            app,
            self.state.settings.http.timeouts,
            shutdown,
            GRACEFUL_SHUTDOWN_TIMEOUT,
        )
        .await;
        upkeep.abort();
        purge.abort();
        sweeper.abort();
        // Intake stops first; the writer then sees its queue close, flushes and ends.
        if let Some(broker) = &self.broker {
            broker.stop_taking_telemetry();
        }
        self.state.mqtt.stop().await;
        if let Err(err) = self.telemetry_writer.await {
            tracing::error!(error = %err, "the telemetry writer failed at shutdown");
        }
        if let Some(broker) = &self.broker {
            broker.stop();
        }
        self.state.db.clone().close().await.ok();
        served.context("HTTP server failed")
    }
}

/// The exporter keeps histogram samples until upkeep folds them in, and the password rate
/// limiter keeps every address it saw until told to forget the idle ones; without this both
/// grow.
async fn metrics_upkeep(
    handle: metrics_exporter_prometheus::PrometheusHandle,
    attempts: Arc<PasswordAttempts>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        handle.run_upkeep();
        ticks += 1;
        if ticks.is_multiple_of(12) {
            attempts.forget_idle();
        }
    }
}

/// For one-off commands: a connection to the external broker's dynamic security when
/// `IOTBIND_MQTT_DYNSEC` is on, once it is up (at most 5 s); `None` when it is off.
pub async fn dynamic_security(settings: &Settings) -> anyhow::Result<Option<DynamicSecurity>> {
    let BrokerSettings::External(external) = &settings.mqtt.broker else {
        return Ok(None);
    };
    if !external.dynsec {
        return Ok(None);
    }
    let (host, port) = (&external.host, external.port);
    let answers = Arc::new(PendingAnswers::default());
    let (mqtt, connection) = MqttClient::new(ClientConfig {
        host: host.clone(),
        port,
        username: settings.mqtt.username.clone(),
        password: settings.mqtt.password.clone(),
        telemetry: TelemetryRoute::InProcess,
        client_id: None,
        dynsec_answers: Some(answers.clone()),
        device_messages: false,
    });
    mqtt.run(connection, IgnoreDeviceMessages);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !mqtt.is_ready() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "cannot connect to the MQTT broker at mqtt://{host}:{port} for its dynamic security; \
             check IOTBIND_MQTT_URL, IOTBIND_MQTT_USERNAME and IOTBIND_MQTT_PASSWORD"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Some(DynamicSecurity::new(mqtt, answers)))
}

/// Settles the backend's role over every device topic through a short-lived connection; the
/// broker may drop that connection when it assigns the role, so the check is repeated until
/// the role is seen held (a few tries).
async fn settle_backend_role(settings: &Settings, username: &str) -> anyhow::Result<()> {
    let BrokerSettings::External(external) = &settings.mqtt.broker else {
        return Ok(());
    };
    for _ in 0..3 {
        let Some(dynsec) = dynamic_security(settings).await? else {
            return Ok(());
        };
        match dynsec
            .ensure_backend_role(username, &external.share_group)
            .await
        {
            Ok(BackendRole::Held) => {
                dynsec.close().await;
                return Ok(());
            }
            Ok(BackendRole::Assigned) | Err(DynsecError::Silent) => dynsec.close().await,
            Err(err) => {
                dynsec.close().await;
                return Err(err.into());
            }
        }
    }
    anyhow::bail!("the backend's role was assigned but is not seen held")
}

/// A one-off command's connection takes no device messages.
struct IgnoreDeviceMessages;

impl crate::mqtt::client::Inbound for IgnoreDeviceMessages {
    async fn deliver(&self, _topic: crate::mqtt::topics::DeviceTopic, _payload: bytes::Bytes) {}
}

/// Makes sure the backend's client holds the role over every device topic in Mosquitto's
/// dynamic security, retrying until the broker answers; then subscribes again, since the
/// subscriptions made before the role was there were refused.
async fn ensure_backend_role(
    dynsec: DynamicSecurity,
    mqtt: MqttClient,
    username: String,
    share_group: String,
) {
    let mut wait = Duration::from_millis(200);
    loop {
        if mqtt.is_connected() {
            match dynsec.ensure_backend_role(&username, &share_group).await {
                // Held: subscribe again, since earlier subscriptions were refused. Assigned:
                // the broker drops the connection, which subscribes again when it is back.
                Ok(BackendRole::Held) => {
                    mqtt.subscribe_again();
                    return;
                }
                Ok(BackendRole::Assigned) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot give the backend its role in Mosquitto's dynamic security; retrying");
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Runs [`purge_expired`] every ten minutes.
async fn purge_periodically(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        purge_expired(&state).await;
    }
}

/// Deletes what has expired by the state's clock: bind tickets, refresh families, and the
/// counts behind the claim limit and the lockout. Failures are logged; the next round retries.
pub async fn purge_expired(state: &AppState) {
    let db = &state.db;
    let now = state.clock.now_ms();
    if let Err(err) = devices::purge_old_claim_failures(db).await {
        tracing::warn!(error = %err, "purging old failed claims failed; will retry");
    }
    if let Err(err) = credentials::purge_stale_failures(db, now).await {
        tracing::warn!(error = %err, "purging old failed logins failed; will retry");
    }
    match (
        state.logins.purge_expired_tickets().await,
        tokens::purge_expired(db, now).await,
    ) {
        (Ok(tickets), Ok(families)) => {
            tracing::debug!(tickets, families, "purged expired bind tickets and logins")
        }
        (tickets, families) => tracing::warn!(
            tickets = ?tickets.err(),
            families = ?families.err().map(|e| e.to_string()),
            "purging expired credentials failed; will retry"
        ),
    }
}

/// Marks commands nobody waits for `timed_out` once they expire, so their final state and
/// the commands metric do not depend on someone reading them.
async fn expire_overdue_commands(db: sea_orm::DatabaseConnection) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        if let Err(err) = commands::expire_overdue(&db, None).await {
            tracing::warn!(error = %err, "expiring overdue commands failed; will retry");
        }
    }
}

fn bind_error(err: std::io::Error, addr: SocketAddr) -> anyhow::Error {
    if err.kind() == ErrorKind::AddrInUse {
        anyhow::anyhow!(
            "cannot listen for HTTP on {addr}: port {} is already in use; set IOTBIND_HTTP_ADDR \
             (or --http-addr) to a free address, e.g. 127.0.0.1:8081",
            addr.port()
        )
    } else {
        anyhow::anyhow!("cannot listen for HTTP on {addr}: {err}; check IOTBIND_HTTP_ADDR")
    }
}

/// Completes on Ctrl-C or SIGTERM (what `docker stop` and Kubernetes send).
///
/// The handlers are installed when this is called, not when the future is first polled: call
/// it before the server starts listening, so that a SIGTERM arriving while it starts (a
/// deploy that changes its mind) stops it gracefully instead of killing it outright.
#[cfg(unix)]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        let received = async |stream: std::io::Result<tokio::signal::unix::Signal>| match stream {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        };
        tokio::select! {
            () = received(interrupt) => {},
            () = received(terminate) => {},
        }
        tracing::info!("shutdown signal received; finishing in-flight requests");
    }
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!("shutdown signal received; finishing in-flight requests");
    }
}
