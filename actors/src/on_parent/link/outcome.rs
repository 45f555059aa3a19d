//! The last step of a call: its runner's outcome as the caller's result.
//!
//! The outcome comes back from `send.rs` (the caller's wait, answered
//! through `pending.rs`). Callers that send their own [`CallRequest`](crate::CallRequest)s (the
//! facade's pool and placed children, backends) turn it into a result or an
//! [`Error`] here, and so does `pending.rs` for a cast nobody awaits.

use std::time::Duration;

use crate::error::{DownReason, Error};
use crate::func::args::Args;
use crate::wire::frame::Outcome;

/// Turns a runner's outcome into the caller's result: the encoded output
/// (empty for an outcome that carries none). Backends and handles that send
/// their own [`CallRequest`](crate::CallRequest)s use it to report the outcome the way
/// `Pool::call` does.
///
/// # Errors
///
/// [`Error::Remote`] when the function returned an error, [`Error::Panic`]
/// when it panicked, [`Error::Deadline`] (with `timeout`) when its deadline
/// passed, [`Error::UnknownFunction`], [`Error::Codec`],
/// [`Error::RunnerDown`] with [`DownReason::ShuttingDown`] when a stopping
/// runner refused or aborted it, and [`Error::ChildStopped`] for a placed
/// child that stopped.
pub fn outcome_into_result(outcome: Outcome, function: &str, timeout: Duration) -> Result<Args, Error> {
    // Named only on the way out of a failure: a success allocates nothing.
    let function = || function.to_owned();
    match outcome {
        Outcome::Ok(bytes) => Ok(Args::encoded(bytes)),
        Outcome::OkBare(bytes) => Ok(Args::bare(bytes)),
        Outcome::Done => Ok(Args::default()),
        Outcome::Returned { kind, message } => Err(Error::Remote {
            function: function(),
            kind,
            message,
        }),
        Outcome::Panicked(message) => Err(Error::Panic {
            function: function(),
            message,
        }),
        Outcome::Deadline => Err(Error::Deadline {
            function: function(),
            timeout,
        }),
        Outcome::UnknownFunction => Err(Error::UnknownFunction { function: function() }),
        Outcome::Codec(message) => Err(Error::Codec(message)),
        // Refused while draining, or aborted by a runner that is stopping.
        Outcome::Refused | Outcome::Aborted => Err(Error::RunnerDown {
            reason: DownReason::ShuttingDown,
        }),
        Outcome::ChildStopped(reason) => Err(Error::ChildStopped { reason }),
    }
}
