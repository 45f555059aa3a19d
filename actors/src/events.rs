//! What a pool tells: [`PoolEvent`]s, the hooks that receive them
//! ([`Hook`]), and how far a subscriber may fall behind
//! ([`EVENTS_CAPACITY`]). A leaf: it imports only ids and errors.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::ids::RunnerId;

/// Events a subscriber of a pool's events may fall behind by before it
/// misses some (it is told how many).
pub const EVENTS_CAPACITY: usize = 1024;

/// What a pool hook is told.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolEvent {
    /// A growth boot starts; `target` is the runner count once it succeeds.
    #[non_exhaustive]
    GrowStart {
        /// Runners (booted and booting) once this boot succeeds.
        target: usize,
        /// The runner being booted.
        runner: RunnerId,
    },
    /// A growth boot ended.
    #[non_exhaustive]
    GrowEnd {
        /// `Ok(())` or the boot error.
        result: Result<(), Error>,
        /// Runners (booted and booting) now.
        count: usize,
        /// The runner that booted (or failed to).
        runner: RunnerId,
        /// From the start of the boot until the runner served (or failed).
        boot_time: Duration,
    },
    /// A runner left the pool.
    #[non_exhaustive]
    Shrink {
        /// Runners (booted and booting) now.
        count: usize,
        /// The runner that left.
        runner: RunnerId,
    },
    /// A boot failed (also told as a [`PoolEvent::GrowEnd`] with an error).
    #[non_exhaustive]
    BootFailed {
        /// The runner that did not boot.
        runner: RunnerId,
        /// The backend's reason.
        reason: String,
        /// From the start of the boot until it failed.
        boot_time: Duration,
    },
    /// A serving runner was lost: it crashed, was killed, exited, or stopped
    /// answering (not an idle shutdown, not a stop by the pool). Followed
    /// by a [`PoolEvent::Shrink`].
    #[non_exhaustive]
    RunnerLost {
        /// The runner.
        runner: RunnerId,
        /// Why, as the backend or the connection tells it.
        reason: String,
    },
    /// The pool's bounds or slots per runner changed while it runs
    /// (`Pool::resize`, `Pool::set_max_concurrency`); the values are the
    /// ones now in force. Runners beyond a lower `max` leave later, each
    /// with a [`PoolEvent::Shrink`], once their work is over.
    #[non_exhaustive]
    Resized {
        /// Runners kept booted.
        min: usize,
        /// Runners at most (booted and booting).
        max: usize,
        /// Concurrent calls per runner.
        max_concurrency: usize,
        /// Runners told to leave once their work is over (booted runners
        /// beyond the new `max`, idle ones first).
        retiring: usize,
    },
    /// A caller was turned away: the waiting queue was full.
    #[non_exhaustive]
    QueueFull {
        /// The queue's bound.
        capacity: usize,
    },
}

impl PoolEvent {
    /// The runner the event is about, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame_actors::PoolEvent;
    ///
    /// fn about(event: &PoolEvent) -> String {
    ///     event.runner().map_or("the pool".into(), |r| r.to_string())
    /// }
    /// ```
    pub fn runner(&self) -> Option<RunnerId> {
        match self {
            PoolEvent::GrowStart { runner, .. }
            | PoolEvent::GrowEnd { runner, .. }
            | PoolEvent::Shrink { runner, .. }
            | PoolEvent::BootFailed { runner, .. }
            | PoolEvent::RunnerLost { runner, .. } => Some(*runner),
            PoolEvent::QueueFull { .. } | PoolEvent::Resized { .. } => None,
        }
    }
}

/// A pool hook: called from the pool actor, so keep it quick.
pub type Hook = Arc<dyn Fn(&PoolEvent) + Send + Sync>;
