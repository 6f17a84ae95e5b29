//! The SQLite store against real files: uniqueness across processes, expiry, deletion, tallies and migrations.

use telemetry_core::StoredRecord;
use telemetry_core::readout::tally;

use super::*;

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

async fn write_all(store: &SqliteStore, writes: &[(&str, &str)], ttl_seconds: u64) {
    let batch: Arc<[SessionWrite]> = writes.iter().map(|(week, id)| write(week, id)).collect();
    store.write_batch(batch, ttl_seconds).await.unwrap();
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

#[tokio::test]
async fn a_repeat_keeps_its_first_day_and_an_unchanged_one_writes_nothing() {
    let path = scratch_file("repeats");
    let store = SqliteStore::open(&path).unwrap();
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
        .write_batch_expiring(Arc::new([first]), 4_000_000_000)
        .await
        .unwrap();
    // The same record a day later: nothing is written, not even the later expiry.
    let same = ping("1.0.0", "2026-11-24T00:00:00Z");
    store
        .write_batch_expiring(Arc::new([same]), 4_000_086_400)
        .await
        .unwrap();
    assert_eq!(
        stored(),
        (record("1.0.0", "2026-11-23T00:00:00Z"), 4_000_000_000)
    );
    // An upgrade is written, with the first ping's day.
    let upgraded = ping("1.1.0", "2026-11-24T00:00:00Z");
    store
        .write_batch_expiring(Arc::new([upgraded]), 4_000_086_400)
        .await
        .unwrap();
    assert_eq!(
        stored(),
        (record("1.1.0", "2026-11-23T00:00:00Z"), 4_000_086_400)
    );
    assert_count_is_exact(&store, &path, "2026-W48").await;
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

/// The readout (from the weeks table while nothing has expired) against a plain count, and
/// each breakdown (from the tallies) against the live records tallied by the core; the
/// tallies table itself must count every row in the file, expired or not, until the purge.
async fn assert_count_is_exact(store: &SqliteStore, path: &Path, week: &str) {
    let connection = Connection::open(path).unwrap();
    let records = |live_only: bool| -> Vec<StoredRecord> {
        connection
            .prepare("SELECT record FROM sessions WHERE week = ?1 AND (expires_at > ?2 OR NOT ?3)")
            .unwrap()
            .query_map(params![week, unix_now(), live_only], |row| {
                row.get::<_, String>(0)
            })
            .unwrap()
            .map(|record| serde_json::from_str(&record.unwrap()).unwrap())
            .collect()
    };
    let (live, stored) = (records(true), records(false));
    let iso_week = IsoWeek::parse(week).unwrap();
    let read = store.count_week(iso_week).await.unwrap();
    assert_eq!(read, live.len() as u64, "readout of {week}");
    for dimension in Dimension::ALL {
        let breakdown = store.tally_week(iso_week, dimension).await.unwrap();
        assert_eq!(
            breakdown,
            tally(&live, dimension),
            "{week} by {dimension:?}"
        );
        let mut table = Tally::default();
        connection
            .prepare("SELECT value, sessions FROM tallies WHERE week = ?1 AND dimension = ?2")
            .unwrap()
            .query_map(params![week, dimension.name()], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })
            .unwrap()
            .for_each(|row| {
                let (value, sessions) = row.unwrap();
                assert!(sessions > 0, "{value} is kept at {sessions}");
                table.add(&value, sessions as u64);
            });
        assert_eq!(
            table,
            tally(&stored, dimension),
            "{week}'s tallies table by {dimension:?}"
        );
    }
}

fn session_ids(path: &Path) -> Vec<String> {
    rows(path).into_iter().map(|(_, id, _)| id).collect()
}

#[tokio::test]
async fn expired_records_are_not_counted_and_the_purge_deletes_them() {
    let path = scratch_file("purge");
    let store = SqliteStore::open(&path).unwrap();
    let week = IsoWeek::parse("2026-W48").unwrap();
    let w48 = "2026-W48";
    write_all(&store, &[(w48, "live-session")], 3600).await;
    write_all(&store, &[(w48, "live-session")], 3600).await;
    assert_eq!(
        store.count_week(week).await.unwrap(),
        1,
        "a repeat is the same session"
    );
    assert_eq!(
        store.purge_expired().await.unwrap(),
        0,
        "nothing has expired"
    );

    write_all(&store, &[(w48, "old-session")], 0).await; // expires now
    assert_eq!(
        store.count_week(week).await.unwrap(),
        1,
        "expired, not yet purged"
    );
    assert_count_is_exact(&store, &path, w48).await;
    assert_eq!(store.purge_expired().await.unwrap(), 1);
    assert_eq!(rows(&path).len(), 1);
    assert_eq!(
        store.purge_expired().await.unwrap(),
        0,
        "the week's earliest expiry moved on"
    );

    // A purged session that pings again is stored again, once.
    write_all(&store, &[(w48, "old-session"), (w48, "old-session")], 3600).await;
    assert_eq!(store.count_week(week).await.unwrap(), 2);
    assert_eq!(rows(&path).len(), 2);
    assert_count_is_exact(&store, &path, w48).await;
}

#[tokio::test]
async fn one_row_per_week_and_session_across_batches_weeks_and_processes() {
    let path = scratch_file("unique");
    let server = SqliteStore::open(&path).unwrap();
    let (w46, w47, w48) = ("2026-W46", "2026-W47", "2026-W48");
    write_all(
        &server,
        &[(w48, "session-a"), (w48, "session-b"), (w48, "session-a")],
        60,
    )
    .await;
    // Another process (as `import-kv` is) writes the same file: the server's map is stale.
    let importer = SqliteStore::open(&path).unwrap();
    write_all(
        &importer,
        &[(w48, "session-b"), (w48, "session-c"), (w47, "session-a")],
        60,
    )
    .await;
    // Three weeks in one batch, more than the maps kept in memory, weeks interleaved.
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
        60,
    )
    .await;
    write_all(&importer, &[(w48, "session-d"), (w46, "session-e")], 60).await;

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
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(w, id)| ((*w).to_owned(), (*id).to_owned()))
        .collect();
    assert_eq!(stored, expected);
    let w48 = IsoWeek::parse(w48).unwrap();
    assert_eq!(server.count_week(w48).await.unwrap(), 5);
    assert_eq!(importer.count_week(w48).await.unwrap(), 5);
    for week in ["2026-W46", "2026-W47", "2026-W48"] {
        assert_count_is_exact(&server, &path, week).await;
    }
}

#[tokio::test]
async fn a_purge_then_another_writer_does_not_leave_a_stale_map() {
    let path = scratch_file("purge-race");
    let server = SqliteStore::open(&path).unwrap();
    let w48 = "2026-W48";
    write_all(&server, &[(w48, "session-a")], 3600).await;
    write_all(&server, &[(w48, "session-y")], 0).await; // expires now
    assert_eq!(server.purge_expired().await.unwrap(), 1);
    // The importer is handed the number the purge freed, as many rows as it took.
    let importer = SqliteStore::open(&path).unwrap();
    write_all(&importer, &[(w48, "session-z")], 3600).await;
    write_all(&server, &[(w48, "session-y")], 3600).await;
    assert_eq!(session_ids(&path), ["session-a", "session-y", "session-z"]);
    assert_count_is_exact(&server, &path, w48).await;
}

#[tokio::test]
async fn a_map_out_of_step_with_the_file_fails_the_batch_instead_of_mixing_sessions() {
    let path = scratch_file("out-of-step");
    let server = SqliteStore::open(&path).unwrap();
    let w48 = "2026-W48";
    write_all(&server, &[(w48, "session-a")], 60).await;
    // Hand edits that bypass the generation: first arrival 0 holds another session, then
    // the next arrival number is taken.
    let hand_edits = [
        format!(
            "UPDATE sessions SET session_id = 'session-q', record = '{}'",
            record_of("session-q")
        ),
        format!(
            "INSERT INTO sessions VALUES ('2026-W48', 2, 'session-r', '{}', 4000000000)",
            record_of("session-r")
        ),
    ];
    for (hand_edit, next_write) in hand_edits.into_iter().zip(["session-a", "session-b"]) {
        Connection::open(&path)
            .unwrap()
            .execute_batch(&hand_edit)
            .unwrap();
        let batch: Arc<[SessionWrite]> = Arc::new([write(w48, next_write)]);
        let refused = server.write_batch(Arc::clone(&batch), 60).await;
        assert!(refused.is_err(), "{next_write} written against a stale map");
        // The retry reads the week again from the file and succeeds.
        server.write_batch(batch, 60).await.unwrap();
    }
    let mut expected = ["session-q", "session-a", "session-r", "session-b"]
        .map(|id| (w48.to_owned(), id.to_owned(), record_of(id)))
        .to_vec();
    expected.sort();
    assert_eq!(
        rows(&path),
        expected,
        "each record in its own session's row"
    );
}

#[tokio::test]
async fn a_failed_batch_leaves_no_arrival_numbers_behind() {
    let path = scratch_file("failed");
    let server = SqliteStore::open(&path).unwrap();
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON sessions
             WHEN NEW.session_id = 'poison-pill' BEGIN SELECT RAISE(ABORT, 'injected'); END;",
        )
        .unwrap();
    let w48 = "2026-W48";
    let batch = Arc::new([write(w48, "session-x"), write(w48, "poison-pill")]);
    assert!(server.write_batch(batch, 60).await.is_err());
    // Another process then writes as many rows as the failed batch had numbered.
    let importer = SqliteStore::open(&path).unwrap();
    write_all(&importer, &[(w48, "session-y"), (w48, "session-z")], 60).await;
    write_all(&server, &[(w48, "session-x")], 60).await;
    assert_eq!(session_ids(&path), ["session-x", "session-y", "session-z"]);
    assert_count_is_exact(&server, &path, w48).await;
}

#[tokio::test]
async fn a_session_is_deleted_from_every_week_and_the_counts_follow() {
    let path = scratch_file("delete");
    let server = SqliteStore::open(&path).unwrap();
    let (w47, w48) = ("2026-W47", "2026-W48");
    write_all(
        &server,
        &[
            (w47, "session-a"),
            (w47, "session-b"),
            (w48, "session-a"),
            (w48, "session-c"),
        ],
        3600,
    )
    .await;
    // Another process (`rollback delete-session`) deletes while the server runs.
    let deleter = SqliteStore::open(&path).unwrap();
    let session_a = SessionId::parse("session-a").unwrap();
    assert_eq!(deleter.delete_session(session_a.clone()).await.unwrap(), 2);
    assert_eq!(session_ids(&path), ["session-b", "session-c"]);
    // The server's map of W48 is stale: its next write must notice, not reuse a's row.
    write_all(&server, &[(w48, "session-a"), (w48, "session-d")], 3600).await;
    assert_eq!(
        session_ids(&path),
        ["session-b", "session-a", "session-c", "session-d"],
        "W47: b; W48: a again, c, d"
    );
    for week in [w47, w48] {
        assert_count_is_exact(&server, &path, week).await;
    }
    assert_eq!(
        server
            .count_week(IsoWeek::parse(w47).unwrap())
            .await
            .unwrap(),
        1
    );
    assert_eq!(deleter.delete_session(session_a.clone()).await.unwrap(), 1);
    assert_eq!(deleter.delete_session(session_a).await.unwrap(), 0);
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
async fn purged_and_deleted_records_leave_no_bytes_in_the_file_or_its_wal() {
    let path = scratch_file("no-remains");
    let store = SqliteStore::open(&path).unwrap();
    let w48 = "2026-W48";
    // Enough rows to fill several pages, so deletes free whole pages as well as cells.
    let kept: Vec<String> = (0..300).map(|n| format!("kept-session-{n:04}")).collect();
    let kept: Vec<(&str, &str)> = kept.iter().map(|id| (w48, id.as_str())).collect();
    write_all(&store, &kept, 3600).await;
    let expiring: Vec<String> = (0..300).map(|n| format!("expiring-{n:04}")).collect();
    let expiring: Vec<(&str, &str)> = expiring.iter().map(|id| (w48, id.as_str())).collect();
    write_all(&store, &expiring, 0).await;
    write_all(&store, &[(w48, "deleted-on-request")], 3600).await;
    assert!(holds(&bytes_on_disk(&path), "expiring-0150"));
    assert!(holds(&bytes_on_disk(&path), "deleted-on-request"));

    assert_eq!(store.purge_expired().await.unwrap(), 300);
    let session = SessionId::parse("deleted-on-request").unwrap();
    assert_eq!(store.delete_session(session).await.unwrap(), 1);

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

#[tokio::test]
async fn a_file_with_times_to_the_second_has_them_cut_to_the_day_once() {
    let path = scratch_file("to-the-day");
    drop(SqliteStore::open(&path).unwrap());
    let record = |seen: &str| record("1.0.0", seen);
    let connection = Connection::open(&path).unwrap();
    connection
        .execute_batch(&format!(
            "PRAGMA user_version = 0;
             INSERT INTO sessions VALUES ('2026-W48', 0, 'session-a', '{}', 1802794691);
             INSERT INTO weeks VALUES ('2026-W48', 1802794691, 1, 1);",
            record("2026-11-24T15:04:05Z")
        ))
        .unwrap();
    drop(connection);

    let store = SqliteStore::open(&path).unwrap();
    let day_record = record("2026-11-24T00:00:00Z");
    let row = || -> (String, i64, i64) {
        Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT record, expires_at, (SELECT earliest_expiry FROM weeks) FROM sessions",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
    };
    assert_eq!(row(), (day_record.clone(), 1802736000, 1802736000));
    assert!(
        !holds(&bytes_on_disk(&path), "15:04:05"),
        "the old time is gone"
    );
    // Once: a later row with an expiry to the second (as a TTL under a day gives, when it
    // does not reach the next day's start) is left alone.
    let later = Arc::new([write("2026-W48", "session-b")]);
    store
        .write_batch_expiring(later, 4_000_000_123)
        .await
        .unwrap();
    drop(store);
    drop(SqliteStore::open(&path).unwrap());
    let exact: i64 = Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT expires_at FROM sessions WHERE session_id = 'session-b'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(exact, 4_000_000_123);
    assert_eq!(row().0, day_record);
}

#[tokio::test]
async fn a_file_keyed_by_session_id_is_renumbered_once_and_keeps_its_rows() {
    let path = scratch_file("migrate");
    Connection::open(&path)
        .unwrap()
        .execute_batch(&format!(
            "CREATE TABLE sessions (
                 week TEXT NOT NULL, session_id TEXT NOT NULL, record TEXT NOT NULL,
                 expires_at INTEGER NOT NULL, PRIMARY KEY (week, session_id)
             ) WITHOUT ROWID;
             CREATE INDEX sessions_expiry ON sessions (expires_at);
             INSERT INTO sessions VALUES
                 ('2026-W47', 'session-z', '{}', 1),
                 ('2026-W48', 'session-b', '{}', 4000000000),
                 ('2026-W48', 'session-a', '{}', 4000000000);",
            record_of("session-z"),
            record_of("session-b"),
            record_of("session-a"),
        ))
        .unwrap();
    let store = SqliteStore::open(&path).unwrap();
    let w48 = IsoWeek::parse("2026-W48").unwrap();
    assert_eq!(store.count_week(w48).await.unwrap(), 2);
    write_all(
        &store,
        &[("2026-W48", "session-a"), ("2026-W48", "session-c")],
        60,
    )
    .await;
    assert_eq!(
        store.count_week(w48).await.unwrap(),
        3,
        "a repeat is not a new row"
    );
    assert_eq!(
        store.purge_expired().await.unwrap(),
        1,
        "W47's row expired long ago"
    );
    drop(store);
    let reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(reopened.count_week(w48).await.unwrap(), 3);
    assert_eq!(rows(&path).len(), 3);
    assert_count_is_exact(&reopened, &path, "2026-W48").await;
}
