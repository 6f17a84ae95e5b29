//! How the store's costs grow with the week: fills a week to 1k, 10k, 100k and 1M sessions in
//! batches like the writer's, timing the writes, the count (median of 21) and a breakdown
//! (median of 5), then times
//! repeat pings of random earlier sessions: unchanged ones (which write nothing) and ones
//! with a changed field (which rewrite their record). Used by `scripts/bench.sh`:
//! `cargo run --release -p rollback --example readout_growth -- STORE_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rollback::store::{Store, StoreUrl};
use telemetry_core::{Dimension, IsoWeek, SessionId, SessionWrite};

const SIZES: [usize; 4] = [1_000, 10_000, 100_000, 1_000_000];
/// About what the writer commits at a time under heavy load (its batches fill for 10 ms).
const BATCH: usize = 1_000;
const REPEATS: usize = 100_000;
const RECORD: &str = r#"{"protocol_version":"1.0.0","daemon_version":"0.9.3","platform":"linux","node_version":"v20.11.1","primary_framework":"react","first_seen_at":"2026-11-23T00:00:00Z"}"#;
/// The same session a day later on a new daemon: a changed field.
const UPGRADED: &str = r#"{"protocol_version":"1.0.0","daemon_version":"1.0.0","platform":"linux","node_version":"v20.11.1","primary_framework":"react","first_seen_at":"2026-11-24T00:00:00Z"}"#;

#[tokio::main]
async fn main() {
    let url = std::env::args()
        .nth(1)
        .expect("usage: readout_growth STORE_URL");
    let store = Store::open(&StoreUrl::parse(&url).unwrap()).await.unwrap();
    // A week of its own, far from real data.
    let week = IsoWeek::parse("2001-W07").unwrap();
    // Session ids in random order, as relays make them (a fixed seed: the same every run).
    let mut random = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next_random = move || {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random
    };
    let ids: Vec<String> = (0..SIZES[SIZES.len() - 1])
        .map(|n| format!("{:016x}-{n:07}", next_random()))
        .collect();
    let mut filled = 0;
    println!(
        "| sessions in the week | writing them, per new session | readout median | readout p95 | breakdown (`?by=daemon_version`) median |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for size in SIZES {
        let started = Instant::now();
        let written = size - filled;
        while filled < size {
            let end = (filled + BATCH).min(size);
            write(&store, week, &ids[filled..end]).await;
            filled = end;
        }
        let per_write = started.elapsed() / u32::try_from(written).unwrap();
        let mut times: Vec<Duration> = Vec::with_capacity(21);
        for _ in 0..21 {
            let started = Instant::now();
            let count = store.count_week(week).await.unwrap();
            times.push(started.elapsed());
            assert_eq!(count, size as u64);
        }
        times.sort();
        // A breakdown reads the week's records (no tallies yet: issue 9), so fewer runs.
        let mut breakdowns: Vec<Duration> = Vec::with_capacity(5);
        for _ in 0..5 {
            let started = Instant::now();
            let tally = store
                .tally_week(week, Dimension::DaemonVersion)
                .await
                .unwrap();
            breakdowns.push(started.elapsed());
            assert_eq!(tally.iter().map(|(_, n)| n).sum::<u64>(), size as u64);
        }
        breakdowns.sort();
        println!(
            "| {size} | {:.1} µs | {:.3} ms | {:.3} ms | {:.1} ms |",
            micros(per_write),
            ms(times[10]),
            ms(times[19]),
            ms(breakdowns[2])
        );
    }
    // Repeats of sessions spread over the whole week: unchanged, then upgraded.
    let repeats: Vec<String> = (0..REPEATS)
        .map(|_| ids[(next_random() % ids.len() as u64) as usize].clone())
        .collect();
    println!();
    for (what, record) in [
        ("unchanged (nothing written)", RECORD),
        ("with a changed field", UPGRADED),
    ] {
        let started = Instant::now();
        for chunk in repeats.chunks(BATCH) {
            write_records(&store, week, chunk, record).await;
        }
        let per_repeat = started.elapsed() / u32::try_from(REPEATS).unwrap();
        assert_eq!(store.count_week(week).await.unwrap(), filled as u64);
        println!(
            "{REPEATS} repeat pings of random sessions of that week, {what}: {:.1} µs each.",
            micros(per_repeat)
        );
    }
}

async fn write(store: &Store, week: IsoWeek, ids: &[String]) {
    write_records(store, week, ids, RECORD).await;
}

async fn write_records(store: &Store, week: IsoWeek, ids: &[String], record: &str) {
    let batch: Arc<[SessionWrite]> = ids
        .iter()
        .map(|id| SessionWrite {
            week,
            session_id: SessionId::parse(id).unwrap(),
            record_json: record.to_owned(),
        })
        .collect();
    store.write_batch(batch, 3600).await.unwrap();
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
