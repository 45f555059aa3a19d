//! Placed children (B32-B34): a child actor started on a runner, its slot,
//! its link to the handle, and how its exit is reported.

use std::time::Duration;

use ractor_flame::{CallOptions, Error};

use super::WAIT;
use crate::support::functions::{Echo, Keeper, KeeperArgs, KeeperCast};
use crate::support::{self, Events, Kind, config, eventually, key, pool_with, probe};

pub(super) async fn b32_place_child_starts_an_actor_that_the_handle_casts_and_calls(kind: Kind) {
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

pub(super) async fn b33_a_placed_child_holds_a_slot_and_keeps_its_runner_up(kind: Kind) {
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

pub(super) async fn b33_a_crashed_child_frees_its_slot_while_its_handle_is_held(kind: Kind) {
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

pub(super) async fn b34_linked_children_stop_with_their_handle_and_exits_are_reported(kind: Kind) {
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
