//! The operator's readout beyond one number, as rules every store shares: which record a
//! repeat ping leaves (and whether it writes at all), breakdowns by one dimension under a
//! privacy floor, series of weeks, and the CSV form of each answer.
//!
//! The adapters fetch what a [`Readout`] asks for from their store (a count, a tally, the
//! counts of a span of weeks) and answer with these types, so all targets answer alike.

use serde::Serialize;

use crate::record::StoredRecord;
use crate::rejection::Rejection;
use crate::response::Response;
use crate::week::IsoWeek;

/// What an authenticated readout asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readout {
    /// `GET /v1/wau/<week>`, optionally `?by=<dimension>`.
    Week {
        week: IsoWeek,
        by: Option<Dimension>,
        format: Format,
    },
    /// `GET /v1/wau?from=<week>&to=<week>`: each week of the span, in order.
    Series { weeks: Vec<IsoWeek>, format: Format },
}

impl Readout {
    /// A week's readout from the path's week and the query (`by` at most once, nothing else).
    pub fn for_week(week: &str, query: Option<&str>, format: Format) -> Result<Self, Rejection> {
        let week = IsoWeek::parse(week).ok_or(Rejection::InvalidWeek)?;
        let mut by = None;
        for (name, value) in query_pairs(query) {
            match name {
                "by" if by.is_none() => by = Some(Dimension::parse(value)),
                _ => return Err(Rejection::InvalidQuery),
            }
        }
        let by = by.map(|by| by.ok_or(Rejection::InvalidQuery)).transpose()?;
        Ok(Self::Week { week, by, format })
    }

    /// A series from `from` and `to`, each exactly once and nothing else.
    pub fn for_series(query: Option<&str>, format: Format) -> Result<Self, Rejection> {
        let (mut from, mut to) = (None, None);
        for (name, value) in query_pairs(query) {
            match name {
                "from" if from.is_none() => from = Some(value),
                "to" if to.is_none() => to = Some(value),
                _ => return Err(Rejection::InvalidQuery),
            }
        }
        let (Some(from), Some(to)) = (from, to) else {
            return Err(Rejection::InvalidQuery);
        };
        let from = IsoWeek::parse(from).ok_or(Rejection::InvalidWeek)?;
        let to = IsoWeek::parse(to).ok_or(Rejection::InvalidWeek)?;
        let weeks = series_weeks(from, to).ok_or(Rejection::InvalidRange)?;
        Ok(Self::Series { weeks, format })
    }

    /// The week a wide event names: the week read, or the last of a series.
    pub fn week(&self) -> Option<IsoWeek> {
        match self {
            Self::Week { week, .. } => Some(*week),
            Self::Series { weeks, .. } => weeks.last().copied(),
        }
    }
}

/// A query string's `name=value` pairs as sent (no percent-decoding: every accepted name and
/// value is plain ASCII, so an encoded one is simply not accepted). Empty pieces are skipped.
fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| piece.split_once('=').unwrap_or((piece, "")))
}

/// The property names a listed page is reduced to before it crosses into Rust: each key's
/// metadata and the record's fields (`JSON.stringify`'s replacer list applies at every
/// level), so that no key name or expiration is copied or parsed.
pub const LISTED_FIELDS: [&str; 7] = [
    "metadata",
    "protocol_version",
    "daemon_version",
    "platform",
    "node_version",
    "primary_framework",
    "first_seen_at",
];

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

    /// The values and their sessions, in order of value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0
            .iter()
            .map(|(value, sessions)| (value.as_str(), *sessions))
    }
}

/// Adds one KV `list` page to a week's tally along `dimension`. `keys_json` is the page's
/// keys as JSON with only their metadata (`JSON.stringify(page.keys, LISTED_FIELDS)`): each
/// key carries its record as metadata, as the Worker and `export-kv` write it. A key without a record is an error: a namespace
/// holding one was written by something else, and a count that skipped it would be wrong.
pub fn tally_listed_keys(
    keys_json: &str,
    dimension: Dimension,
    tally: &mut Tally,
) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ListedKey {
        metadata: StoredRecord,
    }
    let keys: Vec<ListedKey> = serde_json::from_str(keys_json)
        .map_err(|_| "a listed key without a record as its metadata".to_owned())?;
    for key in &keys {
        tally.add(dimension.value_of(&key.metadata), 1);
    }
    Ok(())
}

/// A week's tally along `dimension` from its records: value → sessions.
pub fn tally<'a>(
    records: impl IntoIterator<Item = &'a StoredRecord>,
    dimension: Dimension,
) -> Tally {
    let mut tally = Tally::default();
    for record in records {
        tally.add(dimension.value_of(record), 1);
    }
    tally
}

/// What a week can be broken down by: a field of the record, or the major version of Node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    Platform,
    PrimaryFramework,
    DaemonVersion,
    ProtocolVersion,
    NodeMajor,
}

impl Dimension {
    pub const ALL: [Self; 5] = [
        Self::Platform,
        Self::PrimaryFramework,
        Self::DaemonVersion,
        Self::ProtocolVersion,
        Self::NodeMajor,
    ];

    /// Its name in `?by=` and in answers.
    pub fn name(self) -> &'static str {
        match self {
            Self::Platform => "platform",
            Self::PrimaryFramework => "primary_framework",
            Self::DaemonVersion => "daemon_version",
            Self::ProtocolVersion => "protocol_version",
            Self::NodeMajor => "node_major",
        }
    }

    /// Exactly one of the names, case and all.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "platform" => Some(Self::Platform),
            "primary_framework" => Some(Self::PrimaryFramework),
            "daemon_version" => Some(Self::DaemonVersion),
            "protocol_version" => Some(Self::ProtocolVersion),
            "node_major" => Some(Self::NodeMajor),
            _ => None,
        }
    }

    /// The field of the record this dimension reads.
    fn field(self) -> &'static str {
        match self {
            Self::NodeMajor => "node_version",
            other => other.name(),
        }
    }

    /// The values of a record's JSON text, as the core wrote it, along every dimension (in
    /// the order of [`Dimension::ALL`]); `None` if a field is missing. Read from the text,
    /// as [`record_to_write`] does, so that the Worker's bundle carries no record parser:
    /// every value passed its rule, so none holds a quote or an escape.
    pub fn values_in(record_json: &str) -> Option<[&str; 5]> {
        let value = |dimension: Dimension| {
            let name = format!("\"{}\":\"", dimension.field());
            let start = record_json.find(&name)? + name.len();
            let rest = record_json.get(start..)?;
            let value = rest.get(..rest.find('"')?)?;
            Some(match dimension {
                Self::NodeMajor => node_major(value),
                _ => value,
            })
        };
        Some([
            value(Self::ALL[0])?,
            value(Self::ALL[1])?,
            value(Self::ALL[2])?,
            value(Self::ALL[3])?,
            value(Self::ALL[4])?,
        ])
    }

    /// The record's value along this dimension.
    pub fn value_of(self, record: &StoredRecord) -> &str {
        match self {
            Self::Platform => &record.platform,
            Self::PrimaryFramework => &record.primary_framework,
            Self::DaemonVersion => &record.daemon_version,
            Self::ProtocolVersion => &record.protocol_version,
            Self::NodeMajor => node_major(&record.node_version),
        }
    }
}

/// The major version of a Node version as pings send it: `v20.11.1` → `20`.
pub fn node_major(node_version: &str) -> &str {
    let version = node_version.strip_prefix('v').unwrap_or(node_version);
    version.split('.').next().unwrap_or(version)
}

/// What a ping does to its week's record: a new session is written; a repeat that changes a
/// field is written with the first ping's `first_seen_at`; a repeat that changes nothing
/// writes nothing (KV allows one write a second per key and, on the free plan, 1,000 a day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordChange {
    New(StoredRecord),
    Changed {
        before: StoredRecord,
        after: StoredRecord,
    },
    Unchanged,
}

impl RecordChange {
    /// Compares an incoming record with the one stored for the same (week, session), if any.
    pub fn of(stored: Option<StoredRecord>, incoming: StoredRecord) -> Self {
        let Some(before) = stored else {
            return Self::New(incoming);
        };
        let after = StoredRecord {
            first_seen_at: before.first_seen_at.clone(),
            ..incoming
        };
        if after == before {
            Self::Unchanged
        } else {
            Self::Changed { before, after }
        }
    }

    /// The record to write, if any.
    pub fn to_write(&self) -> Option<&StoredRecord> {
        match self {
            Self::New(record) | Self::Changed { after: record, .. } => Some(record),
            Self::Unchanged => None,
        }
    }
}

/// How a week's tallies move as its records change, summed over any number of changes: the
/// sessions each (dimension, value) gains or loses. A store that keeps tallies applies them
/// with the records, in one transaction, so a breakdown reads a few rows at any week size.
/// A list rather than a map: a batch moves few distinct values, and the Worker's bundle
/// carries no hash map for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TallyMoves(Vec<(Dimension, String, i64)>);

impl TallyMoves {
    /// A record replaced by another (`None`: a session new to the week, or one deleted or
    /// expired): each dimension counts the session under its latest value only, so a relay
    /// that upgrades mid-week moves from one version to the other.
    pub fn replace(&mut self, before: Option<&StoredRecord>, after: Option<&StoredRecord>) {
        fn values_of(record: &StoredRecord) -> [&str; 5] {
            Dimension::ALL.map(|dimension| dimension.value_of(record))
        }
        self.replace_values(before.map(values_of), after.map(values_of));
    }

    /// [`TallyMoves::replace`] on records' values along every dimension (in the order of
    /// [`Dimension::ALL`], as [`Dimension::values_in`] reads them from a record's text).
    pub fn replace_values(&mut self, before: Option<[&str; 5]>, after: Option<[&str; 5]>) {
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

/// [`RecordChange`] on records as stores keep them, the core's JSON text: what to write
/// over `stored` (`None` for a new session), if anything. Both texts come from the same
/// serialisation, fields in one order, so they differ exactly where a field does, and this
/// works on the text alone (the Worker's bundle carries no second copy of the record's
/// serde code; Redis's script does the same in Lua). A record without a `first_seen_at`
/// (none this version writes) is replaced whole.
pub fn record_to_write(stored: Option<&str>, incoming: &str) -> Option<String> {
    let Some(stored) = stored else {
        return Some(incoming.to_owned());
    };
    let (Some(first), Some(now)) = (first_seen_of(stored), first_seen_of(incoming)) else {
        return Some(incoming.to_owned());
    };
    let kept = incoming.replacen(now, first, 1);
    (kept != stored).then_some(kept)
}

/// The `"first_seen_at":"…"` member of a record's JSON text.
fn first_seen_of(record: &str) -> Option<&str> {
    const NAME: &str = "\"first_seen_at\":\"";
    let start = record.find(NAME)?;
    let end = start + NAME.len() + record.get(start + NAME.len()..)?.find('"')? + 1;
    record.get(start..end)
}

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
        };
        for (value, sessions) in tally.0.into_iter().filter(|(_, sessions)| *sessions > 0) {
            breakdown.weekly_active_sessions += sessions;
            if sessions >= min_sessions {
                breakdown.counts.push((value, sessions));
            } else {
                breakdown.withheld_sessions += sessions;
            }
        }
        breakdown
    }

    pub fn into_response(self, format: Format) -> Response {
        match format {
            Format::Json => Response::json(200, "ok", &self),
            Format::Csv => {
                let mut csv = String::from("week,by,value,sessions\r\n");
                let withheld = ("(withheld)".to_owned(), self.withheld_sessions);
                for (value, sessions) in self.counts.into_iter().chain([withheld]) {
                    let row = [
                        &self.week.to_string(),
                        self.by,
                        &value,
                        &sessions.to_string(),
                    ];
                    csv.push_str(&csv_row(&row));
                }
                Response::csv(csv)
            }
        }
    }
}

/// The most weeks one series spans: the retention (12 weeks) and the current one.
pub const MAX_SERIES_WEEKS: usize = 13;

/// The weeks from `from` to `to`, both included, in order; `None` when `from` is after `to`
/// or the span is longer than [`MAX_SERIES_WEEKS`].
pub fn series_weeks(from: IsoWeek, to: IsoWeek) -> Option<Vec<IsoWeek>> {
    let mut weeks = vec![from];
    let mut week = from;
    while week < to {
        week = week.next()?;
        weeks.push(week);
        if weeks.len() > MAX_SERIES_WEEKS {
            return None;
        }
    }
    (from <= to).then_some(weeks)
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
}

impl Series {
    /// From the weeks of [`series_weeks`] and the count of each, in the same order (a store
    /// counts 0 for a week without data). `None` unless there is one count per week and at
    /// least one week.
    pub fn new(weeks: &[IsoWeek], counts: &[u64]) -> Option<Self> {
        let (from, to) = (*weeks.first()?, *weeks.last()?);
        if weeks.len() != counts.len() {
            return None;
        }
        let weeks = weeks
            .iter()
            .zip(counts)
            .map(|(&week, &weekly_active_sessions)| WeekCount {
                week,
                weekly_active_sessions,
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

/// A week's count: `{"week":…,"weekly_active_sessions":N}`, or its CSV.
pub fn weekly_active_response(week: IsoWeek, sessions: u64, format: Format) -> Response {
    let count = WeekCount {
        week,
        weekly_active_sessions: sessions,
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
pub fn series_response(weeks: &[IsoWeek], counts: &[u64], format: Format) -> Response {
    match Series::new(weeks, counts) {
        Some(series) => series.into_response(format),
        None => Rejection::Internal.into_response(),
    }
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

/// One CSV row (RFC 4180, CRLF). A field with a comma, quote or line break is quoted; one
/// that a spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) gets a leading `'`.
fn csv_row(fields: &[&str]) -> String {
    let quoted: Vec<String> = fields
        .iter()
        .map(|field| {
            let field = if field.starts_with(['=', '+', '-', '@']) {
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
    use super::*;

    fn record(daemon_version: &str, node_version: &str, first_seen_at: &str) -> StoredRecord {
        StoredRecord {
            protocol_version: "1.0.0".into(),
            daemon_version: daemon_version.into(),
            platform: "linux".into(),
            node_version: node_version.into(),
            primary_framework: "react".into(),
            first_seen_at: first_seen_at.into(),
        }
    }

    fn week(text: &str) -> IsoWeek {
        IsoWeek::parse(text).unwrap_or_else(|| panic!("{text}"))
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
    fn a_series_needs_from_and_to_once_in_order_and_within_thirteen_weeks() {
        let series = Readout::for_series(Some("to=2026-W02&from=2025-W52"), Format::Csv).unwrap();
        let Readout::Series { weeks, format } = &series else {
            panic!("{series:?}")
        };
        assert_eq!((weeks.len(), *format), (3, Format::Csv));
        assert_eq!(series.week(), Some(week("2026-W02")));
        let cases = [
            (None, Rejection::InvalidQuery),
            (Some("from=2026-W01"), Rejection::InvalidQuery),
            (
                Some("from=2026-W01&to=2026-W02&by=platform"),
                Rejection::InvalidQuery,
            ),
            (
                Some("from=2026-W01&from=2026-W01&to=2026-W02"),
                Rejection::InvalidQuery,
            ),
            (Some("from=2026-W1&to=2026-W02"), Rejection::InvalidWeek),
            (Some("from=2026-W03&to=2026-W02"), Rejection::InvalidRange),
            (Some("from=2026-W01&to=2026-W14"), Rejection::InvalidRange),
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
    fn a_listed_page_adds_to_the_tally_and_a_key_without_a_record_is_an_error() {
        let record = serde_json::to_string(&record("1.0.0", "v20.1.0", "x")).unwrap();
        let page = format!(r#"[{{"metadata":{record}}},{{"metadata":{record}}}]"#);
        let mut tally = Tally::default();
        tally_listed_keys(&page, Dimension::NodeMajor, &mut tally).unwrap();
        tally_listed_keys(&page, Dimension::NodeMajor, &mut tally).unwrap();
        assert_eq!(tally.iter().collect::<Vec<_>>(), [("20", 4)]);
        let mut tally = Tally::default();
        let foreign = r#"[{}]"#;
        assert!(tally_listed_keys(foreign, Dimension::Platform, &mut tally).is_err());
    }

    #[test]
    fn a_tally_counts_each_record_once_under_its_value() {
        let records = [
            record("1.0.0", "v20.11.1", "x"),
            record("1.0.0", "v18.0.0", "x"),
            record("1.1.0", "v20.1.0", "x"),
        ];
        let by_node = tally(&records, Dimension::NodeMajor);
        assert_eq!(by_node.iter().collect::<Vec<_>>(), [("18", 1), ("20", 2)]);
        let plain = weekly_active_response(week("2026-W48"), 3, Format::Csv);
        assert_eq!(plain.body, "week,weekly_active_sessions\r\n2026-W48,3\r\n");
    }

    #[test]
    fn the_range_message_names_the_longest_series() {
        let weeks = format!("at most {MAX_SERIES_WEEKS} weeks");
        assert!(Rejection::InvalidRange.message().contains(&weeks));
    }

    #[test]
    fn dimensions_parse_only_their_own_names() {
        for dimension in Dimension::ALL {
            assert_eq!(Dimension::parse(dimension.name()), Some(dimension));
        }
        for other in [
            "",
            "Platform",
            "node_version",
            "session_id",
            "platform,node_major",
        ] {
            assert_eq!(Dimension::parse(other), None, "{other}");
        }
    }

    #[test]
    fn node_major_is_the_first_number_with_or_without_the_v() {
        let cases = [
            ("v20.11.1", "20"),
            ("18.0.0", "18"),
            ("v22.1.0-rc.1", "22"),
            ("v", ""),
        ];
        for (version, major) in cases {
            assert_eq!(node_major(version), major, "{version}");
        }
        let old = record("1.0.0", "v20.11.1", "2026-11-23T00:00:00Z");
        assert_eq!(Dimension::NodeMajor.value_of(&old), "20");
    }

    #[test]
    fn a_repeat_keeps_the_first_ping_s_time_and_writes_only_when_a_field_changed() {
        let first = record("1.0.0", "v20.11.1", "2026-11-23T00:00:00Z");
        let same_later = record("1.0.0", "v20.11.1", "2026-11-24T00:00:00Z");
        let upgraded = record("1.1.0", "v20.11.1", "2026-11-24T00:00:00Z");
        assert_eq!(
            RecordChange::of(None, first.clone()),
            RecordChange::New(first.clone())
        );
        assert_eq!(
            RecordChange::of(Some(first.clone()), same_later),
            RecordChange::Unchanged
        );
        let changed = RecordChange::of(Some(first.clone()), upgraded);
        let written = changed.to_write().unwrap();
        assert_eq!(written.daemon_version, "1.1.0");
        assert_eq!(written.first_seen_at, "2026-11-23T00:00:00Z");
    }

    #[test]
    fn tallies_move_a_session_to_its_latest_value_and_out_when_it_goes() {
        let first = record("1.0.0", "v20.11.1", "2026-11-23T00:00:00Z");
        let upgraded = record("1.1.0", "v22.1.0", "2026-11-23T00:00:00Z");
        let mut moves = TallyMoves::default();
        moves.replace(None, Some(&first));
        let moved = |moves: &TallyMoves| -> Vec<(&'static str, String, i64)> {
            let mut moved: Vec<_> = moves
                .iter()
                .map(|(d, value, n)| (d.name(), value.to_owned(), n))
                .collect();
            moved.sort();
            moved
        };
        let mut new: Vec<_> = Dimension::ALL
            .iter()
            .map(|d| (d.name(), d.value_of(&first).to_owned(), 1))
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
        upgrade.replace(Some(&first), Some(&upgraded));
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
        moves.replace(Some(&first), Some(&upgraded));
        moves.replace(Some(&upgraded), None);
        assert!(moves.is_empty(), "{moves:?}");
    }

    #[test]
    fn a_records_text_gives_the_values_its_parsed_form_does() {
        let upgraded = record("1.1.0-rc.1", "v22.1.0", "2026-11-23T00:00:00Z");
        let text = serde_json::to_string(&upgraded).unwrap();
        let parsed = Dimension::ALL.map(|d| d.value_of(&upgraded));
        assert_eq!(Dimension::values_in(&text), Some(parsed));
        assert_eq!(parsed[4], "22");
        assert_eq!(
            Dimension::values_in(&text.replace("\"platform\"", "\"os\"")),
            None
        );
        let mut from_text = TallyMoves::default();
        from_text.replace_values(None, Dimension::values_in(&text));
        let mut from_record = TallyMoves::default();
        from_record.replace(None, Some(&upgraded));
        assert_eq!(from_text, from_record);
    }

    #[test]
    fn a_stored_record_is_rewritten_only_for_a_change_and_keeps_its_first_day() {
        let text = |record: &StoredRecord| serde_json::to_string(record).unwrap();
        let first = text(&record("1.0.0", "v20.11.1", "2026-11-23T00:00:00Z"));
        let same = text(&record("1.0.0", "v20.11.1", "2026-11-24T00:00:00Z"));
        let upgraded = text(&record("1.1.0", "v20.11.1", "2026-11-24T00:00:00Z"));
        assert_eq!(record_to_write(None, &first), Some(first.clone()));
        assert_eq!(record_to_write(Some(&first), &same), None);
        let written = record_to_write(Some(&first), &upgraded).unwrap();
        assert_eq!(written, upgraded.replace("2026-11-24", "2026-11-23"));
        assert_eq!(record_to_write(Some("{}"), &same), Some(same.clone()));
    }

    proptest::proptest! {
        /// The text rule stores run is the typed rule, on any pair of records.
        #[test]
        fn the_text_rule_is_record_change(
            a in 0usize..3, b in 0usize..3, c in 0usize..3, d in 0usize..3,
        ) {
            let versions = ["1.0.0", "1.1.0", "2.0.0-rc.1"];
            let days = ["2026-11-23T00:00:00Z", "2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z"];
            let before = record(versions[a], "v20.1.0", days[b]);
            let incoming = record(versions[c], "v20.1.0", days[d]);
            let text = |r: &StoredRecord| serde_json::to_string(r).unwrap();
            let typed = RecordChange::of(Some(before.clone()), incoming.clone());
            proptest::prop_assert_eq!(
                record_to_write(Some(&text(&before)), &text(&incoming)),
                typed.to_write().map(text)
            );
        }
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
    fn a_series_spans_at_most_thirteen_weeks_in_order_across_a_year_end() {
        let weeks = series_weeks(week("2026-W50"), week("2027-W03")).unwrap();
        let names: Vec<String> = weeks.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "2026-W50", "2026-W51", "2026-W52", "2026-W53", "2027-W01", "2027-W02", "2027-W03"
            ]
        );
        assert_eq!(
            series_weeks(week("2026-W01"), week("2026-W13")).map(|w| w.len()),
            Some(13)
        );
        assert_eq!(series_weeks(week("2026-W01"), week("2026-W14")), None);
        assert_eq!(series_weeks(week("2026-W02"), week("2026-W01")), None);
        assert_eq!(
            series_weeks(week("2026-W02"), week("2026-W02")).map(|w| w.len()),
            Some(1)
        );
        assert_eq!(Series::new(&weeks[..2], &[0]), None);
        assert_eq!(Series::new(&[], &[]), None);
        let series = Series::new(&weeks[..2], &[0, 9]).unwrap();
        assert_eq!(
            series.clone().into_response(Format::Json).body,
            r#"{"from":"2026-W50","to":"2026-W51","weeks":[{"week":"2026-W50","weekly_active_sessions":0},{"week":"2026-W51","weekly_active_sessions":9}]}"#
        );
        assert_eq!(
            series.into_response(Format::Csv).body,
            "week,weekly_active_sessions\r\n2026-W50,0\r\n2026-W51,9\r\n"
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
    }
}
