//! Heavy work never kills its runner: CPU-bound bodies that never yield,
//! blocking functions, and slots that are free only when work has ended.
//!
//! These tests saturate the machine's cores on purpose, so they live in a
//! test binary of their own and take a lock: one runs at a time.

mod support;

use std::time::{Duration, Instant};

use ractor_flame::{CallOptions, Error};
use support::functions::{AwaitedPanic, BlockingPanic, Echo, Sleep, Spin, SpinArgs, SpinBlocking, WhereAmI};
use support::{Kind, config, eventually, key, pool_with, probe};

/// One CPU-saturating test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// `calls` concurrent calls of a body that spins `ms` without yielding, on
/// one runner of `kind` with `max_concurrency`; every one must return Ok.
async fn spinning_calls_all_succeed(kind: Kind, calls: usize, max_concurrency: usize, ms: u64) {
    let _serial = SERIAL.lock().await;
    // The pool's default heartbeat settings: a starved link would be declared
    // dead after 2 s, well inside one body's run.
    let cfg = config(1)
        .max_concurrency(max_concurrency)
        .heartbeat_interval(Duration::from_millis(500))
        .heartbeat_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(120));
    let pool = pool_with(kind, cfg).await;
    let started = std::time::Instant::now();
    let mut handles = Vec::new();
    for _ in 0..calls {
        let pool = pool.pool.clone();
        handles.push(tokio::spawn(async move {
            pool.call_with::<Spin>(ms, CallOptions::new().timeout(Duration::from_secs(120)))
                .await
        }));
    }
    let mut failures = Vec::new();
    for handle in handles {
        match handle.await.expect("caller task") {
            Ok(n) => assert!(n > 0, "the body ran"),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed after {:?}: {failures:?}",
        failures.len(),
        started.elapsed()
    );
    let stats = pool.stats().await.unwrap();
    assert_eq!(stats.runners, 1, "the runner survived: {stats:?}");
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn b40_process_cpu_bound_bodies_on_every_slot_all_succeed() {
    spinning_calls_all_succeed(Kind::Process, 2 * cores(), 2 * cores(), 5_000).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn b40_process_eight_cpu_bound_bodies_at_default_concurrency_all_succeed() {
    spinning_calls_all_succeed(Kind::Process, 8, 100, 5_000).await;
}

fn spin_args(key: &str, ms: u64, heed_cancel: bool) -> SpinArgs {
    SpinArgs {
        key: key.to_owned(),
        ms,
        heed_cancel,
    }
}

/// A one-slot pool of `kind`.
async fn one_slot(kind: Kind) -> support::TestPool {
    pool_with(kind, config(1).max_concurrency(1)).await
}

async fn b41_deadline_answers_at_once_but_the_slot_waits_for_the_work(kind: Kind) {
    let pool = one_slot(kind).await;
    let k = key();
    // A blocking body that ignores cancellation: 1.5 s of work, 300 ms budget.
    let started = Instant::now();
    let err = pool
        .call_with::<SpinBlocking>(
            spin_args(&k, 1_500, false),
            CallOptions::new().timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    let answered = started.elapsed();
    assert!(matches!(err, Error::Deadline { .. }), "{err:?}");
    assert!(
        answered < Duration::from_millis(1_000),
        "the deadline error came at once: {answered:?}"
    );
    // The work still runs: its slot is taken, and shown as cancelling.
    let stats = pool.stats().await.unwrap();
    assert_eq!((stats.busy, stats.cancelling), (1, 1), "{stats:?}");
    let err = pool
        .call_with::<Echo>("x".into(), CallOptions::new().timeout(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::CheckoutTimeout { .. }),
        "no second call on the one slot: {err:?}"
    );
    // When the body returns, the slot does too.
    eventually(
        "the slot returns when the work ends",
        Duration::from_secs(10),
        || async {
            let s = pool.stats().await.unwrap();
            s.busy == 0 && s.cancelling == 0
        },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(1_400),
        "not before the body returned"
    );
    assert_eq!(probe(&pool, &k).await.completed, 1, "the body ran to its end");
    pool.stop().await;
}

async fn b41_a_blocking_body_sees_cancellation_and_frees_its_slot(kind: Kind) {
    let pool = one_slot(kind).await;
    let k = key();
    let call = {
        let pool = pool.pool.clone();
        let args = spin_args(&k, 20_000, true);
        tokio::spawn(async move { pool.call::<SpinBlocking>(args).await })
    };
    support::busy(&pool, 1).await;
    let started = Instant::now();
    call.abort();
    let _ = call.await;
    // The body polls `is_cancelled`, stops, and its slot returns.
    eventually("the cancelled body frees its slot", Duration::from_secs(10), || async {
        pool.stats().await.unwrap().busy == 0
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "long before its 20 s of work"
    );
    assert_eq!(probe(&pool, &k).await.dropped, 1, "the body saw the cancel");
    pool.stop().await;
}

/// Calls a body that spins 1.5 s without yielding with a 200 ms timeout:
/// its caller gets the deadline error well before the body ends (the
/// runner cannot answer it: the parent does, a grace after the deadline).
/// Returns when the call was made.
async fn spin_past_its_deadline(pool: &support::TestPool) -> Instant {
    let started = Instant::now();
    let err = pool
        .call_with::<Spin>(1_500, CallOptions::new().timeout(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Deadline { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1_000),
        "answered at its deadline: {:?}",
        started.elapsed()
    );
    started
}

async fn b41_an_async_body_that_never_yields_keeps_its_slot_past_its_deadline(kind: Kind) {
    let pool = one_slot(kind).await;
    let started = spin_past_its_deadline(&pool).await;
    assert_eq!(pool.stats().await.unwrap().busy, 1, "the spinning body holds its slot");
    eventually(
        "the slot returns when the body ends",
        Duration::from_secs(10),
        || async { pool.stats().await.unwrap().busy == 0 },
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(1_400));
    assert_eq!(pool.call::<Echo>("after".into()).await.unwrap(), "after");
    pool.stop().await;
}

async fn panics_in_blocking_work_arrive_as_panics(kind: Kind) {
    let pool = one_slot(kind).await;
    for err in [
        pool.call::<BlockingPanic>("in a blocking body".into())
            .await
            .unwrap_err(),
        pool.call::<AwaitedPanic>("in awaited spawn_blocking".into())
            .await
            .unwrap_err(),
    ] {
        match err {
            Error::Panic { message, .. } => assert!(message.starts_with("in "), "{message}"),
            other => panic!("expected a panic, got {other:?}"),
        }
    }
    // The runner survived both.
    assert_eq!(pool.call::<Echo>("alive".into()).await.unwrap(), "alive");
    pool.stop().await;
}

macro_rules! on_local_and_process {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                let _serial = super::SERIAL.lock().await;
                super::$name(super::Kind::Local).await;
            })*
        }
        mod process {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                let _serial = super::SERIAL.lock().await;
                super::$name(super::Kind::Process).await;
            })*
        }
    };
}

on_local_and_process!(
    b41_deadline_answers_at_once_but_the_slot_waits_for_the_work,
    b41_a_blocking_body_sees_cancellation_and_frees_its_slot,
    panics_in_blocking_work_arrive_as_panics,
);

#[tokio::test(flavor = "multi_thread")]
async fn b41_process_an_async_body_that_never_yields_keeps_its_slot_past_its_deadline() {
    let _serial = SERIAL.lock().await;
    b41_an_async_body_that_never_yields_keeps_its_slot_past_its_deadline(Kind::Process).await;
}

/// The parent's own deadline is kept per call: a short one that comes after
/// a long one is answered at its own time, not at the long one's.
#[tokio::test(flavor = "multi_thread")]
async fn b41_process_a_short_deadline_after_a_long_one_is_answered_at_its_own_time() {
    let _serial = SERIAL.lock().await;
    let pool = pool_with(Kind::Process, config(1).max_concurrency(2)).await;
    let k = key();
    let long = {
        let (pool, args) = (pool.pool.clone(), support::sleep(&k, 3_000));
        tokio::spawn(async move {
            pool.call_with::<Sleep>(args, CallOptions::new().timeout(Duration::from_secs(20)))
                .await
        })
    };
    support::busy(&pool, 1).await;
    // At its own deadline, not the long call's.
    spin_past_its_deadline(&pool).await;
    long.await.unwrap().unwrap();
    pool.stop().await;
}

/// A call whose caller gives up while every worker of its runner is busy
/// (so the runner has taken it but not started it yet) never runs, and its
/// slot comes back once the runner gets to it.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_cancelled_before_its_runner_could_start_it_never_runs() {
    let _serial = SERIAL.lock().await;
    let cfg = config(1).max_concurrency(16).timeout(Duration::from_secs(30));
    let pool = pool_with(Kind::Process, cfg).await;
    pool.call::<Echo>("warm".into()).await.unwrap();
    // Every worker of the runner spins for 1.5 s without yielding.
    let spins: Vec<_> = (0..cores())
        .map(|_| {
            let pool = pool.pool.clone();
            tokio::spawn(async move { pool.call::<Spin>(1_500).await })
        })
        .collect();
    // Time for the spins to reach the runner's workers (nothing tells it).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let k = key();
    let gave_up = tokio::time::timeout(Duration::from_millis(200), pool.call::<Sleep>(support::sleep(&k, 10))).await;
    assert!(
        gave_up.is_err(),
        "the runner's workers are busy: the call cannot have ended"
    );
    for spin in spins {
        spin.await.unwrap().unwrap();
    }
    eventually("every slot is back", Duration::from_secs(10), || async {
        pool.stats().await.unwrap().busy == 0
    })
    .await;
    let counts = probe(&pool, &k).await;
    assert_eq!(
        (counts.running, counts.dropped, counts.completed),
        (0, 0, 0),
        "the cancelled call never ran"
    );
    pool.stop().await;
}

/// Bodies that never yield on all but one of the runner's workers, arriving
/// together with a short call: the short call is answered at once, on the
/// worker left free, not after the spinning bodies.
#[tokio::test(flavor = "multi_thread")]
async fn b40_a_short_call_beside_bodies_that_never_yield_is_answered_at_once() {
    let _serial = SERIAL.lock().await;
    if cores() < 2 {
        eprintln!("skipped: one core, no worker is left free beside a spinning body");
        return;
    }
    let cfg = config(1).max_concurrency(16).timeout(Duration::from_secs(30));
    let pool = pool_with(Kind::Process, cfg).await;
    pool.call::<Echo>("warm".into()).await.unwrap();
    for round in 0..3 {
        let spins: Vec<_> = (0..cores() - 1)
            .map(|_| {
                let pool = pool.pool.clone();
                tokio::spawn(async move { pool.call::<Spin>(2_000).await })
            })
            .collect();
        let started = Instant::now();
        let echoed = pool
            .call_with::<Echo>("short".into(), CallOptions::new().timeout(Duration::from_millis(1_000)))
            .await;
        match echoed {
            Ok(echo) => assert_eq!(echo, "short"),
            Err(e) => panic!("round {round}: not answered beside the spinning bodies: {e:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_millis(1_000),
            "round {round}: not after them ({:?})",
            started.elapsed()
        );
        for spin in spins {
            spin.await.unwrap().unwrap();
        }
    }
    pool.stop().await;
}

/// The parent's own workers busy for longer than the heartbeat timeout: its
/// runners are not declared dead, and they do not lose their parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b40_a_busy_parent_keeps_its_healthy_runners() {
    let _serial = SERIAL.lock().await;
    let cfg = config(1)
        .min(1)
        .heartbeat_interval(Duration::from_millis(100))
        .heartbeat_timeout(Duration::from_millis(500));
    let pool = pool_with(Kind::Process, cfg).await;
    support::runners(&pool, 1).await;
    let before = pool.call::<WhereAmI>(()).await.unwrap();
    // Every worker of this runtime blocks for 2 s: four heartbeat timeouts.
    let blockers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async { std::thread::sleep(Duration::from_secs(2)) }))
        .collect();
    for b in blockers {
        b.await.unwrap();
    }
    let after = pool.call::<WhereAmI>(()).await.unwrap();
    assert_eq!(before.pid, after.pid, "the same runner serves");
    let stats = pool.stats().await.unwrap();
    assert_eq!(stats.runners, 1, "{stats:?}");
    pool.stop().await;
}

#[cfg(feature = "docker")]
mod docker {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn b40_docker_cpu_bound_bodies_on_every_slot_all_succeed() {
        if support::docker::engine("b40_docker_cpu_bound_bodies_on_every_slot_all_succeed")
            .await
            .is_none()
        {
            return;
        }
        spinning_calls_all_succeed(Kind::Docker, 2 * cores(), 2 * cores(), 5_000).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn b40_docker_eight_cpu_bound_bodies_at_default_concurrency_all_succeed() {
        if support::docker::engine("b40_docker_eight_cpu_bound_bodies_at_default_concurrency_all_succeed")
            .await
            .is_none()
        {
            return;
        }
        spinning_calls_all_succeed(Kind::Docker, 8, 100, 5_000).await;
    }
}
