//! The helper queue. Admitted calls (from `admit.rs`, on the link thread)
//! wait here for a helper: one of the tasks the engine spawns on the work
//! runtime at its start, one per worker thread and one more. A call queued
//! while a helper waits wakes that helper; helpers take calls in the order
//! they came and run each one's first step (`start.rs`). The helpers end
//! with the engine; calls still queued when the last helper goes are
//! dropped, and so end `Aborted` (`end.rs`).
//!
//! Calls that must start in the order they came (operations on placed
//! children, whose messages are enqueued on the child as their work is
//! built) wait in the [`Lane`] instead: one helper at a time takes the
//! lane's turn and starts its calls in order, a few at a time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::start::Start;

/// Calls a helper starts at most in one turn of the lane.
const LANE_TURN: usize = 32;

/// Admitted calls waiting for a helper.
#[derive(Debug)]
pub(super) struct Starts {
    pub(super) queue: Mutex<StartQueue>,
    /// Wakes a waiting helper: once per call queued while a helper waits,
    /// so that a call never waits behind one whose first poll runs long
    /// while another helper is free. Helpers that are busy are not told.
    pub(super) ready: Notify,
    /// Calls started one after the other, in the order they came.
    pub(super) lane: Mutex<Lane>,
}

/// What waits for a helper.
pub(super) enum Job {
    /// A call to start.
    Call(Start),
    /// A turn of the lane.
    Lane,
}

/// Calls that start in the order they came, one after the other.
#[derive(Default)]
pub(super) struct Lane {
    calls: VecDeque<Start>,
    /// A turn of the lane waits in the helper queue, or a helper takes it.
    scheduled: bool,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("calls", &self.calls.len())
            .field("scheduled", &self.scheduled)
            .finish()
    }
}

pub(super) struct StartQueue {
    pub(super) calls: VecDeque<Job>,
    /// Helpers still alive; none once the work runtime is gone, and then
    /// calls are dropped (ended) instead of queued.
    pub(super) helpers: usize,
    /// Helpers waiting on `ready`, not yet told: each is registered with
    /// it before it counts itself here, so every wake reaches one of them.
    pub(super) waiting: usize,
    /// The runner's engine is gone: helpers end.
    pub(super) closed: bool,
}

impl std::fmt::Debug for StartQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartQueue")
            .field("calls", &self.calls.len())
            .field("helpers", &self.helpers)
            .field("waiting", &self.waiting)
            .field("closed", &self.closed)
            .finish()
    }
}

impl Starts {
    pub(super) fn push(&self, start: Start) {
        self.push_job(Job::Call(start));
    }

    /// Queues a call that starts after every call queued this way before
    /// it has started.
    pub(super) fn push_ordered(&self, start: Start) {
        let mut lane = self.lane.lock().expect("poisoned");
        lane.calls.push_back(start);
        if lane.scheduled {
            return;
        }
        lane.scheduled = true;
        drop(lane);
        self.push_job(Job::Lane);
    }

    fn push_job(&self, job: Job) {
        let mut queue = self.queue.lock().expect("poisoned");
        if queue.helpers == 0 {
            drop(queue);
            // Ends the call (`Aborted`), outside the lock.
            self.discard(job);
            return;
        }
        queue.calls.push_back(job);
        let wake = queue.waiting > 0;
        if wake {
            queue.waiting -= 1;
        }
        drop(queue);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Ends a job that will never run: its call, or the calls of the lane
    /// (each replies `Aborted`).
    fn discard(&self, job: Job) {
        if let Job::Lane = job {
            let calls = {
                let mut lane = self.lane.lock().expect("poisoned");
                lane.scheduled = false;
                std::mem::take(&mut lane.calls)
            };
            drop(calls);
        }
    }

    /// A turn of the lane: starts its calls in order, at most
    /// [`LANE_TURN`]; another turn is queued (behind the calls queued
    /// meanwhile) when more wait.
    fn run_lane(&self) {
        let turn = LaneTurn(self);
        for _ in 0..LANE_TURN {
            let next = {
                let mut lane = self.lane.lock().expect("poisoned");
                let Some(next) = lane.calls.pop_front() else {
                    lane.scheduled = false;
                    std::mem::forget(turn);
                    return;
                };
                next
            };
            next.run();
        }
        drop(turn);
    }

    /// The next job; `Err` once the engine is gone. With nothing
    /// queued, a helper registered with `ready` (`waits`) counts itself as
    /// waiting.
    fn pop(&self, waits: bool) -> Result<Option<Job>, ()> {
        let mut queue = self.queue.lock().expect("poisoned");
        match queue.calls.pop_front() {
            None if queue.closed => Err(()),
            None if waits => {
                queue.waiting += 1;
                Ok(None)
            }
            next => Ok(next),
        }
    }

    /// Ends the helpers once the calls queued have started.
    pub(super) fn close(&self) {
        self.queue.lock().expect("poisoned").closed = true;
        self.ready.notify_waiters();
    }
}

/// A turn of the lane that has not ended it: dropped (the turn's calls
/// all started, or one of them panicked), it queues the lane's next turn.
struct LaneTurn<'a>(&'a Starts);

impl Drop for LaneTurn<'_> {
    fn drop(&mut self) {
        self.0.push_job(Job::Lane);
    }
}

/// A helper's hold on the queue: the last helper to go ends the calls left.
pub(super) struct HelperGuard(pub(super) Arc<Starts>);

impl Drop for HelperGuard {
    fn drop(&mut self) {
        let left = {
            let mut queue = self.0.queue.lock().expect("poisoned");
            queue.helpers -= 1;
            if queue.helpers == 0 {
                std::mem::take(&mut queue.calls)
            } else {
                VecDeque::new()
            }
        };
        for job in left {
            self.0.discard(job);
        }
    }
}

/// A task that starts admitted calls, in the order they come. Helpers are
/// woken from outside the runtime's workers (the link thread), so a woken
/// helper can run on any worker: one whose first poll never yields holds up
/// only its own thread.
pub(super) async fn helper(guard: HelperGuard) {
    let starts = &guard.0;
    loop {
        // While calls keep coming, straight from the queue.
        let job = match starts.pop(false) {
            Ok(Some(job)) => job,
            Err(()) => return,
            Ok(None) => {
                // Registered before it looks again and counts itself as
                // waiting: a call queued or a close in between wakes it.
                let ready = starts.ready.notified();
                let mut ready = std::pin::pin!(ready);
                ready.as_mut().enable();
                match starts.pop(true) {
                    Ok(Some(job)) => job,
                    Err(()) => return,
                    Ok(None) => {
                        ready.await;
                        continue;
                    }
                }
            }
        };
        match job {
            Job::Call(start) => start.run(),
            Job::Lane => starts.run_lane(),
        }
        // Other tasks of this worker get their turn in a long burst.
        tokio::task::coop::consume_budget().await;
    }
}
