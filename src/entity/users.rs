//! `users`: platform accounts.

use sea_orm::entity::prelude::*;

/// A platform account.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Lower-case; unique.
    #[sea_orm(unique)]
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub nickname: String,
    pub avatar_url: Option<String>,
    pub role: Role,
    pub created_at: ChronoDateTimeUtc,
    pub updated_at: ChronoDateTimeUtc,
    /// Wrong passwords from all client addresses together in the current window: the
    /// account-wide backstop against guessing from many addresses.
    pub failed_logins: i32,
    /// When the current backstop window began (unix ms).
    pub failed_window_start: Option<i64>,
    /// Password attempts from every address are refused until then (unix ms).
    pub locked_until: Option<i64>,
}

/// What an account may do: admins may also provision devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum Role {
    #[sea_orm(string_value = "user")]
    User,
    #[sea_orm(string_value = "admin")]
    Admin,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
