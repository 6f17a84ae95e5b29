//! The writer's transaction: a batch of pings becomes appended rows, rewritten rows where a
//! repeat changed a field, and the moves of its weeks' counts and tallies.

use rusqlite::{Connection, TransactionBehavior, params};
use telemetry_core::SessionWrite;
use telemetry_core::readout::{TallyMoves, record_to_write};

use super::arrivals::{Arrivals, Row};
use super::tallies;
use crate::store::StoreError;

/// A batch of a few thousand rows takes milliseconds. When every CPU is busy, a request
/// thread preempted by the writer would wait for all of it, even while another CPU goes idle
/// (the scheduler keeps a thread that just ran where it was): seen with `perf sched` under a
/// ping load, where 10–15% of the CPU time went idle. Giving the CPU up every so many rows
/// (about 0.15 ms of work) lets such a thread run; the idle share fell to 6–8%.
const ROWS_BETWEEN_YIELDS: usize = 64;

/// Writes a batch in one transaction: each record, its week's summary row and its tallies.
pub(super) fn write_rows(
    connection: &mut Connection,
    arrivals: &mut Arrivals,
    batch: &[SessionWrite],
    expires_at: i64,
) -> Result<(), StoreError> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        // A new session is a plain insert and a repeat updates its own row, matched by
        // session id too: were the map ever wrong, the batch fails (and the maps are reloaded
        // for the retry) rather than one session's record landing in another's row.
        let mut insert = transaction.prepare_cached(
            "INSERT INTO sessions (week, arrival, session_id, record, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut stored = transaction.prepare_cached(
            "SELECT record FROM sessions WHERE week = ?1 AND arrival = ?2 AND session_id = ?3",
        )?;
        let mut overwrite = transaction.prepare_cached(
            "UPDATE sessions SET record = ?4, expires_at = ?5
             WHERE week = ?1 AND arrival = ?2 AND session_id = ?3",
        )?;
        let mut note_week = transaction.prepare_cached(
            "INSERT INTO weeks (week, earliest_expiry, sessions, generation) VALUES (?1, ?2, ?3, 1)
             ON CONFLICT (week) DO UPDATE SET
                 earliest_expiry = min(coalesce(earliest_expiry, ?2), ?2),
                 sessions = sessions + ?3,
                 generation = generation + 1
             RETURNING generation",
        )?;
        // A batch is almost always one week; the file is checked once per run of one.
        for run in batch.chunk_by(|a, b| a.week == b.week) {
            let Some(first) = run.first() else { continue };
            let week_text = first.week.to_string();
            let week = arrivals.week(&transaction, first.week)?;
            let mut new_rows = 0;
            let mut moves = TallyMoves::default();
            for (index, write) in run.iter().enumerate() {
                if index % ROWS_BETWEEN_YIELDS == ROWS_BETWEEN_YIELDS - 1 {
                    std::thread::yield_now();
                }
                let session_id = write.session_id.as_str();
                let (statement, arrival, record) = match week.place(session_id) {
                    Row::New(arrival) => {
                        new_rows += 1;
                        let record = tallies::parse_record(&week_text, &write.record_json)?;
                        moves.replace(None, Some(&record));
                        (&mut insert, arrival, write.record_json.clone())
                    }
                    Row::Existing(arrival) => {
                        // A repeat keeps the first ping's day and writes only what changed.
                        let before: String = stored
                            .query_row(params![week_text, arrival, session_id], |row| row.get(0))?;
                        let Some(after) = record_to_write(Some(&before), &write.record_json) else {
                            continue;
                        };
                        moves.replace(
                            Some(&tallies::parse_record(&week_text, &before)?),
                            Some(&tallies::parse_record(&week_text, &after)?),
                        );
                        (&mut overwrite, arrival, after)
                    }
                };
                let changed = statement
                    .execute(params![week_text, arrival, session_id, record, expires_at])?;
                if changed != 1 {
                    return Err(rusqlite::Error::StatementChangedRows(changed).into());
                }
            }
            tallies::apply(&transaction, &week_text, &moves)?;
            week.generation =
                note_week.query_row(params![week_text, expires_at, new_rows], |row| row.get(0))?;
        }
    }
    transaction.commit()?;
    Ok(())
}
