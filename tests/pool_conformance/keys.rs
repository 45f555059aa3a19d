//! Keyed routing (B58): calls with the same key go back to the runner that
//! served the key last while it serves and has room, even when another
//! runner is less loaded; a key whose runner drains or dies moves to one
//! that serves.

use ractor_flame::{CallOptions, Error};

use super::WAIT;
use crate::support::functions::{Place, SleepWhere, WhereAmI};
use crate::support::{self, Kind, config, eventually, key, pool_with, sleep};

async fn where_keyed(pool: &ractor_flame::Pool, k: &str) -> Place {
    pool.call_with::<WhereAmI>((), CallOptions::new().key(k))
        .await
        .expect("keyed call")
}

pub(super) async fn b58_calls_with_a_key_return_to_its_runner_even_when_busier(kind: Kind) {
    let pool = pool_with(kind, config(4).min(4).max_concurrency(4)).await;
    support::runners(&pool, 4).await;
    // Eight keys, called in turn: each stays on one runner, and new keys
    // spread over the runners (two per runner) instead of piling on one.
    let keys: Vec<String> = (0..8).map(|i| format!("tenant-{i}")).collect();
    let mut homes = std::collections::HashMap::new();
    for round in 0..4 {
        for k in &keys {
            let place = where_keyed(&pool, k).await;
            let home = homes.entry(k.clone()).or_insert_with(|| place.runner.clone());
            assert_eq!(*home, place.runner, "{k}, round {round}");
        }
    }
    let mut per_runner = std::collections::HashMap::new();
    for home in homes.values() {
        *per_runner.entry(home.clone()).or_insert(0) += 1;
    }
    assert_eq!(per_runner.len(), 4, "{per_runner:?}");
    assert!(per_runner.values().all(|&n| n == 2), "{per_runner:?}");

    // Its runner is now the busiest (a long keyed call holds a slot), yet a
    // keyed call goes there; an unkeyed one goes to a less loaded runner.
    let home = homes["tenant-0"].clone();
    let long = {
        let (pool, args) = (pool.pool.clone(), sleep(&key(), 2_000));
        tokio::spawn(async move {
            pool.call_with::<SleepWhere>(args, CallOptions::new().key("tenant-0"))
                .await
        })
    };
    support::busy(&pool, 1).await;
    assert_eq!(where_keyed(&pool, "tenant-0").await.runner, home);
    assert_ne!(pool.call::<WhereAmI>(()).await.unwrap().runner, home);
    assert_eq!(long.await.unwrap().unwrap().runner, home);
    pool.stop().await;
}

pub(super) async fn b58_a_full_home_sends_the_key_elsewhere_and_it_moves(kind: Kind) {
    let pool = pool_with(kind, config(2).min(2).max_concurrency(1)).await;
    support::runners(&pool, 2).await;
    let home = where_keyed(&pool, "k").await.runner;
    // The home's only slot is taken: the key is served by the other runner,
    // which is its home from then on.
    let long = {
        let (pool, args) = (pool.pool.clone(), sleep(&key(), 2_000));
        tokio::spawn(async move { pool.call_with::<SleepWhere>(args, CallOptions::new().key("k")).await })
    };
    support::busy(&pool, 1).await;
    let moved = where_keyed(&pool, "k").await.runner;
    assert_ne!(moved, home);
    assert_eq!(long.await.unwrap().unwrap().runner, home);
    assert_eq!(where_keyed(&pool, "k").await.runner, moved, "the key's new home");
    pool.stop().await;
}

pub(super) async fn b58_a_key_moves_when_its_runner_drains(kind: Kind) {
    let pool = pool_with(kind, config(2).min(2).max_concurrency(4)).await;
    support::runners(&pool, 2).await;
    let a = where_keyed(&pool, "a").await.runner;
    let b = where_keyed(&pool, "b").await.runner;
    assert_ne!(a, b, "two keys, two runners");
    // `b`'s runner is busy, so a lower max retires `a`'s (idle) runner.
    let long = {
        let (pool, args) = (pool.pool.clone(), sleep(&key(), 1_000));
        tokio::spawn(async move { pool.call_with::<SleepWhere>(args, CallOptions::new().key("b")).await })
    };
    support::busy(&pool, 1).await;
    pool.resize(0, 1).await.unwrap();
    // At once, even before `a`'s runner has gone, the key is served by the
    // runner that stays.
    assert_eq!(where_keyed(&pool, "a").await.runner, b);
    assert_eq!(long.await.unwrap().unwrap().runner, b);
    eventually("one runner left", WAIT, || async {
        pool.stats().await.unwrap().runners == 1
    })
    .await;
    assert_eq!(where_keyed(&pool, "a").await.runner, b);
    pool.stop().await;
}

pub(super) async fn b58_a_key_moves_when_its_runner_dies(kind: Kind) {
    let pool = pool_with(kind, config(2).min(2).max_concurrency(4)).await;
    support::runners(&pool, 2).await;
    let first = where_keyed(&pool, "k").await;
    let in_flight = {
        let (pool, args) = (pool.pool.clone(), sleep(&key(), 10_000));
        tokio::spawn(async move { pool.call_with::<SleepWhere>(args, CallOptions::new().key("k")).await })
    };
    support::busy(&pool, 1).await;
    match &pool.local {
        // Every local runner goes; the key's next call boots a new one.
        Some(local) => assert_eq!(local.kill_runners(), 2),
        None => support::kill(first.pid, "KILL"),
    }
    let err = in_flight.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::RunnerDown { .. }), "{err:?}");
    // The key's next call goes to a live runner, even before the pool has
    // counted the loss, and that runner is its home from then on.
    let next = where_keyed(&pool, "k").await;
    assert_ne!(next.runner, first.runner);
    assert_eq!(where_keyed(&pool, "k").await.runner, next.runner, "its new home");
    pool.stop().await;
}
