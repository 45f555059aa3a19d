//! The table of calls in flight, and how each is answered.
//!
//! A call is entered here by `send.rs` just before its frame goes out, and
//! stays until the runner reports that its work has ended. Its reply comes
//! from the endpoint's frame loop (`deliver`, `deliver_early`,
//! `deliver_ended`); the deadline watch (`deadlines.rs`) answers a waiting
//! call past its time, and `close.rs` empties the table when the runner is
//! gone. The caller, woken in `send.rs`, then turns the outcome into its
//! result (`outcome.rs`).

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::RunnerConn;
use super::outcome::outcome_into_result;
use crate::ids::IdMap;
use crate::on_parent::pool::Lease;
use crate::wire::frame::Outcome;

/// A connection's call ids and its calls in flight. Every call takes an id
/// and then the lock: both share one cache line, which no field that calls
/// only read shares, so a call moves one line between threads, not three.
#[repr(C, align(64))]
pub(super) struct Calls {
    pub(super) next_id: AtomicU64,
    /// Calls sent and not yet ended on the runner.
    pub(super) pending: Mutex<IdMap<Pending>>,
}

/// A call between its send and the end of its work on the runner.
pub(super) enum Pending {
    /// The caller awaits the outcome; past `give_up` (its deadline and a
    /// grace) it gets [`Outcome::Deadline`] from the parent's own watch.
    Waiting {
        waiter: oneshot::Sender<Delivered>,
        give_up: Option<Instant>,
    },
    /// The caller has its outcome (sent early); the work still runs and the
    /// caller is about to park its slot here.
    Answered,
    /// The caller is gone (it got an early outcome, passed its deadline, or
    /// dropped its future); the work still runs and holds this slot.
    Parked(Option<Lease>),
    /// A cast sent without a task of its own: nobody awaits it, and its
    /// slot is checked in when the runner reports its end.
    Cast(Lease, &'static str),
}

impl Pending {
    /// A waiting call's caller, now answered while the work still runs (the
    /// entry is then [`Pending::Answered`]); `None` for any other entry.
    pub(super) fn answer(&mut self) -> Option<oneshot::Sender<Delivered>> {
        if !matches!(self, Pending::Waiting { .. }) {
            return None;
        }
        match std::mem::replace(self, Pending::Answered) {
            Pending::Waiting { waiter, .. } => Some(waiter),
            _ => None,
        }
    }
}

/// Gives a caller its outcome before the work behind it has ended.
pub(super) fn answer_early(waiter: oneshot::Sender<Delivered>, outcome: Outcome) {
    let _ = waiter.send(Delivered { outcome, ended: false });
}

/// An outcome, and whether the work behind it has ended.
pub(super) struct Delivered {
    pub(super) outcome: Outcome,
    pub(super) ended: bool,
}

impl RunnerConn {
    /// Notes call `id` as in flight; returns whether it is the only one
    /// (nothing to batch it with).
    pub(super) fn track(&self, id: u64, entry: Pending) -> bool {
        let mut pending = self.inner.calls.pending.lock().expect("poisoned");
        pending.insert(id, entry);
        pending.len() == 1
    }

    /// Keeps `hold` until call `id` has ended on the runner; returns whether
    /// it still runs. A hold whose call has ended (or whose runner is gone)
    /// is released at once, outside the lock (a lease's drop may message the
    /// pool).
    pub(super) fn park(&self, id: u64, hold: Option<Lease>) -> bool {
        let mut pending = self.inner.calls.pending.lock().expect("poisoned");
        match pending.get_mut(&id) {
            Some(entry) if !self.is_down() => {
                *entry = Pending::Parked(hold);
                true
            }
            _ => {
                pending.remove(&id);
                drop(pending);
                drop(hold);
                false
            }
        }
    }

    /// Routes a runner's final reply: the call's work has ended. Its caller
    /// gets the outcome, or its parked slot is released. Unknown ids (casts
    /// to placed children) are ignored.
    pub(crate) fn deliver(&self, id: u64, outcome: Outcome) {
        let entry = self.inner.calls.pending.lock().expect("poisoned").remove(&id);
        if let Some(entry) = entry {
            self.settle(entry, outcome);
        }
    }

    /// Routes an outcome that comes before the call's work has ended.
    pub(crate) fn deliver_early(&self, id: u64, outcome: Outcome) {
        let mut pending = self.inner.calls.pending.lock().expect("poisoned");
        if let Some(waiter) = pending.get_mut(&id).and_then(Pending::answer) {
            answer_early(waiter, outcome);
        }
    }

    /// Routes the ends of calls `ids`, each as [`RunnerConn::deliver`] with
    /// [`Outcome::Done`], under one lock.
    pub(crate) fn deliver_ended(&self, ids: &[u64]) {
        let entries: Vec<Pending> = {
            let mut pending = self.inner.calls.pending.lock().expect("poisoned");
            ids.iter().filter_map(|id| pending.remove(id)).collect()
        };
        for entry in entries {
            self.settle(entry, Outcome::Done);
        }
    }

    /// Ends a call taken out of `pending` (outside its lock: a lease's drop
    /// may message the pool): its caller gets the outcome, or its slot is
    /// checked in.
    pub(super) fn settle(&self, entry: Pending, outcome: Outcome) {
        match entry {
            Pending::Waiting { waiter, .. } => {
                let _ = waiter.send(Delivered { outcome, ended: true });
            }
            Pending::Parked(hold) => drop(hold),
            Pending::Cast(hold, function) => {
                // Checked in first: the log line may take a while.
                drop(hold);
                if let Err(error) = outcome_into_result(outcome, function, Duration::MAX) {
                    self.cast_failed(function, &error);
                }
            }
            Pending::Answered => {}
        }
    }

    /// Calls in flight (for tests and stats), cancelling ones included.
    pub fn pending(&self) -> usize {
        self.inner.calls.pending.lock().expect("poisoned").len()
    }

    /// Calls whose caller has gone (deadline, cancel) while their work still
    /// runs on the runner, each holding its slot.
    pub fn cancelling(&self) -> usize {
        self.inner
            .calls
            .pending
            .lock()
            .expect("poisoned")
            .values()
            .filter(|p| matches!(p, Pending::Answered | Pending::Parked(_)))
            .count()
    }
}
