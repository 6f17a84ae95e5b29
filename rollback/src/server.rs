//! Start-up and shutdown: accepts connections up to a bound, runs the background writer and
//! the expiry task, and at shutdown stops accepting, gives open connections a bounded time to
//! finish, then always writes every queued record.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use telemetry_core::event::StoreOperation;
use telemetry_core::{AbuseLimiter, Config};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::app::{AppState, app};
use crate::connection::{self, Slot, TimeLimits};
use crate::store::Store;
use crate::writer::Expiries;
use crate::{log_store_failure, writer};

/// How long the expiry task sleeps at most before it looks for the next expiry again: other
/// processes (`import-kv`) write to the same file without telling it.
const EXPIRY_RECHECK: Duration = Duration::from_secs(60);

/// Waits after a failed expiry grow from the first to the last.
const EXPIRY_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(30));

/// Connections served at once by default. Each holds a file descriptor; the systemd unit's
/// `LimitNOFILE` leaves room above it for the store and the listener.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1000;

/// After a shutdown signal, how long open connections get to finish their requests before
/// they are closed (a stalled client must not hold up writing what is queued).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// After a failed `accept` (out of file descriptors, say), how long to wait before the next,
/// rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How the server treats connections and its queue, from the command line.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The header a reverse proxy puts the client's address in, lower-case.
    pub client_address_header: Option<String>,
    pub time_limits: TimeLimits,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    /// How long writing the queue may take at shutdown before the server gives up.
    pub drain_timeout: Duration,
}

/// Why serving ended other than cleanly.
#[derive(Debug)]
pub enum ServeError {
    /// Queued records were still unwritten when the drain timeout ran out: they are lost.
    DrainTimedOut,
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DrainTimedOut => {
                f.write_str("queued records were not all written within the drain timeout")
            }
        }
    }
}

/// The open connections, so that at the bound the one that has kept the server waiting
/// longest can be closed to make room: clients that stall cannot lock others out.
#[derive(Default)]
struct OpenConnections {
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    next_id: AtomicU64,
}

impl OpenConnections {
    fn open(&self, slot: Arc<Slot>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut slots) = self.slots.lock() {
            slots.insert(id, slot);
        }
        id
    }

    fn close(&self, id: u64) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.remove(&id);
        }
    }

    /// Evicts the connection stalled longest, if any is stalled at all.
    fn evict_longest_stalled(&self) {
        let Ok(slots) = self.slots.lock() else { return };
        let longest = slots
            .values()
            .filter_map(|slot| Some((slot.stalled_since()?, slot)))
            .min_by_key(|(since, _)| *since);
        if let Some((_, slot)) = longest {
            slot.evict();
        }
    }
}

/// Serves on `listener` until `shutdown` completes; then stops accepting, lets open
/// connections finish for at most the grace period, closes the rest, and writes every
/// queued record (within the drain timeout) before returning.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    store: Store,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (queue, writer, expiries) = writer::start(store.clone(), config.session_ttl_seconds);
    let expiry = tokio::spawn(expire_at_each_expiry(store.clone(), expiries));
    let report = tokio::spawn(report_dropped_log_lines());
    let state = Arc::new(AppState {
        limiter: Mutex::new(AbuseLimiter::new(config.abuse_limit_per_minute)),
        config,
        client_address_header: options.client_address_header.clone(),
        body_timeout: options.time_limits.body,
        store,
        queue,
    });
    let router = app(state);
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let open = Arc::new(OpenConnections::default());
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // At the bound: close the most stalled connection, and wait for a free slot
                // (more connections wait in the listen backlog meanwhile).
                open.evict_longest_stalled();
                tokio::select! {
                    () = &mut shutdown => break,
                    permit = Arc::clone(&permits).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                }
            }
        };
        let slot = Slot::new(started);
        let id = open.open(Arc::clone(&slot));
        let (router, open, stopping) = (router.clone(), Arc::clone(&open), stopping.clone());
        let limits = options.time_limits;
        crate::metrics::METRICS.connection_moved(1);
        connections.spawn(async move {
            connection::serve(stream, peer, router, slot, limits, stopping).await;
            open.close(id);
            crate::metrics::METRICS.connection_moved(-1);
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let finished = tokio::time::timeout(options.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            still_open = connections.len(),
            "closing connections that did not finish within the shutdown grace"
        );
        connections.shutdown().await;
    }
    expiry.abort();
    report.abort();
    match tokio::time::timeout(options.drain_timeout, writer.drain()).await {
        Ok(()) => Ok(()),
        Err(_) => Err(ServeError::DrainTimedOut),
    }
}

/// How often lines the log writer had to drop are reported.
const REPORT_DROPPED_EVERY: Duration = Duration::from_secs(60);

async fn report_dropped_log_lines() {
    let mut ticks = tokio::time::interval(REPORT_DROPPED_EVERY);
    loop {
        ticks.tick().await;
        crate::log::report_dropped();
    }
}

/// Deletes records at their expiry: sleeps until the store's next expiry, or until the
/// writer writes an earlier one, or [`EXPIRY_RECHECK`] at most (another process, such as
/// `import-kv`, may have written one), then expires what is due. A readout reads tallies
/// only, so this is what takes an expired record out of the counts.
async fn expire_at_each_expiry(store: Store, expiries: Expiries) {
    let mut wait = EXPIRY_BACKOFF.0;
    loop {
        // Any write wakes the task while it reads the store, so that an expiry written
        // meanwhile is not missed; then only a sooner one does.
        expiries.awaiting(None);
        let mut sooner = expiries.subscribe();
        let next = match store.next_expiry().await {
            Ok(next) => next,
            Err(error) => {
                log_store_failure(StoreOperation::Expire, None, &error.text());
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(EXPIRY_BACKOFF.1);
                continue;
            }
        };
        let now = crate::unix_now();
        let due_in = match next {
            Some(next) => Duration::from_secs(u64::try_from(next - now).unwrap_or(0)),
            None => EXPIRY_RECHECK,
        };
        expiries.awaiting(next);
        tokio::select! {
            () = tokio::time::sleep(due_in.min(EXPIRY_RECHECK)) => {}
            _ = sooner.changed() => continue,
        }
        match store.expire(crate::unix_now()).await {
            Ok(_) => wait = EXPIRY_BACKOFF.0,
            Err(error) => {
                log_store_failure(StoreOperation::Expire, None, &error.text());
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(EXPIRY_BACKOFF.1);
            }
        }
    }
}
