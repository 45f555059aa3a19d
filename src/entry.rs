//! The runner entry point: one call at the top of `main`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use ractor_flame_actors::on_runner::SystemShutdown;
use ractor_flame_actors::on_runner::{TerminatorLink, TerminatorMessage, spawn_terminator};
use ractor_flame_actors::{Backend, FLAME_PARENT, Parent, ParentError, Registry};

/// Set once this process has become a runner by other means than its
/// environment ([`serve_as_runner`] with an injected `Parent`).
static IS_RUNNER: AtomicBool = AtomicBool::new(false);

/// Whether this process is a runner: it was started with `FLAME_PARENT` in
/// its environment (decided from the first pool on, whether or not
/// [`run_if_runner`] has run yet), or it serves as one.
pub(crate) fn is_runner() -> bool {
    static FROM_ENV: OnceLock<bool> = OnceLock::new();
    IS_RUNNER.load(Ordering::Acquire) || *FROM_ENV.get_or_init(|| std::env::var_os(FLAME_PARENT).is_some())
}

/// Turns this process into a runner when `FLAME_PARENT` is set; returns at
/// once on the parent.
///
/// Call it first thing in `main`, after building the registry and before
/// starting pools. On a runner it connects back to the parent, serves the
/// registered functions, and **exits the process** when the runner is done
/// (idle, parent gone, SIGTERM, failsafe): it never returns there.
///
/// # Errors
///
/// [`ParentError`] when `FLAME_PARENT` is set but malformed (never a panic).
///
/// # Examples
///
/// ```no_run
/// use ractor_flame::Registry;
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let registry = Registry::new(); // .register::<YourFn>() ...
///     ractor_flame::run_if_runner(&registry).await?;
///     // Only the parent gets here: start pools and do the work.
///     Ok(())
/// }
/// ```
pub async fn run_if_runner(registry: &Registry) -> Result<(), ParentError> {
    let Some(parent) = Parent::get()? else {
        return Ok(());
    };
    // The shipped backend that booted this runner stops its machine.
    let code = match parent.backend.as_str() {
        "process" => serve_as_runner_with(registry, parent, crate::ProcessBackend::new("")).await,
        #[cfg(feature = "docker")]
        "docker" => serve_as_runner_with(registry, parent, crate::DockerBackend::new()).await,
        #[cfg(feature = "fly")]
        "fly" => serve_as_runner_with(registry, parent, crate::FlyBackend::new()).await,
        #[cfg(feature = "kubernetes")]
        "kubernetes" => serve_as_runner_with(registry, parent, crate::KubernetesBackend::new()).await,
        _ => serve_as_runner(registry, parent).await,
    };
    std::process::exit(code)
}

/// Serves as the runner described by `parent` until the runner is done;
/// returns the process exit code. [`run_if_runner`] calls it with the decoded
/// `FLAME_PARENT`; call it directly to inject a `Parent` (tests, custom
/// launchers).
///
/// # Cancel safety
///
/// Dropping the future leaves the runner's actors running; await it to the
/// end.
pub async fn serve_as_runner(registry: &Registry, parent: Parent) -> i32 {
    serve(registry, parent, None).await
}

/// Serves as the runner described by `parent`, like [`serve_as_runner`],
/// then runs `backend`'s [`Backend::system_shutdown`] exactly once, when the
/// runner is done (after its drain). [`run_if_runner`] does this for the
/// shipped backends; a custom backend's runner entry point calls this.
///
/// Returns the process exit code: 0 after a normal end, 3 when the parent
/// refused the runner or never answered (the reason is printed on stderr).
///
/// # Cancel safety
///
/// As [`serve_as_runner`].
pub async fn serve_as_runner_with<B: Backend>(registry: &Registry, parent: Parent, backend: B) -> i32 {
    let hook: SystemShutdown = Box::new(move || Box::pin(async move { backend.system_shutdown().await }));
    serve(registry, parent, Some(hook)).await
}

async fn serve(registry: &Registry, parent: Parent, system_shutdown: Option<SystemShutdown>) -> i32 {
    IS_RUNNER.store(true, Ordering::Release);
    // This runner's own events go to its parent (unless the program set a
    // subscriber of its own first).
    crate::observe::install_runner_logs();
    let runner = parent.runner_id;
    let settings = parent.settings.clone();
    let spawned = spawn_terminator(
        runner,
        registry.clone(),
        settings,
        TerminatorLink::Remote(Box::new(parent)),
        system_shutdown,
        None,
    )
    .await;
    let (terminator, handle, serve) = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            eprintln!("ractor-flame runner {runner}: cannot start: {e}");
            return 1;
        }
    };
    // SIGTERM (a `docker stop`, a supervisor) is a drain, not an abrupt exit
    // (B31). PID 1 in a container gets no default SIGTERM action, so the
    // handler is needed there too.
    // On the link thread: busy function bodies cannot delay it.
    let on_signal = terminator.clone();
    ractor_flame_actors::on_runner::spawn_on_link(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        let _ = on_signal.cast(TerminatorMessage::Shutdown(name.to_owned()));
    });
    let _ = handle.await;
    match serve.failure() {
        Some(reason) => {
            eprintln!("ractor-flame runner {runner}: {reason}");
            3
        }
        None => 0,
    }
}

/// The line a runner of the shipped backends prints when its machine stops
/// (its `system_shutdown`): once, after the drain, just before it exits.
pub(crate) fn announce_system_shutdown(backend: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    eprintln!("ractor-flame runner: system shutdown ({backend})");
}
