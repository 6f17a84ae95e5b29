//! The file's tables and pragmas, and the ladder of migrations that brings a file written
//! by an earlier release up to them, one numbered step at a time, in the transaction that
//! opens it. The number is the file's `user_version`.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::forget_wal;
use crate::store::StoreError;

/// `secure_delete` overwrites a deleted row's bytes (an expired record, a session deleted on
/// request) instead of leaving them in a free page for anyone who opens the file; after such
/// deletes the WAL, which still holds the pages as they were, is emptied (see
/// [`super::forget_wal`]). The page cache holds a large week's upper B-tree pages, so that a
/// new session (at a random place among the week's ids) reads one or two leaf pages.
const PRAGMAS: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    PRAGMA busy_timeout = 5000;
    PRAGMA secure_delete = ON;
    PRAGMA cache_size = -65536;
";

/// The schema this version writes, created whole in a new file. One row per (week, session),
/// keyed by both; `expires_at` is indexed so that the expiry task finds the next expiry and
/// the expired rows without a scan (the index is appended to: every write of a day gets the
/// same expiry). `tallies` holds each week's sessions counted along every dimension.
const TABLES: &str = "
    CREATE TABLE sessions (
        week TEXT NOT NULL,
        session_id TEXT NOT NULL,
        record TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (week, session_id)
    ) WITHOUT ROWID;
    CREATE INDEX sessions_by_expiry ON sessions (expires_at);
    CREATE TABLE tallies (
        week TEXT NOT NULL,
        dimension TEXT NOT NULL,
        value TEXT NOT NULL,
        sessions INTEGER NOT NULL,
        PRIMARY KEY (week, dimension, value)
    ) WITHOUT ROWID;
    CREATE TABLE summaries (
        week TEXT NOT NULL,
        dimension TEXT NOT NULL,
        value TEXT NOT NULL,
        sessions INTEGER NOT NULL,
        PRIMARY KEY (week, dimension, value)
    ) WITHOUT ROWID;
    CREATE TABLE deletions (
        session_id TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX deletions_by_expiry ON deletions (expires_at);
";

/// The first schema released: `user_version` 2, the number its files already carry (rows
/// keyed by week and arrival order, a `weeks` table of counts and expiries, `tallies`).
const FIRST_RELEASED: i64 = 2;

/// The ladder: step `i` takes a file from version `FIRST_RELEASED + i` to the next one.
const MIGRATIONS: [&str; 3] = [
    // 2 → 3: one row per (week, session) keyed by both, no arrival numbers and no `weeks`
    // table (a count is read from the tallies, the next expiry from the index).
    "
    CREATE TABLE sessions_by_week_and_session (
        week TEXT NOT NULL,
        session_id TEXT NOT NULL,
        record TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (week, session_id)
    ) WITHOUT ROWID;
    INSERT OR REPLACE INTO sessions_by_week_and_session (week, session_id, record, expires_at)
        SELECT week, session_id, record, expires_at FROM sessions ORDER BY week, arrival;
    DROP TABLE sessions;
    DROP TABLE weeks;
    ALTER TABLE sessions_by_week_and_session RENAME TO sessions;
    CREATE INDEX sessions_by_expiry ON sessions (expires_at);
    ",
    // 3 → 4: week summaries, which outlive the records.
    "
    CREATE TABLE summaries (
        week TEXT NOT NULL,
        dimension TEXT NOT NULL,
        value TEXT NOT NULL,
        sessions INTEGER NOT NULL,
        PRIMARY KEY (week, dimension, value)
    ) WITHOUT ROWID;
    ",
    // 4 → 5: the deletion journal.
    "
    CREATE TABLE deletions (
        session_id TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX deletions_by_expiry ON deletions (expires_at);
    ",
];

/// The version this build writes: the last step of the ladder.
pub(super) const LATEST: i64 = FIRST_RELEASED + MIGRATIONS.len() as i64;

/// Creates the file, if it does not exist, readable by its owner only (SQLite gives its WAL
/// and shared-memory files the same mode): the file holds session ids, whatever the umask.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(StoreError::Unavailable(format!(
            "{}: cannot create the file: {error}",
            path.display()
        ))),
    }
}

/// Opens the file, creating or migrating it as needed; any failure here stops the server.
/// A file of a version this build does not know (older than the first release, or newer
/// than this build) is refused rather than guessed at.
pub(super) fn open(path: &Path) -> Result<Connection, StoreError> {
    create_private(path)?;
    let mut connection = Connection::open(path)?;
    connection.execute_batch(PRAGMAS)?;
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let has_tables: bool = transaction.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'sessions'",
        [],
        |row| row.get(0),
    )?;
    let version: i64 = transaction.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if !has_tables {
        transaction.execute_batch(TABLES)?;
    } else if (FIRST_RELEASED..=LATEST).contains(&version) {
        let done = usize::try_from(version - FIRST_RELEASED).unwrap_or(0);
        for step in MIGRATIONS.iter().skip(done) {
            transaction.execute_batch(step)?;
        }
    } else {
        return Err(StoreError::Unavailable(format!(
            "{}: schema version {version} is not one this build reads ({FIRST_RELEASED} to {LATEST})",
            path.display()
        )));
    }
    transaction.pragma_update(None, "user_version", LATEST)?;
    transaction.commit()?;
    forget_wal(&connection)?;
    Ok(connection)
}
