//! The Redis store against a real `redis-server`: one batch holding repeats and two weeks is
//! written as KV would keep it (one field per session, the latest record wins, each week's
//! hash with its TTL); later writes never extend a week's life; a deletion request reaches
//! every week; tallies follow each change, and damaged tallies and records are repaired.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use rollback::store::{Store, StoreUrl};
use support::{RedisServer, scratch_dir};
use telemetry_core::readout::Tally;
use telemetry_core::summary::Retention;
use telemetry_core::{Dimension, IsoWeek, SessionId, SessionWrite, expires_at};

/// 2026-11-24, during 2026-W48: a deletion then takes its session out of the count of that
/// week and of the later ones the tests write (their summaries are not made yet).
const NOW_FOR_DELETION: i64 = 1_795_478_400;

fn write(week: &str, id: &str, record: &str) -> SessionWrite {
    SessionWrite {
        week: IsoWeek::parse(week).unwrap(),
        session_id: SessionId::parse(id).unwrap(),
        record_json: record.to_owned(),
    }
}

#[tokio::test]
async fn a_batch_with_repeats_and_two_weeks_keeps_one_latest_record_per_session() {
    let redis_server = RedisServer::start(&scratch_dir("redis-store"));
    let store = Store::open(
        &StoreUrl::parse(&redis_server.url()).unwrap(),
        Retention::default(),
    )
    .await
    .unwrap();
    let batch: Arc<[SessionWrite]> = Arc::new([
        write("2026-W48", "session-a", &version("a-first")),
        write("2026-W48", "session-b", &version("b")),
        write("2026-W48", "session-a", &version("a-latest")),
        write("2026-W49", "session-c", &version("c")),
        write("2026-W49", "session-a", &version("a-next-week")),
    ]);
    // An expiry to the second: a 600 s TTL given as such is cut to the next day's start when
    // written in the ten minutes before midnight UTC.
    let expires_at = rollback::unix_now() + 600;
    store.write_batch(batch, expires_at).await.unwrap();

    let mut connection = redis_server.connection();
    let mut hash = |week: &str| -> HashMap<String, String> {
        redis::cmd("HGETALL")
            .arg(format!("sessions:{week}"))
            .query(&mut connection)
            .unwrap()
    };
    let expected = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(id, daemon_version)| ((*id).to_owned(), version(daemon_version)))
            .collect()
    };
    assert_eq!(
        hash("2026-W48"),
        expected(&[("session-a", "a-latest"), ("session-b", "b")])
    );
    assert_eq!(
        hash("2026-W49"),
        expected(&[("session-c", "c"), ("session-a", "a-next-week")])
    );
    for week in ["2026-W48", "2026-W49"] {
        let ttl: i64 = redis::cmd("TTL")
            .arg(format!("sessions:{week}"))
            .query(&mut redis_server.connection())
            .unwrap();
        assert!((590..=600).contains(&ttl), "{week}: TTL {ttl}");
        let count = store
            .count_week(IsoWeek::parse(week).unwrap())
            .await
            .unwrap();
        assert_eq!(count, 2, "{week}");
    }
    // The session that repeated counts once, under its latest record.
    let w48 = IsoWeek::parse("2026-W48").unwrap();
    let by_version = store
        .tally_week(w48, Dimension::DaemonVersion)
        .await
        .unwrap();
    assert_eq!(by_version, tally(&[("a-latest", 1), ("b", 1)]));
}

fn tally(pairs: &[(&str, u64)]) -> Tally {
    let mut tally = Tally::default();
    for (value, sessions) in pairs {
        tally.add(value, *sessions);
    }
    tally
}

fn expire_time(redis_server: &RedisServer, week: &str) -> i64 {
    redis::cmd("EXPIRETIME")
        .arg(format!("sessions:{week}"))
        .query(&mut redis_server.connection())
        .unwrap()
}

#[tokio::test]
async fn a_later_write_never_extends_the_weeks_life_and_a_deletion_reaches_every_week() {
    let redis_server = RedisServer::start(&scratch_dir("redis-retention"));
    let store = Store::open(
        &StoreUrl::parse(&redis_server.url()).unwrap(),
        Retention::default(),
    )
    .await
    .unwrap();
    let w48 = IsoWeek::parse("2026-W48").unwrap();
    let first = Arc::new([write("2026-W48", "session-a", &version("a"))]);
    // To the second, as above: not a TTL that the last minutes before midnight cut.
    store
        .write_batch(first, rollback::unix_now() + 600)
        .await
        .unwrap();
    let set_by_first_write = expire_time(&redis_server, "2026-W48");
    // A later write with a far longer TTL (as after raising SESSION_TTL_SECONDS): without
    // NX it would carry session-a past the 600 s it was stored for.
    let later: Arc<[SessionWrite]> = Arc::new([
        write("2026-W48", "session-b", &version("b")),
        write("2026-W49", "session-a", &version("a49")),
    ]);
    let now = rollback::unix_now();
    store
        .write_batch(later, expires_at(now, 7_257_600))
        .await
        .unwrap();
    assert_eq!(expire_time(&redis_server, "2026-W48"), set_by_first_write);
    assert!((now + 590..=now + 600).contains(&set_by_first_write));
    // A default TTL's expiry is the start of a day.
    let w49_expiry = expire_time(&redis_server, "2026-W49");
    assert_eq!(w49_expiry % 86_400, 0, "{w49_expiry}");
    assert!(w49_expiry <= now + 7_257_600 && w49_expiry > now + 7_257_600 - 86_400 - 5);

    // Export hands each record on with the hash's expiry.
    let records = store.records_of_week(w48, now).await.unwrap();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.expires_at == set_by_first_write));

    let session_a = SessionId::parse("session-a").unwrap();
    assert_eq!(
        store
            .delete_session(session_a.clone(), NOW_FOR_DELETION)
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.count_week(w48).await.unwrap(), 1);
    let w49 = IsoWeek::parse("2026-W49").unwrap();
    assert_eq!(store.count_week(w49).await.unwrap(), 0);
    // The deleted session leaves the tallies too, and an emptied week keeps no tally.
    let by_version = |week| store.tally_week(week, Dimension::DaemonVersion);
    assert_eq!(by_version(w48).await.unwrap(), tally(&[("b", 1)]));
    assert_eq!(by_version(w49).await.unwrap(), tally(&[]));
    let w49_tallies: Vec<String> = redis::cmd("HKEYS")
        .arg("tallies:2026-W49")
        .query(&mut redis_server.connection())
        .unwrap();
    assert_eq!(
        w49_tallies,
        ["generation"],
        "no value left in an emptied week"
    );
    assert_eq!(
        store
            .delete_session(session_a, NOW_FOR_DELETION)
            .await
            .unwrap(),
        0
    );
}

/// A valid record told apart by its daemon version.
fn version(daemon_version: &str) -> String {
    record(daemon_version, "2026-11-23T00:00:00Z")
}

fn record(daemon_version: &str, first_seen_at: &str) -> String {
    format!(
        r#"{{"protocol_version":"1.0.0","daemon_version":"{daemon_version}","platform":"linux","node_version":"v20.11.1","primary_framework":"react","first_seen_at":"{first_seen_at}"}}"#
    )
}

/// How many `HSET`s the server has run, scripts' included.
fn hset_calls(redis_server: &RedisServer) -> u64 {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis_server.connection())
        .unwrap();
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_hset:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

#[tokio::test]
async fn a_repeat_keeps_its_first_day_and_an_unchanged_one_writes_nothing() {
    let redis_server = RedisServer::start(&scratch_dir("redis-repeats"));
    let store = Store::open(
        &StoreUrl::parse(&redis_server.url()).unwrap(),
        Retention::default(),
    )
    .await
    .unwrap();
    let stored = || -> String {
        redis::cmd("HGET")
            .arg("sessions:2026-W48")
            .arg("session-a")
            .query(&mut redis_server.connection())
            .unwrap()
    };
    let ping = |daemon_version: &str, day: &str| {
        write("2026-W48", "session-a", &record(daemon_version, day))
    };
    let first = ping("1.0.0", "2026-11-23T00:00:00Z");
    store.write_batch(Arc::new([first]), soon()).await.unwrap();
    let writes = hset_calls(&redis_server);
    assert!(writes >= 1);
    let same = ping("1.0.0", "2026-11-24T00:00:00Z");
    store.write_batch(Arc::new([same]), soon()).await.unwrap();
    assert_eq!(stored(), record("1.0.0", "2026-11-23T00:00:00Z"));
    assert_eq!(
        hset_calls(&redis_server),
        writes,
        "an unchanged repeat wrote"
    );
    let upgraded = ping("1.1.0", "2026-11-24T00:00:00Z");
    store
        .write_batch(Arc::new([upgraded]), soon())
        .await
        .unwrap();
    assert_eq!(stored(), record("1.1.0", "2026-11-23T00:00:00Z"));
    assert_eq!(hset_calls(&redis_server), writes + 1);
    // The upgrade moved the session from one version to the other.
    let by_version = store
        .tally_week(
            IsoWeek::parse("2026-W48").unwrap(),
            Dimension::DaemonVersion,
        )
        .await
        .unwrap();
    assert_eq!(by_version, tally(&[("1.1.0", 1)]));
}

/// Ten minutes from now, to the second.
fn soon() -> i64 {
    rollback::unix_now() + 600
}

/// Runs a command on the Redis server as an operator with `redis-cli` could.
fn damage(redis_server: &RedisServer, args: &[&str]) {
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    let _: redis::Value = command.query(&mut redis_server.connection()).unwrap();
}

#[tokio::test]
async fn damaged_tallies_and_records_are_repaired_and_every_write_lands() {
    let redis_server = RedisServer::start(&scratch_dir("redis-repair"));
    let store = Store::open(
        &StoreUrl::parse(&redis_server.url()).unwrap(),
        Retention::default(),
    )
    .await
    .unwrap();
    let w48 = IsoWeek::parse("2026-W48").unwrap();
    let sessions = ["session-a", "session-b", "session-c"];
    let first: Arc<[SessionWrite]> = sessions
        .iter()
        .map(|id| write("2026-W48", id, &version("1.0.0")))
        .collect();
    store.write_batch(first, soon()).await.unwrap();
    let by_version = || store.tally_week(w48, Dimension::DaemonVersion);

    // A tally deleted, then a ping that moves the session out of it.
    damage(
        &redis_server,
        &["HDEL", "tallies:2026-W48", "daemon_version:1.0.0"],
    );
    let upgrade = Arc::new([write("2026-W48", "session-a", &version("1.1.0"))]);
    store.write_batch(upgrade, soon()).await.unwrap();
    assert_eq!(
        by_version().await.unwrap(),
        tally(&[("1.0.0", 2), ("1.1.0", 1)])
    );

    // A stored record that is not a record: dropped by the repair, the ping written.
    damage(
        &redis_server,
        &["HSET", "sessions:2026-W48", "session-b", "garbage"],
    );
    damage(
        &redis_server,
        &["HSET", "sessions:2026-W48", "session-c", "{}"],
    );
    let repeat = Arc::new([write("2026-W48", "session-b", &version("1.0.0"))]);
    store.write_batch(repeat, soon()).await.unwrap();
    assert_eq!(
        by_version().await.unwrap(),
        tally(&[("1.0.0", 1), ("1.1.0", 1)])
    );
    assert_eq!(store.count_week(w48).await.unwrap(), 2, "session-c dropped");

    // A count that is not a count, found by a readout: repaired, then answered; the
    // tallies keep their expiry: the summary's, which they become when the records go.
    damage(
        &redis_server,
        &["HSET", "tallies:2026-W48", "platform:linux", "-3"],
    );
    assert_eq!(store.count_week(w48).await.unwrap(), 2);
    let tallies_expire: i64 = redis::cmd("EXPIRETIME")
        .arg("tallies:2026-W48")
        .query(&mut redis_server.connection())
        .unwrap();
    assert_eq!(
        Some(tallies_expire),
        Retention::default().summary_expires_at(w48)
    );
    // And by a deletion.
    damage(
        &redis_server,
        &["HSET", "tallies:2026-W48", "node_major:20", "1.5"],
    );
    let session_a = SessionId::parse("session-a").unwrap();
    assert_eq!(
        store
            .delete_session(session_a, NOW_FOR_DELETION)
            .await
            .unwrap(),
        1
    );
    assert_eq!(by_version().await.unwrap(), tally(&[("1.0.0", 1)]));
    let by_node = store.tally_week(w48, Dimension::NodeMajor).await.unwrap();
    assert_eq!(by_node, tally(&[("20", 1)]));
}

/// The week's `summary:` hash as (field, sessions), sorted.
fn summary_hash(redis_server: &RedisServer, week: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(format!("summary:{week}"))
        .query(&mut redis_server.connection())
        .unwrap();
    fields.sort();
    fields
}

#[tokio::test]
async fn a_week_whose_records_hash_expired_keeps_its_numbers_in_its_summary() {
    use telemetry_core::summary::summary_made_at;
    let redis_server = RedisServer::start(&scratch_dir("redis-summary"));
    let url = StoreUrl::parse(&redis_server.url()).unwrap();
    let store = Store::open(&url, Retention::default()).await.unwrap();
    let w48 = IsoWeek::parse("2026-W48").unwrap();
    let by_version = || store.tally_week(w48, Dimension::DaemonVersion);
    // Three sessions whose records hash expires in two seconds.
    let first = Arc::new([
        write("2026-W48", "session-a", &version("1.0.0")),
        write("2026-W48", "session-b", &version("1.0.0")),
        write("2026-W48", "session-c", &version("1.1.0")),
    ]);
    store
        .write_batch(first, rollback::unix_now() + 2)
        .await
        .unwrap();
    let before = tally(&[("1.0.0", 2), ("1.1.0", 1)]);
    assert_eq!(by_version().await.unwrap(), before);
    std::thread::sleep(std::time::Duration::from_millis(3_500));
    let records: i64 = redis::cmd("EXISTS")
        .arg("sessions:2026-W48")
        .query(&mut redis_server.connection())
        .unwrap();
    assert_eq!(records, 0, "the records hash expired");
    assert_eq!(
        by_version().await.unwrap(),
        before,
        "its tallies still count"
    );
    // The week's next write folds those tallies into its summary first.
    let late = Arc::new([write("2026-W48", "session-d", &version("1.1.0"))]);
    store
        .write_batch(late, rollback::unix_now() + 600)
        .await
        .unwrap();
    let folded = [
        ("daemon_version:1.0.0", "2"),
        ("daemon_version:1.1.0", "1"),
        ("platform:linux", "3"),
    ];
    let summary = summary_hash(&redis_server, "2026-W48");
    for (field, sessions) in folded {
        assert!(
            summary.contains(&(field.to_owned(), sessions.to_owned())),
            "{field} {sessions} not in {summary:?}"
        );
    }
    assert!(summary.iter().all(|(field, _)| !field.contains("session")));
    assert_eq!(
        by_version().await.unwrap(),
        tally(&[("1.0.0", 2), ("1.1.0", 2)])
    );
    let summary_expires: i64 = redis::cmd("EXPIRETIME")
        .arg("summary:2026-W48")
        .query(&mut redis_server.connection())
        .unwrap();
    assert_eq!(
        Some(summary_expires),
        Retention::default().summary_expires_at(w48)
    );
    // After the week's summary is made, a deletion deletes the record and keeps the count.
    let session_d = SessionId::parse("session-d").unwrap();
    let made = summary_made_at(w48);
    assert_eq!(store.delete_session(session_d, made).await.unwrap(), 1);
    assert_eq!(store.count_week(w48).await.unwrap(), 4);
    assert!(
        summary_hash(&redis_server, "2026-W48")
            .contains(&("daemon_version:1.1.0".to_owned(), "2".to_owned()))
    );
    // A server started with no summaries kept drops them, and the week then reads 0.
    let none = Retention {
        summary_weeks: 0,
        ..Retention::default()
    };
    let without = Store::open(&url, none).await.unwrap();
    assert!(without.apply_retention(rollback::unix_now()).await.unwrap() >= 1);
    assert!(summary_hash(&redis_server, "2026-W48").is_empty());
    assert_eq!(without.count_week(w48).await.unwrap(), 0);
}

#[tokio::test]
async fn the_deletion_journal_holds_an_id_until_its_end_and_no_longer() {
    let redis_server = RedisServer::start(&scratch_dir("redis-journal"));
    let url = StoreUrl::parse(&redis_server.url()).unwrap();
    let store = Store::open(&url, Retention::default()).await.unwrap();
    let now = rollback::unix_now();
    let id = SessionId::parse("journaled-relay-01").unwrap();
    // Held nowhere, journaled all the same: KV may hold it.
    let deleted = store.delete_session_journaled_until(id.clone(), now, now + 60);
    assert_eq!(deleted.await.unwrap(), 0);
    assert_eq!(store.journal(now).await.unwrap(), ["journaled-relay-01"]);
    assert_eq!(store.next_expiry().await.unwrap(), Some(now + 60));
    // The expiry task sweeps it at its end: not hidden, gone.
    store.expire(now + 60).await.unwrap();
    let left: i64 = redis::cmd("ZCARD")
        .arg("deletions")
        .query(&mut redis_server.connection())
        .unwrap();
    assert_eq!(left, 0);
    assert_eq!(store.next_expiry().await.unwrap(), None);
    // Taken out once its deletion reached the Worker.
    store.delete_session(id.clone(), now).await.unwrap();
    assert_eq!(store.forget_journaled(vec![id]).await.unwrap(), 1);
    assert!(store.journal(now).await.unwrap().is_empty());
}
