//! The runner binary of the integration tests: it registers the test
//! functions and becomes a runner under `FLAME_PARENT`.
//!
//! Without `FLAME_PARENT` and with the argument `parent`, it is a parent:
//! it starts a process pool of itself, runs one call, prints
//! `runner-pid <pid>` and waits to be killed (the parent-loss fault test).
//! With `parent docker <pool-name>` the pool's runners are containers of an
//! image made from this binary, and it prints `image <tag>` and `ready`.
//! `parent docker-wait <pool-name>` first waits for a line on stdin.
//! `parent docker-work <pool-name> <calls>` prints `ready` with its two
//! runners up, then makes sleep calls two at a time until it made `<calls>`
//! and stdin reached its end, and prints `done <ok> <errors>`.
//! `pool-first` starts a pool with `min` 2 before `run_if_runner` and prints
//! `runners <n>` (0 when `FLAME_PARENT` is set). `FLAME_TEST_REGISTRY=other`
//! makes it serve [`functions::other_registry`].
//! `parent standby` keeps two runners on standby (none in service), prints
//! `standby 2` once both are up and waits to be killed.
//! `parent panic` calls a function that panics on a process runner, with no
//! tracing subscriber installed, prints `error <error>` and `runner <id>`,
//! stops the pool and exits.
//! `prepare <exe>` imports the runner image of `<exe>`, prints
//! `image <tag>` and lives until stdin reaches its end.
//! `env` prints its environment, one sorted `NAME=value` a line, and exits
//! (the Kubernetes stand-in's env tests). `wait` waits to be killed (no
//! SIGTERM handler, as PID 1 it ignores SIGTERM). `alloc` touches a MiB more memory
//! every millisecond until killed (its OOM test). With the `kubernetes`
//! feature, `kube-self-delete` loads the in-cluster config, prints
//! `self <podIP>` for the pod named by `POD_NAME`, deletes that pod and
//! waits to be stopped.

#[path = "../support/functions.rs"]
mod functions;

use ractor_flame::{Pool, PoolConfig, ProcessBackend};

#[tokio::main]
async fn main() {
    // `FLAME_TEST_REGISTRY=other`: serve a registry that differs from the
    // tests' (another build of the program).
    let registry = match std::env::var("FLAME_TEST_REGISTRY").as_deref() {
        Ok("other") => functions::other_registry(),
        _ => functions::registry(),
    };
    // `pool-first`: start a pool with `min` 2 before `run_if_runner`, print
    // how many runners it has or boots, and exit.
    if std::env::args().nth(1).as_deref() == Some("pool-first") {
        let config = PoolConfig::new(2).min(2).name("pool-first");
        let pool = Pool::start(config, ractor_flame::LocalBackend::new(), &registry)
            .await
            .expect("pool");
        let stats = pool.stats().await.expect("stats");
        println!("runners {}", stats.runners + stats.booting);
        std::process::exit(0);
    }
    // `FLAME_TEST_OTEL`: a runner whose own subscriber has an OpenTelemetry
    // layer (and the layer that sends its events to the parent).
    #[cfg(feature = "opentelemetry")]
    if std::env::var_os("FLAME_TEST_OTEL").is_some() {
        use tracing_subscriber::layer::SubscriberExt as _;
        // A tracer that records nothing still carries the caller's trace.
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer())
            .with(ractor_flame::observe::RunnerLogs::new());
        tracing::subscriber::set_global_default(subscriber).expect("the first subscriber");
    }
    if let Err(e) = ractor_flame::run_if_runner(&registry).await {
        eprintln!("{e}");
        std::process::exit(2);
    }
    match std::env::args().nth(1).as_deref() {
        Some("env") => {
            let mut vars: Vec<(String, String)> = std::env::vars().collect();
            vars.sort();
            for (k, v) in vars {
                println!("{k}={v}");
            }
            return;
        }
        Some("wait") => std::future::pending::<()>().await,
        Some("alloc") => {
            let mut held = Vec::new();
            loop {
                let mut block = vec![0u8; 1 << 20];
                for i in (0..block.len()).step_by(4096) {
                    block[i] = 1;
                }
                held.push(block);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        #[cfg(feature = "kubernetes")]
        Some("kube-self-delete") => {
            use k8s_openapi::api::core::v1::Pod;
            let config = kube::Config::incluster().expect("in-cluster config");
            let client = kube::Client::try_from(config).expect("kube client");
            let ns =
                std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").expect("namespace");
            let name = std::env::var("POD_NAME").expect("POD_NAME");
            let pods: kube::Api<Pod> = kube::Api::namespaced(client, &ns);
            let me = pods.get(&name).await.expect("get own pod");
            let ip = me.status.and_then(|s| s.pod_ip).unwrap_or_default();
            println!("self {ip}");
            pods.delete(&name, &Default::default()).await.expect("delete own pod");
            println!("deleted");
            std::future::pending::<()>().await;
        }
        _ => {}
    }
    #[cfg(feature = "docker")]
    if std::env::args().nth(1).as_deref() == Some("prepare") {
        let exe = std::env::args().nth(2).expect("prepare <exe>");
        let tag = ractor_flame::DockerBackend::new()
            .image(ractor_flame::docker::Image::Executable(exe.into()))
            .prepare_image()
            .await
            .expect("image");
        println!("image {tag}");
        let mut rest = String::new();
        while std::io::stdin().read_line(&mut rest).map(|n| n > 0).unwrap_or(false) {}
        return;
    }
    if std::env::args().nth(1).as_deref() != Some("parent") {
        eprintln!(
            "flame-test-runner: a runner for the ractor-flame tests; run with FLAME_PARENT set, or with `parent`"
        );
        std::process::exit(64);
    }
    #[cfg(feature = "docker")]
    if let Some(mode) = std::env::args().nth(2).filter(|m| m.starts_with("docker")) {
        let args: Vec<String> = std::env::args().collect();
        let name = args.get(3).cloned().unwrap_or_else(|| "flame-test-parent".into());
        if mode == "docker-wait" {
            std::io::stdin().read_line(&mut String::new()).expect("stdin");
        }
        let backend = ractor_flame::DockerBackend::new()
            .image(ractor_flame::docker::Image::CurrentExe)
            .stop_timeout(std::time::Duration::from_secs(1));
        println!("image {}", backend.prepare_image().await.expect("image"));
        let config = PoolConfig::new(2)
            .min(2)
            .name(name)
            .idle_shutdown_after(ractor_flame::IdleShutdown::Never);
        let pool = Pool::start(config, backend, &registry).await.expect("pool");
        pool.call::<functions::WhereAmI>(()).await.expect("call");
        // Both runners connected: none is left waiting for its failsafe.
        while pool.stats().await.expect("stats").runners < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        println!("ready");
        if mode == "docker-work" {
            let calls: usize = args.get(4).and_then(|n| n.parse().ok()).unwrap_or(200);
            let (ok, errors) = work(&pool, calls).await;
            pool.stop().await;
            println!("done {ok} {errors}");
            return;
        }
        std::future::pending::<()>().await;
    }
    let backend = ProcessBackend::current_exe()
        .expect("current exe")
        .args(Vec::<String>::new());
    if std::env::args().nth(2).as_deref() == Some("panic") {
        // No subscriber: what a newcomer's first program looks like.
        let pool = Pool::start(PoolConfig::new(1), backend, &registry).await.expect("pool");
        let mut events = pool.events();
        let err = pool
            .call::<functions::Panic>("the runner's own panic message".into())
            .await
            .expect_err("the call panics");
        println!("error {err}");
        while let Ok(event) = events.recv().await {
            if let ractor_flame::PoolEvent::GrowEnd { runner, .. } = event {
                println!("runner {runner}");
                break;
            }
        }
        pool.stop().await;
        return;
    }
    if std::env::args().nth(2).as_deref() == Some("children") {
        // An unlinked and a linked placed child, each mid-work when the
        // parent dies: the work writes `<dir>/<which>` when done.
        let dir = std::env::args().nth(3).expect("a directory for the markers");
        let config = PoolConfig::new(1)
            .max_concurrency(4)
            .shutdown_timeout(std::time::Duration::from_millis(1_500));
        let pool = Pool::start(config, backend.clone(), &registry).await.expect("pool");
        let place = pool.call::<functions::WhereAmI>(()).await.expect("call");
        let args = |key: &str| functions::KeeperArgs {
            key: key.into(),
            start: 0,
        };
        let unlinked = pool
            .place_child_with::<functions::Keeper>(args("unlinked"), ractor_flame::CallOptions::new().link(false))
            .await
            .expect("an unlinked child");
        let linked = pool
            .place_child::<functions::Keeper>(args("linked"))
            .await
            .expect("a linked child");
        for (child, name) in [(&unlinked, "unlinked"), (&linked, "linked")] {
            child
                .cast(functions::KeeperCast::Work {
                    ms: 500,
                    marker: format!("{dir}/{name}"),
                })
                .expect("cast");
        }
        println!("runner-pid {}", place.pid);
        std::future::pending::<()>().await;
    }
    if std::env::args().nth(2).as_deref() == Some("standby") {
        // Two runners on standby and none in service: `standby 2` once
        // both are up, then waits to be killed.
        let config = PoolConfig::new(3).standby(2);
        let pool = Pool::start(config, backend.clone(), &registry).await.expect("pool");
        while pool.stats().await.expect("stats").standby < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        println!("standby 2");
        std::future::pending::<()>().await;
    }
    let pool = Pool::start(PoolConfig::new(1), backend, &registry).await.expect("pool");
    let place = pool.call::<functions::WhereAmI>(()).await.expect("call");
    if std::env::args().nth(2).as_deref() == Some("busy") {
        // Work in flight when the parent dies: a blocking body that stops
        // at its next check for cancellation, and one that never checks.
        let heeds = pool.clone();
        tokio::spawn(async move { heeds.call::<functions::StopWhenCancelled>(false).await });
        let deaf = pool.clone();
        let spin = functions::SpinArgs {
            key: "parent-busy".into(),
            ms: 4_000,
            heed_cancel: false,
        };
        tokio::spawn(async move { deaf.call::<functions::SpinBlocking>(spin).await });
        while pool.stats().await.expect("stats").busy < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    println!("runner-pid {}", place.pid);
    std::future::pending::<()>().await;
}

/// Sleep calls two at a time until `calls` were made and stdin reached its
/// end; returns the successes and the errors (printed to stderr).
#[cfg(feature = "docker")]
async fn work(pool: &Pool, calls: usize) -> (usize, usize) {
    let stdin_open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = stdin_open.clone();
    std::thread::spawn(move || {
        let mut rest = String::new();
        while std::io::stdin().read_line(&mut rest).map(|n| n > 0).unwrap_or(false) {}
        flag.store(false, std::sync::atomic::Ordering::SeqCst);
    });
    let (mut ok, mut errors, mut made) = (0, 0, 0);
    while made < calls || stdin_open.load(std::sync::atomic::Ordering::SeqCst) {
        let pair = (0..2).map(|_| {
            let args = functions::SleepArgs {
                key: "work".into(),
                ms: 5,
            };
            pool.call::<functions::Sleep>(args)
        });
        for result in futures_util::future::join_all(pair).await {
            match result {
                Ok(_) => ok += 1,
                Err(e) => {
                    eprintln!("call failed: {e}");
                    errors += 1;
                }
            }
        }
        made += 2;
    }
    (ok, errors)
}
