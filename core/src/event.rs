//! The wide events both targets log as one JSON line each. Their fields are all there is:
//! no session id, address, user agent, token, path of an unknown route, or body.

use serde::Serialize;

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
pub const LIMITED_BY_SHARED: &str = "shared";
/// The limit counted in this process or isolate alone.
pub const LIMITED_BY_PROCESS: &str = "process";

/// One line per write or count that failed after the request was decided.
#[derive(Debug, Serialize)]
pub struct StoreFailureEvent<'a> {
    pub event: &'static str,
    pub target: &'static str,
    pub operation: &'static str,
    pub week: String,
    /// The store's own error text, with any key in it removed by the caller.
    pub error: &'a str,
}

impl RequestEvent<'_> {
    pub const NAME: &'static str = "request";
}

impl StoreFailureEvent<'_> {
    pub const NAME: &'static str = "store_failure";
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
        let event = RequestEvent {
            event: RequestEvent::NAME,
            target: "rollback",
            route: "session",
            method: "POST",
            status: 204,
            outcome: "accepted",
            body_bytes: 165,
            duration_ms: 0,
            week: IsoWeek::parse("2026-W05"),
            colo: None,
            limited_by: None,
        };
        assert_eq!(
            to_line(&event),
            r#"{"event":"request","target":"rollback","route":"session","method":"POST","status":204,"outcome":"accepted","body_bytes":165,"duration_ms":0,"week":"2026-W05"}"#
        );
    }
}
