//! The signed-in user's own account: profile, password, and their WeChat link.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, FromQueryResult, QueryFilter, QuerySelect,
    TransactionTrait,
};
use secrecy::SecretString;
use uuid::Uuid;

use super::clock::system_ms;
use super::credentials::{AttemptSource, CredentialError, Credentials};
use super::tokens::{self, TokenError};
use super::users::{self, AvatarUrl, Nickname, Password, UserError, UserView, Username};
use crate::db::inline::{InlineReadError, InlineReader};
use crate::entity::{users as user_table, wechat_identities};
use crate::wechat::crypto::{DecryptError, decrypt_user_info};

/// Why a change to the account was refused.
#[derive(Debug, thiserror::Error)]
pub enum MeError {
    /// The token names an account that no longer exists.
    #[error("the account no longer exists")]
    AccountGone,
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error("the account has no WeChat identity")]
    NotBound,
    #[error("the encrypted data is malformed or not for this app: {0}")]
    InvalidEncryptedData(String),
    #[error("the session key cannot decrypt this data; log in again")]
    SessionKeyStale,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<DbErr> for MeError {
    fn from(err: DbErr) -> Self {
        MeError::Internal(anyhow::Error::new(err).context("database error on the account"))
    }
}

impl From<TokenError> for MeError {
    fn from(err: TokenError) -> Self {
        MeError::Internal(anyhow::anyhow!(err).context("cannot revoke refresh tokens"))
    }
}

/// The signed-in user's own account: what changing it needs, handed over once at start.
#[derive(Clone)]
pub struct Accounts {
    pub db: DatabaseConnection,
    /// Reads on the request's own thread, beside `db`; only for a SQLite file.
    pub inline_reads: Option<Arc<InlineReader>>,
    pub credentials: Credentials,
    /// The mini program whose WeChat identity an account may have.
    pub wechat_appid: String,
}

/// An account as its owner sees it, as it is read.
#[derive(Debug, PartialEq)]
struct Profile {
    user: user_table::Model,
    wechat_bound: bool,
}

/// A change to the profile: `None` leaves a field as it is.
pub struct ProfileChange {
    pub nickname: Option<String>,
    /// `Some(None)` clears the avatar.
    pub avatar_url: Option<Option<String>>,
}

/// An account and whether it has a WeChat identity for our app, read together.
#[derive(FromQueryResult)]
struct AccountRow {
    #[sea_orm(nested)]
    user: user_table::Model,
    wechat_bound: bool,
}

impl Accounts {
    async fn account(&self, user_id: Uuid) -> Result<user_table::Model, MeError> {
        user_table::Entity::find_by_id(user_id)
            .one(&self.db)
            .await?
            .ok_or(MeError::AccountGone)
    }

    /// `GET /me`: one indexed read. It is the most frequent request of a signed-in mini program,
    /// so the link is an `EXISTS` in the same statement rather than a second round trip, and on
    /// SQLite the read runs on the request's own thread (see [`crate::db::inline`]).
    pub async fn profile(&self, user_id: Uuid) -> Result<UserView, MeError> {
        let profile = self.read_profile(user_id).await?;
        Ok(UserView::of(profile.user, profile.wechat_bound))
    }

    async fn read_profile(&self, user_id: Uuid) -> Result<Profile, MeError> {
        if let Some(reader) = &self.inline_reads {
            let appid = self.wechat_appid.as_str();
            match reader.account_with_wechat_link(user_id, appid) {
                Ok(Some((user, wechat_bound))) => return Ok(Profile { user, wechat_bound }),
                Ok(None) => return Err(MeError::AccountGone),
                Err(InlineReadError::Busy) => {}
                Err(InlineReadError::Failed(err)) => return Err(MeError::Internal(err)),
            }
        }
        let identity = Query::select()
            .expr(Expr::val(1))
            .from(wechat_identities::Entity)
            .and_where(
                Expr::col((wechat_identities::Entity, wechat_identities::Column::UserId))
                    .equals((user_table::Entity, user_table::Column::Id)),
            )
            .and_where(
                Expr::col((wechat_identities::Entity, wechat_identities::Column::Appid))
                    .eq(self.wechat_appid.as_str()),
            )
            .to_owned();
        let row = user_table::Entity::find_by_id(user_id)
            .column_as(Expr::exists(identity), "wechat_bound")
            .into_model::<AccountRow>()
            .one(&self.db)
            .await?
            .ok_or(MeError::AccountGone)?;
        Ok(Profile {
            user: row.user,
            wechat_bound: row.wechat_bound,
        })
    }
}

impl Accounts {
    /// `PATCH /me`: every field is checked before anything is written.
    pub async fn update_profile(
        &self,
        user_id: Uuid,
        change: ProfileChange,
    ) -> Result<UserView, MeError> {
        let nickname = change
            .nickname
            .as_deref()
            .map(Nickname::parse)
            .transpose()?;
        let avatar_url = match change.avatar_url {
            Some(Some(url)) => Some(Some(AvatarUrl::parse(&url)?.into_inner())),
            Some(None) => Some(None),
            None => None,
        };
        let mut update = user_table::Entity::update_many()
            .col_expr(user_table::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(user_table::Column::Id.eq(user_id));
        if let Some(nickname) = nickname {
            update = update.col_expr(
                user_table::Column::Nickname,
                Expr::value(nickname.into_inner()),
            );
        }
        if let Some(avatar_url) = avatar_url {
            update = update.col_expr(user_table::Column::AvatarUrl, Expr::value(avatar_url));
        }
        if update.exec(&self.db).await?.rows_affected == 0 {
            return Err(MeError::AccountGone);
        }
        self.profile(user_id).await
    }

    /// `PUT /me/password`: the new password's rules first, then the current password (`source`
    /// is asked right before it is verified); success signs out every session by revoking all
    /// refresh families.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        current: SecretString,
        new: SecretString,
        source: &dyn AttemptSource,
    ) -> Result<(), MeError> {
        let user = self.account(user_id).await?;
        let username = Username::parse(&user.username)?;
        let new = Password::parse(new, &username)?;
        self.credentials
            .check(&self.db, &user, current, source)
            .await?;
        let hash = users::hash_password(self.credentials.hasher(), new).await?;
        let txn = self.db.begin().await?;
        user_table::Entity::update_many()
            .col_expr(user_table::Column::PasswordHash, Expr::value(hash))
            .col_expr(user_table::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(user_table::Column::Id.eq(user_id))
            .exec(&txn)
            .await?;
        tokens::revoke_all(&txn, user_id).await?;
        txn.commit().await?;
        Ok(())
    }

    /// `POST /me/wechat/unbind`: needs the password, so a stolen phone alone cannot move the
    /// account to another WeChat user; `source` is asked right before it is verified. It also
    /// signs out every session, as a password change does: the phone that held the WeChat login
    /// must not keep a refresh token of an account it is no longer linked to.
    pub async fn unbind(
        &self,
        user_id: Uuid,
        password: SecretString,
        source: &dyn AttemptSource,
    ) -> Result<(), MeError> {
        let user = self.account(user_id).await?;
        self.credentials
            .check(&self.db, &user, password, source)
            .await?;
        let txn = self.db.begin().await?;
        let deleted = wechat_identities::Entity::delete_many()
            .filter(wechat_identities::Column::UserId.eq(user_id))
            .filter(wechat_identities::Column::Appid.eq(self.wechat_appid.as_str()))
            .exec(&txn)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(MeError::NotBound);
        }
        tokens::revoke_all(&txn, user_id).await?;
        txn.commit().await?;
        Ok(())
    }

    /// `POST /me/wechat/profile`: updates nickname, avatar and unionid from WeChat's encrypted
    /// user info, decrypted with the session_key of the latest login.
    pub async fn update_from_wechat(
        &self,
        user_id: Uuid,
        encrypted_data: &str,
        iv: &str,
        now: DateTime<Utc>,
    ) -> Result<UserView, MeError> {
        let identity = wechat_identities::Entity::find()
            .filter(wechat_identities::Column::UserId.eq(user_id))
            .filter(wechat_identities::Column::Appid.eq(self.wechat_appid.as_str()))
            .one(&self.db)
            .await?
            .ok_or(MeError::NotBound)?;
        let session_key = identity
            .session_key
            .clone()
            .ok_or(MeError::SessionKeyStale)?;
        let info = decrypt_user_info(&session_key, encrypted_data, iv, &self.wechat_appid, now)
            .map_err(|err| match err {
                DecryptError::Undecryptable => MeError::SessionKeyStale,
                other => MeError::InvalidEncryptedData(other.to_string()),
            })?;

        // WeChat's data is authoritative but not bound by our rules: a long nickname is cut to
        // fit, and an avatar that is not https is left out rather than failing the whole update.
        let nickname = info["nickName"]
            .as_str()
            .map(|n| {
                n.chars()
                    .filter(|c| !super::text::is_hidden_or_control(*c))
                    .take(32)
                    .collect::<String>()
            })
            .filter(|n| Nickname::parse(n).is_ok());
        let avatar_url = info["avatarUrl"]
            .as_str()
            .and_then(|url| AvatarUrl::parse(url).ok())
            .map(|url| Some(url.into_inner()));
        // A unionid is an identifier: one with a control character (a NUL, which PostgreSQL
        // refuses) is none of WeChat's and is left out.
        let unionid = info["unionId"]
            .as_str()
            .filter(|u| !u.is_empty() && !u.chars().any(char::is_control));
        if let Some(unionid) = unionid {
            wechat_identities::Entity::update_many()
                .col_expr(
                    wechat_identities::Column::Unionid,
                    Expr::value(unionid.to_owned()),
                )
                .col_expr(
                    wechat_identities::Column::UpdatedAt,
                    Expr::value(system_ms()),
                )
                .filter(wechat_identities::Column::Id.eq(identity.id))
                .exec(&self.db)
                .await?;
        }
        self.update_profile(
            user_id,
            ProfileChange {
                nickname,
                avatar_url,
            },
        )
        .await
    }
}
