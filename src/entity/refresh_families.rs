//! `refresh_families`: one per login; revoking it ends every refresh token it produced.

use sea_orm::entity::prelude::*;

/// A chain of refresh tokens descending from one login.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "refresh_families")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub revoked_at: Option<i64>,
    /// The latest token's expiry: after it the family is only clutter, and is purged.
    pub expires_at: i64,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
