//! Starting a call: its work, and its first poll in a helper. A call comes
//! from the helper queue (`helpers.rs`) as a [`Start`]; `Start::run` builds
//! its work if admission only held its arguments (the function decodes them
//! now), then polls it once. A body done in that poll ends the call here
//! (`end.rs`); one that waits, or blocks, moves to a task of its own
//! (`run.rs`).
//!
//! [`Serve::build_work`] makes any call's work from its frame: a registered
//! function, or an operation on placed children (whose messages are
//! enqueued as the work is built, so they keep their order).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::Serve;
use super::end::{Finish, end};
use super::run::spawn;
use crate::func::args::ArgBytes;
use crate::func::args::Args;
use crate::func::context::CurrentCall;
use crate::func::erased::BoxFuture;
use crate::wire::frame::{CHILD_CALL, CHILD_CAST, CHILD_STOP, CallRef, ChildEnvelope, Outcome, PLACE};

/// Arguments up to this size travel from the link thread to the helper in
/// the call's own record, without an allocation.
pub(super) const INLINE_ARGS: usize = 48;

/// A call's work: built, or to be built by the helper that starts it.
pub(super) enum Work {
    Built(BoxFuture),
    Deferred {
        /// The registry's name of the function.
        function: &'static str,
        args: HeldArgs,
        bare: bool,
    },
}

/// The arguments of a call whose work is not built yet.
pub(super) enum HeldArgs {
    Inline([u8; INLINE_ARGS], u8),
    Owned(Vec<u8>),
}

/// A call admitted by [`Serve::dispatch`], to be started on the work runtime.
pub(super) struct Start {
    /// The call's end, armed at admission.
    pub(super) finish: Finish,
    pub(super) work: Work,
    pub(super) current: CurrentCall,
    pub(super) deadline: Option<Instant>,
    pub(super) blocking: bool,
    pub(super) want_result: bool,
}

impl Start {
    /// Runs the call's first step here, in a helper task: a body that
    /// finishes at once (the common case for short functions) needs no
    /// task of its own. One that waits moves, as it is, to a task of its
    /// own; blocking bodies get their task at once. A call stopped before
    /// it started ends here (`Aborted`), its work never built.
    pub(super) fn run(self) {
        if !self.blocking && self.current.is_stopped() {
            return;
        }
        let Start {
            mut finish,
            work,
            current,
            deadline,
            blocking,
            want_result,
        } = self;
        let mut work = match work {
            Work::Built(work) => work,
            Work::Deferred { function, args, bare } => {
                // The function decodes its arguments before `start` returns.
                let inline;
                let args = match args {
                    HeldArgs::Inline(bytes, len) => {
                        inline = bytes;
                        ArgBytes::new(&inline[..usize::from(len)], bare)
                    }
                    HeldArgs::Owned(bytes) => ArgBytes::new(bytes, bare),
                };
                match finish.serve.registry.start(function, args, current.clone()) {
                    Some((work, _)) => work,
                    None => return finish.reply(Outcome::UnknownFunction),
                }
            }
        };
        if !blocking {
            // Polled with a waker that does nothing: a body that is not
            // done is polled again, with its task's waker, as soon as that
            // task runs.
            let mut cx = Context::from_waker(Waker::noop());
            match std::panic::catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(&mut cx))) {
                Ok(Poll::Pending) => {}
                Ok(Poll::Ready(result)) => return end(&mut finish, Some(Ok(result)), want_result),
                Err(panic) => return end(&mut finish, Some(Err(panic)), want_result),
            }
        }
        spawn(finish, work, current, deadline, blocking, want_result);
    }
}

impl Serve {
    /// The work a call names: a registered function, or an operation on
    /// placed children; and whether it runs on the blocking pool. Child
    /// messages are enqueued here, synchronously, so a caller's messages
    /// reach their child in the order they were sent.
    pub(super) fn build_work(
        self: &Arc<Self>,
        call: &CallRef<'_>,
        payload: Option<Vec<u8>>,
        current: &CurrentCall,
    ) -> Result<(BoxFuture, bool), Outcome> {
        let name = call.function;
        // A split frame's arguments are in a buffer of their own: bare bytes
        // there become the function's argument as they are.
        let args = match payload {
            Some(owned) => ArgBytes::new(owned, call.bare),
            None => ArgBytes::new(call.args, call.bare),
        };
        if let Some(actor) = name.strip_prefix(PLACE) {
            let (this, actor, id, linked) = (Arc::clone(self), actor.to_owned(), call.id, call.linked);
            let args = args.into_owned();
            let place = async move {
                this.children
                    .place(&this, &actor, args, id, linked)
                    .await
                    .map(Args::encoded)
            };
            return Ok((Box::pin(place), false));
        }
        match name {
            CHILD_CAST => {
                self.children.cast(&decode_envelope(args.as_bytes())?)?;
                Ok((Box::pin(std::future::ready(Ok(Args::default()))), false))
            }
            CHILD_CALL => Ok((self.children.call(&decode_envelope(args.as_bytes())?)?, false)),
            CHILD_STOP => {
                let child: u64 = rmp_serde::from_slice(args.as_bytes()).map_err(|e| Outcome::Codec(e.to_string()))?;
                self.children.stop(child);
                Ok((Box::pin(std::future::ready(Ok(Args::default()))), false))
            }
            _ => self
                .registry
                .start(name, args, current.clone())
                .ok_or(Outcome::UnknownFunction),
        }
    }
}

fn decode_envelope(bytes: &[u8]) -> Result<ChildEnvelope, Outcome> {
    rmp_serde::from_slice(bytes).map_err(|e| Outcome::Codec(format!("child message: {e}")))
}
