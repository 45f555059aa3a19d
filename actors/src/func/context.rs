//! What a remote function can learn about the call it is serving: which
//! runner runs it, its deadline, and whether its caller gave up.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::time::Instant;

use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::func::states::States;
use crate::func::stream::StreamSink;
use crate::ids::RunnerId;

tokio::task_local! {
    static CURRENT_CALL: CurrentCall;
}

/// The call a remote function body is serving.
///
/// Get it with [`current_call`] inside a body. Async bodies are aborted at
/// their next `.await` when their call is cancelled or passes its deadline,
/// so they rarely need it; blocking bodies (and long loops that never
/// `.await`) cannot be aborted from outside and should poll
/// [`is_cancelled`](CurrentCall::is_cancelled) between steps: until the body
/// returns, its slot stays taken, so the pool never runs more work on a
/// runner than `max_concurrency` allows.
///
/// # Examples
///
/// ```
/// use ractor_flame_actors::{FnError, RemoteFn, current_call};
///
/// struct Frames;
/// impl RemoteFn for Frames {
///     const NAME: &'static str = "frames";
///     const BLOCKING: bool = true;
///     type Args = u32;
///     type Output = u32;
///     async fn run(frames: u32) -> Result<u32, FnError> {
///         let call = current_call().expect("inside a call");
///         for done in 0..frames {
///             if call.is_cancelled() {
///                 return Err(FnError::msg(format!("stopped after {done} frames")));
///             }
///             // ... encode one frame ...
///         }
///         Ok(frames)
///     }
/// }
/// ```
#[derive(Clone)]
pub struct CurrentCall {
    inner: Arc<Inner>,
}

/// The runner a call runs on, shared by all of its calls: its id and the
/// states its functions read.
#[derive(Debug, Default)]
pub(crate) struct RunnerScope {
    pub(crate) runner: RunnerId,
    pub(crate) states: States,
}

impl RunnerScope {
    pub(crate) fn new(runner: RunnerId, states: States) -> Arc<Self> {
        Arc::new(RunnerScope { runner, states })
    }
}

/// A call's context. Kept within 104 bytes (see the test below): a remote
/// call's context is allocated on the thread that reads the connection and
/// freed on a helper, and glibc frees a block of up to 120 bytes to its
/// fast bins without taking the allocating thread's arena lock. One over
/// that, every free contends with the reader's next allocation.
struct Inner {
    scope: Arc<RunnerScope>,
    id: u64,
    deadline: Option<Instant>,
    cancelled: AtomicBool,
    notify: Notify,
    /// The task running the call, once it is spawned (calls a runner runs
    /// as tasks of their own).
    task: std::sync::OnceLock<AbortHandle>,
    /// What only some calls have, allocated only for them.
    extra: Option<Box<Extra>>,
}

/// The parts of a call's context that only some calls have.
struct Extra {
    /// Set by the caller for a call that may be retried.
    idempotency_key: Option<Box<str>>,
    /// A streaming call's items and credit.
    stream: Option<Arc<StreamSink>>,
}

impl fmt::Debug for CurrentCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurrentCall")
            .field("runner", &self.inner.scope.runner)
            .field("id", &self.inner.id)
            .field("deadline", &self.inner.deadline)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl CurrentCall {
    pub(crate) fn new(scope: &Arc<RunnerScope>, id: u64, deadline: Option<Instant>) -> Self {
        Self::with_key(scope, id, deadline, None, None)
    }

    /// A call's context with its idempotency key, if its caller sent one,
    /// and a streaming call's sink.
    pub(crate) fn with_key(
        scope: &Arc<RunnerScope>,
        id: u64,
        deadline: Option<Instant>,
        idempotency_key: Option<&str>,
        stream: Option<Arc<StreamSink>>,
    ) -> Self {
        let extra = (idempotency_key.is_some() || stream.is_some()).then(|| {
            Box::new(Extra {
                idempotency_key: idempotency_key.map(Into::into),
                stream,
            })
        });
        CurrentCall {
            inner: Arc::new(Inner {
                scope: Arc::clone(scope),
                id,
                deadline,
                cancelled: AtomicBool::new(false),
                notify: Notify::new(),
                task: std::sync::OnceLock::new(),
                extra,
            }),
        }
    }

    /// A streaming call's sink; `None` for any other call.
    pub(crate) fn stream(&self) -> Option<&Arc<StreamSink>> {
        self.inner.extra.as_ref()?.stream.as_ref()
    }

    /// The call's id on its runner's connection.
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// The runner serving the call.
    pub fn runner(&self) -> RunnerId {
        self.inner.scope.runner
    }

    /// The runner's state of type `S` (see
    /// [`Registry::with_state`](crate::Registry::with_state)); `None` when no
    /// such state is registered.
    pub fn state<S: Send + Sync + 'static>(&self) -> Option<Arc<S>> {
        self.inner.scope.states.get::<S>()
    }

    /// The key that names this call across its attempts, when its caller
    /// opted into retries (`CallOptions::retry` in the facade): every
    /// attempt of one call sees the same key, and a body with side effects
    /// (a payment, a write) uses it to do them once. `None` for a call that
    /// is never retried.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame_actors::{FnError, RemoteFn, current_call};
    ///
    /// struct Charge;
    /// impl RemoteFn for Charge {
    ///     const NAME: &'static str = "charge";
    ///     type Args = u64;
    ///     type Output = String;
    ///     async fn run(cents: u64) -> Result<String, FnError> {
    ///         let key = current_call().and_then(|c| c.idempotency_key().map(str::to_owned));
    ///         // Hand `key` to the payment API, which charges once per key.
    ///         Ok(format!("{cents} charged under {key:?}"))
    ///     }
    /// }
    /// ```
    pub fn idempotency_key(&self) -> Option<&str> {
        self.inner.extra.as_ref()?.idempotency_key.as_deref()
    }

    /// When the call's execution budget ends; `None` for none (casts).
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// Whether the work should stop: its caller cancelled it (or went away),
    /// the runner is shutting down, or its deadline has passed. Cheap enough
    /// to poll in a hot loop.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire) || self.inner.deadline.is_some_and(|at| Instant::now() >= at)
    }

    /// Resolves once the call is cancelled or its deadline passes.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses nothing.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.inner.cancelled.load(Ordering::Acquire) {
                return;
            }
            match self.inner.deadline {
                Some(at) => {
                    if tokio::time::timeout_at(at.into(), notified).await.is_err() {
                        return;
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Whether the call was stopped (cancelled, or aborted), its deadline
    /// aside.
    pub(crate) fn is_stopped(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Completes once the call is stopped ([`CurrentCall::cancel`]; its
    /// deadline aside): what a call running in its caller's task selects
    /// on.
    pub(crate) async fn stopped(&self) {
        loop {
            // Registered before the look: a `cancel` in between wakes it.
            let notified = self.inner.notify.notified();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }

    /// Marks the call cancelled and wakes whoever waits for it.
    pub(crate) fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Cancels the call and aborts its task. A call whose task is not
    /// spawned yet is aborted by [`CurrentCall::spawned`] instead: of the
    /// two, whichever comes second sees the other.
    pub(crate) fn abort(&self) {
        self.cancel();
        fence(Ordering::SeqCst);
        if let Some(task) = self.inner.task.get() {
            task.abort();
        }
    }

    /// Notes the task that runs the call; aborts it at once when the call
    /// was aborted before it existed.
    pub(crate) fn spawned(&self, task: AbortHandle) {
        let task = self.inner.task.get_or_init(|| task);
        fence(Ordering::SeqCst);
        if self.inner.cancelled.load(Ordering::SeqCst) {
            task.abort();
        }
    }

    /// Runs `work` with this call as the current one.
    pub(crate) fn scope<F: std::future::Future>(self, work: F) -> impl std::future::Future<Output = F::Output> {
        CURRENT_CALL.scope(self, work)
    }
}

/// The call the current remote function body serves; `None` outside one
/// (and in tasks the body spawns: pass the value along).
///
/// # Examples
///
/// ```
/// assert!(ractor_flame_actors::current_call().is_none());
/// ```
pub fn current_call() -> Option<CurrentCall> {
    CURRENT_CALL.try_with(Clone::clone).ok()
}

/// The runner the current remote function runs on; `None` outside one.
///
/// # Examples
///
/// ```
/// assert!(ractor_flame_actors::current_runner().is_none());
/// ```
pub fn current_runner() -> Option<RunnerId> {
    CURRENT_CALL.try_with(CurrentCall::runner).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calls_context_stays_in_glibcs_fast_bins() {
        // The `Arc`'s block: two counts and the context; glibc's fast bins
        // take blocks of up to 120 bytes.
        let block = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Inner>();
        assert!(block <= 120, "a call's context takes a {block}-byte block");
    }

    #[test]
    fn only_a_call_with_a_key_or_a_stream_allocates_its_extras() {
        let scope = Arc::new(RunnerScope::default());
        let plain = CurrentCall::new(&scope, 7, None);
        assert!(plain.inner.extra.is_none());
        assert_eq!((plain.id(), plain.idempotency_key()), (7, None));
        let keyed = CurrentCall::with_key(&scope, 8, None, Some("k-1"), None);
        assert_eq!(keyed.idempotency_key(), Some("k-1"));
        assert!(keyed.stream().is_none());
        assert_eq!(keyed.runner(), scope.runner);
    }
}
