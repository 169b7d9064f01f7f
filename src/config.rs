//! Configuration: `IOTBIND_*` environment variables, overridden by CLI flags, parsed once at
//! start into typed [`Settings`].
//!
//! clap reads both sources (a flag wins over its variable) and hands us raw strings; the typed
//! parsing happens here so that a bad value fails with one line naming the variable, which is
//! what an operator looking at a crash-looping container needs.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};

/// Fewest bytes accepted for `IOTBIND_JWT_SECRET`: HS256 needs a key at least as long as its
/// 256-bit output to keep its strength.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// The value of each setting that has one when its variable is unset; `--help` shows them.
pub mod defaults {
    pub const HTTP_ADDR: &str = "127.0.0.1:8080";
    pub const DATABASE_URL: &str = "sqlite://iotbind.db?mode=rwc";
    pub const MQTT_URL: &str = "embedded";
    pub const MQTT_LISTEN: &str = "127.0.0.1:1883";
    pub const MQTT_SHARE_GROUP: &str = "iotbind";
    pub const MQTT_SHARED_SUBSCRIPTION: &str = "true";
    pub const WECHAT_API_BASE: &str = "https://api.weixin.qq.com";
    pub const ENVIRONMENT: &str = "development";
    pub const ACCESS_TTL: &str = "15m";
    pub const REFRESH_TTL: &str = "30d";
    pub const BIND_TICKET_TTL: &str = "10m";
    pub const REFRESH_REUSE_GRACE: &str = "10s";
    pub const LOG_FORMAT: &str = "human";
    pub const TELEMETRY_QUEUE: &str = "20000";
    pub const TRUSTED_PROXIES: &str = "";
    pub const PASSWORD_ATTEMPTS_PER_MINUTE: &str = "20";
    pub const HTTP_HEADER_TIMEOUT: &str = "10s";
    pub const HTTP_BODY_TIMEOUT: &str = "10s";
    pub const HTTP_IDLE_TIMEOUT: &str = "75s";
    pub const MQTT_HANDSHAKE_TIMEOUT: &str = "5s";
    pub const MQTT_HANDSHAKES_PER_ADDRESS: &str = "64";
    pub const MQTT_FAILED_CONNECTS_PER_MINUTE: &str = "10";
    pub const MQTT_DYNSEC: &str = "false";
}

/// Fewest bytes accepted for `IOTBIND_MQTT_PASSWORD` in production: the backend's broker
/// login may publish any device's commands, so it must not be guessable.
pub const MIN_MQTT_PASSWORD_BYTES: usize = 32;

/// Fewest bytes accepted for `IOTBIND_BROKER_HOOK_SECRET`: whoever knows it can ask whether
/// any password is a device's.
pub const MIN_HOOK_SECRET_BYTES: usize = 32;

/// The raw configuration as clap collects it from flags and `IOTBIND_*` variables.
///
/// Every field is a string so that [`Settings::from_args`] can name the variable in its error.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "IOTBIND_HTTP_ADDR", global = true, default_value = defaults::HTTP_ADDR)]
    pub http_addr: Option<String>,
    /// Database URL: `sqlite://file.db?mode=rwc` or `postgres://user@host/db`.
    #[arg(long, env = "IOTBIND_DATABASE_URL", global = true, default_value = defaults::DATABASE_URL)]
    pub database_url: Option<String>,
    /// `embedded` for the in-process broker, or `mqtt://host:port` for an external one.
    #[arg(long, env = "IOTBIND_MQTT_URL", global = true, default_value = defaults::MQTT_URL)]
    pub mqtt_url: Option<String>,
    /// Address the embedded MQTT broker listens on.
    #[arg(long, env = "IOTBIND_MQTT_LISTEN", global = true, default_value = defaults::MQTT_LISTEN)]
    pub mqtt_listen: Option<String>,
    /// Username of the backend's own connection to an external broker.
    #[arg(long, env = "IOTBIND_MQTT_USERNAME", global = true)]
    pub mqtt_username: Option<String>,
    /// Password of the backend's own connection to an external broker.
    #[arg(
        long,
        env = "IOTBIND_MQTT_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub mqtt_password: Option<String>,
    /// Client id of the backend's own connection to an external broker. When set, the backend
    /// keeps a persistent session under this id (clean session off), so the broker holds the
    /// QoS 1 telemetry that arrives while the backend is away (a deploy, a broker restart)
    /// instead of dropping it. Each replica needs its own id; unset, every start uses a fresh
    /// random id with a clean session.
    #[arg(long, env = "IOTBIND_MQTT_CLIENT_ID", global = true)]
    pub mqtt_client_id: Option<String>,
    /// Group name of the shared telemetry subscription (`$share/<group>/devices/+/telemetry`):
    /// replicas in one group split the telemetry between them.
    #[arg(long, env = "IOTBIND_MQTT_SHARE_GROUP", global = true, default_value = defaults::MQTT_SHARE_GROUP)]
    pub mqtt_share_group: Option<String>,
    /// External broker: `false` takes telemetry through a plain subscription instead of the
    /// shared one. For a single replica on a broker that forgets shared subscriptions when it
    /// restarts (Mosquitto 2.0 does, plain ones it keeps): with a persistent session
    /// (`IOTBIND_MQTT_CLIENT_ID`) no telemetry is then lost across a broker restart.
    #[arg(long, env = "IOTBIND_MQTT_SHARED_SUBSCRIPTION", global = true, default_value = defaults::MQTT_SHARED_SUBSCRIPTION)]
    pub mqtt_shared_subscription: Option<String>,
    /// The mini program's appid.
    #[arg(long, env = "IOTBIND_WECHAT_APPID", global = true)]
    pub wechat_appid: Option<String>,
    /// The mini program's app secret; without one the fake WeChat API runs (development only).
    #[arg(
        long,
        env = "IOTBIND_WECHAT_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub wechat_secret: Option<String>,
    /// Base URL of the WeChat API.
    #[arg(long, env = "IOTBIND_WECHAT_API_BASE", global = true, default_value = defaults::WECHAT_API_BASE)]
    pub wechat_api_base: Option<String>,
    /// `development` or `production`.
    #[arg(long = "env", env = "IOTBIND_ENV", global = true, default_value = defaults::ENVIRONMENT)]
    pub environment: Option<String>,
    /// Key that signs access tokens, at least 32 bytes.
    #[arg(
        long,
        env = "IOTBIND_JWT_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// Access token lifetime (seconds, or a duration such as `15m`).
    #[arg(long, env = "IOTBIND_ACCESS_TTL", global = true, default_value = defaults::ACCESS_TTL)]
    pub access_ttl: Option<String>,
    /// Refresh token lifetime (seconds, or a duration such as `30d`).
    #[arg(long, env = "IOTBIND_REFRESH_TTL", global = true, default_value = defaults::REFRESH_TTL)]
    pub refresh_ttl: Option<String>,
    /// Bind ticket lifetime (seconds, or a duration such as `10m`).
    #[arg(long, env = "IOTBIND_BIND_TICKET_TTL", global = true, default_value = defaults::BIND_TICKET_TTL)]
    pub bind_ticket_ttl: Option<String>,
    /// How long a spent refresh token is answered `refresh_token_rotated` instead of revoking.
    #[arg(long, env = "IOTBIND_REFRESH_REUSE_GRACE", global = true, default_value = defaults::REFRESH_REUSE_GRACE)]
    pub refresh_reuse_grace: Option<String>,
    /// Log format: `human` or `json`.
    #[arg(long, env = "IOTBIND_LOG_FORMAT", global = true, default_value = defaults::LOG_FORMAT)]
    pub log_format: Option<String>,
    /// Device messages held between MQTT intake and the database writer. When it is full,
    /// intake waits: the embedded broker holds back devices' acknowledgements until there is
    /// room. More rides out longer database pauses; fewer keeps less acknowledged telemetry in
    /// memory only.
    #[arg(long, env = "IOTBIND_TELEMETRY_QUEUE", global = true, default_value = defaults::TELEMETRY_QUEUE)]
    pub telemetry_queue: Option<String>,
    /// Reverse proxies and load balancers in front of the server: comma-separated IP
    /// addresses or CIDR ranges (IPv4 and IPv6). Only from these peers are `X-Forwarded-For`
    /// and `Forwarded` believed; the client is then the right-most address in them that is not
    /// itself a trusted proxy.
    #[arg(long, env = "IOTBIND_TRUSTED_PROXIES", global = true, default_value = defaults::TRUSTED_PROXIES)]
    pub trusted_proxies: Option<String>,
    /// Password attempts (login, bind, register, password change, unbind) one client address
    /// may make per minute (IPv6: per /64); `0` turns the limit off, for a deployment that
    /// limits at its edge. The per-account lockout applies either way.
    #[arg(long, env = "IOTBIND_PASSWORD_ATTEMPTS_PER_MINUTE", global = true, default_value = defaults::PASSWORD_ATTEMPTS_PER_MINUTE)]
    pub password_attempts_per_minute: Option<String>,
    /// How long a client has to send a request's headers, from connecting or from the first
    /// byte of a request on a kept-alive connection.
    #[arg(long, env = "IOTBIND_HTTP_HEADER_TIMEOUT", global = true, default_value = defaults::HTTP_HEADER_TIMEOUT)]
    pub http_header_timeout: Option<String>,
    /// How long a client has to send a request's body once its headers arrived; a slower
    /// one gets 408.
    #[arg(long, env = "IOTBIND_HTTP_BODY_TIMEOUT", global = true, default_value = defaults::HTTP_BODY_TIMEOUT)]
    pub http_body_timeout: Option<String>,
    /// How long a kept-alive connection may wait for its next request. Keep it above the
    /// idle timeout of the proxy in front, so the proxy never sends a request on a connection
    /// the server is closing.
    #[arg(long, env = "IOTBIND_HTTP_IDLE_TIMEOUT", global = true, default_value = defaults::HTTP_IDLE_TIMEOUT)]
    pub http_idle_timeout: Option<String>,
    /// Embedded broker: how long a new connection has to send its CONNECT before it is
    /// closed.
    #[arg(long, env = "IOTBIND_MQTT_HANDSHAKE_TIMEOUT", global = true, default_value = defaults::MQTT_HANDSHAKE_TIMEOUT)]
    pub mqtt_handshake_timeout: Option<String>,
    /// Embedded broker: connections one client address (IPv6: /64) may have open before
    /// they have sent their CONNECT; more are closed at once.
    #[arg(long, env = "IOTBIND_MQTT_HANDSHAKES_PER_ADDRESS", global = true, default_value = defaults::MQTT_HANDSHAKES_PER_ADDRESS)]
    pub mqtt_handshakes_per_address: Option<String>,
    /// Embedded broker: refused CONNECTs (wrong or unknown credentials) one client address
    /// may make per minute; beyond that its CONNECTs are refused without a look at the
    /// credentials until the allowance refills. `0` turns the limit off.
    #[arg(long, env = "IOTBIND_MQTT_FAILED_CONNECTS_PER_MINUTE", global = true, default_value = defaults::MQTT_FAILED_CONNECTS_PER_MINUTE)]
    pub mqtt_failed_connects_per_minute: Option<String>,
    /// Secret an external broker sends (`Authorization: Bearer …`) when it calls
    /// `/api/v1/mqtt/auth` and `/api/v1/mqtt/acl`, at least 32 bytes; unset, those hooks are
    /// not served.
    #[arg(
        long,
        env = "IOTBIND_BROKER_HOOK_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub broker_hook_secret: Option<String>,
    /// External Mosquitto with its dynamic security plugin: provisioning creates each
    /// device's client and role there, and password rotation changes it.
    #[arg(long, env = "IOTBIND_MQTT_DYNSEC", global = true, default_value = defaults::MQTT_DYNSEC)]
    pub mqtt_dynsec: Option<String>,
}

/// Whether the server may take development shortcuts (fake WeChat, generated JWT secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

/// Where the backend's MQTT client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttTarget {
    /// Run the broker in this process, listening on `Settings::mqtt_listen`.
    Embedded,
    /// An external broker at this host and port.
    External { host: String, port: u16 },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// Where WeChat's API is: the real one, or the fake this process serves in development.
#[derive(Debug, Clone)]
pub enum WechatMode {
    /// Call the real API with this app secret.
    Real { secret: SecretString },
    /// No secret set: serve and use the fake API under `/dev/wechat`.
    Fake,
}

/// The validated configuration of one iotbind process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub http_addr: SocketAddr,
    pub database_url: String,
    pub mqtt: MqttTarget,
    pub mqtt_listen: SocketAddr,
    pub mqtt_username: Option<String>,
    pub mqtt_password: Option<SecretString>,
    pub mqtt_share_group: String,
    /// Telemetry through `$share/<group>/…` (default) or a plain subscription.
    pub mqtt_shared_subscription: bool,
    /// Set: a persistent session under this client id; unset: a fresh id, clean session.
    pub mqtt_client_id: Option<String>,
    pub wechat_appid: String,
    pub wechat: WechatMode,
    pub wechat_api_base: String,
    pub environment: Environment,
    /// `None` in development means "generate one and keep it".
    pub jwt_secret: Option<SecretString>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub bind_ticket_ttl: Duration,
    pub refresh_reuse_grace: Duration,
    pub log_format: LogFormat,
    /// Capacity of the queue in front of the telemetry writer, in device messages.
    pub telemetry_queue: usize,
    /// Peers whose forwarding headers name the client; empty: trust none.
    pub trusted_proxies: Vec<IpNet>,
    /// `None`: no per-address limit on password attempts.
    pub password_attempts_per_minute: Option<NonZeroU32>,
    pub http_timeouts: HttpTimeouts,
    pub mqtt_handshake_timeout: Duration,
    pub mqtt_handshakes_per_address: usize,
    /// `None`: no per-address limit on refused CONNECTs.
    pub mqtt_failed_connects_per_minute: Option<NonZeroU32>,
    /// Set: the broker hooks are served and callers must present it.
    pub broker_hook_secret: Option<SecretString>,
    /// Devices are also created in Mosquitto's dynamic security plugin.
    pub mqtt_dynsec: bool,
}

/// How long the HTTP server waits for slow or idle clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    pub header: Duration,
    pub body: Duration,
    pub idle: Duration,
}

/// A configuration value that cannot be used, named by its variable and flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub flag: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (--{}): {}", self.variable, self.flag, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// The appid the fake WeChat API answers for when none is configured.
pub const DEV_WECHAT_APPID: &str = "wxdevelopment0000";

impl Settings {
    /// Parses and checks every value; the first bad one is the error.
    pub fn from_args(args: &ConfigArgs) -> Result<Settings, ConfigError> {
        let environment = match args.environment.as_deref().unwrap_or(defaults::ENVIRONMENT) {
            "development" | "dev" => Environment::Development,
            "production" | "prod" => Environment::Production,
            other => {
                return Err(invalid(
                    "IOTBIND_ENV",
                    "env",
                    format!("{other:?} is neither `development` nor `production`"),
                ));
            }
        };

        let http_addr = socket_addr(
            "IOTBIND_HTTP_ADDR",
            "http-addr",
            args.http_addr.as_deref().unwrap_or(defaults::HTTP_ADDR),
        )?;
        let mqtt_listen = socket_addr(
            "IOTBIND_MQTT_LISTEN",
            "mqtt-listen",
            args.mqtt_listen.as_deref().unwrap_or(defaults::MQTT_LISTEN),
        )?;

        let database_url = args
            .database_url
            .clone()
            .unwrap_or_else(|| defaults::DATABASE_URL.to_owned());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "IOTBIND_DATABASE_URL",
                "database-url",
                "expected a `sqlite://…` or `postgres://…` URL".to_owned(),
            ));
        }

        let mqtt = mqtt_target(args.mqtt_url.as_deref().unwrap_or(defaults::MQTT_URL))?;

        let wechat = match non_empty(&args.wechat_secret) {
            Some(secret) => WechatMode::Real {
                secret: SecretString::from(secret.to_owned()),
            },
            None => WechatMode::Fake,
        };
        let wechat_appid = match non_empty(&args.wechat_appid) {
            Some(appid) => appid.to_owned(),
            None if matches!(wechat, WechatMode::Fake) => DEV_WECHAT_APPID.to_owned(),
            None => {
                return Err(invalid(
                    "IOTBIND_WECHAT_APPID",
                    "wechat-appid",
                    "required when IOTBIND_WECHAT_SECRET is set".to_owned(),
                ));
            }
        };
        let wechat_api_base = args
            .wechat_api_base
            .clone()
            .unwrap_or_else(|| defaults::WECHAT_API_BASE.to_owned());
        if !(wechat_api_base.starts_with("https://") || wechat_api_base.starts_with("http://")) {
            return Err(invalid(
                "IOTBIND_WECHAT_API_BASE",
                "wechat-api-base",
                "expected an http(s):// URL".to_owned(),
            ));
        }

        let jwt_secret = match non_empty(&args.jwt_secret) {
            Some(secret) if secret.len() < MIN_JWT_SECRET_BYTES => {
                return Err(invalid(
                    "IOTBIND_JWT_SECRET",
                    "jwt-secret",
                    format!(
                        "must be at least {MIN_JWT_SECRET_BYTES} bytes, got {}",
                        secret.len()
                    ),
                ));
            }
            Some(secret) => Some(SecretString::from(secret.to_owned())),
            None => None,
        };

        let log_format = match args.log_format.as_deref().unwrap_or(defaults::LOG_FORMAT) {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "IOTBIND_LOG_FORMAT",
                    "log-format",
                    format!("{other:?} is neither `human` nor `json`"),
                ));
            }
        };

        let settings = Settings {
            http_addr,
            database_url,
            mqtt,
            mqtt_listen,
            mqtt_username: non_empty(&args.mqtt_username).map(str::to_owned),
            mqtt_password: non_empty(&args.mqtt_password).map(|p| SecretString::from(p.to_owned())),
            mqtt_share_group: mqtt_name(
                "IOTBIND_MQTT_SHARE_GROUP",
                "mqtt-share-group",
                args.mqtt_share_group
                    .as_deref()
                    .unwrap_or(defaults::MQTT_SHARE_GROUP),
            )?,
            mqtt_shared_subscription: boolean(
                "IOTBIND_MQTT_SHARED_SUBSCRIPTION",
                "mqtt-shared-subscription",
                non_empty(&args.mqtt_shared_subscription)
                    .unwrap_or(defaults::MQTT_SHARED_SUBSCRIPTION),
            )?,
            mqtt_client_id: non_empty(&args.mqtt_client_id)
                .map(|id| mqtt_name("IOTBIND_MQTT_CLIENT_ID", "mqtt-client-id", id))
                .transpose()?,
            wechat_appid,
            wechat,
            wechat_api_base,
            environment,
            jwt_secret,
            access_ttl: duration(
                "IOTBIND_ACCESS_TTL",
                "access-ttl",
                &args.access_ttl,
                defaults::ACCESS_TTL,
            )?,
            refresh_ttl: duration(
                "IOTBIND_REFRESH_TTL",
                "refresh-ttl",
                &args.refresh_ttl,
                defaults::REFRESH_TTL,
            )?,
            bind_ticket_ttl: duration(
                "IOTBIND_BIND_TICKET_TTL",
                "bind-ticket-ttl",
                &args.bind_ticket_ttl,
                defaults::BIND_TICKET_TTL,
            )?,
            refresh_reuse_grace: duration(
                "IOTBIND_REFRESH_REUSE_GRACE",
                "refresh-reuse-grace",
                &args.refresh_reuse_grace,
                defaults::REFRESH_REUSE_GRACE,
            )?,
            log_format,
            telemetry_queue: count(
                "IOTBIND_TELEMETRY_QUEUE",
                "telemetry-queue",
                &args.telemetry_queue,
                defaults::TELEMETRY_QUEUE,
            )?,
            trusted_proxies: networks(
                "IOTBIND_TRUSTED_PROXIES",
                "trusted-proxies",
                non_empty(&args.trusted_proxies).unwrap_or(defaults::TRUSTED_PROXIES),
            )?,
            password_attempts_per_minute: rate(
                "IOTBIND_PASSWORD_ATTEMPTS_PER_MINUTE",
                "password-attempts-per-minute",
                &args.password_attempts_per_minute,
                defaults::PASSWORD_ATTEMPTS_PER_MINUTE,
            )?,
            http_timeouts: HttpTimeouts {
                header: duration(
                    "IOTBIND_HTTP_HEADER_TIMEOUT",
                    "http-header-timeout",
                    &args.http_header_timeout,
                    defaults::HTTP_HEADER_TIMEOUT,
                )?,
                body: duration(
                    "IOTBIND_HTTP_BODY_TIMEOUT",
                    "http-body-timeout",
                    &args.http_body_timeout,
                    defaults::HTTP_BODY_TIMEOUT,
                )?,
                idle: duration(
                    "IOTBIND_HTTP_IDLE_TIMEOUT",
                    "http-idle-timeout",
                    &args.http_idle_timeout,
                    defaults::HTTP_IDLE_TIMEOUT,
                )?,
            },
            mqtt_handshake_timeout: duration(
                "IOTBIND_MQTT_HANDSHAKE_TIMEOUT",
                "mqtt-handshake-timeout",
                &args.mqtt_handshake_timeout,
                defaults::MQTT_HANDSHAKE_TIMEOUT,
            )?,
            mqtt_handshakes_per_address: count(
                "IOTBIND_MQTT_HANDSHAKES_PER_ADDRESS",
                "mqtt-handshakes-per-address",
                &args.mqtt_handshakes_per_address,
                defaults::MQTT_HANDSHAKES_PER_ADDRESS,
            )?,
            mqtt_failed_connects_per_minute: rate(
                "IOTBIND_MQTT_FAILED_CONNECTS_PER_MINUTE",
                "mqtt-failed-connects-per-minute",
                &args.mqtt_failed_connects_per_minute,
                defaults::MQTT_FAILED_CONNECTS_PER_MINUTE,
            )?,
            broker_hook_secret: match non_empty(&args.broker_hook_secret) {
                Some(secret) if secret.len() < MIN_HOOK_SECRET_BYTES => {
                    return Err(invalid(
                        "IOTBIND_BROKER_HOOK_SECRET",
                        "broker-hook-secret",
                        format!(
                            "must be at least {MIN_HOOK_SECRET_BYTES} bytes, got {}",
                            secret.len()
                        ),
                    ));
                }
                Some(secret) => Some(SecretString::from(secret.to_owned())),
                None => None,
            },
            mqtt_dynsec: boolean(
                "IOTBIND_MQTT_DYNSEC",
                "mqtt-dynsec",
                non_empty(&args.mqtt_dynsec).unwrap_or(defaults::MQTT_DYNSEC),
            )?,
        };
        if settings.mqtt_dynsec && settings.mqtt == MqttTarget::Embedded {
            return Err(invalid(
                "IOTBIND_MQTT_DYNSEC",
                "mqtt-dynsec",
                "needs an external Mosquitto (IOTBIND_MQTT_URL=mqtt://host:port); the embedded \
                 broker checks devices itself"
                    .to_owned(),
            ));
        }
        settings.check_production()?;
        Ok(settings)
    }

    /// Production refuses every development shortcut, naming the variable that enables it.
    fn check_production(&self) -> Result<(), ConfigError> {
        if self.environment != Environment::Production {
            return Ok(());
        }
        if matches!(self.wechat, WechatMode::Fake) {
            return Err(invalid(
                "IOTBIND_WECHAT_SECRET",
                "wechat-secret",
                "required in production: the fake WeChat API runs only in development".to_owned(),
            ));
        }
        if let Some(password) = &self.mqtt_password
            && password.expose_secret().len() < MIN_MQTT_PASSWORD_BYTES
        {
            return Err(invalid(
                "IOTBIND_MQTT_PASSWORD",
                "mqtt-password",
                format!(
                    "must be at least {MIN_MQTT_PASSWORD_BYTES} bytes in production: it is the \
                     backend's superuser login to the broker (generate one with \
                     `openssl rand -base64 32`)"
                ),
            ));
        }
        match &self.jwt_secret {
            None => Err(invalid(
                "IOTBIND_JWT_SECRET",
                "jwt-secret",
                "required in production: a generated development secret is not for real users"
                    .to_owned(),
            )),
            Some(secret) if is_placeholder_secret(secret.expose_secret()) => Err(invalid(
                "IOTBIND_JWT_SECRET",
                "jwt-secret",
                "is the example value from the documentation; generate your own (e.g. `openssl rand -base64 48`)"
                    .to_owned(),
            )),
            Some(_) => Ok(()),
        }
    }

    /// True when the fake WeChat API must be served by this process.
    pub fn wechat_is_fake(&self) -> bool {
        matches!(self.wechat, WechatMode::Fake)
    }

    /// Which database backend the URL selects.
    pub fn database_is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }
}

/// The example secret shown in the README, refused in production so a copy-paste cannot ship.
pub const EXAMPLE_JWT_SECRET: &str = "change-me-to-at-least-32-random-bytes-please";

fn is_placeholder_secret(secret: &str) -> bool {
    secret == EXAMPLE_JWT_SECRET
}

fn invalid(variable: &'static str, flag: &'static str, problem: String) -> ConfigError {
    ConfigError {
        variable,
        flag,
        problem,
    }
}

/// `true` or `false`, so that a typo fails at start with the variable's name.
fn boolean(variable: &'static str, flag: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(invalid(
            variable,
            flag,
            format!("{other:?} must be true or false"),
        )),
    }
}

/// A whole number from 1 up, or `default` when unset.
fn count(
    variable: &'static str,
    flag: &'static str,
    value: &Option<String>,
    default: &str,
) -> Result<usize, ConfigError> {
    let text = non_empty(value).unwrap_or(default);
    text.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
        invalid(
            variable,
            flag,
            format!("{text:?} must be a whole number from 1 up"),
        )
    })
}

/// A rate per minute: a whole number, where `0` means "no limit".
fn rate(
    variable: &'static str,
    flag: &'static str,
    value: &Option<String>,
    default: &str,
) -> Result<Option<NonZeroU32>, ConfigError> {
    let text = non_empty(value).unwrap_or(default);
    text.parse::<u32>().map(NonZeroU32::new).map_err(|_| {
        invalid(
            variable,
            flag,
            format!("{text:?} must be a whole number (0 turns the limit off)"),
        )
    })
}

/// Comma-separated IP addresses or CIDR ranges; a bare address is a network of one.
fn networks(
    variable: &'static str,
    flag: &'static str,
    value: &str,
) -> Result<Vec<IpNet>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    invalid(
                        variable,
                        flag,
                        format!(
                            "{item:?} is not an IP address or CIDR range such as 10.0.0.0/8 or \
                             2001:db8::/32"
                        ),
                    )
                })
        })
        .collect()
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn socket_addr(
    variable: &'static str,
    flag: &'static str,
    value: &str,
) -> Result<SocketAddr, ConfigError> {
    SocketAddr::from_str(value.trim()).map_err(|_| {
        invalid(
            variable,
            flag,
            format!("{value:?} is not an IP address and port such as 127.0.0.1:8080"),
        )
    })
}

/// A name the backend gives itself at the broker (share group, client id): 1–64 of
/// `a-z A-Z 0-9 - _ .`. That is one topic level without separators or wildcards, and a client
/// id that Mosquitto, EMQX and the embedded broker accept (MQTT 3.1.1 promises only 1–23
/// alphanumerics; all three take more).
fn mqtt_name(
    variable: &'static str,
    flag: &'static str,
    value: &str,
) -> Result<String, ConfigError> {
    let valid = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(invalid(
            variable,
            flag,
            format!("{value:?} must be 1–64 of a-z, A-Z, 0-9, `-`, `_`, `.`"),
        ))
    }
}

fn mqtt_target(value: &str) -> Result<MqttTarget, ConfigError> {
    let value = value.trim();
    if value == "embedded" {
        return Ok(MqttTarget::Embedded);
    }
    let bad = || {
        invalid(
            "IOTBIND_MQTT_URL",
            "mqtt-url",
            format!("{value:?} is neither `embedded` nor `mqtt://host:port`"),
        )
    };
    let rest = value.strip_prefix("mqtt://").ok_or_else(bad)?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad())?),
        None => (rest, 1883),
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(MqttTarget::External {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    })
}

/// Seconds as a bare integer, or a human duration (`15m`, `30d`); zero is refused.
fn duration(
    variable: &'static str,
    flag: &'static str,
    value: &Option<String>,
    default: &str,
) -> Result<Duration, ConfigError> {
    let raw = non_empty(value).unwrap_or(default);
    let parsed = match raw.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(raw).map_err(|_| {
            invalid(
                variable,
                flag,
                format!("{raw:?} is not a number of seconds or a duration such as 15m"),
            )
        })?,
    };
    if parsed.is_zero() {
        return Err(invalid(
            variable,
            flag,
            "must be longer than zero".to_owned(),
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ConfigArgs {
        ConfigArgs::default()
    }

    #[test]
    fn nothing_set_gives_the_documented_defaults() {
        let settings = Settings::from_args(&args()).unwrap();
        assert_eq!(settings.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.database_url, "sqlite://iotbind.db?mode=rwc");
        assert_eq!(settings.mqtt, MqttTarget::Embedded);
        assert_eq!(settings.mqtt_listen.to_string(), "127.0.0.1:1883");
        assert_eq!(settings.environment, Environment::Development);
        assert!(settings.wechat_is_fake());
        assert_eq!(settings.access_ttl, Duration::from_secs(900));
        assert_eq!(settings.refresh_ttl, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(settings.bind_ticket_ttl, Duration::from_secs(600));
        assert_eq!(settings.refresh_reuse_grace, Duration::from_secs(10));
    }

    #[test]
    fn the_backend_session_settings_default_to_a_clean_session_and_a_shared_subscription() {
        let settings = Settings::from_args(&args()).unwrap();
        assert_eq!(settings.mqtt_client_id, None);
        assert!(settings.mqtt_shared_subscription);
        let settings = Settings::from_args(&ConfigArgs {
            mqtt_client_id: Some("iotbind-eu-1".into()),
            mqtt_shared_subscription: Some("false".into()),
            ..args()
        })
        .unwrap();
        assert_eq!(settings.mqtt_client_id.as_deref(), Some("iotbind-eu-1"));
        assert!(!settings.mqtt_shared_subscription);
    }

    #[test]
    fn the_telemetry_queue_defaults_to_the_writers_capacity_and_takes_a_positive_count() {
        let settings = Settings::from_args(&args()).unwrap();
        assert_eq!(
            settings.telemetry_queue,
            crate::service::telemetry::QUEUE_CAPACITY
        );
        let settings = Settings::from_args(&ConfigArgs {
            telemetry_queue: Some("500".into()),
            ..args()
        })
        .unwrap();
        assert_eq!(settings.telemetry_queue, 500);
        for bad in ["0", "-1", "many", "1.5"] {
            let err = Settings::from_args(&ConfigArgs {
                telemetry_queue: Some(bad.into()),
                ..args()
            })
            .unwrap_err();
            assert_eq!(err.variable, "IOTBIND_TELEMETRY_QUEUE", "{bad}");
        }
    }

    #[test]
    fn a_bad_client_id_or_subscription_switch_names_its_variable() {
        let err = Settings::from_args(&ConfigArgs {
            mqtt_client_id: Some("two words".into()),
            ..args()
        })
        .unwrap_err();
        assert_eq!(err.variable, "IOTBIND_MQTT_CLIENT_ID");
        let err = Settings::from_args(&ConfigArgs {
            mqtt_shared_subscription: Some("maybe".into()),
            ..args()
        })
        .unwrap_err();
        assert_eq!(err.variable, "IOTBIND_MQTT_SHARED_SUBSCRIPTION");
    }

    #[test]
    fn a_bad_address_names_its_variable() {
        let err = Settings::from_args(&ConfigArgs {
            http_addr: Some("localhost".into()),
            ..args()
        })
        .unwrap_err();
        assert_eq!(err.variable, "IOTBIND_HTTP_ADDR");
        assert!(
            err.to_string()
                .starts_with("IOTBIND_HTTP_ADDR (--http-addr)")
        );
    }

    #[test]
    fn durations_accept_seconds_and_human_units() {
        let settings = Settings::from_args(&ConfigArgs {
            access_ttl: Some("60".into()),
            refresh_ttl: Some("7d".into()),
            ..args()
        })
        .unwrap();
        assert_eq!(settings.access_ttl, Duration::from_secs(60));
        assert_eq!(settings.refresh_ttl, Duration::from_secs(7 * 24 * 3600));
    }

    #[test]
    fn a_zero_or_garbage_duration_is_refused() {
        for bad in ["0", "soon", "-5"] {
            let err = Settings::from_args(&ConfigArgs {
                bind_ticket_ttl: Some(bad.into()),
                ..args()
            })
            .unwrap_err();
            assert_eq!(err.variable, "IOTBIND_BIND_TICKET_TTL", "value {bad}");
        }
    }

    #[test]
    fn a_short_jwt_secret_is_refused_in_any_environment() {
        let err = Settings::from_args(&ConfigArgs {
            jwt_secret: Some("short".into()),
            ..args()
        })
        .unwrap_err();
        assert_eq!(err.variable, "IOTBIND_JWT_SECRET");
    }

    #[test]
    fn production_refuses_the_fake_wechat_api() {
        let err = Settings::from_args(&ConfigArgs {
            environment: Some("production".into()),
            jwt_secret: Some("x".repeat(40)),
            ..args()
        })
        .unwrap_err();
        assert_eq!(err.variable, "IOTBIND_WECHAT_SECRET");
    }

    #[test]
    fn production_refuses_a_missing_or_example_jwt_secret() {
        let production = ConfigArgs {
            environment: Some("production".into()),
            wechat_appid: Some("wx123".into()),
            wechat_secret: Some("s3cret".into()),
            ..args()
        };
        let err = Settings::from_args(&production).unwrap_err();
        assert_eq!(err.variable, "IOTBIND_JWT_SECRET");

        let err = Settings::from_args(&ConfigArgs {
            jwt_secret: Some(EXAMPLE_JWT_SECRET.into()),
            ..production.clone()
        })
        .unwrap_err();
        assert_eq!(err.variable, "IOTBIND_JWT_SECRET");

        let ok = Settings::from_args(&ConfigArgs {
            jwt_secret: Some("a".repeat(48)),
            ..production
        });
        assert!(ok.is_ok());
    }

    #[test]
    fn a_wechat_secret_without_an_appid_is_refused() {
        let err = Settings::from_args(&ConfigArgs {
            wechat_secret: Some("s3cret".into()),
            ..args()
        })
        .unwrap_err();
        assert_eq!(err.variable, "IOTBIND_WECHAT_APPID");
    }

    #[test]
    fn mqtt_urls_parse_host_and_port() {
        assert_eq!(
            mqtt_target("mqtt://broker.local:1884").unwrap(),
            MqttTarget::External {
                host: "broker.local".into(),
                port: 1884
            }
        );
        assert_eq!(
            mqtt_target("mqtt://127.0.0.1").unwrap(),
            MqttTarget::External {
                host: "127.0.0.1".into(),
                port: 1883
            }
        );
        assert!(mqtt_target("tcp://x:1").is_err());
        assert!(mqtt_target("mqtt://:1883").is_err());
    }

    #[test]
    fn trusted_proxies_take_addresses_and_cidr_ranges_of_both_families() {
        let settings = Settings::from_args(&ConfigArgs {
            trusted_proxies: Some(" 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,::1".into()),
            ..args()
        })
        .unwrap();
        let listed: Vec<String> = settings
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            listed,
            ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128"]
        );
        assert!(
            Settings::from_args(&args())
                .unwrap()
                .trusted_proxies
                .is_empty()
        );
        for bad in ["10.0.0.0/33", "proxy.internal", "10.0.0.1/8/1"] {
            let err = Settings::from_args(&ConfigArgs {
                trusted_proxies: Some(bad.into()),
                ..args()
            })
            .unwrap_err();
            assert_eq!(err.variable, "IOTBIND_TRUSTED_PROXIES", "{bad}");
        }
    }

    #[test]
    fn the_password_attempt_limit_defaults_to_20_and_0_turns_it_off() {
        let limit = |value: Option<&str>| {
            Settings::from_args(&ConfigArgs {
                password_attempts_per_minute: value.map(Into::into),
                ..args()
            })
            .map(|s| s.password_attempts_per_minute.map(NonZeroU32::get))
        };
        assert_eq!(limit(None).unwrap(), Some(20));
        assert_eq!(limit(Some("0")).unwrap(), None);
        assert_eq!(limit(Some("5")).unwrap(), Some(5));
        assert_eq!(
            limit(Some("lots")).unwrap_err().variable,
            "IOTBIND_PASSWORD_ATTEMPTS_PER_MINUTE"
        );
    }

    #[test]
    fn production_refuses_a_backend_broker_password_under_32_bytes() {
        let production = ConfigArgs {
            environment: Some("production".into()),
            wechat_appid: Some("wx123".into()),
            wechat_secret: Some("s3cret".into()),
            jwt_secret: Some("a".repeat(48)),
            mqtt_username: Some("iotbind-backend".into()),
            ..args()
        };
        let err = Settings::from_args(&ConfigArgs {
            mqtt_password: Some("hunter2".into()),
            ..production.clone()
        })
        .unwrap_err();
        assert_eq!(err.variable, "IOTBIND_MQTT_PASSWORD");
        assert!(
            Settings::from_args(&ConfigArgs {
                mqtt_password: Some("p".repeat(32)),
                ..production
            })
            .is_ok()
        );
        // Development takes what it is given.
        assert!(
            Settings::from_args(&ConfigArgs {
                mqtt_password: Some("hunter2".into()),
                ..args()
            })
            .is_ok()
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let settings = Settings::from_args(&ConfigArgs {
            jwt_secret: Some("super-secret-value-that-is-long-enough!!".into()),
            ..args()
        })
        .unwrap();
        assert!(!format!("{settings:?}").contains("super-secret-value"));
    }
}
