//! Faults at the edges of the link (tests/BEHAVIOURS.md, B46 onwards): a
//! runner the parent gives up is never left running.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor_flame::actors::RunnerNotifier;
use ractor_flame::{Backend, BackendError, DownReason, Pool, ProcessBackend, ProcessState, RunnerContext};
use support::functions::WhereAmI;
use support::{alive, config, eventually, kill};

const WAIT: Duration = Duration::from_secs(10);

/// What a remote engine's watcher tells when the engine stops answering.
struct EngineLost;

/// Runner processes on an "engine" the test can declare lost. Once lost,
/// the engine cannot reclaim anything: `terminate` leaves the process as a
/// real engine's unreachable container would be left.
#[derive(Clone)]
struct FlakyEngine {
    inner: ProcessBackend,
    notifiers: Arc<Mutex<Vec<RunnerNotifier>>>,
}

impl Backend for FlakyEngine {
    type State = Option<ProcessState>;

    fn name(&self) -> &'static str {
        "flaky-engine"
    }

    async fn init(&self, ctx: &RunnerContext) -> Result<Self::State, BackendError> {
        Ok(Some(self.inner.init(ctx).await?))
    }

    async fn remote_boot(&self, state: &mut Self::State, ctx: &RunnerContext) -> Result<(), BackendError> {
        self.notifiers.lock().unwrap().push(ctx.notifier());
        self.inner.remote_boot(state.as_mut().expect("init ran"), ctx).await
    }

    async fn handle_info(&self, state: &mut Self::State, info: Box<dyn std::any::Any + Send>) -> Option<DownReason> {
        if info.is::<EngineLost>() {
            return Some(DownReason::ConnectionLost("engine lost".into()));
        }
        self.inner.handle_info(state.as_mut()?, info).await
    }

    async fn terminate(&self, state: &mut Self::State) {
        // The engine does not answer: the runner's process is not reclaimed.
        std::mem::forget(state.take());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b46_a_runner_given_up_for_a_lost_engine_stops_although_the_engine_cannot_reclaim_it() {
    let backend = FlakyEngine {
        inner: ProcessBackend::new(support::runner_exe()),
        notifiers: Arc::default(),
    };
    let pool = Pool::start(config(1), backend.clone(), &support::functions::registry())
        .await
        .unwrap();
    let runner = pool.call::<WhereAmI>(()).await.unwrap();
    let notifier = backend.notifiers.lock().unwrap()[0].clone();
    assert!(notifier.notify(EngineLost), "the Runner hears its backend");
    eventually("the pool gives the runner up", WAIT, || async {
        pool.stats().await.unwrap().runners == 0
    })
    .await;
    let given_up = Instant::now();
    // The link is up and heartbeats flow both ways: only the parent telling
    // it, or closing its link, stops the runner.
    let stopped = tokio::time::timeout(WAIT, async {
        while alive(runner.pid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if stopped.is_err() {
        kill(runner.pid, "KILL");
        panic!("the runner given up still runs {:?} later", given_up.elapsed());
    }
    // Within the heartbeat timeout plus the drain (config: 1 s + 2 s).
    assert!(given_up.elapsed() < Duration::from_secs(3), "{:?}", given_up.elapsed());
    // The pool replaces it and serves.
    let again = pool.call::<WhereAmI>(()).await.unwrap();
    assert_ne!(again.pid, runner.pid);
    pool.stop().await;
}
