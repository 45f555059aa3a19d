//! Chaos: 2,000 mixed calls, casts, placed-child calls, calls that log on
//! the runner and calls with 1-4 MiB arguments, 64 in flight, over a TLS
//! link, while a chaos task kills, freezes and thaws random runners (signals
//! on the process backend; the engine's kill, pause and unpause on Docker),
//! floods the parent's listener with connections that never authenticate
//! (process backend) and blocks the parent's log sink. Every
//! operation resolves, Ok or a typed error, by its deadline plus a second;
//! nothing panics; the pool returns to no busy slot and no waiting caller;
//! no runner process or container outlives `stop()`. Each run is bounded to
//! 60 s and prints its seed (`CHAOS_SEED` repeats its choices) and figures.
//!
//! The longer soak of the same workload is `examples/chaos_soak.rs`.

mod support;

use std::time::Duration;

use ractor_flame::{LinkTls, Pool, PoolConfig};
use support::chaos::{self, Plan, Target};
use support::{Kind, config, eventually, pool_with};

const OPS: usize = 2_000;
const IN_FLIGHT: usize = 64;
const BOUND: Duration = Duration::from_secs(60);
const SLOTS: usize = 16;

/// Up to 4 runners of 16 slots (64, the operations in flight), one kept
/// booted, over TLS; heartbeats every 100 ms, lost after 1 s
/// (`support::config`).
fn chaos_config() -> PoolConfig {
    config(4).min(1).max_concurrency(SLOTS).link_tls(LinkTls::Always)
}

/// The global subscriber of this binary: the chaos task's blocking sink.
fn blocking_sink() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let subscriber = tracing_subscriber::registry().with(chaos::BlockingSink);
    // Both tests install it; the second finds it there.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Runs the workload on `pool` under chaos on `target` and checks what
/// must hold while the pool runs; returns once the pool is quiet.
async fn under_chaos(test: &str, pool: &Pool, target: Target) {
    blocking_sink();
    let process = matches!(target, Target::Process { .. });
    let seed = chaos::seed();
    eprintln!("{test}: seed {seed}; mix: {}", chaos::MIX);
    let plan = Plan {
        ops: Some(OPS),
        duration: None,
        in_flight: IN_FLIGHT,
        seed,
    };
    let report = chaos::run(pool, target, plan).await;
    eprintln!("{test}: {}", report.summary());
    for (kind, sample) in &report.samples {
        eprintln!("{test}: first {kind}: {sample}");
    }
    assert!(report.panics.is_empty(), "panics: {:#?}", report.panics);
    assert!(
        report.late.is_empty(),
        "{} operations unresolved a second past their deadline, e.g. {:#?}",
        report.late.len(),
        &report.late[..report.late.len().min(10)]
    );
    assert!(report.wrong.is_empty(), "wrong outcomes: {:#?}", report.wrong);
    assert_eq!(report.made, OPS);
    assert_eq!(report.ok + report.errors.values().sum::<usize>(), OPS);
    assert!(
        report.killed > 0 && report.stopped > 0 && report.sink_blocks > 0,
        "the chaos task killed {} and froze {} runners and blocked the log sink {} times",
        report.killed,
        report.stopped,
        report.sink_blocks
    );
    if process {
        assert!(report.floods > 0, "the chaos task never flooded the listener");
    }
    // A lost runner fails the calls it held; once its loss is known it takes
    // no more.
    assert!(
        report.runner_down() <= report.runner_down_bound(SLOTS),
        "{} calls failed with RunnerDown after {} faults: more than the {} the lost runners held",
        report.runner_down(),
        report.killed + report.stopped,
        report.runner_down_bound(SLOTS)
    );
    // Printed when it changes, so a timeout shows where the pool got stuck.
    let last = std::sync::Mutex::new(String::new());
    eventually(
        "0 busy slots and 0 waiting callers",
        Duration::from_secs(10),
        || async {
            let stats = pool.stats().await;
            let shown = format!("{stats:?}");
            let mut last = last.lock().unwrap();
            if *last != shown {
                eprintln!("{test}: stats {shown}");
                *last = shown;
            }
            stats.is_ok_and(|s| s.busy == 0 && s.waiting == 0)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_process_runners_killed_and_frozen_under_load_every_call_resolves_and_nothing_leaks() {
    let test = "chaos_process";
    let pool = pool_with(Kind::Process, chaos_config()).await;
    let target = Target::Process {
        exe: support::runner_exe().into(),
    };
    let run = async {
        under_chaos(test, &pool, target.clone()).await;
        pool.stop().await;
        let left = chaos::leftovers(&target).await;
        assert!(left.is_empty(), "runner processes left after stop(): {left:?}");
    };
    let bounded = tokio::time::timeout(BOUND, run).await;
    if bounded.is_err() {
        pool.stop().await;
    }
    assert!(bounded.is_ok(), "{test} took longer than {BOUND:?}");
}

#[cfg(feature = "docker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_docker_containers_killed_and_paused_under_load_every_call_resolves_and_nothing_leaks() {
    let test = "chaos_docker";
    let Some(docker) = support::docker::engine(test).await else {
        return;
    };
    let pool = pool_with(Kind::Docker, chaos_config()).await;
    let target = Target::Docker {
        docker,
        pool: pool.name().to_owned(),
    };
    let run = async {
        under_chaos(test, &pool, target.clone()).await;
        pool.stop().await;
        // The engine removes a stopped container asynchronously.
        eventually("no labelled container is left", Duration::from_secs(10), || async {
            chaos::leftovers(&target).await.is_empty()
        })
        .await;
    };
    let bounded = tokio::time::timeout(BOUND, run).await;
    if bounded.is_err() {
        pool.stop().await;
    }
    assert!(bounded.is_ok(), "{test} took longer than {BOUND:?}");
}
