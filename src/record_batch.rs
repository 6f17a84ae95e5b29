//! Pings bound for a week's object that reach an isolate while its request to that object is
//! in flight wait, and are kept together in the next: under load, one request and one object
//! event carry many pings; alone, a ping is kept at once.
//!
//! The ping that finds no leader for its object leads: its own `waitUntil` future keeps its
//! batch (the object's request, the KV puts, any failure logged), then the pings that arrived
//! meanwhile, for [`MAX_ROUNDS`] more batches of up to [`MAX_BATCH`]; then it retires, and the
//! next ping leads anew. A ping that joins a leader's queue is the leader's from then on, and
//! its own `waitUntil` ends at once: the leader's keeps the isolate alive for it. It must not
//! wait to be woken either. The runtime gives I/O to the request whose code starts it, and
//! ends a request whose `waitUntil` waits on nothing of its own: its continuation would be
//! cancelled, with a warning for each.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use telemetry_core::SessionWrite;
use worker::js_sys::Date;

/// Pings a queue holds at most: a ping that finds it full leads anew.
const MAX_BATCH: usize = 16;
/// Batches a leader keeps after its own ping, the last taking what waits as it retires. With
/// [`MAX_BATCH`] this bounds a leader's `waitUntil` to 33 pings (49 when it takes over a
/// stalled leader's): as many KV puts, three object requests and at most three notes, within
/// the Free plan's 50 subrequests a request.
const MAX_ROUNDS: usize = 2;
/// A leader that has not moved on for this long (its request ended while it waited on I/O,
/// say) is taken over: the next ping leads, with the pings that waited for it.
const STALLED_AFTER_MS: f64 = 10_000.0;

/// A ping to keep: its record and when the record expires (seconds since the epoch).
pub struct Pending {
    pub write: SessionWrite,
    pub expires_at: i64,
}

/// The pings waiting for a leader's next batch, and when the leader last moved on.
struct Queue {
    waiting: RefCell<Vec<Pending>>,
    progress_ms: Cell<f64>,
}

thread_local! {
    /// The objects this isolate has a leader for, by name: a few at a time (a week's shards).
    static LEADING: RefCell<Vec<(String, Rc<Queue>)>> = const { RefCell::new(Vec::new()) };
}

/// Keeps `pending`, bound for the object named `object`, with the pings that wait for the
/// same object: `keep_batch` keeps one batch (every error handled and logged inside it).
/// Returns at once when a leader takes the ping.
pub async fn keep<F, Kept>(object: &str, pending: Pending, keep_batch: F)
where
    F: Fn(Vec<Pending>) -> Kept,
    Kept: Future<Output = ()>,
{
    let now = Date::now();
    let Some(mut batch) = join(object, pending, now) else {
        return;
    };
    let queue = Rc::new(Queue {
        waiting: RefCell::default(),
        progress_ms: Cell::new(now),
    });
    let _leading = Leading::start(object, &queue);
    for round in 0..=MAX_ROUNDS {
        queue.progress_ms.set(Date::now());
        keep_batch(batch).await;
        if round == MAX_ROUNDS {
            break;
        }
        if round + 1 == MAX_ROUNDS {
            // The last batch takes what waits now, and no ping joins after: the next leads.
            retire(&queue);
        }
        batch = queue.waiting.take();
        if batch.is_empty() {
            break;
        }
    }
}

/// Puts `pending` in the queue of this isolate's leader for `object` (`None`); or, when this
/// ping is to lead (no leader, its queue full, or stalled), answers its first batch: the ping,
/// and those a stalled leader left waiting.
fn join(object: &str, pending: Pending, now: f64) -> Option<Vec<Pending>> {
    LEADING.with(|leading| {
        let mut leading = leading.borrow_mut();
        let found = (leading.iter().enumerate())
            .find(|(_, (name, _))| name == object)
            .map(|(at, (_, queue))| (at, Rc::clone(queue)));
        let Some((at, queue)) = found else {
            return Some(vec![pending]);
        };
        if now - queue.progress_ms.get() > STALLED_AFTER_MS {
            leading.remove(at);
            let mut batch = queue.waiting.take();
            batch.insert(0, pending);
            return Some(batch);
        }
        if queue.waiting.borrow().len() >= MAX_BATCH {
            // Its leader keeps those; this ping leads the next.
            leading.remove(at);
            return Some(vec![pending]);
        }
        queue.waiting.borrow_mut().push(pending);
        None
    })
}

/// Takes a queue out of [`LEADING`], if it is still there.
fn retire(queue: &Rc<Queue>) {
    LEADING.with(|leading| {
        leading
            .borrow_mut()
            .retain(|(_, led)| !Rc::ptr_eq(led, queue))
    });
}

/// A leader's queue, in [`LEADING`] until the leader retires or its future ends. A future the
/// runtime drops (it does so only with its request, and that request's I/O) drops the pings
/// still waiting with it; a leader that just never resumes is taken over after
/// [`STALLED_AFTER_MS`] by the next ping, with the pings waiting for it.
struct Leading(Rc<Queue>);

impl Leading {
    fn start(object: &str, queue: &Rc<Queue>) -> Self {
        LEADING.with(|leading| {
            leading
                .borrow_mut()
                .push((object.to_owned(), Rc::clone(queue)))
        });
        Self(Rc::clone(queue))
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        retire(&self.0);
    }
}
