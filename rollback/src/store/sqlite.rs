//! SQLite: a table keyed by (week, session id) with an expiry column. The readout counts one
//! week's range of the primary key; a periodic purge deletes what has expired.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params};
use telemetry_core::{IsoWeek, SessionWrite};

use super::StoreError;
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
    connection: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    PRAGMA busy_timeout = 5000;
    CREATE TABLE IF NOT EXISTS sessions (
        week TEXT NOT NULL,
        session_id TEXT NOT NULL,
        record TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (week, session_id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_at);
";

impl SqliteStore {
    /// Opens (creating if needed) the store; any failure here stops the server at start.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = Connection::open(path)?;
        connection.execute_batch(SCHEMA)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    async fn with_connection<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            let mut connection = connection
                .lock()
                .map_err(|_| StoreError("store lock poisoned".into()))?;
            work(&mut connection).map_err(StoreError::from)
        })
        .await
        .map_err(|e| StoreError(format!("store task failed: {e}")))?
    }

    /// Writes a batch in one transaction; each record expires `ttl_seconds` from now.
    pub async fn write_batch(
        &self,
        batch: Vec<SessionWrite>,
        ttl_seconds: u64,
    ) -> Result<(), StoreError> {
        let expires_at = unix_now().saturating_add(i64::try_from(ttl_seconds).unwrap_or(i64::MAX));
        self.with_connection(move |connection| {
            let transaction = connection.transaction()?;
            {
                let mut upsert = transaction.prepare_cached(
                    "INSERT INTO sessions (week, session_id, record, expires_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (week, session_id)
                     DO UPDATE SET record = excluded.record, expires_at = excluded.expires_at",
                )?;
                for write in &batch {
                    upsert.execute(params![
                        write.week.to_string(),
                        write.session_id.as_str(),
                        write.record_json,
                        expires_at
                    ])?;
                }
            }
            transaction.commit()
        })
        .await
    }

    /// Counts a week's live sessions: a range of the primary key, not a scan of the table.
    pub async fn count_week(&self, week: IsoWeek) -> Result<u64, StoreError> {
        let now = unix_now();
        self.with_connection(move |connection| {
            connection
                .prepare_cached(
                    "SELECT count(*) FROM sessions WHERE week = ?1 AND expires_at > ?2",
                )?
                .query_row(params![week.to_string(), now], |row| row.get::<_, i64>(0))
        })
        .await
        .map(|count| u64::try_from(count).unwrap_or(0))
    }

    pub async fn records_of_week(
        &self,
        week: IsoWeek,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let now = unix_now();
        self.with_connection(move |connection| {
            connection
                .prepare(
                    "SELECT session_id, record FROM sessions WHERE week = ?1 AND expires_at > ?2",
                )?
                .query_map(params![week.to_string(), now], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?
                .collect()
        })
        .await
    }

    /// Deletes expired records; the readout already ignores them, this frees the space.
    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        let now = unix_now();
        self.with_connection(move |connection| {
            connection.execute("DELETE FROM sessions WHERE expires_at <= ?1", params![now])
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemetry_core::SessionId;

    #[tokio::test]
    async fn expired_records_are_not_counted_and_the_purge_deletes_them() {
        let path = std::env::temp_dir().join(format!("rollback-purge-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let store = SqliteStore::open(&path).unwrap();
        let week = IsoWeek::parse("2026-W48").unwrap();
        let write = |id: &str| SessionWrite {
            week,
            session_id: SessionId::parse(id).unwrap(),
            record_json: "{}".into(),
        };
        store
            .write_batch(vec![write("live-session"), write("old-session")], 3600)
            .await
            .unwrap();
        store
            .write_batch(vec![write("live-session")], 3600)
            .await
            .unwrap();
        assert_eq!(
            store.count_week(week).await.unwrap(),
            2,
            "a repeat overwrites"
        );
        store
            .with_connection(|c| {
                c.execute(
                    "UPDATE sessions SET expires_at = 1 WHERE session_id = 'old-session'",
                    [],
                )
            })
            .await
            .unwrap();
        assert_eq!(
            store.count_week(week).await.unwrap(),
            1,
            "expired but not yet purged"
        );
        assert_eq!(store.purge_expired().await.unwrap(), 1);
        assert_eq!(store.records_of_week(week).await.unwrap().len(), 1);
    }
}
