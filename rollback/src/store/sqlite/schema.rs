//! The file's tables and pragmas, and the migrations that bring a file written by an older
//! version up to them, once, in the transaction that opens it.

use std::path::Path;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use telemetry_core::readout::TallyMoves;

use super::{forget_wal, tallies};
use crate::store::StoreError;

/// `secure_delete` overwrites a deleted row's bytes (an expired record, a session deleted on
/// request) instead of leaving them in a free page for anyone who opens the file; after such
/// deletes the WAL, which still holds the pages as they were, is emptied (see [`super::forget_wal`]).
const PRAGMAS: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    PRAGMA busy_timeout = 5000;
    PRAGMA secure_delete = ON;
";
/// Rows are keyed by (week, arrival), not (week, session id). Session ids are random, so a
/// B-tree keyed by them takes each new session at a random page: once a week outgrows the
/// page cache that costs 10–50 µs a row here, against about 2 µs for an append (measured; see
/// BENCHMARKS.md). Uniqueness of (week, session) is kept by [`super::arrivals`].
/// `weeks` holds each week's earliest expiry, so the purge visits only weeks that hold
/// expired rows (an index on `expires_at` would cost every insert a second B-tree: measured,
/// the writer's CPU per row went from 2.8 to 4.6 µs with it), its number of rows, so the
/// readout does not count them one by one while none has expired, and a generation that
/// every transaction changing the week's rows increments. `tallies` holds each week's sessions
/// counted along every dimension (see [`super::tallies`]).
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
    CREATE TABLE IF NOT EXISTS tallies (
        week TEXT NOT NULL,
        dimension TEXT NOT NULL,
        value TEXT NOT NULL,
        sessions INTEGER NOT NULL,
        PRIMARY KEY (week, dimension, value)
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

/// The file's `user_version` from which `tallies` holds every week's breakdowns.
const TALLIED: i64 = 2;

/// Opens the file, creating or migrating it as needed; any failure here stops the server.
pub(super) fn open(path: &Path) -> Result<Connection, StoreError> {
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
    }
    if version < TALLIED {
        tally_every_week(&transaction)?;
        transaction.pragma_update(None, "user_version", TALLIED)?;
    }
    transaction.commit()?;
    forget_wal(&connection)?;
    Ok(connection)
}

/// Counts the records already in the file into `tallies` (a file written before it had
/// them), a week at a time: rows come in primary-key order, so each week's rows are together.
fn tally_every_week(transaction: &Transaction<'_>) -> Result<(), StoreError> {
    transaction.execute("DELETE FROM tallies", [])?;
    let mut rows = transaction.prepare("SELECT week, record FROM sessions")?;
    let mut rows = rows.query([])?;
    let mut week = String::new();
    let mut moves = TallyMoves::default();
    while let Some(row) = rows.next()? {
        let row_week: String = row.get(0)?;
        if row_week != week {
            tallies::apply(transaction, &week, &moves)?;
            moves = TallyMoves::default();
            week = row_week;
        }
        let record = tallies::parse_record(&week, &row.get::<_, String>(1)?)?;
        moves.replace(None, Some(&record));
    }
    tallies::apply(transaction, &week, &moves)?;
    Ok(())
}
