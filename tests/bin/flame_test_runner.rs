//! The runner binary of the integration tests: it registers the test
//! functions and becomes a runner under `FLAME_PARENT`.
//!
//! Without `FLAME_PARENT` and with the argument `parent`, it is a parent:
//! it starts a process pool of itself, runs one call, prints
//! `runner-pid <pid>` and waits to be killed (the parent-loss fault test).
//! With `parent docker <pool-name>` the pool's runners are containers of an
//! image made from this binary, and it prints `ready`.

#[path = "../support/functions.rs"]
mod functions;

use ractor_flame::{Pool, PoolConfig, ProcessBackend};

#[tokio::main]
async fn main() {
    let registry = functions::registry();
    if let Err(e) = ractor_flame::run_if_runner(&registry).await {
        eprintln!("{e}");
        std::process::exit(2);
    }
    if std::env::args().nth(1).as_deref() != Some("parent") {
        eprintln!(
            "flame-test-runner: a runner for the ractor-flame tests; run with FLAME_PARENT set, or with `parent`"
        );
        std::process::exit(64);
    }
    #[cfg(feature = "docker")]
    if std::env::args().nth(2).as_deref() == Some("docker") {
        let args: Vec<String> = std::env::args().collect();
        let name = args.get(3).cloned().unwrap_or_else(|| "flame-test-parent".into());
        let backend = ractor_flame::DockerBackend::new()
            .image(ractor_flame::docker::Image::CurrentExe)
            .stop_timeout(std::time::Duration::from_secs(1));
        let pool = Pool::start(PoolConfig::new(2).min(2).name(name), backend, &registry)
            .await
            .expect("pool");
        pool.call::<functions::WhereAmI>(()).await.expect("call");
        // Both runners connected: none is left waiting for its failsafe.
        while pool.stats().await.expect("stats").runners < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        println!("ready");
        std::future::pending::<()>().await;
    }
    let backend = ProcessBackend::current_exe()
        .expect("current exe")
        .args(Vec::<String>::new());
    let pool = Pool::start(PoolConfig::new(1), backend, &registry).await.expect("pool");
    let place = pool.call::<functions::WhereAmI>(()).await.expect("call");
    println!("runner-pid {}", place.pid);
    std::future::pending::<()>().await;
}
