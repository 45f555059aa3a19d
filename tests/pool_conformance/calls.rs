//! Calls and casts (B01-B09): a call runs on a runner within its budgets,
//! errors and panics come home typed, dropping a call cancels it, a cast
//! holds a slot while it runs, and a stopped pool refuses at once.

use std::time::{Duration, Instant};

use ractor_flame::{CallOptions, Error, FnErrorKind};

use super::WAIT;
use crate::support::functions::{self, Echo, Fail, Panic, Reject, Sleep, StopWhenCancelled, WhereAmI};
use crate::support::{self, Kind, config, eventually, key, pool_with, probe, sleep};

pub(super) async fn b01_call_runs_on_a_runner_and_returns_its_value(kind: Kind) {
    let pool = pool_with(kind, config(1)).await;
    assert_eq!(pool.call::<Echo>("hi".into()).await.unwrap(), "hi");
    // Arguments of every size a runner handles its own way: small ones it
    // holds in the call's record, larger ones it decodes where they were
    // read, and those over 32 KiB that travel after their frame.
    for len in (40..=56).chain([1_000, 40_000]) {
        let text: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        assert_eq!(pool.call::<Echo>(text.clone()).await.unwrap(), text, "{len} characters");
        let bytes = serde_bytes::ByteBuf::from(vec![1u8; len]);
        assert_eq!(pool.call::<functions::Len>(bytes).await.unwrap(), len, "{len} bytes");
        // A shared `Bytes` (a slice of a larger buffer, as an HTTP body
        // often is) goes and comes back as its bytes.
        let whole = ractor_flame::Bytes::from((0..len + 8).map(|i| i as u8).collect::<Vec<u8>>());
        let body = whole.slice(8..);
        let mut reversed = body.to_vec();
        reversed.reverse();
        let back = pool.call::<functions::ReverseBytes>(body).await.unwrap();
        assert_eq!(back, reversed, "{len} shared bytes");
    }
    let place = pool.call::<WhereAmI>(()).await.unwrap();
    assert!(!place.runner.is_empty(), "ran inside a runner");
    if kind != Kind::Local {
        // Remote backends never run the function in the caller's task, nor
        // in its process. (The local runner is this process, and it runs a
        // linked call inline in the caller's task: same accounting, one
        // wake-up less.)
        let here = tokio::task::try_id().map(|t| t.to_string()).unwrap_or_default();
        assert_ne!(place.task, here, "not in the caller's task");
        assert_ne!(place.pid, std::process::id(), "in another process");
    }
    pool.stop().await;
}

pub(super) async fn b02_default_budgets_are_boot_timeout_then_timeout(kind: Kind) {
    let cfg = config(1)
        .max_concurrency(1)
        .timeout(Duration::from_millis(200))
        .boot_timeout(Duration::from_millis(3_000));
    let pool = pool_with(kind, cfg).await;
    pool.call::<Echo>("warm".into()).await.unwrap();
    // Execution is bounded by `timeout`.
    let err = pool.call::<Sleep>(sleep(&key(), 5_000)).await.unwrap_err();
    assert_eq!(
        err,
        Error::Deadline {
            function: "test.sleep".into(),
            timeout: Duration::from_millis(200)
        }
    );
    // Checkout is bounded by `boot_timeout`.
    let holder = pool.pool.clone();
    let busy = tokio::spawn(async move { holder.call::<Sleep>(sleep(&key(), 150)).await });
    support::busy(&pool, 1).await;
    let held = tokio::spawn({
        let pool = pool.pool.clone();
        async move {
            // Take the slot again right after it frees, for longer than the
            // checkout budget of the next caller.
            pool.call_with::<Sleep>(sleep(&key(), 5_000), CallOptions::new().timeout(Duration::from_secs(8)))
                .await
        }
    });
    busy.await.unwrap().unwrap();
    support::busy(&pool, 1).await;
    let err = pool.call::<Echo>("x".into()).await.unwrap_err();
    assert_eq!(
        err,
        Error::CheckoutTimeout {
            waited: Duration::from_millis(3_000)
        }
    );
    held.abort();
    pool.stop().await;
}

pub(super) async fn b03_explicit_timeout_is_a_total_budget(kind: Kind) {
    let pool = pool_with(kind, config(1).max_concurrency(1)).await;
    pool.call::<Echo>("warm".into()).await.unwrap();
    let holder = pool.pool.clone();
    let busy = tokio::spawn(async move { holder.call::<Sleep>(sleep(&key(), 300)).await });
    support::busy(&pool, 1).await;
    let started = Instant::now();
    let err = pool
        .call_with::<Sleep>(
            sleep(&key(), 5_000),
            CallOptions::new().timeout(Duration::from_millis(800)),
        )
        .await
        .unwrap_err();
    let Error::Deadline { timeout, .. } = err else {
        panic!("expected a deadline error, got {err:?}")
    };
    // What remained after waiting for the slot was sent as the deadline.
    assert!(timeout < Duration::from_millis(650), "execution budget {timeout:?}");
    assert!(started.elapsed() < Duration::from_millis(800) + Duration::from_millis(400));
    busy.await.unwrap().unwrap();
    pool.stop().await;
}

pub(super) async fn b04_no_slot_in_time_is_a_checkout_timeout_and_leaves_the_queue(kind: Kind) {
    let pool = pool_with(kind, config(1).max_concurrency(1)).await;
    let holder = pool.pool.clone();
    let k = key();
    let busy = tokio::spawn({
        let k = k.clone();
        async move { holder.call::<Sleep>(sleep(&k, 3_000)).await }
    });
    support::busy(&pool, 1).await;
    let err = pool
        .call_with::<Echo>("late".into(), CallOptions::new().timeout(Duration::from_millis(100)))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::CheckoutTimeout {
            waited: Duration::from_millis(100)
        }
    );
    assert_eq!(pool.stats().await.unwrap().waiting, 0, "the caller left the queue");
    busy.abort();
    pool.stop().await;
}

/// A slot that comes back with less than the minimal execution budget left
/// of the caller's total is of no use: the call fails as a checkout
/// timeout and never reaches a runner.
pub(super) async fn b04_a_slot_that_leaves_no_execution_budget_is_a_checkout_timeout(kind: Kind) {
    let pool = pool_with(kind, config(1).max_concurrency(1)).await;
    pool.call::<Echo>("warm".into()).await.unwrap();
    let (held, late) = (key(), key());
    let hold = Duration::from_millis(80);
    let mut tried = 0;
    for trial in 0..10 {
        let holder = pool.pool.clone();
        let start = Instant::now();
        let busy = tokio::spawn({
            let held = held.clone();
            async move { holder.call::<Sleep>(sleep(&held, hold.as_millis() as u64)).await }
        });
        support::busy(&pool, 1).await;
        // The slot comes back `hold` after `start` at the earliest; the
        // late call's total budget ends the minimum execution budget after
        // that, so whatever its wait left is less than the minimum.
        let ends = start + hold + CallOptions::MIN_EXECUTION_BUDGET;
        let Some(total) = ends.checked_duration_since(Instant::now()) else {
            busy.await.unwrap().unwrap();
            continue;
        };
        tried += 1;
        let err = pool
            .call_with::<Sleep>(sleep(&late, 0), CallOptions::new().timeout(total))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::CheckoutTimeout { .. }), "trial {trial}: {err:?}");
        busy.await.unwrap().unwrap();
    }
    assert!(tried >= 5, "only {tried} of 10 trials found the slot busy in time");
    let counts = probe(&pool, &late).await;
    assert_eq!(
        (counts.running, counts.dropped, counts.completed),
        (0, 0, 0),
        "no late call reached the runner"
    );
    pool.stop().await;
}

/// A body that honours cancellation returns an error the moment its
/// deadline passes; the caller still gets the deadline, every time, and a
/// body that says it stopped because cancelled is no different.
pub(super) async fn b05_an_error_returned_at_the_deadline_is_the_deadline(kind: Kind) {
    let pool = pool_with(kind, config(1).max_concurrency(2)).await;
    pool.call::<Echo>("warm".into()).await.unwrap();
    for trial in 0..24 {
        let cancelled_kind = trial % 2 == 1;
        let err = pool
            .call_with::<StopWhenCancelled>(cancelled_kind, CallOptions::new().timeout(Duration::from_millis(15)))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Deadline { .. }), "trial {trial}: {err:?}");
    }
    // The runner serves on.
    assert_eq!(pool.call::<Echo>("after".into()).await.unwrap(), "after");
    pool.stop().await;
}

pub(super) async fn b05_deadline_aborts_the_remote_task(kind: Kind) {
    let pool = pool_with(kind, config(1)).await;
    pool.call::<Echo>("warm".into()).await.unwrap();
    let k = key();
    let err = pool
        .call_with::<Sleep>(
            sleep(&k, 10_000),
            CallOptions::new().timeout(Duration::from_millis(150)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Deadline { .. }), "{err:?}");
    let counts = probe(&pool, &k).await;
    assert_eq!(
        (counts.running, counts.dropped, counts.completed),
        (0, 1, 0),
        "aborted at the deadline"
    );
    pool.stop().await;
}

pub(super) async fn b06_remote_error_and_panic_reach_the_caller_typed(kind: Kind) {
    let pool = pool_with(kind, config(1)).await;
    let err = pool.call::<Fail>("disk full".into()).await.unwrap_err();
    assert_eq!(
        err,
        Error::Remote {
            function: "test.fail".into(),
            kind: FnErrorKind::Internal,
            message: "disk full".into()
        }
    );
    // The kind a body chose reaches the caller.
    let err = pool.call::<Reject>("not an image".into()).await.unwrap_err();
    assert_eq!(
        err,
        Error::Remote {
            function: "test.reject".into(),
            kind: FnErrorKind::InvalidArgument,
            message: "not an image".into()
        }
    );
    let err = pool.call::<Panic>("boom".into()).await.unwrap_err();
    assert_eq!(
        err,
        Error::Panic {
            function: "test.panic".into(),
            message: "boom".into()
        }
    );
    // The runner survived and serves the next call.
    let before = pool.call::<WhereAmI>(()).await.unwrap();
    assert_eq!(pool.call::<Echo>("still here".into()).await.unwrap(), "still here");
    assert_eq!(pool.call::<WhereAmI>(()).await.unwrap().runner, before.runner);
    assert_eq!(pool.stats().await.unwrap().runners, 1);
    pool.stop().await;
}

pub(super) async fn b06_unknown_function_is_a_clear_error(kind: Kind) {
    use ractor_flame::{FnError, RemoteFn};
    struct NotRegistered;
    impl RemoteFn for NotRegistered {
        const NAME: &'static str = "test.not_registered";
        type Args = ();
        type Output = ();
        async fn run(_: ()) -> Result<(), FnError> {
            Ok(())
        }
    }
    let pool = pool_with(kind, config(1)).await;
    let err = pool.call::<NotRegistered>(()).await.unwrap_err();
    assert_eq!(
        err,
        Error::UnknownFunction {
            function: "test.not_registered".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "no remote function named `test.not_registered` is registered"
    );
    pool.stop().await;
}

pub(super) async fn b07_dropping_the_call_cancels_the_remote_task(kind: Kind) {
    let pool = pool_with(kind, config(1)).await;
    let k = key();
    let caller = support::sleeping(&pool, &k, 10_000);
    eventually("the call runs", WAIT, || async { probe(&pool, &k).await.running == 1 }).await;
    caller.abort();
    eventually("the remote task is aborted", WAIT, || async {
        probe(&pool, &k).await.dropped == 1
    })
    .await;
    support::busy(&pool, 0).await;

    // Unlinked: the work runs to completion although the caller went away.
    let k = key();
    let caller = tokio::spawn({
        let pool = pool.pool.clone();
        let k = k.clone();
        async move {
            pool.call_with::<Sleep>(sleep(&k, 200), CallOptions::new().link(false))
                .await
        }
    });
    eventually("the call runs", WAIT, || async { probe(&pool, &k).await.running == 1 }).await;
    caller.abort();
    eventually("the unlinked task completes", WAIT, || async {
        probe(&pool, &k).await.completed == 1
    })
    .await;
    assert_eq!(probe(&pool, &k).await.dropped, 0);
    pool.stop().await;
}

pub(super) async fn b08_cast_returns_at_once_and_holds_a_slot_while_it_runs(kind: Kind) {
    let pool = pool_with(kind, config(1)).await;
    pool.call::<Echo>("warm".into()).await.unwrap();
    let k = key();
    let started = Instant::now();
    pool.cast::<Sleep>(sleep(&k, 400)).unwrap();
    assert!(started.elapsed() < Duration::from_millis(50), "cast returned at once");
    eventually("the cast runs remotely and holds a slot", WAIT, || async {
        pool.stats().await.unwrap().busy >= 1 && probe(&pool, &k).await.running == 1
    })
    .await;
    eventually("the cast completes and frees its slot", WAIT, || async {
        probe(&pool, &k).await.completed == 1 && pool.stats().await.unwrap().busy == 0
    })
    .await;
    pool.stop().await;
}

pub(super) async fn b09_calls_to_a_stopped_pool_fail_at_once(kind: Kind) {
    let pool = pool_with(kind, config(1)).await;
    pool.stop().await;
    let started = Instant::now();
    assert_eq!(pool.call::<Echo>("x".into()).await.unwrap_err(), Error::PoolNotRunning);
    assert_eq!(pool.cast::<Echo>("x".into()).unwrap_err(), Error::PoolNotRunning);
    assert_eq!(pool.stats().await.unwrap_err(), Error::PoolNotRunning);
    assert!(started.elapsed() < Duration::from_millis(100));
}
