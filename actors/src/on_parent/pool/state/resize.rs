//! Live resize: `min`, `max` and `max_concurrency` change while the pool
//! serves. A higher `min` boots at once, a higher `max` or
//! `max_concurrency` serves the waiting callers at once, and runners beyond
//! a lower `max` are retired: they take no new work and stop once their
//! work is over (idle ones are chosen first, so the pool shrinks at once
//! where it can). Nothing in flight is cut short.

use std::sync::atomic::Ordering;

use ractor::ActorRef;

use super::PoolState;
use crate::error::Error;
use crate::events::PoolEvent;
use crate::ids::RunnerId;
use crate::on_parent::backend::Backend;
use crate::on_parent::pool::PoolMessage;
use crate::wire::frame::ToRunner;

/// A change to a running pool's limits, sent as
/// [`PoolMessage::Resize`] (the facade's
/// `Pool::resize` and `Pool::set_max_concurrency` send it for you).
///
/// The rules are those of the pool's options: `max` at least 1, `min` at
/// most `max`, `max_concurrency` at least 1; anything else is refused with
/// [`Error::Config`] and changes nothing. On a runner `min` stays 0.
///
/// # Examples
///
/// ```
/// use ractor_flame_actors::{PoolMessage, Resize};
///
/// let wider = Resize::Bounds { min: 1, max: 8 };
/// let message = |reply| PoolMessage::Resize(wider, reply);
/// # let _ = message;
/// assert!(Resize::MaxConcurrency(0).check().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resize {
    /// New `min` and `max` runners.
    Bounds {
        /// Runners kept booted.
        min: usize,
        /// Runners at most, booted and booting.
        max: usize,
    },
    /// New concurrent calls per runner (ignored by single-use pools, whose
    /// runners take one call each).
    MaxConcurrency(usize),
}

impl Resize {
    /// Checks the new values as the pool's options are checked.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `max` is 0, `min > max` or `max_concurrency`
    /// is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame_actors::{Error, Resize};
    ///
    /// assert!(Resize::Bounds { min: 0, max: 4 }.check().is_ok());
    /// assert!(matches!(Resize::Bounds { min: 5, max: 4 }.check(), Err(Error::Config(_))));
    /// ```
    pub fn check(&self) -> Result<(), Error> {
        match *self {
            Resize::Bounds { max: 0, .. } => Err(Error::Config("max must be at least 1".into())),
            Resize::Bounds { min, max } if min > max => Err(Error::Config(format!("min ({min}) exceeds max ({max})"))),
            Resize::MaxConcurrency(0) => Err(Error::Config("max_concurrency must be at least 1".into())),
            _ => Ok(()),
        }
    }
}

/// Which of `candidates` (runner, slots in use, booted for `min`) to retire
/// so that `surplus` fewer serve: the least loaded first, and at equal load
/// runners not booted for `min` (those follow their own idle setting).
pub(super) fn retirees(mut candidates: Vec<(RunnerId, usize, bool)>, surplus: usize) -> Vec<RunnerId> {
    candidates.sort_by_key(|&(runner, load, is_min)| (load, is_min, runner));
    candidates
        .into_iter()
        .take(surplus)
        .map(|(runner, ..)| runner)
        .collect()
}

impl<B: Backend> PoolState<B> {
    /// Applies `change` (see [`Resize`]); once this returns the new limits
    /// are in force for every checkout.
    pub(crate) async fn resize(&mut self, myself: &ActorRef<PoolMessage>, change: Resize) -> Result<(), Error> {
        change.check()?;
        if self.stopping {
            return Err(Error::PoolNotRunning);
        }
        match change {
            Resize::Bounds { min, max } => {
                self.config.min = min;
                self.config.max = max;
                self.min = if self.on_runner { 0 } else { min };
            }
            Resize::MaxConcurrency(n) => {
                self.config.max_concurrency = n;
                if !self.config.single_use {
                    self.gate.set_limit(n);
                }
            }
        }
        let retiring = self.shed_surplus();
        tracing::info!(target: "ractor_flame::pool", pool = %self.config.name, min = self.min, max = self.config.max,
            max_concurrency = self.config.max_concurrency, retiring, "resized");
        self.emit(PoolEvent::Resized {
            min: self.min,
            max: self.config.max,
            max_concurrency: self.config.max_concurrency,
            retiring,
        });
        self.refill_min(myself).await;
        // Room may be anywhere now (a higher limit on every runner).
        self.rescan = true;
        self.serve_waiters(None);
        self.maybe_grow(myself).await;
        Ok(())
    }

    /// Retires booted runners while more than `max` serve (retiring ones
    /// not counted); returns how many it retired. Runners still booting are
    /// retired when they come up, if still beyond `max` then.
    pub(super) fn shed_surplus(&mut self) -> usize {
        let serving = self.runners.values().filter(|s| !s.retiring).count();
        let surplus = serving.saturating_sub(self.config.max);
        if surplus == 0 {
            return 0;
        }
        let candidates = self
            .runners
            .iter()
            .filter(|(_, s)| s.booted() && !s.retiring)
            .map(|(id, s)| (*id, s.active(), s.is_min))
            .collect();
        let chosen = retirees(candidates, surplus);
        for runner in &chosen {
            self.retire(*runner);
        }
        chosen.len()
    }

    /// Takes `runner` out of service for good: no new work, and it stops
    /// once its last slot is checked in.
    fn retire(&mut self, runner: RunnerId) {
        self.set_draining(runner);
        let Some(slot) = self.runners.get_mut(&runner) else {
            return;
        };
        slot.retiring = true;
        tracing::debug!(target: "ractor_flame::pool", pool = %self.config.name, %runner, load = slot.active(), "retiring");
        if let Some(shared) = &slot.shared {
            // Told first, load read after (see `SlotShared::always_tell`):
            // either the load is 0 here or its last lease tells the pool.
            shared.always_tell.store(true, Ordering::SeqCst);
        }
        self.stop_if_done(runner);
    }

    /// Tells a retiring (or used-up single-use) runner to stop when nothing
    /// is checked out on it; once.
    pub(super) fn stop_if_done(&mut self, runner: RunnerId) {
        let Some(slot) = self.runners.get_mut(&runner) else {
            return;
        };
        if slot.shutdown_sent || slot.active() > 0 {
            return;
        }
        if let Some(conn) = slot.conn() {
            conn.control(ToRunner::Shutdown);
            slot.shutdown_sent = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_runners_retire_first_then_the_least_loaded() {
        let (a, b, c, d) = (RunnerId::new(), RunnerId::new(), RunnerId::new(), RunnerId::new());
        let chosen = retirees(vec![(a, 3, false), (b, 0, true), (c, 1, false), (d, 0, false)], 3);
        // Idle first (the one not booted for `min` before the `min` one),
        // then the least loaded; the busiest stays.
        assert_eq!(chosen, vec![d, b, c]);
    }

    #[test]
    fn no_surplus_retires_nobody() {
        assert!(retirees(vec![(RunnerId::new(), 0, false)], 0).is_empty());
    }

    #[test]
    fn invalid_resizes_are_config_errors() {
        for bad in [
            Resize::Bounds { min: 0, max: 0 },
            Resize::Bounds { min: 3, max: 2 },
            Resize::MaxConcurrency(0),
        ] {
            assert!(matches!(bad.check(), Err(Error::Config(_))), "{bad:?}");
        }
        assert!(Resize::Bounds { min: 2, max: 2 }.check().is_ok());
        assert!(Resize::MaxConcurrency(1).check().is_ok());
    }
}
