//! Prometheus metrics: one recorder per process, and the names every part records under.
//!
//! The `metrics` facade is global, so the recorder is installed once and shared even when
//! several apps run in one process (the integration tests do); their series simply add up.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: fine below 10 ms where most requests land, coarse above.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Login attempts, by `method` and `outcome` (`authenticated`, `bind_required` or the error
/// code).
pub const LOGINS: &str = "iotbind_logins_total";
/// Publishes and subscriptions the embedded broker refused, by `action`.
pub const MQTT_FORBIDDEN: &str = "iotbind_mqtt_forbidden_total";
/// Connections the embedded broker's front door closed before they logged in, by `reason`
/// (`handshake_timeout`, `handshakes_per_address`, `not_connect`, …).
pub const MQTT_CONNECTIONS_REFUSED: &str = "iotbind_mqtt_connections_refused_total";
/// CONNECTs the embedded broker refused, by `reason` (`bad_credentials`, `not_authorized`,
/// `throttled`: the address used up its failed-login allowance and was not even checked).
pub const MQTT_LOGINS_REFUSED: &str = "iotbind_mqtt_logins_refused_total";
/// Messages the embedded broker could not deliver to a subscriber, by `reason` (its queue for
/// that subscriber was full, the message expired waiting, …).
pub const MQTT_BROKER_DROPPED: &str = "iotbind_mqtt_broker_dropped_total";
/// Messages the backend received from devices, by `topic` kind.
pub const MQTT_MESSAGES_IN: &str = "iotbind_mqtt_messages_in_total";
/// Messages the backend published to devices, by `topic` kind and `outcome`.
pub const MQTT_MESSAGES_OUT: &str = "iotbind_mqtt_messages_out_total";
/// 1 while the backend's MQTT connection is up.
pub const MQTT_CONNECTED: &str = "iotbind_mqtt_connected";
/// Status and result payloads dropped as invalid, by `topic` and `reason`.
pub const MQTT_DROPPED: &str = "iotbind_mqtt_dropped_total";
/// Telemetry rows committed to the database.
pub const TELEMETRY_ROWS_WRITTEN: &str = "iotbind_telemetry_rows_written_total";
/// Telemetry messages dropped, by `reason`.
pub const TELEMETRY_DROPPED: &str = "iotbind_telemetry_dropped_total";
/// Times the ingestion queue was full and MQTT intake had to wait for the database.
pub const TELEMETRY_QUEUE_FULL: &str = "iotbind_telemetry_queue_full_total";
/// Events waiting for the telemetry writer.
pub const TELEMETRY_QUEUE_DEPTH: &str = "iotbind_telemetry_queue_depth";
/// Time to write one batch, in seconds.
pub const TELEMETRY_FLUSH_SECONDS: &str = "iotbind_telemetry_flush_duration_seconds";
/// Batches that failed to write and were retried.
pub const TELEMETRY_WRITE_ERRORS: &str = "iotbind_telemetry_write_errors_total";
/// argon2 runs, by `operation` (`hash`, `verify`): the cost password attempts put on the
/// cores.
pub const PASSWORD_HASHES: &str = "iotbind_password_hashes_total";
/// Readings whose `ts` lay too far in the future and were stored under their arrival time.
pub const TELEMETRY_TS_CLAMPED: &str = "iotbind_telemetry_ts_clamped_total";
/// Calls of the broker hooks, by `endpoint` (`auth`, `acl`) and `result` (`allow`, `deny`).
pub const BROKER_HOOK_REQUESTS: &str = "iotbind_broker_hook_requests_total";
/// Commands that reached a final state, by `status`.
pub const COMMANDS: &str = "iotbind_commands_total";

/// Installs the recorder on first use and returns the handle that renders `/metrics`.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("http_request_duration_seconds".to_owned()),
                    LATENCY_BUCKETS,
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed already, and then ours records
            // nothing: acceptable for a library user who brought their own.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Counts one served HTTP request and its latency, by route pattern (not raw path, to keep
/// the number of series bounded).
pub fn record_http_request(route: &str, method: &str, status: u16, elapsed: Duration) {
    let labels = [
        ("route", route.to_owned()),
        ("method", method.to_owned()),
        ("status", status.to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!(
        "http_request_duration_seconds",
        "route" => route.to_owned(),
        "method" => method.to_owned()
    )
    .record(elapsed.as_secs_f64());
}

/// Counts one login attempt (WeChat code, bind, register, password or refresh) by outcome.
pub fn record_login(method: &'static str, outcome: &'static str) {
    metrics::counter!(LOGINS, "method" => method, "outcome" => outcome).increment(1);
}
