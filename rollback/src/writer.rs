//! The bounded queue between the handlers and the store, and the background writer that
//! drains it in batches. A ping is answered 204 only once it is in the queue, and the queue
//! is drained before the process exits, so every 204 ends up in the store.

use std::sync::Arc;
use std::time::Duration;

use telemetry_core::event::StoreOperation;
use telemetry_core::{Rejection, SessionWrite, expires_at};
use tokio::sync::{mpsc, oneshot, watch};

use crate::store::Store;

/// Pings held in memory at most: about 30 MiB at some 300 bytes each, and over a second of
/// the heaviest load measured here, so a store that stalls for a moment (SQLite's WAL
/// checkpoints took up to ~450 ms under load) costs no 503s. A store that cannot keep up for
/// longer than the queue lasts gets 503s, not silent loss.
pub const QUEUE_CAPACITY: usize = 100_000;

/// Records written per transaction at most. Batches reach it only when the writer falls
/// behind; then bigger transactions are what let it catch up.
pub const BATCH_SIZE: usize = 5000;

/// How long a batch may wait to fill once its first ping is queued. The pings are already
/// answered, so no client waits for this; under load it turns a transaction per handful of
/// pings into one per few hundred, which is what lets the store keep up. While draining at
/// shutdown the writer does not wait.
const LINGER: Duration = Duration::from_millis(10);

/// What a client should wait before retrying when the queue is full.
const RETRY_AFTER_SECONDS: u64 = 5;

/// Waits between failed writes grow from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(5));

/// The handlers' end of the queue.
#[derive(Clone)]
pub struct Queue {
    sender: mpsc::Sender<SessionWrite>,
}

impl Queue {
    /// Queues a write, or refuses with 503 when the queue is full (or closing).
    pub fn push(&self, write: SessionWrite) -> Result<(), Rejection> {
        self.sender
            .try_send(write)
            .map_err(|_| Rejection::QueueFull {
                retry_after_seconds: RETRY_AFTER_SECONDS,
            })?;
        crate::metrics::METRICS.queue_moved(1);
        Ok(())
    }
}

/// The writer's handle: tell it to finish, then wait for the queue to be empty.
pub struct Writer {
    finish: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Stops taking new pings, writes everything queued, and returns once it is stored.
    pub async fn drain(self) {
        let _ = self.finish.send(());
        let _ = self.task.await;
    }
}

/// The expiry the server's expiry task sleeps until, shared with the writer: a batch that
/// expires sooner (a store that was empty, or a shorter TTL) moves it and wakes the task.
#[derive(Clone)]
pub struct Expiries(Arc<watch::Sender<i64>>);

impl Expiries {
    fn new() -> Self {
        Self(Arc::new(watch::channel(i64::MAX).0))
    }

    /// What wakes the task: a write that expires sooner than it awaits.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.0.subscribe()
    }

    /// The task will sleep until `at` (`None`: until a write), unless a write comes sooner.
    pub fn awaiting(&self, at: Option<i64>) {
        let at = at.unwrap_or(i64::MAX);
        self.0.send_if_modified(|awaited| {
            *awaited = at;
            false
        });
    }

    /// A batch was written that expires at `at`: wakes the task if that is sooner.
    fn written(&self, at: i64) {
        self.0.send_if_modified(|awaited| {
            let sooner = at < *awaited;
            if sooner {
                *awaited = at;
            }
            sooner
        });
    }
}

/// Starts the background writer for `store`, keeping records `ttl_seconds`.
pub fn start(store: Store, ttl_seconds: u64) -> (Queue, Writer, Expiries) {
    start_with_capacity(store, ttl_seconds, QUEUE_CAPACITY)
}

/// [`start`] with a queue of `capacity` pings (tests fill a small one).
pub fn start_with_capacity(
    store: Store,
    ttl_seconds: u64,
    capacity: usize,
) -> (Queue, Writer, Expiries) {
    let (sender, receiver) = mpsc::channel(capacity);
    let (finish, finishing) = oneshot::channel();
    let expiries = Expiries::new();
    let writing = Writing {
        store,
        ttl_seconds,
        expiries: expiries.clone(),
    };
    let task = tokio::spawn(write_until_drained(receiver, finishing, writing));
    (Queue { sender }, Writer { finish, task }, expiries)
}

/// What the writer writes with.
struct Writing {
    store: Store,
    ttl_seconds: u64,
    expiries: Expiries,
}

async fn write_until_drained(
    mut receiver: mpsc::Receiver<SessionWrite>,
    mut finishing: oneshot::Receiver<()>,
    writing: Writing,
) {
    let mut batch = Vec::with_capacity(BATCH_SIZE);
    loop {
        let received = tokio::select! {
            received = receiver.recv_many(&mut batch, BATCH_SIZE) => received,
            _ = &mut finishing, if !receiver.is_closed() => {
                // No new pings from here on; what is queued is still received below.
                receiver.close();
                continue;
            }
        };
        if received == 0 {
            return; // closed and empty: everything acknowledged is stored
        }
        if !receiver.is_closed() && batch.len() < BATCH_SIZE {
            // Sleep rather than wait on the queue: a waiting writer would be woken per ping.
            tokio::select! {
                () = tokio::time::sleep(LINGER) => {}
                _ = &mut finishing, if !receiver.is_closed() => receiver.close(),
            }
            while batch.len() < BATCH_SIZE {
                let Ok(write) = receiver.try_recv() else {
                    break;
                };
                batch.push(write);
            }
        }
        crate::metrics::METRICS.queue_moved(-i64::try_from(batch.len()).unwrap_or(0));
        write_with_retry(&writing, batch.drain(..).collect()).await;
    }
}

/// Writes one batch, retrying with backoff for as long as the store is unavailable: the
/// batch was acknowledged, so giving up would lose it. Meanwhile the queue fills and new pings
/// get 503. Inconsistent data is repaired by the store before the batch is applied again,
/// never retried as it is. The batch's records expire as the core says records written now
/// do, the clock read once, here: no store reads it.
async fn write_with_retry(writing: &Writing, batch: Arc<[SessionWrite]>) {
    let expires_at = expires_at(crate::unix_now(), writing.ttl_seconds);
    let mut wait = BACKOFF.0;
    loop {
        let started = std::time::Instant::now();
        match writing
            .store
            .write_batch(Arc::clone(&batch), expires_at)
            .await
        {
            Ok(()) => {
                crate::metrics::METRICS.written(started.elapsed());
                writing.expiries.written(expires_at);
                crate::note_store_answered(StoreOperation::Write);
                return;
            }
            Err(error) => {
                crate::metrics::METRICS.write_failed();
                let week = batch.first().map(|w| w.week);
                crate::log_store_failure(StoreOperation::Write, week, &error.text());
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(BACKOFF.1);
            }
        }
    }
}
