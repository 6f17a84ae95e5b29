//! The wide events both targets log as one JSON line each. Their fields are all there is:
//! no session id, address, user agent, token, path of an unknown route, or body.

use serde::Serialize;

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
    pub week: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub colo: Option<&'a str>,
}

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
