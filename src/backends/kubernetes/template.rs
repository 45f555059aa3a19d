//! The runner's Pod and Secret, built from the parent pod (or the user's
//! manifest), the typed options, and the fixed values, in that order of
//! precedence. Pure functions: what they build is what the API receives.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodSpec, ResourceRequirements, Secret,
    SecretKeySelector, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use ractor_flame_actors::{FLAME_PARENT, RunnerId};

use super::error::KubernetesError;
use super::{LABEL_PARENT, LABEL_POOL, LABEL_RUNNER};

/// The environment a runner always gets, from the downward API: its pod's
/// name, namespace and address.
pub(super) const POD_NAME: &str = "POD_NAME";
/// See [`POD_NAME`].
pub(super) const POD_NAMESPACE: &str = "POD_NAMESPACE";
/// See [`POD_NAME`].
pub(super) const POD_IP: &str = "POD_IP";

/// The annotation naming a pod's default container (as kubectl reads it).
const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// What the user set of a runner's pod: the typed options and the manifest.
#[derive(Clone, Debug, Default)]
pub(super) struct Template {
    /// A full pod manifest to start from instead of the parent pod.
    pub(super) manifest: Option<Pod>,
    /// The container to take (of the manifest, or of the parent pod).
    pub(super) container: Option<String>,
    pub(super) image: Option<String>,
    pub(super) cpu: Option<String>,
    pub(super) memory: Option<String>,
    /// Extended resources (`nvidia.com/gpu`) and their counts.
    pub(super) extended: BTreeMap<String, String>,
    pub(super) node_selector: BTreeMap<String, String>,
    pub(super) tolerations: Vec<Toleration>,
    pub(super) service_account: Option<String>,
    pub(super) env: BTreeMap<String, String>,
    pub(super) secret_env: BTreeMap<String, String>,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) annotations: BTreeMap<String, String>,
    /// Whether runner pods (and their secrets) are owned by the parent pod.
    pub(super) owned: bool,
}

/// The parent pod, as read from the API.
#[derive(Clone, Debug)]
pub(super) struct ParentPod {
    pub(super) name: String,
    pub(super) namespace: String,
    pub(super) uid: String,
    pub(super) pod: Pod,
}

/// Who one runner pod is for.
#[derive(Clone, Debug)]
pub(super) struct Names {
    /// The pod's name, also its secret's.
    pub(super) pod: String,
    pub(super) pool: String,
    pub(super) runner: RunnerId,
}

impl Names {
    /// `<parent pod>-flame-<12 hex digits of the runner id>`, at most 63
    /// characters (a pod name is its hostname).
    pub(super) fn new(parent: &str, pool: &str, runner: RunnerId) -> Names {
        let suffix = format!("-flame-{}", &runner.simple()[..12]);
        let room = 63 - suffix.len();
        let mut base: String = parent.chars().take(room).collect();
        while base.ends_with(['-', '.']) {
            base.pop();
        }
        if base.is_empty() {
            base.push_str("runner");
        }
        Names {
            pod: format!("{base}{suffix}"),
            pool: pool.to_owned(),
            runner,
        }
    }
}

/// `value` made a valid label value: at most 63 characters of
/// `[A-Za-z0-9._-]`, starting and ending alphanumeric.
pub(super) fn label_value(value: &str) -> String {
    let mut out: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    while out.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        out.pop();
    }
    let start = out.find(|c: char| c.is_ascii_alphanumeric()).unwrap_or(out.len());
    out.split_off(start)
}

/// Whether `name` is a valid environment variable name for the API (a C
/// identifier, as the API checks `[-._a-zA-Z][-._a-zA-Z0-9]*`; the stricter
/// form is what every runtime reads).
pub(super) fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || matches!(c, '_' | '-' | '.'))
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The labels every runner pod and secret carries.
pub(super) fn labels(template: &Template, parent: &ParentPod, names: &Names) -> BTreeMap<String, String> {
    let mut labels = template.labels.clone();
    labels.insert(LABEL_POOL.into(), label_value(&names.pool));
    labels.insert(LABEL_PARENT.into(), label_value(&parent.name));
    labels.insert(LABEL_RUNNER.into(), names.runner.simple());
    labels
}

fn owner(template: &Template, parent: &ParentPod) -> Option<Vec<OwnerReference>> {
    template.owned.then(|| {
        vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: parent.name.clone(),
            uid: parent.uid.clone(),
            ..OwnerReference::default()
        }]
    })
}

/// Sets `var` in `env`, in place of a variable of the same name.
fn set_env(env: &mut Vec<EnvVar>, var: EnvVar) {
    match env.iter_mut().find(|v| v.name == var.name) {
        Some(slot) => *slot = var,
        None => env.push(var),
    }
}

fn from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.into(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                key: key.into(),
                name: secret.into(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// The container the runner starts from: of the manifest when given, else
/// the parent pod's (by name, then the default-container annotation, then
/// the first); with the pod spec it came from.
fn base(template: &Template, parent: &ParentPod) -> Result<(Pod, usize), KubernetesError> {
    let pick = |pod: &Pod, whose: &str| -> Result<usize, KubernetesError> {
        let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
        let wanted = template.container.clone().or_else(|| {
            pod.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CONTAINER).cloned())
        });
        match wanted {
            Some(name) => containers
                .iter()
                .position(|c| c.name == name)
                .ok_or_else(|| KubernetesError::Invalid(format!("{whose} has no container named `{name}`"))),
            None if containers.is_empty() => Err(KubernetesError::Invalid(format!("{whose} has no container"))),
            None => Ok(0),
        }
    };
    if let Some(manifest) = &template.manifest {
        let index = pick(manifest, "the pod template")?;
        let mut pod = manifest.clone();
        // A manifest without an image runs the parent's.
        let container = &mut pod.spec.as_mut().expect("picked a container").containers[index];
        if container.image.as_deref().is_none_or(str::is_empty) {
            let parent_image = parent
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone());
            container.image = parent_image;
        }
        return Ok((pod, index));
    }
    let index = pick(&parent.pod, "the parent pod")?;
    let spec = parent.pod.spec.clone().unwrap_or_default();
    let app = &spec.containers[index];
    // What makes the same program run the same way; not what belongs to
    // the parent's own serving (ports, probes, hooks, its volumes).
    let container = Container {
        name: app.name.clone(),
        image: app.image.clone(),
        image_pull_policy: app.image_pull_policy.clone(),
        command: app.command.clone(),
        args: app.args.clone(),
        working_dir: app.working_dir.clone(),
        env: app.env.clone(),
        env_from: app.env_from.clone(),
        resources: app.resources.clone(),
        security_context: app.security_context.clone(),
        ..Container::default()
    };
    let pod = Pod {
        metadata: ObjectMeta::default(),
        spec: Some(PodSpec {
            containers: vec![container],
            service_account_name: spec.service_account_name.clone(),
            image_pull_secrets: spec.image_pull_secrets.clone(),
            security_context: spec.security_context.clone(),
            ..PodSpec::default()
        }),
        status: None,
    };
    Ok((pod, 0))
}

/// The runner's pod. Env precedence, lowest first: the template's (the
/// parent's container, or the manifest's), [`Template::env`], the secret
/// env (by reference to the runner's secret), then the fixed values:
/// `FLAME_PARENT` (by reference: the token is never in the spec) and the
/// pod's own name, namespace and IP.
pub(super) fn runner_pod(template: &Template, parent: &ParentPod, names: &Names) -> Result<Pod, KubernetesError> {
    for name in template.env.keys().chain(template.secret_env.keys()) {
        if !valid_env_name(name) {
            return Err(KubernetesError::Invalid(format!(
                "`{name}` is not a valid environment variable name"
            )));
        }
    }
    let (mut pod, index) = base(template, parent)?;
    let spec = pod.spec.as_mut().expect("base has a spec");
    spec.restart_policy = Some("Never".into());
    if let Some(account) = &template.service_account {
        spec.service_account_name = Some(account.clone());
    }
    if !template.node_selector.is_empty() {
        spec.node_selector
            .get_or_insert_with(BTreeMap::new)
            .extend(template.node_selector.clone());
    }
    if !template.tolerations.is_empty() {
        spec.tolerations
            .get_or_insert_with(Vec::new)
            .extend(template.tolerations.clone());
    }
    let container = &mut spec.containers[index];
    if let Some(image) = &template.image {
        container.image = Some(image.clone());
    }
    if container.image.as_deref().is_none_or(str::is_empty) {
        return Err(KubernetesError::Invalid("the runner container has no image".into()));
    }
    let resources = container.resources.get_or_insert_with(ResourceRequirements::default);
    let mut set = |name: &str, value: &str, request: bool| {
        resources
            .limits
            .get_or_insert_with(BTreeMap::new)
            .insert(name.into(), Quantity(value.into()));
        if request {
            resources
                .requests
                .get_or_insert_with(BTreeMap::new)
                .insert(name.into(), Quantity(value.into()));
        }
    };
    if let Some(cpu) = &template.cpu {
        set("cpu", cpu, true);
    }
    if let Some(memory) = &template.memory {
        set("memory", memory, true);
    }
    for (name, count) in &template.extended {
        // Extended resources are set as limits; the API takes the request
        // to be the same.
        set(name, count, false);
    }
    let env = container.env.get_or_insert_with(Vec::new);
    // The template's own copies of the fixed names give way to the fixed.
    env.retain(|v| ![FLAME_PARENT, POD_NAME, POD_NAMESPACE, POD_IP].contains(&v.name.as_str()));
    for (name, value) in &template.env {
        set_env(
            env,
            EnvVar {
                name: name.clone(),
                value: Some(value.clone()),
                value_from: None,
            },
        );
    }
    for name in template.secret_env.keys() {
        set_env(env, from_secret(name, &names.pod, name));
    }
    set_env(env, from_secret(FLAME_PARENT, &names.pod, FLAME_PARENT));
    set_env(env, from_field(POD_NAME, "metadata.name"));
    set_env(env, from_field(POD_NAMESPACE, "metadata.namespace"));
    set_env(env, from_field(POD_IP, "status.podIP"));

    let meta = &mut pod.metadata;
    meta.name = Some(names.pod.clone());
    meta.generate_name = None;
    meta.namespace = Some(parent.namespace.clone());
    meta.resource_version = None;
    meta.uid = None;
    let mut pod_labels = meta.labels.take().unwrap_or_default();
    pod_labels.extend(labels(template, parent, names));
    meta.labels = Some(pod_labels);
    if !template.annotations.is_empty() {
        meta.annotations
            .get_or_insert_with(BTreeMap::new)
            .extend(template.annotations.clone());
    }
    meta.owner_references = owner(template, parent);
    pod.status = None;
    Ok(pod)
}

/// The runner's secret: its `FLAME_PARENT` and the secret env, under the
/// pod's name, owned by the parent pod like the pod.
pub(super) fn runner_secret(template: &Template, parent: &ParentPod, names: &Names, flame_parent: &str) -> Secret {
    let mut data: BTreeMap<String, ByteString> = template
        .secret_env
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
        .collect();
    data.insert(FLAME_PARENT.into(), ByteString(flame_parent.as_bytes().to_vec()));
    Secret {
        metadata: ObjectMeta {
            name: Some(names.pod.clone()),
            namespace: Some(parent.namespace.clone()),
            labels: Some(labels(template, parent, names)),
            owner_references: owner(template, parent),
            ..ObjectMeta::default()
        },
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests;
