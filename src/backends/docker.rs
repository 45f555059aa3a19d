#![doc = include_str!("../../docs/backends/docker.md")]

mod container;
mod engine;
mod events;
mod image;
mod liveness;
mod mount;
mod placement;
mod pull;
mod sweep;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bollard::Docker;
use ractor_flame_actors::{Backend, BackendError, DownReason, Endpoint, FLAME_PARENT, RunnerContext};

pub use container::DockerState;
pub use engine::EngineCerts;
pub use events::ContainerEvent;
pub use mount::Mount;
pub use placement::EngineConfig;
pub use pull::RegistryCredentials;

use placement::{Placement, Slot};

/// Label: every container this backend creates.
pub const LABEL_MANAGED: &str = "ractor-flame.managed";
/// Label: the pool's name.
pub const LABEL_POOL: &str = "ractor-flame.pool";
/// Label: the parent instance (one per backend value) that owns it.
pub const LABEL_PARENT: &str = "ractor-flame.parent";
/// Label: the runner id.
pub const LABEL_RUNNER: &str = "ractor-flame.runner";
/// Label: the name of the engine the runner was placed on (see
/// [`EngineConfig::name`]).
///
/// # Examples
///
/// ```
/// use ractor_flame::docker::{LABEL_ENGINE, LABEL_POOL};
///
/// // `docker ps --filter label=ractor-flame.pool=media --filter label=ractor-flame.engine=b`
/// let filters = [format!("{LABEL_POOL}=media"), format!("{LABEL_ENGINE}=b")];
/// # let _ = filters;
/// ```
pub const LABEL_ENGINE: &str = "ractor-flame.engine";
/// Label: the parent process, where it can be named, as
/// `<boot id without dashes>-<PID namespace inode>-<pid>-<start time in
/// clock ticks after boot>`. A sweep on the same boot and in the same PID
/// namespace reads from `/proc` whether that process still runs.
pub const LABEL_PARENT_PROCESS: &str = "ractor-flame.parent-process";
/// Default for [`DockerBackend::engine_check_interval`].
pub const DEFAULT_ENGINE_CHECK_INTERVAL: Duration = Duration::from_secs(5);
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
    /// An image by name and tag: used where the engine has it, pulled
    /// where it does not (with [`DockerBackend::registry_credentials`], if
    /// given). A pull that fails fails the boot, quoting the engine.
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
///
/// # Examples
///
/// ```
/// use ractor_flame::docker::{Engine, EngineCerts};
///
/// let engines = [
///     Engine::Defaults,
///     Engine::socket("/var/run/docker.sock"),
///     Engine::tcp("tcp://10.0.0.11:2375"),
///     Engine::tls("tcp://10.0.0.12:2376", EngineCerts::from_dir("/certs/b")),
/// ];
/// # let _ = engines;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Engine {
    /// What the Docker CLI would use: `DOCKER_HOST` (with
    /// `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` for TLS), else the local
    /// socket. See [`Engine::from_env`].
    Defaults,
    /// This Unix socket.
    Socket(PathBuf),
    /// Plain TCP, `tcp://host:port`: neither encrypted nor authenticated.
    Tcp(String),
    /// TCP with TLS, `tcp://host:port`: the engine's certificate is checked
    /// against the CA, and the client certificate proves this backend.
    Tls {
        /// `tcp://host:port`.
        addr: String,
        /// The CA and the client certificate.
        certs: EngineCerts,
    },
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
/// auto-removes. See [`DockerBackend::sweep`].
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
/// again on its next boot. On an engine with no access to this
/// executable's file system (another host) the image is imported the same
/// way, through the engine API, once per engine and build; or name an image
/// in a registry with [`Image::Tag`].
///
/// # Several engines
///
/// [`engines`](Self::engines) spreads one pool over several engines (hosts):
/// each new runner goes to the engine with the fewest of this backend's
/// runners (booting ones included), the first given on a tie, skipping
/// engines at their [`EngineConfig::max_runners`] and engines backing off.
/// An engine backs off for [`engine_backoff`](Self::engine_backoff) after a
/// boot failed there, or after it was lost (its event stream ended and it
/// did not answer a ping, or it left a ping of the
/// [`engine_check_interval`](Self::engine_check_interval) unanswered): its
/// runners are then down at once, and the others carry on. When no engine can take a runner the boot fails, saying why for
/// each. Labels, the orphan sweep (on a pool's first boot on each engine),
/// image imports and claims, and the event watch all work per engine.
///
/// Runners connect back to [`parent_addr`](Self::parent_addr) when set (or
/// the engine's own [`EngineConfig::parent_addr`]); else, for a TCP engine on
/// another host, to the address this machine uses toward that host (read
/// from the routing table: no traffic); else to loopback on the host network
/// or the gateway of a named network.
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
    engines: Vec<EngineConfig>,
    engine_backoff: Duration,
    engine_check: Duration,
    credentials: Option<RegistryCredentials>,
    env: Vec<(String, String)>,
    cmd: Vec<String>,
    memory: Option<i64>,
    nano_cpus: Option<i64>,
    pids: Option<i64>,
    mounts: Vec<Mount>,
    stop_timeout: Duration,
    parent_addr: Option<IpAddr>,
    shared: Arc<Shared>,
}

/// What every runner of one backend value shares.
struct Shared {
    /// This parent instance, in every container's labels.
    instance: String,
    /// The engines, made from the configuration on first use.
    placement: OnceLock<Placement>,
    /// Where runners connect back, one per listening address.
    endpoints: tokio::sync::Mutex<HashMap<IpAddr, Endpoint>>,
}

impl fmt::Debug for DockerBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Env values may hold secrets: names only.
        let env: Vec<_> = self.env.iter().map(|(k, _)| k).collect();
        f.debug_struct("DockerBackend")
            .field("image", &self.image)
            .field("network", &self.network)
            .field("engines", &self.engines)
            .field("registry_credentials", &self.credentials)
            .field("env", &env)
            .field("memory", &self.memory)
            .field("nano_cpus", &self.nano_cpus)
            .field("pids", &self.pids)
            .field("mounts", &self.mounts)
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
            engines: vec![EngineConfig::new(Engine::Defaults)],
            engine_backoff: Duration::from_secs(10),
            engine_check: DEFAULT_ENGINE_CHECK_INTERVAL,
            credentials: None,
            env: Vec::new(),
            cmd: Vec::new(),
            memory: None,
            nano_cpus: None,
            pids: None,
            mounts: Vec::new(),
            stop_timeout: Duration::from_secs(5),
            parent_addr: None,
            shared: Arc::new(Shared {
                instance: uuid::Uuid::new_v4().simple().to_string(),
                placement: OnceLock::new(),
                endpoints: tokio::sync::Mutex::default(),
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

    /// The engine (default: `DOCKER_HOST`, else the local socket). Replaces
    /// any engines given before.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::docker::{DockerBackend, Engine, EngineCerts};
    ///
    /// let backend = DockerBackend::new().engine(Engine::tls("tcp://10.0.0.12:2376", EngineCerts::from_dir("/certs")));
    /// # let _ = backend;
    /// ```
    pub fn engine(mut self, engine: impl Into<EngineConfig>) -> Self {
        self.engines = vec![engine.into()];
        self
    }

    /// Several engines for one pool: see [Several
    /// engines](Self#several-engines) for how runners are placed. Replaces
    /// any engines given before.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::docker::{DockerBackend, Engine, EngineCerts, EngineConfig};
    ///
    /// let certs = |host: &str| EngineCerts::from_dir(format!("/etc/flame/{host}"));
    /// let backend = DockerBackend::new().engines([
    ///     EngineConfig::new(Engine::Defaults).max_runners(2),
    ///     Engine::tls("tcp://10.0.0.11:2376", certs("a")).into(),
    ///     Engine::tls("tcp://10.0.0.12:2376", certs("b")).into(),
    /// ]);
    /// # let _ = backend;
    /// ```
    pub fn engines<I, E>(mut self, engines: I) -> Self
    where
        I: IntoIterator<Item = E>,
        E: Into<EngineConfig>,
    {
        self.engines = engines.into_iter().map(Into::into).collect();
        self
    }

    /// How long an engine is skipped for new runners after a boot failed
    /// there or the engine was lost, when there are several (default 10 s).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ractor_flame::docker::DockerBackend;
    ///
    /// let backend = DockerBackend::new().engine_backoff(Duration::from_secs(30));
    /// # let _ = backend;
    /// ```
    pub fn engine_backoff(mut self, period: Duration) -> Self {
        self.engine_backoff = period;
        self
    }

    /// How often each engine is pinged while it has this backend's runners
    /// (default 5 s). An engine whose API stops answering (a hung daemon, a
    /// partition between this process and a remote engine) keeps its event
    /// stream open and silent; a ping left unanswered for 2 s loses the
    /// engine, and its runners with it (only those: they are told to stop
    /// and their links closed, and the engine removes their containers once
    /// it answers again). The interval is clamped to at least 100 ms.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ractor_flame::docker::DockerBackend;
    ///
    /// let backend = DockerBackend::new().engine_check_interval(Duration::from_secs(2));
    /// # let _ = backend;
    /// ```
    pub fn engine_check_interval(mut self, every: Duration) -> Self {
        self.engine_check = every.max(Duration::from_millis(100));
        self
    }

    /// Credentials for pulling an [`Image::Tag`] an engine lacks.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::docker::{DockerBackend, Image, RegistryCredentials};
    ///
    /// let backend = DockerBackend::new()
    ///     .image(Image::Tag("registry.example.com/runner:7".into()))
    ///     .registry_credentials(RegistryCredentials::new("deploy", "token"));
    /// # let _ = backend;
    /// ```
    pub fn registry_credentials(mut self, credentials: RegistryCredentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Runners this backend has on each engine now (booting ones included),
    /// by engine name, in the order given.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::docker::DockerBackend;
    ///
    /// let backend = DockerBackend::new();
    /// assert_eq!(backend.runners_per_engine().len(), 1);
    /// ```
    pub fn runners_per_engine(&self) -> Vec<(String, usize)> {
        let placement = self.placement();
        placement
            .slots()
            .iter()
            .map(|s| s.name.clone())
            .zip(placement.runners())
            .collect()
    }

    /// An environment variable for runners. `FLAME_PARENT` cannot be
    /// overridden: the backend always sets it last.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Arguments after the image's entrypoint. Default: none, so a runner
    /// made from [`Image::CurrentExe`] runs the executable with no
    /// arguments (the parent's own arguments are not passed on, unlike the
    /// process backend's): `run_if_runner` needs none, since a runner
    /// learns everything from `FLAME_PARENT`. Set them when your `main`
    /// reads its arguments before it calls `run_if_runner`; an image of
    /// your own keeps its `CMD` unless you set these.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::DockerBackend;
    ///
    /// let backend = DockerBackend::new().cmd(["--mode", "worker"]);
    /// # let _ = backend;
    /// ```
    pub fn cmd<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cmd = args.into_iter().map(Into::into).collect();
        self
    }

    /// A mount of every runner: a host path, a named volume, or tmpfs
    /// scratch space (see [`Mount`]). Called once per mount.
    pub fn mount(mut self, mount: Mount) -> Self {
        self.mounts.push(mount);
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

    /// Makes or finds the runner image on every engine now (normally done
    /// by the first boot on each) and returns its tag: a deployment can warm
    /// it up front.
    ///
    /// # Errors
    ///
    /// When an engine does not answer or the image cannot be made there.
    pub async fn prepare_image(&self) -> Result<String, BackendError> {
        let mut first = None;
        for slot in self.placement().slots() {
            let docker = self.connect(slot).await?;
            let tag = self.image_tag(slot, docker).await?;
            first.get_or_insert(tag);
        }
        first.ok_or_else(|| BackendError::new("no Docker engine configured"))
    }

    /// This parent instance's label value.
    pub fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// Checks the limits.
    ///
    /// # Errors
    ///
    /// A memory limit under 6 MiB, a CPU or pids limit that is not positive,
    /// no engine, an engine with a `max_runners` of zero.
    pub fn validate(&self) -> Result<(), BackendError> {
        if self.engines.is_empty() {
            return Err(BackendError::new("no Docker engine configured"));
        }
        if let Some(e) = self.engines.iter().find(|e| e.max_runners == Some(0)) {
            return Err(BackendError::new(format!(
                "engine {} has max_runners 0: it could never take a runner",
                e.label()
            )));
        }
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

    /// Connects to the first engine (once: the client is kept) and
    /// negotiates its API version: whether the engine answers.
    ///
    /// # Errors
    ///
    /// When the engine does not answer.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() {
    /// use ractor_flame::DockerBackend;
    ///
    /// if let Err(e) = DockerBackend::new().ping().await {
    ///     eprintln!("no Docker engine: {e}");
    /// }
    /// # }
    /// ```
    pub async fn ping(&self) -> Result<(), BackendError> {
        self.client().await.map(|_| ())
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
    /// When the engine does not answer or cannot list containers.
    pub async fn sweep(&self, labels: &[(&str, &str)], keep: Option<&str>) -> Result<usize, BackendError> {
        sweep::sweep(self.client().await?, labels, keep).await
    }

    /// Creates an `internal: true` bridge network on the first engine (no
    /// route leaves it) and returns its gateway address: the address a
    /// parent on the host listens on for runners on that network. Useful for
    /// tests and isolated deployments; the network carries the managed
    /// label.
    ///
    /// # Errors
    ///
    /// When the engine does not answer or refuses.
    pub async fn create_internal_network(&self, name: &str) -> Result<IpAddr, BackendError> {
        engine::create_internal_network(self.client().await?, name).await
    }

    /// The client of the first engine, connected and version-negotiated
    /// once.
    pub(crate) async fn client(&self) -> Result<&Docker, BackendError> {
        let slot = self
            .placement()
            .slots()
            .first()
            .ok_or_else(|| BackendError::new("no Docker engine configured"))?;
        self.connect(slot).await
    }

    fn placement(&self) -> &Placement {
        self.shared
            .placement
            .get_or_init(|| Placement::new(&self.engines, self.engine_backoff))
    }

    /// An engine's client, connected and version-negotiated once.
    async fn connect<'a>(&self, slot: &'a Slot) -> Result<&'a Docker, BackendError> {
        let (docker, _) = slot
            .docker
            .get_or_try_init(|| async {
                let engine = slot.config.engine.resolved();
                let docker = engine::connect(&engine).await?;
                Ok::<_, BackendError>((docker, engine))
            })
            .await?;
        Ok(docker)
    }

    async fn image_tag(&self, slot: &Slot, docker: &Docker) -> Result<String, BackendError> {
        let mut cached = slot.image.lock().await;
        if let Some(tag) = cached.as_ref() {
            return Ok(tag.clone());
        }
        let tag = match &self.image {
            Image::Tag(tag) => {
                match docker.inspect_image(tag).await {
                    Ok(_) => {}
                    Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                        pull::pull(docker, &slot.name, tag, self.credentials.as_ref()).await?;
                    }
                    Err(e) => {
                        return Err(BackendError::new(format!(
                            "image {tag}: engine {} cannot inspect it: {e}",
                            slot.name
                        )));
                    }
                }
                tag.clone()
            }
            Image::Executable(path) => image::ensure(docker, image::Source::Path(path.clone())).await?,
            Image::CurrentExe => image::ensure(docker, image::Source::CurrentExe).await?,
        };
        *cached = Some(tag.clone());
        Ok(tag)
    }

    /// Forgets `tag` when the engine lost it, so the next boot makes it again.
    async fn forget_image(&self, slot: &Slot, tag: &str) {
        let mut cached = slot.image.lock().await;
        if cached.as_deref() == Some(tag) {
            *cached = None;
        }
    }

    /// Where the runners of `slot` connect back.
    async fn endpoint(&self, slot: &Slot, docker: &Docker) -> Result<Endpoint, BackendError> {
        let ip = *slot.parent_ip.get_or_try_init(|| self.parent_ip(slot, docker)).await?;
        let mut endpoints = self.shared.endpoints.lock().await;
        if let Some(endpoint) = endpoints.get(&ip) {
            return Ok(endpoint.clone());
        }
        let endpoint = Endpoint::bind(SocketAddr::new(ip, 0))
            .await
            .map_err(|e| BackendError::new(format!("cannot listen on {ip}: {e}")))?;
        endpoints.insert(ip, endpoint.clone());
        Ok(endpoint)
    }

    /// The address runners on `slot` connect back to: the one given, else
    /// this machine's address toward a TCP engine on another host, else
    /// loopback (host network) or the named network's gateway.
    async fn parent_ip(&self, slot: &Slot, docker: &Docker) -> Result<IpAddr, BackendError> {
        if let Some(ip) = slot.config.parent_addr.or(self.parent_addr) {
            return Ok(ip);
        }
        if let Some((_, engine)) = slot.docker.get()
            && let Some(ip) = engine::local_addr_toward(engine).await?
            && !ip.is_loopback()
        {
            return Ok(ip);
        }
        match &self.network {
            Network::Host => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Network::Named(name) => engine::gateway(docker, name).await,
        }
    }

    /// Removes orphans of `pool` on one engine (containers left by a parent
    /// that is gone, see [`sweep`]), once per pool and engine, in the
    /// background: it never touches this instance's containers, so the boot
    /// need not wait for it.
    fn sweep_orphans(&self, slot: &Slot, docker: &Docker, pool: &str) {
        {
            let mut swept = slot.swept.lock().expect("poisoned");
            if swept.iter().any(|p| p == pool) {
                return;
            }
            swept.push(pool.to_owned());
        }
        let (docker, pool, instance) = (docker.clone(), pool.to_owned(), self.shared.instance.clone());
        let engine = slot.name.clone();
        tokio::spawn(async move {
            match sweep::sweep(&docker, &[(LABEL_POOL, &pool)], Some(&instance)).await {
                Ok(0) => {}
                Ok(removed) => {
                    tracing::info!(target: "ractor_flame::docker", pool, engine, removed, "orphan runners removed");
                }
                Err(e) => {
                    tracing::warn!(target: "ractor_flame::docker", pool, engine, error = %e, "orphan sweep failed")
                }
            }
        });
    }

    /// Boots the runner of `ctx` on the engine of `slot`.
    async fn boot_on(
        &self,
        slot: &Arc<Slot>,
        state: &mut DockerState,
        ctx: &RunnerContext,
    ) -> Result<(), BackendError> {
        let docker = self.connect(slot).await?;
        self.sweep_orphans(slot, docker, &ctx.pool);
        let lost = self.placement().back_off_handle(slot);
        slot.events
            .watch(docker, &self.shared.instance, &slot.name, lost, self.engine_check);
        let mut image = self.image_tag(slot, docker).await?;
        let endpoint = self.endpoint(slot, docker).await?;
        let parent = endpoint.expect(ctx, vec![endpoint.addr()], self.name());
        state.endpoint = Some(endpoint.clone());
        let mut env: Vec<String> = self
            .env
            .iter()
            .chain(&slot.config.env)
            .filter(|(k, _)| k != FLAME_PARENT)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.push(format!("{FLAME_PARENT}={}", parent.encode()));
        mount::check(&self.mounts, docker, &slot.name).await?;
        let mut created = container::create(self, docker, ctx, &slot.name, image.clone(), env.clone()).await;
        // The image of an executable can vanish under a cached tag (removed
        // by hand, or by an older version's pruning): make it again, once.
        if let Err(e) = &created
            && container::is_missing_image(e)
            && !matches!(self.image, Image::Tag(_))
        {
            tracing::warn!(target: "ractor_flame::docker", image = %image, engine = %slot.name, "runner image gone; importing it again");
            self.forget_image(slot, &image).await;
            image = self.image_tag(slot, docker).await?;
            created = container::create(self, docker, ctx, &slot.name, image.clone(), env).await;
        }
        let id = created.map_err(|e| {
            if container::is_missing_image(&e) {
                BackendError::new(format!("image {image} not found in the engine: {e}"))
            } else {
                BackendError::new(format!("cannot create the runner container: {e}"))
            }
        })?;
        // Route engine events to this Runner before the container can die.
        slot.events.route(&id, ctx.notifier());
        state.container = Some(id.clone());
        state
            .start(docker, &id)
            .await
            .map_err(|e| BackendError::new(format!("cannot start the runner container: {e}")))
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
        crate::entry::announce_system_shutdown(self.name());
    }

    async fn init(&self, ctx: &RunnerContext) -> Result<Self::State, BackendError> {
        self.validate()?;
        Ok(DockerState::new(ctx.runner_id))
    }

    async fn remote_boot(&self, state: &mut Self::State, ctx: &RunnerContext) -> Result<(), BackendError> {
        let placement = self.placement();
        let placed = placement.place()?;
        let slot = Arc::clone(&placed.slot);
        state.placed = Some(placed);
        let booted = self.boot_on(&slot, state, ctx).await;
        if let Err(e) = &booted {
            if let Some(endpoint) = state.endpoint.take() {
                endpoint.forget(ctx.runner_id);
            }
            // The place is given back by `terminate`, after the container
            // (if one was made) is removed.
            if placement.slots().len() > 1 {
                placement.back_off(&slot, &e.0);
                return Err(BackendError::new(format!("engine {}: {}", slot.name, e.0)));
            }
        }
        booted
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
        if let Some(endpoint) = state.endpoint.take() {
            endpoint.forget(state.runner);
        }
        let Some(slot) = state.placed.as_ref().map(|p| Arc::clone(&p.slot)) else {
            return;
        };
        if let Some((docker, _)) = slot.docker.get() {
            if let Some(id) = state.container() {
                slot.events.unroute(id);
            }
            state.stop_and_remove(docker, self.stop_timeout).await;
        }
        // The runner no longer counts on its engine.
        state.placed = None;
    }
}
