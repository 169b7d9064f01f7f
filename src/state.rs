//! What every request handler and background task shares: the database, the settings and the
//! long-lived services built from them.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sea_orm::DatabaseConnection;

use crate::config::Settings;
use crate::service::passwords::PasswordHasher;

/// Cheap to clone: every field is a handle.
#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub settings: Arc<Settings>,
    pub passwords: PasswordHasher,
    pub metrics: PrometheusHandle,
}
