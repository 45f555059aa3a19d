//! `LocalBackend`: the runner lives in this process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ractor::ActorRef;
use ractor_flame_actors::on_runner::{SystemShutdown, TerminatorMessage};
use ractor_flame_actors::{Backend, BackendError, RunnerContext, RunnerId, boot_in_process};

/// Runners as in-process Terminators: no process, no network.
///
/// Same semantics as the remote backends, copying included: arguments and
/// results round-trip through the codec, so a type that cannot be serialized
/// fails in development, not in production. Use it in tests and as the
/// default while developing.
///
/// # Examples
///
/// ```
/// use ractor_flame::{LocalBackend, Pool, PoolConfig, Registry};
///
/// # #[tokio::main] async fn main() -> Result<(), ractor_flame::Error> {
/// let backend = LocalBackend::new();
/// let pool = Pool::start(PoolConfig::new(4), backend.clone(), &Registry::new()).await?;
/// pool.stop().await;
/// assert_eq!(backend.system_shutdowns(), 0, "no runner was booted");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct LocalBackend {
    shutdowns: Arc<AtomicUsize>,
    /// Live in-process runners, for [`LocalBackend::kill_runners`].
    live: Arc<Mutex<HashMap<RunnerId, ActorRef<TerminatorMessage>>>>,
}

impl LocalBackend {
    /// A local backend. Clones share their counters and runners, so keep a
    /// clone to call [`system_shutdowns`](Self::system_shutdowns) or
    /// [`kill_runners`](Self::kill_runners) after handing one to a pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many in-process runners have completed `system_shutdown` (each
    /// does so exactly once). Tests use it to check that every booted runner
    /// was shut down.
    pub fn system_shutdowns(&self) -> usize {
        self.shutdowns.load(Ordering::Acquire)
    }

    /// Kills every in-process runner at once, as a crash would: no drain,
    /// and their calls in flight fail with [`Error::RunnerDown`]. For fault
    /// tests; returns how many were killed.
    ///
    /// [`Error::RunnerDown`]: crate::Error::RunnerDown
    pub fn kill_runners(&self) -> usize {
        let live = std::mem::take(&mut *self.live.lock().expect("poisoned"));
        for terminator in live.values() {
            terminator.kill();
        }
        live.len()
    }
}

impl Backend for LocalBackend {
    type State = (RunnerId, Option<ActorRef<TerminatorMessage>>);

    fn name(&self) -> &'static str {
        "local"
    }

    async fn init(&self, ctx: &RunnerContext) -> Result<Self::State, BackendError> {
        Ok((ctx.runner_id, None))
    }

    async fn remote_boot(&self, state: &mut Self::State, ctx: &RunnerContext) -> Result<(), BackendError> {
        // The in-process Terminator calls this backend's `system_shutdown`
        // once it is done (B30).
        let backend = self.clone();
        let hook: SystemShutdown = Box::new(move || Box::pin(async move { backend.system_shutdown().await }));
        let terminator = boot_in_process(ctx, Some(hook))
            .await
            .map_err(|e| BackendError::new(format!("in-process runner: {e}")))?;
        self.live
            .lock()
            .expect("poisoned")
            .insert(ctx.runner_id, terminator.clone());
        state.1 = Some(terminator);
        Ok(())
    }

    /// Nothing to stop in this process: counts the shutdown instead (see
    /// [`LocalBackend::system_shutdowns`]).
    async fn system_shutdown(&self) {
        self.shutdowns.fetch_add(1, Ordering::AcqRel);
    }

    async fn terminate(&self, state: &mut Self::State) {
        // The Runner drained it already; a Terminator still alive past its
        // drain budget is killed.
        self.live.lock().expect("poisoned").remove(&state.0);
        if let Some(terminator) = state.1.take() {
            terminator.kill();
        }
    }
}
