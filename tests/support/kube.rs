//! A Kubernetes "cluster" for the backend's tests: the stand-in of the API
//! (`kube_standin`), the test runner binary as the image, and a pod for
//! the test process itself (the parent).

use std::net::SocketAddr;
use std::time::Duration;

use ractor_flame::kubernetes::KubernetesBackend;

use super::kube_standin::{Options, StandIn};

/// The namespace runners run in.
pub const NAMESPACE: &str = "default";

/// A stand-in with a parent pod for this test process.
pub struct Cluster {
    pub standin: StandIn,
    /// The parent pod's name.
    pub parent: String,
    /// The runner image's tag (the parent pod's image).
    pub image: String,
}

/// The cluster, or `None` (with the reason printed) where Docker tests may
/// skip; panics where `FLAME_REQUIRE_DOCKER` is set and no engine answers.
pub async fn cluster(test: &str) -> Option<Cluster> {
    super::docker::engine(test).await?;
    let image = super::docker::backend().prepare_image().await.expect("runner image");
    let standin = StandIn::start(Options::default()).await;
    let parent = format!("parent-{}", &super::key()[..8]);
    standin.add_parent_pod(NAMESPACE, &parent, &image);
    Some(Cluster { standin, parent, image })
}

impl Cluster {
    /// The backend as a parent in this cluster configures it: the admin
    /// token's client, its own pod, the pod network's gateway as its
    /// address, a short stop grace.
    pub fn backend(&self) -> KubernetesBackend {
        self.backend_with(&self.standin.admin_token())
    }

    /// [`Cluster::backend`] with another token.
    pub fn backend_with(&self, token: &str) -> KubernetesBackend {
        KubernetesBackend::with_env(|_| None)
            .client(self.standin.client(token))
            .namespace(NAMESPACE)
            .parent_pod(&self.parent)
            .parent_addr(SocketAddr::new(self.standin.gateway().into(), 0))
            .stop_grace(Duration::from_secs(1))
    }

    /// Runner pods (not the parent's) the API still holds.
    pub fn runner_pods(&self) -> Vec<k8s_openapi::api::core::v1::Pod> {
        self.standin
            .pods()
            .into_iter()
            .filter(|p| p.metadata.name.as_deref() != Some(self.parent.as_str()))
            .collect()
    }
}
