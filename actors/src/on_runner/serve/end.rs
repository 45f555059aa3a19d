//! A call's end, the last stop of every call. The work's result (from
//! `start.rs`, `run.rs`, or the caller's task) becomes an [`Outcome`], and
//! the call's [`Finish`], armed at admission, settles it: counts it out,
//! removes its entry from the running calls, and sends its one reply to the
//! parent, straight away when no other call runs, batched otherwise (the
//! ends of casts among them share one frame). A `Finish` dropped before an
//! outcome replies `Aborted`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::run::Caught;
use super::{Running, Serve};
use crate::error::{FnErrorKind, panic_message};
use crate::func::context::CurrentCall;
use crate::func::erased::RunFailure;
use crate::wire::frame::{Outcome, ToParent};
use crate::wire::outbox::Outbox;

/// Ends a call with the outcome of its work.
pub(super) fn end(finish: &mut Finish, result: Option<Caught>, want_result: bool, call: &CurrentCall) {
    let outcome = outcome(result, want_result);
    if let Outcome::Panicked(message) = &outcome {
        // Sent to the parent ahead of the reply (same queue): a parent with
        // no subscriber still prints it.
        tracing::warn!(target: "ractor_flame::terminator", call = finish.id, panic = %message, "function panicked");
    }
    finish.reply(settle(outcome, call.deadline(), || call.is_stopped()));
}

/// A failed call's final word, which says what stopped it rather than how
/// its body reacted: once the call's deadline has passed, an error (a
/// returned one, a panic, an output that did not encode) ends it as
/// [`Outcome::Deadline`]: a body that honours cancellation returns an
/// error just then, and its caller must not see a race between that error
/// and the deadline. A body that stopped with
/// [`FnError::cancelled`](crate::FnError::cancelled) because its call was
/// stopped (the runner is going away) ends [`Outcome::Aborted`]. A success
/// is kept even when it came in the instant the deadline passed: the result
/// exists (and a placed child it started must not be orphaned). Only
/// failures read the clock, or ask (`stopped`) whether the call was stopped.
pub(super) fn settle(outcome: Outcome, deadline: Option<Instant>, stopped: impl FnOnce() -> bool) -> Outcome {
    let failed = matches!(
        outcome,
        Outcome::Returned { .. } | Outcome::Panicked(_) | Outcome::Codec(_)
    );
    if !failed {
        return outcome;
    }
    if deadline.is_some_and(|at| Instant::now() >= at) {
        return Outcome::Deadline;
    }
    if matches!(
        outcome,
        Outcome::Returned {
            kind: FnErrorKind::Cancelled,
            ..
        }
    ) && stopped()
    {
        return Outcome::Aborted;
    }
    outcome
}

/// The outcome of a finished (or timed out) call.
pub(super) fn outcome(result: Option<Caught>, want_result: bool) -> Outcome {
    match result {
        None => Outcome::Deadline,
        Some(Ok(Ok(_))) if !want_result => Outcome::Done,
        Some(Ok(Ok(output))) => match output.into_parts() {
            (bytes, true) => Outcome::OkBare(bytes.into_vec()),
            (bytes, false) => Outcome::Ok(bytes.into_vec()),
        },
        Some(Ok(Err(RunFailure::Returned(kind, message)))) => Outcome::Returned { kind, message },
        Some(Ok(Err(RunFailure::Panicked(m)))) => Outcome::Panicked(m),
        Some(Ok(Err(RunFailure::Codec(m)))) => Outcome::Codec(m),
        Some(Err(panic)) => Outcome::Panicked(panic_message(panic.as_ref())),
    }
}

/// What a caller in this process holds for a call it does not wait for (a
/// local cast: its slot), released once, when the call's work has ended,
/// with its outcome.
pub(crate) trait Release: Send + Sync + 'static {
    /// The call of `function` has ended with `outcome`.
    fn release(&self, function: &'static str, outcome: Outcome);
}

/// Where a call's end goes.
pub(crate) enum ReplyTo {
    /// Nowhere: the caller awaits the work in its own task.
    Caller,
    /// The parent connection, as a reply frame.
    Parent(Outbox<ToParent>),
    /// A caller's hold in this process, released with the outcome.
    Held {
        hold: Arc<dyn Release>,
        function: &'static str,
    },
}

impl ReplyTo {
    /// The call's outcome, before its work began (refused, unknown).
    pub(super) fn refuse(self, id: u64, outcome: Outcome) {
        match self {
            ReplyTo::Caller => {}
            ReplyTo::Parent(reply) => {
                let _ = reply.send(ToParent::Reply {
                    id,
                    outcome,
                    runner_us: 0,
                });
            }
            ReplyTo::Held { hold, function } => hold.release(function, outcome),
        }
    }
}

/// Runs when a call's work ends, however it ends (completion, abort,
/// panic): frees the runner's count and sends the call's one final reply
/// (`Aborted` when the work was dropped before it had an outcome).
pub(super) struct Finish {
    pub(super) serve: Arc<Serve>,
    id: u64,
    /// Where the call's end goes; [`ReplyTo::Caller`] once it went.
    reply: ReplyTo,
    /// When the call arrived (for calls that reply to the parent, whose
    /// reply carries the time the work took).
    arrived: Option<Instant>,
    /// Counted out and replied to already.
    ended: bool,
    /// The call has its entry among the running calls.
    listed: bool,
}

impl Finish {
    /// The end of call `id`, which has its entry among the running calls
    /// if `listed`, and came in at `arrived` (set for a call that replies
    /// to the parent).
    pub(super) fn new(serve: Arc<Serve>, id: u64, reply: ReplyTo, listed: bool, arrived: Option<Instant>) -> Self {
        Finish {
            serve,
            id,
            arrived,
            reply,
            ended: false,
            listed,
        }
    }

    /// Gives a call admitted without an entry among the running calls its
    /// entry, as it goes on waiting; `false` when every call was stopped
    /// meanwhile (it must not start then).
    pub(super) fn list(&mut self, current: &CurrentCall, blocking: bool) -> bool {
        if self.listed {
            return true;
        }
        self.listed = true;
        let running = Running {
            call: current.clone(),
            inline: false,
            linked: false,
            blocking,
        };
        if self.serve.enter_late(self.id, running) {
            return true;
        }
        // A blocking body is told, as the stop would have told it, and
        // starts all the same.
        current.cancel();
        blocking
    }

    /// The call's id.
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// The call's end, with its outcome.
    pub(super) fn reply(&mut self, outcome: Outcome) {
        if self.ended {
            return;
        }
        self.ended = true;
        // Counted out first: when the parent hears of it, the slot is free
        // here too.
        let alone = self.done();
        match std::mem::replace(&mut self.reply, ReplyTo::Caller) {
            ReplyTo::Caller => {}
            // The last call running replies straight from its thread;
            // replies of calls running together are batched, and the ends
            // of casts among them share one frame.
            ReplyTo::Parent(reply) => {
                let _ = match outcome {
                    Outcome::Done if !alone => reply.send_ended(self.id),
                    outcome => {
                        let runner_us = self.arrived.map_or(0, |at| at.elapsed().as_micros() as u64);
                        let frame = ToParent::Reply {
                            id: self.id,
                            outcome,
                            runner_us,
                        };
                        reply.send_alone(frame, alone)
                    }
                };
            }
            ReplyTo::Held { hold, function } => hold.release(function, outcome),
        }
    }

    /// The caller's outcome before the work has ended.
    pub(super) fn early(&self, outcome: Outcome) {
        if let ReplyTo::Parent(reply) = &self.reply {
            let _ = reply.send(ToParent::Early { id: self.id, outcome });
        }
    }

    /// The runner-side accounting of a call's end; returns whether no other
    /// call runs now.
    fn done(&self) -> bool {
        self.serve.count_out(self.listed.then_some(self.id))
    }
}

impl Serve {
    /// Counts a call out: removes its entry among the running calls (`id`,
    /// `None` for a call that has none) and drops the count; returns
    /// whether no other call runs now (as far as the entries tell).
    pub(super) fn count_out(&self, id: Option<u64>) -> bool {
        let alone = id.is_none_or(|id| {
            let mut tasks = self.calls.tasks.lock().expect("poisoned");
            if let Some(sink) = tasks.remove(&id).as_ref().and_then(|r| r.call.stream()) {
                // A sender the body handed on sends nothing after the end.
                sink.close();
            }
            tasks.is_empty()
        });
        // Noted before the count drops when this is likely the last call,
        // so an idle check never sees no work and an older time.
        let last = self.calls.active.load(Ordering::Acquire) == 1;
        if last {
            self.touch();
        }
        // SeqCst: see `Serve::went_quiet`.
        if self.calls.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            if !last {
                self.touch();
            }
            self.went_quiet();
        }
        alone
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        // Dropped before an outcome: the work was aborted.
        self.reply(Outcome::Aborted);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::settle as settle_with;
    use crate::error::FnErrorKind;
    use crate::func::context::CurrentCall;
    use crate::wire::frame::Outcome;

    fn settle(outcome: Outcome, call: &CurrentCall) -> Outcome {
        settle_with(outcome, call.deadline(), || call.is_stopped())
    }

    fn call(deadline: Option<Instant>) -> CurrentCall {
        CurrentCall::new(&Arc::default(), 1, deadline)
    }

    fn returned(kind: FnErrorKind) -> Outcome {
        Outcome::Returned {
            kind,
            message: "stopped".into(),
        }
    }

    #[test]
    fn a_failure_once_the_deadline_passed_is_the_deadline() {
        let past = call(Some(Instant::now() - Duration::from_millis(1)));
        for failure in [
            returned(FnErrorKind::Internal),
            returned(FnErrorKind::Cancelled),
            Outcome::Panicked("boom".into()),
            Outcome::Codec("output".into()),
        ] {
            assert_eq!(settle(failure, &past), Outcome::Deadline);
        }
        // Before the deadline a failure is the body's own.
        let future = call(Some(Instant::now() + Duration::from_secs(60)));
        assert_eq!(
            settle(returned(FnErrorKind::InvalidArgument), &future),
            returned(FnErrorKind::InvalidArgument)
        );
    }

    #[test]
    fn a_success_at_the_deadline_is_kept() {
        let past = call(Some(Instant::now() - Duration::from_millis(1)));
        assert_eq!(settle(Outcome::Ok(vec![1]), &past), Outcome::Ok(vec![1]));
        assert_eq!(settle(Outcome::Done, &past), Outcome::Done);
    }

    #[test]
    fn a_body_that_stopped_because_its_call_was_stopped_is_aborted() {
        let stopped = call(None);
        assert_eq!(
            settle(returned(FnErrorKind::Cancelled), &stopped),
            returned(FnErrorKind::Cancelled),
            "not stopped: the body's own error"
        );
        stopped.cancel();
        assert_eq!(settle(returned(FnErrorKind::Cancelled), &stopped), Outcome::Aborted);
        assert_eq!(
            settle(returned(FnErrorKind::Internal), &stopped),
            returned(FnErrorKind::Internal),
            "another error stays what it is"
        );
    }
}
