//! `wechat_identities`: the link between a WeChat user (appid + openid) and an account.

use sea_orm::entity::prelude::*;

/// One account's WeChat identity for one app.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "wechat_identities")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub appid: String,
    pub openid: String,
    pub unionid: Option<String>,
    /// From the latest login; decrypts the profile data the mini program sends. Never sent out.
    pub session_key: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
