//! What is stored for an accepted ping: one record per (ISO week, session), under a key
//! that holds the session id so that the record itself does not, and when it expires.
//!
//! No stored time is finer than a day: neither `first_seen_at` nor the expiry. A time to the
//! second could be matched with any log that saw the request (a proxy's, the platform's) and
//! so tie a session id to a client address; a weekly metric needs only the day.

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, Time};

use crate::ping::{SessionId, SessionPing};
use crate::week::IsoWeek;

/// The prefix of every key of one week: a KV `list` on it finds exactly that week.
pub fn week_key_prefix(week: IsoWeek) -> String {
    format!("session:{week}:")
}

/// `session:<YYYY-Www>:<session_id>`, the one key of a (week, session): KV's key, and what a
/// KV export writes for a record of another store.
pub fn session_key(week: IsoWeek, session_id: &str) -> String {
    format!("{}{session_id}", week_key_prefix(week))
}

/// The week and session of a key written as [`session_key`] makes them,
/// `session:<YYYY-Www>:<session_id>`; `None` for any other text (a KV import refuses it).
pub fn parse_session_key(key: &str) -> Option<(IsoWeek, SessionId)> {
    let rest = key.strip_prefix("session:")?;
    let (week, id) = rest.split_once(':')?;
    Some((IsoWeek::parse(week)?, SessionId::parse(id)?))
}

/// `deletion:<session_id>`: a deletion journal's entry in KV, kept as long as a record of the
/// session could still be held anywhere (the TTL), so that a record carried between the
/// targets after the deletion (a DNS swap and back) is not put back. It holds the id only.
pub fn deletion_key(session_id: &str) -> String {
    format!("deletion:{session_id}")
}

/// The session of a key written as [`deletion_key`] makes it; `None` for any other text.
pub fn parse_deletion_key(key: &str) -> Option<SessionId> {
    SessionId::parse(key.strip_prefix("deletion:")?)
}

/// The stored record: the five non-key fields and the server's time. Nothing else exists
/// in this type, so nothing else (no address, no user agent) can be stored by mistake, and
/// reading one back (a KV import) refuses any other field. Read back as owned strings; a
/// new one is written from borrowed ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredRecord<Text = String> {
    pub protocol_version: Text,
    pub daemon_version: Text,
    pub platform: Text,
    pub node_version: Text,
    pub primary_framework: Text,
    pub first_seen_at: Text,
}

/// One write to perform after answering 204.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionWrite {
    pub week: IsoWeek,
    pub session_id: SessionId,
    /// The record as JSON: the value, and in KV also the key's metadata.
    pub record_json: String,
}

impl SessionWrite {
    /// The write for a ping received at `now`: the server's clock picks the week, so a
    /// client cannot write into any other week.
    pub fn new(ping: SessionPing<'_>, now: OffsetDateTime) -> Self {
        let now = now.to_offset(time::UtcOffset::UTC);
        let first_seen_at = day_stamp(now.date());
        let record = StoredRecord {
            protocol_version: &*ping.protocol_version,
            daemon_version: &*ping.daemon_version,
            platform: ping.platform.as_str(),
            node_version: &*ping.node_version,
            primary_framework: ping.primary_framework.as_str(),
            first_seen_at: &first_seen_at,
        };
        Self {
            week: IsoWeek::containing(now),
            record_json: serde_json::to_string(&record).unwrap_or_default(),
            session_id: ping.session_id,
        }
    }

    /// `session:<YYYY-Www>:<session_id>`: a repeat ping in the same week overwrites it.
    pub fn key(&self) -> String {
        session_key(self.week, self.session_id.as_str())
    }
}

impl StoredRecord {
    /// Whether a valid ping could have produced this record: each of its five fields passes
    /// the rule a ping's does (the same `parse_ping`, so the rules cannot drift), or is
    /// [`crate::stored_week::OTHER_VALUE`], as a store keeps a value past a week's bound. A
    /// record from elsewhere (a KV import) that could not is refused rather than stored.
    pub fn could_come_from_a_ping(&self) -> bool {
        /// The ping that would have written the record, under a placeholder session id.
        #[derive(Serialize)]
        struct AsPing<'a> {
            protocol_version: &'a str,
            daemon_version: &'a str,
            session_id: &'a str,
            platform: &'a str,
            node_version: &'a str,
            primary_framework: &'a str,
        }
        // A version counted as other passes as a valid one would (only versions are ever
        // folded: platforms and frameworks are fixed lists far shorter than the bound).
        fn or<'a>(value: &'a str, valid: &'static str) -> &'a str {
            if value == crate::stored_week::OTHER_VALUE {
                valid
            } else {
                value
            }
        }
        let ping = AsPing {
            protocol_version: or(&self.protocol_version, "1.0.0"),
            daemon_version: or(&self.daemon_version, "1.0.0"),
            session_id: "record-check",
            platform: &self.platform,
            node_version: or(&self.node_version, "v20.0.0"),
            primary_framework: &self.primary_framework,
        };
        serde_json::to_string(&ping)
            .ok()
            .is_some_and(|body| crate::parse_ping(body.as_bytes()).is_ok())
    }

    /// The record with `first_seen_at` cut to its UTC day, as every new record is written;
    /// for records that come from elsewhere (a KV import, a file written by an older
    /// version). `None` when `first_seen_at` is not an RFC 3339 time: such a record is refused.
    pub fn to_day_precision(mut self) -> Option<Self> {
        let seen = OffsetDateTime::parse(&self.first_seen_at, &Rfc3339).ok()?;
        self.first_seen_at = day_stamp(seen.to_offset(time::UtcOffset::UTC).date());
        Some(self)
    }
}

/// What a ping writes over the record its week holds for its session (`stored`, `None` for
/// a new session), if anything: a new session is written; a repeat that changed a field is
/// written with the first ping's `first_seen_at`; a repeat that changed nothing writes nothing
/// (KV allows one write a second per key and, on the free plan, 1,000 a day).
///
/// The rule works on the records' text as the core writes it: both come from the same
/// serialisation, fields in one order, so they differ exactly where a field does, and no
/// store carries a second copy of the record's serde code (the Worker's bundle least of all).
/// The typed form of the rule is the tests' oracle. A record without a `first_seen_at` (none
/// this version writes) is replaced whole.
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

/// Seconds in a day: the precision of every stored time.
pub const DAY_SECONDS: i64 = 24 * 60 * 60;

/// The start of the UTC day holding `unix` (seconds since the epoch).
pub fn day_start(unix: i64) -> i64 {
    unix - unix.rem_euclid(DAY_SECONDS)
}

/// When a record written at `now_unix` with a TTL of `ttl_seconds` expires, in seconds since
/// the epoch: the start of the UTC day in which the TTL runs out, so that the expiry (which
/// KV lists with every key) says no more than the day of the write. A record therefore lives
/// at most the TTL, and at most a day less. A TTL too short for that (under a day, in tests)
/// is kept exact, since KV refuses an expiry less than a minute away.
pub fn expires_at(now_unix: i64, ttl_seconds: u64) -> i64 {
    let exact = now_unix.saturating_add(i64::try_from(ttl_seconds).unwrap_or(i64::MAX));
    let soonest = now_unix.saturating_add(
        i64::try_from(ttl_seconds.min(crate::limits::MIN_SESSION_TTL_SECONDS)).unwrap_or(0),
    );
    if day_start(exact) >= soonest {
        day_start(exact)
    } else {
        exact
    }
}

/// `YYYY-MM-DDT00:00:00Z`: a day, written as the RFC 3339 time the field has always held.
fn day_stamp(date: Date) -> String {
    OffsetDateTime::new_utc(date, Time::MIDNIGHT)
        .format(&Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(first_seen_at: &str) -> StoredRecord {
        StoredRecord {
            protocol_version: "1.0.0".into(),
            daemon_version: "1.0.0".into(),
            platform: "linux".into(),
            node_version: "v20.0.0".into(),
            primary_framework: "vue".into(),
            first_seen_at: first_seen_at.into(),
        }
    }

    /// The rule in its typed form, the oracle of [`record_to_write`]: a repeat keeps the first
    /// ping's `first_seen_at`, and writes only if a field changed.
    fn typed_rule(stored: Option<StoredRecord>, incoming: StoredRecord) -> Option<StoredRecord> {
        let Some(before) = stored else {
            return Some(incoming);
        };
        let after = StoredRecord {
            first_seen_at: before.first_seen_at.clone(),
            ..incoming
        };
        (after != before).then_some(after)
    }

    /// A valid ping's record, as [`SessionWrite::new`] writes it on day `day` of 2026.
    fn written(fields: &(String, String, usize, String, usize), day: u16) -> String {
        const PLATFORMS: [&str; 5] = ["darwin", "linux", "win32", "freebsd", "openbsd"];
        const FRAMEWORKS: [&str; 8] = [
            "react", "vue", "next", "nuxt", "svelte", "astro", "solid", "unknown",
        ];
        let (protocol, daemon, platform, node, framework) = fields;
        let body = format!(
            r#"{{"protocol_version":"{protocol}","daemon_version":"{daemon}","session_id":"session-0001","platform":"{}","node_version":"{node}","primary_framework":"{}"}}"#,
            PLATFORMS[platform % 5],
            FRAMEWORKS[framework % 8]
        );
        let ping = crate::parse_ping(body.as_bytes()).unwrap_or_else(|r| panic!("{body}: {r:?}"));
        let date = Date::from_ordinal_date(2026, day).unwrap();
        SessionWrite::new(
            ping,
            OffsetDateTime::new_utc(date, Time::from_hms(13, 4, 5).unwrap()),
        )
        .record_json
    }

    fn fields() -> impl proptest::strategy::Strategy<Value = (String, String, usize, String, usize)>
    {
        // Canonical versions, as the rule admits them: numbers without a leading zero,
        // dot-separated pre-release identifiers.
        let identifier = "(0|[1-9][0-9]{0,3}|[A-Za-z-][0-9A-Za-z-]{0,5})";
        let pre = format!("(-{identifier}(\\.{identifier}){{0,2}})?");
        let number = "(0|[1-9][0-9]{0,2})";
        let semver = format!("{number}\\.{number}\\.{number}{pre}");
        let node = format!("v?{number}\\.{number}\\.{number}{pre}");
        (
            proptest::string::string_regex(&semver).unwrap(),
            proptest::string::string_regex(&semver).unwrap(),
            0usize..5,
            proptest::string::string_regex(&node).unwrap(),
            0usize..8,
        )
    }

    proptest::proptest! {
        /// The text rule every store runs is the typed rule, on any two valid records (each
        /// field drawn from its whole rule), the same or different, on any two days.
        #[test]
        fn the_text_rule_is_the_typed_rule(
            a in fields(), b in fields(), same in proptest::bool::ANY,
            day_a in 1u16..365, day_b in 1u16..365,
        ) {
            let b = if same { a.clone() } else { b };
            let (stored, incoming) = (written(&a, day_a), written(&b, day_b));
            let parse = |text: &str| serde_json::from_str::<StoredRecord>(text).unwrap();
            let typed = typed_rule(Some(parse(&stored)), parse(&incoming))
                .map(|record| serde_json::to_string(&record).unwrap());
            proptest::prop_assert_eq!(record_to_write(Some(&stored), &incoming), typed);
            proptest::prop_assert_eq!(record_to_write(None, &incoming), Some(incoming.clone()));
            let typed_values = crate::Dimension::ALL.map(|d| d.value_of(&parse(&incoming)).to_owned());
            let text_values = crate::Dimension::values_in(&incoming).map(|v| v.map(str::to_owned));
            proptest::prop_assert_eq!(text_values, Some(typed_values));
        }
    }

    #[test]
    fn a_stored_record_is_rewritten_only_for_a_change_and_keeps_its_first_day() {
        let text = |daemon: &str, day: &str| {
            serde_json::to_string(&StoredRecord {
                daemon_version: daemon.into(),
                ..record(day)
            })
            .unwrap()
        };
        let first = text("1.0.0", "2026-11-23T00:00:00Z");
        let same = text("1.0.0", "2026-11-24T00:00:00Z");
        let upgraded = text("1.1.0", "2026-11-24T00:00:00Z");
        assert_eq!(record_to_write(None, &first), Some(first.clone()));
        assert_eq!(record_to_write(Some(&first), &same), None);
        let written = record_to_write(Some(&first), &upgraded).unwrap();
        assert_eq!(written, upgraded.replace("2026-11-24", "2026-11-23"));
        assert_eq!(record_to_write(Some("{}"), &same), Some(same.clone()));
    }

    #[test]
    fn only_a_record_a_ping_could_have_written_comes_from_a_ping() {
        assert!(record("2026-11-24T00:00:00Z").could_come_from_a_ping());
        let with = |field: fn(&mut StoredRecord) -> &mut String, value: &str| {
            let mut record = record("2026-11-24T00:00:00Z");
            *field(&mut record) = value.to_owned();
            record.could_come_from_a_ping()
        };
        assert!(!with(|r| &mut r.platform, "beos"));
        assert!(!with(|r| &mut r.primary_framework, ""));
        assert!(!with(|r| &mut r.daemon_version, "\t=1+1"));
        assert!(!with(|r| &mut r.node_version, "v"));
        assert!(!with(|r| &mut r.protocol_version, "1.0"));
        assert!(with(|r| &mut r.daemon_version, "1.1.0-rc.1"));
        // A value past a week's bound, as a store keeps it.
        assert!(with(|r| &mut r.daemon_version, "other"));
        assert!(with(|r| &mut r.node_version, "other"));
        assert!(!with(|r| &mut r.node_version, "Other"));
        assert!(
            !with(|r| &mut r.platform, "other"),
            "platforms are never folded"
        );
    }

    #[test]
    fn a_key_parses_back_to_its_week_and_session_and_nothing_else_parses() {
        let write = SessionWrite {
            week: IsoWeek::parse("2026-W53").unwrap(),
            session_id: SessionId::parse("relay-install_01").unwrap(),
            record_json: String::new(),
        };
        assert_eq!(
            parse_session_key(&write.key()),
            Some((write.week, write.session_id.clone()))
        );
        for bad in [
            "session:2025-W53:relay-install_01",
            "session:2026-W48:short",
            "session:2026-W48:has:colon",
            "session:2026-W48",
            "sessions:2026-W48:relay-install_01",
            "other:abc",
            "",
        ] {
            assert_eq!(parse_session_key(bad), None, "{bad:?}");
        }
        let id = write.session_id.as_str();
        assert_eq!(deletion_key(id), "deletion:relay-install_01");
        assert_eq!(
            parse_deletion_key(&deletion_key(id)),
            Some(write.session_id.clone())
        );
        for bad in [
            "deletion:short",
            "deletion:",
            "session:2026-W48:relay-install_01",
        ] {
            assert_eq!(parse_deletion_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_stored_time_says_the_day_and_nothing_finer() {
        let cut = |text: &str| record(text).to_day_precision().map(|r| r.first_seen_at);
        assert_eq!(
            cut("2026-11-24T15:04:05Z").as_deref(),
            Some("2026-11-24T00:00:00Z")
        );
        assert_eq!(
            cut("2024-02-29T23:59:59.999Z").as_deref(),
            Some("2024-02-29T00:00:00Z")
        );
        assert_eq!(
            cut("2026-11-25T00:30:00+01:00").as_deref(),
            Some("2026-11-24T00:00:00Z"),
            "the UTC day"
        );
        for bad in [
            "2026-11-24",
            "2026-11-24T15:04:05",
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "26-11-24T00:00:00Z",
            "2026-1-240T00:00:00Z",
            "+2026-11-24T00:00:00Z",
            "",
        ] {
            assert_eq!(cut(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_record_expires_at_the_start_of_the_day_its_ttl_runs_out() {
        let ttl = crate::limits::DEFAULT_SESSION_TTL_SECONDS;
        // 2026-11-24T15:04:05Z and the same day's first and last second.
        let afternoon = 1_795_532_645;
        let midnight = afternoon - afternoon % DAY_SECONDS;
        let ttl_i64 = i64::try_from(ttl).unwrap_or(0);
        for now in [afternoon, midnight, midnight + DAY_SECONDS - 1] {
            let expiry = expires_at(now, ttl);
            assert_eq!(expiry, midnight + ttl_i64, "written at {now}");
            assert!(expiry <= now + ttl_i64 && expiry > now + ttl_i64 - DAY_SECONDS);
        }
        // Short TTLs stay exact rather than expire sooner than KV allows.
        assert_eq!(expires_at(afternoon, 0), afternoon);
        assert_eq!(expires_at(afternoon, 600), afternoon + 600);
        assert_eq!(expires_at(midnight - 30, 60), midnight + 30);
        // A TTL over a day that ends just past midnight still gets the midnight.
        assert_eq!(
            expires_at(midnight - 100, 86_500),
            midnight + DAY_SECONDS,
            "at least a minute away, so the day's start"
        );
        assert_eq!(expires_at(i64::MAX - 5, u64::MAX), i64::MAX, "saturates");
        assert_eq!(day_start(afternoon), midnight);
        assert_eq!(day_start(-1), -DAY_SECONDS, "before 1970 too");
    }
}
