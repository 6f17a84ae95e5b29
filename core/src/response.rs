//! The response both adapters send as it is: status, headers, body, plus the outcome code
//! that the request's wide event records.

use serde::Serialize;

/// Headers on every response, error or not: nothing is cached, sniffed or referred.
pub const SECURITY_HEADERS: [(&str, &str); 3] = [
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Lower-case names; includes [`SECURITY_HEADERS`] and the content type when there is a body.
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// A fixed machine-readable code for logs: `accepted`, `ok`, or the error code.
    pub outcome: &'static str,
}

impl Response {
    fn new(status: u16, outcome: &'static str) -> Self {
        let headers = SECURITY_HEADERS
            .iter()
            .map(|&(name, value)| (name, value.to_owned()))
            .collect();
        Self {
            status,
            headers,
            body: String::new(),
            outcome,
        }
    }

    /// 204 with no body: the answer to an accepted ping.
    pub fn no_content() -> Self {
        Self::new(204, "accepted")
    }

    /// 200 with a plain-text body, for the health check.
    pub fn text(body: &str) -> Self {
        Self::new(200, "ok")
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(body.to_owned())
    }

    /// 200 with a CSV body (a readout asked for with `Accept: text/csv`).
    pub fn csv(body: String) -> Self {
        Self::new(200, "ok")
            .with_header("content-type", "text/csv; charset=utf-8")
            .with_body(body)
    }

    /// A JSON body of any status; serialising these plain structs cannot fail.
    pub fn json(status: u16, outcome: &'static str, value: &impl Serialize) -> Self {
        Self::raw_json(
            status,
            outcome,
            serde_json::to_string(value).unwrap_or_default(),
        )
    }

    /// A JSON body written by the caller (the Worker's backfill writes its two fields by hand,
    /// so that its bundle carries no JSON map type).
    pub fn raw_json(status: u16, outcome: &'static str, body: String) -> Self {
        Self::new(status, outcome)
            .with_header("content-type", "application/json")
            .with_body(body)
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn with_body(mut self, body: String) -> Self {
        self.body = body;
        self
    }

    /// The value of a header by its lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}
