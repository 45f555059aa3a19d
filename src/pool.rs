//! The pool handle: start a pool, call and cast on it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorRef, ActorStatus, rpc::CallResult};
use ractor_flame_actors::wire::PLACE;
use ractor_flame_actors::{
    Args, Backend, CallRequest, Error, Gate, Lease, PoolArguments, PoolConfig, PoolMessage, PoolStats, Registry,
    RemoteActor, RemoteFn, RemoteStream, Resize, StreamRequest, outcome_into_result,
};
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::call::CallOptions;
use crate::child::Child;
use crate::observe::{CallMetrics, PoolEvents};
use crate::retry::RetryPolicy;
use crate::stream::{ItemStream, StreamOptions};

/// A handle to a running pool. Cheap to clone; every clone talks to the same
/// Pool actor.
///
/// Dropping handles does not stop the pool: stop it with [`Pool::stop`], or
/// stop the supervisor it was spawned under.
///
/// # Examples
///
/// ```
/// use ractor_flame::{FnError, LocalBackend, Pool, PoolConfig, Registry, RemoteFn};
///
/// struct Double;
/// impl RemoteFn for Double {
///     const NAME: &'static str = "double";
///     type Args = u32;
///     type Output = u32;
///     async fn run(n: u32) -> Result<u32, FnError> { Ok(n * 2) }
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), ractor_flame::Error> {
/// let registry = Registry::new().register::<Double>();
/// let pool = Pool::start(PoolConfig::new(2), LocalBackend::new(), &registry).await?;
/// assert_eq!(pool.call::<Double>(21).await?, 42);
/// pool.stop().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Pool {
    actor: ActorRef<PoolMessage>,
    settings: Arc<Settings>,
    /// The checkout fast path, shared with the Pool actor.
    gate: Arc<Gate>,
}

/// What the call path needs from the configuration, read once at start.
#[derive(Debug)]
struct Settings {
    name: String,
    timeout: Duration,
    boot_timeout: Duration,
    /// The bound of casts on their way to one placed child.
    child_cast_bytes: usize,
    /// Subscriptions to the pool's events are made from this one (it does
    /// not keep the channel open: that is the pool actor's sender).
    events: std::sync::Mutex<tokio::sync::broadcast::Receiver<ractor_flame_actors::PoolEvent>>,
    metrics: Arc<CallMetrics>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.settings.name)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Starts a pool on its own (not under a supervisor). `min` runners boot
    /// in the background; this returns once the Pool actor runs.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for invalid options, [`Error::PoolNotRunning`] when
    /// the actor could not start.
    pub async fn start<B: Backend>(config: PoolConfig, backend: B, registry: &Registry) -> Result<Pool, Error> {
        Self::spawn(config, backend, registry, None).await
    }

    /// Starts a pool as a child of `supervisor` (an actor of your ractor
    /// application). Stopping the supervisor stops the pool and every runner
    /// (stop the pool first, or call `stop_children_and_wait` in your
    /// supervisor's `post_stop`, to let calls in flight drain).
    ///
    /// # Errors
    ///
    /// As [`Pool::start`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor::{Actor, ActorProcessingErr, ActorRef};
    /// use ractor_flame::{LocalBackend, Pool, PoolConfig, Registry};
    ///
    /// struct App;
    /// impl Actor for App {
    ///     type Msg = ();
    ///     type State = ();
    ///     type Arguments = ();
    ///     async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> { Ok(()) }
    /// }
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (app, handle) = Actor::spawn(None, App, ()).await?;
    /// let pool = Pool::spawn_linked(PoolConfig::new(2), LocalBackend::new(), &Registry::new(), app.get_cell()).await?;
    /// assert_eq!(pool.stats().await?.runners, 0);
    /// app.stop(None);
    /// handle.await?;
    /// # Ok(()) }
    /// ```
    pub async fn spawn_linked<B: Backend>(
        config: PoolConfig,
        backend: B,
        registry: &Registry,
        supervisor: ActorCell,
    ) -> Result<Pool, Error> {
        Self::spawn(config, backend, registry, Some(supervisor)).await
    }

    async fn spawn<B: Backend>(
        config: PoolConfig,
        backend: B,
        registry: &Registry,
        supervisor: Option<ActorCell>,
    ) -> Result<Pool, Error> {
        config.validate_for(registry)?;
        let name = config.get_name().to_owned();
        let (timeout, boot_timeout) = (config.get_timeout(), config.get_boot_timeout());
        let child_cast_bytes = config.get_child_cast_bytes();
        let args = PoolArguments::new(config, backend, registry.clone(), crate::entry::is_runner());
        let settings = Arc::new(Settings {
            metrics: Arc::new(CallMetrics::new(&name)),
            name,
            timeout,
            boot_timeout,
            child_cast_bytes,
            events: std::sync::Mutex::new(args.events.subscribe()),
        });
        let gate = Arc::clone(&args.gate);
        let actor = ractor_flame_actors::Pool::<B>::default();
        let spawned = match supervisor {
            Some(sup) => Actor::spawn_linked(None, actor, args, sup).await,
            None => Actor::spawn(None, actor, args).await,
        };
        let (actor, _) = spawned.map_err(|e| {
            tracing::error!(target: "ractor_flame::pool", error = %e, "pool did not start");
            Error::PoolNotRunning
        })?;
        Ok(Pool { actor, settings, gate })
    }

    /// Runs `F` on a runner with the pool's default budgets: a slot within
    /// `boot_timeout`, execution within `timeout`.
    ///
    /// # Errors
    ///
    /// Any [`Error`]: checkout timeout, deadline, the function's own error,
    /// a panic, runner down, boot failure, pool not running, queue full,
    /// unknown function, codec.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future gives up the queue place or the slot at once and
    /// cancels the remote task.
    pub async fn call<F: RemoteFn>(&self, args: F::Args) -> Result<F::Output, Error> {
        self.call_with::<F>(args, CallOptions::default()).await
    }

    /// Runs `F` on a runner with per-call options.
    ///
    /// An explicit timeout is a total budget: checkout uses part of it and
    /// what remains is the execution deadline sent to the runner.
    ///
    /// # Errors
    ///
    /// As [`Pool::call`].
    ///
    /// # Cancel safety
    ///
    /// A linked call (the default) is cancelled on the runner when the future
    /// is dropped, and its slot returns at once. An unlinked call keeps
    /// running to completion and holds its slot until then.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ractor_flame::{CallOptions, Error, FnError, LocalBackend, Pool, PoolConfig, Registry, RemoteFn};
    ///
    /// struct Nap;
    /// impl RemoteFn for Nap {
    ///     const NAME: &'static str = "nap";
    ///     type Args = u64;
    ///     type Output = ();
    ///     async fn run(ms: u64) -> Result<(), FnError> {
    ///         tokio::time::sleep(Duration::from_millis(ms)).await;
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Error> {
    /// let registry = Registry::new().register::<Nap>();
    /// let pool = Pool::start(PoolConfig::new(1), LocalBackend::new(), &registry).await?;
    /// let opts = CallOptions::new().timeout(Duration::from_millis(50));
    /// let err = pool.call_with::<Nap>(5_000, opts).await.unwrap_err();
    /// assert!(matches!(err, Error::Deadline { .. }));
    /// # pool.stop().await;
    /// # Ok(()) }
    /// ```
    pub async fn call_with<F: RemoteFn>(&self, args: F::Args, opts: CallOptions) -> Result<F::Output, Error> {
        let span = tracing::debug_span!(target: "ractor_flame::pool", "flame.call",
            function = F::NAME, pool = %self.settings.name,
            runner = Empty, outcome = Empty, queue_wait_us = Empty, remote_us = Empty, runner_us = Empty,
            attempts = Empty);
        let metered = crate::observe::metered();
        if span.is_disabled() && !metered {
            // Nobody looks: the call as it would be without observability,
            // the clock read only for the caller's own timeout.
            // One future less to nest: the attempt is awaited right here.
            let started = opts.timeout.map(|_| Instant::now());
            let args = encode(args)?;
            return match opts.retry {
                None => self.attempt::<F>(args, opts, started, None, None).await,
                Some(policy) => Box::pin(self.call_retried::<F>(args, opts, policy, started, None)).await,
            };
        }
        let started = Instant::now();
        let watch = Watch { span: &span, metered };
        // Boxed: an observed call's future (its span, its timings) stays
        // out of every unobserved call's, which is moved on the hot path.
        let result = Box::pin(
            self.call_observed::<F>(args, opts, Some(started), Some(&watch))
                .instrument(span.clone()),
        )
        .await;
        let outcome = ractor_flame_actors::observe::outcome_label(result.as_ref());
        span.record("outcome", outcome);
        if metered {
            self.settings.metrics.call(F::NAME, outcome, started.elapsed());
        }
        result
    }

    /// The call; `started` is when it was made (read when a timeout or an
    /// observer needs it), `watch` tells where to report its queue wait and
    /// remote time, when anyone looks.
    async fn call_observed<F: RemoteFn>(
        &self,
        args: F::Args,
        opts: CallOptions,
        started: Option<Instant>,
        watch: Option<&Watch<'_>>,
    ) -> Result<F::Output, Error> {
        let args = encode(args)?;
        match opts.retry {
            None => self.attempt::<F>(args, opts, started, watch, None).await,
            // Boxed: the retry loop's state stays out of every other call's
            // future, which is moved and polled on the hot path.
            Some(policy) => Box::pin(self.call_retried::<F>(args, opts, policy, started, watch)).await,
        }
    }

    /// A call opted into retries: attempts while they fail with
    /// `RunnerDown` or `BootFailed` and the policy (and the call's own
    /// timeout) leaves attempts and time, all under one idempotency key.
    async fn call_retried<F: RemoteFn>(
        &self,
        args: Args,
        opts: CallOptions,
        policy: RetryPolicy,
        started: Option<Instant>,
        watch: Option<&Watch<'_>>,
    ) -> Result<F::Output, Error> {
        let first = started.unwrap_or_else(Instant::now);
        let budget_ends = first + policy.get_budget();
        let timeout_ends = opts.timeout.map(|total| first + total);
        let key: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        let mut attempt = 1;
        loop {
            // Each attempt gets what the call's own timeout leaves.
            let mut this = opts;
            this.timeout = timeout_ends.map(|end| end.saturating_duration_since(Instant::now()));
            let result = self
                .attempt::<F>(args.clone(), this, Some(Instant::now()), watch, Some(Arc::clone(&key)))
                .await;
            if let Some(watch) = watch {
                watch.span.record("attempts", attempt);
            }
            // Only a lost runner or a failed boot is worth another attempt.
            let (cause, error) = match &result {
                Err(error @ Error::RunnerDown { .. }) => ("runner_down", error),
                Err(error @ Error::BootFailed { .. }) => ("boot_failed", error),
                _ => return result,
            };
            if attempt >= policy.get_max_attempts() {
                return result;
            }
            let wait = RetryPolicy::jittered(policy.backoff_after(attempt));
            let resume = Instant::now() + wait;
            if resume >= budget_ends || timeout_ends.is_some_and(|end| resume >= end) {
                return result;
            }
            tracing::warn!(target: "ractor_flame::pool", pool = %self.settings.name, function = F::NAME,
                attempt, cause, %error, ?wait, "call failed, retrying");
            self.settings.metrics.retry(F::NAME, cause);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One attempt of a call with encoded `args`; `key` is its idempotency
    /// key when it may be retried.
    async fn attempt<F: RemoteFn>(
        &self,
        args: Args,
        opts: CallOptions,
        started: Option<Instant>,
        watch: Option<&Watch<'_>>,
        key: Option<Arc<str>>,
    ) -> Result<F::Output, Error> {
        // Only what the attempt uses stays in its future.
        let CallOptions {
            timeout,
            link,
            key: route,
            ..
        } = opts;
        let since_started = || started.map_or(Duration::ZERO, |at| at.elapsed());
        let checkout_budget = timeout.unwrap_or(self.settings.boot_timeout);
        let lease = match (watch, route) {
            // Unkeyed calls checkout as they always did, with no layer between.
            (None, None) => self.checkout(checkout_budget).await?,
            (None, Some(route)) => self.checkout_keyed(checkout_budget, route.get()).await?,
            (Some(watch), route) => {
                let checkout =
                    tracing::trace_span!(target: "ractor_flame::pool", "flame.checkout", pool = %self.settings.name);
                // Boxed: a watched checkout's span stays out of the future
                // of every call.
                let lease = match route {
                    None => Box::pin(self.checkout(checkout_budget).instrument(checkout)).await?,
                    Some(route) => {
                        Box::pin(self.checkout_keyed(checkout_budget, route.get()).instrument(checkout)).await?
                    }
                };
                let waited = since_started();
                watch.span.record("runner", tracing::field::display(lease.runner()));
                watch.span.record("queue_wait_us", waited.as_micros() as u64);
                if watch.metered {
                    self.settings.metrics.checkout_wait(waited);
                }
                lease
            }
        };
        let exec_budget = match timeout {
            Some(total) => execution_budget(total, since_started())?,
            None => self.settings.timeout,
        };
        let sent = watch.map(|_| Instant::now());
        let bytes = if link {
            run(lease, F::NAME, args, exec_budget, true, key).await
        } else {
            // Unlinked: the call lives in its own task holding the lease, so
            // dropping this future neither cancels it nor frees its slot early.
            let task = tokio::spawn(run(lease, F::NAME, args, exec_budget, false, key).in_current_span());
            task.await.map_err(|e| Error::Cancelled(e.to_string()))?
        };
        if let (Some(watch), Some(sent)) = (watch, sent) {
            watch.span.record("remote_us", sent.elapsed().as_micros() as u64);
        }
        bytes?
            .decode()
            .map_err(|e| Error::Codec(format!("output of `{}`: {e}", F::NAME)))
    }

    /// Every [`PoolEvent`](crate::PoolEvent) of this pool from now on (grow, boot failures,
    /// lost runners, shrink, a full queue), for as many subscribers as you
    /// like. A subscriber that falls behind by more than
    /// [`EVENTS_CAPACITY`](crate::actors::EVENTS_CAPACITY) events learns how
    /// many it missed. The hooks of [`PoolConfig`] see the same events.
    ///
    /// Events are sent by the pool actor once its state has changed, so
    /// [`Pool::stats`] called after an event already counts it.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::{LocalBackend, Pool, PoolConfig, PoolEvent, Registry};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = Pool::start(PoolConfig::new(2), LocalBackend::new(), &Registry::new()).await?;
    /// let mut events = pool.events();
    /// tokio::spawn(async move {
    ///     while let Ok(event) = events.recv().await {
    ///         if let PoolEvent::RunnerLost { runner, reason, .. } = event {
    ///             eprintln!("runner {runner} lost: {reason}");
    ///         }
    ///     }
    /// });
    /// # pool.stop().await;
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> PoolEvents {
        PoolEvents::new(self.settings.events.lock().expect("poisoned").resubscribe())
    }

    /// Runs `F` on a runner without waiting for it: returns at once; the work
    /// checks out a slot (waiting up to `boot_timeout`), runs with no deadline,
    /// holds its slot while it runs, and sends no result back. Failures
    /// are logged at `warn`.
    ///
    /// When a runner on another host or process has a free slot and nobody
    /// waits for one, the cast's frame is on its way before `cast` returns
    /// (no task is spawned for it); otherwise a task waits for the slot.
    ///
    /// # Errors
    ///
    /// [`Error::PoolNotRunning`] at once for a stopped pool;
    /// [`Error::Codec`] when the arguments do not encode.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::{FnError, LocalBackend, Pool, PoolConfig, Registry, RemoteFn};
    ///
    /// struct Log;
    /// impl RemoteFn for Log {
    ///     const NAME: &'static str = "log";
    ///     type Args = String;
    ///     type Output = ();
    ///     async fn run(line: String) -> Result<(), FnError> { println!("{line}"); Ok(()) }
    /// }
    ///
    /// # #[tokio::main] async fn main() -> Result<(), ractor_flame::Error> {
    /// let registry = Registry::new().register::<Log>();
    /// let pool = Pool::start(PoolConfig::new(1), LocalBackend::new(), &registry).await?;
    /// pool.cast::<Log>("hello".to_owned())?;
    /// # pool.stop().await;
    /// # Ok(()) }
    /// ```
    pub fn cast<F: RemoteFn>(&self, args: F::Args) -> Result<(), Error> {
        if !self.is_running() {
            return Err(Error::PoolNotRunning);
        }
        let mut args = encode(args)?;
        // A free slot on a remote runner: the frame goes out from here, no
        // task needed. The slot is checked in when the runner reports the end.
        let mut claimed = None;
        if let Some(lease) = self.gate.try_checkout(&self.actor) {
            match lease.cast(F::NAME, args) {
                Ok(()) => return Ok(()),
                Err((back, lease)) => {
                    args = back;
                    claimed = Some(lease);
                }
            }
        }
        let pool = self.clone();
        tokio::spawn(async move {
            let result = async {
                let lease = match claimed {
                    Some(lease) => lease,
                    None => pool.checkout(pool.settings.boot_timeout).await?,
                };
                let req = CallRequest {
                    function: F::NAME,
                    args,
                    deadline: None,
                    linked: false,
                    want_result: false,
                    idempotency_key: None,
                };
                let outcome = lease.call(req).await?;
                outcome_into_result(outcome, F::NAME, Duration::MAX).map(drop)
            }
            .await;
            if let Err(error) = result {
                tracing::warn!(target: "ractor_flame::pool", pool = %pool.settings.name, function = F::NAME, %error, "cast failed");
            }
        });
        Ok(())
    }

    /// Runs the streaming function `S` on a runner: its items come as they
    /// are sent, as a [`Stream`](futures_util::Stream) of `Result<S::Item,
    /// Error>`, within the pool's `timeout` for the whole stream and a
    /// window of [`StreamOptions::DEFAULT_WINDOW`] items. Nothing happens
    /// until the stream is first polled.
    ///
    /// The body pauses while the consumer is a window behind, so a slow
    /// consumer holds neither side's memory. Streams are never retried:
    /// their items may already have been used.
    ///
    /// # Errors
    ///
    /// As items of the stream, after the items sent before them: the errors
    /// of [`Pool::call`]; [`Error::Deadline`] when the whole stream (or the
    /// wait for one item, see [`StreamOptions::item_timeout`]) took too long.
    ///
    /// # Cancel safety
    ///
    /// Dropping the stream cancels the work on the runner; its slot returns
    /// when the body has stopped.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::{FnError, LocalBackend, Pool, PoolConfig, Registry, RemoteStream, StreamSender};
    ///
    /// struct Lines;
    /// impl RemoteStream for Lines {
    ///     const NAME: &'static str = "lines";
    ///     type Args = String;
    ///     type Item = String;
    ///     async fn run(text: String, items: StreamSender<String>) -> Result<(), FnError> {
    ///         for line in text.lines() {
    ///             items.send(line.to_uppercase()).await?;
    ///         }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main] async fn main() -> Result<(), ractor_flame::Error> {
    /// let registry = Registry::new().register_stream::<Lines>();
    /// let pool = Pool::start(PoolConfig::new(1), LocalBackend::new(), &registry).await?;
    /// let mut lines = pool.stream::<Lines>("a\nb".to_owned());
    /// assert_eq!(lines.next().await.transpose()?, Some("A".to_owned()));
    /// assert_eq!(lines.next().await.transpose()?, Some("B".to_owned()));
    /// assert_eq!(lines.next().await.transpose()?, None);
    /// # pool.stop().await;
    /// # Ok(()) }
    /// ```
    pub fn stream<S: RemoteStream>(&self, args: S::Args) -> ItemStream<S::Item> {
        self.stream_with::<S>(args, StreamOptions::default())
    }

    /// [`Pool::stream`] with options: a total budget, the window, a bound on
    /// the wait for each item, a routing key.
    ///
    /// # Errors
    ///
    /// As [`Pool::stream`].
    ///
    /// # Cancel safety
    ///
    /// As [`Pool::stream`].
    pub fn stream_with<S: RemoteStream>(&self, args: S::Args, opts: StreamOptions) -> ItemStream<S::Item> {
        let args = match encode(args) {
            Ok(args) => args,
            Err(error) => return ItemStream::failed(S::NAME, error),
        };
        let span = tracing::debug_span!(target: "ractor_flame::pool", "flame.stream",
            function = S::NAME, pool = %self.settings.name,
            runner = Empty, outcome = Empty, queue_wait_us = Empty, items = Empty);
        let metrics = crate::observe::metered().then(|| Arc::clone(&self.settings.metrics));
        let watch = (!span.is_disabled() || metrics.is_some()).then(|| {
            Box::new(crate::stream::Watch {
                span,
                metrics,
                started: Instant::now(),
                items: 0,
            })
        });
        let pool = self.clone();
        ItemStream::new(
            S::NAME,
            Box::pin(async move {
                let (lease, budget) = pool.checkout_budgeted(opts.timeout, opts.key).await?;
                Ok(lease.stream(StreamRequest {
                    function: S::NAME,
                    args,
                    deadline: Some(Instant::now() + budget),
                    window: opts.window,
                    item_timeout: opts.item_timeout,
                }))
            }),
            watch,
        )
    }

    /// Starts the registered actor `A` on a runner, linked to the returned
    /// handle (see [`Child`] for its lifetime). The child takes one slot of
    /// its runner for its whole life. Placement waits for a slot within
    /// `boot_timeout`, then for the actor's start within `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Pool::call`]; an actor whose `pre_start` fails gives
    /// [`Error::ChildStopped`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves gives up the slot; a child
    /// started just then is stopped by its runner's accounting only when the
    /// runner goes, so await placements to the end.
    pub async fn place_child<A: RemoteActor>(&self, args: A::Arguments) -> Result<Child<A>, Error> {
        self.place_child_with::<A>(args, CallOptions::default()).await
    }

    /// Starts `A` on a runner with options: `timeout` is the total budget of
    /// the placement, `link(false)` lets the child outlive its handles.
    ///
    /// # Errors
    ///
    /// As [`Pool::place_child`].
    ///
    /// # Cancel safety
    ///
    /// As [`Pool::place_child`].
    pub async fn place_child_with<A: RemoteActor>(
        &self,
        args: A::Arguments,
        opts: CallOptions,
    ) -> Result<Child<A>, Error> {
        let args = encode(args)?;
        let (lease, budget) = self.checkout_budgeted(opts.timeout, opts.key).await?;
        let function = format!("{PLACE}{}", A::NAME);
        let req = CallRequest {
            function: &function,
            args,
            deadline: Some(Instant::now() + budget),
            linked: opts.link,
            want_result: true,
            idempotency_key: None,
        };
        let outcome = lease.conn().call(req).await?;
        let bytes = outcome_into_result(outcome, A::NAME, budget).map_err(|e| match e {
            Error::Remote { message, .. } => Error::ChildStopped { reason: message },
            other => other,
        })?;
        let id: u64 = bytes.decode().map_err(|e| Error::Codec(e.to_string()))?;
        Ok(Child::new(
            id,
            lease,
            opts.link,
            self.settings.timeout,
            self.settings.child_cast_bytes,
        ))
    }

    /// A snapshot: runners, booting, busy slots, waiting callers.
    ///
    /// # Errors
    ///
    /// [`Error::PoolNotRunning`] for a stopped pool.
    pub async fn stats(&self) -> Result<PoolStats, Error> {
        match self.actor.call(PoolMessage::Stats, None).await {
            Ok(CallResult::Success(stats)) => Ok(stats),
            _ => Err(Error::PoolNotRunning),
        }
    }

    /// Changes how many runners the pool keeps (`min`) and allows (`max`)
    /// while it serves. A higher `min` boots the missing runners at once; a
    /// higher `max` lets waiting callers' runners boot at once. With a
    /// lower `max`, the runners beyond it take no new work and stop once
    /// their calls, casts and placed children are over: idle ones first,
    /// so the pool shrinks at once where it can; nothing in flight is cut
    /// short, and no runner boots while the pool is above `max`. A lower
    /// `min` stops nothing: runners booted for it leave by their own idle
    /// setting. Subscribers of [`Pool::events`] get a
    /// [`PoolEvent::Resized`](crate::PoolEvent::Resized), then a `Shrink`
    /// as each retired runner leaves.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `max` is 0 or `min > max` (nothing changes);
    /// [`Error::PoolNotRunning`] for a stopped pool.
    ///
    /// # Cancel safety
    ///
    /// The change is one message to the pool: dropping the future after it
    /// was sent does not undo it.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::{LocalBackend, Pool, PoolConfig, Registry};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), ractor_flame::Error> {
    /// let pool = Pool::start(PoolConfig::new(2), LocalBackend::new(), &Registry::new()).await?;
    /// pool.resize(1, 4).await?; // one runner boots now; up to four later
    /// assert!(pool.resize(5, 4).await.is_err());
    /// # pool.stop().await;
    /// # Ok(()) }
    /// ```
    pub async fn resize(&self, min: usize, max: usize) -> Result<(), Error> {
        self.send_resize(Resize::Bounds { min, max }).await
    }

    /// Changes how many calls each runner takes at once while the pool
    /// serves. Waiting callers take new room at once; a runner above a
    /// lower limit keeps its work and takes no more until it is below it.
    /// Ignored by a `single_use` pool (one call per runner). Subscribers of
    /// [`Pool::events`] get a [`PoolEvent::Resized`](crate::PoolEvent::Resized).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `max_concurrency` is 0 (nothing changes);
    /// [`Error::PoolNotRunning`] for a stopped pool.
    ///
    /// # Cancel safety
    ///
    /// As [`Pool::resize`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::{LocalBackend, Pool, PoolConfig, Registry};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), ractor_flame::Error> {
    /// let pool = Pool::start(PoolConfig::new(2).max_concurrency(4), LocalBackend::new(), &Registry::new()).await?;
    /// pool.set_max_concurrency(16).await?;
    /// assert!(pool.set_max_concurrency(0).await.is_err());
    /// # pool.stop().await;
    /// # Ok(()) }
    /// ```
    pub async fn set_max_concurrency(&self, max_concurrency: usize) -> Result<(), Error> {
        self.send_resize(Resize::MaxConcurrency(max_concurrency)).await
    }

    async fn send_resize(&self, change: Resize) -> Result<(), Error> {
        // Refused here too, so a stopped pool still says what was wrong.
        change.check()?;
        match self.actor.call(|reply| PoolMessage::Resize(change, reply), None).await {
            Ok(CallResult::Success(result)) => result,
            _ => Err(Error::PoolNotRunning),
        }
    }

    /// Stops the pool: callers still waiting get [`Error::PoolNotRunning`],
    /// calls in flight drain up to `shutdown_timeout`, then every runner stops.
    /// Returns when the pool actor has stopped.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future does not undo the stop; it only stops waiting.
    pub async fn stop(&self) {
        // Not `stop_and_wait`: told to stop while already stopping, it
        // returns at once.
        self.actor.stop(Some("stopped".into()));
        let _ = self.actor.wait(None).await;
    }

    /// Whether the pool actor is running.
    pub fn is_running(&self) -> bool {
        matches!(self.actor.get_status(), ActorStatus::Running | ActorStatus::Starting)
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The Pool actor, to monitor it or send it [`PoolMessage`]s.
    pub fn actor(&self) -> &ActorRef<PoolMessage> {
        &self.actor
    }

    /// Checks out a slot (on the home of `key`, if any) within the total
    /// budget `timeout`, else within `boot_timeout`; with the execution
    /// budget that leaves (`timeout`'s rest, else the pool's `timeout`).
    ///
    /// # Cancel safety
    ///
    /// As [`Pool::checkout`].
    async fn checkout_budgeted(
        &self,
        timeout: Option<Duration>,
        key: Option<std::num::NonZeroU64>,
    ) -> Result<(Lease, Duration), Error> {
        let started = Instant::now();
        let checkout_budget = timeout.unwrap_or(self.settings.boot_timeout);
        let lease = match key {
            None => self.checkout(checkout_budget).await?,
            Some(key) => self.checkout_keyed(checkout_budget, key.get()).await?,
        };
        let budget = match timeout {
            Some(total) => execution_budget(total, started.elapsed())?,
            None => self.settings.timeout,
        };
        Ok((lease, budget))
    }

    /// Checks out a slot within `budget`, on the home of `key` when it has
    /// room (see [`CallOptions::key`]).
    ///
    /// # Cancel safety
    ///
    /// As [`Pool::checkout`].
    async fn checkout_keyed(&self, budget: Duration, key: u64) -> Result<Lease, Error> {
        if let Some(lease) = self.gate.try_checkout_keyed(&self.actor, key) {
            return Ok(lease);
        }
        // The gate has just tried the runners as `checkout` would (every
        // one, or a sample in a large pool): asking it again only repeats
        // that. The Pool decides.
        let lease = self.checkout_from_pool(budget).await?;
        self.gate.remember(key, &lease);
        Ok(lease)
    }

    /// Checks out a slot within `budget`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves the queue; a slot granted just then is
    /// returned by the dropped lease.
    async fn checkout(&self, budget: Duration) -> Result<Lease, Error> {
        // Nobody waits and a runner has room: claim it without a round trip
        // to the Pool (which still decides everything else).
        if let Some(lease) = self.gate.try_checkout(&self.actor) {
            return Ok(lease);
        }
        self.checkout_from_pool(budget).await
    }

    /// Asks the Pool for a slot, waiting up to `budget` in its queue.
    ///
    /// # Cancel safety
    ///
    /// As [`Pool::checkout`].
    async fn checkout_from_pool(&self, budget: Duration) -> Result<Lease, Error> {
        // Boxed: the wait for the Pool (a timer among it) stays out of the
        // future of every call, most of which find a free slot.
        match Box::pin(self.actor.call(PoolMessage::Checkout, Some(budget))).await {
            Ok(CallResult::Success(result)) => result,
            Ok(CallResult::Timeout) => Err(Error::CheckoutTimeout { waited: budget }),
            Ok(CallResult::SenderError) | Err(_) => Err(Error::PoolNotRunning),
        }
    }
}

/// Where a watched call reports its timings.
struct Watch<'a> {
    span: &'a tracing::Span,
    metered: bool,
}

/// What a total budget of `total` leaves for execution after waiting
/// `waited` for a slot. Less than [`CallOptions::MIN_EXECUTION_BUDGET`]
/// fails the call as a checkout timeout: its slot came too late to be of
/// use, and it is not sent (the lease, dropped, checks in).
fn execution_budget(total: Duration, waited: Duration) -> Result<Duration, Error> {
    let left = total.saturating_sub(waited);
    if left < CallOptions::MIN_EXECUTION_BUDGET {
        return Err(Error::CheckoutTimeout { waited });
    }
    Ok(left)
}

/// Sends one call on a checked-out runner; the lease is held to the end.
/// `key` is the call's idempotency key (a call that may be retried).
async fn run(
    lease: Lease,
    function: &'static str,
    args: Args,
    budget: Duration,
    linked: bool,
    key: Option<Arc<str>>,
) -> Result<Args, Error> {
    if budget.is_zero() {
        return Err(Error::Deadline {
            function: function.to_owned(),
            timeout: budget,
        });
    }
    let req = CallRequest {
        function,
        args,
        deadline: Some(Instant::now() + budget),
        linked,
        want_result: true,
        idempotency_key: key.as_deref(),
    };
    // The lease goes with the call: its slot returns when the work has
    // ended on the runner, which may be after a deadline or cancel.
    let outcome = lease.call(req).await?;
    outcome_into_result(outcome, function, budget)
}

/// Encodes a call's arguments; a `ByteBuf` is sent as it lies (see
/// [`Args`]).
fn encode<T: serde::Serialize + 'static>(value: T) -> Result<Args, Error> {
    Args::encode(value).map_err(|e| Error::Codec(format!("arguments: {e}")))
}
