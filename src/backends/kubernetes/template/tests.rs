use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ractor_flame_actors::{FLAME_PARENT, RunnerId};
use serde_json::json;

use super::*;

fn var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn parent() -> ParentPod {
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("api-7d9f-x2k".into()),
            namespace: Some("jobs".into()),
            uid: Some("uid-1".into()),
            labels: Some([("app".to_owned(), "api".to_owned())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![
                Container {
                    name: "sidecar".into(),
                    image: Some("proxy:1".into()),
                    ..Container::default()
                },
                Container {
                    name: "app".into(),
                    image: Some("registry.local/api:42".into()),
                    args: Some(vec!["serve".into()]),
                    env: Some(vec![
                        var("MODE", "template"),
                        var("KEEP", "template"),
                        var(FLAME_PARENT, "stale"),
                        var("POD_NAME", "wrong"),
                    ]),
                    ports: Some(vec![serde_json::from_value(json!({"containerPort": 8080})).unwrap()]),
                    readiness_probe: Some(serde_json::from_value(json!({"httpGet": {"port": 8080}})).unwrap()),
                    ..Container::default()
                },
            ],
            service_account_name: Some("api".into()),
            ..PodSpec::default()
        }),
        status: None,
    };
    ParentPod {
        name: "api-7d9f-x2k".into(),
        namespace: "jobs".into(),
        uid: "uid-1".into(),
        pod,
    }
}

fn template() -> Template {
    Template {
        container: Some("app".into()),
        owned: true,
        ..Template::default()
    }
}

fn names() -> Names {
    Names::new("api-7d9f-x2k", "thumbnails", RunnerId::new())
}

fn env_of(pod: &Pod) -> Vec<EnvVar> {
    pod.spec.as_ref().unwrap().containers[0].env.clone().unwrap()
}

fn value(env: &[EnvVar], name: &str) -> Option<String> {
    env.iter().find(|v| v.name == name).and_then(|v| v.value.clone())
}

#[test]
fn b56_a_runner_pod_copies_the_parents_container_and_is_owned_by_the_parent_pod() {
    let pod = runner_pod(&template(), &parent(), &names()).unwrap();
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.containers.len(), 1);
    let c = &spec.containers[0];
    assert_eq!(c.image.as_deref(), Some("registry.local/api:42"));
    assert_eq!(c.args.as_deref(), Some(&["serve".to_owned()][..]));
    assert!(
        c.ports.is_none() && c.readiness_probe.is_none(),
        "no serving parts of the parent"
    );
    assert_eq!(spec.service_account_name.as_deref(), Some("api"));
    let owners = pod.metadata.owner_references.as_ref().unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].name.as_str(), owners[0].uid.as_str()),
        ("Pod", "api-7d9f-x2k", "uid-1")
    );
    let labels = pod.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[LABEL_POOL], "thumbnails");
    assert_eq!(labels[LABEL_PARENT], "api-7d9f-x2k");
    assert_eq!(labels[LABEL_RUNNER].len(), 32);
    assert!(!labels.contains_key("app"), "never the parent's (selector) labels");
    assert_eq!(pod.metadata.namespace.as_deref(), Some("jobs"));
    assert!(pod.metadata.name.as_ref().unwrap().starts_with("api-7d9f-x2k-flame-"));

    let mut unowned = template();
    unowned.owned = false;
    let pod = runner_pod(&unowned, &parent(), &names()).unwrap();
    assert!(pod.metadata.owner_references.is_none());
}

#[test]
fn b56_env_precedence_is_template_then_user_then_secret_then_fixed() {
    let mut t = template();
    t.env.insert("MODE".into(), "user".into());
    t.env.insert(FLAME_PARENT.into(), "user-cannot-set-this".into());
    t.secret_env.insert("API_KEY".into(), "s3cret".into());
    let n = names();
    let pod = runner_pod(&t, &parent(), &n).unwrap();
    let env = env_of(&pod);
    assert_eq!(value(&env, "MODE").as_deref(), Some("user"));
    assert_eq!(value(&env, "KEEP").as_deref(), Some("template"));
    let fixed = |name: &str| env.iter().filter(|v| v.name == name).cloned().collect::<Vec<_>>();
    let flame = fixed(FLAME_PARENT);
    assert_eq!(flame.len(), 1, "one FLAME_PARENT");
    let by_ref = flame[0].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
    assert_eq!(
        (by_ref.name.as_str(), by_ref.key.as_str()),
        (n.pod.as_str(), FLAME_PARENT)
    );
    assert!(flame[0].value.is_none());
    let pod_name = fixed(POD_NAME);
    assert_eq!(pod_name.len(), 1);
    let field = pod_name[0].value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
    assert_eq!(field.field_path, "metadata.name");
    for (name, path) in [(POD_NAMESPACE, "metadata.namespace"), (POD_IP, "status.podIP")] {
        let v = fixed(name);
        assert_eq!(
            v[0].value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path,
            path
        );
    }
    let key = fixed("API_KEY");
    assert!(key[0].value.is_none(), "a secret value is never in the spec");
    // Nothing secret in the whole manifest.
    let text = serde_json::to_string(&pod).unwrap();
    assert!(!text.contains("s3cret") && !text.contains("user-cannot-set-this") && !text.contains("stale"));
}

#[test]
fn b56_the_secret_holds_flame_parent_and_the_secret_env_and_is_owned_by_the_parent_pod() {
    let mut t = template();
    t.secret_env.insert("API_KEY".into(), "s3cret".into());
    let n = names();
    let secret = runner_secret(&t, &parent(), &n, "encoded-parent");
    assert_eq!(secret.metadata.name.as_deref(), Some(n.pod.as_str()));
    let data = secret.data.unwrap();
    assert_eq!(data[FLAME_PARENT].0, b"encoded-parent");
    assert_eq!(data["API_KEY"].0, b"s3cret");
    assert_eq!(secret.metadata.owner_references.unwrap()[0].uid, "uid-1");
}

#[test]
fn b56_typed_options_apply_over_the_template() {
    let mut t = template();
    t.image = Some("registry.local/api:gpu".into());
    t.cpu = Some("2".into());
    t.memory = Some("4Gi".into());
    t.extended.insert("nvidia.com/gpu".into(), "1".into());
    t.node_selector.insert("pool".into(), "gpu".into());
    t.tolerations.push(Toleration {
        key: Some("nvidia.com/gpu".into()),
        operator: Some("Exists".into()),
        ..Toleration::default()
    });
    t.service_account = Some("runner".into());
    t.annotations.insert("team".into(), "ml".into());
    let pod = runner_pod(&t, &parent(), &names()).unwrap();
    let spec = pod.spec.as_ref().unwrap();
    let c = &spec.containers[0];
    assert_eq!(c.image.as_deref(), Some("registry.local/api:gpu"));
    let r = c.resources.as_ref().unwrap();
    let limits = r.limits.as_ref().unwrap();
    assert_eq!(limits["cpu"].0, "2");
    assert_eq!(limits["memory"].0, "4Gi");
    assert_eq!(limits["nvidia.com/gpu"].0, "1");
    let requests = r.requests.as_ref().unwrap();
    assert_eq!(requests["memory"].0, "4Gi");
    assert!(!requests.contains_key("nvidia.com/gpu"));
    assert_eq!(spec.node_selector.as_ref().unwrap()["pool"], "gpu");
    assert_eq!(spec.tolerations.as_ref().unwrap().len(), 1);
    assert_eq!(spec.service_account_name.as_deref(), Some("runner"));
    assert_eq!(pod.metadata.annotations.as_ref().unwrap()["team"], "ml");
}

#[test]
fn b56_a_manifest_is_the_base_and_keeps_what_the_options_do_not_cover() {
    let manifest: Pod = serde_json::from_value(json!({
        "metadata": {"name": "ignored", "labels": {"tier": "batch"}},
        "spec": {
            "priorityClassName": "low",
            "restartPolicy": "Always",
            "volumes": [{"name": "models", "emptyDir": {}}],
            "containers": [{"name": "runner", "volumeMounts": [{"name": "models", "mountPath": "/models"}]}]
        }
    }))
    .unwrap();
    let mut t = template();
    t.container = None;
    t.manifest = Some(manifest);
    let n = names();
    let pod = runner_pod(&t, &parent(), &n).unwrap();
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.priority_class_name.as_deref(), Some("low"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"), "fixed over the manifest");
    assert_eq!(spec.volumes.as_ref().unwrap().len(), 1);
    let c = &spec.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some("proxy:1"),
        "no image: the parent's first container's"
    );
    assert_eq!(c.volume_mounts.as_ref().unwrap()[0].mount_path, "/models");
    assert_eq!(pod.metadata.name.as_deref(), Some(n.pod.as_str()));
    assert_eq!(pod.metadata.labels.as_ref().unwrap()["tier"], "batch");
}

#[test]
fn bad_templates_are_clear_errors() {
    let mut t = template();
    t.container = Some("missing".into());
    let err = runner_pod(&t, &parent(), &names()).unwrap_err();
    assert!(err.to_string().contains("no container named `missing`"), "{err}");
    let mut t = template();
    t.env.insert("BAD NAME".into(), "x".into());
    let err = runner_pod(&t, &parent(), &names()).unwrap_err();
    assert!(matches!(err, KubernetesError::Invalid(_)), "{err}");
}

#[test]
fn names_fit_a_hostname_and_labels_are_valid_values() {
    let long = "a".repeat(80);
    let n = Names::new(&long, "p", RunnerId::new());
    assert_eq!(n.pod.len(), 63);
    let n = Names::new("web--", "p", RunnerId::new());
    assert!(n.pod.starts_with("web-flame-"), "{}", n.pod);
    assert_eq!(label_value("my pool/ä!"), "my-pool");
    assert_eq!(label_value("-x-"), "x");
    assert_eq!(label_value(&"b".repeat(70)).len(), 63);
}
