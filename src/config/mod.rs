//! Configuration: `IOTBIND_*` environment variables, overridden by CLI flags, parsed once at
//! start into typed [`Settings`].
//!
//! clap reads both sources (a flag wins over its variable) and hands over raw strings
//! ([`ConfigArgs`]); the typed parsing happens here so that a bad value fails with one line
//! naming the variable, which is what an operator looking at a crash-looping container needs.
//! The settings come grouped by what they configure: HTTP, the database, MQTT, WeChat, tokens.

mod args;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};

pub use args::{ConfigArgs, defaults};
use parse::{
    boolean, broker_address, count, duration, invalid, mqtt_name, networks, non_empty, rate,
    socket_addr,
};

/// Fewest bytes accepted for `IOTBIND_JWT_SECRET`: HS256 needs a key at least as long as its
/// 256-bit output to keep its strength.
pub const MIN_JWT_SECRET_BYTES: usize = 32;
/// Fewest bytes accepted for `IOTBIND_MQTT_PASSWORD` in production: the backend's broker
/// login may publish any device's commands, so it must not be guessable.
pub const MIN_MQTT_PASSWORD_BYTES: usize = 32;
/// Fewest bytes accepted for `IOTBIND_BROKER_HOOK_SECRET`: whoever knows it can ask whether
/// any password is a device's.
pub const MIN_HOOK_SECRET_BYTES: usize = 32;
/// The appid the fake WeChat API answers for when none is configured.
pub const DEV_WECHAT_APPID: &str = "wxdevelopment0000";
/// The example secret shown in the README, refused in production so a copy-paste cannot ship.
pub const EXAMPLE_JWT_SECRET: &str = "change-me-to-at-least-32-random-bytes-please";

/// The validated configuration of one iotbind process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub environment: Environment,
    pub http: HttpSettings,
    pub database: DatabaseUrl,
    pub mqtt: MqttSettings,
    pub wechat: WechatSettings,
    pub tokens: TokenSettings,
    pub log_format: LogFormat,
    /// Capacity of the queue in front of the telemetry writer, in device messages.
    pub telemetry_queue: usize,
}

/// Whether the server may take development shortcuts (fake WeChat, generated JWT secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

/// The HTTP side: where it listens, how long it waits for clients, whom it believes about
/// their address, and who may call the broker hooks.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    pub timeouts: HttpTimeouts,
    /// Peers whose forwarding headers name the client; empty: trust none.
    pub trusted_proxies: Vec<IpNet>,
    /// `None`: no per-address limit on password attempts.
    pub password_attempts_per_minute: Option<NonZeroU32>,
    /// Set: the broker hooks are served and callers must present it.
    pub broker_hook_secret: Option<SecretString>,
}

/// How long the HTTP server waits for slow or idle clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    pub header: Duration,
    pub body: Duration,
    pub idle: Duration,
}

/// The database, by the kind its URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://file.db?mode=rwc`
    Sqlite(String),
    /// `postgres://user@host/db`
    Postgres(String),
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<DatabaseUrl, ConfigError> {
        if url.starts_with("sqlite:") {
            Ok(DatabaseUrl::Sqlite(url.to_owned()))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(url.to_owned()))
        } else {
            Err(invalid(
                "IOTBIND_DATABASE_URL",
                "database-url",
                "expected a `sqlite://…` or `postgres://…` URL".to_owned(),
            ))
        }
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        match self {
            DatabaseUrl::Sqlite(url) | DatabaseUrl::Postgres(url) => url,
        }
    }
}

/// The broker devices connect to, and the backend's own login to it.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub broker: BrokerSettings,
    /// The backend's login: to an external broker, or the one other replicas use to share
    /// the embedded broker (otherwise a random one is made at start).
    pub username: Option<String>,
    pub password: Option<SecretString>,
}

/// The embedded broker, or an external one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerSettings {
    Embedded(EmbeddedBrokerSettings),
    External(ExternalBrokerSettings),
}

/// The broker in this process: where it listens and how it treats clients that have not
/// logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedBrokerSettings {
    pub listen: SocketAddr,
    pub handshake_timeout: Duration,
    pub handshakes_per_address: usize,
    /// `None`: no per-address limit on refused CONNECTs.
    pub failed_connects_per_minute: Option<NonZeroU32>,
}

/// A broker of the deployment's own (Mosquitto, EMQX, rmqttd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalBrokerSettings {
    pub host: String,
    pub port: u16,
    /// Set: a persistent session under this client id; unset: a fresh id, clean session.
    pub client_id: Option<String>,
    /// Telemetry through `$share/<group>/…` (default) or a plain subscription.
    pub shared_subscription: bool,
    pub share_group: String,
    /// Devices are also created in Mosquitto's dynamic security plugin.
    pub dynsec: bool,
}

/// The mini program and where its WeChat API is.
#[derive(Debug, Clone)]
pub struct WechatSettings {
    pub appid: String,
    pub mode: WechatMode,
    pub api_base: String,
}

/// Where WeChat's API is: the real one, or the fake this process serves in development.
#[derive(Debug, Clone)]
pub enum WechatMode {
    /// Call the real API with this app secret.
    Real { secret: SecretString },
    /// No secret set: serve and use the fake API under `/dev/wechat`.
    Fake,
}

/// Access tokens, refresh tokens and bind tickets.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// `None` in development means "generate one and keep it".
    pub jwt_secret: Option<SecretString>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub bind_ticket_ttl: Duration,
    pub refresh_reuse_grace: Duration,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
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
            environment,
            http: http_settings(args)?,
            database: DatabaseUrl::parse(
                args.database_url
                    .as_deref()
                    .unwrap_or(defaults::DATABASE_URL),
            )?,
            mqtt: mqtt_settings(args)?,
            wechat: wechat_settings(args)?,
            tokens: token_settings(args)?,
            log_format,
            telemetry_queue: count(
                "IOTBIND_TELEMETRY_QUEUE",
                "telemetry-queue",
                &args.telemetry_queue,
                defaults::TELEMETRY_QUEUE,
            )?,
        };
        settings.check_production()?;
        Ok(settings)
    }

    /// Production refuses every development shortcut, naming the variable that enables it.
    fn check_production(&self) -> Result<(), ConfigError> {
        if self.environment != Environment::Production {
            return Ok(());
        }
        if matches!(self.wechat.mode, WechatMode::Fake) {
            return Err(invalid(
                "IOTBIND_WECHAT_SECRET",
                "wechat-secret",
                "required in production: the fake WeChat API runs only in development".to_owned(),
            ));
        }
        if let Some(password) = &self.mqtt.password
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
        match &self.tokens.jwt_secret {
            None => Err(invalid(
                "IOTBIND_JWT_SECRET",
                "jwt-secret",
                "required in production: a generated development secret is not for real users"
                    .to_owned(),
            )),
            Some(secret) if secret.expose_secret() == EXAMPLE_JWT_SECRET => Err(invalid(
                "IOTBIND_JWT_SECRET",
                "jwt-secret",
                "is the example value from the documentation; generate your own (e.g. `openssl \
                 rand -base64 48`)"
                    .to_owned(),
            )),
            Some(_) => Ok(()),
        }
    }

    /// True when the fake WeChat API must be served by this process.
    pub fn wechat_is_fake(&self) -> bool {
        matches!(self.wechat.mode, WechatMode::Fake)
    }
}

fn http_settings(args: &ConfigArgs) -> Result<HttpSettings, ConfigError> {
    Ok(HttpSettings {
        addr: socket_addr(
            "IOTBIND_HTTP_ADDR",
            "http-addr",
            args.http_addr.as_deref().unwrap_or(defaults::HTTP_ADDR),
        )?,
        timeouts: HttpTimeouts {
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
        broker_hook_secret: secret(
            "IOTBIND_BROKER_HOOK_SECRET",
            "broker-hook-secret",
            &args.broker_hook_secret,
            MIN_HOOK_SECRET_BYTES,
        )?,
    })
}

fn mqtt_settings(args: &ConfigArgs) -> Result<MqttSettings, ConfigError> {
    // Every value is checked, also those the chosen broker does not use: a typo should fail
    // at start rather than the day the broker changes.
    let embedded = EmbeddedBrokerSettings {
        listen: socket_addr(
            "IOTBIND_MQTT_LISTEN",
            "mqtt-listen",
            args.mqtt_listen.as_deref().unwrap_or(defaults::MQTT_LISTEN),
        )?,
        handshake_timeout: duration(
            "IOTBIND_MQTT_HANDSHAKE_TIMEOUT",
            "mqtt-handshake-timeout",
            &args.mqtt_handshake_timeout,
            defaults::MQTT_HANDSHAKE_TIMEOUT,
        )?,
        handshakes_per_address: count(
            "IOTBIND_MQTT_HANDSHAKES_PER_ADDRESS",
            "mqtt-handshakes-per-address",
            &args.mqtt_handshakes_per_address,
            defaults::MQTT_HANDSHAKES_PER_ADDRESS,
        )?,
        failed_connects_per_minute: rate(
            "IOTBIND_MQTT_FAILED_CONNECTS_PER_MINUTE",
            "mqtt-failed-connects-per-minute",
            &args.mqtt_failed_connects_per_minute,
            defaults::MQTT_FAILED_CONNECTS_PER_MINUTE,
        )?,
    };
    let client_id = non_empty(&args.mqtt_client_id)
        .map(|id| mqtt_name("IOTBIND_MQTT_CLIENT_ID", "mqtt-client-id", id))
        .transpose()?;
    let shared_subscription = boolean(
        "IOTBIND_MQTT_SHARED_SUBSCRIPTION",
        "mqtt-shared-subscription",
        non_empty(&args.mqtt_shared_subscription).unwrap_or(defaults::MQTT_SHARED_SUBSCRIPTION),
    )?;
    let share_group = mqtt_name(
        "IOTBIND_MQTT_SHARE_GROUP",
        "mqtt-share-group",
        args.mqtt_share_group
            .as_deref()
            .unwrap_or(defaults::MQTT_SHARE_GROUP),
    )?;
    let dynsec = boolean(
        "IOTBIND_MQTT_DYNSEC",
        "mqtt-dynsec",
        non_empty(&args.mqtt_dynsec).unwrap_or(defaults::MQTT_DYNSEC),
    )?;
    let broker = match broker_address(args.mqtt_url.as_deref().unwrap_or(defaults::MQTT_URL))? {
        None if dynsec => {
            return Err(invalid(
                "IOTBIND_MQTT_DYNSEC",
                "mqtt-dynsec",
                "needs an external Mosquitto (IOTBIND_MQTT_URL=mqtt://host:port); the embedded \
                 broker checks devices itself"
                    .to_owned(),
            ));
        }
        None => BrokerSettings::Embedded(embedded),
        Some((host, port)) => BrokerSettings::External(ExternalBrokerSettings {
            host,
            port,
            client_id,
            shared_subscription,
            share_group,
            dynsec,
        }),
    };
    Ok(MqttSettings {
        broker,
        username: non_empty(&args.mqtt_username).map(str::to_owned),
        password: non_empty(&args.mqtt_password).map(|p| SecretString::from(p.to_owned())),
    })
}

fn wechat_settings(args: &ConfigArgs) -> Result<WechatSettings, ConfigError> {
    let mode = match non_empty(&args.wechat_secret) {
        Some(secret) => WechatMode::Real {
            secret: SecretString::from(secret.to_owned()),
        },
        None => WechatMode::Fake,
    };
    let appid = match non_empty(&args.wechat_appid) {
        Some(appid) => appid.to_owned(),
        None if matches!(mode, WechatMode::Fake) => DEV_WECHAT_APPID.to_owned(),
        None => {
            return Err(invalid(
                "IOTBIND_WECHAT_APPID",
                "wechat-appid",
                "required when IOTBIND_WECHAT_SECRET is set".to_owned(),
            ));
        }
    };
    let api_base = args
        .wechat_api_base
        .clone()
        .unwrap_or_else(|| defaults::WECHAT_API_BASE.to_owned());
    if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
        return Err(invalid(
            "IOTBIND_WECHAT_API_BASE",
            "wechat-api-base",
            "expected an http(s):// URL".to_owned(),
        ));
    }
    Ok(WechatSettings {
        appid,
        mode,
        api_base,
    })
}

fn token_settings(args: &ConfigArgs) -> Result<TokenSettings, ConfigError> {
    Ok(TokenSettings {
        jwt_secret: secret(
            "IOTBIND_JWT_SECRET",
            "jwt-secret",
            &args.jwt_secret,
            MIN_JWT_SECRET_BYTES,
        )?,
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
    })
}

/// A secret of at least `min` bytes, or none; the error never shows it.
fn secret(
    variable: &'static str,
    flag: &'static str,
    value: &Option<String>,
    min: usize,
) -> Result<Option<SecretString>, ConfigError> {
    match non_empty(value) {
        Some(secret) if secret.len() < min => Err(invalid(
            variable,
            flag,
            format!("must be at least {min} bytes, got {}", secret.len()),
        )),
        Some(secret) => Ok(Some(SecretString::from(secret.to_owned()))),
        None => Ok(None),
    }
}
