//! How a readout's answer is written: a count, a breakdown under the privacy floor, a series
//! and an adoption series (a breakdown per week), as JSON or as CSV.

use serde::Serialize;

use crate::dimension::Dimension;
use crate::rejection::Rejection;
use crate::response::Response;
use crate::tally::Tally;
use crate::week::IsoWeek;

/// A breakdown's answer: every value held by at least `min_sessions` sessions, the rest
/// summed into `withheld_sessions`, so that a rare version cannot single out one install
/// base, and `sum(counts) + withheld_sessions == weekly_active_sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Breakdown {
    pub week: IsoWeek,
    pub weekly_active_sessions: u64,
    pub by: &'static str,
    /// Value → sessions, in order of value; a JSON object.
    #[serde(serialize_with = "as_object")]
    pub counts: Vec<(String, u64)>,
    pub withheld_sessions: u64,
    /// Present, as `true`, only for a week past what the stores keep ([`OutsideRetention`]).
    #[serde(skip_serializing_if = "OutsideRetention::is_no")]
    pub outside_retention: OutsideRetention,
}

/// Whether a week is past what the stores keep (its summary's retention, or without
/// summaries its records' TTL): its zero then means "no longer known", not "no sessions".
/// Written only when it is, so that the answers clients already read do not change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct OutsideRetention(pub bool);

impl OutsideRetention {
    fn is_no(&self) -> bool {
        !self.0
    }
}

fn as_object<S: serde::Serializer>(counts: &[(String, u64)], to: S) -> Result<S::Ok, S::Error> {
    to.collect_map(counts.iter().map(|(value, sessions)| (value, sessions)))
}

impl Breakdown {
    /// From a week's tally along `dimension`, under the floor.
    pub fn new(week: IsoWeek, dimension: Dimension, tally: Tally, min_sessions: u64) -> Self {
        let mut breakdown = Self {
            week,
            weekly_active_sessions: 0,
            by: dimension.name(),
            counts: Vec::new(),
            withheld_sessions: 0,
            outside_retention: OutsideRetention(false),
        };
        for (value, sessions) in tally
            .into_values()
            .into_iter()
            .filter(|(_, sessions)| *sessions > 0)
        {
            breakdown.weekly_active_sessions += sessions;
            if sessions >= min_sessions {
                breakdown.counts.push((value, sessions));
            } else {
                breakdown.withheld_sessions += sessions;
            }
        }
        // In the dimension's own order: 0.8.7 before 0.10.0, Node 9 before 18. An insertion
        // sort, by hand: the values shown are few (each holds at least the floor's sessions),
        // and the library's sorts would add 5 KB to the Worker's bundle.
        let counts = &mut breakdown.counts;
        for at in 1..counts.len() {
            let mut to = at;
            while to > 0
                && counts
                    .get(to - 1)
                    .zip(counts.get(to))
                    .is_some_and(|(before, this)| {
                        dimension.order(&before.0, &this.0) == std::cmp::Ordering::Greater
                    })
            {
                counts.swap(to - 1, to);
                to -= 1;
            }
        }
        breakdown
    }

    /// Marks the week as past what the stores keep, or not.
    pub fn outside(self, outside: bool) -> Self {
        Self {
            outside_retention: OutsideRetention(outside),
            ..self
        }
    }

    fn rows(&self) -> impl Iterator<Item = (&str, u64)> {
        csv_rows(&self.counts, self.withheld_sessions)
    }

    pub fn into_response(self, format: Format) -> Response {
        match format {
            Format::Json => Response::json(200, "ok", &self),
            Format::Csv => {
                let mut csv = String::from("week,by,value,sessions\r\n");
                let week = self.week.to_string();
                for (value, sessions) in self.rows() {
                    csv.push_str(&csv_row(&[&week, self.by, value, &sessions.to_string()]));
                }
                Response::csv(csv)
            }
        }
    }
}

/// A series' answer: each week of the span with its count, 0 where a store has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Series {
    pub from: IsoWeek,
    pub to: IsoWeek,
    pub weeks: Vec<WeekCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeekCount {
    pub week: IsoWeek,
    pub weekly_active_sessions: u64,
    #[serde(skip_serializing_if = "OutsideRetention::is_no")]
    pub outside_retention: OutsideRetention,
}

impl Series {
    /// From the weeks of [`super::series_weeks`], the count of each (a store counts 0 for a
    /// week without data) and whether each is past what the stores keep, in the same order.
    /// `None` unless there is one count and one mark per week and at least one week.
    pub fn new(weeks: &[IsoWeek], counts: &[u64], outside: &[bool]) -> Option<Self> {
        let (from, to) = (*weeks.first()?, *weeks.last()?);
        if weeks.len() != counts.len() || weeks.len() != outside.len() {
            return None;
        }
        let weeks = (weeks.iter().zip(counts).zip(outside))
            .map(|((&week, &weekly_active_sessions), &outside)| WeekCount {
                week,
                weekly_active_sessions,
                outside_retention: OutsideRetention(outside),
            })
            .collect();
        Some(Self { from, to, weeks })
    }

    pub fn into_response(self, format: Format) -> Response {
        match format {
            Format::Json => Response::json(200, "ok", &self),
            Format::Csv => {
                let mut csv = String::from("week,weekly_active_sessions\r\n");
                for count in &self.weeks {
                    let sessions = count.weekly_active_sessions.to_string();
                    csv.push_str(&csv_row(&[&count.week.to_string(), &sessions]));
                }
                Response::csv(csv)
            }
        }
    }
}

/// Adoption over time: a breakdown per week of a span along one dimension, each week under
/// the floor on its own, so that a value shows in the weeks it is common enough and is
/// withheld in the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Adoption {
    pub from: IsoWeek,
    pub to: IsoWeek,
    pub by: &'static str,
    pub weeks: Vec<AdoptionWeek>,
}

/// One week of an [`Adoption`]: a [`Breakdown`] without its `by`, which the series names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdoptionWeek {
    pub week: IsoWeek,
    pub weekly_active_sessions: u64,
    #[serde(serialize_with = "as_object")]
    pub counts: Vec<(String, u64)>,
    pub withheld_sessions: u64,
    #[serde(skip_serializing_if = "OutsideRetention::is_no")]
    pub outside_retention: OutsideRetention,
}

impl Adoption {
    /// From each week's breakdown along `by`, in order; `None` without a week.
    pub fn new(by: Dimension, breakdowns: Vec<Breakdown>) -> Option<Self> {
        let from = breakdowns.first()?.week;
        let to = breakdowns.last()?.week;
        let weeks = (breakdowns.into_iter())
            .map(|breakdown| AdoptionWeek {
                week: breakdown.week,
                weekly_active_sessions: breakdown.weekly_active_sessions,
                counts: breakdown.counts,
                withheld_sessions: breakdown.withheld_sessions,
                outside_retention: breakdown.outside_retention,
            })
            .collect();
        Some(Self {
            from,
            to,
            by: by.name(),
            weeks,
        })
    }

    /// JSON, or CSV with one row per week and value (`week,value,sessions`), each week's
    /// withheld sessions as its own `(withheld)` row, so that every week of the span appears.
    pub fn into_response(self, format: Format) -> Response {
        match format {
            Format::Json => Response::json(200, "ok", &self),
            Format::Csv => {
                let mut csv = String::from("week,value,sessions\r\n");
                for week in &self.weeks {
                    let name = week.week.to_string();
                    for (value, sessions) in csv_rows(&week.counts, week.withheld_sessions) {
                        csv.push_str(&csv_row(&[&name, value, &sessions.to_string()]));
                    }
                }
                Response::csv(csv)
            }
        }
    }
}

/// A week's count: `{"week":…,"weekly_active_sessions":N}` (and `"outside_retention":true`
/// past what the stores keep), or its CSV.
pub fn weekly_active_response(
    week: IsoWeek,
    sessions: u64,
    outside: bool,
    format: Format,
) -> Response {
    let count = WeekCount {
        week,
        weekly_active_sessions: sessions,
        outside_retention: OutsideRetention(outside),
    };
    match format {
        Format::Json => Response::json(200, "ok", &count),
        Format::Csv => {
            let row = csv_row(&[&week.to_string(), &sessions.to_string()]);
            Response::csv(format!("week,weekly_active_sessions\r\n{row}"))
        }
    }
}

/// A series' answer from the weeks of a [`Readout::Series`] and their counts, in order; a
/// 500 if the counts do not match the weeks (an adapter's mistake, never the client's).
pub fn series_response(
    weeks: &[IsoWeek],
    counts: &[u64],
    outside: &[bool],
    format: Format,
) -> Response {
    match Series::new(weeks, counts, outside) {
        Some(series) => series.into_response(format),
        None => Rejection::Internal.into_response(),
    }
}

/// A breakdown's CSV rows: the values shown, and the withheld sessions as one more,
/// `(withheld)`, so that the rows add up to the week's count.
fn csv_rows(counts: &[(String, u64)], withheld: u64) -> impl Iterator<Item = (&str, u64)> {
    (counts.iter())
        .map(|(value, sessions)| (value.as_str(), *sessions))
        .chain([("(withheld)", withheld)])
}

/// The form of a readout's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    /// CSV when `Accept` names `text/csv` (any case, parameters ignored) with a weight above
    /// zero; JSON otherwise, the default for anything else or nothing.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let wants_csv = accept.unwrap_or_default().split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let refused = parts.any(|parameter| {
                let parameter = parameter.replace(' ', "");
                ["q=0", "q=0.0", "q=0.00", "q=0.000"]
                    .iter()
                    .any(|zero| parameter.eq_ignore_ascii_case(zero))
            });
            media.eq_ignore_ascii_case("text/csv") && !refused
        });
        if wants_csv { Self::Csv } else { Self::Json }
    }
}

/// What a spreadsheet reads as the start of a formula, or strips before it reads one: OWASP's
/// list for CSV injection, tab and carriage return included.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// One CSV row (RFC 4180, CRLF). A field with a comma, quote or line break is quoted; one
/// that a spreadsheet would run as a formula (any of [`FORMULA_STARTS`] first) gets a
/// leading `'`.
fn csv_row(fields: &[&str]) -> String {
    let quoted: Vec<String> = fields
        .iter()
        .map(|field| {
            let field = if field.starts_with(FORMULA_STARTS) {
                format!("'{field}")
            } else {
                (*field).to_owned()
            };
            if field.contains([',', '"', '\r', '\n']) {
                format!("\"{}\"", field.replace('"', "\"\""))
            } else {
                field
            }
        })
        .collect();
    format!("{}\r\n", quoted.join(","))
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_breakdown_lists_versions_by_precedence_not_as_text() {
        let mut tally = Tally::default();
        for (value, sessions) in [("0.10.0", 6), ("0.8.7", 5), ("other", 7), ("0.9.0", 5)] {
            tally.add(value, sessions);
        }
        let week = IsoWeek::parse("2026-W48").unwrap();
        let breakdown = Breakdown::new(week, Dimension::DaemonVersion, tally, 5);
        let csv = breakdown.into_response(Format::Csv).body;
        assert_eq!(
            csv,
            "week,by,value,sessions\r\n2026-W48,daemon_version,0.8.7,5\r\n2026-W48,daemon_version,0.9.0,5\r\n2026-W48,daemon_version,0.10.0,6\r\n2026-W48,daemon_version,other,7\r\n2026-W48,daemon_version,(withheld),0\r\n"
        );
    }
    use super::*;

    fn week(text: &str) -> IsoWeek {
        IsoWeek::parse(text).unwrap_or_else(|| panic!("{text}"))
    }

    #[test]
    fn a_breakdown_withholds_rare_values_and_still_adds_up() {
        let mut tally = Tally::default();
        for (value, sessions) in [
            ("1.1.0", 5),
            ("1.0.0", 7),
            ("0.9.0-acme.1", 1),
            ("0.8.0", 4),
        ] {
            tally.add(value, sessions);
        }
        tally.add("0.7.0", 0);
        tally.add("1.1.0", 0);
        let breakdown = Breakdown::new(week("2026-W48"), Dimension::DaemonVersion, tally, 5);
        let shown: Vec<_> = breakdown
            .counts
            .iter()
            .map(|(v, n)| (v.as_str(), *n))
            .collect();
        assert_eq!(shown, [("1.0.0", 7), ("1.1.0", 5)]);
        assert_eq!(breakdown.withheld_sessions, 5);
        assert_eq!(breakdown.weekly_active_sessions, 17);
        let body = breakdown.clone().into_response(Format::Json).body;
        assert_eq!(
            body,
            r#"{"week":"2026-W48","weekly_active_sessions":17,"by":"daemon_version","counts":{"1.0.0":7,"1.1.0":5},"withheld_sessions":5}"#
        );
        let csv = breakdown.into_response(Format::Csv);
        assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
        assert_eq!(
            csv.body,
            "week,by,value,sessions\r\n2026-W48,daemon_version,1.0.0,7\r\n\
             2026-W48,daemon_version,1.1.0,5\r\n2026-W48,daemon_version,(withheld),5\r\n"
        );
    }

    #[test]
    fn csv_is_chosen_only_when_accept_names_it_with_a_weight() {
        let cases = [
            (None, Format::Json),
            (Some("application/json"), Format::Json),
            (Some("*/*"), Format::Json),
            (Some("text/csv"), Format::Csv),
            (Some("TEXT/CSV; charset=utf-8"), Format::Csv),
            (Some("application/json;q=0.9, text/csv"), Format::Csv),
            (Some("text/csv;q=0"), Format::Json),
            (Some("text/csv; q=0.0"), Format::Json),
            (Some("text/csv;Q=0.000"), Format::Json),
            (Some("text/csv;q=0.5"), Format::Csv),
            (Some("text/csv;q=1"), Format::Csv),
            (Some("text/csvx"), Format::Json),
        ];
        for (accept, format) in cases {
            assert_eq!(Format::from_accept(accept), format, "{accept:?}");
        }
    }

    #[test]
    fn a_csv_field_is_quoted_or_defused_where_a_spreadsheet_would_misread_it() {
        assert_eq!(
            csv_row(&["a", "b,c", "say \"hi\""]),
            "a,\"b,c\",\"say \"\"hi\"\"\"\r\n"
        );
        assert_eq!(
            csv_row(&["=SUM(A1)", "-1", "@x", "+1"]),
            "'=SUM(A1),'-1,'@x,'+1\r\n"
        );
        assert_eq!(
            csv_row(&["\t=1+1", "\r=1+1", "1.0.0"]),
            "'\t=1+1,\"'\r=1+1\",1.0.0\r\n"
        );
    }
}
