//! The Fly backend end to end, against a stand-in for the Fly Machines API
//! (`support/fly_standin.rs`): a real HTTP server on loopback that checks
//! every request against the API's documented shape and runs each machine
//! as a real process of the test runner binary, which boots, connects back
//! and serves calls. No Fly account is reachable from here: this verifies
//! the backend against the stand-in, not against Fly itself.

#[path = "support/fly_standin.rs"]
#[allow(dead_code, unreachable_pub)]
mod fly_standin;
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fly_standin::{Setup, StandIn};
use ractor_flame::actors::FLAME_PARENT;
use ractor_flame::fly::FlyBackend;
use ractor_flame::{BootRetry, Error, Parent, Pool, PoolConfig};
use support::functions::{WhereAmI, registry};
use support::{alive, busy, config, eventually, runners, sleeping};

const APP: &str = "flame-test";
const IMAGE: &str = "registry.fly.io/flame-test:deployment-01";

fn setup() -> Setup {
    Setup {
        app: APP.into(),
        token: format!("fo1_{}", uuid::Uuid::new_v4().simple()),
        image: IMAGE.into(),
        program: support::runner_exe().into(),
        args: Vec::new(),
    }
}

/// A backend pointed at `standin`, with short timeouts and retry delays.
fn backend(standin: &StandIn, setup: &Setup) -> FlyBackend {
    FlyBackend::with_env(|_| None)
        .token(&setup.token)
        .app(APP)
        .image(IMAGE)
        .host(standin.url())
        .parent_addr("127.0.0.1:0".parse().unwrap())
        .cpus(1)
        .memory_mb(256)
        .boot_timeout(Duration::from_secs(10))
        .retry_delay(Duration::from_millis(20))
        .stop_timeout(Duration::from_secs(3))
}

/// A pool whose failed boots fail their callers at once.
fn failing_config() -> PoolConfig {
    config(1).boot_retry(BootRetry {
        max_attempts: 1,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
    })
}

fn no_rejected_requests(standin: &StandIn) {
    let rejected = standin.rejected();
    assert!(rejected.is_empty(), "the stand-in rejected requests: {rejected:#?}");
}

async fn ledger_empty(standin: &StandIn) {
    eventually("every machine destroyed", Duration::from_secs(20), || async {
        standin.live().is_empty()
    })
    .await;
}

/// The environment of process `pid`, as the kernel has it.
fn environ(pid: u32) -> BTreeSet<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    raw.split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| String::from_utf8_lossy(kv).into_owned())
        .collect()
}

async fn boot_error(pool: &Pool) -> String {
    match pool.call::<WhereAmI>(()).await {
        Err(Error::BootFailed { reason }) => reason,
        other => panic!("expected a boot failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_from_zero_to_four_machines_and_back_through_the_api() {
    let setup = setup();
    let standin = StandIn::start(setup.clone()).await;
    let fly = backend(&standin, &setup)
        .env("FLAME_TEST_MARK", "fly")
        .env(FLAME_PARENT, "forged")
        .metadata("team", "media");
    let instance = fly.instance().to_owned();
    let cfg = config(4)
        .max_concurrency(1)
        .idle_shutdown_after(Duration::from_millis(500));
    let pool_name = cfg.get_name().to_owned();
    let pool = Pool::start(cfg, fly.clone(), &registry()).await.unwrap();
    assert_eq!(standin.create_attempts(), 0, "a pool with min 0 starts with no machine");

    let calls: Vec<_> = (0..4).map(|_| sleeping(&pool, "fly-scale", 400)).collect();
    busy(&pool, 4).await;
    runners(&pool, 4).await;
    assert_eq!(standin.create_attempts(), 4);
    let machines = standin.live();
    assert_eq!(machines.len(), 4);
    let listen = fly.listen_addr().expect("the parent listens");
    let mut pids = Vec::new();
    for m in &machines {
        assert_eq!(m.state, "started");
        // The machine's env: the user's, and FLAME_PARENT that the user
        // could not override.
        let keys: Vec<_> = m.env.keys().map(String::as_str).collect();
        assert_eq!(keys, ["FLAME_PARENT", "FLAME_TEST_MARK"]);
        let parent = Parent::decode(&m.env[FLAME_PARENT]).expect("a real FLAME_PARENT, not the user's");
        assert_eq!(parent.parent_addrs, vec![listen]);
        assert_eq!(parent.backend, "fly");
        assert_eq!(m.metadata["ractor_flame_pool"], pool_name);
        assert_eq!(m.metadata["ractor_flame_parent"], instance);
        assert_eq!(m.metadata["ractor_flame_runner"], parent.runner_id.simple());
        assert_eq!(m.metadata["team"], "media");
        assert_eq!(m.body["config"]["auto_destroy"], true);
        assert_eq!(m.body["config"]["restart"]["policy"], "no");
        // The runner process has exactly the machine's env, nothing of ours.
        let pid = m.pid.expect("a process");
        let expected: BTreeSet<String> = m.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(environ(pid), expected);
        pids.push(pid);
    }
    for call in calls {
        let slept = call.await.unwrap().unwrap();
        assert!(slept >= 400, "{slept}");
    }
    let place = pool.call::<WhereAmI>(()).await.unwrap();
    assert!(pids.contains(&place.pid), "calls run in the machines' processes");

    // Idle runners stop: every machine is destroyed, every process gone.
    runners(&pool, 0).await;
    ledger_empty(&standin).await;
    assert_eq!(standin.destroyed().len(), 4);
    eventually("runner processes gone", Duration::from_secs(10), || async {
        pids.iter().all(|pid| !alive(*pid))
    })
    .await;
    assert_eq!(standin.create_attempts(), 4, "no machine beyond the four");
    pool.stop().await;
    no_rejected_requests(&standin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_machine_fails_its_call_with_runner_down() {
    let setup = setup();
    let standin = StandIn::start(setup.clone()).await;
    let pool = Pool::start(config(1), backend(&standin, &setup), &registry())
        .await
        .unwrap();
    let call = sleeping(&pool, "fly-crash", 10_000);
    busy(&pool, 1).await;
    let machine = standin.live().pop().expect("one machine");
    let started = Instant::now();
    standin.crash(&machine.id);
    let err = call.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::RunnerDown { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "seen in {:?}",
        started.elapsed()
    );
    ledger_empty(&standin).await;
    assert!(!alive(machine.pid.unwrap()));
    // The pool boots a fresh machine for the next call.
    pool.call::<WhereAmI>(()).await.unwrap();
    assert_eq!(standin.create_attempts(), 2);
    pool.stop().await;
    ledger_empty(&standin).await;
    no_rejected_requests(&standin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boot_succeeds_after_two_rate_limited_creates() {
    let setup = setup();
    let standin = StandIn::start(setup.clone()).await;
    standin.fail_next_creates(429, 2);
    let pool = Pool::start(failing_config(), backend(&standin, &setup), &registry())
        .await
        .unwrap();
    pool.call::<WhereAmI>(()).await.unwrap();
    assert_eq!(standin.create_attempts(), 3, "two 429s, then the create that worked");
    assert_eq!(standin.machines().len(), 1);
    pool.stop().await;
    ledger_empty(&standin).await;
    no_rejected_requests(&standin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_capacity_is_retried_as_flame_does_then_fails_the_boot_clearly() {
    let setup = setup();
    let standin = StandIn::start(setup.clone()).await;
    standin.fail_all_creates(Some(422));
    let fly = backend(&standin, &setup)
        .region("ams")
        .boot_timeout(Duration::from_secs(5));
    let pool = Pool::start(failing_config(), fly, &registry()).await.unwrap();
    let started = Instant::now();
    let reason = boot_error(&pool).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(
        reason.contains("no capacity") && reason.contains("region ams"),
        "{reason}"
    );
    assert!(
        reason.contains("after 11 attempts") && reason.contains("422"),
        "{reason}"
    );
    assert_eq!(
        standin.create_attempts(),
        11,
        "the first create and FLAME's ten retries"
    );
    assert!(standin.machines().is_empty());
    pool.stop().await;
    no_rejected_requests(&standin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_capacity_stops_retrying_at_the_boot_timeout() {
    let setup = setup();
    let standin = StandIn::start(setup.clone()).await;
    standin.fail_all_creates(Some(422));
    let fly = backend(&standin, &setup)
        .boot_timeout(Duration::from_millis(500))
        .retry_delay(Duration::from_millis(150));
    let pool = Pool::start(failing_config(), fly, &registry()).await.unwrap();
    let started = Instant::now();
    let reason = boot_error(&pool).await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert!(
        reason.contains("no capacity") && reason.contains("region (any)"),
        "{reason}"
    );
    let attempts = standin.create_attempts();
    assert!(
        (2..=4).contains(&attempts),
        "{attempts} attempts in 500 ms, 150 ms apart"
    );
    assert!(reason.contains(&format!("after {attempts} attempts")), "{reason}");
    pool.stop().await;
    no_rejected_requests(&standin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_back_off_until_the_boot_timeout() {
    let setup = setup();
    let standin = StandIn::start(setup.clone()).await;
    standin.fail_all_creates(Some(500));
    let fly = backend(&standin, &setup).boot_timeout(Duration::from_millis(800));
    let pool = Pool::start(failing_config(), fly, &registry()).await.unwrap();
    let started = Instant::now();
    let reason = boot_error(&pool).await;
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(reason.contains("did not accept the request"), "{reason}");
    assert!(reason.contains("500") && reason.contains("internal error"), "{reason}");
    // 20 ms doubling up to 160 ms within 800 ms: more than a few, far fewer
    // than a retry every 20 ms.
    let attempts = standin.create_attempts();
    assert!((4..=10).contains(&attempts), "{attempts} attempts");
    pool.stop().await;
    no_rejected_requests(&standin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_cut_off_by_the_boot_timeout_reports_the_last_answer() {
    let setup = setup();
    let standin = StandIn::start(setup.clone()).await;
    standin.fail_all_creates(Some(500));
    standin.hang_creates_after(2);
    let fly = backend(&standin, &setup).boot_timeout(Duration::from_millis(400));
    let pool = Pool::start(failing_config(), fly, &registry()).await.unwrap();
    let started = Instant::now();
    let reason = boot_error(&pool).await;
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(reason.contains("did not accept the request"), "{reason}");
    assert!(
        reason.contains("last answer: 500")
            && reason.contains("internal error")
            && reason.contains("cut off by the boot timeout"),
        "{reason}"
    );
    assert!(reason.contains("(3 attempts)"), "{reason}");
    pool.stop().await;
    no_rejected_requests(&standin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_is_a_clear_boot_failure() {
    let setup = setup();
    let standin = StandIn::start(setup.clone()).await;
    let wrong = format!("fo1_{}", uuid::Uuid::new_v4().simple());
    let fly = backend(&standin, &setup).token(&wrong);
    assert!(!format!("{fly:?}").contains(&wrong), "Debug shows no token");
    let pool = Pool::start(failing_config(), fly, &registry()).await.unwrap();
    let reason = boot_error(&pool).await;
    assert!(
        reason.contains("rejected the token") && reason.contains("401"),
        "{reason}"
    );
    assert!(!reason.contains(&wrong) && !reason.contains(&setup.token), "{reason}");
    assert_eq!(standin.create_attempts(), 1, "a rejected token is not retried");
    assert_eq!(standin.unauthorized(), 1);
    pool.stop().await;
    no_rejected_requests(&standin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_app_or_image_is_a_clear_boot_failure() {
    let setup = setup();
    let standin = StandIn::start(setup.clone()).await;
    for fly in [
        backend(&standin, &setup).app("no-such-app"),
        backend(&standin, &setup).image("registry.fly.io/flame-test:gone"),
    ] {
        let pool = Pool::start(failing_config(), fly, &registry()).await.unwrap();
        let reason = boot_error(&pool).await;
        assert!(reason.contains("found no app") && reason.contains("(404)"), "{reason}");
        pool.stop().await;
    }
    assert_eq!(standin.create_attempts(), 2, "a 404 is not retried");
    assert!(standin.machines().is_empty());
    no_rejected_requests(&standin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_options_fail_the_boot_in_flames_order() {
    let pool = Pool::start(failing_config(), FlyBackend::with_env(|_| None), &registry())
        .await
        .unwrap();
    let reason = boot_error(&pool).await;
    assert!(
        reason.contains("needs `token`") && reason.contains("FLY_API_TOKEN"),
        "{reason}"
    );
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_whose_runner_never_connects_is_stopped_and_destroyed() {
    let mut setup = setup();
    // The machine runs, but no runner in it ever connects back.
    setup.program = "/bin/sleep".into();
    setup.args = vec!["30".into()];
    let standin = StandIn::start(setup.clone()).await;
    let fly = backend(&standin, &setup).boot_timeout(Duration::from_millis(700));
    let pool = Pool::start(failing_config(), fly, &registry()).await.unwrap();
    let started = Instant::now();
    let reason = boot_error(&pool).await;
    assert!(reason.contains("no connection"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    ledger_empty(&standin).await;
    let machine = standin.machines().pop().unwrap();
    assert_eq!(machine.destroyed_by, Some("auto"), "stopped, then auto-destroyed");
    assert!(!alive(machine.pid.unwrap()));
    assert!(
        standin
            .requests()
            .iter()
            .any(|r| r.starts_with("POST") && r.ends_with("/stop")),
        "{:#?}",
        standin.requests()
    );
    pool.stop().await;
    no_rejected_requests(&standin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_that_will_not_stop_is_destroyed_by_force() {
    let mut setup = setup();
    setup.program = "/bin/sleep".into();
    setup.args = vec!["30".into()];
    let standin = StandIn::start(setup.clone()).await;
    standin.ignore_stop(true);
    let fly = backend(&standin, &setup)
        .boot_timeout(Duration::from_millis(500))
        .stop_timeout(Duration::from_millis(1500));
    let pool = Pool::start(failing_config(), fly, &registry()).await.unwrap();
    boot_error(&pool).await;
    ledger_empty(&standin).await;
    let machine = standin.machines().pop().unwrap();
    assert_eq!(machine.destroyed_by, Some("force"));
    let pid = machine.pid.unwrap();
    eventually("the machine's process killed", Duration::from_secs(5), || async {
        !alive(pid)
    })
    .await;
    let requests = standin.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("DELETE") && r.ends_with("?force=true")),
        "{requests:#?}"
    );
    pool.stop().await;
    no_rejected_requests(&standin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_reach_the_parent_over_the_pinned_tls_link() {
    let setup = setup();
    let standin = StandIn::start(setup.clone()).await;
    let fly = backend(&standin, &setup);
    // On Fly the parent's private address is not loopback, so the link is
    // TLS by default; here on loopback it is asked for.
    let cfg = config(1).link_tls(ractor_flame::LinkTls::Always);
    let pool = Pool::start(cfg, fly.clone(), &registry()).await.unwrap();
    let place = pool.call::<WhereAmI>(()).await.unwrap();
    let machines = standin.live();
    assert_eq!(machines.len(), 1);
    assert_eq!(machines[0].pid, Some(place.pid), "the call ran in the machine");
    let parent = Parent::decode(&machines[0].env[FLAME_PARENT]).unwrap();
    assert!(parent.tls.is_some(), "the machine pins the parent's certificate");
    pool.stop().await;
    ledger_empty(&standin).await;
    no_rejected_requests(&standin);
}

/// B61 on Fly: each runner mounts its own free volume of the name (one
/// machine per volume, as Fly requires), in the volume's region; a volume
/// attached to someone else's machine is never taken; a runner that finds
/// every volume attached fails its boot saying so; the volumes come free
/// when the runners' machines are destroyed; a name the app has no volume
/// of fails the boot naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b61_each_fly_runner_mounts_a_free_volume_of_the_name() {
    let setup = setup();
    let standin = StandIn::start(setup.clone()).await;
    let foreign = standin.add_volume("scratch", "ord", Some("148e2d0b3a6189"));
    let free: BTreeSet<String> = (0..2).map(|_| standin.add_volume("scratch", "ord", None)).collect();
    standin.add_volume("models", "ord", None);
    let fly = backend(&standin, &setup).volume("scratch", "/scratch");
    let cfg = config(3).max_concurrency(1).boot_retry(BootRetry {
        max_attempts: 1,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
    });
    let pool = Pool::start(cfg, fly, &registry()).await.unwrap();
    let calls: Vec<_> = (0..2).map(|_| sleeping(&pool, "fly-volume", 500)).collect();
    busy(&pool, 2).await;
    let machines = standin.live();
    let mounted: BTreeSet<(String, String)> = machines.iter().map(|m| m.mount.clone().expect("a mount")).collect();
    let expected: BTreeSet<(String, String)> = free.iter().map(|v| (v.clone(), "/scratch".to_owned())).collect();
    assert_eq!(mounted, expected, "each runner on its own free volume");
    for m in &machines {
        assert_eq!(m.body["region"], "ord", "a machine goes where its volume is");
    }

    // A third runner: every volume of the name is attached.
    let reason = boot_error(&pool).await;
    assert!(
        reason.contains("every Fly volume named `scratch` is attached (3 of 3)"),
        "{reason}"
    );
    for call in calls {
        call.await.unwrap().unwrap();
    }
    pool.stop().await;
    ledger_empty(&standin).await;
    for volume in standin.volumes() {
        let attached = volume.attached.is_some();
        assert_eq!(attached, volume.id == foreign, "{volume:?}");
    }

    let pool = Pool::start(
        failing_config(),
        backend(&standin, &setup).volume("data", "/data"),
        &registry(),
    )
    .await
    .unwrap();
    let reason = boot_error(&pool).await;
    assert!(reason.contains("has no volume named `data`"), "{reason}");
    pool.stop().await;
    assert_eq!(standin.live().len(), 0, "no machine for a runner with no volume");
    no_rejected_requests(&standin);
}

/// A machine whose host fails leaves its connection open and silent; the
/// Machines API reports it stopped or failed. The parent reads that within
/// the machine check interval, far sooner than its heartbeat timeout: the
/// call in flight fails with `RunnerDown` naming the machine's state, the
/// machine is destroyed, and the next call gets a fresh machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_lost_with_its_host_is_noticed_through_the_api_before_heartbeats() {
    const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(20);
    let setup = setup();
    let standin = StandIn::start(setup.clone()).await;
    for state in ["stopped", "failed"] {
        let fly = backend(&standin, &setup).machine_check_interval(Some(Duration::from_millis(100)));
        let cfg = config(1)
            .heartbeat_interval(Duration::from_secs(5))
            .heartbeat_timeout(HEARTBEAT_TIMEOUT);
        let pool = Pool::start(cfg, fly, &registry()).await.unwrap();
        let call = sleeping(&pool, "fly-host", 30_000);
        busy(&pool, 1).await;
        let machine = standin.live().pop().expect("one machine");
        let started = Instant::now();
        standin.lose_host(&machine.id, state);
        let err = call.await.unwrap().unwrap_err();
        let seen = started.elapsed();
        assert!(
            matches!(&err, Error::RunnerDown { reason } if reason.to_string().contains(&format!("is {state}"))),
            "{state}: {err:?}"
        );
        assert!(seen < Duration::from_secs(3), "{state}: seen in {seen:?}");
        ledger_empty(&standin).await;
        let pid = machine.pid.unwrap();
        eventually("the frozen process is gone", Duration::from_secs(5), || {
            std::future::ready(!alive(pid))
        })
        .await;
        pool.call::<WhereAmI>(()).await.unwrap();
        pool.stop().await;
        ledger_empty(&standin).await;
    }
    no_rejected_requests(&standin);
}

/// A create whose machine was made but whose answer was lost (a 502 from a
/// proxy) is not sent again blindly: the retry finds the machine by its
/// name and adopts it. One machine, one create, and it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_answer_was_lost_adopts_the_machine_it_made() {
    let setup = setup();
    let standin = StandIn::start(setup.clone()).await;
    standin.lose_next_create_answers(1);
    let pool = Pool::start(config(1), backend(&standin, &setup), &registry())
        .await
        .unwrap();
    let place = pool.call::<WhereAmI>(()).await.unwrap();
    assert_eq!(standin.create_attempts(), 1, "{:#?}", standin.requests());
    let machines = standin.live();
    assert_eq!(machines.len(), 1, "{machines:#?}");
    assert_eq!(machines[0].pid, Some(place.pid), "the call runs on the adopted machine");
    pool.stop().await;
    ledger_empty(&standin).await;
    no_rejected_requests(&standin);
}
