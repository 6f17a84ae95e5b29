//! Storage that heals: the real binary on SQLite and on a real `redis-server`, its tallies and
//! records damaged with the store's own tools while it serves, then pings that touch them.
//! Every ping answered 204 is counted, every breakdown equals the truth again, the repair is
//! logged once per week without a session id, and SIGTERM still ends the process.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use contract_suite::ADMIN_TOKEN;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use contract_suite::{RawRequest, current_iso_week, ping_json, send};
use support::{RedisServer, Rollback, scratch_dir};

const TOKEN: &str = "repair-token-0123456789abcdef0123456789abcdef";

/// A valid ping of `session_id` on daemon `version`.
fn ping(session_id: &str, version: &str) -> RawRequest {
    RawRequest::new("POST", "/v1/session")
        .header("content-type", "application/json")
        .body(ping_json(session_id).replace("0.9.3", version))
}

/// Sends a ping, which must be answered 204, and notes the session's latest version.
fn send_ping(server: &Rollback, truth: &mut BTreeMap<String, String>, id: &str, version: &str) {
    let answer = send(server.addr, &ping(id, version)).unwrap();
    assert_eq!(answer.status, 204, "{id}: {}", answer.text());
    truth.insert(id.to_owned(), version.to_owned());
}

/// The week's breakdown by daemon version, as the readout answers it.
fn by_version(server: &Rollback) -> (u64, BTreeMap<String, u64>) {
    let path = format!("/v1/wau/{}?by=daemon_version", current_iso_week());
    let request = RawRequest::new("GET", &path).header("authorization", &format!("Bearer {TOKEN}"));
    let answer = send(server.addr, &request).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json().unwrap();
    let counts = body["counts"].as_object().unwrap();
    let counts = counts
        .iter()
        .map(|(value, n)| (value.clone(), n.as_u64().unwrap()))
        .collect();
    (body["weekly_active_sessions"].as_u64().unwrap(), counts)
}

/// Waits (bounded) until the readout equals what the sessions last sent.
fn assert_readout_is_the_truth(server: &Rollback, truth: &BTreeMap<String, String>) {
    let mut expected = BTreeMap::new();
    for version in truth.values() {
        *expected.entry(version.clone()).or_insert(0) += 1;
    }
    let expected = (truth.len() as u64, expected);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let read = by_version(server);
        if read == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "readout {read:?}, truth {expected:?}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pings, damage, pings that touch the damage, and the checks; `damage` runs the store's own
/// commands against the live store, one kind of damage per call.
fn heals(store: &str, dir: &std::path::Path, damage: impl Fn(Damage)) {
    let vars = [
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", "0"),
        ("BREAKDOWN_MIN_SESSIONS", "1"),
    ];
    let mut server = Rollback::start(store, dir, &vars);
    let mut truth = BTreeMap::new();
    for n in 0..30 {
        let version = if n % 3 == 0 { "1.0.0" } else { "1.1.0" };
        send_ping(&server, &mut truth, &format!("relay-{n:04}"), version);
    }
    assert_readout_is_the_truth(&server, &truth);

    // One dimension's tallies gone, then a ping that changes that dimension's value.
    damage(Damage::DropVersionTallies);
    send_ping(&server, &mut truth, "relay-0000", "2.0.0");
    assert_readout_is_the_truth(&server, &truth);

    // A stored record made invalid, then its session pings again, and new sessions follow.
    damage(Damage::BreakRecord("relay-0001"));
    send_ping(&server, &mut truth, "relay-0001", "1.1.0");
    for n in 30..230 {
        send_ping(&server, &mut truth, &format!("relay-{n:04}"), "2.0.0");
    }
    assert_readout_is_the_truth(&server, &truth);

    let log = server.log();
    let repairs: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(r#""event":"store_inconsistent""#))
        .collect();
    assert_eq!(repairs.len(), 2, "one event per repair:\n{log}");
    let week = format!(r#""week":"{}""#, current_iso_week());
    assert!(
        repairs[0].contains(r#""found":"tally_below_zero""#),
        "{log}"
    );
    assert!(repairs[1].contains(r#""found":"invalid_record""#), "{log}");
    for repair in &repairs {
        assert!(
            repair.contains(&week) && !repair.contains("relay-"),
            "{repair}"
        );
    }
    assert!(!log.contains(r#""event":"store_failure""#), "{log}");
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(15)).success());
}

enum Damage {
    DropVersionTallies,
    BreakRecord(&'static str),
}

#[test]
fn a_damaged_sqlite_file_is_repaired_while_the_server_runs() {
    let dir = scratch_dir("repair-sqlite");
    let db = dir.join("telemetry.db");
    heals(&format!("sqlite://{}", db.display()), &dir, |damage| {
        // What an operator's `sqlite3` would do, on the live file.
        let file = rusqlite::Connection::open(&db).unwrap();
        file.busy_timeout(Duration::from_secs(5)).unwrap();
        let sql = match damage {
            Damage::DropVersionTallies => {
                "DELETE FROM tallies WHERE dimension = 'daemon_version'".to_owned()
            }
            Damage::BreakRecord(id) => {
                format!("UPDATE sessions SET record = 'not a record' WHERE session_id = '{id}'")
            }
        };
        assert!(file.execute(&sql, []).unwrap() > 0, "{sql}");
    });
}

#[test]
fn a_damaged_redis_store_is_repaired_while_the_server_runs() {
    let dir = scratch_dir("repair-redis");
    let redis_server = RedisServer::start(&dir);
    let week = current_iso_week();
    heals(&redis_server.url(), &dir, |damage| {
        // What an operator's `redis-cli` would do.
        let mut connection = redis_server.connection();
        let changed: i64 = match damage {
            Damage::DropVersionTallies => {
                let fields: Vec<String> = redis::cmd("HKEYS")
                    .arg(format!("tallies:{week}"))
                    .query(&mut connection)
                    .unwrap();
                let versions: Vec<&String> = fields
                    .iter()
                    .filter(|field| field.starts_with("daemon_version:"))
                    .collect();
                redis::cmd("HDEL")
                    .arg(format!("tallies:{week}"))
                    .arg(versions)
                    .query(&mut connection)
                    .unwrap()
            }
            Damage::BreakRecord(id) => {
                let _: i64 = redis::cmd("HSET")
                    .arg(format!("sessions:{week}"))
                    .arg(id)
                    .arg("not a record")
                    .query(&mut connection)
                    .unwrap();
                1
            }
        };
        assert!(changed > 0);
    });
}
