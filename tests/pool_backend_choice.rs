//! Choosing a backend at run time: one `Pool::start` whatever the choice.

mod support;

use ractor_flame::{AnyBackend, LocalBackend, Pool, ProcessBackend};
use support::config;
use support::functions::{Echo, WhereAmI, registry};

async fn serves(backend: AnyBackend) -> u32 {
    let pool = Pool::start(config(1), backend, &registry()).await.unwrap();
    assert_eq!(pool.call::<Echo>("hi".into()).await.unwrap(), "hi");
    let place = pool.call::<WhereAmI>(()).await.unwrap();
    pool.stop().await;
    place.pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_chosen_by_name_or_wrapped_serves_calls() {
    let local: AnyBackend = "local".parse().unwrap();
    assert_eq!(local.name(), "local");
    assert_eq!(
        serves(local).await,
        std::process::id(),
        "local runners are this process"
    );
    let wrapped = AnyBackend::from(ProcessBackend::new(support::runner_exe()));
    assert_eq!(wrapped.name(), "process");
    assert_ne!(
        serves(wrapped).await,
        std::process::id(),
        "process runners are other processes"
    );
    assert_eq!(AnyBackend::from(LocalBackend::new()).name(), "local");
    // Every shipped name parses.
    for name in AnyBackend::NAMES {
        let backend: AnyBackend = name.parse().unwrap();
        assert_eq!(backend.name(), *name);
    }
}

#[test]
fn an_unknown_backend_name_lists_every_backend() {
    let err = "nomad".parse::<AnyBackend>().unwrap_err().to_string();
    assert!(err.contains("unknown backend `nomad`"), "{err}");
    for name in AnyBackend::NAMES {
        assert!(err.contains(name), "{err} names {name}");
    }
    #[cfg(feature = "docker")]
    assert!(err.contains("docker"), "{err}");
}
