//! The Pool: owns the runner set, the FIFO waiting queue, growth and shrink.
//!
//! A caller checks out a slot with one round trip to the Pool, gets a
//! [`Lease`] holding the runner's connection, sends its call on that
//! connection itself, and checks in by dropping the lease (a cast). The Pool
//! is never on the data path of a call.
//!
//! The decisions live in [`state::PoolState`] (checkout choice, growth,
//! backoff), so they read and test without a mailbox; this file is the
//! message plumbing.

mod gate;
mod keys;
mod state;

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::config::PoolConfig;
use crate::error::Error;
use crate::events::{EVENTS_CAPACITY, PoolEvent};
use crate::func::args::Args;
use crate::func::registry::Registry;
use crate::ids::RunnerId;
use crate::on_parent::backend::Backend;
use crate::on_parent::link::RunnerConn;
use crate::on_runner::Release;
use crate::wire::frame::Outcome;

pub use gate::Gate;
use gate::SlotShared;
use state::PoolState;
pub use state::{PoolStats, Resize};

/// How often the gauges are refreshed while a metrics recorder is installed
/// (busy slots change on the call path, which the pool does not see).
const GAUGE_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Messages of the Pool actor.
///
/// Callers send `Checkout` and `Stats` (the [`Pool`](https://docs.rs/ractor-flame)
/// handle does it for you); everything else the pool hears from its own
/// runners and leases, as [`PoolMessage::Internal`], which only this crate
/// can build or read.
#[non_exhaustive]
pub enum PoolMessage {
    /// A caller wants a slot. The reply port's timeout is its checkout budget.
    Checkout(RpcReplyPort<Result<Lease, Error>>),
    /// A snapshot of the pool.
    Stats(RpcReplyPort<PoolStats>),
    /// Change the pool's bounds or slots per runner while it serves; the
    /// reply comes once the change is in force (an invalid one is refused
    /// with [`Error::Config`] and changes nothing).
    Resize(Resize, RpcReplyPort<Result<(), Error>>),
    /// From the pool's runners and leases.
    Internal(Internal),
}

/// What the pool's runners and leases tell it. Opaque outside this crate.
pub struct Internal(pub(crate) InternalMsg);

impl Internal {
    /// A slot of `runner` was returned. Late, duplicate or unknown ones are
    /// harmless: the pool ignores what it cannot match, so a stray checkin
    /// (sent by hand to an embedded Pool actor) never crashes it.
    pub fn checkin(runner: RunnerId) -> Self {
        Internal(InternalMsg::Checkin(runner))
    }
}

impl fmt::Debug for Internal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            InternalMsg::Checkin(r) => write!(f, "Checkin({r})"),
            InternalMsg::RunnerUp { runner, .. } => write!(f, "RunnerUp({runner})"),
            InternalMsg::RunnerLost { runner, reason, .. } => write!(f, "RunnerLost({runner}, {reason})"),
            InternalMsg::RunnerExited { runner, .. } => write!(f, "RunnerExited({runner})"),
            InternalMsg::IdleRequest { runner } => write!(f, "IdleRequest({runner})"),
            InternalMsg::RunnerStopping { runner } => write!(f, "RunnerStopping({runner})"),
            InternalMsg::RetryBoot => f.write_str("RetryBoot"),
            InternalMsg::MetricsTick => f.write_str("MetricsTick"),
        }
    }
}

/// The messages of [`Internal`].
pub(crate) enum InternalMsg {
    /// A slot was returned (cast by a dropped [`Lease`] when callers wait):
    /// serve the waiters.
    Checkin(RunnerId),
    /// A runner connected and serves.
    RunnerUp { runner: RunnerId, conn: RunnerConn },
    /// A runner is gone; `kind` is the metrics label of its reason.
    RunnerLost {
        runner: RunnerId,
        reason: String,
        kind: &'static str,
    },
    /// A Runner actor ended (its supervision event, passed on behind the
    /// messages already queued, so a `RunnerLost` it sent first is counted
    /// first, with its reason).
    RunnerExited { runner: RunnerId, reason: Option<String> },
    /// A runner has been idle and asks to stop.
    IdleRequest { runner: RunnerId },
    /// A runner is stopping on its own; send it no more work.
    RunnerStopping { runner: RunnerId },
    /// The boot backoff timer fired.
    RetryBoot,
    /// Time to refresh the gauges (only while a metrics recorder is
    /// installed).
    MetricsTick,
}

impl From<InternalMsg> for PoolMessage {
    fn from(msg: InternalMsg) -> Self {
        PoolMessage::Internal(Internal(msg))
    }
}

impl fmt::Debug for PoolMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolMessage::Checkout(_) => f.write_str("Checkout"),
            PoolMessage::Stats(_) => f.write_str("Stats"),
            PoolMessage::Resize(r, _) => write!(f, "Resize({r:?})"),
            PoolMessage::Internal(i) => i.fmt(f),
        }
    }
}

/// A checked-out slot on one runner. Dropping it checks the slot in, exactly
/// once, whatever happened to the call.
pub struct Lease {
    /// The runner, its connection, its checkout count and the way to tell
    /// the pool of a check-in, shared with the pool.
    slot: Arc<SlotShared>,
    /// The checkout went on to another lease (see [`Lease::hand_on`]):
    /// dropping this one checks nothing in.
    handed_on: AtomicBool,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease").field("runner", &self.slot.runner).finish()
    }
}

impl Lease {
    /// A lease of a slot just claimed.
    pub(crate) fn new(slot: Arc<SlotShared>) -> Self {
        Lease {
            slot,
            handed_on: AtomicBool::new(false),
        }
    }

    /// The same checkout, as a lease of its own: this one is spent (its
    /// drop checks nothing in). A call that borrowed its caller's lease
    /// keeps its slot this way when the caller stops waiting first.
    pub(crate) fn hand_on(&self) -> Lease {
        self.handed_on.store(true, Ordering::Relaxed);
        Lease::new(Arc::clone(&self.slot))
    }

    /// The runner's connection.
    pub fn conn(&self) -> &RunnerConn {
        &self.slot.conn
    }

    /// The runner.
    pub fn runner(&self) -> RunnerId {
        self.slot.runner
    }

    /// Sends one call on this slot's runner and waits for its outcome. The
    /// slot is checked in when the call's work has ended on the runner: at
    /// once for a call that completes; only when the runner reports the end
    /// for one whose caller stopped waiting first (deadline, cancel, drop).
    ///
    /// # Errors
    ///
    /// As [`RunnerConn::call`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels a linked call; the slot stays taken
    /// until the runner reports that the work has ended.
    pub async fn call(self, req: crate::on_parent::link::CallRequest<'_>) -> Result<crate::wire::Outcome, Error> {
        // Borrowed, not cloned: a reference count every caller of the
        // runner would write.
        self.slot.conn.call_lent(req, Some(&self)).await
    }

    /// Sends a cast of `function` on this slot's runner without waiting:
    /// the frame is on its way when this returns, and the slot is checked
    /// in when the runner reports that the cast's work has ended. A failure
    /// of the work is logged at `warn`.
    ///
    /// # Errors
    ///
    /// Gives the arguments and the lease back when the cast cannot be sent
    /// this way (a runner going away, arguments over the frame limit): send
    /// it with [`Lease::call`] instead.
    pub fn cast(self, function: &'static str, args: Args) -> Result<(), (Args, Lease)> {
        let conn = self.slot.conn.clone();
        conn.cast_held(function, args, self)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.handed_on.load(Ordering::Relaxed) {
            return;
        }
        check_in(&self.slot);
    }
}

impl Lease {
    /// The checkout as an in-process runner holds it for a call nobody
    /// waits for (a local cast): released, exactly once, when the call's
    /// work has ended. This lease is spent.
    pub(crate) fn into_release(self) -> Arc<dyn Release> {
        self.handed_on.store(true, Ordering::Relaxed);
        Arc::clone(&self.slot) as Arc<dyn Release>
    }
}

/// A local cast's slot, released by the runner when the cast's work has
/// ended: checked in, and a failure logged at `warn`.
impl Release for SlotShared {
    fn release(&self, function: &'static str, outcome: Outcome) {
        // Checked in first: the log line may take a while.
        check_in(self);
        self.conn.cast_ended(function, outcome);
    }
}

/// Checks one checkout of `slot` in.
fn check_in(slot: &SlotShared) {
    // The slot is free the moment the count drops. The pool hears of it
    // only when it has a use for the news (a waiter, a single-use
    // runner): one message and one wake-up less per call. The pool sets
    // `has_waiters` before it re-checks the counts, and we read it after
    // the decrement (both SeqCst): one of the two always sees the other.
    slot.load.fetch_sub(1, Ordering::SeqCst);
    Gate::checked_in(slot);
    if slot.always_tell.load(Ordering::SeqCst) || slot.has_waiters.load(Ordering::SeqCst) {
        // A cast never blocks; if the pool is gone nobody needs the news.
        let _ = slot.pool.cast(InternalMsg::Checkin(slot.runner).into());
    }
}

/// The Pool actor, generic over its backend. Spawn it with [`Actor::spawn`]
/// or under your own supervisor with [`Actor::spawn_linked`].
pub struct Pool<B> {
    _backend: PhantomData<fn() -> B>,
}

impl<B> Default for Pool<B> {
    fn default() -> Self {
        Pool { _backend: PhantomData }
    }
}

impl<B> fmt::Debug for Pool<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pool")
    }
}

/// Arguments of the Pool actor.
pub struct PoolArguments<B> {
    /// Validated at start; an invalid configuration fails the spawn.
    pub config: PoolConfig,
    /// The backend runners boot with.
    pub backend: Arc<B>,
    /// The functions runners serve.
    pub registry: Registry,
    /// `true` when this process is itself a runner: `min` is forced to 0.
    pub on_runner: bool,
    /// The checkout fast path, shared with the pool's handles.
    pub gate: Arc<Gate>,
    /// The pool's events; subscribe before the spawn to miss none.
    pub events: tokio::sync::broadcast::Sender<PoolEvent>,
}

impl<B> PoolArguments<B> {
    /// Arguments with a fresh fast-path gate (read it from `gate` to give
    /// handles the fast path).
    pub fn new(config: PoolConfig, backend: B, registry: Registry, on_runner: bool) -> Self {
        // A single-use runner takes one checkout, whatever `max_concurrency` says.
        let slots = if config.single_use { 1 } else { config.max_concurrency };
        let gate = Gate::new(slots, !config.single_use, config.key_capacity);
        PoolArguments {
            config,
            backend: Arc::new(backend),
            registry,
            on_runner,
            gate,
            events: tokio::sync::broadcast::channel(EVENTS_CAPACITY).0,
        }
    }
}

impl<B> fmt::Debug for PoolArguments<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolArguments")
            .field("config", &self.config)
            .field("on_runner", &self.on_runner)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Actor for Pool<B> {
    type Msg = PoolMessage;
    type State = PoolState<B>;
    type Arguments = PoolArguments<B>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.config.validate_for(&args.registry)?;
        Ok(PoolState::new(args))
    }

    async fn post_start(&self, myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        // Min runners boot in parallel (each Runner boots in its own task);
        // a failure is retried with backoff, never fatal (B12).
        state.refill_min(&myself).await;
        state.refill_standby(&myself).await;
        if state.metrics_enabled() {
            myself.send_interval(GAUGE_REFRESH, || InternalMsg::MetricsTick.into());
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
            PoolMessage::Checkout(reply) => state.checkout(&myself, reply).await,
            PoolMessage::Stats(reply) => {
                let _ = reply.send(state.stats());
            }
            PoolMessage::Resize(resize, reply) => {
                let result = state.resize(&myself, resize).await;
                let _ = reply.send(result);
            }
            PoolMessage::Internal(Internal(msg)) => match msg {
                InternalMsg::Checkin(runner) => state.checkin(&myself, runner).await,
                InternalMsg::RunnerUp { runner, conn } => state.runner_up(&myself, runner, conn).await,
                InternalMsg::RunnerLost { runner, reason, kind } => {
                    state.runner_lost(&myself, runner, Some(reason), Some(kind)).await
                }
                InternalMsg::RunnerExited { runner, reason } => state.runner_lost(&myself, runner, reason, None).await,
                InternalMsg::IdleRequest { runner } => state.idle_request(runner),
                InternalMsg::RunnerStopping { runner } => state.runner_stopping(runner),
                InternalMsg::RetryBoot => state.retry_boot(&myself).await,
                InternalMsg::MetricsTick => {}
            },
        }
        state.refresh_gauges();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A runner's exit never stops the pool (ractor's default would).
        // Supervision events overtake ordinary messages: the exit goes to
        // the back of the queue, behind the `RunnerLost` (and its reason)
        // that a Runner sends before it stops.
        let exited = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                state.runner_of(cell.get_id()).map(|runner| (runner, reason))
            }
            SupervisionEvent::ActorFailed(cell, error) => state
                .runner_of(cell.get_id())
                .map(|runner| (runner, Some(error.to_string()))),
            _ => None,
        };
        if let Some((runner, reason)) = exited {
            let msg: PoolMessage = InternalMsg::RunnerExited { runner, reason }.into();
            if myself.cast(msg).is_err() {
                return Ok(());
            }
        }
        state.refresh_gauges();
        Ok(())
    }

    async fn post_stop(&self, myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        // Waiters learn at once; runners drain their calls, then stop (B24).
        state.stopping();
        let budget = state.config().shutdown_timeout + std::time::Duration::from_secs(2);
        // Not `stop_children_and_wait`: it skips a Runner already stopping
        // on its own (a lost runner whose machine is being reclaimed), and
        // the pool's exit would kill that one mid-way.
        let runners = myself.get_children();
        for runner in &runners {
            runner.stop(Some("pool stopped".into()));
        }
        futures_util::future::join_all(runners.iter().map(|runner| runner.wait(Some(budget)))).await;
        Ok(())
    }
}
