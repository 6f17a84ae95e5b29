//! The rollback server: the Worker's contract on Axum, with SQLite or Redis, for when
//! Cloudflare is unavailable and the hostname is pointed here.
//!
//! # Layout
//!
//! - [`app`]: the one HTTP handler; every decision is `telemetry-core`'s.
//! - [`kv_transfer`]: `import-kv` and `export-kv`, for a week that spans both targets.
//! - [`writer`]: the bounded queue and the background writer that drains it in batches.
//! - [`store`]: SQLite or Redis, with KV's semantics (one record per week and session, TTL).
//! - [`serve`] (here): runs the server until a shutdown signal, then drains the queue.
//!
//! The request path: hyper → [`app`] streams the body under the cap → the core decides →
//! a 204 once the record is queued → the writer stores it in the next batch.

pub mod app;
pub mod kv_transfer;
pub mod store;
pub mod writer;

use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use telemetry_core::event::{StoreFailureEvent, to_line};
use telemetry_core::{AbuseLimiter, Config};
use tokio::net::TcpListener;

use crate::app::{AppState, app};
use crate::store::Store;

/// The name this target's wide events carry.
pub const TARGET: &str = "rollback";

/// How often expired records are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Writes one wide-event line to stdout; a line is written whole or not at all.
pub fn log_line(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
}

pub fn log_store_failure(operation: &'static str, week: &str, error: &str) {
    log_line(&to_line(&StoreFailureEvent {
        event: StoreFailureEvent::NAME,
        target: TARGET,
        operation,
        week: week.to_owned(),
        error,
    }));
}

/// Serves on `listener` until `shutdown` completes, then stops accepting, finishes the
/// requests in flight, and writes every queued record before returning.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    store: Store,
    client_address_header: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (queue, writer) = writer::start(store.clone(), config.session_ttl_seconds);
    let purge = tokio::spawn(purge_periodically(store.clone()));
    let state = Arc::new(AppState {
        limiter: Mutex::new(AbuseLimiter::new(config.abuse_limit_per_minute)),
        config,
        client_address_header,
        store,
        queue,
    });
    let service = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await;
    purge.abort();
    writer.drain().await;
    served
}

async fn purge_periodically(store: Store) {
    let mut ticks = tokio::time::interval(PURGE_EVERY);
    loop {
        ticks.tick().await;
        if let Err(error) = store.purge_expired().await {
            log_store_failure("purge", "", &error.0);
        }
    }
}
