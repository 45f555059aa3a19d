//! Docker helpers: an engine or a printed skip (a failure where
//! `FLAME_REQUIRE_DOCKER` is set), the test backend, and container counts
//! read from the engine.

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use ractor_flame::docker::{DockerBackend, Image, LABEL_MANAGED, LABEL_POOL};

/// The engine, or `None` (with the reason printed) where Docker tests may
/// skip. Panics where `FLAME_REQUIRE_DOCKER` is set and no engine answers.
pub async fn engine(test: &str) -> Option<Docker> {
    let probe = async {
        let docker = Docker::connect_with_defaults().map_err(|e| e.to_string())?;
        docker.ping().await.map_err(|e| e.to_string())?;
        docker.negotiate_version().await.map_err(|e| e.to_string())
    };
    match probe.await {
        Ok(docker) => {
            // Import the runner image before any test's clock starts.
            backend().prepare_image().await.expect("runner image");
            Some(docker)
        }
        Err(why) if std::env::var_os("FLAME_REQUIRE_DOCKER").is_some() => {
            panic!("{test}: FLAME_REQUIRE_DOCKER is set but no Docker engine answers: {why}")
        }
        Err(why) => {
            eprintln!("skipping {test}: no Docker engine ({why}); set FLAME_REQUIRE_DOCKER=1 to fail instead");
            None
        }
    }
}

/// The backend the tests use: the test runner binary as the image, host
/// network, a short stop timeout.
pub fn backend() -> DockerBackend {
    DockerBackend::new()
        .image(Image::Executable(super::runner_exe().into()))
        .stop_timeout(std::time::Duration::from_secs(1))
}

/// Containers (any state) labelled with pool `name`.
pub async fn containers(docker: &Docker, pool: &str) -> usize {
    let filters = HashMap::from([(
        "label",
        vec![format!("{LABEL_MANAGED}=true"), format!("{LABEL_POOL}={pool}")],
    )]);
    let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
    docker
        .list_containers(Some(options))
        .await
        .expect("list containers")
        .len()
}

/// Ids of running containers of pool `name`.
pub async fn running(docker: &Docker, pool: &str) -> Vec<String> {
    let filters = HashMap::from([
        (
            "label",
            vec![format!("{LABEL_MANAGED}=true"), format!("{LABEL_POOL}={pool}")],
        ),
        ("status", vec!["running".to_owned()]),
    ]);
    let options = ListContainersOptionsBuilder::new().filters(&filters).build();
    let list = docker.list_containers(Some(options)).await.expect("list containers");
    list.into_iter().filter_map(|c| c.id).collect()
}
