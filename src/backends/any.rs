//! `AnyBackend`: one of the shipped backends, chosen at run time.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use ractor_flame_actors::{Backend, BackendError, DownReason, RunnerContext};

use crate::backends::local::LocalBackend;
use crate::backends::process::{ProcessBackend, ProcessState};

/// One of the shipped backends, picked at run time (from a flag, an
/// environment variable, a config file), so a program starts its pool with
/// one `Pool::start` whatever the choice.
///
/// Parse it from a name with [`str::parse`] (`"local"`, `"process"`,
/// `"docker"`, `"fly"`, `"kubernetes"`; see [`AnyBackend::NAMES`]), or wrap
/// a configured backend with `From`. `"docker"`, `"fly"` and `"kubernetes"`
/// need the features of the same names; `"fly"` takes its settings from
/// Fly's environment variables (see `FlyBackend::new`), `"kubernetes"` from
/// the pod's (see `KubernetesBackend::new`).
///
/// # Errors
///
/// Parsing fails with [`UnknownBackend`] for a name that is not a shipped
/// backend (its message lists them), and for `"process"` when the current
/// executable's path cannot be read.
///
/// # Examples
///
/// ```
/// use ractor_flame::{AnyBackend, LocalBackend, Pool, PoolConfig, Registry};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let name = std::env::var("FLAME_BACKEND").unwrap_or_else(|_| "local".into());
/// let backend: AnyBackend = name.parse()?;
/// let pool = Pool::start(PoolConfig::new(2), backend, &Registry::new()).await?;
/// pool.stop().await;
///
/// // A configured backend converts too.
/// let configured = AnyBackend::from(LocalBackend::new());
/// assert_eq!(configured.name(), "local");
/// assert!("nomad".parse::<AnyBackend>().unwrap_err().to_string().contains("local, process"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyBackend {
    /// Runners in this process.
    Local(LocalBackend),
    /// Runners as child processes of an executable.
    Process(ProcessBackend),
    /// Runners as containers (boxed, as the Fly variant: its options are
    /// many).
    #[cfg(feature = "docker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "docker")))]
    Docker(Box<crate::backends::docker::DockerBackend>),
    /// Runners as Fly.io Machines (boxed: its options are many).
    #[cfg(feature = "fly")]
    #[cfg_attr(docsrs, doc(cfg(feature = "fly")))]
    Fly(Box<crate::backends::fly::FlyBackend>),
    /// Runners as Kubernetes pods (boxed: its options are many).
    #[cfg(feature = "kubernetes")]
    #[cfg_attr(docsrs, doc(cfg(feature = "kubernetes")))]
    Kubernetes(Box<crate::backends::kubernetes::KubernetesBackend>),
}

/// Every shipped backend's name, with whether this build has it.
const SHIPPED: [(&str, bool); 5] = [
    ("local", true),
    ("process", true),
    ("docker", cfg!(feature = "docker")),
    ("fly", cfg!(feature = "fly")),
    ("kubernetes", cfg!(feature = "kubernetes")),
];

/// How many of [`SHIPPED`] this build has.
const BUILT: usize = {
    let (mut i, mut n) = (0, 0);
    while i < SHIPPED.len() {
        if SHIPPED[i].1 {
            n += 1;
        }
        i += 1;
    }
    n
};

/// The names of the backends this build has, in [`SHIPPED`] order.
const BUILT_NAMES: [&str; BUILT] = {
    let mut names = [""; BUILT];
    let (mut i, mut n) = (0, 0);
    while i < SHIPPED.len() {
        if SHIPPED[i].1 {
            names[n] = SHIPPED[i].0;
            n += 1;
        }
        i += 1;
    }
    names
};

impl AnyBackend {
    /// The names [`str::parse`] accepts: `"local"` and `"process"`, and
    /// `"docker"`, `"fly"` and `"kubernetes"` when their features are on.
    pub const NAMES: &'static [&'static str] = &BUILT_NAMES;

    /// The chosen backend's name.
    pub fn name(&self) -> &'static str {
        match self {
            AnyBackend::Local(b) => b.name(),
            AnyBackend::Process(b) => b.name(),
            #[cfg(feature = "docker")]
            AnyBackend::Docker(b) => b.name(),
            #[cfg(feature = "fly")]
            AnyBackend::Fly(b) => b.name(),
            #[cfg(feature = "kubernetes")]
            AnyBackend::Kubernetes(b) => b.name(),
        }
    }
}

/// A backend name that is not one of the shipped backends (or a process
/// backend whose executable cannot be found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownBackend(String);

impl fmt::Display for UnknownBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UnknownBackend {}

impl FromStr for AnyBackend {
    type Err = UnknownBackend;

    /// `"local"`, `"process"` (runners re-run the current executable with
    /// its arguments), `"docker"` (an image made from the current
    /// executable), `"fly"` (settings from Fly's environment) or
    /// `"kubernetes"` (settings from the pod's), each with its defaults.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "local" => Ok(AnyBackend::Local(LocalBackend::new())),
            "process" => ProcessBackend::current_exe()
                .map(AnyBackend::Process)
                .map_err(|e| UnknownBackend(format!("process backend: the current executable: {e}"))),
            #[cfg(feature = "docker")]
            "docker" => Ok(AnyBackend::Docker(Box::default())),
            #[cfg(feature = "fly")]
            "fly" => Ok(AnyBackend::Fly(Box::default())),
            #[cfg(feature = "kubernetes")]
            "kubernetes" => Ok(AnyBackend::Kubernetes(Box::default())),
            other => Err(UnknownBackend(format!(
                "unknown backend `{other}` (one of: {})",
                AnyBackend::NAMES.join(", ")
            ))),
        }
    }
}

impl From<LocalBackend> for AnyBackend {
    fn from(b: LocalBackend) -> Self {
        AnyBackend::Local(b)
    }
}

impl From<ProcessBackend> for AnyBackend {
    fn from(b: ProcessBackend) -> Self {
        AnyBackend::Process(b)
    }
}

#[cfg(feature = "docker")]
impl From<crate::backends::docker::DockerBackend> for AnyBackend {
    fn from(b: crate::backends::docker::DockerBackend) -> Self {
        AnyBackend::Docker(Box::new(b))
    }
}

#[cfg(feature = "fly")]
impl From<crate::backends::fly::FlyBackend> for AnyBackend {
    fn from(b: crate::backends::fly::FlyBackend) -> Self {
        AnyBackend::Fly(Box::new(b))
    }
}

#[cfg(feature = "kubernetes")]
impl From<crate::backends::kubernetes::KubernetesBackend> for AnyBackend {
    fn from(b: crate::backends::kubernetes::KubernetesBackend) -> Self {
        AnyBackend::Kubernetes(Box::new(b))
    }
}

/// The state of one runner of an [`AnyBackend`].
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyState {
    /// Of a local runner.
    Local(<LocalBackend as Backend>::State),
    /// Of a process runner.
    Process(ProcessState),
    /// Of a container runner.
    #[cfg(feature = "docker")]
    Docker(crate::backends::docker::DockerState),
    /// Of a Fly machine runner (boxed: it is the largest by far).
    #[cfg(feature = "fly")]
    Fly(Box<crate::backends::fly::FlyState>),
    /// Of a Kubernetes pod runner (boxed, as the Fly one).
    #[cfg(feature = "kubernetes")]
    Kubernetes(Box<crate::backends::kubernetes::KubernetesState>),
}

/// The state does not belong to the backend (cannot happen: the pool keeps
/// each runner with its own backend).
fn mismatch() -> BackendError {
    BackendError::new("backend state of another backend kind")
}

impl Backend for AnyBackend {
    type State = AnyState;

    fn name(&self) -> &'static str {
        AnyBackend::name(self)
    }

    async fn init(&self, ctx: &RunnerContext) -> Result<Self::State, BackendError> {
        Ok(match self {
            AnyBackend::Local(b) => AnyState::Local(b.init(ctx).await?),
            AnyBackend::Process(b) => AnyState::Process(b.init(ctx).await?),
            #[cfg(feature = "docker")]
            AnyBackend::Docker(b) => AnyState::Docker(b.init(ctx).await?),
            #[cfg(feature = "fly")]
            // Fully qualified: `FlyBackend::init` is also its `init` option.
            AnyBackend::Fly(b) => AnyState::Fly(Box::new(Backend::init(&**b, ctx).await?)),
            #[cfg(feature = "kubernetes")]
            AnyBackend::Kubernetes(b) => AnyState::Kubernetes(Box::new(b.init(ctx).await?)),
        })
    }

    async fn remote_boot(&self, state: &mut Self::State, ctx: &RunnerContext) -> Result<(), BackendError> {
        match (self, state) {
            (AnyBackend::Local(b), AnyState::Local(s)) => b.remote_boot(s, ctx).await,
            (AnyBackend::Process(b), AnyState::Process(s)) => b.remote_boot(s, ctx).await,
            #[cfg(feature = "docker")]
            (AnyBackend::Docker(b), AnyState::Docker(s)) => b.remote_boot(s, ctx).await,
            #[cfg(feature = "fly")]
            (AnyBackend::Fly(b), AnyState::Fly(s)) => b.remote_boot(s, ctx).await,
            #[cfg(feature = "kubernetes")]
            (AnyBackend::Kubernetes(b), AnyState::Kubernetes(s)) => b.remote_boot(s, ctx).await,
            #[allow(unreachable_patterns)]
            _ => Err(mismatch()),
        }
    }

    async fn handle_info(&self, state: &mut Self::State, info: Box<dyn std::any::Any + Send>) -> Option<DownReason> {
        match (self, state) {
            (AnyBackend::Local(b), AnyState::Local(s)) => b.handle_info(s, info).await,
            (AnyBackend::Process(b), AnyState::Process(s)) => b.handle_info(s, info).await,
            #[cfg(feature = "docker")]
            (AnyBackend::Docker(b), AnyState::Docker(s)) => b.handle_info(s, info).await,
            #[cfg(feature = "fly")]
            (AnyBackend::Fly(b), AnyState::Fly(s)) => b.handle_info(s, info).await,
            #[cfg(feature = "kubernetes")]
            (AnyBackend::Kubernetes(b), AnyState::Kubernetes(s)) => b.handle_info(s, info).await,
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    fn boot_limit(&self) -> Option<Duration> {
        match self {
            AnyBackend::Local(b) => b.boot_limit(),
            AnyBackend::Process(b) => b.boot_limit(),
            #[cfg(feature = "docker")]
            AnyBackend::Docker(b) => b.boot_limit(),
            #[cfg(feature = "fly")]
            AnyBackend::Fly(b) => b.boot_limit(),
            #[cfg(feature = "kubernetes")]
            AnyBackend::Kubernetes(b) => b.boot_limit(),
        }
    }

    fn down_grace(&self) -> Duration {
        match self {
            AnyBackend::Local(b) => b.down_grace(),
            AnyBackend::Process(b) => b.down_grace(),
            #[cfg(feature = "docker")]
            AnyBackend::Docker(b) => b.down_grace(),
            #[cfg(feature = "fly")]
            AnyBackend::Fly(b) => b.down_grace(),
            #[cfg(feature = "kubernetes")]
            AnyBackend::Kubernetes(b) => b.down_grace(),
        }
    }

    async fn terminate(&self, state: &mut Self::State) {
        match (self, state) {
            (AnyBackend::Local(b), AnyState::Local(s)) => b.terminate(s).await,
            (AnyBackend::Process(b), AnyState::Process(s)) => b.terminate(s).await,
            #[cfg(feature = "docker")]
            (AnyBackend::Docker(b), AnyState::Docker(s)) => b.terminate(s).await,
            #[cfg(feature = "fly")]
            (AnyBackend::Fly(b), AnyState::Fly(s)) => b.terminate(s).await,
            #[cfg(feature = "kubernetes")]
            (AnyBackend::Kubernetes(b), AnyState::Kubernetes(s)) => b.terminate(s).await,
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    async fn system_shutdown(&self) {
        match self {
            AnyBackend::Local(b) => b.system_shutdown().await,
            AnyBackend::Process(b) => b.system_shutdown().await,
            #[cfg(feature = "docker")]
            AnyBackend::Docker(b) => b.system_shutdown().await,
            #[cfg(feature = "fly")]
            AnyBackend::Fly(b) => b.system_shutdown().await,
            #[cfg(feature = "kubernetes")]
            AnyBackend::Kubernetes(b) => b.system_shutdown().await,
        }
    }
}
