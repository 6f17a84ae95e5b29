//! How the readout's time grows with the week: fills a week of a store to 1k, 10k, 100k and
//! 1M sessions and times the count (median of 21). Used by `scripts/bench.sh`:
//! `cargo run --release -p rollback --example readout_growth -- STORE_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use rollback::store::{Store, StoreUrl};
use telemetry_core::{IsoWeek, SessionId, SessionWrite};

const SIZES: [usize; 4] = [1_000, 10_000, 100_000, 1_000_000];
const RECORD: &str = r#"{"protocol_version":"1.0.0","daemon_version":"0.9.3","platform":"linux","node_version":"v20.11.1","primary_framework":"react","first_seen_at":"2026-11-23T00:00:00Z"}"#;

#[tokio::main]
async fn main() {
    let url = std::env::args()
        .nth(1)
        .expect("usage: readout_growth STORE_URL");
    let store = Store::open(&StoreUrl::parse(&url).unwrap()).await.unwrap();
    // A week of its own, far from real data.
    let week = IsoWeek::parse("2001-W07").unwrap();
    let mut filled = 0;
    println!("| sessions in the week | readout median | readout p95 |");
    println!("|---:|---:|---:|");
    for size in SIZES {
        while filled < size {
            let batch: std::sync::Arc<[SessionWrite]> = (filled..(filled + 10_000).min(size))
                .map(|n| SessionWrite {
                    week,
                    session_id: SessionId::parse(&format!("growth-{n:08}")).unwrap(),
                    record_json: RECORD.to_owned(),
                })
                .collect();
            filled += batch.len();
            store.write_batch(batch, 3600).await.unwrap();
        }
        let mut times: Vec<Duration> = Vec::with_capacity(21);
        for _ in 0..21 {
            let started = Instant::now();
            let count = store.count_week(week).await.unwrap();
            times.push(started.elapsed());
            assert_eq!(count, size as u64);
        }
        times.sort();
        println!(
            "| {size} | {:.3} ms | {:.3} ms |",
            ms(times[10]),
            ms(times[19])
        );
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
