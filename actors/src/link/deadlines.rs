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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{ConnInner, RunnerConn};

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
    closed: AtomicBool,
}

impl Deadlines {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Deadlines {
            epoch: Instant::now(),
            next_us: AtomicU64::new(NONE),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
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

    /// The connection is gone: the watch ends.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
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
            if self.closed.load(Ordering::Acquire) {
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
