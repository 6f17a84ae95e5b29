//! Week summaries: what a week keeps of its counts once its records go, and for how long.
//!
//! A week's numbers are its tallies. Its records are only how a store tells a repeat from a
//! new session, and they expire with the TTL. When summaries are kept
//! (`SUMMARY_RETENTION_WEEKS` > 0), a record that expires leaves its session counted: the
//! store moves it from the week's live tallies (which always match its records, so that a
//! repair can rebuild them) into the week's summary rows, which hold counts by value and no
//! session id. A readout reads both, added, so that a week answers exactly as it did before
//! its records went, for [`Retention::summary_weeks`] after it ends.
//!
//! An erasure or deletion takes the session out of the count until the week's summary is
//! made ([`summary_made_at`]: the hour after the week ends, when its last pings have been
//! written); from then on it deletes the record but changes no count, since a summary is an
//! aggregate, not a record of the person.

use crate::week::IsoWeek;

/// Weeks a summary is kept after its week ends: two years, so that a year compares with the
/// one before it.
pub const DEFAULT_SUMMARY_RETENTION_WEEKS: u32 = 104;

/// The longest retention an operator may configure: ten years.
pub const MAX_SUMMARY_RETENTION_WEEKS: u32 = 520;

/// How long after a week ends its pings may still be written: a ping sent just before Monday
/// 00:00 UTC waits in the rollback's queue or the Worker's `waitUntil` for seconds, and one
/// held by a store that was down is written when it answers again, within the hour.
pub const LATE_WRITES_SECONDS: i64 = 60 * 60;

const WEEK_SECONDS: i64 = 7 * 24 * 60 * 60;

/// What happens to a session's count when its record leaves the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaving {
    /// The session is no longer counted: its week's tallies lose it.
    Uncounted,
    /// The session stays counted: it moves from the week's live tallies to its summary.
    Summarised,
}

/// How long a store keeps what: records for the TTL, summaries for `summary_weeks` after
/// their week ends (0: none, and a week's numbers go with its records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub session_ttl_seconds: u64,
    pub summary_weeks: u32,
}

/// The defaults: records for 12 weeks, summaries for 104.
impl Default for Retention {
    fn default() -> Self {
        Self {
            session_ttl_seconds: crate::limits::DEFAULT_SESSION_TTL_SECONDS,
            summary_weeks: DEFAULT_SUMMARY_RETENTION_WEEKS,
        }
    }
}

impl Retention {
    pub fn keeps_summaries(self) -> bool {
        self.summary_weeks > 0
    }

    /// What a record's expiry does to its session's count.
    pub fn on_expiry(self) -> Leaving {
        if self.keeps_summaries() {
            Leaving::Summarised
        } else {
            Leaving::Uncounted
        }
    }

    /// What an erasure or deletion at `now` (seconds since the epoch) does to the count of a
    /// session's record in `week`: it takes the session out of the summary the week will
    /// become, and changes no count once the summary is made.
    pub fn on_deletion(self, week: IsoWeek, now: i64) -> Leaving {
        if self.keeps_summaries() && now >= summary_made_at(week) {
            Leaving::Summarised
        } else {
            Leaving::Uncounted
        }
    }

    /// When the week's summary goes, in seconds since the epoch; `None` when none is kept.
    pub fn summary_expires_at(self, week: IsoWeek) -> Option<i64> {
        self.keeps_summaries()
            .then(|| week_end(week).saturating_add(i64::from(self.summary_weeks) * WEEK_SECONDS))
    }

    /// Whether a store may still hold anything of `week` at `now`: its summary, or (without
    /// summaries) a record written in it. A readout of a week past this says so, so that it
    /// reads differently from a week without sessions.
    pub fn keeps(self, week: IsoWeek, now: i64) -> bool {
        let records_until = self.records_until(week);
        let until = self
            .summary_expires_at(week)
            .map_or(records_until, |summary| summary.max(records_until));
        now < until
    }

    /// Whether a store may hold anything of `week` at `now`: the week is kept and has begun.
    pub fn may_hold(self, week: IsoWeek, now: i64) -> bool {
        self.keeps(week, now) && week_end(week).saturating_sub(WEEK_SECONDS) <= now
    }

    /// When the last record `week` may hold has surely expired: the week's end, the hour its
    /// late writes take, and the TTL.
    pub fn records_until(self, week: IsoWeek) -> i64 {
        let ttl = i64::try_from(self.session_ttl_seconds).unwrap_or(i64::MAX);
        summary_made_at(week).saturating_add(ttl)
    }

    /// The oldest week whose summary is still kept at `now`; a store deletes the summaries of
    /// weeks before it. `None` when no summary is kept.
    pub fn oldest_summarised(self, now: i64) -> Option<IsoWeek> {
        let kept_for = i64::from(self.summary_weeks).checked_mul(WEEK_SECONDS)?;
        let oldest_end = now.checked_sub(kept_for)?;
        // The week that ends after `oldest_end`: the one containing it.
        let instant = time::OffsetDateTime::from_unix_timestamp(oldest_end).ok()?;
        self.keeps_summaries().then(|| IsoWeek::containing(instant))
    }
}

/// When `week` ends: the Monday 00:00 UTC after it, in seconds since the epoch.
pub fn week_end(week: IsoWeek) -> i64 {
    let monday = time::Date::from_iso_week_date(week.year(), week.week(), time::Weekday::Monday);
    monday.map_or(i64::MAX, |monday| {
        (monday.midnight().assume_utc().unix_timestamp()).saturating_add(WEEK_SECONDS)
    })
}

/// When `week`'s summary is made: its end and the hour its late writes take.
pub fn summary_made_at(week: IsoWeek) -> i64 {
    week_end(week).saturating_add(LATE_WRITES_SECONDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn week(text: &str) -> IsoWeek {
        IsoWeek::parse(text).unwrap()
    }

    const TWELVE_WEEKS: u64 = 12 * 7 * 86_400;

    /// Seconds since the epoch of a UTC date and time.
    fn at(datetime: time::OffsetDateTime) -> i64 {
        datetime.unix_timestamp()
    }

    #[test]
    fn a_week_ends_on_the_monday_after_it_and_its_summary_an_hour_later() {
        use time::macros::datetime;
        assert_eq!(
            week_end(week("2026-W48")),
            at(datetime!(2026-11-30 00:00 UTC))
        );
        assert_eq!(
            week_end(week("2026-W53")),
            at(datetime!(2027-01-04 00:00 UTC))
        );
        assert_eq!(
            summary_made_at(week("2026-W48")),
            at(datetime!(2026-11-30 01:00 UTC))
        );
    }

    #[test]
    fn a_deletion_uncounts_a_session_until_the_week_s_summary_is_made() {
        use time::macros::datetime;
        let kept = Retention {
            session_ttl_seconds: TWELVE_WEEKS,
            summary_weeks: 104,
        };
        let w48 = week("2026-W48");
        for (now, leaving) in [
            (datetime!(2026-11-25 12:00 UTC), Leaving::Uncounted),
            (datetime!(2026-11-30 00:30 UTC), Leaving::Uncounted),
            (datetime!(2026-11-30 01:00 UTC), Leaving::Summarised),
            (datetime!(2027-02-01 00:00 UTC), Leaving::Summarised),
        ] {
            assert_eq!(kept.on_deletion(w48, at(now)), leaving, "{now}");
        }
        assert_eq!(kept.on_expiry(), Leaving::Summarised);
        let none = Retention {
            summary_weeks: 0,
            ..kept
        };
        let later = at(datetime!(2027-02-01 00:00 UTC));
        assert_eq!(none.on_deletion(w48, later), Leaving::Uncounted);
        assert_eq!(none.on_expiry(), Leaving::Uncounted);
        assert_eq!(none.summary_expires_at(w48), None);
    }

    #[test]
    fn a_week_is_kept_for_its_summary_s_retention_or_its_records_ttl() {
        use time::macros::datetime;
        let w48 = week("2026-W48");
        let kept = Retention {
            session_ttl_seconds: TWELVE_WEEKS,
            summary_weeks: 104,
        };
        let two_years_on = at(datetime!(2028-11-27 00:00 UTC));
        assert_eq!(kept.summary_expires_at(w48), Some(two_years_on));
        assert!(kept.keeps(w48, two_years_on - 1));
        assert!(!kept.keeps(w48, two_years_on));
        assert!(
            kept.keeps(week("2030-W01"), two_years_on),
            "a future week is kept"
        );
        let records_only = Retention {
            summary_weeks: 0,
            ..kept
        };
        // Twelve weeks after the week's last late write (an hour past its end).
        let twelve_weeks_on = at(datetime!(2027-02-22 01:00 UTC));
        assert!(records_only.keeps(w48, twelve_weeks_on - 1));
        assert!(!records_only.keeps(w48, twelve_weeks_on));
        // The oldest summary kept two years on is the week that ended then, 104 weeks ago.
        assert_eq!(kept.oldest_summarised(two_years_on), Some(week("2026-W49")));
        assert_eq!(kept.oldest_summarised(two_years_on - 1), Some(w48));
        assert_eq!(records_only.oldest_summarised(two_years_on), None);
    }

    /// A store's rows in memory, moved only by the core's functions as every store moves its
    /// own: records with their expiry, live tallies, summary rows.
    #[derive(Default)]
    struct Week {
        records: std::collections::BTreeMap<String, (String, i64)>,
        live: std::collections::BTreeMap<(&'static str, String), u64>,
        summary: std::collections::BTreeMap<(&'static str, String), u64>,
    }

    fn apply(
        rows: &mut std::collections::BTreeMap<(&'static str, String), u64>,
        moves: &crate::TallyMoves,
    ) {
        for (dimension, value, sessions) in moves.iter() {
            let key = (dimension.name(), value.to_owned());
            let held = rows.get(&key).copied().unwrap_or(0);
            match crate::tally::moved_row(held, sessions).unwrap() {
                Some(after) => rows.insert(key, after),
                None => rows.remove(&key),
            };
        }
    }

    impl Week {
        fn ping(&mut self, session: &str, version: &str, now: i64, retention: Retention) {
            let body = format!(
                r#"{{"protocol_version":"1.0.0","daemon_version":"{version}","session_id":"{session}","platform":"linux","node_version":"v22.1.0","primary_framework":"react"}}"#
            );
            let head = crate::RequestHead {
                method: "POST",
                content_type: Some("application/json"),
                ..crate::RequestHead::default()
            };
            let instant = time::OffsetDateTime::from_unix_timestamp(now).unwrap();
            let mut limiter = crate::AbuseLimiter::new(0);
            let write = crate::decide_ping(&head, body.as_bytes(), instant, &mut limiter).unwrap();
            let stored = self.records.get(session).map(|(record, _)| record.as_str());
            let expires_at = crate::expires_at(now, retention.session_ttl_seconds);
            if let Some(kept) = crate::stored_week::keep(stored, &write.record_json).unwrap() {
                apply(&mut self.live, &kept.moves);
                self.records
                    .insert(session.to_owned(), (kept.record, expires_at));
            }
        }

        fn leave(&mut self, session: &str, leaving: Leaving) {
            if let Some((record, _)) = self.records.remove(session) {
                let departure = crate::stored_week::depart(&record, leaving).unwrap();
                apply(&mut self.live, &departure.live);
                apply(&mut self.summary, &departure.summary);
            }
        }

        fn expire(&mut self, now: i64, retention: Retention) {
            let expired: Vec<String> = (self.records.iter())
                .filter(|(_, (_, expires_at))| *expires_at <= now)
                .map(|(session, _)| session.clone())
                .collect();
            for session in expired {
                self.leave(&session, retention.on_expiry());
            }
        }

        /// What a readout fetches: live and summary added.
        fn tally(&self, dimension: crate::Dimension) -> crate::Tally {
            let mut tally = crate::Tally::default();
            for ((along, value), sessions) in self.live.iter().chain(&self.summary) {
                if *along == dimension.name() {
                    tally.add(value, *sessions);
                }
            }
            tally
        }

        fn read(&self, query: Option<&str>, config: &crate::Config, now: i64) -> String {
            let readout = crate::Readout::for_week("2026-W48", query, crate::Format::Json).unwrap();
            let fetched = readout
                .fetches(config.retention(), now)
                .iter()
                .map(|(_, d)| self.tally(*d))
                .collect();
            readout.answer(fetched, config, now).body
        }
    }

    #[test]
    fn a_week_answers_from_its_summary_exactly_as_before_its_records_went() {
        use time::macros::datetime;
        let config = crate::Config::from_lookup(|_| None).unwrap();
        let retention = config.retention();
        let mut week = Week::default();
        let wednesday = at(datetime!(2026-11-25 10:00 UTC));
        for n in 0..12 {
            let version = if n < 7 { "1.0.0" } else { "1.1.0" };
            week.ping(&format!("relay-{n:04}"), version, wednesday, retention);
        }
        // An erasure during the week takes the session out of the summary it will become.
        let thursday = at(datetime!(2026-11-26 10:00 UTC));
        week.leave("relay-0000", retention.on_deletion(w48(), thursday));
        // A ping sent just before Monday 00:00 and written after it still counts.
        let sunday = at(datetime!(2026-11-29 23:59:59 UTC));
        week.ping("relay-late", "1.1.0", sunday, retention);
        let after_the_week = at(datetime!(2026-11-30 02:00 UTC));
        let count = week.read(None, &config, after_the_week);
        let breakdown = week.read(Some("by=daemon_version"), &config, after_the_week);
        assert_eq!(count, r#"{"week":"2026-W48","weekly_active_sessions":12}"#);
        assert_eq!(
            breakdown,
            r#"{"week":"2026-W48","weekly_active_sessions":12,"by":"daemon_version","counts":{"1.0.0":6,"1.1.0":6},"withheld_sessions":0}"#
        );
        // After the summary is made, an erasure deletes the record and changes no count.
        week.leave("relay-0001", retention.on_deletion(w48(), after_the_week));
        assert!(!week.records.contains_key("relay-0001"));
        assert_eq!(week.read(None, &config, after_the_week), count);
        // Twelve weeks on, every record has gone: the week answers from its summary alone.
        let records_gone = at(datetime!(2027-02-22 00:00 UTC));
        week.expire(records_gone, retention);
        assert!(week.records.is_empty() && week.live.is_empty());
        assert_eq!(week.read(None, &config, records_gone), count);
        let from_summary = week.read(Some("by=daemon_version"), &config, records_gone);
        assert_eq!(from_summary, breakdown);
        // Without summaries, the same week reads 0 once its records expire.
        let no_summaries = Retention {
            summary_weeks: 0,
            ..retention
        };
        let mut forgetful = Week::default();
        forgetful.ping("relay-0001", "1.0.0", wednesday, no_summaries);
        forgetful.expire(records_gone, no_summaries);
        assert!(forgetful.summary.is_empty());
        assert!(
            forgetful
                .read(None, &config, records_gone)
                .contains(r#""weekly_active_sessions":0"#)
        );
    }

    fn w48() -> IsoWeek {
        week("2026-W48")
    }
}
