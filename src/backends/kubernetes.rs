#![doc = include_str!("../../docs/backends/kubernetes.md")]

mod error;
mod state;
mod template;
mod watch;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::{Pod, Secret, Toleration};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use ractor_flame_actors::{Backend, BackendError, DownReason, Endpoint, RunnerContext};
use tokio::sync::OnceCell;
use tokio::time::Instant;

pub use error::KubernetesError;
/// The Kubernetes API types this backend takes (a [`Pod`] manifest for
/// [`KubernetesBackend::pod_template`], a [`Toleration`]).
pub use k8s_openapi;
/// The Kubernetes client crate this backend is built on (pass its
/// [`Client`](kube::Client) to [`KubernetesBackend::client`]).
pub use kube;
pub use state::KubernetesState;
use template::{Names, ParentPod, Template};

/// Label on runner pods and secrets: the pool's name (made a valid label value).
pub const LABEL_POOL: &str = "ractor-flame/pool";
/// Label on runner pods and secrets: the parent pod's name.
pub const LABEL_PARENT: &str = "ractor-flame/parent";
/// Label on runner pods and secrets: the runner id.
pub const LABEL_RUNNER: &str = "ractor-flame/runner";
/// Default grace a runner pod is deleted with when its Runner goes.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
/// Default wait, after a runner's connection drops, for its pod's status
/// to say why (see [`Backend::down_grace`]).
pub const DEFAULT_DOWN_GRACE: Duration = Duration::from_secs(2);

/// The access the parent needs, as `(verb, resource)`: checked at start.
const NEEDS: [(&str, &str); 6] = [
    ("get", "pods"),
    ("create", "pods"),
    ("watch", "pods"),
    ("delete", "pods"),
    ("create", "secrets"),
    ("delete", "secrets"),
];

/// Runners as pods in the parent pod's namespace.
///
/// Each boot creates a Secret holding the runner's `FLAME_PARENT` (and the
/// [`secret_env`](Self::secret_env)), then a Pod with restart policy
/// `Never`, named after the parent pod, labelled with the pool, the parent
/// and the runner, and owned by the parent pod (so the cluster removes
/// runners with their parent; [`owned`](Self::owned) turns this off). The
/// pod starts from the parent pod's own container (same image, command and
/// environment: the same binary, no registry step) or from a
/// [`pod_template`](Self::pod_template), with the typed options on top. The
/// boot follows the pod through a watch until it runs, then the runner
/// connects back to the parent's pod address over the TLS link within what
/// is left of the boot timeout. When its Runner goes, the pod and its
/// secret are deleted; a runner that stops on its own deletes its own pod.
///
/// | option | meaning | default |
/// |---|---|---|
/// | [`client`](Self::client) | the API client | in-cluster config, else `KUBECONFIG` |
/// | [`namespace`](Self::namespace) | where runners run (the parent pod's) | `POD_NAMESPACE`, else the client's |
/// | [`parent_pod`](Self::parent_pod) | the parent's own pod | `POD_NAME`, else `HOSTNAME` |
/// | [`parent_addr`](Self::parent_addr) | where the parent listens for runners | `[POD_IP]:0`, else the pod's `status.podIP` |
/// | [`container`](Self::container) | the container runners copy | the default container, else the first |
/// | [`pod_template`](Self::pod_template) | a full pod manifest to start from | the parent pod's container |
/// | [`image`](Self::image) | the runner image | the template's |
/// | [`cpu`](Self::cpu), [`memory`](Self::memory) | requests and limits | the template's |
/// | [`gpus`](Self::gpus), [`resource`](Self::resource) | extended resources (limits) | none |
/// | [`node_selector`](Self::node_selector), [`toleration`](Self::toleration) | placement | none |
/// | [`service_account`](Self::service_account) | the runners' service account | the template's |
/// | [`env`](Self::env), [`secret_env`](Self::secret_env) | runners' environment | the template's |
/// | [`label`](Self::label), [`annotation`](Self::annotation) | extra pod metadata | none |
/// | [`owned`](Self::owned) | owner reference to the parent pod | `true` |
/// | [`boot_timeout`](Self::boot_timeout) | scheduling, start and connect back | the pool's |
/// | [`stop_grace`](Self::stop_grace) | grace period of a deleted runner pod | 10 s |
///
/// # Examples
///
/// ```no_run
/// use ractor_flame::kubernetes::KubernetesBackend;
/// use ractor_flame::{Pool, PoolConfig, Registry};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = Registry::new();
/// ractor_flame::run_if_runner(&registry).await?;
/// // Pod name, namespace and address come from the downward API.
/// let backend = KubernetesBackend::new()
///     .cpu("2")
///     .memory("4Gi")
///     .gpus(1)
///     .secret_env("DATABASE_URL", std::env::var("DATABASE_URL")?);
/// backend.check().await?;
/// let pool = Pool::start(PoolConfig::new(10).name("inference"), backend, &registry).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KubernetesBackend {
    client: Option<Client>,
    namespace: Option<String>,
    parent_pod: Option<String>,
    parent_addr: Option<SocketAddr>,
    template: Template,
    boot_timeout: Option<Duration>,
    stop_grace: Duration,
    /// A setter's value that cannot be sent (reported by `check`).
    invalid: Option<String>,
    /// `POD_NAME`, `POD_NAMESPACE`, `POD_IP`, `HOSTNAME` as read at `new`.
    env: EnvDefaults,
    shared: Arc<Shared>,
}

#[derive(Clone, Debug, Default)]
struct EnvDefaults {
    pod_name: Option<String>,
    namespace: Option<String>,
    pod_ip: Option<String>,
    hostname: Option<String>,
}

/// What every runner of one backend value shares.
#[derive(Default)]
struct Shared {
    client: OnceCell<Client>,
    parent: OnceCell<ParentPod>,
    endpoint: OnceCell<Endpoint>,
    /// Set once the access review allowed everything the parent needs.
    checked: OnceCell<()>,
}

impl fmt::Debug for KubernetesBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secret env values never show: names only.
        let secret_env: Vec<_> = self.template.secret_env.keys().collect();
        f.debug_struct("KubernetesBackend")
            .field("namespace", &self.namespace)
            .field("parent_pod", &self.parent_pod)
            .field("parent_addr", &self.parent_addr)
            .field("container", &self.template.container)
            .field("pod_template", &self.template.manifest.is_some())
            .field("image", &self.template.image)
            .field("cpu", &self.template.cpu)
            .field("memory", &self.template.memory)
            .field("resources", &self.template.extended)
            .field("env", &self.template.env)
            .field("secret_env", &secret_env)
            .field("owned", &self.template.owned)
            .field("boot_timeout", &self.boot_timeout)
            .field("stop_grace", &self.stop_grace)
            .finish_non_exhaustive()
    }
}

impl Default for KubernetesBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl KubernetesBackend {
    /// The defaults, read from this process's environment: `POD_NAME`,
    /// `POD_NAMESPACE` and `POD_IP` (set them through the downward API) or
    /// `HOSTNAME`. Nothing is checked yet: see [`check`](Self::check).
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::kubernetes::KubernetesBackend::new();
    /// # let _ = backend;
    /// ```
    pub fn new() -> Self {
        Self::with_env(|key| std::env::var(key).ok())
    }

    /// The defaults, read through `env` instead of the process environment.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::kubernetes::KubernetesBackend;
    ///
    /// let backend = KubernetesBackend::with_env(|key| (key == "POD_NAME").then(|| "api-7d9f".to_owned()));
    /// # let _ = backend;
    /// ```
    pub fn with_env(env: impl Fn(&str) -> Option<String>) -> Self {
        KubernetesBackend {
            client: None,
            namespace: None,
            parent_pod: None,
            parent_addr: None,
            template: Template {
                owned: true,
                ..Template::default()
            },
            boot_timeout: None,
            stop_grace: DEFAULT_STOP_GRACE,
            invalid: None,
            env: EnvDefaults {
                pod_name: env(template::POD_NAME).filter(|v| !v.is_empty()),
                namespace: env(template::POD_NAMESPACE).filter(|v| !v.is_empty()),
                pod_ip: env(template::POD_IP).filter(|v| !v.is_empty()),
                hostname: env("HOSTNAME").filter(|v| !v.is_empty()),
            },
            shared: Arc::default(),
        }
    }

    /// The API client (default: in-cluster config, else `KUBECONFIG`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use ractor_flame::kubernetes::{KubernetesBackend, kube};
    ///
    /// let client = kube::Client::try_default().await?;
    /// let backend = KubernetesBackend::new().client(client);
    /// # let _ = backend; Ok(()) }
    /// ```
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The namespace runners run in: the parent pod's (default:
    /// `POD_NAMESPACE`, else the client's default namespace).
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::kubernetes::KubernetesBackend::new().namespace("jobs");
    /// # let _ = backend;
    /// ```
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The parent's own pod (default: `POD_NAME`, else `HOSTNAME`, which
    /// is the pod's name unless the pod sets its own hostname).
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::kubernetes::KubernetesBackend::new().parent_pod("api-7d9f-x2k");
    /// # let _ = backend;
    /// ```
    pub fn parent_pod(mut self, name: impl Into<String>) -> Self {
        self.parent_pod = Some(name.into());
        self
    }

    /// Where the parent listens for runners (default: `POD_IP` with any
    /// port, else the parent pod's `status.podIP`).
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::kubernetes::KubernetesBackend::new().parent_addr("10.1.2.3:0".parse().unwrap());
    /// # let _ = backend;
    /// ```
    pub fn parent_addr(mut self, addr: SocketAddr) -> Self {
        self.parent_addr = Some(addr);
        self
    }

    /// Which container of the parent pod (or of the
    /// [`pod_template`](Self::pod_template)) runners are made from
    /// (default: the one named by `kubectl.kubernetes.io/default-container`,
    /// else the first).
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::kubernetes::KubernetesBackend::new().container("app");
    /// # let _ = backend;
    /// ```
    pub fn container(mut self, name: impl Into<String>) -> Self {
        self.template.container = Some(name.into());
        self
    }

    /// A full pod manifest runners start from, instead of the parent pod's
    /// container: anything the typed options do not cover (affinity,
    /// volumes, init containers, a runtime class). Its container without an
    /// image runs the parent's. The typed options and the fixed values
    /// (name, labels, owner, restart policy `Never`, `FLAME_PARENT`) are
    /// applied on top.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::kubernetes::KubernetesBackend;
    /// use ractor_flame::kubernetes::k8s_openapi::api::core::v1::Pod;
    ///
    /// let manifest: Pod = serde_json::from_value(serde_json::json!({
    ///     "spec": {
    ///         "containers": [{ "name": "runner" }],
    ///         "priorityClassName": "batch-low"
    ///     }
    /// }))
    /// .unwrap();
    /// let backend = KubernetesBackend::new().pod_template(manifest);
    /// # let _ = backend;
    /// ```
    pub fn pod_template(mut self, pod: Pod) -> Self {
        self.template.manifest = Some(pod);
        self
    }

    /// The runner image (default: the template's, which is the parent's).
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::kubernetes::KubernetesBackend::new().image("registry.local/app:1.2");
    /// # let _ = backend;
    /// ```
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.template.image = Some(image.into());
        self
    }

    /// CPU request and limit of the runner container, as a Kubernetes
    /// quantity (`"2"`, `"500m"`).
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::kubernetes::KubernetesBackend::new().cpu("500m");
    /// # let _ = backend;
    /// ```
    pub fn cpu(mut self, quantity: impl Into<String>) -> Self {
        self.template.cpu = Some(quantity.into());
        self
    }

    /// Memory request and limit of the runner container (`"512Mi"`,
    /// `"4Gi"`). A runner over it is reported down with
    /// [`DownReason::OutOfMemory`].
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::kubernetes::KubernetesBackend::new().memory("4Gi");
    /// # let _ = backend;
    /// ```
    pub fn memory(mut self, quantity: impl Into<String>) -> Self {
        self.template.memory = Some(quantity.into());
        self
    }

    /// NVIDIA GPUs per runner: the `nvidia.com/gpu` limit (use
    /// [`resource`](Self::resource) for other vendors).
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::kubernetes::KubernetesBackend::new().gpus(1);
    /// # let _ = backend;
    /// ```
    pub fn gpus(self, count: u32) -> Self {
        self.resource("nvidia.com/gpu", count.to_string())
    }

    /// An extended resource limit of the runner container
    /// (`"amd.com/gpu"`, `"example.com/fpga"`).
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::kubernetes::KubernetesBackend::new().resource("amd.com/gpu", "1");
    /// # let _ = backend;
    /// ```
    pub fn resource(mut self, name: impl Into<String>, quantity: impl Into<String>) -> Self {
        self.template.extended.insert(name.into(), quantity.into());
        self
    }

    /// A node label runner pods require (`nodeSelector`).
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::kubernetes::KubernetesBackend::new().node_selector("pool", "gpu");
    /// # let _ = backend;
    /// ```
    pub fn node_selector(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.template.node_selector.insert(key.into(), value.into());
        self
    }

    /// A toleration of runner pods (for tainted GPU nodes, spot nodes).
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::kubernetes::KubernetesBackend;
    /// use ractor_flame::kubernetes::k8s_openapi::api::core::v1::Toleration;
    ///
    /// let backend = KubernetesBackend::new().toleration(Toleration {
    ///     key: Some("nvidia.com/gpu".into()),
    ///     operator: Some("Exists".into()),
    ///     effect: Some("NoSchedule".into()),
    ///     ..Toleration::default()
    /// });
    /// # let _ = backend;
    /// ```
    pub fn toleration(mut self, toleration: Toleration) -> Self {
        self.template.tolerations.push(toleration);
        self
    }

    /// The runners' service account (default: the template's). It needs
    /// to delete its own pod (see the Role in the guide).
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::kubernetes::KubernetesBackend::new().service_account("flame-runner");
    /// # let _ = backend;
    /// ```
    pub fn service_account(mut self, name: impl Into<String>) -> Self {
        self.template.service_account = Some(name.into());
        self
    }

    /// An environment variable of runners, over the template's. Its value
    /// is in the pod spec: use [`secret_env`](Self::secret_env) for secrets.
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::kubernetes::KubernetesBackend::new().env("RUST_LOG", "info");
    /// # let _ = backend;
    /// ```
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.template.secret_env.remove(&name);
        self.template.env.insert(name, value.into());
        self
    }

    /// A secret environment variable of runners: its value travels in the
    /// runner's Secret (owned by the parent pod) and reaches the pod by
    /// reference, never in the pod spec.
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::kubernetes::KubernetesBackend::new().secret_env("API_KEY", "s3cret");
    /// assert!(!format!("{backend:?}").contains("s3cret"));
    /// ```
    pub fn secret_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.template.env.remove(&name);
        self.template.secret_env.insert(name, value.into());
        self
    }

    /// An extra label on runner pods. Do not reuse your Deployment's
    /// selector labels: its ReplicaSet would take runners for its own.
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::kubernetes::KubernetesBackend::new().label("team", "media");
    /// # let _ = backend;
    /// ```
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.template.labels.insert(key.into(), value.into());
        self
    }

    /// An extra annotation on runner pods.
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::kubernetes::KubernetesBackend::new().annotation("cost-center", "ml");
    /// # let _ = backend;
    /// ```
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.template.annotations.insert(key.into(), value.into());
        self
    }

    /// Whether runner pods and their secrets are owned by the parent pod
    /// (default `true`): the cluster's garbage collector then deletes them
    /// when the parent pod goes, whatever happened to the parent process.
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = ractor_flame::kubernetes::KubernetesBackend::new().owned(false);
    /// # let _ = backend;
    /// ```
    pub fn owned(mut self, owned: bool) -> Self {
        self.template.owned = owned;
        self
    }

    /// This backend's own bound on a boot: scheduling, image start and the
    /// runner's connect-back (default: the pool's boot timeout alone).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let backend = ractor_flame::kubernetes::KubernetesBackend::new().boot_timeout(Duration::from_secs(120));
    /// # let _ = backend;
    /// ```
    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        if timeout.is_zero() {
            self.invalid = Some("boot_timeout must be more than zero".into());
        }
        self.boot_timeout = Some(timeout);
        self
    }

    /// The grace period a runner pod is deleted with when its Runner goes
    /// (default 10 s; whole seconds).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let backend = ractor_flame::kubernetes::KubernetesBackend::new().stop_grace(Duration::from_secs(30));
    /// # let _ = backend;
    /// ```
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Where runners connect back, once the first boot has bound it.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(ractor_flame::kubernetes::KubernetesBackend::new().listen_addr().is_none());
    /// ```
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.shared.endpoint.get().map(Endpoint::addr)
    }

    /// Checks, through the API, what a boot needs: a client, the parent's
    /// own pod, and access (through a `SelfSubjectAccessReview`) to get,
    /// create, watch and delete pods and to create and delete secrets in
    /// the namespace. Every boot checks this too, once; call it before
    /// [`Pool::start`](crate::Pool::start) to fail at start rather than at
    /// the first boot.
    ///
    /// # Errors
    ///
    /// [`KubernetesError::NoClient`], [`KubernetesError::NoParentPod`],
    /// [`KubernetesError::ParentPodMissing`], [`KubernetesError::Forbidden`]
    /// naming the first access denied, [`KubernetesError::Invalid`], or the
    /// API's own error.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ractor_flame::kubernetes::KubernetesError> {
    /// ractor_flame::kubernetes::KubernetesBackend::new().check().await?;
    /// # Ok(()) }
    /// ```
    pub async fn check(&self) -> Result<(), KubernetesError> {
        self.ready().await.map(|_| ())
    }

    /// What [`check`](Self::check) checks, once; the parent pod and the
    /// client it found.
    async fn ready(&self) -> Result<(&ParentPod, &Client), KubernetesError> {
        if let Some(invalid) = &self.invalid {
            return Err(KubernetesError::Invalid(invalid.clone()));
        }
        let parent = self.parent().await?;
        let client = self.kube_client().await?;
        self.shared
            .checked
            .get_or_try_init(|| review(client.clone(), parent.namespace.clone()))
            .await?;
        Ok((parent, client))
    }

    async fn kube_client(&self) -> Result<&Client, KubernetesError> {
        self.shared
            .client
            .get_or_try_init(|| async {
                match &self.client {
                    Some(client) => Ok(client.clone()),
                    None => Client::try_default()
                        .await
                        .map_err(|e| KubernetesError::NoClient(e.to_string())),
                }
            })
            .await
    }

    /// The parent's own pod, read once.
    async fn parent(&self) -> Result<&ParentPod, KubernetesError> {
        let client = self.kube_client().await?;
        self.shared
            .parent
            .get_or_try_init(|| async {
                let name = self
                    .parent_pod
                    .clone()
                    .or_else(|| self.env.pod_name.clone())
                    .or_else(|| self.env.hostname.clone())
                    .ok_or(KubernetesError::NoParentPod)?;
                let namespace = self
                    .namespace
                    .clone()
                    .or_else(|| self.env.namespace.clone())
                    .unwrap_or_else(|| client.default_namespace().to_owned());
                let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
                let pod = pods
                    .get_opt(&name)
                    .await
                    .map_err(|e| {
                        KubernetesError::from_kube(e, "read the parent pod", "pod", ("get", "pods", &namespace))
                    })?
                    .ok_or_else(|| KubernetesError::ParentPodMissing {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    })?;
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                Ok(ParentPod {
                    name,
                    namespace,
                    uid,
                    pod,
                })
            })
            .await
    }

    async fn endpoint(&self, parent: &ParentPod) -> Result<&Endpoint, KubernetesError> {
        let addr = match self.parent_addr {
            Some(addr) => addr,
            None => {
                let ip: IpAddr = self
                    .env
                    .pod_ip
                    .as_deref()
                    .or(parent.pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()))
                    .and_then(|ip| ip.parse().ok())
                    .ok_or(KubernetesError::NoParentAddress)?;
                SocketAddr::new(ip, 0)
            }
        };
        self.shared
            .endpoint
            .get_or_try_init(|| async {
                Endpoint::bind(addr)
                    .await
                    .map_err(|e| KubernetesError::Local(format!("cannot listen for runners on {addr}: {e}")))
            })
            .await
    }

    async fn boot(&self, state: &mut KubernetesState, ctx: &RunnerContext) -> Result<(), KubernetesError> {
        let started = Instant::now();
        let deadline = Instant::from_std(ctx.boot_deadline())
            .checked_sub(Duration::from_millis(5))
            .unwrap_or(started);
        let (parent, client) = self.ready().await?;
        let client = client.clone();
        let endpoint = self.endpoint(parent).await?;
        let names = Names::new(&parent.name, &ctx.pool, ctx.runner_id);
        let pod = template::runner_pod(&self.template, parent, &names)?;
        // The runner's FLAME_PARENT (its token inside): built here, sent
        // only in the secret.
        let flame_parent = endpoint.expect(ctx, vec![endpoint.addr()], self.name()).encode();
        let secret = template::runner_secret(&self.template, parent, &names, &flame_parent);
        let ns = parent.namespace.as_str();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let pods: Api<Pod> = Api::namespaced(client, ns);
        state.secrets = Some(secrets.clone());
        state.secret = Some(names.pod.clone());
        secrets.create(&PostParams::default(), &secret).await.map_err(|e| {
            KubernetesError::from_kube(e, "create runner secret", "runner secret", ("create", "secrets", ns))
        })?;
        state.pods = Some(pods.clone());
        let created = pods
            .create(&PostParams::default(), &pod)
            .await
            .map_err(|e| KubernetesError::from_kube(e, "create runner pod", "runner pod", ("create", "pods", ns)))?;
        state.pod = Some(names.pod.clone());
        tracing::info!(target: "ractor_flame::kubernetes", runner = %ctx.runner_id, pod = %names.pod, "runner pod created");
        let (ip, version) = watch::until_running(&pods, &created, ns, deadline, started).await?;
        tracing::debug!(target: "ractor_flame::kubernetes", pod = %names.pod, %ip, elapsed = ?started.elapsed(), "runner pod running");
        state.pod_ip = Some(ip);
        state.watch = Some(watch::watch(pods, names.pod, version, ctx.notifier()));
        Ok(())
    }
}

/// Asks the API whether this client may do what a parent needs.
async fn review(client: Client, namespace: String) -> Result<(), KubernetesError> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client);
    for (verb, resource) in NEEDS {
        let ask = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.clone()),
                    verb: Some(verb.into()),
                    resource: Some(resource.into()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let answer = reviews.create(&PostParams::default(), &ask).await.map_err(|e| {
            KubernetesError::from_kube(
                e,
                "review the parent's access",
                "access review",
                ("create", "selfsubjectaccessreviews", &namespace),
            )
        })?;
        let status = answer.status.unwrap_or_default();
        if !status.allowed {
            return Err(KubernetesError::Forbidden {
                verb: verb.into(),
                resource: resource.into(),
                namespace,
                message: status
                    .reason
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| "denied by the cluster's authorization".into()),
            });
        }
    }
    Ok(())
}

impl Backend for KubernetesBackend {
    type State = KubernetesState;

    fn name(&self) -> &'static str {
        "kubernetes"
    }

    async fn init(&self, ctx: &RunnerContext) -> Result<Self::State, BackendError> {
        if let Some(invalid) = &self.invalid {
            return Err(KubernetesError::Invalid(invalid.clone()).into());
        }
        Ok(KubernetesState {
            runner: ctx.runner_id,
            pods: None,
            secrets: None,
            pod: None,
            secret: None,
            pod_ip: None,
            watch: None,
            stop_grace: self.stop_grace,
        })
    }

    fn boot_limit(&self) -> Option<Duration> {
        self.boot_timeout
    }

    fn down_grace(&self) -> Duration {
        DEFAULT_DOWN_GRACE
    }

    async fn remote_boot(&self, state: &mut Self::State, ctx: &RunnerContext) -> Result<(), BackendError> {
        self.boot(state, ctx).await.map_err(|e| {
            if let Some(endpoint) = self.shared.endpoint.get() {
                endpoint.forget(ctx.runner_id);
            }
            // What was created is deleted by `terminate`, which the Runner
            // calls as it stops on the failed boot.
            BackendError::from(e)
        })
    }

    async fn handle_info(&self, state: &mut Self::State, info: Box<dyn std::any::Any + Send>) -> Option<DownReason> {
        let down = info.downcast::<watch::PodDown>().ok()?;
        tracing::warn!(target: "ractor_flame::kubernetes", pod = %down.pod, end = %down.end.message(), "runner pod ended");
        state.watch = None;
        Some(down.end.reason(&down.pod))
    }

    async fn terminate(&self, state: &mut Self::State) {
        state.watch = None;
        if let Some(endpoint) = self.shared.endpoint.get() {
            endpoint.forget(state.runner);
        }
        state.delete().await;
    }

    /// Runner side: deletes the runner's own pod (named by `POD_NAME` in
    /// `POD_NAMESPACE`, through the in-cluster config), so that a runner
    /// that stopped on its own leaves no completed pod behind.
    async fn system_shutdown(&self) {
        crate::entry::announce_system_shutdown(self.name());
        let (Some(name), Some(namespace)) = (self.env.pod_name.clone(), self.env.namespace.clone()) else {
            return;
        };
        let delete = async {
            let client = Client::try_default().await.map_err(|e| e.to_string())?;
            let pods: Api<Pod> = Api::namespaced(client, &namespace);
            pods.delete(&name, &DeleteParams::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(5), delete).await {
            Ok(Ok(())) => tracing::debug!(target: "ractor_flame::kubernetes", pod = %name, "deleted own pod"),
            Ok(Err(error)) => {
                tracing::warn!(target: "ractor_flame::kubernetes", pod = %name, %error, "cannot delete own pod")
            }
            Err(_) => tracing::warn!(target: "ractor_flame::kubernetes", pod = %name, "deleting own pod timed out"),
        }
    }
}

impl KubernetesBackend {
    /// The labels runner pods of pool `pool` carry, as a label selector
    /// (for `kubectl get pods -l ...` or a cleanup of your own).
    ///
    /// # Examples
    ///
    /// ```
    /// let selector = ractor_flame::kubernetes::KubernetesBackend::selector("thumbnails");
    /// assert_eq!(selector, "ractor-flame/pool=thumbnails");
    /// ```
    pub fn selector(pool: &str) -> String {
        format!("{LABEL_POOL}={}", template::label_value(pool))
    }
}
