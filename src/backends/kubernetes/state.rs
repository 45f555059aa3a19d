//! `KubernetesState`: the parent's handle on one runner pod.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, PropagationPolicy};
use ractor_flame_actors::RunnerId;

use super::watch::Watch;

/// The parent's handle on one runner pod: the
/// [`Backend::State`](crate::Backend::State) of
/// [`KubernetesBackend`](super::KubernetesBackend). Dropped without the
/// Runner's `terminate` (a killed Runner), it still deletes the pod and its
/// secret, from a task on the current Tokio runtime.
///
/// # Examples
///
/// ```
/// use ractor_flame::kubernetes::KubernetesState;
///
/// fn describe(state: &KubernetesState) -> String {
///     format!("{} at {:?}", state.pod_name().unwrap_or("-"), state.pod_ip())
/// }
/// ```
#[derive(Debug)]
pub struct KubernetesState {
    pub(super) runner: RunnerId,
    pub(super) pods: Option<Api<Pod>>,
    pub(super) secrets: Option<Api<Secret>>,
    /// The pod, once created.
    pub(super) pod: Option<String>,
    /// The secret, once asked for.
    pub(super) secret: Option<String>,
    pub(super) pod_ip: Option<IpAddr>,
    /// The watch of the pod while its runner serves.
    pub(super) watch: Option<Watch>,
    pub(super) stop_grace: Duration,
}

impl KubernetesState {
    /// The runner pod's name, once created.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(state: &ractor_flame::kubernetes::KubernetesState) {
    /// if let Some(pod) = state.pod_name() { println!("runner pod {pod}"); }
    /// # }
    /// ```
    pub fn pod_name(&self) -> Option<&str> {
        self.pod.as_deref()
    }

    /// The runner pod's address, once it runs.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(state: &ractor_flame::kubernetes::KubernetesState) {
    /// let ip = state.pod_ip();
    /// # let _ = ip; }
    /// ```
    pub fn pod_ip(&self) -> Option<IpAddr> {
        self.pod_ip
    }

    /// Deletes the pod (with the stop grace) and the secret; what is
    /// already gone is fine.
    pub(super) async fn delete(&mut self) {
        self.leftover().delete().await;
    }

    /// What is still to delete, taken out of the state.
    fn leftover(&mut self) -> Leftover {
        Leftover {
            runner: self.runner,
            pods: self.pods.take(),
            secrets: self.secrets.take(),
            pod: self.pod.take(),
            secret: self.secret.take(),
            stop_grace: self.stop_grace,
        }
    }
}

impl Drop for KubernetesState {
    fn drop(&mut self) {
        if self.pod.is_none() && self.secret.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // A runtime shutting down drops the task unrun: nothing more then.
        runtime.spawn(self.leftover().delete());
    }
}

/// What a dropped state still has to delete.
struct Leftover {
    runner: RunnerId,
    pods: Option<Api<Pod>>,
    secrets: Option<Api<Secret>>,
    pod: Option<String>,
    secret: Option<String>,
    stop_grace: Duration,
}

impl Leftover {
    async fn delete(mut self) {
        let grace = u32::try_from(self.stop_grace.as_secs()).unwrap_or(u32::MAX);
        if let (Some(pods), Some(pod)) = (self.pods.take(), self.pod.take()) {
            let params = DeleteParams {
                grace_period_seconds: Some(grace),
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            };
            match pods.delete(&pod, &params).await {
                Ok(_) => {
                    tracing::debug!(target: "ractor_flame::kubernetes", runner = %self.runner, %pod, "runner pod deleted")
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => {
                    tracing::warn!(target: "ractor_flame::kubernetes", runner = %self.runner, %pod, %error, "cannot delete the runner pod")
                }
            }
        }
        if let (Some(secrets), Some(secret)) = (self.secrets.take(), self.secret.take()) {
            match secrets.delete(&secret, &DeleteParams::default()).await {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(error) => {
                    tracing::warn!(target: "ractor_flame::kubernetes", runner = %self.runner, %secret, %error, "cannot delete the runner secret")
                }
            }
        }
    }
}
