//! Pools of many runners: past the size where a checkout reads every
//! runner's load, the choice stays exact for small pools, waiters are still
//! served first in first out, a caller finds the one runner with room, and
//! hundreds of runners grow and idle out and the pool still serves.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use ractor_flame::{FnError, LocalBackend, Pool, PoolConfig, Registry, RemoteFn};
use support::eventually;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(20);

/// Per test (by key): the highest group of `Hold` calls released so far.
static RELEASED: LazyLock<Mutex<HashMap<String, watch::Sender<u32>>>> = LazyLock::new(Mutex::default);

/// Per test (by key): the order in which `Arrive` calls started.
static ARRIVED: LazyLock<Mutex<HashMap<String, Vec<u32>>>> = LazyLock::new(Mutex::default);

fn released(key: &str) -> watch::Sender<u32> {
    let mut all = RELEASED.lock().unwrap_or_else(PoisonError::into_inner);
    all.entry(key.to_owned()).or_insert_with(|| watch::channel(0).0).clone()
}

fn this_runner() -> String {
    format!("{:?}", ractor_flame::current_runner().expect("on a runner"))
}

/// Holds its slot until its group is released; returns its runner.
struct Hold;
impl RemoteFn for Hold {
    const NAME: &'static str = "scale.hold";
    type Args = (String, u32);
    type Output = String;
    async fn run((key, group): (String, u32)) -> Result<String, FnError> {
        let mut released = released(&key).subscribe();
        let _ = released.wait_for(|&g| g >= group).await;
        Ok(this_runner())
    }
}

/// Notes its number as it starts; returns its runner.
struct Arrive;
impl RemoteFn for Arrive {
    const NAME: &'static str = "scale.arrive";
    type Args = (String, u32);
    type Output = String;
    async fn run((key, n): (String, u32)) -> Result<String, FnError> {
        ARRIVED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .push(n);
        Ok(this_runner())
    }
}

/// A local pool of `runners` booted runners with `slots` each.
async fn pool_of(runners: usize, slots: usize) -> Pool {
    let registry = Registry::new().register::<Hold>().register::<Arrive>();
    let config = PoolConfig::new(runners).min(runners).max_concurrency(slots);
    let pool = Pool::start(config, LocalBackend::new(), &registry).await.unwrap();
    support::runners(&pool, runners).await;
    pool
}

/// Starts `n` calls of `Hold` in `group`, one after the other, each once
/// the previous one holds its slot (`busy` slots were taken before).
async fn hold(pool: &Pool, key: &str, group: u32, n: usize, busy: usize) -> Vec<JoinHandle<String>> {
    let mut calls = Vec::with_capacity(n);
    for i in 0..n {
        let (pool2, args) = (pool.clone(), (key.to_owned(), group));
        calls.push(tokio::spawn(async move { pool2.call::<Hold>(args).await.unwrap() }));
        support::busy(pool, busy + i + 1).await;
    }
    calls
}

async fn runners_of(calls: Vec<JoinHandle<String>>) -> Vec<String> {
    let mut runners = Vec::with_capacity(calls.len());
    for call in calls {
        runners.push(call.await.unwrap());
    }
    runners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b13_a_pool_of_sixteen_runners_still_takes_the_least_loaded_runner() {
    let key = support::key();
    let pool = pool_of(16, 3).await;
    // One call per runner: each goes to a runner with no work.
    let first = hold(&pool, &key, 1, 16, 0).await;
    // Fifteen more: every runner but one has two calls, the last one.
    let second = hold(&pool, &key, 1, 15, 16).await;
    let next = pool.call::<Arrive>((key.clone(), 0)).await.unwrap();
    released(&key).send_replace(1);
    let first: HashSet<_> = runners_of(first).await.into_iter().collect();
    let second: HashSet<_> = runners_of(second).await.into_iter().collect();
    assert_eq!(first.len(), 16, "the first sixteen calls went to sixteen runners");
    assert_eq!(second.len(), 15, "the next fifteen went to fifteen of them");
    assert!(
        !second.contains(&next),
        "the next call went to the runner with one call"
    );
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b15_waiters_of_a_pool_of_forty_runners_are_served_first_in_first_out() {
    let key = support::key();
    let pool = pool_of(40, 1).await;
    // Every slot taken; one of them is freed first, the rest at the end.
    let one = hold(&pool, &key, 1, 1, 0).await;
    let rest = hold(&pool, &key, 2, 39, 1).await;
    let mut waiters = Vec::new();
    for n in 0..10 {
        let (pool2, args) = (pool.clone(), (key.clone(), n));
        waiters.push(tokio::spawn(async move { pool2.call::<Arrive>(args).await.unwrap() }));
        eventually("the caller queues", WAIT, || async {
            pool.stats().await.unwrap().waiting == n as usize + 1
        })
        .await;
    }
    // One free slot: the waiters take it in turn, each after the one before.
    released(&key).send_replace(1);
    runners_of(one).await;
    runners_of(waiters).await;
    let arrived = ARRIVED.lock().unwrap().remove(&key);
    assert_eq!(arrived, Some((0..10).collect()));
    released(&key).send_replace(2);
    runners_of(rest).await;
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_finds_the_one_free_runner_of_two_hundred() {
    let key = support::key();
    let pool = pool_of(200, 1).await;
    let held = hold(&pool, &key, 1, 199, 0).await;
    // More runners than a checkout samples: the pool itself finds the free
    // one, every time, without waiting for a held slot to come back.
    let mut places = HashSet::new();
    for n in 0..20 {
        let call = pool.call::<Arrive>((key.clone(), n));
        let place = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("served while 199 runners stay busy")
            .unwrap();
        places.insert(place);
    }
    assert_eq!(places.len(), 1, "always the one free runner");
    released(&key).send_replace(1);
    let held: HashSet<_> = runners_of(held).await.into_iter().collect();
    assert_eq!(held.len(), 199);
    assert!(held.is_disjoint(&places));
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_runners_grow_idle_out_together_and_the_pool_serves_again() {
    let key = support::key();
    let registry = Registry::new().register::<Hold>().register::<Arrive>();
    let config = PoolConfig::new(300)
        .max_concurrency(1)
        .idle_shutdown_after(Duration::from_millis(300));
    let pool = Pool::start(config, LocalBackend::new(), &registry).await.unwrap();
    let held: Vec<_> = (0..300)
        .map(|_| {
            let (pool, args) = (pool.clone(), (key.clone(), 1));
            tokio::spawn(async move { pool.call::<Hold>(args).await.unwrap() })
        })
        .collect();
    support::busy(&pool, 300).await;
    released(&key).send_replace(1);
    let held: HashSet<_> = runners_of(held).await.into_iter().collect();
    assert_eq!(held.len(), 300, "one runner per caller");
    eventually("every runner idled out", WAIT, || async {
        pool.stats().await.unwrap().runners == 0
    })
    .await;
    // Nothing of the old runners is left on the fast path.
    let again = pool.call::<Arrive>((key.clone(), 0)).await.unwrap();
    assert!(!held.contains(&again));
    pool.stop().await;
}
