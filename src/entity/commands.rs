//! `commands`: every command relayed to a device and its outcome.

use sea_orm::entity::prelude::*;

/// Where a command stands; only `sent` may still change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum CommandStatus {
    #[sea_orm(string_value = "sent")]
    Sent,
    #[sea_orm(string_value = "succeeded")]
    Succeeded,
    #[sea_orm(string_value = "failed")]
    Failed,
    #[sea_orm(string_value = "rejected")]
    Rejected,
    #[sea_orm(string_value = "timed_out")]
    TimedOut,
}

impl CommandStatus {
    /// The stored and wire spelling, also used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Sent => "sent",
            CommandStatus::Succeeded => "succeeded",
            CommandStatus::Failed => "failed",
            CommandStatus::Rejected => "rejected",
            CommandStatus::TimedOut => "timed_out",
        }
    }
}

/// One command, from the user who sent it to the device's answer.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "commands")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub device_id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub params_json: String,
    pub status: CommandStatus,
    pub result_json: Option<String>,
    pub error: Option<String>,
    pub created_at: i64,
    /// Creation time + timeout: the device drops it after this, and we stop waiting.
    pub expires_at: i64,
    pub completed_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
