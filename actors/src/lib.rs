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

mod config;
mod error;
pub mod events;
mod flame_parent;
pub mod func;
pub mod ids;
pub mod observe;
pub mod on_parent;
pub mod on_runner;
pub mod wire;

pub use config::{
    BootRetry, DEFAULT_FAILSAFE, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_IDLE_SHUTDOWN,
    DEFAULT_MAX_CONCURRENCY, DEFAULT_TIMEOUT, IdleShutdown, LinkTls, PoolConfig,
};
pub use error::{BackendError, CodecError, DownReason, Error, FnError};
pub use events::{EVENTS_CAPACITY, Hook, PoolEvent};
pub use flame_parent::{FLAME_PARENT, Parent, ParentError, RunnerSettings};
pub use func::{Args, CurrentCall, Registry, RemoteActor, RemoteFn, StatefulFn, current_call, current_runner};
pub use ids::{BuildId, Fnv, RunnerId, Token};
pub use on_parent::endpoint::boot_in_process;
pub use on_parent::link::outcome_into_result;
pub use on_parent::pool::{Gate, Internal, PoolArguments, PoolMessage, PoolStats};
pub use on_parent::{Backend, CallRequest, Endpoint, Lease, Pool, RunnerConn, RunnerContext, RunnerNotifier};
pub use wire::Fingerprint;

/// Re-exported so backends and tests name the same ractor as this crate.
pub use ractor;
