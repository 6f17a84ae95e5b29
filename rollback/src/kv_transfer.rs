//! Moving a week between the Worker's KV and the rollback's store, for a week that spans
//! both targets (a DNS swap mid-week): the weekly count is of distinct sessions, so the two
//! halves must be merged in one store, not added up.
//!
//! - `rollback import-kv FILE`: reads what `wrangler kv key list --remote --prefix
//!   session:` prints (key names with the record as metadata, any number of weeks) into the
//!   store, streamed.
//! - `rollback export-kv WEEK…` (or `--from`/`--to`): prints the weeks' records in the form
//!   `wrangler kv bulk put` takes, for the swap back, streamed a page at a time.
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

use crate::store::Store;

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

/// Entries of a listing checked before anything is written: one page of wrangler's and one
/// more, so that a listing of exactly one page is refused whole (it may be the first page of
/// a longer week) and a listing refused in its first page writes nothing.
const CHECKED_BEFORE_WRITING: usize = WRANGLER_LIST_PAGE + 1;

/// Records written at a time (each group sharing its expiry).
const WRITES_PER_BATCH: usize = 1_000;

/// Imports a `wrangler kv key list` dump read from `input` at `now` (seconds since the
/// epoch), any number of weeks, streamed: it holds a batch of records in memory, never the
/// listing. Keys that are not session records, and records with other fields, a malformed
/// time or a value no ping could have sent, are refused with their position: nothing is
/// written before the first 1,001 entries are checked, and a bad entry later stops the
/// import there (the records before it are imported; importing again counts nothing twice).
/// Each record expires at the start of the day of its key's expiration (an older Worker set
/// it to the second); a key without one (KV keys written by this service always have one)
/// gets the expiry of a record written now. Sessions in the deletion journal are skipped.
pub async fn import(
    store: &Store,
    input: impl std::io::Read + Send + 'static,
    default_ttl: u64,
    now: i64,
    listing_is_whole: bool,
) -> Result<Imported, String> {
    let mut entries = stream_entries(input);
    let journal = (store.journal(now).await).map_err(|e| format!("reading the store: {e}"))?;
    let mut import = Import {
        store,
        pending: Vec::new(),
        before: Vec::new(),
        written: 0,
    };
    let (mut checked, mut expired, mut deleted_here) = (0, 0, 0);
    while let Some(entry) = entries.recv().await {
        checked += 1;
        let checked_key = entry.and_then(|key| checked_entry(key, checked, default_ttl, now));
        let checked_key = match checked_key {
            Ok(checked_key) => checked_key,
            // What was checked before the bad entry is written first (past the first page:
            // before it, nothing is), so that the message says all that was imported.
            Err(error) if checked > CHECKED_BEFORE_WRITING => {
                import.flush().await?;
                return Err(import.stopped(error));
            }
            Err(error) => return Err(error),
        };
        let Some((write, expiry)) = checked_key else {
            expired += 1;
            continue;
        };
        let id = write.session_id.as_str();
        if journal
            .binary_search_by(|held| held.as_str().cmp(id))
            .is_ok()
        {
            // A session deleted here stays deleted: its record in KV is older than that.
            deleted_here += 1;
            continue;
        }
        import.pending.push((write, expiry));
        if checked > CHECKED_BEFORE_WRITING && import.pending.len() >= WRITES_PER_BATCH {
            import.flush().await?;
        }
    }
    if checked == WRANGLER_LIST_PAGE && !listing_is_whole {
        return Err(format!(
            "the listing holds exactly {WRANGLER_LIST_PAGE} keys, one page of wrangler's: the week \
             may hold more. List it with --remote (which follows the cursor) and import again; \
             if this is the whole week, pass --listing-is-whole"
        ));
    }
    import.flush().await?;
    // A deletion made here while the import ran (the server keeps serving) wins: any session
    // journaled since the start is deleted again, whatever the import wrote of it.
    let journal_now = (store.journal(now).await).map_err(|e| format!("reading the store: {e}"))?;
    for id in journal_now
        .iter()
        .filter(|id| journal.binary_search(id).is_err())
    {
        if let Some(id) = telemetry_core::SessionId::parse(id) {
            (store.delete_session(id, now).await)
                .map_err(|e| format!("deleting from the store: {e}"))?;
        }
    }
    // Approximate while the server runs: its own pings and expiries move the counts too.
    let mut new = 0;
    for (week, before) in &import.before {
        let after =
            (store.count_week(*week).await).map_err(|e| format!("reading the store: {e}"))?;
        new += after.saturating_sub(*before);
    }
    Ok(Imported {
        written: import.written,
        new,
        expired,
        deleted_here,
    })
}

/// An import's writes under way.
struct Import<'a> {
    store: &'a Store,
    pending: Vec<(SessionWrite, i64)>,
    /// Each week written to, with its count before its first write: what the import added.
    before: Vec<(IsoWeek, u64)>,
    written: usize,
}

impl Import<'_> {
    /// Writes what is pending, a batch per expiry (a day's records share theirs).
    async fn flush(&mut self) -> Result<(), String> {
        let mut pending = std::mem::take(&mut self.pending);
        for (write, _) in &pending {
            if !self.before.iter().any(|(week, _)| *week == write.week) {
                let count = (self.store.count_week(write.week).await)
                    .map_err(|e| format!("reading the store: {e}"))?;
                self.before.push((write.week, count));
            }
        }
        pending.sort_by_key(|(write, expiry)| (*expiry, write.week));
        for group in pending.chunk_by(|a, b| a.1 == b.1) {
            let Some(&(_, expiry)) = group.first() else {
                continue;
            };
            let batch: Arc<[SessionWrite]> = group.iter().map(|(write, _)| write.clone()).collect();
            (self.store.write_batch(batch, expiry).await)
                .map_err(|e| self.stopped(format!("writing to the store: {e}")))?;
            self.written += group.len();
        }
        Ok(())
    }

    /// An error that stopped the import, saying what was imported before it.
    fn stopped(&self, error: String) -> String {
        if self.written == 0 {
            return error;
        }
        format!(
            "{error}; the {} records before it were imported (importing again counts nothing twice)",
            self.written
        )
    }
}

/// The listing's entries as they are parsed, on a thread of their own, a few at a time: a
/// channel, so that parsing waits while the store writes.
fn stream_entries(
    input: impl std::io::Read + Send + 'static,
) -> tokio::sync::mpsc::Receiver<Result<ListedKey, String>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(WRITES_PER_BATCH);
    tokio::task::spawn_blocking(move || {
        let mut parser = serde_json::Deserializer::from_reader(std::io::BufReader::new(input));
        let parsed = serde::Deserializer::deserialize_seq(&mut parser, Entries(&sender))
            .and_then(|()| parser.end());
        // Where, not what: serde's message may quote a value from the file, such as a key.
        if let Err(error) = parsed {
            let _ = sender.blocking_send(Err(format!(
                "not a `wrangler kv key list` dump of session records (line {}, column {})",
                error.line(),
                error.column()
            )));
        }
    });
    receiver
}

/// Hands each entry of the listing's array to the import as it is parsed.
struct Entries<'a>(&'a tokio::sync::mpsc::Sender<Result<ListedKey, String>>);

impl<'de> serde::de::Visitor<'de> for Entries<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an array of listed keys")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(key) = seq.next_element::<ListedKey>()? {
            // The import stopped (a bad entry): nothing more to parse.
            if self.0.blocking_send(Ok(key)).is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// One listed key checked as a record to import (`entry`: its position, named in errors
/// instead of its key, which holds a session id): the write and its expiry, or `None` when
/// its expiration has passed.
fn checked_entry(
    key: ListedKey,
    entry: usize,
    default_ttl: u64,
    now: i64,
) -> Result<Option<(SessionWrite, i64)>, String> {
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
        return Ok(None);
    }
    // A record no ping could have written (a value outside its field's rule) is refused:
    // the store would keep what the service never accepts.
    if !record.could_come_from_a_ping() {
        return Err(format!(
            "entry {entry}: a record no valid ping could have written (a field breaks its rule)"
        ));
    }
    let record_json = serde_json::to_string(&record).map_err(|e| e.to_string())?;
    let write = SessionWrite {
        week,
        session_id,
        record_json,
    };
    Ok(Some((write, expiry)))
}

/// One entry of `wrangler kv key list --prefix deletion:`: the Worker's deletion journal.
#[derive(Debug, Deserialize)]
struct ListedDeletion {
    name: String,
    /// When the Worker's entry ends: this store's entry ends then too, never later.
    expiration: Option<i64>,
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
    default_ttl: u64,
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
        let until = key
            .expiration
            .unwrap_or_else(|| expires_at(now, default_ttl));
        ids.push((id, until));
    }
    let mut records = 0;
    for (id, until) in &ids {
        records += (store
            .delete_session_journaled_until(id.clone(), now, *until)
            .await)
            .map_err(|e| format!("deleting from the store: {e}"))?;
    }
    Ok(DeletionsImported {
        sessions: ids.len(),
        records,
    })
}

/// The weeks' records as `wrangler kv bulk put` input, written to `out` as they are read, a
/// page at a time: memory stays flat whatever the weeks' size. Each keeps the expiry it has
/// in the store (its day's start, should the store hold one to the second). KV refuses an
/// expiry less than a minute away, so a record that close to its end is left out (it would
/// be gone before the put took effect anyway). Returns how many records it wrote.
pub async fn export(
    store: &Store,
    weeks: &[IsoWeek],
    now: i64,
    out: &mut impl std::io::Write,
) -> Result<usize, String> {
    let soonest = now.saturating_add(i64::try_from(MIN_SESSION_TTL_SECONDS).unwrap_or(0));
    let write_failed = |e: std::io::Error| format!("writing the export: {e}");
    let mut exported = 0;
    out.write_all(b"[").map_err(write_failed)?;
    for &week in weeks {
        let mut cursor = None;
        loop {
            let (records, next) = (store.records_page(week, cursor, now).await)
                .map_err(|e| format!("reading the store: {e}"))?;
            for live in records {
                let expires_at = day_start(live.expires_at);
                if expires_at < soonest {
                    continue;
                }
                let metadata = serde_json::from_str::<Record>(&live.record_json)
                    .ok()
                    .and_then(Record::to_day_precision)
                    .ok_or_else(|| format!("{week}: a stored record that is not a valid record"))?;
                let entry = BulkEntry {
                    key: telemetry_core::session_key(week, &live.session_id),
                    value: serde_json::to_string(&metadata).map_err(|e| e.to_string())?,
                    metadata,
                    expiration: expires_at,
                };
                let separator: &[u8] = if exported == 0 { b"\n" } else { b",\n" };
                out.write_all(separator).map_err(write_failed)?;
                serde_json::to_writer(&mut *out, &entry).map_err(|e| e.to_string())?;
                exported += 1;
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    let end: &[u8] = if exported == 0 { b"]\n" } else { b"\n]\n" };
    out.write_all(end).map_err(write_failed)?;
    out.flush().map_err(write_failed)?;
    Ok(exported)
}
