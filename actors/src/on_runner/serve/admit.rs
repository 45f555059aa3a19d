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
//! call to its end in the caller's own task (an entry among the running
//! calls, a waiter for a stop and a timer only for a body that waits past
//! its first poll), [`Serve::dispatch_held`] admits a local cast whose end
//! releases its caller's hold (its slot) instead of replying, and
//! [`Serve::start_now`] starts a one-way call at once.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Instant;

use super::end::{Finish, Release, ReplyTo, outcome, settle};
use super::run::run_until;
use super::start::{HeldArgs, Start, Traced, Work, child_op};
use super::{Running, Serve};
use crate::func::args::ArgBytes;
use crate::func::context::CurrentCall;
use crate::func::stream::StreamSink;
use crate::wire::frame::{CallFrame, CallRef, Outcome, PLACE, ToParent, is_child_operation};
use crate::wire::outbox::Outbox;
use futures_util::FutureExt as _;

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
        arrived: Instant,
        reply: Outbox<ToParent>,
    ) {
        self.queue(call, payload, deadline, Some(arrived), ReplyTo::Parent(reply));
    }

    /// Admits a call made in this process that nobody waits for (a local
    /// cast), like [`Serve::dispatch`]: when its work has ended, `hold`
    /// (the caller's slot) is released with its outcome, here, with no
    /// reply to route.
    pub(crate) fn dispatch_held(self: &Arc<Self>, function: &'static str, call: CallRef<'_>, hold: Arc<dyn Release>) {
        self.queue(call, None, None, None, ReplyTo::Held { hold, function });
    }

    /// Admits a call and queues it for a helper; its end goes to `reply`
    /// (with the time since `arrived`, for a reply to the parent).
    fn queue(
        self: &Arc<Self>,
        call: CallRef<'_>,
        payload: Option<Vec<u8>>,
        deadline: Option<Instant>,
        arrived: Option<Instant>,
        reply: ReplyTo,
    ) {
        // Nothing of the call is built here: its work is built (its
        // arguments decoded, a child's message decoded and enqueued, a
        // traced call's span made) by the helper that starts it, off the
        // thread that reads the connection.
        //
        // A call nobody can stop by its id (a local cast: its caller does
        // not wait, and it is not linked) gets its entry among the running
        // calls, and its context, only if it waits past its first poll
        // (`start.rs`): its helper makes its context (allocated and freed
        // on one thread), and until it has an entry a stop of every call
        // reaches it through `stopping_all`. Any other call's entry exists
        // before its task does (its `Finish` removes it); the task's abort
        // handle joins the call once it is spawned.
        let listed = !matches!(reply, ReplyTo::Held { .. });
        let held = self.held(&call, payload).and_then(|held| {
            if !listed {
                self.accepts()?;
                return Ok((None, held));
            }
            // A streaming call's items go where its reply goes.
            let sink = match &reply {
                ReplyTo::Parent(reply) if held.stream => Some(StreamSink::new(call.id, reply.clone())),
                _ => None,
            };
            Ok((Some(self.admit(&call, deadline, sink)?), held))
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
            Err(outcome) => return reply.refuse(call.id, outcome),
        };
        self.count_in();
        let id = call.id;
        if let Some(current) = &current {
            self.calls.tasks.lock().expect("poisoned").insert(
                id,
                Running {
                    call: current.clone(),
                    inline: false,
                    linked: call.linked,
                    blocking,
                },
            );
        }
        // The call's end is armed now: a call that never gets to run (its
        // task aborted before a first poll, or never spawned because the
        // runtime is going) still counts out and replies `Aborted`.
        let start = Start {
            finish: Finish::new(Arc::clone(self), id, reply, listed, arrived),
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

    /// A call's context (with a streaming call's `sink`), unless the runner
    /// takes no more calls (drain).
    fn admit(
        &self,
        call: &CallRef<'_>,
        deadline: Option<Instant>,
        sink: Option<Arc<StreamSink>>,
    ) -> Result<CurrentCall, Outcome> {
        self.accepts()?;
        Ok(CurrentCall::with_key(
            &self.scope,
            call.id,
            deadline,
            call.idempotency_key,
            sink,
        ))
    }

    /// `Refused` while the runner takes no more calls (drain).
    fn accepts(&self) -> Result<(), Outcome> {
        match self.accepting.load(Ordering::Acquire) {
            true => Ok(()),
            false => Err(Outcome::Refused),
        }
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
    /// dropping the future cancels the call. The future gives `None` when
    /// the runner aborted the call (the runner is going away).
    ///
    /// Gives the call back (`Err`) when its function blocks: a blocking body
    /// outlives a dropped caller, so it goes through `dispatch`. The
    /// function is looked up once, here, for both.
    pub(crate) fn run_inline<'a>(
        self: &'a Arc<Self>,
        call: CallRef<'a>,
        deadline: Option<Instant>,
    ) -> Result<impl Future<Output = Option<Outcome>> + Send + 'a, CallRef<'a>> {
        let function = match is_child_operation(call.function) {
            true => None,
            false => self.registry.function(call.function),
        };
        if function.is_some_and(|f| f.blocking()) {
            return Err(call);
        }
        // Admitted and built now, before the caller's first poll (which
        // comes at once: the caller awaits this).
        let begun = self.admit(&call, deadline, None).and_then(|current| {
            let work = match function {
                Some(function) => function.start(ArgBytes::new(call.args, call.bare), current.clone()),
                // An operation on placed children, or an unknown name.
                None => self.build_work(&call, None, &current)?.0,
            };
            Ok((work, current))
        });
        Ok(async move {
            let (work, current) = match begun {
                Ok(begun) => begun,
                Err(outcome) => return Some(outcome),
            };
            self.count_in();
            // Counted out however this future ends: done, aborted, dropped.
            let mut end = InlineEnd {
                serve: self,
                id: call.id,
                listed: false,
            };
            let mut run = std::pin::pin!(AssertUnwindSafe(work).catch_unwind());
            // The first poll, as a helper's: a body done in it (most short
            // ones) needs no entry among the running calls, no waiter for
            // a stop and no timer. Nothing can stop a call in the middle of
            // a poll anyway.
            let first = std::future::poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx))).await;
            let result = match first {
                Poll::Ready(result) => Some(result),
                Poll::Pending => {
                    let running = Running {
                        call: current.clone(),
                        inline: true,
                        linked: call.linked,
                        blocking: false,
                    };
                    end.listed = true;
                    if !self.enter_late(call.id, running) {
                        return None;
                    }
                    // Boxed: the wait for a stop and the timer would
                    // otherwise make every local call's future larger, and
                    // futures are moved on the hot path.
                    Box::pin(async {
                        tokio::select! {
                            biased;
                            () = current.stopped() => None,
                            result = run_until(deadline, run) => Some(result),
                        }
                    })
                    .await?
                }
            };
            Some(settle(outcome(result, call.want_result), deadline, || {
                current.is_stopped()
            }))
        })
    }

    /// Creates the work of `call` now and returns a future that runs it to
    /// the end, accounted like any call, its outcome dropped.
    pub(crate) fn start_now(self: &Arc<Self>, call: CallFrame) -> impl Future<Output = ()> + Send + 'static {
        let current = CurrentCall::new(&self.scope, call.id, None);
        let work = self.build_work(&call.view(), None, &current);
        let this = Arc::clone(self);
        async move {
            if let Ok((work, _)) = work {
                this.calls.active.fetch_add(1, Ordering::AcqRel);
                let _finish = Finish::new(Arc::clone(&this), call.id, ReplyTo::Caller, true, None);
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

/// The end of a call run in its caller's task: counts it out when the
/// caller's future ends, however it ends.
struct InlineEnd<'a> {
    serve: &'a Serve,
    id: u64,
    /// It has an entry among the running calls (it waited).
    listed: bool,
}

impl Drop for InlineEnd<'_> {
    fn drop(&mut self) {
        self.serve.count_out(self.listed.then_some(self.id));
    }
}
