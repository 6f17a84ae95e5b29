//! Each week's sessions counted along every dimension, moved in the same transaction as the
//! records they count, by the core's rule for a tally row ([`telemetry_core::tally::moved_row`]):
//! the live tallies, which match the records, and the summary rows, which keep counting the
//! sessions whose records have gone ([`telemetry_core::summary`]).

use rusqlite::{Connection, OptionalExtension, params};
use telemetry_core::stored_week::{Departure, Inconsistent, OTHER_VALUE, TalliedValues};
use telemetry_core::tally::moved_row;
use telemetry_core::{Dimension, IsoWeek, Tally, TallyMoves};

use crate::store::StoreError;

/// The two tables of counts by (week, dimension, value), alike in shape.
#[derive(Clone, Copy)]
pub(super) enum Counts {
    /// `tallies`: the week's live records, counted.
    Live,
    /// `summaries`: the week's sessions whose records went, still counted.
    Summary,
}

impl Counts {
    fn table(self) -> &'static str {
        match self {
            Self::Live => "tallies",
            Self::Summary => "summaries",
        }
    }
}

/// Applies a week's moves to one table. A row that would fall below zero (or holds a count
/// that is not a count: negative, or not an integer) means the tallies disagree with the
/// records: the week is inconsistent, and the caller's transaction is rolled back for a
/// repair.
pub(super) fn apply_to(
    connection: &Connection,
    counts: Counts,
    week: IsoWeek,
    moves: &TallyMoves,
) -> Result<(), StoreError> {
    let table = counts.table();
    let week_text = week.to_string();
    let mut held = connection.prepare_cached(&format!(
        "SELECT CASE typeof(sessions) WHEN 'integer' THEN sessions ELSE -1 END
         FROM {table} WHERE week = ?1 AND dimension = ?2 AND value = ?3"
    ))?;
    let mut set = connection.prepare_cached(&format!(
        "INSERT INTO {table} (week, dimension, value, sessions) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (week, dimension, value) DO UPDATE SET sessions = excluded.sessions"
    ))?;
    let mut drop = connection.prepare_cached(&format!(
        "DELETE FROM {table} WHERE week = ?1 AND dimension = ?2 AND value = ?3"
    ))?;
    for (dimension, value, sessions) in moves.iter() {
        let at = params![week_text, dimension.name(), value];
        let before: Option<i64> = held.query_row(at, |row| row.get(0)).optional()?;
        let inconsistent = || StoreError::Inconsistent {
            week,
            found: Inconsistent::TallyBelowZero,
        };
        let before = u64::try_from(before.unwrap_or(0)).map_err(|_| inconsistent())?;
        match moved_row(before, sessions).map_err(|_| inconsistent())? {
            Some(after) => {
                let after = i64::try_from(after).map_err(|_| inconsistent())?;
                set.execute(params![week_text, dimension.name(), value, after])?
            }
            None => drop.execute(at)?,
        };
    }
    Ok(())
}

/// Applies a week's moves to its live tallies.
pub(super) fn apply(
    connection: &Connection,
    week: IsoWeek,
    moves: &TallyMoves,
) -> Result<(), StoreError> {
    apply_to(connection, Counts::Live, week, moves)
}

/// Applies records' going: out of the live tallies, and into the summary where they stay
/// counted.
pub(super) fn depart(
    connection: &Connection,
    week: IsoWeek,
    departure: &Departure,
) -> Result<(), StoreError> {
    apply(connection, week, &departure.live)?;
    apply_to(connection, Counts::Summary, week, &departure.summary)
}

/// Replaces the week's tallies with `tallies` (moves from nothing, as a rebuild makes them).
pub(super) fn replace(
    connection: &Connection,
    week: IsoWeek,
    tallies: &TallyMoves,
) -> Result<(), StoreError> {
    connection.execute("DELETE FROM tallies WHERE week = ?1", [week.to_string()])?;
    apply(connection, week, tallies)
}

/// The week's tally along `dimension`: its live tallies and its summary, added. A count
/// that is not a count (negative, or not an integer: a hand edit) is an inconsistency.
pub(super) fn read(
    connection: &Connection,
    week: IsoWeek,
    dimension: Dimension,
) -> Result<Tally, StoreError> {
    let mut tally = Tally::default();
    let mut rows = connection.prepare_cached(
        "SELECT CAST(value AS TEXT), CASE typeof(sessions) WHEN 'integer' THEN sessions ELSE -1 END
             FROM tallies WHERE week = ?1 AND dimension = ?2
         UNION ALL
         SELECT CAST(value AS TEXT), CASE typeof(sessions) WHEN 'integer' THEN sessions ELSE -1 END
             FROM summaries WHERE week = ?1 AND dimension = ?2",
    )?;
    let mut rows = rows.query(params![week.to_string(), dimension.name()])?;
    while let Some(row) = rows.next()? {
        let sessions =
            u64::try_from(row.get::<_, i64>(1)?).map_err(|_| StoreError::Inconsistent {
                week,
                found: Inconsistent::TallyBelowZero,
            })?;
        tally.add(&row.get::<_, String>(0)?, sessions);
    }
    Ok(tally)
}

/// The week's tally rows as a batch's [`telemetry_core::stored_week::Vocabulary`] asks about
/// them, read in the batch's transaction: a value looked up once per batch, a dimension's
/// count once.
pub(super) struct Named<'a> {
    connection: &'a Connection,
    week: String,
}

impl<'a> Named<'a> {
    pub(super) fn new(connection: &'a Connection, week: IsoWeek) -> Self {
        Self {
            connection,
            week: week.to_string(),
        }
    }
}

impl TalliedValues for Named<'_> {
    type Error = StoreError;

    // Live and summary rows together: the bound is on what a readout of the week names.
    fn names(&mut self, dimension: Dimension, value: &str) -> Result<bool, StoreError> {
        Ok(self
            .connection
            .prepare_cached(
                "SELECT 1 FROM tallies WHERE week = ?1 AND dimension = ?2 AND value = ?3
                 UNION ALL
                 SELECT 1 FROM summaries WHERE week = ?1 AND dimension = ?2 AND value = ?3",
            )?
            .exists(params![self.week, dimension.name(), value])?)
    }

    fn distinct(&mut self, dimension: Dimension) -> Result<u64, StoreError> {
        let distinct: i64 = self
            .connection
            .prepare_cached(
                "SELECT count(*) FROM (
                     SELECT value FROM tallies WHERE week = ?1 AND dimension = ?2
                     UNION
                     SELECT value FROM summaries WHERE week = ?1 AND dimension = ?2
                 ) WHERE value <> ?3",
            )?
            .query_row(params![self.week, dimension.name(), OTHER_VALUE], |row| {
                row.get(0)
            })?;
        Ok(u64::try_from(distinct).unwrap_or(0))
    }
}
