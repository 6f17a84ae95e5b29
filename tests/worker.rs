//! The contract suite against the built Worker in real workerd (`wrangler dev`, local KV),
//! plus what only this target shows: the records in KV and the Worker's log lines.

#![cfg(unix)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

// Each test binary uses part of the shared helpers.
#[allow(dead_code)]
mod support;

use contract_suite::ADMIN_TOKEN;
use contract_suite::dashboard::{run_browser, screenshots_dir};
use contract_suite::population::{
    check_readouts, check_readouts_from_summaries, seed_for_dashboard,
};
use contract_suite::privacy::{
    address_problems, expiry_problems, log_problems, record_problems, send_address_bearing_pings,
};
use contract_suite::public_view::{GUESS, PUBLIC_BY_VERSION, seed_and_pad, stranger_reads};
use contract_suite::schemathesis::run_schemathesis;
use contract_suite::{
    RawRequest, Target, current_iso_week, ping_json, ping_request, readout_request, run,
    run_without_token, send,
};
use serde_json::Value;
use support::wrangler::{Wrangler, wrangler_json, wrangler_kv};

const TOKEN: &str = "contract-token-4f9a-0123456789abcdef0123456789abcdef";
const ABUSE_LIMIT: u32 = 60;
const TTL_SECONDS: i64 = 7_257_600;

/// The secret that lets the Worker use the Rate Limiting binding (wrangler dev simulates it).
const SHARED_LIMIT_KEY: &str = "contract-shared-limit-key-0123456789";

/// The suite's view of a Worker started with [`TOKEN`] and [`ADMIN_TOKEN`].
fn operator_of(worker: &Wrangler, abuse_limit: Option<u32>) -> Target {
    Target {
        addr: worker.addr,
        token: TOKEN.into(),
        admin_token: Some(ADMIN_TOKEN.into()),
        abuse_limit,
    }
}

#[test]
fn worker_keeps_the_contract_and_stores_and_logs_nothing_more() {
    let worker = Wrangler::start(&[
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", &ABUSE_LIMIT.to_string()),
        ("ABUSE_LIMIT_KEY", SHARED_LIMIT_KEY),
    ]);
    let target = operator_of(&worker, Some(ABUSE_LIMIT));
    let started = unix_now();
    // Before the table (whose last case spends the abuse limit): pings from 127.0.0.2 that
    // carry client addresses in every header that may hold one.
    let (with_addresses, problems) = send_address_bearing_pings(worker.addr, "worker-addr");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let run = run(&target);
    assert!(run.cases > 60, "the table ran only {} cases", run.cases);
    assert!(
        run.failures.is_empty(),
        "{} of {} cases failed:\n{}",
        run.failures.len(),
        run.cases,
        run.failures.join("\n")
    );
    assert!(
        run.sent.len() > 60 && run.accepted.len() > 10,
        "too few pings accepted"
    );

    // Stored keys: exactly the accepted sessions, nothing refused, each with the record as
    // metadata (five fields and first_seen_at) and a 12-week expiration, both to the day.
    let listed = wrangler_json(&worker, &["kv", "key", "list", "--prefix", "session:"]);
    let keys = listed.as_array().expect("kv key list prints an array");
    let mut stored_ids = Vec::new();
    for key in keys {
        let name = key["name"].as_str().unwrap();
        let parts: Vec<&str> = name.splitn(3, ':').collect();
        assert_eq!(parts.len(), 3, "key layout session:<week>:<id>: {name}");
        assert_eq!(parts[1], contract_suite::current_iso_week(), "{name}");
        stored_ids.push(parts[2].to_owned());
        assert_record_is_minimal(&key["metadata"], name);
        let expiration = key["expiration"].as_i64().expect("an expiration");
        let problems = expiry_problems(expiration, started, TTL_SECONDS);
        assert!(problems.is_empty(), "{name}: {}", problems.join("; "));
    }
    stored_ids.sort();
    let mut accepted = run.accepted.clone();
    accepted.extend(with_addresses);
    accepted.sort();
    assert_eq!(
        stored_ids, accepted,
        "stored sessions are exactly those answered 204"
    );
    for refused in &run.refused {
        assert!(
            !stored_ids.contains(refused),
            "refused session {refused} was stored"
        );
    }

    // The value is the same minimal record.
    let sample = keys[0]["name"].as_str().unwrap();
    let value = wrangler_json(&worker, &["kv", "key", "get", sample]);
    assert_record_is_minimal(&value, sample);
    assert_eq!(
        value, keys[0]["metadata"],
        "value and metadata hold the same record"
    );

    // Logs: one wide event per request, and none of what was sent; no client address in
    // anything wrangler or workerd printed.
    // The last requests' lines reach the log through wrangler a little after their answers.
    assert!(
        worker.log_shows(r#""limited_by":"shared""#),
        "{}",
        worker.log()
    );
    let log = worker.log();
    let mut problems = log_problems(&log, &run, TOKEN);
    problems.extend(address_problems(&log));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The rate-limit probe was stopped by the limit shared across isolates, and its key
    // never reached a log.
    assert!(
        log.contains(r#""status":429,"outcome":"rate_limited""#)
            && log.contains(r#""limited_by":"shared""#),
        "no 429 from the Rate Limiting binding:\n{log}"
    );
    assert!(!log.contains(SHARED_LIMIT_KEY));
}

#[test]
fn guessing_a_token_is_limited_as_pinging_is_and_the_right_one_then_waits_too() {
    let worker = Wrangler::start(&[
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", "3"),
    ]);
    let week = current_iso_week();
    let guesses: Vec<u16> = (0..200)
        .map(|n| {
            let guess = readout_request(&week, &format!("a-guess-{n:04}-0123456789abcdef0123"));
            send(worker.addr, &guess).unwrap().status
        })
        .collect();
    assert_eq!(guesses[..3], [401; 3], "{:?}", &guesses[..10]);
    assert!(
        guesses[3..].iter().all(|status| *status == 429),
        "{guesses:?}"
    );
    let right = readout_request(&week, TOKEN);
    assert_eq!(
        send(worker.addr, &right).unwrap().status,
        429,
        "the right token waits too"
    );
    let delete = RawRequest::new("DELETE", "/v1/session/guessing-relay-01")
        .header("authorization", &format!("Bearer {ADMIN_TOKEN}"));
    assert_eq!(
        send(worker.addr, &delete).unwrap().status,
        429,
        "deletion too"
    );
    assert!(
        worker.log_shows(r#""route":"wau","method":"GET","status":429"#),
        "{}",
        worker.log()
    );
}

/// With the limit counted across isolates (the Rate Limiting bindings, whose limit under
/// `wrangler dev` is wrangler.toml's 120 a minute), a client over it gets 429 for the right
/// token as for a wrong one.
#[test]
fn over_the_shared_limit_the_right_token_waits_like_a_guess() {
    let worker = Wrangler::start(&[
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_KEY", SHARED_LIMIT_KEY),
    ]);
    let limited = (0..400).any(|n| {
        let ping = ping_request(&format!("shared-limit-relay-{n:03}"));
        send(worker.addr, &ping).unwrap().status == 429
    });
    assert!(limited, "no 429 after 400 pings");
    let week = current_iso_week();
    let right = send(worker.addr, &readout_request(&week, TOKEN)).unwrap();
    let wrong = send(
        worker.addr,
        &readout_request(&week, "a-wrong-guess-0123456789abcdef0123"),
    )
    .unwrap();
    assert_eq!((right.status, wrong.status), (429, 429));
    assert!(
        worker.log_shows(r#""limited_by":"shared""#),
        "{}",
        worker.log()
    );
}

#[test]
fn deletion_takes_the_admin_token_never_the_read_token() {
    let worker = Wrangler::start(&[
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", "0"),
    ]);
    let delete = |token: &str| {
        let request = RawRequest::new("DELETE", "/v1/session/admin-token-relay-1")
            .header("authorization", &format!("Bearer {token}"));
        send(worker.addr, &request).unwrap()
    };
    assert_eq!(delete(TOKEN).status, 401);
    assert_eq!(delete(ADMIN_TOKEN).text(), r#"{"deleted_records":0}"#);
    // Without an admin token, deletion does not exist; a short one is a configuration error.
    let readers_only = Wrangler::start(&[("WAU_READ_TOKEN", TOKEN)]);
    let request = RawRequest::new("DELETE", "/v1/session/admin-token-relay-1")
        .header("authorization", &format!("Bearer {TOKEN}"));
    assert_eq!(send(readers_only.addr, &request).unwrap().status, 404);
    let short = Wrangler::start_answering(
        &[("WAU_READ_TOKEN", TOKEN), ("ADMIN_TOKEN", "short-admin-7f")],
        500,
    );
    assert!(
        short.log_shows(r#""event":"config_error","target":"worker","variable":"ADMIN_TOKEN""#),
        "{}",
        short.log()
    );
    assert!(!short.log().contains("short-admin-7f"));
}

#[test]
fn without_its_key_the_worker_counts_in_the_isolate() {
    let worker = Wrangler::start(&[
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", "3"),
    ]);
    let statuses: Vec<u16> = (0..5)
        .map(|n| {
            let id = format!("isolate-limit-{n}");
            send(worker.addr, &ping_request(&id)).unwrap().status
        })
        .collect();
    assert_eq!(statuses, [204, 204, 204, 429, 429]);
    assert!(
        worker.log_shows(r#""limited_by":"process""#),
        "{}",
        worker.log()
    );
}

#[test]
fn a_misconfigured_worker_answers_500_and_names_the_variable_never_its_value() {
    let too_short = "short-key-9";
    let worker = Wrangler::start_answering(
        &[
            ("WAU_READ_TOKEN", TOKEN),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("ABUSE_LIMIT_KEY", too_short),
        ],
        500,
    );
    assert_eq!(
        send(worker.addr, &ping_request("misconfigured-1"))
            .unwrap()
            .status,
        500
    );
    assert!(
        worker
            .log_shows(r#""event":"config_error","target":"worker","variable":"ABUSE_LIMIT_KEY""#),
        "{}",
        worker.log()
    );
    assert!(!worker.log().contains(too_short), "{}", worker.log());
}

#[test]
fn worker_answers_every_readout_query_for_a_known_population() {
    let worker = Wrangler::start(&[
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", "0"),
    ]);
    let target = operator_of(&worker, None);
    let failures = check_readouts(&target, "worker");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn worker_answers_from_a_week_s_summary_once_its_records_expire() {
    let worker = Wrangler::start(&[
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", "0"),
        ("SESSION_TTL_SECONDS", "60"),
    ]);
    let target = operator_of(&worker, None);
    let ttl = std::time::Duration::from_secs(60);
    let failures = check_readouts_from_summaries(&target, "worker-summaries", ttl);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn worker_keeps_a_session_s_first_day_and_writes_a_repeat_only_when_it_changed() {
    let worker = Wrangler::start(&[
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", "0"),
    ]);
    let week = current_iso_week();
    let key = format!("session:{week}:repeat-relay-01");
    // A record first seen on an earlier day, with an expiry no write of today's gives.
    let earlier = r#"{"protocol_version":"1.0.0","daemon_version":"0.9.3","platform":"linux","node_version":"v20.11.1","primary_framework":"react","first_seen_at":"2001-02-12T00:00:00Z"}"#;
    let expiration = (unix_now() + 30 * 86_400) / 86_400 * 86_400 + 4_321;
    let expiration_text = expiration.to_string();
    wrangler_kv(
        &worker,
        &[
            "kv",
            "key",
            "put",
            &key,
            earlier,
            "--metadata",
            earlier,
            "--expiration",
            &expiration_text,
        ],
    );
    // The week's object decides what a ping writes: a record put in KV another way (a week
    // put back from the rollback) is handed to it by the backfill, as RUNBOOK's swap does.
    let backfill = worker.start_backfill_beside(&[("ADMIN_TOKEN", ADMIN_TOKEN)]);
    // Handing a record twice counts it once, so a run that found the dev registry not yet
    // pointing at the Worker's objects is simply run again.
    let mut attempts = 0;
    loop {
        let handed = std::process::Command::new("node")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["scripts/backfill.mjs", &format!("http://{}", backfill.addr)])
            .arg(&week)
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .expect("run scripts/backfill.mjs");
        let said = String::from_utf8_lossy(&handed.stdout);
        // Handed, and to the Worker's own objects: its readout counts the session.
        let counted = || {
            let readout = RawRequest::new("GET", &format!("/v1/wau/{week}"))
                .header("authorization", &format!("Bearer {TOKEN}"));
            send(worker.addr, &readout)
                .is_ok_and(|answer| answer.text().contains(r#""weekly_active_sessions":1"#))
        };
        if handed.status.success() && said.contains(": 1 records handed") && counted() {
            break;
        }
        attempts += 1;
        let complaint = String::from_utf8_lossy(&handed.stderr);
        assert!(attempts < 10, "the backfill failed: {said}{complaint}");
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    drop(backfill);
    let listed = |worker: &Wrangler| -> Value {
        let keys = wrangler_json(worker, &["kv", "key", "list", "--prefix", &key]);
        keys.as_array()
            .unwrap()
            .first()
            .cloned()
            .unwrap_or(Value::Null)
    };
    // The same fields again (ping_json's): nothing is written, not even a new expiry.
    assert_eq!(
        send(worker.addr, &ping_request("repeat-relay-01"))
            .unwrap()
            .status,
        204
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    let unchanged = listed(&worker);
    assert_eq!(
        unchanged["expiration"].as_i64(),
        Some(expiration),
        "{unchanged}"
    );
    assert_eq!(
        unchanged["metadata"]["first_seen_at"],
        "2001-02-12T00:00:00Z"
    );
    // An upgrade is written, with the first day kept and today's expiry.
    let upgraded = RawRequest::new("POST", "/v1/session")
        .header("content-type", "application/json")
        .body(ping_json("repeat-relay-01").replace("0.9.3", "1.0.0"));
    assert_eq!(send(worker.addr, &upgraded).unwrap().status, 204);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let changed = loop {
        let record = listed(&worker);
        if record["metadata"]["daemon_version"] == "1.0.0" {
            break record;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upgrade was not written: {record}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(
        changed["metadata"]["first_seen_at"], "2001-02-12T00:00:00Z",
        "{changed}"
    );
    assert_ne!(
        changed["expiration"].as_i64(),
        Some(expiration),
        "{changed}"
    );
    let value = wrangler_kv(&worker, &["kv", "key", "get", &key]);
    assert_eq!(
        serde_json::from_str::<Value>(&value).unwrap(),
        changed["metadata"]
    );
}

#[test]
fn worker_counts_a_week_past_one_kv_list_page() {
    let worker = Wrangler::start(&[
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", "0"),
    ]);
    // One KV `list` returns at most 1,000 keys: the readout must follow the cursor.
    let sessions = 1_050;
    for n in 0..sessions {
        let response = send(worker.addr, &ping_request(&format!("page-test-{n:05}"))).unwrap();
        assert_eq!(response.status, 204, "ping {n}: {}", response.text());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let readout = send(worker.addr, &readout_request(&current_iso_week(), TOKEN)).unwrap();
        let count = readout.json().unwrap()["weekly_active_sessions"].as_u64();
        if count == Some(sessions) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readout {} after {sessions} new sessions",
            readout.text()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // A breakdown reads the same pages, metadata and all.
    let path = format!("/v1/wau/{}?by=platform", current_iso_week());
    let breakdown = send(
        worker.addr,
        &RawRequest::new("GET", &path).header("authorization", &format!("Bearer {TOKEN}")),
    )
    .unwrap();
    let body = breakdown.json().unwrap();
    assert_eq!(
        body["weekly_active_sessions"].as_u64(),
        Some(sessions),
        "{body}"
    );
    let shown: u64 = body["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(
        shown + body["withheld_sessions"].as_u64().unwrap(),
        sessions,
        "{body}"
    );
    // wrangler's local listing stops after its first page; scripts/kv-list.mjs, which a
    // rehearsal of the DNS swap reads the Worker's KV with, follows the cursor.
    let prefix = format!("session:{}:", current_iso_week());
    let listed = wrangler_json(&worker, &["kv", "key", "list", "--prefix", &prefix]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1_000));
    let output = std::process::Command::new("node")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "scripts/kv-list.mjs",
            "--prefix",
            &prefix,
            "--local",
            "--persist-to",
        ])
        .arg(worker.kv_dir())
        .output()
        .expect("run node scripts/kv-list.mjs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let every: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let every = every.as_array().unwrap();
    assert_eq!(every.len(), 1_050);
    assert!(every.iter().all(|key| {
        key["name"]
            .as_str()
            .is_some_and(|name| name.starts_with(&prefix))
            && key["expiration"].as_i64().is_some()
            && key["metadata"]["platform"].is_string()
    }));
}

fn unix_now() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since_epoch.as_secs()).unwrap()
}

fn assert_record_is_minimal(record: &Value, key: &str) {
    let problems = record_problems(record);
    assert!(problems.is_empty(), "{key}: {}", problems.join("; "));
}

#[test]
fn worker_without_a_token_has_no_readout() {
    let worker = Wrangler::start(&[("WAU_READ_TOKEN", "")]);
    let run = run_without_token(worker.addr);
    assert!(run.failures.is_empty(), "{}", run.failures.join("\n"));
}

#[test]
fn worker_forgets_a_session_on_request() {
    let worker = Wrangler::start(&[("WAU_READ_TOKEN", TOKEN), ("ADMIN_TOKEN", ADMIN_TOKEN)]);
    for id in ["forget-me-please-1", "keep-me-around-2"] {
        assert_eq!(send(worker.addr, &ping_request(id)).unwrap().status, 204);
    }
    let stored = |worker: &Wrangler| -> Vec<String> {
        let listed = wrangler_json(worker, &["kv", "key", "list", "--prefix", "session:"]);
        let mut names: Vec<String> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|key| key["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stored(&worker).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "pings not stored");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // RUNBOOK's deletion request: every retained week, in KV and in the weeks' objects.
    let forget = |id: &str| {
        let request = RawRequest::new("DELETE", &format!("/v1/session/{id}"))
            .header("authorization", &format!("Bearer {ADMIN_TOKEN}"));
        send(worker.addr, &request).unwrap()
    };
    let forgotten = forget("forget-me-please-1");
    assert_eq!(forgotten.status, 200, "{}", forgotten.text());
    assert_eq!(forgotten.json().unwrap()["deleted_records"], 1);
    assert_eq!(
        forget("forget-me-please-1").json().unwrap()["deleted_records"],
        0
    );
    let week = current_iso_week();
    assert_eq!(
        stored(&worker),
        [format!("session:{week}:keep-me-around-2")]
    );
    let readout = send(worker.addr, &readout_request(&week, TOKEN)).unwrap();
    assert_eq!(readout.json().unwrap()["weekly_active_sessions"], 1);
    let by_platform = RawRequest::new("GET", &format!("/v1/wau/{week}?by=platform"))
        .header("authorization", &format!("Bearer {TOKEN}"));
    let by_platform = send(worker.addr, &by_platform).unwrap().json().unwrap();
    assert_eq!(by_platform["withheld_sessions"], 1, "{by_platform}");
    // The deletion journal (RUNBOOK's DNS swap): the deleted session's id, for the TTL, and
    // nothing for an id no week held (anyone may ask to erase one).
    let erase = RawRequest::new("POST", "/v1/erase")
        .header("content-type", "application/json")
        .body(br#"{"session_id":"never-seen-here-3"}"#.to_vec());
    assert_eq!(send(worker.addr, &erase).unwrap().status, 204);
    let journal = wrangler_json(&worker, &["kv", "key", "list", "--prefix", "deletion:"]);
    let journal = journal.as_array().unwrap();
    assert_eq!(journal.len(), 1, "{journal:?}");
    assert_eq!(journal[0]["name"], "deletion:forget-me-please-1");
    let until = journal[0]["expiration"].as_i64().expect("an expiration");
    let problems = expiry_problems(until, unix_now() - 60, TTL_SECONDS);
    assert!(problems.is_empty(), "{}", problems.join("; "));
}

/// The dashboard as the Worker serves it (static assets under `wrangler dev`), in headless
/// Chromium: the same checks as the rollback's (`rollback/tests/dashboard.rs`).
/// Screenshots: target/dashboard-screenshots/worker/.
#[test]
fn worker_dashboard_shows_the_truth_in_a_real_browser() {
    let worker = Wrangler::start(&[
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", "0"),
    ]);
    let target = operator_of(&worker, None);
    let expect = seed_for_dashboard(&target, "worker-dashboard").unwrap();
    for (served_at, _, content_type) in telemetry_core::dashboard::FILES {
        let path = format!("/dashboard/{served_at}");
        let file = send(worker.addr, &RawRequest::new("GET", &path)).unwrap();
        assert_eq!(file.status, 200, "{path}");
        for (name, value) in telemetry_core::dashboard::HEADERS {
            assert_eq!(
                file.header(name),
                Some(value),
                "{path} {name}: public/_headers"
            );
        }
        let served_type = file.header("content-type").unwrap_or_default();
        assert_eq!(
            served_type.split(';').next(),
            content_type.split(';').next(),
            "{path}"
        );
    }
    let disabled = Wrangler::start(&[("WAU_READ_TOKEN", "")]);
    let url = |worker: &Wrangler| format!("http://{}", worker.addr);
    let scenarios = serde_json::json!([
        {"name": "operator", "url": url(&worker), "token": TOKEN, "expect": expect, "sign_out": true},
        {"name": "wrong-token", "url": url(&worker), "token": "not-the-token-0123456789abcdef0123",
         "expect": {"status": "That token was not accepted"}},
        {"name": "disabled", "url": url(&disabled), "token": null,
         "expect": {"status": "The readout is disabled"}},
    ]);
    if let Err(problems) = run_browser(&scenarios, &screenshots_dir("worker")) {
        panic!("{problems}\n\nwrangler log:\n{}", worker.log());
    }
}

/// The padding attack on the Worker's public view learns nothing, as on the rollback
/// (`rollback/tests/public_view.rs`): two instances that differ only in one install's rare
/// version answer a stranger alike after the stranger's fakes.
#[test]
fn worker_public_view_tells_a_padding_stranger_nothing() {
    let mut seen = Vec::new();
    for (tag, real_rare) in [("worker-acme", GUESS), ("worker-zeta", "0.9.0-zeta.3")] {
        let worker = Wrangler::start(&[
            ("WAU_READ_TOKEN", TOKEN),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("ABUSE_LIMIT_PER_MINUTE", "0"),
            ("PUBLIC_READOUT", "1"),
            ("PUBLIC_DAEMON_VERSIONS", "1.0.0,1.1.0"),
        ]);
        let target = operator_of(&worker, None);
        assert_eq!(
            seed_and_pad(&target, tag, real_rare).unwrap(),
            real_rare == GUESS
        );
        seen.push(stranger_reads(&target).unwrap());
        let deletion = RawRequest::new("DELETE", &format!("/v1/session/{tag}-real-00"));
        assert_eq!(send(worker.addr, &deletion).unwrap().status, 401);
    }
    assert_eq!(seen[0], seen[1], "the public view told the two weeks apart");
    assert!(
        seen[0]
            .iter()
            .any(|answer| answer.ends_with(PUBLIC_BY_VERSION)),
        "{seen:?}"
    );
}

#[test]
fn worker_answers_as_openapi_yaml_says() {
    let worker = Wrangler::start(&[
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", "0"),
    ]);
    if let Err(report) = run_schemathesis(worker.addr, TOKEN, ADMIN_TOKEN) {
        panic!("{report}");
    }
}

#[test]
fn worker_without_summaries_drops_an_expired_session_from_the_weeks_count_and_breakdowns() {
    // The shortest TTL the configuration takes, kept to the second (KV's least expiry), and
    // no week summaries: the week's numbers go with its records.
    let worker = Wrangler::start(&[
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("SESSION_TTL_SECONDS", "60"),
        ("SUMMARY_RETENTION_WEEKS", "0"),
    ]);
    let target = operator_of(&worker, None);
    assert_eq!(
        send(worker.addr, &ping_request("expiring-relay-01"))
            .unwrap()
            .status,
        204
    );
    assert_eq!(target.count_settled(1), Ok(1));
    // The week's object deletes the record at its expiry, by its alarm, and takes it out of
    // the tallies: the count falls to 0 with no request in between.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    std::thread::sleep(std::time::Duration::from_secs(55));
    while target.weekly_count() != Ok(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "still counted after its expiry"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let week = current_iso_week();
    let by_platform = RawRequest::new("GET", &format!("/v1/wau/{week}?by=platform"))
        .header("authorization", &format!("Bearer {TOKEN}"));
    let by_platform = send(worker.addr, &by_platform).unwrap().json().unwrap();
    assert_eq!(by_platform["weekly_active_sessions"], 0, "{by_platform}");
    assert_eq!(by_platform["withheld_sessions"], 0, "{by_platform}");
}

#[test]
fn without_its_week_object_the_worker_acknowledges_nothing_and_names_the_binding() {
    let worker = Wrangler::start_without_week_objects(&[
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", "0"),
    ]);
    // A ping it could not keep is never answered 204: the deployment is misconfigured.
    let ping = send(worker.addr, &ping_request("unreachable-week-01")).unwrap();
    assert_eq!(ping.status, 500, "{}", ping.text());
    let readout = send(worker.addr, &readout_request(&current_iso_week(), TOKEN)).unwrap();
    assert_eq!(readout.status, 500, "{}", readout.text());
    assert!(
        worker.log_shows(r#""event":"config_error","target":"worker","variable":"WEEKS""#),
        "no config_error naming the binding:\n{}",
        worker.log()
    );
    assert!(!worker.log().contains("unreachable-week-01"));
    let keys = wrangler_json(&worker, &["kv", "key", "list", "--prefix", "session:"]);
    assert_eq!(keys, Value::Array(Vec::new()), "{keys}");
}

/// The current week's breakdown by daemon version, once it equals `expected` (the object is
/// written after the 204), or a failure with the last one read.
fn assert_versions_settle(worker: &Wrangler, expected: &[(&str, u64)]) {
    let path = format!("/v1/wau/{}?by=daemon_version", current_iso_week());
    let request = RawRequest::new("GET", &path).header("authorization", &format!("Bearer {TOKEN}"));
    let expected: serde_json::Map<String, Value> = expected
        .iter()
        .map(|(version, n)| ((*version).to_owned(), Value::from(*n)))
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let read = send(worker.addr, &request).unwrap().json().unwrap();
        if read["counts"] == Value::Object(expected.clone()) && read["withheld_sessions"] == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{read} against {expected:?}\n{}",
            worker.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn a_week_object_made_before_profiles_counts_its_records_as_profiles_once() {
    let vars = [
        ("WEEK_SHARDS", "1"),
        ("WAU_READ_TOKEN", TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", "0"),
        ("BREAKDOWN_MIN_SESSIONS", "1"),
    ];
    let worker = Wrangler::start(&vars);
    for id in ["older-relay-1", "older-relay-2", "older-relay-3"] {
        assert_eq!(send(worker.addr, &ping_request(id)).unwrap().status, 204);
    }
    let upgrade = RawRequest::new("POST", "/v1/session")
        .header("content-type", "application/json")
        .body(ping_json("older-relay-3").replace("0.9.3", "1.0.0"));
    assert_eq!(send(worker.addr, &upgrade).unwrap().status, 204);
    assert_versions_settle(&worker, &[("0.9.3", 2), ("1.0.0", 1)]);
    let files = worker.week_object_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let state = worker.stop_keeping_state();

    // The object as the version before profiles left it: a tally row per dimension and
    // value (wrong ones, as a half-applied write could leave them), and no profiles.
    let file = rusqlite::Connection::open(&files[0]).unwrap();
    file.execute_batch(
        "DROP TABLE profiles;
         CREATE TABLE tallies (dimension TEXT NOT NULL, value TEXT NOT NULL,
             sessions INTEGER NOT NULL, PRIMARY KEY (dimension, value)) WITHOUT ROWID;
         INSERT INTO tallies VALUES ('daemon_version', '0.9.3', 7), ('platform', 'linux', 7);",
    )
    .unwrap();
    drop(file);

    // Its next instance counts the week from its records, as profiles, and drops the old rows.
    let worker = Wrangler::start_on(state, &vars);
    assert_versions_settle(&worker, &[("0.9.3", 2), ("1.0.0", 1)]);
    let file = rusqlite::Connection::open(&files[0]).unwrap();
    let tables: Vec<String> = (file.prepare("SELECT name FROM sqlite_master WHERE type = 'table'"))
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!tables.contains(&"tallies".to_owned()), "{tables:?}");
    let profiles: Vec<(String, i64)> = (file
        .prepare("SELECT daemon_version, sessions FROM profiles ORDER BY daemon_version"))
    .unwrap()
    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
    .unwrap()
    .map(Result::unwrap)
    .collect();
    assert_eq!(profiles, [("0.9.3".to_owned(), 2), ("1.0.0".to_owned(), 1)]);
    // And it keeps counting: a fourth session.
    assert_eq!(
        send(worker.addr, &ping_request("older-relay-4"))
            .unwrap()
            .status,
        204
    );
    assert_versions_settle(&worker, &[("0.9.3", 3), ("1.0.0", 1)]);
}

#[test]
fn a_damaged_week_object_is_repaired_by_the_request_that_finds_it() {
    // One object for the week, so that the test damages the one its sessions are in.
    let worker = Wrangler::start(&[
        ("WEEK_SHARDS", "1"),
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", "0"),
        ("BREAKDOWN_MIN_SESSIONS", "1"),
    ]);
    let upgrade = |id: &str| {
        RawRequest::new("POST", "/v1/session")
            .header("content-type", "application/json")
            .body(ping_json(id).replace("0.9.3", "1.0.0"))
    };
    for id in ["damaged-relay-1", "damaged-relay-2", "damaged-relay-3"] {
        assert_eq!(send(worker.addr, &ping_request(id)).unwrap().status, 204);
    }
    assert_versions_settle(&worker, &[("0.9.3", 3)]);
    let files = worker.week_object_files();
    assert_eq!(files.len(), 1, "{files:?}");
    // What anyone holding the object's file could do to it while workerd serves.
    let damage = |sql: &str| {
        let file = rusqlite::Connection::open(&files[0]).unwrap();
        file.busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        assert!(file.execute(sql, []).unwrap() > 0, "{sql}");
    };

    // The sessions' tally row gone, then an upgrade that moves a session out of it.
    damage("DELETE FROM profiles WHERE daemon_version = '0.9.3'");
    assert_eq!(
        send(worker.addr, &upgrade("damaged-relay-1"))
            .unwrap()
            .status,
        204
    );
    assert_versions_settle(&worker, &[("0.9.3", 2), ("1.0.0", 1)]);
    // A stored record that is not a record, then its session's upgrade.
    damage("UPDATE sessions SET record = 'garbage' WHERE session_id = 'damaged-relay-2'");
    assert_eq!(
        send(worker.addr, &upgrade("damaged-relay-2"))
            .unwrap()
            .status,
        204
    );
    assert_versions_settle(&worker, &[("0.9.3", 1), ("1.0.0", 2)]);
    // Its profile's row gone again, then a deletion that takes a session out of it.
    damage("DELETE FROM profiles WHERE daemon_version = '0.9.3'");
    let forget = RawRequest::new("DELETE", "/v1/session/damaged-relay-3")
        .header("authorization", &format!("Bearer {ADMIN_TOKEN}"));
    let forgotten = send(worker.addr, &forget).unwrap();
    assert_eq!(forgotten.text(), r#"{"deleted_records":1}"#);
    assert_versions_settle(&worker, &[("1.0.0", 2)]);

    assert!(worker.log_shows(r#""operation":"delete""#));
    let log = worker.log();
    let repairs: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(r#""event":"store_inconsistent""#))
        .collect();
    let week = format!(r#""week":"{}""#, current_iso_week());
    let found: Vec<&str> = repairs
        .iter()
        .map(|line| {
            assert!(
                line.contains(&week) && !line.contains("damaged-relay"),
                "{line}"
            );
            ["tally_below_zero", "invalid_record"]
                .into_iter()
                .find(|found| line.contains(found))
                .unwrap_or("?")
        })
        .collect();
    assert_eq!(
        found,
        ["tally_below_zero", "invalid_record", "tally_below_zero"],
        "{log}"
    );
    assert!(!log.contains(r#""event":"store_failure""#), "{log}");
}
