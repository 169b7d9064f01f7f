//! `/health/live`, `/health/ready` and `/metrics`: what load balancers and Prometheus poll.

use poem::web::Data;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{Object, OpenApi};

use super::ApiTags;
use super::error::{ApiError, ApiFailure};
use crate::error_docs;
use crate::service::health;
use crate::state::AppState;

/// Health and metrics.
#[derive(Default)]
pub struct OperationsApi;

/// The process is up.
#[derive(Object)]
struct Live {
    /// Always `live`.
    status: String,
}

/// Every dependency answered.
#[derive(Object)]
struct Ready {
    /// Always `ready`.
    status: String,
    /// Each checked dependency and `up`.
    checks: Vec<Check>,
}

/// One dependency's state.
#[derive(Object)]
struct Check {
    /// `database` or `broker`.
    name: String,
    /// `up` or `down`.
    state: String,
}

error_docs!(ReadyErrors {
    503: "A dependency (database or broker) is unreachable; the message names it"
});

#[OpenApi(tag = "ApiTags::Operations")]
impl OperationsApi {
    /// Liveness: the process is running and serving HTTP.
    #[oai(path = "/health/live", method = "get", operation_id = "health_live")]
    async fn live(&self) -> Json<Live> {
        Json(Live {
            status: "live".to_owned(),
        })
    }

    /// Readiness: the database (and the broker, when there is one) answer now.
    ///
    /// Load balancers should send traffic only while this answers 200.
    #[oai(path = "/health/ready", method = "get", operation_id = "health_ready")]
    async fn ready(&self, state: Data<&AppState>) -> Result<Json<Ready>, ApiFailure<ReadyErrors>> {
        let report = health::check(&state.db, &state.mqtt).await;
        if report.all_up() {
            Ok(Json(Ready {
                status: "ready".to_owned(),
                checks: report
                    .checks
                    .iter()
                    .map(|(name, _)| Check {
                        name: (*name).to_owned(),
                        state: "up".to_owned(),
                    })
                    .collect(),
            }))
        } else {
            Err(
                ApiError::unavailable(format!("not ready: {} down", report.down().join(", ")))
                    .into(),
            )
        }
    }

    /// Prometheus metrics in the text exposition format.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self, state: Data<&AppState>) -> PlainText<String> {
        PlainText(state.metrics.render())
    }
}
