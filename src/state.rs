//! What every request handler and background task shares: the database, the settings and the
//! long-lived services built from them.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sea_orm::DatabaseConnection;

use crate::config::Settings;
use crate::mqtt::client::MqttClient;
use crate::mqtt::dynsec::DynamicSecurity;
use crate::service::auth::Logins;
use crate::service::broker_logins::BrokerLogins;
use crate::service::clock::Clock;
use crate::service::commands::CommandRelay;
use crate::service::me::Accounts;
use crate::service::tokens::TokenService;

/// Cheap to clone: every field is a handle.
#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub settings: Arc<Settings>,
    /// WeChat login, bind, register, password login and refresh.
    pub logins: Logins,
    /// The signed-in user's own account.
    pub accounts: Accounts,
    pub tokens: Arc<TokenService>,
    pub metrics: PrometheusHandle,
    /// The backend's own MQTT connection; readiness asks it whether it is up.
    pub mqtt: MqttClient,
    /// Sends commands to devices and waits for their results.
    pub commands: Arc<CommandRelay>,
    /// Broker logins (the embedded broker's hooks and the HTTP hooks of an external one).
    pub broker_logins: BrokerLogins,
    /// Mosquitto's dynamic security, when devices are kept there too.
    pub dynsec: Option<DynamicSecurity>,
    /// The time the rules see; tests move it forward.
    pub clock: Clock,
}
