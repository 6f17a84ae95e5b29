//! The one model of a week every store keeps: each session's latest record, the week's
//! tallies along every dimension, and each record's expiry ([`crate::record::expires_at`]; a
//! record has gone from that second on, `expires_at <= now` in each store's query); and how a
//! ping, a deletion or an expiry changes them. The stores (the Worker's week object, SQLite, Redis) only move rows:
//! they read what these functions need, write what they return, and nothing else.
//!
//! Data that breaks the model (a stored record that is not a record, a tally that would fall
//! below zero) is [`Inconsistent`]: the store logs it once as a `store_inconsistent` event,
//! rebuilds the week's tallies from its records with [`rebuild`] (dropping records that are
//! not records: the session's next ping writes it again), and applies the change again. It
//! is never retried as it is, so one bad row cannot stop ingestion.

use crate::dimension::Dimension;
use crate::record::record_to_write;
use crate::tally::{Tally, TallyMoves};

/// The dimension a week's count is read from: every record holds exactly one of its values,
/// and it has the fewest (five platforms), so the count is a few tally rows on every store.
pub const COUNTED_BY: Dimension = Dimension::Platform;

/// A week's count: its sessions along [`COUNTED_BY`].
pub fn count(counted_by: &Tally) -> u64 {
    counted_by.sessions()
}

/// Why a week's stored data cannot be changed as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inconsistent {
    /// A stored record is not a record as the core writes it.
    InvalidRecord,
    /// More sessions would leave a tally's value than it holds.
    TallyBelowZero,
}

impl Inconsistent {
    /// Its name in a `store_inconsistent` event.
    pub fn name(self) -> &'static str {
        match self {
            Self::InvalidRecord => "invalid_record",
            Self::TallyBelowZero => "tally_below_zero",
        }
    }

    /// Its name as a store returns it in an error text (Redis's script, the week object's
    /// answer), read back with [`Inconsistent::from_name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::InvalidRecord, Self::TallyBelowZero]
            .into_iter()
            .find(|found| found.name() == name)
    }
}

/// A stored record's values along every dimension, or why it cannot be counted.
pub fn values_of(record: &str) -> Result<[&str; 5], Inconsistent> {
    Dimension::values_in(record).ok_or(Inconsistent::InvalidRecord)
}

/// What a ping changes in its week: the record to store for its session and how the
/// week's tallies move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub record: String,
    pub moves: TallyMoves,
}

/// A ping's record `incoming` (as [`crate::SessionWrite`] holds it) against the record the
/// week holds for its session, if any: a new session is kept; a repeat that changed a field is
/// kept with the first ping's `first_seen_at`; a repeat that changed nothing changes nothing
/// (`None`). A stored record that is not a record is [`Inconsistent`].
pub fn keep(stored: Option<&str>, incoming: &str) -> Result<Option<Kept>, Inconsistent> {
    let before = stored.map(values_of).transpose()?;
    let Some(record) = record_to_write(stored, incoming) else {
        return Ok(None);
    };
    let mut moves = TallyMoves::default();
    moves.replace(before, Some(values_of(&record)?));
    Ok(Some(Kept { record, moves }))
}

/// How the tallies move when a stored record goes (a deletion request, or its expiry).
pub fn release(stored: &str) -> Result<TallyMoves, Inconsistent> {
    let mut moves = TallyMoves::default();
    moves.replace(Some(values_of(stored)?), None);
    Ok(moves)
}

/// A week's tallies made anew from its records, and the records that are not records: its
/// size is the week's distinct values and invalid records, not its records.
#[derive(Debug, PartialEq, Eq)]
pub struct Rebuilt<Key> {
    /// The tallies, as moves from nothing (every one positive).
    pub tallies: TallyMoves,
    /// The keys (session ids) of the records to drop.
    pub invalid: Vec<Key>,
}

impl<Key> Rebuilt<Key> {
    /// Counts one more of the week's records, or notes it to drop. A store adds them as it
    /// reads them (a cursor, Redis's `HSCAN` pages), so that no store holds a large week's
    /// records in memory to repair it.
    pub fn add(&mut self, key: Key, record: &str) {
        match values_of(record) {
            Ok(values) => self.tallies.replace(None, Some(values)),
            Err(_) => self.invalid.push(key),
        }
    }
}

/// Nothing yet: records are added as a store reads them. (Written out: a derived `Default`
/// would ask the key type for one.)
impl<Key> Default for Rebuilt<Key> {
    fn default() -> Self {
        Self {
            tallies: TallyMoves::default(),
            invalid: Vec::new(),
        }
    }
}

/// Tallies a week's records afresh: `(key, record)` for each record the week holds, taken
/// from an iterator (a cursor over the rows), never all at once.
pub fn rebuild<Key, Text: AsRef<str>>(
    records: impl IntoIterator<Item = (Key, Text)>,
) -> Rebuilt<Key> {
    let mut rebuilt = Rebuilt::default();
    for (key, record) in records {
        rebuilt.add(key, record.as_ref());
    }
    rebuilt
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::StoredRecord;

    fn record(daemon_version: &str, first_seen_at: &str) -> String {
        serde_json::to_string(&StoredRecord::<String> {
            protocol_version: "1.0.0".into(),
            daemon_version: daemon_version.into(),
            platform: "linux".into(),
            node_version: "v20.11.1".into(),
            primary_framework: "react".into(),
            first_seen_at: first_seen_at.into(),
        })
        .unwrap()
    }

    /// Applies moves to a tally along one dimension, as a store's rows would hold them.
    fn tally_after(moves: &TallyMoves, dimension: Dimension) -> Tally {
        let mut tally = Tally::default();
        for (moved, value, sessions) in moves.iter() {
            if moved == dimension {
                tally.add(value, u64::try_from(sessions).unwrap());
            }
        }
        tally
    }

    #[test]
    fn a_new_session_counts_once_a_repeat_moves_only_what_changed() {
        let monday = "2026-11-23T00:00:00Z";
        let tuesday = "2026-11-24T00:00:00Z";
        let first = keep(None, &record("1.0.0", monday)).unwrap().unwrap();
        assert_eq!(first.record, record("1.0.0", monday));
        assert_eq!(count(&tally_after(&first.moves, COUNTED_BY)), 1);
        let stored = Some(first.record.as_str());
        assert_eq!(keep(stored, &record("1.0.0", tuesday)), Ok(None));
        let upgrade = keep(stored, &record("1.1.0", tuesday)).unwrap().unwrap();
        assert_eq!(
            upgrade.record,
            record("1.1.0", monday),
            "the first day stays"
        );
        let moved: Vec<_> = upgrade
            .moves
            .iter()
            .map(|(d, v, n)| (d.name(), v, n))
            .collect();
        assert_eq!(
            moved,
            [
                ("daemon_version", "1.0.0", -1),
                ("daemon_version", "1.1.0", 1)
            ]
        );
        let mut all = first.moves.clone();
        all.extend(&upgrade.moves);
        all.extend(&release(&upgrade.record).unwrap());
        assert!(all.is_empty(), "{all:?}");
    }

    #[test]
    fn a_stored_record_that_is_not_a_record_is_inconsistent_and_dropped_by_a_rebuild() {
        let incoming = record("1.0.0", "2026-11-23T00:00:00Z");
        for damaged in ["", "{}", "garbage", r#"{"platform":"linux"}"#] {
            assert_eq!(
                keep(Some(damaged), &incoming),
                Err(Inconsistent::InvalidRecord)
            );
            assert_eq!(release(damaged), Err(Inconsistent::InvalidRecord));
        }
        let rebuilt = rebuild([
            ("a", incoming.as_str()),
            ("b", "garbage"),
            ("c", incoming.as_str()),
        ]);
        assert_eq!(rebuilt.invalid, ["b"]);
        assert_eq!(count(&tally_after(&rebuilt.tallies, COUNTED_BY)), 2);
        for dimension in Dimension::ALL {
            assert_eq!(tally_after(&rebuilt.tallies, dimension).sessions(), 2);
        }
    }

    #[test]
    fn names_of_inconsistencies_read_back() {
        for found in [Inconsistent::InvalidRecord, Inconsistent::TallyBelowZero] {
            assert_eq!(Inconsistent::from_name(found.name()), Some(found));
        }
        assert_eq!(Inconsistent::from_name("other"), None);
    }
}
