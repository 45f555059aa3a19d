//! What an application registers: remote functions ([`RemoteFn`],
//! [`StatefulFn`]), streaming functions ([`RemoteStream`]), placeable
//! actors ([`RemoteActor`]), the [`Registry`] both sides build, argument bytes ([`Args`]) and the context a body reads
//! ([`CurrentCall`]).

pub(crate) mod args;
pub(crate) mod context;
pub(crate) mod erased;
pub(crate) mod registry;
pub(crate) mod remote_fn;
pub(crate) mod states;
pub(crate) mod stream;

pub use args::Args;
pub use context::{CurrentCall, current_call, current_runner};
pub use registry::Registry;
pub use remote_fn::{RemoteActor, RemoteFn, StatefulFn};
pub use stream::{RemoteStream, StreamSender};
