//! The Kubernetes backend end to end against the in-repo stand-in of the
//! API (`support/kube_standin*`): real HTTPS, real watches, and each runner
//! pod a real Docker container of the test runner binary that connects back
//! over the TLS link. The behaviour suite runs on this backend too (in
//! `pool_conformance.rs`, module `kubernetes`); these are what only pods
//! have. The last test runs against a real cluster when one is configured.

#![allow(missing_docs)]

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::DeleteParams;
use ractor_flame::actors::FLAME_PARENT;
use ractor_flame::kubernetes::{KubernetesBackend, KubernetesError, LABEL_PARENT, LABEL_POOL, LABEL_RUNNER};
use ractor_flame::{CallOptions, DownReason, Error, Pool, PoolConfig};
use support::functions::{Alloc, Env, Sleep};
use support::kube::{Cluster, NAMESPACE, cluster};
use support::{config, eventually, key};

const WAIT: Duration = Duration::from_secs(15);

async fn start(config: PoolConfig, backend: KubernetesBackend) -> Pool {
    Pool::start(config, backend, &support::functions::registry())
        .await
        .expect("pool starts")
}

async fn env(pool: &Pool, name: &str) -> Option<String> {
    pool.call::<Env>(name.to_owned()).await.expect("env call")
}

/// Waits until the cluster holds no runner pod, secret or container.
async fn all_gone(cluster: &Cluster) {
    eventually("no runner pod, secret or container is left", WAIT, || async {
        cluster.runner_pods().is_empty()
            && cluster.standin.secrets().is_empty()
            && cluster.standin.containers().await.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b56_a_runner_is_a_pod_of_the_parents_image_owned_by_the_parent_pod() {
    let Some(cluster) = cluster("b56_a_runner_is_a_pod_of_the_parents_image_owned_by_the_parent_pod").await else {
        return;
    };
    let cfg = config(1);
    let pool_name = cfg.get_name().to_owned();
    let pool = start(cfg, cluster.backend().label("team", "media")).await;
    let pod_name = env(&pool, "POD_NAME").await.expect("the runner knows its pod");
    let pods = cluster.runner_pods();
    assert_eq!(pods.len(), 1);
    let pod = &pods[0];
    assert_eq!(pod.metadata.name.as_deref(), Some(pod_name.as_str()));
    assert!(
        pod_name.starts_with(&format!("{}-flame-", cluster.parent)),
        "{pod_name}"
    );
    assert_eq!(env(&pool, "POD_NAMESPACE").await.as_deref(), Some(NAMESPACE));
    let ip = env(&pool, "POD_IP").await.expect("the runner knows its address");
    assert_eq!(pod.status.as_ref().unwrap().pod_ip.as_deref(), Some(ip.as_str()));

    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some(cluster.image.as_str()),
        "the parent's image"
    );
    let labels = pod.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[LABEL_POOL], pool_name);
    assert_eq!(labels[LABEL_PARENT], cluster.parent);
    assert_eq!(labels[LABEL_RUNNER].len(), 32);
    assert_eq!(labels["team"], "media");
    let parent_uid = cluster
        .standin
        .pods()
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(cluster.parent.as_str()))
        .and_then(|p| p.metadata.uid)
        .unwrap();
    let owners = pod.metadata.owner_references.as_ref().expect("owned");
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].uid.as_str()),
        ("Pod", parent_uid.as_str())
    );
    assert!(
        cluster.standin.rejected().is_empty(),
        "{:?}",
        cluster.standin.rejected()
    );

    pool.stop().await;
    all_gone(&cluster).await;
    cluster.standin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b56_env_is_template_then_user_then_secret_then_fixed_and_the_token_stays_in_the_secret() {
    let Some(cluster) =
        cluster("b56_env_is_template_then_user_then_secret_then_fixed_and_the_token_stays_in_the_secret").await
    else {
        return;
    };
    let manifest: Pod = serde_json::from_value(serde_json::json!({
        "spec": {"containers": [{"name": "runner", "env": [
            {"name": "MODE", "value": "template"},
            {"name": "KEEP", "value": "template"},
            {"name": "SHADOW", "value": "template"},
            {"name": "POD_NAME", "value": "not-the-pod"}
        ]}]}
    }))
    .unwrap();
    let backend = cluster
        .backend()
        .pod_template(manifest)
        .env("MODE", "user")
        .env("SHADOW", "user")
        .secret_env("SHADOW", "secret-value")
        .secret_env("API_KEY", "k8s-s3cret");
    let printed = format!("{backend:?}");
    let pool = start(config(1), backend).await;
    assert_eq!(env(&pool, "KEEP").await.as_deref(), Some("template"));
    assert_eq!(env(&pool, "MODE").await.as_deref(), Some("user"));
    assert_eq!(env(&pool, "SHADOW").await.as_deref(), Some("secret-value"));
    assert_eq!(env(&pool, "API_KEY").await.as_deref(), Some("k8s-s3cret"));
    let pod_name = env(&pool, "POD_NAME").await.unwrap();
    assert!(pod_name.contains("-flame-"), "fixed over the template: {pod_name}");

    // FLAME_PARENT (the token inside) is in the runner's secret only.
    let secrets = cluster.standin.secrets();
    assert_eq!(secrets.len(), 1);
    let secret = &secrets[0];
    assert_eq!(secret.metadata.name.as_deref(), Some(pod_name.as_str()));
    let flame_parent = String::from_utf8(secret.data.as_ref().unwrap()[FLAME_PARENT].0.clone()).unwrap();
    assert!(ractor_flame::Parent::decode(&flame_parent).is_ok());
    assert!(secret.metadata.owner_references.is_some(), "owned by the parent pod");
    let pods = serde_json::to_string(&cluster.standin.pods()).unwrap();
    let events = serde_json::to_string(&cluster.standin.events()).unwrap();
    for (what, text) in [
        ("pod specs", &pods),
        ("events", &events),
        ("the backend's Debug", &printed),
    ] {
        assert!(!text.contains(&flame_parent), "FLAME_PARENT in {what}");
        assert!(
            !text.contains("k8s-s3cret") && !text.contains("secret-value"),
            "a secret value in {what}"
        );
    }
    pool.stop().await;
    all_gone(&cluster).await;
    cluster.standin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b56_deleting_the_parent_pod_removes_its_runners() {
    let Some(cluster) = cluster("b56_deleting_the_parent_pod_removes_its_runners").await else {
        return;
    };
    let pool = start(config(2).min(2), cluster.backend()).await;
    eventually("two runner pods run", WAIT, || async {
        cluster.standin.containers().await.len() == 2
    })
    .await;
    let runners: Vec<String> = cluster
        .runner_pods()
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(runners.len(), 2);
    assert_eq!(cluster.standin.secrets().len(), 2);
    let pods: Api<Pod> = Api::namespaced(cluster.standin.client(&cluster.standin.admin_token()), NAMESPACE);
    pods.delete(&cluster.parent, &DeleteParams::default())
        .await
        .expect("delete the parent pod");
    // The cluster's garbage collector, not the parent process (which lives
    // on here), removes them: pods, their secrets, their containers.
    eventually("the parent's runner pods are gone", WAIT, || async {
        let left: Vec<String> = cluster
            .standin
            .pods()
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        let secrets: Vec<String> = cluster
            .standin
            .secrets()
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        let mut containers = Vec::new();
        for runner in &runners {
            containers.extend(cluster.standin.containers_of(NAMESPACE, runner).await);
        }
        runners.iter().all(|r| !left.contains(r) && !secrets.contains(r)) && containers.is_empty()
    })
    .await;
    pool.stop().await;
    cluster.standin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b56_an_oom_killed_runner_is_reported_as_such() {
    let Some(cluster) = cluster("b56_an_oom_killed_runner_is_reported_as_such").await else {
        return;
    };
    let pool = start(config(1), cluster.backend().memory("32Mi")).await;
    let err = pool.call::<Alloc>(512).await.unwrap_err();
    assert_eq!(
        err,
        Error::RunnerDown {
            reason: DownReason::OutOfMemory
        }
    );
    pool.stop().await;
    all_gone(&cluster).await;
    cluster.standin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b56_an_evicted_runner_is_reported_with_the_pods_message() {
    let Some(cluster) = cluster("b56_an_evicted_runner_is_reported_with_the_pods_message").await else {
        return;
    };
    let pool = start(config(1), cluster.backend()).await;
    let pod_name = env(&pool, "POD_NAME").await.unwrap();
    let call = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.call::<Sleep>(support::sleep(&key(), 30_000)).await })
    };
    support::busy(&pool, 1).await;
    cluster.standin.evict(NAMESPACE, &pod_name);
    let err = tokio::time::timeout(WAIT, call)
        .await
        .expect("the call ends")
        .unwrap()
        .unwrap_err();
    match err {
        Error::RunnerDown {
            reason: DownReason::Backend(message),
        } => assert!(
            message.contains("evicted") && message.contains("low on resource"),
            "{message}"
        ),
        other => panic!("expected the eviction, got {other:?}"),
    }
    pool.stop().await;
    all_gone(&cluster).await;
    cluster.standin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b56_an_unschedulable_pod_fails_its_boot_with_the_schedulers_message() {
    let Some(cluster) = cluster("b56_an_unschedulable_pod_fails_its_boot_with_the_schedulers_message").await else {
        return;
    };
    let message = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.";
    cluster.standin.set_unschedulable(Some(message));
    let cfg = config(1)
        .boot_timeout(Duration::from_millis(1500))
        .boot_retry(ractor_flame::BootRetry {
            max_attempts: 1,
            ..Default::default()
        });
    let pool = start(cfg, cluster.backend().gpus(1)).await;
    let err = pool
        .call_with::<Env>("HOME".to_owned(), CallOptions::new().timeout(Duration::from_secs(15)))
        .await
        .unwrap_err();
    match &err {
        Error::BootFailed { reason } => {
            assert!(
                reason.contains("could not be scheduled") && reason.contains(message),
                "{reason}"
            )
        }
        other => panic!("expected a boot failure, got {other:?}"),
    }
    // The boot followed a watch, never a poll of the pod.
    let gets = cluster
        .standin
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains("/pods/") && r.path.contains("-flame-"))
        .count();
    assert_eq!(gets, 0, "no polling of the runner pod");
    assert!(
        cluster
            .standin
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path.contains("watch")),
        "a watch"
    );
    all_gone(&cluster).await;
    pool.stop().await;
    cluster.standin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b56_a_boot_whose_watch_goes_stale_resumes_from_a_fresh_read() {
    let Some(cluster) = cluster("b56_a_boot_whose_watch_goes_stale_resumes_from_a_fresh_read").await else {
        return;
    };
    cluster
        .standin
        .set_unschedulable(Some("0/1 nodes are available: 1 Insufficient cpu."));
    let pool = start(config(1), cluster.backend()).await;
    let call = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.call::<Env>("POD_NAME".to_owned()).await })
    };
    let watching = || {
        cluster
            .standin
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("watch") && r.path.contains("-flame-"))
            .count()
    };
    eventually("the boot watches its pod", WAIT, || async { watching() == 1 }).await;
    // Something else changes (the pod's watch does not see it), the API
    // compacts its history, and the watch ends: the version the boot holds
    // is now too old.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(cluster.standin.client(&cluster.standin.admin_token()), NAMESPACE);
    let other = serde_json::from_value(serde_json::json!({"metadata": {"name": "unrelated"}})).unwrap();
    secrets.create(&Default::default(), &other).await.unwrap();
    cluster.standin.compact();
    cluster.standin.end_watches();
    eventually("the boot reads its pod afresh and watches again", WAIT, || async {
        let fresh_read = cluster
            .standin
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path.contains("-flame-") && !r.path.contains("watch"));
        fresh_read && watching() >= 2
    })
    .await;
    cluster.standin.set_unschedulable(None);
    let pod = tokio::time::timeout(WAIT, call)
        .await
        .expect("the call ends")
        .unwrap()
        .unwrap();
    assert!(pod.is_some_and(|p| p.contains("-flame-")));
    pool.stop().await;
    secrets.delete("unrelated", &DeleteParams::default()).await.unwrap();
    all_gone(&cluster).await;
    cluster.standin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b56_a_missing_permission_is_a_clear_error_at_start() {
    let Some(cluster) = cluster("b56_a_missing_permission_is_a_clear_error_at_start").await else {
        return;
    };
    // Everything on pods, nothing on secrets.
    let token = cluster.standin.token_with(&[
        ("get", "pods"),
        ("list", "pods"),
        ("watch", "pods"),
        ("create", "pods"),
        ("delete", "pods"),
    ]);
    let backend = cluster.backend_with(&token);
    match backend.check().await {
        Err(KubernetesError::Forbidden { verb, resource, .. }) => {
            assert_eq!((verb.as_str(), resource.as_str()), ("create", "secrets"))
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    // A pool started anyway (a failed boot is never fatal to a pool) fails
    // its first call at once with the same, rather than hanging.
    let pool = start(config(1), backend).await;
    let started = std::time::Instant::now();
    let err = pool.call::<Env>("HOME".to_owned()).await.unwrap_err();
    match &err {
        Error::BootFailed { reason } => assert!(reason.contains("may not create secrets"), "{reason}"),
        other => panic!("expected a boot failure, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no hang: {:?}",
        started.elapsed()
    );
    pool.stop().await;
    assert!(cluster.runner_pods().is_empty(), "nothing was created");
    cluster.standin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b56_an_unknown_parent_pod_is_a_clear_error() {
    let Some(cluster) = cluster("b56_an_unknown_parent_pod_is_a_clear_error").await else {
        return;
    };
    let err = cluster.backend().parent_pod("no-such-pod").check().await.unwrap_err();
    assert_eq!(
        err,
        KubernetesError::ParentPodMissing {
            namespace: NAMESPACE.into(),
            name: "no-such-pod".into()
        }
    );
    let err = KubernetesBackend::with_env(|_| None)
        .client(cluster.standin.client(&cluster.standin.admin_token()))
        .check()
        .await
        .unwrap_err();
    assert_eq!(err, KubernetesError::NoParentPod);
    let err = cluster.backend_with("wrong-token").check().await.unwrap_err();
    assert!(matches!(err, KubernetesError::Unauthorized { .. }), "{err:?}");
    cluster.standin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b56_a_runner_that_idles_out_deletes_its_pod() {
    let Some(cluster) = cluster("b56_a_runner_that_idles_out_deletes_its_pod").await else {
        return;
    };
    let pool = start(
        config(1).idle_shutdown_after(Duration::from_millis(200)),
        cluster.backend(),
    )
    .await;
    let pod = env(&pool, "POD_NAME").await.expect("a runner pod");
    all_gone(&cluster).await;
    // The runner itself asked, with its pod's service account token (the
    // parent's client is the admin).
    let by_runner = cluster.standin.requests().into_iter().any(|r| {
        r.method == "DELETE"
            && r.path.contains(&format!("/pods/{pod}"))
            && r.user
                .as_deref()
                .is_some_and(|u| u.starts_with("system:serviceaccount:"))
    });
    assert!(
        by_runner,
        "the runner deleted its own pod: {:?}",
        cluster.standin.requests()
    );
    pool.stop().await;
    cluster.standin.shutdown().await;
}

/// Against a real cluster, where the test process runs in a pod of it
/// (`POD_NAME`, `POD_NAMESPACE`, `POD_IP` from the downward API, and the
/// image of the pod runs this test runner binary): one call on a runner
/// pod. Skipped with the reason printed anywhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b56_a_call_on_a_real_cluster() {
    let in_pod = ["POD_NAME", "POD_NAMESPACE", "POD_IP"]
        .iter()
        .all(|v| std::env::var_os(v).is_some());
    let configured = std::env::var_os("KUBECONFIG").is_some() || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    if !(configured && in_pod) {
        eprintln!(
            "skipping b56_a_call_on_a_real_cluster: no real cluster (needs KUBECONFIG or an in-cluster config, and POD_NAME, POD_NAMESPACE and POD_IP of the pod this test runs in)"
        );
        return;
    }
    let backend = KubernetesBackend::new();
    backend
        .check()
        .await
        .expect("the cluster allows what the backend needs");
    let pool = start(
        config(1).boot_timeout(Duration::from_secs(120)),
        backend.stop_grace(Duration::from_secs(1)),
    )
    .await;
    let pod = env(&pool, "POD_NAME").await.expect("a runner pod");
    assert!(pod.contains("-flame-"), "{pod}");
    pool.stop().await;
}
