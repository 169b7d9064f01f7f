//! Readiness: whether the parts a request needs answer right now.

use std::time::Duration;

use sea_orm::DatabaseConnection;

use crate::db;
use crate::mqtt::client::MqttClient;

/// A check that takes longer than this counts as down: a probe must answer fast.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The state of each dependency.
pub struct HealthReport {
    pub checks: Vec<(&'static str, bool)>,
}

impl HealthReport {
    pub fn all_up(&self) -> bool {
        self.checks.iter().all(|(_, up)| *up)
    }

    pub fn down(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|(_, up)| !up)
            .map(|(name, _)| *name)
            .collect()
    }
}

/// Checks every dependency, each within [`CHECK_TIMEOUT`].
pub async fn check(database: &DatabaseConnection, mqtt: &MqttClient) -> HealthReport {
    let database = match tokio::time::timeout(CHECK_TIMEOUT, db::ping(database)).await {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            tracing::warn!(error = format!("{err:#}"), "readiness: database down");
            false
        }
        Err(_) => {
            tracing::warn!("readiness: database did not answer within {CHECK_TIMEOUT:?}");
            false
        }
    };
    let broker = mqtt.is_ready();
    if !broker {
        tracing::warn!("readiness: the MQTT connection is down");
    }
    HealthReport {
        checks: vec![("database", database), ("broker", broker)],
    }
}
