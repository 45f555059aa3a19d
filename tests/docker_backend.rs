//! The Docker backend against the real engine (B38, B39). Each test asserts
//! container state through the engine API and leaves no labelled container
//! behind. Where no engine answers these tests skip with a printed reason,
//! unless `FLAME_REQUIRE_DOCKER` is set (CI), where they fail.

#![cfg(feature = "docker")]

mod support;

use std::time::{Duration, Instant};

use bollard::query_parameters::KillContainerOptionsBuilder;
use ractor_flame::docker::{DockerBackend, Engine, Image, Mount};
use ractor_flame::{DownReason, Error, Pool};
use support::docker::{backend, containers, engine, running};
use support::functions::{Alloc, Echo, Env, ReadFile, Threads, WhereAmI, WriteFile};
use support::{config, eventually, key};

const WAIT: Duration = Duration::from_secs(20);

async fn start(cfg: ractor_flame::PoolConfig, backend: DockerBackend) -> Pool {
    Pool::start(cfg, backend, &support::functions::registry())
        .await
        .unwrap()
}

async fn gone(docker: &bollard::Docker, pool: &Pool) {
    let name = pool.name().to_owned();
    eventually("no labelled container is left", WAIT, || async {
        containers(docker, &name).await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_boots_a_container_and_calls_it() {
    let Some(docker) = engine("docker_boots_a_container_and_calls_it").await else {
        return;
    };
    let pool = start(config(1), backend()).await;
    let place = pool.call::<WhereAmI>(()).await.unwrap();
    assert_eq!(place.pid, 1, "the runner is PID 1 of its container");
    assert_eq!(running(&docker, pool.name()).await.len(), 1);
    assert_eq!(
        pool.call::<Echo>("from a container".into()).await.unwrap(),
        "from a container"
    );
    pool.stop().await;
    gone(&docker, &pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_scales_from_zero_to_n_and_back_to_zero_after_idle() {
    let Some(docker) = engine("docker_scales_from_zero_to_n_and_back_to_zero_after_idle").await else {
        return;
    };
    let cfg = config(3)
        .max_concurrency(1)
        .idle_shutdown_after(Duration::from_millis(300));
    let pool = start(cfg, backend()).await;
    assert_eq!(containers(&docker, pool.name()).await, 0);
    let k = key();
    let calls: Vec<_> = (0..3).map(|_| support::sleeping(&pool, &k, 1_000)).collect();
    eventually("three containers run", WAIT, || async {
        running(&docker, pool.name()).await.len() == 3
    })
    .await;
    for c in calls {
        c.await.unwrap().unwrap();
    }
    gone(&docker, &pool).await;
    eventually("the pool counts zero runners", WAIT, || async {
        let stats = pool.stats().await.unwrap();
        stats.runners + stats.booting == 0
    })
    .await;
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_a_container_killed_mid_call_fails_the_call_at_once() {
    let Some(docker) = engine("docker_a_container_killed_mid_call_fails_the_call_at_once").await else {
        return;
    };
    // A long heartbeat timeout: only the engine's event can be this fast.
    let pool = start(config(1).heartbeat_timeout(Duration::from_secs(30)), backend()).await;
    pool.call::<Echo>("up".into()).await.unwrap();
    let call = support::sleeping(&pool, &key(), 20_000);
    support::busy(&pool, 1).await;
    let id = running(&docker, pool.name()).await.remove(0);
    let killed_at = Instant::now();
    docker
        .kill_container(&id, Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()))
        .await
        .unwrap();
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(
        err,
        Error::RunnerDown {
            reason: DownReason::Killed
        }
    );
    assert!(
        killed_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        killed_at.elapsed()
    );
    assert_eq!(pool.call::<Echo>("again".into()).await.unwrap(), "again");
    pool.stop().await;
    gone(&docker, &pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_a_paused_container_is_detected_by_heartbeat() {
    let Some(docker) = engine("docker_a_paused_container_is_detected_by_heartbeat").await else {
        return;
    };
    let pool = start(config(1), backend()).await;
    pool.call::<Echo>("up".into()).await.unwrap();
    let call = support::sleeping(&pool, &key(), 20_000);
    support::busy(&pool, 1).await;
    let id = running(&docker, pool.name()).await.remove(0);
    let paused_at = Instant::now();
    docker.pause_container(&id).await.unwrap();
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(
        err,
        Error::RunnerDown {
            reason: DownReason::HeartbeatLost(Duration::from_millis(1000))
        }
    );
    assert!(
        paused_at.elapsed() < Duration::from_secs(3),
        "{:?}",
        paused_at.elapsed()
    );
    pool.stop().await;
    gone(&docker, &pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_an_oom_kill_is_reported_as_oom() {
    let Some(docker) = engine("docker_an_oom_kill_is_reported_as_oom").await else {
        return;
    };
    let pool = start(config(1), backend().memory(32 * 1024 * 1024)).await;
    let err = pool.call::<Alloc>(512).await.unwrap_err();
    assert_eq!(
        err,
        Error::RunnerDown {
            reason: DownReason::OutOfMemory
        }
    );
    pool.stop().await;
    gone(&docker, &pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_a_container_that_never_connects_is_removed_after_boot_timeout() {
    let Some(docker) = engine("docker_a_container_that_never_connects_is_removed_after_boot_timeout").await else {
        return;
    };
    let cfg = config(1)
        .boot_timeout(Duration::from_millis(1500))
        .boot_retry(ractor_flame::BootRetry {
            max_attempts: 1,
            ..Default::default()
        });
    let silent = DockerBackend::new()
        .image(Image::Executable("/bin/sleep".into()))
        .cmd(["30"]);
    let pool = start(cfg, silent).await;
    let err = pool
        .call_with::<Echo>(
            "x".into(),
            ractor_flame::CallOptions::new().timeout(Duration::from_secs(15)),
        )
        .await
        .unwrap_err();
    let Error::BootFailed { reason } = err else {
        panic!("{err:?}")
    };
    assert!(reason.contains("boot timeout"), "{reason}");
    gone(&docker, &pool).await;
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_a_container_that_exits_before_connecting_reports_its_last_lines() {
    let Some(docker) = engine("docker_a_container_that_exits_before_connecting_reports_its_last_lines").await else {
        return;
    };
    let cfg = config(1).boot_retry(ractor_flame::BootRetry {
        max_attempts: 1,
        ..Default::default()
    });
    let failing = DockerBackend::new()
        .image(Image::Executable("/bin/sh".into()))
        .cmd(["-c", "echo boom-before-connect >&2; exit 3"]);
    let pool = start(cfg, failing).await;
    let err = pool.call::<Echo>("x".into()).await.unwrap_err();
    let Error::BootFailed { reason } = err else {
        panic!("{err:?}")
    };
    assert!(reason.contains("exited with code 3"), "{reason}");
    assert!(reason.contains("boom-before-connect"), "{reason}");
    gone(&docker, &pool).await;
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b39_an_unreachable_engine_is_a_clear_boot_error() {
    let cfg = config(1).boot_retry(ractor_flame::BootRetry {
        max_attempts: 1,
        ..Default::default()
    });
    let nowhere = DockerBackend::new().engine(Engine::Socket("/nonexistent/docker.sock".into()));
    let pool = start(cfg, nowhere).await;
    let err = pool.call::<Echo>("x".into()).await.unwrap_err();
    let Error::BootFailed { reason } = err else {
        panic!("{err:?}")
    };
    assert!(reason.starts_with("cannot reach the Docker engine"), "{reason}");
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b39_a_missing_image_and_bad_limits_are_clear_boot_errors() {
    let Some(_docker) = engine("b39_a_missing_image_and_bad_limits_are_clear_boot_errors").await else {
        return;
    };
    let once = ractor_flame::BootRetry {
        max_attempts: 1,
        ..Default::default()
    };
    let missing = DockerBackend::new().image(Image::Tag("127.0.0.1:1/ractor-flame-missing:nope".into()));
    let pool = start(config(1).boot_retry(once), missing).await;
    let Error::BootFailed { reason } = pool.call::<Echo>("x".into()).await.unwrap_err() else {
        panic!()
    };
    assert!(
        reason.contains("image 127.0.0.1:1/ractor-flame-missing:nope is not on engine")
            && reason.contains("pulling it failed"),
        "{reason}"
    );
    pool.stop().await;

    let tiny = backend().memory(1000);
    let pool = start(config(1).boot_retry(once), tiny).await;
    let Error::BootFailed { reason } = pool.call::<Echo>("x".into()).await.unwrap_err() else {
        panic!()
    };
    assert!(reason.contains("below Docker's minimum"), "{reason}");
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_runners_on_an_internal_network_reach_the_parent_at_its_gateway() {
    use ractor_flame::docker::Network;
    let Some(docker) = engine("docker_runners_on_an_internal_network_reach_the_parent_at_its_gateway").await else {
        return;
    };
    let network = format!("flame-test-{}", key());
    let gateway = backend().create_internal_network(&network).await.unwrap();
    assert!(gateway.is_ipv4(), "{gateway}");
    let result = async {
        let pool = start(config(1), backend().network(Network::Named(network.clone()))).await;
        let echoed = pool.call::<Echo>("over the bridge".into()).await;
        // Off loopback, the link is encrypted: the runner pins a certificate.
        let id = running(&docker, pool.name()).await.remove(0);
        let env = docker
            .inspect_container(&id, None)
            .await
            .unwrap()
            .config
            .unwrap()
            .env
            .unwrap();
        let parent = env
            .iter()
            .find_map(|kv| kv.strip_prefix("FLAME_PARENT="))
            .map(|v| ractor_flame::Parent::decode(v).unwrap())
            .expect("FLAME_PARENT");
        assert_eq!(parent.parent_addrs[0].ip(), gateway);
        assert!(parent.tls.is_some(), "a runner on a named network uses TLS");
        pool.stop().await;
        gone(&docker, &pool).await;
        echoed
    }
    .await;
    docker.remove_network(&network).await.unwrap();
    assert_eq!(result.unwrap(), "over the bridge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b39_cpu_and_pids_limits_reach_the_container_and_hold() {
    let Some(docker) = engine("b39_cpu_and_pids_limits_reach_the_container_and_hold").await else {
        return;
    };
    let pool = start(config(1), backend().cpus(0.5).pids(64)).await;
    pool.call::<Echo>("up".into()).await.unwrap();
    let id = running(&docker, pool.name()).await.remove(0);
    let host = docker.inspect_container(&id, None).await.unwrap().host_config.unwrap();
    assert_eq!(host.nano_cpus, Some(500_000_000), "0.5 CPU");
    assert_eq!(host.pids_limit, Some(64));
    // The pids limit holds: a burst of 200 threads stops short of 64
    // processes and threads in the container, and the runner survives it.
    let started = pool.call::<Threads>(200).await.unwrap();
    assert!(started < 64, "{started} threads started under a pids limit of 64");
    assert_eq!(pool.call::<Echo>("still up".into()).await.unwrap(), "still up");
    pool.stop().await;
    gone(&docker, &pool).await;

    // Without limits, the same burst runs in full (the limit above is what
    // stopped it) and the engine shows none.
    let pool = start(config(1), backend()).await;
    assert_eq!(pool.call::<Threads>(200).await.unwrap(), 200);
    let id = running(&docker, pool.name()).await.remove(0);
    let host = docker.inspect_container(&id, None).await.unwrap().host_config.unwrap();
    assert!(matches!(host.nano_cpus, None | Some(0)), "{:?}", host.nano_cpus);
    assert!(
        matches!(host.pids_limit, None | Some(0) | Some(-1)),
        "{:?}",
        host.pids_limit
    );
    pool.stop().await;
    gone(&docker, &pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b37_docker_flame_parent_is_not_overridable_by_user_env() {
    let Some(docker) = engine("b37_docker_flame_parent_is_not_overridable_by_user_env").await else {
        return;
    };
    let user = DockerBackend::new()
        .image(Image::Executable(support::runner_exe().into()))
        .stop_timeout(Duration::from_secs(1))
        .env("FLAME_PARENT", "x")
        .env("FLAME_USER_VAR", "1");
    let pool = start(config(1), user).await;
    // The runner booted, so it read a real FLAME_PARENT: the one naming it.
    let place = pool.call::<WhereAmI>(()).await.unwrap();
    let seen = pool
        .call::<Env>("FLAME_PARENT".into())
        .await
        .unwrap()
        .expect("FLAME_PARENT set");
    assert_ne!(seen, "x");
    let parent = ractor_flame::Parent::decode(&seen).unwrap();
    assert_eq!(format!("{:?}", parent.runner_id), place.runner);
    assert_eq!(parent.backend, "docker");
    // The user's other variables pass through.
    assert_eq!(
        pool.call::<Env>("FLAME_USER_VAR".into()).await.unwrap().as_deref(),
        Some("1")
    );
    // The container holds exactly one FLAME_PARENT, the real one.
    let id = running(&docker, pool.name()).await.remove(0);
    let env = docker
        .inspect_container(&id, None)
        .await
        .unwrap()
        .config
        .and_then(|c| c.env)
        .unwrap_or_default();
    let flame_parents: Vec<_> = env.iter().filter(|kv| kv.starts_with("FLAME_PARENT=")).collect();
    assert_eq!(flame_parents, vec![&format!("FLAME_PARENT={seen}")]);
    pool.stop().await;
    gone(&docker, &pool).await;
}

/// Runners mount what their work needs: a host path (read-only), a named
/// volume whose contents outlive them, and tmpfs scratch space.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b61_runners_mount_a_host_path_a_named_volume_and_tmpfs() {
    let Some(docker) = engine("b61_runners_mount_a_host_path_a_named_volume_and_tmpfs").await else {
        return;
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let dir = std::env::temp_dir().join(format!("flame-b61-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("input.txt"), "model weights").unwrap();
    let volume = format!("flame-test-b61-{id}");
    docker
        .create_volume(bollard::models::VolumeCreateRequest {
            name: Some(volume.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let backend = backend()
        .mount(Mount::bind(dir.to_str().unwrap(), "/input").read_only())
        .mount(Mount::volume(&volume, "/exports"))
        .mount(Mount::tmpfs("/scratch", 8 * 1024 * 1024));
    let pool = start(config(1), backend).await;
    assert_eq!(
        pool.call::<ReadFile>("/input/input.txt".into()).await.unwrap(),
        "model weights"
    );
    pool.call::<WriteFile>(("/exports/out.txt".into(), "exported".into()))
        .await
        .unwrap();
    pool.call::<WriteFile>(("/scratch/part.bin".into(), "scratch".into()))
        .await
        .unwrap();
    let refused = pool.call::<WriteFile>(("/input/new.txt".into(), "no".into())).await;
    assert!(
        matches!(refused, Err(Error::Remote { .. })),
        "a read-only bind: {refused:?}"
    );
    pool.stop().await;
    gone(&docker, &pool).await;
    // The volume keeps what the runner wrote: read where the engine keeps it.
    let kept = docker.inspect_volume(&volume).await.unwrap();
    let written = std::fs::read_to_string(std::path::Path::new(&kept.mountpoint).join("out.txt")).unwrap();
    assert_eq!(written, "exported");
    docker
        .remove_volume(&volume, None::<bollard::query_parameters::RemoveVolumeOptions>)
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A volume that does not exist, or a host path that does not, fails the
/// boot with an error that names it (the engine would make the volume,
/// empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b61_a_missing_volume_or_host_path_fails_the_boot_naming_it() {
    let Some(docker) = engine("b61_a_missing_volume_or_host_path_fails_the_boot_naming_it").await else {
        return;
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let volume = format!("flame-test-missing-{id}");
    let path = format!("/nonexistent/flame-{id}");
    for (mount, named) in [
        (Mount::volume(&volume, "/data"), &volume),
        (Mount::bind(&path, "/data"), &path),
    ] {
        let pool = start(config(1), backend().mount(mount)).await;
        let err = pool.call::<Echo>("x".into()).await.unwrap_err();
        let Error::BootFailed { reason } = &err else {
            panic!("expected a boot failure, got {err:?}")
        };
        assert!(reason.contains(named.as_str()), "{reason}");
        pool.stop().await;
        gone(&docker, &pool).await;
    }
    assert!(
        docker.inspect_volume(&volume).await.is_err(),
        "no volume was made for the missing one"
    );
}

/// B55 on containers: casts to a placed child whose container is paused
/// (nothing sent to it is taken) are bounded; past the bound `cast` fails
/// with `ChildBusy` and `cast_wait` waits until the container is unpaused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b55_casts_to_a_child_in_a_paused_container_are_bounded() {
    let Some(docker) = engine("b55_casts_to_a_child_in_a_paused_container_are_bounded").await else {
        return;
    };
    let pool = start(support::child_cast_config(), backend()).await;
    let id = std::sync::OnceLock::new();
    support::child_casts_are_bounded_while_frozen(
        &pool,
        |_| async {
            let container = running(&docker, pool.name()).await.remove(0);
            docker.pause_container(&container).await.unwrap();
            id.set(container).unwrap();
        },
        || async { docker.unpause_container(id.get().unwrap()).await.unwrap() },
    )
    .await;
    pool.stop().await;
    gone(&docker, &pool).await;
}
