//! Each week's sessions counted along every dimension, changed in the same transaction as the
//! records they count: a breakdown reads a few rows at any week size instead of every record.

use rusqlite::{Connection, params};
use telemetry_core::readout::{Tally, TallyMoves, tally};
use telemetry_core::{Dimension, StoredRecord};

use crate::store::StoreError;

/// A stored record as the core wrote it. Anything else cannot be counted: the write (or the
/// migration) fails rather than leave the tallies short of a session.
pub(super) fn parse_record(week: &str, record: &str) -> Result<StoredRecord, StoreError> {
    serde_json::from_str(record).map_err(|_| {
        StoreError(format!(
            "{week}: a stored record that is not a valid record"
        ))
    })
}

/// Applies a week's moves. A value whose count falls to zero loses its row, so a tally never
/// names a value no live record holds. Taking a session from a value that has none would be a
/// bug: the transaction fails rather than hide it.
pub(super) fn apply(
    connection: &Connection,
    week: &str,
    moves: &TallyMoves,
) -> Result<(), StoreError> {
    let mut add = connection.prepare_cached(
        "INSERT INTO tallies (week, dimension, value, sessions) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (week, dimension, value) DO UPDATE SET sessions = sessions + excluded.sessions",
    )?;
    // An upsert checks its candidate row (a negative count) before it meets the conflict.
    let mut take = connection.prepare_cached(
        "UPDATE tallies SET sessions = sessions + ?4
         WHERE week = ?1 AND dimension = ?2 AND value = ?3 AND sessions + ?4 >= 0",
    )?;
    let mut drop_empty = connection.prepare_cached(
        "DELETE FROM tallies WHERE week = ?1 AND dimension = ?2 AND value = ?3 AND sessions = 0",
    )?;
    for (dimension, value, sessions) in moves.iter() {
        let at = params![week, dimension.name(), value, sessions];
        if sessions > 0 {
            add.execute(at)?;
        } else if take.execute(at)? == 1 {
            drop_empty.execute(params![week, dimension.name(), value])?;
        } else {
            return Err(StoreError(format!(
                "{week}: the tallies hold fewer sessions of {}={value} than are leaving it",
                dimension.name()
            )));
        }
    }
    Ok(())
}

/// The week's tally along `dimension`, from its tallies.
pub(super) fn read(
    connection: &Connection,
    week: &str,
    dimension: Dimension,
) -> Result<Tally, StoreError> {
    let mut tally = Tally::default();
    let mut rows = connection
        .prepare_cached("SELECT value, sessions FROM tallies WHERE week = ?1 AND dimension = ?2")?;
    let mut rows = rows.query(params![week, dimension.name()])?;
    while let Some(row) = rows.next()? {
        let sessions: i64 = row.get(1)?;
        tally.add(
            &row.get::<_, String>(0)?,
            u64::try_from(sessions).unwrap_or(0),
        );
    }
    Ok(tally)
}

/// The week's tally along `dimension` from its live records, for a week that holds expired
/// rows the purge has not deleted yet (the tallies still count them until it does).
pub(super) fn read_live_records(
    connection: &Connection,
    week: &str,
    now: i64,
    dimension: Dimension,
) -> Result<Tally, StoreError> {
    let mut records = Vec::new();
    let mut rows = connection
        .prepare_cached("SELECT record FROM sessions WHERE week = ?1 AND expires_at > ?2")?;
    let mut rows = rows.query(params![week, now])?;
    while let Some(row) = rows.next()? {
        records.push(parse_record(week, &row.get::<_, String>(0)?)?);
    }
    Ok(tally(&records, dimension))
}
