//! Runner images from a registry: an [`Image::Tag`](super::Image::Tag) the
//! engine lacks is pulled, with the credentials the user gave.

use std::fmt;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt as _;
use ractor_flame_actors::BackendError;

/// A user name and password (or access token) for the registry an
/// [`Image::Tag`](super::Image::Tag) is pulled from. They go to the engine,
/// which talks to the registry; they are never logged, and `Debug` shows
/// only the user name and the server.
///
/// # Examples
///
/// ```
/// use ractor_flame::docker::{DockerBackend, Image, RegistryCredentials};
///
/// let token = std::env::var("REGISTRY_TOKEN").unwrap_or_default();
/// let backend = DockerBackend::new()
///     .image(Image::Tag("registry.example.com/media/runner:1.4.2".into()))
///     .registry_credentials(RegistryCredentials::new("deploy", token).server("registry.example.com"));
/// # let _ = backend;
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    username: String,
    password: String,
    server: Option<String>,
}

impl RegistryCredentials {
    /// A user name and its password or access token.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::docker::RegistryCredentials;
    ///
    /// let credentials = RegistryCredentials::new("deploy", "s3cret");
    /// assert!(!format!("{credentials:?}").contains("s3cret"));
    /// ```
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        RegistryCredentials {
            username: username.into(),
            password: password.into(),
            server: None,
        }
    }

    /// The registry's address, as in `docker login <server>` (default: the
    /// one the image's name points at).
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::docker::RegistryCredentials;
    ///
    /// let credentials = RegistryCredentials::new("deploy", "s3cret").server("registry.example.com");
    /// # let _ = credentials;
    /// ```
    pub fn server(mut self, server: impl Into<String>) -> Self {
        self.server = Some(server.into());
        self
    }

    fn to_bollard(&self) -> DockerCredentials {
        DockerCredentials {
            username: Some(self.username.clone()),
            password: Some(self.password.clone()),
            serveraddress: self.server.clone(),
            ..DockerCredentials::default()
        }
    }
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Pulls `reference` into the engine.
pub(super) async fn pull(
    docker: &Docker,
    engine: &str,
    reference: &str,
    credentials: Option<&RegistryCredentials>,
) -> Result<(), BackendError> {
    let mut options = CreateImageOptionsBuilder::new().from_image(reference);
    // Without a tag the engine would pull every tag of the repository.
    if !has_tag_or_digest(reference) {
        options = options.tag("latest");
    }
    let mut progress = docker.create_image(
        Some(options.build()),
        None,
        credentials.map(RegistryCredentials::to_bollard),
    );
    while let Some(step) = progress.next().await {
        let step = step.map_err(|e| {
            BackendError::new(format!(
                "image {reference} is not on engine {engine} and pulling it failed: {e}"
            ))
        })?;
        if let Some(error) = step.error_detail.and_then(|d| d.message) {
            return Err(BackendError::new(format!(
                "image {reference} is not on engine {engine} and pulling it failed: {error}"
            )));
        }
    }
    tracing::info!(target: "ractor_flame::docker", image = reference, engine, "runner image pulled");
    Ok(())
}

/// Whether an image reference names a tag or a digest (a `:` after the last
/// `/`, which is not a registry's port, or an `@`).
fn has_tag_or_digest(reference: &str) -> bool {
    reference.contains('@') || reference.rsplit('/').next().is_some_and(|last| last.contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_told_from_registry_ports() {
        assert!(has_tag_or_digest("runner:1"));
        assert!(has_tag_or_digest("127.0.0.1:5000/runner:1"));
        assert!(!has_tag_or_digest("127.0.0.1:5000/runner"));
        assert!(has_tag_or_digest("runner@sha256:abc"));
        assert!(!has_tag_or_digest("runner"));
    }
}
