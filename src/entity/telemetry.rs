//! `telemetry`: every stored telemetry message, indexed by (device_id, ts) for history pages.

use sea_orm::entity::prelude::*;

/// One telemetry message of one device.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "telemetry")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub device_id: Uuid,
    /// The device's timestamp, or the arrival time when it sent none (unix ms).
    pub ts: i64,
    /// The `values` object as JSON text, stored exactly as validated.
    pub values_json: String,
    pub received_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
