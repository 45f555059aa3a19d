//! The runner's call engine: calls run on the application's runtime (a call
//! whose body finishes at once in the helper task that starts it, any other
//! in a task of its own; blocking functions on its blocking pool),
//! deadlines, panics caught, and the counters idle shutdown and drain read.
//!
//! Shared by the Terminator actor and whatever feeds it calls (the TCP
//! reader on the link thread, or a local caller directly), so calls never
//! queue behind the Terminator's mailbox. Every call ends with exactly one
//! [`ToParent::Reply`], sent when its work has really ended (completed,
//! aborted, or returned after cancellation): that frame frees the call's
//! slot on the parent.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tokio::runtime::Handle;
use tokio::sync::Notify;

use super::children::Children;
use crate::error::panic_message;
use crate::func::args::Args;
use crate::func::context::CurrentCall;
use crate::func::registry::{ArgBytes, BoxFuture, Registry, RunFailure, States};
use crate::ids::IdMap;
use crate::ids::RunnerId;
use crate::wire::frame::{
    CHILD_CALL, CHILD_CAST, CHILD_STOP, CallFrame, CallRef, ChildEnvelope, Outcome, PLACE, ToParent, is_child_operation,
};
use crate::wire::outbox::Outbox;

/// The call engine of one runner.
#[derive(Debug)]
pub struct Serve {
    /// What every call writes as it starts and ends.
    calls: Calls,
    runner: RunnerId,
    /// The pool this runner serves (its parent's name for it), for spans.
    pool: String,
    registry: Registry,
    /// The runner's states, built once at its start.
    states: Arc<States>,
    /// Where admitted calls wait for a [`helper`], a task of the work
    /// runtime (the application's, never the link thread): function bodies
    /// run there.
    starts: Arc<Starts>,
    accepting: AtomicBool,
    born: Instant,
    /// Microseconds after `born` when the last call ended (or started).
    last_activity_us: AtomicU64,
    /// Woken whenever `active` drops to zero.
    quiet: Notify,
    /// Placed children.
    children: Children,
    /// Why this runner could not serve (refused by its parent), if so.
    failure: Mutex<Option<String>>,
}

/// The calls running now. Every call's start and end writes both fields:
/// they share one cache line, and no field that calls only read shares it.
#[derive(Debug)]
#[repr(C, align(64))]
struct Calls {
    /// The calls running now, by id.
    tasks: Mutex<IdMap<Running>>,
    /// Calls admitted and not ended (placed children's messages among them,
    /// which have no entry in `tasks`).
    active: AtomicUsize,
}

/// How a running call is stopped.
#[derive(Debug)]
struct Running {
    call: CurrentCall,
    /// Set for a call running in its caller's task (it selects on this);
    /// a call of its own task is aborted through its `call`.
    inline: Option<Arc<Notify>>,
    linked: bool,
    /// A blocking body cannot be aborted: it is told, and its slot stays
    /// taken until it returns.
    blocking: bool,
}

impl Running {
    fn stop(&self) {
        if self.blocking {
            self.call.cancel();
        } else if let Some(abort) = &self.inline {
            self.call.cancel();
            // `notify_one` keeps a permit if the call is not waiting yet.
            abort.notify_one();
        } else {
            self.call.abort();
        }
    }
}

impl Serve {
    pub(crate) fn new(runner: RunnerId, pool: String, registry: Registry, work: Handle, states: States) -> Arc<Self> {
        // One helper per worker thread, and one more: as many calls as the
        // runtime has threads can be in their first poll at once, each on
        // a thread of its own.
        let helpers = work.metrics().num_workers() + 1;
        let starts = Arc::new(Starts {
            queue: Mutex::new(StartQueue {
                calls: VecDeque::new(),
                helpers,
                waiting: 0,
                closed: false,
            }),
            ready: Notify::new(),
        });
        for _ in 0..helpers {
            // The guard lives in the future: a helper that never runs (the
            // runtime is going) still counts itself out.
            work.spawn(helper(HelperGuard(Arc::clone(&starts))));
        }
        Arc::new(Serve {
            runner,
            pool,
            registry,
            states: Arc::new(states),
            calls: Calls {
                tasks: Mutex::new(IdMap::default()),
                active: AtomicUsize::new(0),
            },
            starts,
            accepting: AtomicBool::new(true),
            born: Instant::now(),
            last_activity_us: AtomicU64::new(0),
            quiet: Notify::new(),
            children: Children::default(),
            failure: Mutex::new(None),
        })
    }

    /// Records why the runner could not serve its parent.
    pub(crate) fn set_failure(&self, reason: String) {
        self.failure.lock().expect("poisoned").get_or_insert(reason);
    }

    /// Why the runner could not serve its parent (it was refused, or never
    /// reached it), if so: the runner process then exits non-zero.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("poisoned").clone()
    }

    /// Runs the named idle predicate of the registry.
    pub(crate) fn registry_predicate(&self, name: &str) -> bool {
        self.registry.predicate_holds(name)
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn children(&self) -> &Children {
        &self.children
    }

    /// A placed child holds a slot for its whole life.
    pub(crate) fn child_started(&self) {
        self.calls.active.fetch_add(1, Ordering::AcqRel);
        self.touch();
    }

    pub(crate) fn child_stopped(&self) {
        self.touch();
        if self.calls.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.quiet.notify_waiters();
        }
    }

    /// The work a call names: a registered function, or an operation on
    /// placed children; and whether it runs on the blocking pool. Child
    /// messages are enqueued here, synchronously, so a caller's messages
    /// reach their child in the order they were sent.
    fn start_work(
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

    /// Whether calls of `function` run on the blocking pool.
    pub(crate) fn is_blocking(&self, function: &str) -> bool {
        self.registry.is_blocking(function)
    }

    /// Creates the work of `call` now and returns a future that runs it to
    /// the end, accounted like any call, its outcome dropped.
    pub(crate) fn start_now(self: &Arc<Self>, call: CallFrame) -> impl Future<Output = ()> + Send + 'static {
        let current = CurrentCall::new(self.runner, Arc::clone(&self.states), call.id, None);
        let work = self.start_work(&call.view(), None, &current);
        let this = Arc::clone(self);
        async move {
            if let Ok((work, _)) = work {
                this.calls.active.fetch_add(1, Ordering::AcqRel);
                let _finish = Finish::new(Arc::clone(&this), call.id, None);
                let _ = work.await;
            }
        }
    }

    /// Calls running now.
    pub(crate) fn active(&self) -> usize {
        self.calls.active.load(Ordering::Acquire)
    }

    /// How long since the last call started or ended.
    pub(crate) fn idle_for(&self) -> Duration {
        let last = Duration::from_micros(self.last_activity_us.load(Ordering::Acquire));
        self.born.elapsed().saturating_sub(last)
    }

    fn touch(&self) {
        let now = self.born.elapsed().as_micros() as u64;
        self.last_activity_us.fetch_max(now, Ordering::AcqRel);
    }

    /// Stops taking new calls (drain).
    pub(crate) fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Release);
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
        let (work, blocking) = self.start_work(call, payload, &current)?;
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

    /// Cancels a call: an async body is aborted, a blocking one is told.
    /// Unknown ids are ignored.
    pub(crate) fn cancel(&self, id: u64) {
        if let Some(running) = self.calls.tasks.lock().expect("poisoned").get(&id) {
            running.stop();
        }
    }

    /// Stops every linked call and every linked child: their parent is gone.
    pub(crate) fn abort_linked(&self) {
        self.children.stop_all(true, "parent lost");
        for running in self.calls.tasks.lock().expect("poisoned").values() {
            if running.linked {
                running.stop();
            }
        }
    }

    /// Stops every call and every child.
    pub(crate) fn fail_all(&self) {
        self.stop_accepting();
        self.children.stop_all(false, "runner stopped");
        for running in self.calls.tasks.lock().expect("poisoned").values() {
            running.stop();
        }
    }

    /// Waits until no call runs, at most `budget`; then stops what is left.
    /// Returns whether the drain finished in time.
    pub(crate) async fn drain(&self, budget: Duration) -> bool {
        let waited = tokio::time::timeout(budget, async {
            loop {
                let quiet = self.quiet.notified();
                if self.active() == 0 {
                    return;
                }
                quiet.await;
            }
        })
        .await;
        if waited.is_err() {
            self.fail_all();
        }
        waited.is_ok()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // No call is queued now (each holds the engine): the helpers end.
        self.starts.close();
    }
}

fn decode_envelope(bytes: &[u8]) -> Result<ChildEnvelope, Outcome> {
    rmp_serde::from_slice(bytes).map_err(|e| Outcome::Codec(format!("child message: {e}")))
}

/// Sends a call's outcome to the parent.
fn send(reply: &Outbox<ToParent>, id: u64, outcome: Outcome) {
    let _ = reply.send(ToParent::Reply { id, outcome });
}

/// Arguments up to this size travel from the link thread to the helper in
/// the call's own record, without an allocation.
const INLINE_ARGS: usize = 48;

/// A call's work: built, or to be built by the helper that starts it.
enum Work {
    Built(BoxFuture),
    Deferred {
        /// The registry's name of the function.
        function: &'static str,
        args: HeldArgs,
        bare: bool,
    },
}

/// The arguments of a call whose work is not built yet.
enum HeldArgs {
    Inline([u8; INLINE_ARGS], u8),
    Owned(Vec<u8>),
}

/// A call admitted by [`Serve::dispatch`], to be started on the work runtime.
struct Start {
    /// The call's end, armed at admission.
    finish: Finish,
    work: Work,
    current: CurrentCall,
    deadline: Option<Instant>,
    blocking: bool,
    want_result: bool,
}

impl Start {
    /// Runs the call's first step here, in a helper task: a body that
    /// finishes at once (the common case for short functions) needs no
    /// task of its own. One that waits moves, as it is, to a task of its
    /// own; blocking bodies get their task at once. A call stopped before
    /// it started ends here (`Aborted`), its work never built.
    fn run(self) {
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

/// Spawns a call's task (from a task of the work runtime) and gives the
/// call its abort handle; a stop that came first aborts it now.
fn spawn(
    mut finish: Finish,
    work: BoxFuture,
    current: CurrentCall,
    deadline: Option<Instant>,
    blocking: bool,
    want_result: bool,
) {
    let call = current.clone();
    let handle = tokio::spawn(async move {
        let run = AssertUnwindSafe(work).catch_unwind();
        let result = if blocking {
            run_blocking(deadline, &current, run, &finish).await
        } else {
            run_until(deadline, run).await
        };
        end(&mut finish, result, want_result);
    });
    // A blocking body is never aborted: it is told, and returns.
    if !blocking {
        call.spawned(handle.abort_handle());
    }
}

/// Ends a call with the outcome of its work.
fn end(finish: &mut Finish, result: Option<Caught>, want_result: bool) {
    let outcome = outcome(result, want_result);
    if let Outcome::Panicked(message) = &outcome {
        // Sent to the parent ahead of the reply (same queue): a parent with
        // no subscriber still prints it.
        tracing::warn!(target: "ractor_flame::terminator", call = finish.id, %message, "function panicked");
    }
    finish.reply(outcome);
}

/// Admitted calls waiting for a helper.
#[derive(Debug)]
struct Starts {
    queue: Mutex<StartQueue>,
    /// Wakes a waiting helper: once per call queued while a helper waits,
    /// so that a call never waits behind one whose first poll runs long
    /// while another helper is free. Helpers that are busy are not told.
    ready: Notify,
}

struct StartQueue {
    calls: VecDeque<Start>,
    /// Helpers still alive; none once the work runtime is gone, and then
    /// calls are dropped (ended) instead of queued.
    helpers: usize,
    /// Helpers waiting on `ready`, not yet told: each is registered with
    /// it before it counts itself here, so every wake reaches one of them.
    waiting: usize,
    /// The runner's engine is gone: helpers end.
    closed: bool,
}

impl std::fmt::Debug for StartQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartQueue")
            .field("calls", &self.calls.len())
            .field("helpers", &self.helpers)
            .field("waiting", &self.waiting)
            .field("closed", &self.closed)
            .finish()
    }
}

impl Starts {
    fn push(&self, start: Start) {
        let mut queue = self.queue.lock().expect("poisoned");
        if queue.helpers == 0 {
            drop(queue);
            // Ends the call (`Aborted`), outside the lock.
            drop(start);
            return;
        }
        queue.calls.push_back(start);
        let wake = queue.waiting > 0;
        if wake {
            queue.waiting -= 1;
        }
        drop(queue);
        if wake {
            self.ready.notify_one();
        }
    }

    /// The next call to start; `Err` once the engine is gone. With nothing
    /// queued, a helper registered with `ready` (`waits`) counts itself as
    /// waiting.
    fn pop(&self, waits: bool) -> Result<Option<Start>, ()> {
        let mut queue = self.queue.lock().expect("poisoned");
        match queue.calls.pop_front() {
            None if queue.closed => Err(()),
            None if waits => {
                queue.waiting += 1;
                Ok(None)
            }
            next => Ok(next),
        }
    }

    /// Ends the helpers once the calls queued have started.
    fn close(&self) {
        self.queue.lock().expect("poisoned").closed = true;
        self.ready.notify_waiters();
    }
}

/// A helper's hold on the queue: the last helper to go ends the calls left.
struct HelperGuard(Arc<Starts>);

impl Drop for HelperGuard {
    fn drop(&mut self) {
        let left = {
            let mut queue = self.0.queue.lock().expect("poisoned");
            queue.helpers -= 1;
            if queue.helpers == 0 {
                std::mem::take(&mut queue.calls)
            } else {
                VecDeque::new()
            }
        };
        drop(left);
    }
}

/// A task that starts admitted calls, in the order they come. Helpers are
/// woken from outside the runtime's workers (the link thread), so a woken
/// helper can run on any worker: one whose first poll never yields holds up
/// only its own thread.
async fn helper(guard: HelperGuard) {
    let starts = &guard.0;
    loop {
        // While calls keep coming, straight from the queue.
        let start = match starts.pop(false) {
            Ok(Some(start)) => start,
            Err(()) => return,
            Ok(None) => {
                // Registered before it looks again and counts itself as
                // waiting: a call queued or a close in between wakes it.
                let ready = starts.ready.notified();
                let mut ready = std::pin::pin!(ready);
                ready.as_mut().enable();
                match starts.pop(true) {
                    Ok(Some(start)) => start,
                    Err(()) => return,
                    Ok(None) => {
                        ready.await;
                        continue;
                    }
                }
            }
        };
        start.run();
        // Other tasks of this worker get their turn in a long burst.
        tokio::task::coop::consume_budget().await;
    }
}

type Caught = Result<crate::func::registry::Encoded, Box<dyn std::any::Any + Send>>;

/// Runs `work` until `deadline`; `None` when the deadline passed first (the
/// work is dropped then: an async body ends at its next `.await`).
async fn run_until(deadline: Option<Instant>, work: impl Future<Output = Caught>) -> Option<Caught> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at.into(), work).await.ok(),
        None => Some(work.await),
    }
}

/// Runs blocking `work` to its end. At the deadline the body is told (its
/// call reads as cancelled) and the caller gets its deadline error at once,
/// but the call ends, and its slot returns, only when the body returns.
async fn run_blocking(
    deadline: Option<Instant>,
    call: &CurrentCall,
    work: impl Future<Output = Caught>,
    finish: &Finish,
) -> Option<Caught> {
    let Some(at) = deadline else {
        return Some(work.await);
    };
    let mut work = std::pin::pin!(work);
    tokio::select! {
        result = &mut work => Some(result),
        () = tokio::time::sleep_until(at.into()) => {
            call.cancel();
            finish.early(Outcome::Deadline);
            let _ = work.await;
            None
        }
    }
}

/// The outcome of a finished (or timed out) call.
fn outcome(result: Option<Caught>, want_result: bool) -> Outcome {
    match result {
        None => Outcome::Deadline,
        Some(Ok(Ok(_))) if !want_result => Outcome::Done,
        Some(Ok(Ok(output))) => match output.into_parts() {
            (bytes, true) => Outcome::OkBare(bytes),
            (bytes, false) => Outcome::Ok(bytes),
        },
        Some(Ok(Err(RunFailure::Returned(m)))) => Outcome::Returned(m),
        Some(Ok(Err(RunFailure::Panicked(m)))) => Outcome::Panicked(m),
        Some(Ok(Err(RunFailure::Codec(m)))) => Outcome::Codec(m),
        Some(Err(panic)) => Outcome::Panicked(panic_message(panic.as_ref())),
    }
}

/// Runs when a call's work ends, however it ends (completion, abort,
/// panic): frees the runner's count and sends the call's one final reply
/// (`Aborted` when the work was dropped before it had an outcome).
struct Finish {
    serve: Arc<Serve>,
    id: u64,
    /// The parent connection; `None` for calls whose caller awaits them in
    /// its own task.
    reply: Option<Outbox<ToParent>>,
    /// Counted out and replied to already.
    ended: bool,
}

impl Finish {
    fn new(serve: Arc<Serve>, id: u64, reply: Option<Outbox<ToParent>>) -> Self {
        Finish {
            serve,
            id,
            reply,
            ended: false,
        }
    }

    /// The call's end, with its outcome.
    fn reply(&mut self, outcome: Outcome) {
        if self.ended {
            return;
        }
        self.ended = true;
        // Counted out first: when the parent hears of it, the slot is free
        // here too.
        let alone = self.done();
        if let Some(reply) = self.reply.take() {
            // The last call running replies straight from its thread;
            // replies of calls running together are batched, and the ends
            // of casts among them share one frame.
            let _ = match outcome {
                Outcome::Done if !alone => reply.send_ended(self.id),
                outcome => reply.send_alone(ToParent::Reply { id: self.id, outcome }, alone),
            };
        }
    }

    /// The caller's outcome before the work has ended.
    fn early(&self, outcome: Outcome) {
        if let Some(reply) = &self.reply {
            let _ = reply.send(ToParent::Early { id: self.id, outcome });
        }
    }

    /// The runner-side accounting of a call's end; returns whether no other
    /// call runs now.
    fn done(&self) -> bool {
        let alone = {
            let mut tasks = self.serve.calls.tasks.lock().expect("poisoned");
            tasks.remove(&self.id);
            tasks.is_empty()
        };
        // Noted before the count drops when this is likely the last call,
        // so an idle check never sees no work and an older time.
        let last = self.serve.calls.active.load(Ordering::Acquire) == 1;
        if last {
            self.serve.touch();
        }
        if self.serve.calls.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            if !last {
                self.serve.touch();
            }
            self.serve.quiet.notify_waiters();
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
    use super::*;

    /// Tasks alive on this runtime, once those that are ending have ended.
    async fn settled_tasks() -> usize {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        Handle::current().metrics().num_alive_tasks()
    }

    #[tokio::test]
    async fn the_helpers_end_with_their_engine() {
        let before = settled_tasks().await;
        let serve = Serve::new(
            RunnerId::new(),
            "pool".into(),
            Registry::new(),
            Handle::current(),
            States::default(),
        );
        // One helper per worker (this runtime has one), and one more.
        assert_eq!(settled_tasks().await, before + 2);
        drop(serve);
        assert_eq!(settled_tasks().await, before, "no helper outlives its engine");
    }
}
