//! A backend of your own: runners started by a shell command you choose.
//!
//! `CommandBackend` is written the way a third party would write one, with
//! only the public, documented surface of `ractor_flame` and
//! `ractor_flame::actors` (the [`Backend`] trait, [`RunnerContext`],
//! [`Endpoint`], [`RunnerNotifier`], [`FLAME_PARENT`]). It starts each runner
//! as `sh -c "<command>"` with `FLAME_PARENT` in the command's environment:
//! the shape of an ssh, Nomad or Slurm backend, where the command is
//! `ssh host ...`, `nomad job dispatch ...` or `srun ...` instead. Here the
//! command runs this example's own executable on this machine:
//!
//! ```text
//! exec "$RUNNER_EXE" --runner
//! ```
//!
//! What it shows, callback by callback:
//!
//! - `remote_boot`: one [`Endpoint`] (bound on first use, shared by all
//!   runners) waits for the runner; [`Endpoint::expect`] gives its
//!   `FLAME_PARENT`; the command is spawned in a process group of its own; a
//!   watcher task owns the child.
//! - `handle_info`: the watcher reports the exit through
//!   [`RunnerContext::notifier`]; the exit status becomes a [`DownReason`]
//!   (`down_grace` gives it a second to beat the dropped connection's
//!   reason, so a crash reads "exited with code 7", not "connection lost").
//! - `terminate`: the runner exits by itself once drained; if it has not
//!   within 500 ms, its whole process group is killed. `exec` in the command
//!   makes the runner the process `sh` started (no shell left in between),
//!   and the group kill reaches whatever the command started, so no runner
//!   outlives the pool.
//! - `system_shutdown`: the default (the runner's process just exits).
//!
//! The example registers two functions, serves as a runner when started with
//! `FLAME_PARENT` ([`ractor_flame::run_if_runner`] first thing in `main`),
//! and otherwise starts a pool of at most 2 runners on the `CommandBackend`,
//! computes four Collatz step counts remotely, crashes one runner on purpose
//! (a function that exits its process with code 7) and stops the pool.
//!
//! ```text
//! cargo run --example command_backend
//! ```
//!
//! Expected output (pids differ; a call may land on either runner):
//!
//! ```text
//! parent pid 4242
//! collatz(27) = 111 steps, on runner pid 4250
//! collatz(97) = 118 steps, on runner pid 4251
//! collatz(871) = 178 steps, on runner pid 4250
//! collatz(6171) = 261 steps, on runner pid 4251
//! crash: runner down: exited with code 7
//! runner pids: 4250 4251
//! pool stopped
//! ```
//!
//! The runners' own output (stdout and stderr) goes to this process's
//! stderr, so stdout holds only the lines above.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::AsFd as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ractor_flame::actors::{Endpoint, FLAME_PARENT, RunnerNotifier};
use ractor_flame::{
    Backend, BackendError, DownReason, Error, FnError, Pool, PoolConfig, Registry, RemoteFn, RunnerContext, RunnerId,
};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::sync::{OnceCell, oneshot};

// ---------------------------------------------------------------------------
// The backend
// ---------------------------------------------------------------------------

/// Runners started by `sh -c "<command>"`, with `FLAME_PARENT` in the
/// command's environment.
#[derive(Clone)]
struct CommandBackend {
    /// The shell command; it should `exec` the runner.
    command: String,
    /// Extra environment for the command.
    env: Vec<(OsString, OsString)>,
    /// Where the parent listens for runners.
    bind: SocketAddr,
    /// Where runners are told to connect, when not `bind`'s address (a
    /// remote host reaches the parent at a routable address).
    parent_addr: Option<SocketAddr>,
    /// The listener, bound when the first runner boots.
    endpoint: Arc<OnceCell<Endpoint>>,
}

impl CommandBackend {
    /// Runners run `command` in `sh -c`; the parent listens on loopback.
    fn new(command: impl Into<String>) -> Self {
        CommandBackend {
            command: command.into(),
            env: Vec::new(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            parent_addr: None,
            endpoint: Arc::new(OnceCell::new()),
        }
    }

    /// Adds an environment variable for the command (`FLAME_PARENT` is
    /// always set last, so it cannot be overridden).
    fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Where the parent listens (default `127.0.0.1:0`); with
    /// [`parent_addr`](Self::parent_addr), for runners on other hosts.
    #[allow(dead_code)] // Not needed on one machine.
    fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Where runners connect, when not where the parent listens.
    #[allow(dead_code)] // Not needed on one machine.
    fn parent_addr(mut self, addr: SocketAddr) -> Self {
        self.parent_addr = Some(addr);
        self
    }

    /// The listener, bound on first use.
    async fn endpoint(&self) -> Result<&Endpoint, BackendError> {
        self.endpoint
            .get_or_try_init(|| Endpoint::bind(self.bind))
            .await
            .map_err(|e| BackendError::new(format!("cannot listen on {}: {e}", self.bind)))
    }
}

/// The parent's handle on one runner's command.
struct CommandState {
    runner: RunnerId,
    /// Tells the watcher to kill the process group (dropping it does too).
    kill: Option<oneshot::Sender<()>>,
    /// Resolves once the command has exited and been reaped.
    reaped: Option<oneshot::Receiver<()>>,
}

/// The watcher's news for the Runner: the command exited.
struct Exited(ExitStatus);

impl Backend for CommandBackend {
    type State = CommandState;

    fn name(&self) -> &'static str {
        "command"
    }

    async fn init(&self, ctx: &RunnerContext) -> Result<CommandState, BackendError> {
        Ok(CommandState {
            runner: ctx.runner_id,
            kill: None,
            reaped: None,
        })
    }

    async fn remote_boot(&self, state: &mut CommandState, ctx: &RunnerContext) -> Result<(), BackendError> {
        let endpoint = self.endpoint().await?;
        let advertised = self.parent_addr.unwrap_or_else(|| endpoint.addr());
        // From here on the endpoint waits for this runner.
        let flame_parent = endpoint.expect(ctx, vec![advertised], self.name()).encode();
        // The runner's stdout goes to our stderr: our stdout stays ours.
        let stdout = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_or_else(|_| Stdio::null(), Stdio::from);
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&self.command)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(FLAME_PARENT, flame_parent)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::inherit())
            // A group of its own: one kill reaches all the command started.
            .process_group(0)
            // Backstop: if the watcher task is dropped (runtime shutdown).
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            endpoint.forget(ctx.runner_id);
            BackendError::new(format!("cannot run sh -c {:?}: {e}", self.command))
        })?;
        let (kill_tx, kill_rx) = oneshot::channel();
        let (reaped_tx, reaped_rx) = oneshot::channel();
        state.kill = Some(kill_tx);
        state.reaped = Some(reaped_rx);
        tokio::spawn(watch(child, ctx.notifier(), kill_rx, reaped_tx));
        Ok(())
    }

    async fn handle_info(&self, _state: &mut CommandState, info: Box<dyn std::any::Any + Send>) -> Option<DownReason> {
        let Exited(status) = *info.downcast::<Exited>().ok()?;
        Some(match (status.code(), status.signal()) {
            (Some(code), _) => DownReason::Exited(i64::from(code)),
            (None, Some(_)) => DownReason::Killed,
            (None, None) => DownReason::Backend(format!("command ended: {status}")),
        })
    }

    /// The exit status explains a dropped connection better than the drop.
    fn down_grace(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn terminate(&self, state: &mut CommandState) {
        // A runner that never connected is no longer expected.
        if let Some(endpoint) = self.endpoint.get() {
            endpoint.forget(state.runner);
        }
        let Some(reaped) = state.reaped.as_mut() else {
            return; // Never started.
        };
        // Stopped by its pool, the runner drains and exits by itself; give
        // it a moment before the kill. (If this future is dropped, the state
        // drops the kill sender, and the watcher kills the group anyway.)
        if tokio::time::timeout(Duration::from_millis(500), &mut *reaped)
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

/// Owns the command: reaps it, tells the Runner how it ended, and kills its
/// process group when asked (or when the state holding the sender is gone).
async fn watch(mut child: Child, runner: RunnerNotifier, kill: oneshot::Receiver<()>, reaped: oneshot::Sender<()>) {
    let group = child.id();
    let status = tokio::select! {
        status = child.wait() => status,
        _ = kill => {
            // Not reaped yet, so the group id cannot belong to anyone else.
            if let Some(group) = group {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{group}")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await;
            }
            let _ = child.start_kill();
            child.wait().await
        }
    };
    if let Ok(status) = status {
        runner.notify(Exited(status));
    }
    let _ = reaped.send(());
}

// ---------------------------------------------------------------------------
// The application
// ---------------------------------------------------------------------------

/// A Collatz step count, and where it was computed.
#[derive(Debug, Serialize, Deserialize)]
struct Steps {
    n: u64,
    steps: u32,
    pid: u32,
}

/// Steps of the Collatz sequence from `n` down to 1.
struct Collatz;

impl RemoteFn for Collatz {
    const NAME: &'static str = "command_backend.collatz";
    type Args = u64;
    type Output = Steps;

    async fn run(n: u64) -> Result<Steps, FnError> {
        if n == 0 {
            return Err(FnError::msg("0 has no Collatz sequence"));
        }
        let (mut x, mut steps) = (n, 0);
        while x != 1 {
            x = if x % 2 == 0 { x / 2 } else { 3 * x + 1 };
            steps += 1;
        }
        Ok(Steps {
            n,
            steps,
            pid: std::process::id(),
        })
    }
}

/// Ends the runner's process with this code: a crash, on purpose.
struct Crash;

impl RemoteFn for Crash {
    const NAME: &'static str = "command_backend.crash";
    type Args = i32;
    type Output = ();

    async fn run(code: i32) -> Result<(), FnError> {
        std::process::exit(code)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = Registry::new().register::<Collatz>().register::<Crash>();
    // A runner (FLAME_PARENT set) serves here and exits; the parent goes on.
    ractor_flame::run_if_runner(&registry).await?;
    // The command passes `--runner`: getting here with it means the backend
    // did not pass FLAME_PARENT. Stop, rather than start pools of our own.
    if std::env::args().any(|arg| arg == "--runner") {
        return Err(format!("started as a runner, but without {FLAME_PARENT}").into());
    }

    let backend = CommandBackend::new(r#"exec "$RUNNER_EXE" --runner"#).env("RUNNER_EXE", std::env::current_exe()?);
    let config = PoolConfig::new(2)
        .name("command")
        .max_concurrency(2)
        .boot_timeout(Duration::from_secs(10));
    let pool = Pool::start(config, backend, &registry).await?;
    println!("parent pid {}", std::process::id());

    let calls = [27, 97, 871, 6171].map(|n| pool.call::<Collatz>(n));
    let mut pids = Vec::new();
    for result in futures_util::future::join_all(calls).await {
        let Steps { n, steps, pid } = result?;
        println!("collatz({n}) = {steps} steps, on runner pid {pid}");
        pids.push(pid);
    }

    match pool.call::<Crash>(7).await {
        Err(Error::RunnerDown { reason }) => println!("crash: runner down: {reason}"),
        other => return Err(format!("the crash call returned {other:?}").into()),
    }

    pids.sort_unstable();
    pids.dedup();
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    println!("runner pids: {}", pids.join(" "));
    pool.stop().await;
    println!("pool stopped");
    Ok(())
}
