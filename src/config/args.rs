//! The raw configuration as clap collects it: flags and `IOTBIND_*` variables, as strings,
//! with the defaults `--help` shows.

use clap::Args;

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

/// The raw configuration as clap collects it from flags and `IOTBIND_*` variables.
///
/// Every field is a string so that [`super::Settings::from_args`] can name the variable in its error.
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
