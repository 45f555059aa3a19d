//! One pool over several Docker engines: the machine's own engine plus two
//! more daemons started here (see `support/daemons.rs`), reached over TLS
//! with client certificates, as stand-ins for other hosts. Each test asks
//! every engine what it runs. Where no engine answers these tests skip with
//! a printed reason, unless `FLAME_REQUIRE_DOCKER` is set (CI), where they
//! fail.
//!
//! The tests take turns (one lock): each starts daemons and containers, and
//! the machine has two cores.

#![cfg(feature = "docker")]

mod support;

use std::time::{Duration, Instant};

use bollard::Docker;
use ractor_flame::docker::{DockerBackend, Engine, EngineCerts, EngineConfig, Image, RegistryCredentials};
use ractor_flame::{BootRetry, Error, Pool, PoolConfig};
use support::daemons::{self, Daemon};
use support::docker::{backend, containers, engine, running};
use support::functions::{Echo, EnvAfter, EnvAfterArgs};
use support::{config, eventually};

const WAIT: Duration = Duration::from_secs(30);
const ENGINE_VAR: &str = "FLAME_TEST_ENGINE";

static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn once() -> BootRetry {
    BootRetry {
        max_attempts: 1,
        ..Default::default()
    }
}

/// The machine's engine, named `main`.
fn main_engine() -> EngineConfig {
    EngineConfig::new(Engine::Defaults).name("main").env(ENGINE_VAR, "main")
}

/// An extra daemon over TLS, named after it.
fn extra(daemon: &Daemon) -> EngineConfig {
    EngineConfig::new(daemon.engine())
        .name(daemon.name.clone())
        .env(ENGINE_VAR, daemon.name.clone())
}

fn pool_config(max: usize) -> PoolConfig {
    // The first boot on an engine imports the runner image there.
    config(max).max_concurrency(1).boot_timeout(Duration::from_secs(20))
}

async fn start(cfg: PoolConfig, backend: DockerBackend) -> Pool {
    Pool::start(cfg, backend, &support::functions::registry())
        .await
        .unwrap()
}

/// A call that holds a runner for `ms`, then names its engine.
fn hold(pool: &Pool, ms: u64) -> tokio::task::JoinHandle<(Result<Option<String>, Error>, Instant)> {
    let pool = pool.clone();
    tokio::spawn(async move {
        let args = EnvAfterArgs {
            name: ENGINE_VAR.to_owned(),
            ms,
        };
        let result = pool.call::<EnvAfter>(args).await;
        (result, Instant::now())
    })
}

/// Running containers of `pool` on each engine.
async fn spread(engines: &[&Docker], pool: &Pool) -> Vec<usize> {
    let mut counts = Vec::new();
    for docker in engines {
        counts.push(running(docker, pool.name()).await.len());
    }
    counts
}

async fn gone(engines: &[&Docker], pool: &Pool) {
    for docker in engines {
        eventually("no labelled container is left", WAIT, || async {
            containers(docker, pool.name()).await == 0
        })
        .await;
    }
}

fn boot_error(result: Result<String, Error>) -> String {
    match result {
        Err(Error::BootFailed { reason }) => reason,
        other => panic!("expected a boot failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_over_three_engines_spreads_six_runners_two_per_engine() {
    const TEST: &str = "a_pool_over_three_engines_spreads_six_runners_two_per_engine";
    let _turn = TURNS.lock().await;
    let Some(main) = engine(TEST).await else { return };
    let Some((_certs, daemons)) = daemons::start(TEST, &["a", "b"]).await else {
        return;
    };
    let (a, b) = (daemons[0].client().unwrap(), daemons[1].client().unwrap());
    let backend = support::docker::backend().engines([main_engine(), extra(&daemons[0]), extra(&daemons[1])]);
    // Import the runner image on every engine before the clock starts.
    backend.prepare_image().await.unwrap();
    let pool = start(pool_config(6), backend.clone()).await;

    let calls: Vec<_> = (0..6).map(|_| hold(&pool, 6_000)).collect();
    support::busy(&pool, 6).await;
    eventually("two runners on each engine", WAIT, || async {
        spread(&[&main, &a, &b], &pool).await == [2, 2, 2]
    })
    .await;
    let load: Vec<usize> = backend.runners_per_engine().into_iter().map(|(_, n)| n).collect();
    assert_eq!(load, [2, 2, 2]);

    let mut served = Vec::new();
    for call in calls {
        served.push(call.await.unwrap().0.unwrap().unwrap());
    }
    served.sort();
    assert_eq!(served, ["a", "a", "b", "b", "main", "main"]);

    pool.stop().await;
    gone(&[&main, &a, &b], &pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_killed_takes_down_only_its_runners_and_the_pool_boots_on_the_others() {
    const TEST: &str = "an_engine_killed_takes_down_only_its_runners_and_the_pool_boots_on_the_others";
    let _turn = TURNS.lock().await;
    let Some(main) = engine(TEST).await else { return };
    let Some((_certs, mut daemons)) = daemons::start(TEST, &["a", "b"]).await else {
        return;
    };
    let (a, b) = (daemons[0].client().unwrap(), daemons[1].client().unwrap());
    let backend = support::docker::backend().engines([main_engine(), extra(&daemons[0]), extra(&daemons[1])]);
    // Import the runner image on every engine before the clock starts.
    backend.prepare_image().await.unwrap();
    // A long heartbeat timeout: the runners on the dead engine's host keep
    // running and answering, so only the engine watch can fail them fast.
    let cfg = pool_config(6).heartbeat_timeout(Duration::from_secs(30));
    let pool = start(cfg, backend.clone()).await;

    let calls: Vec<_> = (0..6).map(|_| hold(&pool, 8_000)).collect();
    support::busy(&pool, 6).await;
    eventually("two runners on each engine", WAIT, || async {
        spread(&[&main, &a, &b], &pool).await == [2, 2, 2]
    })
    .await;

    let killed_at = Instant::now();
    daemons[1].kill();
    let (mut down, mut served) = (Vec::new(), Vec::new());
    for call in calls {
        match call.await.unwrap() {
            (Err(Error::RunnerDown { reason }), at) => down.push((reason, at.duration_since(killed_at))),
            (Ok(engine), _) => served.push(engine.unwrap()),
            (other, _) => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(down.len(), 2, "the calls on b fail: {down:?}");
    for (reason, after) in &down {
        assert!(reason.to_string().contains("engine b"), "{reason}");
        assert!(*after < Duration::from_secs(3), "runner-down {after:?} after the kill");
    }
    served.sort();
    assert_eq!(served, ["a", "a", "main", "main"]);

    // Six runners again: the two new ones go to the living engines.
    let calls: Vec<_> = (0..6).map(|_| hold(&pool, 2_000)).collect();
    let mut served = Vec::new();
    for call in calls {
        served.push(call.await.unwrap().0.unwrap().unwrap());
    }
    assert!(!served.iter().any(|e| e == "b"), "{served:?}");
    let load: Vec<usize> = backend.runners_per_engine().into_iter().map(|(_, n)| n).collect();
    assert_eq!(load[2], 0, "{load:?}");
    assert_eq!(load[0] + load[1], 6, "{load:?}");

    pool.stop().await;
    gone(&[&main, &a], &pool).await;
}

/// Continues a stopped process however the test ends.
struct Frozen(u32);

impl Frozen {
    fn freeze(pid: u32) -> Frozen {
        support::kill(pid, "STOP");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        support::kill(self.0, "CONT");
    }
}

/// B54: an engine whose API stops answering (its daemon frozen: the event
/// stream stays open and silent, the containers keep running) is lost at
/// the next check, and only its runners with it: their calls fail with
/// `RunnerDown` naming the engine (heartbeats alone would take 30 s here),
/// the other engine's call completes, and the pool boots on the engine that
/// answers. Given up, the lost runners stop themselves, and once the engine
/// answers again it removes their containers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b54_an_engine_whose_api_hangs_loses_only_its_runners_whose_containers_go_once_it_answers() {
    const TEST: &str = "b54_an_engine_whose_api_hangs_loses_only_its_runners_whose_containers_go_once_it_answers";
    let _turn = TURNS.lock().await;
    let Some(main) = engine(TEST).await else { return };
    let Some((_certs, daemons)) = daemons::start(TEST, &["c"]).await else {
        return;
    };
    let c = daemons[0].client().unwrap();
    let backend = support::docker::backend()
        .engines([main_engine(), extra(&daemons[0])])
        .engine_check_interval(Duration::from_millis(200));
    backend.prepare_image().await.unwrap();
    let cfg = pool_config(3).heartbeat_timeout(Duration::from_secs(30));
    let pool = start(cfg, backend.clone()).await;
    let calls: Vec<_> = (0..2).map(|_| hold(&pool, 6_000)).collect();
    support::busy(&pool, 2).await;
    eventually("one runner on each engine", WAIT, || async {
        spread(&[&main, &c], &pool).await == [1, 1]
    })
    .await;
    let on_c = running(&c, pool.name()).await;

    let frozen = Frozen::freeze(daemons[0].pid().expect("the daemon's pid"));
    let frozen_at = Instant::now();
    let (mut down, mut served) = (Vec::new(), Vec::new());
    for call in calls {
        match call.await.unwrap() {
            (Err(Error::RunnerDown { reason }), at) => down.push((reason, at.duration_since(frozen_at))),
            (Ok(engine), _) => served.push(engine.unwrap()),
            (other, _) => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(served, ["main"], "the answering engine's call completes");
    assert_eq!(down.len(), 1, "{down:?}");
    let (reason, after) = &down[0];
    assert!(reason.to_string().contains("engine c"), "{reason}");
    assert!(
        *after < Duration::from_secs(4),
        "runner-down {after:?} after the freeze"
    );
    // The pool carries on, on the engine that answers.
    assert_eq!(
        pool.call::<EnvAfter>(EnvAfterArgs {
            name: ENGINE_VAR.to_owned(),
            ms: 0,
        })
        .await
        .unwrap()
        .as_deref(),
        Some("main")
    );

    drop(frozen);
    eventually(
        "the lost runners' containers are gone from the engine",
        WAIT,
        || async { containers(&c, pool.name()).await == 0 },
    )
    .await;
    assert!(!on_c.is_empty());
    pool.stop().await;
    gone(&[&main, &c], &pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_engines_require_the_client_certificate_the_backend_presents() {
    const TEST: &str = "tls_engines_require_the_client_certificate_the_backend_presents";
    let _turn = TURNS.lock().await;
    let Some(_main) = engine(TEST).await else { return };
    let Some((certs, daemons)) = daemons::start(TEST, &["a"]).await else {
        return;
    };
    let a = &daemons[0];

    let no_client_cert = Engine::tls(a.tcp.clone(), EngineCerts::ca_only(certs.dir.join("ca.pem")));
    let pool = start(config(1).boot_retry(once()), backend().engine(no_client_cert)).await;
    let reason = boot_error(pool.call::<Echo>("x".into()).await);
    assert!(
        reason.contains(&format!("cannot reach the Docker engine at {}", a.tcp)),
        "{reason}"
    );
    assert!(reason.contains("presents no client certificate"), "{reason}");
    pool.stop().await;

    let plain = Engine::tcp(a.tcp.clone());
    let pool = start(config(1).boot_retry(once()), backend().engine(plain)).await;
    let reason = boot_error(pool.call::<Echo>("x".into()).await);
    assert!(reason.contains("cannot reach the Docker engine"), "{reason}");
    pool.stop().await;

    let pool = start(config(1), backend().engine(a.engine())).await;
    assert_eq!(pool.call::<Echo>("over tls".into()).await.unwrap(), "over tls");
    let client = a.client().unwrap();
    assert_eq!(running(&client, pool.name()).await.len(), 1);
    pool.stop().await;
    gone(&[&client], &pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_engine_max_runners_and_back_off_are_honoured() {
    const TEST: &str = "per_engine_max_runners_and_back_off_are_honoured";
    let _turn = TURNS.lock().await;
    let Some(main) = engine(TEST).await else { return };
    let Some((_certs, daemons)) = daemons::start(TEST, &["a"]).await else {
        return;
    };
    let a = daemons[0].client().unwrap();

    // One runner per engine at most: the third boot finds both full.
    let backend = support::docker::backend().engines([main_engine().max_runners(1), extra(&daemons[0]).max_runners(1)]);
    backend.prepare_image().await.unwrap();
    let pool = start(pool_config(3).boot_retry(once()), backend.clone()).await;
    let first = hold(&pool, 20_000);
    support::busy(&pool, 1).await;
    let second = hold(&pool, 20_000);
    support::busy(&pool, 2).await;
    assert_eq!(spread(&[&main, &a], &pool).await, [1, 1]);
    let reason = boot_error(pool.call::<Echo>("third".into()).await);
    assert!(reason.contains("no Docker engine can take a runner"), "{reason}");
    assert!(reason.contains("main full (1 of 1 runners)"), "{reason}");
    assert!(reason.contains("a full (1 of 1 runners)"), "{reason}");
    assert_eq!(spread(&[&main, &a], &pool).await, [1, 1]);
    first.abort();
    second.abort();
    pool.stop().await;
    gone(&[&main, &a], &pool).await;

    // An engine that fails a boot is skipped for the back-off period, then
    // tried again.
    let missing = std::env::temp_dir().join(format!("flame-no-engine-{}.sock", support::key()));
    let backoff = Duration::from_millis(1500);
    let backend = support::docker::backend()
        .engines([EngineConfig::new(Engine::socket(&missing)).name("gone"), main_engine()])
        .engine_backoff(backoff);
    let pool = start(pool_config(3).boot_retry(once()), backend).await;
    let failed_at = Instant::now();
    let reason = boot_error(pool.call::<Echo>("first".into()).await);
    assert!(
        reason.contains("engine gone: cannot reach the Docker engine"),
        "{reason}"
    );
    let held = hold(&pool, 20_000);
    support::busy(&pool, 1).await;
    assert!(failed_at.elapsed() < backoff, "too slow to test the back-off");
    assert_eq!(spread(&[&main], &pool).await, [1]);
    tokio::time::sleep(backoff.saturating_sub(failed_at.elapsed())).await;
    let reason = boot_error(pool.call::<Echo>("after the back-off".into()).await);
    assert!(reason.contains("engine gone: cannot reach"), "{reason}");
    held.abort();
    pool.stop().await;
    gone(&[&main], &pool).await;

    // Every engine backing off: a clear error that names each.
    let other = std::env::temp_dir().join(format!("flame-no-engine-{}.sock", support::key()));
    let backend = support::docker::backend().engines([
        EngineConfig::new(Engine::socket(&missing)).name("gone-1"),
        EngineConfig::new(Engine::socket(&other)).name("gone-2"),
    ]);
    let pool = start(pool_config(1).boot_retry(once()), backend).await;
    for engine in ["gone-1", "gone-2"] {
        let reason = boot_error(pool.call::<Echo>("x".into()).await);
        assert!(reason.contains(&format!("engine {engine}: cannot reach")), "{reason}");
    }
    let reason = boot_error(pool.call::<Echo>("x".into()).await);
    assert!(reason.contains("no Docker engine can take a runner"), "{reason}");
    assert!(
        reason.contains("gone-1 backing off") && reason.contains("gone-2 backing off"),
        "{reason}"
    );
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_tag_is_used_where_present_and_an_absent_one_fails_its_pull_clearly() {
    const TEST: &str = "an_image_tag_is_used_where_present_and_an_absent_one_fails_its_pull_clearly";
    let _turn = TURNS.lock().await;
    let Some(main) = engine(TEST).await else { return };
    let imported = backend().prepare_image().await.unwrap();
    let present = format!("ractor-flame-test-present:{}", support::key());
    let (repo, tag) = present.split_once(':').unwrap();
    main.tag_image(
        &imported,
        Some(
            bollard::query_parameters::TagImageOptionsBuilder::new()
                .repo(repo)
                .tag(tag)
                .build(),
        ),
    )
    .await
    .unwrap();
    let pool = start(config(1), backend().image(Image::Tag(present.clone()))).await;
    assert_eq!(pool.call::<Echo>("tagged".into()).await.unwrap(), "tagged");
    pool.stop().await;
    gone(&[&main], &pool).await;
    let _ = main
        .remove_image(&present, None::<bollard::query_parameters::RemoveImageOptions>, None)
        .await;

    // A registry on a loopback port nothing listens on: the pull fails at
    // once, and nothing leaves the machine.
    let absent = format!("127.0.0.1:1/ractor-flame-absent:{}", support::key());
    let backend = support::docker::backend()
        .image(Image::Tag(absent.clone()))
        .registry_credentials(RegistryCredentials::new("tester", "hunter2-secret").server("127.0.0.1:1"));
    assert!(!format!("{backend:?}").contains("hunter2"));
    let pool = start(config(1).boot_retry(once()), backend).await;
    let reason = boot_error(pool.call::<Echo>("x".into()).await);
    assert!(
        reason.contains(&format!("image {absent} is not on engine")) && reason.contains("pulling it failed"),
        "{reason}"
    );
    assert!(!reason.contains("hunter2"), "{reason}");
    pool.stop().await;
    assert_eq!(containers(&main, pool.name()).await, 0);
}
