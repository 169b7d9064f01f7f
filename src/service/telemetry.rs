//! Telemetry: the batched writer between MQTT and the database, and the owner's history.
//!
//! Device messages (telemetry, status, any sign of life) go through one bounded queue to one
//! writer task, which commits them in batches: up to [`MAX_BATCH`] events or whatever arrived
//! within [`FLUSH_INTERVAL`] of the first, in one transaction. A burst from thousands of
//! devices becomes a handful of transactions, not thousands. When the database falls behind,
//! the queue fills and intake waits (backpressure towards the broker) while the metrics and
//! the log say so; memory stays bounded.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend,
    DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::devices::{self, DeviceError};
use crate::entity::{devices as device_table, telemetry};

/// Most events written in one transaction. A transaction costs more than its rows: the
/// commit, and above all every index page it touches, which with a thousand devices is one
/// page per device whether the batch holds one row per device or five. So while the writer
/// is behind, it takes more at once and spends less per row; while it keeps up, the flush
/// interval keeps batches small and telemetry fresh.
pub const MAX_BATCH: usize = 5_000;
/// Rows per `INSERT` statement: 1,000 rows of 4 columns stay far below the bind parameter
/// limits of SQLite (32,766) and PostgreSQL (65,535).
const ROWS_PER_INSERT: usize = 1_000;
/// How long the first event of a batch waits for company: short enough that telemetry shows
/// up in the API at once, long enough to gather a burst.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Events the queue holds by default before intake waits for the writer (and the embedded
/// broker holds back devices' acknowledgements): about one second of a busy fleet, a few MiB
/// at most. `IOTBIND_TELEMETRY_QUEUE` changes it.
pub const QUEUE_CAPACITY: usize = 20_000;
/// At most one "queue full" warning per this many milliseconds.
const FULL_WARNING_EVERY_MS: u64 = 1_000;
/// Wait between attempts to write a batch the database refused.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// On shutdown a batch that keeps failing is given up after this many attempts.
const SHUTDOWN_ATTEMPTS: u32 = 3;

/// Something a device said, to be recorded.
#[derive(Debug, Clone)]
pub struct DeviceEvent {
    pub device_id: Uuid,
    /// When it arrived (unix ms).
    pub received_at: i64,
    pub kind: EventKind,
}

#[derive(Debug, Clone)]
pub enum EventKind {
    Telemetry {
        ts: i64,
        values_json: String,
    },
    Status {
        online: bool,
    },
    /// Any other message: only refreshes `last_seen_at`.
    Seen,
}

/// The sending end of the writer's queue; cheap to clone.
#[derive(Clone)]
pub struct TelemetryQueue {
    sender: mpsc::Sender<DeviceEvent>,
    /// When the next "queue full" warning may be logged (ms since the writer started), so
    /// that a backlog of thousands of messages a second is one line a second, not thousands.
    next_full_warning: Arc<AtomicU64>,
    started: Instant,
}

impl TelemetryQueue {
    /// Queues an event, waiting while the queue is full (and saying so).
    pub async fn push(&self, event: DeviceEvent) {
        match self.sender.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => {
                metrics::counter!(crate::metrics::TELEMETRY_QUEUE_FULL).increment(1);
                let now = self.started.elapsed().as_millis() as u64;
                let due = self.next_full_warning.load(Ordering::Relaxed);
                if now >= due
                    && self
                        .next_full_warning
                        .compare_exchange(
                            due,
                            now + FULL_WARNING_EVERY_MS,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                {
                    tracing::warn!(
                        capacity = self.sender.max_capacity(),
                        "telemetry queue full: the database is behind, MQTT intake waits"
                    );
                }
                if self.sender.send(event).await.is_err() {
                    tracing::warn!("telemetry writer stopped; an event was not recorded");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!("telemetry writer stopped; an event was not recorded");
            }
        }
    }
}

/// Starts the writer behind a queue of `capacity` events; it runs until every
/// [`TelemetryQueue`] is dropped, then flushes what is left and ends.
pub fn start_writer(
    db: DatabaseConnection,
    capacity: usize,
) -> (TelemetryQueue, tokio::task::JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(capacity);
    let task = tokio::spawn(write_batches(db, receiver));
    let queue = TelemetryQueue {
        sender,
        next_full_warning: Arc::new(AtomicU64::new(0)),
        started: Instant::now(),
    };
    (queue, task)
}

async fn write_batches(db: DatabaseConnection, mut receiver: mpsc::Receiver<DeviceEvent>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut known = KnownDevices::default();
    loop {
        if receiver.recv_many(&mut batch, MAX_BATCH).await == 0 {
            break;
        }
        let deadline = tokio::time::Instant::now() + FLUSH_INTERVAL;
        let mut closed = false;
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(deadline, receiver.recv_many(&mut batch, room)).await {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        metrics::gauge!(crate::metrics::TELEMETRY_QUEUE_DEPTH).set(receiver.len() as f64);
        flush_with_retry(&db, &batch, &mut known, closed).await;
        batch.clear();
        if closed {
            break;
        }
    }
}

async fn flush_with_retry(
    db: &DatabaseConnection,
    batch: &[DeviceEvent],
    known: &mut KnownDevices,
    shutting_down: bool,
) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let started = Instant::now();
        match flush(db, batch, known).await {
            Ok(written) => {
                metrics::counter!(crate::metrics::TELEMETRY_ROWS_WRITTEN).increment(written);
                metrics::histogram!(crate::metrics::TELEMETRY_FLUSH_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                return;
            }
            Err(err) => {
                metrics::counter!(crate::metrics::TELEMETRY_WRITE_ERRORS).increment(1);
                if shutting_down && attempt >= SHUTDOWN_ATTEMPTS {
                    tracing::error!(error = %err, events = batch.len(), "cannot write telemetry at shutdown; giving up on this batch");
                    return;
                }
                // Keeping the batch and retrying lets the queue fill, which is the
                // backpressure we want, rather than losing what devices sent.
                tracing::warn!(error = %err, events = batch.len(), attempt, "cannot write telemetry; retrying");
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
        }
    }
}

/// Device ids the writer has found in the database. Devices are never deleted, so an id once
/// found stays valid and the writer need not look it up again; this saves a query per batch.
/// Ids not found are not remembered: a device provisioned a moment ago must be recognised.
#[derive(Default)]
struct KnownDevices {
    ids: HashSet<Uuid>,
}

/// Past this many ids the set starts over rather than growing without bound (16 bytes and a
/// little overhead each, so a few tens of MiB at most).
const KNOWN_DEVICES_LIMIT: usize = 1_000_000;

impl KnownDevices {
    /// Which of `ids` exist, reading only those not seen before.
    async fn filter(
        &mut self,
        db: &DatabaseConnection,
        ids: HashSet<Uuid>,
    ) -> Result<HashSet<Uuid>, DbErr> {
        let unseen: Vec<Uuid> = ids
            .iter()
            .filter(|id| !self.ids.contains(id))
            .copied()
            .collect();
        if self.ids.len() + unseen.len() > KNOWN_DEVICES_LIMIT {
            self.ids.clear();
        }
        for chunk in unseen.chunks(500) {
            let found: Vec<Uuid> = device_table::Entity::find()
                .filter(device_table::Column::Id.is_in(chunk.iter().copied()))
                .select_only()
                .column(device_table::Column::Id)
                .into_tuple()
                .all(db)
                .await?;
            self.ids.extend(found);
        }
        Ok(ids.into_iter().filter(|id| self.ids.contains(id)).collect())
    }
}

/// Writes one batch in one transaction; returns the telemetry rows written.
async fn flush(
    db: &DatabaseConnection,
    batch: &[DeviceEvent],
    known: &mut KnownDevices,
) -> Result<u64, DbErr> {
    // Through an external broker anyone may publish on any topic; rows for devices we never
    // provisioned are dropped here rather than failing the batch on the foreign key. Devices
    // are never deleted, so this read may happen before the transaction, which then opens
    // with a write: SQLite refuses to upgrade a reading transaction while others write.
    let known = known
        .filter(db, batch.iter().map(|e| e.device_id).collect())
        .await?;

    let mut rows = Vec::new();
    let mut last_seen: HashMap<Uuid, i64> = HashMap::new();
    let mut status: HashMap<Uuid, (bool, i64)> = HashMap::new();
    for event in batch {
        if !known.contains(&event.device_id) {
            if matches!(event.kind, EventKind::Telemetry { .. }) {
                metrics::counter!(crate::metrics::TELEMETRY_DROPPED, "reason" => "unknown_device")
                    .increment(1);
            }
            continue;
        }
        let seen = last_seen
            .entry(event.device_id)
            .or_insert(event.received_at);
        *seen = (*seen).max(event.received_at);
        match &event.kind {
            EventKind::Telemetry { ts, values_json } => rows.push(telemetry::ActiveModel {
                device_id: Set(event.device_id),
                ts: Set(*ts),
                values_json: Set(values_json.clone()),
                received_at: Set(event.received_at),
                ..Default::default()
            }),
            // The latest status in arrival order wins.
            EventKind::Status { online } => {
                status.insert(event.device_id, (*online, event.received_at));
            }
            EventKind::Seen => {}
        }
    }

    let written = rows.len() as u64;
    let txn = db.begin().await?;
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        telemetry::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(&txn)
            .await?;
    }
    let last_seen: Vec<(Uuid, i64)> = last_seen.into_iter().collect();
    for chunk in last_seen.chunks(LAST_SEEN_PER_STATEMENT) {
        txn.execute_raw(last_seen_update(txn.get_database_backend(), chunk))
            .await?;
    }
    for (device_id, (online, at)) in status {
        device_table::Entity::update_many()
            .col_expr(device_table::Column::Online, Expr::value(online))
            .col_expr(device_table::Column::StatusAt, Expr::value(at))
            .filter(device_table::Column::Id.eq(device_id))
            .filter(
                Condition::any()
                    .add(device_table::Column::StatusAt.is_null())
                    .add(device_table::Column::StatusAt.lte(at)),
            )
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(written)
}

/// Devices whose `last_seen_at` one statement moves (two parameters each).
const LAST_SEEN_PER_STATEMENT: usize = 1_000;

/// One `UPDATE … FROM (VALUES …)` that moves `last_seen_at` forward for many devices at once.
///
/// A batch touches up to a thousand devices; one statement per device was most of a batch's
/// time. SQLite (3.33+) and PostgreSQL both accept this form and both name the columns of a
/// bare `VALUES` list `column1`, `column2`. The value only ever moves forward, whatever order
/// batches from two replicas commit in.
fn last_seen_update(backend: DbBackend, seen: &[(Uuid, i64)]) -> Statement {
    let mut sql = String::from("UPDATE devices SET last_seen_at = v.column2 FROM (VALUES ");
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(seen.len() * 2);
    for (i, (device_id, at)) in seen.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        match backend {
            DbBackend::Postgres => sql.push_str(&format!("(${}, ${})", 2 * i + 1, 2 * i + 2)),
            _ => sql.push_str("(?, ?)"),
        }
        values.push((*device_id).into());
        values.push((*at).into());
    }
    sql.push_str(
        ") AS v WHERE devices.id = v.column1 \
         AND (devices.last_seen_at IS NULL OR devices.last_seen_at < v.column2)",
    );
    Statement::from_sql_and_values(backend, sql, values)
}

/// Which part of a device's history to read.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Inclusive, unix ms.
    pub from: Option<i64>,
    /// Exclusive, unix ms.
    pub to: Option<i64>,
    pub limit: u64,
    pub cursor: Option<Cursor>,
}

/// Where the previous page ended: the last row's `(ts, id)`, opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    ts: i64,
    id: i64,
}

impl Cursor {
    pub fn parse(raw: &str) -> Option<Cursor> {
        let decoded = URL_SAFE_NO_PAD.decode(raw).ok()?;
        let text = std::str::from_utf8(&decoded).ok()?;
        let (ts, id) = text.split_once(':')?;
        Some(Cursor {
            ts: ts.parse().ok()?,
            id: id.parse().ok()?,
        })
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.ts, self.id))
    }
}

/// One page of history, newest first.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// `(ts, values_json)`.
    pub items: Vec<(i64, String)>,
    pub next_cursor: Option<Cursor>,
}

/// A page of the caller's device's telemetry, from their claim on.
pub async fn history(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    device_id: Uuid,
    query: HistoryQuery,
) -> Result<HistoryPage, DeviceError> {
    let device = devices::owned(db, user_id, device_id).await?;
    // The owner's rows are those received since their claim (whatever `ts` the device put on
    // them); `from` and `to` select by `ts` among those.
    let since = device.claimed_at.unwrap_or(i64::MAX);
    let mut select = telemetry::Entity::find()
        .filter(telemetry::Column::DeviceId.eq(device_id))
        .filter(telemetry::Column::ReceivedAt.gte(since));
    if let Some(from) = query.from {
        select = select.filter(telemetry::Column::Ts.gte(from));
    }
    if let Some(to) = query.to {
        select = select.filter(telemetry::Column::Ts.lt(to));
    }
    if let Some(cursor) = query.cursor {
        select = select.filter(
            Condition::any()
                .add(telemetry::Column::Ts.lt(cursor.ts))
                .add(
                    Condition::all()
                        .add(telemetry::Column::Ts.eq(cursor.ts))
                        .add(telemetry::Column::Id.lt(cursor.id)),
                ),
        );
    }
    let mut rows: Vec<(i64, i64, String)> = select
        .order_by_desc(telemetry::Column::Ts)
        .order_by_desc(telemetry::Column::Id)
        .select_only()
        .column(telemetry::Column::Id)
        .column(telemetry::Column::Ts)
        .column(telemetry::Column::ValuesJson)
        .limit(query.limit + 1)
        .into_tuple()
        .all(db)
        .await?;
    let more = rows.len() as u64 > query.limit;
    rows.truncate(query.limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|(id, ts, _)| Cursor { ts: *ts, id: *id }))
        .flatten();
    Ok(HistoryPage {
        items: rows
            .into_iter()
            .map(|(_, ts, values)| (ts, values))
            .collect(),
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = Cursor {
            ts: 1_700_000_000_123,
            id: 42,
        };
        assert_eq!(Cursor::parse(&cursor.encode()), Some(cursor));
        assert_eq!(Cursor::parse("not a cursor"), None);
        assert_eq!(Cursor::parse(&URL_SAFE_NO_PAD.encode("1:x")), None);
    }
}
