//! SQLite: each week's sessions in the order they first arrived, with an expiry column. A new
//! session is appended to its week and a repeat overwrites its own row; the readout counts a
//! week's range of the primary key; a periodic purge deletes what has expired.

use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::hash::{BuildHasher, Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use telemetry_core::readout::record_to_write;
use telemetry_core::{IsoWeek, SessionId, SessionWrite, expires_at};

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

/// `secure_delete` overwrites a deleted row's bytes (an expired record, a session deleted on
/// request) instead of leaving them in a free page for anyone who opens the file; after such
/// deletes the WAL, which still holds the pages as they were, is emptied (see [`forget_wal`]).
const PRAGMAS: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    PRAGMA busy_timeout = 5000;
    PRAGMA secure_delete = ON;
";
/// Rows are keyed by (week, arrival), not (week, session id). Session ids are random, so a
/// B-tree keyed by them takes each new session at a random page: once a week outgrows the
/// page cache that costs 10–50 µs a row here, against about 2 µs for an append (measured; see
/// BENCHMARKS.md). Uniqueness of (week, session) is kept by [`Arrivals`], below.
/// `weeks` holds each week's earliest expiry, so the purge visits only weeks that hold
/// expired rows (an index on `expires_at` would cost every insert a second B-tree: measured,
/// the writer's CPU per row went from 2.8 to 4.6 µs with it), its number of rows, so the
/// readout does not count them one by one while none has expired, and a generation that
/// every transaction changing the week's rows increments.
const TABLES: &str = "
    CREATE TABLE IF NOT EXISTS sessions (
        week TEXT NOT NULL,
        arrival INTEGER NOT NULL,
        session_id TEXT NOT NULL,
        record TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (week, arrival)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS weeks (
        week TEXT PRIMARY KEY,
        earliest_expiry INTEGER,
        sessions INTEGER NOT NULL,
        generation INTEGER NOT NULL
    ) WITHOUT ROWID;
";

/// A file written before rows had an arrival number (keyed by week and session id) is
/// renumbered once, per week in session-id order, in the transaction that opens it.
const IS_KEYED_BY_SESSION_ID: &str = "
    SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sessions'
    AND NOT EXISTS (SELECT 1 FROM pragma_table_info('sessions') WHERE name = 'arrival')
";
const SET_ASIDE_SESSION_ID_KEYS: &str = "
    ALTER TABLE sessions RENAME TO sessions_by_session_id;
    DROP INDEX IF EXISTS sessions_expiry;
";
const COPY_FROM_SESSION_ID_KEYS: &str = "
    INSERT INTO sessions (week, arrival, session_id, record, expires_at)
        SELECT week, row_number() OVER (PARTITION BY week ORDER BY session_id) - 1,
               session_id, record, expires_at
        FROM sessions_by_session_id;
    INSERT INTO weeks (week, earliest_expiry, sessions, generation)
        SELECT week, min(expires_at), count(*), 1 FROM sessions_by_session_id GROUP BY week;
    DROP TABLE sessions_by_session_id;
";

/// The file's `user_version` from which every stored time is a day (`first_seen_at` and
/// `expires_at`, as `telemetry_core::record` writes them).
const TIMES_TO_THE_DAY: i64 = 1;
/// A file written before that has its times cut to the day once, in the transaction that
/// opens it (a record without `first_seen_at`, which this server never writes, is left as is).
const CUT_TIMES_TO_THE_DAY: &str = "
    UPDATE sessions SET
        expires_at = expires_at - expires_at % 86400,
        record = CASE WHEN json_valid(record) AND json_type(record, '$.first_seen_at') = 'text'
            THEN json_set(record, '$.first_seen_at',
                          substr(json_extract(record, '$.first_seen_at'), 1, 10) || 'T00:00:00Z')
            ELSE record END;
    UPDATE weeks SET earliest_expiry = earliest_expiry - earliest_expiry % 86400;
";

/// Where each session of a week sits in that week's arrival order, for the weeks this process
/// writes to. The file is the truth: a week's map is read from it on first use, and again
/// whenever the week's generation in the file is not the one this process last wrote (another
/// process such as `import-kv` wrote to the week, or the purge deleted from it); after a
/// failed write every map is dropped. The check and the write run in one `BEGIN IMMEDIATE`
/// transaction, so no other writer can slip in between: a session never gets two rows.
#[derive(Default)]
struct Arrivals {
    weeks: HashMap<IsoWeek, WeekArrivals>,
}

#[derive(Default)]
struct WeekArrivals {
    by_session: HashMap<HashedId, i64>,
    /// Keys the hashes of the session ids, so that chosen ids cannot crowd one bucket.
    id_hasher: RandomState,
    next: i64,
    generation: i64,
}

/// A session id and its hash, computed once: when the map grows it rehashes from the stored
/// hash instead of reading every id again, which (measured at a million sessions) was an
/// eighth of the writer's time.
#[derive(PartialEq, Eq)]
struct HashedId {
    hash: u64,
    id: Box<str>,
}

impl Hash for HashedId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Week maps kept in memory: this week's and last week's (pings queued just before Monday
/// 00:00 UTC are written just after it). Older weeks are only written by `import-kv`.
const WEEKS_KEPT: usize = 2;

impl Arrivals {
    /// The week's map, checked against the file inside the caller's write transaction.
    fn week(
        &mut self,
        transaction: &Transaction<'_>,
        week: IsoWeek,
    ) -> Result<&mut WeekArrivals, rusqlite::Error> {
        let week_text = week.to_string();
        let generation = transaction
            .prepare_cached("SELECT generation FROM weeks WHERE week = ?1")?
            .query_row([&week_text], |row| row.get::<_, i64>(0))
            .optional()?
            .unwrap_or(0);
        if !self.weeks.contains_key(&week) && self.weeks.len() >= WEEKS_KEPT {
            let oldest = self.weeks.keys().min().copied();
            oldest.map(|oldest| self.weeks.remove(&oldest));
        }
        // A week met for the first time starts empty, which is right when the file has none.
        let known = self.weeks.entry(week).or_default();
        if known.generation != generation {
            let id_hasher = &known.id_hasher;
            known.by_session = transaction
                .prepare_cached("SELECT session_id, arrival FROM sessions WHERE week = ?1")?
                .query_map([&week_text], |row| {
                    let id: String = row.get(0)?;
                    Ok((hashed(id_hasher, &id), row.get(1)?))
                })?
                .collect::<Result<_, _>>()?;
            known.next = known.by_session.values().max().map_or(0, |last| last + 1);
            known.generation = generation;
        }
        Ok(known)
    }
}

impl WeekArrivals {
    /// The session's row: its own when the week has it, else a new one at the end.
    fn place(&mut self, session_id: &str) -> Row {
        match self.by_session.entry(hashed(&self.id_hasher, session_id)) {
            Entry::Occupied(known) => Row::Existing(*known.get()),
            Entry::Vacant(new) => {
                let arrival = self.next;
                self.next += 1;
                new.insert(arrival);
                Row::New(arrival)
            }
        }
    }
}

fn hashed(id_hasher: &RandomState, id: &str) -> HashedId {
    HashedId {
        hash: id_hasher.hash_one(id),
        id: id.into(),
    }
}

/// Where a write goes, by its arrival number.
enum Row {
    New(i64),
    Existing(i64),
}

impl SqliteStore {
    /// Opens (creating or migrating if needed) the store; any failure here stops the server.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut connection = Connection::open(path)?;
        connection.execute_batch(PRAGMAS)?;
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let keyed_by_session_id =
            transaction.query_row(IS_KEYED_BY_SESSION_ID, [], |row| row.get::<_, i64>(0))? > 0;
        if keyed_by_session_id {
            transaction.execute_batch(SET_ASIDE_SESSION_ID_KEYS)?;
        }
        transaction.execute_batch(TABLES)?;
        if keyed_by_session_id {
            transaction.execute_batch(COPY_FROM_SESSION_ID_KEYS)?;
        }
        let version: i64 = transaction.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if version < TIMES_TO_THE_DAY {
            transaction.execute_batch(CUT_TIMES_TO_THE_DAY)?;
            transaction.pragma_update(None, "user_version", TIMES_TO_THE_DAY)?;
        }
        transaction.commit()?;
        forget_wal(&connection)?;
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                connection,
                arrivals: Arrivals::default(),
            })),
        })
    }

    async fn with_inner<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Inner) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut inner = inner
                .lock()
                .map_err(|_| StoreError("store lock poisoned".into()))?;
            work(&mut inner).map_err(StoreError::from)
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
                let written = write_rows(connection, arrivals, &batch, expires_at);
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
                Some(_) => connection
                    .prepare_cached(
                        "SELECT count(*) FROM sessions WHERE week = ?1 AND expires_at > ?2",
                    )?
                    .query_row(params![week, now], |row| row.get::<_, i64>(0)),
            }
        })
        .await
        .map(|count| u64::try_from(count).unwrap_or(0))
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
                .collect()
        })
        .await
    }

    /// Deletes every record of `session_id`, in every week, and empties the WAL of them; the
    /// weeks' counts and generations move with it, so a running server notices. Returns how
    /// many records there were.
    pub async fn delete_session(&self, session_id: SessionId) -> Result<usize, StoreError> {
        self.with_inner(move |Inner { connection, .. }| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // No index on session_id: it would cost every write, and a request to delete is
            // rare enough to afford a scan of the file.
            let weeks: Vec<String> = transaction
                .prepare("DELETE FROM sessions WHERE session_id = ?1 RETURNING week")?
                .query_map([session_id.as_str()], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            for week in &weeks {
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
            if !weeks.is_empty() {
                forget_wal(connection)?;
            }
            Ok(weeks.len())
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
                let deleted_in_week = transaction.execute(
                    "DELETE FROM sessions WHERE week = ?1 AND expires_at <= ?2",
                    params![week, now],
                )?;
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

/// A batch of a few thousand rows takes milliseconds. When every CPU is busy, a request
/// thread preempted by the writer would wait for all of it, even while another CPU goes idle
/// (the scheduler keeps a thread that just ran where it was): seen with `perf sched` under a
/// ping load, where 10–15% of the CPU time went idle. Giving the CPU up every so many rows
/// (about 0.15 ms of work) lets such a thread run; the idle share fell to 6–8%.
const ROWS_BETWEEN_YIELDS: usize = 64;

fn write_rows(
    connection: &mut Connection,
    arrivals: &mut Arrivals,
    batch: &[SessionWrite],
    expires_at: i64,
) -> Result<(), rusqlite::Error> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        // A new session is a plain insert and a repeat updates its own row, matched by
        // session id too: were the map ever wrong, the batch fails (and the maps are reloaded
        // for the retry) rather than one session's record landing in another's row.
        let mut insert = transaction.prepare_cached(
            "INSERT INTO sessions (week, arrival, session_id, record, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut stored = transaction.prepare_cached(
            "SELECT record FROM sessions WHERE week = ?1 AND arrival = ?2 AND session_id = ?3",
        )?;
        let mut overwrite = transaction.prepare_cached(
            "UPDATE sessions SET record = ?4, expires_at = ?5
             WHERE week = ?1 AND arrival = ?2 AND session_id = ?3",
        )?;
        let mut note_week = transaction.prepare_cached(
            "INSERT INTO weeks (week, earliest_expiry, sessions, generation) VALUES (?1, ?2, ?3, 1)
             ON CONFLICT (week) DO UPDATE SET
                 earliest_expiry = min(coalesce(earliest_expiry, ?2), ?2),
                 sessions = sessions + ?3,
                 generation = generation + 1
             RETURNING generation",
        )?;
        // A batch is almost always one week; the file is checked once per run of one.
        for run in batch.chunk_by(|a, b| a.week == b.week) {
            let Some(first) = run.first() else { continue };
            let week_text = first.week.to_string();
            let week = arrivals.week(&transaction, first.week)?;
            let mut new_rows = 0;
            for (index, write) in run.iter().enumerate() {
                if index % ROWS_BETWEEN_YIELDS == ROWS_BETWEEN_YIELDS - 1 {
                    std::thread::yield_now();
                }
                let session_id = write.session_id.as_str();
                let (statement, arrival, record) = match week.place(session_id) {
                    Row::New(arrival) => {
                        new_rows += 1;
                        (&mut insert, arrival, write.record_json.clone())
                    }
                    Row::Existing(arrival) => {
                        // A repeat keeps the first ping's day and writes only what changed.
                        let before: String = stored
                            .query_row(params![week_text, arrival, session_id], |row| row.get(0))?;
                        match record_to_write(Some(&before), &write.record_json) {
                            Some(after) => (&mut overwrite, arrival, after),
                            None => continue,
                        }
                    }
                };
                let changed = statement
                    .execute(params![week_text, arrival, session_id, record, expires_at])?;
                if changed != 1 {
                    return Err(rusqlite::Error::StatementChangedRows(changed));
                }
            }
            week.generation =
                note_week.query_row(params![week_text, expires_at, new_rows], |row| row.get(0))?;
        }
    }
    transaction.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_file(name: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("rollback-sqlite-{name}-{}.db", std::process::id()));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        path
    }

    fn write(week: &str, id: &str) -> SessionWrite {
        SessionWrite {
            week: IsoWeek::parse(week).unwrap(),
            session_id: SessionId::parse(id).unwrap(),
            record_json: format!(r#"{{"id":"{id}"}}"#),
        }
    }

    async fn write_all(store: &SqliteStore, writes: &[(&str, &str)], ttl_seconds: u64) {
        let batch: Arc<[SessionWrite]> = writes.iter().map(|(week, id)| write(week, id)).collect();
        store.write_batch(batch, ttl_seconds).await.unwrap();
    }

    fn record(daemon_version: &str, first_seen_at: &str) -> String {
        format!(
            r#"{{"protocol_version":"1.0.0","daemon_version":"{daemon_version}","platform":"linux","node_version":"v20.11.1","primary_framework":"react","first_seen_at":"{first_seen_at}"}}"#
        )
    }

    #[tokio::test]
    async fn a_repeat_keeps_its_first_day_and_an_unchanged_one_writes_nothing() {
        let path = scratch_file("repeats");
        let store = SqliteStore::open(&path).unwrap();
        let stored = || -> (String, i64) {
            Connection::open(&path)
                .unwrap()
                .query_row("SELECT record, expires_at FROM sessions", [], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .unwrap()
        };
        let ping = |daemon_version: &str, day: &str| SessionWrite {
            record_json: record(daemon_version, day),
            ..write("2026-W48", "session-a")
        };
        let first = ping("1.0.0", "2026-11-23T00:00:00Z");
        store
            .write_batch_expiring(Arc::new([first]), 4_000_000_000)
            .await
            .unwrap();
        // The same record a day later: nothing is written, not even the later expiry.
        let same = ping("1.0.0", "2026-11-24T00:00:00Z");
        store
            .write_batch_expiring(Arc::new([same]), 4_000_086_400)
            .await
            .unwrap();
        assert_eq!(
            stored(),
            (record("1.0.0", "2026-11-23T00:00:00Z"), 4_000_000_000)
        );
        // An upgrade is written, with the first ping's day.
        let upgraded = ping("1.1.0", "2026-11-24T00:00:00Z");
        store
            .write_batch_expiring(Arc::new([upgraded]), 4_000_086_400)
            .await
            .unwrap();
        assert_eq!(
            stored(),
            (record("1.1.0", "2026-11-23T00:00:00Z"), 4_000_086_400)
        );
        assert_count_is_exact(&store, &path, "2026-W48").await;
    }

    /// Every row of the file as (week, session id, record), sorted, read with plain SQL.
    fn rows(path: &Path) -> Vec<(String, String, String)> {
        let connection = Connection::open(path).unwrap();
        let mut rows: Vec<_> = connection
            .prepare("SELECT week, session_id, record FROM sessions")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows.sort();
        rows
    }

    /// The readout (from the weeks table while nothing has expired) against a plain count.
    async fn assert_count_is_exact(store: &SqliteStore, path: &Path, week: &str) {
        let counted: i64 = Connection::open(path)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM sessions WHERE week = ?1 AND expires_at > ?2",
                params![week, unix_now()],
                |row| row.get(0),
            )
            .unwrap();
        let read = store
            .count_week(IsoWeek::parse(week).unwrap())
            .await
            .unwrap();
        assert_eq!(read, u64::try_from(counted).unwrap(), "readout of {week}");
    }

    fn session_ids(path: &Path) -> Vec<String> {
        rows(path).into_iter().map(|(_, id, _)| id).collect()
    }

    #[tokio::test]
    async fn expired_records_are_not_counted_and_the_purge_deletes_them() {
        let path = scratch_file("purge");
        let store = SqliteStore::open(&path).unwrap();
        let week = IsoWeek::parse("2026-W48").unwrap();
        let w48 = "2026-W48";
        write_all(&store, &[(w48, "live-session"), (w48, "old-session")], 3600).await;
        write_all(&store, &[(w48, "live-session")], 3600).await;
        assert_eq!(
            store.count_week(week).await.unwrap(),
            2,
            "a repeat overwrites"
        );
        assert_eq!(
            store.purge_expired().await.unwrap(),
            0,
            "nothing has expired"
        );

        write_all(&store, &[(w48, "old-session")], 0).await; // expires now
        assert_eq!(
            store.count_week(week).await.unwrap(),
            1,
            "expired, not yet purged"
        );
        assert_eq!(store.purge_expired().await.unwrap(), 1);
        assert_eq!(rows(&path).len(), 1);
        assert_eq!(
            store.purge_expired().await.unwrap(),
            0,
            "the week's earliest expiry moved on"
        );

        // A purged session that pings again is stored again, once.
        write_all(&store, &[(w48, "old-session"), (w48, "old-session")], 3600).await;
        assert_eq!(store.count_week(week).await.unwrap(), 2);
        assert_eq!(rows(&path).len(), 2);
        assert_count_is_exact(&store, &path, w48).await;
    }

    #[tokio::test]
    async fn one_row_per_week_and_session_across_batches_weeks_and_processes() {
        let path = scratch_file("unique");
        let server = SqliteStore::open(&path).unwrap();
        let (w46, w47, w48) = ("2026-W46", "2026-W47", "2026-W48");
        write_all(
            &server,
            &[(w48, "session-a"), (w48, "session-b"), (w48, "session-a")],
            60,
        )
        .await;
        // Another process (as `import-kv` is) writes the same file: the server's map is stale.
        let importer = SqliteStore::open(&path).unwrap();
        write_all(
            &importer,
            &[(w48, "session-b"), (w48, "session-c"), (w47, "session-a")],
            60,
        )
        .await;
        // Three weeks in one batch, more than the maps kept in memory, weeks interleaved.
        write_all(
            &server,
            &[
                (w48, "session-x"),
                (w48, "session-c"),
                (w46, "session-a"),
                (w47, "session-a"),
                (w48, "session-d"),
                (w46, "session-a"),
                (w48, "session-a"),
            ],
            60,
        )
        .await;
        write_all(&importer, &[(w48, "session-d"), (w46, "session-e")], 60).await;

        let stored: Vec<(String, String)> = rows(&path)
            .into_iter()
            .map(|(week, id, _)| (week, id))
            .collect();
        let expected = [
            (w46, "session-a"),
            (w46, "session-e"),
            (w47, "session-a"),
            (w48, "session-a"),
            (w48, "session-b"),
            (w48, "session-c"),
            (w48, "session-d"),
            (w48, "session-x"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(w, id)| ((*w).to_owned(), (*id).to_owned()))
            .collect();
        assert_eq!(stored, expected);
        let w48 = IsoWeek::parse(w48).unwrap();
        assert_eq!(server.count_week(w48).await.unwrap(), 5);
        assert_eq!(importer.count_week(w48).await.unwrap(), 5);
        for week in ["2026-W46", "2026-W47", "2026-W48"] {
            assert_count_is_exact(&server, &path, week).await;
        }
    }

    #[tokio::test]
    async fn a_purge_then_another_writer_does_not_leave_a_stale_map() {
        let path = scratch_file("purge-race");
        let server = SqliteStore::open(&path).unwrap();
        let w48 = "2026-W48";
        write_all(&server, &[(w48, "session-a")], 3600).await;
        write_all(&server, &[(w48, "session-y")], 0).await; // expires now
        assert_eq!(server.purge_expired().await.unwrap(), 1);
        // The importer is handed the number the purge freed, as many rows as it took.
        let importer = SqliteStore::open(&path).unwrap();
        write_all(&importer, &[(w48, "session-z")], 3600).await;
        write_all(&server, &[(w48, "session-y")], 3600).await;
        assert_eq!(session_ids(&path), ["session-a", "session-y", "session-z"]);
        assert_count_is_exact(&server, &path, w48).await;
    }

    #[tokio::test]
    async fn a_map_out_of_step_with_the_file_fails_the_batch_instead_of_mixing_sessions() {
        let path = scratch_file("out-of-step");
        let server = SqliteStore::open(&path).unwrap();
        let w48 = "2026-W48";
        write_all(&server, &[(w48, "session-a")], 60).await;
        // Hand edits that bypass the generation: first arrival 0 holds another session, then
        // the next arrival number is taken.
        let hand_edits = [
            "UPDATE sessions SET session_id = 'session-q', record = '{\"id\":\"session-q\"}'",
            "INSERT INTO sessions VALUES ('2026-W48', 2, 'session-r', '{\"id\":\"session-r\"}', 4000000000)",
        ];
        for (hand_edit, next_write) in hand_edits.into_iter().zip(["session-a", "session-b"]) {
            Connection::open(&path)
                .unwrap()
                .execute_batch(hand_edit)
                .unwrap();
            let batch: Arc<[SessionWrite]> = Arc::new([write(w48, next_write)]);
            let refused = server.write_batch(Arc::clone(&batch), 60).await;
            assert!(refused.is_err(), "{next_write} written against a stale map");
            // The retry reads the week again from the file and succeeds.
            server.write_batch(batch, 60).await.unwrap();
        }
        let mut expected = ["session-q", "session-a", "session-r", "session-b"]
            .map(|id| (w48.to_owned(), id.to_owned(), format!(r#"{{"id":"{id}"}}"#)))
            .to_vec();
        expected.sort();
        assert_eq!(
            rows(&path),
            expected,
            "each record in its own session's row"
        );
    }

    #[tokio::test]
    async fn a_failed_batch_leaves_no_arrival_numbers_behind() {
        let path = scratch_file("failed");
        let server = SqliteStore::open(&path).unwrap();
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON sessions
                 WHEN NEW.session_id = 'poison-pill' BEGIN SELECT RAISE(ABORT, 'injected'); END;",
            )
            .unwrap();
        let w48 = "2026-W48";
        let batch = Arc::new([write(w48, "session-x"), write(w48, "poison-pill")]);
        assert!(server.write_batch(batch, 60).await.is_err());
        // Another process then writes as many rows as the failed batch had numbered.
        let importer = SqliteStore::open(&path).unwrap();
        write_all(&importer, &[(w48, "session-y"), (w48, "session-z")], 60).await;
        write_all(&server, &[(w48, "session-x")], 60).await;
        assert_eq!(session_ids(&path), ["session-x", "session-y", "session-z"]);
        assert_count_is_exact(&server, &path, w48).await;
    }

    #[tokio::test]
    async fn a_session_is_deleted_from_every_week_and_the_counts_follow() {
        let path = scratch_file("delete");
        let server = SqliteStore::open(&path).unwrap();
        let (w47, w48) = ("2026-W47", "2026-W48");
        write_all(
            &server,
            &[
                (w47, "session-a"),
                (w47, "session-b"),
                (w48, "session-a"),
                (w48, "session-c"),
            ],
            3600,
        )
        .await;
        // Another process (`rollback delete-session`) deletes while the server runs.
        let deleter = SqliteStore::open(&path).unwrap();
        let session_a = SessionId::parse("session-a").unwrap();
        assert_eq!(deleter.delete_session(session_a.clone()).await.unwrap(), 2);
        assert_eq!(session_ids(&path), ["session-b", "session-c"]);
        // The server's map of W48 is stale: its next write must notice, not reuse a's row.
        write_all(&server, &[(w48, "session-a"), (w48, "session-d")], 3600).await;
        assert_eq!(
            session_ids(&path),
            ["session-b", "session-a", "session-c", "session-d"],
            "W47: b; W48: a again, c, d"
        );
        for week in [w47, w48] {
            assert_count_is_exact(&server, &path, week).await;
        }
        assert_eq!(
            server
                .count_week(IsoWeek::parse(w47).unwrap())
                .await
                .unwrap(),
            1
        );
        assert_eq!(deleter.delete_session(session_a.clone()).await.unwrap(), 1);
        assert_eq!(deleter.delete_session(session_a).await.unwrap(), 0);
        assert_count_is_exact(&server, &path, w48).await;
    }

    /// What is on disk: the file and its WAL, as anyone who can read them would see them.
    fn bytes_on_disk(path: &Path) -> Vec<u8> {
        let mut bytes = std::fs::read(path).unwrap();
        bytes.extend(std::fs::read(format!("{}-wal", path.display())).unwrap_or_default());
        bytes
    }

    fn holds(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
    }

    #[tokio::test]
    async fn purged_and_deleted_records_leave_no_bytes_in_the_file_or_its_wal() {
        let path = scratch_file("no-remains");
        let store = SqliteStore::open(&path).unwrap();
        let w48 = "2026-W48";
        // Enough rows to fill several pages, so deletes free whole pages as well as cells.
        let kept: Vec<String> = (0..300).map(|n| format!("kept-session-{n:04}")).collect();
        let kept: Vec<(&str, &str)> = kept.iter().map(|id| (w48, id.as_str())).collect();
        write_all(&store, &kept, 3600).await;
        let expiring: Vec<String> = (0..300).map(|n| format!("expiring-{n:04}")).collect();
        let expiring: Vec<(&str, &str)> = expiring.iter().map(|id| (w48, id.as_str())).collect();
        write_all(&store, &expiring, 0).await;
        write_all(&store, &[(w48, "deleted-on-request")], 3600).await;
        assert!(holds(&bytes_on_disk(&path), "expiring-0150"));
        assert!(holds(&bytes_on_disk(&path), "deleted-on-request"));

        assert_eq!(store.purge_expired().await.unwrap(), 300);
        let session = SessionId::parse("deleted-on-request").unwrap();
        assert_eq!(store.delete_session(session).await.unwrap(), 1);

        let on_disk = bytes_on_disk(&path);
        assert!(
            holds(&on_disk, "kept-session-0150"),
            "the scan sees live rows"
        );
        for gone in [
            "expiring-0000",
            "expiring-0150",
            "expiring-0299",
            "deleted-on-request",
        ] {
            assert!(!holds(&on_disk, gone), "{gone} is still on disk");
        }
    }

    #[tokio::test]
    async fn a_file_with_times_to_the_second_has_them_cut_to_the_day_once() {
        let path = scratch_file("to-the-day");
        drop(SqliteStore::open(&path).unwrap());
        let record = |seen: &str| {
            format!(r#"{{"protocol_version":"1.0.0","platform":"linux","first_seen_at":"{seen}"}}"#)
        };
        let connection = Connection::open(&path).unwrap();
        connection
            .execute_batch(&format!(
                "PRAGMA user_version = 0;
                 INSERT INTO sessions VALUES ('2026-W48', 0, 'session-a', '{}', 1802794691);
                 INSERT INTO weeks VALUES ('2026-W48', 1802794691, 1, 1);",
                record("2026-11-24T15:04:05Z")
            ))
            .unwrap();
        drop(connection);

        let store = SqliteStore::open(&path).unwrap();
        let day_record = record("2026-11-24T00:00:00Z");
        let row = || -> (String, i64, i64) {
            Connection::open(&path)
                .unwrap()
                .query_row(
                    "SELECT record, expires_at, (SELECT earliest_expiry FROM weeks) FROM sessions",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .unwrap()
        };
        assert_eq!(row(), (day_record.clone(), 1802736000, 1802736000));
        assert!(
            !holds(&bytes_on_disk(&path), "15:04:05"),
            "the old time is gone"
        );
        // Once: a later row with an expiry to the second (as a TTL under a day gives, when it
        // does not reach the next day's start) is left alone.
        let later = Arc::new([write("2026-W48", "session-b")]);
        store
            .write_batch_expiring(later, 4_000_000_123)
            .await
            .unwrap();
        drop(store);
        drop(SqliteStore::open(&path).unwrap());
        let exact: i64 = Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT expires_at FROM sessions WHERE session_id = 'session-b'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(exact, 4_000_000_123);
        assert_eq!(row().0, day_record);
    }

    #[tokio::test]
    async fn a_file_keyed_by_session_id_is_renumbered_once_and_keeps_its_rows() {
        let path = scratch_file("migrate");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE sessions (
                     week TEXT NOT NULL, session_id TEXT NOT NULL, record TEXT NOT NULL,
                     expires_at INTEGER NOT NULL, PRIMARY KEY (week, session_id)
                 ) WITHOUT ROWID;
                 CREATE INDEX sessions_expiry ON sessions (expires_at);
                 INSERT INTO sessions VALUES
                     ('2026-W47', 'session-z', '{\"id\":\"session-z\"}', 1),
                     ('2026-W48', 'session-b', '{\"id\":\"session-b\"}', 4000000000),
                     ('2026-W48', 'session-a', '{\"id\":\"session-a\"}', 4000000000);",
            )
            .unwrap();
        let store = SqliteStore::open(&path).unwrap();
        let w48 = IsoWeek::parse("2026-W48").unwrap();
        assert_eq!(store.count_week(w48).await.unwrap(), 2);
        write_all(
            &store,
            &[("2026-W48", "session-a"), ("2026-W48", "session-c")],
            60,
        )
        .await;
        assert_eq!(
            store.count_week(w48).await.unwrap(),
            3,
            "a repeat is not a new row"
        );
        assert_eq!(
            store.purge_expired().await.unwrap(),
            1,
            "W47's row expired long ago"
        );
        drop(store);
        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(reopened.count_week(w48).await.unwrap(), 3);
        assert_eq!(rows(&path).len(), 3);
        assert_count_is_exact(&reopened, &path, "2026-W48").await;
    }
}
