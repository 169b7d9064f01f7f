//! Checking a password against an account, with the lockout of DESIGN §3.1.
//!
//! Every wrong password for an existing account counts, wherever it was typed (login, bind,
//! password change, unbind). The fifth within 15 minutes is still answered "wrong" but locks
//! the account for 15 minutes, during which every attempt, right or wrong, is refused before
//! any hashing. The counters live on the account row and change only through conditional
//! UPDATEs, so they hold across replicas and concurrent attempts.
//!
//! A caller's own brake on attempts (the HTTP layer's per-address limit) comes in as an
//! [`AttemptGate`], consulted right before a password is hashed: after every cheaper check of
//! the request (its shape, its ticket, the new password's rules) has passed, so those keep
//! their own answers, and before the argon2 work the brake exists to save.

use std::sync::Arc;

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use secrecy::SecretString;
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::passwords::PasswordHasher;
use super::tokens::now_ms;
use crate::entity::users;

/// Failed attempts that lock an account.
pub const MAX_FAILURES: i32 = 5;
/// The window the failures must fall in, and how long the lock lasts.
pub const LOCKOUT_MS: i64 = 15 * 60 * 1000;

/// The outcome of a refused password check.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Unknown account or wrong password: deliberately the same.
    #[error("wrong username or password")]
    InvalidCredentials,
    #[error("too many wrong passwords; try again in {retry_after_secs} s")]
    Locked { retry_after_secs: u64 },
    /// The caller's [`AttemptGate`] refused: too many attempts from this client.
    #[error("too many password attempts; try again in {retry_after_secs} s")]
    Throttled { retry_after_secs: u64 },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sea_orm::DbErr> for CredentialError {
    fn from(err: sea_orm::DbErr) -> Self {
        CredentialError::Internal(anyhow::Error::new(err).context("database error on lockout"))
    }
}

/// A limit on password attempts that is the caller's business rather than the account's,
/// such as one per client address. Passed into each operation that verifies a password, it is
/// asked exactly once, right before the hash, so a request refused for another reason first
/// (an unknown bind ticket, a weak new password, a locked account) neither uses up an attempt
/// nor is answered as throttled.
pub trait AttemptGate: Send + Sync {
    /// Takes one attempt, or refuses with the seconds until the next one is allowed.
    fn admit(&self) -> Result<(), u64>;
}

fn admit(gate: &dyn AttemptGate) -> Result<(), CredentialError> {
    gate.admit()
        .map_err(|retry_after_secs| CredentialError::Throttled { retry_after_secs })
}

/// Verifies passwords; holds the dummy hash that makes unknown accounts cost the same time.
#[derive(Clone)]
pub struct Credentials {
    hasher: PasswordHasher,
    dummy_hash: Arc<OnceCell<String>>,
}

impl Credentials {
    pub fn new(hasher: PasswordHasher) -> Self {
        Credentials {
            hasher,
            dummy_hash: Arc::new(OnceCell::new()),
        }
    }

    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// Finds the account by (already lower-cased) username and checks its password; `gate`
    /// is asked right before the hash.
    pub async fn check_login(
        &self,
        db: &DatabaseConnection,
        username: &str,
        password: SecretString,
        gate: &dyn AttemptGate,
    ) -> Result<users::Model, CredentialError> {
        // A name no account can have (every stored name passed `Username::parse`) is answered
        // as an unknown one without asking the database: PostgreSQL refuses text with a NUL
        // byte outright, which would otherwise turn a hostile name into a 500.
        let user = match super::users::Username::parse(username) {
            Ok(name) => {
                users::Entity::find()
                    .filter(users::Column::Username.eq(name.as_str()))
                    .one(db)
                    .await?
            }
            Err(_) => None,
        };
        match user {
            Some(user) => {
                self.check(db, &user, password, gate).await?;
                Ok(user)
            }
            None => {
                admit(gate)?;
                // An unknown name costs one argon2 verification too, so timing does not tell
                // which accounts exist.
                let dummy = self
                    .dummy_hash
                    .get_or_try_init(|| {
                        self.hasher
                            .hash(SecretString::from("iotbind-dummy-password"))
                    })
                    .await?
                    .clone();
                let _ = self.hasher.verify(password, dummy).await?;
                Err(CredentialError::InvalidCredentials)
            }
        }
    }

    /// Checks `password` for `user`, counting a failure or clearing the count on success;
    /// `gate` is asked after the lock (which costs no hash) and right before the hash.
    pub async fn check(
        &self,
        db: &DatabaseConnection,
        user: &users::Model,
        password: SecretString,
        gate: &dyn AttemptGate,
    ) -> Result<(), CredentialError> {
        let now = now_ms();
        if let Some(until) = user.locked_until.filter(|until| *until > now) {
            return Err(locked(until, now));
        }
        admit(gate)?;
        if self
            .hasher
            .verify(password, user.password_hash.clone())
            .await?
        {
            if user.failed_logins > 0 || user.locked_until.is_some() {
                reset(db, user.id).await?;
            }
            Ok(())
        } else {
            record_failure(db, user.id, now).await?;
            Err(CredentialError::InvalidCredentials)
        }
    }
}

fn locked(until: i64, now: i64) -> CredentialError {
    CredentialError::Locked {
        retry_after_secs: ((until - now) as u64).div_ceil(1000).max(1),
    }
}

async fn reset(db: &DatabaseConnection, user_id: Uuid) -> Result<(), CredentialError> {
    users::Entity::update_many()
        .col_expr(users::Column::FailedLogins, Expr::value(0))
        .col_expr(
            users::Column::FailedWindowStart,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(users::Column::LockedUntil, Expr::value(Option::<i64>::None))
        .filter(users::Column::Id.eq(user_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Counts one failure with a compare-and-set on the counters, retried when a concurrent
/// failure changed them first, so no failure is lost.
async fn record_failure(
    db: &DatabaseConnection,
    user_id: Uuid,
    now: i64,
) -> Result<(), CredentialError> {
    for _ in 0..16 {
        let Some(user) = users::Entity::find_by_id(user_id).one(db).await? else {
            return Ok(());
        };
        let window_open = user
            .failed_window_start
            .is_some_and(|start| now - start < LOCKOUT_MS);
        let (count, window_start) = if window_open {
            (user.failed_logins + 1, user.failed_window_start)
        } else {
            (1, Some(now))
        };
        let (count, window_start, locked_until) = if count >= MAX_FAILURES {
            tracing::warn!(%user_id, "account locked after {MAX_FAILURES} wrong passwords");
            (0, None, Some(now + LOCKOUT_MS))
        } else {
            (count, window_start, user.locked_until)
        };
        let mut update = users::Entity::update_many()
            .col_expr(users::Column::FailedLogins, Expr::value(count))
            .col_expr(users::Column::FailedWindowStart, Expr::value(window_start))
            .col_expr(users::Column::LockedUntil, Expr::value(locked_until))
            .filter(users::Column::Id.eq(user_id))
            .filter(users::Column::FailedLogins.eq(user.failed_logins));
        update = match user.failed_window_start {
            Some(start) => update.filter(users::Column::FailedWindowStart.eq(start)),
            None => update.filter(users::Column::FailedWindowStart.is_null()),
        };
        if update.exec(db).await?.rows_affected == 1 {
            return Ok(());
        }
    }
    Err(CredentialError::Internal(anyhow::anyhow!(
        "could not record a failed login for {user_id}: too much contention"
    )))
}
