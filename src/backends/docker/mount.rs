//! What a runner container mounts: host paths, named volumes, and tmpfs
//! scratch space.

use bollard::Docker;
use bollard::models::{Mount as EngineMount, MountTmpfsOptions, MountType};
use ractor_flame_actors::BackendError;

/// A filesystem mount of every runner container: scratch space for media
/// or export jobs, shared input data, a model cache.
///
/// # Examples
///
/// ```
/// use ractor_flame::docker::{DockerBackend, Mount};
///
/// let backend = DockerBackend::new()
///     // Input data from the engine's host, read-only.
///     .mount(Mount::bind("/srv/models", "/models").read_only())
///     // A named volume that outlives the runners (create it first:
///     // `docker volume create exports`).
///     .mount(Mount::volume("exports", "/exports"))
///     // 256 MiB of scratch space in memory.
///     .mount(Mount::tmpfs("/scratch", 256 * 1024 * 1024));
/// # let _ = backend;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    kind: Kind,
    target: String,
    read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Bind(String),
    Volume(String),
    Tmpfs(u64),
}

impl Mount {
    /// The engine host's path `source` at `target` in the runner. The
    /// path must exist on the engine's host (for a remote engine, on that
    /// host): a missing one fails the boot, naming it.
    pub fn bind(source: impl Into<String>, target: impl Into<String>) -> Self {
        Mount {
            kind: Kind::Bind(source.into()),
            target: target.into(),
            read_only: false,
        }
    }

    /// The named volume `name` at `target`. The volume must exist on every
    /// engine that runs runners (`docker volume create <name>`): the engine
    /// would otherwise make an empty one, so a missing volume fails the
    /// boot instead, naming it.
    pub fn volume(name: impl Into<String>, target: impl Into<String>) -> Self {
        Mount {
            kind: Kind::Volume(name.into()),
            target: target.into(),
            read_only: false,
        }
    }

    /// A tmpfs at `target` of at most `size_bytes` (in memory, counted
    /// against the container's memory limit; gone with the runner).
    pub fn tmpfs(target: impl Into<String>, size_bytes: u64) -> Self {
        Mount {
            kind: Kind::Tmpfs(size_bytes),
            target: target.into(),
            read_only: false,
        }
    }

    /// Mounted read-only.
    #[must_use]
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Where it is mounted in the runner.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The mount as the engine takes it.
    pub(super) fn to_engine(&self) -> EngineMount {
        let (typ, source, tmpfs_options) = match &self.kind {
            Kind::Bind(path) => (MountType::BIND, Some(path.clone()), None),
            Kind::Volume(name) => (MountType::VOLUME, Some(name.clone()), None),
            Kind::Tmpfs(size) => (
                MountType::TMPFS,
                None,
                Some(MountTmpfsOptions {
                    size_bytes: Some(i64::try_from(*size).unwrap_or(i64::MAX)),
                    ..MountTmpfsOptions::default()
                }),
            ),
        };
        EngineMount {
            target: Some(self.target.clone()),
            source,
            typ: Some(typ),
            read_only: Some(self.read_only),
            tmpfs_options,
            ..EngineMount::default()
        }
    }
}

/// Checks what the engine would not: targets are absolute paths, and the
/// named volumes exist on `engine` (the engine would make a missing one,
/// empty). A missing bind path the engine refuses itself, naming it.
pub(super) async fn check(mounts: &[Mount], docker: &Docker, engine: &str) -> Result<(), BackendError> {
    for mount in mounts {
        if !mount.target.starts_with('/') {
            return Err(BackendError::new(format!(
                "mount target `{}` is not an absolute path",
                mount.target
            )));
        }
        if let Kind::Volume(name) = &mount.kind {
            match docker.inspect_volume(name).await {
                Ok(_) => {}
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                    return Err(BackendError::new(format!(
                        "volume `{name}` does not exist on engine {engine} (create it with `docker volume create {name}`)"
                    )));
                }
                Err(e) => {
                    return Err(BackendError::new(format!(
                        "engine {engine}: cannot inspect volume `{name}`: {e}"
                    )));
                }
            }
        }
    }
    Ok(())
}
