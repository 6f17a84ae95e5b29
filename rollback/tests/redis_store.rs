//! The Redis store against a real `redis-server`: one batch holding repeats and two weeks is
//! written as KV would keep it (one field per session, the latest record wins, each week's
//! hash with its TTL).

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
use telemetry_core::{IsoWeek, SessionId, SessionWrite};

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
    let store = Store::open(&StoreUrl::parse(&redis_server.url()).unwrap())
        .await
        .unwrap();
    let batch: Arc<[SessionWrite]> = Arc::new([
        write("2026-W48", "session-a", "a-first"),
        write("2026-W48", "session-b", "b"),
        write("2026-W48", "session-a", "a-latest"),
        write("2026-W49", "session-c", "c"),
        write("2026-W49", "session-a", "a-next-week"),
    ]);
    store.write_batch(batch, 600).await.unwrap();

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
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
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
}
