//! Faults of the process backend (issue: remote runners): killed, frozen and
//! terminated runners, a killed parent, oversized frames, a runner that
//! never connects, and backend settings users cannot break.

mod support;

use std::time::{Duration, Instant};

use ractor_flame::{CallOptions, DownReason, Error, Pool, ProcessBackend};
use serde_bytes::ByteBuf;
use support::functions::{Blob, BlobDigest, Bytes, Digest, Echo, Len, NestedPool, Sleep, WhereAmI, digest};
use support::{Events, Kind, alive, config, eventually, key, kill, pool_with, sleep};

const WAIT: Duration = Duration::from_secs(10);

/// Starts the test binary as a parent (`args`, `parent` first) and reads
/// the pid of its runner from its first line.
async fn parent_with_runner(args: &[&str]) -> (tokio::process::Child, u32) {
    use tokio::io::AsyncBufReadExt;
    let mut parent = tokio::process::Command::new(support::runner_exe())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(parent.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let runner: u32 = line.strip_prefix("runner-pid ").unwrap().parse().unwrap();
    (parent, runner)
}

fn in_flight(pool: &Pool, n: usize, ms: u64) -> Vec<tokio::task::JoinHandle<Result<u64, Error>>> {
    (0..n)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call::<Sleep>(sleep(&key(), ms)).await })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_call_fails_those_calls_within_a_second_and_the_pool_keeps_serving() {
    let pool = pool_with(Kind::Process, config(2)).await;
    let victim = pool.call::<WhereAmI>(()).await.unwrap();
    let calls = in_flight(&pool, 3, 10_000);
    support::busy(&pool, 3).await;
    let killed_at = Instant::now();
    kill(victim.pid, "KILL");
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        // The exit status names the signal, as Docker's engine does.
        assert_eq!(
            err,
            Error::RunnerDown {
                reason: DownReason::Killed
            }
        );
    }
    assert!(
        killed_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        killed_at.elapsed()
    );
    assert_eq!(pool.call::<Echo>("after".into()).await.unwrap(), "after");
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_runner_is_detected_by_heartbeat_within_three_seconds() {
    let pool = pool_with(Kind::Process, config(1)).await;
    let victim = pool.call::<WhereAmI>(()).await.unwrap();
    let calls = in_flight(&pool, 1, 20_000);
    support::busy(&pool, 1).await;
    let frozen_at = Instant::now();
    kill(victim.pid, "STOP");
    let err = calls.into_iter().next().unwrap().await.unwrap().unwrap_err();
    let detected = frozen_at.elapsed();
    kill(victim.pid, "KILL");
    assert_eq!(
        err,
        Error::RunnerDown {
            reason: DownReason::HeartbeatLost(Duration::from_millis(1000))
        }
    );
    assert!(detected < Duration::from_secs(3), "{detected:?}");
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b24_stop_waits_for_a_runner_that_was_already_going_down() {
    let pool = pool_with(Kind::Process, config(1)).await;
    let victim = pool.call::<WhereAmI>(()).await.unwrap();
    let calls = in_flight(&pool, 1, 20_000);
    support::busy(&pool, 1).await;
    // Frozen, the runner misses its heartbeats: its actor gives it up and
    // is stopping on its own (giving the process a moment to exit before
    // the kill) when the pool is told to stop.
    kill(victim.pid, "STOP");
    let err = calls.into_iter().next().unwrap().await.unwrap().unwrap_err();
    assert!(matches!(err, Error::RunnerDown { .. }), "{err:?}");
    pool.stop().await;
    let still = alive(victim.pid);
    if still {
        kill(victim.pid, "KILL");
    }
    assert!(!still, "runner process {} outlived stop()", victim.pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b24_a_second_stop_also_waits_for_the_drain() {
    let pool = pool_with(Kind::Process, config(1)).await;
    let runner = pool.call::<WhereAmI>(()).await.unwrap();
    let call = in_flight(&pool, 1, 400).pop().unwrap();
    support::busy(&pool, 1).await;
    let first = {
        let pool = pool.pool.clone();
        tokio::spawn(async move { pool.stop().await })
    };
    eventually("the pool is stopping", WAIT, || async { !pool.is_running() }).await;
    // Told to stop while already stopping, it still returns only once the
    // call in flight has drained and the runner is gone.
    pool.stop().await;
    assert!(call.is_finished(), "stop() returned before the call in flight drained");
    assert!(!alive(runner.pid), "runner process {} outlived stop()", runner.pid);
    assert!(call.await.unwrap().is_ok());
    first.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_killed_with_sigkill_leaves_no_runner_after_three_seconds() {
    let (mut parent, runner) = parent_with_runner(&["parent"]).await;
    assert!(alive(runner));
    kill(parent.id().unwrap(), "KILL");
    let _ = parent.wait().await;
    eventually("the orphaned runner exits", Duration::from_secs(3), || async {
        !alive(runner)
    })
    .await;
}

/// Runners on standby (booted, handed no work) follow the orphan rules as
/// any runner does: a parent killed with SIGKILL leaves none of them after
/// three seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_on_standby_of_a_parent_killed_with_sigkill_are_gone_after_three_seconds() {
    use tokio::io::AsyncBufReadExt;
    const TAG_VAR: &str = "FLAME_STANDBY_TEST_TAG";
    let tag = key();
    support::examples::detector_sees_a_tagged_process(TAG_VAR);
    let mut parent = tokio::process::Command::new(support::runner_exe())
        .args(["parent", "standby"])
        .env(TAG_VAR, &tag)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(parent.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line()).await.unwrap().unwrap();
    assert_eq!(line.as_deref(), Some("standby 2"));
    let parent_pid = parent.id().unwrap();
    let runners: Vec<u32> = support::examples::tagged(TAG_VAR, &tag)
        .into_iter()
        .filter(|pid| *pid != parent_pid)
        .collect();
    assert_eq!(runners.len(), 2, "{runners:?}");
    kill(parent_pid, "KILL");
    let _ = parent.wait().await;
    eventually("the orphaned standby runners exit", Duration::from_secs(3), || async {
        runners.iter().all(|pid| !alive(*pid))
    })
    .await;
}

/// A runner whose parent is SIGKILLed mid-work hears of it at the end of
/// its connection, stops its linked work and exits: no heartbeat timeout
/// is waited out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_busy_when_its_parent_is_sigkilled_exits_at_the_end_of_its_connection() {
    let (mut parent, runner) = parent_with_runner(&["parent", "busy"]).await;
    assert!(alive(runner));
    let killed = Instant::now();
    kill(parent.id().unwrap(), "KILL");
    let _ = parent.wait().await;
    eventually("the orphaned runner exits", Duration::from_secs(5), || async {
        !alive(runner)
    })
    .await;
    let took = killed.elapsed();
    eprintln!("the runner exited {took:?} after its parent was killed");
    // The heartbeat timeout of a default pool is 10 s; the end of the
    // connection is seen at once.
    assert!(took < Duration::from_secs(1), "{took:?}");
}

/// A parent SIGKILLed while its placed children work: the child that
/// outlives its handles (`link(false)`) gets the shutdown budget to finish
/// its work, then its runner stops; the linked one is stopped at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b63_an_unlinked_child_finishes_its_work_after_its_parent_dies() {
    let dir = std::env::temp_dir().join(format!("flame-b63-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut parent, runner) = parent_with_runner(&["parent", "children", dir.to_str().unwrap()]).await;
    let (unlinked, linked) = (dir.join("unlinked"), dir.join("linked"));
    let started = |p: &std::path::Path| p.with_extension("started").exists();
    eventually("both children at work", WAIT, || async {
        started(&unlinked) && started(&linked)
    })
    .await;
    let killed = Instant::now();
    kill(parent.id().unwrap(), "KILL");
    let _ = parent.wait().await;
    eventually(
        "the unlinked child finishes its work",
        Duration::from_secs(5),
        || async { unlinked.exists() },
    )
    .await;
    assert!(
        alive(runner) || killed.elapsed() >= Duration::from_millis(1_400),
        "the runner waited for it"
    );
    eventually("the runner stops after its grace", Duration::from_secs(5), || async {
        !alive(runner)
    })
    .await;
    let took = killed.elapsed();
    // The grace is the pool's shutdown budget, 1.5 s.
    assert!(took < Duration::from_millis(1_500) + Duration::from_secs(1), "{took:?}");
    assert!(!linked.exists(), "the linked child was stopped mid-work");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b31_sigterm_on_a_runner_drains_its_calls() {
    let events = Events::default();
    let pool = pool_with(Kind::Process, events.hooks(config(1))).await;
    let victim = pool.call::<WhereAmI>(()).await.unwrap();
    let calls = in_flight(&pool, 1, 400);
    support::busy(&pool, 1).await;
    kill(victim.pid, "TERM");
    assert_eq!(
        calls.into_iter().next().unwrap().await.unwrap().unwrap(),
        400,
        "drained, not cut"
    );
    eventually("the runner exits", WAIT, || async { !alive(victim.pid) }).await;
    eventually("the pool shrinks", WAIT, || async { events.shrinks() == 1 }).await;
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b11_min_is_forced_to_zero_on_a_runner() {
    let pool = pool_with(Kind::Process, config(1)).await;
    assert_eq!(pool.call::<NestedPool>(()).await.unwrap(), 0, "no recursive booting");
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b18_a_program_that_cannot_start_fails_with_the_backends_reason() {
    let cfg = config(1).boot_retry(ractor_flame::BootRetry {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
    });
    let pool = Pool::start(
        cfg,
        ProcessBackend::new("/nonexistent/flame-runner"),
        &support::functions::registry(),
    )
    .await
    .unwrap();
    let err = pool.call::<Echo>("x".into()).await.unwrap_err();
    let Error::BootFailed { reason } = err else {
        panic!("{err:?}")
    };
    assert!(reason.contains("cannot start /nonexistent/flame-runner"), "{reason}");
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_never_connects_is_killed_after_boot_timeout() {
    let cfg = config(1)
        .boot_timeout(Duration::from_millis(300))
        .boot_retry(ractor_flame::BootRetry {
            max_attempts: 1,
            ..Default::default()
        });
    let marker = format!("{}", 30_000 + std::process::id() % 1000);
    let backend = ProcessBackend::new("sleep").arg(&marker);
    let pool = Pool::start(cfg, backend, &support::functions::registry())
        .await
        .unwrap();
    let err = pool
        .call_with::<Echo>("x".into(), CallOptions::new().timeout(Duration::from_secs(5)))
        .await
        .unwrap_err();
    let Error::BootFailed { reason } = err else {
        panic!("{err:?}")
    };
    assert!(reason.contains("boot timeout"), "{reason}");
    eventually("the silent process is killed", WAIT, || async { !sleeping(&marker) }).await;
    pool.stop().await;
}

/// Whether a `sleep <marker>` process is alive.
fn sleeping(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        let pid = entry.file_name().to_string_lossy().parse::<u32>().ok();
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        pid.is_some_and(alive) && cmdline == format!("sleep\0{marker}\0").as_bytes()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_arguments_and_results_fail_the_call_not_the_connection() {
    let pool = pool_with(Kind::Process, config(1).max_frame_size(64 * 1024)).await;
    let place = pool.call::<WhereAmI>(()).await.unwrap();
    let err = pool.call::<Len>(ByteBuf::from(vec![0; 100 * 1024])).await.unwrap_err();
    assert!(
        matches!(&err, Error::Codec(m) if m.contains("exceeds max_frame_size")),
        "{err:?}"
    );
    let err = pool.call::<Bytes>(100 * 1024).await.unwrap_err();
    assert!(
        matches!(&err, Error::Codec(m) if m.contains("exceeds the limit")),
        "{err:?}"
    );
    // Same runner, same connection, still serving.
    assert_eq!(pool.call::<Len>(ByteBuf::from(vec![0; 1024])).await.unwrap(), 1024);
    assert_eq!(pool.call::<WhereAmI>(()).await.unwrap().runner, place.runner);
    pool.stop().await;
}

/// Byte strings of every size around the point where a frame is split (the
/// bytes then travel after it, and a `ByteBuf` argument is not copied)
/// arrive whole and in order, alone or inside a struct, on both the
/// in-process and the process runner; so do large results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_strings_arrive_intact_whatever_their_size() {
    for kind in [Kind::Local, Kind::Process] {
        let pool = pool_with(kind, config(1)).await;
        for size in [0, 1, 31 * 1024, 32 * 1024 - 1, 32 * 1024, 32 * 1024 + 1, (1 << 20) + 3] {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 + i / 251) as u8).collect();
            let want = digest(&data);
            let got = pool.call::<Digest>(ByteBuf::from(data.clone())).await.unwrap();
            assert_eq!(got, want, "{kind:?}: a ByteBuf of {size} bytes");
            let blob = Blob {
                name: format!("blob-{size}"),
                data: ByteBuf::from(data),
            };
            let (name, got) = pool.call::<BlobDigest>(blob).await.unwrap();
            assert_eq!(
                (name.as_str(), got),
                (format!("blob-{size}").as_str(), want),
                "{kind:?}: a struct"
            );
            let back = pool.call::<Bytes>(size).await.unwrap();
            assert!(
                back.len() == size && back.iter().all(|b| *b == 7),
                "{kind:?}: a result of {size} bytes"
            );
        }
        pool.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b37_flame_parent_is_not_overridable_by_user_env() {
    let backend = ProcessBackend::new(support::runner_exe())
        .env("FLAME_PARENT", "garbage")
        .env("FLAME_USER_VAR", "1");
    let pool = Pool::start(config(1), backend, &support::functions::registry())
        .await
        .unwrap();
    assert_eq!(pool.call::<Echo>("booted".into()).await.unwrap(), "booted");
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mebibyte_argument_round_trips() {
    let pool = pool_with(Kind::Process, config(1)).await;
    assert_eq!(
        pool.call::<Len>(ByteBuf::from(vec![1; 1 << 20])).await.unwrap(),
        1 << 20
    );
    assert_eq!(pool.call::<Bytes>(1 << 20).await.unwrap().len(), 1 << 20);
    pool.stop().await;
}
