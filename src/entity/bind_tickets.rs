//! `bind_tickets`: a WeChat login waiting to be bound to an account or to register one.

use sea_orm::entity::prelude::*;

/// A pending bind; the ticket itself is known only to the client, we keep its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "bind_tickets")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub ticket_hash: String,
    pub openid: String,
    pub unionid: Option<String>,
    pub session_key: String,
    pub failed_attempts: i32,
    pub expires_at: i64,
    pub spent_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
