//! Boot failures and the Runner's boot contract, with test backends defined
//! here: B12 (a failing min boot is retried, not fatal), B18 (retry with
//! backoff, then the waiters learn why), B25 (boot is one-shot; a boot error
//! stops the Runner with that reason).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_flame::actors::on_parent::{Runner, RunnerArguments, RunnerMessage};
use ractor_flame::{
    Backend, BackendError, BootRetry, Error, LocalBackend, Pool, PoolEvent, PoolMessage, ProcessBackend, ProcessState,
    Registry, RunnerContext, RunnerId,
};
use support::functions::Echo;
use support::{Events, config, eventually};

/// Fails the first `fail_first` boots, then boots in-process.
#[derive(Clone, Default)]
struct Flaky {
    fail_first: usize,
    boots: Arc<AtomicUsize>,
    inner: LocalBackend,
}

impl Backend for Flaky {
    type State = <LocalBackend as Backend>::State;

    fn name(&self) -> &'static str {
        "flaky"
    }

    async fn init(&self, ctx: &RunnerContext) -> Result<Self::State, BackendError> {
        self.inner.init(ctx).await
    }

    async fn remote_boot(&self, state: &mut Self::State, ctx: &RunnerContext) -> Result<(), BackendError> {
        let n = self.boots.fetch_add(1, Ordering::AcqRel);
        if n < self.fail_first {
            return Err(BackendError::new(format!("no capacity (boot {})", n + 1)));
        }
        self.inner.remote_boot(state, ctx).await
    }

    async fn terminate(&self, state: &mut Self::State) {
        self.inner.terminate(state).await
    }
}

fn fast_retry(max_attempts: u32) -> BootRetry {
    BootRetry {
        max_attempts,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b18_failed_boots_retry_with_backoff_then_fail_the_waiters_with_the_reason() {
    let events = Events::default();
    let backend = Flaky {
        fail_first: usize::MAX,
        ..Flaky::default()
    };
    let cfg = events.hooks(config(2).boot_retry(fast_retry(3)));
    let pool = Pool::start(cfg, backend.clone(), &support::functions::registry())
        .await
        .unwrap();
    let err = pool.call::<Echo>("x".into()).await.unwrap_err();
    assert_eq!(
        err,
        Error::BootFailed {
            reason: "no capacity (boot 3)".into()
        }
    );
    assert_eq!(backend.boots.load(Ordering::Acquire), 3);
    let failed_ends = events
        .all()
        .into_iter()
        .filter(|e| matches!(e, PoolEvent::GrowEnd { result: Err(_), .. }))
        .count();
    assert_eq!(failed_ends, 3, "on_grow_end hears every failure");
    assert_eq!(pool.stats().await.unwrap().waiting, 0);
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b18_a_boot_that_recovers_within_the_attempts_serves_the_caller() {
    let backend = Flaky {
        fail_first: 2,
        ..Flaky::default()
    };
    let pool = Pool::start(
        config(1).boot_retry(fast_retry(3)),
        backend,
        &support::functions::registry(),
    )
    .await
    .unwrap();
    assert_eq!(pool.call::<Echo>("third time".into()).await.unwrap(), "third time");
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b12_a_failing_min_boot_is_retried_and_never_fatal() {
    let backend = Flaky {
        fail_first: 4,
        ..Flaky::default()
    };
    // More failures than max_attempts: min boots keep retrying regardless.
    let cfg = config(2).min(1).boot_retry(fast_retry(2));
    let pool = Pool::start(cfg, backend.clone(), &support::functions::registry())
        .await
        .unwrap();
    support::runners(&pool, 1).await;
    assert_eq!(backend.boots.load(Ordering::Acquire), 5);
    pool.stop().await;
}

/// Counts `remote_boot` calls; fails them when told.
#[derive(Clone, Default)]
struct Counting {
    boots: Arc<AtomicUsize>,
    fail: bool,
}

impl Backend for Counting {
    type State = ();
    fn name(&self) -> &'static str {
        "counting"
    }
    async fn init(&self, _: &RunnerContext) -> Result<(), BackendError> {
        Ok(())
    }
    async fn remote_boot(&self, _: &mut (), _: &RunnerContext) -> Result<(), BackendError> {
        self.boots.fetch_add(1, Ordering::AcqRel);
        if self.fail {
            Err(BackendError::new("quota exceeded"))
        } else {
            Ok(())
        }
    }
}

/// Plays the pool: supervises the Runner and records how it ended.
struct FakePool(Arc<Mutex<Option<String>>>);

impl Actor for FakePool {
    type Msg = PoolMessage;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<PoolMessage>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<PoolMessage>,
        event: SupervisionEvent,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorTerminated(_, _, reason) = event {
            *self.0.lock().unwrap() = Some(reason.unwrap_or_default());
        }
        Ok(())
    }
}

async fn runner_with(backend: Counting) -> (ActorRef<RunnerMessage>, Arc<Mutex<Option<String>>>) {
    let ended = Arc::new(Mutex::new(None));
    let (pool, _) = Actor::spawn(None, FakePool(ended.clone()), ()).await.unwrap();
    let args = RunnerArguments {
        pool: pool.clone(),
        context: Box::new(|runner| RunnerContext::new(RunnerId::new(), "b25", Registry::new(), runner)),
    };
    let (runner, _) = Actor::spawn_linked(None, Runner::new(Arc::new(backend)), args, pool.get_cell())
        .await
        .unwrap();
    (runner, ended)
}

/// A real process backend that records each `remote_boot` (and the pid it
/// started) and answers a [`Marker`] sent as `RunnerMessage::Info`, so a
/// test knows when every earlier message of the Runner's mailbox was handled.
#[derive(Clone)]
struct Recording {
    inner: ProcessBackend,
    boots: Arc<AtomicUsize>,
    pids: Arc<Mutex<Vec<u32>>>,
    markers: Arc<AtomicUsize>,
}

/// Passed through the Runner's mailbox behind other messages.
struct Marker;

impl Recording {
    fn new() -> Self {
        Recording {
            inner: ProcessBackend::new(support::runner_exe()),
            boots: Arc::default(),
            pids: Arc::default(),
            markers: Arc::default(),
        }
    }
}

impl Backend for Recording {
    type State = ProcessState;
    fn name(&self) -> &'static str {
        "recording-process"
    }
    async fn init(&self, ctx: &RunnerContext) -> Result<ProcessState, BackendError> {
        self.inner.init(ctx).await
    }
    async fn remote_boot(&self, state: &mut ProcessState, ctx: &RunnerContext) -> Result<(), BackendError> {
        self.boots.fetch_add(1, Ordering::AcqRel);
        let booted = self.inner.remote_boot(state, ctx).await;
        self.pids.lock().unwrap().extend(state.pid());
        booted
    }
    async fn handle_info(
        &self,
        state: &mut ProcessState,
        info: Box<dyn std::any::Any + Send>,
    ) -> Option<ractor_flame::DownReason> {
        if info.is::<Marker>() {
            self.markers.fetch_add(1, Ordering::AcqRel);
            return None;
        }
        self.inner.handle_info(state, info).await
    }
    fn down_grace(&self) -> Duration {
        self.inner.down_grace()
    }
    async fn terminate(&self, state: &mut ProcessState) {
        self.inner.terminate(state).await
    }
}

/// Plays the pool for a Runner under test: counts what the Runner tells it.
struct CountingPool(Arc<AtomicUsize>);

impl Actor for CountingPool {
    type Msg = PoolMessage;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<PoolMessage>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(&self, _: ActorRef<PoolMessage>, _: PoolMessage, _: &mut ()) -> Result<(), ActorProcessingErr> {
        self.0.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

/// Live processes whose `FLAME_PARENT` names runner `id`.
fn processes_of(id: RunnerId) -> Vec<u32> {
    support::flame_processes()
        .into_iter()
        .filter(|(pid, parent)| parent.runner_id == id && support::alive(*pid))
        .map(|(pid, _)| pid)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b25_boot_is_one_shot() {
    const WAIT: Duration = Duration::from_secs(10);
    let backend = Recording::new();
    let told = Arc::new(AtomicUsize::new(0));
    let (pool, _) = Actor::spawn(None, CountingPool(told.clone()), ()).await.unwrap();
    let id = RunnerId::new();
    let args = RunnerArguments {
        pool: pool.clone(),
        context: Box::new(move |runner| {
            let mut ctx = RunnerContext::new(id, "b25", support::functions::registry(), runner);
            ctx.boot_timeout = Duration::from_secs(10);
            ctx
        }),
    };
    let (runner, _) = Actor::spawn_linked(None, Runner::new(Arc::new(backend.clone())), args, pool.get_cell())
        .await
        .unwrap();
    runner.cast(RunnerMessage::Boot).unwrap();
    runner.cast(RunnerMessage::Boot).unwrap();
    runner.cast(RunnerMessage::Info(Box::new(Marker))).unwrap();
    eventually("the Runner handled both boots", WAIT, || async {
        backend.markers.load(Ordering::Acquire) == 1
    })
    .await;
    assert_eq!(backend.boots.load(Ordering::Acquire), 1, "remote_boot ran once");
    let pids = backend.pids.lock().unwrap().clone();
    assert_eq!(pids.len(), 1, "{pids:?}");
    assert_eq!(processes_of(id), pids, "one runner process, the one booted");
    // The one boot is real: the runner connects and the pool hears of it.
    eventually("the runner is up", WAIT, || async { told.load(Ordering::Acquire) >= 1 }).await;
    assert_eq!(processes_of(id), pids);
    runner.stop_and_wait(None, Some(WAIT)).await.unwrap();
    eventually("the runner process is gone", WAIT, || async {
        processes_of(id).is_empty()
    })
    .await;
    pool.stop(None);
}

#[tokio::test]
async fn b25_a_boot_error_stops_the_runner_with_that_reason() {
    let backend = Counting {
        fail: true,
        ..Counting::default()
    };
    let (runner, ended) = runner_with(backend).await;
    runner.cast(RunnerMessage::Boot).unwrap();
    eventually("the runner stopped", Duration::from_secs(5), || async {
        ended.lock().unwrap().is_some()
    })
    .await;
    assert_eq!(ended.lock().unwrap().as_deref(), Some("quota exceeded"));
}

#[tokio::test]
async fn b10_an_unregistered_idle_predicate_is_a_config_error() {
    let cfg = support::config(1).idle_shutdown_after(ractor_flame::IdleShutdown::when(
        std::time::Duration::from_millis(100),
        "no.such.predicate",
    ));
    let err = ractor_flame::Pool::start(cfg, ractor_flame::LocalBackend::new(), &support::functions::registry())
        .await
        .unwrap_err();
    match err {
        ractor_flame::Error::Config(message) => assert!(message.contains("no.such.predicate"), "{message}"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

/// Its first `hang_first` boots never finish (a stalled image import, a
/// create the engine never answers); later ones boot in-process.
#[derive(Clone, Default)]
struct Hanging {
    hang_first: usize,
    boots: Arc<AtomicUsize>,
    inner: LocalBackend,
}

impl Backend for Hanging {
    type State = <LocalBackend as Backend>::State;

    fn name(&self) -> &'static str {
        "hanging"
    }

    async fn init(&self, ctx: &RunnerContext) -> Result<Self::State, BackendError> {
        self.inner.init(ctx).await
    }

    async fn remote_boot(&self, state: &mut Self::State, ctx: &RunnerContext) -> Result<(), BackendError> {
        if self.boots.fetch_add(1, Ordering::AcqRel) < self.hang_first {
            std::future::pending::<()>().await;
        }
        self.inner.remote_boot(state, ctx).await
    }

    async fn terminate(&self, state: &mut Self::State) {
        self.inner.terminate(state).await
    }
}

/// A caller that waits longer than a boot may take.
fn patient() -> ractor_flame::CallOptions {
    ractor_flame::CallOptions::new().timeout(Duration::from_secs(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b47_a_backend_boot_that_hangs_fails_with_a_boot_timeout_and_is_retried() {
    let backend = Hanging {
        hang_first: usize::MAX,
        ..Hanging::default()
    };
    let cfg = config(1)
        .boot_timeout(Duration::from_millis(150))
        .timeout(Duration::from_secs(20))
        .boot_retry(fast_retry(3));
    let pool = Pool::start(cfg, backend.clone(), &support::functions::registry())
        .await
        .unwrap();
    // The caller's budget outlasts the three boots.
    let err = pool.call_with::<Echo>("x".into(), patient()).await.unwrap_err();
    match &err {
        Error::BootFailed { reason } => assert!(reason.contains("boot timeout"), "{reason}"),
        other => panic!("expected a boot timeout, got {other:?}"),
    }
    assert_eq!(
        backend.boots.load(Ordering::Acquire),
        3,
        "retried per the boot retry policy"
    );
    // A boot stalled right now: stop() waits on it no longer than its budget.
    let stalled = pool.clone();
    let _late = tokio::spawn(async move { stalled.call::<Echo>("y".into()).await });
    eventually("a new boot is under way", Duration::from_secs(10), || async {
        backend.boots.load(Ordering::Acquire) > 3
    })
    .await;
    let started = std::time::Instant::now();
    pool.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b47_a_backend_boot_that_hangs_once_is_replaced_by_one_that_serves() {
    let backend = Hanging {
        hang_first: 1,
        ..Hanging::default()
    };
    let cfg = config(1)
        .boot_timeout(Duration::from_millis(150))
        .boot_retry(fast_retry(3));
    let pool = Pool::start(cfg, backend.clone(), &support::functions::registry())
        .await
        .unwrap();
    let echoed = pool.call_with::<Echo>("second boot".into(), patient()).await.unwrap();
    assert_eq!(echoed, "second boot");
    assert_eq!(backend.boots.load(Ordering::Acquire), 2);
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b47_a_runner_state_that_never_builds_fails_the_boot_in_time() {
    // A constructor that hangs (a model download that never ends).
    let registry = support::functions::registry()
        .with_state(|| async { std::future::pending::<Result<Vec<f32>, ractor_flame::FnError>>().await });
    // In-process, the state is built inside the backend's boot. (A runner
    // process builds it before it connects back: the connect-back's share of
    // the boot timeout covers it there.)
    let cfg = config(1)
        .boot_timeout(Duration::from_millis(300))
        .boot_retry(fast_retry(1));
    let pool = Pool::start(cfg, LocalBackend::new(), &registry).await.unwrap();
    let started = std::time::Instant::now();
    let err = pool.call_with::<Echo>("x".into(), patient()).await.unwrap_err();
    match &err {
        Error::BootFailed { reason } => assert!(reason.contains("boot timeout"), "{reason}"),
        other => panic!("expected a boot timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let stopping = std::time::Instant::now();
    pool.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        stopping.elapsed()
    );
}
