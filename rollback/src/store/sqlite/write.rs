//! The transactions that change rows, each applying the core's model of a week: a batch of
//! pings, a deletion request, the expiry of records, and the repair of an inconsistent week.
//! Each is all or nothing: an inconsistency rolls it back and is returned for a repair.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use telemetry_core::stored_week::{self, Departure, Inconsistent, KeepError, Vocabulary};
use telemetry_core::summary::Retention;
use telemetry_core::{IsoWeek, SessionId, SessionWrite, TallyMoves};

use super::{forget_wal, tallies};
use crate::store::StoreError;

/// A batch of a few thousand rows takes milliseconds. When every CPU is busy, a request
/// thread preempted by the writer would wait for all of it, even while another CPU goes idle
/// (the scheduler keeps a thread that just ran where it was): seen with `perf sched` under a
/// ping load, where 10–15% of the CPU time went idle. Giving the CPU up every so many rows
/// lets such a thread run; the idle share fell to 6–8%.
const ROWS_BETWEEN_YIELDS: usize = 64;

/// Expired records deleted per transaction, so that the writer waits for one chunk at most
/// when a day of a large week expires at the same second.
const EXPIRED_PER_TRANSACTION: usize = 5_000;

fn inconsistent(week: IsoWeek) -> impl Fn(Inconsistent) -> StoreError {
    move |found| StoreError::Inconsistent { week, found }
}

/// Writes a batch of pings in one transaction: each session's record as
/// [`stored_week::keep_within`] decides (its values bounded by the week's tallies as this
/// transaction reads them), expiring at `expires_at`, and its week's tallies.
pub(super) fn pings(
    connection: &mut Connection,
    batch: &[SessionWrite],
    expires_at: i64,
) -> Result<(), StoreError> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut stored = transaction.prepare_cached(
            // As text whatever a hand edit stored: a record that is not one is then found
            // by the core's rule, not by a type error that would look like an outage.
            "SELECT CAST(record AS TEXT) FROM sessions WHERE week = ?1 AND session_id = ?2",
        )?;
        let mut keep = transaction.prepare_cached(
            "INSERT INTO sessions (week, session_id, record, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (week, session_id)
             DO UPDATE SET record = excluded.record, expires_at = excluded.expires_at",
        )?;
        // A batch is almost always one week: its tallies move once per run of one.
        for run in batch.chunk_by(|a, b| a.week == b.week) {
            let Some(week) = run.first().map(|write| write.week) else {
                continue;
            };
            let week_text = week.to_string();
            let mut moves = TallyMoves::default();
            let mut vocabulary = Vocabulary::new(tallies::Named::new(&transaction, week));
            for (index, write) in run.iter().enumerate() {
                if index % ROWS_BETWEEN_YIELDS == ROWS_BETWEEN_YIELDS - 1 {
                    std::thread::yield_now();
                }
                let session_id = write.session_id.as_str();
                let before: Option<String> = stored
                    .query_row(params![week_text, session_id], |row| row.get(0))
                    .optional()?;
                let kept = stored_week::keep_within(
                    before.as_deref(),
                    &write.record_json,
                    &mut vocabulary,
                )
                .map_err(|error| match error {
                    KeepError::Inconsistent(found) => inconsistent(week)(found),
                    KeepError::Store(error) => error,
                })?;
                let Some(kept) = kept else { continue };
                keep.execute(params![week_text, session_id, kept.record, expires_at])?;
                moves.extend(&kept.moves);
            }
            tallies::apply(&transaction, week, &moves)?;
        }
    }
    transaction.commit()?;
    Ok(())
}

/// Deletes a session's record from each week that holds one (found by week on the primary
/// key, not by a scan), with the tallies: out of the count of a week whose summary is not
/// made at `now`, kept in the summary of one whose is. Returns how many records went.
pub(super) fn deletion(
    connection: &mut Connection,
    session_id: &SessionId,
    now: i64,
    retention: Retention,
    journal_until: i64,
) -> Result<usize, StoreError> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Journaled whether or not this store held a record: the Worker's KV may hold one that
    // an import would otherwise bring here after the deletion.
    transaction
        .prepare_cached(
            "INSERT INTO deletions (session_id, expires_at) VALUES (?1, ?2)
             ON CONFLICT (session_id) DO UPDATE
             SET expires_at = max(expires_at, excluded.expires_at)",
        )?
        .execute(params![session_id.as_str(), journal_until])?;
    let mut deleted = 0;
    for week in weeks_held(&transaction)? {
        let record: Option<String> = transaction
            .prepare_cached(
                "DELETE FROM sessions WHERE week = ?1 AND session_id = ?2
                 RETURNING CAST(record AS TEXT)",
            )?
            .query_row(params![week.to_string(), session_id.as_str()], |row| {
                row.get(0)
            })
            .optional()?;
        if let Some(record) = record {
            let leaving = retention.on_deletion(week, now);
            let departure = stored_week::depart(&record, leaving).map_err(inconsistent(week))?;
            tallies::depart(&transaction, week, &departure)?;
            deleted += 1;
        }
    }
    transaction.commit()?;
    if deleted > 0 {
        forget_wal(connection)?;
    }
    Ok(deleted)
}

/// Every week the file holds a record of, each found with one step along the primary key.
pub(super) fn weeks_held(connection: &Connection) -> Result<Vec<IsoWeek>, StoreError> {
    let mut next = connection.prepare_cached("SELECT min(week) FROM sessions WHERE week > ?1")?;
    let mut weeks = Vec::new();
    let mut after = String::new();
    while let Some(week) = next.query_row([&after], |row| row.get::<_, Option<String>>(0))? {
        // A week that is not a week was written by something else; nothing here reads it.
        weeks.extend(IsoWeek::parse(&week));
        after = week;
    }
    Ok(weeks)
}

/// Deletes the records that have expired at `now`, a bounded chunk per transaction, and takes
/// them out of their weeks' tallies, into the summaries where they are kept; then deletes the
/// summaries past their retention. Returns how many records went.
pub(super) fn expiry(
    connection: &mut Connection,
    now: i64,
    retention: Retention,
) -> Result<usize, StoreError> {
    let mut expired = 0;
    loop {
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rows: Vec<(String, String)> = transaction
            .prepare_cached(
                "DELETE FROM sessions WHERE (week, session_id) IN (
                     SELECT week, session_id FROM sessions WHERE expires_at <= ?1 LIMIT ?2
                 ) RETURNING week, CAST(record AS TEXT)",
            )?
            .query_map(params![now, EXPIRED_PER_TRANSACTION], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut by_week: Vec<(IsoWeek, Departure)> = Vec::new();
        for (week, record) in &rows {
            let Some(week) = IsoWeek::parse(week) else {
                continue;
            };
            let departure =
                stored_week::depart(record, retention.on_expiry()).map_err(inconsistent(week))?;
            match by_week.iter_mut().find(|(known, _)| *known == week) {
                Some((_, week_departure)) => week_departure.extend(&departure),
                None => by_week.push((week, departure)),
            }
        }
        for (week, departure) in &by_week {
            tallies::depart(&transaction, *week, departure)?;
        }
        transaction.commit()?;
        expired += rows.len();
        if rows.len() < EXPIRED_PER_TRANSACTION {
            break;
        }
    }
    let journal_expired = connection
        .prepare_cached("DELETE FROM deletions WHERE expires_at <= ?1")?
        .execute([now])?;
    // Summaries hold no session id: nothing to overwrite in the WAL when they go.
    match retention.oldest_summarised(now) {
        Some(oldest) => connection.execute(
            "DELETE FROM summaries WHERE week < ?1",
            [oldest.to_string()],
        )?,
        None => connection.execute("DELETE FROM summaries", [])?,
    };
    // The journal holds ids: its expired entries leave no copy in the WAL either.
    if expired > 0 || journal_expired > 0 {
        forget_wal(connection)?;
    }
    Ok(expired)
}

/// When the next record (or journal entry) expires or the next summary goes, whichever comes
/// first.
pub(super) fn next_expiry(
    connection: &Connection,
    retention: Retention,
) -> Result<Option<i64>, StoreError> {
    let record: Option<i64> = connection
        .prepare_cached(
            "SELECT min(at) FROM (SELECT min(expires_at) AS at FROM sessions
             UNION ALL SELECT min(expires_at) FROM deletions)",
        )?
        .query_row([], |row| row.get(0))?;
    let oldest_summary: Option<String> = connection
        .prepare_cached("SELECT min(week) FROM summaries")?
        .query_row([], |row| row.get(0))?;
    // Summaries no longer kept (the retention set to 0) go at once.
    let summary = (oldest_summary.as_deref())
        .and_then(IsoWeek::parse)
        .map(|week| retention.summary_expires_at(week).unwrap_or(i64::MIN));
    Ok(match (record, summary) {
        (Some(record), Some(summary)) => Some(record.min(summary)),
        (record, summary) => record.or(summary),
    })
}

/// Rebuilds a week's tallies from its records ([`stored_week::rebuild`]) and drops the
/// records that are not records, and the summary rows that are not counts. Returns how many
/// records were dropped.
pub(super) fn repair(connection: &mut Connection, week: IsoWeek) -> Result<u64, StoreError> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let week_text = week.to_string();
    // Row by row from the cursor: a week of a million records is never in memory.
    let rebuilt = {
        let mut records = transaction
            .prepare("SELECT session_id, CAST(record AS TEXT) FROM sessions WHERE week = ?1")?;
        let mut rows = records.query([&week_text])?;
        let mut rebuilt = stored_week::Rebuilt::default();
        while let Some(row) = rows.next()? {
            rebuilt.add(row.get::<_, String>(0)?, &row.get::<_, String>(1)?);
        }
        rebuilt
    };
    for session_id in &rebuilt.invalid {
        transaction.execute(
            "DELETE FROM sessions WHERE week = ?1 AND session_id = ?2",
            params![week_text, session_id],
        )?;
    }
    tallies::replace(&transaction, week, &rebuilt.tallies)?;
    // A summary row cannot be rebuilt (its records are gone): one whose count is not a count
    // (a hand edit) is dropped, so that it stops no write, expiry or readout.
    transaction.execute(
        "DELETE FROM summaries WHERE week = ?1
         AND (typeof(sessions) <> 'integer' OR sessions < 0)",
        [&week_text],
    )?;
    transaction.commit()?;
    if !rebuilt.invalid.is_empty() {
        forget_wal(connection)?;
    }
    Ok(rebuilt.invalid.len() as u64)
}

/// The sessions deleted here whose journal entry has not expired at `now`, in order.
pub(super) fn journal(connection: &Connection, now: i64) -> Result<Vec<String>, StoreError> {
    let ids = connection
        .prepare_cached("SELECT session_id FROM deletions WHERE expires_at > ?1 ORDER BY 1")?
        .query_map([now], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids)
}

/// Takes `ids` out of the journal (once their deletion reached the other target).
pub(super) fn forget_journaled(
    connection: &mut Connection,
    ids: &[SessionId],
) -> Result<usize, StoreError> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut forgotten = 0;
    {
        let mut delete =
            transaction.prepare_cached("DELETE FROM deletions WHERE session_id = ?1")?;
        for id in ids {
            forgotten += delete.execute([id.as_str()])?;
        }
    }
    transaction.commit()?;
    forget_wal(connection)?;
    Ok(forgotten)
}
