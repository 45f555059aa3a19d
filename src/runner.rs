//! The runner entry point: one call at the top of `main`.

use std::sync::atomic::{AtomicBool, Ordering};

use ractor_flame_actors::terminator::{TerminatorLink, TerminatorMessage, spawn_terminator};
use ractor_flame_actors::{Parent, ParentError, Registry};

/// Set once this process has become a runner.
static IS_RUNNER: AtomicBool = AtomicBool::new(false);

/// Whether this process is a runner (it was started with `FLAME_PARENT`).
pub(crate) fn is_runner() -> bool {
    IS_RUNNER.load(Ordering::Acquire)
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
    let code = serve_as_runner(registry, parent).await;
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
    IS_RUNNER.store(true, Ordering::Release);
    let runner = parent.runner_id;
    let settings = parent.settings.clone();
    let spawned = spawn_terminator(
        runner,
        registry.clone(),
        settings,
        TerminatorLink::Remote(Box::new(parent)),
        None,
        None,
    )
    .await;
    let (terminator, handle, _serve) = match spawned {
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
    ractor_flame_actors::terminator::spawn_on_link(async move {
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
    0
}
