//! A silent partition between the parent and a runner, for real: the
//! runner's container sits on a Docker network of its own, and the test
//! drops (never resets) every packet between the host and the container's
//! address with iptables. Needs Docker and root (iptables); fails where
//! `FLAME_REQUIRE_DOCKER` is set and either is missing, skips with a printed
//! reason elsewhere.

#![cfg(feature = "docker")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use ractor_flame::docker::{DockerBackend, DockerState, Network};
use ractor_flame::{Backend, BackendError, DownReason, Error, Pool, RunnerContext};
use support::docker::{backend, engine, running};
use support::functions::{WhereAmI, registry};
use support::{busy, config, eventually, key, sleeping};

/// Docker runners whose containers the parent can be told not to reclaim:
/// what stops such a runner is the runner itself.
#[derive(Clone)]
struct Unreclaimed {
    inner: DockerBackend,
    reclaim: Arc<AtomicBool>,
}

impl Backend for Unreclaimed {
    type State = Option<DockerState>;

    fn name(&self) -> &'static str {
        "docker"
    }

    async fn init(&self, ctx: &RunnerContext) -> Result<Self::State, BackendError> {
        Ok(Some(self.inner.init(ctx).await?))
    }

    async fn remote_boot(&self, state: &mut Self::State, ctx: &RunnerContext) -> Result<(), BackendError> {
        self.inner.remote_boot(state.as_mut().expect("init ran"), ctx).await
    }

    async fn handle_info(&self, state: &mut Self::State, info: Box<dyn std::any::Any + Send>) -> Option<DownReason> {
        self.inner.handle_info(state.as_mut()?, info).await
    }

    async fn terminate(&self, state: &mut Self::State) {
        if self.reclaim.load(Ordering::Acquire) {
            if let Some(state) = state.as_mut() {
                self.inner.terminate(state).await;
            }
        } else {
            std::mem::forget(state.take());
        }
    }
}

/// A test network, removed however the test ends.
struct RemovedOnDrop(String);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.0])
            .output();
    }
}

/// Packets between this host and `ip` dropped, both ways, until dropped.
struct Partition {
    rules: Vec<Vec<String>>,
}

impl Partition {
    fn cut(ip: &str) -> Result<Partition, String> {
        let rules = vec![
            vec![
                "INPUT".to_owned(),
                "-s".to_owned(),
                ip.to_owned(),
                "-j".to_owned(),
                "DROP".to_owned(),
            ],
            vec![
                "OUTPUT".to_owned(),
                "-d".to_owned(),
                ip.to_owned(),
                "-j".to_owned(),
                "DROP".to_owned(),
            ],
        ];
        let mut partition = Partition { rules: Vec::new() };
        for rule in rules {
            iptables("-I", &rule)?;
            partition.rules.push(rule);
        }
        Ok(partition)
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        for rule in self.rules.drain(..) {
            let _ = iptables("-D", &rule);
        }
    }
}

fn iptables(op: &str, rule: &[String]) -> Result<(), String> {
    let out = std::process::Command::new("iptables")
        .arg(op)
        .args(rule)
        .output()
        .map_err(|e| format!("iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {op} {rule:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether this process can change the firewall (a harmless rule, added
/// and removed); the reason when it cannot.
fn firewall() -> Result<(), String> {
    let probe = vec![
        "OUTPUT".to_owned(),
        "-d".to_owned(),
        "192.0.2.255".to_owned(),
        "-j".to_owned(),
        "DROP".to_owned(),
    ];
    iptables("-I", &probe)?;
    iptables("-D", &probe)
}

async fn address_on(docker: &Docker, container: &str, network: &str) -> String {
    let inspect = docker.inspect_container(container, None).await.expect("inspect");
    inspect
        .network_settings
        .and_then(|s| s.networks)
        .and_then(|mut n| n.remove(network))
        .and_then(|n| n.ip_address)
        .filter(|ip| !ip.is_empty())
        .expect("an address on the test network")
}

async fn is_running(docker: &Docker, container: &str) -> bool {
    match docker.inspect_container(container, None).await {
        Ok(inspect) => inspect.state.and_then(|s| s.running).unwrap_or(false),
        Err(_) => false,
    }
}

/// B53, both sides. A runner serves a long call; its packets are dropped.
/// The parent declares it lost within the heartbeat timeout (the call fails
/// with `RunnerDown`), and the pool replaces it; the runner, whose parent
/// has gone silent, stops itself likewise (its container stops although
/// the parent does not reclaim it). Once the partition heals, the old
/// runner never serves again: every call lands on its replacement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b53_a_silent_partition_loses_the_runner_on_both_sides_and_it_never_serves_again() {
    let test = "b53_a_silent_partition_loses_the_runner_on_both_sides_and_it_never_serves_again";
    let Some(docker) = engine(test).await else {
        return;
    };
    if let Err(why) = firewall() {
        if std::env::var_os("FLAME_REQUIRE_DOCKER").is_some() {
            panic!("{test}: the firewall cannot be changed here: {why}");
        }
        eprintln!("skipping {test}: the firewall cannot be changed here ({why})");
        return;
    }
    // Config: heartbeats every 100 ms, lost after 1 s; drain 2 s.
    const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(1000);
    let network = format!("flame-test-{}", key());
    backend().create_internal_network(&network).await.unwrap();
    let _network = RemovedOnDrop(network.clone());
    let reclaim = Arc::new(AtomicBool::new(true));
    let unreclaimed = Unreclaimed {
        inner: backend().network(Network::Named(network.clone())),
        reclaim: Arc::clone(&reclaim),
    };
    let pool = Pool::start(config(1), unreclaimed, &registry()).await.unwrap();
    let outcome = async {
        let old = pool.call::<WhereAmI>(()).await.unwrap();
        let container = running(&docker, pool.name()).await.remove(0);
        let ip = address_on(&docker, &container, &network).await;
        let call = sleeping(&pool, &key(), 30_000);
        busy(&pool, 1).await;

        reclaim.store(false, Ordering::Release);
        let partition = Partition::cut(&ip).expect("partition");
        let cut = Instant::now();
        let err = call.await.unwrap().unwrap_err();
        let parent_saw = cut.elapsed();
        assert!(matches!(err, Error::RunnerDown { .. }), "{err:?}");
        assert!(
            parent_saw < HEARTBEAT_TIMEOUT + Duration::from_millis(1500),
            "the parent took {parent_saw:?} to give the runner up"
        );
        // The runner stops itself: heartbeat timeout plus its drain.
        eventually("the partitioned runner stops itself", Duration::from_secs(6), || {
            let docker = docker.clone();
            let container = container.clone();
            async move { !is_running(&docker, &container).await }
        })
        .await;
        let runner_saw = cut.elapsed();

        // Healed (the engine may give the old address to the replacement),
        // the pool serves on a new runner, and only there.
        drop(partition);
        reclaim.store(true, Ordering::Release);
        let replacement = pool.call::<WhereAmI>(()).await.unwrap();
        assert_ne!(replacement.runner, old.runner);
        for _ in 0..20 {
            let place = pool.call::<WhereAmI>(()).await.unwrap();
            assert_eq!(place.runner, replacement.runner, "the old runner never serves again");
        }
        // Let the engine remove the exited container (auto-remove).
        eventually("the old container is gone", Duration::from_secs(10), || {
            let docker = docker.clone();
            let container = container.clone();
            async move { docker.inspect_container(&container, None).await.is_err() }
        })
        .await;
        (parent_saw, runner_saw)
    }
    .await;
    pool.stop().await;
    eventually("no labelled container is left", Duration::from_secs(10), || {
        let docker = docker.clone();
        let name = pool.name().to_owned();
        async move { support::docker::containers(&docker, &name).await == 0 }
    })
    .await;
    eprintln!(
        "partition seen by the parent after {:?}, by the runner after {:?}",
        outcome.0, outcome.1
    );
}
