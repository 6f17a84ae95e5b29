//! SQLite: one row per (week, session) holding its latest record and its expiry, and the
//! week's tallies beside them, changed in the same transaction as the core's model of a week
//! says ([`telemetry_core::stored_week`]). A readout reads tally rows only (live and summary);
//! expired rows are deleted at their expiry by the server's expiry task, which finds the next
//! one on an index, and their sessions stay counted in their week's summary.
//!
//! Its seams: [`schema`] (tables and the migration ladder), [`write`] (the transactions that
//! change rows: pings, deletions, expiry, repair), [`tallies`] (moving and reading tallies).

mod schema;
mod tallies;
#[cfg(test)]
mod tests;
mod write;

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params};
use telemetry_core::summary::Retention;
use telemetry_core::{Dimension, IsoWeek, SessionId, SessionWrite, Tally};

use super::{LiveRecord, StoreError};

/// Records an export reads at a time.
const RECORDS_PER_PAGE: usize = 1_000;

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Unavailable(error.to_string())
    }
}

/// A SQLite file shared by the writer, the readout and the expiry task. SQLite serialises
/// writers anyway; one connection behind a mutex keeps that explicit. Calls run on blocking
/// threads.
#[derive(Clone)]
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    retention: Retention,
}

impl SqliteStore {
    /// Opens the file, creating or migrating it as needed; any failure here stops the server.
    pub fn open(path: &Path, retention: Retention) -> Result<Self, StoreError> {
        Ok(Self {
            connection: Arc::new(Mutex::new(schema::open(path)?)),
            retention,
        })
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    async fn with_connection<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            let mut connection = connection
                .lock()
                .map_err(|_| StoreError::Unavailable("store lock poisoned".into()))?;
            work(&mut connection)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    /// Writes a batch in one transaction, every record it keeps expiring at `expires_at`.
    pub async fn write_batch(
        &self,
        batch: Arc<[SessionWrite]>,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.with_connection(move |connection| write::pings(connection, &batch, expires_at))
            .await
    }

    /// The week's sessions counted along `dimension`, from its tally rows.
    pub async fn tally_week(
        &self,
        week: IsoWeek,
        dimension: Dimension,
    ) -> Result<Tally, StoreError> {
        self.with_connection(move |connection| tallies::read(connection, week, dimension))
            .await
    }

    /// The week's records that have not expired at `now`, for `export-kv`.
    pub async fn records_of_week(
        &self,
        week: IsoWeek,
        now: i64,
    ) -> Result<Vec<LiveRecord>, StoreError> {
        self.with_connection(move |connection| {
            connection
                .prepare(
                    "SELECT session_id, record, expires_at FROM sessions
                     WHERE week = ?1 AND expires_at > ?2",
                )?
                .query_map(params![week.to_string(), now], |row| {
                    Ok(LiveRecord {
                        session_id: row.get(0)?,
                        record_json: row.get(1)?,
                        expires_at: row.get(2)?,
                    })
                })?
                .collect::<Result<_, _>>()
                .map_err(StoreError::from)
        })
        .await
    }

    /// One page of the week's records that have not expired at `now`, after the session id
    /// `cursor` (`None`: from the first), in order, and the cursor of the next page (`None`:
    /// that was the last), so that an export holds a page in memory, never the week.
    pub async fn records_page(
        &self,
        week: IsoWeek,
        cursor: Option<String>,
        now: i64,
    ) -> Result<(Vec<LiveRecord>, Option<String>), StoreError> {
        self.with_connection(move |connection| {
            let records: Vec<LiveRecord> = connection
                .prepare_cached(
                    "SELECT session_id, record, expires_at FROM sessions
                     WHERE week = ?1 AND session_id > ?2 AND expires_at > ?3
                     ORDER BY session_id LIMIT ?4",
                )?
                .query_map(
                    params![
                        week.to_string(),
                        cursor.unwrap_or_default(),
                        now,
                        RECORDS_PER_PAGE
                    ],
                    |row| {
                        Ok(LiveRecord {
                            session_id: row.get(0)?,
                            record_json: row.get(1)?,
                            expires_at: row.get(2)?,
                        })
                    },
                )?
                .collect::<Result<_, _>>()?;
            let next = (records.len() == RECORDS_PER_PAGE)
                .then(|| records.last().map(|last| last.session_id.clone()))
                .flatten();
            Ok((records, next))
        })
        .await
    }

    /// Deletes the session's record from every week that holds one, and empties the WAL of
    /// them; returns how many there were. Safe while the server runs.
    pub async fn delete_session(
        &self,
        session_id: SessionId,
        now: i64,
        journal_until: i64,
    ) -> Result<usize, StoreError> {
        let retention = self.retention;
        self.with_connection(move |connection| {
            write::deletion(connection, &session_id, now, retention, journal_until)
        })
        .await
    }

    /// The deletion journal at `now`: the sessions deleted here, for the other target.
    pub async fn journal(&self, now: i64) -> Result<Vec<String>, StoreError> {
        self.with_connection(move |connection| write::journal(connection, now))
            .await
    }

    /// Takes `ids` out of the deletion journal; returns how many it held.
    pub async fn forget_journaled(&self, ids: Vec<SessionId>) -> Result<usize, StoreError> {
        self.with_connection(move |connection| write::forget_journaled(connection, &ids))
            .await
    }

    /// Reads the schema's version: the file is there and readable.
    pub async fn check(&self) -> Result<(), StoreError> {
        self.with_connection(|connection| {
            Ok(connection.query_row("PRAGMA user_version", [], |_| Ok(()))?)
        })
        .await
    }

    /// The weeks the file holds a record of, in order.
    pub async fn weeks_held(&self) -> Result<Vec<IsoWeek>, StoreError> {
        self.with_connection(|connection| write::weeks_held(connection))
            .await
    }

    /// The earliest expiry of a record or a summary, if the file holds one.
    pub async fn next_expiry(&self) -> Result<Option<i64>, StoreError> {
        let retention = self.retention;
        self.with_connection(move |connection| write::next_expiry(connection, retention))
            .await
    }

    /// Deletes every record that has expired at `now`, moving it from its week's tallies to
    /// the week's summary (when summaries are kept), and the summaries past their retention;
    /// returns how many records went.
    pub async fn expire(&self, now: i64) -> Result<usize, StoreError> {
        let retention = self.retention;
        self.with_connection(move |connection| write::expiry(connection, now, retention))
            .await
    }

    /// Rebuilds the week's tallies from its records, dropping the records that are not
    /// records; returns how many were dropped.
    pub async fn repair(&self, week: IsoWeek) -> Result<u64, StoreError> {
        self.with_connection(move |connection| write::repair(connection, week))
            .await
    }
}

/// Copies the WAL into the file and truncates it to nothing. `secure_delete` clears deleted
/// rows in the pages, but until the next checkpoint the WAL still holds earlier copies of
/// those pages, rows and all. If another connection is reading, the checkpoint does what it
/// can and the next deletion finishes it.
fn forget_wal(connection: &Connection) -> Result<(), rusqlite::Error> {
    connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
}
