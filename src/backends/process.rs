//! `ProcessBackend`: each runner is a child process of this executable.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use ractor_flame_actors::{
    Backend, BackendError, DownReason, Endpoint, FLAME_PARENT, RunnerContext, RunnerId, RunnerNotifier,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{OnceCell, oneshot};

/// Runners as child OS processes: the full network path (TCP, handshake,
/// heartbeats) without Docker.
///
/// By default the child runs the current executable with the same arguments
/// as the parent, plus `FLAME_PARENT` in its environment; the program's
/// `main` must call [`run_if_runner`](crate::run_if_runner) first. Its stdout
/// and stderr are forwarded to this process's tracing output, tagged with the
/// runner id, and it is reaped when it exits.
///
/// # Examples
///
/// ```no_run
/// use ractor_flame::{Pool, PoolConfig, ProcessBackend, Registry};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = Registry::new();
/// ractor_flame::run_if_runner(&registry).await?;
/// let backend = ProcessBackend::current_exe()?.arg("--runner-mode").env("RUST_LOG", "info");
/// let pool = Pool::start(PoolConfig::new(4), backend, &registry).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ProcessBackend {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    bind: SocketAddr,
    parent_addr: Option<SocketAddr>,
    endpoint: Arc<OnceCell<Endpoint>>,
}

impl fmt::Debug for ProcessBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Env values may hold secrets: show names only.
        let env: Vec<_> = self.env.iter().map(|(k, _)| k).collect();
        f.debug_struct("ProcessBackend")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &env)
            .field("bind", &self.bind)
            .finish_non_exhaustive()
    }
}

impl ProcessBackend {
    /// Runners run `program` (no arguments).
    pub fn new(program: impl Into<PathBuf>) -> Self {
        ProcessBackend {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            parent_addr: None,
            endpoint: Arc::new(OnceCell::new()),
        }
    }

    /// Runners run the current executable with this process's arguments.
    ///
    /// # Errors
    ///
    /// When the current executable's path cannot be read.
    pub fn current_exe() -> std::io::Result<Self> {
        let mut backend = Self::new(std::env::current_exe()?);
        backend.args = std::env::args_os().skip(1).collect();
        Ok(backend)
    }

    /// Replaces the arguments with `args`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds an environment variable for runners. `FLAME_PARENT` cannot be
    /// overridden: the backend always sets it last.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Where the parent listens for runners (default `127.0.0.1:0`).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Where runners are told to connect, when not where the parent
    /// listens: a port forward or a proxy that leads to [`bind`](Self::bind)'s
    /// address. Whether the link is encrypted follows this address (see
    /// [`LinkTls`](crate::LinkTls)).
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::ProcessBackend;
    ///
    /// let backend = ProcessBackend::new("/usr/local/bin/app")
    ///     .bind("0.0.0.0:7000".parse().unwrap())
    ///     .parent_addr("10.1.2.3:7000".parse().unwrap());
    /// # let _ = backend;
    /// ```
    pub fn parent_addr(mut self, addr: SocketAddr) -> Self {
        self.parent_addr = Some(addr);
        self
    }

    /// Where runners connect back, once the first runner has booted.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.endpoint.get().map(Endpoint::addr)
    }

    /// The command a runner is started with (for inspection and tests).
    pub fn command(&self, flame_parent: &str) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.env(FLAME_PARENT, flame_parent);
        cmd
    }

    async fn endpoint(&self) -> Result<&Endpoint, BackendError> {
        self.endpoint
            .get_or_try_init(|| Endpoint::bind(self.bind))
            .await
            .map_err(|e| BackendError::new(format!("cannot listen on {}: {e}", self.bind)))
    }
}

/// The parent's handle on one runner process: the [`Backend::State`] of
/// [`ProcessBackend`]. The pool creates and drops it; dropping it kills and
/// reaps the process if it is still running. You meet it only in code
/// generic over backends, or to read a runner's [`pid`](Self::pid).
#[derive(Debug, Default)]
pub struct ProcessState {
    runner: Option<RunnerId>,
    pid: Option<u32>,
    /// Asks the watcher task to kill the child.
    kill: Option<oneshot::Sender<()>>,
    /// Resolves when the child has been reaped.
    reaped: Option<oneshot::Receiver<()>>,
}

impl ProcessState {
    /// The child's process id, once started.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }
}

/// A Runner actor that is killed (its supervisor stopped without waiting
/// for it, say) never runs `terminate`: the process is killed here, before
/// the drop returns, so it never outlives the pool that dropped it. (The
/// watcher task would kill it too, but later.)
impl Drop for ProcessState {
    fn drop(&mut self) {
        let (Some(pid), Some(_), Some(mut reaped)) = (self.pid, self.kill.take(), self.reaped.take()) else {
            return;
        };
        // Reaped already: the pid may belong to another process by now.
        if reaped.try_recv().is_ok() {
            return;
        }
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The child exited: sent to the Runner as a backend message.
#[derive(Debug)]
struct Exited(std::process::ExitStatus);

impl Backend for ProcessBackend {
    type State = ProcessState;

    fn name(&self) -> &'static str {
        "process"
    }

    async fn init(&self, ctx: &RunnerContext) -> Result<Self::State, BackendError> {
        Ok(ProcessState {
            runner: Some(ctx.runner_id),
            pid: None,
            kill: None,
            reaped: None,
        })
    }

    async fn remote_boot(&self, state: &mut Self::State, ctx: &RunnerContext) -> Result<(), BackendError> {
        let endpoint = self.endpoint().await?;
        let advertised = self.parent_addr.unwrap_or_else(|| endpoint.addr());
        let parent = endpoint.expect(ctx, vec![advertised], self.name());
        let mut cmd = self.command(&parent.encode());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            endpoint.forget(ctx.runner_id);
            BackendError::new(format!("cannot start {}: {e}", self.program.display()))
        })?;
        state.pid = child.id();
        forward_output(&mut child, ctx.runner_id);
        let (kill_tx, kill_rx) = oneshot::channel();
        let (reaped_tx, reaped_rx) = oneshot::channel();
        state.kill = Some(kill_tx);
        state.reaped = Some(reaped_rx);
        tokio::spawn(watch(child, ctx.notifier(), kill_rx, reaped_tx));
        tracing::debug!(target: "ractor_flame::process", runner = %ctx.runner_id, pid = ?state.pid, "runner process started");
        Ok(())
    }

    /// Runner side: the runner process is the machine; the runner says so
    /// on stderr (which reaches the parent) and its process exits next.
    async fn system_shutdown(&self) {
        crate::entry::announce_system_shutdown(self.name());
    }

    /// A killed runner's connection drops as its process dies; the exit
    /// status, reaped within milliseconds, names the signal: callers then
    /// get `Killed` (as from Docker) rather than a lost connection.
    fn down_grace(&self) -> std::time::Duration {
        std::time::Duration::from_millis(200)
    }

    async fn handle_info(&self, _state: &mut Self::State, info: Box<dyn std::any::Any + Send>) -> Option<DownReason> {
        let Exited(status) = *info.downcast::<Exited>().ok()?;
        Some(exit_reason(status))
    }

    async fn terminate(&self, state: &mut Self::State) {
        if let (Some(endpoint), Some(runner)) = (self.endpoint.get(), state.runner) {
            endpoint.forget(runner);
        }
        // The runner exits by itself after its drain; give it a moment to do
        // so cleanly before the kill.
        // The receiver stays in the state while waiting: if this future is
        // dropped (the Runner killed), the state's drop still kills the child.
        if let Some(reaped) = state.reaped.as_mut() {
            if tokio::time::timeout(std::time::Duration::from_millis(500), &mut *reaped)
                .await
                .is_err()
            {
                if let Some(kill) = state.kill.take() {
                    let _ = kill.send(());
                }
                let _ = reaped.await;
            }
            state.reaped = None;
        }
    }
}

/// Owns the child: reaps it, reports its exit to the Runner, kills it on
/// request.
async fn watch(mut child: Child, runner: RunnerNotifier, kill: oneshot::Receiver<()>, reaped: oneshot::Sender<()>) {
    let status = tokio::select! {
        status = child.wait() => status,
        _ = kill => {
            let _ = child.start_kill();
            child.wait().await
        }
    };
    if let Ok(status) = status {
        runner.notify(Exited(status));
    }
    let _ = reaped.send(());
}

fn exit_reason(status: std::process::ExitStatus) -> DownReason {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => DownReason::Exited(i64::from(code)),
        (None, Some(_)) => DownReason::Killed,
        (None, None) => DownReason::Exited(-1),
    }
}

/// Forwards the child's stdout and stderr, line by line, to tracing (or,
/// with no subscriber installed, to this process's stderr, prefixed with the
/// runner id).
fn forward_output(child: &mut Child, runner: RunnerId) {
    if let Some(out) = child.stdout.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if crate::observe::unobserved() {
                    // No subscriber: the line would be lost.
                    eprintln!("flame runner {runner} stdout: {line}");
                } else {
                    tracing::info!(target: "ractor_flame::process", runner = %runner, stream = "stdout", "{line}");
                }
            }
        });
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if crate::observe::unobserved() {
                    // No subscriber: the line would be lost.
                    eprintln!("flame runner {runner} stderr: {line}");
                } else {
                    tracing::info!(target: "ractor_flame::process", runner = %runner, stream = "stderr", "{line}");
                }
            }
        });
    }
}
