//! Live resize (B59): `min`, `max` and `max_concurrency` change while the
//! pool serves. A lower `max` retires the surplus runners, idle ones
//! first, and never cuts their work short; a higher `min` boots at once;
//! waiting callers take new room at once; invalid values change nothing.

use std::time::Duration;

use ractor_flame::observe::PoolEvents;
use ractor_flame::{CallOptions, Error, PoolEvent};

use super::WAIT;
use crate::support::functions::Echo;
use crate::support::{self, Events, Kind, config, eventually, key, pool_with};

/// The next `Resized` event's (min, max, max_concurrency, retiring).
async fn next_resized(events: &mut PoolEvents) -> (usize, usize, usize, usize) {
    tokio::time::timeout(WAIT, async {
        loop {
            if let PoolEvent::Resized {
                min,
                max,
                max_concurrency,
                retiring,
                ..
            } = events.recv().await.expect("pool events")
            {
                return (min, max, max_concurrency, retiring);
            }
        }
    })
    .await
    .expect("a Resized event")
}

pub(super) async fn b59_a_lower_max_drains_surplus_runners_after_their_work(kind: Kind) {
    let events = Events::default();
    let pool = pool_with(kind, events.hooks(config(3).min(3).max_concurrency(1))).await;
    support::runners(&pool, 3).await;
    let mut pool_events = pool.events();
    let k = key();
    let calls: Vec<_> = (0..2).map(|_| support::sleeping(&pool, &k, 1_500)).collect();
    support::busy(&pool, 2).await;

    pool.resize(0, 1).await.unwrap();
    assert_eq!(next_resized(&mut pool_events).await, (0, 1, 1, 2));
    // The idle runner goes first, while the work on the others still runs.
    eventually("the idle runner left", WAIT, || async { events.shrinks() >= 1 }).await;
    assert!(
        calls.iter().all(|c| !c.is_finished()),
        "the first runner to leave was the idle one"
    );
    // The retired busy runner's call is not cut short...
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 1_500);
    }
    // ...and it leaves once it is over; one runner stays and serves.
    eventually("one runner left", WAIT, || async {
        pool.stats().await.unwrap().runners == 1
    })
    .await;
    assert_eq!(pool.call::<Echo>("still".into()).await.unwrap(), "still");
    let stats = pool.stats().await.unwrap();
    assert_eq!((stats.runners, stats.booting), (1, 0), "nothing refilled past max");
    assert_eq!(events.shrinks(), 2, "{:?}", events.all());
    assert_eq!(events.grow_starts(), 3, "no boot while above max");
    pool.stop().await;
}

pub(super) async fn b59_a_higher_min_boots_at_once(kind: Kind) {
    let events = Events::default();
    let pool = pool_with(kind, events.hooks(config(3))).await;
    let mut pool_events = pool.events();
    assert_eq!(pool.stats().await.unwrap().runners, 0);
    pool.resize(2, 3).await.unwrap();
    assert_eq!(next_resized(&mut pool_events).await, (2, 3, 100, 0));
    // Both boots started with the change, before any call asked for them.
    assert_eq!(events.grow_starts(), 2, "{:?}", events.all());
    support::runners(&pool, 2).await;
    pool.stop().await;
}

/// A pool of one runner with one slot: a call holds it for 10 s, and a
/// caller of `Echo(text)` waits behind it.
async fn one_held_one_waiting(
    kind: Kind,
    text: &str,
) -> (
    Events,
    support::TestPool,
    tokio::task::JoinHandle<Result<u64, Error>>,
    tokio::task::JoinHandle<Result<String, Error>>,
) {
    let events = Events::default();
    let pool = pool_with(kind, events.hooks(config(1).max_concurrency(1))).await;
    let holder = support::sleeping(&pool, &key(), 10_000);
    support::busy(&pool, 1).await;
    let waiter = {
        let (pool, text) = (pool.pool.clone(), text.to_owned());
        tokio::spawn(async move { pool.call::<Echo>(text).await })
    };
    eventually("a waiter", WAIT, || async { pool.stats().await.unwrap().waiting == 1 }).await;
    (events, pool, holder, waiter)
}

pub(super) async fn b59_waiting_callers_take_new_room_at_once(kind: Kind) {
    // A higher max: the waiter gets a runner of its own now, not when the
    // holder's slot returns.
    let (events, pool, holder, waiter) = one_held_one_waiting(kind, "waited").await;
    pool.resize(0, 2).await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), "waited");
    assert!(!holder.is_finished());
    assert_eq!(events.grow_starts(), 2);
    holder.abort();
    pool.stop().await;

    // A higher max_concurrency: the waiter joins the busy runner now, and
    // no runner boots for it.
    let (events, pool, holder, waiter) = one_held_one_waiting(kind, "joined").await;
    pool.set_max_concurrency(2).await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), "joined");
    assert!(!holder.is_finished());
    assert_eq!(events.grow_starts(), 1);
    holder.abort();
    pool.stop().await;
}

pub(super) async fn b59_a_lower_max_concurrency_keeps_work_and_takes_no_more(kind: Kind) {
    let pool = pool_with(kind, config(1).max_concurrency(3)).await;
    let k = key();
    let held: Vec<_> = (0..2).map(|_| support::sleeping(&pool, &k, 1_000)).collect();
    support::busy(&pool, 2).await;
    pool.set_max_concurrency(2).await.unwrap();
    // The third slot is gone: a short call finds no room (max is 1).
    let opts = CallOptions::new().timeout(Duration::from_millis(100));
    let err = pool.call_with::<Echo>("no room".into(), opts).await.unwrap_err();
    assert!(matches!(err, Error::CheckoutTimeout { .. }), "{err:?}");
    // The two calls above the new limit's room keep running to their end.
    for call in held {
        assert_eq!(call.await.unwrap().unwrap(), 1_000);
    }
    assert_eq!(pool.call::<Echo>("room".into()).await.unwrap(), "room");
    pool.stop().await;
}

pub(super) async fn b59_invalid_resizes_are_refused_and_change_nothing(kind: Kind) {
    let events = Events::default();
    let pool = pool_with(kind, events.hooks(config(2).max_concurrency(1))).await;
    let mut pool_events = pool.events();
    for (min, max) in [(3, 2), (0, 0)] {
        let err = pool.resize(min, max).await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
    }
    let err = pool.set_max_concurrency(0).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    // Still max 2, one slot each: two calls at once take two runners.
    let k = key();
    let calls: Vec<_> = (0..2).map(|_| support::sleeping(&pool, &k, 200)).collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(events.grow_starts(), 2, "{:?}", events.all());
    // The first change reported is the valid one that follows.
    pool.resize(0, 2).await.unwrap();
    assert_eq!(next_resized(&mut pool_events).await, (0, 2, 1, 0));
    pool.stop().await;
}
