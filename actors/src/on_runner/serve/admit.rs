//! Admission: where a call enters the engine. [`Serve::dispatch`] runs on
//! the link thread, called by the connection's reader with a call frame: it
//! refuses the call while the runner drains, holds a registered function's
//! argument bytes for the helper to decode (other calls have their work
//! built here), counts the call in, records
//! it among the running calls, arms its end, and queues it for a helper
//! (`helpers.rs`, then `start.rs`).
//!
//! The local backend's entries live here too: [`Serve::run_inline`] runs a
//! call to its end in the caller's own task, and [`Serve::start_now`]
//! starts a one-way call at once.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures_util::FutureExt as _;
use tokio::sync::Notify;

use super::end::{Finish, outcome};
use super::run::run_until;
use super::start::{HeldArgs, INLINE_ARGS, Start, Work};
use super::{Running, Serve};
use crate::func::context::CurrentCall;
use crate::func::erased::BoxFuture;
use crate::wire::frame::{CallFrame, CallRef, Outcome, ToParent, is_child_operation};
use crate::wire::outbox::Outbox;

impl Serve {
    /// Admits a call and hands it to a helper task on the work runtime; its
    /// outcome goes to `reply` (the parent connection), when the work has
    /// ended.
    /// `payload` holds the arguments of a call whose frame was split (they
    /// are then not in `call`).
    pub(crate) fn dispatch(
        self: &Arc<Self>,
        call: CallRef<'_>,
        payload: Option<Vec<u8>>,
        deadline: Option<Instant>,
        reply: Outbox<ToParent>,
    ) {
        // A registered function's call is only admitted here: its work is
        // built (the arguments decoded) by the helper that starts it, off
        // the thread that reads the connection. Calls of a traced caller,
        // child operations, and arguments too large to hold inline (but not
        // split off the frame) are built here.
        let (work, blocking, current) = match self.deferred(&call, payload) {
            Ok((work, blocking)) => match self.admit(&call, deadline) {
                Ok(current) => {
                    self.count_in();
                    (work, blocking, current)
                }
                Err(outcome) => return send(&reply, call.id, outcome),
            },
            Err(payload) => match self.begin(&call, payload, deadline) {
                Ok((work, blocking, current)) => (Work::Built(self.traced(&call, work)), blocking, current),
                Err(outcome) => return send(&reply, call.id, outcome),
            },
        };
        let id = call.id;
        // The entry exists before the task does (its `Finish` removes it);
        // the task's abort handle joins the call once it is spawned.
        self.calls.tasks.lock().expect("poisoned").insert(
            id,
            Running {
                call: current.clone(),
                inline: None,
                linked: call.linked,
                blocking,
            },
        );
        // The call's end is armed now: a call that never gets to run (its
        // task aborted before a first poll, or never spawned because the
        // runtime is going) still counts out and replies `Aborted`.
        let start = Start {
            finish: Finish::new(Arc::clone(self), id, Some(reply)),
            work,
            current,
            deadline,
            blocking,
            want_result: call.want_result,
        };
        // Calls are started by helper tasks on the work runtime, handed over
        // through one queue: the first poll of a body (often its whole
        // run), the spawns of those that wait, and the wake-ups of idle
        // workers they bring happen there, not on the link thread that
        // reads the connection. When that runtime is gone the call is
        // dropped, and so ended.
        self.starts.push(start);
    }

    /// The work of a registered function's call, to be built by its helper;
    /// the payload back when the call is built at admission instead.
    fn deferred(&self, call: &CallRef<'_>, payload: Option<Vec<u8>>) -> Result<(Work, bool), Option<Vec<u8>>> {
        let name = call.function;
        if call.trace.is_some() || is_child_operation(name) {
            return Err(payload);
        }
        let Some((function, blocking)) = self.registry.key(name) else {
            return Err(payload);
        };
        let args = match payload {
            Some(owned) => HeldArgs::Owned(owned),
            None if call.args.len() <= INLINE_ARGS => {
                let mut bytes = [0; INLINE_ARGS];
                bytes[..call.args.len()].copy_from_slice(call.args);
                HeldArgs::Inline(bytes, call.args.len() as u8)
            }
            None => return Err(None),
        };
        Ok((
            Work::Deferred {
                function,
                args,
                bare: call.bare,
            },
            blocking,
        ))
    }

    /// Admits a call: its work, counted as running, whether it blocks, and
    /// its context; the outcome to answer at once when it cannot start
    /// (draining, unknown).
    fn begin(
        self: &Arc<Self>,
        call: &CallRef<'_>,
        payload: Option<Vec<u8>>,
        deadline: Option<Instant>,
    ) -> Result<(BoxFuture, bool, CurrentCall), Outcome> {
        let current = self.admit(call, deadline)?;
        let (work, blocking) = self.build_work(call, payload, &current)?;
        self.count_in();
        Ok((work, blocking, current))
    }

    /// A call's context, unless the runner takes no more calls (drain).
    fn admit(&self, call: &CallRef<'_>, deadline: Option<Instant>) -> Result<CurrentCall, Outcome> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(Outcome::Refused);
        }
        Ok(CurrentCall::new(
            self.runner,
            Arc::clone(&self.states),
            call.id,
            deadline,
        ))
    }

    /// Counts an admitted call as running.
    fn count_in(&self) {
        // The idle clock counts from when the runner last had nothing to
        // do: it is read only when a busy spell starts or ends, not on
        // every call.
        if self.calls.active.fetch_add(1, Ordering::AcqRel) == 0 {
            self.touch();
        }
    }

    /// A traced caller's work runs in a span of its own, the caller's
    /// child. Untraced calls build no span at all.
    fn traced(&self, call: &CallRef<'_>, work: BoxFuture) -> BoxFuture {
        match call.trace {
            Some(trace) => Box::pin(tracing::Instrument::instrument(
                work,
                crate::observe::runner_call_span(
                    call.function,
                    call.id,
                    &self.runner.to_string(),
                    &self.pool,
                    trace.traceparent,
                ),
            )),
            None => work,
        }
    }

    /// Runs a call in the caller's own task (the local backend: the runner
    /// is this process, so the extra task and its wake-ups buy nothing).
    /// Accounting, deadline, panics and aborts are as for [`Serve::dispatch`];
    /// dropping the future cancels the call. `None` when the runner aborted
    /// it (the runner is going away). Blocking functions go through
    /// `dispatch` instead: their body outlives a dropped caller.
    pub(crate) async fn run_inline(self: &Arc<Self>, call: CallRef<'_>, deadline: Option<Instant>) -> Option<Outcome> {
        let (work, _, current) = match self.begin(&call, None, deadline) {
            Ok(begun) => begun,
            Err(outcome) => return Some(outcome),
        };
        let abort = Arc::new(Notify::new());
        let running = Running {
            call: current,
            inline: Some(Arc::clone(&abort)),
            linked: call.linked,
            blocking: false,
        };
        self.calls.tasks.lock().expect("poisoned").insert(call.id, running);
        let _finish = Finish::new(Arc::clone(self), call.id, None);
        let run = AssertUnwindSafe(work).catch_unwind();
        let result = tokio::select! {
            biased;
            _ = abort.notified() => return None,
            result = run_until(deadline, run) => result,
        };
        Some(outcome(result, call.want_result))
    }

    /// Creates the work of `call` now and returns a future that runs it to
    /// the end, accounted like any call, its outcome dropped.
    pub(crate) fn start_now(self: &Arc<Self>, call: CallFrame) -> impl Future<Output = ()> + Send + 'static {
        let current = CurrentCall::new(self.runner, Arc::clone(&self.states), call.id, None);
        let work = self.build_work(&call.view(), None, &current);
        let this = Arc::clone(self);
        async move {
            if let Ok((work, _)) = work {
                this.calls.active.fetch_add(1, Ordering::AcqRel);
                let _finish = Finish::new(Arc::clone(&this), call.id, None);
                let _ = work.await;
            }
        }
    }
}

/// Sends a call's outcome to the parent.
fn send(reply: &Outbox<ToParent>, id: u64, outcome: Outcome) {
    let _ = reply.send(ToParent::Reply { id, outcome });
}
