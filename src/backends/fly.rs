#![doc = include_str!("../../docs/backends/fly.md")]

mod api;
mod error;
mod init;
mod state;
mod volume;
mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ractor_flame_actors::{Backend, BackendError, DownReason, Endpoint, FLAME_PARENT, RunnerContext, RunnerId};
use serde::Serialize;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use api::{Api, ApiToken, CreateMachine, Guest, MachineConfig, MountRef, Restart};
pub use error::FlyError;
pub use init::MachineInit;
pub use state::FlyState;
use volume::{Claims, VolumeClaim, VolumeMount};

/// The Machines API's address (FLAME's default `host`).
pub const DEFAULT_HOST: &str = "https://api.machines.dev";
/// Default CPU kind.
pub const DEFAULT_CPU_KIND: &str = "performance";
/// Default memory per machine, in MiB.
pub const DEFAULT_MEMORY_MB: u32 = 4096;
/// Default boot timeout: machine created, started and connected back.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default first delay between retries of the API (FLAME's 1 s).
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Default budget to stop and destroy a runner's machine.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval between looks at a serving runner's machine through the
/// API (see [`FlyBackend::machine_check_interval`]).
pub const DEFAULT_MACHINE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Metadata key: the pool's name.
pub const META_POOL: &str = "ractor_flame_pool";
/// Metadata key: the parent instance (one per backend value) that made it.
pub const META_PARENT: &str = "ractor_flame_parent";
/// Metadata key: the runner id.
pub const META_RUNNER: &str = "ractor_flame_runner";
/// Metadata key: the parent's private IP (as FLAME sets it).
pub const META_PARENT_IP: &str = "flame_parent_ip";

/// Runners as Fly Machines, through the Machines REST API.
///
/// Each boot creates one machine of the app's image in the configured
/// region, with `auto_destroy` on, restart policy `"no"`, the runner's
/// `FLAME_PARENT` in its environment (your [`env`](Self::env) cannot
/// override it) and metadata naming the pool, the parent instance and the
/// runner. The backend waits for the machine to reach `started`, and the
/// runner then has what is left of the boot timeout to connect back to the
/// parent's private address. When its Runner goes, the machine is stopped
/// and destroyed (forced when it will not stop), so a runner that never
/// connected is not left behind. Machines do not inherit the parent's
/// environment: pass what runners need with [`env`](Self::env).
///
/// | option | meaning | default |
/// |---|---|---|
/// | [`token`](Self::token) | Fly API token | `FLY_API_TOKEN` |
/// | [`app`](Self::app) | the app machines belong to | `FLY_APP_NAME` |
/// | [`image`](Self::image) | image reference for runners | `FLY_IMAGE_REF` (the running app's image) |
/// | [`host`](Self::host) | Machines API address | `https://api.machines.dev` |
/// | [`region`](Self::region) | region of runners | `FLY_REGION` (none: Fly picks) |
/// | [`cpu_kind`](Self::cpu_kind) | `"performance"` or `"shared"` | `"performance"` |
/// | [`cpus`](Self::cpus) | CPUs per runner | this machine's CPU count |
/// | [`memory_mb`](Self::memory_mb) | memory per runner, MiB | 4096 |
/// | [`gpu_kind`](Self::gpu_kind), [`gpus`](Self::gpus) | GPU reservation | none; `gpus` 1 when a kind is set |
/// | [`env`](Self::env) | runners' environment | empty |
/// | [`boot_timeout`](Self::boot_timeout) | create, start and connect back | 30 s |
/// | [`retry_delay`](Self::retry_delay) | first pause between API retries | 1 s |
/// | [`services`](Self::services), [`metadata`](Self::metadata), [`init`](Self::init) | extra machine config | none |
/// | [`parent_addr`](Self::parent_addr) | where the parent listens for runners | `[FLY_PRIVATE_IP]:0` |
/// | [`stop_timeout`](Self::stop_timeout) | budget to stop and destroy a machine | 10 s |
/// | [`volume`](Self::volume) | a volume of this name on each runner, at a path | none |
/// | [`machine_check_interval`](Self::machine_check_interval) | how often the API is asked whether a serving machine still runs | 5 s |
///
/// The required options are checked in FLAME's order (token, image, host,
/// app), then the parent address; [`validate`](Self::validate) reports the
/// first one missing as a [`FlyError`], and so does every boot.
///
/// # Errors from the API
///
/// 401 and 403 fail the boot at once ([`FlyError::TokenRejected`]), 404
/// too ([`FlyError::NotFound`]: app or image). 409, 412 and 422 mean no
/// capacity in the region: retried as FLAME does (ten more times, one
/// retry delay apart, within the boot timeout), then
/// [`FlyError::NoCapacity`]. 429, 5xx and transport errors are retried with
/// a doubling back-off within the boot timeout, then
/// [`FlyError::Unavailable`] names the last answer. The token never appears
/// in errors, logs or `Debug` output.
///
/// # Examples
///
/// ```no_run
/// use ractor_flame::fly::FlyBackend;
/// use ractor_flame::{Pool, PoolConfig, Registry};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = Registry::new();
/// ractor_flame::run_if_runner(&registry).await?;
/// // Token, app, image and parent address come from Fly's environment.
/// let backend = FlyBackend::new()
///     .cpu_kind("shared")
///     .cpus(2)
///     .memory_mb(2048)
///     .env("DATABASE_URL", std::env::var("DATABASE_URL")?);
/// backend.validate()?;
/// let pool = Pool::start(PoolConfig::new(10).name("thumbnails"), backend, &registry).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FlyBackend {
    token: Option<ApiToken>,
    app: Option<String>,
    image: Option<String>,
    host: String,
    region: Option<String>,
    cpu_kind: String,
    cpus: u32,
    memory_mb: u32,
    gpu_kind: Option<String>,
    gpus: Option<u32>,
    env: BTreeMap<String, String>,
    boot_timeout: Duration,
    retry_delay: Duration,
    stop_timeout: Duration,
    services: Vec<serde_json::Value>,
    metadata: BTreeMap<String, String>,
    init: MachineInit,
    parent_addr: Option<SocketAddr>,
    volume: Option<VolumeMount>,
    machine_check: Option<Duration>,
    /// A setter's value that cannot be sent (reported by `validate`).
    invalid: Option<String>,
    shared: Arc<Shared>,
}

/// What every runner of one backend value shares.
struct Shared {
    /// This parent instance, in every machine's metadata.
    instance: String,
    endpoint: OnceCell<Endpoint>,
    client: OnceCell<reqwest::Client>,
    /// Volumes held by runners of this backend.
    volumes: Claims,
}

impl fmt::Debug for FlyBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token never shows; env values may be secrets: names only.
        let env: Vec<_> = self.env.keys().collect();
        f.debug_struct("FlyBackend")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("app", &self.app)
            .field("image", &self.image)
            .field("host", &self.host)
            .field("region", &self.region)
            .field("cpu_kind", &self.cpu_kind)
            .field("cpus", &self.cpus)
            .field("memory_mb", &self.memory_mb)
            .field("gpu_kind", &self.gpu_kind)
            .field("gpus", &self.gpus)
            .field("env", &env)
            .field("boot_timeout", &self.boot_timeout)
            .field("parent_addr", &self.parent_addr)
            .field("volume", &self.volume)
            .field("machine_check", &self.machine_check)
            .field("instance", &self.shared.instance)
            .finish_non_exhaustive()
    }
}

impl Default for FlyBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl FlyBackend {
    /// FLAME's defaults, read from this process's environment:
    /// `FLY_API_TOKEN`, `FLY_APP_NAME`, `FLY_IMAGE_REF`, `FLY_REGION` and
    /// `FLY_PRIVATE_IP` (the parent's address on Fly's private network).
    /// Nothing is checked yet: see [`validate`](Self::validate).
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::fly::FlyBackend::new();
    /// # let _ = backend;
    /// ```
    pub fn new() -> Self {
        Self::with_env(|key| std::env::var(key).ok())
    }

    /// FLAME's defaults, with the environment read through `lookup`
    /// (for tests and launchers that keep their settings elsewhere).
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::fly::FlyBackend;
    ///
    /// let backend = FlyBackend::with_env(|key| match key {
    ///     "FLY_API_TOKEN" => Some("secret".into()),
    ///     "FLY_APP_NAME" => Some("media".into()),
    ///     "FLY_IMAGE_REF" => Some("registry.fly.io/media:deployment-1".into()),
    ///     "FLY_PRIVATE_IP" => Some("fdaa:0:1::3".into()),
    ///     _ => None,
    /// });
    /// assert!(backend.validate().is_ok());
    /// assert!(!format!("{backend:?}").contains("secret"));
    /// ```
    pub fn with_env(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |key: &str| lookup(key).filter(|v| !v.is_empty());
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        FlyBackend {
            token: get("FLY_API_TOKEN").and_then(ApiToken::new),
            app: get("FLY_APP_NAME"),
            image: get("FLY_IMAGE_REF"),
            host: DEFAULT_HOST.to_owned(),
            region: get("FLY_REGION"),
            cpu_kind: DEFAULT_CPU_KIND.to_owned(),
            cpus,
            memory_mb: DEFAULT_MEMORY_MB,
            gpu_kind: None,
            gpus: None,
            env: BTreeMap::new(),
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            retry_delay: DEFAULT_RETRY_DELAY,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            services: Vec::new(),
            metadata: BTreeMap::new(),
            init: MachineInit::default(),
            parent_addr: get("FLY_PRIVATE_IP")
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 0)),
            volume: None,
            machine_check: Some(DEFAULT_MACHINE_CHECK_INTERVAL),
            invalid: None,
            shared: Arc::new(Shared {
                instance: uuid::Uuid::new_v4().simple().to_string(),
                endpoint: OnceCell::new(),
                client: OnceCell::new(),
                volumes: Claims::default(),
            }),
        }
    }

    /// The Fly API token (default `FLY_API_TOKEN`). Never logged or shown.
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::fly::FlyBackend::new().token("fo1_...");
    /// assert!(!format!("{backend:?}").contains("fo1_"));
    /// ```
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = ApiToken::new(token.into());
        self
    }

    /// The app runners are machines of (default `FLY_APP_NAME`).
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::fly::FlyBackend::new().app("media");
    /// # let _ = backend;
    /// ```
    pub fn app(mut self, app: impl Into<String>) -> Self {
        self.app = Some(app.into()).filter(|a| !a.is_empty());
        self
    }

    /// The image runners run (default `FLY_IMAGE_REF`, the image of the
    /// running machine: the same binary).
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::fly::FlyBackend::new().image("registry.fly.io/media:deployment-7");
    /// # let _ = backend;
    /// ```
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into()).filter(|i| !i.is_empty());
        self
    }

    /// The Machines API's address (default [`DEFAULT_HOST`]).
    ///
    /// # Examples
    ///
    /// ```
    /// // Through the private network, from inside a Fly machine:
    /// let backend = ractor_flame::fly::FlyBackend::new().host("http://_api.internal:4280");
    /// # let _ = backend;
    /// ```
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// The region runners boot in (default `FLY_REGION`; none lets Fly
    /// choose).
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::fly::FlyBackend::new().region("ams");
    /// # let _ = backend;
    /// ```
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into()).filter(|r| !r.is_empty());
        self
    }

    /// The CPU kind, `"performance"` (default) or `"shared"`.
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::fly::FlyBackend::new().cpu_kind("shared");
    /// # let _ = backend;
    /// ```
    pub fn cpu_kind(mut self, kind: impl Into<String>) -> Self {
        self.cpu_kind = kind.into();
        self
    }

    /// CPUs per runner (default: this machine's CPU count).
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::fly::FlyBackend::new().cpus(4);
    /// # let _ = backend;
    /// ```
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// Memory per runner in MiB (default 4096).
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::fly::FlyBackend::new().memory_mb(8192);
    /// # let _ = backend;
    /// ```
    pub fn memory_mb(mut self, mib: u32) -> Self {
        self.memory_mb = mib;
        self
    }

    /// A GPU kind to reserve (for example `"a100-pcie-40gb"`); one GPU
    /// unless [`gpus`](Self::gpus) says more. Default: none.
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::fly::FlyBackend::new().gpu_kind("l40s");
    /// # let _ = backend;
    /// ```
    pub fn gpu_kind(mut self, kind: impl Into<String>) -> Self {
        self.gpu_kind = Some(kind.into()).filter(|k| !k.is_empty());
        self
    }

    /// GPUs per runner, with a [`gpu_kind`](Self::gpu_kind) (default 1).
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::fly::FlyBackend::new().gpu_kind("l40s").gpus(2);
    /// # let _ = backend;
    /// ```
    pub fn gpus(mut self, gpus: u32) -> Self {
        self.gpus = Some(gpus);
        self
    }

    /// An environment variable for runners. Machines get only these (and
    /// `FLAME_PARENT`, which the backend sets last: it cannot be
    /// overridden), never the parent's environment.
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::fly::FlyBackend::new().env("RUST_LOG", "info");
    /// # let _ = backend;
    /// ```
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// The budget of one boot: the machine is created (with retries) and
    /// started within it, and the runner connects back in what is left.
    /// Default 30 s. The pool's own `boot_timeout` bounds the connection
    /// too, counted from the machine's start.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let backend = ractor_flame::fly::FlyBackend::new().boot_timeout(Duration::from_secs(60));
    /// # let _ = backend;
    /// ```
    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = timeout;
        self
    }

    /// The first pause between retries of the API (default 1 s, FLAME's):
    /// no-capacity answers are retried this far apart, 429 and 5xx with a
    /// back-off that starts here and doubles up to eight times it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let backend = ractor_flame::fly::FlyBackend::new().retry_delay(Duration::from_millis(500));
    /// # let _ = backend;
    /// ```
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// The budget to stop and destroy a runner's machine when its Runner
    /// goes (default 10 s); a machine that has not stopped by then is
    /// destroyed by force.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let backend = ractor_flame::fly::FlyBackend::new().stop_timeout(Duration::from_secs(5));
    /// # let _ = backend;
    /// ```
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Mounts a volume named `name` at `path` on every runner (default
    /// none). A Fly volume serves one machine at a time: each runner claims
    /// one of the app's volumes of that name that no machine has attached
    /// (in the backend's [`region`](Self::region) when one is set; else the
    /// machine goes where its volume is). Size the pool with them: create as
    /// many volumes of the name as the pool's `max`, in the region runners
    /// run in (`fly volumes create scratch --count 4 --region ord`). A boot
    /// with no volume of the name fails naming it
    /// ([`FlyError::VolumeMissing`]); one that finds them all attached fails
    /// with [`FlyError::VolumesAttached`] and is retried by the pool's boot
    /// policy (a destroyed runner's volume comes free again).
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::fly::FlyBackend::new().volume("scratch", "/scratch");
    /// # let _ = backend;
    /// ```
    pub fn volume(mut self, name: impl Into<String>, path: impl Into<String>) -> Self {
        let (name, path) = (name.into(), path.into());
        if name.is_empty() {
            self.invalid = Some("a volume needs a name".into());
        } else if !path.starts_with('/') {
            self.invalid = Some(format!("volume `{name}`: the mount path `{path}` is not absolute"));
        }
        self.volume = Some(VolumeMount { name, path });
        self
    }

    /// How often the parent asks the Machines API whether a serving
    /// runner's machine still runs (default 5 s; `None`: never, heartbeats
    /// alone notice a lost machine). A machine whose host fails may leave
    /// its connection open with nothing more sent on it; the API reports it
    /// stopped or failed first. One `GET` per runner per interval.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let backend = ractor_flame::fly::FlyBackend::new().machine_check_interval(Some(Duration::from_secs(2)));
    /// # let _ = backend;
    /// ```
    pub fn machine_check_interval(mut self, every: Option<Duration>) -> Self {
        self.machine_check = every.filter(|d| !d.is_zero());
        self
    }

    /// The machine's `services`, as the Machines API documents them
    /// (default none). Runners serve nothing publicly: give them no
    /// services and no health checks (a TCP check on a runner's port fails
    /// and stops the runner). A value that does not serialize is reported by
    /// [`validate`](Self::validate).
    ///
    /// # Examples
    ///
    /// ```
    /// #[derive(serde::Serialize)]
    /// struct Service { protocol: &'static str, internal_port: u16 }
    ///
    /// let backend = ractor_flame::fly::FlyBackend::new()
    ///     .services(vec![Service { protocol: "tcp", internal_port: 9000 }]);
    /// # let _ = backend;
    /// ```
    pub fn services<S: Serialize>(mut self, services: Vec<S>) -> Self {
        let values: Result<Vec<_>, _> = services.iter().map(serde_json::to_value).collect();
        match values {
            Ok(values) => self.services = values,
            Err(e) => self.invalid = Some(format!("services: {e}")),
        }
        self
    }

    /// One metadata entry on every runner machine. The backend's own keys
    /// ([`META_POOL`], [`META_PARENT`], [`META_RUNNER`], [`META_PARENT_IP`])
    /// win over yours.
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::fly::FlyBackend::new().metadata("team", "media");
    /// # let _ = backend;
    /// ```
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// How the machine starts its program (default: the image's own
    /// entrypoint and command).
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::fly::{FlyBackend, MachineInit};
    /// let backend = FlyBackend::new().init(MachineInit::new().cmd(["/app/server"]));
    /// # let _ = backend;
    /// ```
    pub fn init(mut self, init: MachineInit) -> Self {
        self.init = init;
        self
    }

    /// Where the parent listens for runners, and so the address in their
    /// `FLAME_PARENT` (default `FLY_PRIVATE_IP`, port 0 for any). An IP
    /// literal: no DNS in the boot path.
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::fly::FlyBackend::new().parent_addr("[fdaa:0:1::3]:4370".parse().unwrap());
    /// # let _ = backend;
    /// ```
    pub fn parent_addr(mut self, addr: SocketAddr) -> Self {
        self.parent_addr = Some(addr);
        self
    }

    /// Where runners connect back, once the first boot has bound it.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(ractor_flame::fly::FlyBackend::new().listen_addr().is_none());
    /// ```
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.shared.endpoint.get().map(Endpoint::addr)
    }

    /// This parent instance's [`META_PARENT`] value.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(ractor_flame::fly::FlyBackend::new().instance().len(), 32);
    /// ```
    pub fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// Checks the options: the required ones in FLAME's order (token,
    /// image, host, app), then the parent address, then the values.
    ///
    /// # Errors
    ///
    /// [`FlyError::Missing`] naming the first missing option,
    /// [`FlyError::NoParentAddress`], or [`FlyError::Invalid`] (no CPUs, no
    /// memory, an unserializable `services` value).
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::fly::{FlyBackend, FlyError};
    ///
    /// let backend = FlyBackend::with_env(|_| None).token("t");
    /// assert_eq!(
    ///     backend.validate(),
    ///     Err(FlyError::Missing { option: "image", env: "FLY_IMAGE_REF" })
    /// );
    /// ```
    pub fn validate(&self) -> Result<(), FlyError> {
        self.required()?;
        if self.parent_addr.is_none() {
            return Err(FlyError::NoParentAddress);
        }
        if let Some(invalid) = &self.invalid {
            return Err(FlyError::Invalid(invalid.clone()));
        }
        if self.cpus == 0 {
            return Err(FlyError::Invalid("cpus must be at least 1".into()));
        }
        if self.memory_mb == 0 {
            return Err(FlyError::Invalid("memory_mb must be at least 1".into()));
        }
        if self.gpus == Some(0) {
            return Err(FlyError::Invalid("gpus must be at least 1".into()));
        }
        Ok(())
    }

    /// The required options, in FLAME's order.
    fn required(&self) -> Result<(&ApiToken, &str, &str, &str), FlyError> {
        let missing = |option, env| FlyError::Missing { option, env };
        let token = self.token.as_ref().ok_or(missing("token", "FLY_API_TOKEN"))?;
        let image = self.image.as_deref().ok_or(missing("image", "FLY_IMAGE_REF"))?;
        let host = Some(self.host.as_str())
            .filter(|h| !h.is_empty())
            .ok_or(missing("host", "a Machines API address"))?;
        let app = self.app.as_deref().ok_or(missing("app", "FLY_APP_NAME"))?;
        Ok((token, image, host, app))
    }

    /// The API client for this backend's app.
    async fn api(&self) -> Result<Api, FlyError> {
        let (token, _, host, app) = self.required()?;
        let client = self
            .shared
            .client
            .get_or_try_init(|| async {
                reqwest::Client::builder()
                    .build()
                    .map_err(|e| FlyError::Local(format!("cannot build the HTTP client: {e}")))
            })
            .await?;
        Ok(Api {
            client: client.clone(),
            host: host.to_owned(),
            app: app.to_owned(),
            token: token.clone(),
            retry_delay: self.retry_delay,
        })
    }

    async fn endpoint(&self) -> Result<&Endpoint, FlyError> {
        let addr = self.parent_addr.ok_or(FlyError::NoParentAddress)?;
        self.shared
            .endpoint
            .get_or_try_init(|| async {
                Endpoint::bind(addr)
                    .await
                    .map_err(|e| FlyError::Local(format!("cannot listen for runners on {addr}: {e}")))
            })
            .await
    }

    /// The create request for `runner`, whose `FLAME_PARENT` is
    /// `flame_parent`.
    fn create_request<'a>(
        &'a self,
        runner: RunnerId,
        flame_parent: &'a str,
        labels: &'a Labels,
        volume: Option<&'a VolumeClaim>,
    ) -> Result<CreateMachine<'a>, FlyError> {
        let (_, image, _, app) = self.required()?;
        let mut env: BTreeMap<&str, &str> = self
            .env
            .iter()
            .filter(|(k, _)| k.as_str() != FLAME_PARENT)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.insert(FLAME_PARENT, flame_parent);
        let mut metadata: BTreeMap<&str, &str> = self.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        metadata.insert(META_POOL, &labels.pool);
        metadata.insert(META_PARENT, &self.shared.instance);
        metadata.insert(META_RUNNER, &labels.runner);
        metadata.insert(META_PARENT_IP, &labels.parent_ip);
        let mounts = match (&self.volume, volume) {
            (Some(mount), Some(claim)) => vec![MountRef {
                volume: &claim.id,
                path: &mount.path,
            }],
            _ => Vec::new(),
        };
        Ok(CreateMachine {
            name: machine_name(app, runner),
            // A volume decides where its machine runs.
            region: self
                .region
                .as_deref()
                .or(volume.and_then(|claim| claim.region.as_deref())),
            config: MachineConfig {
                image,
                init: &self.init,
                guest: Guest {
                    cpu_kind: &self.cpu_kind,
                    cpus: self.cpus,
                    memory_mb: self.memory_mb,
                    gpu_kind: self.gpu_kind.as_deref(),
                    gpus: self.gpu_kind.as_ref().map(|_| self.gpus.unwrap_or(1)),
                },
                auto_destroy: true,
                restart: Restart { policy: "no" },
                env,
                services: &self.services,
                metadata,
                mounts,
            },
        })
    }

    async fn boot(&self, state: &mut FlyState, ctx: &RunnerContext) -> Result<(), FlyError> {
        let started = Instant::now();
        // The Runner's own deadline (its start plus this backend's
        // `boot_timeout`, or the pool's when shorter), a moment early: the
        // create's last answer is reported before the Runner cuts the boot
        // off.
        let deadline = Instant::from_std(ctx.boot_deadline())
            .checked_sub(Duration::from_millis(5))
            .unwrap_or(started)
            .min(started + self.boot_timeout);
        self.validate()?;
        let api = self.api().await?;
        let endpoint = self.endpoint().await?;
        // The runner's FLAME_PARENT: built here only.
        let flame_parent = endpoint.expect(ctx, vec![endpoint.addr()], self.name()).encode();
        let labels = Labels {
            pool: ctx.pool.clone(),
            runner: ctx.runner_id.simple(),
            parent_ip: endpoint.addr().ip().to_string(),
        };
        if let Some(mount) = &self.volume {
            let volumes = api.volumes(deadline).await?;
            let claim = volume::claim(&volumes, mount, self.region.as_deref(), &api.app, &self.shared.volumes)?;
            state.volume = Some(claim);
        }
        let request = self.create_request(ctx.runner_id, &flame_parent, &labels, state.volume.as_ref())?;
        let (machine, attempts) = api.create(&request, deadline).await?;
        tracing::info!(target: "ractor_flame::fly", runner = %ctx.runner_id, machine = %machine.id, attempts, elapsed = ?started.elapsed(), "machine created");
        state.api = Some(api.clone());
        state.machine = Some(machine.clone());
        if machine.state.as_deref() != Some("started") && !api.wait(&machine, "started", deadline).await? {
            return Err(FlyError::StartTimeout {
                machine: machine.id,
                timeout: self.boot_timeout,
            });
        }
        if let Some(every) = self.machine_check {
            state.watch = Some(watch::watch(api, machine.id, every, ctx.notifier()));
        }
        // The runner connects back in what is left of the boot timeout: the
        // Runner counts the pool's boot timeout from the start of the boot.
        Ok(())
    }
}

/// Metadata values of one runner.
struct Labels {
    pool: String,
    runner: String,
    parent_ip: String,
}

/// `<app>-flame-<20 hex digits of the runner id>`, as FLAME names runners.
fn machine_name(app: &str, runner: RunnerId) -> String {
    format!("{app}-flame-{}", &runner.simple()[..20])
}

impl Backend for FlyBackend {
    type State = FlyState;

    fn name(&self) -> &'static str {
        "fly"
    }

    async fn init(&self, ctx: &RunnerContext) -> Result<Self::State, BackendError> {
        self.validate()?;
        Ok(FlyState {
            runner: ctx.runner_id,
            api: None,
            machine: None,
            stop_timeout: self.stop_timeout,
            volume: None,
            watch: None,
        })
    }

    fn boot_limit(&self) -> Option<Duration> {
        // The backend's own `boot_timeout` (FLAME's option): create, start
        // and connect back within it, or within the pool's if shorter.
        Some(self.boot_timeout)
    }

    async fn remote_boot(&self, state: &mut Self::State, ctx: &RunnerContext) -> Result<(), BackendError> {
        self.boot(state, ctx).await.map_err(|e| {
            if let Some(endpoint) = self.shared.endpoint.get() {
                endpoint.forget(ctx.runner_id);
            }
            // A machine created but not started is reclaimed by `terminate`,
            // which the Runner calls as it stops on the failed boot.
            BackendError::from(e)
        })
    }

    async fn handle_info(&self, _state: &mut Self::State, info: Box<dyn std::any::Any + Send>) -> Option<DownReason> {
        let down = info.downcast::<watch::MachineDown>().ok()?;
        tracing::warn!(target: "ractor_flame::fly", machine = %down.machine, state = %down.state, "runner machine down");
        Some(down.reason())
    }

    async fn terminate(&self, state: &mut Self::State) {
        state.watch = None;
        if let Some(endpoint) = self.shared.endpoint.get() {
            endpoint.forget(state.runner);
        }
        if let (Some(api), Some(machine)) = (state.api.take(), state.machine.as_ref()) {
            api.stop_and_destroy(machine, self.stop_timeout).await;
            tracing::debug!(target: "ractor_flame::fly", runner = %state.runner, machine = %machine.id, "machine destroyed");
        }
        // Free for another runner once its machine is gone.
        state.volume = None;
    }

    /// Runner side: the machine stops when the runner's process exits
    /// (restart policy `"no"`) and then destroys itself (`auto_destroy`).
    async fn system_shutdown(&self) {
        crate::entry::announce_system_shutdown(self.name());
    }
}

#[cfg(test)]
mod tests;
