//! The review's padding attack on a public readout (`PUBLIC_READOUT=1`), as a stranger runs
//! it: whoever can send pings adds floor − 1 sessions with a guessed rare version and reads
//! every public answer, to learn whether one real install runs it. A test seeds two targets
//! that differ only in that install's version and compares what [`stranger_reads`] returns.

use std::time::{Duration, Instant};

use crate::http::{RawRequest, send};
use crate::{Target, current_iso_week, ping_json};

/// The guessed version: a custom build that would tell one organisation's install apart.
pub const GUESS: &str = "0.9.0-acme.1";

/// What a target started with `PUBLIC_READOUT=1` and `PUBLIC_DAEMON_VERSIONS=1.0.0,1.1.0`
/// must answer in public for [`seed_and_pad`]'s week, by daemon version.
pub const PUBLIC_BY_VERSION: &str = r#""counts":{"1.0.0":5,"other":5},"withheld_sessions":2}"#;

fn ping(id: &str, daemon_version: &str) -> RawRequest {
    let body = ping_json(id).replace(
        r#""daemon_version":"0.9.3""#,
        &format!(r#""daemon_version":"{daemon_version}""#),
    );
    RawRequest::new("POST", "/v1/session")
        .header("content-type", "application/json")
        .body(body.into_bytes())
}

/// Seeds seven common installs and one running `real_rare`, then the stranger's four fakes
/// of [`GUESS`]; waits until the operator (with the token) sees all twelve. Returns whether
/// the operator's breakdown names the guess: the attack's premise.
pub fn seed_and_pad(target: &Target, tag: &str, real_rare: &str) -> Result<bool, String> {
    let mut sent = Vec::new();
    for n in 0..7 {
        let version = if n < 5 { "1.0.0" } else { "1.1.0" };
        sent.push(ping(&format!("{tag}-real-{n:02}"), version));
    }
    sent.push(ping(&format!("{tag}-real-rare"), real_rare));
    for n in 0..4 {
        sent.push(ping(&format!("{tag}-stranger-fake-{n}"), GUESS));
    }
    for request in &sent {
        let status = send(target.addr, request)?.status;
        if status != 204 {
            return Err(format!("a ping got {status}"));
        }
    }
    let week = current_iso_week();
    let operator = RawRequest::new("GET", &format!("/v1/wau/{week}?by=daemon_version"))
        .header("authorization", &format!("Bearer {}", target.token));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = send(target.addr, &operator)?.text();
        if text.contains(r#""weekly_active_sessions":12"#) {
            return Ok(text.contains(&format!(r#""{GUESS}":5"#)));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the operator never saw the twelve sessions: {text}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every public answer about the current week and its series, JSON and CSV, as a stranger
/// reads them (no token).
pub fn stranger_reads(target: &Target) -> Result<Vec<String>, String> {
    let week = current_iso_week();
    let mut answers = Vec::new();
    for path in [
        format!("/v1/wau/{week}"),
        format!("/v1/wau/{week}?by=daemon_version"),
        format!("/v1/wau/{week}?by=platform"),
        format!("/v1/wau?from={week}&to={week}"),
    ] {
        for accept in ["application/json", "text/csv"] {
            let request = RawRequest::new("GET", &path).header("accept", accept);
            let response = send(target.addr, &request)?;
            if response.status != 200 {
                return Err(format!("{path}: {} {}", response.status, response.text()));
            }
            answers.push(format!("{path} {accept}: {}", response.text()));
        }
    }
    Ok(answers)
}
