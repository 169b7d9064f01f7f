//! Opening the database (SQLite or PostgreSQL, chosen by the URL) and bringing its schema up
//! to date.

use std::time::Duration;

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

/// How long a SQLite writer waits for the lock before giving up: long enough to ride out a
/// burst of concurrent writes, short enough that a stuck request still fails visibly.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects with the pool settings each backend needs.
///
/// SQLite runs in WAL mode (readers never block the writer) with foreign keys on, which SQLite
/// leaves off unless asked on every connection.
pub async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    if url.starts_with("sqlite:") {
        options.max_connections(8).map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true)
        });
    } else {
        options.max_connections(32);
    }
    Database::connect(options)
        .await
        .with_context(|| format!("cannot open the database at {}", redact_url(url)))
}

/// Applies every migration not yet applied.
pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    Migrator::up(db, None)
        .await
        .context("cannot apply the database migrations")
}

/// Answers whether the database takes a trivial query now.
pub async fn ping(db: &DatabaseConnection) -> anyhow::Result<()> {
    db.execute_unprepared("SELECT 1")
        .await
        .context("database did not answer SELECT 1")?;
    Ok(())
}

/// The URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn a_password_in_the_url_is_hidden() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/iotbind"),
            "postgres://app:***@db:5432/iotbind"
        );
    }

    #[test]
    fn urls_without_a_password_are_unchanged() {
        assert_eq!(redact_url("postgres://root@db/x"), "postgres://root@db/x");
        assert_eq!(
            redact_url("sqlite://iotbind.db?mode=rwc"),
            "sqlite://iotbind.db?mode=rwc"
        );
    }
}
