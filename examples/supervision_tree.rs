//! A ractor application whose supervisor owns two pools.
//!
//! The `App` actor starts a "resize" pool and a "hash" pool under itself with
//! [`Pool::spawn_linked`], then `main` shows that:
//!
//! 1. calls on both pools work;
//! 2. a runner's exit does not take its pool down: a call in flight on a
//!    runner that is killed (as a crash would) fails with
//!    [`Error::RunnerDown`], and the next call on the same pool boots a fresh
//!    runner and succeeds;
//! 3. stopping the supervisor stops both pools and every runner, after the
//!    calls in flight drain.
//!
//! Two ractor details every app that embeds pools needs, both in `App`:
//! ractor's default `handle_supervisor_evt` stops a supervisor when any child
//! ends (overridden here to log and carry on), and a stopping supervisor
//! kills its children without running their `post_stop` (so `App::post_stop`
//! stops them first with `stop_children_and_wait`, which lets them drain).
//!
//! ```text
//! cargo run --example supervision_tree
//! ```
//!
//! Expected output (the `[pool]` lines come from the pools' hooks, so they
//! may interleave a little differently):
//!
//! ```text
//!    [hash] runner up (1 booted)
//! 1. the app supervises 2 pools; both serve
//!    [resize] runner up (1 booted)
//!    resize 1024 -> 512
//!    sum of [1, 2, 3, 4] -> 10
//! 2. a resize runner crashes with a call in flight
//!    killed 1 resize runner(s)
//!    the call in flight failed: runner down: connection lost (runner stopped)
//!    resize pool still running: true
//!    [resize] runner left (0 now)
//!    [resize] runner up (2 booted)
//!    next call: resize 512 -> 256 (on a fresh runner)
//! 3. stopping the app stops both pools and every runner
//!    a 200 ms call is in flight; stopping the app
//!    app: stopping its pools
//!    app: pools stopped
//!    the call in flight drained: Ok(2048)
//!    pools running: resize false, hash false
//!    resize runners: 2 booted, 1 killed, 1 shut down
//!    hash runners: 1 booted, 0 killed, 1 shut down
//!    every runner is accounted for
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_flame::{ByteBuf, Error, FnError, LocalBackend, Pool, PoolConfig, PoolEvent, Registry, RemoteFn};

/// Sums the bytes of a buffer (the "hash" pool).
struct Sum;

impl RemoteFn for Sum {
    const NAME: &'static str = "tree.sum";
    type Args = ByteBuf;
    type Output = u64;
    async fn run(bytes: ByteBuf) -> Result<u64, FnError> {
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

/// What the App is asked.
enum AppMsg {
    /// Hand out the pools (a real app would route its own messages to them).
    Pools(RpcReplyPort<(Pool, Pool)>),
}

/// What the App starts with: the registry, and per pool its options and
/// backend.
struct AppArgs {
    registry: Registry,
    resize: (PoolConfig, LocalBackend),
    hash: (PoolConfig, LocalBackend),
}

/// The App's state: its pools.
struct AppState {
    resize: Pool,
    hash: Pool,
}

impl Actor for App {
    type Msg = AppMsg;
    type State = AppState;
    type Arguments = AppArgs;

    async fn pre_start(&self, myself: ActorRef<AppMsg>, args: AppArgs) -> Result<AppState, ActorProcessingErr> {
        // Both pools are children of this actor: linked, supervised, and
        // stopped with it.
        let (config, backend) = args.resize;
        let resize = Pool::spawn_linked(config, backend, &args.registry, myself.get_cell()).await?;
        let (config, backend) = args.hash;
        let hash = Pool::spawn_linked(config, backend, &args.registry, myself.get_cell()).await?;
        Ok(AppState { resize, hash })
    }

    async fn handle(&self, _: ActorRef<AppMsg>, msg: AppMsg, state: &mut AppState) -> Result<(), ActorProcessingErr> {
        match msg {
            AppMsg::Pools(reply) => {
                let _ = reply.send((state.resize.clone(), state.hash.clone()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<AppMsg>,
        event: SupervisionEvent,
        _: &mut AppState,
    ) -> Result<(), ActorProcessingErr> {
        // ractor's default stops the supervisor when any child ends; an app
        // decides for itself. Here: log and carry on.
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                println!(
                    "   app: child {} stopped ({})",
                    cell.get_id(),
                    reason.unwrap_or_default()
                );
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                println!("   app: child {} failed ({error})", cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(&self, myself: ActorRef<AppMsg>, _: &mut AppState) -> Result<(), ActorProcessingErr> {
        // A stopping supervisor kills its children without their post_stop:
        // stop them first, so the pools drain their calls and stop runners.
        println!("   app: stopping its pools");
        myself
            .stop_children_and_wait(Some("app stopping".into()), Some(Duration::from_secs(5)))
            .await;
        println!("   app: pools stopped");
        Ok(())
    }
}

/// Counts a pool's successful boots and prints its runners coming and going.
fn with_hooks(config: PoolConfig, label: &'static str, booted: &Arc<AtomicUsize>) -> PoolConfig {
    let booted = Arc::clone(booted);
    config
        .on_grow_end(move |event| {
            if let PoolEvent::GrowEnd { result, .. } = event {
                match result {
                    Ok(()) => println!(
                        "   [{label}] runner up ({} booted)",
                        booted.fetch_add(1, Ordering::Relaxed) + 1
                    ),
                    Err(err) => println!("   [{label}] boot failed: {err}"),
                }
            }
        })
        .on_shrink(move |event| {
            if let PoolEvent::Shrink { count, .. } = event {
                println!("   [{label}] runner left ({count} now)");
            }
        })
}

/// Waits until a call holds a slot of `pool`.
async fn wait_busy(pool: &Pool) -> Result<(), Error> {
    while pool.stats().await?.busy == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Waits (up to 5 s) until `pool` has fewer than `before` runners.
async fn wait_until_gone(pool: &Pool, before: usize) -> Result<(), Box<dyn std::error::Error>> {
    let since = std::time::Instant::now();
    while pool.stats().await?.runners >= before {
        if since.elapsed() > Duration::from_secs(5) {
            return Err("the pool did not notice the crashed runner".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = Registry::new().register::<Sum>().register::<Resize>();
    ractor_flame::run_if_runner(&registry).await?;

    // Clones of the backends stay here, to crash runners and count shutdowns.
    let (resize_backend, hash_backend) = (LocalBackend::new(), LocalBackend::new());
    let (resize_booted, hash_booted) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let resize_config = PoolConfig::new(2)
        .name("tree-resize")
        .shutdown_timeout(Duration::from_secs(5));
    let hash_config = PoolConfig::new(1).name("tree-hash").min(1);
    let args = AppArgs {
        registry,
        resize: (
            with_hooks(resize_config, "resize", &resize_booted),
            resize_backend.clone(),
        ),
        hash: (with_hooks(hash_config, "hash", &hash_booted), hash_backend.clone()),
    };
    let (app, app_done) = Actor::spawn(None, App, args).await?;
    let (resize, hash) = ractor::call!(app, AppMsg::Pools)?;

    println!("1. the app supervises {} pools; both serve", app.get_children().len());
    println!("   resize 1024 -> {}", resize.call::<Resize>((1024, 10)).await?);
    println!(
        "   sum of [1, 2, 3, 4] -> {}",
        hash.call::<Sum>(ByteBuf::from(vec![1, 2, 3, 4])).await?
    );

    println!("2. a resize runner crashes with a call in flight");
    let in_flight = tokio::spawn({
        let resize = resize.clone();
        async move { resize.call::<Resize>((2048, 5_000)).await }
    });
    wait_busy(&resize).await?;
    let runners_before = resize.stats().await?.runners;
    let killed = resize_backend.kill_runners();
    println!("   killed {killed} resize runner(s)");
    match in_flight.await? {
        Err(err @ Error::RunnerDown { .. }) => println!("   the call in flight failed: {err}"),
        other => return Err(format!("expected RunnerDown, got {other:?}").into()),
    }
    println!("   resize pool still running: {}", resize.is_running());
    // The pool learns of the crash from the runner's supervision a moment
    // after the caller does; a call made in that instant can still be routed
    // to the dead runner and fail with `RunnerDown` too (a retryable error).
    // Wait for the pool to drop it, as a retrying caller would.
    wait_until_gone(&resize, runners_before).await?;
    println!(
        "   next call: resize 512 -> {} (on a fresh runner)",
        resize.call::<Resize>((512, 10)).await?
    );

    println!("3. stopping the app stops both pools and every runner");
    let draining = tokio::spawn({
        let resize = resize.clone();
        async move { resize.call::<Resize>((4096, 200)).await }
    });
    wait_busy(&resize).await?;
    println!("   a 200 ms call is in flight; stopping the app");
    app.stop(None);
    app_done.await?;
    println!("   the call in flight drained: {:?}", draining.await?);
    println!(
        "   pools running: resize {}, hash {}",
        resize.is_running(),
        hash.is_running()
    );
    let mut accounted = !resize.is_running() && !hash.is_running();
    for (label, booted, killed, backend) in [
        ("resize", &resize_booted, killed, &resize_backend),
        ("hash", &hash_booted, 0, &hash_backend),
    ] {
        let (booted, shut_down) = (booted.load(Ordering::Relaxed), backend.system_shutdowns());
        println!("   {label} runners: {booted} booted, {killed} killed, {shut_down} shut down");
        accounted &= booted == killed + shut_down;
    }
    if !accounted {
        return Err("a pool or runner outlived the app".into());
    }
    println!("   every runner is accounted for");
    Ok(())
}
