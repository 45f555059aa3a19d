//! The Terminator: the runner side of a runner, one per runner (in-process
//! for the local backend, in the runner process for remote ones).
//!
//! It connects back to the parent (remote), serves calls through its
//! [`Serve`] core, and decides when the runner ends: the failsafe (no parent
//! in time), idle shutdown (asked of the parent), parent loss and the
//! drain. When it is done it calls the backend's
//! `system_shutdown` exactly once.
//!
//! A remote runner's Terminator runs on the link thread, so it runs none of
//! the application's code: the idle predicate is asked on the work
//! runtime's blocking pool, and its answer comes back as a message
//! ([`TerminatorMessage::IdlePredicate`]), checked against the idle check
//! that asked (a call that came meanwhile wins).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::wire::outbox::Outbox;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::error::DownReason;
use crate::flame_parent::{Parent, RunnerSettings};
use crate::func::registry::Registry;
use crate::wire::frame::{ToParent, ToRunner};

use super::serve::Serve;

/// The runner-side shutdown hook: stops the machine. Runs exactly once.
pub type SystemShutdown = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The Terminator actor.
#[derive(Debug, Default)]
pub struct Terminator;

/// How the Terminator reaches its parent.
#[derive(Debug)]
pub enum TerminatorLink {
    /// In-process: frames to the parent go on this channel.
    Local(Outbox<ToParent>),
    /// Remote: connect to the parent described here.
    Remote(Box<Parent>),
}

/// Arguments of the Terminator.
pub struct TerminatorArguments {
    /// The call engine.
    pub serve: Arc<Serve>,
    /// Settings from the pool.
    pub settings: RunnerSettings,
    /// How to reach the parent.
    pub link: TerminatorLink,
    /// Runs once, when the Terminator is done.
    pub system_shutdown: Option<SystemShutdown>,
}

impl fmt::Debug for TerminatorArguments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TerminatorArguments")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Messages of the Terminator.
#[derive(Debug)]
pub enum TerminatorMessage {
    /// The connection to the parent is up and authenticated.
    Connected(Outbox<ToParent>, tokio::task::JoinHandle<()>),
    /// The parent refused us, or could not be reached.
    ConnectFailed(String),
    /// A control frame from the parent.
    FromParent(ToRunner),
    /// The parent connection is gone.
    ParentLost(DownReason),
    /// Time to check idleness; stale generations are ignored.
    IdleCheck(u64),
    /// The idle predicate's answer to the check of this generation (asked
    /// off the Terminator's thread); stale generations are ignored.
    IdlePredicate {
        /// The idle check that asked.
        generation: u64,
        /// Whether the predicate holds (the runner may stop).
        holds: bool,
    },
    /// The failsafe timer fired.
    FailsafeExpired,
    /// Stop gracefully (SIGTERM, or the runner's own decision).
    Shutdown(String),
    /// The drain ended.
    Drained,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Serving,
    Draining,
}

/// State of the Terminator.
pub struct TerminatorState {
    serve: Arc<Serve>,
    settings: RunnerSettings,
    phase: Phase,
    to_parent: Option<Outbox<ToParent>>,
    writer: Option<tokio::task::JoinHandle<()>>,
    idle_generation: u64,
    awaiting_verdict: bool,
    system_shutdown: Option<SystemShutdown>,
    parent: Option<Box<Parent>>,
    /// A remote runner gives memory back when quiet (see `tidy.rs`).
    tidy: Option<super::tidy::Tidy>,
}

impl fmt::Debug for TerminatorState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TerminatorState")
            .field("phase", &self.phase)
            .field("active", &self.serve.active())
            .finish_non_exhaustive()
    }
}

impl TerminatorState {
    /// Schedules the next idle check `after` from now.
    fn arm_idle(&mut self, myself: &ActorRef<TerminatorMessage>, after: Duration) {
        self.idle_generation += 1;
        let generation = self.idle_generation;
        myself.send_after(after, move || TerminatorMessage::IdleCheck(generation));
    }

    /// An idle check: when the runner has been idle long enough, asks the
    /// application's idle predicate if it has one (off this thread, which
    /// for a remote runner is the link thread: the answer comes back as
    /// [`TerminatorMessage::IdlePredicate`]), else the parent.
    fn on_idle_check(&mut self, myself: &ActorRef<TerminatorMessage>, generation: u64) {
        let Some(idle_after) = self.idle_still(generation) else {
            return;
        };
        if !self.idle_long_enough(myself, idle_after) {
            return;
        }
        if let Some(name) = &self.settings.idle_predicate {
            // No other check of this generation comes while it is asked:
            // the next is armed with its answer.
            let myself = myself.clone();
            return self.serve.ask_predicate(name, move |holds| {
                let _ = myself.cast(TerminatorMessage::IdlePredicate { generation, holds });
            });
        }
        self.ask_parent();
    }

    /// The idle predicate answered the check of `generation`: the runner
    /// asks its parent to stop if it holds and the runner is still idle.
    fn on_idle_predicate(&mut self, myself: &ActorRef<TerminatorMessage>, generation: u64, holds: bool) {
        let Some(idle_after) = self.idle_still(generation) else {
            return;
        };
        // Work may have come while the predicate was asked.
        if !self.idle_long_enough(myself, idle_after) {
            return;
        }
        if !holds {
            return self.arm_idle(myself, idle_after);
        }
        self.ask_parent();
    }

    /// The idle timeout, while an idle check of `generation` is current.
    fn idle_still(&self, generation: u64) -> Option<Duration> {
        let idle_after = self.settings.idle_after?;
        let current = generation == self.idle_generation && self.phase == Phase::Serving && !self.awaiting_verdict;
        current.then_some(idle_after)
    }

    /// Whether the runner has been idle for `idle_after`; if not, the next
    /// check is armed.
    fn idle_long_enough(&mut self, myself: &ActorRef<TerminatorMessage>, idle_after: Duration) -> bool {
        // Any call, cast or placed child resets the clock (B29).
        if self.serve.active() > 0 {
            self.arm_idle(myself, idle_after);
            return false;
        }
        let idle_for = self.serve.idle_for();
        if idle_for < idle_after {
            self.arm_idle(myself, idle_after - idle_for);
            return false;
        }
        true
    }

    fn ask_parent(&mut self) {
        tracing::debug!(target: "ractor_flame::terminator", idle_for = ?self.serve.idle_for(), "idle, asking the parent to stop");
        self.awaiting_verdict = true;
        self.send(ToParent::IdleRequest);
    }

    fn send(&self, frame: ToParent) {
        if let Some(tx) = &self.to_parent {
            let _ = tx.send(frame);
        }
    }

    /// Stops taking work and drains in a task; `Drained` comes back.
    fn begin_drain(&mut self, myself: &ActorRef<TerminatorMessage>, reason: &str) {
        self.drain(myself, reason, false);
    }

    /// Drains: waits for the work in flight (at most the shutdown budget),
    /// then stops. Once the parent is gone, only unlinked work is waited
    /// for; that drain starts even while another one runs.
    fn drain(&mut self, myself: &ActorRef<TerminatorMessage>, reason: &str, parent_gone: bool) {
        if self.phase == Phase::Draining && !parent_gone {
            return;
        }
        tracing::debug!(target: "ractor_flame::terminator", reason, active = self.serve.active(), "draining");
        self.phase = Phase::Draining;
        self.serve.stop_accepting();
        // Linked children go with the runner; unlinked ones may finish
        // within the drain budget.
        self.serve.children().stop_all(true, reason);
        let serve = Arc::clone(&self.serve);
        let budget = self.settings.shutdown_timeout;
        let myself = myself.clone();
        tokio::spawn(async move {
            serve.drain(budget, parent_gone).await;
            let _ = myself.cast(TerminatorMessage::Drained);
        });
    }
}

impl Actor for Terminator {
    type Msg = TerminatorMessage;
    type State = TerminatorState;
    type Arguments = TerminatorArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (phase, to_parent, parent) = match args.link {
            TerminatorLink::Local(tx) => (Phase::Serving, Some(tx), None),
            TerminatorLink::Remote(parent) => {
                myself.send_after(args.settings.failsafe_timeout, || TerminatorMessage::FailsafeExpired);
                (Phase::Connecting, None, Some(parent))
            }
        };
        if let Some(tx) = &to_parent {
            args.serve.children().set_events(tx);
        }
        let mut state = TerminatorState {
            serve: args.serve,
            settings: args.settings,
            phase,
            to_parent,
            writer: None,
            idle_generation: 0,
            awaiting_verdict: false,
            system_shutdown: args.system_shutdown,
            parent,
            tidy: None,
        };
        if let Some(idle) = state.settings.idle_after
            && phase == Phase::Serving
        {
            state.arm_idle(&myself, idle);
        }
        Ok(state)
    }

    async fn post_start(&self, myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        if let Some(parent) = state.parent.take() {
            super::connect::spawn(myself, *parent, Arc::clone(&state.serve));
            // A runner process (not an in-process runner, whose memory is
            // its parent's) gives memory back when quiet.
            if let Some(quiet) = state.settings.release_memory_after {
                state.tidy = super::tidy::spawn(Arc::clone(&state.serve), quiet);
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TerminatorMessage::Connected(tx, writer) => {
                if state.phase != Phase::Connecting {
                    return Ok(());
                }
                tracing::debug!(target: "ractor_flame::terminator", "connected to parent");
                state.phase = Phase::Serving;
                state.serve.children().set_events(&tx);
                state.to_parent = Some(tx);
                state.writer = Some(writer);
                if let Some(idle) = state.settings.idle_after {
                    state.arm_idle(&myself, idle);
                }
            }
            TerminatorMessage::ConnectFailed(reason) => {
                tracing::warn!(target: "ractor_flame::terminator", %reason, "could not join the parent");
                state.serve.set_failure(reason.clone());
                myself.stop(Some(reason));
            }
            TerminatorMessage::FailsafeExpired => {
                if state.phase == Phase::Connecting {
                    tracing::warn!(target: "ractor_flame::terminator", timeout = ?state.settings.failsafe_timeout, "no parent connection, failsafe stop");
                    state.serve.set_failure(format!(
                        "no connection to the parent within the failsafe timeout of {:?}",
                        state.settings.failsafe_timeout
                    ));
                    myself.stop(Some("failsafe".into()));
                }
            }
            TerminatorMessage::FromParent(frame) => match frame {
                ToRunner::IdleVerdict { granted } => {
                    state.awaiting_verdict = false;
                    if granted {
                        state.begin_drain(&myself, "idle");
                    } else if let Some(idle) = state.settings.idle_after {
                        state.arm_idle(&myself, idle);
                    }
                }
                ToRunner::Shutdown => state.begin_drain(&myself, "parent asked"),
                // Calls and cancels go straight to `Serve`; nothing else is
                // expected here.
                other => {
                    tracing::trace!(target: "ractor_flame::terminator", ?other, "ignored frame")
                }
            },
            TerminatorMessage::ParentLost(reason) => {
                tracing::info!(target: "ractor_flame::terminator", %reason, "parent lost");
                // No work continues for a parent that is gone, except unlinked
                // work, which may finish within the drain (B28).
                state.serve.abort_linked();
                state.to_parent = None;
                state.drain(&myself, "parent lost", true);
            }
            TerminatorMessage::Shutdown(reason) => {
                state.send(ToParent::Stopping { reason: reason.clone() });
                state.begin_drain(&myself, &reason);
            }
            TerminatorMessage::IdleCheck(generation) => state.on_idle_check(&myself, generation),
            TerminatorMessage::IdlePredicate { generation, holds } => {
                state.on_idle_predicate(&myself, generation, holds)
            }
            TerminatorMessage::Drained => myself.stop(Some("drained".into())),
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        // Its thread ends.
        state.tidy = None;
        state.serve.fail_all();
        // Dropping our sender lets the writer flush the last replies and close.
        state.to_parent = None;
        if let Some(writer) = state.writer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
        }
        if let Some(shutdown) = state.system_shutdown.take() {
            shutdown().await;
        }
        Ok(())
    }
}

/// Starts a Terminator serving `registry`, reaching its parent by `link`,
/// linked to `supervisor` if given.
/// Returns the actor, its join handle and the call engine.
///
/// A remote runner's Terminator and its connection live on the link thread
/// (see `link::thread`), an in-process one on the caller's runtime; the
/// functions it serves run on the runtime this is called from.
///
/// # Errors
///
/// When the actor cannot be spawned.
///
/// # Panics
///
/// When called outside a tokio runtime.
///
/// # Examples
///
/// A runner process's entry does this with the `FLAME_PARENT` it was
/// started with (the facade's `serve_as_runner` is the whole of it):
///
/// ```no_run
/// # async fn f(parent: ractor_flame_actors::Parent) -> Result<(), ractor::SpawnErr> {
/// use ractor_flame_actors::Registry;
/// use ractor_flame_actors::on_runner::{TerminatorLink, spawn_terminator};
///
/// let registry = Registry::new();
/// let (_terminator, done, _serve) = spawn_terminator(
///     parent.runner_id,
///     registry,
///     parent.settings.clone(),
///     TerminatorLink::Remote(Box::new(parent)),
///     None,
///     None,
/// )
/// .await?;
/// let _ = done.await; // the runner has drained and stopped
/// # Ok(()) }
/// ```
pub async fn spawn_terminator(
    runner: crate::ids::RunnerId,
    registry: Registry,
    settings: RunnerSettings,
    link: TerminatorLink,
    system_shutdown: Option<SystemShutdown>,
    supervisor: Option<ractor::ActorCell>,
) -> Result<(ActorRef<TerminatorMessage>, tokio::task::JoinHandle<()>, Arc<Serve>), ractor::SpawnErr> {
    // The runner's states are built before it serves (and, remote, before
    // it connects): a failure is reported to the parent as its boot error.
    let (states, failure) = match registry.build_states().await {
        Ok(states) => (states, None),
        Err(reason) => (crate::func::states::States::default(), Some(reason)),
    };
    let pool = match &link {
        TerminatorLink::Remote(parent) => parent.node_base.clone(),
        TerminatorLink::Local(_) => String::new(),
    };
    let serve = Serve::new(runner, pool, registry, tokio::runtime::Handle::current(), states);
    if let Some(reason) = failure {
        serve.set_failure(format!("the runner could not start: {reason}"));
    }
    let args = TerminatorArguments {
        serve: Arc::clone(&serve),
        settings,
        link,
        system_shutdown,
    };
    let remote = matches!(args.link, TerminatorLink::Remote(_));
    let spawn = async move {
        match supervisor {
            Some(sup) => Actor::spawn_linked(None, Terminator, args, sup).await,
            None => Actor::spawn(None, Terminator, args).await,
        }
    };
    let (actor, handle) = if remote {
        crate::wire::thread::run(spawn).await?
    } else {
        spawn.await?
    };
    Ok((actor, handle, serve))
}

/// Runs `task` on the link thread, where no function body runs (a runner's
/// signal handling uses it, so a SIGTERM is heard while every worker thread
/// computes).
///
/// # Panics
///
/// When the link thread cannot be started.
pub fn spawn_on_link<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    crate::wire::thread::spawn(task)
}
