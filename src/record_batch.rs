//! Pings bound for a week's object that reach an isolate while its request to that object is
//! in flight wait, and are kept together in the next: under load, one request and one object
//! event carry many pings; alone, a ping is kept at once.
//!
//! The ping that finds no request in flight leads: its own `waitUntil` future keeps its batch
//! (the object's request, the KV puts, any failure logged), then the pings that arrived
//! meanwhile, round after round, until none wait or [`MAX_ROUNDS`] have passed; then it
//! retires, and the next ping leads anew. A waiting ping does nothing after its batch is kept,
//! which matters: the runtime gives I/O to the request whose code starts it and cancels it when
//! that request ends, and a waiting ping is resumed in its leader's request. Every ping's
//! future waits until its batch is kept, so each ping's `waitUntil` lasts as long as its write.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use telemetry_core::SessionWrite;

/// Pings per request at most: an object keeps a batch in one event, kept short.
const MAX_BATCH: usize = 64;
/// Rounds a leader keeps before it retires, which bounds its `waitUntil` under a steady load.
const MAX_ROUNDS: usize = 16;

/// A ping to keep: its record and when the record expires (seconds since the epoch).
pub struct Pending {
    pub write: SessionWrite,
    pub expires_at: i64,
}

/// Whether a waiting ping's batch is kept, and who to wake when it is.
#[derive(Default)]
struct Slot {
    kept: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Slot {
    fn wake(&self) {
        self.kept.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// The pings waiting for one object's next request, while a leader keeps its batches.
#[derive(Default)]
struct Queue {
    waiting: RefCell<Vec<(Pending, Rc<Slot>)>>,
}

thread_local! {
    /// The objects this isolate has a leader for, by name: a few at a time (a week's shards).
    static LEADING: RefCell<Vec<(String, Rc<Queue>)>> = const { RefCell::new(Vec::new()) };
}

/// Keeps `pending`, bound for the object named `object`, with the pings that wait for the
/// same object: `keep` keeps one batch (every error handled and logged inside it).
pub async fn keep<F, Kept>(object: &str, pending: Pending, keep: F)
where
    F: Fn(Vec<Pending>) -> Kept,
    Kept: Future<Output = ()>,
{
    // A leader keeps this object's batches: wait in its queue.
    let queue = LEADING.with(|leading| {
        let leading = leading.borrow();
        let (_, queue) = leading.iter().find(|(name, _)| name == object)?;
        Some(Rc::clone(queue))
    });
    if let Some(queue) = queue {
        let slot = Rc::new(Slot::default());
        queue.waiting.borrow_mut().push((pending, Rc::clone(&slot)));
        return kept(&slot).await;
    }
    let queue = Rc::new(Queue::default());
    let leading = Leading::start(object, &queue);
    keep(vec![pending]).await;
    let mut retired = false;
    for round in 1.. {
        let batch: Vec<_> = {
            let mut waiting = queue.waiting.borrow_mut();
            if !retired && (waiting.is_empty() || round == MAX_ROUNDS) {
                // From here no ping joins this queue: the next leads anew.
                retire(&queue);
                retired = true;
            }
            let taken = waiting.len().min(MAX_BATCH);
            waiting.drain(..taken).collect()
        };
        if batch.is_empty() {
            break;
        }
        let (batch, slots): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        leading.in_flight.replace(slots);
        keep(batch).await;
        leading.release();
    }
}

/// Waits until the batch holding `slot` is kept.
async fn kept(slot: &Slot) {
    poll_fn(|cx| {
        if slot.kept.get() {
            return Poll::Ready(());
        }
        slot.waker.replace(Some(cx.waker().clone()));
        Poll::Pending
    })
    .await
}

/// Takes a queue out of [`LEADING`], if it is still there.
fn retire(queue: &Rc<Queue>) {
    LEADING.with(|leading| {
        leading
            .borrow_mut()
            .retain(|(_, led)| !Rc::ptr_eq(led, queue))
    });
}

/// A leader's queue, in [`LEADING`] until the leader retires, and the pings of the batch it
/// keeps. Should the leader's future be dropped before its end, its queue leaves and the pings
/// it holds are let go unkept: the runtime drops a future only when it ends the request, and
/// cancels that request's I/O, theirs included, with it.
struct Leading {
    queue: Rc<Queue>,
    in_flight: RefCell<Vec<Rc<Slot>>>,
}

impl Leading {
    fn start(object: &str, queue: &Rc<Queue>) -> Self {
        LEADING.with(|leading| {
            leading
                .borrow_mut()
                .push((object.to_owned(), Rc::clone(queue)))
        });
        let queue = Rc::clone(queue);
        let in_flight = RefCell::default();
        Self { queue, in_flight }
    }

    /// Wakes the pings of the batch just kept.
    fn release(&self) {
        for slot in self.in_flight.take() {
            slot.wake();
        }
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        retire(&self.queue);
        self.release();
        for (_, slot) in self.queue.waiting.take() {
            slot.wake();
        }
    }
}
