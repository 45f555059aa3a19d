//! `DockerBackend`: each runner is a container on a Docker Engine.

mod events;
mod image;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectNetworkOptions, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StartContainerOptions, StopContainerOptionsBuilder,
};
use futures_util::StreamExt as _;
use ractor_flame_actors::{Backend, BackendError, DownReason, Endpoint, FLAME_PARENT, RunnerContext, RunnerId};
use tokio::sync::OnceCell;

pub use events::ContainerEvent;

/// Label: every container this backend creates.
pub const LABEL_MANAGED: &str = "ractor-flame.managed";
/// Label: the pool's name.
pub const LABEL_POOL: &str = "ractor-flame.pool";
/// Label: the parent instance (one per backend value) that owns it.
pub const LABEL_PARENT: &str = "ractor-flame.parent";
/// Label: the runner id.
pub const LABEL_RUNNER: &str = "ractor-flame.runner";

/// Lines of a container's output kept for error messages.
const LAST_LINES: usize = 20;
/// Docker's smallest memory limit.
const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// Where the runner image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Image {
    /// Made from the current executable (the default).
    CurrentExe,
    /// Made from this executable.
    Executable(PathBuf),
    /// An image already in the engine, by tag (never pulled).
    Tag(String),
}

/// The network runners join.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Network {
    /// The host's network: the parent listens on `127.0.0.1`.
    Host,
    /// A user-defined network: the parent listens on its gateway address,
    /// so this process must run on the engine's host (or in a container on
    /// that network, with [`DockerBackend::parent_addr`] set to its address).
    Named(String),
}

/// Which engine to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Engine {
    /// `DOCKER_HOST`, else the local socket.
    Defaults,
    /// This Unix socket.
    Socket(PathBuf),
}

/// Runners as containers, via bollard.
///
/// Every container carries labels (managed, pool, parent instance, runner),
/// auto-removes, never restarts, and is stopped and removed when its Runner
/// goes. On its first boot the backend removes containers of the same pool
/// left by an earlier parent (orphans), and watches the engine's events so a
/// container that dies, is killed or is OOM-killed fails its calls at once.
///
/// With no registry at hand, the default image is made from the current
/// executable (and the shared libraries it links), imported once per build.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use ractor_flame::docker::{DockerBackend, Network};
/// use ractor_flame::{Pool, PoolConfig, Registry};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = Registry::new();
/// ractor_flame::run_if_runner(&registry).await?;
/// let backend = DockerBackend::new()
///     .network(Network::Host)
///     .memory(256 * 1024 * 1024)
///     .cpus(1.0)
///     .env("RUST_LOG", "info");
/// let pool = Pool::start(PoolConfig::new(4).name("media"), backend, &registry).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DockerBackend {
    image: Image,
    network: Network,
    engine: Engine,
    env: Vec<(String, String)>,
    cmd: Vec<String>,
    memory: Option<i64>,
    nano_cpus: Option<i64>,
    pids: Option<i64>,
    stop_timeout: Duration,
    parent_addr: Option<IpAddr>,
    shared: Arc<Shared>,
}

/// What every runner of one backend value shares.
struct Shared {
    /// This parent instance, in every container's labels.
    instance: String,
    docker: OnceCell<Docker>,
    image: OnceCell<String>,
    endpoint: OnceCell<Endpoint>,
    /// Orphans of each pool are swept once.
    swept: Mutex<Vec<String>>,
    events: events::Router,
}

impl fmt::Debug for DockerBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Env values may hold secrets: names only.
        let env: Vec<_> = self.env.iter().map(|(k, _)| k).collect();
        f.debug_struct("DockerBackend")
            .field("image", &self.image)
            .field("network", &self.network)
            .field("engine", &self.engine)
            .field("env", &env)
            .field("memory", &self.memory)
            .field("nano_cpus", &self.nano_cpus)
            .field("pids", &self.pids)
            .field("instance", &self.shared.instance)
            .finish_non_exhaustive()
    }
}

impl Default for DockerBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl DockerBackend {
    /// Host network, image of the current executable, engine from
    /// `DOCKER_HOST`, no limits, 5 s stop timeout.
    pub fn new() -> Self {
        DockerBackend {
            image: Image::CurrentExe,
            network: Network::Host,
            engine: Engine::Defaults,
            env: Vec::new(),
            cmd: Vec::new(),
            memory: None,
            nano_cpus: None,
            pids: None,
            stop_timeout: Duration::from_secs(5),
            parent_addr: None,
            shared: Arc::new(Shared {
                instance: uuid::Uuid::new_v4().simple().to_string(),
                docker: OnceCell::new(),
                image: OnceCell::new(),
                endpoint: OnceCell::new(),
                swept: Mutex::new(Vec::new()),
                events: events::Router::default(),
            }),
        }
    }

    /// The runner image (default: made from the current executable).
    pub fn image(mut self, image: Image) -> Self {
        self.image = image;
        self
    }

    /// The network (default: host).
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// The engine (default: `DOCKER_HOST`, else the local socket).
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// An environment variable for runners. `FLAME_PARENT` cannot be
    /// overridden (B37).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Arguments after the image's entrypoint.
    pub fn cmd<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cmd = args.into_iter().map(Into::into).collect();
        self
    }

    /// Memory limit in bytes (no swap beyond it). At least 6 MiB.
    pub fn memory(mut self, bytes: i64) -> Self {
        self.memory = Some(bytes);
        self
    }

    /// CPU limit in cores (fractions allowed).
    pub fn cpus(mut self, cores: f64) -> Self {
        self.nano_cpus = Some((cores * 1e9) as i64);
        self
    }

    /// Most processes and threads in the container.
    pub fn pids(mut self, limit: i64) -> Self {
        self.pids = Some(limit);
        self
    }

    /// How long a stop waits before SIGKILL (default 5 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// The address runners connect back to, when the automatic choice
    /// (loopback on the host network, the gateway on a named one) is wrong:
    /// e.g. this parent runs in a container on the runners' network.
    pub fn parent_addr(mut self, addr: IpAddr) -> Self {
        self.parent_addr = Some(addr);
        self
    }

    /// Makes or finds the runner image now (normally done by the first
    /// boot) and returns its tag: a deployment can warm it up front.
    ///
    /// # Errors
    ///
    /// When the engine does not answer or the image cannot be made.
    pub async fn prepare_image(&self) -> Result<String, BackendError> {
        let docker = self.docker().await?;
        self.image_tag(docker).await.cloned()
    }

    /// This parent instance's label value.
    pub fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// Checks the limits.
    ///
    /// # Errors
    ///
    /// A memory limit under 6 MiB, a CPU or pids limit that is not positive.
    pub fn validate(&self) -> Result<(), BackendError> {
        if let Some(m) = self.memory
            && m < MIN_MEMORY
        {
            return Err(BackendError::new(format!(
                "memory limit of {m} bytes is below Docker's minimum of 6 MiB"
            )));
        }
        if let Some(c) = self.nano_cpus
            && c <= 0
        {
            return Err(BackendError::new("cpu limit must be positive"));
        }
        if let Some(p) = self.pids
            && p <= 0
        {
            return Err(BackendError::new("pids limit must be positive"));
        }
        Ok(())
    }

    /// The engine client, connected and version-negotiated once.
    ///
    /// # Errors
    ///
    /// When the engine does not answer.
    pub async fn docker(&self) -> Result<&Docker, BackendError> {
        self.shared.docker.get_or_try_init(|| connect(&self.engine)).await
    }

    async fn image_tag(&self, docker: &Docker) -> Result<&String, BackendError> {
        self.shared
            .image
            .get_or_try_init(|| async {
                match &self.image {
                    Image::Tag(tag) => match docker.inspect_image(tag).await {
                        Ok(_) => Ok(tag.clone()),
                        Err(e) => Err(BackendError::new(format!(
                            "image {tag} not found in the engine ({e}); no registry is used: build or import it first"
                        ))),
                    },
                    Image::Executable(path) => image::ensure(docker, path).await,
                    Image::CurrentExe => {
                        let exe = std::env::current_exe()
                            .map_err(|e| BackendError::new(format!("current executable: {e}")))?;
                        image::ensure(docker, &exe).await
                    }
                }
            })
            .await
    }

    async fn endpoint(&self, ctx: &RunnerContext, docker: &Docker) -> Result<&Endpoint, BackendError> {
        self.shared
            .endpoint
            .get_or_try_init(|| async {
                let ip = match (self.parent_addr, &self.network) {
                    (Some(ip), _) => ip,
                    (None, Network::Host) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    (None, Network::Named(name)) => gateway(docker, name).await?,
                };
                Endpoint::bind(SocketAddr::new(ip, 0), ctx.registry.build_id())
                    .await
                    .map_err(|e| BackendError::new(format!("cannot listen on {ip}: {e}")))
            })
            .await
    }

    /// Removes containers of `pool` left by another parent instance, once
    /// per pool, in the background: it never touches this instance's
    /// containers, so the boot need not wait for it.
    fn sweep_orphans(&self, docker: &Docker, pool: &str) {
        {
            let mut swept = self.shared.swept.lock().expect("poisoned");
            if swept.iter().any(|p| p == pool) {
                return;
            }
            swept.push(pool.to_owned());
        }
        let (docker, pool, instance) = (docker.clone(), pool.to_owned(), self.shared.instance.clone());
        tokio::spawn(async move {
            match sweep(&docker, &[(LABEL_POOL, &pool)], Some(&instance)).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(target: "ractor_flame::docker", pool, removed, "orphan runners removed"),
                Err(e) => tracing::warn!(target: "ractor_flame::docker", pool, error = %e, "orphan sweep failed"),
            }
        });
    }

    fn labels(&self, ctx: &RunnerContext) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_POOL.to_owned(), ctx.pool.clone()),
            (LABEL_PARENT.to_owned(), self.shared.instance.clone()),
            (LABEL_RUNNER.to_owned(), ctx.runner_id.simple()),
        ])
    }

    fn host_config(&self) -> HostConfig {
        HostConfig {
            network_mode: Some(match &self.network {
                Network::Host => "host".to_owned(),
                Network::Named(name) => name.clone(),
            }),
            auto_remove: Some(true),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            memory: self.memory,
            memory_swap: self.memory,
            nano_cpus: self.nano_cpus,
            pids_limit: self.pids,
            ..HostConfig::default()
        }
    }
}

/// The parent's handle on one runner container.
#[derive(Debug)]
pub struct DockerState {
    runner: RunnerId,
    container: Option<String>,
    oom: bool,
    last_lines: Arc<Mutex<VecDeque<String>>>,
    follower: Option<tokio::task::JoinHandle<()>>,
}

impl DockerState {
    /// The container's id, once created.
    pub fn container(&self) -> Option<&str> {
        self.container.as_deref()
    }
}

impl Backend for DockerBackend {
    type State = DockerState;

    fn name(&self) -> &'static str {
        "docker"
    }

    async fn init(&self, ctx: &RunnerContext) -> Result<Self::State, BackendError> {
        self.validate()?;
        Ok(DockerState {
            runner: ctx.runner_id,
            container: None,
            oom: false,
            last_lines: Arc::default(),
            follower: None,
        })
    }

    async fn remote_boot(&self, state: &mut Self::State, ctx: &RunnerContext) -> Result<(), BackendError> {
        let docker = self.docker().await?;
        self.sweep_orphans(docker, &ctx.pool);
        self.shared.events.watch(docker, &self.shared.instance);
        let image = self.image_tag(docker).await?.clone();
        let endpoint = self.endpoint(ctx, docker).await?;
        endpoint.expect(ctx);
        let parent = ctx.parent(vec![endpoint.addr()], self.name());
        let mut env: Vec<String> = self
            .env
            .iter()
            .filter(|(k, _)| k != FLAME_PARENT)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.push(format!("{FLAME_PARENT}={}", parent.encode()));
        let body = ContainerCreateBody {
            image: Some(image),
            env: Some(env),
            cmd: (!self.cmd.is_empty()).then(|| self.cmd.clone()),
            labels: Some(self.labels(ctx)),
            host_config: Some(self.host_config()),
            stop_timeout: Some(self.stop_timeout.as_secs().max(1) as i64),
            ..ContainerCreateBody::default()
        };
        let name = container_name(&ctx.pool, ctx.runner_id);
        let created = docker
            .create_container(Some(CreateContainerOptionsBuilder::new().name(&name).build()), body)
            .await
            .map_err(|e| {
                endpoint.forget(ctx.runner_id);
                BackendError::new(format!("cannot create the runner container: {e}"))
            })?;
        // Route engine events to this Runner before the container can die.
        self.shared.events.route(&created.id, ctx.runner.clone());
        state.container = Some(created.id.clone());
        docker
            .start_container(&created.id, None::<StartContainerOptions>)
            .await
            .map_err(|e| BackendError::new(format!("cannot start the runner container: {e}")))?;
        state.follower = Some(follow_logs(
            docker.clone(),
            created.id,
            ctx.runner_id,
            state.last_lines.clone(),
        ));
        Ok(())
    }

    /// The engine's `die` event, with the exit code and the OOM flag,
    /// usually lands within milliseconds of the connection loss.
    fn down_grace(&self) -> Duration {
        Duration::from_millis(500)
    }

    async fn handle_info(&self, state: &mut Self::State, info: Box<dyn std::any::Any + Send>) -> Option<DownReason> {
        let event = *info.downcast::<ContainerEvent>().ok()?;
        match event {
            ContainerEvent::Oom => {
                state.oom = true;
                None
            }
            ContainerEvent::Die { exit_code } => {
                // The engine's `oom` event comes before the `die` it causes.
                if state.oom {
                    return Some(DownReason::OutOfMemory);
                }
                if exit_code == 137 || exit_code == 143 {
                    return Some(DownReason::Killed);
                }
                // Let the log follower catch the last lines before quoting them.
                if let Some(follower) = state.follower.as_mut() {
                    let _ = tokio::time::timeout(Duration::from_millis(500), follower).await;
                }
                let lines: Vec<String> = state.last_lines.lock().expect("poisoned").iter().cloned().collect();
                if lines.is_empty() {
                    Some(DownReason::Exited(exit_code))
                } else {
                    Some(DownReason::Backend(format!(
                        "container exited with code {exit_code}; last lines: {}",
                        lines.join(" | ")
                    )))
                }
            }
        }
    }

    async fn terminate(&self, state: &mut Self::State) {
        if let Some(endpoint) = self.shared.endpoint.get() {
            endpoint.forget(state.runner);
        }
        let (Some(id), Some(docker)) = (state.container.take(), self.shared.docker.get()) else {
            return;
        };
        self.shared.events.unroute(&id);
        // The runner exits on its own after its drain; a stop bounds the wait,
        // and the forced removal covers a paused or stuck container.
        let stop = StopContainerOptionsBuilder::new()
            .t(self.stop_timeout.as_secs() as i32)
            .build();
        let _ = docker.stop_container(&id, Some(stop)).await;
        let _ = docker
            .remove_container(&id, Some(RemoveContainerOptionsBuilder::new().force(true).build()))
            .await;
        if let Some(follower) = state.follower.take() {
            follower.abort();
        }
    }
}

async fn connect(engine: &Engine) -> Result<Docker, BackendError> {
    let docker = match engine {
        Engine::Defaults => Docker::connect_with_defaults(),
        Engine::Socket(path) => Docker::connect_with_socket(&path.to_string_lossy(), 30, bollard::API_DEFAULT_VERSION),
    }
    .map_err(|e| BackendError::new(format!("cannot reach the Docker engine: {e}")))?;
    docker
        .ping()
        .await
        .map_err(|e| BackendError::new(format!("cannot reach the Docker engine: {e}")))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| BackendError::new(format!("cannot agree on an API version with the Docker engine: {e}")))
}

/// The gateway address of a user-defined network.
async fn gateway(docker: &Docker, network: &str) -> Result<IpAddr, BackendError> {
    let inspect = docker
        .inspect_network(network, None::<InspectNetworkOptions>)
        .await
        .map_err(|e| BackendError::new(format!("network {network}: {e}")))?;
    inspect
        .ipam
        .and_then(|ipam| ipam.config)
        .and_then(|configs| configs.into_iter().find_map(|c| c.gateway))
        .and_then(|gw| gw.parse().ok())
        .ok_or_else(|| BackendError::new(format!("network {network} has no gateway address")))
}

/// Creates an `internal: true` bridge network (no route leaves it) and
/// returns its gateway address: the address a parent on the host listens on
/// for runners on that network. Useful for tests and isolated deployments.
///
/// # Errors
///
/// When the engine refuses.
pub async fn create_internal_network(docker: &Docker, name: &str) -> Result<IpAddr, BackendError> {
    let request = NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some("bridge".to_owned()),
        internal: Some(true),
        labels: Some(HashMap::from([(LABEL_MANAGED.to_owned(), "true".to_owned())])),
        ..NetworkCreateRequest::default()
    };
    docker
        .create_network(request)
        .await
        .map_err(|e| BackendError::new(format!("cannot create network {name}: {e}")))?;
    gateway(docker, name).await
}

/// Force-removes every container with all of `labels` (and the managed
/// label), except those of parent instance `keep`. Returns how many.
///
/// # Errors
///
/// When the engine cannot list containers.
pub async fn sweep(docker: &Docker, labels: &[(&str, &str)], keep: Option<&str>) -> Result<usize, BackendError> {
    let mut filter = vec![format!("{LABEL_MANAGED}=true")];
    filter.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&HashMap::from([("label", filter)]))
        .build();
    let found = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| BackendError::new(format!("cannot list containers: {e}")))?;
    let mut removed = 0;
    for container in found {
        let parent = container
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_PARENT))
            .map(String::as_str);
        if keep.is_some() && parent == keep {
            continue;
        }
        if let Some(id) = container.id {
            let force = RemoveContainerOptionsBuilder::new().force(true).build();
            if docker.remove_container(&id, Some(force)).await.is_ok() {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn container_name(pool: &str, runner: RunnerId) -> String {
    let pool: String = pool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!("flame-{pool}-{}", &runner.simple()[..12])
}

/// Forwards a container's output to tracing and keeps its last lines.
fn follow_logs(
    docker: Docker,
    id: String,
    runner: RunnerId,
    last: Arc<Mutex<VecDeque<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let options = LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true).build();
        let mut logs = docker.logs(&id, Some(options));
        while let Some(Ok(chunk)) = logs.next().await {
            for line in chunk.to_string().lines().filter(|l| !l.is_empty()) {
                tracing::info!(target: "ractor_flame::docker", runner = %runner, "{line}");
                let mut last = last.lock().expect("poisoned");
                if last.len() == LAST_LINES {
                    last.pop_front();
                }
                last.push_back(line.to_owned());
            }
        }
    })
}
