//! The runner's call engine: one abortable tokio task per call, deadlines,
//! panics caught, and the counters idle shutdown and drain read.
//!
//! Shared by the Terminator actor and whatever feeds it calls (the TCP
//! reader, or a local caller directly), so calls never queue behind the
//! Terminator's mailbox.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::parent::RunnerId;
use crate::registry::{Registry, RunFailure};

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
use crate::wire::frame::{CallFrame, Outcome, ToParent};

/// Where a call's outcome goes.
#[derive(Debug)]
pub(crate) enum Replier {
    /// Straight to the caller (local backend).
    Direct(oneshot::Sender<Outcome>),
    /// Onto the parent connection.
    Wire(mpsc::UnboundedSender<ToParent>),
}

impl Replier {
    fn send(self, id: u64, outcome: Outcome) {
        match self {
            Replier::Direct(tx) => {
                let _ = tx.send(outcome);
            }
            Replier::Wire(tx) => {
                let _ = tx.send(ToParent::Reply { id, outcome });
            }
        }
    }
}

/// The call engine of one runner.
#[derive(Debug)]
pub struct Serve {
    runner: RunnerId,
    registry: Registry,
    /// Abort handles of running calls, with whether each is linked.
    tasks: Mutex<HashMap<u64, (AbortHandle, bool)>>,
    active: AtomicUsize,
    accepting: AtomicBool,
    born: Instant,
    /// Microseconds after `born` when the last call ended (or started).
    last_activity_us: AtomicU64,
    /// Woken whenever `active` drops to zero.
    quiet: Notify,
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
        })
    }

    /// Runs the named idle predicate of the registry.
    pub(crate) fn registry_predicate(&self, name: &str) -> bool {
        self.registry.predicate_holds(name)
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

    /// Starts a call in its own task.
    pub(crate) fn dispatch(self: &Arc<Self>, call: CallFrame, deadline: Option<Instant>, replier: Replier) {
        if !self.accepting.load(Ordering::Acquire) {
            return replier.send(call.id, Outcome::Refused);
        }
        let Some(work) = self.registry.start(&call.function, &call.args) else {
            return replier.send(call.id, Outcome::UnknownFunction);
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
            let result = match deadline {
                Some(at) => tokio::time::timeout_at(at.into(), run).await.ok(),
                None => Some(run.await),
            };
            let outcome = match result {
                None => Outcome::Deadline,
                Some(Ok(Ok(_))) if !want_result => Outcome::Done,
                Some(Ok(Ok(bytes))) => Outcome::Ok(bytes),
                Some(Ok(Err(RunFailure::Returned(m)))) => Outcome::Returned(m),
                Some(Ok(Err(RunFailure::Codec(m)))) => Outcome::Codec(m),
                Some(Err(panic)) => Outcome::Panicked(panic_message(panic.as_ref())),
            };
            replier.send(id, outcome);
        }));
        tasks.insert(id, (handle.abort_handle(), call.linked));
    }

    /// Aborts a call; unknown ids are ignored.
    pub(crate) fn cancel(&self, id: u64) {
        if let Some((handle, _)) = self.tasks.lock().expect("poisoned").remove(&id) {
            handle.abort();
        }
    }

    /// Aborts every linked call: their parent is gone (B28).
    pub(crate) fn abort_linked(&self) {
        for (handle, linked) in self.tasks.lock().expect("poisoned").values() {
            if *linked {
                handle.abort();
            }
        }
    }

    /// Aborts every call.
    pub(crate) fn fail_all(&self) {
        self.stop_accepting();
        for (handle, _) in self.tasks.lock().expect("poisoned").values() {
            handle.abort();
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
