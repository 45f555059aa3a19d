//! The engine's event stream, routed to Runner actors: a container that
//! dies or is OOM-killed fails its calls at once, without waiting for a
//! heartbeat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::StreamExt as _;
use ractor::ActorRef;
use ractor_flame_actors::runner::RunnerMessage;

use super::LABEL_PARENT;

/// What the engine said about a runner's container.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContainerEvent {
    /// The kernel killed a process of the container for memory.
    Oom,
    /// The container stopped.
    Die {
        /// Its exit code (137: SIGKILL).
        exit_code: i64,
    },
}

/// Container id to Runner, and the watcher task (one per backend value).
#[derive(Default)]
pub(super) struct Router {
    routes: Arc<Mutex<HashMap<String, ActorRef<RunnerMessage>>>>,
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(w) = self.watcher.lock().expect("poisoned").take() {
            w.abort();
        }
    }
}

impl Router {
    /// Starts watching this instance's containers, once.
    pub(super) fn watch(&self, docker: &Docker, instance: &str) {
        let mut watcher = self.watcher.lock().expect("poisoned");
        if watcher.as_ref().is_some_and(|w| !w.is_finished()) {
            return;
        }
        let filters = HashMap::from([
            ("type", vec!["container".to_owned()]),
            ("event", vec!["die".to_owned(), "oom".to_owned()]),
            ("label", vec![format!("{LABEL_PARENT}={instance}")]),
        ]);
        let options = EventsOptionsBuilder::new().filters(&filters).build();
        let mut stream = docker.events(Some(options));
        let routes = Arc::clone(&self.routes);
        *watcher = Some(tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                let Ok(event) = event else {
                    tracing::warn!(target: "ractor_flame::docker", "engine event stream ended");
                    return;
                };
                let Some(actor) = event.actor else { continue };
                let Some(id) = actor.id else { continue };
                let translated = match event.action.as_deref() {
                    Some("oom") => ContainerEvent::Oom,
                    Some("die") => ContainerEvent::Die {
                        exit_code: actor
                            .attributes
                            .as_ref()
                            .and_then(|a| a.get("exitCode"))
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(-1),
                    },
                    _ => continue,
                };
                tracing::debug!(target: "ractor_flame::docker", container = %id, event = ?translated, "engine event");
                let runner = routes.lock().expect("poisoned").get(&id).cloned();
                if let Some(runner) = runner {
                    let _ = runner.cast(RunnerMessage::Info(Box::new(translated)));
                }
            }
        }));
    }

    pub(super) fn route(&self, container: &str, runner: ActorRef<RunnerMessage>) {
        self.routes
            .lock()
            .expect("poisoned")
            .insert(container.to_owned(), runner);
    }

    pub(super) fn unroute(&self, container: &str) {
        self.routes.lock().expect("poisoned").remove(container);
    }
}
