//! The SQLite store against real files: one row per week and session across processes,
//! expiry with the time passed in, deletion, repair of damaged data, and the migration ladder.

use std::path::PathBuf;
use telemetry_core::summary::Retention;

use rusqlite::Connection;
use telemetry_core::stored_week::{COUNTED_BY, count};
use telemetry_core::{StoredRecord, TallyMoves};

use super::*;
use crate::store::Store;

/// 2026-11-24T00:00:00Z: the clock these tests pass in.
const NOW: i64 = 1_795_478_400;

/// When a deletion at `now` ends its journal entry: the TTL after it, as a record's.
fn journal_until(now: i64) -> i64 {
    telemetry_core::expires_at(now, 12 * 7 * 86_400)
}

/// No week summaries: a week's count is its records', as these tests check it.
const RECORDS_ONLY: Retention = Retention {
    session_ttl_seconds: 12 * 7 * 86_400,
    summary_weeks: 0,
};

fn scratch_file(name: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("rollback-sqlite-{name}-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

fn write(week: &str, id: &str) -> SessionWrite {
    SessionWrite {
        week: IsoWeek::parse(week).unwrap(),
        session_id: SessionId::parse(id).unwrap(),
        record_json: record_of(id),
    }
}

async fn write_all(store: &SqliteStore, writes: &[(&str, &str)], expires_at: i64) {
    let batch: Arc<[SessionWrite]> = writes.iter().map(|(week, id)| write(week, id)).collect();
    store.write_batch(batch, expires_at).await.unwrap();
}

/// A session's record: its id as the daemon version, so each session's record is its own and
/// a breakdown by version names every session.
fn record_of(id: &str) -> String {
    record(id, "2026-11-23T00:00:00Z")
}

fn record(daemon_version: &str, first_seen_at: &str) -> String {
    format!(
        r#"{{"protocol_version":"1.0.0","daemon_version":"{daemon_version}","platform":"linux","node_version":"v20.11.1","primary_framework":"react","first_seen_at":"{first_seen_at}"}}"#
    )
}

/// Every row of the file as (week, session id, record), sorted, read with plain SQL.
fn rows(path: &Path) -> Vec<(String, String, String)> {
    let connection = Connection::open(path).unwrap();
    let mut rows: Vec<_> = connection
        .prepare("SELECT week, session_id, record FROM sessions")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.sort();
    rows
}

fn session_ids(path: &Path) -> Vec<String> {
    rows(path).into_iter().map(|(_, id, _)| id).collect()
}

/// Each breakdown (and the count) read from the tallies against the week's records in the
/// file, tallied by the typed form of the core's rules.
async fn assert_count_is_exact(store: &SqliteStore, path: &Path, week: &str) {
    let connection = Connection::open(path).unwrap();
    let records: Vec<StoredRecord> = connection
        .prepare("SELECT record FROM sessions WHERE week = ?1")
        .unwrap()
        .query_map([week], |row| row.get::<_, String>(0))
        .unwrap()
        .map(|record| serde_json::from_str(&record.unwrap()).unwrap())
        .collect();
    let iso_week = IsoWeek::parse(week).unwrap();
    for dimension in Dimension::ALL {
        let mut truth = Tally::default();
        for record in &records {
            truth.add(dimension.value_of(record), 1);
        }
        let read = store.tally_week(iso_week, dimension).await.unwrap();
        assert_eq!(read, truth, "{week} by {dimension:?}");
    }
    let counted = store.tally_week(iso_week, COUNTED_BY).await.unwrap();
    assert_eq!(count(&counted), records.len() as u64, "the count of {week}");
}

#[tokio::test]
async fn a_repeat_keeps_its_first_day_and_an_unchanged_one_writes_nothing() {
    let path = scratch_file("repeats");
    let store = SqliteStore::open(&path, Retention::default()).unwrap();
    let stored = || -> (String, i64) {
        Connection::open(&path)
            .unwrap()
            .query_row("SELECT record, expires_at FROM sessions", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap()
    };
    let ping = |daemon_version: &str, day: &str| SessionWrite {
        record_json: record(daemon_version, day),
        ..write("2026-W48", "session-a")
    };
    let first = ping("1.0.0", "2026-11-23T00:00:00Z");
    store
        .write_batch(Arc::new([first]), 4_000_000_000)
        .await
        .unwrap();
    // The same record a day later: nothing is written, not even the later expiry.
    let same = ping("1.0.0", "2026-11-24T00:00:00Z");
    store
        .write_batch(Arc::new([same]), 4_000_086_400)
        .await
        .unwrap();
    assert_eq!(
        stored(),
        (record("1.0.0", "2026-11-23T00:00:00Z"), 4_000_000_000)
    );
    // An upgrade is written, with the first ping's day.
    let upgraded = ping("1.1.0", "2026-11-24T00:00:00Z");
    store
        .write_batch(Arc::new([upgraded]), 4_000_086_400)
        .await
        .unwrap();
    assert_eq!(
        stored(),
        (record("1.1.0", "2026-11-23T00:00:00Z"), 4_000_086_400)
    );
    assert_count_is_exact(&store, &path, "2026-W48").await;
}

#[tokio::test]
async fn records_go_at_their_expiry_with_the_time_passed_in() {
    let path = scratch_file("expiry");
    let store = SqliteStore::open(&path, RECORDS_ONLY).unwrap();
    let (w47, w48) = ("2026-W47", "2026-W48");
    assert_eq!(store.next_expiry().await.unwrap(), None);
    write_all(
        &store,
        &[(w48, "live-session"), (w47, "live-session")],
        NOW + 3600,
    )
    .await;
    write_all(&store, &[(w48, "old-session")], NOW).await;
    assert_eq!(store.next_expiry().await.unwrap(), Some(NOW));
    assert_eq!(store.expire(NOW - 1).await.unwrap(), 0, "nothing is due");
    assert_eq!(store.expire(NOW).await.unwrap(), 1);
    assert_eq!(session_ids(&path), ["live-session", "live-session"]);
    assert_count_is_exact(&store, &path, w48).await;
    assert_eq!(store.next_expiry().await.unwrap(), Some(NOW + 3600));
    // A session that pings again after its record went is stored again, once.
    write_all(
        &store,
        &[(w48, "old-session"), (w48, "old-session")],
        NOW + 7200,
    )
    .await;
    assert_eq!(rows(&path).len(), 3);
    assert_count_is_exact(&store, &path, w48).await;
    assert_eq!(store.expire(NOW + 7200).await.unwrap(), 3, "across weeks");
    for week in [w47, w48] {
        assert_count_is_exact(&store, &path, week).await;
    }
    assert_eq!(store.next_expiry().await.unwrap(), None);
}

#[tokio::test]
async fn one_row_per_week_and_session_across_batches_weeks_and_processes() {
    let path = scratch_file("unique");
    let server = SqliteStore::open(&path, Retention::default()).unwrap();
    let (w46, w47, w48) = ("2026-W46", "2026-W47", "2026-W48");
    let at = NOW + 60;
    write_all(
        &server,
        &[(w48, "session-a"), (w48, "session-b"), (w48, "session-a")],
        at,
    )
    .await;
    // Another process (as `import-kv` is) writes the same file.
    let importer = SqliteStore::open(&path, Retention::default()).unwrap();
    write_all(
        &importer,
        &[(w48, "session-b"), (w48, "session-c"), (w47, "session-a")],
        at,
    )
    .await;
    write_all(
        &server,
        &[
            (w48, "session-x"),
            (w48, "session-c"),
            (w46, "session-a"),
            (w47, "session-a"),
            (w48, "session-d"),
            (w46, "session-a"),
            (w48, "session-a"),
        ],
        at,
    )
    .await;
    write_all(&importer, &[(w48, "session-d"), (w46, "session-e")], at).await;
    let stored: Vec<(String, String)> = rows(&path)
        .into_iter()
        .map(|(week, id, _)| (week, id))
        .collect();
    let expected = [
        (w46, "session-a"),
        (w46, "session-e"),
        (w47, "session-a"),
        (w48, "session-a"),
        (w48, "session-b"),
        (w48, "session-c"),
        (w48, "session-d"),
        (w48, "session-x"),
    ]
    .map(|(w, id)| (w.to_owned(), id.to_owned()));
    assert_eq!(stored, expected);
    for week in [w46, w47, w48] {
        assert_count_is_exact(&server, &path, week).await;
        assert_count_is_exact(&importer, &path, week).await;
    }
}

#[tokio::test]
async fn a_session_is_deleted_from_every_week_and_the_counts_follow() {
    let path = scratch_file("delete");
    let server = SqliteStore::open(&path, RECORDS_ONLY).unwrap();
    let (w47, w48) = ("2026-W47", "2026-W48");
    let writes = [
        (w47, "session-a"),
        (w47, "session-b"),
        (w48, "session-a"),
        (w48, "session-c"),
    ];
    write_all(&server, &writes, NOW + 3600).await;
    // Another process (`rollback delete-session`) deletes while the server runs.
    let deleter = SqliteStore::open(&path, RECORDS_ONLY).unwrap();
    let session_a = SessionId::parse("session-a").unwrap();
    assert_eq!(
        deleter
            .delete_session(session_a.clone(), NOW, journal_until(NOW))
            .await
            .unwrap(),
        2
    );
    assert_eq!(session_ids(&path), ["session-b", "session-c"]);
    write_all(
        &server,
        &[(w48, "session-a"), (w48, "session-d")],
        NOW + 3600,
    )
    .await;
    for week in [w47, w48] {
        assert_count_is_exact(&server, &path, week).await;
    }
    assert_eq!(
        deleter
            .delete_session(session_a.clone(), NOW, journal_until(NOW))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        deleter
            .delete_session(session_a, NOW, journal_until(NOW))
            .await
            .unwrap(),
        0
    );
    assert_count_is_exact(&server, &path, w48).await;
}

/// What is on disk: the file and its WAL, as anyone who can read them would see them.
fn bytes_on_disk(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    bytes.extend(std::fs::read(format!("{}-wal", path.display())).unwrap_or_default());
    bytes
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn expired_and_deleted_records_leave_no_bytes_in_the_file_or_its_wal() {
    let path = scratch_file("no-remains");
    // Records only: these records carry their session id as their version, which a summary
    // would keep as a value (a real version never is an id).
    let store = SqliteStore::open(&path, RECORDS_ONLY).unwrap();
    let w48 = "2026-W48";
    // Enough rows to fill several pages, so deletes free whole pages as well as cells.
    let kept: Vec<String> = (0..300).map(|n| format!("kept-session-{n:04}")).collect();
    let kept: Vec<(&str, &str)> = kept.iter().map(|id| (w48, id.as_str())).collect();
    write_all(&store, &kept, NOW + 3600).await;
    let expiring: Vec<String> = (0..300).map(|n| format!("expiring-{n:04}")).collect();
    let expiring: Vec<(&str, &str)> = expiring.iter().map(|id| (w48, id.as_str())).collect();
    write_all(&store, &expiring, NOW).await;
    write_all(&store, &[(w48, "deleted-on-request")], NOW + 3600).await;
    assert!(holds(&bytes_on_disk(&path), "expiring-0150"));
    assert!(holds(&bytes_on_disk(&path), "deleted-on-request"));

    assert_eq!(store.expire(NOW).await.unwrap(), 300);
    let session = SessionId::parse("deleted-on-request").unwrap();
    assert_eq!(
        store
            .delete_session(session.clone(), NOW, journal_until(NOW))
            .await
            .unwrap(),
        1
    );
    // The deletion journal holds the id until its deletion reached the other target.
    assert!(holds(&bytes_on_disk(&path), "deleted-on-request"));
    assert_eq!(store.journal(NOW).await.unwrap(), ["deleted-on-request"]);
    assert_eq!(store.forget_journaled(vec![session]).await.unwrap(), 1);

    let on_disk = bytes_on_disk(&path);
    assert!(
        holds(&on_disk, "kept-session-0150"),
        "the scan sees live rows"
    );
    for gone in [
        "expiring-0000",
        "expiring-0150",
        "expiring-0299",
        "deleted-on-request",
    ] {
        assert!(!holds(&on_disk, gone), "{gone} is still on disk");
    }
}

/// Damages the file as an operator with `sqlite3` could.
fn damage(path: &Path, sql: &str) {
    Connection::open(path).unwrap().execute_batch(sql).unwrap();
}

#[tokio::test]
async fn damaged_tallies_and_records_are_repaired_and_every_write_lands() {
    let path = scratch_file("repair");
    let store = Store::Sqlite(SqliteStore::open(&path, Retention::default()).unwrap());
    let Store::Sqlite(sqlite) = &store else {
        unreachable!()
    };
    let w48 = "2026-W48";
    let week = IsoWeek::parse(w48).unwrap();
    let batch = |writes: &[SessionWrite]| -> Arc<[SessionWrite]> { writes.to_vec().into() };
    let ids = ["session-a", "session-b", "session-c"];
    let first: Vec<SessionWrite> = ids.iter().map(|id| write(w48, id)).collect();
    store.write_batch(batch(&first), NOW + 3600).await.unwrap();

    // One dimension's tallies deleted, then a ping that changes that dimension's value.
    damage(
        &path,
        "DELETE FROM tallies WHERE dimension = 'daemon_version'",
    );
    let upgrade = SessionWrite {
        record_json: record("9.9.9", "2026-11-24T00:00:00Z"),
        ..write(w48, "session-a")
    };
    store
        .write_batch(batch(&[upgrade]), NOW + 3600)
        .await
        .unwrap();
    assert_count_is_exact(sqlite, &path, w48).await;

    // A stored record that is not a record: dropped by the repair, the ping written.
    damage(
        &path,
        "UPDATE sessions SET record = 'garbage' WHERE session_id = 'session-b'",
    );
    damage(
        &path,
        "UPDATE sessions SET record = '{}' WHERE session_id = 'session-c'",
    );
    store
        .write_batch(batch(&[write(w48, "session-b")]), NOW + 3600)
        .await
        .unwrap();
    assert_eq!(
        session_ids(&path),
        ["session-a", "session-b"],
        "session-c dropped"
    );
    assert_count_is_exact(sqlite, &path, w48).await;

    // A count that is not a count, found by a readout: repaired, then answered.
    damage(
        &path,
        "UPDATE tallies SET sessions = -4 WHERE dimension = 'platform'",
    );
    let counted = store.tally_week(week, COUNTED_BY).await.unwrap();
    assert_eq!(count(&counted), 2);
    damage(
        &path,
        "UPDATE tallies SET sessions = '1.5' WHERE dimension = 'primary_framework'",
    );
    let by_framework = store.tally_week(week, Dimension::PrimaryFramework).await;
    assert_eq!(
        by_framework.unwrap().sessions(),
        2,
        "not an integer: repaired"
    );
    // And by a deletion and an expiry.
    damage(
        &path,
        "UPDATE tallies SET sessions = 0 WHERE dimension = 'node_major'",
    );
    let session_a = SessionId::parse("session-a").unwrap();
    assert_eq!(store.delete_session(session_a, NOW).await.unwrap(), 1);
    assert_count_is_exact(sqlite, &path, w48).await;
    damage(
        &path,
        "UPDATE sessions SET record = 'x' WHERE session_id = 'session-b'",
    );
    assert_eq!(
        store.expire(NOW + 3600).await.unwrap(),
        0,
        "dropped, not expired"
    );
    assert_eq!(rows(&path), []);
    assert_count_is_exact(sqlite, &path, w48).await;
}

/// The file as the first release (schema version 2) wrote it, with rows in two weeks.
fn first_release_file(path: &Path) {
    let connection = Connection::open(path).unwrap();
    connection
        .execute_batch(
            "CREATE TABLE sessions (week TEXT NOT NULL, arrival INTEGER NOT NULL,
                 session_id TEXT NOT NULL, record TEXT NOT NULL, expires_at INTEGER NOT NULL,
                 PRIMARY KEY (week, arrival)) WITHOUT ROWID;
             CREATE TABLE weeks (week TEXT PRIMARY KEY, earliest_expiry INTEGER,
                 sessions INTEGER NOT NULL, generation INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE tallies (week TEXT NOT NULL, dimension TEXT NOT NULL,
                 value TEXT NOT NULL, sessions INTEGER NOT NULL,
                 PRIMARY KEY (week, dimension, value)) WITHOUT ROWID;
             PRAGMA user_version = 2;",
        )
        .unwrap();
    let mut moves: Vec<(&str, TallyMoves)> = vec![];
    for (week, arrival, id) in [
        ("2026-W47", 0, "session-a"),
        ("2026-W48", 0, "session-b"),
        ("2026-W48", 1, "session-a"),
    ] {
        let record = record_of(id);
        connection
            .execute(
                "INSERT INTO sessions VALUES (?1, ?2, ?3, ?4, ?5)",
                params![week, arrival, id, record, NOW + 3600],
            )
            .unwrap();
        let mut moved = TallyMoves::default();
        moved.replace(None, Dimension::values_in(&record));
        match moves.iter_mut().find(|(known, _)| *known == week) {
            Some((_, known)) => known.extend(&moved),
            None => moves.push((week, moved)),
        }
    }
    for (week, moves) in &moves {
        for (dimension, value, sessions) in moves.iter() {
            connection
                .execute(
                    "INSERT INTO tallies VALUES (?1, ?2, ?3, ?4)",
                    params![week, dimension.name(), value, sessions],
                )
                .unwrap();
        }
    }
}

#[tokio::test]
async fn a_file_of_the_first_release_is_migrated_once_and_keeps_its_rows() {
    let path = scratch_file("migrate");
    first_release_file(&path);
    let before = rows(&path);
    let store = SqliteStore::open(&path, Retention::default()).unwrap();
    assert_eq!(rows(&path), before, "every row kept");
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, schema::LATEST);
    for week in ["2026-W47", "2026-W48"] {
        assert_count_is_exact(&store, &path, week).await;
    }
    // Opened again: nothing to do. Written to: one row per (week, session) still.
    drop(store);
    let store = SqliteStore::open(&path, Retention::default()).unwrap();
    write_all(&store, &[("2026-W48", "session-a")], NOW + 7200).await;
    assert_eq!(rows(&path), before);
    assert_eq!(store.next_expiry().await.unwrap(), Some(NOW + 3600));
}

#[test]
fn a_file_of_an_unknown_version_is_refused() {
    for version in [1, schema::LATEST + 1] {
        let path = scratch_file(&format!("unknown-{version}"));
        first_release_file(&path);
        damage(&path, &format!("PRAGMA user_version = {version}"));
        let refused = SqliteStore::open(&path, Retention::default())
            .err()
            .map(|e| e.text());
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("schema version")),
            "{refused:?}"
        );
    }
}

#[tokio::test]
async fn a_new_file_and_its_wal_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let path = scratch_file("private");
    let store = SqliteStore::open(&path, Retention::default()).unwrap();
    write_all(&store, &[("2026-W48", "private-session")], NOW + 3600).await;
    for file in [
        path.clone(),
        PathBuf::from(format!("{}-wal", path.display())),
    ] {
        if let Ok(metadata) = std::fs::metadata(&file) {
            let mode = metadata.permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", file.display());
        }
    }
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// Two years of summaries, and twelve weeks of records.
const SUMMARIES: Retention = Retention {
    session_ttl_seconds: 12 * 7 * 86_400,
    summary_weeks: 104,
};

#[tokio::test]
async fn a_week_keeps_its_numbers_in_its_summary_after_its_records_go_with_the_time_passed_in() {
    use telemetry_core::summary::{summary_made_at, week_end};
    let path = scratch_file("summaries");
    let store = SqliteStore::open(&path, SUMMARIES).unwrap();
    let w48 = IsoWeek::parse("2026-W48").unwrap();
    let versions = |store: &SqliteStore| {
        let store = store.clone();
        async move {
            let tally = store.tally_week(w48, Dimension::DaemonVersion).await;
            tally.unwrap().into_values()
        }
    };
    let writes: Vec<SessionWrite> = (0..6)
        .map(|n| SessionWrite {
            record_json: record(
                if n < 4 { "1.0.0" } else { "1.1.0" },
                "2026-11-24T00:00:00Z",
            ),
            ..write("2026-W48", &format!("relay-{n:04}"))
        })
        .collect();
    let records_expire = week_end(w48) + 3600 * 24;
    store
        .write_batch(writes.into(), records_expire)
        .await
        .unwrap();
    // During the week a deletion takes the session out of the count.
    let relay = |n: u32| SessionId::parse(&format!("relay-{n:04}")).unwrap();
    assert_eq!(
        store
            .delete_session(relay(0), NOW, journal_until(NOW))
            .await
            .unwrap(),
        1
    );
    let before = versions(&store).await;
    assert_eq!(before, [("1.0.0".to_owned(), 3), ("1.1.0".to_owned(), 2)]);
    // Once the summary is made, a deletion deletes the record and changes no count.
    let made = summary_made_at(w48);
    assert_eq!(
        store
            .delete_session(relay(1), made, journal_until(made))
            .await
            .unwrap(),
        1
    );
    assert_eq!(versions(&store).await, before);
    // The records expire: the week reads the same, from its summary rows, which hold no id.
    assert_eq!(store.next_expiry().await.unwrap(), Some(records_expire));
    assert_eq!(store.expire(records_expire).await.unwrap(), 4);
    assert!(rows(&path).is_empty());
    assert_eq!(versions(&store).await, before);
    // The expired sessions' ids are gone; the two deleted ones are in the deletion journal,
    // until the TTL after each deletion.
    let on_disk = bytes_on_disk(&path);
    for n in 2..6 {
        let id = format!("relay-{n:04}");
        assert!(!holds(&on_disk, &id), "{id} outlived its record");
    }
    let journal = store.journal(records_expire).await.unwrap();
    assert_eq!(journal, ["relay-0000", "relay-0001"]);
    let ttl = SUMMARIES.session_ttl_seconds;
    let first_journaled = telemetry_core::expires_at(NOW, ttl);
    assert_eq!(store.next_expiry().await.unwrap(), Some(first_journaled));
    let last_journaled = telemetry_core::expires_at(made, ttl);
    store.expire(last_journaled).await.unwrap();
    assert!(store.journal(last_journaled).await.unwrap().is_empty());
    assert!(
        !holds(&bytes_on_disk(&path), "relay-000"),
        "a journal entry outlived its TTL"
    );
    // The summary goes 104 weeks after the week ends, and the expiry task knows when.
    let summary_goes = SUMMARIES.summary_expires_at(w48).unwrap();
    assert_eq!(store.next_expiry().await.unwrap(), Some(summary_goes));
    store.expire(summary_goes - 1).await.unwrap();
    assert_eq!(versions(&store).await, before);
    store.expire(summary_goes).await.unwrap();
    assert!(versions(&store).await.is_empty());
    assert_eq!(store.next_expiry().await.unwrap(), None);
}
