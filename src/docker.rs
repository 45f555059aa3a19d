//! `DockerBackend`: each runner is a container on a Docker Engine.

mod container;
mod engine;
mod events;
mod image;
mod liveness;
mod sweep;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use ractor_flame_actors::{Backend, BackendError, DownReason, Endpoint, FLAME_PARENT, RunnerContext};
use tokio::sync::OnceCell;

pub use container::DockerState;
pub use engine::create_internal_network;
pub use events::ContainerEvent;

/// Label: every container this backend creates.
pub const LABEL_MANAGED: &str = "ractor-flame.managed";
/// Label: the pool's name.
pub const LABEL_POOL: &str = "ractor-flame.pool";
/// Label: the parent instance (one per backend value) that owns it.
pub const LABEL_PARENT: &str = "ractor-flame.parent";
/// Label: the runner id.
pub const LABEL_RUNNER: &str = "ractor-flame.runner";
/// Label: the parent process, where it can be named, as
/// `<boot id without dashes>-<PID namespace inode>-<pid>-<start time in
/// clock ticks after boot>`. A sweep on the same boot and in the same PID
/// namespace reads from `/proc` whether that process still runs.
pub const LABEL_PARENT_PROCESS: &str = "ractor-flame.parent-process";
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
/// Every container carries labels (managed, pool, parent instance, parent
/// process, runner), auto-removes, never restarts, and is stopped and
/// removed when its Runner goes. The backend watches the engine's events so
/// a container that dies, is killed or is OOM-killed fails its calls at once.
///
/// # Orphans and other parents
///
/// Several copies of one program may share an engine and a pool name. On
/// each pool's first boot the backend sweeps that pool's orphans, and only
/// those: containers whose parent process is provably gone (checked through
/// `/proc` when it ran on this machine and PID namespace), containers that
/// exited, and containers never started a minute after their creation. A
/// running container of another parent is never removed: if that parent is
/// alive it is a live runner, and if it is gone the runner stops by itself
/// (end of file on its connection, lost heartbeats, or its failsafe) and
/// auto-removes. See [`sweep()`].
///
/// # Images
///
/// With no registry at hand, the default image is made from the running
/// executable (read from `/proc/self/exe`, so replacing the file on disk
/// after start is harmless) and the shared libraries `ldd` lists (none for a
/// static executable; a library `ldd` cannot find fails the boot, naming it),
/// imported once per build. The executable keeps its absolute path in the
/// image, so `$ORIGIN`-relative library paths resolve as on the host.
/// Importing a new build removes images of earlier builds of the same path
/// unless a live parent process (or one that cannot be checked from here)
/// still claims them; a parent whose image was removed anyway imports it
/// again on its next boot.
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
    /// The runner image's tag, once made or found; cleared when the engine
    /// no longer has it.
    image: tokio::sync::Mutex<Option<String>>,
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
                image: tokio::sync::Mutex::new(None),
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
    /// overridden: the backend always sets it last.
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
        self.image_tag(docker).await
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
        self.shared
            .docker
            .get_or_try_init(|| engine::connect(&self.engine))
            .await
    }

    async fn image_tag(&self, docker: &Docker) -> Result<String, BackendError> {
        let mut cached = self.shared.image.lock().await;
        if let Some(tag) = cached.as_ref() {
            return Ok(tag.clone());
        }
        let tag = match &self.image {
            Image::Tag(tag) => match docker.inspect_image(tag).await {
                Ok(_) => tag.clone(),
                Err(e) => {
                    return Err(BackendError::new(format!(
                        "image {tag} not found in the engine ({e}); no registry is used: build or import it first"
                    )));
                }
            },
            Image::Executable(path) => image::ensure(docker, image::Source::Path(path.clone())).await?,
            Image::CurrentExe => image::ensure(docker, image::Source::CurrentExe).await?,
        };
        *cached = Some(tag.clone());
        Ok(tag)
    }

    /// Forgets `tag` when the engine lost it, so the next boot makes it again.
    async fn forget_image(&self, tag: &str) {
        let mut cached = self.shared.image.lock().await;
        if cached.as_deref() == Some(tag) {
            *cached = None;
        }
    }

    async fn endpoint(&self, docker: &Docker) -> Result<&Endpoint, BackendError> {
        self.shared
            .endpoint
            .get_or_try_init(|| async {
                let ip = match (self.parent_addr, &self.network) {
                    (Some(ip), _) => ip,
                    (None, Network::Host) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    (None, Network::Named(name)) => engine::gateway(docker, name).await?,
                };
                Endpoint::bind(SocketAddr::new(ip, 0))
                    .await
                    .map_err(|e| BackendError::new(format!("cannot listen on {ip}: {e}")))
            })
            .await
    }

    /// Removes orphans of `pool` (containers left by a parent that is
    /// gone, see [`sweep`]), once per pool, in the background: it never
    /// touches this instance's containers, so the boot need not wait for it.
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
            match sweep::sweep(&docker, &[(LABEL_POOL, &pool)], Some(&instance)).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(target: "ractor_flame::docker", pool, removed, "orphan runners removed"),
                Err(e) => tracing::warn!(target: "ractor_flame::docker", pool, error = %e, "orphan sweep failed"),
            }
        });
    }
}

impl Backend for DockerBackend {
    type State = DockerState;

    fn name(&self) -> &'static str {
        "docker"
    }

    /// Runner side: the container is the machine; the runner says so on
    /// stderr and exits next, which stops (and auto-removes) the container.
    async fn system_shutdown(&self) {
        crate::runner::announce_system_shutdown(self.name());
    }

    async fn init(&self, ctx: &RunnerContext) -> Result<Self::State, BackendError> {
        self.validate()?;
        Ok(DockerState::new(ctx.runner_id))
    }

    async fn remote_boot(&self, state: &mut Self::State, ctx: &RunnerContext) -> Result<(), BackendError> {
        let docker = self.docker().await?;
        self.sweep_orphans(docker, &ctx.pool);
        self.shared.events.watch(docker, &self.shared.instance);
        let mut image = self.image_tag(docker).await?;
        let endpoint = self.endpoint(docker).await?;
        let parent = endpoint.expect(ctx, vec![endpoint.addr()], self.name());
        let mut env: Vec<String> = self
            .env
            .iter()
            .filter(|(k, _)| k != FLAME_PARENT)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.push(format!("{FLAME_PARENT}={}", parent.encode()));
        let mut created = container::create(self, docker, ctx, image.clone(), env.clone()).await;
        // The image of an executable can vanish under a cached tag (removed
        // by hand, or by an older version's pruning): make it again, once.
        if let Err(e) = &created
            && container::is_missing_image(e)
            && !matches!(self.image, Image::Tag(_))
        {
            tracing::warn!(target: "ractor_flame::docker", image = %image, "runner image gone; importing it again");
            self.forget_image(&image).await;
            image = self
                .image_tag(docker)
                .await
                .inspect_err(|_| endpoint.forget(ctx.runner_id))?;
            created = container::create(self, docker, ctx, image.clone(), env).await;
        }
        let id = created.map_err(|e| {
            endpoint.forget(ctx.runner_id);
            if container::is_missing_image(&e) {
                BackendError::new(format!("image {image} not found in the engine: {e}"))
            } else {
                BackendError::new(format!("cannot create the runner container: {e}"))
            }
        })?;
        // Route engine events to this Runner before the container can die.
        self.shared.events.route(&id, ctx.runner.clone());
        state.container = Some(id.clone());
        state
            .start(docker, &id)
            .await
            .map_err(|e| BackendError::new(format!("cannot start the runner container: {e}")))
    }

    /// The engine's `die` event, with the exit code and the OOM flag,
    /// usually lands within milliseconds of the connection loss.
    fn down_grace(&self) -> Duration {
        Duration::from_millis(500)
    }

    async fn handle_info(&self, state: &mut Self::State, info: Box<dyn std::any::Any + Send>) -> Option<DownReason> {
        let event = *info.downcast::<ContainerEvent>().ok()?;
        state.on_event(event).await
    }

    async fn terminate(&self, state: &mut Self::State) {
        if let Some(endpoint) = self.shared.endpoint.get() {
            endpoint.forget(state.runner);
        }
        let Some(docker) = self.shared.docker.get() else {
            return;
        };
        if let Some(id) = state.container() {
            self.shared.events.unroute(id);
        }
        state.stop_and_remove(docker, self.stop_timeout).await;
    }
}

/// Removes the containers with all of `labels` (and the managed label)
/// that belong to a parent instance other than `keep` and cannot be live
/// runners of a live parent. Returns how many.
///
/// Several parents may share one engine and one pool name (replicas, a
/// rolling deploy, two copies of a program), so a container of another
/// parent instance is removed only when:
///
/// - its parent process is provably dead: it ran on this machine, in this
///   PID namespace, since its last boot (the [`LABEL_PARENT_PROCESS`]
///   label), and no process with that PID and start time runs now. Such a
///   container goes in any state: never started, still waiting to connect,
///   or stuck;
/// - or, where the parent cannot be checked from here (another host or
///   container, no label), the container has exited, or is still in state
///   `created` a minute after its creation (a live parent starts its
///   containers within its boot).
///
/// Every other container is kept: a running runner whose parent is gone
/// stops by itself (end of file on its connection, lost heartbeats, or its
/// failsafe timeout) and the engine then removes it (`auto_remove`).
///
/// # Errors
///
/// When the engine cannot list containers.
pub async fn sweep(docker: &Docker, labels: &[(&str, &str)], keep: Option<&str>) -> Result<usize, BackendError> {
    sweep::sweep(docker, labels, keep).await
}
