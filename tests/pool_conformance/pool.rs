//! The pool (B10-B21): options are checked, `min` runners boot together,
//! checkout picks the least loaded runner, growth boots only what is
//! needed, waiters are served in order (and those that gave up never),
//! hooks report growth and shrink, every call checks in once, and a lost
//! runner fails its calls and is replaced.

use std::time::{Duration, Instant};

use ractor_flame::{CallOptions, Error, PoolEvent};

use super::WAIT;
use crate::support::functions::{Echo, Fail, Panic, Sleep, SleepWhere, WhereAmI};
use crate::support::{self, Events, Kind, config, eventually, key, pool_with, probe, sleep};

pub(super) async fn b10_invalid_options_are_rejected(kind: Kind) {
    for bad in [config(0), config(1).min(2), config(1).max_concurrency(0)] {
        let err = support::try_pool_with(kind, bad).await.err().expect("refused");
        assert!(matches!(err, Error::Config(_)), "{err:?}");
    }
}

pub(super) async fn b12_min_runners_boot_in_parallel_at_start(kind: Kind) {
    let events = Events::default();
    let pool = pool_with(kind, events.hooks(config(3).min(2))).await;
    support::runners(&pool, 2).await;
    // Both boots started before either finished: in parallel.
    let all = events.all();
    assert!(
        matches!(
            all[..2],
            [
                PoolEvent::GrowStart { target: 1, .. },
                PoolEvent::GrowStart { target: 2, .. }
            ]
        ),
        "{all:?}"
    );
    pool.stop().await;
}

pub(super) async fn b13_checkout_picks_the_least_loaded_runner(kind: Kind) {
    let pool = pool_with(kind, config(2).min(2).max_concurrency(10)).await;
    support::runners(&pool, 2).await;
    let hold = |ms| {
        let (pool, args) = (pool.pool.clone(), sleep(&key(), ms));
        tokio::spawn(async move { pool.call::<SleepWhere>(args).await })
    };
    // A long call takes one runner, a short one the other and ends: loads
    // are now 1 and 0, and the runner with 0 is the one that served last.
    // "First runner with room" sends the short call (and the next) to the
    // long call's runner; round robin sends the next call back to it.
    let long = hold(3_000);
    support::busy(&pool, 1).await;
    let short = hold(1).await.unwrap().unwrap();
    support::busy(&pool, 1).await;
    let next = pool.call::<WhereAmI>(()).await.unwrap();
    let again = pool.call::<WhereAmI>(()).await.unwrap();
    let long = long.await.unwrap().unwrap();
    assert_ne!(short.runner, long.runner, "the second call went to the idle runner");
    assert_ne!(next.runner, long.runner, "not the runner holding the work");
    assert_eq!(again.runner, next.runner, "still the less loaded runner");
    pool.stop().await;
}

pub(super) async fn b14_growth_boots_only_what_booting_runners_cannot_absorb(kind: Kind) {
    let events = Events::default();
    let pool = pool_with(kind, events.hooks(config(4).max_concurrency(2))).await;
    let k = key();
    let calls: Vec<_> = (0..3).map(|_| support::sleeping(&pool, &k, 100)).collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    // Three waiting callers, two slots per runner: two boots, not three.
    assert_eq!(events.grow_starts(), 2, "{:?}", events.all());
    pool.stop().await;
}

pub(super) async fn b15_at_max_callers_wait_fifo_and_a_bounded_queue_refuses(kind: Kind) {
    let pool = pool_with(kind, config(1).max_concurrency(1).queue_capacity(2)).await;
    let holder = support::sleeping(&pool, &key(), 300);
    support::busy(&pool, 1).await;
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for (n, name) in ["first", "second"].into_iter().enumerate() {
        let (pool2, order) = (pool.pool.clone(), order.clone());
        waiters.push(tokio::spawn(async move {
            let out = pool2.call::<Echo>(name.into()).await.unwrap();
            order.lock().unwrap().push(out);
        }));
        eventually("the caller queues", WAIT, || async {
            pool.stats().await.unwrap().waiting == n + 1
        })
        .await;
    }
    let err = pool.call::<Echo>("third".into()).await.unwrap_err();
    assert_eq!(err, Error::QueueFull { capacity: 2 });
    holder.await.unwrap().unwrap();
    for w in waiters {
        w.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec!["first", "second"]);
    pool.stop().await;
}

pub(super) async fn b16_waiters_that_gave_up_are_skipped(kind: Kind) {
    let events = Events::default();
    let pool = pool_with(kind, events.hooks(config(1).max_concurrency(1))).await;
    let (k_hold, k_timed_out, k_dropped, k_live) = (key(), key(), key(), key());
    let holder = {
        let (pool, args) = (pool.pool.clone(), sleep(&k_hold, 2_500));
        tokio::spawn(async move { pool.call::<SleepWhere>(args).await })
    };
    support::busy(&pool, 1).await;
    // Two waiters queue ahead of the live one and give up: one passes its
    // deadline, the other's caller goes away.
    let dropped = support::sleeping(&pool, &k_dropped, 1);
    eventually("the first waiter queues", WAIT, || async {
        pool.stats().await.unwrap().waiting == 1
    })
    .await;
    // Its deadline passes after the live waiter queued, before the slot frees.
    let timed_out = tokio::spawn({
        let pool = pool.pool.clone();
        let args = sleep(&k_timed_out, 1);
        async move {
            pool.call_with::<Sleep>(args, CallOptions::new().timeout(Duration::from_millis(1_000)))
                .await
        }
    });
    eventually("the second waiter queues", WAIT, || async {
        pool.stats().await.unwrap().waiting == 2
    })
    .await;
    let live = {
        let (pool, args) = (pool.pool.clone(), sleep(&k_live, 1));
        tokio::spawn(async move {
            pool.call_with::<SleepWhere>(args, CallOptions::new().timeout(Duration::from_secs(8)))
                .await
        })
    };
    eventually("the live waiter queues behind them", WAIT, || async {
        pool.stats().await.unwrap().waiting == 3
    })
    .await;
    dropped.abort();
    let err = timed_out.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::CheckoutTimeout { .. }), "{err:?}");
    assert_eq!(
        pool.stats().await.unwrap().waiting,
        1,
        "only the live waiter still waits"
    );
    assert_eq!(
        pool.stats().await.unwrap().busy,
        1,
        "the holder still holds the one slot"
    );
    // The one slot frees: it goes to the live waiter behind the two that
    // gave up, on the same runner (nothing booted for the dead ones).
    let held = holder.await.unwrap().unwrap();
    let served = live.await.unwrap().expect("the live waiter is served");
    assert_eq!(served.runner, held.runner);
    assert_eq!(events.grow_starts(), 1, "{:?}", events.all());
    for k in [&k_timed_out, &k_dropped] {
        let counts = probe(&pool, k).await;
        assert_eq!(counts.running + counts.completed + counts.dropped, 0, "never served");
    }
    assert_eq!(probe(&pool, &k_live).await.completed, 1);
    support::busy(&pool, 0).await;
    pool.stop().await;
}

pub(super) async fn b17_a_fresh_runner_serves_its_waiters_at_once(kind: Kind) {
    let events = Events::default();
    let pool = pool_with(kind, events.hooks(config(1).max_concurrency(3))).await;
    let k = key();
    let calls: Vec<_> = (0..3).map(|_| support::sleeping(&pool, &k, 400)).collect();
    support::busy(&pool, 3).await;
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(events.grow_starts(), 1);
    pool.stop().await;
}

pub(super) async fn b19_hooks_report_growth_and_shrink(kind: Kind) {
    let events = Events::default();
    let pool = pool_with(
        kind,
        events.hooks(config(1).idle_shutdown_after(Duration::from_millis(100))),
    )
    .await;
    pool.call::<Echo>("x".into()).await.unwrap();
    eventually("the idle runner leaves", WAIT, || async { events.shrinks() == 1 }).await;
    // Grow start, grow end, shrink: each names the one runner, and the grow
    // end says how long its boot took.
    let all = events.all();
    let [
        PoolEvent::GrowStart {
            target: 1, runner: a, ..
        },
        PoolEvent::GrowEnd {
            result: Ok(()),
            count: 1,
            runner: b,
            boot_time,
            ..
        },
        PoolEvent::Shrink {
            count: 0, runner: c, ..
        },
    ] = all.as_slice()
    else {
        panic!("unexpected hook events: {all:?}")
    };
    assert!(a == b && b == c, "{all:?}");
    assert!(*boot_time > Duration::ZERO && *boot_time < WAIT, "{boot_time:?}");
    pool.stop().await;
}

pub(super) async fn b20_every_call_checks_in_exactly_once(kind: Kind) {
    let pool = pool_with(kind, config(1).max_concurrency(4)).await;
    pool.call::<Echo>("ok".into()).await.unwrap();
    let _ = pool.call::<Fail>("e".into()).await.unwrap_err();
    let _ = pool.call::<Panic>("p".into()).await.unwrap_err();
    let _ = pool
        .call_with::<Sleep>(
            sleep(&key(), 5_000),
            CallOptions::new().timeout(Duration::from_millis(50)),
        )
        .await
        .unwrap_err();
    let k = key();
    let cancelled = support::sleeping(&pool, &k, 5_000);
    eventually("the call runs", WAIT, || async { probe(&pool, &k).await.running == 1 }).await;
    cancelled.abort();
    support::busy(&pool, 0).await;
    // A late or duplicate checkin for an unknown runner is harmless.
    pool.actor()
        .cast(ractor_flame::PoolMessage::Internal(
            ractor_flame::actors::Internal::checkin(ractor_flame::RunnerId::new()),
        ))
        .unwrap();
    assert_eq!(pool.call::<Echo>("alive".into()).await.unwrap(), "alive");
    assert_eq!(pool.stats().await.unwrap().busy, 0);
    pool.stop().await;
}

pub(super) async fn b21_a_dying_runner_fails_its_calls_and_the_pool_refills_to_min(kind: Kind) {
    let pool = pool_with(kind, config(2).min(1)).await;
    support::runners(&pool, 1).await;
    let first = pool.call::<WhereAmI>(()).await.unwrap();
    let k = key();
    let in_flight = support::sleeping(&pool, &k, 10_000);
    support::busy(&pool, 1).await;
    let started = Instant::now();
    match &pool.local {
        Some(local) => assert_eq!(local.kill_runners(), 1),
        None => support::kill(first.pid, "KILL"),
    }
    let err = in_flight.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::RunnerDown { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "failed within 1 s");
    // At once, before the pool has even counted the loss, a new call avoids
    // the dead runner.
    assert_eq!(pool.call::<Echo>("next".into()).await.unwrap(), "next");
    // Refilled to `min`. The call above may have booted a runner of its
    // own before the pool counted the loss, so there may be two.
    eventually("the pool refills to min", WAIT, || async {
        let s = pool.stats().await.unwrap();
        s.runners >= 1 && s.booting == 0
    })
    .await;
    let second = pool.call::<WhereAmI>(()).await.unwrap();
    assert_ne!(first.runner, second.runner, "a new runner");
    pool.stop().await;
}
