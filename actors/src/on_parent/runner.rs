//! The Runner: the parent's actor for one runner. It holds the backend's
//! state and invokes the backend's callbacks from its handlers.
//!
//! Lifecycle: `init` in `post_start`; `Boot` (handled once) runs `remote_boot`
//! and arms the boot timer for what is left of the boot timeout, counted
//! from the Runner's start; [`RunnerMessage::RemoteUp`] (the runner proved its
//! token) tells the pool the runner serves; [`RunnerMessage::RemoteShutdown`]
//! carries the runner's wish to stop; on stop it drains the runner and calls
//! the backend's `terminate`. The Runner is never on a call's data path.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::Instrument as _;

use crate::error::{BackendError, DownReason};
use crate::ids::RunnerId;
use crate::on_parent::backend::{Backend, RunnerContext};
use crate::on_parent::link::RunnerConn;
use crate::on_parent::pool::{InternalMsg, PoolMessage};
use crate::wire::frame::ToRunner;

/// Extra time, beyond the drain budget, a stopping Runner waits for its
/// runner to close the connection.
const STOP_GRACE: Duration = Duration::from_millis(500);
/// How often a live runner's time is added to the runner-time metric.
const BILL_EVERY: Duration = Duration::from_secs(10);

/// Why a runner wants to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteShutdownReason {
    /// Idle for long enough: asks the pool's permission.
    Idle,
    /// Stopping on its own (SIGTERM, failsafe); the pool stops sending work.
    Stopping(String),
}

/// Messages of the Runner actor.
#[non_exhaustive]
pub enum RunnerMessage {
    /// Boot the runner (from the pool). A second `Boot` is refused.
    Boot,
    /// The runner connected and proved its token.
    RemoteUp(RunnerConn),
    /// The runner wants to stop.
    RemoteShutdown {
        /// Why.
        reason: RemoteShutdownReason,
    },
    /// The connection to the runner is gone.
    ConnectionLost(DownReason),
    /// The runner proved its token but the endpoint refused it (another
    /// build, another protocol): the boot fails with this reason.
    Refused(String),
    /// The boot timer fired.
    BootTimeout,
    /// The backend's grace after a connection loss ended without a better
    /// explanation.
    LostConfirmed(DownReason),
    /// Adds the runner's time so far to the runner-time metric (every 10 s,
    /// while a metrics recorder is installed).
    Bill,
    /// A backend-specific message, passed to `Backend::handle_info`.
    Info(Box<dyn Any + Send>),
}

impl fmt::Debug for RunnerMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunnerMessage::Boot => f.write_str("Boot"),
            RunnerMessage::RemoteUp(c) => f.debug_tuple("RemoteUp").field(c).finish(),
            RunnerMessage::RemoteShutdown { reason } => {
                f.debug_struct("RemoteShutdown").field("reason", reason).finish()
            }
            RunnerMessage::ConnectionLost(r) => f.debug_tuple("ConnectionLost").field(r).finish(),
            RunnerMessage::Refused(r) => f.debug_tuple("Refused").field(r).finish(),
            RunnerMessage::BootTimeout => f.write_str("BootTimeout"),
            RunnerMessage::LostConfirmed(r) => f.debug_tuple("LostConfirmed").field(r).finish(),
            RunnerMessage::Info(_) => f.write_str("Info(..)"),
            RunnerMessage::Bill => f.write_str("Bill"),
        }
    }
}

/// The Runner actor, generic over its backend.
pub struct Runner<B> {
    backend: Arc<B>,
}

impl<B> fmt::Debug for Runner<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Runner")
    }
}

impl<B: Backend> Runner<B> {
    /// A Runner using `backend`.
    pub fn new(backend: Arc<B>) -> Self {
        Runner { backend }
    }
}

/// Arguments of the Runner.
pub struct RunnerArguments {
    /// Its pool.
    pub pool: ActorRef<PoolMessage>,
    /// The boot context, without the Runner's own reference (filled in at
    /// start).
    pub context: Box<dyn FnOnce(ActorRef<RunnerMessage>) -> RunnerContext + Send>,
}

impl fmt::Debug for RunnerArguments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RunnerArguments")
    }
}

/// State of the Runner.
pub struct RunnerState<S> {
    ctx: RunnerContext,
    pool: ActorRef<PoolMessage>,
    backend: Option<Result<S, BackendError>>,
    boot_requested: bool,
    /// The boot's budget: the pool's boot timeout, or the backend's own
    /// when that is shorter.
    boot_timeout: Duration,
    /// When the boot must be over: the Runner's start plus the boot
    /// timeout. The backend's `init`, its `remote_boot` and the runner's
    /// connect-back all fall within it.
    boot_deadline: tokio::time::Instant,
    conn: Option<RunnerConn>,
    /// A connection loss waiting for the backend's explanation.
    lost_pending: Option<DownReason>,
    /// The `flame.boot` span, from `Boot` until the runner serves or the
    /// boot fails, and when the boot started.
    boot_span: Option<(tracing::Span, std::time::Instant)>,
    /// The runner time counted so far ends here; what follows is the
    /// current phase's (booting until `conn` is set, then serving).
    billed_to: std::time::Instant,
    backend_name: &'static str,
    /// The timer that bills every 10 s, when metrics are recorded.
    biller: Option<tokio::task::JoinHandle<()>>,
    _marker: PhantomData<S>,
}

impl<S> fmt::Debug for RunnerState<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerState")
            .field("runner", &self.ctx.runner_id)
            .field("up", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl<S> RunnerState<S> {
    fn id(&self) -> RunnerId {
        self.ctx.runner_id
    }

    /// Adds the time since the last bill to the current phase's count
    /// (whole milliseconds; the rest waits for the next bill).
    fn bill(&mut self) {
        let elapsed = self.billed_to.elapsed();
        let ms = elapsed.as_millis() as u64;
        self.billed_to += Duration::from_millis(ms);
        let phase = if self.conn.is_some() { "serving" } else { "booting" };
        crate::observe::metrics::runner_time(&self.ctx.pool, self.backend_name, phase, ms);
    }

    /// Closes the `flame.boot` span with its outcome and duration.
    fn end_boot_span(&mut self, outcome: &str) {
        if let Some((span, started)) = self.boot_span.take() {
            span.record("outcome", outcome);
            span.record("duration_ms", started.elapsed().as_secs_f64() * 1e3);
        }
    }

    /// The error of a boot whose `step` outlived the boot timeout.
    fn boot_timed_out(&self, step: &str) -> BackendError {
        BackendError::new(format!(
            "boot timeout: {step} did not finish within {:?}",
            self.boot_timeout
        ))
    }

    fn fail_boot(&mut self, myself: &ActorRef<RunnerMessage>, reason: String) {
        self.end_boot_span("failed");
        tracing::warn!(target: "ractor_flame::runner", runner = %self.id(), %reason, "boot failed");
        // The pool reads the reason from the supervision event: it outranks
        // ordinary messages, so a separate message could arrive after it.
        myself.stop(Some(reason));
    }
}

/// A Runner actor that is killed never runs `post_stop` (no drain, no
/// `terminate`); its state is still dropped. The backend's state reclaims
/// the machine on drop (the shipped backends do), and the runner is told to
/// stop here, so it never serves a parent that forgot it.
impl<S> Drop for RunnerState<S> {
    fn drop(&mut self) {
        // The last of its time, however it ended.
        self.bill();
        if let Some(biller) = self.biller.take() {
            biller.abort();
        }
        if let Some(conn) = &self.conn
            && conn.down_reason().is_none()
        {
            conn.control(ToRunner::Shutdown);
            conn.close(DownReason::Stopped);
        }
    }
}

impl<B: Backend> Actor for Runner<B> {
    type Msg = RunnerMessage;
    type State = RunnerState<B::State>;
    type Arguments = RunnerArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Runner time is billed every 10 s, by a timer only where a
        // metrics recorder keeps it.
        let biller =
            crate::observe::recorder_installed().then(|| myself.send_interval(BILL_EVERY, || RunnerMessage::Bill));
        let mut ctx = (args.context)(myself);
        let boot_timeout = self
            .backend
            .boot_limit()
            .map_or(ctx.boot_timeout, |own| own.min(ctx.boot_timeout));
        // One instant for the Runner and the backend: a backend that ends
        // its own steps by it reports why, before the Runner cuts it off.
        let boot_deadline = std::time::Instant::now() + boot_timeout;
        ctx.boot_deadline = boot_deadline;
        Ok(RunnerState {
            boot_timeout,
            boot_deadline: tokio::time::Instant::from_std(boot_deadline),
            ctx,
            pool: args.pool,
            backend: None,
            boot_requested: false,
            conn: None,
            lost_pending: None,
            boot_span: None,
            billed_to: std::time::Instant::now(),
            backend_name: self.backend.name(),
            biller,
            _marker: PhantomData,
        })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // In the Runner's own task: a slow init never blocks the pool, and
        // one that hangs ends with the boot's budget.
        let init = tokio::time::timeout_at(state.boot_deadline, self.backend.init(&state.ctx)).await;
        state.backend = Some(init.unwrap_or_else(|_| Err(state.boot_timed_out("the backend's init"))));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RunnerMessage::Boot => {
                if std::mem::replace(&mut state.boot_requested, true) {
                    tracing::warn!(target: "ractor_flame::runner", runner = %state.id(), "second boot refused");
                    return Ok(());
                }
                let span = tracing::info_span!(target: "ractor_flame::runner", "flame.boot",
                    runner = %state.id(), pool = %state.ctx.pool, backend = self.backend.name(),
                    outcome = tracing::field::Empty, duration_ms = tracing::field::Empty);
                if !span.is_disabled() {
                    state.boot_span = Some((span.clone(), std::time::Instant::now()));
                }
                let result = match state.backend.as_mut() {
                    Some(Ok(backend_state)) => {
                        let boot = self.backend.remote_boot(backend_state, &state.ctx).instrument(span);
                        match tokio::time::timeout_at(state.boot_deadline, boot).await {
                            Ok(result) => result,
                            Err(_) => Err(state.boot_timed_out("the backend's boot")),
                        }
                    }
                    Some(Err(e)) => Err(BackendError::new(format!("init: {e}"))),
                    None => Err(BackendError::new("init did not run")),
                };
                match result {
                    Ok(()) => {
                        let left = state
                            .boot_deadline
                            .saturating_duration_since(tokio::time::Instant::now());
                        myself.send_after(left, || RunnerMessage::BootTimeout);
                    }
                    Err(e) => state.fail_boot(&myself, e.0),
                }
            }
            RunnerMessage::RemoteUp(conn) => {
                if state.conn.is_some() {
                    return Ok(());
                }
                tracing::debug!(target: "ractor_flame::runner", runner = %state.id(), "remote up");
                conn.set_observer(&state.ctx.pool);
                state.end_boot_span("ok");
                // The boot's time ends here; serving begins.
                state.bill();
                state.conn = Some(conn.clone());
                let _ = state.pool.cast(
                    InternalMsg::RunnerUp {
                        runner: state.id(),
                        conn,
                    }
                    .into(),
                );
            }
            RunnerMessage::BootTimeout => {
                if state.conn.is_none() {
                    let reason = format!("no connection within the boot timeout of {:?}", state.boot_timeout);
                    state.fail_boot(&myself, reason);
                }
            }
            RunnerMessage::RemoteShutdown { reason } => {
                let runner = state.id();
                let msg = match reason {
                    RemoteShutdownReason::Idle => InternalMsg::IdleRequest { runner },
                    RemoteShutdownReason::Stopping(_) => InternalMsg::RunnerStopping { runner },
                };
                let _ = state.pool.cast(msg.into());
            }
            RunnerMessage::ConnectionLost(reason) => self.connection_lost(&myself, state, reason),
            RunnerMessage::Refused(reason) => {
                if state.conn.is_none() {
                    state.fail_boot(&myself, format!("runner refused at the handshake: {reason}"));
                }
            }
            RunnerMessage::LostConfirmed(reason) => self.lost(&myself, state, reason),
            RunnerMessage::Bill => state.bill(),
            RunnerMessage::Info(info) => {
                if let Some(Ok(backend_state)) = state.backend.as_mut()
                    && let Some(reason) = self.backend.handle_info(backend_state, info).await
                {
                    self.lost(&myself, state, reason);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        _event: SupervisionEvent,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // An in-process Terminator is linked to its Runner; its end arrives
        // as `ConnectionLost` with a reason. (ractor's default would stop
        // the Runner here, reasonless, before it could drain.)
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        if let Some(conn) = &state.conn
            && conn.down_reason().is_none()
        {
            // Drain: the runner finishes its calls, then closes (B24, B30).
            conn.control(ToRunner::Shutdown);
            let budget = state.ctx.settings.shutdown_timeout + STOP_GRACE;
            let _ = tokio::time::timeout(budget, conn.closed()).await;
            conn.close(DownReason::Stopped);
        }
        if let Some(Ok(backend_state)) = state.backend.as_mut() {
            self.backend.terminate(backend_state).await;
        }
        Ok(())
    }
}

impl<B: Backend> Runner<B> {
    /// The connection closed: the runner is lost now, or after the
    /// backend's grace period if the backend may still explain why (an
    /// engine event carrying the exit code).
    fn connection_lost(&self, myself: &ActorRef<RunnerMessage>, state: &mut RunnerState<B::State>, reason: DownReason) {
        let grace = self.backend.down_grace();
        if grace.is_zero() || state.conn.is_none() {
            return self.lost(myself, state, reason);
        }
        if state.lost_pending.replace(reason.clone()).is_none() {
            myself.send_after(grace, move || RunnerMessage::LostConfirmed(reason));
        }
    }

    fn lost(&self, myself: &ActorRef<RunnerMessage>, state: &mut RunnerState<B::State>, reason: DownReason) {
        tracing::debug!(target: "ractor_flame::runner", runner = %state.id(), %reason, "runner down");
        if let Some(conn) = &state.conn {
            // A runner given up may still be running (its engine lost, not
            // the runner): it is told to stop, and closing the connection
            // ends its link, so it never serves a parent that forgot it (B46).
            if conn.down_reason().is_none() {
                conn.control(ToRunner::Shutdown);
            }
            conn.close(reason.clone());
        }
        let lost = InternalMsg::RunnerLost {
            runner: state.id(),
            reason: reason.to_string(),
            kind: crate::observe::down_label(&reason),
        };
        let _ = state.pool.cast(lost.into());
        myself.stop(Some(reason.to_string()));
    }
}
