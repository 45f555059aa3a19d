//! Admission: where a call enters the engine. [`Serve::dispatch`] runs on
//! the link thread, called by the connection's reader with a call frame: it
//! refuses the call while the runner drains and an unknown function at
//! once; it holds the call's argument bytes for the helper (it decodes none:
//! decoding the application's types is the application's code, which never
//! runs on the link thread), counts the call in, records it among the
//! running calls, arms its end, and queues it for a helper (`helpers.rs`,
//! then `start.rs`): operations on placed children in the helpers' ordered
//! lane, so their messages reach a child in the order they came. A traced
//! call's span is made there too, not here.
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

use super::end::{Finish, outcome, settle};
use super::run::run_until;
use super::start::{HeldArgs, Start, Traced, Work, child_op};
use super::{Running, Serve};
use crate::func::args::ArgBytes;
use crate::func::context::CurrentCall;
use crate::func::erased::BoxFuture;
use crate::func::stream::StreamSink;
use crate::wire::frame::{CallFrame, CallRef, Outcome, PLACE, ToParent, is_child_operation};
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
        // Nothing of the call is built here: its work is built (its
        // arguments decoded, a child's message decoded and enqueued, a
        // traced call's span made) by the helper that starts it, off the
        // thread that reads the connection.
        let held = self.held(&call, payload).and_then(|held| {
            // A streaming call's items go where its reply goes.
            let sink = held.stream.then(|| StreamSink::new(call.id, reply.clone()));
            Ok((self.admit(&call, deadline, sink)?, held))
        });
        let (
            current,
            Held {
                work,
                blocking,
                ordered,
                ..
            },
        ) = match held {
            Ok(held) => held,
            Err(outcome) => return send(&reply, call.id, outcome),
        };
        self.count_in();
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
            trace: call.trace.map(|trace| Traced::new(call.function, trace.traceparent)),
        };
        // Calls are started by helper tasks on the work runtime, handed over
        // through one queue: the first poll of a body (often its whole
        // run), the spawns of those that wait, and the wake-ups of idle
        // workers they bring happen there, not on the link thread that
        // reads the connection. When that runtime is gone the call is
        // dropped, and so ended.
        if ordered {
            self.starts.push_ordered(start);
        } else {
            self.starts.push(start);
        }
    }

    /// A call's work as admission holds it for its helper; `UnknownFunction`
    /// for a name nothing serves.
    fn held(self: &Arc<Self>, call: &CallRef<'_>, payload: Option<Vec<u8>>) -> Result<Held, Outcome> {
        let name = call.function;
        if !is_child_operation(name) {
            let (function, blocking, stream) = self.registry.key(name).ok_or(Outcome::UnknownFunction)?;
            let work = Work::Deferred {
                function,
                args: HeldArgs::hold(call.args, payload),
                bare: call.bare,
            };
            return Ok(Held {
                work,
                blocking,
                ordered: false,
                stream,
            });
        }
        if let Some(actor) = name.strip_prefix(PLACE) {
            // Only the bytes are taken here: the child is made (its
            // arguments decoded) when the work first runs.
            let args = match payload {
                Some(owned) => ArgBytes::new(owned, call.bare),
                None => ArgBytes::new(call.args, call.bare),
            };
            let work = self.place_work(actor, args, call.id, call.linked);
            return Ok(Held {
                work: Work::Built(work),
                blocking: false,
                ordered: false,
                stream: false,
            });
        }
        let op = child_op(name).ok_or(Outcome::UnknownFunction)?;
        let args = HeldArgs::hold(call.args, payload);
        Ok(Held {
            work: Work::Child { op, args },
            blocking: false,
            ordered: true,
            stream: false,
        })
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
        let current = self.admit(call, deadline, None)?;
        let (work, blocking) = self.build_work(call, payload, &current)?;
        self.count_in();
        Ok((work, blocking, current))
    }

    /// A call's context (with a streaming call's `sink`), unless the runner
    /// takes no more calls (drain).
    fn admit(
        &self,
        call: &CallRef<'_>,
        deadline: Option<Instant>,
        sink: Option<Arc<StreamSink>>,
    ) -> Result<CurrentCall, Outcome> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(Outcome::Refused);
        }
        Ok(CurrentCall::with_key(
            self.runner,
            Arc::clone(&self.states),
            call.id,
            deadline,
            call.idempotency_key,
            sink,
        ))
    }

    /// The caller of streaming call `id` has room for `items` more of its
    /// items. Unknown ids (a call that has ended) are ignored.
    pub(crate) fn credit(&self, id: u64, items: u32) {
        let tasks = self.calls.tasks.lock().expect("poisoned");
        if let Some(sink) = tasks.get(&id).and_then(|running| running.call.stream()) {
            sink.grant(items);
        }
    }

    /// Counts an admitted call as running.
    fn count_in(&self) {
        // The idle clock counts from when the runner last had nothing to
        // do: it is read only when a busy spell ends (`Finish`), not on
        // every call. Nothing reads it while calls run (idle checks look
        // at the count first).
        self.calls.active.fetch_add(1, Ordering::AcqRel);
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
        // Asked only of a failure: whether the call was stopped.
        let stopped = || {
            let tasks = self.calls.tasks.lock().expect("poisoned");
            tasks.get(&call.id).is_some_and(|running| running.call.is_stopped())
        };
        Some(settle(outcome(result, call.want_result), deadline, stopped))
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

/// A call's work as admission holds it for its helper.
struct Held {
    work: Work,
    /// It runs on the blocking pool.
    blocking: bool,
    /// It starts in order with the others of its kind (operations on
    /// placed children).
    ordered: bool,
    /// A streaming function: its call gets a sink for its items.
    stream: bool,
}

/// Sends a call's outcome to the parent.
fn send(reply: &Outbox<ToParent>, id: u64, outcome: Outcome) {
    let _ = reply.send(ToParent::Reply {
        id,
        outcome,
        runner_us: 0,
    });
}
