//! Growth: booting runners for waiting callers and to keep `min` up, and
//! retrying failed boots with backoff.

use std::sync::Arc;

use ractor::{Actor, ActorRef};

use super::{PoolState, Slot};
use crate::error::Error;
use crate::events::PoolEvent;
use crate::flame_parent::RunnerSettings;
use crate::ids::{RunnerId, Token};
use crate::on_parent::backend::{Backend, RunnerContext};
use crate::on_parent::pool::{InternalMsg, PoolMessage};
use crate::on_parent::runner::{Runner, RunnerArguments, RunnerMessage};

impl<B: Backend> PoolState<B> {
    /// Boots more runners while the waiting callers exceed what booting
    /// runners will absorb and `max` allows.
    pub(super) async fn maybe_grow(&mut self, myself: &ActorRef<PoolMessage>) {
        if self.stopping || self.retry_armed {
            return;
        }
        self.waiting.retain(|w| !w.is_closed());
        // Runners on standby take the waiters first: no boot to wait for.
        let mut admitted = false;
        while self.config.standby > 0 && !self.waiting.is_empty() {
            let Some(runner) = self.ready_standby() else { break };
            self.admit(runner);
            admitted = true;
        }
        let per_runner = self.per_runner();
        let mut absorbed = self.booting * per_runner;
        while self.waiting.len() > absorbed && self.runners.len() < self.config.max {
            self.boot(myself, false, false).await;
            absorbed += per_runner;
        }
        if admitted {
            // Others take the admitted runners' place.
            self.refill_standby(myself).await;
        }
    }

    /// Runners on standby, booted or booting.
    pub(super) fn standby_count(&self) -> usize {
        self.runners.values().filter(|s| s.standby).count()
    }

    /// A booted runner on standby, if any.
    fn ready_standby(&self) -> Option<RunnerId> {
        self.runners
            .iter()
            .find(|(_, slot)| slot.standby && slot.booted() && !slot.retiring)
            .map(|(id, _)| *id)
    }

    /// Puts a runner on standby into service: it joins the gate and serves
    /// the waiters it has room for.
    pub(super) fn admit(&mut self, runner: RunnerId) {
        let Some(slot) = self.runners.get_mut(&runner) else {
            return;
        };
        slot.standby = false;
        let Some(shared) = slot.shared.clone() else {
            return;
        };
        tracing::debug!(target: "ractor_flame::pool", pool = %self.config.name, %runner, "standby runner admitted");
        self.gate.insert(&shared);
        self.serve_waiters(Some(&shared));
    }

    /// Boots runners on standby until `standby` are up or booting, within
    /// `max`.
    pub(crate) async fn refill_standby(&mut self, myself: &ActorRef<PoolMessage>) {
        if self.config.standby == 0 || self.stopping || self.retry_armed {
            return;
        }
        let mut standby = self.standby_count();
        while standby < self.config.standby && self.runners.len() < self.config.max {
            self.boot(myself, false, true).await;
            standby += 1;
        }
    }

    /// Boots runners until `min` are up or booting.
    pub(crate) async fn refill_min(&mut self, myself: &ActorRef<PoolMessage>) {
        if self.stopping {
            return;
        }
        for _ in self.min_runners..self.min {
            if self.runners.len() >= self.config.max {
                break;
            }
            self.boot(myself, true, false).await;
        }
    }

    /// Boots one runner: for `min`, on `standby`, or for waiting callers.
    async fn boot(&mut self, myself: &ActorRef<PoolMessage>, is_min: bool, standby: bool) {
        let runner_id = RunnerId::new();
        let target = self.runners.len() + 1;
        self.emit(PoolEvent::GrowStart {
            target,
            runner: runner_id,
        });
        tracing::event!(target: "ractor_flame::pool", tracing::Level::DEBUG, pool = %self.config.name, runner = %runner_id, target, "grow");
        let settings = self.settings(is_min);
        let (pool, registry, boot_timeout, link_tls) = (
            self.config.name.clone(),
            self.registry.clone(),
            self.config.boot_timeout,
            self.config.link_tls,
        );
        let context = Box::new(move |runner| RunnerContext {
            runner_id,
            pool,
            token: Token::generate(),
            registry,
            settings,
            boot_timeout,
            runner,
            link_tls,
            // Set by the Runner as it starts.
            boot_deadline: std::time::Instant::now() + boot_timeout,
        });
        let args = RunnerArguments {
            pool: myself.clone(),
            context,
        };
        let spawned = Actor::spawn_linked(None, Runner::new(Arc::clone(&self.backend)), args, myself.get_cell()).await;
        match spawned {
            Ok((actor, _)) => {
                self.by_actor.insert(actor.get_id(), runner_id);
                self.booting += 1;
                if is_min {
                    self.min_runners += 1;
                }
                let _ = actor.cast(RunnerMessage::Boot);
                self.runners.insert(
                    runner_id,
                    Slot {
                        actor,
                        shared: None,
                        is_min,
                        standby,
                        idle_exit: false,
                        retiring: false,
                        shutdown_sent: false,
                        boot_started: std::time::Instant::now(),
                    },
                );
            }
            Err(e) => {
                tracing::error!(target: "ractor_flame::pool", error = %e, "could not spawn a runner actor");
            }
        }
    }

    fn settings(&self, is_min: bool) -> RunnerSettings {
        let idle = if is_min {
            &self.config.min_idle_shutdown_after
        } else {
            &self.config.idle_shutdown_after
        };
        RunnerSettings {
            failsafe_timeout: self.config.failsafe_timeout,
            heartbeat_interval: self.config.heartbeat_interval,
            heartbeat_timeout: self.config.heartbeat_timeout,
            idle_after: idle.duration(),
            idle_predicate: idle.predicate().map(str::to_owned),
            shutdown_timeout: self.config.shutdown_timeout,
            max_frame_size: self.config.max_frame_size,
            release_memory_after: self.config.release_memory_after,
        }
    }

    pub(super) async fn boot_failed(
        &mut self,
        myself: &ActorRef<PoolMessage>,
        runner: RunnerId,
        slot: Slot,
        reason: String,
    ) {
        self.failures += 1;
        let count = self.runners.len();
        let error = Error::BootFailed { reason: reason.clone() };
        let boot_time = slot.boot_started.elapsed();
        self.metrics.boot_failed();
        self.emit(PoolEvent::GrowEnd {
            result: Err(error.clone()),
            count,
            runner,
            boot_time,
        });
        self.emit(PoolEvent::BootFailed {
            runner,
            reason: reason.clone(),
            boot_time,
        });
        if self.stopping {
            return;
        }
        let retry = self.config.boot_retry;
        let wanted = slot.is_min || self.waiting.iter().any(|w| !w.is_closed());
        if !slot.is_min && self.failures >= retry.max_attempts {
            // Out of attempts: the waiters learn why (B18).
            tracing::error!(target: "ractor_flame::pool", pool = %self.config.name, %reason, attempts = self.failures, "boot failed, giving up");
            for waiter in self.waiting.drain(..) {
                let _ = waiter.send(Err(error.clone()));
            }
            self.failures = 0;
            return;
        }
        if wanted && !self.retry_armed {
            let delay = retry.backoff(self.failures);
            tracing::warn!(target: "ractor_flame::pool", pool = %self.config.name, %reason, ?delay, "boot failed, retrying");
            self.retry_armed = true;
            myself.send_after(delay, || InternalMsg::RetryBoot.into());
        }
    }

    pub(crate) async fn retry_boot(&mut self, myself: &ActorRef<PoolMessage>) {
        self.retry_armed = false;
        self.refill_min(myself).await;
        self.maybe_grow(myself).await;
    }
}

#[cfg(test)]
mod tests {
    use crate::config::BootRetry;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_to_its_cap() {
        let r = BootRetry {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        };
        let delays: Vec<_> = (1..=5).map(|n| r.backoff(n).as_millis()).collect();
        assert_eq!(delays, vec![10, 20, 40, 50, 50]);
    }
}
