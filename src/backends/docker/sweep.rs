//! The orphan sweep: which labelled containers a pool may remove.
//!
//! Several parents may share one engine and one pool name (replicas, a
//! rolling deploy, two copies of a program), so a container of another
//! parent instance is removed only when it cannot be a live runner of a
//! live parent:
//!
//! - its parent process is provably dead: it ran on this machine's boot
//!   and in this PID namespace (the `ractor-flame.parent-process` label),
//!   and `/proc` shows no process with that PID and start time. Then the
//!   container goes whatever its state (one that never started, one still
//!   waiting to connect, one stuck);
//! - or, when the parent cannot be checked from here (another host or
//!   container, no label), the container has exited or is dead, or it is
//!   still in state `created` a minute after its creation (a live parent
//!   starts its containers within its boot).
//!
//! Every other container is kept: a running runner whose parent is gone
//! stops by itself (on end of file, lost heartbeats or its failsafe) and
//! its engine removes it (`auto_remove`).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::ContainerSummary;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use ractor_flame_actors::BackendError;

use super::liveness::{Liveness, ProcessKey};
use super::{LABEL_MANAGED, LABEL_PARENT, LABEL_PARENT_PROCESS};

/// How long a container of an unverifiable parent may stay in state
/// `created` before a sweep takes it for never started.
pub(crate) const CREATED_GRACE: Duration = Duration::from_secs(60);

/// What the sweep knows of one container.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen<'a> {
    /// The engine's state: `created`, `running`, `paused`, `exited`, ...
    pub(crate) state: &'a str,
    /// Since its creation.
    pub(crate) age: Duration,
    /// Its parent process, where the label is there and parses.
    pub(crate) parent: Liveness,
}

/// The states Podman 4.3 both reports and accepts in a `status` filter,
/// but `stopped`.
const PODMAN_READABLE_STATES: [&str; 5] = ["created", "running", "paused", "exited", "removing"];

/// Containers (any state) with all of `labels`. Podman 4.3 lists a
/// container that exited and awaits its cleanup as `stopped`, a state the
/// API client cannot read (the whole listing fails), and may do so even
/// under a `status` filter that names other states while the container
/// changes state. Such a listing is made again (up to four more times, 50 ms
/// apart) for the states Podman both reports and filters on: a `stopped`
/// container is `exited`, or gone, moments later. Docker's listings never
/// need the second try.
pub(crate) async fn list_labelled(
    docker: &Docker,
    labels: Vec<String>,
) -> Result<Vec<ContainerSummary>, bollard::errors::Error> {
    let mut filters = HashMap::from([("label", labels)]);
    let mut tries = 0;
    loop {
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        match docker.list_containers(Some(options)).await {
            Err(bollard::errors::Error::JsonDataError { .. }) if tries < 4 => {
                tries += 1;
                filters.insert("status", PODMAN_READABLE_STATES.map(str::to_owned).to_vec());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            listed => return listed,
        }
    }
}

/// Whether a container of another parent instance may be removed.
pub(crate) fn removable(seen: Seen<'_>) -> bool {
    match seen.parent {
        Liveness::Alive => false,
        Liveness::Dead => true,
        Liveness::Unknown => match seen.state {
            "exited" | "dead" => true,
            "created" => seen.age >= CREATED_GRACE,
            _ => false,
        },
    }
}

/// Removes the containers with all of `labels` (and the managed label)
/// that belong to a parent instance other than `keep` and cannot be live
/// runners of a live parent (see the module docs). Returns how many.
pub(crate) async fn sweep(docker: &Docker, labels: &[(&str, &str)], keep: Option<&str>) -> Result<usize, BackendError> {
    let mut filter = vec![format!("{LABEL_MANAGED}=true")];
    filter.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
    let found = list_labelled(docker, filter)
        .await
        .map_err(|e| BackendError::new(format!("cannot list containers: {e}")))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut removed = 0;
    for container in found {
        let labels = container.labels.unwrap_or_default();
        if keep.is_some() && labels.get(LABEL_PARENT).map(String::as_str) == keep {
            continue;
        }
        let parent = labels
            .get(LABEL_PARENT_PROCESS)
            .and_then(|key| ProcessKey::parse(key))
            .map_or(Liveness::Unknown, |key| key.liveness());
        let created = u64::try_from(container.created.unwrap_or(0)).unwrap_or(0);
        let seen = Seen {
            state: container.state.as_ref().map(|s| s.as_ref()).unwrap_or(""),
            age: Duration::from_secs(now.saturating_sub(created)),
            parent,
        };
        if !removable(seen) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(state: &str, age_s: u64, parent: Liveness) -> Seen<'_> {
        Seen {
            state,
            age: Duration::from_secs(age_s),
            parent,
        }
    }

    #[test]
    fn a_live_parents_containers_are_never_removed() {
        for state in ["created", "running", "paused", "exited", "dead"] {
            assert!(!removable(seen(state, 3600, Liveness::Alive)), "{state}");
        }
    }

    #[test]
    fn a_dead_parents_containers_are_removed_in_any_state() {
        for state in ["created", "running", "paused", "restarting", "exited"] {
            assert!(removable(seen(state, 0, Liveness::Dead)), "{state}");
        }
    }

    #[test]
    fn an_unverifiable_parents_running_containers_are_kept() {
        assert!(!removable(seen("running", 3600, Liveness::Unknown)));
        assert!(!removable(seen("paused", 3600, Liveness::Unknown)));
        assert!(!removable(seen("created", 5, Liveness::Unknown)));
        assert!(removable(seen("created", 60, Liveness::Unknown)));
        assert!(removable(seen("exited", 0, Liveness::Unknown)));
        assert!(removable(seen("dead", 0, Liveness::Unknown)));
    }
}
