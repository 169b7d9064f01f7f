//! Logging in: with a WeChat code (then bind or register when the openid is new), or with a
//! username and password; and the token lifecycle that follows.
//!
//! Races end in the database: a bind ticket is spent by a conditional UPDATE that opens the
//! transaction, and unique indexes decide two binds of one openid or two registers of one name.

use sea_orm::sea_query::{Expr, ExprTrait};
use std::sync::Arc;
use std::time::Duration;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set,
    SqlErr, TransactionTrait,
};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::clock::{Clock, system_ms};
use super::code_exchange::CodeExchange;
use super::credentials::{self, AttemptSource, CredentialError, Credentials};
use super::secrets::{digest, random_token};
use super::tokens::{TokenError, TokenPair, TokenService};
use super::users::{self, NewUser, Password, UserError, UserView, Username};
use crate::entity::users::Role;
use crate::entity::{bind_tickets, users as user_table, wechat_identities};
use crate::wechat::client::{WechatError, WechatSession};

/// Failed binds after which a ticket dies.
pub const MAX_TICKET_FAILURES: i32 = 5;

/// Why a login, bind, register or refresh was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error("unknown, used or expired bind ticket")]
    InvalidBindTicket,
    #[error("this account is already linked to a WeChat user")]
    AccountAlreadyBound,
    #[error("this WeChat user is already linked to an account")]
    WechatAlreadyBound,
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Wechat(#[from] WechatError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<DbErr> for AuthError {
    fn from(err: DbErr) -> Self {
        AuthError::Internal(anyhow::Error::new(err).context("database error on login"))
    }
}

/// A logged-in user and their new tokens.
pub struct Session {
    pub user: UserView,
    pub tokens: TokenPair,
}

/// What the register page sends besides the ticket.
pub struct Registration {
    pub username: String,
    pub password: SecretString,
    pub nickname: Option<String>,
}

/// Logging in, binding and registering: what those need, handed over once at start.
#[derive(Clone)]
pub struct Logins {
    pub db: DatabaseConnection,
    pub credentials: Credentials,
    pub tokens: Arc<TokenService>,
    pub code_exchange: Arc<CodeExchange>,
    /// The mini program whose WeChat identities are linked.
    pub wechat_appid: String,
    pub bind_ticket_ttl: Duration,
    /// What bind tickets' lifetimes are measured against.
    pub clock: Clock,
}

/// What a WeChat code leads to.
pub enum WechatLogin {
    /// The openid is linked: logged in.
    Authenticated(Box<Session>),
    /// The openid is new: bind or register with this ticket.
    BindRequired {
        bind_ticket: String,
        expires_in: u64,
    },
}

impl Logins {
    /// `POST /auth/wechat/login`.
    pub async fn wechat_login(&self, code: &str) -> Result<WechatLogin, AuthError> {
        let session = self.code_exchange.exchange(code).await?;
        // A known openid gets its newest session_key (the one the mini program's encrypted data
        // uses) in the same statement that finds it.
        let mut remember_session = wechat_identities::Entity::update_many()
            .col_expr(
                wechat_identities::Column::SessionKey,
                Expr::value(session.session_key.expose_secret().to_owned()),
            )
            .col_expr(
                wechat_identities::Column::UpdatedAt,
                Expr::value(system_ms()),
            );
        if let Some(unionid) = &session.unionid {
            remember_session = remember_session.col_expr(
                wechat_identities::Column::Unionid,
                Expr::value(unionid.clone()),
            );
        }
        let identity = remember_session
            .filter(wechat_identities::Column::Appid.eq(self.wechat_appid.as_str()))
            .filter(wechat_identities::Column::Openid.eq(session.openid.as_str()))
            .exec_with_returning(&self.db)
            .await?
            .pop();
        match identity {
            Some(identity) => {
                let user = user_table::Entity::find_by_id(identity.user_id)
                    .one(&self.db)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("identity {} has no account", identity.id))?;
                let tokens = self.tokens.start_family(&self.db, &user).await?;
                Ok(WechatLogin::Authenticated(Box::new(Session {
                    user: UserView::of(user, true),
                    tokens,
                })))
            }
            None => {
                let bind_ticket = self.issue_bind_ticket(&session).await?;
                Ok(WechatLogin::BindRequired {
                    bind_ticket,
                    expires_in: self.bind_ticket_ttl.as_secs(),
                })
            }
        }
    }

    async fn issue_bind_ticket(&self, session: &WechatSession) -> Result<String, AuthError> {
        let ticket = random_token();
        let now = self.clock.now_ms();
        bind_tickets::ActiveModel {
            id: Set(Uuid::new_v4()),
            ticket_hash: Set(digest(&ticket)),
            openid: Set(session.openid.clone()),
            unionid: Set(session.unionid.clone()),
            session_key: Set(session.session_key.expose_secret().to_owned()),
            failed_attempts: Set(0),
            expires_at: Set(now + self.bind_ticket_ttl.as_millis() as i64),
            spent_at: Set(None),
            created_at: Set(now),
        }
        .insert(&self.db)
        .await?;
        Ok(ticket)
    }

    /// A live ticket: known, unspent, unexpired, and not worn out by failed binds.
    async fn live_ticket(&self, ticket: &str) -> Result<bind_tickets::Model, AuthError> {
        let db = &self.db;
        bind_tickets::Entity::find()
            .filter(bind_tickets::Column::TicketHash.eq(digest(ticket)))
            .one(db)
            .await?
            .filter(|t| {
                t.spent_at.is_none()
                    && t.expires_at > self.clock.now_ms()
                    && t.failed_attempts < MAX_TICKET_FAILURES
            })
            .ok_or(AuthError::InvalidBindTicket)
    }

    /// `POST /auth/wechat/bind`: links the ticket's openid to an existing account. The ticket is
    /// checked first; `source` is asked only once a password is about to be verified.
    pub async fn bind(
        &self,
        ticket: &str,
        username: &str,
        password: SecretString,
        source: &dyn AttemptSource,
    ) -> Result<Session, AuthError> {
        let ticket = self.live_ticket(ticket).await?;
        let user = match self
            .credentials
            .check_login(&self.db, username, password, source)
            .await
        {
            Ok(user) => user,
            Err(CredentialError::InvalidCredentials) => {
                bind_tickets::Entity::update_many()
                    .col_expr(
                        bind_tickets::Column::FailedAttempts,
                        Expr::col(bind_tickets::Column::FailedAttempts).add(1),
                    )
                    .filter(bind_tickets::Column::Id.eq(ticket.id))
                    .exec(&self.db)
                    .await?;
                return Err(CredentialError::InvalidCredentials.into());
            }
            Err(other) => return Err(other.into()),
        };

        let txn = self.db.begin().await?;
        Self::spend_ticket(&txn, ticket.id).await?;
        self.finish_link(txn, user, &ticket).await
    }

    /// `POST /auth/wechat/register`: creates an account for the ticket's openid.
    ///
    /// A register carries a password and costs a hash, so it takes an attempt from `source` like
    /// a login does, once the ticket and the fields' rules have passed (they keep their own
    /// answers). A taken username is found before the hash: probing names then costs an attempt
    /// and no argon2 work. The unique index still decides a race between two registers.
    pub async fn register(
        &self,
        ticket: &str,
        registration: Registration,
        source: &dyn AttemptSource,
    ) -> Result<Session, AuthError> {
        let ticket = self.live_ticket(ticket).await?;
        let username = Username::parse(&registration.username)?;
        let password = Password::parse(registration.password, &username)?;
        let nickname = registration
            .nickname
            .map(|n| users::Nickname::parse(&n))
            .transpose()?;
        credentials::admit(source)?;
        if users::username_taken(&self.db, &username).await? {
            return Err(UserError::UsernameTaken.into());
        }
        let password_hash = users::hash_password(self.credentials.hasher(), password).await?;

        let txn = self.db.begin().await?;
        Self::spend_ticket(&txn, ticket.id).await?;
        let user = users::create_user(
            &txn,
            NewUser {
                username,
                password_hash,
                nickname: nickname.map(users::Nickname::into_inner),
                role: Role::User,
            },
        )
        .await?;
        self.finish_link(txn, user, &ticket).await
    }

    /// Links the ticket's openid to `user`, starts their first login and commits the transaction
    /// that spent the ticket: all of it happens, or none.
    async fn finish_link(
        &self,
        txn: sea_orm::DatabaseTransaction,
        user: user_table::Model,
        ticket: &bind_tickets::Model,
    ) -> Result<Session, AuthError> {
        Self::link_identity(&txn, &self.wechat_appid, user.id, ticket).await?;
        let tokens = self.tokens.start_family(&txn, &user).await?;
        txn.commit().await?;
        Ok(Session {
            user: UserView::of(user, true),
            tokens,
        })
    }

    /// Marks the ticket spent; the first statement of the transaction, so on SQLite it takes the
    /// write lock before anything is read.
    async fn spend_ticket(txn: &sea_orm::DatabaseTransaction, id: Uuid) -> Result<(), AuthError> {
        let spent = bind_tickets::Entity::update_many()
            .col_expr(bind_tickets::Column::SpentAt, Expr::value(system_ms()))
            .filter(bind_tickets::Column::Id.eq(id))
            .filter(bind_tickets::Column::SpentAt.is_null())
            .exec(txn)
            .await?;
        if spent.rows_affected == 1 {
            Ok(())
        } else {
            Err(AuthError::InvalidBindTicket)
        }
    }

    async fn link_identity(
        txn: &sea_orm::DatabaseTransaction,
        appid: &str,
        user_id: Uuid,
        ticket: &bind_tickets::Model,
    ) -> Result<(), AuthError> {
        let now = system_ms();
        let inserted = wechat_identities::ActiveModel {
            id: Set(Uuid::new_v4()),
            user_id: Set(user_id),
            appid: Set(appid.to_owned()),
            openid: Set(ticket.openid.clone()),
            unionid: Set(ticket.unionid.clone()),
            session_key: Set(Some(ticket.session_key.clone())),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(txn)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(err) => match err.sql_err() {
                // Which of the two unique indexes refused the row says who was first.
                Some(SqlErr::UniqueConstraintViolation(detail)) if detail.contains("user") => {
                    Err(AuthError::AccountAlreadyBound)
                }
                Some(SqlErr::UniqueConstraintViolation(_)) => Err(AuthError::WechatAlreadyBound),
                _ => Err(err.into()),
            },
        }
    }

    /// `POST /auth/login`; `source` is asked right before the password is verified.
    pub async fn password_login(
        &self,
        username: &str,
        password: SecretString,
        source: &dyn AttemptSource,
    ) -> Result<Session, AuthError> {
        let user = self
            .credentials
            .check_login(&self.db, username, password, source)
            .await?;
        let wechat_bound = self.is_wechat_bound(user.id).await?;
        let tokens = self.tokens.start_family(&self.db, &user).await?;
        Ok(Session {
            user: UserView::of(user, wechat_bound),
            tokens,
        })
    }

    /// `POST /auth/refresh`.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Session, AuthError> {
        let (tokens, user) = self.tokens.refresh(&self.db, refresh_token).await?;
        let wechat_bound = self.is_wechat_bound(user.id).await?;
        Ok(Session {
            user: UserView::of(user, wechat_bound),
            tokens,
        })
    }

    /// Whether the account has a WeChat identity for our app.
    pub async fn is_wechat_bound(&self, user_id: Uuid) -> Result<bool, DbErr> {
        Ok(wechat_identities::Entity::find()
            .filter(wechat_identities::Column::UserId.eq(user_id))
            .filter(wechat_identities::Column::Appid.eq(self.wechat_appid.as_str()))
            .one(&self.db)
            .await?
            .is_some())
    }

    /// Deletes spent and expired bind tickets.
    pub async fn purge_expired_tickets(&self) -> Result<u64, DbErr> {
        let db = &self.db;
        let now = self.clock.now_ms();
        Ok(bind_tickets::Entity::delete_many()
            .filter(
                bind_tickets::Column::ExpiresAt
                    .lt(now)
                    .or(bind_tickets::Column::SpentAt.is_not_null()),
            )
            .exec(db)
            .await?
            .rows_affected)
    }
}
