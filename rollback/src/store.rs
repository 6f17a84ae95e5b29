//! The rollback's store, keeping the core's model of a week as the Worker does: one record
//! per (week, session), the week's tallies, each record's expiry; a readout reads tallies
//! only. SQLite for one instance; Redis for several behind one hostname. Inconsistent data is
//! repaired here, for every operation, and logged once per repair.

mod redis;
mod sqlite;

use std::sync::Arc;

use telemetry_core::event::{StoreInconsistentEvent, StoreOperation, to_line};
use telemetry_core::stored_week::{self, Inconsistent};
use telemetry_core::summary::Retention;
use telemetry_core::{Dimension, IsoWeek, SessionId, SessionWrite, Tally};

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

/// What went wrong in a store, by what the caller does about it.
#[derive(Debug)]
pub enum StoreError {
    /// The store did not answer, or failed: retried with backoff. The text never holds a
    /// record, and is logged in a `store_failure` event.
    Unavailable(String),
    /// The week's stored data breaks the core's model of a week: it is repaired (the week's
    /// tallies rebuilt from its records) and the operation applied again, never retried as
    /// it is. Nothing was changed by the operation that found it.
    Inconsistent { week: IsoWeek, found: Inconsistent },
}

impl StoreError {
    /// The text for a `store_failure` event.
    pub fn text(&self) -> String {
        match self {
            Self::Unavailable(text) => text.clone(),
            Self::Inconsistent { week, found } => {
                format!(
                    "{week}: still inconsistent ({}) after repairs",
                    found.name()
                )
            }
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

/// Repairs one operation may make before it gives up; each is a rebuild of one week, so more
/// than this means something keeps damaging the store while it is repaired.
const MAX_REPAIRS: usize = 3;

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
    /// `retention` says how long it keeps week summaries ([`telemetry_core::summary`]).
    pub async fn open(url: &StoreUrl, retention: Retention) -> Result<Self, StoreError> {
        Ok(match url {
            StoreUrl::Sqlite(path) => Self::Sqlite(SqliteStore::open(path, retention)?),
            StoreUrl::Redis(url) => Self::Redis(RedisStore::connect(url, retention).await?),
        })
    }

    /// Writes a batch atomically (a transaction, a script per week): all or nothing, so the
    /// writer can retry the whole batch; every record it keeps expires at `expires_at`
    /// (seconds since the epoch: the caller's clock, or a record's own expiry for
    /// `import-kv`). Shared, so that a retry does not copy every record.
    pub async fn write_batch(
        &self,
        batch: Arc<[SessionWrite]>,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.repairing(StoreOperation::Write, || async {
            match self {
                Self::Sqlite(store) => store.write_batch(Arc::clone(&batch), expires_at).await,
                Self::Redis(store) => store.write_batch(&batch, expires_at).await,
            }
        })
        .await
    }

    /// The week's sessions counted by their value along `dimension`, from the week's tallies
    /// and its summary: a few rows, however many sessions the week holds.
    pub async fn tally_week(
        &self,
        week: IsoWeek,
        dimension: Dimension,
    ) -> Result<Tally, StoreError> {
        self.repairing(StoreOperation::Read, || async {
            match self {
                Self::Sqlite(store) => store.tally_week(week, dimension).await,
                Self::Redis(store) => store.tally_week(week, dimension).await,
            }
        })
        .await
    }

    /// The week's count, as every readout counts it (the core's `stored_week::count`).
    pub async fn count_week(&self, week: IsoWeek) -> Result<u64, StoreError> {
        let counted_by = self.tally_week(week, stored_week::COUNTED_BY).await?;
        Ok(stored_week::count(&counted_by))
    }

    /// The week's records that have not expired at `now`, for `export-kv`.
    pub async fn records_of_week(
        &self,
        week: IsoWeek,
        now: i64,
    ) -> Result<Vec<LiveRecord>, StoreError> {
        match self {
            Self::Sqlite(store) => store.records_of_week(week, now).await,
            Self::Redis(store) => store.records_of_week(week).await,
        }
    }

    /// One page of the week's records that have not expired at `now`, from `cursor` (`None`:
    /// the first page), and the next page's cursor (`None`: that was the last).
    pub async fn records_page(
        &self,
        week: IsoWeek,
        cursor: Option<String>,
        now: i64,
    ) -> Result<(Vec<LiveRecord>, Option<String>), StoreError> {
        match self {
            Self::Sqlite(store) => store.records_page(week, cursor, now).await,
            Self::Redis(store) => store.records_page(week, cursor).await,
        }
    }

    /// Asks the store for the least it can answer (SQLite: a query, Redis: `PING`), for the
    /// readiness check.
    pub async fn check(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(store) => store.check().await,
            Self::Redis(store) => store.check().await,
        }
    }

    /// The weeks the store holds records of, in order, each with its count.
    pub async fn weeks(&self) -> Result<Vec<(IsoWeek, u64)>, StoreError> {
        let weeks = match self {
            Self::Sqlite(store) => store.weeks_held().await?,
            Self::Redis(store) => store.weeks_held().await?,
        };
        let mut counted = Vec::with_capacity(weeks.len());
        for week in weeks {
            counted.push((week, self.count_week(week).await?));
        }
        Ok(counted)
    }

    /// Deletes a session's records in every week (a deletion request, at `now`); returns how
    /// many there were. Each week's count loses the session until the week's summary is made,
    /// and keeps it afterwards. Safe while the server runs.
    pub async fn delete_session(
        &self,
        session_id: SessionId,
        now: i64,
    ) -> Result<usize, StoreError> {
        let until = telemetry_core::expires_at(now, self.retention().session_ttl_seconds);
        self.delete_session_journaled_until(session_id, now, until)
            .await
    }

    /// [`Store::delete_session`], its journal entry kept until `journal_until` (a deletion
    /// the Worker journaled keeps the end the Worker gave it, never a later one).
    pub async fn delete_session_journaled_until(
        &self,
        session_id: SessionId,
        now: i64,
        journal_until: i64,
    ) -> Result<usize, StoreError> {
        self.repairing(StoreOperation::Delete, || async {
            match self {
                Self::Sqlite(store) => {
                    (store.delete_session(session_id.clone(), now, journal_until)).await
                }
                Self::Redis(store) => store.delete_session(&session_id, now, journal_until).await,
            }
        })
        .await
    }

    fn retention(&self) -> Retention {
        match self {
            Self::Sqlite(store) => store.retention(),
            Self::Redis(store) => store.retention(),
        }
    }

    /// The deletion journal at `now`: every session deleted here (by `delete-session`, the
    /// admin's `DELETE` or a relay's erasure) within the TTL, whether or not this store held
    /// a record of it, so that the deletion can be made on the other target and no import
    /// brings a record of it back. Holds the ids only, each for the TTL.
    pub async fn journal(&self, now: i64) -> Result<Vec<String>, StoreError> {
        match self {
            Self::Sqlite(store) => store.journal(now).await,
            Self::Redis(store) => store.journal(now).await,
        }
    }

    /// Takes `ids` out of the deletion journal, once their deletion reached the other
    /// target; returns how many it held.
    pub async fn forget_journaled(&self, ids: Vec<SessionId>) -> Result<usize, StoreError> {
        match self {
            Self::Sqlite(store) => store.forget_journaled(ids).await,
            Self::Redis(store) => store.forget_journaled(&ids).await,
        }
    }

    /// Brings every week's summary to the configured retention, where the store set an
    /// expiry when it wrote it (Redis); SQLite's expiry task reads the retention each time.
    /// Run by the server at its start, never by a maintenance command, which may not see
    /// the service's environment.
    pub async fn apply_retention(&self, now: i64) -> Result<usize, StoreError> {
        match self {
            Self::Sqlite(_) => Ok(0),
            Self::Redis(store) => store.apply_retention(now).await,
        }
    }

    /// When the next record expires, where the store deletes records itself (SQLite);
    /// `None` where the store expires them on its own (Redis) or holds none.
    pub async fn next_expiry(&self) -> Result<Option<i64>, StoreError> {
        match self {
            Self::Sqlite(store) => store.next_expiry().await,
            // Redis expires records itself; the deletion journal's entries are swept here.
            Self::Redis(store) => store.next_journal_expiry().await,
        }
    }

    /// Deletes the records that have expired at `now` where the store does not do it itself.
    pub async fn expire(&self, now: i64) -> Result<usize, StoreError> {
        self.repairing(StoreOperation::Expire, || async {
            match self {
                Self::Sqlite(store) => store.expire(now).await,
                Self::Redis(store) => store.expire_journal(now).await.map(|_| 0),
            }
        })
        .await
    }

    /// Runs `attempt`; when it finds a week inconsistent, logs that once, repairs the week
    /// and runs it again (a bounded number of times), so that data never stops the store.
    async fn repairing<T, Attempt>(
        &self,
        operation: StoreOperation,
        attempt: impl Fn() -> Attempt,
    ) -> Result<T, StoreError>
    where
        Attempt: std::future::Future<Output = Result<T, StoreError>>,
    {
        for _ in 0..MAX_REPAIRS {
            match attempt().await {
                Err(StoreError::Inconsistent { week, found }) => {
                    let dropped = match self {
                        Self::Sqlite(store) => store.repair(week).await,
                        Self::Redis(store) => store.repair(week).await,
                    }?;
                    crate::log_line(to_line(&StoreInconsistentEvent::new(
                        crate::TARGET,
                        operation,
                        Some(week),
                        found,
                        dropped,
                    )));
                }
                done => return done,
            }
        }
        attempt().await
    }
}
