//! The contract suite, unchanged, against the rollback on SQLite and on a real Redis; then
//! what only this target shows: the stored records and the server's log lines.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use contract_suite::ADMIN_TOKEN;
use std::collections::HashMap;

use contract_suite::population::{check_readouts, check_readouts_from_summaries};
use contract_suite::privacy::{expiry_problems, log_problems, record_problems};
use contract_suite::{Run, Target, current_iso_week, run, run_without_token};
use support::{RedisServer, Rollback, scratch_dir};

const TOKEN: &str = "rollback-contract-token-77-0123456789abcdef0123456789abcdef";
const ABUSE_LIMIT: u32 = 60;
const TTL_SECONDS: i64 = 7_257_600;

/// Runs the suite, checks the log lines, and returns what was accepted.
fn run_contract(store: &str, dir: &std::path::Path) -> Run {
    let limit = ABUSE_LIMIT.to_string();
    let server = Rollback::start(
        store,
        dir,
        &[
            ("WAU_READ_TOKEN", TOKEN),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("ABUSE_LIMIT_PER_MINUTE", &limit),
        ],
    );
    let target = Target {
        addr: server.addr,
        token: TOKEN.into(),
        admin_token: Some(ADMIN_TOKEN.into()),
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

    let problems = log_problems(&server.log(), &run, TOKEN);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    run
}

/// Stored records, by session id, are exactly the accepted sessions with minimal records.
fn assert_stored_exactly(run: &Run, stored: &HashMap<String, String>) {
    let mut ids: Vec<&String> = stored.keys().collect();
    ids.sort();
    let mut accepted: Vec<&String> = run.accepted.iter().collect();
    accepted.sort();
    assert_eq!(
        ids, accepted,
        "stored sessions are exactly those answered 204"
    );
    for (id, record) in stored {
        let problems = record_problems(&serde_json::from_str(record).unwrap());
        assert!(problems.is_empty(), "{id}: {}", problems.join("; "));
    }
}

#[test]
fn rollback_on_sqlite_keeps_the_contract_and_stores_nothing_more() {
    let dir = scratch_dir("contract-sqlite");
    let db = dir.join("telemetry.db");
    let started = rollback::unix_now();
    let run = run_contract(&format!("sqlite://{}", db.display()), &dir);

    let connection = rusqlite::Connection::open(&db).unwrap();
    let columns: Vec<String> = connection
        .prepare("SELECT name FROM pragma_table_info('sessions')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(columns, ["week", "session_id", "record", "expires_at"]);
    let mut statement = connection
        .prepare("SELECT week, session_id, record, expires_at FROM sessions")
        .unwrap();
    let mut stored = HashMap::new();
    for row in statement
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .unwrap()
    {
        let (week, id, record, expires_at) = row.unwrap();
        assert_eq!(week, current_iso_week());
        let problems = expiry_problems(expires_at, started, TTL_SECONDS);
        assert!(problems.is_empty(), "{id}: {}", problems.join("; "));
        assert!(
            stored.insert(id.clone(), record).is_none(),
            "{id} has two rows"
        );
    }
    assert_stored_exactly(&run, &stored);
}

#[test]
fn rollback_on_redis_keeps_the_contract_and_stores_nothing_more() {
    let dir = scratch_dir("contract-redis");
    let redis_server = RedisServer::start(&dir);
    let started = rollback::unix_now();
    let run = run_contract(&redis_server.url(), &dir);

    let mut connection = redis_server.connection();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut connection).unwrap();
    keys.sort();
    let week_key = format!("sessions:{}", current_iso_week());
    let tallies_key = format!("tallies:{}", current_iso_week());
    // The deletion journal, when the run deleted anything: ids, each until its TTL ends.
    if keys.first().map(String::as_str) == Some("deletions") {
        keys.remove(0);
        let journal: Vec<(String, i64)> = redis::cmd("ZRANGE")
            .arg("deletions")
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(&mut connection)
            .unwrap();
        assert!(!journal.is_empty());
        for (id, until) in journal {
            assert!(telemetry_core::SessionId::parse(&id).is_some(), "{id}");
            let problems = expiry_problems(until, started, TTL_SECONDS);
            assert!(problems.is_empty(), "journal: {}", problems.join("; "));
        }
    }
    assert_eq!(
        keys,
        [week_key.as_str(), tallies_key.as_str()],
        "per week its sessions and their tallies, and the deletion journal, nothing else"
    );
    let stored: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&week_key)
        .query(&mut connection)
        .unwrap();
    let expires_at: i64 = redis::cmd("EXPIRETIME")
        .arg(&week_key)
        .query(&mut connection)
        .unwrap();
    let problems = expiry_problems(expires_at, started, TTL_SECONDS);
    assert!(problems.is_empty(), "week hash: {}", problems.join("; "));
    let tallies_expire_at: i64 = redis::cmd("EXPIRETIME")
        .arg(&tallies_key)
        .query(&mut connection)
        .unwrap();
    // The tallies outlive the records: once the records hash expires they are the week's
    // summary, kept 104 weeks after the week ends (the default) and no longer.
    let week = telemetry_core::IsoWeek::parse(&current_iso_week()).unwrap();
    let summary_expires_at = telemetry_core::summary::Retention::default()
        .summary_expires_at(week)
        .unwrap();
    assert_eq!(
        tallies_expire_at, summary_expires_at,
        "tallies go with the week's summary"
    );
    let tallies: HashMap<String, i64> = redis::cmd("HGETALL")
        .arg(&tallies_key)
        .query(&mut connection)
        .unwrap();
    for (field, sessions) in &tallies {
        assert!(*sessions > 0, "{field} is kept at {sessions}");
        assert!(
            !stored.keys().any(|id| field.contains(id.as_str())),
            "tally {field} names a session"
        );
    }
    assert_stored_exactly(&run, &stored);
}

#[test]
fn rollback_without_a_token_has_no_readout() {
    let dir = scratch_dir("no-token");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    let server = Rollback::start(&store, &dir, &[("WAU_READ_TOKEN", "")]);
    let run = run_without_token(server.addr);
    assert!(run.failures.is_empty(), "{}", run.failures.join("\n"));
}

/// Breakdowns, series and CSV for a known population, on a store holding nothing else,
/// checked by `check` on a server started with `vars` besides the tokens and no abuse limit.
fn check_population(
    store: &str,
    dir: &std::path::Path,
    vars: &[(&str, &str)],
    check: impl Fn(&Target) -> Vec<String>,
) {
    let mut all = vec![
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", "0"),
    ];
    all.extend_from_slice(vars);
    let server = Rollback::start(store, dir, &all);
    let target = Target {
        addr: server.addr,
        token: TOKEN.into(),
        admin_token: Some(ADMIN_TOKEN.into()),
        abuse_limit: None,
    };
    let failures = check(&target);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every readout of the population.
fn readouts(target: &Target) -> Vec<String> {
    check_readouts(target, "rollback")
}

/// A week answered from its summary: the population's records expire after a minute (the
/// shortest TTL) and every readout answers as before.
const ONE_MINUTE_TTL: [(&str, &str); 1] = [("SESSION_TTL_SECONDS", "60")];

fn from_summaries(target: &Target) -> Vec<String> {
    check_readouts_from_summaries(target, "summaries", std::time::Duration::from_secs(60))
}

#[test]
fn rollback_on_sqlite_answers_every_readout_query_for_a_known_population() {
    let dir = scratch_dir("population-sqlite");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    check_population(&store, &dir, &[], readouts);
}

#[test]
fn rollback_on_redis_answers_every_readout_query_for_a_known_population() {
    let dir = scratch_dir("population-redis");
    let redis_server = RedisServer::start(&dir);
    check_population(&redis_server.url(), &dir, &[], readouts);
}

#[test]
fn rollback_on_sqlite_answers_from_a_week_s_summary_once_its_records_expire() {
    let dir = scratch_dir("summaries-sqlite");
    let store = format!("sqlite://{}", dir.join("telemetry.db").display());
    check_population(&store, &dir, &ONE_MINUTE_TTL, from_summaries);
}

#[test]
fn rollback_on_redis_answers_from_a_week_s_summary_once_its_records_expire() {
    let dir = scratch_dir("summaries-redis");
    let redis_server = RedisServer::start(&dir);
    check_population(&redis_server.url(), &dir, &ONE_MINUTE_TTL, from_summaries);
}
