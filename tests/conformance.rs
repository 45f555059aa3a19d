//! The behaviour suite of `shared/FLAME-BEHAVIOUR.md`, run unchanged on every
//! backend: each behaviour is an `async fn(kind)`, instantiated per backend
//! by the `conformance!` macro at the bottom.

mod support;

use std::time::{Duration, Instant};

use ractor_flame::{CallOptions, Error, IdleShutdown, PoolEvent};
use support::functions::{
    self, AllowIdle, Echo, Fail, IdleAsks, Keeper, KeeperArgs, KeeperCast, Panic, Sleep, SleepWhere, WhereAmI,
};
use support::{Events, Kind, config, eventually, key, pool_with, probe, sleep};

const WAIT: Duration = Duration::from_secs(10);

async fn b01_call_runs_on_a_runner_and_returns_its_value(kind: Kind) {
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

async fn b02_default_budgets_are_boot_timeout_then_timeout(kind: Kind) {
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

async fn b03_explicit_timeout_is_a_total_budget(kind: Kind) {
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

async fn b04_no_slot_in_time_is_a_checkout_timeout_and_leaves_the_queue(kind: Kind) {
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

async fn b05_deadline_aborts_the_remote_task(kind: Kind) {
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

async fn b06_remote_error_and_panic_reach_the_caller_typed(kind: Kind) {
    let pool = pool_with(kind, config(1)).await;
    let err = pool.call::<Fail>("disk full".into()).await.unwrap_err();
    assert_eq!(
        err,
        Error::Remote {
            function: "test.fail".into(),
            message: "disk full".into()
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

async fn b07_dropping_the_call_cancels_the_remote_task(kind: Kind) {
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

async fn b08_cast_returns_at_once_and_holds_a_slot_while_it_runs(kind: Kind) {
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

async fn b09_calls_to_a_stopped_pool_fail_at_once(kind: Kind) {
    let pool = pool_with(kind, config(1)).await;
    pool.stop().await;
    let started = Instant::now();
    assert_eq!(pool.call::<Echo>("x".into()).await.unwrap_err(), Error::PoolNotRunning);
    assert_eq!(pool.cast::<Echo>("x".into()).unwrap_err(), Error::PoolNotRunning);
    assert_eq!(pool.stats().await.unwrap_err(), Error::PoolNotRunning);
    assert!(started.elapsed() < Duration::from_millis(100));
}

async fn b10_invalid_options_are_rejected(kind: Kind) {
    for bad in [config(0), config(1).min(2), config(1).max_concurrency(0)] {
        let err = support::try_pool_with(kind, bad).await.err().expect("refused");
        assert!(matches!(err, Error::Config(_)), "{err:?}");
    }
}

async fn b12_min_runners_boot_in_parallel_at_start(kind: Kind) {
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

async fn b13_checkout_picks_the_least_loaded_runner(kind: Kind) {
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

async fn b14_growth_boots_only_what_booting_runners_cannot_absorb(kind: Kind) {
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

async fn b15_at_max_callers_wait_fifo_and_a_bounded_queue_refuses(kind: Kind) {
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

async fn b16_waiters_that_gave_up_are_skipped(kind: Kind) {
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

async fn b17_a_fresh_runner_serves_its_waiters_at_once(kind: Kind) {
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

async fn b19_hooks_report_growth_and_shrink(kind: Kind) {
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

async fn b20_every_call_checks_in_exactly_once(kind: Kind) {
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

async fn b21_a_dying_runner_fails_its_calls_and_the_pool_refills_to_min(kind: Kind) {
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

async fn b22_idle_runners_stop_and_min_runners_follow_their_own_setting(kind: Kind) {
    let cfg = config(2)
        .min(1)
        .max_concurrency(1)
        .idle_shutdown_after(Duration::from_millis(100));
    let pool = pool_with(kind, cfg).await;
    // Two concurrent calls: the min runner and one more.
    let k = key();
    let calls: Vec<_> = (0..2).map(|_| support::sleeping(&pool, &k, 200)).collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(pool.stats().await.unwrap().runners, 2);
    eventually("the extra runner idles down", WAIT, || async {
        let s = pool.stats().await.unwrap();
        s.runners == 1 && s.booting == 0
    })
    .await;
    pool.stop().await;

    // Min runners with their own idle setting leave too, and are not refilled.
    let events = Events::default();
    let cfg = config(1).min(1).min_idle_shutdown_after(Duration::from_millis(100));
    let pool = pool_with(kind, events.hooks(cfg)).await;
    eventually("the min runner idles down", WAIT, || async { events.shrinks() == 1 }).await;
    let s = pool.stats().await.unwrap();
    assert_eq!((s.runners, s.booting), (0, 0));
    pool.stop().await;
}

async fn b22_an_idle_runner_leaves_without_waiting_out_the_drain_budget(kind: Kind) {
    let events = Events::default();
    let cfg = config(1)
        .idle_shutdown_after(Duration::from_millis(100))
        .shutdown_timeout(Duration::from_secs(60));
    let pool = pool_with(kind, events.hooks(cfg)).await;
    pool.call::<Echo>("x".into()).await.unwrap();
    let done = Instant::now();
    eventually("the idle runner leaves", WAIT, || async { events.shrinks() == 1 }).await;
    assert!(done.elapsed() < Duration::from_secs(5), "{:?}", done.elapsed());
    pool.stop().await;
}

async fn b22_an_idle_predicate_holds_the_runner_until_it_agrees(kind: Kind) {
    let events = Events::default();
    let idle = Duration::from_millis(100);
    let cfg = config(1).idle_shutdown_after(IdleShutdown::when(idle, functions::IDLE_PREDICATE));
    let pool = pool_with(kind, events.hooks(cfg)).await;
    let first = pool.call::<WhereAmI>(()).await.unwrap();
    // Idle time has to pass for the predicate to be asked, and any call
    // resets it: look only every few idle periods.
    let started = Instant::now();
    loop {
        tokio::time::sleep(idle * 3).await;
        if pool.call::<IdleAsks>(()).await.unwrap() >= 3 {
            break;
        }
        assert!(started.elapsed() < WAIT, "the idle predicate was never asked");
    }
    // Asked (and refused) several times: the runner stayed.
    assert_eq!(events.shrinks(), 0, "{:?}", events.all());
    assert_eq!(pool.call::<WhereAmI>(()).await.unwrap().runner, first.runner);
    // It agrees: the runner idles down.
    pool.call::<AllowIdle>(true).await.unwrap();
    eventually("the runner idles down once the predicate agrees", WAIT, || async {
        events.shrinks() == 1
    })
    .await;
    let s = pool.stats().await.unwrap();
    assert_eq!((s.runners, s.booting), (0, 0));
    pool.stop().await;
}

async fn b23_single_use_runners_stop_after_their_first_call(kind: Kind) {
    let events = Events::default();
    let pool = pool_with(kind, events.hooks(config(2).single_use(true))).await;
    let a = pool.call::<WhereAmI>(()).await.unwrap();
    eventually("the used runner stops", WAIT, || async { events.shrinks() == 1 }).await;
    let _ = pool.call::<Fail>("x".into()).await.unwrap_err();
    eventually("the failed call's runner stops too", WAIT, || async {
        events.shrinks() == 2
    })
    .await;
    let b = pool.call::<WhereAmI>(()).await.unwrap();
    assert_ne!(a.runner, b.runner);
    assert_eq!(events.grow_starts(), 3);
    pool.stop().await;
}

async fn b24_stopping_a_pool_drains_then_stops_every_runner(kind: Kind) {
    let pool = pool_with(kind, config(2).min(2)).await;
    support::runners(&pool, 2).await;
    let k = key();
    let in_flight = {
        let (pool, args) = (pool.pool.clone(), sleep(&k, 300));
        tokio::spawn(async move { pool.call::<SleepWhere>(args).await })
    };
    support::busy(&pool, 1).await;
    // The least loaded runner: the other one (B13).
    let idle = pool.call::<WhereAmI>(()).await.unwrap();
    pool.stop().await;
    let drained = in_flight.await.unwrap().expect("the call in flight drained");
    assert_ne!(drained.runner, idle.runner);
    match kind {
        Kind::Local => {
            let local = pool.local.as_ref().unwrap();
            assert_eq!(local.system_shutdowns(), 2, "each runner shut down once");
        }
        Kind::Process => {
            for place in [&drained, &idle] {
                assert!(!support::alive(place.pid), "runner process {} is gone", place.pid);
            }
        }
        Kind::Docker => docker_containers_gone(pool.name()).await,
    }
}

/// No container of pool `name` runs once `stop` returned, and none is left
/// (running or not) soon after.
#[cfg(feature = "docker")]
async fn docker_containers_gone(name: &str) {
    let docker = bollard::Docker::connect_with_defaults().expect("docker client");
    assert_eq!(
        support::docker::running(&docker, name).await,
        Vec::<String>::new(),
        "no runner container outlives stop()"
    );
    eventually("no labelled container is left", Duration::from_secs(3), || async {
        support::docker::containers(&docker, name).await == 0
    })
    .await;
}

#[cfg(not(feature = "docker"))]
async fn docker_containers_gone(_: &str) {
    unreachable!("the docker feature is off")
}

async fn b29_idle_shutdown_never_interrupts_work(kind: Kind) {
    let events = Events::default();
    let pool = pool_with(
        kind,
        events.hooks(config(1).idle_shutdown_after(Duration::from_millis(50))),
    )
    .await;
    let k = key();
    pool.cast::<Sleep>(sleep(&k, 300)).unwrap();
    assert_eq!(pool.call::<Sleep>(sleep(&k, 300)).await.unwrap(), 300);
    eventually("the cast completed", WAIT, || async {
        probe(&pool, &k).await.completed == 2
    })
    .await;
    assert_eq!(events.grow_starts(), 1, "the same runner served all of it");
    eventually("then it idles down", WAIT, || async { events.shrinks() == 1 }).await;
    pool.stop().await;
}

async fn b06_unknown_function_is_a_clear_error(kind: Kind) {
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

async fn b32_place_child_starts_an_actor_that_the_handle_casts_and_calls(kind: Kind) {
    let pool = pool_with(kind, config(1)).await;
    let k = key();
    let child = pool
        .place_child::<Keeper>(KeeperArgs {
            key: k.clone(),
            start: 10,
        })
        .await
        .unwrap();
    child.cast(KeeperCast::Add(5)).unwrap();
    child.cast(KeeperCast::Add(7)).unwrap();
    let (total, pid) = child.call(()).await.unwrap();
    assert_eq!(total, 22, "casts arrive in order, before the call");
    if kind != Kind::Local {
        assert_ne!(pid, std::process::id(), "the child lives on the runner");
    }
    assert_eq!(child.runner().to_string().len(), 8);
    assert!(child.is_alive());
    // Per-call options, as `Pool::call_with` takes them.
    let opts = CallOptions::new().timeout(Duration::from_secs(5));
    assert_eq!(child.call_with((), opts).await.unwrap().0, 22);
    drop(child);
    pool.stop().await;
}

async fn b33_a_placed_child_holds_a_slot_and_keeps_its_runner_up(kind: Kind) {
    let events = Events::default();
    let idle = Duration::from_millis(100);
    let pool = pool_with(
        kind,
        events.hooks(config(1).max_concurrency(1).idle_shutdown_after(idle)),
    )
    .await;
    let child = pool
        .place_child::<Keeper>(KeeperArgs { key: key(), start: 0 })
        .await
        .unwrap();
    assert_eq!(pool.stats().await.unwrap().busy, 1, "the child holds a slot");
    let err = pool
        .call_with::<Echo>("no room".into(), CallOptions::new().timeout(Duration::from_millis(100)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CheckoutTimeout { .. }), "{err:?}");
    // Several idle periods pass; a runner with a live child stays.
    tokio::time::sleep(idle * 4).await;
    assert_eq!(events.shrinks(), 0);
    assert_eq!(child.call(()).await.unwrap().0, 0);
    // Its slot returns when it stops, and then the runner may idle down.
    drop(child);
    support::busy(&pool, 0).await;
    eventually("then the runner idles down", WAIT, || async { events.shrinks() == 1 }).await;
    pool.stop().await;
}

async fn b33_a_crashed_child_frees_its_slot_while_its_handle_is_held(kind: Kind) {
    let cfg = config(1)
        .max_concurrency(1)
        .idle_shutdown_after(Duration::from_millis(200));
    let pool = pool_with(kind, cfg).await;
    let k = key();
    let child = pool
        .place_child::<Keeper>(KeeperArgs { key: k, start: 0 })
        .await
        .unwrap();
    assert_eq!(pool.stats().await.unwrap().busy, 1);
    child.cast(KeeperCast::Crash).unwrap();
    // The handle is still held; the slot comes back all the same.
    eventually("the crashed child's slot returns", WAIT, || async {
        pool.stats().await.unwrap().busy == 0
    })
    .await;
    assert!(!child.is_alive());
    match child.call(()).await {
        Err(Error::ChildStopped { .. }) => {}
        other => panic!("expected ChildStopped, got {other:?}"),
    }
    // With its one slot free, the runner serves others, then idles out.
    assert_eq!(pool.call::<Echo>("free".into()).await.unwrap(), "free");
    eventually("the runner idles out while the handle is held", WAIT, || async {
        pool.stats().await.unwrap().runners == 0
    })
    .await;
    drop(child);
    pool.stop().await;
}

async fn b34_linked_children_stop_with_their_handle_and_exits_are_reported(kind: Kind) {
    let pool = pool_with(kind, config(1)).await;
    // Linked: dropping the last handle stops the child.
    let k = key();
    let child = pool
        .place_child::<Keeper>(KeeperArgs {
            key: k.clone(),
            start: 0,
        })
        .await
        .unwrap();
    let clone = child.clone();
    drop(child);
    assert_eq!(clone.call(()).await.unwrap().0, 0, "a clone keeps it alive");
    drop(clone);
    eventually("the linked child stopped", WAIT, || async {
        probe(&pool, &k).await.completed == 1
    })
    .await;

    // A crash is reported to the holder; later calls fail clearly.
    let child = pool
        .place_child::<Keeper>(KeeperArgs { key: key(), start: 0 })
        .await
        .unwrap();
    child.cast(KeeperCast::Crash).unwrap();
    let reason = tokio::time::timeout(WAIT, child.exited()).await.unwrap();
    assert!(reason.contains("asked to crash"), "{reason}");
    assert!(!child.is_alive());
    let err = child.call(()).await.unwrap_err();
    assert!(
        matches!(&err, Error::ChildStopped { reason } if reason.contains("asked to crash")),
        "{err:?}"
    );
    drop(child);

    // Unlinked: the child outlives its handle and holds its slot until it exits.
    let k = key();
    let child = pool
        .place_child_with::<Keeper>(
            KeeperArgs {
                key: k.clone(),
                start: 0,
            },
            CallOptions::new().link(false),
        )
        .await
        .unwrap();
    child.cast(KeeperCast::StopAfter(300)).unwrap();
    drop(child);
    assert_eq!(
        probe(&pool, &k).await.running,
        1,
        "still alive after its handle is gone"
    );
    assert_eq!(pool.stats().await.unwrap().busy, 1, "and still holding its slot");
    eventually("it exits on its own", WAIT, || async {
        probe(&pool, &k).await.completed == 1
    })
    .await;
    support::busy(&pool, 0).await;
    pool.stop().await;
}

macro_rules! conformance {
    (docker: $($dname:ident),* $(,)?) => {
        #[cfg(feature = "docker")]
        mod docker {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $dname() {
                    if super::support::docker::engine(stringify!($dname)).await.is_none() {
                        return;
                    }
                    super::$dname(super::Kind::Docker).await
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Local).await
                }
            )*
        }
        mod process {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Process).await
                }
            )*
        }
    };
}

conformance!(
    b01_call_runs_on_a_runner_and_returns_its_value,
    b02_default_budgets_are_boot_timeout_then_timeout,
    b03_explicit_timeout_is_a_total_budget,
    b04_no_slot_in_time_is_a_checkout_timeout_and_leaves_the_queue,
    b05_deadline_aborts_the_remote_task,
    b06_remote_error_and_panic_reach_the_caller_typed,
    b06_unknown_function_is_a_clear_error,
    b07_dropping_the_call_cancels_the_remote_task,
    b08_cast_returns_at_once_and_holds_a_slot_while_it_runs,
    b09_calls_to_a_stopped_pool_fail_at_once,
    b10_invalid_options_are_rejected,
    b12_min_runners_boot_in_parallel_at_start,
    b13_checkout_picks_the_least_loaded_runner,
    b14_growth_boots_only_what_booting_runners_cannot_absorb,
    b15_at_max_callers_wait_fifo_and_a_bounded_queue_refuses,
    b16_waiters_that_gave_up_are_skipped,
    b17_a_fresh_runner_serves_its_waiters_at_once,
    b19_hooks_report_growth_and_shrink,
    b20_every_call_checks_in_exactly_once,
    b21_a_dying_runner_fails_its_calls_and_the_pool_refills_to_min,
    b22_idle_runners_stop_and_min_runners_follow_their_own_setting,
    b22_an_idle_runner_leaves_without_waiting_out_the_drain_budget,
    b22_an_idle_predicate_holds_the_runner_until_it_agrees,
    b23_single_use_runners_stop_after_their_first_call,
    b24_stopping_a_pool_drains_then_stops_every_runner,
    b29_idle_shutdown_never_interrupts_work,
    b32_place_child_starts_an_actor_that_the_handle_casts_and_calls,
    b33_a_placed_child_holds_a_slot_and_keeps_its_runner_up,
    b33_a_crashed_child_frees_its_slot_while_its_handle_is_held,
    b34_linked_children_stop_with_their_handle_and_exits_are_reported,
);

// Where it applies on containers: everything but what kills runners by
// process id (the Docker fault tests kill through the engine instead).
conformance!(docker:
    b01_call_runs_on_a_runner_and_returns_its_value,
    b02_default_budgets_are_boot_timeout_then_timeout,
    b05_deadline_aborts_the_remote_task,
    b06_remote_error_and_panic_reach_the_caller_typed,
    b06_unknown_function_is_a_clear_error,
    b07_dropping_the_call_cancels_the_remote_task,
    b08_cast_returns_at_once_and_holds_a_slot_while_it_runs,
    b09_calls_to_a_stopped_pool_fail_at_once,
    b10_invalid_options_are_rejected,
    b13_checkout_picks_the_least_loaded_runner,
    b15_at_max_callers_wait_fifo_and_a_bounded_queue_refuses,
    b16_waiters_that_gave_up_are_skipped,
    b17_a_fresh_runner_serves_its_waiters_at_once,
    b19_hooks_report_growth_and_shrink,
    b20_every_call_checks_in_exactly_once,
    b22_idle_runners_stop_and_min_runners_follow_their_own_setting,
    b22_an_idle_runner_leaves_without_waiting_out_the_drain_budget,
    b22_an_idle_predicate_holds_the_runner_until_it_agrees,
    b23_single_use_runners_stop_after_their_first_call,
    b24_stopping_a_pool_drains_then_stops_every_runner,
    b29_idle_shutdown_never_interrupts_work,
    b32_place_child_starts_an_actor_that_the_handle_casts_and_calls,
    b33_a_placed_child_holds_a_slot_and_keeps_its_runner_up,
    b33_a_crashed_child_frees_its_slot_while_its_handle_is_held,
    b34_linked_children_stop_with_their_handle_and_exits_are_reported,
);
