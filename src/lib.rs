#![doc = include_str!("../docs/crate.md")]

mod backends;
mod call;
mod child;
mod entry;
pub mod observe;
mod pool;
mod retry;
mod stream;

pub use backends::any::{AnyBackend, AnyState, UnknownBackend};
pub use backends::local::LocalBackend;
pub use backends::process::{ProcessBackend, ProcessState};
pub use call::CallOptions;
pub use child::Child;
pub use entry::{run_if_runner, serve_as_runner, serve_as_runner_with};
pub use observe::{EventsError, PoolEvents};
pub use pool::Pool;
pub use retry::RetryPolicy;
pub use stream::{ItemStream, StreamOptions};

#[cfg(feature = "docker")]
#[cfg_attr(docsrs, doc(cfg(feature = "docker")))]
pub use backends::docker;
#[cfg(feature = "fly")]
#[cfg_attr(docsrs, doc(cfg(feature = "fly")))]
pub use backends::fly;
#[cfg(feature = "kubernetes")]
#[cfg_attr(docsrs, doc(cfg(feature = "kubernetes")))]
pub use backends::kubernetes;
#[cfg(feature = "docker")]
#[doc(no_inline)]
pub use docker::DockerBackend;
#[cfg(feature = "fly")]
#[doc(no_inline)]
pub use fly::FlyBackend;
#[cfg(feature = "kubernetes")]
#[doc(no_inline)]
pub use kubernetes::KubernetesBackend;

#[doc(inline)]
pub use ractor_flame_actors::{
    Backend, BackendError, BootRetry, BuildId, CurrentCall, DownReason, Error, FnError, FnErrorKind, IdleShutdown,
    LinkTls, Parent, ParentError, PoolConfig, PoolEvent, PoolMessage, PoolStats, Registry, RemoteActor, RemoteFn,
    RemoteStream, RunnerContext, RunnerId, RunnerNotifier, StatefulFn, StreamSender, current_call, current_runner,
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

/// A shared byte buffer (re-exported from the `bytes` crate; axum's and
/// hyper's `Bytes` is this type). As an argument it is sent as it lies:
/// an HTTP body goes to a runner with no copy on the parent, and arrives
/// there in a buffer of its own that becomes the function's `Bytes`. As an
/// output it leaves the runner without a copy when it is the only handle
/// of a buffer made from a `Vec` (`Bytes::from(vec)`), and is copied once
/// there otherwise. (On the local backend, where the runner is in the
/// caller's process, a `Bytes` argument is copied once, into the value the
/// function gets.)
///
/// # Examples
///
/// ```
/// use ractor_flame::{Bytes, FnError, RemoteFn};
///
/// struct Upper;
/// impl RemoteFn for Upper {
///     const NAME: &'static str = "upper";
///     type Args = Bytes;
///     type Output = Bytes;
///     async fn run(body: Bytes) -> Result<Bytes, FnError> {
///         Ok(Bytes::from(body.to_ascii_uppercase()))
///     }
/// }
/// # let _ = Bytes::from_static(b"x");
/// ```
pub use ractor_flame_actors::Bytes;

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

/// Guides, one subject each (the same text as the repository's `docs/`
/// folder).
pub mod guide {
    #[doc = include_str!("../docs/pools-and-calls.md")]
    pub mod pools_and_calls {}
    #[doc = include_str!("../docs/heavy-work.md")]
    pub mod heavy_work {}
    #[doc = include_str!("../docs/runners-and-termination.md")]
    pub mod runners_and_termination {}
    #[doc = include_str!("../docs/observability.md")]
    pub mod observability {}
    #[doc = include_str!("../docs/embedding.md")]
    pub mod embedding {}
    #[doc = include_str!("../docs/backends/local-and-process.md")]
    pub mod local_and_process {}
}

/// The README's examples compile and run.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
