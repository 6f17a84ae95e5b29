//! The case table: every row of DESIGN.md's contract, each with the message it fails with.

use crate::http::{Framing, RawRequest, RawResponse};

/// One request and what must come back.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub request: RawRequest,
    pub expect: Expect,
    /// The session id the body carries: counted if answered 204, never stored otherwise.
    pub session: Option<String>,
    /// Ends the table early when this status comes back (the rate-limit probe).
    pub(crate) stop_after_status: Option<u16>,
}

#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Any of these statuses.
    pub statuses: Vec<u16>,
    /// The `error` code of a JSON error body.
    pub code: Option<&'static str>,
    /// Headers that must be present with exactly this value.
    pub headers: Vec<(&'static str, &'static str)>,
    /// The exact body, where it is fixed.
    pub body: Option<&'static str>,
    /// Text the error message must contain (a named field).
    pub message_contains: Option<&'static str>,
    /// Statuses a runtime may answer before the service sees the request; only the store
    /// is checked then, since the answer is not the service's.
    pub runtime_statuses: Vec<u16>,
}

const SECURITY_HEADERS: [(&str, &str); 3] = [
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

impl Case {
    fn new(name: impl Into<String>, request: RawRequest, status: u16) -> Self {
        Self {
            name: name.into(),
            request,
            expect: Expect {
                statuses: vec![status],
                ..Expect::default()
            },
            session: None,
            stop_after_status: None,
        }
    }

    fn code(mut self, code: &'static str) -> Self {
        self.expect.code = Some(code);
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.expect.headers.push((name, value));
        self
    }

    fn mentions(mut self, text: &'static str) -> Self {
        self.expect.message_contains = Some(text);
        self
    }

    fn session(mut self, id: &str) -> Self {
        self.session = Some(id.to_owned());
        self
    }

    fn or_status(mut self, status: u16) -> Self {
        self.expect.statuses.push(status);
        self
    }

    fn or_runtime_status(mut self, status: u16) -> Self {
        self.expect.runtime_statuses.push(status);
        self
    }

    /// Every problem with `response`, as sentences; empty when the case passes.
    pub fn check(&self, response: &RawResponse) -> Vec<String> {
        let mut problems = Vec::new();
        let expect = &self.expect;
        if expect.runtime_statuses.contains(&response.status) {
            return problems;
        }
        if !expect.statuses.contains(&response.status) {
            problems.push(format!(
                "status {} (expected {:?}), body {:?}",
                response.status,
                expect.statuses,
                truncate(&response.text())
            ));
            return problems;
        }
        for (name, value) in SECURITY_HEADERS.iter().chain(&expect.headers) {
            if response.header(name) != Some(value) {
                problems.push(format!(
                    "header {name} is {:?}, expected {value:?}",
                    response.header(name)
                ));
            }
        }
        match response.status {
            204 if !response.body.is_empty() => problems.push("204 with a body".into()),
            405 if response.header("allow").is_none() => problems.push("405 without Allow".into()),
            401 if response.header("www-authenticate") != Some("Bearer") => {
                problems.push("401 without WWW-Authenticate: Bearer".into())
            }
            429 | 503 => {
                let retry = response
                    .header("retry-after")
                    .and_then(|v| v.parse::<u64>().ok());
                if retry.is_none_or(|seconds| seconds < 1) {
                    problems.push(format!(
                        "{} without a Retry-After in seconds",
                        response.status
                    ));
                }
            }
            _ => {}
        }
        if let Some(body) = expect.body
            && response.text() != body
        {
            problems.push(format!(
                "body {:?}, expected {body:?}",
                truncate(&response.text())
            ));
        }
        if response.status >= 400 {
            problems.extend(self.check_error_body(response));
        }
        problems
    }

    fn check_error_body(&self, response: &RawResponse) -> Vec<String> {
        let mut problems = Vec::new();
        let json = response.json();
        let field = |name: &str| json.as_ref()?.get(name)?.as_str().map(str::to_owned);
        let (Some(code), Some(message)) = (field("error"), field("message")) else {
            return vec![format!(
                "error body is not {{error, message}}: {:?}",
                truncate(&response.text())
            )];
        };
        if response.header("content-type") != Some("application/json") {
            problems.push(format!(
                "error content-type {:?}",
                response.header("content-type")
            ));
        }
        if let Some(expected) = self.expect.code
            && code != expected
        {
            problems.push(format!(
                "error code {code:?}, expected {expected:?} ({message})"
            ));
        }
        if let Some(text) = self.expect.message_contains
            && !message.contains(text)
        {
            problems.push(format!("message {message:?} does not name {text:?}"));
        }
        let text = response.text();
        if let Some(id) = &self.session
            && text.contains(id.as_str())
        {
            problems.push("error body repeats the submitted session id".into());
        }
        if text.contains(LEAK_MARKER) {
            problems.push("error body repeats a submitted value".into());
        }
        problems
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}

/// A value sent in refused fields; no response may repeat it.
const LEAK_MARKER: &str = "LEAKCHECK";

/// A valid ping as compact JSON, fields in the relay's order.
pub fn ping_json(session_id: &str) -> String {
    format!(
        r#"{{"protocol_version":"1.0.0","daemon_version":"0.9.3","session_id":"{session_id}","platform":"linux","node_version":"v20.11.1","primary_framework":"react"}}"#
    )
}

/// A valid ping with one field replaced by a raw JSON value.
fn ping_with(session_id: &str, field: &str, raw_value: &str) -> String {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&ping_json(session_id)).unwrap_or_default();
    object.insert(field.to_owned(), serde_json::Value::Null);
    let text = serde_json::to_string(&object).unwrap_or_default();
    text.replace(
        &format!("\"{field}\":null"),
        &format!("\"{field}\":{raw_value}"),
    )
}

/// A valid ping padded with spaces inside the object to exactly `len` bytes.
fn padded_ping(session_id: &str, len: usize) -> Vec<u8> {
    let json = ping_json(session_id);
    let padding = " ".repeat(len.saturating_sub(json.len()));
    format!("{{{padding}{}", &json[1..]).into_bytes()
}

fn post(body: impl Into<Vec<u8>>) -> RawRequest {
    RawRequest::new("POST", "/v1/session")
        .header("content-type", "application/json")
        .body(body)
}

fn get(path: &str) -> RawRequest {
    RawRequest::new("GET", path)
}

fn erase(body: &str) -> RawRequest {
    RawRequest::new("POST", "/v1/erase")
        .header("content-type", "application/json")
        .body(body.as_bytes().to_vec())
}

/// The main table, in order. `tag` makes session ids unique to the run.
pub fn table(tag: &str, token: &str) -> Vec<Case> {
    let id = |n: &str| format!("{tag}-{n}");
    let bearer = format!("Bearer {token}");
    let week = crate::current_iso_week();
    vec![
        // Routes and methods.
        Case::new("health check", get("/healthz"), 200).body_is("ok"),
        Case::new(
            "health check refuses POST",
            RawRequest::new("POST", "/healthz"),
            405,
        )
        .header("allow", "GET"),
        Case::new("readiness: the store answers", get("/readyz"), 200).body_is("ready"),
        Case::new(
            "readiness refuses POST",
            RawRequest::new("POST", "/readyz"),
            405,
        )
        .header("allow", "GET"),
        Case::new("unknown path", get("/v1/nope"), 404).code("not_found"),
        Case::new(
            "old rollback path is not served",
            post(ping_json(&id("oldpath"))).path("/api/v1/session"),
            404,
        )
        .session(&id("oldpath")),
        Case::new(
            "trailing slash is another path",
            post(ping_json(&id("slash"))).path("/v1/session/"),
            404,
        )
        .session(&id("slash")),
        Case::new("GET on the ping route", get("/v1/session"), 405)
            .header("allow", "POST")
            .code("method_not_allowed"),
        Case::new(
            "PUT on the ping route",
            post(ping_json(&id("put"))).method("PUT"),
            405,
        )
        .header("allow", "POST")
        .session(&id("put")),
        // Content type.
        Case::new(
            "no content-type",
            RawRequest::new("POST", "/v1/session").body(ping_json(&id("noct"))),
            415,
        )
        .code("unsupported_media_type")
        .session(&id("noct")),
        Case::new(
            "text/plain",
            post(ping_json(&id("plain"))).replace_header("content-type", "text/plain"),
            415,
        )
        .code("unsupported_media_type")
        .session(&id("plain")),
        Case::new(
            "application/jsonx",
            post(ping_json(&id("jsonx"))).replace_header("content-type", "application/jsonx"),
            415,
        )
        .session(&id("jsonx")),
        Case::new(
            "form content type",
            post(ping_json(&id("form")))
                .replace_header("content-type", "application/x-www-form-urlencoded"),
            415,
        )
        .session(&id("form")),
        Case::new(
            "a valid ping is accepted",
            post(ping_json(&id("valid"))),
            204,
        )
        .session(&id("valid")),
        Case::new(
            "the same session again in the same week",
            post(ping_json(&id("valid"))),
            204,
        )
        .session(&id("valid")),
        Case::new(
            "content-type with charset",
            post(ping_json(&id("charset")))
                .replace_header("content-type", "application/json; charset=utf-8"),
            204,
        )
        .session(&id("charset")),
        Case::new(
            "content-type in upper case",
            post(ping_json(&id("upper"))).replace_header("content-type", "APPLICATION/JSON"),
            204,
        )
        .session(&id("upper")),
        // Size, declared and streamed.
        Case::new(
            "exactly 1024 bytes with content-length",
            post(padded_ping(&id("1024len"), 1024)),
            204,
        )
        .session(&id("1024len")),
        Case::new(
            "exactly 1024 bytes chunked",
            post(padded_ping(&id("1024chunk"), 1024)).framing(Framing::Chunked(100)),
            204,
        )
        .session(&id("1024chunk")),
        Case::new(
            "1025 bytes with content-length",
            post(padded_ping(&id("1025len"), 1025)),
            413,
        )
        .code("payload_too_large")
        .session(&id("1025len")),
        Case::new(
            "1025 bytes chunked",
            post(padded_ping(&id("1025chunk"), 1025)).framing(Framing::Chunked(100)),
            413,
        )
        .code("payload_too_large")
        .session(&id("1025chunk")),
        Case::new(
            "2 KB with content-length",
            post(padded_ping(&id("2klen"), 2048)),
            413,
        )
        .code("payload_too_large")
        .session(&id("2klen")),
        Case::new(
            "2 KB chunked",
            post(padded_ping(&id("2kchunk"), 2048)).framing(Framing::Chunked(512)),
            413,
        )
        .code("payload_too_large")
        .session(&id("2kchunk")),
        Case::new(
            "200 KB with content-length",
            post(padded_ping(&id("200klen"), 200 * 1024)),
            413,
        )
        .code("payload_too_large")
        .session(&id("200klen")),
        Case::new(
            "200 KB chunked",
            post(padded_ping(&id("200kchunk"), 200 * 1024)).framing(Framing::Chunked(16 * 1024)),
            413,
        )
        .code("payload_too_large")
        .session(&id("200kchunk")),
        Case::new(
            "a length that claims less than is sent",
            post(padded_ping(&id("lieshort"), 2000)).framing(Framing::DeclaredLength(100)),
            400,
        )
        .session(&id("lieshort")),
        Case::new(
            "a 1024 length on a 2000-byte body",
            post(padded_ping(&id("lie1024"), 2000)).framing(Framing::DeclaredLength(1024)),
            400,
        )
        .session(&id("lie1024")),
        // workerd fails a request whose body stream breaks (503); a server that sees the short
        // body itself answers 400. Either way nothing may be stored.
        Case::new(
            "a body that ends before its length",
            post(ping_json(&id("truncated"))).framing(Framing::TruncatedAfter(500)),
            400,
        )
        .or_runtime_status(503)
        .session(&id("truncated")),
        // Bodies that are not one JSON object.
        Case::new("empty body", post(Vec::new()), 400).code("empty_body"),
        Case::new(
            "empty chunked body",
            post(Vec::new()).framing(Framing::Chunked(10)),
            400,
        )
        .code("empty_body"),
        Case::new(
            "invalid UTF-8",
            post(
                [
                    &ping_json(&id("utf8")).as_bytes()[..40],
                    b"\xff\xfe",
                    &ping_json(&id("utf8")).as_bytes()[40..],
                ]
                .concat(),
            ),
            400,
        )
        .code("invalid_utf8")
        .session(&id("utf8")),
        Case::new(
            "invalid JSON",
            post(format!("{{\"session_id\":\"{}\"", id("broken"))),
            400,
        )
        .code("invalid_json")
        .session(&id("broken")),
        Case::new(
            "trailing data",
            post(format!("{} x", ping_json(&id("trailing")))),
            400,
        )
        .code("invalid_json")
        .session(&id("trailing")),
        Case::new(
            "two objects",
            post(format!(
                "{}{}",
                ping_json(&id("twice")),
                ping_json(&id("twice"))
            )),
            400,
        )
        .code("invalid_json")
        .session(&id("twice")),
        Case::new(
            "duplicate key",
            post(ping_json(&id("dup")).replacen(
                "\"platform\":\"linux\"",
                "\"platform\":\"linux\",\"platform\":\"linux\"",
                1,
            )),
            400,
        )
        .code("duplicate_key")
        .mentions("platform")
        .session(&id("dup")),
        Case::new(
            "an array",
            post(format!("[{}]", ping_json(&id("array")))),
            400,
        )
        .code("not_an_object")
        .session(&id("array")),
        Case::new("a bare string", post("\"hello\""), 400).code("not_an_object"),
        // Fields.
        Case::new(
            "unknown field",
            post(ping_with(
                &id("unknown"),
                "user_email",
                "\"LEAKCHECK@example.com\"",
            )),
            400,
        )
        .code("unknown_field")
        .mentions("user_email")
        .session(&id("unknown")),
        Case::new(
            "missing field",
            post(ping_json(&id("missing")).replace(",\"platform\":\"linux\"", "")),
            400,
        )
        .code("missing_field")
        .mentions("platform")
        .session(&id("missing")),
        Case::new(
            "a number for a string",
            post(ping_with(&id("number"), "daemon_version", "12345")),
            400,
        )
        .code("invalid_type")
        .mentions("daemon_version")
        .session(&id("number")),
        Case::new(
            "null for a string",
            post(ping_with(&id("null"), "node_version", "null")),
            400,
        )
        .code("invalid_type")
        .session(&id("null")),
        Case::new(
            "session id of 7 characters",
            post(ping_json("abcdefg")),
            400,
        )
        .code("invalid_value")
        .mentions("session_id"),
        Case::new(
            "session id of 65 characters",
            post(ping_json(
                &format!("{}{}", id("long"), "x".repeat(65))
                    .chars()
                    .take(65)
                    .collect::<String>(),
            )),
            400,
        )
        .code("invalid_value"),
        Case::new(
            "session id with a dot",
            post(ping_json(&format!("{}.LEAKCHECK", id("dot")))),
            400,
        )
        .code("invalid_value"),
        Case::new(
            "protocol version 1.2",
            post(ping_with(&id("semver"), "protocol_version", "\"1.2\"")),
            400,
        )
        .code("invalid_value")
        .mentions("protocol_version")
        .session(&id("semver")),
        Case::new(
            "platform outside the list",
            post(ping_with(&id("platform"), "platform", "\"LEAKCHECK\"")),
            400,
        )
        .code("invalid_value")
        .mentions("platform")
        .session(&id("platform")),
        Case::new(
            "framework outside the list",
            post(ping_with(
                &id("framework"),
                "primary_framework",
                "\"angular\"",
            )),
            400,
        )
        .code("invalid_value")
        .session(&id("framework")),
        Case::new(
            "node version without v",
            post(ping_with(&id("nodev"), "node_version", "\"20.11.1\"")),
            204,
        )
        .session(&id("nodev")),
        Case::new(
            "pre-release versions",
            post(ping_with(&id("pre"), "daemon_version", "\"1.2.3-rc.1\"")),
            204,
        )
        .session(&id("pre")),
        // A relay's erasure request: no token, the id in the body, the ping's rules.
        Case::new("GET on the erasure route", get("/v1/erase"), 405).header("allow", "POST"),
        Case::new(
            "an erasure of a session never seen",
            erase(&format!(r#"{{"session_id":"{}"}}"#, id("never-seen"))),
            204,
        )
        .body_is(""),
        Case::new(
            "an erasure without content-type",
            erase(&format!(r#"{{"session_id":"{}"}}"#, id("erase-noct")))
                .replace_header("content-type", "text/plain"),
            415,
        ),
        Case::new(
            "an erasure with another field",
            erase(&format!(
                r#"{{"session_id":"{}","platform":"linux"}}"#,
                id("erase-more")
            )),
            400,
        )
        .code("unknown_field"),
        Case::new(
            "an erasure with the id twice",
            erase(&format!(
                r#"{{"session_id":"{0}","session_id":"{0}"}}"#,
                id("erase-twice")
            )),
            400,
        )
        .code("duplicate_key"),
        Case::new(
            "an erasure of an id no ping could send",
            erase(r#"{"session_id":"short"}"#),
            400,
        )
        .code("invalid_value"),
        Case::new("an erasure without an id", erase("{}"), 400).code("missing_field"),
        Case::new(
            "an erasure past the cap",
            erase(&format!(
                r#"{{"session_id":"{}","x":"{}"}}"#,
                id("erase-big"),
                "x".repeat(1100)
            )),
            413,
        ),
        // Readout.
        Case::new(
            "readout without a token",
            get(&format!("/v1/wau/{week}")),
            401,
        )
        .code("unauthorized"),
        Case::new(
            "readout with a wrong token",
            get(&format!("/v1/wau/{week}")).header("authorization", "Bearer wrong"),
            401,
        ),
        Case::new(
            "readout with the token plus a character",
            get(&format!("/v1/wau/{week}")).header("authorization", &format!("{bearer}x")),
            401,
        ),
        Case::new(
            "readout with the token as Basic",
            get(&format!("/v1/wau/{week}")).header("authorization", &format!("Basic {token}")),
            401,
        ),
        Case::new(
            "readout with the token in the query",
            get(&format!("/v1/wau/{week}?token={token}")),
            401,
        ),
        Case::new(
            "authentication comes before the week",
            get("/v1/wau/not-a-week"),
            401,
        ),
        Case::new(
            "a week that does not exist",
            get("/v1/wau/2025-W53").header("authorization", &bearer),
            400,
        )
        .code("invalid_week"),
        Case::new(
            "week zero",
            get("/v1/wau/2026-W00").header("authorization", &bearer),
            400,
        )
        .code("invalid_week"),
        Case::new(
            "week 54",
            get("/v1/wau/2026-W54").header("authorization", &bearer),
            400,
        )
        .code("invalid_week"),
        Case::new(
            "a week without W",
            get("/v1/wau/2026-48").header("authorization", &bearer),
            400,
        )
        .code("invalid_week"),
        Case::new(
            "an empty week",
            get("/v1/wau/").header("authorization", &bearer),
            400,
        )
        .code("invalid_week"),
        Case::new(
            "week 53 of a 53-week year, past what is kept",
            get("/v1/wau/2020-W53").header("authorization", &bearer),
            200,
        )
        .body_is(r#"{"week":"2020-W53","weekly_active_sessions":0,"outside_retention":true}"#),
        Case::new(
            "POST on the readout",
            RawRequest::new("POST", &format!("/v1/wau/{week}")).header("authorization", &bearer),
            405,
        )
        .header("allow", "GET"),
    ]
}

/// Valid pings with fresh ids until the limit answers 429; every 204 before must be counted.
/// Up to four times the limit: the window is a minute from its first ping, and on a loaded
/// machine (a fresh clone's CI, every Worker test at once) the probes have taken long enough
/// to span a new window twice, and twice the limit then saw no 429 (the 429 comes at once
/// when the machine is idle, so the extra probes cost nothing there).
pub fn abuse(tag: &str, limit: u32) -> Vec<Case> {
    (0..limit * 4 + 2)
        .map(|n| {
            let id = format!("{tag}-rate{n}");
            let mut case = Case::new(format!("rate limit probe {n}"), post(ping_json(&id)), 204)
                .or_status(429)
                .session(&id);
            case.stop_after_status = Some(429);
            case
        })
        .collect()
}

/// A target with no read token: the readout does not exist.
pub fn without_token() -> Vec<Case> {
    let week = crate::current_iso_week();
    vec![
        Case::new(
            "no token: readout is 404",
            get(&format!("/v1/wau/{week}")),
            404,
        )
        .code("not_found"),
        Case::new(
            "no token: readout with a bearer is 404",
            get(&format!("/v1/wau/{week}")).header("authorization", "Bearer "),
            404,
        ),
        Case::new(
            "no token: POST on the readout is 404",
            RawRequest::new("POST", &format!("/v1/wau/{week}")),
            404,
        ),
        Case::new("no token: health still answers", get("/healthz"), 200),
    ]
}

impl Case {
    fn body_is(mut self, body: &'static str) -> Self {
        self.expect.body = Some(body);
        self
    }
}

impl RawRequest {
    fn path(mut self, path: &str) -> Self {
        self.path = path.to_owned();
        self
    }

    fn method(mut self, method: &str) -> Self {
        self.method = method.to_owned();
        self
    }

    fn replace_header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| n != name);
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}
