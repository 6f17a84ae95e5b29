//! Wide-event lines go to stdout from a thread of their own, so that a slow reader of stdout
//! (journald under pressure, a full pipe) never holds up a request: past a bound, lines are
//! dropped and counted instead of waited for.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, Instant};

/// Lines waiting for stdout at most: a few MiB, seconds of the heaviest load measured here.
pub const QUEUED_LINES: usize = 20_000;

enum Message {
    Line(String),
    /// Write out everything before this, then answer.
    Flush(SyncSender<()>),
}

/// A writer thread and the bounded queue in front of it.
pub struct LogWriter {
    sender: SyncSender<Message>,
    dropped: AtomicU64,
}

impl LogWriter {
    /// Starts the thread writing to `out`, with room for `capacity` lines.
    pub fn start(out: impl Write + Send + 'static, capacity: usize) -> Self {
        let (sender, receiver) = sync_channel(capacity);
        // Should the thread not start, its receiver is gone with it: every line is then
        // dropped and counted, and the server still runs.
        let _ = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_lines(receiver, out));
        Self {
            sender,
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues a line without waiting; when the queue is full the line is dropped and counted.
    pub fn line(&self, line: String) {
        if self.sender.try_send(Message::Line(line)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// Waits, at most `within`, until every line queued before this call is written (a full
    /// queue in front of a stalled stdout included: the wait stays bounded).
    pub fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let (done, finished) = sync_channel(1);
        let mut flush = Message::Flush(done);
        loop {
            match self.sender.try_send(flush) {
                Ok(()) => break,
                Err(TrySendError::Full(again)) if Instant::now() < deadline => {
                    flush = again;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        finished
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// After writing a batch, how long the writer lets the next one gather before it looks.
/// Waking the writer for every line (a futex wake and a context switch per request) cost the
/// server 12–15% of its requests per second on two cores (measured against the direct
/// write); a writer that sleeps while lines keep coming is woken by none of them. Lines wait
/// at most this long.
const LINGER: Duration = Duration::from_millis(2);

fn write_lines(receiver: Receiver<Message>, out: impl Write) {
    let mut out = std::io::BufWriter::new(out);
    loop {
        // Idle: block until a line comes (the one wake-up of a busy spell).
        let Ok(first) = receiver.recv() else { break };
        let mut message = Some(first);
        // Busy: write what has gathered, then let more gather without being woken.
        while let Some(current) = message.take() {
            write_message(&mut out, current);
            loop {
                match receiver.try_recv() {
                    Ok(next) => write_message(&mut out, next),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        let _ = out.flush();
                        return;
                    }
                }
            }
            let _ = out.flush();
            std::thread::sleep(LINGER);
            message = receiver.try_recv().ok();
        }
    }
    let _ = out.flush();
}

fn write_message(out: &mut impl Write, message: Message) {
    match message {
        Message::Line(line) => {
            let _ = writeln!(out, "{line}");
        }
        Message::Flush(done) => {
            let _ = out.flush();
            let _ = done.send(());
        }
    }
}

static STDOUT: OnceLock<LogWriter> = OnceLock::new();

/// Sends wide events to stdout through a writer thread from now on (the server does; the
/// one-shot commands and the tests write directly).
pub fn to_stdout_in_background() {
    let _ = STDOUT.set(LogWriter::start(std::io::stdout(), QUEUED_LINES));
}

/// Writes one wide-event line: through the writer thread once started, else directly.
pub fn line(line: String) {
    match STDOUT.get() {
        Some(writer) => writer.line(line),
        None => {
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        }
    }
}

/// Reports lines dropped since the last report, on stderr (not a wide event: the reason it
/// is needed is that stdout is not keeping up).
pub fn report_dropped() {
    if let Some(dropped) = STDOUT.get().map(LogWriter::take_dropped).filter(|n| *n > 0) {
        tracing::warn!(dropped, "wide events dropped: stdout was not keeping up");
    }
}

/// Before exit: writes out what is queued, waiting at most `within`.
pub fn flush(within: Duration) {
    report_dropped();
    if let Some(writer) = STDOUT.get() {
        writer.flush(within);
    }
}

/// How long the writer may have between a `flush` and the process exit.
pub const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A stdout that hangs until released, as a stalled pipe does, and then keeps what it got.
    #[derive(Clone)]
    struct Stalled {
        gate: Arc<Mutex<()>>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.written.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            let _open = self.gate.lock().unwrap();
            Ok(())
        }
    }

    #[test]
    fn a_stalled_stdout_costs_dropped_lines_never_a_wait() {
        let out = Stalled {
            gate: Arc::new(Mutex::new(())),
            written: Arc::new(Mutex::new(Vec::new())),
        };
        let closed = out.gate.lock().unwrap();
        let writer = LogWriter::start(out.clone(), 10);
        // The thread is now stuck writing to the stalled stdout.
        assert!(!writer.flush(Duration::from_millis(200)));
        // Ten lines fill the queue and the rest are dropped; none of these calls waits.
        for n in 0..100 {
            writer.line(format!("{{\"event\":\"request\",\"n\":{n}}}"));
        }
        assert_eq!(writer.take_dropped(), 90);
        // With the queue full in front of the stalled stdout, a flush still returns in time.
        assert!(!writer.flush(Duration::from_millis(50)));
        drop(closed);
        assert!(writer.flush(Duration::from_secs(10)));
        let written = String::from_utf8(out.written.lock().unwrap().clone()).unwrap();
        assert_eq!(written.lines().count(), 10);
        assert!(written.starts_with("{\"event\":\"request\",\"n\":0}\n"));
        assert_eq!(writer.take_dropped(), 0);
    }
}
