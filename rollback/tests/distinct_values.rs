//! A flood of distinct values on the real stores (a SQLite file, a real `redis-server`):
//! 100,000 sessions each with its own made-up daemon version leave a week's tallies at the
//! core's bound (1,000 values and `other`), every session counted, and a breakdown as small
//! as that; the flood's records hold `other` and leave exactly the row they are in.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;
use std::time::Instant;

use rollback::store::{Store, StoreUrl};
use support::{RedisServer, scratch_dir};
use telemetry_core::limits::MAX_TALLIED_VALUES;
use telemetry_core::stored_week::OTHER_VALUE;
use telemetry_core::summary::Retention;
use telemetry_core::{Dimension, IsoWeek, SessionId, SessionWrite};

/// 2026-11-24, during 2026-W48: a deletion then takes its session out of the count of that
/// week and of the later ones the tests write (their summaries are not made yet).
const NOW_FOR_DELETION: i64 = 1_795_478_400;

const FLOOD: u64 = 100_000;
/// As the writer batches them when it falls behind.
const BATCH: usize = 5_000;

fn write(week: IsoWeek, n: u64) -> SessionWrite {
    SessionWrite {
        week,
        session_id: SessionId::parse(&format!("flooding-relay-{n:06}")).unwrap(),
        record_json: format!(
            r#"{{"protocol_version":"1.0.0","daemon_version":"1.0.0-flood.{n}","platform":"linux","node_version":"v20.11.1","primary_framework":"react","first_seen_at":"2026-11-23T00:00:00Z"}}"#
        ),
    }
}

async fn a_flood_stays_within_the_bound(store: &Store) {
    let week = IsoWeek::parse("2026-W48").unwrap();
    let expires_at = rollback::unix_now() + 3_600;
    let writes: Vec<SessionWrite> = (0..FLOOD).map(|n| write(week, n)).collect();
    for batch in writes.chunks(BATCH) {
        let batch: Arc<[SessionWrite]> = batch.to_vec().into();
        store.write_batch(batch, expires_at).await.unwrap();
    }
    let read = Instant::now();
    let versions = store
        .tally_week(week, Dimension::DaemonVersion)
        .await
        .unwrap();
    let took = read.elapsed();
    let rows: Vec<(&str, u64)> = versions.iter().collect();
    assert_eq!(
        rows.len() as u64,
        MAX_TALLIED_VALUES + 1,
        "1,000 values and other"
    );
    assert_eq!(versions.sessions(), FLOOD, "every session counted");
    let other = rows
        .iter()
        .find(|(value, _)| *value == OTHER_VALUE)
        .unwrap()
        .1;
    assert_eq!(other, FLOOD - MAX_TALLIED_VALUES);
    assert_eq!(store.count_week(week).await.unwrap(), FLOOD);
    // Not a timed assertion (a shared machine): the figure for the note.
    eprintln!("a breakdown of {} values read in {took:?}", rows.len());

    // A session counted as other leaves that row, and only it.
    let last = SessionId::parse(&format!("flooding-relay-{:06}", FLOOD - 1)).unwrap();
    assert_eq!(
        store.delete_session(last, NOW_FOR_DELETION).await.unwrap(),
        1
    );
    let after = store
        .tally_week(week, Dimension::DaemonVersion)
        .await
        .unwrap();
    let other_after = after
        .iter()
        .find(|(value, _)| *value == OTHER_VALUE)
        .unwrap()
        .1;
    assert_eq!(other_after, other - 1);
    assert_eq!(after.sessions(), FLOOD - 1);
    let records = store.records_of_week(week, 0).await.unwrap();
    let as_other = records
        .iter()
        .filter(|record| record.record_json.contains(r#""daemon_version":"other""#))
        .count() as u64;
    assert_eq!(
        as_other,
        other - 1,
        "each record holds what it is counted under"
    );
}

#[tokio::test]
async fn sqlite_keeps_a_flood_of_distinct_values_to_the_bound() {
    let dir = scratch_dir("distinct-values-sqlite");
    let url = format!("sqlite://{}", dir.join("telemetry.db").display());
    let store = Store::open(&StoreUrl::parse(&url).unwrap(), Retention::default())
        .await
        .unwrap();
    a_flood_stays_within_the_bound(&store).await;
}

#[tokio::test]
async fn redis_keeps_a_flood_of_distinct_values_to_the_bound() {
    let redis_server = RedisServer::start(&scratch_dir("distinct-values-redis"));
    let store = Store::open(
        &StoreUrl::parse(&redis_server.url()).unwrap(),
        Retention::default(),
    )
    .await
    .unwrap();
    a_flood_stays_within_the_bound(&store).await;
}
