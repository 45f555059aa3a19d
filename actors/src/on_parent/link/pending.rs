//! The table of calls in flight, and how each is answered.
//!
//! A call is entered here by `send.rs` just before its frame goes out, and
//! stays until the runner reports that its work has ended. Its reply comes
//! from the endpoint's frame loop (`deliver`, `deliver_early`,
//! `deliver_ended`); the deadline watch (`deadlines.rs`) answers a waiting
//! call past its time, and `close.rs` empties the table when the runner is
//! gone. The caller, woken in `send.rs`, then turns the outcome into its
//! result (`outcome.rs`).
//!
//! Entering the table and emptying it exclude each other: `close` marks the
//! table closed under the lock it empties it with, and `track` refuses a
//! call once it is. A call that raced its runner's close is then either in
//! the table when it is emptied (and fails with the runner) or refused (and
//! fails at once); none waits for an answer that nobody will send.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use tokio::sync::oneshot;

use super::RunnerConn;
use super::children::Queued;
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
    pub(super) pending: Mutex<Table>,
}

/// The calls in flight, and whether the runner is gone (under the same
/// lock, so the check costs a call nothing it does not already pay).
#[derive(Default)]
pub(super) struct Table {
    pub(super) entries: IdMap<Pending>,
    /// Set by [`Table::close`]: nothing enters from then on.
    closed: bool,
}

impl Table {
    /// Empties the table for good (the runner is gone) and gives back what
    /// was in it; later calls are refused by [`RunnerConn::track`].
    pub(super) fn close(&mut self) -> IdMap<Pending> {
        self.closed = true;
        std::mem::take(&mut self.entries)
    }
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
    /// A cast to a placed child: its bytes count against the child's
    /// budget until the runner reports it handed to the child.
    ChildCast(Queued),
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
    let _ = waiter.send(Delivered {
        outcome,
        ended: false,
        runner_us: 0,
    });
}

/// An outcome, whether the work behind it has ended, and how long that
/// work ran on the runner (microseconds; 0 where not measured).
pub(super) struct Delivered {
    pub(super) outcome: Outcome,
    pub(super) ended: bool,
    pub(super) runner_us: u64,
}

impl RunnerConn {
    /// Notes call `id` as in flight; returns whether it is the only one
    /// (nothing to batch it with).
    ///
    /// # Errors
    ///
    /// The entry back, untracked, when the runner is gone (its table was
    /// emptied by `close`, and nothing would ever answer the call): the
    /// caller fails the call with [`Error::RunnerDown`](crate::error::Error::RunnerDown).
    /// A caller's earlier look at [`RunnerConn::is_down`] cannot promise
    /// this: `close` may run between that look and this.
    pub(super) fn track(&self, id: u64, entry: Pending) -> Result<bool, Pending> {
        let mut table = self.inner.calls.pending.lock().expect("poisoned");
        if table.closed {
            return Err(entry);
        }
        table.entries.insert(id, entry);
        Ok(table.entries.len() == 1)
    }

    /// Keeps `hold` until call `id` has ended on the runner; returns whether
    /// it still runs. A hold whose call has ended (or whose runner is gone)
    /// is released at once, outside the lock (a lease's drop may message the
    /// pool).
    pub(super) fn park(&self, id: u64, hold: Option<Lease>) -> bool {
        let mut pending = self.inner.calls.pending.lock().expect("poisoned");
        match pending.entries.get_mut(&id) {
            Some(entry) if !self.is_down() => {
                *entry = Pending::Parked(hold);
                true
            }
            _ => {
                pending.entries.remove(&id);
                drop(pending);
                drop(hold);
                false
            }
        }
    }

    /// Routes a runner's final reply: the call's work has ended, after
    /// `runner_us` microseconds on the runner. Its caller gets the outcome,
    /// or its parked slot is released. Unknown ids (casts to placed
    /// children) are ignored.
    pub(crate) fn deliver(&self, id: u64, outcome: Outcome, runner_us: u64) {
        if let Some(entry) = self.untrack(id) {
            self.settle(entry, outcome, runner_us);
        }
    }

    /// Takes call `id` out of the table (answered, or never sent); what
    /// its entry holds is the caller's, to drop outside the lock (a lease's
    /// drop may message the pool).
    pub(super) fn untrack(&self, id: u64) -> Option<Pending> {
        self.inner.calls.pending.lock().expect("poisoned").entries.remove(&id)
    }

    /// Routes an outcome that comes before the call's work has ended.
    pub(crate) fn deliver_early(&self, id: u64, outcome: Outcome) {
        let mut pending = self.inner.calls.pending.lock().expect("poisoned");
        if let Some(waiter) = pending.entries.get_mut(&id).and_then(Pending::answer) {
            answer_early(waiter, outcome);
        }
    }

    /// Routes the ends of calls `ids`, each as [`RunnerConn::deliver`] with
    /// [`Outcome::Done`], under one lock.
    pub(crate) fn deliver_ended(&self, ids: &[u64]) {
        let entries: Vec<Pending> = {
            let mut pending = self.inner.calls.pending.lock().expect("poisoned");
            ids.iter().filter_map(|id| pending.entries.remove(id)).collect()
        };
        for entry in entries {
            self.settle(entry, Outcome::Done, 0);
        }
    }

    /// Ends a call taken out of `pending` (outside its lock: a lease's drop
    /// may message the pool): its caller gets the outcome, or its slot is
    /// checked in.
    pub(super) fn settle(&self, entry: Pending, outcome: Outcome, runner_us: u64) {
        match entry {
            Pending::Waiting { waiter, .. } => {
                let _ = waiter.send(Delivered {
                    outcome,
                    ended: true,
                    runner_us,
                });
            }
            Pending::Parked(hold) => drop(hold),
            Pending::Cast(hold, function) => {
                // Checked in first: the log line may take a while.
                drop(hold);
                self.cast_ended(function, outcome);
            }
            // The child has its cast: its bytes leave the budget.
            Pending::ChildCast(queued) => drop(queued),
            Pending::Answered => {}
        }
    }

    /// Calls in flight (for tests and stats), cancelling ones included.
    pub fn pending(&self) -> usize {
        self.inner.calls.pending.lock().expect("poisoned").entries.len()
    }

    /// Calls whose caller has gone (deadline, cancel) while their work still
    /// runs on the runner, each holding its slot.
    pub fn cancelling(&self) -> usize {
        self.inner
            .calls
            .pending
            .lock()
            .expect("poisoned")
            .entries
            .values()
            .filter(|p| matches!(p, Pending::Answered | Pending::Parked(_)))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::error::{DownReason, Error};
    use crate::func::args::Args;
    use crate::ids::RunnerId;
    use crate::on_parent::link::{CallRequest, RunnerConn};
    use crate::wire::frame::ToRunner;
    use crate::wire::outbox::Outbox;

    /// Longer than any of these calls may take: past it, a call waits for ever.
    const BOUND: Duration = Duration::from_secs(5);

    /// A call with no deadline.
    fn request() -> CallRequest<'static> {
        CallRequest {
            function: "never",
            args: Args::encode(1u64).unwrap(),
            deadline: None,
            linked: false,
            want_result: true,
            idempotency_key: None,
        }
    }

    /// B50, the race as one interleaving: a call has looked at `is_down`
    /// (the runner was up), its runner closes (the table is emptied), and
    /// only then is the call entered. It fails at once with the runner's
    /// reason: nothing would ever answer it (the runner was given up while
    /// its link still took frames, as for a lost engine, B46). It does not
    /// wait for ever (no deadline) nor end as `Deadline` (one).
    #[tokio::test]
    async fn b50_a_call_entered_after_its_runner_closed_fails_at_once_with_runner_down() {
        for deadline in [Some(Instant::now() + Duration::from_millis(50)), None] {
            let (tx, _sent) = Outbox::<ToRunner>::new();
            let conn = RunnerConn::remote(RunnerId::new(), tx, usize::MAX);
            assert!(!conn.is_down(), "the call's look: the runner is up");
            conn.close(DownReason::ConnectionLost("engine lost".into()));
            let id = conn
                .inner
                .calls
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut sent = false;
            let call = conn.send_and_wait(id, false, deadline, None, |_alone| {
                sent = true;
                true
            });
            let result = tokio::time::timeout(BOUND, call)
                .await
                .unwrap_or_else(|_| panic!("a call entered after close waits for ever (deadline {deadline:?})"));
            assert!(
                matches!(&result, Err(Error::RunnerDown { reason: DownReason::ConnectionLost(r) }) if r == "engine lost"),
                "deadline {deadline:?}: {result:?}"
            );
            assert!(!sent, "no frame goes to a runner given up");
            assert_eq!(conn.pending(), 0, "nothing is left in the table");
        }
    }

    /// B50, the race as it comes: calls without a deadline are made while
    /// their runner closes, from two threads, round after round. Each ends
    /// with `RunnerDown` (the runner never answers) within a bound, and the
    /// table is left empty.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn b50_calls_racing_their_runners_close_each_end_with_runner_down() {
        const ROUNDS: usize = 1000;
        const CALLS: usize = 64;
        for round in 0..ROUNDS {
            let (tx, _sent) = Outbox::<ToRunner>::new();
            let conn = RunnerConn::remote(RunnerId::new(), tx, usize::MAX);
            let calls: Vec<_> = (0..CALLS)
                .map(|_| {
                    let conn = conn.clone();
                    tokio::spawn(async move { conn.call(request()).await })
                })
                .collect();
            // Close while the calls are still being made: some are in, some
            // have yet to look, and some are between the look and the entry.
            let started = Instant::now();
            while conn.pending() < CALLS / 8 {
                assert!(started.elapsed() < BOUND, "round {round}: the calls never went in");
                std::hint::spin_loop();
            }
            conn.close(DownReason::Stopped);
            for call in calls {
                let result = tokio::time::timeout(BOUND, call)
                    .await
                    .unwrap_or_else(|_| panic!("round {round}: a call that raced close waits for ever"))
                    .expect("the call's task");
                assert!(
                    matches!(
                        result,
                        Err(Error::RunnerDown {
                            reason: DownReason::Stopped
                        })
                    ),
                    "round {round}: {result:?}"
                );
            }
            assert_eq!(conn.pending(), 0, "round {round}: nothing is left in the table");
        }
    }
}
