//! The engine's event stream, routed to Runner actors: a container that
//! dies or is OOM-killed fails its calls at once, without waiting for a
//! heartbeat. One stream per engine: when it ends and the engine no longer
//! answers, the engine is lost and so are its runners (only those). An
//! engine whose API hangs keeps its stream open and silent, so the engine is
//! also pinged every check interval while its stream runs: no answer within
//! [`PING_TIMEOUT`] loses it the same way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::StreamExt as _;
use ractor_flame_actors::RunnerNotifier;

use super::LABEL_PARENT;
use super::placement::BackOff;

/// How long a ping may take when the event stream ends, before the engine
/// counts as lost.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// The engine the container runs on stopped answering: its event stream
    /// ended and a ping failed. Its runners count as gone.
    EngineLost {
        /// The engine's name.
        engine: String,
        /// What failed.
        why: String,
    },
}

/// Container id to Runner, and the watcher task (one per backend value).
#[derive(Default)]
pub(super) struct Router {
    routes: Routes,
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
    /// Starts watching this instance's containers on one engine, once (again
    /// after the engine was lost). When the stream ends and the engine does
    /// not answer a ping, every routed runner gets
    /// [`ContainerEvent::EngineLost`] and `lost` puts the engine in back-off.
    pub(super) fn watch(&self, docker: &Docker, instance: &str, engine: &str, lost: BackOff, check_every: Duration) {
        let mut watcher = self.watcher.lock().expect("poisoned");
        if watcher.as_ref().is_some_and(|w| !w.is_finished()) {
            return;
        }
        let (docker, instance, engine) = (docker.clone(), instance.to_owned(), engine.to_owned());
        let routes = Arc::clone(&self.routes);
        *watcher = Some(tokio::spawn(async move {
            let mut since: Option<i64> = None;
            let why = loop {
                let ended = match follow(&docker, &instance, since, &routes, check_every).await {
                    Ended::Stream(how) => how,
                    Ended::Unanswered(why) => break why,
                };
                // Resume a stream that ended while the engine still answers,
                // replaying from a second before it ended.
                since = Some(unix_now() - 1);
                match tokio::time::timeout(PING_TIMEOUT, docker.ping()).await {
                    Ok(Ok(_)) => {
                        tracing::debug!(target: "ractor_flame::docker", engine, "engine event stream resumed");
                        continue;
                    }
                    Ok(Err(e)) => break format!("{ended}; ping: {e}"),
                    Err(_) => break format!("{ended}; no answer to a ping within {PING_TIMEOUT:?}"),
                }
            };
            tracing::warn!(target: "ractor_flame::docker", engine, why, "engine lost; its runners are down");
            lost.now(&format!("engine lost: {why}"));
            let runners: Vec<_> = routes.lock().expect("poisoned").drain().map(|(_, r)| r).collect();
            for runner in runners {
                let event = ContainerEvent::EngineLost {
                    engine: engine.clone(),
                    why: why.clone(),
                };
                runner.notify(event);
            }
        }));
    }

    pub(super) fn route(&self, container: &str, runner: RunnerNotifier) {
        self.routes
            .lock()
            .expect("poisoned")
            .insert(container.to_owned(), runner);
    }

    pub(super) fn unroute(&self, container: &str) {
        self.routes.lock().expect("poisoned").remove(container);
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

type Routes = Arc<Mutex<HashMap<String, RunnerNotifier>>>;

/// How one event stream ended.
enum Ended {
    /// The stream itself ended, or failed; how.
    Stream(String),
    /// A ping while it ran went unanswered: the engine is lost.
    Unanswered(String),
}

/// Routes one event stream until it ends, pinging the engine every
/// `check_every` meanwhile; returns how it ended.
async fn follow(docker: &Docker, instance: &str, since: Option<i64>, routes: &Routes, check_every: Duration) -> Ended {
    let filters = HashMap::from([
        ("type", vec!["container".to_owned()]),
        // Podman 4.3 matches the filter against its own name for a death,
        // `died`, and reports it as `die`; Docker ignores the extra value.
        ("event", vec!["die".to_owned(), "died".to_owned(), "oom".to_owned()]),
        ("label", vec![format!("{LABEL_PARENT}={instance}")]),
    ]);
    let mut options = EventsOptionsBuilder::new().filters(&filters);
    if let Some(since) = since {
        options = options.since(&since.to_string());
    }
    let mut stream = docker.events(Some(options.build()));
    let mut checks = tokio::time::interval_at(tokio::time::Instant::now() + check_every, check_every);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = checks.tick() => {
                match tokio::time::timeout(PING_TIMEOUT, docker.ping()).await {
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => return Ended::Unanswered(format!("ping failed: {e}")),
                    Err(_) => return Ended::Unanswered(format!("no answer to a ping within {PING_TIMEOUT:?}")),
                }
            }
        };
        let Some(event) = event else { break };
        let event = match event {
            Ok(event) => event,
            Err(e) => return Ended::Stream(format!("event stream failed: {e}")),
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
            runner.notify(translated);
        }
    }
    Ended::Stream("event stream ended".to_owned())
}
