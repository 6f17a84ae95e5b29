//! The rollback's store, with the same semantics as the Worker's KV: one record per (week,
//! session), a repeat overwrites, records expire, and the readout counts a week without
//! scanning other weeks. SQLite for one instance; Redis for several behind one hostname.

mod redis;
mod sqlite;

use std::sync::Arc;

use telemetry_core::readout::Tally;
use telemetry_core::{Dimension, IsoWeek, SessionId, SessionWrite};

pub use self::redis::RedisStore;
pub use self::sqlite::SqliteStore;

/// Where records are kept, from `--store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite://PATH` (relative, or absolute as `sqlite:///var/lib/telemetry.db`).
    Sqlite(std::path::PathBuf),
    /// `redis://HOST:PORT[/DB]` or `rediss://…` (TLS), as given.
    Redis(String),
}

impl StoreUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite:// needs a file path, e.g. sqlite://telemetry.db".into());
            }
            return Ok(Self::Sqlite(path.into()));
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            return Ok(Self::Redis(url.to_owned()));
        }
        Err(
            "the store must be sqlite://PATH, redis://HOST:PORT[/DB] or rediss://HOST:PORT[/DB]"
                .into(),
        )
    }
}

/// An error from the store, as text for a `store_failure` event. It never holds a record.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A record that has not expired, as `export-kv` hands it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRecord {
    pub session_id: String,
    pub record_json: String,
    /// When it expires, in seconds since the epoch: the store's own expiry, so that a record
    /// moved to another store keeps the lifetime it has left and no more.
    pub expires_at: i64,
}

#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Redis(RedisStore),
}

impl Store {
    /// Opens the store and checks that it answers; any failure stops the server at start.
    pub async fn open(url: &StoreUrl) -> Result<Self, StoreError> {
        Ok(match url {
            StoreUrl::Sqlite(path) => Self::Sqlite(SqliteStore::open(path)?),
            StoreUrl::Redis(url) => Self::Redis(RedisStore::connect(url).await?),
        })
    }

    /// Writes a batch atomically (a transaction, a MULTI pipeline): all or nothing, so the
    /// writer can retry the whole batch. Shared, so that a retry does not copy every record.
    pub async fn write_batch(
        &self,
        batch: Arc<[SessionWrite]>,
        ttl_seconds: u64,
    ) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(store) => store.write_batch(batch, ttl_seconds).await,
            Self::Redis(store) => store.write_batch(&batch, ttl_seconds).await,
        }
    }

    /// Writes a batch whose records all expire at `expires_at` (seconds since the epoch), for
    /// `import-kv`. On Redis a week's hash keeps the expiry it has: it never gets later.
    pub async fn write_batch_expiring(
        &self,
        batch: Arc<[SessionWrite]>,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(store) => store.write_batch_expiring(batch, expires_at).await,
            Self::Redis(store) => store.write_batch_expiring(&batch, expires_at).await,
        }
    }

    pub async fn count_week(&self, week: IsoWeek) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(store) => store.count_week(week).await,
            Self::Redis(store) => store.count_week(week).await,
        }
    }

    /// The week's live sessions counted by their value along `dimension`, from the week's
    /// tallies: a few rows, however many sessions the week holds.
    pub async fn tally_week(
        &self,
        week: IsoWeek,
        dimension: Dimension,
    ) -> Result<Tally, StoreError> {
        match self {
            Self::Sqlite(store) => store.tally_week(week, dimension).await,
            Self::Redis(store) => store.tally_week(week, dimension).await,
        }
    }

    /// The week's live records, for `export-kv`.
    pub async fn records_of_week(&self, week: IsoWeek) -> Result<Vec<LiveRecord>, StoreError> {
        match self {
            Self::Sqlite(store) => store.records_of_week(week).await,
            Self::Redis(store) => store.records_of_week(week).await,
        }
    }

    /// Deletes a session's records in every week (a deletion request); returns how many
    /// there were. Safe while the server runs.
    pub async fn delete_session(&self, session_id: SessionId) -> Result<usize, StoreError> {
        match self {
            Self::Sqlite(store) => store.delete_session(session_id).await,
            Self::Redis(store) => store.delete_session(&session_id).await,
        }
    }

    /// Frees expired records where the store does not do it itself (Redis does).
    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        match self {
            Self::Sqlite(store) => store.purge_expired().await,
            Self::Redis(_) => Ok(0),
        }
    }
}
