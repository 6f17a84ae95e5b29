//! The readout's answers for a known population: breakdowns under the privacy floor, series
//! and CSV, checked against the truth computed here from what was sent, on any target.
//!
//! The population goes in through `POST /v1/session` only, repeats included, two of them
//! upgrading their daemon mid-week (each session counts once, under its latest record).
//! [`check_readouts_from_summaries`] then lets the records expire (a short TTL) and checks
//! that every readout answers from the week's summary exactly as it did before.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Target;
use crate::http::{RawRequest, send};
use crate::week::{current_iso_week, iso_week_weeks_ago};

/// The privacy floor a target runs with unless `BREAKDOWN_MIN_SESSIONS` says otherwise.
pub const DEFAULT_FLOOR: u64 = 5;

/// One session's fields, in the order of a ping's body.
struct Session {
    id: String,
    protocol_version: &'static str,
    daemon_version: &'static str,
    platform: &'static str,
    node_version: &'static str,
    primary_framework: &'static str,
}

impl Session {
    fn body(&self) -> Vec<u8> {
        json!({
            "protocol_version": self.protocol_version,
            "daemon_version": self.daemon_version,
            "session_id": self.id,
            "platform": self.platform,
            "node_version": self.node_version,
            "primary_framework": self.primary_framework,
        })
        .to_string()
        .into_bytes()
    }

    fn value(&self, dimension: &str) -> String {
        match dimension {
            "platform" => self.platform.into(),
            "primary_framework" => self.primary_framework.into(),
            "daemon_version" => self.daemon_version.into(),
            "protocol_version" => self.protocol_version.into(),
            "node_major" => {
                let version = self.node_version.trim_start_matches('v');
                version.split('.').next().unwrap_or_default().into()
            }
            other => panic!("no dimension {other}"),
        }
    }
}

pub const DIMENSIONS: [&str; 5] = [
    "platform",
    "primary_framework",
    "daemon_version",
    "protocol_version",
    "node_major",
];

/// Twelve sessions: some values common, some rarer than the floor.
fn population(tag: &str) -> Vec<Session> {
    let platforms = ["linux", "linux", "darwin", "linux", "darwin", "win32"];
    let frameworks = ["react", "vue", "react", "next", "react", "unknown"];
    let nodes = [
        "v20.11.1",
        "v18.19.0",
        "20.5.0",
        "v22.1.0-rc.1",
        "v20.0.0",
        "v18.0.0",
    ];
    (0..12)
        .map(|n| Session {
            id: format!("population-{tag}-{n:02}"),
            protocol_version: if n < 10 { "1.0.0" } else { "1.1.0" },
            daemon_version: match n {
                0..=6 => "1.0.0",
                7..=10 => "1.1.0",
                _ => "0.9.0-acme.1",
            },
            platform: platforms[n % 6],
            node_version: nodes[n % 6],
            primary_framework: frameworks[n % 6],
        })
        .collect()
}

/// Sends the population (and the two upgrades) into the current week of `target`; the
/// sessions as they stand, and one line per ping that was not accepted.
fn seed(target: &Target, tag: &str) -> (Vec<Session>, Vec<String>) {
    let mut failures = Vec::new();
    let mut sessions = population(tag);
    for session in &sessions {
        match send(target.addr, &ping(session)) {
            Ok(response) if response.status == 204 => {}
            other => failures.push(format!("ping {}: {other:?}", session.id)),
        }
    }
    // Two relays upgrade mid-week: they move from 1.0.0 to 1.1.0, and a third repeats
    // unchanged.
    for n in [0, 1, 2] {
        if n < 2 {
            sessions[n].daemon_version = "1.1.0";
        }
        if let Err(error) = send(target.addr, &ping(&sessions[n])) {
            failures.push(format!("repeat {n}: {error}"));
        }
    }
    (sessions, failures)
}

/// Seeds the population into a target whose week is empty and returns what its dashboard
/// must show, in the form `tests/dashboard.py` checks: this week's count, two weeks of the
/// series, and each breakdown with the withheld sessions as their own row.
pub fn seed_for_dashboard(target: &Target, tag: &str) -> Result<Value, String> {
    let (sessions, failures) = seed(target, tag);
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }
    let total = sessions.len() as u64;
    target.count_settled(total)?;
    let week = current_iso_week();
    let mut breakdowns = serde_json::Map::new();
    for dimension in DIMENSIONS {
        let expected = expected_breakdown(&week, &sessions, dimension, DEFAULT_FLOOR);
        let mut rows = expected["counts"].as_object().cloned().unwrap_or_default();
        let withheld = expected["withheld_sessions"].as_u64().unwrap_or(0);
        if withheld > 0 {
            rows.insert("withheld".into(), withheld.into());
        }
        // The upgrades are writes too: wait for them to show before the browser looks.
        settled_json(target, &format!("/v1/wau/{week}?by={dimension}"), &expected)?;
        breakdowns.insert(dimension.into(), Value::Object(rows));
    }
    Ok(json!({
        "week": week,
        "count": total,
        "series": { week.clone(): total, iso_week_weeks_ago(4): 0 },
        "breakdowns": breakdowns,
    }))
}

/// Sends the population into the current week of a target that holds nothing else in it,
/// then checks every readout query against the truth. Returns one line per problem.
pub fn check_readouts(target: &Target, tag: &str) -> Vec<String> {
    let mut failures = Vec::new();
    if let Err(refused) = an_empty_week(target) {
        return refused;
    }
    let (mut sessions, seeded) = seed(target, tag);
    failures.extend(seeded);
    let total = sessions.len() as u64;
    match target.count_settled(total) {
        Ok(count) if count == total => {}
        other => failures.push(format!(
            "count after the population: {other:?}, expected {total}"
        )),
    }
    let week = current_iso_week();
    for dimension in DIMENSIONS {
        let expected = expected_breakdown(&week, &sessions, dimension, DEFAULT_FLOOR);
        // The upgrades are writes too: wait for them to show.
        let got = settled_json(target, &format!("/v1/wau/{week}?by={dimension}"), &expected);
        if got.as_ref() != Ok(&expected) {
            failures.push(format!("by={dimension}: {got:?}, expected {expected}"));
        }
    }
    failures.extend(check_csv(target, &week, &sessions));
    failures.extend(check_series(target, total));
    failures.extend(check_adoption(target, &sessions));
    failures.extend(check_refusals(target, &week));
    failures.extend(check_deletion(target, &week, &mut sessions));
    failures.extend(check_erasure(target, &week, &mut sessions));
    failures
}

/// The population's checks need a week no one else wrote to.
fn an_empty_week(target: &Target) -> Result<(), Vec<String>> {
    match target.weekly_count() {
        Ok(0) => Ok(()),
        other => Err(vec![format!(
            "needs a target with an empty week, found {other:?}"
        )]),
    }
}

/// A relay's own erasure request: with no token, the session leaves the count and every
/// breakdown at once; a second request, and one for an id never seen, get the very same
/// answer (it tells no one who is in the data).
fn check_erasure(target: &Target, week: &str, sessions: &mut Vec<Session>) -> Vec<String> {
    let mut failures = Vec::new();
    let erased = sessions.remove(0);
    let erase = |id: &str| {
        let request = RawRequest::new("POST", "/v1/erase")
            .header("content-type", "application/json")
            .body(json!({ "session_id": id }).to_string().into_bytes());
        send(target.addr, &request).map(|response| (response.status, response.text()))
    };
    let answers = [
        erase(&erased.id),
        erase(&erased.id),
        erase("never-a-session-of-this-week"),
    ];
    for answer in &answers {
        if answer != &Ok((204, String::new())) {
            failures.push(format!("POST /v1/erase: {answer:?}"));
        }
    }
    for dimension in DIMENSIONS {
        let expected = expected_breakdown(week, sessions, dimension, DEFAULT_FLOOR);
        let got = settled_json(target, &format!("/v1/wau/{week}?by={dimension}"), &expected);
        if got.as_ref() != Ok(&expected) {
            failures.push(format!("after the erasure, by={dimension}: {got:?}"));
        }
    }
    failures
}

/// A deletion request: refused whole without the admin token (the read token is not it) or
/// with a malformed id; with both, the session leaves the count and every breakdown at once,
/// and a second request finds nothing.
fn check_deletion(target: &Target, week: &str, sessions: &mut Vec<Session>) -> Vec<String> {
    let mut failures = Vec::new();
    let forgotten = sessions.remove(0);
    let delete = |id: &str, token: Option<&str>| {
        let request = RawRequest::new("DELETE", &format!("/v1/session/{id}"));
        let request = match token {
            Some(token) => request.header("authorization", &format!("Bearer {token}")),
            None => request,
        };
        send(target.addr, &request).map(|response| (response.status, response.json()))
    };
    let Some(admin_token) = target.admin_token.as_deref() else {
        return vec!["the target has no ADMIN_TOKEN: deletion cannot be checked".into()];
    };
    for (id, token, status) in [
        (forgotten.id.as_str(), None, 401),
        (forgotten.id.as_str(), Some("wrong-token"), 401),
        (forgotten.id.as_str(), Some(target.token.as_str()), 401),
        ("no!", Some(admin_token), 400),
    ] {
        match delete(id, token) {
            Ok((got, _)) if got == status => {}
            other => failures.push(format!("DELETE {id:?} with {token:?}: {other:?}")),
        }
    }
    for deleted in [1, 0] {
        match delete(&forgotten.id, Some(admin_token)) {
            Ok((200, Some(body))) if body == json!({ "deleted_records": deleted }) => {}
            other => failures.push(format!("DELETE, expecting {deleted} deleted: {other:?}")),
        }
    }
    for dimension in DIMENSIONS {
        let expected = expected_breakdown(week, sessions, dimension, DEFAULT_FLOOR);
        let got = settled_json(target, &format!("/v1/wau/{week}?by={dimension}"), &expected);
        if got.as_ref() != Ok(&expected) {
            failures.push(format!("after the deletion, by={dimension}: {got:?}"));
        }
    }
    failures
}

fn ping(session: &Session) -> RawRequest {
    RawRequest::new("POST", "/v1/session")
        .header("content-type", "application/json")
        .body(session.body())
}

fn expected_breakdown(week: &str, sessions: &[Session], dimension: &str, floor: u64) -> Value {
    let mut tally: BTreeMap<String, u64> = BTreeMap::new();
    for session in sessions {
        *tally.entry(session.value(dimension)).or_default() += 1;
    }
    let withheld: u64 = tally.values().filter(|n| **n < floor).sum();
    tally.retain(|_, n| *n >= floor);
    json!({
        "week": week,
        "weekly_active_sessions": sessions.len(),
        "by": dimension,
        "counts": tally,
        "withheld_sessions": withheld,
    })
}

/// The readout at `path` once it equals `expected`, or the last answer after a bounded wait.
fn settled_json(target: &Target, path: &str, expected: &Value) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = send(target.addr, &get(path, &target.token, None))?;
        let body = response
            .json()
            .ok_or_else(|| format!("{}: {}", response.status, response.text()))?;
        if response.status != 200 || &body == expected || Instant::now() >= deadline {
            return if response.status == 200 {
                Ok(body)
            } else {
                Err(format!("{}: {}", response.status, response.text()))
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn get(path: &str, token: &str, accept: Option<&str>) -> RawRequest {
    let request = RawRequest::new("GET", path).header("authorization", &format!("Bearer {token}"));
    match accept {
        Some(accept) => request.header("accept", accept),
        None => request,
    }
}

fn check_csv(target: &Target, week: &str, sessions: &[Session]) -> Vec<String> {
    let mut failures = Vec::new();
    let expected = expected_breakdown(week, sessions, "daemon_version", DEFAULT_FLOOR);
    let mut rows = String::from("week,by,value,sessions\r\n");
    for (value, count) in expected["counts"].as_object().unwrap() {
        rows.push_str(&format!("{week},daemon_version,{value},{count}\r\n"));
    }
    let withheld = &expected["withheld_sessions"];
    rows.push_str(&format!("{week},daemon_version,(withheld),{withheld}\r\n"));
    let plain = format!(
        "week,weekly_active_sessions\r\n{week},{}\r\n",
        sessions.len()
    );
    for (path, accept, body) in [
        (
            format!("/v1/wau/{week}?by=daemon_version"),
            "text/csv",
            rows,
        ),
        (
            format!("/v1/wau/{week}"),
            "text/csv;q=0.9, application/json;q=0.1",
            plain,
        ),
    ] {
        match send(target.addr, &get(&path, &target.token, Some(accept))) {
            Ok(response) => {
                let content_type = response.header("content-type").unwrap_or_default();
                if response.status != 200
                    || !content_type.starts_with("text/csv")
                    || response.text() != body
                {
                    failures.push(format!(
                        "CSV of {path}: {} {content_type:?} {:?}, expected {body:?}",
                        response.status,
                        response.text()
                    ));
                }
            }
            Err(error) => failures.push(format!("CSV of {path}: {error}")),
        }
    }
    failures
}

fn check_series(target: &Target, total: u64) -> Vec<String> {
    let (from, middle, to) = (
        iso_week_weeks_ago(2),
        iso_week_weeks_ago(1),
        current_iso_week(),
    );
    let expected = json!({
        "from": from,
        "to": to,
        "weeks": [
            {"week": from, "weekly_active_sessions": 0},
            {"week": middle, "weekly_active_sessions": 0},
            {"week": to, "weekly_active_sessions": total},
        ],
    });
    let path = format!("/v1/wau?from={from}&to={to}");
    let mut failures = match settled_json(target, &path, &expected) {
        Ok(body) if body == expected => vec![],
        other => vec![format!("series {path}: {other:?}, expected {expected}")],
    };
    // The longest series, two years of summaries and this week, by count and by value: one
    // store read per week (on the Worker, 105 requests to week objects in one invocation).
    let oldest = iso_week_weeks_ago(104);
    for by in ["", "&by=platform"] {
        let path = format!("/v1/wau?from={oldest}&to={to}{by}");
        match send(target.addr, &get(&path, &target.token, None)).map(|r| (r.status, r.json())) {
            Ok((200, Some(body))) => {
                let weeks = body["weeks"].as_array().map_or(0, Vec::len);
                let last = &body["weeks"][104]["weekly_active_sessions"];
                if weeks != 105 || last.as_u64() != Some(total) {
                    failures.push(format!("{path}: {weeks} weeks, the last {last}"));
                }
            }
            other => failures.push(format!("{path}: {other:?}")),
        }
    }
    failures
}

fn check_refusals(target: &Target, week: &str) -> Vec<String> {
    // 105 weeks is the longest series: two years of summaries and the current week.
    let (old, now) = (iso_week_weeks_ago(105), current_iso_week());
    let cases = [
        (format!("/v1/wau/{week}?by=os"), 400, "invalid_query"),
        (
            format!("/v1/wau/{week}?by=platform&by=platform"),
            400,
            "invalid_query",
        ),
        (
            format!("/v1/wau/{week}?by=platform,node_major"),
            400,
            "invalid_query",
        ),
        (
            format!("/v1/wau?from={now}&to={now}&by=os"),
            400,
            "invalid_query",
        ),
        (format!("/v1/wau?from={now}&to={old}"), 400, "invalid_range"),
        (format!("/v1/wau?from={old}&to={now}"), 400, "invalid_range"),
        (format!("/v1/wau?from={now}"), 400, "invalid_query"),
        (
            "/v1/wau?from=2025-W53&to=2026-W01".into(),
            400,
            "invalid_week",
        ),
    ];
    let mut failures = Vec::new();
    for (path, status, code) in cases {
        match send(target.addr, &get(&path, &target.token, None)) {
            Ok(response) => {
                let got = response
                    .json()
                    .and_then(|v| Some(v.get("error")?.as_str()?.to_owned()));
                if response.status != status || got.as_deref() != Some(code) {
                    failures.push(format!("{path}: {} {}", response.status, response.text()));
                }
            }
            Err(error) => failures.push(format!("{path}: {error}")),
        }
    }
    // Authentication first, on the series too.
    let anonymous = RawRequest::new("GET", &format!("/v1/wau?from={now}&to=x"));
    match send(target.addr, &anonymous) {
        Ok(response) if response.status == 401 => {}
        other => failures.push(format!("anonymous series: {other:?}")),
    }
    failures
}

/// Adoption over time: the last three weeks by every dimension, each week under the floor on
/// its own (the two empty ones with nothing shown and nothing withheld), in JSON and CSV.
fn check_adoption(target: &Target, sessions: &[Session]) -> Vec<String> {
    let mut failures = Vec::new();
    let weeks = [
        iso_week_weeks_ago(2),
        iso_week_weeks_ago(1),
        current_iso_week(),
    ];
    let (from, to) = (&weeks[0], &weeks[2]);
    for dimension in DIMENSIONS {
        let per_week: Vec<Value> = (weeks.iter())
            .map(|week| {
                let held: &[Session] = if week == to { sessions } else { &[] };
                let mut breakdown = expected_breakdown(week, held, dimension, DEFAULT_FLOOR);
                if let Some(object) = breakdown.as_object_mut() {
                    object.remove("by");
                }
                breakdown
            })
            .collect();
        let expected = json!({"from": from, "to": to, "by": dimension, "weeks": per_week});
        let path = format!("/v1/wau?from={from}&to={to}&by={dimension}");
        match settled_json(target, &path, &expected) {
            Ok(body) if body == expected => {}
            other => failures.push(format!("{path}: {other:?}, expected {expected}")),
        }
        let mut csv = String::from("week,value,sessions\r\n");
        for week in &per_week {
            let name = week["week"].as_str().unwrap_or_default();
            for (value, count) in week["counts"].as_object().into_iter().flatten() {
                csv.push_str(&format!("{name},{value},{count}\r\n"));
            }
            let withheld = &week["withheld_sessions"];
            csv.push_str(&format!("{name},(withheld),{withheld}\r\n"));
        }
        match send(target.addr, &get(&path, &target.token, Some("text/csv"))) {
            Ok(response) if response.status == 200 && response.text() == csv => {}
            Ok(response) => failures.push(format!(
                "CSV of {path}: {} {:?}, expected {csv:?}",
                response.status,
                response.text()
            )),
            Err(error) => failures.push(format!("CSV of {path}: {error}")),
        }
    }
    failures
}

/// Every readout of the current week and of the series around it, as a target answers them:
/// (path, `Accept`, status, body).
fn every_readout(target: &Target) -> Result<Vec<(String, &'static str, u16, String)>, String> {
    let week = current_iso_week();
    let (from, to) = (iso_week_weeks_ago(2), week.clone());
    let mut paths = vec![
        format!("/v1/wau/{week}"),
        format!("/v1/wau?from={from}&to={to}"),
    ];
    for dimension in DIMENSIONS {
        paths.push(format!("/v1/wau/{week}?by={dimension}"));
        paths.push(format!("/v1/wau?from={from}&to={to}&by={dimension}"));
    }
    let mut answers = Vec::new();
    for path in paths {
        for accept in ["application/json", "text/csv"] {
            let response = send(target.addr, &get(&path, &target.token, Some(accept)))?;
            answers.push((path.clone(), accept, response.status, response.text()));
        }
    }
    Ok(answers)
}

/// Seeds the population into a target whose records live `ttl` (a minute or so) and whose
/// week is empty, reads every readout, waits until the records have expired, and reads them
/// all again: the week answers from its summary, byte for byte as before. That the records
/// are gone is shown through the operator's deletion: it finds none to delete (and, the
/// week's summary not being made yet, it would have taken one out of the count). Returns one
/// line per problem.
pub fn check_readouts_from_summaries(target: &Target, tag: &str, ttl: Duration) -> Vec<String> {
    let mut failures = Vec::new();
    if let Err(refused) = an_empty_week(target) {
        return refused;
    }
    let (sessions, seeded) = seed(target, tag);
    let last_ping = Instant::now();
    failures.extend(seeded);
    let week = current_iso_week();
    let upgraded = expected_breakdown(&week, &sessions, "daemon_version", DEFAULT_FLOOR);
    if let Err(error) = settled_json(
        target,
        &format!("/v1/wau/{week}?by=daemon_version"),
        &upgraded,
    ) {
        failures.push(format!("before expiry: {error}"));
    }
    let before = match every_readout(target) {
        Ok(answers) => answers,
        Err(error) => return vec![format!("readouts before expiry: {error}")],
    };
    if before.iter().any(|(_, _, status, _)| *status != 200) {
        failures.push(format!("a readout before expiry was not a 200: {before:?}"));
    }
    // The records' expiry, the store's own sweep (the rollback's expiry task, the week
    // object's alarm) and a margin for a loaded machine.
    std::thread::sleep((ttl + Duration::from_secs(8)).saturating_sub(last_ping.elapsed()));
    let Some(admin) = &target.admin_token else {
        return vec!["the check needs the admin token, to ask for deletions".into()];
    };
    for session in &sessions {
        let forget = RawRequest::new("DELETE", &format!("/v1/session/{}", session.id))
            .header("authorization", &format!("Bearer {admin}"));
        match send(target.addr, &forget) {
            Ok(response) if response.text() == r#"{"deleted_records":0}"# => {}
            Ok(response) => failures.push(format!(
                "{}'s record still held after its TTL: {} {}",
                session.id,
                response.status,
                response.text()
            )),
            Err(error) => failures.push(format!("deletion of {}: {error}", session.id)),
        }
    }
    match every_readout(target) {
        Ok(after) => {
            for (was, is) in before.iter().zip(&after) {
                if was != is {
                    failures.push(format!("after expiry: {is:?}, before: {was:?}"));
                }
            }
        }
        Err(error) => failures.push(format!("readouts after expiry: {error}")),
    }
    failures
}
