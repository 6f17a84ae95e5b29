//! What is stored for an accepted ping: one record per (ISO week, session), under a key
//! that holds the session id so that the record itself does not.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ping::{SessionId, SessionPing};
use crate::week::IsoWeek;

/// The prefix of every key of one week: a KV `list` on it finds exactly that week.
pub fn week_key_prefix(week: IsoWeek) -> String {
    format!("session:{week}:")
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
        // Whole seconds: finer timing says nothing useful and narrows who sent the ping.
        let now = now
            .to_offset(time::UtcOffset::UTC)
            .replace_nanosecond(0)
            .unwrap_or(now);
        let first_seen_at = now.format(&Rfc3339).unwrap_or_default();
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
        format!("{}{}", week_key_prefix(self.week), self.session_id.as_str())
    }
}
