//! Starting a call: its work, and its first poll in a helper. A call comes
//! from the helper queue (`helpers.rs`) as a [`Start`]; `Start::run` builds
//! its work if admission only held its arguments (the function decodes them
//! now; an operation on placed children decodes and enqueues its message
//! now, in the helpers' ordered lane), wraps it in the runner's span of a
//! traced call, then polls it once. A body done in that poll ends the call
//! here (`end.rs`); one that waits, or blocks, moves to a task of its own
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
    /// An operation on placed children ([`CHILD_CAST`], [`CHILD_CALL`],
    /// [`CHILD_STOP`]): its message is decoded and enqueued on the child as
    /// the work is built, in the order the calls came (the helpers' lane).
    Child {
        op: &'static str,
        args: HeldArgs,
    },
}

/// The arguments of a call whose work is not built yet.
pub(super) enum HeldArgs {
    Inline([u8; INLINE_ARGS], u8),
    Owned(Vec<u8>),
}

impl HeldArgs {
    /// `args` (the frame's, or `payload`, a split frame's own buffer) held
    /// for the helper: small ones in the record itself, others owned.
    pub(super) fn hold(args: &[u8], payload: Option<Vec<u8>>) -> Self {
        match payload {
            Some(owned) => HeldArgs::Owned(owned),
            None if args.len() <= INLINE_ARGS => {
                let mut bytes = [0; INLINE_ARGS];
                bytes[..args.len()].copy_from_slice(args);
                HeldArgs::Inline(bytes, args.len() as u8)
            }
            None => HeldArgs::Owned(args.to_vec()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            HeldArgs::Inline(bytes, len) => &bytes[..usize::from(*len)],
            HeldArgs::Owned(bytes) => bytes,
        }
    }
}

/// A traced caller's call: its runner-side span is made as the work is
/// built, a child of the caller's.
pub(super) struct Traced {
    function: Box<str>,
    traceparent: Option<Box<str>>,
}

impl Traced {
    pub(super) fn new(function: &str, traceparent: Option<&str>) -> Box<Self> {
        Box::new(Traced {
            function: function.into(),
            traceparent: traceparent.map(Into::into),
        })
    }
}

/// A call admitted by [`Serve::dispatch`], to be started on the work runtime.
pub(super) struct Start {
    /// The call's end, armed at admission.
    pub(super) finish: Finish,
    pub(super) work: Work,
    /// The call's context; `None` for a call admitted without an entry
    /// among the running calls, whose helper makes it.
    pub(super) current: Option<CurrentCall>,
    pub(super) deadline: Option<Instant>,
    pub(super) blocking: bool,
    pub(super) want_result: bool,
    /// Set when the caller traces the call.
    pub(super) trace: Option<Box<Traced>>,
}

impl Start {
    /// Runs the call's first step here, in a helper task: a body that
    /// finishes at once (the common case for short functions) needs no
    /// task of its own. One that waits moves, as it is, to a task of its
    /// own; blocking bodies get their task at once. A call stopped before
    /// it started ends here (`Aborted`), its work never built.
    pub(super) fn run(self) {
        // A call with no context yet has no entry among the running calls
        // either: only a stop of every call reaches it.
        let stopped = match &self.current {
            Some(current) => current.is_stopped(),
            None => self.finish.serve.stopping_all(false),
        };
        if !self.blocking && stopped {
            return;
        }
        let Start {
            mut finish,
            work,
            current,
            deadline,
            blocking,
            want_result,
            trace,
        } = self;
        let current = current.unwrap_or_else(|| {
            let serve = &finish.serve;
            CurrentCall::new(&serve.scope, finish.id(), deadline)
        });
        // The application's code (its types' decoders, a child's message
        // decoder): a panic there ends the call, not the helper.
        let built = std::panic::catch_unwind(AssertUnwindSafe(|| finish.serve.build(work, &current)));
        let mut work = match built {
            Ok(Ok(work)) => work,
            Ok(Err(outcome)) => return finish.reply(outcome),
            Err(panic) => return end(&mut finish, Some(Err(panic)), want_result, &current),
        };
        if let Some(trace) = trace {
            work = finish.serve.traced(&trace, current.id(), work);
        }
        if !blocking {
            // Polled with a waker that does nothing: a body that is not
            // done is polled again, with its task's waker, as soon as that
            // task runs.
            let mut cx = Context::from_waker(Waker::noop());
            match std::panic::catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(&mut cx))) {
                Ok(Poll::Pending) => {}
                Ok(Poll::Ready(result)) => return end(&mut finish, Some(Ok(result)), want_result, &current),
                Err(panic) => return end(&mut finish, Some(Err(panic)), want_result, &current),
            }
        }
        // It waits: from now on it is stopped through its entry.
        if !finish.list(&current, blocking) {
            return;
        }
        spawn(finish, work, current, deadline, blocking, want_result);
    }
}

impl Serve {
    /// The work of an admitted call, built now (in a helper).
    fn build(self: &Arc<Self>, work: Work, current: &CurrentCall) -> Result<BoxFuture, Outcome> {
        match work {
            Work::Built(work) => Ok(work),
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
                match self.registry.start(function, args, current.clone()) {
                    Some((work, _)) => Ok(work),
                    None => Err(Outcome::UnknownFunction),
                }
            }
            Work::Child { op, args } => self.child_work(op, args.as_bytes()),
        }
    }

    /// A traced caller's work runs in a span of its own, the caller's
    /// child. Untraced calls build no span at all.
    fn traced(&self, trace: &Traced, call: u64, work: BoxFuture) -> BoxFuture {
        let span = crate::observe::runner_call_span(
            &trace.function,
            call,
            &self.scope.runner.to_string(),
            &self.pool,
            trace.traceparent.as_deref(),
        );
        Box::pin(tracing::Instrument::instrument(work, span))
    }

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
            return Ok((self.place_work(actor, args, call.id, call.linked), false));
        }
        if let Some(op) = child_op(name) {
            return Ok((self.child_work(op, args.as_bytes())?, false));
        }
        self.registry
            .start(name, args, current.clone())
            .ok_or(Outcome::UnknownFunction)
    }

    /// Placing a child of type `actor`: the child is made (its arguments
    /// decoded) when the work first runs.
    pub(super) fn place_work(self: &Arc<Self>, actor: &str, args: ArgBytes<'_>, id: u64, linked: bool) -> BoxFuture {
        let (this, actor) = (Arc::clone(self), actor.to_owned());
        let args = args.into_owned();
        Box::pin(async move {
            this.children
                .place(&this, &actor, args, id, linked)
                .await
                .map(Args::encoded)
        })
    }

    /// An operation `op` on a placed child: its message is decoded and
    /// enqueued now, synchronously, so a caller's messages reach their
    /// child in the order they were sent.
    fn child_work(&self, op: &str, args: &[u8]) -> Result<BoxFuture, Outcome> {
        match op {
            CHILD_CAST => {
                self.children.cast(&decode_envelope(args)?)?;
                Ok(Box::pin(std::future::ready(Ok(Args::default()))))
            }
            CHILD_CALL => self.children.call(&decode_envelope(args)?),
            _ => {
                let child: u64 = rmp_serde::from_slice(args).map_err(|e| Outcome::Codec(e.to_string()))?;
                self.children.stop(child);
                Ok(Box::pin(std::future::ready(Ok(Args::default()))))
            }
        }
    }
}

/// The operation on placed children `name` names, if it names one (placing
/// one aside).
pub(super) fn child_op(name: &str) -> Option<&'static str> {
    [CHILD_CAST, CHILD_CALL, CHILD_STOP].into_iter().find(|op| *op == name)
}

fn decode_envelope(bytes: &[u8]) -> Result<ChildEnvelope, Outcome> {
    rmp_serde::from_slice(bytes).map_err(|e| Outcome::Codec(format!("child message: {e}")))
}
