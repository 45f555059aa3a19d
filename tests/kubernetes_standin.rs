//! The Kubernetes stand-in (`support/kube_standin.rs`) checked on its own:
//! real HTTPS, real Docker containers, and the real kubectl reading and
//! deleting what kube's client made. Skipped (with the reason printed)
//! where no Docker engine answers, unless `FLAME_REQUIRE_DOCKER` is set.

#![allow(missing_docs)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, Error};
use serde_json::{Value, json};
use support::eventually;
use support::kube_standin::{Options, StandIn};

const WAIT: Duration = Duration::from_secs(20);

/// The stand-in and the runner image's tag, or `None` (reason printed)
/// without a Docker engine.
async fn standin(test: &str) -> Option<(StandIn, String)> {
    support::docker::engine(test).await?;
    let image = support::docker::backend().prepare_image().await.expect("runner image");
    Some((StandIn::start(Options::default()).await, image))
}

fn pod(value: Value) -> Pod {
    serde_json::from_value(value).expect("a pod")
}

/// A pod of the runner image running `args`, with a 1 s grace period.
fn runner_pod(name: &str, image: &str, args: &[&str]) -> Pod {
    pod(json!({
        "metadata": {"name": name, "labels": {"app": "flame-runner"}},
        "spec": {
            "containers": [{"name": "runner", "image": image, "args": args}],
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
        },
    }))
}

fn pods(standin: &StandIn) -> Api<Pod> {
    Api::namespaced(standin.client(&standin.admin_token()), "default")
}

/// The stand-in's copy of pod `name`, as JSON.
fn pod_json(standin: &StandIn, name: &str) -> Option<Value> {
    standin
        .pods()
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .map(|p| serde_json::to_value(p).unwrap())
}

async fn phase_is(standin: &StandIn, name: &str, phase: &str) {
    eventually(&format!("pod {name} {phase}"), WAIT, || async {
        pod_json(standin, name).is_some_and(|p| p["status"]["phase"] == phase)
    })
    .await;
}

fn api_error(e: Error) -> kube::core::Status {
    match e {
        Error::Api(status) => *status,
        other => panic!("not an API error: {other}"),
    }
}

async fn kubectl(standin: &StandIn, args: &[&str]) -> (bool, String, String) {
    let config = standin.kubeconfig(&standin.admin_token());
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&config)
        .args(args)
        .output()
        .await
        .expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn kubectl_lists_and_deletes_a_pod_kube_created() {
    let Some((standin, image)) = standin("kubectl_lists_and_deletes_a_pod_kube_created").await else {
        return;
    };
    if std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("skipping: no kubectl");
        return;
    }
    let api = pods(&standin);
    // A watch sees the pod through to Running.
    let mut watch = api
        .watch(&WatchParams::default().fields("metadata.name=web-1"), "0")
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &runner_pod("web-1", &image, &["wait"]))
        .await
        .unwrap();
    let running = tokio::time::timeout(WAIT, async {
        while let Some(event) = watch.try_next().await.unwrap() {
            if let WatchEvent::Modified(p) = event
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            {
                return p;
            }
        }
        panic!("the watch ended")
    })
    .await
    .expect("Running within the deadline");
    let ip = running.status.unwrap().pod_ip.expect("a pod IP");

    let (ok, out, err) = kubectl(&standin, &["get", "pods", "-o", "json"]).await;
    assert!(ok, "kubectl get: {err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{out}");
    assert_eq!(items[0]["metadata"]["name"], "web-1");
    assert_eq!(items[0]["status"]["phase"], "Running");
    assert_eq!(items[0]["status"]["podIP"], ip.as_str());
    assert_eq!(items[0]["status"]["containerStatuses"][0]["ready"], true);
    let (ok, out, err) = kubectl(&standin, &["get", "po", "-l", "app=flame-runner,!other"]).await;
    assert!(ok && out.contains("web-1") && out.contains("Running"), "{out} {err}");
    assert!(out.contains("1/1"), "{out}");
    let (ok, out, err) = kubectl(&standin, &["get", "po", "-l", "app notin (flame-runner)"]).await;
    assert!(ok && !out.contains("web-1"), "{out} {err}");
    let (ok, out, err) = kubectl(&standin, &["get", "po", "web-1", "-o", "wide"]).await;
    assert!(ok && out.contains(&ip) && out.contains("standin-node"), "{out} {err}");
    let (ok, out, err) = kubectl(
        &standin,
        &["get", "events", "--field-selector", "involvedObject.name=web-1"],
    )
    .await;
    assert!(
        ok && out.contains("Started") && out.contains("pod/web-1"),
        "{out} {err}"
    );
    // (`kubectl auth can-i` posts protobuf, which the stand-in refuses with
    // 415: access reviews are checked through kube's client instead.)
    assert_eq!(standin.containers_of("default", "web-1").await.len(), 1);

    let (ok, out, err) = kubectl(&standin, &["delete", "pod", "web-1", "--timeout=20s"]).await;
    assert!(ok, "kubectl delete: {out} {err}");
    assert!(out.contains("pod \"web-1\" deleted"), "{out}");
    assert!(pod_json(&standin, "web-1").is_none());
    assert!(standin.containers_of("default", "web-1").await.is_empty());
    let (ok, out, _) = kubectl(&standin, &["get", "pod", "web-1"]).await;
    assert!(!ok, "{out}");
    assert!(standin.rejected().is_empty(), "{:?}", standin.rejected());
    standin.shutdown().await;
}

#[tokio::test]
async fn errors_have_the_apiserver_shapes() {
    let Some((standin, _)) = standin("errors_have_the_apiserver_shapes").await else {
        return;
    };
    let api = pods(&standin);
    let parked = || runner_pod("parked", "absent-image:1", &["wait"]);

    // 401: an unknown token.
    let stranger: Api<Pod> = Api::namespaced(standin.client("not-a-token"), "default");
    let e = api_error(stranger.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (401, "Unauthorized"));

    // 403: a token that may only get pods.
    let reader: Api<Pod> = Api::namespaced(standin.client(&standin.token_with(&[("get", "pods")])), "default");
    let e = api_error(reader.create(&PostParams::default(), &parked()).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert!(
        e.message
            .starts_with("pods is forbidden: User \"system:serviceaccount:default:restricted-")
            && e.message
                .ends_with("\" cannot create resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{}",
        e.message
    );

    // 404, 409, 422.
    let e = api_error(api.get("missing").await.unwrap_err());
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (404, "NotFound", "pods \"missing\" not found")
    );
    api.create(&PostParams::default(), &parked()).await.unwrap();
    assert_eq!(
        reader.get("parked").await.unwrap().metadata.name.as_deref(),
        Some("parked")
    );
    let e = api_error(api.create(&PostParams::default(), &parked()).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    for bad in ["Bad_Name", &"a".repeat(64)] {
        let e = api_error(
            api.create(&PostParams::default(), &runner_pod(bad, "x:1", &[]))
                .await
                .unwrap_err(),
        );
        assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"), "{bad}");
        assert!(e.message.contains("metadata.name: Invalid value"), "{}", e.message);
    }
    let no_image = pod(json!({"metadata": {"name": "no-image"}, "spec": {"containers": [{"name": "c"}]}}));
    let e = api_error(api.create(&PostParams::default(), &no_image).await.unwrap_err());
    assert_eq!(
        e.message,
        "Pod \"no-image\" is invalid: spec.containers[0].image: Required value"
    );
    assert!(standin.rejected().is_empty(), "{:?}", standin.rejected());

    // 400: a field the Pod type does not have.
    let body = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "odd"},
        "spec": {"containers": [{"name": "c", "image": "x:1"}], "foo": 1},
    });
    let request = axum::http::Request::post("/api/v1/namespaces/default/pods")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    let e = api_error(
        standin
            .client(&standin.admin_token())
            .request::<Pod>(request)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
    assert_eq!(e.message, "strict decoding error: unknown field \"spec.foo\"");
    let rejected = standin.rejected();
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0].why.contains("spec.foo"));

    // 429 with Retry-After: kube's client waits it out by default...
    standin.throttle_next(1, 1);
    let started = std::time::Instant::now();
    api.get("parked").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let statuses: Vec<u16> = standin.requests().iter().rev().take(2).map(|r| r.status).collect();
    assert_eq!(statuses, [200, 429]);
    // ...and one without retries sees it.
    let mut config = standin.config(&standin.admin_token());
    config.default_retry = false;
    let impatient: Api<Pod> = Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    standin.throttle_next(1, 7);
    let e = api_error(impatient.get("parked").await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (429, "TooManyRequests"));

    // Access reviews answer from the token's rules.
    let review = |verb: &str| -> SelfSubjectAccessReview {
        serde_json::from_value(json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": "default", "verb": verb, "resource": "pods"}},
        }))
        .unwrap()
    };
    let reviews: Api<SelfSubjectAccessReview> = Api::all(standin.client(&standin.token_with(&[("get", "pods")])));
    let allowed = |r: SelfSubjectAccessReview| r.status.unwrap().allowed;
    assert!(allowed(
        reviews.create(&PostParams::default(), &review("get")).await.unwrap()
    ));
    assert!(!allowed(
        reviews.create(&PostParams::default(), &review("create")).await.unwrap()
    ));
    assert_eq!(standin.rejected().len(), 1);
    standin.shutdown().await;
}

#[tokio::test]
async fn a_stale_watch_gets_410_and_a_relist_resumes() {
    let Some((standin, _)) = standin("a_stale_watch_gets_410_and_a_relist_resumes").await else {
        return;
    };
    let api = pods(&standin);
    api.create(&PostParams::default(), &runner_pod("a", "absent:1", &[]))
        .await
        .unwrap();
    let old = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&PostParams::default(), &runner_pod("b", "absent:1", &[]))
        .await
        .unwrap();
    // Before compaction the history replays from `old` (pod a's status
    // changes may come first).
    let mut watch = api.watch(&WatchParams::default(), &old).await.unwrap().boxed();
    loop {
        match watch.try_next().await.unwrap() {
            Some(WatchEvent::Added(p)) => break assert_eq!(p.metadata.name.as_deref(), Some("b")),
            Some(WatchEvent::Modified(p)) => assert_eq!(p.metadata.name.as_deref(), Some("a")),
            other => panic!("{other:?}"),
        }
    }
    standin.compact();
    let mut watch = api.watch(&WatchParams::default(), &old).await.unwrap().boxed();
    match watch.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!(status.code, 410);
            assert!(
                status
                    .message
                    .starts_with(&format!("too old resource version: {old} (")),
                "{}",
                status.message
            );
        }
        other => panic!("{other:?}"),
    }
    let list = api
        .list(&ListParams::default().labels("app=flame-runner"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 2);
    let rv = list.metadata.resource_version.unwrap();
    let mut watch = api
        .watch(&WatchParams::default().labels("app in (flame-runner)").timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &runner_pod("c", "absent:1", &[]))
        .await
        .unwrap();
    let added = tokio::time::timeout(WAIT, async {
        while let Some(event) = watch.try_next().await.unwrap() {
            if let WatchEvent::Added(p) = event {
                return p;
            }
        }
        panic!("the watch ended")
    })
    .await
    .unwrap();
    assert_eq!(added.metadata.name.as_deref(), Some("c"));
    assert!(standin.requests().iter().any(|r| r.path.contains("watch=true")));
    assert!(standin.rejected().is_empty(), "{:?}", standin.rejected());
    standin.shutdown().await;
}

#[tokio::test]
async fn env_comes_from_values_fields_and_secrets() {
    let Some((standin, image)) = standin("env_comes_from_values_fields_and_secrets").await else {
        return;
    };
    let client = standin.client(&standin.admin_token());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let secret = |name: &str, data: Value| -> Secret {
        serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data})).unwrap()
    };
    secrets
        .create(
            &PostParams::default(),
            &secret("bulk", json!({"FROM_BULK": "bulk", "SHARED": "from-envFrom"})),
        )
        .await
        .unwrap();
    let stored = secrets.get("bulk").await.unwrap();
    assert_eq!(stored.data.unwrap()["SHARED"].0, b"from-envFrom");
    assert!(stored.string_data.is_none());
    let api = pods(&standin);
    let envpod = pod(json!({
        "metadata": {"name": "envpod"},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": "runner-sa",
            "containers": [{
                "name": "runner", "image": image, "args": ["env"],
                "envFrom": [{"secretRef": {"name": "bulk"}}],
                "env": [
                    {"name": "PLAIN", "value": "plain"},
                    {"name": "SHARED", "value": "from-env"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                    {"name": "KEYED", "valueFrom": {"secretKeyRef": {"name": "late", "key": "k"}}},
                ],
            }],
        },
    }));
    let created = api.create(&PostParams::default(), &envpod).await.unwrap();
    // The secret it names does not exist yet: it waits.
    eventually("CreateContainerConfigError", WAIT, || async {
        pod_json(&standin, "envpod").is_some_and(|p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerConfigError"
        })
    })
    .await;
    let p = pod_json(&standin, "envpod").unwrap();
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
        "secret \"late\" not found"
    );
    secrets
        .create(&PostParams::default(), &secret("late", json!({"k": "keyed"})))
        .await
        .unwrap();
    phase_is(&standin, "envpod", "Succeeded").await;
    let log = api.logs("envpod", &LogParams::default()).await.unwrap();
    let env: BTreeMap<&str, &str> = log.lines().filter_map(|l| l.split_once('=')).collect();
    let p = pod_json(&standin, "envpod").unwrap();
    let (host, port) = standin.in_cluster_host();
    assert_eq!(env["PLAIN"], "plain");
    assert_eq!(env["SHARED"], "from-env");
    assert_eq!(env["FROM_BULK"], "bulk");
    assert_eq!(env["POD_NAME"], "envpod");
    assert_eq!(env["POD_NAMESPACE"], "default");
    assert_eq!(env["POD_UID"], created.metadata.uid.unwrap());
    assert_eq!(env["POD_IP"], p["status"]["podIP"].as_str().unwrap());
    assert_eq!(env["NODE"], "standin-node");
    assert_eq!(env["SA"], "runner-sa");
    assert_eq!(env["KEYED"], "keyed");
    assert_eq!(env["KUBERNETES_SERVICE_HOST"], host.to_string());
    assert_eq!(env["KUBERNETES_SERVICE_PORT"], port.to_string());
    assert_eq!(env["HOSTNAME"], "envpod");
    let terminated = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(
        (terminated["exitCode"].as_i64(), terminated["reason"].as_str()),
        (Some(0), Some("Completed"))
    );
    assert!(standin.rejected().is_empty(), "{:?}", standin.rejected());
    standin.shutdown().await;
}

#[tokio::test]
async fn a_memory_hog_is_oom_killed() {
    let Some((standin, image)) = standin("a_memory_hog_is_oom_killed").await else {
        return;
    };
    let hog = pod(json!({
        "metadata": {"name": "hog"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "runner", "image": image, "args": ["alloc"],
                "resources": {"limits": {"memory": "16Mi", "cpu": "500m"}},
            }],
        },
    }));
    let created = pods(&standin).create(&PostParams::default(), &hog).await.unwrap();
    // Limits without requests: the requests default to them.
    assert_eq!(created.status.unwrap().qos_class.as_deref(), Some("Guaranteed"));
    phase_is(&standin, "hog", "Failed").await;
    let p = pod_json(&standin, "hog").unwrap();
    let terminated = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["reason"], "OOMKilled", "{p:#}");
    assert_eq!(terminated["exitCode"], 137);
    standin.shutdown().await;
}

#[tokio::test]
async fn deleting_an_owner_collects_its_pods_and_secrets() {
    let Some((standin, image)) = standin("deleting_an_owner_collects_its_pods_and_secrets").await else {
        return;
    };
    let parent = standin.add_parent_pod("default", "parent", "app:1");
    assert_eq!(
        parent.status.as_ref().unwrap().pod_ip.as_deref(),
        Some(standin.gateway().to_string().as_str())
    );
    let owner = json!([{
        "apiVersion": "v1", "kind": "Pod", "name": "parent",
        "uid": parent.metadata.uid.clone().unwrap(), "controller": true,
    }]);
    let api = pods(&standin);
    let mut child = serde_json::to_value(runner_pod("child", &image, &["wait"])).unwrap();
    child["metadata"]["ownerReferences"] = owner.clone();
    api.create(&PostParams::default(), &pod(child)).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(standin.client(&standin.admin_token()), "default");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "child-env", "ownerReferences": owner},
        "data": {"K": "dg=="},
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    phase_is(&standin, "child", "Running").await;
    assert!(standin.containers_of("default", "parent").await.is_empty());

    api.delete("parent", &DeleteParams::default()).await.unwrap();
    eventually("the owned pod and secret collected", WAIT, || async {
        standin.pods().is_empty() && standin.secrets().is_empty()
    })
    .await;
    assert!(standin.containers().await.is_empty());
    let reasons: Vec<String> = standin.events().into_iter().filter_map(|e| e.reason).collect();
    for reason in ["Scheduled", "Pulled", "Created", "Started", "Killing"] {
        assert!(reasons.iter().any(|r| r == reason), "{reason} in {reasons:?}");
    }
    assert!(standin.rejected().is_empty(), "{:?}", standin.rejected());
    standin.shutdown().await;
}

#[tokio::test]
async fn a_pod_deletes_itself_with_its_in_cluster_config() {
    let Some((standin, image)) = standin("a_pod_deletes_itself_with_its_in_cluster_config").await else {
        return;
    };
    let mut value = serde_json::to_value(runner_pod("self", &image, &["kube-self-delete"])).unwrap();
    value["spec"]["containers"][0]["env"] =
        json!([{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]);
    pods(&standin)
        .create(&PostParams::default(), &pod(value))
        .await
        .unwrap();
    eventually("the pod deleted itself", WAIT, || async { standin.pods().is_empty() }).await;
    let requests = standin.requests();
    let own = |method: &str| {
        requests.iter().any(|r| {
            r.method == method && r.path.starts_with("/api/v1/namespaces/default/pods/self") && r.status == 200
        })
    };
    assert!(own("GET") && own("DELETE"), "{requests:?}");
    assert!(standin.containers().await.is_empty());
    standin.shutdown().await;
}

#[tokio::test]
async fn unschedulable_pods_wait_and_evicted_pods_fail() {
    let Some((standin, image)) = standin("unschedulable_pods_wait_and_evicted_pods_fail").await else {
        return;
    };
    let message = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.";
    standin.set_unschedulable(Some(message));
    let api = pods(&standin);
    api.create(&PostParams::default(), &runner_pod("gpu", &image, &["wait"]))
        .await
        .unwrap();
    let p = pod_json(&standin, "gpu").unwrap();
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(p["status"]["conditions"][0]["reason"], "Unschedulable");
    assert_eq!(p["status"]["conditions"][0]["message"], message);
    standin.set_unschedulable(None);
    phase_is(&standin, "gpu", "Running").await;
    standin.evict("default", "gpu");
    phase_is(&standin, "gpu", "Failed").await;
    let p = pod_json(&standin, "gpu").unwrap();
    assert_eq!(p["status"]["reason"], "Evicted");
    assert!(
        p["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("The node was low on resource: memory.")
    );
    api.delete("gpu", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    eventually("the evicted pod's container removed", WAIT, || async {
        standin.containers().await.is_empty()
    })
    .await;
    standin.shutdown().await;
}

#[tokio::test]
async fn dropping_the_standin_leaves_nothing_behind() {
    let Some((standin, image)) = standin("dropping_the_standin_leaves_nothing_behind").await else {
        return;
    };
    let docker = support::docker::engine("dropping_the_standin_leaves_nothing_behind")
        .await
        .unwrap();
    pods(&standin)
        .create(&PostParams::default(), &runner_pod("left", &image, &["wait"]))
        .await
        .unwrap();
    phase_is(&standin, "left", "Running").await;
    let containers = standin.containers().await;
    assert_eq!(containers.len(), 1);
    let network = standin.network();
    let kubeconfig = standin.kubeconfig(&standin.admin_token());
    // What a failing test does: no shutdown, just drop.
    drop(standin);
    assert!(docker.inspect_container(&containers[0], None).await.is_err());
    assert!(docker.inspect_network(&network, None).await.is_err());
    assert!(!kubeconfig.exists());
}
