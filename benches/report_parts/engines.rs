//! One pool over three Docker engines: the machine's own plus two more
//! daemons started here (TLS with client certificates on loopback ports, as
//! stand-ins for other hosts; the harness of `tests/support/daemons.rs`).
//! Included by `report.rs`.

use std::time::Duration;

use ractor_flame::docker::{DockerBackend, Engine};
use ractor_flame::{Pool, PoolConfig, Registry};

use super::{Plan, emit, percentile, scale_out, us};

#[path = "../../tests/support/daemons.rs"]
#[allow(dead_code, unreachable_pub, missing_docs)]
mod daemons;

// What the daemon harness takes from the test support module.
fn key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn kill(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status();
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

/// `multi_engine_scale_0_to_6_ms`: from no runner to six (two per engine),
/// each answering a call.
pub(crate) async fn run(plan: &Plan, registry: &Registry) {
    let Some(dockerd) = daemons::dockerd() else {
        eprintln!("report: multi-engine metrics skipped: no dockerd");
        return;
    };
    if let Err(e) = DockerBackend::new().ping().await {
        eprintln!("report: multi-engine metrics skipped: {e}");
        return;
    }
    let certs = daemons::Certs::make(&std::env::temp_dir().join(format!("flame-bench-certs-{}", key())));
    let a = daemons::Daemon::start("bench-a", &dockerd, &certs).await;
    let b = daemons::Daemon::start("bench-b", &dockerd, &certs).await;
    let backend =
        DockerBackend::new()
            .stop_timeout(Duration::from_secs(1))
            .engines([Engine::Defaults, a.engine(), b.engine()]);
    if let Err(e) = backend.prepare_image().await {
        eprintln!("report: multi-engine metrics skipped: {e}");
        return;
    }
    let mut took = Vec::new();
    for n in 0..plan.boots.min(3) {
        let config = PoolConfig::new(6).max_concurrency(1).name(format!("bench-engines-{n}"));
        let pool = Pool::start(config, backend.clone(), registry).await.unwrap();
        took.push(scale_out(&pool, 6).await);
        let per_engine = backend.runners_per_engine();
        assert!(per_engine.iter().all(|(_, n)| *n == 2), "{per_engine:?}");
        pool.stop().await;
    }
    took.sort();
    emit(
        "multi_engine_scale_0_to_6_ms",
        us(percentile(&took, 0.5)) / 1000.0,
        "ms",
    );
    drop((a, b, certs));
}
