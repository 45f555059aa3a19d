//! The runner's call engine: calls run on the application's runtime (a call
//! whose body finishes at once in the helper task that starts it, any other
//! in a task of its own; blocking functions on its blocking pool),
//! deadlines, panics caught, and the counters idle shutdown and drain read.
//!
//! Shared by the Terminator actor and whatever feeds it calls (the TCP
//! reader on the link thread, or a local caller directly), so calls never
//! queue behind the Terminator's mailbox. Every call ends with exactly one
//! [`ToParent::Reply`](crate::wire::frame::ToParent::Reply), sent when its
//! work has really ended (completed, aborted, or returned after
//! cancellation): that frame frees the call's slot on the parent.
//!
//! # One call, in order
//!
//! 1. `serve/admit.rs`: the link thread's reader hands a call frame to
//!    [`Serve::dispatch`]. A draining runner refuses it at once, an
//!    unknown function too. Every call is admitted with its argument bytes
//!    held, not decoded (decoding the application's types is its code, and
//!    none runs on the link thread, B48). The call is counted in, gets its
//!    entry among the running calls (so a cancel can reach it), and its end
//!    (a `Finish`) is armed before anything of it runs.
//! 2. `serve/helpers.rs`: the admitted call (a `Start`) joins the helper
//!    queue, which wakes a waiting helper task on the work runtime;
//!    operations on placed children join the ordered lane, whose calls one
//!    helper at a time starts in order. The link thread's part ends here.
//! 3. `serve/start.rs`: the helper runs `Start::run`: it builds the work
//!    (the function decodes its arguments; a child's message is decoded
//!    and enqueued), puts a traced call in its span, and polls it once. A
//!    body that finishes in that poll ends the call right there, in the
//!    helper.
//! 4. `serve/run.rs`: a body that waits, or a blocking one, moves to a task
//!    of its own, which runs it until it ends or its deadline passes.
//! 5. `serve/end.rs`: the result becomes the call's `Outcome`; `Finish`
//!    counts the call out, removes its entry and sends its one reply:
//!    straight away when no other call runs, else batched (the ends of
//!    casts share one frame); a local cast's end releases its caller's
//!    hold instead. Work dropped before that (aborted, or never started)
//!    replies `Aborted` from `Finish`'s drop.
//!
//! Off that path: `serve/stop.rs` stops calls from outside (the parent's
//! cancel, the parent lost, the runner's stop, drain), and `serve/admit.rs`
//! also holds the local backend's entries: [`Serve::run_inline`] runs a call
//! in its caller's own task, [`Serve::start_now`] starts a one-way call at
//! once. This file holds the engine itself: its state, the table of running
//! calls, and the counters the Terminator reads.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Notify;

use super::children::Children;
use super::idle_clock;
use crate::func::context::{CurrentCall, RunnerScope};
use crate::func::registry::Registry;
use crate::func::states::States;
use crate::ids::IdMap;
use crate::ids::RunnerId;
pub(crate) use end::Release;
use helpers::{HelperGuard, Lane, StartQueue, Starts, helper};

mod admit;
mod end;
mod helpers;
mod run;
mod start;
mod stop;

/// The call engine of one runner.
#[derive(Debug)]
pub struct Serve {
    /// What every call writes as it starts and ends.
    calls: Calls,
    /// The pool this runner serves (its parent's name for it), for spans.
    pool: String,
    registry: Registry,
    /// The runner's id and states (built once at its start), shared with
    /// every call's context.
    scope: Arc<RunnerScope>,
    /// Where admitted calls wait for a [`helper`], a task of the work
    /// runtime (the application's, never the link thread): function bodies
    /// run there.
    starts: Arc<Starts>,
    /// The work runtime, where the registry's idle predicates are asked.
    work: Handle,
    accepting: AtomicBool,
    /// The idle clock's reading (see `idle_clock.rs`) when the last call
    /// ended (or started), or when the runner began.
    last_activity_us: AtomicU64,
    /// Woken when `active` drops to zero while `quiet_watchers` is not 0.
    quiet: Notify,
    /// Waits for the quiet (drains) under way.
    quiet_watchers: AtomicUsize,
    /// Every call was stopped (`fail_all`).
    failed: AtomicBool,
    /// Every linked call was stopped (`abort_linked`).
    parent_lost: AtomicBool,
    /// The thread that waits for `active` to drop to zero, if any (the one
    /// that gives memory back, `tidy.rs`), unparked when it does.
    quiet_thread: OnceLock<std::thread::Thread>,
    /// Whether `quiet_thread` waits now.
    quiet_waiting: AtomicBool,
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
    /// A call running in its caller's task, which selects on its call's
    /// stop; a call of its own task is aborted through its `call`.
    inline: bool,
    linked: bool,
    /// A blocking body cannot be aborted: it is told, and its slot stays
    /// taken until it returns.
    blocking: bool,
}

impl Running {
    fn stop(&self) {
        if self.blocking {
            self.call.cancel();
        } else if self.inline {
            // The caller's task selects on this: its future ends `None`.
            self.call.cancel();
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
            lane: Mutex::new(Lane::default()),
        });
        for _ in 0..helpers {
            // The guard lives in the future: a helper that never runs (the
            // runtime is going) still counts itself out.
            work.spawn(helper(HelperGuard(Arc::clone(&starts))));
        }
        Arc::new(Serve {
            pool,
            registry,
            scope: RunnerScope::new(runner, states),
            calls: Calls {
                tasks: Mutex::new(IdMap::default()),
                active: AtomicUsize::new(0),
            },
            starts,
            work,
            accepting: AtomicBool::new(true),
            last_activity_us: AtomicU64::new(idle_clock::now_us()),
            quiet: Notify::new(),
            quiet_watchers: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            parent_lost: AtomicBool::new(false),
            quiet_thread: OnceLock::new(),
            quiet_waiting: AtomicBool::new(false),
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

    /// Asks the named idle predicate of the registry, on the work runtime's
    /// blocking pool: it is the application's code and may take its time,
    /// and the Terminator that asks may run on the link thread. `answer`
    /// gets whether it holds (`false` when it panicked), on that pool.
    pub(crate) fn ask_predicate(self: &Arc<Self>, name: &str, answer: impl FnOnce(bool) + Send + 'static) {
        let (serve, name) = (Arc::clone(self), name.to_owned());
        self.work.spawn_blocking(move || {
            let holds = std::panic::catch_unwind(AssertUnwindSafe(|| serve.registry.predicate_holds(&name)));
            if holds.is_err() {
                tracing::warn!(target: "ractor_flame::terminator", predicate = name, "idle predicate panicked");
            }
            answer(holds.unwrap_or(false));
        });
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
        // SeqCst: see `went_quiet`.
        if self.calls.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.went_quiet();
        }
    }

    /// Calls running now.
    pub(crate) fn active(&self) -> usize {
        self.calls.active.load(Ordering::Acquire)
    }

    /// How long since the last call started or ended.
    pub(crate) fn idle_for(&self) -> Duration {
        let last = self.last_activity_us.load(Ordering::Acquire);
        Duration::from_micros(idle_clock::now_us().saturating_sub(last))
    }

    fn touch(&self) {
        self.last_activity_us.fetch_max(idle_clock::now_us(), Ordering::AcqRel);
    }

    /// Blocks this (non-runtime) thread until the runner has been quiet
    /// for `quiet` (no call running, none ended for that long) after
    /// activity newer than `seen`, the activity time a previous wait
    /// returned (`None` counts the start as activity). Parks while calls
    /// run or nothing happens (the end of the last running call wakes it),
    /// and sleeps out the rest of `quiet` otherwise. Returns `false` once
    /// `stop` is set (and the thread unparked).
    pub(crate) fn settled_blocking(&self, seen: &mut Option<u64>, quiet: Duration, stop: &AtomicBool) -> bool {
        loop {
            if stop.load(Ordering::Acquire) {
                return false;
            }
            // Registered before the look, so no end of the last call is
            // missed (an unpark before the park is kept).
            self.quiet_thread.get_or_init(std::thread::current);
            self.quiet_waiting.store(true, Ordering::SeqCst);
            let active = self.calls.active.load(Ordering::SeqCst);
            // After the count: the end that dropped it had noted its time.
            let last = self.last_activity_us.load(Ordering::Acquire);
            if active > 0 || *seen == Some(last) {
                std::thread::park();
                continue;
            }
            self.quiet_waiting.store(false, Ordering::SeqCst);
            let idle = self.idle_for();
            if idle < quiet {
                std::thread::park_timeout(quiet - idle);
                continue;
            }
            *seen = Some(last);
            return true;
        }
    }

    /// The last running call ended: wakes what waits for the quiet.
    /// The count dropped with a `SeqCst` operation and the waiter sets its
    /// flag, then reads the count, with `SeqCst` too: one of the two sees
    /// the other. A runner with no such thread (in-process) pays one load.
    pub(crate) fn went_quiet(&self) {
        // A drain counts itself as watching before it looks at the count
        // (SeqCst both, as the count's drop): one of the two sees the other.
        if self.quiet_watchers.load(Ordering::SeqCst) > 0 {
            self.quiet.notify_waiters();
        }
        if self.quiet_waiting.load(Ordering::SeqCst)
            && self.quiet_waiting.swap(false, Ordering::SeqCst)
            && let Some(thread) = self.quiet_thread.get()
        {
            thread.unpark();
        }
    }

    /// Stops taking new calls (drain).
    pub(crate) fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Release);
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // No call is queued now (each holds the engine): the helpers end.
        self.starts.close();
    }
}

#[cfg(test)]
mod tests;
