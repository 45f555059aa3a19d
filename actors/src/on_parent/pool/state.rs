//! The Pool's decisions: checkout choice, growth, the FIFO queue, boot
//! retry with backoff, refill to `min`, idle verdicts and single use.
//!
//! This file holds [`PoolState`], its fields and what every concern uses;
//! the decisions are split by concern: [`checkout`] (choosing a runner, the
//! waiting queue), [`growth`] (booting runners, refill to `min`, boot
//! backoff) and [`runners`] (runners coming up, going, draining and asking
//! to idle out).

mod checkout;
mod growth;
mod resize;
mod runners;

pub use resize::Resize;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ractor::{ActorId, ActorRef, RpcReplyPort};
use tokio::sync::broadcast;

use super::gate::{Gate, SlotShared};
use super::{Lease, PoolArguments};
use crate::config::PoolConfig;
use crate::error::Error;
use crate::events::{Hook, PoolEvent};
use crate::func::registry::Registry;
use crate::ids::RunnerId;
use crate::observe::metrics::PoolMetrics;
use crate::on_parent::backend::Backend;
use crate::on_parent::link::RunnerConn;
use crate::on_parent::runner::RunnerMessage;

type Waiter = RpcReplyPort<Result<Lease, Error>>;

/// A snapshot of a pool. It serializes (with serde) as an object of its
/// counts, for a service's status endpoint.
///
/// # Examples
///
/// ```
/// use ractor_flame_actors::PoolStats;
///
/// let idle = PoolStats::default();
/// assert_eq!(idle.runners + idle.booting, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Runners booted ahead of demand, handed no work yet
    /// (`PoolConfig::standby`); not counted in `runners`.
    pub standby: usize,
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
    /// Booted ahead of demand: not in the gate, handed no work until the
    /// pool admits it.
    standby: bool,
    /// Left because it was idle: not refilled.
    idle_exit: bool,
    /// Beyond a lower `max`: takes no new work, stops once its work is
    /// over, and is not refilled.
    retiring: bool,
    /// The pool told it to stop (once is enough).
    shutdown_sent: bool,
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
    /// This process is itself a runner: `min` stays 0 whatever a resize says.
    on_runner: bool,
    runners: HashMap<RunnerId, Slot>,
    by_actor: HashMap<ActorId, RunnerId>,
    waiting: VecDeque<Waiter>,
    /// The fast path, shared with the pool's handles.
    gate: Arc<Gate>,
    /// Runners booting (the slots without `shared`).
    booting: usize,
    /// Runners booted or booting to satisfy `min`.
    min_runners: usize,
    /// Whether the next checkout choice may scan the runners: the pool has
    /// not yet looked everywhere since callers started waiting (see
    /// `checkout.rs`).
    rescan: bool,
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
            on_runner: args.on_runner,
            runners: HashMap::new(),
            by_actor: HashMap::new(),
            waiting: VecDeque::new(),
            gate: args.gate,
            booting: 0,
            min_runners: 0,
            rescan: true,
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
        let booting = self.booting;
        let standby = self.runners.values().filter(|s| s.standby && s.booted()).count();
        PoolStats {
            runners: self.runners.len() - booting - standby,
            booting,
            standby,
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

    /// The pool is stopping: fail every waiter with `PoolNotRunning`.
    pub(super) fn stopping(&mut self) {
        self.stopping = true;
        self.gate.close();
        for waiter in self.waiting.drain(..) {
            let _ = waiter.send(Err(Error::PoolNotRunning));
        }
    }
}
