//! Records go at their expiry: the real binary on SQLite with a TTL of a minute and no week
//! summaries (`SUMMARY_RETENTION_WEEKS=0`) takes a week's sessions out of its count and
//! breakdowns when they expire, not before and not an hour later, and deletes their rows
//! from the file. (With summaries, the default, the count stays: the contract suite's
//! `check_readouts_from_summaries` shows that on every target.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use contract_suite::ADMIN_TOKEN;
use std::time::{Duration, Instant};

use contract_suite::{Target, ping_request, send};
use support::{Rollback, scratch_dir};

const TOKEN: &str = "expiry-token-0123456789abcdef0123456789abcdef";

#[test]
fn a_session_leaves_the_count_at_its_expiry_and_its_row_leaves_the_file() {
    let dir = scratch_dir("expiry");
    let db = dir.join("telemetry.db");
    let vars = [
        ("WAU_READ_TOKEN", TOKEN),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ABUSE_LIMIT_PER_MINUTE", "0"),
        ("SESSION_TTL_SECONDS", "60"),
        ("SUMMARY_RETENTION_WEEKS", "0"),
    ];
    let server = Rollback::start(&format!("sqlite://{}", db.display()), &dir, &vars);
    let target = Target {
        addr: server.addr,
        token: TOKEN.into(),
        admin_token: Some(ADMIN_TOKEN.into()),
        abuse_limit: None,
    };
    let sent = Instant::now();
    for id in ["expiring-relay-01", "expiring-relay-02"] {
        assert_eq!(send(server.addr, &ping_request(id)).unwrap().status, 204);
    }
    assert_eq!(target.count_settled(2).unwrap(), 2);
    let deadline = sent + Duration::from_secs(90);
    while target.weekly_count().unwrap() != 0 {
        assert!(
            Instant::now() < deadline,
            "still counted 90 s after a 60 s TTL"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A TTL under a day is kept exact, so nothing goes before its minute is up.
    assert!(
        sent.elapsed() >= Duration::from_secs(59),
        "{:?}",
        sent.elapsed()
    );
    let rows: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM sessions", [], |row| row.get(0))
        .unwrap();
    assert_eq!(
        rows, 0,
        "the expired rows are deleted, not only left uncounted"
    );
    assert!(!server.log().contains(r#""event":"store_failure""#));
}
