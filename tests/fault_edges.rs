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

/// B50: calls racing their runner's close end with their result or
/// `RunnerDown`, within a bound. The runner is given up while its link
/// still takes frames (a lost engine, as in B46), so a call the close left
/// behind would never be answered: it would wait out its deadline and end
/// as `Deadline`, or wait for ever without one. Round after round, callers
/// keep calling while the runner closes; each result is `Ok` or `RunnerDown`.
/// (The window between a call's look at its runner and its entry in the
/// table is narrow here: the unit tests of `link/pending.rs` hit it at will.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b50_calls_racing_their_runners_close_end_with_their_result_or_runner_down() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use ractor_flame::Error;
    use support::functions::Echo;

    const ROUNDS: usize = 20;
    const CALLERS: usize = 32;
    let backend = FlakyEngine {
        inner: ProcessBackend::new(support::runner_exe()),
        notifiers: Arc::default(),
    };
    // A call left behind by the close would end as `Deadline` after this
    // (and a grace), well within `WAIT`.
    let config = config(1).timeout(Duration::from_secs(3));
    let pool = Pool::start(config, backend.clone(), &support::functions::registry())
        .await
        .unwrap();
    for round in 0..ROUNDS {
        // A runner serves (the first, or the one replacing the last round's).
        let runner = pool.call::<WhereAmI>(()).await.unwrap();
        let notifier = backend
            .notifiers
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a runner booted");
        let made = Arc::new(AtomicUsize::new(0));
        let gone = Arc::new(AtomicBool::new(false));
        let callers: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (pool, made, gone) = (pool.clone(), Arc::clone(&made), Arc::clone(&gone));
                tokio::spawn(async move {
                    // Until the runner is gone, then one more call.
                    loop {
                        let last = gone.load(Ordering::Acquire);
                        let result = pool.call::<Echo>(String::new()).await;
                        made.fetch_add(1, Ordering::Relaxed);
                        match result {
                            Ok(_) if !last => continue,
                            other => return other,
                        }
                    }
                })
            })
            .collect();
        eventually("calls flow", WAIT, || async {
            made.load(Ordering::Relaxed) >= 4 * CALLERS
        })
        .await;
        let mut events = pool.events();
        assert!(notifier.notify(EngineLost), "the Runner hears its backend");
        // The pool hears of the loss after the runner's connection closed.
        let given_up = tokio::time::timeout(WAIT, async {
            loop {
                match events.recv().await {
                    Ok(ractor_flame::PoolEvent::RunnerLost { .. }) => return,
                    Ok(_) | Err(ractor_flame::EventsError::Lagged { .. }) => {}
                    Err(error) => panic!("round {round}: {error}"),
                }
            }
        })
        .await;
        assert!(given_up.is_ok(), "round {round}: the pool gives the runner up");
        gone.store(true, Ordering::Release);
        for caller in callers {
            let Ok(result) = tokio::time::timeout(WAIT, caller).await else {
                kill(runner.pid, "KILL");
                panic!("round {round}: a call that raced its runner's close waits for ever");
            };
            let result = result.expect("the caller's task");
            assert!(
                matches!(result, Ok(_) | Err(Error::RunnerDown { .. })),
                "round {round}: a call that raced its runner's close ended with {result:?}"
            );
        }
    }
    pool.stop().await;
}

/// B55: casts to a placed child that has fallen behind (its runner frozen
/// by SIGSTOP: nothing it is sent is taken) are bounded by
/// `child_cast_bytes` (see `support::child_casts_are_bounded_while_frozen`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b55_casts_to_a_child_that_fell_behind_are_bounded_and_a_sender_waits_or_gets_child_busy() {
    let pool = Pool::start(
        support::child_cast_config(),
        ProcessBackend::new(support::runner_exe()),
        &support::functions::registry(),
    )
    .await
    .unwrap();
    let pid = std::sync::OnceLock::new();
    support::child_casts_are_bounded_while_frozen(
        &pool,
        |runner_pid| {
            pid.set(runner_pid).unwrap();
            kill(runner_pid, "STOP");
            async {}
        },
        || {
            kill(*pid.get().unwrap(), "CONT");
            async {}
        },
    )
    .await;
    pool.stop().await;
}
