//! The rollback's Prometheus metrics, served on an address of their own (`--metrics-listen`,
//! off by default) so that the public port never shows them: counts and gauges only, never an
//! id, an address or a path as sent.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Upper bounds of the write-latency histogram, in seconds: a batch takes milliseconds, a
/// stalled store seconds.
const WRITE_SECONDS_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

#[derive(Default)]
pub struct Metrics {
    accepted: AtomicU64,
    /// Pings refused, by the outcome code of their answer (`rate_limited`, `invalid_value`…).
    refused: Mutex<BTreeMap<&'static str, u64>>,
    writes: AtomicU64,
    write_failures: AtomicU64,
    write_buckets: [AtomicU64; WRITE_SECONDS_BUCKETS.len()],
    write_micros_sum: AtomicU64,
    queued: AtomicI64,
    connections: AtomicI64,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

impl Metrics {
    /// A ping's answer: accepted (204) or refused with `outcome`.
    pub fn ping_answered(&self, status: u16, outcome: &'static str) {
        if status == 204 {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        } else if let Ok(mut refused) = self.refused.lock() {
            *refused.entry(outcome).or_default() += 1;
        }
    }

    /// A batch written in `took`.
    pub fn written(&self, took: Duration) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.write_micros_sum.fetch_add(micros, Ordering::Relaxed);
        let seconds = took.as_secs_f64();
        for (bound, bucket) in WRITE_SECONDS_BUCKETS.iter().zip(&self.write_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A batch the store did not take (it is retried).
    pub fn write_failed(&self) {
        self.write_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Pings queued (positive) or taken off the queue by the writer (negative).
    pub fn queue_moved(&self, by: i64) {
        self.queued.fetch_add(by, Ordering::Relaxed);
    }

    /// A connection opened (1) or closed (-1).
    pub fn connection_moved(&self, by: i64) {
        self.connections.fetch_add(by, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[String]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
        };
        metric(
            "telemetry_pings_accepted_total",
            "counter",
            "Pings answered 204.",
            &[format!(
                "telemetry_pings_accepted_total {}",
                load(&self.accepted)
            )],
        );
        let refused: Vec<String> = self
            .refused
            .lock()
            .map(|refused| {
                refused
                    .iter()
                    .map(|(reason, n)| {
                        format!("telemetry_pings_refused_total{{reason=\"{reason}\"}} {n}")
                    })
                    .collect()
            })
            .unwrap_or_default();
        metric(
            "telemetry_pings_refused_total",
            "counter",
            "Pings refused, by the error code of their answer.",
            &refused,
        );
        metric(
            "telemetry_store_write_failures_total",
            "counter",
            "Batches the store did not take (each is retried).",
            &[format!(
                "telemetry_store_write_failures_total {}",
                load(&self.write_failures)
            )],
        );
        let mut latency: Vec<String> = WRITE_SECONDS_BUCKETS
            .iter()
            .zip(&self.write_buckets)
            .map(|(bound, bucket)| {
                format!(
                    "telemetry_store_write_seconds_bucket{{le=\"{bound}\"}} {}",
                    load(bucket)
                )
            })
            .collect();
        let writes = load(&self.writes);
        latency.push(format!(
            "telemetry_store_write_seconds_bucket{{le=\"+Inf\"}} {writes}"
        ));
        let sum = load(&self.write_micros_sum) as f64 / 1e6;
        latency.push(format!("telemetry_store_write_seconds_sum {sum}"));
        latency.push(format!("telemetry_store_write_seconds_count {writes}"));
        metric(
            "telemetry_store_write_seconds",
            "histogram",
            "Time to write one batch of pings to the store.",
            &latency,
        );
        metric(
            "telemetry_queue_depth",
            "gauge",
            "Pings answered 204 and not yet written.",
            &[format!(
                "telemetry_queue_depth {}",
                self.queued.load(Ordering::Relaxed).max(0)
            )],
        );
        metric(
            "telemetry_connections_open",
            "gauge",
            "Client connections open now.",
            &[format!(
                "telemetry_connections_open {}",
                self.connections.load(Ordering::Relaxed).max(0)
            )],
        );
        out
    }
}

/// Serves `GET /metrics` on `listener` for as long as the process runs.
pub fn serve(listener: tokio::net::TcpListener) {
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                METRICS.render(),
            )
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::warn!(%error, "the metrics listener stopped");
        }
    });
}
