//! A chaos soak: the workload of the chaos test (mixed calls, casts,
//! placed-child calls, calls that log on the runner and 1-4 MiB arguments,
//! 64 in flight, over a TLS link) for as many minutes as you ask, while
//! runners are killed, frozen and thawed at random every 100 to 400 ms, the
//! listener is flooded with connections that never authenticate (process
//! backend) and this process's log sink is blocked now and then.
//!
//! ```text
//! cargo run --release --example chaos_soak -- --soak 2                    # runners as child processes
//! cargo run --release --example chaos_soak -- --soak 2 --backend docker   # runners as containers
//! ```
//!
//! Options: `--soak MINUTES` (default 2, fractions allowed), `--backend
//! process|docker`, `--in-flight N` (default 64), `--seed N` (repeats the
//! operation mix and the chaos task's choices; timing does not repeat).
//!
//! Expected output: one line of figures per minute (operations made, Ok,
//! each error kind, runners killed and frozen, floods, sink blocks, this
//! process's resident set at the start and end of the minute), then the
//! totals, the first error of each kind in full, the peak resident set of
//! the parent and of any runner, and the checks: every operation resolved by its deadline
//! plus a second, no wrong answer, no panic, a lost runner fails only the
//! calls it held (at most 2 x 16 per fault), no busy slot or waiting caller
//! once the load stops, no runner left after `stop()`. It exits 1 when a
//! check fails.
//!
//! The functions it calls are those of the integration tests
//! (`tests/support/functions.rs`); the program is also their runner.

#[path = "../tests/support/chaos.rs"]
mod chaos;
#[path = "../tests/support/functions.rs"]
mod functions;

use std::time::{Duration, Instant};

use chaos::{Plan, Report, Target};
use ractor_flame::{Pool, PoolConfig, ProcessBackend};

/// Slots per runner.
const SLOTS: usize = 16;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = functions::registry();
    ractor_flame::run_if_runner(&registry).await?;
    // This process's subscriber: a sink the chaos task blocks now and then.
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(chaos::BlockingSink))?;
    }

    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let minutes: f64 = flag("--soak").map_or(Ok(2.0), |m| m.parse())?;
    let in_flight: usize = flag("--in-flight").map_or(Ok(64), |n| n.parse())?;
    let seed: u64 = flag("--seed").map_or_else(|| Ok(chaos::seed()), |s| s.parse())?;
    let backend = flag("--backend").unwrap_or_else(|| "process".to_owned());

    // The chaos test's pool: up to 4 runners of 16 slots, one kept booted,
    // heartbeats every 100 ms and lost after 1 s.
    let config = PoolConfig::new(4)
        .min(1)
        .max_concurrency(SLOTS)
        .name(format!("chaos-soak-{}", std::process::id()))
        .boot_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10))
        .shutdown_timeout(Duration::from_secs(2))
        .heartbeat_interval(Duration::from_millis(100))
        .heartbeat_timeout(Duration::from_millis(1000))
        .failsafe_timeout(Duration::from_secs(5))
        .link_tls(ractor_flame::LinkTls::Always);
    let (pool, target) = match backend.as_str() {
        "process" => {
            let runner = ProcessBackend::current_exe()?.args(Vec::<String>::new());
            let pool = Pool::start(config, runner, &registry).await?;
            let exe = std::env::current_exe()?;
            (pool, Target::Process { exe })
        }
        #[cfg(feature = "docker")]
        "docker" => {
            let docker = bollard::Docker::connect_with_defaults()?;
            docker.ping().await?;
            let runner = ractor_flame::DockerBackend::new()
                .image(ractor_flame::docker::Image::CurrentExe)
                .stop_timeout(Duration::from_secs(1));
            runner.prepare_image().await?;
            let pool = Pool::start(config, runner, &registry).await?;
            let name = pool.name().to_owned();
            (pool, Target::Docker { docker, pool: name })
        }
        other => return Err(format!("unknown backend `{other}` (process or docker)").into()),
    };

    println!("chaos soak: {minutes} min on {backend}, {in_flight} in flight, seed {seed}");
    println!("mix: {}", chaos::MIX);
    let total = Duration::from_secs_f64(minutes * 60.0);
    let started = Instant::now();
    let mut report = Report::default();
    let mut slice = 0u64;
    let mut stuck = Vec::new();
    while started.elapsed() < total {
        // One-minute slices: figures as it goes, and the pool must be quiet
        // between them too.
        let plan = Plan {
            ops: None,
            duration: Some((total - started.elapsed()).min(Duration::from_secs(60))),
            in_flight,
            seed: seed.wrapping_add(slice),
        };
        let part = chaos::run(&pool, target.clone(), plan).await;
        println!("minute {}: {}", slice + 1, part.summary());
        report.absorb(part);
        if let Err(stats) = quiet(&pool).await {
            stuck.push(format!("after minute {}: {stats}", slice + 1));
        }
        slice += 1;
    }

    pool.stop().await;
    // The engine removes a stopped container asynchronously; a process
    // backend's runners are gone when stop() returns.
    let patient = !matches!(target, Target::Process { .. });
    let removal = Instant::now() + Duration::from_secs(10);
    let mut left = chaos::leftovers(&target).await;
    while patient && !left.is_empty() && Instant::now() < removal {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = chaos::leftovers(&target).await;
    }

    println!("total: {}", report.summary());
    for (kind, sample) in &report.samples {
        println!("first {kind}: {sample}");
    }
    println!(
        "peak rss: parent {} KiB, largest runner {} KiB{}",
        chaos::own_peak_rss_kib(),
        report.runner_max_rss_kib,
        if backend == "process" {
            ""
        } else {
            " (not sampled in containers)"
        }
    );
    let overflow = (report.runner_down() > report.runner_down_bound(SLOTS)).then(|| {
        format!(
            "{} calls failed with RunnerDown after {} faults: more than the {} the lost runners held",
            report.runner_down(),
            report.killed + report.stopped,
            report.runner_down_bound(SLOTS)
        )
    });
    let checks = [
        ("every operation resolved by its deadline + 1 s", report.late.clone()),
        ("no wrong answer or impossible error", report.wrong.clone()),
        ("nothing panicked", report.panics.clone()),
        (
            "a lost runner fails only the calls it held",
            overflow.into_iter().collect(),
        ),
        ("0 busy and 0 waiting once the load stops", stuck),
        ("no runner left after stop()", left),
    ];
    let mut failed = false;
    for (check, violations) in checks {
        let verdict = if violations.is_empty() { "ok" } else { "FAILED" };
        println!("check: {check}: {verdict}");
        for v in violations.iter().take(10) {
            println!("  {v}");
        }
        failed |= !violations.is_empty();
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

/// Waits up to 10 s for no busy slot and no waiting caller; the last stats
/// otherwise.
async fn quiet(pool: &Pool) -> Result<(), String> {
    let since = Instant::now();
    loop {
        let stats = pool.stats().await;
        if stats.as_ref().is_ok_and(|s| s.busy == 0 && s.waiting == 0) {
            return Ok(());
        }
        if since.elapsed() > Duration::from_secs(10) {
            return Err(format!("{stats:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
