//! The actor layer of [ractor-flame](https://docs.rs/ractor-flame): the
//! Pool, Runner and Terminator actors and their typed messages, the
//! [`Backend`] trait the Runner calls, the wire protocol, the `FLAME_PARENT`
//! token ([`Parent`]) and the remote-function [`Registry`].
//!
//! Applications use the `ractor-flame` crate, which re-exports what they need
//! and adds the builders and the shipped backends. This crate is the stable
//! layer for backend authors.
//!
//! ```text
//!  caller ──checkout──▶ Pool ──spawn/boot──▶ Runner ──Backend callbacks──▶ (process, container)
//!    │  ◀──Lease──────┘                        ▲ RemoteUp                        │
//!    └────────── call frames on the runner connection ──────────▶ Terminator ◀──┘
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod args;
mod backend;
mod config;
mod context;
mod endpoint;
mod error;
mod ids;
mod link;
pub mod observe;
mod parent;
mod pool;
mod registry;
#[doc(hidden)]
pub mod runner;
#[doc(hidden)]
pub mod terminator;
pub mod wire;

pub use args::Args;
pub use backend::{Backend, RunnerContext};
pub use config::{
    BootRetry, DEFAULT_FAILSAFE, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_IDLE_SHUTDOWN,
    DEFAULT_MAX_CONCURRENCY, DEFAULT_TIMEOUT, Hook, IdleShutdown, LinkTls, PoolConfig, PoolEvent,
};
pub use context::{CurrentCall, current_call, current_runner};
pub use endpoint::Endpoint;
#[doc(hidden)]
pub use endpoint::boot_in_process;
pub use error::{BackendError, DownReason, Error, FnError};
pub use link::{CallRequest, RunnerConn, outcome_into_result};
pub use parent::{FLAME_PARENT, Parent, ParentError, RunnerId, RunnerSettings, Token};
pub use pool::{EVENTS_CAPACITY, Gate, Internal, Lease, Pool, PoolArguments, PoolMessage, PoolStats};
#[doc(hidden)]
pub use registry::Fnv;
pub use registry::{BuildId, Registry, RemoteActor, RemoteFn, StatefulFn};
pub use wire::Fingerprint;

/// Re-exported so backends and tests name the same ractor as this crate.
pub use ractor;
