//! The `Backend` trait: how runners are provisioned and reclaimed.
//!
//! Its callbacks are invoked from the Runner actor's handlers (one Runner per
//! runner): `init` when the Runner starts, `remote_boot` when the pool asks it
//! to boot, `handle_info` for backend-specific messages (a Docker event), and
//! `terminate` when the Runner stops. `system_shutdown` runs on the runner
//! side, once, when the Terminator is done.
//!
//! Calls do not pass through the backend: DESIGN section 2 keeps the data path
//! off the Runner's mailbox, so a caller sends its call on the runner's
//! connection ([`RunnerConn`](crate::RunnerConn)) directly.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use ractor::ActorRef;

use crate::config::LinkTls;
use crate::error::{BackendError, DownReason};
use crate::flame_parent::{Parent, RunnerSettings};
use crate::func::registry::Registry;
use crate::ids::{RunnerId, Token};
use crate::on_parent::runner::RunnerMessage;

/// Everything a backend needs to boot one runner.
#[derive(Clone)]
pub struct RunnerContext {
    /// The runner being booted.
    pub runner_id: RunnerId,
    /// The pool's name.
    pub pool: String,
    /// The runner's secret, to put in `FLAME_PARENT`.
    pub token: Token,
    /// The functions the runner serves (used in-process by the local backend).
    pub registry: Registry,
    /// Settings the runner applies.
    pub settings: RunnerSettings,
    /// How long the runner has to connect back.
    pub boot_timeout: Duration,
    /// The Runner actor; reach it through [`RunnerContext::notify`] or a
    /// [`RunnerNotifier`].
    pub(crate) runner: ActorRef<RunnerMessage>,
    /// Whether the runner's link is encrypted; [`Endpoint::expect`]
    /// applies it.
    ///
    /// [`Endpoint::expect`]: crate::Endpoint::expect
    pub link_tls: LinkTls,
    /// When the boot must be over (see [`RunnerContext::boot_deadline`]).
    pub(crate) boot_deadline: std::time::Instant,
}

impl fmt::Debug for RunnerContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerContext")
            .field("runner_id", &self.runner_id)
            .field("pool", &self.pool)
            .field("boot_timeout", &self.boot_timeout)
            .finish_non_exhaustive()
    }
}

impl RunnerContext {
    /// The context of a runner whose Runner actor is `runner`, with a fresh
    /// token, default settings, the default boot timeout and
    /// [`LinkTls::Auto`]; set the public fields to change them. A pool makes
    /// these itself; make one to drive an [`Endpoint`](crate::Endpoint)
    /// without a pool (a test that plays the Runner).
    pub fn new(
        runner_id: RunnerId,
        pool: impl Into<String>,
        registry: Registry,
        runner: ActorRef<RunnerMessage>,
    ) -> Self {
        RunnerContext {
            runner_id,
            pool: pool.into(),
            token: Token::generate(),
            registry,
            settings: RunnerSettings::default(),
            boot_timeout: crate::config::DEFAULT_TIMEOUT,
            runner,
            link_tls: LinkTls::Auto,
            boot_deadline: std::time::Instant::now() + crate::config::DEFAULT_TIMEOUT,
        }
    }

    /// When this runner's boot must be over: the Runner's start plus its
    /// boot budget (the pool's `boot_timeout`, or the backend's own
    /// [`Backend::boot_limit`] when shorter). The Runner cuts off a boot
    /// still running then; a backend that bounds steps of its own (retries,
    /// waits for a machine) ends them by this instant, so that its own
    /// account of what it was doing becomes the boot's error.
    pub fn boot_deadline(&self) -> std::time::Instant {
        self.boot_deadline
    }

    /// Tells this runner's Runner actor something backend-specific (an
    /// engine event, a process exit): the Runner hands `info` to
    /// [`Backend::handle_info`], in its own task, one message at a time.
    /// Returns `false` when the Runner has already stopped.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame_actors::{Backend, BackendError, DownReason, RunnerContext};
    ///
    /// /// What the backend's watcher learns about its runner.
    /// struct Exited(i32);
    ///
    /// struct Shell;
    /// impl Backend for Shell {
    ///     type State = ();
    ///     fn name(&self) -> &'static str { "shell" }
    ///     async fn init(&self, _ctx: &RunnerContext) -> Result<(), BackendError> { Ok(()) }
    ///     async fn remote_boot(&self, _s: &mut (), ctx: &RunnerContext) -> Result<(), BackendError> {
    ///         let notifier = ctx.notifier();
    ///         tokio::spawn(async move {
    ///             // ... wait for the runner's process, then:
    ///             notifier.notify(Exited(137));
    ///         });
    ///         Ok(())
    ///     }
    ///     async fn handle_info(&self, _s: &mut (), info: Box<dyn std::any::Any + Send>) -> Option<DownReason> {
    ///         let code = info.downcast::<Exited>().ok()?.0;
    ///         Some(DownReason::Exited(i64::from(code)))
    ///     }
    /// }
    /// ```
    pub fn notify(&self, info: impl Any + Send) -> bool {
        self.notifier().notify(info)
    }

    /// A handle that tells this runner's Runner actor something later, from
    /// a task of the backend's own (a process watcher, an event stream).
    pub fn notifier(&self) -> RunnerNotifier {
        RunnerNotifier(self.runner.clone())
    }

    /// The `FLAME_PARENT` description for this runner, without TLS. A
    /// backend that runners reach over TCP gets its description from
    /// [`Endpoint::expect`](crate::Endpoint::expect) instead.
    pub fn parent(&self, addrs: Vec<std::net::SocketAddr>, backend: &str) -> Parent {
        let mut parent = Parent::new(
            self.runner_id,
            addrs,
            self.token.clone(),
            backend,
            self.registry.build_id(),
        );
        parent.node_base = self.pool.clone();
        parent.settings = self.settings.clone();
        parent
    }
}

/// A backend's way to reach one runner's Runner actor from its own tasks;
/// made by [`RunnerContext::notifier`], cheap to clone.
#[derive(Clone)]
pub struct RunnerNotifier(ActorRef<RunnerMessage>);

impl RunnerNotifier {
    /// Sends `info` to the Runner, which hands it to
    /// [`Backend::handle_info`]. Returns `false` when the Runner has already
    /// stopped (the message is dropped).
    pub fn notify(&self, info: impl Any + Send) -> bool {
        self.0.cast(RunnerMessage::Info(Box::new(info))).is_ok()
    }
}

impl fmt::Debug for RunnerNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RunnerNotifier").field(&self.0.get_id()).finish()
    }
}

/// A way to run runners: in-process, as child processes, as containers.
///
/// # Examples
///
/// A backend that never manages to boot, for tests of boot failure:
///
/// ```
/// use ractor_flame_actors::{Backend, BackendError, RunnerContext};
///
/// struct Broken;
///
/// impl Backend for Broken {
///     type State = ();
///     fn name(&self) -> &'static str { "broken" }
///     async fn init(&self, _ctx: &RunnerContext) -> Result<(), BackendError> { Ok(()) }
///     async fn remote_boot(&self, _s: &mut (), _ctx: &RunnerContext) -> Result<(), BackendError> {
///         Err(BackendError::new("no capacity"))
///     }
/// }
/// ```
pub trait Backend: Send + Sync + 'static {
    /// Per-runner state the backend keeps on the parent (a child process, a
    /// container id).
    type State: Send + 'static;

    /// A short name (`"local"`, `"process"`, `"docker"`), put in
    /// `FLAME_PARENT`.
    fn name(&self) -> &'static str;

    /// Prepares a runner's state. Called when its Runner actor starts, in the
    /// Runner's own task (the pool is not blocked).
    fn init(&self, ctx: &RunnerContext) -> impl Future<Output = Result<Self::State, BackendError>> + Send;

    /// Provisions the runner and hands it `FLAME_PARENT`. Returns once the
    /// runner is started; the runner then connects back on its own. The
    /// boot timeout (`ctx.boot_timeout`) covers all of it: this callback,
    /// then the connect-back in what is left; a boot past it fails with a
    /// boot timeout (and this future is dropped if it is still running).
    fn remote_boot(
        &self,
        state: &mut Self::State,
        ctx: &RunnerContext,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// A backend-specific message reached the Runner (for example an engine
    /// event). Return `Some(reason)` when it means the runner is gone.
    fn handle_info(
        &self,
        state: &mut Self::State,
        info: Box<dyn Any + Send>,
    ) -> impl Future<Output = Option<DownReason>> + Send {
        let _ = (state, info);
        async { None }
    }

    /// After a runner's connection drops, how long to wait for this
    /// backend's own explanation (through `handle_info`) before the calls in
    /// flight fail with the connection's reason. Default: no wait.
    fn down_grace(&self) -> Duration {
        Duration::ZERO
    }

    /// The backend's own bound on a boot, when it has one (an option of its
    /// own, as FLAME's Fly backend has): a boot then has the shorter of this
    /// and the pool's boot timeout. Default: none.
    fn boot_limit(&self) -> Option<Duration> {
        None
    }

    /// Reclaims what the runner used (kill the process, remove the container).
    /// Called once when the Runner stops, after the drain.
    fn terminate(&self, state: &mut Self::State) -> impl Future<Output = ()> + Send {
        let _ = state;
        async {}
    }

    /// Runner side: stop the machine once the Terminator is done. The default
    /// does nothing (the runner's process exits on its own).
    fn system_shutdown(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}
