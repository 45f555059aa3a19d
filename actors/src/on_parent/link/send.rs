//! Sending: a caller's call and its wait, casts, control frames and
//! cancels, on either transport.
//!
//! A call comes here from its caller ([`Lease::call`], or a placed child's
//! handle through [`RunnerConn::call`]). It is entered in the table of calls
//! in flight (`pending.rs`), its frame goes out, and the caller waits here
//! for the outcome `pending.rs` routes back; a caller that stops waiting
//! first leaves its slot parked in the table (`CallGuard`). Casts sent
//! without a task of their own go into the table too, and nobody waits.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::oneshot;

use super::deadlines::DEADLINE_GRACE;
use super::outcome::outcome_into_result;
use super::pending::{Delivered, Pending};
use super::records::TracedCall;
use super::{CallRequest, RunnerConn, Transport};
use crate::error::Error;
use crate::func::args::Args;
use crate::on_parent::pool::Lease;
use crate::on_runner::TerminatorMessage;
use crate::wire::clock::budget_micros;
use crate::wire::frame::{CallFrame, CallRef, Outcome, ToRunner};

impl RunnerConn {
    /// Sends a call and waits for its outcome.
    ///
    /// # Errors
    ///
    /// [`Error::RunnerDown`] when the runner is gone before it answers,
    /// [`Error::Codec`] when the arguments exceed the frame limit,
    /// [`Error::Deadline`] when no answer came by the deadline (plus a short
    /// grace for the runner's own deadline reply).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future forgets the call; a linked call is also cancelled on
    /// the runner (its task is aborted).
    pub async fn call(&self, req: CallRequest<'_>) -> Result<Outcome, Error> {
        self.call_lent(req, None).await
    }

    /// Sends a call and waits for its outcome, like [`RunnerConn::call`];
    /// `hold` (the call's checkout lease) is checked in when the call's work
    /// has ended on the runner. When the caller stops waiting first (a
    /// deadline, a cancel, a dropped future), the hold stays with the
    /// connection until the runner reports the end, so a slot is free only
    /// when its work is over.
    ///
    /// # Errors
    ///
    /// As [`RunnerConn::call`].
    ///
    /// # Cancel safety
    ///
    /// As [`RunnerConn::call`]; the hold is kept until the work ends.
    pub async fn call_held(&self, req: CallRequest<'_>, hold: Option<Lease>) -> Result<Outcome, Error> {
        // A lease the call keeps past this future is handed on; this one is
        // then spent.
        self.call_lent(req, hold.as_ref()).await
    }

    /// [`RunnerConn::call_held`] with the caller's lease borrowed: when the
    /// caller stops waiting before the work has ended, the checkout is
    /// handed on to a lease of the connection's (see [`Lease::hand_on`]).
    pub(crate) fn call_lent<'a>(
        &'a self,
        req: CallRequest<'a>,
        hold: Option<&'a Lease>,
    ) -> impl Future<Output = Result<Outcome, Error>> + Send + 'a {
        // The call's own future, not one that wraps it: a call's future is
        // moved and polled on the hot path.
        self.call_as(self.next_call_id(), req, hold, None)
    }

    /// The next call id of this connection.
    pub(super) fn next_call_id(&self) -> u64 {
        self.inner.calls.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// [`RunnerConn::call_lent`] as call `id`; a streaming call (`window`
    /// set) also grants the runner credit for `window` items as it is sent.
    pub(super) async fn call_as(
        &self,
        id: u64,
        req: CallRequest<'_>,
        hold: Option<&Lease>,
        window: Option<u32>,
    ) -> Result<Outcome, Error> {
        if self.is_down() {
            return Err(self.down_error());
        }
        match &self.inner.transport {
            Transport::Local { serve, replies, .. } => {
                // In-process: a borrowed view, no frame to build.
                let call = CallRef {
                    id,
                    function: req.function,
                    args: req.args.as_bytes(),
                    budget_us: None,
                    want_result: req.want_result,
                    linked: req.linked,
                    trace: None,
                    bare: req.args.is_bare(),
                    idempotency_key: req.idempotency_key,
                };
                // The body runs in this task (dropping the future ends it),
                // unless it blocks or streams.
                let call = match window {
                    Some(_) => call,
                    None => match serve.run_inline(call, req.deadline) {
                        Ok(run) => {
                            // Timed only where the call's span (at debug)
                            // can be on: two clock reads are a tenth of a
                            // local call.
                            let timed = tracing::level_enabled!(tracing::Level::DEBUG).then(Instant::now);
                            let outcome = run.await;
                            if let Some(at) = timed {
                                tracing::Span::current().record("runner_us", at.elapsed().as_micros() as u64);
                            }
                            return outcome.ok_or_else(|| self.down_error());
                        }
                        Err(call) => call,
                    },
                };
                // A blocking body outlives a caller that gives up: it runs
                // as a task and reports its end like a remote one. So does
                // a stream, whose items come as frames.
                let Some(replies) = replies.upgrade() else {
                    return Err(self.down_error());
                };
                let (linked, deadline) = (req.linked, req.deadline);
                let sent = |_alone| {
                    serve.dispatch(call, None, deadline, Instant::now(), replies);
                    if let Some(items) = window {
                        serve.credit(id, items);
                    }
                    true
                };
                self.send_and_wait(id, linked, deadline, hold, sent).await
            }
            Transport::Remote { tx } => {
                // A too-large argument fails this call only, never the
                // connection.
                if !self.fits(req.function, &req.args) {
                    return Err(Error::Codec(format!(
                        "argument of {} bytes exceeds max_frame_size of {} bytes",
                        req.args.len(),
                        self.inner.max_frame
                    )));
                }
                let (linked, deadline) = (req.linked, req.deadline);
                // A trace context only while a subscriber traces this call
                // (one atomic load otherwise).
                let (trace, _traced) = match crate::observe::current_trace() {
                    Some((trace, span)) => (Some(trace), Some(TracedCall::new(self, id, span))),
                    None => (None, None),
                };
                let (args, bare) = req.args.into_parts();
                let frame = CallFrame {
                    id,
                    function: req.function.to_owned(),
                    args,
                    // The time left, not the instant: the runner's clock
                    // need not agree with ours.
                    budget_us: deadline.map(budget_micros),
                    want_result: req.want_result,
                    linked,
                    trace,
                    bare,
                    idempotency_key: req.idempotency_key.map(str::to_owned),
                };
                // A lone call goes straight out from this thread; calls
                // made together are batched by the link thread.
                let sent = |alone| match window {
                    None => tx.send_alone(ToRunner::Call(frame), alone),
                    // The first credit follows the call's frame.
                    Some(items) => tx.send(ToRunner::Call(frame)) && tx.send(ToRunner::Credit { id, items }),
                };
                self.send_and_wait(id, linked, deadline, hold, sent).await
            }
        }
    }

    /// Registers call `id`, sends it with `send` (told whether it is the only
    /// call in flight), and waits for its outcome.
    pub(super) async fn send_and_wait(
        &self,
        id: u64,
        linked: bool,
        deadline: Option<Instant>,
        hold: Option<&Lease>,
        send: impl FnOnce(bool) -> bool,
    ) -> Result<Outcome, Error> {
        let (tx, rx) = oneshot::channel();
        // The runner enforces the deadline; the parent keeps its own watch
        // too, for a runner that is frozen or a body that never yields (one
        // per connection, not a timer per call).
        let give_up = deadline.map(|at| at + DEADLINE_GRACE);
        // The runner may have gone since the caller's look at `is_down`: the
        // table then refuses the call, which fails now rather than wait for
        // an answer nobody sends.
        let Ok(alone) = self.track(id, Pending::Waiting { waiter: tx, give_up }) else {
            return Err(self.down_error());
        };
        if !send(alone) {
            drop(self.untrack(id));
            return Err(self.down_error());
        }
        if let Some(at) = give_up {
            // After the entry is in: the watch, if it has just looked,
            // learns of it here.
            self.inner.deadlines.note(at);
        }
        let mut guard = CallGuard {
            conn: self,
            id,
            linked,
            hold,
            armed: true,
        };
        let received = rx.await;
        guard.armed = false;
        match received {
            Ok(Delivered {
                outcome,
                ended: true,
                runner_us,
            }) => {
                if runner_us > 0 && tracing::dispatcher::has_been_set() {
                    // The caller's `flame.call` span, where it has one.
                    tracing::Span::current().record("runner_us", runner_us);
                }
                Ok(outcome)
            }
            Ok(Delivered {
                outcome, ended: false, ..
            }) => {
                self.park(id, guard.hold.take().map(Lease::hand_on));
                Ok(outcome)
            }
            Err(_) => Err(self.down_error()),
        }
    }

    /// Sends a cast on `hold`'s slot without waiting for anything: the
    /// frame goes out (or is queued) before this returns, and the slot is
    /// checked in when the runner reports the cast's end. No task, no
    /// channel: what a cast costs on the parent is its frame.
    ///
    /// An in-process runner is handed the cast directly (see
    /// `cast_in_process`). Gives the arguments and the hold back when the
    /// cast cannot go this way (a runner that is going away, arguments over
    /// the frame limit), for the caller to send it the slow way.
    pub(crate) fn cast_held(&self, function: &'static str, args: Args, hold: Lease) -> Result<(), (Args, Lease)> {
        let tx = match &self.inner.transport {
            Transport::Remote { tx } => tx,
            Transport::Local { serve, .. } => {
                return self.cast_in_process(serve, function, args, hold);
            }
        };
        if !self.is_usable() || !self.fits(function, &args) {
            return Err((args, hold));
        }
        let id = self.inner.calls.next_id.fetch_add(1, Ordering::Relaxed);
        let Ok(alone) = self.track(id, Pending::Cast(hold, function)) else {
            // The runner went since `is_usable`: the cast goes with it, as
            // one sent a moment earlier would (`close` fails the calls in
            // the table); its slot is checked in as the refused entry drops.
            self.cast_failed(function, &self.down_error());
            return Ok(());
        };
        let (args, bare) = args.into_parts();
        let frame = CallFrame {
            bare,
            ..CallFrame::one_way(id, function, args)
        };
        if !tx.send_alone(ToRunner::Call(frame), alone) {
            // The connection closed meanwhile: the runner is going, and the
            // cast with it (as a cast sent a moment earlier would be).
            drop(self.untrack(id));
            self.cast_failed(function, &self.down_error());
        }
        Ok(())
    }

    /// [`RunnerConn::cast_held`] to an in-process runner: the cast is
    /// admitted as a remote runner admits one (its first poll in one of the
    /// runner's helpers, a task only for a body that waits), and the runner
    /// itself checks its slot in when the work has ended: no entry among
    /// the calls in flight, no reply to route, nothing spawned.
    fn cast_in_process(
        &self,
        serve: &Arc<crate::on_runner::Serve>,
        function: &'static str,
        args: Args,
        hold: Lease,
    ) -> Result<(), (Args, Lease)> {
        if !self.is_usable() {
            return Err((args, hold));
        }
        let id = self.inner.calls.next_id.fetch_add(1, Ordering::Relaxed);
        let call = CallRef {
            id,
            function,
            args: args.as_bytes(),
            budget_us: None,
            want_result: false,
            linked: false,
            trace: None,
            bare: args.is_bare(),
            idempotency_key: None,
        };
        serve.dispatch_held(function, call, hold.into_release());
        Ok(())
    }

    /// Sends a call whose outcome nobody awaits (a cast to a placed child),
    /// before returning: what one task sends this way reaches the runner in
    /// order.
    ///
    /// # Errors
    ///
    /// [`Error::RunnerDown`] when the runner is gone.
    pub fn send_now(&self, function: &str, args: Vec<u8>) -> Result<(), Error> {
        if let Some(reason) = self.down_reason() {
            return Err(Error::RunnerDown { reason });
        }
        let frame = CallFrame::one_way(self.inner.calls.next_id.fetch_add(1, Ordering::Relaxed), function, args);
        match &self.inner.transport {
            Transport::Local { serve, .. } => {
                let serve = Arc::clone(serve);
                // Child messages are enqueued when the work is created, so
                // create it now; only the (trivial) rest runs in a task.
                let work = serve.start_now(frame);
                tokio::spawn(work);
                Ok(())
            }
            // The reply (`Done`) matches no pending call and is dropped.
            Transport::Remote { tx } => {
                if tx.send(ToRunner::Call(frame)) {
                    Ok(())
                } else {
                    Err(self.down_error())
                }
            }
        }
    }

    /// A cast sent by [`RunnerConn::cast_held`] ended with `outcome`: a
    /// failure is logged (nobody else hears of it). Its slot is checked in
    /// before this.
    pub(crate) fn cast_ended(&self, function: &str, outcome: Outcome) {
        if let Err(error) = outcome_into_result(outcome, function, std::time::Duration::MAX) {
            self.cast_failed(function, &error);
        }
    }

    /// Logs a cast sent by [`RunnerConn::cast_held`] that failed: nobody
    /// else hears of it.
    pub(super) fn cast_failed(&self, function: &str, error: &Error) {
        tracing::warn!(target: "ractor_flame::pool", runner = %self.inner.runner, function, %error, "cast failed");
    }

    /// Whether a call of `function` with `args` fits in a frame, with room
    /// left for the frame's envelope.
    fn fits(&self, function: &str, args: &Args) -> bool {
        args.len() <= self.inner.max_frame.saturating_sub(512 + function.len())
    }

    /// Sends a control frame (idle verdict, shutdown).
    pub(crate) fn control(&self, frame: ToRunner) {
        match &self.inner.transport {
            Transport::Local { control, .. } => {
                let _ = control.cast(TerminatorMessage::FromParent(frame));
            }
            Transport::Remote { tx } => {
                let _ = tx.send(frame);
            }
        }
    }

    /// Grants streaming call `id` credit for `items` more items.
    pub(super) fn credit(&self, id: u64, items: u32) {
        match &self.inner.transport {
            Transport::Local { serve, .. } => serve.credit(id, items),
            Transport::Remote { tx } => {
                let _ = tx.send(ToRunner::Credit { id, items });
            }
        }
    }

    /// Asks the runner to stop call `id`.
    pub(super) fn cancel(&self, id: u64) {
        match &self.inner.transport {
            Transport::Local { serve, .. } => serve.cancel(id),
            Transport::Remote { tx } => {
                let _ = tx.send(ToRunner::Cancel { id });
            }
        }
    }
}

/// Runs when a caller stops waiting before its call's outcome arrived (its
/// future dropped): cancels the work when the call is linked and keeps the
/// call's slot until the work ends.
struct CallGuard<'a> {
    conn: &'a RunnerConn,
    id: u64,
    linked: bool,
    hold: Option<&'a Lease>,
    armed: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if self.conn.park(self.id, self.hold.take().map(Lease::hand_on)) && self.linked {
            self.conn.cancel(self.id);
        }
    }
}
