//! Code that runs in the runner: the Terminator actor (its life: connect,
//! failsafe, idle, parent loss, drain), the call engine [`Serve`], and the
//! placed children it hosts.
//!
//! | file | holds |
//! |---|---|
//! | `terminator.rs` | the Terminator actor and when a runner ends |
//! | `connect.rs` | dialing the parent, the handshake, the frames in and out |
//! | `serve.rs` (+ `serve/`) | the call engine: `admit.rs`, `helpers.rs`, `start.rs`, `run.rs`, `end.rs`, `stop.rs` |
//! | `children.rs` | placed children: start, messages, watches |
//! | `tidy.rs` | an idle runner gives memory back |
//! | `idle_clock.rs` | the clock of idle time (a leaf) |

mod children;
mod connect;
mod idle_clock;
mod serve;
mod terminator;
mod tidy;

pub(crate) use serve::Release;
pub use serve::Serve;
pub use terminator::{
    SystemShutdown, Terminator, TerminatorArguments, TerminatorLink, TerminatorMessage, TerminatorState, spawn_on_link,
    spawn_terminator,
};
