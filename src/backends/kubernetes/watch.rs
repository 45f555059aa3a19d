//! A runner's pod followed through a watch: until it runs (the boot), then
//! while it serves, until it ends. Each watch resumes from the last
//! resource version it saw, and from a fresh read when the API says that
//! version is too old (410).

use std::net::IpAddr;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{WatchEvent, WatchParams};
use ractor_flame_actors::{DownReason, RunnerNotifier};
use tokio::time::Instant;

use super::error::KubernetesError;

/// What a pod's status says about its runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seen {
    /// Not running yet; why, when the pod says (unschedulable, an image
    /// that cannot be pulled).
    Pending(Option<Waiting>),
    /// Running, at this address.
    Running(IpAddr),
    /// Ended: it runs no runner any more.
    Ended(PodEnd),
}

/// Why a pod is not running yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Waiting {
    /// The scheduler could not place it.
    pub(super) unschedulable: bool,
    pub(super) message: String,
}

/// How a pod ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PodEnd {
    /// Its container was killed for exceeding its memory limit.
    OutOfMemory(String),
    /// The node evicted it.
    Evicted(String),
    /// Its container exited.
    Exited { code: i32, reason: String, message: String },
    /// It is being deleted, or is gone.
    Deleted,
}

impl PodEnd {
    /// The reason the Runner reports.
    pub(super) fn reason(&self, pod: &str) -> DownReason {
        match self {
            PodEnd::OutOfMemory(_) => DownReason::OutOfMemory,
            PodEnd::Evicted(message) => DownReason::Backend(format!("pod {pod} was evicted: {message}")),
            PodEnd::Exited { code, message, .. } if message.is_empty() => DownReason::Exited(i64::from(*code)),
            PodEnd::Exited { code, reason, message } => {
                DownReason::Backend(format!("pod {pod} terminated ({reason}, exit code {code}): {message}"))
            }
            PodEnd::Deleted => DownReason::Backend(format!("pod {pod} was deleted")),
        }
    }

    /// The pod's own account, for errors.
    pub(super) fn message(&self) -> String {
        match self {
            PodEnd::OutOfMemory(message) => format!("OOMKilled {message}").trim_end().to_owned(),
            PodEnd::Evicted(message) => format!("Evicted: {message}"),
            PodEnd::Exited { code, reason, message } => {
                format!("{reason} (exit code {code}) {message}").trim_end().to_owned()
            }
            PodEnd::Deleted => "deleted".to_owned(),
        }
    }
}

/// Reads a pod's status.
pub(super) fn seen(pod: &Pod) -> Seen {
    if pod.metadata.deletion_timestamp.is_some() {
        return Seen::Ended(PodEnd::Deleted);
    }
    let Some(status) = &pod.status else {
        return Seen::Pending(None);
    };
    let terminated = status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|c| c.state.as_ref().and_then(|s| s.terminated.clone()));
    let phase = status.phase.as_deref().unwrap_or("Pending");
    if let Some(t) = &terminated
        && t.reason.as_deref() == Some("OOMKilled")
    {
        return Seen::Ended(PodEnd::OutOfMemory(t.message.clone().unwrap_or_default()));
    }
    match phase {
        "Failed" | "Succeeded" => {
            if status.reason.as_deref() == Some("Evicted") {
                return Seen::Ended(PodEnd::Evicted(status.message.clone().unwrap_or_default()));
            }
            let (code, reason, message) = match terminated {
                Some(t) => (t.exit_code, t.reason.unwrap_or_default(), t.message.unwrap_or_default()),
                None => (
                    i32::from(phase == "Failed"),
                    status.reason.clone().unwrap_or_else(|| phase.to_owned()),
                    status.message.clone().unwrap_or_default(),
                ),
            };
            Seen::Ended(PodEnd::Exited { code, reason, message })
        }
        "Running" => match status.pod_ip.as_deref().and_then(|ip| ip.parse().ok()) {
            Some(ip) if terminated.is_none() => Seen::Running(ip),
            _ => Seen::Pending(None),
        },
        _ => {
            let unschedulable = status.conditions.iter().flatten().find(|c| {
                c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
            });
            if let Some(condition) = unschedulable {
                return Seen::Pending(Some(Waiting {
                    unschedulable: true,
                    message: condition.message.clone().unwrap_or_else(|| "Unschedulable".into()),
                }));
            }
            let waiting = status
                .container_statuses
                .iter()
                .flatten()
                .find_map(|c| c.state.as_ref().and_then(|s| s.waiting.clone()))
                .filter(|w| w.reason.as_deref() != Some("ContainerCreating"));
            Seen::Pending(waiting.map(|w| Waiting {
                unschedulable: false,
                message: match (w.reason, w.message) {
                    (Some(r), Some(m)) => format!("{r}: {m}"),
                    (Some(r), None) => r,
                    (None, m) => m.unwrap_or_default(),
                },
            }))
        }
    }
}

/// The longest one watch request asks to stay open.
const WATCH_SECONDS: u32 = 290;

/// Follows pod `name` from resource version `version` and hands each state
/// it reaches to `on`, until `on` returns a value (returned with the version
/// it was seen at). Restarts the watch where it stopped; after a 410 it
/// reads the pod afresh. A pod deleted from the API is
/// `Seen::Ended(PodEnd::Deleted)`.
async fn follow<T>(
    api: &Api<Pod>,
    name: &str,
    mut version: String,
    mut on: impl FnMut(Seen) -> Option<T>,
) -> Result<(T, String), kube::Error> {
    let params = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(WATCH_SECONDS);
    loop {
        let mut events = match api.watch(&params, &version).await {
            Ok(events) => events.boxed(),
            Err(kube::Error::Api(status)) if status.code == 410 => {
                if let Some(done) = resync(api, name, &mut version, &mut on).await? {
                    return Ok((done, version));
                }
                continue;
            }
            Err(error) => return Err(error),
        };
        while let Some(event) = events.next().await {
            match event? {
                WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                    if let Some(v) = &pod.metadata.resource_version {
                        version.clone_from(v);
                    }
                    if let Some(done) = on(seen(&pod)) {
                        return Ok((done, version));
                    }
                }
                WatchEvent::Deleted(_) => {
                    if let Some(done) = on(Seen::Ended(PodEnd::Deleted)) {
                        return Ok((done, version));
                    }
                }
                WatchEvent::Bookmark(mark) => version = mark.metadata.resource_version,
                WatchEvent::Error(status) if status.code == 410 => {
                    if let Some(done) = resync(api, name, &mut version, &mut on).await? {
                        return Ok((done, version));
                    }
                    break;
                }
                WatchEvent::Error(status) => return Err(kube::Error::Api(status)),
            }
        }
    }
}

/// After a 410 (the version is too old) or a failed watch: what happened
/// meanwhile is in the pod now; read it and go on from its version.
async fn resync<T>(
    api: &Api<Pod>,
    name: &str,
    version: &mut String,
    on: &mut impl FnMut(Seen) -> Option<T>,
) -> Result<Option<T>, kube::Error> {
    tracing::debug!(target: "ractor_flame::kubernetes", pod = %name, "reading the pod afresh");
    match api.get_opt(name).await? {
        Some(pod) => {
            *version = pod.metadata.resource_version.clone().unwrap_or_default();
            Ok(on(seen(&pod)))
        }
        None => {
            version.clear();
            Ok(on(Seen::Ended(PodEnd::Deleted)))
        }
    }
}

/// Waits until the `created` pod runs, or `deadline`.
pub(super) async fn until_running(
    api: &Api<Pod>,
    created: &Pod,
    namespace: &str,
    deadline: Instant,
    started: Instant,
) -> Result<(IpAddr, String), KubernetesError> {
    let name = created.metadata.name.as_deref().unwrap_or_default();
    let version = created.metadata.resource_version.clone().unwrap_or_default();
    // The created pod may already say why it waits (or that it runs).
    let mut last = match seen(created) {
        Seen::Running(ip) => return Ok((ip, version)),
        Seen::Ended(end) => {
            return Err(KubernetesError::PodEnded {
                pod: name.to_owned(),
                message: end.message(),
            });
        }
        Seen::Pending(why) => why,
    };
    let wait = follow(api, name, version, |seen| match seen {
        Seen::Running(ip) => Some(Ok(ip)),
        Seen::Ended(end) => Some(Err(end)),
        Seen::Pending(why) => {
            if why.is_some() {
                last = why;
            }
            None
        }
    });
    let outcome = tokio::time::timeout_at(deadline, wait).await;
    let waited = started.elapsed();
    match outcome {
        Ok(Ok((Ok(ip), at))) => Ok((ip, at)),
        Ok(Ok((Err(end), _))) => Err(KubernetesError::PodEnded {
            pod: name.to_owned(),
            message: end.message(),
        }),
        Ok(Err(error)) => Err(KubernetesError::from_kube(
            error,
            "watch runner pod",
            "watch",
            ("watch", "pods", namespace),
        )),
        Err(_elapsed) => Err(match last {
            Some(Waiting {
                unschedulable: true,
                message,
            }) => KubernetesError::Unschedulable {
                pod: name.to_owned(),
                waited,
                message,
            },
            Some(Waiting { message, .. }) => KubernetesError::StartTimeout {
                pod: name.to_owned(),
                waited,
                message,
            },
            None => KubernetesError::StartTimeout {
                pod: name.to_owned(),
                waited,
                message: "still pending".into(),
            },
        }),
    }
}

/// Told to the Runner when its pod ends while it serves.
#[derive(Debug)]
pub(super) struct PodDown {
    pub(super) pod: String,
    pub(super) end: PodEnd,
}

/// Aborts the watch when dropped.
#[derive(Debug)]
pub(super) struct Watch(tokio::task::AbortHandle);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Follows a serving runner's pod from `version` and tells `runner` once it
/// ends. An API that fails is asked again a second later (heartbeats still
/// cover the runner meanwhile).
pub(super) fn watch(api: Api<Pod>, pod: String, mut version: String, runner: RunnerNotifier) -> Watch {
    let task = tokio::spawn(async move {
        let mut ended = |seen| match seen {
            Seen::Ended(end) => Some(end),
            _ => None,
        };
        loop {
            match follow(&api, &pod, version.clone(), &mut ended).await {
                Ok((end, _)) => {
                    runner.notify(PodDown { pod, end });
                    return;
                }
                Err(error) => {
                    tracing::debug!(target: "ractor_flame::kubernetes", %pod, %error, "watch of the runner's pod failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    // What happened while the watch failed is in the pod.
                    if let Ok(Some(end)) = resync(&api, &pod, &mut version, &mut ended).await {
                        runner.notify(PodDown { pod, end });
                        return;
                    }
                }
            }
        }
    });
    Watch(task.abort_handle())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    #[test]
    fn a_pod_status_reads_as_what_it_means_for_the_runner() {
        assert_eq!(seen(&pod(json!({"phase": "Pending"}))), Seen::Pending(None));
        let unschedulable = pod(json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}));
        assert_eq!(
            seen(&unschedulable),
            Seen::Pending(Some(Waiting {
                unschedulable: true,
                message: "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.".into()
            }))
        );
        let pulling = pod(json!({"phase": "Pending", "containerStatuses": [{
            "name": "app", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image x"}}}]}));
        assert!(
            matches!(seen(&pulling), Seen::Pending(Some(Waiting { unschedulable: false, ref message })) if message.starts_with("ImagePullBackOff"))
        );
        assert_eq!(
            seen(&pod(json!({"phase": "Running", "podIP": "10.0.0.7"}))),
            Seen::Running("10.0.0.7".parse().unwrap())
        );
        let oom = pod(json!({"phase": "Failed", "containerStatuses": [{
            "name": "app", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}));
        assert_eq!(seen(&oom), Seen::Ended(PodEnd::OutOfMemory(String::new())));
        assert_eq!(PodEnd::OutOfMemory(String::new()).reason("p"), DownReason::OutOfMemory);
        let evicted =
            pod(json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}));
        let Seen::Ended(end) = seen(&evicted) else {
            panic!("evicted is ended")
        };
        assert!(
            end.reason("p").to_string().contains("low on resource"),
            "{}",
            end.reason("p")
        );
        let done = pod(json!({"phase": "Succeeded", "containerStatuses": [{
            "name": "app", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}));
        assert_eq!(
            seen(&done).clone(),
            Seen::Ended(PodEnd::Exited {
                code: 0,
                reason: "Completed".into(),
                message: String::new()
            })
        );
        let deleting: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "deletionTimestamp": "2026-12-07T10:00:00Z"}, "status": {"phase": "Running", "podIP": "10.0.0.7"}})).unwrap();
        assert_eq!(seen(&deleting), Seen::Ended(PodEnd::Deleted));
    }
}
