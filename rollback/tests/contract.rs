//! The contract suite, unchanged, against the rollback on SQLite; then what only this target
//! shows: the rows in the SQLite file and the server's log lines.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use contract_suite::{Target, current_iso_week, run, run_without_token};
use serde_json::Value;
use support::{Rollback, scratch_dir};

const TOKEN: &str = "rollback-contract-token-77";
const ABUSE_LIMIT: u32 = 60;

#[test]
fn rollback_on_sqlite_keeps_the_contract_and_stores_and_logs_nothing_more() {
    let dir = scratch_dir("contract");
    let limit = ABUSE_LIMIT.to_string();
    let server = Rollback::start(
        dir.join("telemetry.db"),
        &[
            ("WAU_READ_TOKEN", TOKEN),
            ("ABUSE_LIMIT_PER_MINUTE", &limit),
        ],
    );
    let target = Target {
        addr: server.addr,
        token: TOKEN.into(),
        abuse_limit: Some(ABUSE_LIMIT),
    };
    let run = run(&target);
    assert!(
        run.failures.is_empty(),
        "{} of {} cases failed:\n{}",
        run.failures.len(),
        run.cases,
        run.failures.join("\n")
    );
    assert!(run.cases > 60 && run.accepted.len() > 10);

    // The rows: exactly the accepted sessions, each with the minimal record.
    let db = rusqlite::Connection::open(&server.db).unwrap();
    let mut rows = db
        .prepare("SELECT week, session_id, record, expires_at FROM sessions")
        .unwrap();
    let rows: Vec<(String, String, String, i64)> = rows
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut stored: Vec<String> = rows.iter().map(|r| r.1.clone()).collect();
    stored.sort();
    let mut accepted = run.accepted.clone();
    accepted.sort();
    assert_eq!(
        stored, accepted,
        "stored sessions are exactly those answered 204"
    );
    let columns: Vec<String> = db
        .prepare("SELECT name FROM pragma_table_info('sessions')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(columns, ["week", "session_id", "record", "expires_at"]);
    let now = rollback::unix_now();
    for (week, id, record, expires_at) in &rows {
        assert_eq!(week, &current_iso_week());
        let record: Value = serde_json::from_str(record).unwrap();
        let mut fields: Vec<&str> = record
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "daemon_version",
                "first_seen_at",
                "node_version",
                "platform",
                "primary_framework",
                "protocol_version"
            ],
            "{id}"
        );
        assert!(
            (expires_at - now - 7_257_600).abs() < 300,
            "{id} expires at {expires_at}"
        );
    }

    // The log: one wide event per request, none of what was sent.
    let log = server.log();
    let requests = log
        .lines()
        .filter(|line| line.starts_with("{\"event\":\"request\""))
        .count();
    assert!(
        requests >= run.cases,
        "{requests} events for {} cases",
        run.cases
    );
    for id in run.accepted.iter().chain(&run.refused) {
        assert!(!log.contains(id.as_str()), "log contains session id {id}");
    }
    assert!(!log.contains(TOKEN), "log contains the read token");
    assert!(
        !log.contains("127.0.0.1\""),
        "log contains the client address"
    );
    for body in run.sent.iter().filter(|b| b.len() >= 16) {
        assert!(
            !log.contains(String::from_utf8_lossy(body).as_ref()),
            "log contains a body"
        );
    }
}

#[test]
fn rollback_without_a_token_has_no_readout() {
    let dir = scratch_dir("no-token");
    let server = Rollback::start(dir.join("telemetry.db"), &[("WAU_READ_TOKEN", "")]);
    let run = run_without_token(server.addr);
    assert!(run.failures.is_empty(), "{}", run.failures.join("\n"));
}
