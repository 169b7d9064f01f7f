//! Checking a password against an account, with its lockout.
//!
//! Every wrong password for an existing account counts, wherever it was typed (login, bind,
//! password change, unbind), under the account and the client address it came from. The
//! fifth from one address within 15 minutes is still answered "wrong" but locks the account
//! for that address for 15 minutes: every attempt from there, right or wrong, is then refused
//! before any hashing. A success from an address clears that address's count. So someone
//! else's failures cannot lock the owner out from their own address. As a backstop against
//! guessing from many addresses, 50 failures within 15 minutes from all addresses together
//! lock the account for every address for 15 minutes; a success does not clear that count,
//! or one owner's login would reopen the account to a botnet.
//!
//! The counters live in the database (`login_failures` per address, the account row for the
//! backstop) and change only through conditional writes, so they hold across replicas and
//! concurrent attempts.
//!
//! The caller's own brake on attempts (the HTTP layer's per-address limit) comes in with the
//! client's address as an [`AttemptSource`], consulted right before a password is hashed:
//! after every cheaper check of the request (its shape, its ticket, the new password's rules)
//! has passed, so those keep their own answers, and before the argon2 work the brake exists to
//! save.

use std::sync::Arc;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set, SqlErr,
};
use secrecy::SecretString;
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::clock::Clock;
use super::passwords::PasswordHasher;
use crate::entity::{login_failures, users};

/// Wrong passwords from one client address that lock the account for that address.
pub const MAX_FAILURES_PER_CLIENT: i32 = 5;
/// Wrong passwords from all addresses together that lock the account for everyone.
pub const MAX_FAILURES_PER_ACCOUNT: i32 = 50;
/// The window the failures must fall in, and how long a lock lasts.
pub const LOCKOUT_MS: i64 = 15 * 60 * 1000;

/// The outcome of a refused password check.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Unknown account or wrong password: deliberately the same.
    #[error("wrong username or password")]
    InvalidCredentials,
    #[error("too many wrong passwords; try again in {retry_after_secs} s")]
    Locked { retry_after_secs: u64 },
    /// The caller's [`AttemptSource`] refused: too many attempts from this client.
    #[error("too many password attempts; try again in {retry_after_secs} s")]
    Throttled { retry_after_secs: u64 },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<DbErr> for CredentialError {
    fn from(err: DbErr) -> Self {
        CredentialError::Internal(anyhow::Error::new(err).context("database error on lockout"))
    }
}

/// Where a password attempt comes from, as the caller knows it: the client (which the lockout
/// counts failures under) and the caller's own limit on attempts, such as one per client
/// address.
pub trait AttemptSource: Send + Sync {
    /// The client address the attempt comes from, as a stable key (IPv6 by its /64).
    fn client(&self) -> &str;

    /// Takes one attempt, or refuses with the seconds until the next one is allowed. Asked
    /// exactly once per operation, right before the expensive part, so a request refused for
    /// another reason first (an unknown bind ticket, a weak new password, a locked account)
    /// neither uses up an attempt nor is answered as throttled.
    fn admit(&self) -> Result<(), u64>;
}

/// Takes one attempt from `source`, as a [`CredentialError::Throttled`] when it has none left.
pub fn admit(source: &dyn AttemptSource) -> Result<(), CredentialError> {
    source
        .admit()
        .map_err(|retry_after_secs| CredentialError::Throttled { retry_after_secs })
}

/// Verifies passwords; holds the dummy hash that makes unknown accounts cost the same time.
#[derive(Clone)]
pub struct Credentials {
    hasher: PasswordHasher,
    dummy_hash: Arc<OnceCell<String>>,
    /// What the lockout's windows are measured against.
    clock: Clock,
}

impl Credentials {
    pub fn new(hasher: PasswordHasher, clock: Clock) -> Self {
        Credentials {
            hasher,
            dummy_hash: Arc::new(OnceCell::new()),
            clock,
        }
    }

    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// Finds the account by (already lower-cased) username and checks its password; `source`
    /// is asked right before the hash.
    pub async fn check_login(
        &self,
        db: &DatabaseConnection,
        username: &str,
        password: SecretString,
        source: &dyn AttemptSource,
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
                self.check(db, &user, password, source).await?;
                Ok(user)
            }
            None => {
                admit(source)?;
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

    /// Checks `password` for `user` from `source`'s client, counting a failure or clearing
    /// that client's count on success; `source` is asked after the locks (which cost no hash)
    /// and right before the hash.
    pub async fn check(
        &self,
        db: &DatabaseConnection,
        user: &users::Model,
        password: SecretString,
        source: &dyn AttemptSource,
    ) -> Result<(), CredentialError> {
        let now = self.clock.now_ms();
        if let Some(until) = user.locked_until.filter(|until| *until > now) {
            return Err(locked(until, now));
        }
        let client = source.client();
        let client_record = login_failures::Entity::find_by_id((user.id, client.to_owned()))
            .one(db)
            .await?;
        if let Some(until) = client_record
            .as_ref()
            .and_then(|record| record.locked_until)
            .filter(|until| *until > now)
        {
            return Err(locked(until, now));
        }
        admit(source)?;
        if self
            .hasher
            .verify(password, user.password_hash.clone())
            .await?
        {
            if client_record.is_some() {
                login_failures::Entity::delete_by_id((user.id, client.to_owned()))
                    .exec(db)
                    .await?;
            }
            Ok(())
        } else {
            record_client_failure(db, user.id, client, now).await?;
            record_account_failure(db, user.id, now).await?;
            Err(CredentialError::InvalidCredentials)
        }
    }
}

fn locked(until: i64, now: i64) -> CredentialError {
    CredentialError::Locked {
        retry_after_secs: ((until - now) as u64).div_ceil(1000).max(1),
    }
}

/// A failure counter after one more failure at `now`: the count within the window (a window
/// that is over starts again at one), and the lock once the count reaches `threshold`, which
/// also starts the count afresh.
#[derive(Debug, PartialEq, Eq)]
struct Counted {
    failures: i32,
    window_start: i64,
    locked_until: Option<i64>,
    locks_now: bool,
}

fn count_failure(
    failures: i32,
    window_start: Option<i64>,
    locked_until: Option<i64>,
    now: i64,
    threshold: i32,
) -> Counted {
    let (failures, window_start) = match window_start {
        Some(start) if now - start < LOCKOUT_MS => (failures + 1, start),
        _ => (1, now),
    };
    if failures >= threshold {
        Counted {
            failures: 0,
            window_start: now,
            locked_until: Some(now + LOCKOUT_MS),
            locks_now: true,
        }
    } else {
        Counted {
            failures,
            window_start,
            locked_until,
            locks_now: false,
        }
    }
}

/// How often a conditional write is retried when concurrent failures changed the counter
/// first; each retry means another failure was counted, so this bounds contention, not loss.
const MAX_COUNT_RETRIES: usize = 16;

fn contention(user_id: Uuid) -> CredentialError {
    CredentialError::Internal(anyhow::anyhow!(
        "could not record a failed login for {user_id}: too much contention"
    ))
}

/// Counts one failure of `client` for the account: an insert for its first, then
/// compare-and-set updates, retried when a concurrent failure changed the row first.
async fn record_client_failure(
    db: &DatabaseConnection,
    user_id: Uuid,
    client: &str,
    now: i64,
) -> Result<(), CredentialError> {
    for _ in 0..MAX_COUNT_RETRIES {
        let record = login_failures::Entity::find_by_id((user_id, client.to_owned()))
            .one(db)
            .await?;
        let Some(record) = record else {
            let first = login_failures::ActiveModel {
                user_id: Set(user_id),
                client: Set(client.to_owned()),
                failures: Set(1),
                window_start: Set(now),
                locked_until: Set(None),
            };
            match login_failures::Entity::insert(first)
                .exec_without_returning(db)
                .await
            {
                Ok(_) => return Ok(()),
                // Another failure inserted it first: count on top of that one.
                Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                    continue;
                }
                Err(err) => return Err(err.into()),
            }
        };
        let next = count_failure(
            record.failures,
            Some(record.window_start),
            record.locked_until,
            now,
            MAX_FAILURES_PER_CLIENT,
        );
        if next.locks_now {
            tracing::warn!(
                %user_id,
                "account locked for one client address after {MAX_FAILURES_PER_CLIENT} wrong passwords"
            );
        }
        let updated = login_failures::Entity::update_many()
            .col_expr(login_failures::Column::Failures, Expr::value(next.failures))
            .col_expr(
                login_failures::Column::WindowStart,
                Expr::value(next.window_start),
            )
            .col_expr(
                login_failures::Column::LockedUntil,
                Expr::value(next.locked_until),
            )
            .filter(login_failures::Column::UserId.eq(user_id))
            .filter(login_failures::Column::Client.eq(client))
            .filter(login_failures::Column::Failures.eq(record.failures))
            .filter(login_failures::Column::WindowStart.eq(record.window_start))
            .exec(db)
            .await?;
        if updated.rows_affected == 1 {
            return Ok(());
        }
    }
    Err(contention(user_id))
}

/// Counts one failure towards the account-wide backstop, with a compare-and-set on the
/// account row, retried when a concurrent failure changed it first.
async fn record_account_failure(
    db: &DatabaseConnection,
    user_id: Uuid,
    now: i64,
) -> Result<(), CredentialError> {
    for _ in 0..MAX_COUNT_RETRIES {
        let Some(user) = users::Entity::find_by_id(user_id).one(db).await? else {
            return Ok(());
        };
        let next = count_failure(
            user.failed_logins,
            user.failed_window_start,
            user.locked_until,
            now,
            MAX_FAILURES_PER_ACCOUNT,
        );
        if next.locks_now {
            tracing::warn!(
                %user_id,
                "account locked for every address after {MAX_FAILURES_PER_ACCOUNT} wrong passwords \
                 from all addresses together"
            );
        }
        let mut update = users::Entity::update_many()
            .col_expr(users::Column::FailedLogins, Expr::value(next.failures))
            .col_expr(
                users::Column::FailedWindowStart,
                Expr::value(Some(next.window_start)),
            )
            .col_expr(users::Column::LockedUntil, Expr::value(next.locked_until))
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
    Err(contention(user_id))
}

/// Deletes per-address counts whose window and lock are both over by `now`.
pub async fn purge_stale_failures(db: &DatabaseConnection, now: i64) -> Result<u64, DbErr> {
    Ok(login_failures::Entity::delete_many()
        .filter(login_failures::Column::WindowStart.lt(now - LOCKOUT_MS))
        .filter(
            Condition::any()
                .add(login_failures::Column::LockedUntil.is_null())
                .add(login_failures::Column::LockedUntil.lt(now)),
        )
        .exec(db)
        .await?
        .rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    #[test]
    fn failures_within_the_window_add_up() {
        assert_eq!(
            count_failure(2, Some(0), None, 10 * MINUTE, 5),
            Counted {
                failures: 3,
                window_start: 0,
                locked_until: None,
                locks_now: false
            }
        );
    }

    #[test]
    fn a_failure_after_the_window_starts_a_new_count() {
        assert_eq!(
            count_failure(4, Some(0), None, 15 * MINUTE, 5),
            Counted {
                failures: 1,
                window_start: 15 * MINUTE,
                locked_until: None,
                locks_now: false
            }
        );
    }

    #[test]
    fn the_threshold_failure_locks_for_the_lockout_and_restarts_the_count() {
        assert_eq!(
            count_failure(4, Some(0), None, MINUTE, 5),
            Counted {
                failures: 0,
                window_start: MINUTE,
                locked_until: Some(MINUTE + LOCKOUT_MS),
                locks_now: true
            }
        );
    }
}
