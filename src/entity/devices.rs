//! `devices`: every provisioned device, its owner once claimed, and what the broker last saw.

use sea_orm::entity::prelude::*;

/// A device as provisioned; `owner_id` and `claimed_at` are set while someone owns it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "devices")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub serial: String,
    pub model: Option<String>,
    pub name: Option<String>,
    /// SHA-256 of the claim code printed on the label.
    pub claim_code_hash: String,
    /// SHA-256 of the device's MQTT password.
    pub mqtt_password_hash: String,
    pub owner_id: Option<Uuid>,
    /// When the current owner claimed it (unix ms): they see data from then on only.
    pub claimed_at: Option<i64>,
    /// From the device's retained `status` topic and its last will.
    pub online: bool,
    /// When the latest status message arrived (unix ms).
    pub status_at: Option<i64>,
    /// When any message from the device last arrived (unix ms).
    pub last_seen_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
