//! The link's own thread.
//!
//! tokio schedules cooperatively: a function body that computes for seconds
//! without an `.await` keeps its worker thread, and with every worker taken
//! nothing else on that runtime runs, heartbeats and I/O included. So every
//! connection between a parent and its runners (the listener, the handshake,
//! the reader, the batching writer, the heartbeat timers) and the runner's
//! Terminator run on one dedicated OS thread with a current-thread runtime
//! of their own, shared by every pool of the process. Function bodies never
//! run there: the runner spawns them on the application's runtime (or, for
//! blocking functions, on its blocking pool), so a body can starve other
//! bodies but never the link. The same holds on the parent: a parent whose
//! workers are busy for seconds still answers its runners' heartbeats.
//!
//! Sockets are registered with the reactor of the runtime that creates
//! them, so everything that opens a socket for the link does it here.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle};
use tracing::instrument::WithSubscriber as _;

/// The link runtime's handle, started on first use.
pub(crate) fn handle() -> &'static Handle {
    static LINK: OnceLock<Handle> = OnceLock::new();
    LINK.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("flame-link".into())
            .spawn(move || {
                let runtime = Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the link runtime starts");
                let _ = tx.send(runtime.handle().clone());
                // Runs for the life of the process: links of later pools
                // need it too.
                runtime.block_on(std::future::pending::<()>());
            })
            .expect("the link thread starts");
        rx.recv().expect("the link runtime reports its handle")
    })
}

/// Spawns `task` on the link thread. It keeps the spawner's tracing
/// subscriber, so a subscriber set for the caller's thread alone sees the
/// link's events too.
pub(crate) fn spawn<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    handle().spawn(task.with_current_subscriber())
}

/// Runs `task` on the link thread and waits for its output (for work that
/// must happen there, such as binding a socket or spawning an actor).
///
/// # Panics
///
/// When `task` panics.
pub(crate) async fn run<F>(task: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match spawn(task).await {
        Ok(output) => output,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
