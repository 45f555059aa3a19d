//! Observability: traces, runner logs, metrics and pool events.
//!
//! # Traces
//!
//! Spans (each a `tracing` span; none is built while no subscriber wants it):
//!
//! | span | level | target | fields |
//! |---|---|---|---|
//! | `flame.call` | debug | `ractor_flame::pool` | `function`, `pool`, `runner`, `outcome`, `queue_wait_us`, `remote_us`, `runner_us`, `attempts` |
//! | `flame.checkout` | trace | `ractor_flame::pool` | `pool` (inside `flame.call`) |
//! | `flame.boot` | info | `ractor_flame::runner` | `runner`, `pool`, `backend`, `outcome`, `duration_ms` |
//! | `flame.call` (runner side) | debug | `ractor_flame::terminator` | `function`, `call`, `runner`, `pool` |
//!
//! A call made inside a span of yours is traced end to end: its call frame
//! carries the caller's span, and whatever the runner logs while it serves
//! the call comes back to the parent and is emitted under the caller's
//! `flame.call` span (target `ractor_flame::remote`, fields `runner`,
//! `pool`, `remote_target`, `fields`, `call`). With the `opentelemetry`
//! feature the frame also carries a W3C `traceparent`, and the runner's own
//! `flame.call` span joins the caller's OpenTelemetry trace.
//!
//! # Runner logs
//!
//! [`run_if_runner`](crate::run_if_runner) installs [`RunnerLogs`] on the
//! runner (as the global subscriber, when the program has none yet), so a
//! runner's events at `info` and above travel to the parent, rate-limited
//! and bounded (what is dropped is counted and reported), from its first
//! line: what it logs before it has reached its parent (while its state is
//! built) is kept, 256 events at most, and sent first. The parent holds at
//! most 1,024 records per runner while its own subscriber is behind; what
//! it drops is counted by [`dropped_log_records`] and the
//! `flame_log_records_dropped_total` metric. On the parent,
//! with no subscriber installed at all, runners' warnings, errors, stdout and
//! stderr (a panic message included) are written to stderr, prefixed with the
//! runner id.
//!
//! # Metrics
//!
//! Through the [`metrics`](https://docs.rs/metrics) facade; see
//! [`actors::observe`](crate::actors::observe) for the table of names and
//! labels. Nothing is recorded while no recorder is installed.
//!
//! # Events
//!
//! [`Pool::events`](crate::Pool::events) streams typed [`PoolEvent`]s.

pub use ractor_flame_actors::observe::dropped_log_records;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Histogram};
use ractor_flame_actors::observe::{CALL_DURATION_SECONDS, CALL_RETRIES_TOTAL, CALLS_TOTAL, CHECKOUT_WAIT_SECONDS};
use tokio::sync::broadcast;

use crate::PoolEvent;

/// A subscription to a pool's events: every [`PoolEvent`] from the moment
/// it was made, in order. Get one with [`Pool::events`](crate::Pool::events);
/// any number may follow one pool.
///
/// # Examples
///
/// ```
/// use ractor_flame::{FnError, LocalBackend, Pool, PoolConfig, PoolEvent, Registry, RemoteFn};
///
/// struct Ping;
/// impl RemoteFn for Ping {
///     const NAME: &'static str = "ping";
///     type Args = ();
///     type Output = ();
///     async fn run(_: ()) -> Result<(), FnError> { Ok(()) }
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = Registry::new().register::<Ping>();
/// let pool = Pool::start(PoolConfig::new(1), LocalBackend::new(), &registry).await?;
/// let mut events = pool.events();
/// pool.call::<Ping>(()).await?;
/// assert!(matches!(events.recv().await?, PoolEvent::GrowStart { .. }));
/// assert!(matches!(events.recv().await?, PoolEvent::GrowEnd { result: Ok(()), .. }));
/// # pool.stop().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PoolEvents {
    rx: broadcast::Receiver<PoolEvent>,
}

/// Why [`PoolEvents::recv`] returned no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventsError {
    /// The subscriber fell behind by more than the pool keeps
    /// ([`EVENTS_CAPACITY`](crate::actors::EVENTS_CAPACITY)); the oldest
    /// events were skipped, and the next `recv` returns the oldest kept.
    #[error("missed {missed} pool events")]
    Lagged {
        /// How many events were skipped.
        missed: u64,
    },
    /// The pool has stopped: no more events will come.
    #[error("the pool has stopped")]
    Closed,
}

impl PoolEvents {
    pub(crate) fn new(rx: broadcast::Receiver<PoolEvent>) -> Self {
        PoolEvents { rx }
    }

    /// The next event.
    ///
    /// # Errors
    ///
    /// [`EventsError::Lagged`] when events were missed (the subscription
    /// goes on with the oldest kept), [`EventsError::Closed`] once the pool
    /// has stopped and every event was read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is consumed only when it is returned.
    ///
    /// # Examples
    ///
    /// ```
    /// # use ractor_flame::{LocalBackend, Pool, PoolConfig, Registry, observe::EventsError};
    /// # #[tokio::main] async fn main() -> Result<(), ractor_flame::Error> {
    /// let pool = Pool::start(PoolConfig::new(1), LocalBackend::new(), &Registry::new()).await?;
    /// let mut events = pool.events();
    /// pool.stop().await;
    /// assert_eq!(events.recv().await.unwrap_err(), EventsError::Closed);
    /// # Ok(()) }
    /// ```
    pub async fn recv(&mut self) -> Result<PoolEvent, EventsError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(missed) => EventsError::Lagged { missed },
            broadcast::error::RecvError::Closed => EventsError::Closed,
        })
    }

    /// The events as a [`Stream`](futures_util::Stream) of results, ending
    /// when the pool stops.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt as _;
    /// # use ractor_flame::{LocalBackend, Pool, PoolConfig, Registry};
    /// # #[tokio::main] async fn main() -> Result<(), ractor_flame::Error> {
    /// let pool = Pool::start(PoolConfig::new(1), LocalBackend::new(), &Registry::new()).await?;
    /// let events = pool.events().into_stream();
    /// pool.stop().await;
    /// assert_eq!(events.count().await, 0);
    /// # Ok(()) }
    /// ```
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<PoolEvent, EventsError>> + Send + Unpin {
        Box::pin(futures_util::stream::unfold(self, |mut events| async move {
            match events.recv().await {
                Err(EventsError::Closed) => None,
                next => Some((next, events)),
            }
        }))
    }
}

/// Whether metrics are recorded: a recorder is installed.
pub(crate) fn metered() -> bool {
    ractor_flame_actors::observe::recorder_installed()
}

/// A pool's per-call metrics handles, registered on first use (only while a
/// recorder is installed) and found again without touching the recorder.
pub(crate) struct CallMetrics {
    pool: Arc<str>,
    checkout_wait: OnceLock<Histogram>,
    /// Per function: an append-only list, read without a lock.
    functions: OnceLock<Box<FnMetrics>>,
}

struct FnMetrics {
    name: &'static str,
    duration: Histogram,
    ok: Counter,
    next: OnceLock<Box<FnMetrics>>,
}

impl std::fmt::Debug for CallMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallMetrics")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl CallMetrics {
    pub(crate) fn new(pool: &str) -> Self {
        CallMetrics {
            pool: pool.into(),
            checkout_wait: OnceLock::new(),
            functions: OnceLock::new(),
        }
    }

    pub(crate) fn checkout_wait(&self, waited: Duration) {
        self.checkout_wait
            .get_or_init(|| metrics::histogram!(CHECKOUT_WAIT_SECONDS, "pool" => self.pool.to_string()))
            .record(waited.as_secs_f64());
    }

    /// Counts a call's outcome and records its duration.
    pub(crate) fn call(&self, function: &'static str, outcome: &'static str, took: Duration) {
        let f = self.function(function);
        f.duration.record(took.as_secs_f64());
        if outcome == "ok" {
            f.ok.increment(1);
        } else {
            // Failures are rare: their counters are looked up by key.
            metrics::counter!(CALLS_TOTAL, "pool" => self.pool.to_string(), "function" => function, "outcome" => outcome)
                .increment(1);
        }
    }

    /// Counts one more attempt of a call opted into retries, and why.
    pub(crate) fn retry(&self, function: &'static str, cause: &'static str) {
        metrics::counter!(CALL_RETRIES_TOTAL, "pool" => self.pool.to_string(), "function" => function, "cause" => cause)
            .increment(1);
    }

    fn function(&self, name: &'static str) -> &FnMetrics {
        let mut slot = &self.functions;
        loop {
            let node = slot.get_or_init(|| Box::new(self.register(name)));
            if node.name == name {
                return node;
            }
            slot = &node.next;
        }
    }

    fn register(&self, name: &'static str) -> FnMetrics {
        let pool = self.pool.to_string();
        FnMetrics {
            name,
            duration: metrics::histogram!(CALL_DURATION_SECONDS, "pool" => pool.clone(), "function" => name),
            ok: metrics::counter!(CALLS_TOTAL, "pool" => pool, "function" => name, "outcome" => "ok"),
            next: OnceLock::new(),
        }
    }
}

/// The runner-side `tracing` layer: forwards this runner's events at `info`
/// and above to its parent (rate-limited and bounded; drops are counted).
/// [`run_if_runner`](crate::run_if_runner) installs it by itself when the
/// program has no global subscriber yet; a runner that installs its own
/// subscriber first adds it there.
///
/// Outside a runner connected to its parent it does nothing.
///
/// # Examples
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt as _;
///
/// let subscriber = tracing_subscriber::registry().with(ractor_flame::observe::RunnerLogs::new());
/// # drop(subscriber);
/// ```
#[derive(Debug, Clone, Default)]
pub struct RunnerLogs {
    _private: (),
}

impl RunnerLogs {
    /// The layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RunnerLogs {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().level() <= &tracing::Level::INFO {
            ractor_flame_actors::observe::forward_event(event);
        }
    }
}

/// Installs [`RunnerLogs`] as the global subscriber unless the program set
/// one already.
pub(crate) fn install_runner_logs() {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    // Alone, it wants nothing below `info`: debug and trace callsites stay
    // disabled, at no cost.
    let layer = RunnerLogs::new().with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let subscriber = tracing_subscriber::registry().with(layer);
    // Fails when a subscriber is set already: the program chose its own.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Whether nothing would see a `tracing` event emitted here (no subscriber
/// for this thread).
pub(crate) fn unobserved() -> bool {
    tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>())
}
