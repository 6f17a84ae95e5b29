//! SQLite: each week's sessions in the order they first arrived, with an expiry column, and
//! the week's tallies beside them. A new session is appended to its week and a repeat that
//! changes a field rewrites its own row; a count reads the week's summary row and a breakdown
//! its tallies; a periodic purge deletes what has expired.
//!
//! Its seams: [`schema`] (tables and migrations), [`arrivals`] (where a session's row is),
//! [`write`] (the writer's transaction), [`tallies`] (the breakdowns).

mod arrivals;
mod schema;
mod tallies;
#[cfg(test)]
mod tests;
mod write;

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use telemetry_core::readout::{Tally, TallyMoves};
use telemetry_core::{Dimension, IsoWeek, SessionId, SessionWrite, expires_at};

use self::arrivals::Arrivals;
use super::{LiveRecord, StoreError};
use crate::unix_now;

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        Self(error.to_string())
    }
}

/// A SQLite file shared by the writer, the readout and the purge. SQLite serialises writers
/// anyway; one connection behind a mutex keeps that explicit. Calls run on blocking threads.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    connection: Connection,
    arrivals: Arrivals,
}

impl SqliteStore {
    /// Opens (creating or migrating if needed) the store; any failure here stops the server.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = schema::open(path)?;
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                connection,
                arrivals: Arrivals::default(),
            })),
        })
    }

    async fn with_inner<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut inner = inner
                .lock()
                .map_err(|_| StoreError("store lock poisoned".into()))?;
            work(&mut inner)
        })
        .await
        .map_err(|e| StoreError(format!("store task failed: {e}")))?
    }

    /// Writes a batch in one transaction; each record expires when the core says a record
    /// written now with `ttl_seconds` does.
    pub async fn write_batch(
        &self,
        batch: Arc<[SessionWrite]>,
        ttl_seconds: u64,
    ) -> Result<(), StoreError> {
        self.write_batch_expiring(batch, expires_at(unix_now(), ttl_seconds))
            .await
    }

    /// Writes a batch in one transaction, every record expiring at `expires_at` (seconds since
    /// the epoch): for `import-kv`, which keeps each record's remaining lifetime.
    pub async fn write_batch_expiring(
        &self,
        batch: Arc<[SessionWrite]>,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.with_inner(
            move |Inner {
                      connection,
                      arrivals,
                  }| {
                let written = write::write_rows(connection, arrivals, &batch, expires_at);
                if written.is_err() {
                    // Arrival numbers handed out for rows that were not written: forget them all.
                    arrivals.weeks.clear();
                }
                written
            },
        )
        .await
    }

    /// Counts a week's live sessions: the week's row count while none of them has expired
    /// (the usual case: the TTL is 12 weeks), else a range of the primary key.
    pub async fn count_week(&self, week: IsoWeek) -> Result<u64, StoreError> {
        let now = unix_now();
        self.with_inner(move |Inner { connection, .. }| {
            let week = week.to_string();
            let noted: Option<(Option<i64>, i64)> = connection
                .prepare_cached("SELECT earliest_expiry, sessions FROM weeks WHERE week = ?1")?
                .query_row([&week], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            match noted {
                None => Ok(0),
                Some((earliest, sessions)) if earliest.is_none_or(|e| e > now) => Ok(sessions),
                Some(_) => Ok(connection
                    .prepare_cached(
                        "SELECT count(*) FROM sessions WHERE week = ?1 AND expires_at > ?2",
                    )?
                    .query_row(params![week, now], |row| row.get::<_, i64>(0))?),
            }
        })
        .await
        .map(|count| u64::try_from(count).unwrap_or(0))
    }

    /// The week's live sessions counted along `dimension`: from its tallies while none of its
    /// rows has expired, else from its live records until the purge has deleted the rest.
    pub async fn tally_week(
        &self,
        week: IsoWeek,
        dimension: Dimension,
    ) -> Result<Tally, StoreError> {
        let now = unix_now();
        self.with_inner(move |Inner { connection, .. }| {
            let week = week.to_string();
            let earliest: Option<Option<i64>> = connection
                .prepare_cached("SELECT earliest_expiry FROM weeks WHERE week = ?1")?
                .query_row([&week], |row| row.get(0))
                .optional()?;
            match earliest {
                None => Ok(Tally::default()),
                Some(earliest) if earliest.is_none_or(|e| e > now) => {
                    tallies::read(connection, &week, dimension)
                }
                Some(_) => tallies::read_live_records(connection, &week, now, dimension),
            }
        })
        .await
    }

    pub async fn records_of_week(&self, week: IsoWeek) -> Result<Vec<LiveRecord>, StoreError> {
        let now = unix_now();
        self.with_inner(move |Inner { connection, .. }| {
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

    /// Deletes every record of `session_id`, in every week, and empties the WAL of them; the
    /// weeks' counts, tallies and generations move with it, so a running server notices.
    /// Returns how many records there were.
    pub async fn delete_session(&self, session_id: SessionId) -> Result<usize, StoreError> {
        self.with_inner(move |Inner { connection, .. }| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // No index on session_id: it would cost every write, and a request to delete is
            // rare enough to afford a scan of the file.
            let deleted: Vec<(String, String)> = transaction
                .prepare("DELETE FROM sessions WHERE session_id = ?1 RETURNING week, record")?
                .query_map([session_id.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            for (week, record) in &deleted {
                let mut moves = TallyMoves::default();
                moves.replace(Some(&tallies::parse_record(week, record)?), None);
                tallies::apply(&transaction, week, &moves)?;
                transaction.execute(
                    "UPDATE weeks SET
                         earliest_expiry = (SELECT min(expires_at) FROM sessions WHERE week = ?1),
                         sessions = sessions - 1,
                         generation = generation + 1
                     WHERE week = ?1",
                    [week],
                )?;
            }
            transaction.commit()?;
            if !deleted.is_empty() {
                forget_wal(connection)?;
            }
            Ok(deleted.len())
        })
        .await
    }

    /// Deletes expired records, a week at a time and only in weeks whose earliest expiry has
    /// passed; the readout already ignores them, this frees the space.
    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        let now = unix_now();
        self.with_inner(move |Inner { connection, .. }| {
            let weeks: Vec<String> = connection
                .prepare("SELECT week FROM weeks WHERE earliest_expiry <= ?1")?
                .query_map([now], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let mut deleted = 0;
            for week in weeks {
                // One transaction per week, so the writer waits for one week at most.
                let transaction = connection.transaction()?;
                let records: Vec<String> = transaction
                    .prepare_cached(
                        "DELETE FROM sessions WHERE week = ?1 AND expires_at <= ?2 RETURNING record",
                    )?
                    .query_map(params![week, now], |row| row.get(0))?
                    .collect::<Result<_, _>>()?;
                let mut moves = TallyMoves::default();
                for record in &records {
                    moves.replace(Some(&tallies::parse_record(&week, record)?), None);
                }
                tallies::apply(&transaction, &week, &moves)?;
                let deleted_in_week = records.len();
                // The week's row stays when it empties: its generation must never go back.
                transaction.execute(
                    "UPDATE weeks SET
                         earliest_expiry = (SELECT min(expires_at) FROM sessions WHERE week = ?1),
                         sessions = sessions - ?2,
                         generation = generation + (?2 > 0)
                     WHERE week = ?1",
                    params![week, deleted_in_week],
                )?;
                transaction.commit()?;
                deleted += deleted_in_week;
            }
            if deleted > 0 {
                forget_wal(connection)?;
            }
            Ok(deleted)
        })
        .await
    }
}

/// Copies the WAL into the file and truncates it to nothing. `secure_delete` clears deleted
/// rows in the pages, but until the next checkpoint the WAL still holds earlier copies of
/// those pages, rows and all. If another connection is reading, the checkpoint does what it
/// can and the next purge finishes it.
fn forget_wal(connection: &Connection) -> Result<(), rusqlite::Error> {
    connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
}
