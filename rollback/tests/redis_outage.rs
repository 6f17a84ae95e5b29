//! Redis dies under load and comes back: pings answered 204 meanwhile are queued and written
//! once it returns, the readout answers 503 while it is gone, and nothing acknowledged is lost.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use contract_suite::ADMIN_TOKEN;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contract_suite::{current_iso_week, ping_request, readout_request, send};
use support::{RedisServer, Rollback, scratch_dir};

const TOKEN: &str = "outage-token-0123456789abcdef0123456789abcdef";
const CLIENTS: usize = 4;

fn readout_status(server: &Rollback) -> (u16, Option<u64>) {
    let response = send(server.addr, &readout_request(&current_iso_week(), TOKEN)).unwrap();
    let count = response
        .json()
        .and_then(|v| v["weekly_active_sessions"].as_u64());
    (response.status, count)
}

#[test]
fn a_redis_restart_under_load_loses_nothing_acknowledged() {
    let dir = scratch_dir("redis-outage");
    let mut redis_server = RedisServer::start(&dir);
    let server = Rollback::start(
        &redis_server.url(),
        &dir,
        &[
            ("WAU_READ_TOKEN", TOKEN),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("ABUSE_LIMIT_PER_MINUTE", "0"),
        ],
    );
    let addr = server.addr;
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let statuses = Arc::new(Mutex::new(HashMap::<u16, usize>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (acknowledged, statuses, stop) = (
                Arc::clone(&acknowledged),
                Arc::clone(&statuses),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let id = format!("outage-{client}-{n:06}");
                    let status = send(addr, &ping_request(&id)).unwrap().status;
                    *statuses.lock().unwrap().entry(status).or_default() += 1;
                    match status {
                        204 => {
                            acknowledged.lock().unwrap().insert(id);
                        }
                        // A full queue while Redis is away: refused, so not expected stored.
                        503 => std::thread::sleep(Duration::from_millis(10)),
                        other => panic!("unexpected status {other}"),
                    }
                    // Keep the load well inside the queue, so the outage is the test.
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    let wait_for_acks = |at_least: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while acknowledged.lock().unwrap().len() < at_least {
            assert!(Instant::now() < deadline, "load stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for_acks(200);
    let ready = || send(addr, &contract_suite::RawRequest::new("GET", "/readyz")).unwrap();
    let health = || send(addr, &contract_suite::RawRequest::new("GET", "/healthz")).unwrap();
    assert_eq!(ready().status, 200, "ready with Redis up");
    redis_server.kill();
    let acked_at_kill = acknowledged.lock().unwrap().len();
    wait_for_acks(acked_at_kill + 200);
    assert_eq!(
        readout_status(&server).0,
        503,
        "readout while Redis is down"
    );
    // Liveness is not readiness: the process is alive, its store is not.
    assert_eq!(health().status, 200);
    let not_ready = ready();
    assert_eq!(not_ready.status, 503, "{}", not_ready.text());
    assert_eq!(not_ready.header("retry-after"), Some("5"));
    redis_server.restart();
    let acked_at_restart = acknowledged.lock().unwrap().len();
    wait_for_acks(acked_at_restart + 200);
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    // Queued pings reach Redis after its return (the writer backs off up to 5 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (0, None);
    while Instant::now() < deadline {
        last = readout_status(&server);
        if last == (200, Some(acknowledged.len() as u64)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        last,
        (200, Some(acknowledged.len() as u64)),
        "readout vs sessions answered 204 (statuses seen: {:?})",
        statuses.lock().unwrap()
    );
    let stored: HashSet<String> = redis::cmd("HKEYS")
        .arg(format!("sessions:{}", current_iso_week()))
        .query(&mut redis_server.connection())
        .unwrap();
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "{} acknowledged sessions lost", lost.len());
    assert!(
        server.log().contains("\"event\":\"store_failure\""),
        "the outage left no store_failure event"
    );
    assert_eq!(ready().status, 200, "ready again once Redis is back");
    // One line says the store is back (after the failures, the first write or check that
    // succeeded), and it is later than the last failure.
    let log = server.log();
    let recovered = log
        .matches(r#""event":"store_recovered","target":"rollback""#)
        .count();
    assert!(recovered >= 1, "no store_recovered line:\n{log}");
    let last_failure = log.rfind(r#""event":"store_failure""#).unwrap();
    let last_recovery = log.rfind(r#""event":"store_recovered""#).unwrap();
    assert!(
        last_recovery > last_failure,
        "the last line about the store is not its recovery"
    );
}
