//! A week's sessions counted by value along each dimension, and how those counts move as
//! records change: every store keeps them beside the records, changed in one transaction.

use crate::dimension::Dimension;

/// A week's sessions counted by value along one dimension, in order of value. A sorted list
/// rather than a map: a dimension has few values, and the Worker's bundle then carries no
/// B-tree code (about 7 KB of it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally(Vec<(String, u64)>);

impl Tally {
    /// Counts `sessions` more under `value`.
    pub fn add(&mut self, value: &str, sessions: u64) {
        match self
            .0
            .binary_search_by(|(known, _)| known.as_str().cmp(value))
        {
            Ok(at) => {
                if let Some((_, count)) = self.0.get_mut(at) {
                    *count += sessions;
                }
            }
            Err(at) => self.0.insert(at, (value.to_owned(), sessions)),
        }
    }

    /// A tally from rows in any order (a Redis hash's), sorted once: linear in its values but
    /// for the sort, where [`Tally::add`] row by row would move the list for each one.
    pub fn from_rows(mut rows: Vec<(String, u64)>) -> Self {
        rows.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        let mut merged: Vec<(String, u64)> = Vec::with_capacity(rows.len());
        for (value, sessions) in rows {
            match merged.last_mut() {
                Some((last, count)) if *last == value => *count += sessions,
                _ => merged.push((value, sessions)),
            }
        }
        Self(merged)
    }

    /// Counts every session of `other` too: a week's summary rows added to its live ones.
    pub fn add_all(&mut self, other: &Tally) {
        for (value, sessions) in other.iter() {
            self.add(value, sessions);
        }
    }

    /// The values and their sessions, in order of value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0
            .iter()
            .map(|(value, sessions)| (value.as_str(), *sessions))
    }

    /// Every session it counts: each live record counts once along any dimension.
    pub fn sessions(&self) -> u64 {
        self.0.iter().map(|(_, sessions)| sessions).sum()
    }

    pub fn into_values(self) -> Vec<(String, u64)> {
        self.0
    }
}

/// How a week's tallies move as its records change, summed over any number of changes: the
/// sessions each (dimension, value) gains or loses. A list rather than a map: a batch moves
/// few distinct values, and the Worker's bundle carries no hash map for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TallyMoves(Vec<(Dimension, String, i64)>);

impl TallyMoves {
    /// A record replaced by another, each given by its values along every dimension (in the
    /// order of [`Dimension::ALL`], as [`Dimension::values_in`] reads them); `None`: a session
    /// new to the week, or one deleted or expired. Each dimension counts the session under its
    /// latest value only, so a relay that upgrades mid-week moves from one version to the other.
    pub fn replace(&mut self, before: Option<[&str; 5]>, after: Option<[&str; 5]>) {
        for (at, dimension) in Dimension::ALL.into_iter().enumerate() {
            let old = before.and_then(|values| values.get(at).copied());
            let new = after.and_then(|values| values.get(at).copied());
            if old == new {
                continue;
            }
            if let Some(old) = old {
                self.add(dimension, old, -1);
            }
            if let Some(new) = new {
                self.add(dimension, new, 1);
            }
        }
    }

    /// Adds the moves of `other` to these.
    pub fn extend(&mut self, other: &TallyMoves) {
        for (dimension, value, sessions) in other.iter() {
            self.add(dimension, value, sessions);
        }
    }

    fn add(&mut self, dimension: Dimension, value: &str, sessions: i64) {
        match self
            .0
            .iter_mut()
            .find(|(known, known_value, _)| *known == dimension && known_value == value)
        {
            Some((_, _, moved)) => *moved += sessions,
            None => self.0.push((dimension, value.to_owned(), sessions)),
        }
    }

    /// Each (dimension, value) whose sessions moved, and by how many.
    pub fn iter(&self) -> impl Iterator<Item = (Dimension, &str, i64)> {
        self.0
            .iter()
            .filter(|(_, _, sessions)| *sessions != 0)
            .map(|(dimension, value, sessions)| (*dimension, value.as_str(), *sessions))
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

/// How a week's sessions move between profiles (a record's values along every dimension at
/// once, in the order of [`Dimension::ALL`]), summed over any number of changes: the same
/// moves as [`TallyMoves`], for a store that keeps one row per profile, so that a new session
/// writes one row rather than one per dimension (the Worker's week object: rows written are
/// most of its bill). A dimension's tally is then its profiles' sessions summed by value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileMoves(Vec<(String, i64)>);

/// What separates a profile's values in [`ProfileMoves::iter`]: no validated value holds one.
pub const PROFILE_SEPARATOR: char = '\t';

impl ProfileMoves {
    /// A record replaced by another, as [`TallyMoves::replace`] takes them.
    pub fn replace(&mut self, before: Option<[&str; 5]>, after: Option<[&str; 5]>) {
        if before == after {
            return;
        }
        if let Some(before) = before {
            self.add(before, -1);
        }
        if let Some(after) = after {
            self.add(after, 1);
        }
    }

    /// Adds `sessions` to a profile's move.
    pub fn add(&mut self, profile: [&str; 5], sessions: i64) {
        let mut key = String::new();
        for value in profile {
            if !key.is_empty() {
                key.push(PROFILE_SEPARATOR);
            }
            key.push_str(value);
        }
        // Sorted, so that a repair's rebuild (a week's every record, its few profiles) costs
        // a binary search per record, not a walk of every profile.
        match self
            .0
            .binary_search_by(|(known, _)| known.as_str().cmp(&key))
        {
            Ok(at) => {
                if let Some((_, moved)) = self.0.get_mut(at) {
                    *moved += sessions;
                }
            }
            Err(at) => self.0.insert(at, (key, sessions)),
        }
    }

    /// Each profile whose sessions moved, as its values in the order of [`Dimension::ALL`]
    /// joined by [`PROFILE_SEPARATOR`], and by how many.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        (self.0.iter())
            .filter(|(_, sessions)| *sessions != 0)
            .map(|(profile, sessions)| (profile.as_str(), *sessions))
    }
}

/// One tally row after a move: `Some(sessions)` to keep, `None` when it falls to zero (a
/// tally never names a value no live record holds), or an error when more sessions leave a
/// value than it holds — the tallies disagree with the records, and the week must be rebuilt.
/// `held` is 0 for a row the store does not have.
pub fn moved_row(held: u64, moved: i64) -> Result<Option<u64>, crate::stored_week::Inconsistent> {
    let after = i128::from(held) + i128::from(moved);
    match u64::try_from(after) {
        Ok(0) => Ok(None),
        Ok(after) => Ok(Some(after)),
        Err(_) => Err(crate::stored_week::Inconsistent::TallyBelowZero),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(daemon_version: &'static str, node_major: &'static str) -> [&'static str; 5] {
        ["linux", "react", daemon_version, "1.0.0", node_major]
    }

    fn moved(moves: &TallyMoves) -> Vec<(&'static str, String, i64)> {
        let mut moved: Vec<_> = moves
            .iter()
            .map(|(d, value, n)| (d.name(), value.to_owned(), n))
            .collect();
        moved.sort();
        moved
    }

    #[test]
    fn profile_moves_sum_to_the_tally_moves_of_the_same_changes() {
        let changes = [
            (None, Some(values("0.9.3", "20"))),
            (None, Some(values("0.9.3", "22"))),
            (Some(values("0.9.3", "20")), Some(values("1.0.0", "20"))),
            (Some(values("0.9.3", "22")), Some(values("0.9.3", "22"))),
            (Some(values("1.0.0", "20")), None),
        ];
        let (mut tallies, mut profiles) = (TallyMoves::default(), ProfileMoves::default());
        for (before, after) in changes {
            tallies.replace(before, after);
            profiles.replace(before, after);
        }
        // Only the second session is left, on its one profile.
        let left: Vec<_> = profiles.iter().collect();
        assert_eq!(left, vec![("linux\treact\t0.9.3\t1.0.0\t22", 1)]);
        // Summed by value along each dimension, the profiles move as the tallies do.
        let mut summed = TallyMoves::default();
        for (profile, sessions) in profiles.iter() {
            let values: Vec<&str> = profile.split(PROFILE_SEPARATOR).collect();
            for _ in 0..sessions {
                summed.replace(None, Some(values.clone().try_into().unwrap()));
            }
        }
        assert_eq!(moved(&summed), moved(&tallies));
    }

    #[test]
    fn tallies_move_a_session_to_its_latest_value_and_out_when_it_goes() {
        let first = values("1.0.0", "20");
        let upgraded = values("1.1.0", "22");
        let mut moves = TallyMoves::default();
        moves.replace(None, Some(first));
        let mut new: Vec<_> = Dimension::ALL
            .iter()
            .zip(first)
            .map(|(d, value)| (d.name(), value.to_owned(), 1))
            .collect();
        new.sort();
        assert_eq!(
            moved(&moves),
            new,
            "a new session counts once along every dimension"
        );
        // The upgrade moves the session from one version to the other, once; the values
        // that stay put do not move at all.
        let mut upgrade = TallyMoves::default();
        upgrade.replace(Some(first), Some(upgraded));
        assert_eq!(
            moved(&upgrade),
            [
                ("daemon_version", "1.0.0".to_owned(), -1),
                ("daemon_version", "1.1.0".to_owned(), 1),
                ("node_major", "20".to_owned(), -1),
                ("node_major", "22".to_owned(), 1),
            ]
        );
        // Summed with the first write and a deletion of the latest record: nothing is left.
        moves.extend(&upgrade);
        moves.replace(Some(upgraded), None);
        assert!(moves.is_empty(), "{moves:?}");
    }

    #[test]
    fn a_tally_row_falls_to_nothing_at_zero_and_never_below() {
        assert_eq!(moved_row(0, 1), Ok(Some(1)));
        assert_eq!(moved_row(3, -1), Ok(Some(2)));
        assert_eq!(moved_row(1, -1), Ok(None));
        assert!(moved_row(0, -1).is_err());
        assert!(moved_row(2, -3).is_err());
        assert_eq!(moved_row(u64::MAX, 0), Ok(Some(u64::MAX)));
    }

    #[test]
    fn a_tally_keeps_its_values_in_order_and_counts_every_session() {
        let mut tally = Tally::default();
        for (value, sessions) in [("b", 2), ("a", 1), ("b", 3)] {
            tally.add(value, sessions);
        }
        assert_eq!(tally.iter().collect::<Vec<_>>(), [("a", 1), ("b", 5)]);
        assert_eq!(tally.sessions(), 6);
        let rows = [("b", 2), ("a", 1), ("b", 3)].map(|(v, n)| (v.to_owned(), n));
        assert_eq!(
            Tally::from_rows(rows.to_vec()),
            tally,
            "the same from rows in any order"
        );
    }
}
