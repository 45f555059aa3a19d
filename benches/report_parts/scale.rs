//! Pools of thousands of runners: what a call costs at 500 and at 5,000
//! runners (local backend, one slot per runner, 400 callers, so nobody
//! waits in either), how long a burst of 5,000 callers takes to grow a pool
//! from 0 to 5,000 runners, and how long 5,000 idle runners take to leave
//! once their idle timeout has passed. Included by `report.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ractor_flame::{FnError, LocalBackend, Pool, PoolConfig, PoolEvent, Registry, RemoteFn};
use tokio::sync::watch;

use super::{Plan, emit, throughput};

/// Callers of the throughput figures: fewer than the smaller pool's runners.
const CALLERS: usize = 400;

/// Idle timeout of the grown pool: long enough for the growth to end first.
const IDLE_AFTER: Duration = Duration::from_secs(4);

/// Holds its slot until the growth is measured (local backend only: the
/// runner shares this process's statics).
pub(super) struct Hold;
impl RemoteFn for Hold {
    const NAME: &'static str = "bench.hold";
    type Args = ();
    type Output = ();
    async fn run(_: ()) -> Result<(), FnError> {
        let mut released = release().subscribe();
        let _ = released.wait_for(|r| *r).await;
        Ok(())
    }
}

fn release() -> &'static watch::Sender<bool> {
    static RELEASE: std::sync::OnceLock<watch::Sender<bool>> = std::sync::OnceLock::new();
    RELEASE.get_or_init(|| watch::channel(false).0)
}

pub(super) async fn run(plan: &Plan, registry: &Registry) {
    let for_ = plan.throughput_for.max(Duration::from_secs(2));
    let at_500 = calls_per_s(500, for_, registry).await;
    emit("scale_calls_per_s_500", at_500, "calls/s");
    let at_5000 = calls_per_s(5_000, for_, registry).await;
    emit("scale_calls_per_s_5000", at_5000, "calls/s");
    emit("scale_5000_vs_500_ratio", at_5000 / at_500, "ratio");
    let (grow, shrink) = grow_and_shrink(5_000, registry).await;
    emit("grow_0_to_5000_ms", grow.as_secs_f64() * 1e3, "ms");
    emit("shrink_5000_to_0_ms", shrink.as_secs_f64() * 1e3, "ms");
}

/// Warm calls per second on a pool of `runners` booted runners.
async fn calls_per_s(runners: usize, for_: Duration, registry: &Registry) -> f64 {
    let config = PoolConfig::new(runners)
        .name(format!("bench-scale-{runners}"))
        .min(runners)
        .max_concurrency(1);
    let pool = Pool::start(config, LocalBackend::new(), registry).await.unwrap();
    until(&pool, |runners_up| runners_up == runners).await;
    // Warm-up: every runner's first calls, the allocator, the scheduler.
    throughput(&pool, CALLERS, Duration::from_millis(300)).await;
    let per_s = throughput(&pool, CALLERS, for_).await;
    pool.stop().await;
    per_s
}

/// The time from `n` callers arriving at an empty pool (one slot per
/// runner, at most `n` runners; each call holds its slot until all are up)
/// until `n` runners are up, and the time from
/// the moment every runner has been idle for the idle timeout until none is
/// left.
async fn grow_and_shrink(n: usize, registry: &Registry) -> (Duration, Duration) {
    // Boots counted as they end: a runner that idles out before the last
    // one is up (a slow growth) still counts.
    let booted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&booted);
    let config = PoolConfig::new(n)
        .name(format!("bench-grow-{n}"))
        .max_concurrency(1)
        .idle_shutdown_after(IDLE_AFTER)
        .on_grow_end(move |event| {
            if let PoolEvent::GrowEnd { result: Ok(()), .. } = event {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
    let pool = Pool::start(config, LocalBackend::new(), registry).await.unwrap();
    let start = Instant::now();
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call::<Hold>(()).await.unwrap() })
        })
        .collect();
    while booted.load(Ordering::Relaxed) < n {
        assert!(start.elapsed() < Duration::from_secs(120), "growth stuck");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let grow = start.elapsed();
    release().send_replace(true);
    for c in calls {
        c.await.unwrap();
    }
    // Every runner's last call has ended: all are idle by `IDLE_AFTER` from now.
    let quiet = Instant::now();
    until(&pool, |up| up == 0).await;
    let shrink = quiet.elapsed().saturating_sub(IDLE_AFTER);
    pool.stop().await;
    (grow, shrink)
}

/// Polls the pool's runner count until `done` holds.
async fn until(pool: &Pool, done: impl Fn(usize) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stats = pool.stats().await.unwrap();
        if done(stats.runners) {
            return;
        }
        assert!(Instant::now() < deadline, "pool stuck at {stats:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
