//! Opening the database (SQLite or PostgreSQL, chosen by the URL) and bringing its schema up
//! to date.

pub mod inline;

use std::ffi::c_int;
use std::time::Duration;

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx;
use sea_orm::sqlx::sqlite::{
    LockedSqliteHandle, SqliteConnection, SqliteJournalMode, SqliteSynchronous,
};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

use crate::config::DatabaseUrl;

/// How long a SQLite writer waits for the lock before giving up: long enough to ride out a
/// burst of concurrent writes, short enough that a stuck request still fails visibly.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache per connection, in KiB when negative (SQLite's default is 2 MiB). A telemetry
/// batch touches one index page per device, a thousand pages or more; with the default the
/// writer re-reads most of them from the file for every batch.
const SQLITE_CACHE_SIZE: &str = "-16384";
/// WAL pages before a commit copies them back into the database file (default 1,000). One
/// telemetry batch can write that many, so the default checkpoints after nearly every batch
/// and copies the same hot pages again and again; 10,000 pages (about 40 MiB of WAL) copies
/// each of them once per many batches.
const SQLITE_WAL_AUTOCHECKPOINT: &str = "10000";

/// Where SQLite keeps statement journals: in memory. A multi-row `INSERT` or `UPDATE` inside
/// a transaction journals the pages it changes so that it alone can be undone if it fails part
/// way; a telemetry batch outgrows the journal's in-memory start, and with the default every
/// batch also wrote those pages to a temporary file (18% of the benchmark's raw insert time).
/// The journal lives for one statement, a few MiB at most.
const SQLITE_TEMP_STORE: &str = "memory";

/// Connects with the pool settings each backend needs.
///
/// SQLite runs in WAL mode (readers never block the writer) with foreign keys on, which SQLite
/// leaves off unless asked on every connection.
pub async fn connect(database: &DatabaseUrl) -> anyhow::Result<DatabaseConnection> {
    let url = database.as_str();
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    if let DatabaseUrl::Sqlite(_) = database {
        options
            .max_connections(8)
            // An in-process file cannot be dropped by a server or a firewall: pinging it before
            // every query would only add a round trip to the connection's worker thread.
            .test_before_acquire(false)
            .map_sqlx_sqlite_pool_opts(|pool| {
                pool.after_connect(|conn, _| Box::pin(stable_query_plans(conn)))
            })
            .map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true)
                    .pragma("cache_size", SQLITE_CACHE_SIZE)
                    .pragma("wal_autocheckpoint", SQLITE_WAL_AUTOCHECKPOINT)
                    .pragma("temp_store", SQLITE_TEMP_STORE)
            });
    } else {
        options.max_connections(32);
    }
    Database::connect(options)
        .await
        .with_context(|| format!("cannot open the database at {}", redact_url(url)))
}

/// Turns on SQLite's query planner stability guarantee (QPSG) for a new connection.
///
/// Without it SQLite reads the value bound to a `LIMIT ?` while it compiles a statement, and
/// marks the statement stale whenever that parameter is bound again. sea-orm's `one()` binds
/// `LIMIT 1`, and sqlx binds every parameter on every execution, so each cached statement was
/// parsed and planned afresh every time it ran: most of the database time of `GET /me`. With
/// the guarantee on, a plan never depends on bound values, which is also what lets the
/// statement cache work. Nothing here relies on value-dependent plans (there is no `ANALYZE`
/// data for them to use). There is no pragma for this setting, hence the C call.
async fn stable_query_plans(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    match query_planner_stability(&mut handle, 1) {
        Ok(1) => Ok(()),
        outcome => Err(sqlx::Error::Configuration(
            format!("SQLite refused the query planner stability guarantee ({outcome:?})").into(),
        )),
    }
}

/// Sets QPSG on (1), off (0), or leaves it (-1); answers the setting now in force, or SQLite's
/// error code.
#[allow(unsafe_code)] // The one FFI call: `sqlite3_db_config` has no safe wrapper.
fn query_planner_stability(
    handle: &mut LockedSqliteHandle<'_>,
    value: c_int,
) -> Result<c_int, c_int> {
    let mut in_force: c_int = -1;
    // SAFETY: the locked handle keeps the connection open and ours for the call; the option
    // takes an int and a pointer to an int, both valid for the call.
    let code = unsafe {
        libsqlite3_sys::sqlite3_db_config(
            handle.as_raw_handle().as_ptr(),
            libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
            value,
            &mut in_force as *mut c_int,
        )
    };
    if code == libsqlite3_sys::SQLITE_OK {
        Ok(in_force)
    } else {
        Err(code)
    }
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

/// Whether `err` says the database cannot be reached right now (no connection could be had
/// within the pool's acquire timeout, or the connection broke mid-query), as opposed to a bug
/// or a refused statement.
///
/// The API answers these 503 `unavailable` instead of 500 `internal`: the request was fine and
/// retrying once the database is back can work, which is what a load balancer and a client
/// need to know. The whole cause chain is searched because services wrap database errors in
/// their own context.
pub fn is_unavailable(err: &anyhow::Error) -> bool {
    use sea_orm::{DbErr, RuntimeErr, sqlx};
    let broken = |err: &sqlx::Error| {
        matches!(
            err,
            sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
        )
    };
    err.chain().any(|cause| {
        if let Some(db_err) = cause.downcast_ref::<DbErr>() {
            return match db_err {
                DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
                DbErr::Exec(RuntimeErr::SqlxError(err))
                | DbErr::Query(RuntimeErr::SqlxError(err)) => broken(err),
                _ => false,
            };
        }
        cause.downcast_ref::<sqlx::Error>().is_some_and(broken)
    })
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
    use super::{connect, query_planner_stability, redact_url};

    #[tokio::test]
    async fn every_sqlite_connection_keeps_its_query_plans_whatever_the_bound_values() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("qpsg.db").display());
        let db = connect(&crate::config::DatabaseUrl::parse(&url).expect("a URL"))
            .await
            .expect("the database opens");
        let mut conn = db
            .get_sqlite_connection_pool()
            .acquire()
            .await
            .expect("a pooled connection");
        let mut handle = conn.lock_handle().await.expect("the connection's handle");
        assert_eq!(query_planner_stability(&mut handle, -1), Ok(1));
    }

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
