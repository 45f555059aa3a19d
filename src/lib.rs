//! # ractor-flame
//!
//! FLAME for Rust, on the [ractor](https://docs.rs/ractor) actor framework:
//! treat your application as a lambda. A [`Pool`] boots copies of the *same
//! binary* on ephemeral compute (a task in this process, a child process, a
//! container), runs work there with [`Pool::call`] and [`Pool::cast`], and
//! the copies shut themselves down when idle or when their parent is gone.
//!
//! No job queue, no second codebase: the function you call remotely is a
//! [`RemoteFn`] in your own crate, registered in a [`Registry`] that the
//! parent and its runners both build.
//!
//! ```
//! use ractor_flame::{FnError, LocalBackend, Pool, PoolConfig, Registry, RemoteFn};
//!
//! struct Checksum;
//! impl RemoteFn for Checksum {
//!     const NAME: &'static str = "checksum";
//!     type Args = Vec<u8>;
//!     type Output = u32;
//!     async fn run(bytes: Vec<u8>) -> Result<u32, FnError> {
//!         Ok(bytes.iter().map(|b| u32::from(*b)).sum())
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Registry::new().register::<Checksum>();
//! // On a runner this serves and exits; on the parent it returns at once.
//! ractor_flame::run_if_runner(&registry).await?;
//!
//! let pool = Pool::start(PoolConfig::new(4).name("checksums"), LocalBackend::new(), &registry).await?;
//! assert_eq!(pool.call::<Checksum>(vec![1, 2, 3]).await?, 6);
//! pool.stop().await;
//! # Ok(()) }
//! ```
//!
//! ## Pools
//!
//! A pool keeps between `min` and `max` runners, each serving up to
//! `max_concurrency` calls. A call checks out the least-loaded runner; when
//! every runner is full, the pool boots another (up to `max`) and the caller
//! waits in a FIFO queue. Runners idle for `idle_shutdown_after` stop
//! themselves, so a pool with `min = 0` scales to zero. See [`PoolConfig`] for
//! every option and its default.
//!
//! ## Choosing a backend
//!
//! | backend | runner is | use it for |
//! |---|---|---|
//! | [`LocalBackend`] | a task in this process | tests, development, the default |
//! | [`ProcessBackend`] | a child process of this executable | one machine, real isolation of crashes and memory |
//! | [`DockerBackend`] (feature `docker`) | a container of an image made from this executable | isolation, limits, a real deployment's shape |
//!
//! ## Placed children
//!
//! [`Pool::place_child`] starts a registered ractor actor ([`RemoteActor`]) on a
//! runner and returns a typed [`Child`] handle: FLAME's third verb, for state
//! that is expensive to load once and then serves many calls. The child holds
//! a slot, and keeps its runner up, while it lives.
//!
//! ## Feature flags
//!
//! | feature | enables | default |
//! |---|---|---|
//! | `docker` | [`DockerBackend`] and the [`docker`] module (pulls in bollard) | yes |
//!
//! ## Termination
//!
//! A runner stops when it has been idle long enough (asking the pool first,
//! so no call is ever cut off), when its parent is gone (connection closed or
//! heartbeats stopped), when it never reached its parent within the failsafe
//! timeout, or on SIGTERM; it drains calls in flight up to `shutdown_timeout`
//! first.

mod call;
mod child;
#[cfg(feature = "docker")]
#[cfg_attr(docsrs, doc(cfg(feature = "docker")))]
pub mod docker;
mod local;
mod pool;
mod process;
mod runner;

pub use call::CallOptions;
pub use child::Child;
pub use local::LocalBackend;
pub use pool::Pool;
pub use process::{ProcessBackend, ProcessState};

#[cfg(feature = "docker")]
#[doc(no_inline)]
pub use docker::DockerBackend;
pub use runner::{run_if_runner, serve_as_runner, serve_as_runner_with};

#[doc(inline)]
pub use ractor_flame_actors::{
    Backend, BackendError, BootRetry, BuildId, CurrentCall, DownReason, Error, FnError, IdleShutdown, Parent,
    ParentError, PoolConfig, PoolEvent, PoolMessage, PoolStats, Registry, RemoteActor, RemoteFn, RunnerContext,
    RunnerId, current_call, current_runner,
};

/// The Pool actor, for embedding in a supervision tree by hand.
pub use ractor_flame_actors::Pool as PoolActor;

/// The actor layer, for backend authors.
pub use ractor_flame_actors as actors;

/// The README's examples compile and run.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
