//! Moving a week between the Worker's KV and the rollback's store, for a week that spans
//! both targets (a DNS swap mid-week): the weekly count is of distinct sessions, so the two
//! halves must be merged in one store, not added up.
//!
//! - `rollback import-kv FILE`: reads what `wrangler kv key list --remote --prefix
//!   session:<week>:` prints (key names with the record as metadata) into the store.
//! - `rollback export-kv WEEK`: prints the week's records in the form `wrangler kv bulk put`
//!   takes, for the swap back.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use telemetry_core::{IsoWeek, SessionId, SessionWrite, StoredRecord as Record};

use crate::store::{Store, StoreError};

/// One entry of `wrangler kv key list`.
#[derive(Debug, Deserialize)]
struct ListedKey {
    name: String,
    expiration: Option<i64>,
    metadata: Option<Record>,
}

/// One entry of `wrangler kv bulk put`.
#[derive(Debug, Serialize)]
struct BulkEntry {
    key: String,
    value: String,
    metadata: Record,
    expiration_ttl: u64,
}

/// Parses `session:<YYYY-Www>:<session_id>`.
fn parse_key(name: &str) -> Option<(IsoWeek, SessionId)> {
    let rest = name.strip_prefix("session:")?;
    let (week, id) = rest.split_once(':')?;
    Some((IsoWeek::parse(week)?, SessionId::parse(id)?))
}

/// Imports a `wrangler kv key list` dump; returns how many records were written. Keys that
/// are not session records, and records with other fields, are refused as a whole file.
pub async fn import(
    store: &Store,
    listing: &str,
    default_ttl: u64,
    now: i64,
) -> Result<usize, String> {
    let keys: Vec<ListedKey> = serde_json::from_str(listing)
        .map_err(|e| format!("not a `wrangler kv key list` dump: {e}"))?;
    let mut writes = Vec::with_capacity(keys.len());
    for key in keys {
        let (week, session_id) =
            parse_key(&key.name).ok_or_else(|| format!("not a session key: {}", key.name))?;
        let record = key
            .metadata
            .ok_or_else(|| format!("{week}: a key without its record as metadata"))?;
        // What is left of the record's life in KV, at least the minimum any store accepts.
        let ttl = key.expiration.map_or(default_ttl, |at| {
            u64::try_from(at.saturating_sub(now)).unwrap_or(0).max(60)
        });
        let record_json = serde_json::to_string(&record).map_err(|e| e.to_string())?;
        writes.push((
            SessionWrite {
                week,
                session_id,
                record_json,
            },
            ttl,
        ));
    }
    let count = writes.len();
    for (write, ttl) in writes {
        store
            .write_batch(Arc::new([write]), ttl)
            .await
            .map_err(|StoreError(e)| format!("writing to the store: {e}"))?;
    }
    Ok(count)
}

/// The week's records as `wrangler kv bulk put` input, each with `ttl` seconds to live.
pub async fn export(store: &Store, week: IsoWeek, ttl: u64) -> Result<String, String> {
    let records = store
        .records_of_week(week)
        .await
        .map_err(|StoreError(e)| format!("reading the store: {e}"))?;
    let mut entries = Vec::with_capacity(records.len());
    for (session_id, record_json) in records {
        let metadata: Record =
            serde_json::from_str(&record_json).map_err(|e| format!("a stored record: {e}"))?;
        entries.push(BulkEntry {
            key: format!("{}{session_id}", telemetry_core::week_key_prefix(week)),
            value: record_json,
            metadata,
            expiration_ttl: ttl,
        });
    }
    serde_json::to_string_pretty(&entries).map_err(|e| e.to_string())
}
