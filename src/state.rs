//! What every request handler and background task shares: the database, the settings and the
//! long-lived services built from them.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sea_orm::DatabaseConnection;

use crate::api::attempts::PasswordAttempts;
use crate::config::Settings;
use crate::db::inline::InlineReader;
use crate::mqtt::client::MqttClient;
use crate::mqtt::dynsec::DynamicSecurity;
use crate::service::broker_logins::BrokerLogins;
use crate::service::code_exchange::CodeExchange;
use crate::service::commands::CommandRelay;
use crate::service::credentials::Credentials;
use crate::service::tokens::TokenService;

/// Cheap to clone: every field is a handle.
#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    /// Reads on the request's own thread, beside `db`; only for a SQLite file.
    pub inline_reads: Option<Arc<InlineReader>>,
    pub settings: Arc<Settings>,
    /// Password checks with lockout; owns the hasher.
    pub credentials: Credentials,
    pub tokens: Arc<TokenService>,
    /// The WeChat client behind a remembering single-flight front.
    pub code_exchange: Arc<CodeExchange>,
    pub metrics: PrometheusHandle,
    /// The backend's own MQTT connection; readiness asks it whether it is up.
    pub mqtt: MqttClient,
    /// Sends commands to devices and waits for their results.
    pub commands: Arc<CommandRelay>,
    /// Broker logins (the embedded broker's hooks and the HTTP hooks of an external one).
    pub broker_logins: BrokerLogins,
    /// Mosquitto's dynamic security, when devices are kept there too.
    pub dynsec: Option<DynamicSecurity>,
    /// Password attempts per client address (in memory, per replica).
    pub password_attempts: Arc<PasswordAttempts>,
}
