//! The shipped backends, one module each: where a runner runs.
//!
//! | module | a runner is |
//! |---|---|
//! | `local` | a Terminator in this process |
//! | `process` | a child process of this executable |
//! | `docker` (+ `docker/`) | a container of an image made from this executable, on one or more engines |
//! | `fly` (+ `fly/`) | a Fly.io Machine |
//! | `kubernetes` (+ `kubernetes/`) | a Kubernetes pod |
//! | `any` | one of the above, chosen at run time by name |
//!
//! Each uses only the public surface of the actors crate ([`Backend`],
//! [`RunnerContext`] and its notifier, [`Endpoint`]): a backend of your own
//! is written the same way.
//!
//! [`Backend`]: crate::Backend
//! [`RunnerContext`]: crate::RunnerContext
//! [`Endpoint`]: crate::actors::Endpoint

pub(crate) mod any;
#[cfg(feature = "docker")]
#[cfg_attr(docsrs, doc(cfg(feature = "docker")))]
pub mod docker;
#[cfg(feature = "fly")]
#[cfg_attr(docsrs, doc(cfg(feature = "fly")))]
pub mod fly;
#[cfg(feature = "kubernetes")]
#[cfg_attr(docsrs, doc(cfg(feature = "kubernetes")))]
pub mod kubernetes;
pub(crate) mod local;
pub(crate) mod process;
