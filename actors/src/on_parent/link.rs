//! The parent's end of one runner: where a caller sends its call and awaits
//! its own reply, without passing through the Pool or Runner mailboxes.
//!
//! One seam, two transports: the local backend hands calls straight to the
//! in-process [`Serve`] core; remote backends queue
//! frames on the runner's TCP connection and match replies by call id.
//!
//! # One call, in order
//!
//! A caller holds a checked-out slot on a remote runner (a
//! [`Lease`](crate::on_parent::pool::Lease)) and sends one call on it, as
//! the facade's `Pool::call` does:
//!
//! 1. `link/send.rs`: [`Lease::call`](crate::on_parent::pool::Lease::call)
//!    hands a [`CallRequest`] to `call_lent`, which takes the next call id,
//!    checks that the arguments fit in a frame and builds the frame. When a
//!    subscriber traces the call, its caller's span is noted by call id
//!    (`link/records.rs`).
//! 2. `link/pending.rs`: the call goes into the table of calls in flight as
//!    `Pending::Waiting`, with a oneshot for its outcome (or, when the
//!    runner has gone meanwhile, is refused and fails at once with
//!    `RunnerDown`: entering and `close` take the same lock); then its frame goes
//!    out (from the caller's thread when it is the only call in flight,
//!    else batched by the link thread) and the caller awaits the oneshot.
//! 3. `link/deadlines.rs`: a call with a deadline tells the connection's
//!    watch when to give up on it (the deadline plus a grace). The runner
//!    enforces the deadline itself; the watch is the backstop for a runner
//!    that cannot answer, and answers the call `Deadline` and cancels it.
//! 4. `link/records.rs`: while the work runs, the runner's log records for
//!    the call come back and are re-emitted under the caller's span.
//! 5. `link/pending.rs`: the endpoint's frame loop routes the reply by call
//!    id. `deliver` (the work has ended) wakes the caller with the outcome
//!    and removes the entry; `deliver_early` (the outcome came first) wakes
//!    it and leaves the entry `Answered`, where the caller parks its slot
//!    until `deliver_ended` reports the work over. A caller that stops
//!    waiting (its future dropped) parks its slot the same way, and a linked
//!    call is cancelled (`CallGuard` in `link/send.rs`).
//! 6. `link/outcome.rs`: the caller turns the outcome into its result with
//!    [`outcome_into_result`].
//!
//! An in-process runner runs a call's body in the caller's task instead
//! (steps 2 to 5 do not happen), unless the function is blocking: then the
//! call goes through the table as a remote one does.
//!
//! A streaming call (`link/stream.rs`) goes the same way, and its items
//! come back ahead of its reply, on a channel of its own.
//!
//! Beside the path: `link/children.rs` keeps the exit notices of children
//! placed on the runner; `link/close.rs` says whether and why the runner is
//! gone, and its `close` fails every call still in the table and tells
//! every child watch.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ractor::ActorRef;
use tokio::sync::watch;

use crate::error::DownReason;
use crate::func::args::Args;
use crate::ids::IdMap;
use crate::ids::RunnerId;
use crate::on_runner::{Serve, TerminatorMessage};
use crate::wire::frame::{ToParent, ToRunner};
use crate::wire::outbox::{Outbox, WeakOutbox};

mod children;
mod close;
mod deadlines;
mod outcome;
mod pending;
mod records;
mod send;
mod stream;

use deadlines::Deadlines;
use pending::Calls;

pub use children::CastBudget;
pub use outcome::outcome_into_result;
pub use stream::{StreamCall, StreamRequest};

/// What a caller asks a runner to do.
#[derive(Debug)]
pub struct CallRequest<'a> {
    /// The registered function's name.
    pub function: &'a str,
    /// The arguments.
    pub args: Args,
    /// When the work must be done; `None` for no deadline.
    pub deadline: Option<Instant>,
    /// Cancel the remote task when the caller goes away.
    pub linked: bool,
    /// `false` for a cast: only completion is reported.
    pub want_result: bool,
    /// The key naming the call across its attempts (a call that may be
    /// retried); the body reads it from `current_call()`.
    pub idempotency_key: Option<&'a str>,
}

/// A connection to one runner. Cheap to clone.
#[derive(Clone)]
pub struct RunnerConn {
    inner: Arc<ConnInner>,
}

struct ConnInner {
    /// What every call writes, on a cache line of its own.
    calls: Calls,
    /// The parent's own watch of the calls' deadlines.
    deadlines: Arc<Deadlines>,
    runner: RunnerId,
    transport: Transport,
    /// Set once, when the runner is gone; later calls fail with it.
    down: Mutex<Option<DownReason>>,
    /// `down.is_some()`, readable without the lock (the checkout fast path).
    is_down: std::sync::atomic::AtomicBool,
    /// The connection is gone but the runner's fate is not settled yet (the
    /// backend may still explain it): no new work goes here.
    lost: std::sync::atomic::AtomicBool,
    /// Woken when `down` is set.
    closed: tokio::sync::Notify,
    /// Exit notices of placed children, by child id.
    children: Mutex<HashMap<u64, watch::Sender<Option<String>>>>,
    max_frame: usize,
    /// The callers' spans of traced calls in flight, by call id: the
    /// runner's events for a call are re-emitted under its caller's span.
    /// Used only while a subscriber traces the calls.
    spans: Mutex<IdMap<tracing::Span>>,
    /// The pool's name and the subscriber of the pool's Runner actor, for
    /// the runner's re-emitted events (set when the runner is up).
    observer: std::sync::OnceLock<(String, tracing::Dispatch)>,
    /// Where the items of streaming calls in flight go, by call id.
    streams: Mutex<IdMap<stream::StreamTx>>,
}

enum Transport {
    Local {
        serve: Arc<Serve>,
        control: ActorRef<TerminatorMessage>,
        /// Where calls dispatched as tasks (blocking functions) reply.
        replies: WeakOutbox<ToParent>,
    },
    Remote {
        tx: Outbox<ToRunner>,
    },
}

impl fmt::Debug for RunnerConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner.transport {
            Transport::Local { .. } => "local",
            Transport::Remote { .. } => "tcp",
        };
        f.debug_struct("RunnerConn")
            .field("runner", &self.inner.runner)
            .field("transport", &kind)
            .finish()
    }
}

impl RunnerConn {
    pub(crate) fn local(
        runner: RunnerId,
        serve: Arc<Serve>,
        control: ActorRef<TerminatorMessage>,
        replies: WeakOutbox<ToParent>,
    ) -> Self {
        Self::with(
            runner,
            Transport::Local {
                serve,
                control,
                replies,
            },
            usize::MAX,
        )
    }

    pub(crate) fn remote(runner: RunnerId, tx: Outbox<ToRunner>, max_frame: usize) -> Self {
        Self::with(runner, Transport::Remote { tx }, max_frame)
    }

    fn with(runner: RunnerId, transport: Transport, max_frame: usize) -> Self {
        let deadlines = Deadlines::new();
        let conn = RunnerConn {
            inner: Arc::new(ConnInner {
                deadlines: Arc::clone(&deadlines),
                runner,
                transport,
                calls: Calls {
                    next_id: AtomicU64::new(1),
                    pending: Mutex::new(pending::Table::default()),
                },
                down: Mutex::new(None),
                is_down: std::sync::atomic::AtomicBool::new(false),
                lost: std::sync::atomic::AtomicBool::new(false),
                closed: tokio::sync::Notify::new(),
                children: Mutex::new(HashMap::new()),
                max_frame,
                spans: Mutex::new(IdMap::default()),
                observer: std::sync::OnceLock::new(),
                streams: Mutex::new(IdMap::default()),
            }),
        };
        // On the link thread, beside the connection: it answers a deadline
        // even while every worker of the parent is busy.
        crate::wire::thread::spawn(deadlines.watch(Arc::downgrade(&conn.inner)));
        conn
    }

    /// The runner at the other end.
    pub fn runner(&self) -> RunnerId {
        self.inner.runner
    }
}

impl Drop for ConnInner {
    fn drop(&mut self) {
        self.deadlines.close();
    }
}
