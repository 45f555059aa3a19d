//! The runner's call engine: one abortable tokio task per call, deadlines,
//! panics caught, and the counters idle shutdown and drain read.
//!
//! Shared by the Terminator actor and whatever feeds it calls (the TCP
//! reader, or a local caller directly), so calls never queue behind the
//! Terminator's mailbox.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;

use super::children::Children;
use crate::parent::RunnerId;
use crate::registry::{BoxFuture, Registry, RunFailure};
use crate::wire::frame::{CHILD_CALL, CHILD_CAST, CHILD_STOP, ChildEnvelope, PLACE};

tokio::task_local! {
    static CURRENT_RUNNER: RunnerId;
}

/// The runner the current remote function runs on; `None` outside one.
///
/// # Examples
///
/// ```
/// assert!(ractor_flame_actors::current_runner().is_none());
/// ```
pub fn current_runner() -> Option<RunnerId> {
    CURRENT_RUNNER.try_with(|id| *id).ok()
}
use crate::wire::frame::{CallFrame, CallRef, Outcome, ToParent};

/// The call engine of one runner.
#[derive(Debug)]
pub struct Serve {
    runner: RunnerId,
    registry: Registry,
    /// How to abort each running call, with whether it is linked.
    tasks: Mutex<HashMap<u64, (Abort, bool)>>,
    active: AtomicUsize,
    accepting: AtomicBool,
    born: Instant,
    /// Microseconds after `born` when the last call ended (or started).
    last_activity_us: AtomicU64,
    /// Woken whenever `active` drops to zero.
    quiet: Notify,
    /// Placed children.
    children: Children,
}

impl Serve {
    pub(crate) fn new(runner: RunnerId, registry: Registry) -> Arc<Self> {
        Arc::new(Serve {
            runner,
            registry,
            tasks: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
            accepting: AtomicBool::new(true),
            born: Instant::now(),
            last_activity_us: AtomicU64::new(0),
            quiet: Notify::new(),
            children: Children::default(),
        })
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

    /// A placed child holds a slot for its whole life (B33).
    pub(crate) fn child_started(&self) {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.touch();
    }

    pub(crate) fn child_stopped(&self) {
        self.touch();
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.quiet.notify_waiters();
        }
    }

    /// The work a call names: a registered function, or an operation on
    /// placed children. Child messages are enqueued here, synchronously, so
    /// a caller's messages reach its child in the order they were sent.
    fn start_work(self: &Arc<Self>, call: &CallRef<'_>) -> Result<BoxFuture, Outcome> {
        let name = call.function;
        if let Some(actor) = name.strip_prefix(PLACE) {
            let (this, actor, args, id, linked) = (
                Arc::clone(self),
                actor.to_owned(),
                call.args.to_vec(),
                call.id,
                call.linked,
            );
            return Ok(Box::pin(async move {
                this.children.place(&this, &actor, &args, id, linked).await
            }));
        }
        match name {
            CHILD_CAST => {
                self.children.cast(&decode_envelope(call.args)?)?;
                Ok(Box::pin(std::future::ready(Ok(Vec::new()))))
            }
            CHILD_CALL => self.children.call(&decode_envelope(call.args)?),
            CHILD_STOP => {
                let child: u64 = rmp_serde::from_slice(call.args).map_err(|e| Outcome::Codec(e.to_string()))?;
                self.children.stop(child);
                Ok(Box::pin(std::future::ready(Ok(Vec::new()))))
            }
            _ => match self.registry.start(name, call.args) {
                Some(work) => Ok(Box::pin(work)),
                None => Err(Outcome::UnknownFunction),
            },
        }
    }

    /// Creates the work of `call` now and returns a future that runs it to
    /// the end, accounted like any call, its outcome dropped.
    pub(crate) fn start_now(self: &Arc<Self>, call: CallFrame) -> impl Future<Output = ()> + Send + 'static {
        let work = self.start_work(&call.view());
        let this = Arc::clone(self);
        async move {
            if let Ok(work) = work {
                this.active.fetch_add(1, Ordering::AcqRel);
                let _finish = Finish {
                    serve: &this,
                    id: call.id,
                };
                let _ = work.await;
            }
        }
    }

    /// Calls running now.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
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

    /// Starts a call in its own task; its outcome goes to `reply` (the
    /// parent connection).
    pub(crate) fn dispatch(
        self: &Arc<Self>,
        call: CallRef<'_>,
        deadline: Option<Instant>,
        reply: mpsc::UnboundedSender<ToParent>,
    ) {
        if !self.accepting.load(Ordering::Acquire) {
            return send(&reply, call.id, Outcome::Refused);
        }
        let work = match self.start_work(&call) {
            Ok(work) => work,
            Err(outcome) => return send(&reply, call.id, outcome),
        };
        self.active.fetch_add(1, Ordering::AcqRel);
        self.touch();
        let id = call.id;
        let want_result = call.want_result;
        let this = Arc::clone(self);
        // Hold the map's lock across the spawn so the task's own removal
        // (in `Finish`) cannot run before its entry exists.
        let mut tasks = self.tasks.lock().expect("poisoned");
        let runner = self.runner;
        let handle = tokio::spawn(CURRENT_RUNNER.scope(runner, async move {
            let _finish = Finish { serve: &this, id };
            let run = AssertUnwindSafe(work).catch_unwind();
            let outcome = outcome(run_until(deadline, run).await, want_result);
            send(&reply, id, outcome);
        }));
        tasks.insert(id, (Abort::Task(handle.abort_handle()), call.linked));
    }

    /// Runs a call in the caller's own task (the local backend: the runner
    /// is this process, so the extra task and its wake-ups buy nothing).
    /// Accounting, deadline, panics and aborts are as for [`Serve::dispatch`];
    /// dropping the future cancels the call. `None` when the runner aborted
    /// it (the runner is going away).
    pub(crate) async fn run_inline(self: &Arc<Self>, call: CallRef<'_>, deadline: Option<Instant>) -> Option<Outcome> {
        if !self.accepting.load(Ordering::Acquire) {
            return Some(Outcome::Refused);
        }
        let work = match self.start_work(&call) {
            Ok(work) => work,
            Err(outcome) => return Some(outcome),
        };
        self.active.fetch_add(1, Ordering::AcqRel);
        self.touch();
        let abort = Arc::new(Notify::new());
        self.tasks
            .lock()
            .expect("poisoned")
            .insert(call.id, (Abort::Inline(Arc::clone(&abort)), call.linked));
        let _finish = Finish {
            serve: self,
            id: call.id,
        };
        let run = CURRENT_RUNNER.scope(self.runner, AssertUnwindSafe(work).catch_unwind());
        let result = tokio::select! {
            biased;
            _ = abort.notified() => return None,
            result = run_until(deadline, run) => result,
        };
        Some(outcome(result, call.want_result))
    }

    /// Aborts a call; unknown ids are ignored.
    pub(crate) fn cancel(&self, id: u64) {
        if let Some((abort, _)) = self.tasks.lock().expect("poisoned").remove(&id) {
            abort.abort();
        }
    }

    /// Aborts every linked call and stops every linked child: their parent
    /// is gone (B28, B34).
    pub(crate) fn abort_linked(&self) {
        self.children.stop_all(true, "parent lost");
        for (abort, linked) in self.tasks.lock().expect("poisoned").values() {
            if *linked {
                abort.abort();
            }
        }
    }

    /// Aborts every call and stops every child.
    pub(crate) fn fail_all(&self) {
        self.stop_accepting();
        self.children.stop_all(false, "runner stopped");
        for (abort, _) in self.tasks.lock().expect("poisoned").values() {
            abort.abort();
        }
    }

    /// Waits until no call runs, at most `budget`; then aborts what is left.
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

fn decode_envelope(bytes: &[u8]) -> Result<ChildEnvelope, Outcome> {
    rmp_serde::from_slice(bytes).map_err(|e| Outcome::Codec(format!("child message: {e}")))
}

/// Sends a call's outcome to the parent.
fn send(reply: &mpsc::UnboundedSender<ToParent>, id: u64, outcome: Outcome) {
    let _ = reply.send(ToParent::Reply { id, outcome });
}

/// How a running call is aborted.
#[derive(Debug)]
enum Abort {
    /// A spawned task.
    Task(AbortHandle),
    /// A call running in its caller's task: it selects on this.
    Inline(Arc<Notify>),
}

impl Abort {
    fn abort(&self) {
        match self {
            Abort::Task(handle) => handle.abort(),
            // `notify_one` keeps a permit if the call is not waiting yet.
            Abort::Inline(notify) => notify.notify_one(),
        }
    }
}

type Caught = Result<Result<Vec<u8>, RunFailure>, Box<dyn std::any::Any + Send>>;

/// Runs `work` until `deadline`; `None` when the deadline passed first.
async fn run_until(deadline: Option<Instant>, work: impl Future<Output = Caught>) -> Option<Caught> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at.into(), work).await.ok(),
        None => Some(work.await),
    }
}

/// The outcome of a finished (or timed out) call.
fn outcome(result: Option<Caught>, want_result: bool) -> Outcome {
    match result {
        None => Outcome::Deadline,
        Some(Ok(Ok(_))) if !want_result => Outcome::Done,
        Some(Ok(Ok(bytes))) => Outcome::Ok(bytes),
        Some(Ok(Err(RunFailure::Returned(m)))) => Outcome::Returned(m),
        Some(Ok(Err(RunFailure::Codec(m)))) => Outcome::Codec(m),
        Some(Err(panic)) => Outcome::Panicked(panic_message(panic.as_ref())),
    }
}

/// Runs when a call's task ends, however it ends (completion, abort, panic).
struct Finish<'a> {
    serve: &'a Serve,
    id: u64,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        self.serve.tasks.lock().expect("poisoned").remove(&self.id);
        self.serve.touch();
        if self.serve.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.serve.quiet.notify_waiters();
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
