//! Keyed routing: with 8 keys over 4 process-backend runners that have
//! room, the share of keyed calls that land on the runner their key's
//! previous call ran on, and what a keyed call costs beside an unkeyed one.
//! Included by `report.rs`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ractor_flame::{CallOptions, Pool, PoolConfig, ProcessBackend, Registry};

use super::{Noop, Paired, Pid, Plan, emit, timed};

/// Keys and runners of the hit-ratio figure.
const KEYS: usize = 8;
const RUNNERS: usize = 4;

pub(super) async fn run(plan: &Plan, registry: &Registry) {
    let backend = ProcessBackend::current_exe().unwrap().args(Vec::<String>::new());
    // Eight slots per runner: one caller per key, so every runner has room.
    let config = PoolConfig::new(RUNNERS)
        .name("bench-keyed")
        .min(RUNNERS)
        .max_concurrency(8);
    let pool = Pool::start(config, backend, registry).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.stats().await.unwrap().runners < RUNNERS {
        assert!(Instant::now() < deadline, "keyed: runners did not boot");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let calls_per_key = (plan.samples / 20).max(200);
    // One caller per key, all at once; a hit is a call on the runner (its
    // process) that served the key's previous call.
    let callers: Vec<_> = (0..KEYS)
        .map(|k| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let opts = CallOptions::new().key(format!("tenant-{k}"));
                let (mut last, mut hits) = (None, 0usize);
                for _ in 0..calls_per_key {
                    let pid = pool.call_with::<Pid>((), opts).await.unwrap();
                    hits += usize::from(last == Some(pid));
                    last = Some(pid);
                }
                (hits, last.unwrap())
            })
        })
        .collect();
    let mut hits = 0;
    let mut homes: HashMap<u32, usize> = HashMap::new();
    for caller in callers {
        let (h, home) = caller.await.unwrap();
        hits += h;
        *homes.entry(home).or_default() += 1;
    }
    emit(
        "keyed_hit_ratio",
        hits as f64 / (KEYS * (calls_per_key - 1)) as f64,
        "ratio",
    );
    emit("keyed_runners_used", homes.len() as f64, "runners");

    // A keyed call against an unkeyed one, sampled alternately.
    let keyed = CallOptions::new().key("tenant-0");
    let samples = plan.samples / 4;
    let warm = samples / 10;
    let mut paired = Paired::new(samples);
    for i in 0..warm + samples {
        let plain = timed(async { pool.call::<Noop>(i as u64).await.unwrap() }).await;
        let with_key = timed(async { pool.call_with::<Noop>(i as u64, keyed).await.unwrap() }).await;
        paired.push(i >= warm, plain, with_key);
    }
    paired.emit([
        "unkeyed_call_p50_us_beside_keyed",
        "keyed_call_p50_us",
        "keyed_call_p99_us",
        "keyed_vs_unkeyed_call_ratio",
    ]);
    pool.stop().await;
}
