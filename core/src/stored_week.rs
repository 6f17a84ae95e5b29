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
use crate::limits::MAX_TALLIED_VALUES;
use crate::record::record_to_write;
use crate::summary::Leaving;
use crate::tally::{Tally, TallyMoves};

/// The value a session is counted (and stored) under along a dimension whose tally already
/// names [`MAX_TALLIED_VALUES`] others. No ping's value is it: platforms and frameworks are
/// fixed names, versions are semver.
pub const OTHER_VALUE: &str = "other";

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

/// What a store tells [`Vocabulary`] about a week's tallies as it holds them now: read in the
/// transaction that writes (SQLite, the week's object), or from a snapshot whose generation
/// the write checks (Redis).
pub trait TalliedValues {
    type Error;
    /// Whether the week's tally along `dimension` names `value`.
    fn names(&mut self, dimension: Dimension, value: &str) -> Result<bool, Self::Error>;
    /// How many values the week's tally along `dimension` names, [`OTHER_VALUE`] aside.
    fn distinct(&mut self, dimension: Dimension) -> Result<u64, Self::Error>;
}

/// A week's named values as a batch of pings sees them: the store's, and those the batch
/// added before its tallies are written. What a batch takes to zero is not given back until
/// the next batch, so the bound holds whatever the order.
pub struct Vocabulary<Store> {
    store: Store,
    /// (dimension, value) known to be named, sorted: looked up once per batch.
    named: Vec<(u8, String)>,
    distinct: [Option<u64>; 5],
    /// Whether this batch names a value the store did not: a store checked by generation
    /// (Redis) must then check that no one else named one meanwhile.
    pub grew: bool,
}

impl<Store: TalliedValues> Vocabulary<Store> {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            named: Vec::new(),
            distinct: [None; 5],
            grew: false,
        }
    }

    /// Whether `value` may be counted under its own name along `dimension`: the tally names it
    /// already, or names fewer than [`MAX_TALLIED_VALUES`] (and then names it from now on).
    pub fn admits(&mut self, dimension: Dimension, value: &str) -> Result<bool, Store::Error> {
        let at = dimension as usize;
        let key = (at as u8, value);
        let position = self
            .named
            .binary_search_by(|(d, v)| (*d, v.as_str()).cmp(&key));
        let Err(insert_at) = position else {
            return Ok(true);
        };
        if value == OTHER_VALUE || self.store.names(dimension, value)? {
            self.named.insert(insert_at, (key.0, value.to_owned()));
            return Ok(true);
        }
        let distinct = match self.distinct.get(at).copied().flatten() {
            Some(distinct) => distinct,
            None => self.store.distinct(dimension)?,
        };
        let admitted = distinct < MAX_TALLIED_VALUES;
        if let Some(slot) = self.distinct.get_mut(at) {
            *slot = Some(distinct + u64::from(admitted));
        }
        if admitted {
            self.named.insert(insert_at, (key.0, value.to_owned()));
            self.grew = true;
        }
        Ok(admitted)
    }
}

/// Why [`keep_within`] could not decide: the week is inconsistent, or the store failed.
#[derive(Debug, PartialEq, Eq)]
pub enum KeepError<E> {
    Inconsistent(Inconsistent),
    Store(E),
}

/// [`keep`], with each of the ping's values that its session does not hold already counted
/// under its own name only if `vocabulary` admits it, else as [`OTHER_VALUE`], in the record
/// too. A repeat of a session counted as other is then unchanged while its value still does not
/// fit, and moves to its own name once it does.
pub fn keep_within<Store: TalliedValues>(
    stored: Option<&str>,
    incoming: &str,
    vocabulary: &mut Vocabulary<Store>,
) -> Result<Option<Kept>, KeepError<Store::Error>> {
    let before = (stored.map(values_of).transpose()).map_err(KeepError::Inconsistent)?;
    let values = values_of(incoming).map_err(KeepError::Inconsistent)?;
    let mut folded: Option<String> = None;
    for (at, dimension) in Dimension::ALL.into_iter().enumerate() {
        let value = values.get(at).copied().unwrap_or_default();
        let holds_it = before.is_some_and(|before| before.get(at) == Some(&value));
        if !holds_it
            && !vocabulary
                .admits(dimension, value)
                .map_err(KeepError::Store)?
        {
            let record = folded.as_deref().unwrap_or(incoming);
            folded = Some(
                as_other(record, dimension)
                    .ok_or(KeepError::Inconsistent(Inconsistent::InvalidRecord))?,
            );
        }
    }
    keep(stored, folded.as_deref().unwrap_or(incoming)).map_err(KeepError::Inconsistent)
}

/// The record's text with its field along `dimension` (the whole Node version, for its
/// major) replaced by [`OTHER_VALUE`]; `None` if the record has no such field.
fn as_other(record: &str, dimension: Dimension) -> Option<String> {
    let name = format!("\"{}\":\"", dimension.field());
    let start = record.find(&name)? + name.len();
    let end = start + record.get(start..)?.find('"')?;
    Some(format!(
        "{}{OTHER_VALUE}{}",
        record.get(..start)?,
        record.get(end..)?
    ))
}

/// How the tallies move when a stored record goes (a deletion request, or its expiry).
pub fn release(stored: &str) -> Result<TallyMoves, Inconsistent> {
    let mut moves = TallyMoves::default();
    moves.replace(Some(values_of(stored)?), None);
    Ok(moves)
}

/// How a week's rows move when a stored record goes: its live tallies always lose it (they
/// match the records), and its summary rows gain it when the session stays counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Departure {
    pub live: TallyMoves,
    pub summary: TallyMoves,
}

impl Departure {
    /// Adds another record's going to this one (an expiry's batch).
    pub fn extend(&mut self, other: &Departure) {
        self.live.extend(&other.live);
        self.summary.extend(&other.summary);
    }
}

/// [`release`], and for a [`Leaving::Summarised`] session the same values added to the
/// week's summary, so that the week's numbers (live and summary added) do not change.
pub fn depart(stored: &str, leaving: Leaving) -> Result<Departure, Inconsistent> {
    let values = values_of(stored)?;
    let mut departure = Departure::default();
    departure.live.replace(Some(values), None);
    if leaving == Leaving::Summarised {
        departure.summary.replace(None, Some(values));
    }
    Ok(departure)
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

    /// A store's tally rows in memory, as SQLite's `tallies` table holds them.
    #[derive(Default)]
    struct Rows(std::collections::BTreeMap<(&'static str, String), u64>);

    impl Rows {
        fn apply(&mut self, moves: &TallyMoves) {
            for (dimension, value, sessions) in moves.iter() {
                let key = (dimension.name(), value.to_owned());
                let held = self.0.get(&key).copied().unwrap_or(0);
                match crate::tally::moved_row(held, sessions).unwrap() {
                    Some(after) => self.0.insert(key, after),
                    None => self.0.remove(&key),
                };
            }
        }

        fn along(&self, dimension: Dimension) -> Vec<(&str, u64)> {
            (self.0.iter())
                .filter(|((d, _), _)| *d == dimension.name())
                .map(|((_, value), sessions)| (value.as_str(), *sessions))
                .collect()
        }
    }

    impl TalliedValues for &Rows {
        type Error = ();
        fn names(&mut self, dimension: Dimension, value: &str) -> Result<bool, ()> {
            Ok(self.0.contains_key(&(dimension.name(), value.to_owned())))
        }
        fn distinct(&mut self, dimension: Dimension) -> Result<u64, ()> {
            let along = self.along(dimension);
            Ok(along.iter().filter(|(v, _)| *v != OTHER_VALUE).count() as u64)
        }
    }

    /// Keeps a batch of (session, record) in `rows` and `records` as a store does: one
    /// vocabulary per batch, the tallies moved once at its end.
    fn keep_batch(
        rows: &mut Rows,
        records: &mut std::collections::BTreeMap<String, String>,
        batch: &[(String, String)],
    ) {
        let mut moves = TallyMoves::default();
        {
            let mut vocabulary = Vocabulary::new(&*rows);
            for (session, incoming) in batch {
                let stored = records.get(session).map(String::as_str);
                if let Some(kept) = keep_within(stored, incoming, &mut vocabulary).unwrap() {
                    moves.extend(&kept.moves);
                    records.insert(session.clone(), kept.record);
                }
            }
        }
        rows.apply(&moves);
    }

    #[test]
    fn a_flood_of_distinct_values_is_tallied_as_a_thousand_and_other() {
        let monday = "2026-11-23T00:00:00Z";
        let (mut rows, mut records) = (Rows::default(), std::collections::BTreeMap::new());
        let flood: Vec<(String, String)> = (0..100_000)
            .map(|n| {
                (
                    format!("flood-{n:06}"),
                    record(&format!("1.0.0-x{n}"), monday),
                )
            })
            .collect();
        for batch in flood.chunks(5_000) {
            keep_batch(&mut rows, &mut records, batch);
        }
        let versions = rows.along(Dimension::DaemonVersion);
        let limit = usize::try_from(MAX_TALLIED_VALUES).unwrap();
        assert_eq!(versions.len(), limit + 1, "a thousand values and other");
        assert_eq!(versions.iter().map(|(_, n)| n).sum::<u64>(), 100_000);
        let other = versions.iter().find(|(v, _)| *v == OTHER_VALUE).unwrap().1;
        assert_eq!(other, 100_000 - MAX_TALLIED_VALUES);
        assert_eq!(rows.along(Dimension::Platform), [("linux", 100_000)]);
        // The records hold what they are counted under: a rebuild gives the same rows.
        let rebuilt = rebuild(records.iter().map(|(k, v)| (k.clone(), v.as_str())));
        let mut from_records = Rows::default();
        from_records.apply(&rebuilt.tallies);
        assert_eq!(from_records.0, rows.0);
        // A folded session's repeat changes nothing while its value still does not fit.
        let (session, incoming) = flood.last().unwrap();
        let stored = records.get(session).map(String::as_str);
        let mut vocabulary = Vocabulary::new(&rows);
        assert_eq!(keep_within(stored, incoming, &mut vocabulary), Ok(None));
        assert!(!vocabulary.grew);
    }

    #[test]
    fn a_session_counted_as_other_moves_to_its_own_value_once_there_is_room_and_leaves_exactly() {
        let monday = "2026-11-23T00:00:00Z";
        let (mut rows, mut records) = (Rows::default(), std::collections::BTreeMap::new());
        let limit = usize::try_from(MAX_TALLIED_VALUES).unwrap();
        let first: Vec<(String, String)> = (0..limit)
            .map(|n| (format!("early-{n:04}"), record(&format!("2.0.{n}"), monday)))
            .collect();
        keep_batch(&mut rows, &mut records, &first);
        let late = ("late-relay".to_owned(), record("3.0.0", monday));
        keep_batch(&mut rows, &mut records, std::slice::from_ref(&late));
        assert!(records["late-relay"].contains(r#""daemon_version":"other""#));
        assert!(
            rows.0
                .contains_key(&("daemon_version", OTHER_VALUE.to_owned()))
        );
        // One of the early sessions is deleted: its value's row goes, and the late one's
        // next ping takes the room.
        let gone = records.remove("early-0000").unwrap();
        rows.apply(&release(&gone).unwrap());
        keep_batch(&mut rows, &mut records, std::slice::from_ref(&late));
        assert!(records["late-relay"].contains(r#""daemon_version":"3.0.0""#));
        assert!(
            !rows
                .0
                .contains_key(&("daemon_version", OTHER_VALUE.to_owned()))
        );
        assert_eq!(rows.0[&("daemon_version", "3.0.0".to_owned())], 1);
        // Folded along Node's major too: the whole version is stored as other. The week names
        // one major already (20), so the last of a thousand new ones does not fit.
        let node_flood: Vec<(String, String)> = (0..limit)
            .map(|n| {
                let text =
                    record("2.0.1", monday).replace("v20.11.1", &format!("v{}.0.0", n + 100));
                (format!("node-{n:04}"), text)
            })
            .collect();
        keep_batch(&mut rows, &mut records, &node_flood);
        let folded = &records[&format!("node-{:04}", limit - 1)];
        assert!(folded.contains(r#""node_version":"other""#), "{folded}");
        rows.apply(&release(folded).unwrap());
        assert!(
            rows.along(Dimension::NodeMajor)
                .iter()
                .all(|(v, _)| *v != OTHER_VALUE)
        );
    }

    #[test]
    fn names_of_inconsistencies_read_back() {
        for found in [Inconsistent::InvalidRecord, Inconsistent::TallyBelowZero] {
            assert_eq!(Inconsistent::from_name(found.name()), Some(found));
        }
        assert_eq!(Inconsistent::from_name("other"), None);
    }
}
