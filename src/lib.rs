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
//! use ractor_flame::{ByteBuf, FnError, LocalBackend, Pool, PoolConfig, Registry, RemoteFn};
//!
//! struct Checksum;
//! impl RemoteFn for Checksum {
//!     const NAME: &'static str = "checksum";
//!     type Args = ByteBuf;
//!     type Output = u32;
//!     async fn run(bytes: ByteBuf) -> Result<u32, FnError> {
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
//! assert_eq!(pool.call::<Checksum>(ByteBuf::from(vec![1, 2, 3])).await?, 6);
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
//! | `fly::FlyBackend` (feature `fly`) | a Fly.io Machine of the app's image | elastic compute on Fly.io |
//!
//! ## Heavy work
//!
//! FLAME exists for heavy jobs, and tokio schedules cooperatively: a body
//! that computes for seconds without an `.await` keeps its worker thread.
//! ractor-flame keeps such bodies from ever taking the runner down with
//! them:
//!
//! - **The link has a thread of its own.** Every connection between a parent
//!   and its runners (listener, handshake, reads, batched writes, heartbeats
//!   both ways) and each remote runner's Terminator run on one dedicated OS
//!   thread with a current-thread runtime, shared by all pools of the
//!   process. Function bodies never run there: the runner spawns them on the
//!   application's runtime. So heartbeats, cancels and shutdowns keep
//!   flowing while every slot computes, and a parent whose own workers are
//!   busy for seconds still answers its runners. Any byte received counts as
//!   a sign of life, so a large argument on a slow link is not a lost runner.
//! - **Blocking functions have their own path.** Set
//!   [`RemoteFn::BLOCKING`] (or register with [`Registry::register_blocking`])
//!   and the body runs on the runtime's blocking thread pool, where it cannot
//!   hold up async work. A panic there, or in `spawn_blocking` work a body
//!   awaits with `?`, reaches the caller as [`Error::Panic`].
//! - **A slot is free only when its work has ended.** A caller whose
//!   deadline passes, or who cancels (drops the call), gets its error at
//!   once, but the slot returns to the pool only when the runner reports
//!   that the work is over: async bodies are aborted at their next `.await`;
//!   blocking bodies are told through [`current_call`]`().is_cancelled()` and
//!   keep their slot until they return. `max_concurrency` is thus the real
//!   concurrency on a runner; [`PoolStats::cancelling`] counts such slots.
//!
//! ```
//! use ractor_flame::{ByteBuf, FnError, RemoteFn, current_call};
//!
//! /// Hours of CPU in the worst case: a blocking function that stops when
//! /// its caller gives up.
//! struct Transcode;
//! impl RemoteFn for Transcode {
//!     const NAME: &'static str = "transcode";
//!     const BLOCKING: bool = true;
//!     type Args = ByteBuf;
//!     type Output = usize;
//!     async fn run(video: ByteBuf) -> Result<usize, FnError> {
//!         let call = current_call().expect("inside a call");
//!         let mut frames = 0;
//!         for _chunk in video.chunks(4096) {
//!             if call.is_cancelled() {
//!                 return Err(FnError::msg("cancelled"));
//!             }
//!             frames += 1; // ... encode one chunk ...
//!         }
//!         Ok(frames)
//!     }
//! }
//! ```
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
//! | `fly` | `FlyBackend` and the `fly` module: runners as Fly.io Machines (pulls in reqwest with rustls) | no |
//! | `opentelemetry` | calls carry a W3C `traceparent`, so a runner's spans join the caller's OpenTelemetry trace (see [`observe`]) | no |
//!
//! ## Termination
//!
//! A runner stops when it has been idle long enough (asking the pool first,
//! so no call is ever cut off), when its parent is gone (connection closed or
//! heartbeats stopped), when it never reached its parent within the failsafe
//! timeout, or on SIGTERM; it drains calls in flight up to `shutdown_timeout`
//! first, then runs its backend's `system_shutdown` once and exits (code 0;
//! 3 when its parent refused it or never answered).
//!
//! A process started with `FLAME_PARENT` in its environment is a runner from
//! its first line: a pool it starts, even before [`run_if_runner`], boots no
//! runners of its own. Each side computes its own [`BuildId`] from the
//! functions it registers; a runner of another build is refused when it
//! connects, and the boot fails with both identities in the reason.

mod backends;
mod call;
mod child;
mod entry;
pub mod observe;
mod pool;

pub use backends::any::{AnyBackend, AnyState, UnknownBackend};
pub use backends::local::LocalBackend;
pub use backends::process::{ProcessBackend, ProcessState};
pub use call::CallOptions;
pub use child::Child;
pub use entry::{run_if_runner, serve_as_runner, serve_as_runner_with};
pub use observe::{EventsError, PoolEvents};
pub use pool::Pool;

#[cfg(feature = "docker")]
#[cfg_attr(docsrs, doc(cfg(feature = "docker")))]
pub use backends::docker;
#[cfg(feature = "fly")]
#[cfg_attr(docsrs, doc(cfg(feature = "fly")))]
pub use backends::fly;
#[cfg(feature = "docker")]
#[doc(no_inline)]
pub use docker::DockerBackend;
#[cfg(feature = "fly")]
#[doc(no_inline)]
pub use fly::FlyBackend;

#[doc(inline)]
pub use ractor_flame_actors::{
    Backend, BackendError, BootRetry, BuildId, CurrentCall, DownReason, Error, FnError, IdleShutdown, LinkTls, Parent,
    ParentError, PoolConfig, PoolEvent, PoolMessage, PoolStats, Registry, RemoteActor, RemoteFn, RunnerContext,
    RunnerId, StatefulFn, current_call, current_runner,
};

/// The Pool actor, for embedding in a supervision tree by hand.
pub use ractor_flame_actors::Pool as PoolActor;

/// A byte string argument or result (re-exported from `serde_bytes`).
///
/// Make large binary arguments a `ByteBuf`: it is sent as it lies and
/// received into a buffer of its own that becomes the function's argument,
/// with no copy on either side. A `Vec<u8>` is encoded as a list of numbers
/// instead (up to two bytes for each byte) and decoded one number at a time.
///
/// # Examples
///
/// ```
/// use ractor_flame::{ByteBuf, FnError, RemoteFn};
///
/// struct Checksum;
/// impl RemoteFn for Checksum {
///     const NAME: &'static str = "checksum";
///     type Args = ByteBuf;
///     type Output = u64;
///     async fn run(data: ByteBuf) -> Result<u64, FnError> {
///         Ok(data.iter().map(|b| u64::from(*b)).sum())
///     }
/// }
/// # let _ = ByteBuf::from(vec![1u8, 2, 3]);
/// ```
pub use serde_bytes::ByteBuf;

/// The level type [`PoolConfig::log`] takes (re-exported from `tracing`).
pub use tracing::Level;

/// The actor layer, for backend authors.
pub use ractor_flame_actors as actors;

/// The ractor crate this crate is built on (0.16, feature `tokio_runtime`).
///
/// Name ractor through this path (`ractor_flame::ractor::Actor`,
/// `ractor_flame::ractor::ActorRef`, ...) to be sure your supervisor and the
/// pool use the same ractor, or depend on the same version yourself.
pub use ractor_flame_actors::ractor;

/// The README's examples compile and run.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
