//! A call's own task. A body that did not finish in its first poll
//! (`start.rs`), or a blocking one, runs here until it ends or its deadline
//! passes; its result then goes to `end.rs`. [`run_until`] also bounds the
//! calls the local backend runs in the caller's task (`admit.rs`).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures_util::FutureExt as _;

use super::end::{Finish, end};
use crate::func::context::CurrentCall;
use crate::func::erased::BoxFuture;
use crate::wire::frame::Outcome;

/// Spawns a call's task (from a task of the work runtime) and gives the
/// call its abort handle; a stop that came first aborts it now.
pub(super) fn spawn(
    mut finish: Finish,
    work: BoxFuture,
    current: CurrentCall,
    deadline: Option<Instant>,
    blocking: bool,
    want_result: bool,
) {
    let call = current.clone();
    let handle = tokio::spawn(async move {
        let run = AssertUnwindSafe(work).catch_unwind();
        let result = if blocking {
            run_blocking(deadline, &current, run, &finish).await
        } else {
            run_until(deadline, run).await
        };
        end(&mut finish, result, want_result, &current);
    });
    // A blocking body is never aborted: it is told, and returns.
    if !blocking {
        call.spawned(handle.abort_handle());
    }
}

pub(super) type Caught = Result<crate::func::erased::Encoded, Box<dyn std::any::Any + Send>>;

/// Runs `work` until `deadline`; `None` when the deadline passed first (the
/// work is dropped then: an async body ends at its next `.await`).
pub(super) async fn run_until(deadline: Option<Instant>, work: impl Future<Output = Caught>) -> Option<Caught> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at.into(), work).await.ok(),
        None => Some(work.await),
    }
}

/// Runs blocking `work` to its end. At the deadline the body is told (its
/// call reads as cancelled) and the caller gets its deadline error at once,
/// but the call ends, and its slot returns, only when the body returns.
async fn run_blocking(
    deadline: Option<Instant>,
    call: &CurrentCall,
    work: impl Future<Output = Caught>,
    finish: &Finish,
) -> Option<Caught> {
    let Some(at) = deadline else {
        return Some(work.await);
    };
    let mut work = std::pin::pin!(work);
    tokio::select! {
        result = &mut work => Some(result),
        () = tokio::time::sleep_until(at.into()) => {
            call.cancel();
            finish.early(Outcome::Deadline);
            let _ = work.await;
            None
        }
    }
}
