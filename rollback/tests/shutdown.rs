//! Nothing acknowledged is lost: pings under load, SIGTERM half-way, a restart on the same
//! store, and every session that was answered 204 is counted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use contract_suite::ADMIN_TOKEN;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contract_suite::{Target, ping_request, send};
use support::{Rollback, scratch_dir};

const TOKEN: &str = "shutdown-token-0123456789abcdef0123456789abcdef";
const CLIENTS: usize = 8;
const MAX_PINGS_PER_CLIENT: usize = 2_000;

fn weekly_count(server: &Rollback) -> u64 {
    let target = Target {
        addr: server.addr,
        token: TOKEN.into(),
        admin_token: Some(ADMIN_TOKEN.into()),
        abuse_limit: None,
    };
    target.weekly_count().unwrap()
}

#[test]
fn every_ping_answered_204_before_sigterm_is_stored() {
    let dir = scratch_dir("sigterm");
    let db = dir.join("telemetry.db");
    let store = format!("sqlite://{}", db.display());
    let vars = [
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", "0"),
    ];
    let mut server = Rollback::start(&store, &dir, &vars);
    let addr = server.addr;
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let refused_after_stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let acknowledged = Arc::clone(&acknowledged);
            let refused_after_stop = Arc::clone(&refused_after_stop);
            std::thread::spawn(move || {
                for n in 0..MAX_PINGS_PER_CLIENT {
                    let id = format!("load-{client}-{n:05}");
                    match send(addr, &ping_request(&id)) {
                        Ok(response) if response.status == 204 => {
                            acknowledged.lock().unwrap().insert(id);
                        }
                        Ok(response) => {
                            panic!("unexpected {}: {}", response.status, response.text())
                        }
                        // The server stopped accepting: this client is done.
                        Err(_) => {
                            refused_after_stop.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    // SIGTERM once the load is well under way.
    while acknowledged.lock().unwrap().len() < 500 {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.terminate();
    let status = server.wait_exit(Duration::from_secs(60));
    for client in clients {
        client.join().unwrap();
    }
    assert!(status.success(), "exit status {status}:\n{}", server.log());
    assert!(
        server.log().contains("every acknowledged record is stored"),
        "{}",
        server.log()
    );
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        refused_after_stop.load(Ordering::SeqCst),
        "the load outlasted the server: raise MAX_PINGS_PER_CLIENT"
    );

    let restarted = Rollback::start(&store, &dir, &vars);
    assert_eq!(
        weekly_count(&restarted),
        acknowledged.len() as u64,
        "sessions answered 204 vs counted after a restart"
    );
    let connection = rusqlite::Connection::open(&db).unwrap();
    let mut statement = connection
        .prepare("SELECT session_id FROM sessions")
        .unwrap();
    let stored: HashSet<String> = statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged sessions lost: {lost:?}",
        lost.len()
    );
}
