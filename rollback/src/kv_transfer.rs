//! Moving a week between the Worker's KV and the rollback's store, for a week that spans
//! both targets (a DNS swap mid-week): the weekly count is of distinct sessions, so the two
//! halves must be merged in one store, not added up.
//!
//! - `rollback import-kv FILE`: reads what `wrangler kv key list --remote --prefix
//!   session:<week>:` prints (key names with the record as metadata) into the store.
//! - `rollback export-kv WEEK`: prints the week's records in the form `wrangler kv bulk put`
//!   takes, for the swap back.
//! - The deletion journals, so that a deletion made on either side during the swap holds on
//!   both: `import-kv` skips sessions deleted here; `rollback import-deletions FILE` makes
//!   here the deletions the Worker journaled (`deletion:<id>` keys in KV); `rollback
//!   deletions` prints the sessions deleted here, for the Worker's `DELETE`, and `rollback
//!   forget-deletions -` takes those that reached it out of the journal.
//!
//! Either way a record keeps the expiry it has, so moving it never extends its life past the
//! retention, and its `first_seen_at` is cut to the day as every new record's is.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use telemetry_core::limits::MIN_SESSION_TTL_SECONDS;
use telemetry_core::{
    IsoWeek, SessionWrite, StoredRecord as Record, day_start, expires_at, parse_session_key,
};

use crate::store::{LiveRecord, Store};

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
    /// Seconds since the epoch: the record's own expiry in the store it comes from.
    expiration: i64,
}

/// What an import did.
#[derive(Debug, PartialEq, Eq)]
pub struct Imported {
    pub written: usize,
    /// Of those, sessions the store did not hold in their week before (the rest it held,
    /// and kept or updated by the usual rule).
    pub new: u64,
    /// Keys whose expiration had passed: their records are gone, not revived.
    pub expired: usize,
    /// Records of sessions deleted here (the deletion journal): not put back.
    pub deleted_here: usize,
}

/// How many keys one page of `wrangler kv key list` holds: a listing of exactly this many
/// is likely the first page of a longer one (wrangler's local listing does not follow the
/// cursor), so the import refuses it unless told the listing is whole.
pub const WRANGLER_LIST_PAGE: usize = 1000;

/// Imports a `wrangler kv key list` dump at `now` (seconds since the epoch). Keys that are
/// not session records, and records with other fields, a malformed time or a value no ping
/// could have sent, are refused as a whole file. Each record expires at the start of the day of its key's expiration (an older
/// Worker set it to the second); a key without one (KV keys written by this service always
/// have one) gets the expiry of a record written now.
pub async fn import(
    store: &Store,
    listing: &str,
    default_ttl: u64,
    now: i64,
    listing_is_whole: bool,
) -> Result<Imported, String> {
    // Where, not what: serde's message may quote a value from the file, such as a key.
    let keys: Vec<ListedKey> = serde_json::from_str(listing).map_err(|e| {
        format!(
            "not a `wrangler kv key list` dump of session records (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    if keys.len() == WRANGLER_LIST_PAGE && !listing_is_whole {
        return Err(format!(
            "the listing holds exactly {WRANGLER_LIST_PAGE} keys, one page of wrangler's: the week \
             may hold more. List it with --remote (which follows the cursor) and import again; \
             if this is the whole week, pass --listing-is-whole"
        ));
    }
    let mut writes = Vec::with_capacity(keys.len());
    let mut expired = 0;
    // Errors name an entry by its position, never by its key: the key holds a session id.
    for (position, key) in keys.into_iter().enumerate() {
        let entry = position + 1;
        let (week, session_id) = parse_session_key(&key.name).ok_or_else(|| {
            format!("entry {entry}: not a session key (session:<YYYY-Www>:<session_id>)")
        })?;
        let record = key
            .metadata
            .and_then(Record::to_day_precision)
            .ok_or_else(|| format!("entry {entry}: no valid record as its metadata"))?;
        let expiry = key
            .expiration
            .map_or_else(|| expires_at(now, default_ttl), day_start);
        if expiry <= now {
            expired += 1;
            continue;
        }
        // A record no ping could have written (a value outside its field's rule) is refused
        // with the rest of the file: the store would keep what the service never accepts.
        if !record.could_come_from_a_ping() {
            return Err(format!(
                "entry {entry}: a record no valid ping could have written (a field breaks its rule)"
            ));
        }
        let record_json = serde_json::to_string(&record).map_err(|e| e.to_string())?;
        writes.push((
            SessionWrite {
                week,
                session_id,
                record_json,
            },
            expiry,
        ));
    }
    // A session deleted here stays deleted: its record in KV is older than the deletion.
    let journal = (store.journal(now).await).map_err(|e| format!("reading the store: {e}"))?;
    let before_journal = writes.len();
    writes.retain(|(write, _)| {
        journal
            .binary_search_by(|id| id.as_str().cmp(write.session_id.as_str()))
            .is_err()
    });
    let deleted_here = before_journal - writes.len();
    let written = writes.len();
    let mut weeks: Vec<IsoWeek> = writes.iter().map(|(write, _)| write.week).collect();
    weeks.sort();
    weeks.dedup();
    let before = sessions_in(store, &weeks).await?;
    // One record per transaction: each keeps its own expiry.
    for (write, expiry) in writes {
        store
            .write_batch(Arc::new([write]), expiry)
            .await
            .map_err(|e| format!("writing to the store: {e}"))?;
    }
    let new = sessions_in(store, &weeks).await?.saturating_sub(before);
    Ok(Imported {
        written,
        new,
        expired,
        deleted_here,
    })
}

/// One entry of `wrangler kv key list --prefix deletion:`: the Worker's deletion journal.
#[derive(Debug, Deserialize)]
struct ListedDeletion {
    name: String,
}

/// What an import of the Worker's deletion journal did.
#[derive(Debug, PartialEq, Eq)]
pub struct DeletionsImported {
    /// Sessions the listing named.
    pub sessions: usize,
    /// Records of them this store held, now deleted.
    pub records: usize,
}

/// Makes here the deletions the Worker made (its journal, as `wrangler kv key list --prefix
/// deletion:` prints it), at `now`: each session's records go from every week, and the
/// session joins this store's journal, so that no later import brings it back. Refused as
/// a whole if any key is not a journal entry, named by position (a key holds an id).
pub async fn import_deletions(
    store: &Store,
    listing: &str,
    now: i64,
) -> Result<DeletionsImported, String> {
    let keys: Vec<ListedDeletion> = serde_json::from_str(listing).map_err(|e| {
        format!(
            "not a `wrangler kv key list --prefix deletion:` dump (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let mut ids = Vec::with_capacity(keys.len());
    for (position, key) in keys.into_iter().enumerate() {
        let id = telemetry_core::parse_deletion_key(&key.name).ok_or_else(|| {
            format!(
                "entry {}: not a deletion journal key (deletion:<session_id>)",
                position + 1
            )
        })?;
        ids.push(id);
    }
    let mut records = 0;
    for id in &ids {
        records += (store.delete_session(id.clone(), now).await)
            .map_err(|e| format!("deleting from the store: {e}"))?;
    }
    Ok(DeletionsImported {
        sessions: ids.len(),
        records,
    })
}

/// The sessions `weeks` hold in all.
async fn sessions_in(store: &Store, weeks: &[IsoWeek]) -> Result<u64, String> {
    let mut total = 0;
    for &week in weeks {
        total += (store.count_week(week).await).map_err(|e| format!("reading the store: {e}"))?;
    }
    Ok(total)
}

/// The week's records as `wrangler kv bulk put` input, each with the expiry it has in the
/// store (its day's start, should the store hold one to the second). KV refuses an expiry
/// less than a minute away, so a record that close to its end is left out (it would be gone
/// before the put took effect anyway).
pub async fn export(store: &Store, week: IsoWeek, now: i64) -> Result<String, String> {
    let records = store
        .records_of_week(week, now)
        .await
        .map_err(|e| format!("reading the store: {e}"))?;
    let soonest = now.saturating_add(i64::try_from(MIN_SESSION_TTL_SECONDS).unwrap_or(0));
    let mut entries = Vec::with_capacity(records.len());
    for live in records
        .into_iter()
        .map(|live| LiveRecord {
            expires_at: day_start(live.expires_at),
            ..live
        })
        .filter(|live| live.expires_at >= soonest)
    {
        let metadata = serde_json::from_str::<Record>(&live.record_json)
            .ok()
            .and_then(Record::to_day_precision)
            .ok_or_else(|| format!("{week}: a stored record that is not a valid record"))?;
        entries.push(BulkEntry {
            key: telemetry_core::session_key(week, &live.session_id),
            value: serde_json::to_string(&metadata).map_err(|e| e.to_string())?,
            metadata,
            expiration: live.expires_at,
        });
    }
    serde_json::to_string_pretty(&entries).map_err(|e| e.to_string())
}
