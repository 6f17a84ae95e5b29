//! The operator's readout as the core answers it, sans I/O: a request becomes a [`Readout`],
//! which says which tallies to fetch ([`Readout::fetches`]); the adapter fetches them from its
//! store, and [`Readout::answer`] renders what was fetched ([`render`]). A count, a breakdown,
//! a series and an adoption series are all read from tallies (a week's live tallies and its
//! summary, added: [`crate::summary`]), so every store answers each the same way.

mod render;

use crate::config::Config;
use crate::dimension::Dimension;
use crate::rejection::Rejection;
use crate::response::Response;
use crate::stored_week::{COUNTED_BY, OTHER_VALUE, count};
use crate::summary::Retention;
use crate::week::IsoWeek;

pub use self::render::{
    Adoption, Breakdown, Format, Series, WeekCount, series_response, weekly_active_response,
};
// Where the fuzz targets and older callers name them.
pub use crate::tally::Tally;

/// What an authenticated readout asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readout {
    /// `GET /v1/wau/<week>`, optionally `?by=<dimension>`.
    Week {
        week: IsoWeek,
        by: Option<Dimension>,
        format: Format,
        /// Asked without a token of a service whose readout is public (`PUBLIC_READOUT=1`):
        /// a breakdown then names only published values ([`PublishedValues`]).
        public: bool,
    },
    /// `GET /v1/wau?from=<week>&to=<week>`: each week of the span, in order; with
    /// `&by=<dimension>`, each week's breakdown (adoption over time).
    Series {
        weeks: Vec<IsoWeek>,
        by: Option<Dimension>,
        format: Format,
        public: bool,
    },
}

impl Readout {
    /// A week's readout from the path's week and the query (`by` at most once, nothing else).
    pub fn for_week(week: &str, query: Option<&str>, format: Format) -> Result<Self, Rejection> {
        let week = IsoWeek::parse(week).ok_or(Rejection::InvalidWeek)?;
        let mut by = None;
        for (name, value) in query_pairs(query) {
            match name {
                "by" if by.is_none() => by = Some(value),
                _ => return Err(Rejection::InvalidQuery),
            }
        }
        Ok(Self::Week {
            week,
            by: parse_by(by)?,
            format,
            public: false,
        })
    }

    /// A series from `from` and `to`, each exactly once, and `by` at most once; nothing else.
    pub fn for_series(query: Option<&str>, format: Format) -> Result<Self, Rejection> {
        let (mut from, mut to, mut by) = (None, None, None);
        for (name, value) in query_pairs(query) {
            match name {
                "from" if from.is_none() => from = Some(value),
                "to" if to.is_none() => to = Some(value),
                "by" if by.is_none() => by = Some(value),
                _ => return Err(Rejection::InvalidQuery),
            }
        }
        let (Some(from), Some(to)) = (from, to) else {
            return Err(Rejection::InvalidQuery);
        };
        let by = parse_by(by)?;
        let from = IsoWeek::parse(from).ok_or(Rejection::InvalidWeek)?;
        let to = IsoWeek::parse(to).ok_or(Rejection::InvalidWeek)?;
        let weeks = series_weeks(from, to).ok_or(Rejection::InvalidRange)?;
        Ok(Self::Series {
            weeks,
            by,
            format,
            public: false,
        })
    }

    /// The same readout as a public one: breakdowns name only published values.
    pub fn public(self) -> Self {
        match self {
            Self::Week {
                week, by, format, ..
            } => Self::Week {
                week,
                by,
                format,
                public: true,
            },
            Self::Series {
                weeks, by, format, ..
            } => Self::Series {
                weeks,
                by,
                format,
                public: true,
            },
        }
    }

    /// Every week this readout answers, in order.
    fn weeks(&self) -> Vec<IsoWeek> {
        match self {
            Self::Week { week, .. } => vec![*week],
            Self::Series { weeks, .. } => weeks.clone(),
        }
    }

    /// The tallies to fetch for this readout, in order: a week's count is its tally along
    /// [`COUNTED_BY`], a breakdown its tally along its dimension, a series that tally of each
    /// of its weeks. A store answers each from a few rows, whatever the week's size. A week
    /// no store can hold anything of at `now` (past what `retention` keeps, or not begun) is
    /// not fetched: it is 0, and asking would only make an empty week object on the Worker.
    pub fn fetches(&self, retention: Retention, now: i64) -> Vec<(IsoWeek, Dimension)> {
        let along = match self {
            Self::Week { by, .. } | Self::Series { by, .. } => by.unwrap_or(COUNTED_BY),
        };
        (self.weeks().into_iter())
            .filter(|week| retention.may_hold(*week, now))
            .map(|week| (week, along))
            .collect()
    }

    /// The answer from the tallies of [`Readout::fetches`] (asked with `config`'s retention
    /// and the same `now`, seconds since the epoch), in the same order, under the privacy
    /// floor (and, for a public one, naming only published values), each week marked when it
    /// is past what the stores keep; a 500 if the tallies do not match (an adapter's mistake).
    pub fn answer(self, fetched: Vec<Tally>, config: &Config, now: i64) -> Response {
        let retention = config.retention();
        let outside = |week: IsoWeek| !retention.keeps(week, now);
        // One tally per week of the readout, 0 for the weeks not fetched.
        let mut fetched = fetched.into_iter();
        let mut tallies = Vec::new();
        for week in self.weeks() {
            if !retention.may_hold(week, now) {
                tallies.push(Tally::default());
                continue;
            }
            match fetched.next() {
                Some(tally) => tallies.push(tally),
                None => return Rejection::Internal.into_response(),
            }
        }
        if fetched.next().is_some() {
            return Rejection::Internal.into_response();
        }
        let fetched = tallies;
        let floor = config.breakdown_min_sessions;
        let shown = |public: bool, by: Dimension, tally: Tally| {
            if public {
                config.published.shown(by, tally)
            } else {
                tally
            }
        };
        match self {
            Self::Week {
                week,
                by,
                format,
                public,
            } => {
                let Ok([tally]) = <[Tally; 1]>::try_from(fetched) else {
                    return Rejection::Internal.into_response();
                };
                match by {
                    None => weekly_active_response(week, count(&tally), outside(week), format),
                    Some(by) => {
                        let breakdown = Breakdown::new(week, by, shown(public, by, tally), floor);
                        breakdown.outside(outside(week)).into_response(format)
                    }
                }
            }
            Self::Series {
                weeks,
                by: None,
                format,
                ..
            } => {
                let counts: Vec<u64> = fetched.iter().map(count).collect();
                let outside: Vec<bool> = weeks.iter().map(|week| outside(*week)).collect();
                series_response(&weeks, &counts, &outside, format)
            }
            Self::Series {
                weeks,
                by: Some(by),
                format,
                public,
            } => {
                if weeks.len() != fetched.len() {
                    return Rejection::Internal.into_response();
                }
                let breakdowns = weeks.iter().zip(fetched).map(|(week, tally)| {
                    Breakdown::new(*week, by, shown(public, by, tally), floor)
                        .outside(outside(*week))
                });
                match Adoption::new(by, breakdowns.collect()) {
                    Some(adoption) => adoption.into_response(format),
                    None => Rejection::Internal.into_response(),
                }
            }
        }
    }

    /// The week a wide event names: the week read, or the last of a series.
    pub fn week(&self) -> Option<IsoWeek> {
        match self {
            Self::Week { week, .. } => Some(*week),
            Self::Series { weeks, .. } => weeks.last().copied(),
        }
    }
}

/// A query's `by`, if given: a dimension's name, or the query is refused.
fn parse_by(by: Option<&str>) -> Result<Option<Dimension>, Rejection> {
    by.map(|by| Dimension::parse(by).ok_or(Rejection::InvalidQuery))
        .transpose()
}

/// The values a public breakdown names: every platform and framework (fixed lists), and the
/// versions and Node majors the operator publishes (`PUBLIC_DAEMON_VERSIONS`,
/// `PUBLIC_PROTOCOL_VERSIONS`, `PUBLIC_NODE_MAJORS`); every other value is counted as
/// [`OTHER_VALUE`]. The floor alone cannot keep a public view from telling whether a guessed
/// rare value is in the data: whoever can send pings adds floor − 1 sessions with it and
/// watches it appear. A value no one published never appears, however many hold it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishedValues {
    pub daemon_versions: Vec<String>,
    pub protocol_versions: Vec<String>,
    pub node_majors: Vec<String>,
}

impl PublishedValues {
    /// Whether a public breakdown along `dimension` may name `value`.
    pub fn names(&self, dimension: Dimension, value: &str) -> bool {
        let published = match dimension {
            Dimension::Platform | Dimension::PrimaryFramework => return true,
            Dimension::DaemonVersion => &self.daemon_versions,
            Dimension::ProtocolVersion => &self.protocol_versions,
            Dimension::NodeMajor => &self.node_majors,
        };
        published.iter().any(|known| known == value)
    }

    /// A week's tally along `dimension` as a public breakdown counts it: the values it may
    /// name, and all the others as one [`OTHER_VALUE`].
    pub fn shown(&self, dimension: Dimension, tally: Tally) -> Tally {
        let mut shown = Tally::default();
        for (value, sessions) in tally.into_values() {
            let value = if self.names(dimension, &value) {
                value.as_str()
            } else {
                OTHER_VALUE
            };
            shown.add(value, sessions);
        }
        shown
    }
}

/// A query string's `name=value` pairs as sent (no percent-decoding: every accepted name and
/// value is plain ASCII, so an encoded one is simply not accepted). Empty pieces are skipped.
pub(crate) fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| piece.split_once('=').unwrap_or((piece, "")))
}

/// The most weeks one series spans: two years of summaries (the default retention) and the
/// current week. Each is a store read (on the Worker, a request to the week's object), so
/// a longer retention is read in several series.
pub const MAX_SERIES_WEEKS: usize = 105;

/// The weeks from `from` to `to`, both included, in order; `None` when `from` is after `to`
/// or the span is longer than [`MAX_SERIES_WEEKS`].
pub fn series_weeks(from: IsoWeek, to: IsoWeek) -> Option<Vec<IsoWeek>> {
    from.through(to, MAX_SERIES_WEEKS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn week(text: &str) -> IsoWeek {
        IsoWeek::parse(text).unwrap_or_else(|| panic!("{text}"))
    }

    /// 2026-11-30 00:53 UTC: the week 2026-W48 has just ended.
    const NOW: i64 = 1_796_000_000;

    /// The defaults (floor 5, summaries for 104 weeks), publishing `published`.
    fn config(published: PublishedValues) -> Config {
        let mut config = Config::from_lookup(|_| None).unwrap();
        config.published = published;
        config
    }

    #[test]
    fn a_week_s_query_holds_at_most_one_by_and_nothing_else() {
        let w48 = week("2026-W48");
        let json = Format::Json;
        let ok = |by| {
            Ok(Readout::Week {
                week: w48,
                by,
                format: json,
                public: false,
            })
        };
        assert_eq!(Readout::for_week("2026-W48", None, json), ok(None));
        assert_eq!(Readout::for_week("2026-W48", Some(""), json), ok(None));
        let by = Readout::for_week("2026-W48", Some("by=node_major"), json);
        assert_eq!(by, ok(Some(Dimension::NodeMajor)));
        for query in [
            "by=",
            "by=os",
            "by=platform&by=platform",
            "by=platform,node_major",
            "x=1",
            "token=secret",
            "by=%70latform",
            "BY=platform",
        ] {
            let refused = Readout::for_week("2026-W48", Some(query), json);
            assert_eq!(refused, Err(Rejection::InvalidQuery), "{query}");
        }
        let bad_week = Readout::for_week("2025-W53", Some("by=os"), json);
        assert_eq!(bad_week, Err(Rejection::InvalidWeek));
    }

    #[test]
    fn a_series_needs_from_and_to_once_in_order_and_within_two_years() {
        let series = Readout::for_series(Some("to=2026-W02&from=2025-W52"), Format::Csv).unwrap();
        let Readout::Series { weeks, format, .. } = &series else {
            panic!("{series:?}")
        };
        assert_eq!((weeks.len(), *format), (3, Format::Csv));
        assert_eq!(series.week(), Some(week("2026-W02")));
        let cases = [
            (None, Rejection::InvalidQuery),
            (Some("from=2026-W01"), Rejection::InvalidQuery),
            (
                Some("from=2026-W01&to=2026-W02&by=os"),
                Rejection::InvalidQuery,
            ),
            (
                Some("from=2026-W01&to=2026-W02&by=platform&by=platform"),
                Rejection::InvalidQuery,
            ),
            (
                Some("from=2026-W01&from=2026-W01&to=2026-W02"),
                Rejection::InvalidQuery,
            ),
            (Some("from=2026-W1&to=2026-W02"), Rejection::InvalidWeek),
            (Some("from=2026-W03&to=2026-W02"), Rejection::InvalidRange),
            (Some("from=2025-W01&to=2027-W01"), Rejection::InvalidRange),
        ];
        for (query, rejection) in cases {
            assert_eq!(
                Readout::for_series(query, Format::Json),
                Err(rejection),
                "{query:?}"
            );
        }
    }

    #[test]
    fn the_range_message_names_the_longest_series() {
        let weeks = format!("at most {MAX_SERIES_WEEKS} weeks");
        assert!(Rejection::InvalidRange.message().contains(&weeks));
    }

    #[test]
    fn every_readout_is_answered_from_the_tallies_it_asks_for() {
        let tally = |pairs: &[(&str, u64)]| {
            let mut tally = Tally::default();
            for (value, sessions) in pairs {
                tally.add(value, *sessions);
            }
            tally
        };
        let by_platform = tally(&[("linux", 6), ("darwin", 2)]);
        let count = Readout::for_week("2026-W48", None, Format::Json).unwrap();
        assert_eq!(
            count.fetches(Retention::default(), NOW),
            [(week("2026-W48"), COUNTED_BY)]
        );
        assert_eq!(
            count
                .answer(
                    vec![by_platform.clone()],
                    &config(PublishedValues::default()),
                    NOW
                )
                .body,
            r#"{"week":"2026-W48","weekly_active_sessions":8}"#
        );
        let breakdown = Readout::for_week("2026-W48", Some("by=node_major"), Format::Json).unwrap();
        assert_eq!(
            breakdown.fetches(Retention::default(), NOW),
            [(week("2026-W48"), Dimension::NodeMajor)]
        );
        let answered = breakdown.clone().answer(
            vec![tally(&[("20", 7), ("18", 1)])],
            &config(PublishedValues::default()),
            NOW,
        );
        assert_eq!(
            answered.body,
            r#"{"week":"2026-W48","weekly_active_sessions":8,"by":"node_major","counts":{"20":7},"withheld_sessions":1}"#
        );
        assert_eq!(
            breakdown
                .answer(vec![], &config(PublishedValues::default()), NOW)
                .status,
            500,
            "a tally missing"
        );
        let series = Readout::for_series(Some("from=2026-W47&to=2026-W48"), Format::Csv).unwrap();
        assert_eq!(series.fetches(Retention::default(), NOW).len(), 2);
        assert_eq!(
            series
                .clone()
                .answer(
                    vec![Tally::default(), by_platform],
                    &config(PublishedValues::default()),
                    NOW
                )
                .body,
            "week,weekly_active_sessions\r\n2026-W47,0\r\n2026-W48,8\r\n"
        );
        assert_eq!(
            series
                .answer(
                    vec![Tally::default()],
                    &config(PublishedValues::default()),
                    NOW
                )
                .status,
            500
        );
    }

    #[test]
    fn adoption_over_time_is_a_breakdown_per_week_each_under_its_own_floor() {
        let tally = |pairs: &[(&str, u64)]| {
            let mut tally = Tally::default();
            for (value, sessions) in pairs {
                tally.add(value, *sessions);
            }
            tally
        };
        let query = Some("from=2026-W46&to=2026-W48&by=daemon_version");
        let adoption = Readout::for_series(query, Format::Json).unwrap();
        assert_eq!(
            adoption.fetches(Retention::default(), NOW),
            ["2026-W46", "2026-W47", "2026-W48"].map(|w| (week(w), Dimension::DaemonVersion))
        );
        // 1.1.0 is rare in W46 (withheld there), common by W48; W47 is empty.
        let fetched = || {
            vec![
                tally(&[("1.0.0", 9), ("1.1.0", 2)]),
                Tally::default(),
                tally(&[("1.0.0", 5), ("1.1.0", 12), ("0.9.0", 1)]),
            ]
        };
        let defaults = config(PublishedValues::default());
        assert_eq!(
            adoption.clone().answer(fetched(), &defaults, NOW).body,
            concat!(
                r#"{"from":"2026-W46","to":"2026-W48","by":"daemon_version","weeks":["#,
                r#"{"week":"2026-W46","weekly_active_sessions":11,"counts":{"1.0.0":9},"withheld_sessions":2},"#,
                r#"{"week":"2026-W47","weekly_active_sessions":0,"counts":{},"withheld_sessions":0},"#,
                r#"{"week":"2026-W48","weekly_active_sessions":18,"counts":{"1.0.0":5,"1.1.0":12},"withheld_sessions":1}]}"#
            )
        );
        let csv = Readout::for_series(query, Format::Csv).unwrap();
        assert_eq!(
            csv.clone().answer(fetched(), &defaults, NOW).body,
            "week,value,sessions\r\n2026-W46,1.0.0,9\r\n2026-W46,(withheld),2\r\n\
             2026-W47,(withheld),0\r\n2026-W48,1.0.0,5\r\n2026-W48,1.1.0,12\r\n\
             2026-W48,(withheld),1\r\n"
        );
        assert_eq!(
            csv.answer(fetched()[..2].to_vec(), &defaults, NOW).status,
            500
        );
        // A public one names only published versions, week by week.
        let published = PublishedValues {
            daemon_versions: vec!["1.0.0".into()],
            ..PublishedValues::default()
        };
        let public = adoption.public().answer(fetched(), &config(published), NOW);
        assert!(
            public.body.contains(r#""counts":{"1.0.0":5,"other":13}"#),
            "{}",
            public.body
        );
    }

    #[test]
    fn a_week_past_what_is_kept_says_so_and_a_week_without_sessions_does_not() {
        let defaults = config(PublishedValues::default());
        let body = |path_week: &str, query: Option<&str>| {
            let readout = match path_week {
                "" => Readout::for_series(query, Format::Json).unwrap(),
                week => Readout::for_week(week, query, Format::Json).unwrap(),
            };
            let tallies = vec![Tally::default(); readout.fetches(Retention::default(), NOW).len()];
            readout.answer(tallies, &defaults, NOW).body
        };
        // Two years of summaries: 2024-W48 ended 2024-12-02, 104 weeks before 2026-11-30.
        assert_eq!(
            body("2024-W48", None),
            r#"{"week":"2024-W48","weekly_active_sessions":0,"outside_retention":true}"#
        );
        assert_eq!(
            body("2024-W49", None),
            r#"{"week":"2024-W49","weekly_active_sessions":0}"#
        );
        assert!(body("2024-W48", Some("by=platform")).ends_with(r#","outside_retention":true}"#));
        let series = body("", Some("from=2024-W47&to=2024-W49"));
        assert_eq!(series.matches(r#""outside_retention":true"#).count(), 2);
        // Without summaries, only the records' twelve weeks are kept.
        let mut records_only = config(PublishedValues::default());
        records_only.summary_retention_weeks = 0;
        let readout = Readout::for_week("2026-W35", None, Format::Json).unwrap();
        // Past what is kept, or not begun: not fetched at all, and 0 whatever a store held.
        assert!(readout.fetches(records_only.retention(), NOW).is_empty());
        let future = Readout::for_series(Some("from=2026-W48&to=2026-W50"), Format::Json).unwrap();
        assert_eq!(
            future.fetches(records_only.retention(), NOW),
            [
                (week("2026-W48"), COUNTED_BY),
                (week("2026-W49"), COUNTED_BY)
            ]
        );
        let answered = readout.answer(vec![], &records_only, NOW);
        assert!(
            answered.body.contains("outside_retention"),
            "{}",
            answered.body
        );
        let readout = Readout::for_week("2026-W37", None, Format::Json).unwrap();
        let answered = readout.answer(vec![Tally::default()], &records_only, NOW);
        assert!(
            !answered.body.contains("outside_retention"),
            "{}",
            answered.body
        );
    }

    /// The review's attack on a public view: whoever can send pings adds floor − 1 sessions
    /// with a guessed rare value and reads the breakdown, to learn whether one real install
    /// holds it. Two weeks that differ only in that install's value answer alike.
    #[test]
    fn padding_a_guessed_value_tells_a_public_reader_nothing() {
        let published = PublishedValues {
            daemon_versions: vec!["1.0.0".into(), "1.1.0".into()],
            ..PublishedValues::default()
        };
        let public = Readout::Week {
            week: week("2026-W48"),
            by: Some(Dimension::DaemonVersion),
            format: Format::Json,
            public: true,
        };
        let week_with = |real_rare: &str| {
            let mut tally = Tally::default();
            for (value, sessions) in [("1.0.0", 40), ("1.1.0", 9), (real_rare, 1)] {
                tally.add(value, sessions);
            }
            // The attacker's floor − 1 fakes with the guessed value.
            tally.add("0.9.0-acme.1", 4);
            tally
        };
        let guessed_right = public.clone().answer(
            vec![week_with("0.9.0-acme.1")],
            &config(published.clone()),
            NOW,
        );
        let guessed_wrong = public.clone().answer(
            vec![week_with("0.9.0-zeta.3")],
            &config(published.clone()),
            NOW,
        );
        assert_eq!(guessed_right.body, guessed_wrong.body);
        assert_eq!(
            guessed_right.body,
            r#"{"week":"2026-W48","weekly_active_sessions":54,"by":"daemon_version","counts":{"1.0.0":40,"1.1.0":9,"other":5},"withheld_sessions":0}"#
        );
        // The operator, with the token, sees the guessed value once it reaches the floor: the
        // attack's premise, and why the public view differs.
        let operator = Readout::Week {
            week: week("2026-W48"),
            by: Some(Dimension::DaemonVersion),
            format: Format::Json,
            public: false,
        };
        let seen = operator.answer(
            vec![week_with("0.9.0-acme.1")],
            &config(published.clone()),
            NOW,
        );
        assert!(seen.body.contains(r#""0.9.0-acme.1":5"#), "{}", seen.body);
        // Platforms and frameworks are fixed lists: all published.
        assert!(published.names(Dimension::Platform, "openbsd"));
        assert!(!published.names(Dimension::NodeMajor, "20"));
    }

    #[test]
    fn a_series_spans_at_most_two_years_in_order_across_a_year_end() {
        let weeks = series_weeks(week("2026-W50"), week("2027-W03")).unwrap();
        let names: Vec<String> = weeks.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "2026-W50", "2026-W51", "2026-W52", "2026-W53", "2027-W01", "2027-W02", "2027-W03"
            ]
        );
        assert_eq!(
            series_weeks(week("2025-W01"), week("2026-W53")).map(|w| w.len()),
            Some(105)
        );
        assert_eq!(series_weeks(week("2025-W01"), week("2027-W01")), None);
        assert_eq!(series_weeks(week("2026-W02"), week("2026-W01")), None);
        assert_eq!(
            series_weeks(week("2026-W02"), week("2026-W02")).map(|w| w.len()),
            Some(1)
        );
        assert_eq!(Series::new(&weeks[..2], &[0], &[false]), None);
        assert_eq!(Series::new(&weeks[..2], &[0, 9], &[false]), None);
        assert_eq!(Series::new(&[], &[], &[]), None);
        let series = Series::new(&weeks[..2], &[0, 9], &[false, false]).unwrap();
        assert_eq!(
            series.clone().into_response(Format::Json).body,
            r#"{"from":"2026-W50","to":"2026-W51","weeks":[{"week":"2026-W50","weekly_active_sessions":0},{"week":"2026-W51","weekly_active_sessions":9}]}"#
        );
        assert_eq!(
            series.into_response(Format::Csv).body,
            "week,weekly_active_sessions\r\n2026-W50,0\r\n2026-W51,9\r\n"
        );
    }
}
