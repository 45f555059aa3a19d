//! What a runner is and what it serves: a runner of another build is refused
//! at the handshake with both identities named; pools of different registries
//! share one backend; a program is a runner from its first line; remote
//! runners stop their machine exactly once.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor_flame::actors::Token;
use ractor_flame::{Error, Parent, Pool, ProcessBackend, RunnerId};
use support::functions::{Echo, OnlyInOtherBuild, other_registry, registry};
use support::{config, eventually};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};

fn other_build(backend: ProcessBackend) -> ProcessBackend {
    backend.env("FLAME_TEST_REGISTRY", "other")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b42_a_runner_of_another_build_is_refused_naming_both() {
    let cfg = config(1).boot_retry(ractor_flame::BootRetry {
        max_attempts: 1,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
    });
    let backend = other_build(ProcessBackend::new(support::runner_exe()));
    let pool = Pool::start(cfg, backend, &registry()).await.unwrap();
    let err = pool.call::<Echo>("x".into()).await.unwrap_err();
    let Error::BootFailed { reason } = err else {
        panic!("expected a boot failure, got {err:?}")
    };
    assert!(reason.contains("refused at the handshake"), "{reason}");
    assert!(
        reason.contains(&registry().build_id().to_string()),
        "names the pool's build: {reason}"
    );
    assert!(
        reason.contains(&other_registry().build_id().to_string()),
        "names the runner's: {reason}"
    );
    pool.stop().await;
}

#[tokio::test]
async fn b42_a_refused_runner_exits_non_zero_with_the_reason() {
    // A parent that refuses every runner (it expects none), reached by a
    // real runner process.
    let endpoint = ractor_flame::actors::Endpoint::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let parent = Parent::new(
        RunnerId::new(),
        vec![endpoint.addr()],
        Token::generate(),
        "process",
        registry().build_id(),
    );
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(support::runner_exe())
            .env(ractor_flame::actors::FLAME_PARENT, parent.encode())
            .output(),
    )
    .await
    .expect("the refused runner exits")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("refused by the parent: unknown runner"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b42_pools_of_different_registries_share_one_backend() {
    let backend = ProcessBackend::new(support::runner_exe());
    let ours = Pool::start(config(1), backend.clone(), &registry()).await.unwrap();
    let theirs = Pool::start(config(1), other_build(backend.clone()), &other_registry())
        .await
        .unwrap();
    assert_eq!(ours.call::<Echo>("ours".into()).await.unwrap(), "ours");
    assert_eq!(theirs.call::<OnlyInOtherBuild>(()).await.unwrap(), "other build");
    // Both pools' runners came through the one endpoint.
    assert_eq!(ours.stats().await.unwrap().runners, 1);
    assert_eq!(theirs.stats().await.unwrap().runners, 1);
    ours.stop().await;
    theirs.stop().await;
}

#[tokio::test]
async fn b11_a_runner_is_a_runner_before_run_if_runner() {
    // A FLAME_PARENT that points nowhere: the process is a runner all the
    // same, and a pool it starts before `run_if_runner` boots nothing.
    let parent = Parent::new(
        RunnerId::new(),
        vec!["127.0.0.1:9".parse().unwrap()],
        Token::generate(),
        "process",
        registry().build_id(),
    );
    let out = tokio::process::Command::new(support::runner_exe())
        .arg("pool-first")
        .env(ractor_flame::actors::FLAME_PARENT, parent.encode())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "runners 0", "no runner boots runners");
    // Without FLAME_PARENT, the same program is a parent and boots its min.
    let out = tokio::process::Command::new(support::runner_exe())
        .arg("pool-first")
        .env_remove(ractor_flame::actors::FLAME_PARENT)
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "runners 2");
}

/// Lines the parent's tracing received from its runners.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Lines {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut line = Line(String::new());
        event.record(&mut line);
        self.0.lock().unwrap().push(line.0);
    }
}

impl Lines {
    fn count(&self, needle: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
    }
}

/// Two runners of `backend` serve, then the pool stops: each runner ran its
/// backend's `system_shutdown` once, after its drain (its line reached the
/// parent from the runner's own output).
async fn runners_stop_their_machine_exactly_once<B: ractor_flame::Backend>(backend: B, name: &str) {
    let lines = Lines::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(lines.clone()));
    let pool = Pool::start(config(2).min(2), backend, &registry()).await.unwrap();
    support::runners(&pool, 2).await;
    assert_eq!(pool.call::<Echo>("x".into()).await.unwrap(), "x");
    assert_eq!(lines.count("system shutdown"), 0, "not before the end");
    pool.stop().await;
    let line = format!("system shutdown ({name})");
    eventually("each runner stops its machine", Duration::from_secs(10), || async {
        lines.count(&line) >= 2
    })
    .await;
    // Once each, never more.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(lines.count(&line), 2);
}

// Current-thread runtimes: the thread-local subscriber sees every task.
#[tokio::test]
async fn b30_process_runners_stop_their_machine_exactly_once() {
    runners_stop_their_machine_exactly_once(ProcessBackend::new(support::runner_exe()), "process").await;
}

#[cfg(feature = "docker")]
#[tokio::test]
async fn b30_docker_runners_stop_their_machine_exactly_once() {
    if support::docker::engine("b30_docker_runners_stop_their_machine_exactly_once")
        .await
        .is_none()
    {
        return;
    }
    runners_stop_their_machine_exactly_once(support::docker::backend(), "docker").await;
}

#[tokio::test]
async fn b55_a_flame_parent_with_unusable_settings_is_refused_with_a_clear_error() {
    type Spoil = fn(&mut ractor_flame::actors::RunnerSettings);
    let spoilers: [(Spoil, &str); 3] = [
        (
            |s| s.heartbeat_interval = Duration::ZERO,
            "heartbeat_interval must be above zero",
        ),
        (
            |s| s.heartbeat_timeout = Duration::ZERO,
            "heartbeat_timeout must be above zero",
        ),
        (|s| s.max_frame_size = 0, "max_frame_size must be at least 4096 bytes"),
    ];
    let endpoint = ractor_flame::actors::Endpoint::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    for (spoil, needle) in spoilers {
        // A parent that expects this runner: were the settings taken, the
        // runner would join it and run its link with them.
        let (actor, _) = ractor::Actor::spawn(None, support::RunnerRecorder(Arc::default()), ())
            .await
            .unwrap();
        let mut ctx = ractor_flame::RunnerContext::new(RunnerId::new(), "b55", registry(), actor);
        ctx.settings.failsafe_timeout = Duration::from_secs(2);
        ctx.boot_timeout = Duration::from_secs(5);
        let mut parent = endpoint.expect(&ctx, vec![endpoint.addr()], "process");
        spoil(&mut parent.settings);
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new(support::runner_exe())
                .env(ractor_flame::actors::FLAME_PARENT, parent.encode())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{needle}: the runner did not exit"))
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The test runner prints a `ParentError` and exits with 2.
        assert_eq!(out.status.code(), Some(2), "{needle}: {stderr}");
        assert!(
            stderr.contains("malformed FLAME_PARENT: unusable runner settings: "),
            "{needle}: {stderr}"
        );
        assert!(stderr.contains(needle), "{needle}: {stderr}");
        assert!(!stderr.contains("panicked"), "{needle}: {stderr}");
    }
}
