//! How the store's costs grow with the week: fills a week to 1k, 10k, 100k and 1M sessions in
//! batches like the writer's (20 daemon versions among them), timing the writes and the three
//! readouts, each the median of 21: the count, a breakdown (`?by=daemon_version`, from the
//! tallies) and a series of 13 weeks; on Redis it also counts the commands one readout sends.
//! Then it times repeat pings of random earlier sessions: unchanged ones (which write
//! nothing) and ones with a changed field (which rewrite their record and move the tallies),
//! and last new sessions written into the full week, as a rate.
//! Used by `scripts/bench.sh`: `cargo run --release -p rollback --example readout_growth --
//! STORE_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use telemetry_core::summary::Retention;

use rollback::store::{Store, StoreUrl};
use telemetry_core::readout::series_weeks;
use telemetry_core::{Dimension, IsoWeek, SessionId, SessionWrite};

const SIZES: [usize; 4] = [1_000, 10_000, 100_000, 1_000_000];
/// About what the writer commits at a time under heavy load (its batches fill for 10 ms).
const BATCH: usize = 1_000;
const REPEATS: usize = 100_000;
const RUNS: usize = 21;
const VERSIONS: usize = 20;
/// New sessions written into the full week at the end.
const NEW_AT_FULL: usize = 100_000;

/// Session `n`'s record: one of 20 daemon versions, first seen on a Monday.
fn record(n: usize) -> String {
    format!(
        r#"{{"protocol_version":"1.0.0","daemon_version":"1.{}.0","platform":"linux","node_version":"v20.11.1","primary_framework":"react","first_seen_at":"2001-02-12T00:00:00Z"}}"#,
        n % VERSIONS
    )
}

/// The same session a day later on a daemon none had: a changed field.
fn upgraded(_: usize) -> String {
    record(0).replace("\"1.0.0\",\"platform", "\"9.9.9\",\"platform")
}

#[tokio::main]
async fn main() {
    let url = std::env::args()
        .nth(1)
        .expect("usage: readout_growth STORE_URL");
    let store = Store::open(&StoreUrl::parse(&url).unwrap(), Retention::default())
        .await
        .unwrap();
    let commands = CommandCounter::for_url(&url);
    // A week of its own, far from real data, and the 12 before it (empty) for the series.
    let week = IsoWeek::parse("2001-W07").unwrap();
    let span = series_weeks(IsoWeek::parse("2000-W47").unwrap(), week).unwrap();
    assert_eq!(span.len(), 13);
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
        "| sessions in the week | writing them, per new session | count median (p95) | breakdown median (p95) | series of 13 weeks median (p95) | Redis commands: count / breakdown / series |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for size in SIZES {
        let started = Instant::now();
        let written = size - filled;
        while filled < size {
            let end = (filled + BATCH).min(size);
            write_records(&store, week, &ids, filled..end, record).await;
            filled = end;
        }
        let per_write = started.elapsed() / u32::try_from(written).unwrap();
        let total = size as u64;
        let count = timed(&commands, || async {
            assert_eq!(store.count_week(week).await.unwrap(), total);
        })
        .await;
        let breakdown = timed(&commands, || async {
            let tally = store
                .tally_week(week, Dimension::DaemonVersion)
                .await
                .unwrap();
            assert_eq!(tally.iter().count(), VERSIONS);
            assert_eq!(tally.iter().map(|(_, n)| n).sum::<u64>(), total);
        })
        .await;
        let series = timed(&commands, || async {
            let mut sum = 0;
            for &week in &span {
                sum += store.count_week(week).await.unwrap();
            }
            assert_eq!(sum, total);
        })
        .await;
        println!(
            "| {size} | {:.1} µs | {} | {} | {} | {} / {} / {} |",
            micros(per_write),
            count.times,
            breakdown.times,
            series.times,
            count.commands,
            breakdown.commands,
            series.commands,
        );
    }
    // Repeats of sessions spread over the whole week: unchanged, then upgraded.
    let repeats: Vec<usize> = (0..REPEATS)
        .map(|_| (next_random() % ids.len() as u64) as usize)
        .collect();
    println!();
    for (what, record_of) in [
        ("unchanged (nothing written)", record as fn(usize) -> String),
        ("with a changed field", upgraded),
    ] {
        let started = Instant::now();
        for chunk in repeats.chunks(BATCH) {
            write_picked(&store, week, &ids, chunk, record_of).await;
        }
        let per_repeat = started.elapsed() / u32::try_from(REPEATS).unwrap();
        assert_eq!(store.count_week(week).await.unwrap(), filled as u64);
        println!(
            "{REPEATS} repeat pings of random sessions of that week, {what}: {:.1} µs each.",
            micros(per_repeat)
        );
    }
    // New sessions into the week of a million: the first day of an ISO week, when every
    // active session is new to it (issue 17 asks for 5,000 a second on this machine).
    let more: Vec<String> = (0..NEW_AT_FULL)
        .map(|n| format!("{:016x}-new-{n:07}", next_random()))
        .collect();
    let started = Instant::now();
    for start in (0..NEW_AT_FULL).step_by(BATCH) {
        let end = (start + BATCH).min(NEW_AT_FULL);
        write_records(&store, week, &more, start..end, record).await;
    }
    let elapsed = started.elapsed();
    assert_eq!(
        store.count_week(week).await.unwrap(),
        (filled + NEW_AT_FULL) as u64
    );
    println!(
        "{NEW_AT_FULL} new sessions into that week of {filled}: {:.1} µs each, {:.0} a second.",
        micros(elapsed / u32::try_from(NEW_AT_FULL).unwrap()),
        NEW_AT_FULL as f64 / elapsed.as_secs_f64()
    );
}

/// One readout's median and 95th percentile over [`RUNS`] runs, and its Redis commands.
struct Timed {
    times: String,
    commands: String,
}

async fn timed<F: Future<Output = ()>>(
    commands: &CommandCounter,
    readout: impl Fn() -> F,
) -> Timed {
    let before = commands.total();
    readout().await;
    let sent = commands
        .total()
        .zip(before)
        .map(|(after, before)| after - before);
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        readout().await;
        times.push(started.elapsed());
    }
    times.sort();
    Timed {
        times: format!(
            "{:.3} ms ({:.3})",
            ms(times[RUNS / 2]),
            ms(times[RUNS * 19 / 20])
        ),
        commands: sent.map_or_else(|| "–".into(), |sent| sent.to_string()),
    }
}

/// Counts the commands a Redis server has run (`INFO commandstats`), less the `INFO`s that
/// read them; on SQLite there is nothing to count here.
struct CommandCounter(Option<redis::Client>);

impl CommandCounter {
    fn for_url(url: &str) -> Self {
        Self(
            url.starts_with("redis")
                .then(|| redis::Client::open(url).unwrap()),
        )
    }

    fn total(&self) -> Option<u64> {
        let mut connection = self.0.as_ref()?.get_connection().unwrap();
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut connection)
            .unwrap();
        let (mut calls, mut info) = (0, 0);
        for line in stats.lines() {
            let Some((name, rest)) = line.split_once(":calls=") else {
                continue;
            };
            let n: u64 = rest.split(',').next().unwrap().parse().unwrap();
            calls += n;
            if name == "cmdstat_info" {
                info = n;
            }
        }
        // This counter's own connection (HELLO, CLIENT SETINFO, SELECT of the URL's database)
        // is counted under those names; only the store's commands matter, so they go too.
        let handshake: u64 = stats
            .lines()
            .filter(|line| {
                ["cmdstat_hello:", "cmdstat_client|", "cmdstat_select:"]
                    .iter()
                    .any(|name| line.starts_with(name))
            })
            .filter_map(|line| {
                line.split_once(":calls=")?
                    .1
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        Some(calls - info - handshake)
    }
}

async fn write_records(
    store: &Store,
    week: IsoWeek,
    ids: &[String],
    range: std::ops::Range<usize>,
    record_of: fn(usize) -> String,
) {
    let picked: Vec<usize> = range.collect();
    write_picked(store, week, ids, &picked, record_of).await;
}

async fn write_picked(
    store: &Store,
    week: IsoWeek,
    ids: &[String],
    picked: &[usize],
    record_of: fn(usize) -> String,
) {
    let batch: Arc<[SessionWrite]> = picked
        .iter()
        .map(|&n| SessionWrite {
            week,
            session_id: SessionId::parse(&ids[n]).unwrap(),
            record_json: record_of(n),
        })
        .collect();
    store
        .write_batch(batch, rollback::unix_now() + 3600)
        .await
        .unwrap();
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
