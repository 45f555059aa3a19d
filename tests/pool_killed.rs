//! A Pool actor killed without its `post_stop` (a supervisor that panics, a
//! `kill()`) leaves no runner behind and no open gate.

mod support;

use std::time::Duration;

use ractor_flame::Error;
use support::functions::{Sleep, WhereAmI};
use support::{Kind, alive, config, eventually, key, pool_with, sleep};

/// Kills the pool actor of a pool whose two runners are both at work;
/// returns once the actor is gone.
async fn kill_pool_mid_work(pool: &ractor_flame::Pool) {
    let k = key();
    for _ in 0..2 {
        let (pool, args) = (pool.clone(), sleep(&k, 10_000));
        tokio::spawn(async move { pool.call::<Sleep>(args).await });
    }
    support::busy(pool, 2).await;
    pool.actor().kill();
    eventually("the pool actor is gone", Duration::from_secs(3), || async {
        !pool.is_running()
    })
    .await;
}

async fn new_calls_fail_with_pool_not_running(pool: &ractor_flame::Pool) {
    // The fast path too: a runner had free slots when the pool died.
    for _ in 0..3 {
        match pool.call::<WhereAmI>(()).await {
            Err(Error::PoolNotRunning) => {}
            other => panic!("a call through a killed pool: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b43_a_killed_pool_leaves_no_runner_process_and_no_open_gate() {
    let pool = pool_with(Kind::Process, config(2).min(2).max_concurrency(4)).await;
    support::runners(&pool, 2).await;
    // This test's runner processes: children of this process.
    let pids = support::chaos::runner_pids(support::runner_exe().as_ref());
    assert_eq!(pids.len(), 2, "{pids:?}");
    kill_pool_mid_work(&pool).await;
    new_calls_fail_with_pool_not_running(&pool).await;
    eventually("every runner process is gone", Duration::from_secs(3), || async {
        pids.iter().all(|pid| !alive(*pid))
    })
    .await;
}

#[cfg(feature = "docker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b43_a_killed_pool_leaves_no_container_and_no_open_gate() {
    let Some(docker) = support::docker::engine("b43_a_killed_pool_leaves_no_container_and_no_open_gate").await else {
        return;
    };
    let cfg = config(2).min(2).max_concurrency(4);
    let name = cfg.get_name().to_owned();
    let pool = pool_with(Kind::Docker, cfg).await;
    support::runners(&pool, 2).await;
    assert_eq!(support::docker::containers(&docker, &name).await, 2);
    kill_pool_mid_work(&pool).await;
    new_calls_fail_with_pool_not_running(&pool).await;
    eventually("every container is gone", Duration::from_secs(3), || async {
        support::docker::containers(&docker, &name).await == 0
    })
    .await;
}
