//! Runners on standby (`PoolConfig::standby`): booted ahead of demand,
//! handed no work while the runners in service have room, admitted at
//! once when the pool grows (the call is served by the standby runner, not
//! by a boot it waits for) and replaced; reclaimed on idle like any runner,
//! and not replaced until work comes back. Local, process and Docker.

use std::time::Duration;

use ractor_flame::{PoolEvent, PoolStats};

use super::WAIT;
use crate::support::functions::WhereAmI;
use crate::support::{self, Kind, config, eventually, key, pool_with, sleep, sleeping};

async fn stats(pool: &ractor_flame::Pool) -> PoolStats {
    pool.stats().await.unwrap()
}

/// Growth takes the runner on standby: the call that made the pool grow
/// ran on the runner that booted as standby, and a new one boots in its
/// place. While the runner in service has room, the standby takes nothing.
pub(super) async fn standby_runners_take_growth_without_a_boot(kind: Kind) {
    let pool = pool_with(kind, config(3).min(1).max_concurrency(2).standby(1)).await;
    let mut events = pool.events();
    eventually("one runner in service and one on standby", WAIT, || async {
        let s = stats(&pool).await;
        (s.runners, s.standby, s.booting) == (1, 1, 0)
    })
    .await;
    // Which of the two booted runners is the standby: the one that has not
    // served the probe call (the only runner in service serves it).
    let serving = pool.call::<WhereAmI>(()).await.unwrap().runner;
    // Two sleeps fill the runner in service (two slots); the standby takes
    // neither.
    let k = key();
    let held = [sleeping(&pool, &k, 10_000), sleeping(&pool, &k, 10_000)];
    support::busy(&pool, 2).await;
    let s = stats(&pool).await;
    assert_eq!((s.runners, s.standby), (1, 1), "{s:?}");
    // Both runners have booted: their events are behind us.
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(1), events.recv()).await {}
    // A third call needs growth: the standby serves it.
    let grown = pool.call::<WhereAmI>(()).await.unwrap().runner;
    assert_ne!(grown, serving, "the growth's call did not run on the standby runner");
    let mut booted = Vec::new();
    while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(1), events.recv()).await {
        if let PoolEvent::GrowEnd { runner, .. } = event {
            booted.push(format!("{runner:?}"));
        }
    }
    // The runner that served the growth was up before the growth was
    // asked for: no boot since served it.
    assert!(
        !booted.contains(&grown),
        "the growth's call waited for a boot instead of taking the standby"
    );
    // Another runner takes the standby's place.
    eventually("a new standby", WAIT, || async {
        let s = stats(&pool).await;
        (s.runners, s.standby) == (2, 1)
    })
    .await;
    for call in held {
        call.abort();
    }
    pool.stop().await;
}

/// A standby runner that idles out leaves, and is not replaced while no
/// work comes; work that needs the pool brings the standby back.
pub(super) async fn standby_runners_leave_on_idle_and_come_back_with_work(kind: Kind) {
    let pool = pool_with(
        kind,
        config(2).standby(1).idle_shutdown_after(Duration::from_millis(300)),
    )
    .await;
    eventually("a standby", WAIT, || async { stats(&pool).await.standby == 1 }).await;
    eventually("the standby idles out", WAIT, || async {
        let s = stats(&pool).await;
        (s.runners, s.standby, s.booting) == (0, 0, 0)
    })
    .await;
    // Stays gone: nothing boots without work (scale to zero).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = stats(&pool).await;
    assert_eq!((s.runners, s.standby, s.booting), (0, 0, 0), "{s:?}");
    // Work: served, and a standby boots again beside it.
    let _ = pool
        .call::<crate::support::functions::Sleep>(sleep(&key(), 1))
        .await
        .unwrap();
    eventually("a standby again", WAIT, || async { stats(&pool).await.standby == 1 }).await;
    pool.stop().await;
}
