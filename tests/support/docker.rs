//! Docker helpers: an engine or a printed skip (a failure where
//! `FLAME_REQUIRE_DOCKER` is set), the test backend, and container counts
//! read from the engine.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::ContainerSummary;
use bollard::query_parameters::ListContainersOptionsBuilder;
use ractor_flame::docker::{DockerBackend, Image, LABEL_MANAGED, LABEL_POOL};

/// The engine, or `None` (with the reason printed) where Docker tests may
/// skip. Panics where `FLAME_REQUIRE_DOCKER` is set and no engine answers.
pub async fn engine(test: &str) -> Option<Docker> {
    let probe = async {
        let docker = Docker::connect_with_defaults().map_err(|e| e.to_string())?;
        docker.ping().await.map_err(|e| e.to_string())?;
        docker.negotiate_version().await.map_err(|e| e.to_string())
    };
    match probe.await {
        Ok(docker) => {
            // Import the runner image before any test's clock starts.
            backend().prepare_image().await.expect("runner image");
            Some(docker)
        }
        Err(why) if std::env::var_os("FLAME_REQUIRE_DOCKER").is_some() => {
            panic!("{test}: FLAME_REQUIRE_DOCKER is set but no Docker engine answers: {why}")
        }
        Err(why) => {
            eprintln!("skipping {test}: no Docker engine ({why}); set FLAME_REQUIRE_DOCKER=1 to fail instead");
            None
        }
    }
}

/// The backend the tests use: the test runner binary as the image, host
/// network, a short stop timeout.
pub fn backend() -> DockerBackend {
    DockerBackend::new()
        .image(Image::Executable(super::runner_exe().into()))
        .stop_timeout(std::time::Duration::from_secs(1))
}

/// Containers (any state) labelled with pool `name`.
pub async fn containers(docker: &Docker, pool: &str) -> usize {
    all_labelled(docker, pool).await.len()
}

/// Containers (any state) labelled with pool `name`.
pub async fn all_labelled(docker: &Docker, pool: &str) -> Vec<ContainerSummary> {
    list(docker, pool, None).await
}

/// The states Podman 4.3 both reports and filters on, but `stopped`.
const PODMAN_READABLE_STATES: [&str; 5] = ["created", "running", "paused", "exited", "removing"];

/// Containers labelled with pool `name`, of `state` or any. Podman 4.3
/// lists a container that exited and awaits its cleanup as `stopped`,
/// which bollard cannot read (the whole listing fails), even under a
/// `status` filter naming another state while the container changes
/// state: such a listing is made again, 50 ms later and (for any state)
/// for the states Podman both reports and filters on.
async fn list(docker: &Docker, pool: &str, state: Option<&str>) -> Vec<ContainerSummary> {
    let mut filters = HashMap::from([(
        "label",
        vec![format!("{LABEL_MANAGED}=true"), format!("{LABEL_POOL}={pool}")],
    )]);
    if let Some(state) = state {
        filters.insert("status", vec![state.to_owned()]);
    }
    for _ in 0..5 {
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        match docker.list_containers(Some(options)).await {
            Ok(list) => return list,
            Err(bollard::errors::Error::JsonDataError { .. }) => {
                if state.is_none() {
                    filters.insert("status", PODMAN_READABLE_STATES.map(str::to_owned).to_vec());
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("list containers: {e}"),
        }
    }
    panic!("list containers: a container state the client cannot read, five times")
}

/// Ids of running containers of pool `name`.
pub async fn running(docker: &Docker, pool: &str) -> Vec<String> {
    list(docker, pool, Some("running"))
        .await
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// A parent process: the test runner binary in one of its parent modes.
pub struct ParentProcess {
    pub child: tokio::process::Child,
    pub lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    /// Its runner image, from its `image <tag>` line.
    pub image: Option<String>,
}

impl ParentProcess {
    /// Starts `exe` with `args`, stdin and stdout piped.
    pub fn spawn(exe: &std::path::Path, args: &[&str]) -> ParentProcess {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = tokio::process::Command::new(exe)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("parent process starts");
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        ParentProcess {
            child,
            lines,
            image: None,
        }
    }

    /// Reads lines until one starts with `prefix` (noting an `image` line
    /// on the way); returns it.
    pub async fn until(&mut self, prefix: &str, timeout: std::time::Duration) -> String {
        let read = async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await
                    .expect("stdout")
                    .unwrap_or_else(|| panic!("the parent process ended before printing {prefix:?}"));
                if let Some(tag) = line.strip_prefix("image ") {
                    self.image = Some(tag.to_owned());
                }
                if line.starts_with(prefix) {
                    return line;
                }
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .unwrap_or_else(|_| panic!("no {prefix:?} line within {timeout:?}"))
    }

    /// Writes a line to its stdin.
    pub async fn say(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt as _;
        let stdin = self.child.stdin.as_mut().expect("stdin open");
        stdin.write_all(format!("{line}\n").as_bytes()).await.expect("stdin");
        stdin.flush().await.expect("stdin");
    }

    /// Closes its stdin.
    pub fn close_stdin(&mut self) {
        self.child.stdin.take();
    }
}

/// A copy of the test runner binary in a fresh directory, with `extra`
/// bytes appended (an ELF executable ignores trailing bytes; they make a
/// distinct build). Returns the directory and the copy's path.
pub fn runner_copy(extra: &[u8]) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("flame-exe-{}", super::key()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("runner");
    let mut bytes = std::fs::read(super::runner_exe()).unwrap();
    bytes.extend_from_slice(extra);
    std::fs::write(&exe, bytes).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, exe)
}

/// Removes an image by id with all its tags (claims included).
pub async fn remove_image(docker: &Docker, tag: &str) {
    if let Ok(image) = docker.inspect_image(tag).await {
        let force = bollard::query_parameters::RemoveImageOptionsBuilder::new()
            .force(true)
            .build();
        let _ = docker
            .remove_image(&image.id.unwrap_or_default(), Some(force), None)
            .await;
    }
}
