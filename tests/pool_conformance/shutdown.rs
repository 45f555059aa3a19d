//! How runners go (B22-B24, B29): idle runners stop (never in the middle
//! of work, and only when the idle predicate agrees), single-use runners
//! stop after one call, and stopping a pool drains it and stops every
//! runner.

use std::time::{Duration, Instant};

use ractor_flame::IdleShutdown;

use super::WAIT;
use crate::support::functions::{self, AllowIdle, Echo, Fail, IdleAsks, Sleep, SleepWhere, WhereAmI};
use crate::support::{self, Events, Kind, config, eventually, key, pool_with, probe, sleep};

pub(super) async fn b22_idle_runners_stop_and_min_runners_follow_their_own_setting(kind: Kind) {
    let cfg = config(2)
        .min(1)
        .max_concurrency(1)
        .idle_shutdown_after(Duration::from_millis(100));
    let pool = pool_with(kind, cfg).await;
    // Two concurrent calls: the min runner and one more. Both at work at
    // once means two runners (one slot each); the count is read while they
    // work, since the extra runner may idle down soon after its call.
    let k = key();
    let calls: Vec<_> = (0..2).map(|_| support::sleeping(&pool, &k, 1_000)).collect();
    support::busy(&pool, 2).await;
    assert_eq!(pool.stats().await.unwrap().runners, 2);
    for c in calls {
        c.await.unwrap().unwrap();
    }
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

pub(super) async fn b22_an_idle_runner_leaves_without_waiting_out_the_drain_budget(kind: Kind) {
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

pub(super) async fn b22_an_idle_predicate_holds_the_runner_until_it_agrees(kind: Kind) {
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

pub(super) async fn b23_single_use_runners_stop_after_their_first_call(kind: Kind) {
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

/// With `single_use`, the user chooses what `min` means: by default every
/// runner is single-use, `min` ones too (each is replaced after its call);
/// `single_use_beyond_min` keeps the `min` runners serving call after call
/// and makes only the runners beyond them single-use.
pub(super) async fn b62_single_use_runners_count_against_min_as_chosen(kind: Kind) {
    // Every runner single-use: the min runner stops after its call and a
    // new one takes its place.
    let events = Events::default();
    let pool = pool_with(kind, events.hooks(config(2).min(1).single_use(true))).await;
    support::runners(&pool, 1).await;
    let first = pool.call::<WhereAmI>(()).await.unwrap();
    eventually("the used min runner stops", WAIT, || async { events.shrinks() == 1 }).await;
    support::runners(&pool, 1).await;
    let second = pool.call::<WhereAmI>(()).await.unwrap();
    assert_ne!(first.runner, second.runner, "the min runner was single-use");
    pool.stop().await;

    // Only the runners beyond min: the min runner serves every call made
    // one after another, and a runner booted for a second call at once
    // stops after it.
    let events = Events::default();
    let cfg = config(2).min(1).single_use(true).single_use_beyond_min(true);
    let pool = pool_with(kind, events.hooks(cfg)).await;
    support::runners(&pool, 1).await;
    let floor = pool.call::<WhereAmI>(()).await.unwrap();
    for _ in 0..3 {
        assert_eq!(pool.call::<WhereAmI>(()).await.unwrap().runner, floor.runner);
    }
    let k = key();
    // Long enough that a runner booted meanwhile (a pod: a second or
    // so) serves the burst while the min runner is still busy.
    let held = {
        let (pool, args) = (pool.pool.clone(), sleep(&k, 2_000));
        tokio::spawn(async move { pool.call::<SleepWhere>(args).await })
    };
    support::busy(&pool, 1).await;
    let burst = pool.call::<WhereAmI>(()).await.unwrap();
    assert_ne!(burst.runner, floor.runner, "the min runner was busy");
    assert_eq!(held.await.unwrap().unwrap().runner, floor.runner);
    eventually("the runner beyond min stops after its call", WAIT, || async {
        events.shrinks() == 1
    })
    .await;
    assert_eq!(pool.call::<WhereAmI>(()).await.unwrap().runner, floor.runner);
    assert_eq!(pool.stats().await.unwrap().runners, 1);
    pool.stop().await;
}

pub(super) async fn b24_stopping_a_pool_drains_then_stops_every_runner(kind: Kind) {
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
        Kind::Kubernetes => runner_pods_gone(&pool).await,
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

/// No runner pod, secret or container of the pool's cluster is left soon
/// after `stop` returned.
#[cfg(all(feature = "kubernetes", feature = "docker"))]
async fn runner_pods_gone(pool: &support::TestPool) {
    let cluster = pool
        .keep
        .as_ref()
        .and_then(|keep| keep.downcast_ref::<support::kube::Cluster>())
        .expect("a Kubernetes pool keeps its cluster");
    eventually(
        "no runner pod, secret or container is left",
        Duration::from_secs(5),
        || async {
            cluster.runner_pods().is_empty()
                && cluster.standin.secrets().is_empty()
                && cluster.standin.containers().await.is_empty()
        },
    )
    .await;
}

#[cfg(not(all(feature = "kubernetes", feature = "docker")))]
async fn runner_pods_gone(_: &support::TestPool) {
    unreachable!("the kubernetes or docker feature is off")
}

pub(super) async fn b29_idle_shutdown_never_interrupts_work(kind: Kind) {
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
