//! The "scheduler" and "kubelet": each admitted pod is scheduled onto the
//! one node and run as a Docker container on the stand-in's pod network.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig, NetworkCreateRequest,
    NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListNetworksOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::store::{self, Res};
use super::{Cmd, Inner, LABEL_MANAGED, LABEL_POD, LABEL_STANDIN, NODE, Net, Shared};

/// Where a pod finds its service account.
const SA_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Creates the stand-in's internal bridge network on a free 10.x.y.0/24.
pub async fn create_network(docker: &Docker, id: &str) -> Net {
    let name = format!("flame-kube-{id}");
    let labels = HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_STANDIN.to_owned(), id.to_owned()),
    ]);
    let mut last = String::new();
    for _ in 0..40 {
        let r = uuid::Uuid::new_v4().into_bytes();
        let (b, c) = (200 + r[0] % 50, r[1]);
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            internal: Some(true),
            ipam: Some(Ipam {
                driver: Some("default".into()),
                config: Some(vec![IpamConfig {
                    subnet: Some(format!("10.{b}.{c}.0/24")),
                    gateway: Some(format!("10.{b}.{c}.1")),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            labels: Some(labels.clone()),
            ..Default::default()
        };
        match docker.create_network(request).await {
            Ok(_) => {
                return Net {
                    name,
                    gateway: Ipv4Addr::new(10, b, c, 1),
                    prefix: [10, b, c],
                    next: 2,
                    free: Vec::new(),
                };
            }
            Err(e) => last = e.to_string(),
        }
    }
    panic!("no free subnet for the stand-in's pod network: {last}");
}

/// Containers (any state) of this stand-in, of pod `ns/name` if given.
pub async fn containers(inner: &Inner, pod: Option<&str>) -> Vec<String> {
    let mut labels = vec![format!("{LABEL_STANDIN}={}", inner.id)];
    if let Some(pod) = pod {
        labels.push(format!("{LABEL_POD}={pod}"));
    }
    let filters = HashMap::from([("label", labels)]);
    let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
    let list = inner
        .docker
        .list_containers(Some(options))
        .await
        .expect("list containers");
    list.into_iter().filter_map(|c| c.id).collect()
}

/// Removes every container and network of stand-in `id`.
pub async fn remove_all(docker: &Docker, id: &str) {
    let filters = HashMap::from([("label", vec![format!("{LABEL_STANDIN}={id}")])]);
    let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
    for c in docker.list_containers(Some(options)).await.unwrap_or_default() {
        if let Some(id) = c.id {
            remove_container(docker, &id).await;
        }
    }
    let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
    for n in docker.list_networks(Some(options)).await.unwrap_or_default() {
        if let Some(id) = n.id {
            let _ = docker.remove_network(&id).await;
        }
    }
}

/// Removes container `id` and returns once the engine no longer knows it.
///
/// A removal can be in progress already (the kubelet's own, aborted when
/// the stand-in shut down; the engine finishes it alone), and Docker 20.10
/// can leave a container marked "Removal In Progress" after a removal that
/// raced another: asked again, it goes. Gives up after 20 s, saying so.
pub async fn remove_container(docker: &Docker, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let force = RemoveContainerOptionsBuilder::new().force(true).build();
        let _ = docker.remove_container(id, Some(force)).await;
        match docker
            .inspect_container(id, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
        {
            // Gone.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => return,
            Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { .. }) => {}
            // An engine that no longer answers: nothing to wait for.
            Err(_) => return,
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!("kube stand-in: container {id} is still there 20 s after its removal began");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pod conditions of a scheduled pod.
pub fn conditions(ready: bool, initialized: bool, now: &str) -> Value {
    let (status, reason) = if ready {
        ("True", None)
    } else {
        ("False", Some("ContainersNotReady"))
    };
    let mut list = vec![
        json!({"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}),
        json!({"type": "Initialized", "status": if initialized { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now}),
        json!({"type": "Ready", "status": status, "lastProbeTime": null, "lastTransitionTime": now}),
        json!({"type": "ContainersReady", "status": status, "lastProbeTime": null, "lastTransitionTime": now}),
        json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}),
    ];
    if let Some(reason) = reason {
        list[2]["reason"] = json!(reason);
        list[3]["reason"] = json!(reason);
        list[2]["message"] = json!("containers with unready status");
        list[3]["message"] = json!("containers with unready status");
    }
    json!(list)
}

/// Posts an event about `pod`.
pub fn record_event(inner: &Inner, pod: &Value, kind: &str, reason: &str, message: &str, component: &str) {
    let now = store::now();
    let ns = store::namespace(pod);
    let name = store::name(pod);
    let mut involved = json!({
        "kind": "Pod",
        "namespace": ns,
        "name": name,
        "uid": store::uid(pod),
        "apiVersion": "v1",
        "resourceVersion": pod["metadata"]["resourceVersion"],
    });
    if component == "kubelet"
        && let Some(c) = pod["spec"]["containers"][0]["name"].as_str()
        && reason != "Evicted"
    {
        involved["fieldPath"] = json!(format!("spec.containers{{{c}}}"));
    }
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": format!("{name}.{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
            "namespace": ns,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": now,
        },
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "source": if component == "kubelet" { json!({"component": "kubelet", "host": NODE}) } else { json!({"component": component}) },
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": kind,
        "eventTime": null,
        "reportingComponent": component,
        "reportingInstance": if component == "kubelet" { NODE } else { "" },
    });
    inner.store.lock().unwrap().insert(Res::Events, event);
}

/// Schedules a new pod (or leaves it Pending, unschedulable) and starts
/// its kubelet task.
pub fn admit(inner: &Shared, pod: &Value) {
    let (ns, name, uid) = (store::namespace(pod), store::name(pod), store::uid(pod).to_owned());
    let unschedulable = inner.unschedulable.lock().unwrap().clone();
    if let Some(message) = unschedulable {
        let now = store::now();
        let updated = inner
            .store
            .lock()
            .unwrap()
            .update(Res::Pods, &ns, &name, Some(&uid), |p| {
                p["status"]["conditions"] = json!([{
                    "type": "PodScheduled", "status": "False", "lastProbeTime": null,
                    "lastTransitionTime": now, "reason": "Unschedulable", "message": message,
                }]);
            });
        if let Some(p) = updated {
            record_event(inner, &p, "Warning", "FailedScheduling", &message, "default-scheduler");
        }
        return;
    }
    let now = store::now();
    let scheduled = inner
        .store
        .lock()
        .unwrap()
        .update(Res::Pods, &ns, &name, Some(&uid), |p| {
            p["spec"]["nodeName"] = json!(NODE);
            p["status"]["conditions"] = json!([{
                "type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now,
            }]);
        });
    let Some(pod) = scheduled else { return };
    record_event(
        inner,
        &pod,
        "Normal",
        "Scheduled",
        &format!("Successfully assigned {ns}/{name} to {NODE}"),
        "default-scheduler",
    );
    let (tx, rx) = mpsc::unbounded_channel();
    inner.kubelet.lock().unwrap().insert(uid.clone(), tx);
    let task = tokio::spawn(run_pod(inner.clone(), PodRef { ns, name, uid }, rx));
    inner.tasks.lock().unwrap().push(task.abort_handle());
}

/// Schedules the pods left Pending while the node was unschedulable.
pub fn schedule_waiting(inner: &Shared) {
    let waiting: Vec<Value> = {
        let store = inner.store.lock().unwrap();
        store
            .list(Res::Pods, None)
            .into_iter()
            .filter(|p| p["spec"]["nodeName"].is_null() && p["metadata"]["deletionTimestamp"].is_null())
            .collect()
    };
    for pod in waiting {
        admit(inner, &pod);
    }
}

#[derive(Clone, Debug)]
struct PodRef {
    ns: String,
    name: String,
    uid: String,
}

impl PodRef {
    fn get(&self, inner: &Inner) -> Option<Value> {
        let store = inner.store.lock().unwrap();
        store
            .get(Res::Pods, &self.ns, &self.name)
            .filter(|p| store::uid(p) == self.uid)
            .cloned()
    }
    fn update(&self, inner: &Inner, change: impl FnOnce(&mut Value)) -> Option<Value> {
        inner
            .store
            .lock()
            .unwrap()
            .update(Res::Pods, &self.ns, &self.name, Some(&self.uid), change)
    }
}

/// What the kubelet made for a pod, to undo when it goes.
#[derive(Default)]
struct Made {
    container: Option<String>,
    ip: Option<Ipv4Addr>,
    token: Option<String>,
    dir: Option<PathBuf>,
}

/// A container to create.
struct Plan {
    image: String,
    container: String,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Vec<String>,
    memory: Option<i64>,
    nano_cpus: Option<i64>,
    binds: Vec<String>,
}

async fn run_pod(inner: Shared, pod: PodRef, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut made = Made {
        ip: inner.net.lock().unwrap().allocate(),
        ..Made::default()
    };
    let Some(ip) = made.ip else {
        // No address left: the sandbox cannot be made.
        wait_for_delete(&mut rx).await;
        return finish(&inner, &pod, made).await;
    };
    let started_at = store::now();
    // Prepare until the container can be made (a missing secret may come).
    let mut last_reason = String::new();
    let plan = loop {
        let Some(current) = pod.get(&inner) else {
            return finish(&inner, &pod, made).await;
        };
        match prepare(&inner, &current, ip, &mut made).await {
            Ok(plan) => break plan,
            Err((reason, message)) => {
                if reason != last_reason {
                    let updated = pod.update(&inner, |p| {
                        waiting_status(&inner, p, ip, &started_at, reason, &message);
                    });
                    if let Some(p) = updated {
                        let text = if reason == "CreateContainerConfigError" {
                            format!("Error: {message}")
                        } else {
                            format!("Error: {reason}")
                        };
                        record_event(&inner, &p, "Warning", "Failed", &text, "kubelet");
                    }
                    last_reason = reason.to_owned();
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    cmd = rx.recv() => {
                        if matches!(cmd, Some(Cmd::Evict)) {
                            evicted_status(&inner, &pod, None);
                            wait_for_delete(&mut rx).await;
                        }
                        return finish(&inner, &pod, made).await;
                    }
                }
            }
        }
    };
    if let Some(p) = pod.get(&inner) {
        record_event(
            &inner,
            &p,
            "Normal",
            "Pulled",
            &format!("Container image \"{}\" already present on machine", plan.image),
            "kubelet",
        );
    }
    let id = match create_container(&inner, &pod, &plan, ip).await {
        Ok(id) => id,
        Err(e) => {
            made.container = e.1;
            let message = e.0;
            if let Some(p) = pod.update(&inner, |p| {
                terminated_status(
                    &inner,
                    p,
                    ip,
                    &started_at,
                    128,
                    "StartError",
                    Some(&message),
                    made.container.as_deref(),
                    None,
                );
            }) {
                record_event(&inner, &p, "Warning", "Failed", &format!("Error: {message}"), "kubelet");
            }
            wait_for_delete(&mut rx).await;
            return finish(&inner, &pod, made).await;
        }
    };
    made.container = Some(id.clone());
    let running_since = store::now();
    if let Some(p) = pod.update(&inner, |p| {
        running_status(&inner, p, ip, &started_at, &running_since, &id)
    }) {
        record_event(
            &inner,
            &p,
            "Normal",
            "Created",
            &format!("Created container: {}", plan.container),
            "kubelet",
        );
        record_event(
            &inner,
            &p,
            "Normal",
            "Started",
            &format!("Started container {}", plan.container),
            "kubelet",
        );
    }
    let wait = {
        let docker = inner.docker.clone();
        let id = id.clone();
        async move {
            let mut stream = docker.wait_container(&id, None::<bollard::query_parameters::WaitContainerOptions>);
            let _ = stream.next().await;
        }
    };
    tokio::pin!(wait);
    let mut deleting = false;
    let mut evicted = false;
    let mut stops = Vec::new();
    loop {
        tokio::select! {
            _ = &mut wait => break,
            cmd = rx.recv() => match cmd {
                Some(Cmd::Delete(grace)) if !deleting => {
                    deleting = true;
                    if let Some(p) = pod.get(&inner) {
                        record_event(&inner, &p, "Normal", "Killing", &format!("Stopping container {}", plan.container), "kubelet");
                    }
                    let (docker, id) = (inner.docker.clone(), id.clone());
                    stops.push(tokio::spawn(async move {
                        let t = i32::try_from(grace).unwrap_or(i32::MAX);
                        let options = StopContainerOptionsBuilder::new().t(t).build();
                        let _ = docker.stop_container(&id, Some(options)).await;
                    }));
                }
                Some(Cmd::Delete(_)) => {}
                Some(Cmd::Evict) => {
                    evicted = true;
                    let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
                    let _ = inner.docker.kill_container(&id, Some(options)).await;
                }
                None => {
                    deleting = true;
                    let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
                    let _ = inner.docker.kill_container(&id, Some(options)).await;
                }
            },
        }
    }
    for stop in stops {
        let _ = stop.await;
    }
    let state = inner
        .docker
        .inspect_container(&id, None::<bollard::query_parameters::InspectContainerOptions>)
        .await
        .ok()
        .and_then(|i| i.state);
    if evicted {
        evicted_status(&inner, &pod, Some((&id, &running_since)));
    } else {
        let state = state.unwrap_or_default();
        let code = state.exit_code.unwrap_or(137);
        let oom = state.oom_killed == Some(true);
        let reason = if oom {
            "OOMKilled"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let finished = state.finished_at.as_deref().map(docker_time);
        pod.update(&inner, |p| {
            terminated_status(
                &inner,
                p,
                ip,
                &started_at,
                code,
                reason,
                None,
                Some(&id),
                Some((&running_since, finished.as_deref().unwrap_or(&store::now()))),
            )
        });
    }
    if !deleting {
        wait_for_delete(&mut rx).await;
    }
    finish(&inner, &pod, made).await;
}

async fn wait_for_delete(rx: &mut mpsc::UnboundedReceiver<Cmd>) {
    while let Some(cmd) = rx.recv().await {
        if matches!(cmd, Cmd::Delete(_)) {
            return;
        }
    }
}

/// Removes what the kubelet made for `pod` and the pod itself.
async fn finish(inner: &Shared, pod: &PodRef, made: Made) {
    if let Some(id) = &made.container {
        remove_container(&inner.docker, id).await;
    }
    if let Some(ip) = made.ip {
        inner.net.lock().unwrap().free.push(ip);
    }
    if let Some(token) = &made.token {
        inner.tokens.lock().unwrap().remove(token);
    }
    if let Some(dir) = &made.dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    inner.kubelet.lock().unwrap().remove(&pod.uid);
    let removed = inner
        .store
        .lock()
        .unwrap()
        .remove(Res::Pods, &pod.ns, &pod.name, Some(&pod.uid));
    if let Some(removed) = removed {
        super::removed_object(inner, &removed, false);
    }
}

/// `2026-01-02T03:04:05.123456789Z` as Kubernetes writes it.
fn docker_time(t: &str) -> String {
    if t.len() >= 19 && !t.starts_with("0001") {
        format!("{}Z", &t[..19])
    } else {
        store::now()
    }
}

fn addresses(inner: &Inner, p: &mut Value, ip: Ipv4Addr, started_at: &str) {
    let host = inner.gateway.to_string();
    let status = &mut p["status"];
    status["hostIP"] = json!(host);
    status["hostIPs"] = json!([{"ip": host}]);
    status["podIP"] = json!(ip.to_string());
    status["podIPs"] = json!([{"ip": ip.to_string()}]);
    status["startTime"] = json!(started_at);
}

fn container_status(p: &Value, state: Value, ready: bool, id: Option<&str>) -> Value {
    let c = &p["spec"]["containers"][0];
    let mut status = json!({
        "name": c["name"],
        "image": c["image"],
        "imageID": "",
        "ready": ready,
        "started": ready,
        "restartCount": 0,
        "state": state,
    });
    if let Some(id) = id {
        status["containerID"] = json!(format!("docker://{id}"));
    }
    status
}

fn waiting_status(inner: &Inner, p: &mut Value, ip: Ipv4Addr, started_at: &str, reason: &str, message: &str) {
    addresses(inner, p, ip, started_at);
    let now = store::now();
    let state = json!({"waiting": {"reason": reason, "message": message}});
    let cs = container_status(p, state, false, None);
    let status = &mut p["status"];
    status["phase"] = json!("Pending");
    status["conditions"] = conditions(false, true, &now);
    status["containerStatuses"] = json!([cs]);
}

fn running_status(inner: &Inner, p: &mut Value, ip: Ipv4Addr, started_at: &str, since: &str, id: &str) {
    addresses(inner, p, ip, started_at);
    let state = json!({"running": {"startedAt": since}});
    let cs = container_status(p, state, true, Some(id));
    let status = &mut p["status"];
    status["phase"] = json!("Running");
    status["conditions"] = conditions(true, true, since);
    status["containerStatuses"] = json!([cs]);
}

#[allow(clippy::too_many_arguments)]
fn terminated_status(
    inner: &Inner,
    p: &mut Value,
    ip: Ipv4Addr,
    started_at: &str,
    code: i64,
    reason: &str,
    message: Option<&str>,
    id: Option<&str>,
    times: Option<(&str, &str)>,
) {
    addresses(inner, p, ip, started_at);
    let now = store::now();
    let (from, to) = times.unwrap_or((&now, &now));
    let mut terminated = json!({"exitCode": code, "reason": reason, "startedAt": from, "finishedAt": to});
    if let Some(id) = id {
        terminated["containerID"] = json!(format!("docker://{id}"));
    }
    if let Some(message) = message {
        terminated["message"] = json!(message);
    }
    let cs = container_status(p, json!({"terminated": terminated}), false, id);
    let status = &mut p["status"];
    status["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
    let mut conditions = conditions(false, true, to);
    if code == 0 {
        for i in [2, 3] {
            conditions[i]["reason"] = json!("PodCompleted");
            conditions[i].as_object_mut().unwrap().remove("message");
        }
    }
    conditions[0]["status"] = json!("False");
    status["conditions"] = conditions;
    status["containerStatuses"] = json!([cs]);
}

const EVICTION_MESSAGE: &str = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. ";

fn evicted_status(inner: &Shared, pod: &PodRef, container: Option<(&str, &str)>) {
    let now = store::now();
    let updated = pod.update(inner, |p| {
        let terminated = match container {
            Some((id, since)) => json!({"terminated": {
                "exitCode": 137, "reason": "Error", "startedAt": since, "finishedAt": now,
                "containerID": format!("docker://{id}"),
            }}),
            None => json!({"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                "message": "The container could not be located when the pod was terminated",
                "startedAt": null, "finishedAt": null}}),
        };
        let cs = container_status(p, terminated, false, container.map(|c| c.0));
        let status = &mut p["status"];
        status["phase"] = json!("Failed");
        status["reason"] = json!("Evicted");
        status["message"] = json!(EVICTION_MESSAGE);
        let mut conditions = conditions(false, true, &now);
        conditions.as_array_mut().unwrap().push(json!({
            "type": "DisruptionTarget", "status": "True", "lastProbeTime": null, "lastTransitionTime": now,
            "reason": "TerminationByKubelet", "message": EVICTION_MESSAGE,
        }));
        status["conditions"] = conditions;
        status["containerStatuses"] = json!([cs]);
    });
    if let Some(p) = updated {
        record_event(inner, &p, "Warning", "Evicted", EVICTION_MESSAGE, "kubelet");
    }
}

/// A field of the pod as the downward API gives it.
fn field(inner: &Inner, pod: &Value, ip: Ipv4Addr, path: &str) -> String {
    match path {
        "status.podIP" => return ip.to_string(),
        "status.podIPs" => return ip.to_string(),
        "status.hostIP" | "status.hostIPs" => return inner.gateway.to_string(),
        "spec.nodeName" => return NODE.to_owned(),
        _ => {}
    }
    for map in ["labels", "annotations"] {
        if let Some(key) = path
            .strip_prefix(&format!("metadata.{map}['"))
            .and_then(|k| k.strip_suffix("']"))
        {
            return pod["metadata"][map][key].as_str().unwrap_or("").to_owned();
        }
    }
    let mut v = pod;
    for part in path.split('.') {
        v = &v[part];
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

type Waiting = (&'static str, String);

fn secret_data(inner: &Inner, ns: &str, name: &str) -> Option<HashMap<String, String>> {
    let store = inner.store.lock().unwrap();
    let secret = store.get(Res::Secrets, ns, name)?;
    let mut data = HashMap::new();
    for (k, v) in secret["data"].as_object().into_iter().flatten() {
        let bytes = super::b64_decode(v.as_str().unwrap_or(""));
        data.insert(k.clone(), String::from_utf8_lossy(&bytes).into_owned());
    }
    Some(data)
}

/// The container to make for `pod`, or why it waits.
async fn prepare(inner: &Shared, pod: &Value, ip: Ipv4Addr, made: &mut Made) -> Result<Plan, Waiting> {
    let ns = store::namespace(pod);
    let c = &pod["spec"]["containers"][0];
    let image = c["image"].as_str().unwrap_or("").to_owned();
    if inner.docker.inspect_image(&image).await.is_err() {
        return Err(if c["imagePullPolicy"] == "Never" {
            (
                "ErrImageNeverPull",
                format!("Container image \"{image}\" is not present with pull policy of Never"),
            )
        } else {
            (
                "ImagePullBackOff",
                format!(
                    "Back-off pulling image \"{image}\": the stand-in pulls no images and the local engine has none of that name"
                ),
            )
        });
    }
    // The API server's service, then envFrom, then env (later wins).
    let mut env: Vec<(String, String)> = Vec::new();
    let put = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(key, _)| *key != k);
        env.push((k, v));
    };
    let (host, port) = (inner.gateway.to_string(), inner.in_cluster_port.to_string());
    for (k, v) in [
        ("KUBERNETES_SERVICE_HOST", host.clone()),
        ("KUBERNETES_SERVICE_PORT", port.clone()),
        ("KUBERNETES_SERVICE_PORT_HTTPS", port.clone()),
        ("KUBERNETES_PORT", format!("tcp://{host}:{port}")),
        ("KUBERNETES_PORT_443_TCP", format!("tcp://{host}:{port}")),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp".into()),
        ("KUBERNETES_PORT_443_TCP_PORT", port.clone()),
        ("KUBERNETES_PORT_443_TCP_ADDR", host.clone()),
    ] {
        put(&mut env, k.into(), v);
    }
    for from in c["envFrom"].as_array().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or("");
        if let Some(secret) = from["secretRef"].as_object() {
            let name = secret["name"].as_str().unwrap_or("");
            match secret_data(inner, &ns, name) {
                Some(data) => {
                    let mut keys: Vec<_> = data.into_iter().collect();
                    keys.sort();
                    for (k, v) in keys {
                        put(&mut env, format!("{prefix}{k}"), v);
                    }
                }
                None if secret.get("optional") == Some(&json!(true)) => {}
                None => return Err(("CreateContainerConfigError", format!("secret \"{name}\" not found"))),
            }
        }
        if let Some(map) = from["configMapRef"].as_object()
            && map.get("optional") != Some(&json!(true))
        {
            let name = map["name"].as_str().unwrap_or("");
            return Err(("CreateContainerConfigError", format!("configmap \"{name}\" not found")));
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or("").to_owned();
        let from = &e["valueFrom"];
        let value = if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
            field(inner, pod, ip, path)
        } else if let Some(key_ref) = from["secretKeyRef"].as_object() {
            let secret = key_ref["name"].as_str().unwrap_or("");
            let key = key_ref["key"].as_str().unwrap_or("");
            let optional = key_ref.get("optional") == Some(&json!(true));
            match secret_data(inner, &ns, secret).map(|d| d.get(key).cloned()) {
                Some(Some(v)) => v,
                _ if optional => continue,
                None => return Err(("CreateContainerConfigError", format!("secret \"{secret}\" not found"))),
                Some(None) => {
                    return Err((
                        "CreateContainerConfigError",
                        format!("couldn't find key {key} in Secret {ns}/{secret}"),
                    ));
                }
            }
        } else if let Some(r) = from["resourceFieldRef"]["resource"].as_str() {
            let limit = c["resources"]["limits"][r.trim_start_matches("limits.").trim_start_matches("requests.")]
                .as_str()
                .and_then(store::quantity);
            match (r, limit) {
                (r, Some(v)) if r.ends_with("cpu") => (v.ceil() as i64).to_string(),
                (_, Some(v)) => (v as i64).to_string(),
                (r, None) if r.ends_with("cpu") => "2".into(),
                _ => (8u64 << 30).to_string(),
            }
        } else if let Some(map) = from["configMapKeyRef"].as_object() {
            if map.get("optional") == Some(&json!(true)) {
                continue;
            }
            let name = map["name"].as_str().unwrap_or("");
            return Err(("CreateContainerConfigError", format!("configmap \"{name}\" not found")));
        } else {
            e["value"].as_str().unwrap_or("").to_owned()
        };
        put(&mut env, name, value);
    }
    // The service account's token, CA and namespace.
    let mut binds = Vec::new();
    if pod["spec"]["automountServiceAccountToken"] != json!(false) {
        if made.token.is_none() {
            let account = pod["spec"]["serviceAccountName"].as_str().unwrap_or("default");
            let rules = ["get", "list", "watch", "delete"]
                .iter()
                .map(|v| (v.to_string(), "pods".to_string()))
                .collect();
            let token = super::mint(inner, account, &ns, rules);
            let dir = inner.dir.join(format!("pod-{}", store::uid(pod)));
            std::fs::create_dir_all(&dir).expect("service account dir");
            std::fs::write(dir.join("token"), &token).expect("token");
            std::fs::write(dir.join("ca.crt"), &inner.ca_pem).expect("ca.crt");
            std::fs::write(dir.join("namespace"), &ns).expect("namespace");
            made.token = Some(token);
            made.dir = Some(dir);
        }
        let dir = made.dir.as_ref().expect("dir");
        binds.push(format!("{}:{SA_PATH}:ro", dir.display()));
    }
    let limits = &c["resources"]["limits"];
    let memory = limits["memory"].as_str().and_then(store::quantity).map(|m| m as i64);
    let nano_cpus = limits["cpu"]
        .as_str()
        .and_then(store::quantity)
        .map(|c| (c * 1e9) as i64);
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap_or("").to_owned()).collect())
    };
    Ok(Plan {
        image,
        container: c["name"].as_str().unwrap_or("").to_owned(),
        entrypoint: strings(&c["command"]),
        cmd: strings(&c["args"]),
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        memory,
        nano_cpus,
        binds,
    })
}

/// Creates and starts the container; on failure the message and the
/// container made, if any.
async fn create_container(
    inner: &Shared,
    pod: &PodRef,
    plan: &Plan,
    ip: Ipv4Addr,
) -> Result<String, (String, Option<String>)> {
    let network = inner.net.lock().unwrap().name.clone();
    let labels = HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_STANDIN.to_owned(), inner.id.clone()),
        (LABEL_POD.to_owned(), format!("{}/{}", pod.ns, pod.name)),
    ]);
    let name = format!("k8s_{}_{}_{}_{}_0", plan.container, pod.name, pod.ns, &pod.uid[..8]);
    let hostname: String = pod.name.chars().take(63).collect();
    let body = ContainerCreateBody {
        image: Some(plan.image.clone()),
        entrypoint: plan.entrypoint.clone(),
        cmd: plan.cmd.clone(),
        env: Some(plan.env.clone()),
        hostname: Some(hostname.trim_end_matches(['-', '.']).to_owned()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            memory: plan.memory,
            memory_swap: plan.memory,
            nano_cpus: plan.nano_cpus,
            binds: Some(plan.binds.clone()),
            network_mode: Some(network.clone()),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network,
                EndpointSettings {
                    ipam_config: Some(EndpointIpamConfig {
                        ipv4_address: Some(ip.to_string()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    let created = inner
        .docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| (e.to_string(), None))?;
    inner
        .docker
        .start_container(&created.id, None::<bollard::query_parameters::StartContainerOptions>)
        .await
        .map_err(|e| (e.to_string(), Some(created.id.clone())))?;
    Ok(created.id)
}

/// The output (stdout and stderr) of container `id`.
pub async fn logs(inner: &Inner, id: &str) -> String {
    let options = bollard::query_parameters::LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .build();
    let mut stream = inner.docker.logs(id, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    text
}
