//! What devices publish, sorted: telemetry and status to the batched writer, results to the
//! command relay. Invalid payloads are counted and dropped here; nothing a device sends can
//! stop the intake. Messages come from the backend's MQTT connection, and telemetry from the
//! embedded broker directly, in process.

use std::sync::Arc;

use bytes::Bytes;

use super::clock::system_ms;
use super::commands::CommandRelay;
use super::telemetry::{DeviceEvent, EventKind, TelemetryQueue};
use crate::mqtt::client::Inbound;
use crate::mqtt::payload;
use crate::mqtt::topics::{DeviceTopic, TopicKind};

/// How far ahead of the server's clock a device's `ts` may be: clocks drift a little, and a
/// reading a few seconds "early" is still the reading it was.
pub const FUTURE_TS_TOLERANCE_MS: i64 = 60_000;

/// The time a reading is stored under: the device's `ts`, or the arrival time when it sent
/// none or one further in the future than [`FUTURE_TS_TOLERANCE_MS`]. A far-future `ts` would
/// otherwise stay the device's latest reading for as long as the clock was wrong.
fn reading_time(device_id: uuid::Uuid, ts: Option<i64>, received_at: i64) -> i64 {
    match ts {
        Some(ts) if ts > received_at + FUTURE_TS_TOLERANCE_MS => {
            metrics::counter!(crate::metrics::TELEMETRY_TS_CLAMPED).increment(1);
            tracing::debug!(%device_id, ts, received_at, "a reading from the future is stored under its arrival time");
            received_at
        }
        Some(ts) => ts,
        None => received_at,
    }
}

/// The backend's handler for device topics.
#[derive(Clone)]
pub struct DeviceMessages {
    pub queue: TelemetryQueue,
    pub commands: Arc<CommandRelay>,
}

impl Inbound for DeviceMessages {
    async fn deliver(&self, topic: DeviceTopic, body: Bytes) {
        // Counted here, where both routes in (the MQTT connection, the embedded broker) meet.
        metrics::counter!(crate::metrics::MQTT_MESSAGES_IN, "topic" => topic.kind.label())
            .increment(1);
        let received_at = system_ms();
        let device_id = topic.device_id;
        let kind = match topic.kind {
            TopicKind::Telemetry => match payload::parse_telemetry(&body) {
                Ok(telemetry) => EventKind::Telemetry {
                    ts: reading_time(device_id, telemetry.ts, received_at),
                    values_json: telemetry.values_json,
                },
                Err(err) => {
                    metrics::counter!(crate::metrics::TELEMETRY_DROPPED, "reason" => err.reason())
                        .increment(1);
                    tracing::debug!(%device_id, reason = err.reason(), error = %err, "dropped a telemetry message");
                    EventKind::Seen
                }
            },
            TopicKind::Status => match payload::parse_status(&body) {
                Ok(online) => EventKind::Status { online },
                Err(err) => {
                    dropped("status", err);
                    EventKind::Seen
                }
            },
            TopicKind::CommandResult => {
                match payload::parse_command_result(&body) {
                    Ok(result) => {
                        let commands = self.commands.clone();
                        // Off the event loop: a database round trip per result must not hold
                        // up the telemetry behind it.
                        tokio::spawn(async move { commands.apply_result(device_id, result).await });
                    }
                    Err(err) => dropped("result", err),
                }
                EventKind::Seen
            }
            // Our own commands, echoed if the broker routes them back: not a sign of life.
            TopicKind::Commands => return,
        };
        self.queue
            .push(DeviceEvent {
                device_id,
                received_at,
                kind,
            })
            .await;
    }
}

fn dropped(topic: &'static str, err: payload::PayloadError) {
    metrics::counter!(crate::metrics::MQTT_DROPPED, "topic" => topic, "reason" => err.reason())
        .increment(1);
    tracing::debug!(topic, reason = err.reason(), error = %err, "dropped a device message");
}
