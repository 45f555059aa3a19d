//! The runner set's bookkeeping: a runner up or lost, draining, idle
//! verdicts, and what the fast path may use.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ractor::ActorRef;

use super::{PoolState, Slot};
use crate::events::PoolEvent;
use crate::ids::RunnerId;
use crate::on_parent::backend::Backend;
use crate::on_parent::link::RunnerConn;
use crate::on_parent::pool::PoolMessage;
use crate::on_parent::pool::gate::SlotShared;
use crate::wire::frame::ToRunner;

/// A pool lifecycle event at the configured level (`PoolConfig::log`);
/// tracing wants its levels constant, hence the match.
macro_rules! lifecycle {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            tracing::Level::ERROR => tracing::error!(target: "ractor_flame::pool", $($rest)+),
            tracing::Level::WARN => tracing::warn!(target: "ractor_flame::pool", $($rest)+),
            tracing::Level::INFO => tracing::info!(target: "ractor_flame::pool", $($rest)+),
            tracing::Level::DEBUG => tracing::debug!(target: "ractor_flame::pool", $($rest)+),
            tracing::Level::TRACE => tracing::trace!(target: "ractor_flame::pool", $($rest)+),
        }
    };
}

impl<B: Backend> PoolState<B> {
    /// Takes `runner` out of service (idle verdict, stopping, used up).
    pub(super) fn set_draining(&mut self, runner: RunnerId) {
        if let Some(shared) = self.runners.get(&runner).and_then(|s| s.shared.as_ref()) {
            shared.draining.store(true, Ordering::SeqCst);
            self.gate.remove(shared);
        }
    }

    pub(crate) async fn runner_up(&mut self, myself: &ActorRef<PoolMessage>, runner: RunnerId, conn: RunnerConn) {
        let Some(slot) = self.runners.get_mut(&runner) else {
            return;
        };
        let always_tell = self.config.single_use;
        if slot.shared.is_some() {
            return;
        }
        let shared = SlotShared::new(runner, conn, myself.clone(), &self.gate, always_tell);
        slot.shared = Some(Arc::clone(&shared));
        let boot_time = slot.boot_started.elapsed();
        let (booted_standby, is_min) = (slot.standby, slot.is_min);
        // A runner booted for callers that others served meanwhile (a
        // standby was admitted) goes on standby itself while fewer than
        // `standby` are. A runner on standby waits outside the gate.
        let standby = booted_standby
            || (!is_min
                && self.config.standby > 0
                && self.waiting.iter().all(|w| w.is_closed())
                && self.standby_count() < self.config.standby);
        if let Some(slot) = self.runners.get_mut(&runner) {
            slot.standby = standby;
        }
        self.booting -= 1;
        if !standby {
            self.gate.insert(&shared);
        }
        self.failures = 0;
        let count = self.runners.len();
        lifecycle!(self.config.log, pool = %self.config.name, %runner, count, "runner up");
        self.metrics.boot_ok(boot_time);
        self.emit(PoolEvent::GrowEnd {
            result: Ok(()),
            count,
            runner,
            boot_time,
        });
        if self.stopping {
            return;
        }
        // Beyond a `max` lowered while it booted: it leaves at once.
        if self.shed_surplus() > 0 && self.runners.get(&runner).is_some_and(|s| s.retiring) {
            self.serve_waiters(None);
            return self.maybe_grow(myself).await;
        }
        if standby {
            // Admitted at once when callers wait (`maybe_grow`).
            return self.maybe_grow(myself).await;
        }
        // The new runner has room: waiters take it first.
        self.serve_waiters(Some(&shared));
        self.maybe_grow(myself).await;
    }

    /// A runner is gone; `reason` is its exit reason when known. A runner
    /// that goes while booting is a failed boot, and its exit reason is the
    /// backend's.
    pub(crate) async fn runner_lost(
        &mut self,
        myself: &ActorRef<PoolMessage>,
        runner: RunnerId,
        reason: Option<String>,
        kind: Option<&'static str>,
    ) {
        let Some(slot) = self.remove(runner) else {
            return;
        };
        if !slot.booted() {
            let reason = reason.unwrap_or_else(|| "runner exited while booting".into());
            return self.boot_failed(myself, runner, slot, reason).await;
        }
        let count = self.runners.len();
        lifecycle!(self.config.log, pool = %self.config.name, %runner, count, "runner left");
        // Idle exits and stops the pool asked for are no loss.
        if slot.retiring {
            // Retired by a lower `max`: neither a loss nor refilled.
        } else if slot.idle_exit {
            self.metrics.idle_shutdown();
        } else if !self.stopping && !matches!(kind, Some("stopped" | "shutting_down")) {
            self.metrics.runner_lost(kind.unwrap_or("backend"));
            let reason = reason.unwrap_or_else(|| "runner actor ended".into());
            self.emit(PoolEvent::RunnerLost { runner, reason });
        }
        self.emit(PoolEvent::Shrink { count, runner });
        if self.stopping {
            return;
        }
        if !slot.idle_exit && !slot.retiring && !self.retry_armed {
            self.refill_min(myself).await;
        }
        self.serve_waiters(None);
        self.maybe_grow(myself).await;
    }

    fn remove(&mut self, runner: RunnerId) -> Option<Slot> {
        let slot = self.runners.remove(&runner)?;
        self.by_actor.remove(&slot.actor.get_id());
        match &slot.shared {
            Some(shared) => self.gate.remove(shared),
            None => self.booting -= 1,
        }
        if slot.is_min {
            self.min_runners -= 1;
        }
        Some(slot)
    }

    /// Grants an idle runner's wish to stop only when nothing is checked out
    /// on it; the runner stays otherwise.
    pub(crate) fn idle_request(&mut self, runner: RunnerId) {
        let stopping = self.stopping;
        let Some(slot) = self.runners.get_mut(&runner) else {
            return;
        };
        let Some(shared) = slot.shared.clone() else {
            return;
        };
        // Draining first, then the load: a caller on the fast path claims
        // first, then reads the flag; one of us sees the other.
        let was_draining = shared.draining.swap(true, Ordering::SeqCst);
        let granted = !stopping && shared.active() == 0;
        if granted {
            slot.idle_exit = true;
        } else if !was_draining {
            shared.draining.store(false, Ordering::SeqCst);
        }
        shared.conn.control(ToRunner::IdleVerdict { granted });
        if shared.draining.load(Ordering::SeqCst) {
            self.gate.remove(&shared);
        } else {
            // Back in service: room it gained meanwhile went untold.
            self.gate.insert(&shared);
            self.serve_waiters(Some(&shared));
        }
    }

    pub(crate) fn runner_stopping(&mut self, runner: RunnerId) {
        self.set_draining(runner);
    }
}
