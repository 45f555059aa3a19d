//! The engine: connecting to it, and the networks runners join.

use std::collections::HashMap;
use std::net::IpAddr;

use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::InspectNetworkOptions;
use ractor_flame_actors::BackendError;

use super::{Engine, LABEL_MANAGED};

pub(super) async fn connect(engine: &Engine) -> Result<Docker, BackendError> {
    let docker = match engine {
        Engine::Defaults => Docker::connect_with_defaults(),
        Engine::Socket(path) => Docker::connect_with_socket(&path.to_string_lossy(), 30, bollard::API_DEFAULT_VERSION),
    }
    .map_err(|e| BackendError::new(format!("cannot reach the Docker engine: {e}")))?;
    docker
        .ping()
        .await
        .map_err(|e| BackendError::new(format!("cannot reach the Docker engine: {e}")))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| BackendError::new(format!("cannot agree on an API version with the Docker engine: {e}")))
}

/// The gateway address of a user-defined network.
pub(super) async fn gateway(docker: &Docker, network: &str) -> Result<IpAddr, BackendError> {
    let inspect = docker
        .inspect_network(network, None::<InspectNetworkOptions>)
        .await
        .map_err(|e| BackendError::new(format!("network {network}: {e}")))?;
    inspect
        .ipam
        .and_then(|ipam| ipam.config)
        .and_then(|configs| configs.into_iter().find_map(|c| c.gateway))
        .and_then(|gw| gw.parse().ok())
        .ok_or_else(|| BackendError::new(format!("network {network} has no gateway address")))
}

/// Creates an `internal: true` bridge network (no route leaves it) and
/// returns its gateway address: the address a parent on the host listens on
/// for runners on that network. Useful for tests and isolated deployments.
///
/// # Errors
///
/// When the engine refuses.
pub async fn create_internal_network(docker: &Docker, name: &str) -> Result<IpAddr, BackendError> {
    let request = NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some("bridge".to_owned()),
        internal: Some(true),
        labels: Some(HashMap::from([(LABEL_MANAGED.to_owned(), "true".to_owned())])),
        ..NetworkCreateRequest::default()
    };
    docker
        .create_network(request)
        .await
        .map_err(|e| BackendError::new(format!("cannot create network {name}: {e}")))?;
    gateway(docker, name).await
}
