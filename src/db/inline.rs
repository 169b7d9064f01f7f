//! Short indexed reads of the SQLite file on the caller's own thread, beside sea-orm's pool.
//!
//! sqlx gives every SQLite connection a worker thread and hands each query over to it and back,
//! and a returned connection is pinged once more. For a point read that SQLite answers in a few
//! microseconds those thread hand-offs are nearly all of the cost: they made `GET /me`, the most
//! frequent request of a signed-in mini program, several times slower than a request without
//! a read. The reads here run on read-only connections, directly on the task's thread.
//!
//! They never wait: in WAL mode a reader does not block on the writer, and in the rare moments
//! when SQLite still answers busy (a checkpoint resetting the log), the read reports
//! [`InlineReadError::Busy`] at once and the caller takes the pooled path instead of blocking
//! the async runtime. Only reads belong here, each a typed method with its statement beside it,
//! so services call them without naming rusqlite; every write goes through sea-orm.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use rusqlite::types::Type;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};
use sea_orm::ActiveEnum;
use sea_orm::sqlx::sqlite::SqliteConnectOptions;

use uuid::Uuid;

use crate::config::DatabaseUrl;
use crate::entity::users;

/// Connections kept open between reads; more are opened when more reads run at once, and
/// closed after them. A read holds its connection for microseconds, so a few cover the runtime's
/// worker threads.
const IDLE_CONNECTIONS: usize = 8;

/// Statements each connection keeps compiled; the inline reads are a handful of fixed SQL texts.
const STATEMENT_CACHE: usize = 16;

/// Read-only connections to the same SQLite file the pool writes.
pub struct InlineReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// Why an inline read gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum InlineReadError {
    /// SQLite would have had to wait; the caller should read through the pool instead.
    #[error("the SQLite file is busy")]
    Busy,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl InlineReader {
    /// A reader for `url` when it names a SQLite file; `None` for PostgreSQL and for in-memory
    /// SQLite, which another connection cannot see.
    pub fn for_url(database: &DatabaseUrl) -> anyhow::Result<Option<Self>> {
        let DatabaseUrl::Sqlite(url) = database else {
            return Ok(None);
        };
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Ok(None);
        }
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("cannot parse the SQLite URL {url}"))?;
        Ok(Some(Self {
            path: options.get_filename().to_path_buf(),
            idle: Mutex::new(Vec::with_capacity(IDLE_CONNECTIONS)),
        }))
    }

    /// Runs `query` on an idle connection (opening one if none is idle) and keeps the connection
    /// for the next read.
    fn read<T>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, InlineReadError> {
        let conn = match self.lock_idle().pop() {
            Some(conn) => conn,
            None => self.open()?,
        };
        let answer = query(&conn);
        let mut idle = self.lock_idle();
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(conn);
        }
        drop(idle);
        answer.map_err(|err| match err.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => InlineReadError::Busy,
            _ => InlineReadError::Failed(
                anyhow::Error::new(err).context("inline read of the SQLite file failed"),
            ),
        })
    }

    /// An account and whether it has a WeChat identity for `appid`, in one statement: the
    /// read behind `GET /me`. `None` when no such account exists.
    pub fn account_with_wechat_link(
        &self,
        user_id: Uuid,
        appid: &str,
    ) -> Result<Option<(users::Model, bool)>, InlineReadError> {
        self.read(|conn| {
            conn.prepare_cached(ACCOUNT_WITH_WECHAT_LINK)?
                .query_row(rusqlite::params![user_id, appid], account_with_wechat_link)
                .optional()
        })
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // The list holds no invariant a panicking holder could break: take it as it is.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open(&self) -> Result<Connection, InlineReadError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("cannot open {} for reading", self.path.display()))?;
        // Zero: never sleep in SQLite's busy handler on a runtime thread (see the module docs).
        conn.busy_timeout(Duration::ZERO)
            .context("cannot turn off the busy wait of a reading connection")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }
}

/// The statement of [`InlineReader::account_with_wechat_link`]. Each column is named, and
/// [`account_with_wechat_link`] builds the whole `Model` from them, so a column added to the
/// entity fails to compile there rather than going missing.
const ACCOUNT_WITH_WECHAT_LINK: &str = "SELECT id, username, password_hash, nickname, \
     avatar_url, role, created_at, updated_at, failed_logins, failed_window_start, locked_until, \
     EXISTS (SELECT 1 FROM wechat_identities \
             WHERE wechat_identities.user_id = users.id AND wechat_identities.appid = ?2) \
     FROM users WHERE id = ?1";

/// Decodes a row of [`ACCOUNT_WITH_WECHAT_LINK`] stored the way sqlx stores values in SQLite:
/// UUIDs as 16-byte blobs, times as RFC 3339 text, the role as its string value.
fn account_with_wechat_link(row: &rusqlite::Row<'_>) -> rusqlite::Result<(users::Model, bool)> {
    let role: String = row.get(5)?;
    let role = users::Role::try_from_value(&role).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(5, Type::Text, err.to_string().into())
    })?;
    let user = users::Model {
        id: row.get(0)?,
        username: row.get(1)?,
        password_hash: row.get(2)?,
        nickname: row.get(3)?,
        avatar_url: row.get(4)?,
        role,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
        failed_logins: row.get(8)?,
        failed_window_start: row.get(9)?,
        locked_until: row.get(10)?,
    };
    Ok((user, row.get(11)?))
}

#[cfg(test)]
mod tests {
    use super::{DatabaseUrl, InlineReadError, InlineReader};

    #[test]
    fn postgres_and_in_memory_databases_get_no_inline_reader() {
        for url in [
            "postgres://root@127.0.0.1/test",
            "sqlite::memory:",
            "sqlite://x.db?mode=memory",
        ] {
            assert!(
                InlineReader::for_url(&DatabaseUrl::parse(url).expect("a URL"))
                    .expect("parses")
                    .is_none(),
                "{url}"
            );
        }
    }

    /// A SQLite file set up by `setup` on a writing connection, and a reader for it.
    fn file_with(setup: &str) -> (tempfile::TempDir, rusqlite::Connection, InlineReader) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("inline.db");
        let writer = rusqlite::Connection::open(&path).expect("the file opens");
        writer.execute_batch(setup).expect("the file is set up");
        let url =
            DatabaseUrl::parse(&format!("sqlite://{}?mode=rwc", path.display())).expect("a URL");
        let reader = InlineReader::for_url(&url)
            .expect("parses")
            .expect("a file URL gets a reader");
        (dir, writer, reader)
    }

    #[test]
    fn a_reader_sees_what_another_connection_committed_and_cannot_write() {
        let (_dir, writer, reader) = file_with(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (7);",
        );

        let read = |reader: &InlineReader| {
            reader
                .read(|conn| conn.query_row("SELECT sum(v) FROM t", [], |row| row.get::<_, i64>(0)))
        };
        assert_eq!(read(&reader).expect("reads"), 7_i64);
        writer
            .execute("INSERT INTO t VALUES (5)", [])
            .expect("a second row");
        assert_eq!(read(&reader).expect("reads again"), 12_i64);

        let refused = reader.read(|conn| conn.execute("INSERT INTO t VALUES (1)", []));
        assert!(matches!(refused, Err(InlineReadError::Failed(_))));
    }

    #[test]
    fn a_reader_never_waits_for_a_lock_and_says_busy_instead() {
        let (_dir, writer, reader) =
            file_with("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1);");
        // A rollback-journal file under an exclusive lock: readers must wait for the writer.
        writer
            .execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE;")
            .expect("the lock is taken");

        let answer =
            reader.read(|conn| conn.query_row("SELECT v FROM t", [], |row| row.get::<_, i64>(0)));
        assert!(matches!(answer, Err(InlineReadError::Busy)), "{answer:?}");
        let wait_ms = reader
            .read(|conn| conn.query_row("PRAGMA busy_timeout", [], |row| row.get::<_, i64>(0)))
            .expect("a pragma needs no lock");
        assert_eq!(
            wait_ms, 0,
            "SQLite's busy handler must never sleep on a runtime thread"
        );
    }
}
