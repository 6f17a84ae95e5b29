//! The wide events both targets log as one JSON line each. Their fields are all there is:
//! no session id, address, user agent, token, path of an unknown route, or body.

use serde::Serialize;

use crate::response::Response;
use crate::service::Route;
use crate::week::IsoWeek;

/// One line per request.
#[derive(Debug, Serialize)]
pub struct RequestEvent<'a> {
    pub event: &'static str,
    pub target: &'static str,
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
    pub outcome: &'static str,
    /// The body's size rounded up to [`BODY_BYTES_BUCKET`]: a size to the byte (a long id, a
    /// rare pre-release version) would single out a record beside the line's timestamp.
    pub body_bytes: usize,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub week: Option<IsoWeek>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub colo: Option<&'a str>,
    /// On a 429: which limit answered, [`LIMITED_BY_SHARED`] or [`LIMITED_BY_PROCESS`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited_by: Option<&'static str>,
}

/// The limit counted across instances (the Worker's Rate Limiting binding).
/// What one request came to, in both adapters: the response to send and what its wide
/// event records besides the response.
#[derive(Debug)]
pub struct Handled {
    pub route: Route,
    pub response: Response,
    /// The bytes of a ping's body that were read (0 when none was).
    pub body_bytes: usize,
    pub week: Option<IsoWeek>,
    /// On a 429, which limit answered: [`LIMITED_BY_SHARED`] or [`LIMITED_BY_PROCESS`].
    pub limited_by: Option<&'static str>,
}

impl Handled {
    pub fn new(route: Route, response: Response) -> Self {
        Self {
            route,
            response,
            body_bytes: 0,
            week: None,
            limited_by: None,
        }
    }

    /// The request's wide event.
    pub fn event<'a>(
        &self,
        target: &'static str,
        method: &'static str,
        duration_ms: u64,
        colo: Option<&'a str>,
    ) -> RequestEvent<'a> {
        RequestEvent::new(
            target,
            self.route,
            method,
            &self.response,
            self.body_bytes,
            duration_ms,
            self.week,
        )
        .colo(colo)
        .limited_by(self.limited_by)
    }
}

pub const LIMITED_BY_SHARED: &str = "shared";
/// The limit counted in this process or isolate alone.
pub const LIMITED_BY_PROCESS: &str = "process";

/// Every operation a store performs for a target, by the one name both targets log it under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOperation {
    /// Keeping an accepted ping: the rollback's batch write; the Worker's request to its
    /// session's week object and its KV put.
    Write,
    /// Answering a readout (a count, a breakdown, a series).
    Read,
    /// A deletion request, from every retained week.
    Delete,
    /// Deleting records whose expiry has come (the rollback's expiry task, the week object's
    /// alarm).
    Expire,
}

impl StoreOperation {
    pub fn name(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Read => "read",
            Self::Delete => "delete",
            Self::Expire => "expire",
        }
    }
}

impl Serialize for StoreOperation {
    fn serialize<S: serde::Serializer>(&self, to: S) -> Result<S::Ok, S::Error> {
        to.serialize_str(self.name())
    }
}

/// One line when the store answers again after a failure: the operation that found it back
/// (a write, or the readiness check).
#[derive(Debug, Serialize)]
pub struct StoreRecoveredEvent {
    pub event: &'static str,
    pub target: &'static str,
    pub operation: StoreOperation,
}

impl StoreRecoveredEvent {
    pub const NAME: &'static str = "store_recovered";

    pub fn new(target: &'static str, operation: StoreOperation) -> Self {
        Self {
            event: Self::NAME,
            target,
            operation,
        }
    }
}

/// One line per store operation that failed after its request was decided.
#[derive(Debug, Serialize)]
pub struct StoreFailureEvent<'a> {
    pub event: &'static str,
    pub target: &'static str,
    pub operation: StoreOperation,
    /// The week written or read; absent for work across weeks (a deletion, the expiry task).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub week: Option<IsoWeek>,
    /// The store's own error text, with any key in it removed by the caller.
    pub error: &'a str,
}

/// One line per week found inconsistent and repaired: its tallies were rebuilt from its
/// records and the records that are not records dropped. It names the week, never a session.
#[derive(Debug, Serialize)]
pub struct StoreInconsistentEvent {
    pub event: &'static str,
    pub target: &'static str,
    /// What was being done when the week was found inconsistent.
    pub operation: StoreOperation,
    /// The week repaired (absent only where a week's object could not learn its name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub week: Option<IsoWeek>,
    /// What was wrong: [`crate::stored_week::Inconsistent::name`].
    pub found: &'static str,
    /// Records dropped because they were not records (their sessions' next pings write them).
    pub dropped_records: u64,
}

impl StoreInconsistentEvent {
    pub const NAME: &'static str = "store_inconsistent";

    pub fn new(
        target: &'static str,
        operation: StoreOperation,
        week: Option<IsoWeek>,
        found: crate::stored_week::Inconsistent,
        dropped_records: u64,
    ) -> Self {
        Self {
            event: Self::NAME,
            target,
            operation,
            week,
            found: found.name(),
            dropped_records,
        }
    }
}

/// The bucket a logged body size is rounded up to: every ping a relay sends (150–250 bytes)
/// logs the same 256, and the cap's 1,024 is the last bucket under it.
pub const BODY_BYTES_BUCKET: usize = 256;

/// A body's size as a wide event logs it: 0, or rounded up to [`BODY_BYTES_BUCKET`], at most
/// one bucket past the cap (everything bigger was refused unread).
pub fn coarse_body_bytes(bytes: usize) -> usize {
    let cap_bucket = crate::limits::MAX_BODY_BYTES.div_ceil(BODY_BYTES_BUCKET) + 1;
    bytes.div_ceil(BODY_BYTES_BUCKET).min(cap_bucket) * BODY_BYTES_BUCKET
}

impl<'a> RequestEvent<'a> {
    pub const NAME: &'static str = "request";

    /// The line for a request `target` answered with `response`; the data centre and the
    /// limit that refused it, where there are any, are added with [`Self::colo`] and
    /// [`Self::limited_by`].
    pub fn new(
        target: &'static str,
        route: Route,
        method: &'static str,
        response: &Response,
        body_bytes: usize,
        duration_ms: u64,
        week: Option<IsoWeek>,
    ) -> Self {
        Self {
            event: Self::NAME,
            target,
            route: route.label(),
            method,
            status: response.status,
            outcome: response.outcome,
            body_bytes: coarse_body_bytes(body_bytes),
            duration_ms,
            week,
            colo: None,
            limited_by: None,
        }
    }

    pub fn colo(self, colo: Option<&'a str>) -> Self {
        Self { colo, ..self }
    }

    pub fn limited_by(self, limited_by: Option<&'static str>) -> Self {
        Self { limited_by, ..self }
    }
}

/// A configuration the Worker cannot run with, logged on each request it answers 500 (the
/// rollback refuses to start instead). It names the variable, never its value.
#[derive(Debug, Serialize)]
pub struct ConfigErrorEvent {
    pub event: &'static str,
    pub target: &'static str,
    pub variable: &'static str,
    pub expected: &'static str,
}

impl ConfigErrorEvent {
    pub const NAME: &'static str = "config_error";

    pub fn new(target: &'static str, error: &crate::config::ConfigError) -> Self {
        Self {
            event: Self::NAME,
            target,
            variable: error.variable,
            expected: error.expected,
        }
    }
}

impl<'a> StoreFailureEvent<'a> {
    pub const NAME: &'static str = "store_failure";

    /// The line for a failed `operation`. `error` must hold no session id: callers remove
    /// any key the store quoted.
    pub fn new(
        target: &'static str,
        operation: StoreOperation,
        week: Option<IsoWeek>,
        error: &'a str,
    ) -> Self {
        Self {
            event: Self::NAME,
            target,
            operation,
            week,
            error,
        }
    }
}

/// The method as one of the standard names, so a client cannot write into the log.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    KNOWN
        .into_iter()
        .find(|known| known.eq_ignore_ascii_case(method))
        .unwrap_or("other")
}

/// Serialises an event to its single line; these plain structs always serialise.
pub fn to_line(event: &impl Serialize) -> String {
    serde_json::to_string(event).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_line_names_its_week_as_text_and_leaves_out_what_it_lacks() {
        let accepted = Response::no_content();
        let week = IsoWeek::parse("2026-W05");
        let event = RequestEvent::new("rollback", Route::Session, "POST", &accepted, 165, 0, week);
        assert_eq!(
            to_line(&event),
            r#"{"event":"request","target":"rollback","route":"session","method":"POST","status":204,"outcome":"accepted","body_bytes":256,"duration_ms":0,"week":"2026-W05"}"#
        );
        let limited = crate::Rejection::TooManyRequests {
            retry_after_seconds: 30,
        }
        .into_response();
        let event = RequestEvent::new("worker", Route::Session, "POST", &limited, 165, 1, None)
            .colo(Some("AMS"))
            .limited_by(Some(LIMITED_BY_SHARED));
        assert_eq!(
            to_line(&event),
            r#"{"event":"request","target":"worker","route":"session","method":"POST","status":429,"outcome":"rate_limited","body_bytes":256,"duration_ms":1,"colo":"AMS","limited_by":"shared"}"#
        );
    }

    #[test]
    fn a_body_size_is_logged_in_buckets_that_no_one_ping_stands_out_in() {
        let logged: Vec<usize> = [0, 1, 151, 165, 231, 256, 257, 1024, 1025, 200_000]
            .map(coarse_body_bytes)
            .to_vec();
        assert_eq!(logged, [0, 256, 256, 256, 256, 256, 512, 1024, 1280, 1280]);
    }

    #[test]
    fn a_store_failure_line_has_a_week_only_when_one_week_failed() {
        let expire = StoreOperation::Expire;
        let event = StoreFailureEvent::new("rollback", expire, None, "disk I/O error");
        assert_eq!(
            to_line(&event),
            r#"{"event":"store_failure","target":"rollback","operation":"expire","error":"disk I/O error"}"#
        );
        let week = IsoWeek::parse("2026-W48");
        let event = StoreFailureEvent::new("worker", StoreOperation::Write, week, "quota");
        assert!(to_line(&event).contains(r#""operation":"write","week":"2026-W48""#));
    }

    #[test]
    fn an_inconsistency_line_names_the_week_and_what_was_wrong() {
        let week = IsoWeek::parse("2026-W48");
        let found = crate::stored_week::Inconsistent::InvalidRecord;
        let event = StoreInconsistentEvent::new("rollback", StoreOperation::Write, week, found, 1);
        assert_eq!(
            to_line(&event),
            r#"{"event":"store_inconsistent","target":"rollback","operation":"write","week":"2026-W48","found":"invalid_record","dropped_records":1}"#
        );
    }
}
