//! `login_failures`: wrong passwords per account and client address, for the lockout.

use sea_orm::entity::prelude::*;

/// The wrong passwords one client address typed for one account in the current window.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "login_failures")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    /// An IPv4 address or an IPv6 /64 network.
    #[sea_orm(primary_key, auto_increment = false)]
    pub client: String,
    pub failures: i32,
    /// When the first failure of the window was counted (unix ms).
    pub window_start: i64,
    /// Set when the failures locked the account for this client (unix ms).
    pub locked_until: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
