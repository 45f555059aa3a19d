//! The Kubernetes backend's typed errors.

use std::time::Duration;

use ractor_flame_actors::BackendError;

/// Why the Kubernetes backend could not boot (or reclaim) a runner.
///
/// Every variant converts into [`BackendError`], so a failed boot reaches
/// callers as [`Error::BootFailed`](crate::Error::BootFailed) with this
/// message. No variant holds a runner's token or a secret value.
///
/// # Examples
///
/// ```
/// use ractor_flame::kubernetes::KubernetesError;
///
/// let err = KubernetesError::Forbidden {
///     verb: "create".into(),
///     resource: "pods".into(),
///     namespace: "jobs".into(),
///     message: "pods is forbidden".into(),
/// };
/// assert!(err.to_string().contains("create pods"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KubernetesError {
    /// No client could be made: not in a cluster and no kubeconfig.
    #[error("no Kubernetes client: {0} (run in a pod, set KUBECONFIG, or pass `KubernetesBackend::client`)")]
    NoClient(String),
    /// The parent's own pod is unknown: no option, no `POD_NAME` (the
    /// downward API) and no `HOSTNAME`.
    #[error(
        "the Kubernetes backend does not know its own pod: set POD_NAME through the downward API or call `KubernetesBackend::parent_pod`"
    )]
    NoParentPod,
    /// The parent pod named by the options or the environment does not exist.
    #[error("the parent pod {namespace}/{name} does not exist")]
    ParentPodMissing {
        /// The namespace looked in.
        namespace: String,
        /// The pod name.
        name: String,
    },
    /// No address for runners to reach the parent at: no `POD_IP`, no
    /// `status.podIP` on the parent pod and no
    /// [`parent_addr`](super::KubernetesBackend::parent_addr).
    #[error("the Kubernetes backend has no parent address: set POD_IP through the downward API or call `parent_addr`")]
    NoParentAddress,
    /// An option has a value the API cannot take.
    #[error("invalid Kubernetes backend option: {0}")]
    Invalid(String),
    /// The API refused the credentials (HTTP 401).
    #[error("the Kubernetes API rejected the credentials (401): {message}")]
    Unauthorized {
        /// The API's message.
        message: String,
    },
    /// The service account may not do something the backend needs (HTTP
    /// 403, or a denied access review at start). The docs list the Role
    /// runners and parents need.
    #[error(
        "the Kubernetes backend may not {verb} {resource} in namespace {namespace}: {message} (grant it in the parent's Role)"
    )]
    Forbidden {
        /// The verb denied (`create`, `watch`...).
        verb: String,
        /// The resource (`pods`, `secrets`).
        resource: String,
        /// The namespace.
        namespace: String,
        /// The API's message.
        message: String,
    },
    /// The API refused an object as invalid (HTTP 422 or 400).
    #[error("the Kubernetes API refused the {what}: {message}")]
    Rejected {
        /// What was sent (`runner pod`, `runner secret`).
        what: &'static str,
        /// The API's message.
        message: String,
    },
    /// The pod could not be scheduled within the boot timeout.
    #[error("pod {pod} could not be scheduled within {waited:?}: {message}")]
    Unschedulable {
        /// The pod.
        pod: String,
        /// How long the boot waited.
        waited: Duration,
        /// The scheduler's message (`0/3 nodes are available: ...`).
        message: String,
    },
    /// The pod did not run within the boot timeout, for the reason given
    /// (an image that cannot be pulled, a container that cannot be made).
    #[error("pod {pod} did not start within {waited:?}: {message}")]
    StartTimeout {
        /// The pod.
        pod: String,
        /// How long the boot waited.
        waited: Duration,
        /// The pod's last reported state.
        message: String,
    },
    /// The pod ended, or was deleted, before its runner served.
    #[error("pod {pod} ended before its runner connected: {message}")]
    PodEnded {
        /// The pod.
        pod: String,
        /// The pod's own account (`OOMKilled`, `Evicted: ...`, exit code).
        message: String,
    },
    /// Any other answer of the API.
    #[error("the Kubernetes API answered {code} to {action}: {message}")]
    Api {
        /// What was asked (`create runner pod`, `watch runner pod`).
        action: &'static str,
        /// The HTTP status.
        code: u16,
        /// The API's message.
        message: String,
    },
    /// The API could not be reached.
    #[error("the Kubernetes API could not be reached to {action}: {message}")]
    Unreachable {
        /// What was asked.
        action: &'static str,
        /// The transport's message.
        message: String,
    },
    /// The parent cannot listen for runners.
    #[error("{0}")]
    Local(String),
}

impl From<KubernetesError> for BackendError {
    fn from(err: KubernetesError) -> Self {
        BackendError::new(err)
    }
}

impl KubernetesError {
    /// The error for `action` from a client error; `what` names the object
    /// for refusals, `(verb, resource, namespace)` the request for 403.
    pub(super) fn from_kube(
        err: kube::Error,
        action: &'static str,
        what: &'static str,
        (verb, resource, namespace): (&str, &str, &str),
    ) -> Self {
        match err {
            kube::Error::Api(status) => match status.code {
                401 => KubernetesError::Unauthorized {
                    message: status.message,
                },
                403 => KubernetesError::Forbidden {
                    verb: verb.to_owned(),
                    resource: resource.to_owned(),
                    namespace: namespace.to_owned(),
                    message: status.message,
                },
                400 | 422 => KubernetesError::Rejected {
                    what,
                    message: status.message,
                },
                code => KubernetesError::Api {
                    action,
                    code,
                    message: status.message,
                },
            },
            other => KubernetesError::Unreachable {
                action,
                message: other.to_string(),
            },
        }
    }
}
