//! The parent's own watch of its calls' deadlines, one per connection.
//!
//! The runner enforces every call's deadline and answers it; the parent
//! gives up on its own only a grace after the deadline, for a runner that
//! cannot answer (frozen, or every worker in a body that never yields).
//! That backstop used to be a timer per call, set and cleared by every call
//! on the parent's workers; it is now one task per connection on the link
//! thread, asleep until the earliest deadline a waiting call has, which
//! callers lower only when theirs comes sooner (with the default timeout,
//! almost never).
//!
//! A call comes here from `send.rs`, which notes its time to give up once
//! the call is in the table of calls in flight. When that time passes, the
//! watch answers the call [`Outcome::Deadline`] through the table
//! (`pending.rs`) and asks the runner to cancel the work (`send.rs`); the
//! call keeps its slot until the runner reports the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::pending::{Pending, answer_early};
use super::{ConnInner, RunnerConn};
use crate::wire::frame::Outcome;

/// How long past its deadline the parent waits for a runner's own deadline
/// reply before it gives up on its own (and cancels the work).
pub(super) const DEADLINE_GRACE: Duration = Duration::from_millis(250);

/// No waiting call has a deadline.
const NONE: u64 = u64::MAX;

/// When a connection's watch next looks at its calls.
#[derive(Debug)]
pub(super) struct Deadlines {
    epoch: Instant,
    /// The earliest time to give up on a waiting call, in microseconds
    /// after `epoch` (rounded up); [`NONE`] when no call has one.
    next_us: AtomicU64,
    /// Wakes the watch: an earlier deadline, or the connection gone.
    wake: Notify,
}

impl Deadlines {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Deadlines {
            epoch: Instant::now(),
            next_us: AtomicU64::new(NONE),
            wake: Notify::new(),
        })
    }

    fn us(&self, at: Instant) -> u64 {
        let after = at.saturating_duration_since(self.epoch);
        // Rounded up: the watch never wakes before the call is due.
        (after.as_micros() as u64).saturating_add(1).min(NONE - 1)
    }

    /// A call waits until `at` at most: the watch wakes for it if it comes
    /// before every deadline the watch knows. Called after the call is
    /// tracked, so a watch that has just looked learns of it here.
    pub(super) fn note(&self, at: Instant) {
        let us = self.us(at);
        // A load first: with calls of one timeout, each comes after the one
        // the watch waits for, and the shared line is only read.
        if us < self.next_us.load(Ordering::Acquire) && us < self.next_us.fetch_min(us, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// What the watch found when it looked (under the calls' lock, so that
    /// a call tracked later notes its own deadline after this).
    pub(super) fn set_next(&self, next: Option<Instant>) {
        let us = next.map_or(NONE, |at| self.us(at));
        self.next_us.store(us, Ordering::Release);
    }

    fn next(&self) -> Option<Instant> {
        match self.next_us.load(Ordering::Acquire) {
            NONE => None,
            us => Some(self.epoch + Duration::from_micros(us)),
        }
    }

    /// The connection is gone: the watch wakes to end.
    pub(super) fn close(&self) {
        self.wake.notify_one();
    }

    /// The watch of one connection: sleeps until the earliest deadline (or
    /// until told of an earlier one), then gives up on every call past its
    /// own. Ends with the connection.
    pub(super) async fn watch(self: Arc<Self>, conn: Weak<ConnInner>) {
        loop {
            // `notify_one` leaves a permit when nobody waits: a wake that
            // comes before this waits is not lost.
            let woken = self.wake.notified();
            // Its count drops before its `close` wakes this.
            if conn.strong_count() == 0 {
                return;
            }
            let Some(at) = self.next() else {
                woken.await;
                continue;
            };
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep_until(at.into()) => {
                    let Some(inner) = conn.upgrade() else { return };
                    RunnerConn { inner }.give_up_due(Instant::now());
                }
            }
        }
    }
}

impl RunnerConn {
    /// The parent's own deadline: every waiting call past its time to give
    /// up gets [`Outcome::Deadline`] now and its work is cancelled, linked or
    /// not (its slot stays taken until the runner reports the end). Tells
    /// the watch when the next waiting call is due.
    fn give_up_due(&self, now: Instant) {
        let mut due = Vec::new();
        {
            let mut pending = self.inner.calls.pending.lock().expect("poisoned");
            let mut next: Option<Instant> = None;
            for (id, entry) in pending.entries.iter_mut() {
                let Pending::Waiting { give_up: Some(at), .. } = entry else {
                    continue;
                };
                let at = *at;
                if at > now {
                    next = Some(next.map_or(at, |next| next.min(at)));
                } else if let Some(waiter) = entry.answer() {
                    due.push((*id, waiter));
                }
            }
            self.inner.deadlines.set_next(next);
        }
        for (id, waiter) in due {
            answer_early(waiter, Outcome::Deadline);
            self.cancel(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::func::args::Args;
    use crate::ids::RunnerId;
    use crate::on_parent::link::{CallRequest, RunnerConn};
    use crate::wire::frame::{Outcome, ToRunner};
    use crate::wire::outbox::Outbox;

    /// A runner that never answers: the watch gives its caller the
    /// deadline a grace after it, cancels the work, and keeps the call
    /// until the runner reports its end.
    #[tokio::test]
    async fn a_call_nobody_answers_gets_its_deadline_from_the_watch() {
        let (tx, mut sent) = Outbox::<ToRunner>::new();
        let conn = RunnerConn::remote(RunnerId::new(), tx, usize::MAX);
        let started = Instant::now();
        let req = CallRequest {
            function: "never",
            args: Args::encode(1u64).unwrap(),
            deadline: Some(started + Duration::from_millis(50)),
            linked: false,
            want_result: true,
            idempotency_key: None,
        };
        let outcome = conn.call(req).await.unwrap();
        assert_eq!(outcome, Outcome::Deadline);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
            "a grace after the deadline: {waited:?}"
        );
        let Some(ToRunner::Call(call)) = sent.recv_one().await else {
            panic!("the call went out first");
        };
        let cancel = tokio::time::timeout(Duration::from_secs(2), sent.recv_one()).await;
        assert_eq!(
            cancel.ok().flatten(),
            Some(ToRunner::Cancel { id: call.id }),
            "the work is cancelled"
        );
        assert_eq!(conn.cancelling(), 1, "the work still runs");
        conn.deliver(call.id, Outcome::Aborted, 0);
        assert_eq!((conn.pending(), conn.cancelling()), (0, 0));
    }

    /// Each connection's watch ends with it: runners come and go for the
    /// life of a pool.
    #[tokio::test]
    async fn the_watch_ends_with_its_connection() {
        let (tx, _sent) = Outbox::<ToRunner>::new();
        let conn = RunnerConn::remote(RunnerId::new(), tx, usize::MAX);
        let watch = std::sync::Arc::downgrade(&conn.inner.deadlines);
        // Time for the watch to fall asleep (nothing tells when it has):
        // the connection's end must wake it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(conn);
        let started = Instant::now();
        while watch.upgrade().is_some() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the watch outlived its connection"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
