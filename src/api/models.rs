//! Response objects shared by several resources: the user and a successful login.

use chrono::{DateTime, Utc};
use poem_openapi::types::Example;
use poem_openapi::{Enum, Object, Union};
use uuid::Uuid;

use crate::service::auth::Session;
use crate::service::tokens::TokenPair;
use crate::service::users::{AccountRole, UserView};

/// What an account may do.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum UserRole {
    User,
    Admin,
}

impl From<AccountRole> for UserRole {
    fn from(role: AccountRole) -> Self {
        match role {
            AccountRole::User => UserRole::User,
            AccountRole::Admin => UserRole::Admin,
        }
    }
}

/// A platform account as its owner sees it.
#[derive(Object, Debug, Clone)]
#[oai(example)]
pub struct User {
    pub id: Uuid,
    /// Lower-case, unique.
    pub username: String,
    pub nickname: String,
    /// An https URL, or null.
    #[oai(nullable)]
    pub avatar_url: Option<String>,
    pub role: UserRole,
    /// Whether a WeChat identity is linked to this account.
    pub wechat_bound: bool,
    pub created_at: DateTime<Utc>,
}

impl Example for User {
    fn example() -> Self {
        User {
            id: Uuid::nil(),
            username: "alice".to_owned(),
            nickname: "Alice".to_owned(),
            avatar_url: None,
            role: UserRole::User,
            wechat_bound: true,
            created_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }
}

impl From<UserView> for User {
    fn from(user: UserView) -> Self {
        User {
            id: user.id,
            username: user.username,
            nickname: user.nickname,
            avatar_url: user.avatar_url,
            role: user.role.into(),
            wechat_bound: user.wechat_bound,
            created_at: user.created_at,
        }
    }
}

/// Always `authenticated`.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum AuthenticatedStatus {
    Authenticated,
}

/// Always `bind_required`.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum BindRequiredStatus {
    BindRequired,
}

/// A successful login: the tokens and the user.
#[derive(Object, Debug, Clone)]
#[oai(example)]
pub struct Authenticated {
    pub status: AuthenticatedStatus,
    /// Always `Bearer`.
    pub token_type: String,
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Single use: exchange at `/api/v1/auth/refresh` for a new pair.
    pub refresh_token: String,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: u64,
    pub user: User,
}

impl Example for Authenticated {
    fn example() -> Self {
        Authenticated {
            status: AuthenticatedStatus::Authenticated,
            token_type: "Bearer".to_owned(),
            access_token: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIuLi4ifQ.c2lnbmF0dXJl".to_owned(),
            expires_in: 900,
            refresh_token: "q9Xy0o2Z4aP7mWcLrT1bEvK8sN3dG6hJ5uYfQwXzA0B".to_owned(),
            refresh_expires_in: 2_592_000,
            user: User::example(),
        }
    }
}

impl From<Session> for Authenticated {
    fn from(session: Session) -> Self {
        let TokenPair {
            access_token,
            expires_in,
            refresh_token,
            refresh_expires_in,
        } = session.tokens;
        Authenticated {
            status: AuthenticatedStatus::Authenticated,
            token_type: "Bearer".to_owned(),
            access_token,
            expires_in,
            refresh_token,
            refresh_expires_in,
            user: User::from(session.user),
        }
    }
}

/// The WeChat user is new here: show the bind page or the register page, and send this
/// ticket with the one the user chooses.
#[derive(Object, Debug, Clone)]
#[oai(example)]
pub struct BindRequired {
    pub status: BindRequiredStatus,
    /// Single use; spent by a successful bind or register.
    pub bind_ticket: String,
    /// Seconds until the ticket expires.
    pub expires_in: u64,
}

impl Example for BindRequired {
    fn example() -> Self {
        BindRequired {
            status: BindRequiredStatus::BindRequired,
            bind_ticket: "Zk3v7QbT0yWm5cRx9LpE2sNa8dH4gJ6uVfKqYt1oIwB".to_owned(),
            expires_in: 600,
        }
    }
}

/// The answer to a WeChat login: logged in, or a bind is needed first.
#[derive(Union, Debug, Clone)]
pub enum WechatLoginResult {
    Authenticated(Authenticated),
    BindRequired(BindRequired),
}
