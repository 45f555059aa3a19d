//! One runner container's life: labels and limits at creation, start, the
//! log follower, the verdict on its death, and stop and removal.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder, StartContainerOptions,
    StopContainerOptionsBuilder,
};
use futures_util::StreamExt as _;
use ractor_flame_actors::{DownReason, RunnerContext, RunnerId};

use super::liveness::ProcessKey;
use super::placement::Placed;
use super::{
    ContainerEvent, DockerBackend, LABEL_ENGINE, LABEL_MANAGED, LABEL_PARENT, LABEL_PARENT_PROCESS, LABEL_POOL,
    LABEL_RUNNER, Network,
};

/// Lines of a container's output kept for error messages.
const LAST_LINES: usize = 20;

/// The parent's handle on one runner container.
#[derive(Debug)]
pub struct DockerState {
    pub(super) runner: RunnerId,
    pub(super) container: Option<String>,
    oom: bool,
    last_lines: Arc<Mutex<VecDeque<String>>>,
    follower: Option<tokio::task::JoinHandle<()>>,
    /// The engine the container lives on, for the removal on drop.
    engine: Option<Docker>,
    /// The runner's place on its engine, counted until this state goes.
    pub(super) placed: Option<Placed>,
    /// Where the runner connects back, to forget it there.
    pub(super) endpoint: Option<ractor_flame_actors::Endpoint>,
}

/// A Runner actor that is killed never runs `terminate`; its state is still
/// dropped, and that removes the container.
impl Drop for DockerState {
    fn drop(&mut self) {
        if let (Some(id), Some(docker)) = (self.container.take(), self.engine.take())
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            tracing::debug!(target: "ractor_flame::docker", runner = %self.runner, container = %id, "removing the container of a dropped runner");
            runtime.spawn(async move {
                let _ = docker
                    .remove_container(&id, Some(RemoveContainerOptionsBuilder::new().force(true).build()))
                    .await;
            });
        }
        if let Some(follower) = self.follower.take() {
            follower.abort();
        }
    }
}

impl DockerState {
    pub(super) fn new(runner: RunnerId) -> Self {
        DockerState {
            runner,
            container: None,
            oom: false,
            last_lines: Arc::default(),
            follower: None,
            engine: None,
            placed: None,
            endpoint: None,
        }
    }

    /// The container's id, once created.
    pub fn container(&self) -> Option<&str> {
        self.container.as_deref()
    }

    /// The name of the engine the runner was placed on.
    ///
    /// # Examples
    ///
    /// ```
    /// fn where_it_runs(state: &ractor_flame::docker::DockerState) -> Option<&str> {
    ///     state.engine()
    /// }
    /// ```
    pub fn engine(&self) -> Option<&str> {
        self.placed.as_ref().map(|p| p.slot.name.as_str())
    }

    /// Starts the created container and follows its output.
    pub(super) async fn start(&mut self, docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
        self.engine = Some(docker.clone());
        docker.start_container(id, None::<StartContainerOptions>).await?;
        self.follower = Some(follow_logs(
            docker.clone(),
            id.to_owned(),
            self.runner,
            self.last_lines.clone(),
        ));
        Ok(())
    }

    /// What an engine event means for the runner: `None` while it lives.
    pub(super) async fn on_event(&mut self, event: ContainerEvent) -> Option<DownReason> {
        match event {
            ContainerEvent::EngineLost { engine, why } => Some(DownReason::Backend(format!(
                "its Docker engine {engine} was lost: {why}"
            ))),
            ContainerEvent::Oom => {
                self.oom = true;
                None
            }
            ContainerEvent::Die { exit_code } => {
                // The engine's `oom` event comes before the `die` it causes.
                if self.oom {
                    return Some(DownReason::OutOfMemory);
                }
                if exit_code == 137 {
                    // Podman sends no `oom` event; where it notices an OOM
                    // kill, the container's state says so.
                    return Some(if self.oom_killed().await {
                        DownReason::OutOfMemory
                    } else {
                        DownReason::Killed
                    });
                }
                if exit_code == 143 {
                    return Some(DownReason::Killed);
                }
                // Let the log follower catch the last lines before quoting them.
                if let Some(follower) = self.follower.as_mut() {
                    let _ = tokio::time::timeout(Duration::from_millis(500), follower).await;
                }
                let lines: Vec<String> = self.last_lines.lock().expect("poisoned").iter().cloned().collect();
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

    /// Whether the engine's inspect says the kernel killed the container
    /// for memory (`State.OOMKilled`). False when the engine does not
    /// answer within a second or the container is already gone.
    async fn oom_killed(&self) -> bool {
        let (Some(docker), Some(id)) = (self.engine.as_ref(), self.container.as_deref()) else {
            return false;
        };
        let inspect = tokio::time::timeout(Duration::from_secs(1), docker.inspect_container(id, None)).await;
        matches!(inspect, Ok(Ok(c)) if c.state.as_ref().and_then(|s| s.oom_killed) == Some(true))
    }

    /// Stops (bounded by `stop_timeout`) and force-removes the container;
    /// an engine that does not answer gets a few seconds more, no longer.
    pub(super) async fn stop_and_remove(&mut self, docker: &Docker, stop_timeout: Duration) {
        if let Some(id) = self.container.take() {
            // The runner exits on its own after its drain; a stop bounds the
            // wait, and the forced removal covers a paused or stuck container.
            let stop = StopContainerOptionsBuilder::new()
                .t(stop_timeout.as_secs() as i32)
                .build();
            let both = async {
                let _ = docker.stop_container(&id, Some(stop)).await;
                let _ = docker
                    .remove_container(&id, Some(RemoveContainerOptionsBuilder::new().force(true).build()))
                    .await;
            };
            if tokio::time::timeout(stop_timeout + Duration::from_secs(5), both)
                .await
                .is_err()
            {
                tracing::warn!(target: "ractor_flame::docker", runner = %self.runner, container = %id, "engine did not answer the stop; container left to auto-remove");
            }
        }
        if let Some(follower) = self.follower.take() {
            follower.abort();
        }
    }
}

/// Creates the runner's container (not started); returns its id.
pub(super) async fn create(
    backend: &DockerBackend,
    docker: &Docker,
    ctx: &RunnerContext,
    engine: &str,
    image: String,
    env: Vec<String>,
) -> Result<String, bollard::errors::Error> {
    let mut labels = labels(backend.instance(), ctx);
    labels.insert(LABEL_ENGINE.to_owned(), engine.to_owned());
    let body = ContainerCreateBody {
        image: Some(image),
        env: Some(env),
        cmd: (!backend.cmd.is_empty()).then(|| backend.cmd.clone()),
        labels: Some(labels),
        host_config: Some(host_config(backend)),
        stop_timeout: Some(backend.stop_timeout.as_secs().max(1) as i64),
        ..ContainerCreateBody::default()
    };
    let name = container_name(&ctx.pool, ctx.runner_id);
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    Ok(docker.create_container(Some(options), body).await?.id)
}

/// Whether an engine error says the image is not there.
pub(super) fn is_missing_image(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError { status_code: 404, message }
            if message.to_ascii_lowercase().contains("no such image")
    )
}

fn labels(instance: &str, ctx: &RunnerContext) -> HashMap<String, String> {
    let mut labels = HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_POOL.to_owned(), ctx.pool.clone()),
        (LABEL_PARENT.to_owned(), instance.to_owned()),
        (LABEL_RUNNER.to_owned(), ctx.runner_id.simple()),
    ]);
    if let Some(me) = ProcessKey::current() {
        labels.insert(LABEL_PARENT_PROCESS.to_owned(), me.encode());
    }
    labels
}

fn host_config(backend: &DockerBackend) -> HostConfig {
    HostConfig {
        network_mode: Some(match &backend.network {
            Network::Host => "host".to_owned(),
            Network::Named(name) => name.clone(),
        }),
        auto_remove: Some(true),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        memory: backend.memory,
        memory_swap: backend.memory,
        nano_cpus: backend.nano_cpus,
        pids_limit: backend.pids,
        mounts: (!backend.mounts.is_empty()).then(|| backend.mounts.iter().map(|m| m.to_engine()).collect()),
        ..HostConfig::default()
    }
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
                if crate::observe::unobserved() {
                    // No subscriber: the line would be lost.
                    eprintln!("flame runner {runner}: {line}");
                } else {
                    tracing::info!(target: "ractor_flame::docker", runner = %runner, "{line}");
                }
                let mut last = last.lock().expect("poisoned");
                if last.len() == LAST_LINES {
                    last.pop_front();
                }
                last.push_back(line.to_owned());
            }
        }
    })
}
