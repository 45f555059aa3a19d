//! The actor layer of [ractor-flame](https://docs.rs/ractor-flame): the
//! Pool, Runner and Terminator actors and their typed messages, the
//! [`Backend`] trait the Runner calls, the wire protocol, the `FLAME_PARENT`
//! token ([`Parent`]) and the remote-function [`Registry`].
//!
//! Applications use the `ractor-flame` crate, which re-exports what they need
//! and adds the builders and the shipped backends. This crate is the stable
//! layer for backend authors: a backend implements [`Backend`], boots from a
//! [`RunnerContext`], reports to its Runner with [`RunnerContext::notify`],
//! and (for runners that connect over the network) describes its parent with
//! [`Endpoint::expect`].
//!
//! ```text
//!  caller ──checkout──▶ Pool ──spawn/boot──▶ Runner ──Backend callbacks──▶ (process, container)
//!    │  ◀──Lease──────┘                        ▲ RemoteUp                        │
//!    └────────── call frames on the runner connection ──────────▶ Terminator ◀──┘
//! ```
//!
//! # Map
//!
//! The folders say where code runs: [`on_parent`] in the application that
//! owns the pool, [`on_runner`] in a runner, [`wire`] is the protocol both
//! speak (it imports neither side), [`func`] is what an application
//! registers. The leaves import nothing of the crate but each other.
//!
//! | file | holds |
//! |---|---|
//! | `ids.rs` | [`RunnerId`], [`Token`], [`BuildId`], [`Fnv`]: identities (a leaf) |
//! | `error.rs` | [`Error`], [`DownReason`], [`FnError`], [`BackendError`], [`CodecError`] (a leaf) |
//! | `events.rs` | [`PoolEvent`], [`Hook`], [`EVENTS_CAPACITY`] |
//! | `config.rs` | [`PoolConfig`] and its option types, with their defaults |
//! | `flame_parent.rs` | [`Parent`]: the `FLAME_PARENT` value a runner is started with |
//! | `func/remote_fn.rs` | [`RemoteFn`], [`StatefulFn`], [`RemoteActor`]: what an application implements |
//! | `func/registry.rs` | [`Registry`]: what a binary serves, and its build identity |
//! | `func/erased.rs`, `func/states.rs` | what a registered function becomes for the call engine; a runner's states |
//! | `func/args.rs`, `func/context.rs` | [`Args`] as they travel; [`CurrentCall`], what a body reads |
//! | `wire/frame.rs`, `wire/codec.rs` | the message types; length-prefixed rmp-serde frames |
//! | `wire/connection.rs`, `wire/outbox.rs`, `wire/tls.rs` | one connection: reader, batching writer, TLS |
//! | `wire/thread.rs`, `wire/clock.rs` | the link thread every connection runs on; time for frames |
//! | `on_parent/pool.rs` (+ `pool/`) | the Pool actor, its decisions ([`PoolStats`]) and the slot [`Gate`] |
//! | `on_parent/runner.rs` | the [`Runner`](on_parent::Runner) actor: one per runner, runs the backend callbacks |
//! | `on_parent/backend.rs` | [`Backend`], [`RunnerContext`], [`RunnerNotifier`] |
//! | `on_parent/endpoint.rs` | [`Endpoint`]: the listener runners connect back to, the handshake |
//! | `on_parent/link.rs` (+ `link/`) | [`RunnerConn`]: a caller's call to one runner and its reply |
//! | `on_runner/terminator.rs` | the [`Terminator`](on_runner::Terminator) actor: when a runner ends |
//! | `on_runner/connect.rs` | dialing the parent, the handshake, frames in and out |
//! | `on_runner/serve.rs` (+ `serve/`) | [`Serve`](on_runner::Serve): the runner's call engine |
//! | `on_runner/children.rs` | placed children on the runner |
//! | `observe.rs` (+ `observe/`) | metric names, runner log records, trace context |
//!
//! # One call, end to end
//!
//! 1. **Checkout** (parent, the caller's task). The facade's `Pool::call`
//!    encodes the arguments (`func/args.rs`) and takes a slot: through the
//!    [`Gate`] when a booted runner has room (`on_parent/pool/gate.rs`), else
//!    with one round trip to the Pool actor (`on_parent/pool.rs`), which may
//!    queue the caller and boot a runner through its Runner
//!    (`on_parent/runner.rs`, `on_parent/backend.rs`). It gets a [`Lease`].
//! 2. **Send** (parent, the caller's task). The lease's connection
//!    (`on_parent/link/send.rs`) takes a call id, enters the call in the table
//!    of calls in flight (`link/pending.rs`) and tells the deadline watch
//!    (`link/deadlines.rs`); the frame (`wire/frame.rs`, `wire/codec.rs`) is
//!    written at once or queued for the link thread's writer
//!    (`wire/outbox.rs`, `wire/connection.rs`, `wire/tls.rs`,
//!    `wire/thread.rs`).
//! 3. **Run** (runner). The link thread's reader (`on_runner/connect.rs`)
//!    hands the frame to the call engine (`on_runner/serve.rs`): admitted on
//!    the link thread (`serve/admit.rs`), started by a helper on the
//!    application's runtime (`serve/helpers.rs`, `serve/start.rs`), the
//!    registered body run by name (`func/registry.rs`, `func/erased.rs`) with
//!    its [`CurrentCall`] (`func/context.rs`), in a task of its own when it
//!    waits (`serve/run.rs`); its end sends the reply (`serve/end.rs`).
//! 4. **Reply** (parent, the link thread, then the caller). The endpoint's
//!    reader (`on_parent/endpoint.rs`) routes the reply by call id to the
//!    table (`link/pending.rs`), which wakes the caller; `link/outcome.rs`
//!    turns the outcome into its result; dropping the lease checks the slot
//!    in (a cast to the Pool, or the gate's counter).
//!
//! # Words of the call path
//!
//! - **slot**: one of a runner's `max_concurrency` places; a checkout takes
//!   one, a checkin gives it back. It is free only when the work has ended
//!   on the runner.
//! - **lease**: a checked-out slot, held by a caller; its drop checks in.
//! - **lent**: a call borrows its caller's lease instead of taking it
//!   (`call_lent`); when the caller stops waiting first, the checkout is
//!   **handed on** to a lease of the connection's (`Lease::hand_on`).
//! - **held**: a call or cast that carries a lease with it (`call_held`,
//!   `cast_held`); the slot is checked in when the runner reports the end.
//! - **parked**: a slot whose caller has its answer or stopped waiting,
//!   kept in the table of calls in flight until the runner reports that the
//!   work is over.
//! - **early answer**: an outcome that reaches the caller before the work
//!   has ended (a blocking body's cancellation reply, the parent's own
//!   deadline); the entry stays **answered** until the end arrives.
//! - **settled**: a call's end, decided in one place on each side
//!   (`settle` on the parent, `Finish` on the runner), whatever ended it.
//! - **straight write**: a frame written from the sender's own thread
//!   because nothing was queued ahead of it, without waking the link thread.
//! - **bare**: a `ByteBuf` or `Bytes` argument or output that travels as its own bytes,
//!   neither encoded nor copied; a **split frame** carries such a payload
//!   after its head, into a buffer of its own.
//! - **link thread**: the one OS thread per process that runs every
//!   connection's I/O, heartbeats and the Terminators; no function body
//!   ever runs there.
//! - **helper**: a task on the application's runtime that starts the calls
//!   the link thread admitted.

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
    BootRetry, DEFAULT_CHILD_CAST_BYTES, DEFAULT_FAILSAFE, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_TIMEOUT,
    DEFAULT_IDLE_SHUTDOWN, DEFAULT_KEY_CAPACITY, DEFAULT_MAX_CONCURRENCY, DEFAULT_RELEASE_MEMORY_AFTER,
    DEFAULT_TIMEOUT, IdleShutdown, LinkTls, PoolConfig,
};
pub use error::{BackendError, CodecError, DownReason, Error, FnError, FnErrorKind};
pub use events::{EVENTS_CAPACITY, Hook, PoolEvent};
pub use flame_parent::{FLAME_PARENT, Parent, ParentError, RunnerSettings};
pub use func::{
    Args, CurrentCall, Registry, RemoteActor, RemoteFn, RemoteStream, StatefulFn, StreamSender, current_call,
    current_runner,
};
pub use ids::{BuildId, Fnv, RunnerId, Token};
pub use on_parent::endpoint::boot_in_process;
pub use on_parent::link::outcome_into_result;
pub use on_parent::pool::{Gate, Internal, PoolArguments, PoolMessage, PoolStats, Resize};
pub use on_parent::{
    Backend, CallRequest, CastBudget, Endpoint, Lease, Pool, RunnerConn, RunnerContext, RunnerNotifier, StreamCall,
    StreamRequest,
};
pub use wire::Fingerprint;

/// The shared byte buffer of the `bytes` crate (what axum and hyper hand
/// over as a body): an argument or output of this type travels as its
/// bytes, like a `ByteBuf`.
pub use bytes::Bytes;

/// Re-exported so backends and tests name the same ractor as this crate.
pub use ractor;
