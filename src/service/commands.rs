//! Commands: stored, relayed to the device over MQTT, and finished by the device's result or
//! by their timeout, whichever comes first.
//!
//! A command changes state only while it is `sent`, through conditional updates, so late,
//! duplicate or foreign results, two replicas applying one result, and the timeout racing the
//! result all end with exactly one final state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::{Map, Value};
use tokio::sync::Notify;
use uuid::Uuid;

use super::clock::system_ms;
use super::devices::{self, DeviceError};
use super::text::TextRule;
use crate::entity::commands::{self, CommandStatus};
use crate::mqtt::client::MqttClient;
use crate::mqtt::payload::{CommandMessage, CommandResult, ResultStatus};
use crate::mqtt::topics;

/// Bounds of `timeout_ms`.
pub const MIN_TIMEOUT_MS: u32 = 100;
pub const MAX_TIMEOUT_MS: u32 = 60_000;
pub const DEFAULT_TIMEOUT_MS: u32 = 5_000;

/// Why a command operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("no such command")]
    NotFound,
    #[error("invalid command name: {0}")]
    InvalidName(&'static str),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<DbErr> for CommandError {
    fn from(err: DbErr) -> Self {
        CommandError::Internal(anyhow::Error::new(err).context("database error on commands"))
    }
}

/// [`CommandName`]'s rule, as the spec states it.
pub const COMMAND_NAME_RULE: TextRule = TextRule {
    min_chars: 1,
    max_chars: 64,
    pattern: Some("^[A-Za-z0-9_.:-]*$"),
    description: "1–64 of `A-Z a-z 0-9 _ . : -`, e.g. `set_relay`.",
};

/// A command name: 1–64 of letters, digits and `_ . : -`, like `set_relay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandName(String);

impl CommandName {
    pub fn parse(raw: &str) -> Result<CommandName, CommandError> {
        let valid = (COMMAND_NAME_RULE.min_chars..=COMMAND_NAME_RULE.max_chars)
            .contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        if valid {
            Ok(CommandName(raw.to_owned()))
        } else {
            Err(CommandError::InvalidName(
                "must be 1 to 64 of letters, digits, '_', '.', ':' and '-'",
            ))
        }
    }
}

/// A command as the user asked for it.
#[derive(Debug, Clone)]
pub struct NewCommand {
    pub name: CommandName,
    pub params: Map<String, Value>,
    /// Already within [`MIN_TIMEOUT_MS`]..=[`MAX_TIMEOUT_MS`].
    pub timeout_ms: u32,
    pub wait: bool,
}

/// Sends commands and finishes them; shared by request handlers and the MQTT intake.
pub struct CommandRelay {
    db: DatabaseConnection,
    mqtt: MqttClient,
    /// Requests waiting for a command's final state, by command id.
    waiters: Mutex<HashMap<Uuid, Arc<Waiter>>>,
}

/// A request waiting for its command to become final.
#[derive(Default)]
struct Waiter {
    notify: Notify,
    /// The final row, when this replica applied the result and so already holds it; empty
    /// when another replica did, and the waiter reads it instead.
    outcome: Mutex<Option<commands::Model>>,
}

impl Waiter {
    fn take_outcome(&self) -> Option<commands::Model> {
        self.outcome.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// Removes a waiter however its request ends, including when the client goes away.
struct WaiterGuard<'a> {
    relay: &'a CommandRelay,
    id: Uuid,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut waiters) = self.relay.waiters.lock() {
            waiters.remove(&self.id);
        }
    }
}

/// Where a command stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandStage {
    Sent,
    Succeeded,
    Failed,
    Rejected,
    TimedOut,
}

/// A command as its owner sees it.
#[derive(Debug, Clone)]
pub struct CommandView {
    pub id: Uuid,
    pub device_id: Uuid,
    pub name: String,
    /// A JSON object.
    pub params_json: String,
    pub stage: CommandStage,
    /// A JSON object, once the device answered with one.
    pub result_json: Option<String>,
    pub error: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms, once final.
    pub completed_at: Option<i64>,
}

impl From<commands::Model> for CommandView {
    fn from(command: commands::Model) -> Self {
        CommandView {
            id: command.id,
            device_id: command.device_id,
            name: command.name,
            params_json: command.params_json,
            stage: match command.status {
                CommandStatus::Sent => CommandStage::Sent,
                CommandStatus::Succeeded => CommandStage::Succeeded,
                CommandStatus::Failed => CommandStage::Failed,
                CommandStatus::Rejected => CommandStage::Rejected,
                CommandStatus::TimedOut => CommandStage::TimedOut,
            },
            result_json: command.result_json,
            error: command.error,
            created_at: command.created_at,
            completed_at: command.completed_at,
        }
    }
}

impl CommandRelay {
    pub fn new(db: DatabaseConnection, mqtt: MqttClient) -> CommandRelay {
        CommandRelay {
            db,
            mqtt,
            waiters: Mutex::new(HashMap::new()),
        }
    }

    /// Stores and publishes a command to the caller's device; with `wait`, returns once it is
    /// final (at the latest when it expires).
    pub async fn send(
        &self,
        user_id: Uuid,
        device_id: Uuid,
        command: NewCommand,
    ) -> Result<CommandView, CommandError> {
        self.send_and_follow(user_id, device_id, command)
            .await
            .map(CommandView::from)
    }

    async fn send_and_follow(
        &self,
        user_id: Uuid,
        device_id: Uuid,
        command: NewCommand,
    ) -> Result<commands::Model, CommandError> {
        devices::owned(&self.db, user_id, device_id).await?;
        let id = Uuid::now_v7();
        let created_at = system_ms();
        let expires_at = created_at + i64::from(command.timeout_ms);
        let params = Value::Object(command.params);
        commands::Entity::insert(commands::ActiveModel {
            id: Set(id),
            device_id: Set(device_id),
            user_id: Set(user_id),
            name: Set(command.name.0.clone()),
            params_json: Set(params.to_string()),
            status: Set(CommandStatus::Sent),
            result_json: Set(None),
            error: Set(None),
            created_at: Set(created_at),
            expires_at: Set(expires_at),
            completed_at: Set(None),
        })
        .exec_without_returning(&self.db)
        .await?;

        // Registered before publishing, so an instant answer cannot slip past the waiter.
        let waiter = command.wait.then(|| {
            let waiter = Arc::new(Waiter::default());
            if let Ok(mut waiters) = self.waiters.lock() {
                waiters.insert(id, waiter.clone());
            }
            (waiter, WaiterGuard { relay: self, id })
        });

        let message = CommandMessage {
            id,
            name: &command.name.0,
            params: &params,
            expires_at,
        };
        let payload = serde_json::to_vec(&message)
            .map_err(|err| anyhow::Error::new(err).context("encoding a command"))?;
        match self.mqtt.publish(topics::commands(device_id), payload) {
            Ok(()) => {
                metrics::counter!(crate::metrics::MQTT_MESSAGES_OUT, "topic" => "commands", "outcome" => "queued")
                    .increment(1);
            }
            Err(err) => {
                // The command stays `sent` and times out, which is what the user sees.
                metrics::counter!(crate::metrics::MQTT_MESSAGES_OUT, "topic" => "commands", "outcome" => "refused")
                    .increment(1);
                tracing::warn!(%device_id, command_id = %id, error = %err, "cannot publish a command");
            }
        }

        let Some((waiter, _guard)) = waiter else {
            return self.find(id).await;
        };
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(u64::from(command.timeout_ms));
        loop {
            if tokio::time::timeout_at(deadline, waiter.notify.notified())
                .await
                .is_err()
            {
                return match self.expire(id).await? {
                    Some(timed_out) => Ok(timed_out),
                    // A result won the race against the deadline.
                    None => self.find(id).await,
                };
            }
            if let Some(done) = waiter.take_outcome() {
                return Ok(done);
            }
            let current = self.find(id).await?;
            if current.status != CommandStatus::Sent {
                return Ok(current);
            }
        }
    }

    /// Applies a device's result to a command still `sent` and not yet expired; anything else
    /// (unknown id, another device's command, already final) changes nothing.
    pub async fn apply_result(&self, device_id: Uuid, result: CommandResult) {
        let status = match result.status {
            ResultStatus::Succeeded => CommandStatus::Succeeded,
            ResultStatus::Failed => CommandStatus::Failed,
            ResultStatus::Rejected => CommandStatus::Rejected,
        };
        let now = system_ms();
        let applied = commands::Entity::update_many()
            .col_expr(commands::Column::Status, Expr::value(status.as_str()))
            .col_expr(
                commands::Column::ResultJson,
                Expr::value(result.result_json),
            )
            .col_expr(commands::Column::Error, Expr::value(result.error))
            .col_expr(commands::Column::CompletedAt, Expr::value(now))
            .filter(commands::Column::Id.eq(result.id))
            .filter(commands::Column::DeviceId.eq(device_id))
            .filter(commands::Column::Status.eq(CommandStatus::Sent.as_str()))
            .filter(commands::Column::ExpiresAt.gte(now))
            .exec_with_returning(&self.db)
            .await;
        let mut outcome = None;
        match applied {
            Ok(mut rows) if rows.len() == 1 => {
                metrics::counter!(crate::metrics::COMMANDS, "status" => status.as_str())
                    .increment(1);
                outcome = rows.pop();
            }
            Ok(_) => {
                tracing::debug!(%device_id, command_id = %result.id, "ignored a result for a command that is unknown, finished or expired");
            }
            Err(err) => {
                tracing::warn!(%device_id, command_id = %result.id, error = %err, "cannot record a command result");
            }
        }
        // Another replica may have applied it first; the waiter then reads the final state.
        let waiter = self
            .waiters
            .lock()
            .ok()
            .and_then(|waiters| waiters.get(&result.id).cloned());
        if let Some(waiter) = waiter {
            if let (Some(row), Ok(mut slot)) = (outcome, waiter.outcome.lock()) {
                *slot = Some(row);
            }
            waiter.notify.notify_one();
        }
    }

    /// Times the command out if it is still `sent`; returns its final row when it did.
    async fn expire(&self, id: Uuid) -> Result<Option<commands::Model>, DbErr> {
        let mut expired = time_out()
            .filter(commands::Column::Id.eq(id))
            .exec_with_returning(&self.db)
            .await?;
        if expired.is_empty() {
            return Ok(None);
        }
        metrics::counter!(crate::metrics::COMMANDS, "status" => "timed_out").increment(1);
        Ok(expired.pop())
    }

    async fn find(&self, id: Uuid) -> Result<commands::Model, CommandError> {
        commands::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(CommandError::NotFound)
    }
}

/// `sent` → `timed_out`, completed at its expiry; the caller narrows it down.
fn time_out() -> sea_orm::UpdateMany<commands::Entity> {
    commands::Entity::update_many()
        .col_expr(
            commands::Column::Status,
            Expr::value(CommandStatus::TimedOut.as_str()),
        )
        .col_expr(
            commands::Column::CompletedAt,
            Expr::col(commands::Column::ExpiresAt),
        )
        .filter(commands::Column::Status.eq(CommandStatus::Sent.as_str()))
}

/// Marks every overdue `sent` command `timed_out` (of one device, or all); returns how many.
pub async fn expire_overdue(
    db: &impl ConnectionTrait,
    device_id: Option<Uuid>,
) -> Result<u64, DbErr> {
    let mut update = time_out().filter(commands::Column::ExpiresAt.lt(system_ms()));
    if let Some(device_id) = device_id {
        update = update.filter(commands::Column::DeviceId.eq(device_id));
    }
    let expired = update.exec(db).await?.rows_affected;
    if expired > 0 {
        metrics::counter!(crate::metrics::COMMANDS, "status" => "timed_out").increment(expired);
    }
    Ok(expired)
}

/// One command of the caller's device, sent since their claim.
pub async fn get(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    device_id: Uuid,
    command_id: Uuid,
) -> Result<CommandView, CommandError> {
    let device = devices::owned(db, user_id, device_id).await?;
    expire_overdue(db, Some(device_id)).await?;
    commands::Entity::find_by_id(command_id)
        .filter(commands::Column::DeviceId.eq(device_id))
        .filter(commands::Column::CreatedAt.gte(device.claimed_at.unwrap_or(i64::MAX)))
        .one(db)
        .await?
        .map(CommandView::from)
        .ok_or(CommandError::NotFound)
}

/// The caller's device's latest commands since their claim, newest first.
pub async fn recent(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    device_id: Uuid,
    limit: u64,
) -> Result<Vec<CommandView>, CommandError> {
    let device = devices::owned(db, user_id, device_id).await?;
    expire_overdue(db, Some(device_id)).await?;
    Ok(commands::Entity::find()
        .filter(commands::Column::DeviceId.eq(device_id))
        .filter(commands::Column::CreatedAt.gte(device.claimed_at.unwrap_or(i64::MAX)))
        .order_by_desc(commands::Column::CreatedAt)
        .order_by_desc(commands::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(CommandView::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_are_short_identifiers() {
        assert!(CommandName::parse("set_relay").is_ok());
        assert!(CommandName::parse("fw:update-1.2").is_ok());
        assert!(CommandName::parse("").is_err());
        assert!(CommandName::parse("has space").is_err());
        assert!(CommandName::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn the_command_name_rule_the_spec_states_agrees_with_the_command_name_parser() {
        for sample in [
            "set_relay",
            "ota:begin",
            "a.b-c",
            "",
            &"c".repeat(64),
            &"c".repeat(65),
            "set relay",
            "sét",
            "a\u{0}",
        ] {
            assert_eq!(
                crate::service::text::rule_admits(&COMMAND_NAME_RULE, sample),
                CommandName::parse(sample).is_ok(),
                "{sample:?}"
            );
        }
    }
}
