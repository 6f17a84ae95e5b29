//! Where each session of a week sits in that week's arrival order, kept in memory so that a
//! new session is an append to its week rather than an insert at a random page.

use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::hash::{BuildHasher, Hash, Hasher};

use rusqlite::{OptionalExtension, Transaction};
use telemetry_core::IsoWeek;

/// Where each session of a week sits in that week's arrival order, for the weeks this process
/// writes to. The file is the truth: a week's map is read from it on first use, and again
/// whenever the week's generation in the file is not the one this process last wrote (another
/// process such as `import-kv` wrote to the week, or the purge deleted from it); after a
/// failed write every map is dropped. The check and the write run in one `BEGIN IMMEDIATE`
/// transaction, so no other writer can slip in between: a session never gets two rows.
#[derive(Default)]
pub(super) struct Arrivals {
    pub(super) weeks: HashMap<IsoWeek, WeekArrivals>,
}

#[derive(Default)]
pub(super) struct WeekArrivals {
    by_session: HashMap<HashedId, i64>,
    /// Keys the hashes of the session ids, so that chosen ids cannot crowd one bucket.
    id_hasher: RandomState,
    next: i64,
    pub(super) generation: i64,
}

/// A session id and its hash, computed once: when the map grows it rehashes from the stored
/// hash instead of reading every id again, which (measured at a million sessions) was an
/// eighth of the writer's time.
#[derive(PartialEq, Eq)]
struct HashedId {
    hash: u64,
    id: Box<str>,
}

impl Hash for HashedId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Week maps kept in memory: this week's and last week's (pings queued just before Monday
/// 00:00 UTC are written just after it). Older weeks are only written by `import-kv`.
const WEEKS_KEPT: usize = 2;

impl Arrivals {
    /// The week's map, checked against the file inside the caller's write transaction.
    pub(super) fn week(
        &mut self,
        transaction: &Transaction<'_>,
        week: IsoWeek,
    ) -> Result<&mut WeekArrivals, rusqlite::Error> {
        let week_text = week.to_string();
        let generation = transaction
            .prepare_cached("SELECT generation FROM weeks WHERE week = ?1")?
            .query_row([&week_text], |row| row.get::<_, i64>(0))
            .optional()?
            .unwrap_or(0);
        if !self.weeks.contains_key(&week) && self.weeks.len() >= WEEKS_KEPT {
            let oldest = self.weeks.keys().min().copied();
            oldest.map(|oldest| self.weeks.remove(&oldest));
        }
        // A week met for the first time starts empty, which is right when the file has none.
        let known = self.weeks.entry(week).or_default();
        if known.generation != generation {
            let id_hasher = &known.id_hasher;
            known.by_session = transaction
                .prepare_cached("SELECT session_id, arrival FROM sessions WHERE week = ?1")?
                .query_map([&week_text], |row| {
                    let id: String = row.get(0)?;
                    Ok((hashed(id_hasher, &id), row.get(1)?))
                })?
                .collect::<Result<_, _>>()?;
            known.next = known.by_session.values().max().map_or(0, |last| last + 1);
            known.generation = generation;
        }
        Ok(known)
    }
}

impl WeekArrivals {
    /// The session's row: its own when the week has it, else a new one at the end.
    pub(super) fn place(&mut self, session_id: &str) -> Row {
        match self.by_session.entry(hashed(&self.id_hasher, session_id)) {
            Entry::Occupied(known) => Row::Existing(*known.get()),
            Entry::Vacant(new) => {
                let arrival = self.next;
                self.next += 1;
                new.insert(arrival);
                Row::New(arrival)
            }
        }
    }
}

fn hashed(id_hasher: &RandomState, id: &str) -> HashedId {
    HashedId {
        hash: id_hasher.hash_one(id),
        id: id.into(),
    }
}

/// Where a write goes, by its arrival number.
pub(super) enum Row {
    New(i64),
    Existing(i64),
}
