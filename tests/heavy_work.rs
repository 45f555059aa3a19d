//! Heavy work never kills its runner: CPU-bound bodies that never yield,
//! blocking functions, and slots that are free only when work has ended.
//!
//! These tests saturate the machine's cores on purpose, so they live in a
//! test binary of their own and take a lock: one runs at a time.

mod support;

use std::time::Duration;

use ractor_flame::{CallOptions, Error};
use support::functions::Spin;
use support::{Kind, config, pool_with};

/// One CPU-saturating test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// `calls` concurrent calls of a body that spins `ms` without yielding, on
/// one runner of `kind` with `max_concurrency`; every one must return Ok.
async fn spinning_calls_all_succeed(kind: Kind, calls: usize, max_concurrency: usize, ms: u64) {
    let _serial = SERIAL.lock().await;
    // The pool's default heartbeat settings: a starved link would be declared
    // dead after 2 s, well inside one body's run.
    let cfg = config(1)
        .max_concurrency(max_concurrency)
        .heartbeat_interval(Duration::from_millis(500))
        .heartbeat_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(120));
    let pool = pool_with(kind, cfg).await;
    let started = std::time::Instant::now();
    let mut handles = Vec::new();
    for _ in 0..calls {
        let pool = pool.pool.clone();
        handles.push(tokio::spawn(async move {
            pool.call_with::<Spin>(ms, CallOptions::new().timeout(Duration::from_secs(120)))
                .await
        }));
    }
    let mut failures = Vec::new();
    for handle in handles {
        match handle.await.expect("caller task") {
            Ok(n) => assert!(n > 0, "the body ran"),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{} of {calls} calls failed after {:?}: {failures:?}", failures.len(), started.elapsed());
    let stats = pool.stats().await.unwrap();
    assert_eq!(stats.runners, 1, "the runner survived: {stats:?}");
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn b40_process_cpu_bound_bodies_on_every_slot_all_succeed() {
    spinning_calls_all_succeed(Kind::Process, 2 * cores(), 2 * cores(), 5_000).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn b40_process_eight_cpu_bound_bodies_at_default_concurrency_all_succeed() {
    spinning_calls_all_succeed(Kind::Process, 8, 100, 5_000).await;
}

#[allow(dead_code)]
fn _uses(_: Error) {}
