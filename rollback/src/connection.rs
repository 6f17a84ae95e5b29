//! One client connection, bounded in time: how long it may wait to start a request, to send a
//! request's head, and to send its body; a watchdog closes it when it overruns. The rollback
//! faces the internet with nothing in front of it but Caddy, so a client that opens a
//! connection and stalls must not hold it.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

/// How long a connection may wait for the first byte of a request, fresh or kept alive.
/// Longer than Caddy's keep-alive to its upstream (30 s in `deploy/Caddyfile`), so that Caddy
/// always closes an idle connection first and never sends a ping on one closing under it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a request's head may take from its first byte to its end. A relay's head is a
/// few hundred bytes sent at once; only a client that trickles it (slowloris) comes close.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request's body (at most 1 KiB) may take once its head has arrived; past it the
/// answer is 408.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// What one connection's read buffer may hold: a request's head (a relay's is a few hundred
/// bytes) and the start of its body. hyper's default of about 400 KB let 300 unfinished heads
/// hold 129 MB; past this a head is answered 431 and the connection closed. Caddy in front
/// has the same 16 KB bound on headers.
pub const MAX_READ_BUFFER: usize = 16 * 1024;

/// Time limits of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeLimits {
    pub idle: Duration,
    pub head: Duration,
    pub body: Duration,
}

impl Default for TimeLimits {
    fn default() -> Self {
        Self {
            idle: DEFAULT_IDLE_TIMEOUT,
            head: DEFAULT_HEAD_TIMEOUT,
            body: DEFAULT_BODY_TIMEOUT,
        }
    }
}

impl TimeLimits {
    /// How often a watchdog looks: often enough that a connection overruns its limit by at
    /// most a quarter of the shortest one (and never by more than a second).
    fn check_every(&self) -> Duration {
        (self.idle.min(self.head).min(self.body) / 4)
            .clamp(Duration::from_millis(20), Duration::from_secs(1))
    }
}

const WAITING_FOR_HEAD: u8 = 0;
const READING_BODY: u8 = 1;
const HANDLING: u8 = 2;

/// Where one connection stands, for its watchdog and for making room at the connection bound.
/// Times are milliseconds since the server started, plus one, so that 0 can mean "not yet".
pub struct Slot {
    started: Instant,
    phase: AtomicU8,
    phase_since: AtomicU64,
    /// While waiting for a head: when its first byte came (0: not yet, the connection is idle).
    head_began: AtomicU64,
    evict: Notify,
}

impl Slot {
    pub fn new(started: Instant) -> Arc<Self> {
        let slot = Arc::new(Self {
            started,
            phase: AtomicU8::new(WAITING_FOR_HEAD),
            phase_since: AtomicU64::new(0),
            head_began: AtomicU64::new(0),
            evict: Notify::new(),
        });
        slot.waiting_for_head();
        slot
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    fn enter(&self, phase: u8) {
        self.phase_since.store(self.now(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// Between requests, and before the first.
    pub fn waiting_for_head(&self) {
        self.head_began.store(0, Ordering::Relaxed);
        self.enter(WAITING_FOR_HEAD);
    }

    /// The handler is reading the body; its own timeout answers 408 (see `app`).
    pub fn reading_body(&self) {
        self.enter(READING_BODY);
    }

    /// The request is complete and being answered: no client time limit applies.
    pub fn handling(&self) {
        self.enter(HANDLING);
    }

    /// Bytes arrived from the client.
    fn received(&self) {
        if self.phase.load(Ordering::Relaxed) == WAITING_FOR_HEAD {
            let _ = self.head_began.compare_exchange(
                0,
                self.now(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Whether the client has overrun the limit of where it stands.
    fn overdue(&self, limits: &TimeLimits) -> bool {
        let now = self.now();
        let elapsed = |since: u64| Duration::from_millis(now.saturating_sub(since));
        match self.phase.load(Ordering::Relaxed) {
            WAITING_FOR_HEAD => match self.head_began.load(Ordering::Relaxed) {
                0 => elapsed(self.phase_since.load(Ordering::Relaxed)) > limits.idle,
                began => elapsed(began) > limits.head,
            },
            // The handler's timeout answers 408 first; this closes a connection whose
            // handler could not.
            READING_BODY => elapsed(self.phase_since.load(Ordering::Relaxed)) > limits.body * 2,
            _ => false,
        }
    }

    /// Since when the client has kept the server waiting (for a head or a body), if it has.
    pub fn stalled_since(&self) -> Option<u64> {
        match self.phase.load(Ordering::Relaxed) {
            WAITING_FOR_HEAD | READING_BODY => Some(self.phase_since.load(Ordering::Relaxed)),
            _ => None,
        }
    }

    /// Closes the connection to make room for a new one.
    pub fn evict(&self) {
        self.evict.notify_one();
    }
}

/// The connection's socket, noting in its slot when bytes arrive.
struct Watched {
    stream: TcpStream,
    slot: Arc<Slot>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.slot.received();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves HTTP/1.1 on one connection until the client closes it, overruns a time limit, is
/// evicted, or (after `stopping` turns true) finishes its request in flight.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    slot: Arc<Slot>,
    limits: TimeLimits,
    mut stopping: watch::Receiver<bool>,
) {
    let io = TokioIo::new(Watched {
        stream,
        slot: Arc::clone(&slot),
    });
    let service_slot = Arc::clone(&slot);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let (app, slot) = (app.clone(), Arc::clone(&service_slot));
        async move {
            slot.handling();
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(Arc::clone(&slot));
            let response = app.oneshot(request).await;
            slot.waiting_for_head();
            Ok::<_, Infallible>(match response {
                Ok(response) => response,
                Err(never) => match never {},
            })
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        // The watchdog below keeps the time limits; hyper's own head timer would need a
        // timer and would count idle time and head time as one.
        .header_read_timeout(None)
        .max_buf_size(MAX_READ_BUFFER)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let mut checks = tokio::time::interval(limits.check_every());
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop_asked = false;
    loop {
        if !stop_asked && *stopping.borrow() {
            stop_asked = true;
            // Closes the connection now if it is idle, after its request if not.
            connection.as_mut().graceful_shutdown();
        }
        tokio::select! {
            _ = connection.as_mut() => return,
            () = slot.evict.notified() => return,
            changed = stopping.changed(), if !stop_asked => {
                if changed.is_err() {
                    stop_asked = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            _ = checks.tick() => {
                if slot.overdue(&limits) {
                    // Dropping the connection closes it; a half-read request is never
                    // decided, so nothing is acknowledged that is not queued.
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_has_its_own_limit() {
        let limits = TimeLimits {
            idle: Duration::from_millis(300),
            head: Duration::from_millis(100),
            body: Duration::from_millis(100),
        };
        let started = Instant::now() - Duration::from_secs(10);
        let slot = Slot::new(started);
        let backdate = |slot: &Slot, field: &AtomicU64, ms: u64| {
            field.store(slot.now().saturating_sub(ms), Ordering::Relaxed);
        };
        // Idle: no byte yet.
        backdate(&slot, &slot.phase_since, 200);
        assert!(!slot.overdue(&limits), "idle for less than the idle limit");
        backdate(&slot, &slot.phase_since, 400);
        assert!(slot.overdue(&limits));
        // A head begun: its own, shorter limit, from its first byte.
        backdate(&slot, &slot.head_began, 50);
        assert!(!slot.overdue(&limits));
        backdate(&slot, &slot.head_began, 150);
        assert!(slot.overdue(&limits));
        assert!(slot.stalled_since().is_some());
        // Handling: no client limit, and nothing to evict.
        slot.handling();
        backdate(&slot, &slot.phase_since, 10_000);
        assert!(!slot.overdue(&limits));
        assert_eq!(slot.stalled_since(), None);
        // Back to waiting: the idle clock starts again, with no head begun.
        slot.waiting_for_head();
        assert!(!slot.overdue(&limits));
        assert_eq!(slot.head_began.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_watchdog_looks_often_enough_for_the_shortest_limit() {
        let limits = TimeLimits {
            idle: Duration::from_secs(60),
            head: Duration::from_millis(400),
            body: Duration::from_secs(10),
        };
        assert_eq!(limits.check_every(), Duration::from_millis(100));
        assert_eq!(TimeLimits::default().check_every(), Duration::from_secs(1));
    }
}
