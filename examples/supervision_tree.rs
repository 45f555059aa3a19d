//! A ractor application whose supervisor owns two pools.
//!
//! Shows that:
//! 1. pools embed in an existing supervision tree (`Pool::spawn_linked`);
//! 2. a runner's exit does not take its pool down: a call in flight on a
//!    crashed runner fails with `RunnerDown`, the next call boots a fresh one;
//! 3. stopping the supervisor stops both pools and every runner, after their
//!    calls drain.
//!
//! ```text
//! cargo run --example supervision_tree
//! ```
//!
//! Expected output: numbered steps, a `RunnerDown` error for the call on the
//! crashed runner, a successful call after it, and `pools running: false,
//! false` with the count of runner shutdowns at the end.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_flame::{Error, FnError, LocalBackend, Pool, PoolConfig, Registry, RemoteFn};

/// Sums the bytes of a buffer (the "hash" pool).
struct Sum;

impl RemoteFn for Sum {
    const NAME: &'static str = "tree.sum";
    type Args = Vec<u8>;
    type Output = u64;
    async fn run(bytes: Vec<u8>) -> Result<u64, FnError> {
        Ok(bytes.iter().map(|b| u64::from(*b)).sum())
    }
}

/// Pretends to resize an image for `ms` milliseconds (the "resize" pool).
struct Resize;

impl RemoteFn for Resize {
    const NAME: &'static str = "tree.resize";
    type Args = (u32, u64);
    type Output = u32;
    async fn run((width, ms): (u32, u64)) -> Result<u32, FnError> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(width / 2)
    }
}

/// The application's root supervisor: it owns the two pools.
struct App;

/// What the App hands back to `main` (a real app would keep these in its
/// own state and route messages to them).
struct Pools {
    resize: Pool,
    hash: Pool,
}

impl Actor for App {
    type Msg = ractor::RpcReplyPort<(Pool, Pool)>;
    type State = Pools;
    type Arguments = (Registry, LocalBackend, LocalBackend);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (registry, resize_backend, hash_backend): Self::Arguments,
    ) -> Result<Pools, ActorProcessingErr> {
        let resize = Pool::spawn_linked(
            PoolConfig::new(2)
                .name("tree-resize")
                .shutdown_timeout(Duration::from_secs(5)),
            resize_backend,
            &registry,
            myself.get_cell(),
        )
        .await?;
        let hash = Pool::spawn_linked(
            PoolConfig::new(1).name("tree-hash").min(1),
            hash_backend,
            &registry,
            myself.get_cell(),
        )
        .await?;
        Ok(Pools { resize, hash })
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        reply: Self::Msg,
        pools: &mut Pools,
    ) -> Result<(), ActorProcessingErr> {
        let _ = reply.send((pools.resize.clone(), pools.hash.clone()));
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        _: &mut Pools,
    ) -> Result<(), ActorProcessingErr> {
        // ractor's default stops the supervisor when any child ends; an app
        // decides for itself. Here: log and carry on.
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                println!("app: child {} stopped ({})", cell.get_id(), reason.unwrap_or_default());
            }
            SupervisionEvent::ActorFailed(cell, error) => println!("app: child {} failed ({error})", cell.get_id()),
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(&self, myself: ActorRef<Self::Msg>, _: &mut Pools) -> Result<(), ActorProcessingErr> {
        // A stopping supervisor kills its children without their post_stop:
        // stop them first, so the pools drain their calls and stop runners.
        myself
            .stop_children_and_wait(Some("app stopping".into()), Some(Duration::from_secs(10)))
            .await;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = Registry::new().register::<Sum>().register::<Resize>();
    ractor_flame::run_if_runner(&registry).await?;

    let (resize_backend, hash_backend) = (LocalBackend::new(), LocalBackend::new());
    let (app, app_done) = Actor::spawn(None, App, (registry, resize_backend.clone(), hash_backend.clone())).await?;
    let (resize, hash) = ractor::call!(app, |reply| reply)?;

    println!("1. both pools serve under the app's supervisor");
    println!("   resize -> {}", resize.call::<Resize>((1024, 10)).await?);
    println!("   hash   -> {}", hash.call::<Sum>(vec![1, 2, 3, 4]).await?);

    println!("2. a runner crashes with a call in flight");
    let in_flight = tokio::spawn({
        let resize = resize.clone();
        async move { resize.call::<Resize>((2048, 5_000)).await }
    });
    while resize.stats().await?.busy == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("   killed {} runner(s)", resize_backend.kill_runners());
    match in_flight.await? {
        Err(err @ Error::RunnerDown { .. }) => println!("   the call in flight failed: {err}"),
        other => println!("   unexpected: {other:?}"),
    }
    println!("   pool still running: {}", resize.is_running());
    println!(
        "   next call -> {} (on a fresh runner)",
        resize.call::<Resize>((512, 10)).await?
    );

    println!("3. stopping the app stops both pools and every runner");
    let draining = tokio::spawn({
        let resize = resize.clone();
        async move { resize.call::<Resize>((4096, 200)).await }
    });
    while resize.stats().await?.busy == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.stop(None);
    app_done.await?;
    println!("   the call in flight drained: {:?}", draining.await?);
    println!("   pools running: {}, {}", resize.is_running(), hash.is_running());
    println!(
        "   runner shutdowns: resize {}, hash {}",
        resize_backend.system_shutdowns(),
        hash_backend.system_shutdowns()
    );
    Ok(())
}
