//! Helpers shared by the integration tests: pools on each backend, an
//! `eventually` poller, hook recorders.

#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod chaos;
#[cfg(feature = "docker")]
pub mod daemons;
#[cfg(feature = "docker")]
pub mod docker;
pub mod examples;
pub mod functions;
#[cfg(all(feature = "kubernetes", feature = "docker"))]
pub mod kube;
#[cfg(all(feature = "kubernetes", feature = "docker"))]
pub mod kube_standin;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor_flame::{LocalBackend, Pool, PoolConfig, PoolEvent, ProcessBackend};

/// The backends the conformance suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Local,
    Process,
    Docker,
    /// Pods of the stand-in of the Kubernetes API, run on Docker.
    Kubernetes,
}

/// The path of the test runner binary.
pub fn runner_exe() -> &'static str {
    env!("CARGO_BIN_EXE_flame-test-runner")
}

/// A pool handle plus what the test may need of its backend.
pub struct TestPool {
    pub pool: Pool,
    pub local: Option<LocalBackend>,
    /// What the pool's backend needs kept alive (the Kubernetes stand-in).
    pub keep: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::ops::Deref for TestPool {
    type Target = Pool;
    fn deref(&self) -> &Pool {
        &self.pool
    }
}

/// Test defaults: short timeouts so faults show in milliseconds.
pub fn config(max: usize) -> PoolConfig {
    PoolConfig::new(max)
        .name(format!("test-{}", uuid::Uuid::new_v4().simple()))
        .boot_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10))
        .shutdown_timeout(Duration::from_secs(2))
        .heartbeat_interval(Duration::from_millis(100))
        .heartbeat_timeout(Duration::from_millis(1000))
        .failsafe_timeout(Duration::from_secs(5))
}

/// Starts a pool of `kind` with `config`, or the start error.
pub async fn try_pool_with(kind: Kind, config: PoolConfig) -> Result<TestPool, ractor_flame::Error> {
    let registry = functions::registry();
    match kind {
        Kind::Local => {
            let backend = LocalBackend::new();
            let pool = Pool::start(config, backend.clone(), &registry).await?;
            Ok(TestPool {
                pool,
                local: Some(backend),
                keep: None,
            })
        }
        Kind::Process => {
            let pool = Pool::start(config, ProcessBackend::new(runner_exe()), &registry).await?;
            Ok(TestPool {
                pool,
                local: None,
                keep: None,
            })
        }
        #[cfg(feature = "docker")]
        Kind::Docker => {
            let pool = Pool::start(config, docker::backend(), &registry).await?;
            Ok(TestPool {
                pool,
                local: None,
                keep: None,
            })
        }
        #[cfg(not(feature = "docker"))]
        Kind::Docker => unreachable!("the docker feature is off"),
        #[cfg(all(feature = "kubernetes", feature = "docker"))]
        Kind::Kubernetes => {
            let cluster = kube::cluster("a Kubernetes pool")
                .await
                .expect("the conformance suite skips before it asks for a pool");
            let pool = Pool::start(config, cluster.backend(), &registry).await?;
            Ok(TestPool {
                pool,
                local: None,
                keep: Some(Box::new(cluster)),
            })
        }
        #[cfg(not(all(feature = "kubernetes", feature = "docker")))]
        Kind::Kubernetes => unreachable!("the kubernetes or docker feature is off"),
    }
}

/// Starts a pool of `kind` with `config`.
pub async fn pool_with(kind: Kind, config: PoolConfig) -> TestPool {
    try_pool_with(kind, config).await.expect("pool starts")
}

/// Polls `check` until it returns `true` or `timeout` passes; panics with
/// `what` then.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Records pool hook events.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<PoolEvent>>>);

impl Events {
    pub fn hooks(&self, config: PoolConfig) -> PoolConfig {
        let (a, b, c) = (self.clone(), self.clone(), self.clone());
        config
            .on_grow_start(move |e| a.0.lock().unwrap().push(e.clone()))
            .on_grow_end(move |e| b.0.lock().unwrap().push(e.clone()))
            .on_shrink(move |e| c.0.lock().unwrap().push(e.clone()))
    }

    pub fn all(&self) -> Vec<PoolEvent> {
        self.0.lock().unwrap().clone()
    }

    pub fn grow_starts(&self) -> usize {
        self.all()
            .iter()
            .filter(|e| matches!(e, PoolEvent::GrowStart { .. }))
            .count()
    }

    pub fn shrinks(&self) -> usize {
        self.all()
            .iter()
            .filter(|e| matches!(e, PoolEvent::Shrink { .. }))
            .count()
    }
}

/// A unique probe key.
pub fn key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A sleep of `ms` counted under `key`.
pub fn sleep(key: &str, ms: u64) -> functions::SleepArgs {
    functions::SleepArgs {
        key: key.to_owned(),
        ms,
    }
}

/// The counts of `key` as seen on a runner of `pool`.
pub async fn probe(pool: &Pool, key: &str) -> functions::Counts {
    pool.call::<functions::Probe>(key.to_owned()).await.expect("probe call")
}

/// Sends `signal` (a name such as `KILL`, `STOP`, `TERM`) to `pid`.
pub fn kill(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// Live processes of this machine and the `FLAME_PARENT` each was started
/// with (the kernel's copy of its environment), for those that have one.
pub fn flame_processes() -> Vec<(u32, ractor_flame::Parent)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let parent = environ
            .split(|b| *b == 0)
            .filter_map(|kv| kv.strip_prefix(b"FLAME_PARENT="))
            .find_map(|v| ractor_flame::Parent::decode(&String::from_utf8_lossy(v)).ok());
        if let Some(parent) = parent {
            found.push((pid, parent));
        }
    }
    found
}

/// Starts a call sleeping `ms` under `key` in the background.
pub fn sleeping(pool: &Pool, key: &str, ms: u64) -> tokio::task::JoinHandle<Result<u64, ractor_flame::Error>> {
    let (pool, args) = (pool.clone(), sleep(key, ms));
    tokio::spawn(async move { pool.call::<functions::Sleep>(args).await })
}

/// Waits until `n` slots of `pool` are taken.
pub async fn busy(pool: &Pool, n: usize) {
    eventually(&format!("{n} busy slots"), Duration::from_secs(20), || async {
        pool.stats().await.unwrap().busy == n
    })
    .await;
}

/// Waits until `pool` has `n` booted runners.
pub async fn runners(pool: &Pool, n: usize) {
    eventually(&format!("{n} runners up"), Duration::from_secs(20), || async {
        pool.stats().await.unwrap().runners == n
    })
    .await;
}

/// Stands in for a Runner actor: records what an endpoint sends it
/// (`RemoteUp`, `ConnectionLost`, `Refused: <reason>`, `other`).
pub struct RunnerRecorder(pub Arc<Mutex<Vec<String>>>);

impl ractor::Actor for RunnerRecorder {
    type Msg = ractor_flame::actors::on_parent::RunnerMessage;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ractor::ActorRef<Self::Msg>, _: ()) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        _: ractor::ActorRef<Self::Msg>,
        msg: Self::Msg,
        _: &mut (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        use ractor_flame::actors::on_parent::RunnerMessage;
        let name = match msg {
            RunnerMessage::RemoteUp(_) => "RemoteUp".to_owned(),
            RunnerMessage::ConnectionLost(_) => "ConnectionLost".to_owned(),
            RunnerMessage::Refused(reason) => format!("Refused: {reason}"),
            _ => "other".to_owned(),
        };
        self.0.lock().unwrap().push(name);
        Ok(())
    }
}

/// The bound of casts on their way to a child in the B55 tests.
pub const CHILD_CAST_BOUND: usize = 64 << 10;

/// A pool config for the B55 tests: one runner, casts to a child bounded
/// by [`CHILD_CAST_BOUND`], heartbeats that outlast a freeze (the runner is
/// slow, not lost).
pub fn child_cast_config() -> PoolConfig {
    config(1)
        .child_cast_bytes(CHILD_CAST_BOUND)
        .heartbeat_timeout(Duration::from_secs(10))
}

/// B55 on `pool` (made with [`child_cast_config`]): places a child, then
/// `freeze`s its runner (given the runner's pid as the child sees it), so
/// that nothing sent to the child is taken. Casts are accepted up to the
/// bound, then `cast` fails with `ChildBusy` and sends nothing, and
/// `cast_wait` waits; once `thaw`ed, the waiter goes through and the
/// child has every cast that was accepted, none lost.
pub async fn child_casts_are_bounded_while_frozen<Fr, Th, FrF, ThF>(pool: &Pool, freeze: Fr, thaw: Th)
where
    Fr: FnOnce(u32) -> FrF,
    Th: FnOnce() -> ThF,
    FrF: Future<Output = ()>,
    ThF: Future<Output = ()>,
{
    use functions::{Keeper, KeeperArgs, KeeperCast};
    use ractor_flame::Error;

    let args = KeeperArgs { key: key(), start: 0 };
    let child = pool.place_child::<Keeper>(args).await.unwrap();
    let (_, pid) = child.call(()).await.unwrap();
    freeze(pid).await;
    let mut accepted = 0u64;
    let busy = loop {
        match child.cast(KeeperCast::Add(1)) {
            Ok(()) => accepted += 1,
            Err(busy @ Error::ChildBusy { .. }) => break busy,
            Err(other) => panic!("{other}"),
        }
        assert!(accepted < 1_000_000, "casts to a frozen child were never bounded");
    };
    let Error::ChildBusy { queued, limit } = busy else {
        unreachable!()
    };
    assert_eq!(limit, CHILD_CAST_BOUND);
    assert!(queued <= limit && queued > limit / 2, "{queued} bytes queued");
    assert_eq!(child.casts_queued(), queued);
    assert!(accepted > 100, "only {accepted} casts before the bound");

    // A sender that waits for room waits while the child is frozen...
    let waiter = tokio::spawn({
        let child = child.clone();
        async move { child.cast_wait(KeeperCast::Add(1)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "cast_wait went through to a frozen child");
    // ...and goes through once it thaws; nothing accepted was lost.
    thaw().await;
    let wait = Duration::from_secs(10);
    tokio::time::timeout(wait, waiter).await.unwrap().unwrap().unwrap();
    let (total, _) = child.call(()).await.unwrap();
    assert_eq!(total, accepted + 1);
    eventually("every cast handed to the child", wait, || async {
        child.casts_queued() == 0
    })
    .await;
}
