//! ISO 8601 weeks: the week a UTC instant falls in, parsing `YYYY-Www` strictly, and which
//! of a week's shards (the Worker's objects) keeps a session.

use std::fmt;

use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use time::util::weeks_in_year;

/// A week that exists: `week` is between 1 and the number of ISO weeks in `year` (52 or 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IsoWeek {
    year: i32,
    week: u8,
}

impl IsoWeek {
    /// The ISO week of an instant, on the UTC calendar whatever the instant's offset.
    pub fn containing(instant: OffsetDateTime) -> Self {
        let (year, week, _) = instant.to_offset(time::UtcOffset::UTC).to_iso_week_date();
        Self { year, week }
    }

    /// Parses exactly `YYYY-Www` (four-digit year from 0001, two-digit week, upper-case W)
    /// and only weeks that exist: `2026-W53` does, `2025-W53` and `W00` do not.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        let [y0, y1, y2, y3, b'-', b'W', w0, w1] = *bytes else {
            return None;
        };
        let digits = [y0, y1, y2, y3, w0, w1];
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let number = |ds: &[u8]| ds.iter().fold(0i32, |n, d| n * 10 + i32::from(d - b'0'));
        let year = number(&[y0, y1, y2, y3]);
        let week = u8::try_from(number(&[w0, w1])).ok()?;
        (year >= 1 && (1..=weeks_in_year(year)).contains(&week)).then_some(Self { year, week })
    }

    /// The week after this one, across a year's end; `None` after 9999-W52, which no
    /// four-digit year follows.
    pub fn next(self) -> Option<Self> {
        if self.week < weeks_in_year(self.year) {
            return Some(Self {
                week: self.week + 1,
                ..self
            });
        }
        (self.year < 9999).then_some(Self {
            year: self.year + 1,
            week: 1,
        })
    }

    /// The weeks from this one to `to`, both included, in order; `None` when `to` comes
    /// before it or the span holds more than `at_most` weeks.
    pub fn through(self, to: IsoWeek, at_most: usize) -> Option<Vec<IsoWeek>> {
        let mut weeks = vec![self];
        let mut week = self;
        while week < to {
            week = week.next()?;
            weeks.push(week);
            if weeks.len() > at_most {
                return None;
            }
        }
        (self <= to).then_some(weeks)
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn week(self) -> u8 {
        self.week
    }
}

impl fmt::Display for IsoWeek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-W{:02}", self.year, self.week)
    }
}

/// As its `YYYY-Www` text (a wide event's `week`).
impl Serialize for IsoWeek {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The most objects a week may be spread over (`WEEK_SHARDS`): a readout asks each of them,
/// so a series of [`crate::readout::MAX_SERIES_WEEKS`] weeks makes at most 105 × 64 requests,
/// inside a Paid plan invocation's 10,000.
pub const MAX_WEEK_SHARDS: u16 = 64;

/// Which of a week's `shards` objects keeps a session: FNV-1a (32 bits) of its id, modulo the
/// shards. Stable across isolates, deployments and targets, and spread evenly whatever the
/// ids look like (a relay's are random; a counter's are not).
pub fn shard_of(session_id: &str, shards: u16) -> u16 {
    let hash = session_id.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    (hash % u32::from(shards.max(1))) as u16
}

/// The name of a week's object `shard`: the week itself for shard 0, so that a deployment
/// of one shard names its objects as before shards existed; `YYYY-Www.<shard>` otherwise.
pub fn week_object_name(week: IsoWeek, shard: u16) -> String {
    match shard {
        0 => week.to_string(),
        shard => format!("{week}.{shard}"),
    }
}

/// The week a [`week_object_name`] names, its shard aside.
pub fn week_of_object_name(name: &str) -> Option<IsoWeek> {
    IsoWeek::parse(name.split_once('.').map_or(name, |(week, _)| week))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_week_is_the_week_seven_days_later_across_long_and_short_years() {
        let mut week = IsoWeek::parse("2019-W50").unwrap();
        for _ in 0..600 {
            let monday =
                time::Date::from_iso_week_date(week.year(), week.week(), time::Weekday::Monday)
                    .unwrap();
            let later = monday.midnight().assume_utc() + time::Duration::days(7);
            let next = week.next().unwrap();
            assert_eq!(next, IsoWeek::containing(later), "after {week}");
            week = next;
        }
        assert_eq!(IsoWeek::parse("9999-W52").unwrap().next(), None);
    }
    use time::macros::datetime;

    #[test]
    fn dates_fall_in_their_iso_weeks() {
        let table = [
            (datetime!(2024-01-01 00:00 UTC), "2024-W01"),
            (datetime!(2023-01-01 12:00 UTC), "2022-W52"),
            (datetime!(2025-12-29 00:00 UTC), "2026-W01"),
            (datetime!(2026-01-01 00:00 UTC), "2026-W01"),
            (datetime!(2020-12-31 23:59:59 UTC), "2020-W53"),
            (datetime!(2021-01-03 23:59:59 UTC), "2020-W53"),
            (datetime!(2021-01-04 00:00 UTC), "2021-W01"),
            (datetime!(2027-01-01 00:00 UTC), "2026-W53"),
            (datetime!(2026-12-31 00:00 UTC), "2026-W53"),
            (datetime!(2026-11-23 01:34 UTC), "2026-W48"),
            (datetime!(2019-12-30 00:00 UTC), "2020-W01"),
            (datetime!(2016-01-03 00:00 UTC), "2015-W53"),
            (datetime!(2008-12-29 00:00 UTC), "2009-W01"),
        ];
        for (instant, expected) in table {
            assert_eq!(
                IsoWeek::containing(instant).to_string(),
                expected,
                "{instant}"
            );
        }
    }

    #[test]
    fn the_week_is_decided_on_the_utc_calendar() {
        // Monday 00:30 in UTC+2 is still Sunday in UTC: the previous week.
        let instant = datetime!(2026-11-23 00:30 +2);
        assert_eq!(IsoWeek::containing(instant).to_string(), "2026-W47");
    }

    #[test]
    fn sessions_spread_evenly_over_a_week_s_shards_and_stay_in_theirs() {
        let mut held = [0u32; 7];
        for n in 0..70_000 {
            held[usize::from(shard_of(&format!("relay-{n:08}"), 7))] += 1;
        }
        // Within 5% of a seventh each, for ids that differ only in a counter.
        assert!(
            held.iter().all(|&n| (9_500..=10_500).contains(&n)),
            "{held:?}"
        );
        assert_eq!(shard_of("relay-00000001", 7), shard_of("relay-00000001", 7));
        assert_eq!(shard_of("anything", 1), 0);
        assert_eq!(shard_of("anything", 0), 0);
        // The hash itself is part of the protocol: a change would move every session.
        assert_eq!(shard_of("a", u16::MAX), (0xe40c_292c_u32 % 65_535) as u16);
    }

    #[test]
    fn a_week_s_objects_are_named_by_the_week_and_shard_and_name_their_week() {
        let week = IsoWeek::parse("2026-W48").unwrap();
        assert_eq!(week_object_name(week, 0), "2026-W48");
        assert_eq!(week_object_name(week, 3), "2026-W48.3");
        for shard in [0, 1, 63] {
            assert_eq!(
                week_of_object_name(&week_object_name(week, shard)),
                Some(week)
            );
        }
        assert_eq!(week_of_object_name("2026-W54.1"), None);
        assert_eq!(week_of_object_name("garbage"), None);
    }

    #[test]
    fn only_real_weeks_parse() {
        for good in [
            "2026-W01", "2026-W48", "2026-W53", "2020-W53", "2015-W53", "0001-W01",
        ] {
            assert_eq!(
                IsoWeek::parse(good).map(|w| w.to_string()).as_deref(),
                Some(good)
            );
        }
        for bad in [
            "2025-W53",
            "2026-W00",
            "2026-W54",
            "2026-W99",
            "2026-w48",
            "2026W48",
            "2026-W4",
            "2026-W048",
            "26-W48",
            "0000-W01",
            "+026-W48",
            "2026-W4a",
            "",
            "2026-W48 ",
            "２０２６-W48",
        ] {
            assert_eq!(IsoWeek::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parsing_round_trips_every_week_of_a_long_span() {
        for year in 1990..2100 {
            for week in 1..=weeks_in_year(year) {
                let text = format!("{year:04}-W{week:02}");
                let parsed = IsoWeek::parse(&text).unwrap();
                assert_eq!((parsed.year(), parsed.week()), (year, week));
            }
            assert_eq!(
                IsoWeek::parse(&format!("{year:04}-W{:02}", weeks_in_year(year) + 1)),
                None
            );
        }
    }
}
