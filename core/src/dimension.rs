//! What a week is broken down by: five dimensions, each a field of the record (or the major
//! version of Node), read from a record's text as the core wrote it.

use crate::record::StoredRecord;

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
        Self::ALL
            .into_iter()
            .find(|dimension| dimension.name() == name)
    }

    /// The field of the record this dimension reads.
    pub(crate) fn field(self) -> &'static str {
        match self {
            Self::NodeMajor => "node_version",
            other => other.name(),
        }
    }

    /// The values of a record's JSON text, as the core wrote it, along every dimension (in
    /// the order of [`Dimension::ALL`]); `None` if a field is missing or empty. Read from the
    /// text, as [`crate::record::record_to_write`] does, so that the Worker's bundle carries
    /// no record parser: every value passed its rule, so none holds a quote or an escape.
    pub fn values_in(record_json: &str) -> Option<[&str; 5]> {
        let value = |dimension: Dimension| {
            let name = format!("\"{}\":\"", dimension.field());
            let start = record_json.find(&name)? + name.len();
            let rest = record_json.get(start..)?;
            let value = rest.get(..rest.find('"')?)?;
            let value = match dimension {
                Self::NodeMajor => node_major(value),
                _ => value,
            };
            (!value.is_empty()).then_some(value)
        };
        Some([
            value(Self::ALL[0])?,
            value(Self::ALL[1])?,
            value(Self::ALL[2])?,
            value(Self::ALL[3])?,
            value(Self::ALL[4])?,
        ])
    }

    /// The record's value along this dimension (the typed form: tests and the KV import).
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

impl Dimension {
    /// The order a breakdown lists this dimension's values in: versions by semantic-version
    /// precedence (`0.8.7` before `0.10.0`, `1.2.0-rc.1` before `1.2.0`), Node majors by number,
    /// platforms and frameworks by name; a value that is not one of its kind (`other`, the
    /// bound's) comes last.
    pub fn order(self, a: &str, b: &str) -> std::cmp::Ordering {
        match self {
            Self::DaemonVersion | Self::ProtocolVersion => match (semver_key(a), semver_key(b)) {
                (Some(x), Some(y)) => compare_semver(&x, &y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => a.cmp(b),
            },
            Self::NodeMajor => match (a.parse::<u64>(), b.parse::<u64>()) {
                (Ok(a), Ok(b)) => a.cmp(&b),
                (Ok(_), Err(_)) => std::cmp::Ordering::Less,
                (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
                (Err(_), Err(_)) => a.cmp(b),
            },
            Self::Platform | Self::PrimaryFramework => a.cmp(b),
        }
    }
}

/// A version's three numbers and its pre-release identifiers, if it is one.
fn semver_key(version: &str) -> Option<([u64; 3], Vec<&str>)> {
    let (release, pre) = match version.split_once('-') {
        Some((release, pre)) => (release, pre.split('.').collect()),
        None => (version, Vec::new()),
    };
    let mut numbers = release.split('.').map(|part| part.parse::<u64>().ok());
    let key = [numbers.next()??, numbers.next()??, numbers.next()??];
    numbers.next().is_none().then_some((key, pre))
}

/// SemVer 2.0.0 precedence: the numbers, then a release above its pre-releases, then the
/// pre-release identifiers one by one (numeric ones by number, and below alphanumeric ones).
fn compare_semver(a: &([u64; 3], Vec<&str>), b: &([u64; 3], Vec<&str>)) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    a.0.cmp(&b.0)
        .then_with(|| match (a.1.is_empty(), b.1.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => {
                for (x, y) in a.1.iter().zip(&b.1) {
                    let by = match (x.parse::<u64>(), y.parse::<u64>()) {
                        (Ok(x), Ok(y)) => x.cmp(&y),
                        (Ok(_), Err(_)) => Ordering::Less,
                        (Err(_), Ok(_)) => Ordering::Greater,
                        (Err(_), Err(_)) => x.cmp(y),
                    };
                    if by != Ordering::Equal {
                        return by;
                    }
                }
                a.1.len().cmp(&b.1.len())
            }
        })
}

/// The major version of a Node version as pings send it: `v20.11.1` → `20`.
pub fn node_major(node_version: &str) -> &str {
    let version = node_version.strip_prefix('v').unwrap_or(node_version);
    version.split('.').next().unwrap_or(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(daemon_version: &str, node_version: &str) -> StoredRecord {
        StoredRecord {
            protocol_version: "1.0.0".into(),
            daemon_version: daemon_version.into(),
            platform: "linux".into(),
            node_version: node_version.into(),
            primary_framework: "react".into(),
            first_seen_at: "2026-11-23T00:00:00Z".into(),
        }
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
    fn versions_are_listed_by_precedence_majors_by_number_and_other_last() {
        fn sorted<'a>(dimension: Dimension, values: &[&'a str]) -> Vec<&'a str> {
            let mut values = values.to_vec();
            values.sort_by(|a, b| dimension.order(a, b));
            values
        }
        assert_eq!(
            sorted(
                Dimension::DaemonVersion,
                &[
                    "other",
                    "0.10.0",
                    "1.0.0",
                    "0.8.7",
                    "1.0.0-rc.1",
                    "1.0.0-alpha",
                    "1.0.0-rc.10",
                    "1.0.0-rc.2"
                ]
            ),
            [
                "0.8.7",
                "0.10.0",
                "1.0.0-alpha",
                "1.0.0-rc.1",
                "1.0.0-rc.2",
                "1.0.0-rc.10",
                "1.0.0",
                "other"
            ]
        );
        assert_eq!(
            sorted(Dimension::NodeMajor, &["other", "22", "9", "18", "100"]),
            ["9", "18", "22", "100", "other"]
        );
        assert_eq!(
            sorted(Dimension::Platform, &["win32", "darwin", "linux"]),
            ["darwin", "linux", "win32"]
        );
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
        assert_eq!(
            Dimension::NodeMajor.value_of(&record("1.0.0", "v20.11.1")),
            "20"
        );
    }

    #[test]
    fn a_records_text_gives_the_values_its_parsed_form_does() {
        let upgraded = record("1.1.0-rc.1", "v22.1.0");
        let text = serde_json::to_string(&upgraded).unwrap();
        let parsed = Dimension::ALL.map(|d| d.value_of(&upgraded));
        assert_eq!(Dimension::values_in(&text), Some(parsed));
        assert_eq!(parsed[4], "22");
        for damaged in [
            text.replace("\"platform\"", "\"os\""),
            text.replace("\"linux\"", "\"\""),
            "not a record".to_owned(),
            String::new(),
        ] {
            assert_eq!(Dimension::values_in(&damaged), None, "{damaged}");
        }
    }
}
