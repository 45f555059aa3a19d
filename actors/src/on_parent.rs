//! Code that runs in the parent: the Pool and Runner actors, the [`Backend`]
//! trait their Runner calls, the listener runners connect back to
//! ([`Endpoint`]), and the parent's end of each runner's connection
//! ([`RunnerConn`]).
//!
//! | file | holds |
//! |---|---|
//! | `pool.rs` (+ `pool/`) | the Pool actor: runner set, FIFO queue, growth, [`Lease`]; `pool/state.rs` its decisions, `pool/gate.rs` the slot gate callers check out through |
//! | `runner.rs` | the Runner actor: one per runner, holds the backend state, runs the backend callbacks |
//! | `backend.rs` | the [`Backend`] trait and the [`RunnerContext`] a backend boots from |
//! | `endpoint.rs` | the listener, the handshake, and the in-process boot of the local backend |
//! | `link.rs` (+ `link/`) | a caller's call to one runner and its reply: `send.rs`, `pending.rs` (the calls in flight), `deadlines.rs` (the parent's own deadline watch), `records.rs` (runner log records), `children.rs` (placed children's exits), `stream.rs` (streaming calls' items and credit), `close.rs`, `outcome.rs` |

pub(crate) mod backend;
pub(crate) mod endpoint;
pub(crate) mod link;
pub(crate) mod pool;
pub(crate) mod runner;

pub use backend::{Backend, RunnerContext, RunnerNotifier};
pub use endpoint::Endpoint;
pub use link::{CallRequest, CastBudget, RunnerConn, StreamCall, StreamRequest};
pub use pool::{Lease, Pool};
pub use runner::{RemoteShutdownReason, Runner, RunnerArguments, RunnerMessage, RunnerState};
