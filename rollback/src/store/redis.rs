//! Redis: one hash per week, `sessions:<YYYY-Www>`, field = session id, value = record.
//! `HLEN` counts a week in constant time; a repeat ping overwrites its field.
//!
//! Redis 7.0 cannot expire single hash fields, so the week's hash expires as a whole, its
//! TTL after the week's first write (`EXPIRE … NX`): no record outlives the TTL, and the
//! week's later records go up to a week earlier than they would in KV.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use telemetry_core::{IsoWeek, SessionWrite};

use super::StoreError;

/// How long a command or a (re)connection may take before it counts as a failure.
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
}

impl From<redis::RedisError> for StoreError {
    fn from(error: redis::RedisError) -> Self {
        Self(error.to_string())
    }
}

fn week_key(week: IsoWeek) -> String {
    format!("sessions:{week}")
}

impl RedisStore {
    /// Connects and checks with `PING`. The connection reconnects by itself afterwards.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        // rustls needs a process-wide crypto provider for rediss://; a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let mut connection = client.get_connection_manager_with_config(config).await?;
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await?;
        Ok(Self { connection })
    }

    pub async fn write_batch(
        &self,
        batch: &[SessionWrite],
        ttl_seconds: u64,
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        // One HSET per week in the batch (a batch is almost always one week): a repeat within
        // the batch is a later field of the same command, and the later value wins.
        for run in batch.chunk_by(|a, b| a.week == b.week) {
            let Some(first) = run.first() else { continue };
            let key = week_key(first.week);
            let fields: Vec<(&str, &str)> = run
                .iter()
                .map(|write| (write.session_id.as_str(), write.record_json.as_str()))
                .collect();
            pipe.cmd("HSET").arg(&key).arg(&fields).ignore();
            pipe.cmd("EXPIRE")
                .arg(&key)
                .arg(ttl_seconds)
                .arg("NX")
                .ignore();
        }
        let mut connection = self.connection.clone();
        pipe.query_async::<()>(&mut connection).await?;
        Ok(())
    }

    pub async fn count_week(&self, week: IsoWeek) -> Result<u64, StoreError> {
        let mut connection = self.connection.clone();
        Ok(redis::cmd("HLEN")
            .arg(week_key(week))
            .query_async::<u64>(&mut connection)
            .await?)
    }

    pub async fn records_of_week(
        &self,
        week: IsoWeek,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut connection = self.connection.clone();
        Ok(redis::cmd("HGETALL")
            .arg(week_key(week))
            .query_async::<Vec<(String, String)>>(&mut connection)
            .await?)
    }
}
