//! State for remote functions: built once per runner, on the runner, and
//! handed to every call; a constructor's failure is the boot's error.

mod support;

use std::collections::HashMap;

use ractor_flame::{Error, LocalBackend, Pool, ProcessBackend};
use support::config;
use support::functions::{Echo, StateProbe, registry};

/// Calls `StateProbe` `n` times, two at a time; returns what each call saw.
async fn probe_all(pool: &Pool, n: usize) -> Vec<(u32, u32, String)> {
    let mut seen = Vec::new();
    for _ in 0..n / 2 {
        let (a, b) = tokio::join!(pool.call::<StateProbe>(()), pool.call::<StateProbe>(()));
        seen.push(a.unwrap());
        seen.push(b.unwrap());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_process_runner_builds_its_state_once_and_every_call_gets_it() {
    let cfg = config(2).min(2).max_concurrency(1);
    let pool = Pool::start(cfg, ProcessBackend::new(support::runner_exe()), &registry())
        .await
        .unwrap();
    support::runners(&pool, 2).await;
    let seen = probe_all(&pool, 20).await;
    let mut by_pid: HashMap<u32, Vec<(u32, String)>> = HashMap::new();
    for (pid, construction, id) in seen {
        by_pid.entry(pid).or_default().push((construction, id));
    }
    assert_eq!(by_pid.len(), 2, "both runners served: {by_pid:?}");
    for (pid, states) in &by_pid {
        // One construction in each runner process, one state for all its calls.
        assert!(states.iter().all(|(c, _)| *c == 1), "runner {pid}: {states:?}");
        assert!(
            states.iter().all(|(_, id)| *id == states[0].1),
            "runner {pid}: {states:?}"
        );
    }
    // Stateless functions are unchanged.
    assert_eq!(pool.call::<Echo>("plain".into()).await.unwrap(), "plain");
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_local_runner_builds_its_state_once() {
    // The only test of this binary that builds states in this process.
    use std::sync::atomic::Ordering;
    let cfg = config(2).min(2).max_concurrency(1);
    let pool = Pool::start(cfg, LocalBackend::new(), &registry()).await.unwrap();
    support::runners(&pool, 2).await;
    assert_eq!(
        support::functions::STATES_BUILT.load(Ordering::SeqCst),
        2,
        "one per runner"
    );
    let seen = probe_all(&pool, 20).await;
    assert_eq!(
        support::functions::STATES_BUILT.load(Ordering::SeqCst),
        2,
        "calls build nothing"
    );
    assert!(seen.iter().all(|(_, c, _)| *c == 1 || *c == 2), "{seen:?}");
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_that_fails_to_build_is_the_boot_error_with_its_reason() {
    let cfg = config(1).boot_retry(ractor_flame::BootRetry {
        max_attempts: 1,
        initial_backoff: std::time::Duration::from_millis(10),
        max_backoff: std::time::Duration::from_millis(10),
    });
    let backend = ProcessBackend::new(support::runner_exe()).env("FLAME_TEST_STATE_FAIL", "1");
    let pool = Pool::start(cfg, backend, &registry()).await.unwrap();
    let err = pool.call::<Echo>("x".into()).await.unwrap_err();
    let Error::BootFailed { reason } = err else {
        panic!("expected a boot failure, got {err:?}")
    };
    assert!(reason.contains("model file /models/missing.bin not found"), "{reason}");
    assert!(reason.contains("RunnerState"), "names the state: {reason}");
    pool.stop().await;
}
