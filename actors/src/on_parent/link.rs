//! The parent's end of one runner: where a caller sends its call and awaits
//! its own reply, without passing through the Pool or Runner mailboxes.
//!
//! One seam, two transports: the local backend hands calls straight to the
//! in-process [`Serve`](crate::on_runner::Serve) core; remote backends queue
//! frames on the runner's TCP connection and match replies by call id.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::ActorRef;
use tokio::sync::{oneshot, watch};

use crate::error::{DownReason, Error};
use crate::func::args::Args;
use crate::ids::IdMap;
use crate::ids::RunnerId;
use crate::on_parent::pool::Lease;
use crate::on_runner::{Serve, TerminatorMessage};
use crate::wire::clock::unix_micros;
use crate::wire::frame::{CallFrame, CallRef, Outcome, ToParent, ToRunner};
use crate::wire::outbox::{Outbox, WeakOutbox};

/// How long past its deadline the parent waits for a runner's own deadline
/// reply before it gives up on its own (and cancels the work).
const DEADLINE_GRACE: Duration = Duration::from_millis(250);

mod deadlines;
use deadlines::Deadlines;

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
}

/// A connection's call ids and its calls in flight. Every call takes an id
/// and then the lock: both share one cache line, which no field that calls
/// only read shares, so a call moves one line between threads, not three.
#[repr(C, align(64))]
struct Calls {
    next_id: AtomicU64,
    /// Calls sent and not yet ended on the runner.
    pending: Mutex<IdMap<Pending>>,
}

/// A call between its send and the end of its work on the runner.
enum Pending {
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
    fn answer(&mut self) -> Option<oneshot::Sender<Delivered>> {
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
fn answer_early(waiter: oneshot::Sender<Delivered>, outcome: Outcome) {
    let _ = waiter.send(Delivered { outcome, ended: false });
}

/// An outcome, and whether the work behind it has ended.
struct Delivered {
    outcome: Outcome,
    ended: bool,
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
                    pending: Mutex::new(IdMap::default()),
                },
                down: Mutex::new(None),
                is_down: std::sync::atomic::AtomicBool::new(false),
                lost: std::sync::atomic::AtomicBool::new(false),
                closed: tokio::sync::Notify::new(),
                children: Mutex::new(HashMap::new()),
                max_frame,
                spans: Mutex::new(IdMap::default()),
                observer: std::sync::OnceLock::new(),
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

    /// Whether the runner is gone (cheap: no lock).
    pub fn is_down(&self) -> bool {
        self.inner.is_down.load(Ordering::Acquire)
    }

    /// Whether new work may go to this runner: it is not gone, and its
    /// connection has not dropped (cheap: no lock).
    pub fn is_usable(&self) -> bool {
        !self.is_down() && !self.inner.lost.load(Ordering::Acquire)
    }

    /// The connection dropped; why is settled later (by [`RunnerConn::close`]).
    /// Checkouts skip the runner from now on.
    pub(crate) fn mark_lost(&self) {
        self.inner.lost.store(true, Ordering::Release);
    }

    /// Why the runner is gone, if it is.
    pub fn down_reason(&self) -> Option<DownReason> {
        self.inner.down.lock().expect("poisoned").clone()
    }

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
    pub(crate) async fn call_lent(&self, req: CallRequest<'_>, hold: Option<&Lease>) -> Result<Outcome, Error> {
        if self.is_down() {
            return Err(self.down_error());
        }
        let id = self.inner.calls.next_id.fetch_add(1, Ordering::Relaxed);
        match &self.inner.transport {
            Transport::Local { serve, replies, .. } => {
                // In-process: a borrowed view, no frame to build.
                let call = CallRef {
                    id,
                    function: req.function,
                    args: req.args.as_bytes(),
                    deadline_us: None,
                    want_result: req.want_result,
                    linked: req.linked,
                    trace: None,
                    bare: req.args.is_bare(),
                };
                if serve.is_blocking(req.function) {
                    // A blocking body outlives a caller that gives up: it
                    // runs as a task and reports its end like a remote one.
                    let Some(replies) = replies.upgrade() else {
                        return Err(self.down_error());
                    };
                    let (linked, deadline) = (req.linked, req.deadline);
                    let sent = |_alone| {
                        serve.dispatch(call, None, deadline, replies);
                        true
                    };
                    return self.send_and_wait(id, linked, deadline, hold, sent).await;
                }
                // The body runs in this task: dropping the future ends it.
                let outcome = serve.run_inline(call, req.deadline).await;
                outcome.ok_or_else(|| self.down_error())
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
                    deadline_us: deadline.map(unix_micros),
                    want_result: req.want_result,
                    linked,
                    trace,
                    bare,
                };
                // A lone call goes straight out from this thread; calls
                // made together are batched by the link thread.
                let sent = |alone| tx.send_alone(ToRunner::Call(frame), alone);
                self.send_and_wait(id, linked, deadline, hold, sent).await
            }
        }
    }

    /// Registers call `id`, sends it with `send` (told whether it is the only
    /// call in flight), and waits for its outcome.
    async fn send_and_wait(
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
        let alone = self.track(id, Pending::Waiting { waiter: tx, give_up });
        if !send(alone) {
            self.inner.calls.pending.lock().expect("poisoned").remove(&id);
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
            Ok(Delivered { outcome, ended: true }) => Ok(outcome),
            Ok(Delivered { outcome, ended: false }) => {
                self.park(id, guard.hold.take().map(Lease::hand_on));
                Ok(outcome)
            }
            Err(_) => Err(self.down_error()),
        }
    }

    /// Keeps `hold` until call `id` has ended on the runner; returns whether
    /// it still runs. A hold whose call has ended (or whose runner is gone)
    /// is released at once, outside the lock (a lease's drop may message the
    /// pool).
    fn park(&self, id: u64, hold: Option<Lease>) -> bool {
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

    /// Sends a cast on `hold`'s slot without waiting for anything: the
    /// frame goes out (or is queued) before this returns, and the slot is
    /// checked in when the runner reports the cast's end. No task, no
    /// channel: what a cast costs on the parent is its frame.
    ///
    /// Gives the arguments and the hold back when the cast cannot go this
    /// way (an in-process runner, a runner that is going away, arguments
    /// over the frame limit), for the caller to send it the slow way.
    pub(crate) fn cast_held(&self, function: &'static str, args: Args, hold: Lease) -> Result<(), (Args, Lease)> {
        let Transport::Remote { tx } = &self.inner.transport else {
            return Err((args, hold));
        };
        if !self.is_usable() || !self.fits(function, &args) {
            return Err((args, hold));
        }
        let id = self.inner.calls.next_id.fetch_add(1, Ordering::Relaxed);
        let alone = self.track(id, Pending::Cast(hold, function));
        let (args, bare) = args.into_parts();
        let frame = CallFrame {
            bare,
            ..CallFrame::one_way(id, function, args)
        };
        if !tx.send_alone(ToRunner::Call(frame), alone) {
            // The connection closed meanwhile: the runner is going, and the
            // cast with it (as a cast sent a moment earlier would be).
            let hold = self.inner.calls.pending.lock().expect("poisoned").remove(&id);
            drop(hold);
            self.cast_failed(function, &self.down_error());
        }
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

    /// Logs a cast sent by [`RunnerConn::cast_held`] that failed: nobody
    /// else hears of it.
    fn cast_failed(&self, function: &str, error: &Error) {
        tracing::warn!(target: "ractor_flame::pool", runner = %self.inner.runner, function, %error, "cast failed");
    }

    /// Whether a call of `function` with `args` fits in a frame, with room
    /// left for the frame's envelope.
    fn fits(&self, function: &str, args: &Args) -> bool {
        args.len() <= self.inner.max_frame.saturating_sub(512 + function.len())
    }

    /// Notes call `id` as in flight; returns whether it is the only one
    /// (nothing to batch it with).
    fn track(&self, id: u64, entry: Pending) -> bool {
        let mut pending = self.inner.calls.pending.lock().expect("poisoned");
        pending.insert(id, entry);
        pending.len() == 1
    }

    fn down_error(&self) -> Error {
        let reason = self
            .down_reason()
            .unwrap_or_else(|| DownReason::ConnectionLost("runner went away".into()));
        Error::RunnerDown { reason }
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

    /// Asks the runner to stop call `id`.
    fn cancel(&self, id: u64) {
        match &self.inner.transport {
            Transport::Local { serve, .. } => serve.cancel(id),
            Transport::Remote { tx } => {
                let _ = tx.send(ToRunner::Cancel { id });
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
    fn settle(&self, entry: Pending, outcome: Outcome) {
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

    /// Names the pool this runner serves, and the subscriber its events
    /// go to: the one current where the pool's Runner actor runs (the link
    /// thread's tasks may not share a thread-local one).
    pub(crate) fn set_observer(&self, pool: &str) {
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let _ = self.inner.observer.set((pool.to_owned(), dispatch));
    }

    /// Re-emits one of the runner's `tracing` events here: under the span
    /// of the call that emitted it while that call is in flight, tagged
    /// with the runner and the pool.
    pub(crate) fn log(&self, record: &crate::wire::frame::LogRecord) {
        let span = record
            .call
            .and_then(|call| self.inner.spans.lock().expect("poisoned").get(&call).cloned());
        let runner = self.inner.runner;
        match self.inner.observer.get() {
            Some((pool, dispatch)) => tracing::dispatcher::with_default(dispatch, || {
                crate::observe::logs::reemit(record, runner, pool, span.as_ref());
            }),
            None => crate::observe::logs::reemit(record, runner, "", span.as_ref()),
        }
    }

    /// The parent's own deadline: every waiting call past its time to give
    /// up gets [`Outcome::Deadline`] now and its work is cancelled, linked or
    /// not (its slot stays taken until the runner reports the end). Tells
    /// the watch when the next waiting call is due.
    fn give_up_due(&self, now: Instant) {
        let mut due = Vec::new();
        {
            let mut pending = self.inner.calls.pending.lock().expect("poisoned");
            let mut next: Option<Instant> = None;
            for (id, entry) in pending.iter_mut() {
                let Pending::Waiting { give_up: Some(at), .. } = entry else {
                    continue;
                };
                let at = *at;
                if at > now {
                    next = Some(next.map_or(at, |next| next.min(at)));
                } else if let Some(waiter) = entry.answer() {
                    due.push((*id, waiter));
                }
            }
            self.inner.deadlines.set_next(next);
        }
        for (id, waiter) in due {
            answer_early(waiter, Outcome::Deadline);
            self.cancel(id);
        }
    }

    /// Routes an outcome that comes before the call's work has ended.
    pub(crate) fn deliver_early(&self, id: u64, outcome: Outcome) {
        let mut pending = self.inner.calls.pending.lock().expect("poisoned");
        if let Some(waiter) = pending.get_mut(&id).and_then(Pending::answer) {
            answer_early(waiter, outcome);
        }
    }

    /// Marks the runner gone and fails every call in flight with `reason`.
    /// The first reason wins.
    pub fn close(&self, reason: DownReason) {
        {
            let mut down = self.inner.down.lock().expect("poisoned");
            if down.is_none() {
                *down = Some(reason);
            }
            self.inner.is_down.store(true, Ordering::Release);
        }
        self.inner.closed.notify_waiters();
        let reason = self
            .down_reason()
            .map(|r| format!("runner down: {r}"))
            .unwrap_or_default();
        for notice in self.inner.children.lock().expect("poisoned").values() {
            notice.send_if_modified(|exit| exit.is_none() && exit.replace(reason.clone()).is_none());
        }
        // Dropping the senders wakes every waiter, which then reads `down`;
        // parked slots are released (the runner and its work are gone).
        let pending = std::mem::take(&mut *self.inner.calls.pending.lock().expect("poisoned"));
        drop(pending);
        if let Transport::Local { serve, .. } = &self.inner.transport {
            serve.fail_all();
        }
    }

    /// Watches for the exit of placed child `child`.
    pub fn watch_child(&self, child: u64) -> watch::Receiver<Option<String>> {
        let mut children = self.inner.children.lock().expect("poisoned");
        let notice = children.entry(child).or_insert_with(|| watch::channel(None).0);
        if let Some(reason) = self.down_reason() {
            notice.send_replace(Some(format!("runner down: {reason}")));
        }
        notice.subscribe()
    }

    /// Stops watching child `child` (its handle is gone).
    pub fn unwatch_child(&self, child: u64) {
        self.inner.children.lock().expect("poisoned").remove(&child);
    }

    /// A placed child exited (possibly before anyone watched it).
    pub(crate) fn child_exited(&self, child: u64, reason: String) {
        let mut children = self.inner.children.lock().expect("poisoned");
        let notice = children.entry(child).or_insert_with(|| watch::channel(None).0);
        notice.send_replace(Some(reason));
    }

    /// Resolves once the runner is gone.
    pub async fn closed(&self) {
        loop {
            let notified = self.inner.closed.notified();
            if self.down_reason().is_some() {
                return;
            }
            notified.await;
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

impl Drop for ConnInner {
    fn drop(&mut self) {
        self.deadlines.close();
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

/// A traced call in flight: its caller's span is findable by call id until
/// the caller stops waiting.
struct TracedCall<'a> {
    conn: &'a RunnerConn,
    id: u64,
}

impl<'a> TracedCall<'a> {
    fn new(conn: &'a RunnerConn, id: u64, span: tracing::Span) -> Self {
        conn.inner.spans.lock().expect("poisoned").insert(id, span);
        TracedCall { conn, id }
    }
}

impl Drop for TracedCall<'_> {
    fn drop(&mut self) {
        let span = self.conn.inner.spans.lock().expect("poisoned").remove(&self.id);
        // Closed outside the lock (a subscriber may do work on close).
        drop(span);
    }
}

/// Turns a runner's outcome into the caller's result: the encoded output
/// (empty for an outcome that carries none). Backends and handles that send
/// their own [`CallRequest`]s use it to report the outcome the way
/// `Pool::call` does.
///
/// # Errors
///
/// [`Error::Remote`] when the function returned an error, [`Error::Panic`]
/// when it panicked, [`Error::Deadline`] (with `timeout`) when its deadline
/// passed, [`Error::UnknownFunction`], [`Error::Codec`],
/// [`Error::RunnerDown`] with [`DownReason::ShuttingDown`] when a stopping
/// runner refused or aborted it, and [`Error::ChildStopped`] for a placed
/// child that stopped.
pub fn outcome_into_result(outcome: Outcome, function: &str, timeout: Duration) -> Result<Args, Error> {
    // Named only on the way out of a failure: a success allocates nothing.
    let function = || function.to_owned();
    match outcome {
        Outcome::Ok(bytes) => Ok(Args::encoded(bytes)),
        Outcome::OkBare(bytes) => Ok(Args::bare(bytes)),
        Outcome::Done => Ok(Args::default()),
        Outcome::Returned(message) => Err(Error::Remote {
            function: function(),
            message,
        }),
        Outcome::Panicked(message) => Err(Error::Panic {
            function: function(),
            message,
        }),
        Outcome::Deadline => Err(Error::Deadline {
            function: function(),
            timeout,
        }),
        Outcome::UnknownFunction => Err(Error::UnknownFunction { function: function() }),
        Outcome::Codec(message) => Err(Error::Codec(message)),
        // Refused while draining, or aborted by a runner that is stopping.
        Outcome::Refused | Outcome::Aborted => Err(Error::RunnerDown {
            reason: DownReason::ShuttingDown,
        }),
        Outcome::ChildStopped(reason) => Err(Error::ChildStopped { reason }),
    }
}
