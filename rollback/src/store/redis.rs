//! Redis: one hash per week, `sessions:<YYYY-Www>`, field = session id, value = record.
//! `HLEN` counts a week in constant time; a repeat ping overwrites its field.
//!
//! Redis 7.0 cannot expire single hash fields, so the week's hash expires as a whole, when
//! the week's first record would (`EXPIREAT … NX`, the core's expiry, cut to the day): no
//! record outlives the TTL, and the week's later records go up to a week earlier than they
//! would in KV.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use telemetry_core::{IsoWeek, SessionId, SessionWrite, expires_at};

use super::{LiveRecord, StoreError};
use crate::unix_now;

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

/// Oldest Redis this store runs on: `EXPIREAT … NX` and `EXPIRETIME` came in 7.0. On an
/// older server every batch would fail, forever; better to refuse to start.
const MIN_MAJOR_VERSION: u32 = 7;

/// Checks `redis_version` in the `INFO server` answer.
fn check_version(info: &str) -> Result<(), String> {
    let version = info
        .lines()
        .find_map(|line| line.trim().strip_prefix("redis_version:"))
        .unwrap_or("unknown");
    let major = version
        .split('.')
        .next()
        .and_then(|major| major.parse::<u32>().ok());
    match major {
        Some(major) if major >= MIN_MAJOR_VERSION => Ok(()),
        _ => Err(format!(
            "Redis {MIN_MAJOR_VERSION}.0 or newer is needed (EXPIREAT … NX); the server reports {version}"
        )),
    }
}

fn week_key(week: IsoWeek) -> String {
    format!("sessions:{week}")
}

/// Writes one week's records (`KEYS[1]`, then session id and record pairs): a new session
/// as sent; a repeat only when a field changed, keeping the stored `first_seen_at`, so an
/// unchanged repeat writes nothing. The rule is `telemetry_core::readout::RecordChange`'s,
/// here on the records' text: every record is the core's serialisation, fields in one order,
/// so two records differ exactly when a field does. Returns how many it wrote.
const WRITE_WEEK: &str = r#"
local written = 0
for i = 1, #ARGV, 2 do
  local id, record = ARGV[i], ARGV[i + 1]
  local before = redis.call('HGET', KEYS[1], id)
  if before then
    local first = string.match(before, '"first_seen_at":"([^"]*)"')
    if first then
      local kept = '"first_seen_at":"' .. string.gsub(first, '%%', '%%%%') .. '"'
      record = (string.gsub(record, '"first_seen_at":"[^"]*"', kept, 1))
    end
  end
  if record ~= before then
    redis.call('HSET', KEYS[1], id, record)
    written = written + 1
  end
end
return written
"#;

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
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut connection)
            .await?;
        check_version(&info).map_err(StoreError)?;
        Ok(Self { connection })
    }

    pub async fn write_batch(
        &self,
        batch: &[SessionWrite],
        ttl_seconds: u64,
    ) -> Result<(), StoreError> {
        self.write_batch_expiring(batch, expires_at(unix_now(), ttl_seconds))
            .await
    }

    pub async fn write_batch_expiring(
        &self,
        batch: &[SessionWrite],
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        // One script per week in the batch (a batch is almost always one week); a repeat
        // within the batch sees the write of the one before it.
        for run in batch.chunk_by(|a, b| a.week == b.week) {
            let Some(first) = run.first() else { continue };
            let key = week_key(first.week);
            let fields: Vec<(&str, &str)> = run
                .iter()
                .map(|write| (write.session_id.as_str(), write.record_json.as_str()))
                .collect();
            pipe.cmd("EVAL")
                .arg(WRITE_WEEK)
                .arg(1)
                .arg(&key)
                .arg(&fields)
                .ignore();
            // NX: only a week's first write sets it, so no later record extends the hash's
            // life, and with it the life of the week's earlier records, past their TTL.
            pipe.cmd("EXPIREAT")
                .arg(&key)
                .arg(expires_at)
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

    pub async fn records_of_week(&self, week: IsoWeek) -> Result<Vec<LiveRecord>, StoreError> {
        let mut connection = self.connection.clone();
        let (records, expires_at): (Vec<(String, String)>, i64) = redis::pipe()
            .atomic()
            .cmd("HGETALL")
            .arg(week_key(week))
            .cmd("EXPIRETIME")
            .arg(week_key(week))
            .query_async(&mut connection)
            .await?;
        // -2: no such hash (no records); -1: a hash without an expiry, which this store never
        // writes: refuse to hand on records whose lifetime is unknown.
        if expires_at < 0 && !records.is_empty() {
            return Err(StoreError(format!("{week}: the hash has no expiry")));
        }
        Ok(records
            .into_iter()
            .map(|(session_id, record_json)| LiveRecord {
                session_id,
                record_json,
                expires_at,
            })
            .collect())
    }

    /// Deletes the session's field from every week's hash (found with `SCAN`, since which
    /// weeks it was seen in is not recorded anywhere else).
    pub async fn delete_session(&self, session_id: &SessionId) -> Result<usize, StoreError> {
        let mut connection = self.connection.clone();
        let mut weeks: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg("sessions:*")
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await?;
            weeks.extend(keys);
            if next == 0 {
                // SCAN may name a key twice.
                weeks.sort_unstable();
                weeks.dedup();
                break;
            }
            cursor = next;
        }
        let mut deleted = 0;
        for week in weeks {
            deleted += redis::cmd("HDEL")
                .arg(&week)
                .arg(session_id.as_str())
                .query_async::<usize>(&mut connection)
                .await?;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_redis_7_or_newer_is_accepted() {
        let info = |version: &str| {
            format!("# Server\r\nredis_version:{version}\r\nredis_mode:standalone\r\n")
        };
        assert!(check_version(&info("7.0.15")).is_ok());
        assert!(check_version(&info("8.2.1")).is_ok());
        let old = check_version(&info("6.2.14")).unwrap_err();
        assert!(
            old.contains("7.0 or newer") && old.contains("6.2.14"),
            "{old}"
        );
        assert!(check_version("# Server\r\n").is_err());
    }
}
