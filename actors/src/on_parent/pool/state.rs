//! The Pool's decisions: checkout choice, growth, the FIFO queue, boot
//! retry with backoff, refill to `min`, idle verdicts and single use.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ractor::{Actor, ActorId, ActorRef, RpcReplyPort};
use tokio::sync::broadcast;

use super::InternalMsg;
use super::gate::{Gate, SlotShared};
use super::{Lease, PoolArguments, PoolMessage};
use crate::config::PoolConfig;
use crate::error::Error;
use crate::events::{Hook, PoolEvent};
use crate::flame_parent::RunnerSettings;
use crate::func::registry::Registry;
use crate::ids::{RunnerId, Token};
use crate::observe::metrics::PoolMetrics;
use crate::on_parent::backend::{Backend, RunnerContext};
use crate::on_parent::link::RunnerConn;
use crate::on_parent::runner::{Runner, RunnerArguments, RunnerMessage};
use crate::wire::frame::ToRunner;

type Waiter = RpcReplyPort<Result<Lease, Error>>;

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

/// A snapshot of a pool.
///
/// # Examples
///
/// ```
/// use ractor_flame_actors::PoolStats;
///
/// let idle = PoolStats::default();
/// assert_eq!(idle.runners + idle.booting, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Runners booted and serving (draining ones included).
    pub runners: usize,
    /// Runners booting.
    pub booting: usize,
    /// Slots in use (calls, casts and placed children in flight).
    pub busy: usize,
    /// Callers waiting for a slot.
    pub waiting: usize,
    /// Busy slots whose caller has gone (a deadline, a cancel, a dropped
    /// call) while the work still runs on the runner: they return when it
    /// ends.
    pub cancelling: usize,
}

/// One runner, as the pool sees it.
#[derive(Debug)]
struct Slot {
    actor: ActorRef<RunnerMessage>,
    /// Connection, load and draining flag, shared with leases and the fast
    /// path; `None` while booting.
    shared: Option<Arc<SlotShared>>,
    /// Booted to satisfy `min`.
    is_min: bool,
    /// Left because it was idle: not refilled.
    idle_exit: bool,
    /// When its boot started.
    boot_started: std::time::Instant,
}

impl Slot {
    fn booted(&self) -> bool {
        self.shared.is_some()
    }

    fn active(&self) -> usize {
        self.shared.as_ref().map_or(0, |s| s.active())
    }

    fn conn(&self) -> Option<&RunnerConn> {
        self.shared.as_ref().map(|s| &s.conn)
    }
}

/// State of the Pool actor.
pub struct PoolState<B: Backend> {
    config: PoolConfig,
    backend: Arc<B>,
    registry: Registry,
    min: usize,
    runners: HashMap<RunnerId, Slot>,
    by_actor: HashMap<ActorId, RunnerId>,
    waiting: VecDeque<Waiter>,
    /// The fast path, shared with the pool's handles.
    gate: Arc<Gate>,
    /// Failed boots in a row.
    failures: u32,
    retry_armed: bool,
    stopping: bool,
    /// Every pool event, for any number of subscribers.
    events: broadcast::Sender<PoolEvent>,
    metrics: PoolMetrics,
}

impl<B: Backend> std::fmt::Debug for PoolState<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolState")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// A Pool actor that is killed never runs `post_stop`; its state is still
/// dropped, and that closes the gate: no call goes to a dead pool.
impl<B: Backend> Drop for PoolState<B> {
    fn drop(&mut self) {
        self.gate.close();
    }
}

impl<B: Backend> PoolState<B> {
    pub(super) fn new(args: PoolArguments<B>) -> Self {
        let min = if args.on_runner { 0 } else { args.config.min };
        let metrics = PoolMetrics::new(&args.config.name, args.backend.name());
        PoolState {
            events: args.events,
            metrics,
            config: args.config,
            backend: args.backend,
            registry: args.registry,
            min,
            runners: HashMap::new(),
            by_actor: HashMap::new(),
            waiting: VecDeque::new(),
            gate: args.gate,
            failures: 0,
            retry_armed: false,
            stopping: false,
        }
    }

    pub(super) fn config(&self) -> &PoolConfig {
        &self.config
    }

    pub(super) fn runner_of(&self, actor: ActorId) -> Option<RunnerId> {
        self.by_actor.get(&actor).copied()
    }

    /// Whether the gauges need a periodic refresh (a recorder was
    /// installed when the pool started).
    pub(super) fn metrics_enabled(&self) -> bool {
        self.metrics.enabled
    }

    /// Sets the pool's gauges from its current state.
    pub(super) fn refresh_gauges(&self) {
        if self.metrics.enabled {
            let s = self.stats();
            self.metrics.gauges(s.runners, s.booting, s.busy, s.waiting);
        }
    }

    pub(super) fn stats(&self) -> PoolStats {
        let booting = self.runners.values().filter(|s| !s.booted()).count();
        PoolStats {
            runners: self.runners.len() - booting,
            booting,
            busy: self.runners.values().map(Slot::active).sum(),
            waiting: self.waiting.iter().filter(|w| !w.is_closed()).count(),
            cancelling: self
                .runners
                .values()
                .filter_map(|s| s.shared.as_ref())
                .map(|s| s.conn.cancelling())
                .sum(),
        }
    }

    /// Slots a runner offers.
    fn per_runner(&self) -> usize {
        if self.config.single_use {
            1
        } else {
            self.config.max_concurrency
        }
    }

    /// Claims a slot on the booted runner with the fewest checkouts below
    /// its limit. Callers on the fast path claim too, so a runner that
    /// looked free may be full by now: then the next one is tried.
    fn pick(&self) -> Option<Arc<SlotShared>> {
        let limit = self.per_runner();
        let mut candidates: Vec<&Arc<SlotShared>> = self
            .runners
            .values()
            .filter_map(|s| s.shared.as_ref())
            .filter(|s| !s.draining.load(Ordering::SeqCst) && s.active() < limit)
            .collect();
        candidates.sort_by_key(|s| s.active());
        candidates.into_iter().find(|s| s.claim(limit)).cloned()
    }

    /// Hands a claimed slot to `waiter`. A waiter that already gave up gets
    /// nothing and the slot stays free (its lease is dropped, which checks in).
    fn grant(&mut self, slot: Arc<SlotShared>, waiter: Waiter) {
        let single_use = self.config.single_use;
        if single_use {
            // One checkout per runner (B23).
            self.set_draining(slot.runner);
        }
        let lease = Lease::new(slot);
        let _ = waiter.send(Ok(lease));
    }

    /// Takes `runner` out of service (idle verdict, stopping, used up).
    fn set_draining(&mut self, runner: RunnerId) {
        if let Some(shared) = self.runners.get(&runner).and_then(|s| s.shared.as_ref()) {
            shared.draining.store(true, Ordering::SeqCst);
        }
        self.publish();
    }

    /// Tells the fast path which runners serve.
    fn publish(&self) {
        let serving = self
            .runners
            .values()
            .filter_map(|s| s.shared.clone())
            .filter(|s| !s.draining.load(Ordering::SeqCst))
            .collect();
        self.gate.publish(serving);
    }

    pub(super) async fn checkout(&mut self, myself: &ActorRef<PoolMessage>, waiter: Waiter) {
        if self.stopping {
            let _ = waiter.send(Err(Error::PoolNotRunning));
            return;
        }
        // FIFO: a new caller only jumps in when nobody waits (B15).
        if self.waiting.iter().all(|w| w.is_closed()) {
            self.waiting.clear();
            if let Some(slot) = self.pick() {
                return self.grant(slot, waiter);
            }
        }
        if let Some(capacity) = self.config.queue_capacity {
            self.waiting.retain(|w| !w.is_closed());
            if self.waiting.len() >= capacity {
                let _ = waiter.send(Err(Error::QueueFull { capacity }));
                self.emit(PoolEvent::QueueFull { capacity });
                return;
            }
        }
        self.waiting.push_back(waiter);
        // Announce the waiter before looking again: a lease dropped since
        // the look above either sees the flag or left its slot for this one.
        self.gate.has_waiters.store(true, Ordering::SeqCst);
        self.serve_waiters();
        self.maybe_grow(myself).await;
    }

    pub(super) async fn checkin(&mut self, myself: &ActorRef<PoolMessage>, runner: RunnerId) {
        // A late or duplicate checkin is harmless (B20).
        let Some(slot) = self.runners.get_mut(&runner) else {
            return;
        };
        if self.config.single_use
            && slot.active() == 0
            && let Some(conn) = slot.conn()
        {
            conn.control(ToRunner::Shutdown);
        }
        self.serve_waiters();
        self.maybe_grow(myself).await;
    }

    /// Serves waiters in order while runners have free slots.
    fn serve_waiters(&mut self) {
        while let Some(front) = self.waiting.front() {
            if front.is_closed() {
                self.waiting.pop_front();
                continue;
            }
            let Some(slot) = self.pick() else { break };
            let waiter = self.waiting.pop_front().expect("front exists");
            self.grant(slot, waiter);
        }
        if self.waiting.is_empty() {
            self.gate.has_waiters.store(false, Ordering::SeqCst);
        }
    }

    /// Boots more runners while the waiting callers exceed what booting
    /// runners will absorb and `max` allows.
    async fn maybe_grow(&mut self, myself: &ActorRef<PoolMessage>) {
        if self.stopping || self.retry_armed {
            return;
        }
        self.waiting.retain(|w| !w.is_closed());
        let per_runner = self.per_runner();
        let booting = self.runners.values().filter(|s| !s.booted()).count();
        let mut absorbed = booting * per_runner;
        while self.waiting.len() > absorbed && self.runners.len() < self.config.max {
            self.boot(myself, false).await;
            absorbed += per_runner;
        }
    }

    /// Boots runners until `min` are up or booting.
    pub(super) async fn refill_min(&mut self, myself: &ActorRef<PoolMessage>) {
        if self.stopping {
            return;
        }
        let have = self.runners.values().filter(|s| s.is_min).count();
        for _ in have..self.min {
            if self.runners.len() >= self.config.max {
                break;
            }
            self.boot(myself, true).await;
        }
    }

    /// Tells the event's hook (if one is set for its kind) and every
    /// subscriber of [`Pool::events`](https://docs.rs/ractor-flame).
    fn emit(&self, event: PoolEvent) {
        let hook: &Option<Hook> = match &event {
            PoolEvent::GrowStart { .. } => &self.config.on_grow_start,
            PoolEvent::GrowEnd { .. } => &self.config.on_grow_end,
            PoolEvent::Shrink { .. } => &self.config.on_shrink,
            _ => &None,
        };
        if let Some(hook) = hook {
            hook(&event);
        }
        // No subscriber is fine: nobody listens.
        let _ = self.events.send(event);
    }

    async fn boot(&mut self, myself: &ActorRef<PoolMessage>, is_min: bool) {
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
        });
        let args = RunnerArguments {
            pool: myself.clone(),
            context,
        };
        let spawned = Actor::spawn_linked(None, Runner::new(Arc::clone(&self.backend)), args, myself.get_cell()).await;
        match spawned {
            Ok((actor, _)) => {
                self.by_actor.insert(actor.get_id(), runner_id);
                let _ = actor.cast(RunnerMessage::Boot);
                self.runners.insert(
                    runner_id,
                    Slot {
                        actor,
                        shared: None,
                        is_min,
                        idle_exit: false,
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
        }
    }

    pub(super) async fn runner_up(&mut self, myself: &ActorRef<PoolMessage>, runner: RunnerId, conn: RunnerConn) {
        let Some(slot) = self.runners.get_mut(&runner) else {
            return;
        };
        let always_tell = self.config.single_use;
        slot.shared = Some(SlotShared::new(runner, conn, myself.clone(), &self.gate, always_tell));
        let boot_time = slot.boot_started.elapsed();
        self.publish();
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
        self.serve_waiters();
        self.maybe_grow(myself).await;
    }

    async fn boot_failed(&mut self, myself: &ActorRef<PoolMessage>, runner: RunnerId, slot: Slot, reason: String) {
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

    pub(super) async fn retry_boot(&mut self, myself: &ActorRef<PoolMessage>) {
        self.retry_armed = false;
        self.refill_min(myself).await;
        self.maybe_grow(myself).await;
    }

    /// A runner is gone; `reason` is its exit reason when known. A runner
    /// that goes while booting is a failed boot, and its exit reason is the
    /// backend's.
    pub(super) async fn runner_lost(
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
        if slot.idle_exit {
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
        if !slot.idle_exit && !self.retry_armed {
            self.refill_min(myself).await;
        }
        self.serve_waiters();
        self.maybe_grow(myself).await;
    }

    fn remove(&mut self, runner: RunnerId) -> Option<Slot> {
        let slot = self.runners.remove(&runner)?;
        self.by_actor.remove(&slot.actor.get_id());
        self.publish();
        Some(slot)
    }

    /// Grants an idle runner's wish to stop only when nothing is checked out
    /// on it; the runner stays otherwise.
    pub(super) fn idle_request(&mut self, runner: RunnerId) {
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
        self.publish();
    }

    pub(super) fn runner_stopping(&mut self, runner: RunnerId) {
        self.set_draining(runner);
    }

    /// The pool is stopping: fail every waiter with `PoolNotRunning`.
    pub(super) fn stopping(&mut self) {
        self.stopping = true;
        self.gate.close();
        for waiter in self.waiting.drain(..) {
            let _ = waiter.send(Err(Error::PoolNotRunning));
        }
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
