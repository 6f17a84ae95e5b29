//! Privacy checks for what only a target's own test can see: its stored records and its log.

use serde_json::Value;

use crate::Run;

/// A stored record's fields, sorted: the five non-key fields of a ping and the server's time.
pub const RECORD_FIELDS: [&str; 6] = [
    "daemon_version",
    "first_seen_at",
    "node_version",
    "platform",
    "primary_framework",
    "protocol_version",
];

/// Fields a wide event may have.
const EVENT_FIELDS: [&str; 12] = [
    "event",
    "target",
    "route",
    "method",
    "status",
    "outcome",
    "body_bytes",
    "duration_ms",
    "week",
    "colo",
    "operation",
    "error",
];

/// Problems with one stored record: any field beyond [`RECORD_FIELDS`], or a `first_seen_at`
/// that is not a UTC time in whole seconds.
pub fn record_problems(record: &Value) -> Vec<String> {
    let Some(object) = record.as_object() else {
        return vec![format!("record is not an object: {record}")];
    };
    let mut fields: Vec<&str> = object.keys().map(String::as_str).collect();
    fields.sort_unstable();
    let mut problems = Vec::new();
    if fields != RECORD_FIELDS {
        problems.push(format!(
            "record fields {fields:?}, expected {RECORD_FIELDS:?}"
        ));
    }
    let seen = object
        .get("first_seen_at")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !(seen.len() == 20 && seen.ends_with('Z')) {
        problems.push(format!(
            "first_seen_at {seen:?} is not a UTC time in seconds"
        ));
    }
    problems
}

/// Problems with a target's log during `run`: wide events must be one JSON object per line
/// with only the known fields, one per request at least, and nothing sent may appear in the
/// log: no session id, token, body, or client address.
pub fn log_problems(log: &str, run: &Run, token: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut requests = 0;
    for line in log.lines().filter(|line| line.starts_with("{\"event\":")) {
        let Ok(Value::Object(event)) = serde_json::from_str::<Value>(line) else {
            problems.push(format!("a wide event that is not one JSON object: {line}"));
            continue;
        };
        if event.get("event").and_then(Value::as_str) == Some("request") {
            requests += 1;
        }
        for field in event.keys() {
            if !EVENT_FIELDS.contains(&field.as_str()) {
                problems.push(format!("unexpected wide event field {field}"));
            }
        }
        if line.contains("127.0.0.1") {
            problems.push("a wide event holds the client address".into());
        }
    }
    if requests < run.cases {
        problems.push(format!(
            "{requests} request events for {} requests",
            run.cases
        ));
    }
    for id in run.accepted.iter().chain(&run.refused) {
        if log.contains(id.as_str()) {
            problems.push(format!("the log holds session id {id}"));
        }
    }
    if log.contains(token) {
        problems.push("the log holds the read token".into());
    }
    if run
        .sent
        .iter()
        .filter(|body| body.len() >= 16)
        .any(|body| log.contains(String::from_utf8_lossy(body).as_ref()))
    {
        problems.push("the log holds a request body".into());
    }
    problems
}
