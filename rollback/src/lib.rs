//! The rollback server: the Worker's contract on Axum, with SQLite or Redis, for when
//! Cloudflare is unavailable and the hostname is pointed here.
//!
//! # Layout
//!
//! - [`app`]: the one HTTP handler; every decision is `telemetry-core`'s.
//! - [`kv_transfer`]: `import-kv` and `export-kv`, for a week that spans both targets.
//! - [`writer`]: the bounded queue and the background writer that drains it in batches.
//! - [`store`]: SQLite or Redis, keeping the core's model of a week (one record per week and
//!   session, tallies, expiry), repairing inconsistent data.
//! - [`server`]: accepts connections up to a bound, runs until a shutdown signal, then
//!   drains the queue; [`connection`]: one connection, bounded in time.
//! - [`log`]: wide events to stdout from a thread of their own.
//!
//! The request path: [`server`] accepts → [`connection`] serves HTTP/1.1 under its time
//! limits → [`app`] streams the body under the cap → the core decides → a 204 once the
//! record is queued → the writer stores it in the next batch.

pub mod app;
pub mod connection;
pub mod dashboard;
pub mod kv_transfer;
pub mod log;
pub mod metrics;
pub mod server;
pub mod store;
pub mod writer;

pub use server::{ServeError, ServeOptions, serve};

use telemetry_core::IsoWeek;
use telemetry_core::event::{StoreFailureEvent, StoreOperation, to_line};

/// The name this target's wide events carry.
pub const TARGET: &str = "rollback";

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Writes one wide-event line to stdout, whole, without waiting on stdout (see [`log`]).
pub fn log_line(line: String) {
    log::line(line);
}

/// Logs a store operation that failed after its request was answered.
pub fn log_store_failure(operation: StoreOperation, week: Option<IsoWeek>, error: &str) {
    STORE_FAILING.store(true, std::sync::atomic::Ordering::Relaxed);
    log_line(to_line(&StoreFailureEvent::new(
        TARGET, operation, week, error,
    )));
}

/// Whether the last store operation failed: the next one that succeeds says the store is back.
static STORE_FAILING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Notes a store operation that succeeded: after a failure, one `store_recovered` line.
pub fn note_store_answered(operation: StoreOperation) {
    if STORE_FAILING.swap(false, std::sync::atomic::Ordering::Relaxed) {
        log_line(to_line(&telemetry_core::event::StoreRecoveredEvent::new(
            TARGET, operation,
        )));
    }
}
