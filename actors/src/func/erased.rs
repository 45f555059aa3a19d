//! The registry's erased forms: what a registered function or actor becomes
//! so the runner's call engine can run it by name without knowing its
//! types (a handler from argument bytes to encoded output, a placer, the
//! cast and call of a placed actor), and why a run produced no output.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::{FnError, FnErrorKind};
use crate::func::args::{ArgBytes, Args, encode};
use crate::func::context::CurrentCall;
use crate::func::remote_fn::RemoteActor;

/// A placed actor, type-erased: how the runner talks to it.
pub(crate) struct Placed {
    pub(crate) cell: ractor::ActorCell,
    pub(crate) cast: CastFn,
    pub(crate) call: CallFn,
}

/// Decodes a cast and enqueues it on the actor.
pub(crate) type CastFn = Box<dyn Fn(&[u8]) -> Result<(), RunFailure> + Send + Sync>;
/// Decodes a call, enqueues it, and returns the wait for its reply.
pub(crate) type CallFn = Box<dyn Fn(&[u8]) -> Result<BoxFuture, RunFailure> + Send + Sync>;

impl fmt::Debug for Placed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Placed").field("actor", &self.cell.get_id()).finish()
    }
}

pub(crate) type PlaceFuture = Pin<Box<dyn Future<Output = Result<Placed, RunFailure>> + Send>>;
pub(crate) type Placer = Arc<dyn Fn(ArgBytes<'_>, ractor::ActorCell) -> PlaceFuture + Send + Sync>;

/// The outcome of running an encoded call, before it reaches the caller.
/// A call's output as it travels (encoded, or a `ByteBuf`'s bytes as they
/// are), or why there is none.
pub(crate) type Encoded = Result<Args, RunFailure>;

/// Why an encoded call produced no output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum RunFailure {
    /// The function returned an error of this kind.
    Returned(FnErrorKind, String),
    /// The function panicked (in its body, or in blocking work it awaited).
    Panicked(String),
    /// The arguments did not decode, or the output did not encode.
    Codec(String),
}

impl RunFailure {
    /// A failure of kind [`FnErrorKind::Internal`] with this message.
    pub(crate) fn returned(message: impl Into<String>) -> Self {
        RunFailure::Returned(FnErrorKind::Internal, message.into())
    }
}

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = Encoded> + Send>>;
pub(crate) type Handler = Arc<dyn Fn(ArgBytes<'_>, CurrentCall) -> BoxFuture + Send + Sync>;
pub(crate) type Predicate = Arc<dyn Fn() -> bool + Send + Sync>;

/// The erased face of a placed `A`.
pub(crate) fn placed<A: RemoteActor>(actor: ractor::ActorRef<A::Msg>) -> Placed {
    let cell = actor.get_cell();
    let for_cast = actor.clone();
    let cast = Box::new(move |bytes: &[u8]| {
        let msg = rmp_serde::from_slice::<A::Cast>(bytes).map_err(|e| RunFailure::Codec(format!("cast: {e}")))?;
        for_cast
            .send_message(A::cast_message(msg))
            .map_err(|_| RunFailure::returned("the actor is not running"))
    });
    let call = Box::new(move |bytes: &[u8]| {
        let msg = rmp_serde::from_slice::<A::Call>(bytes).map_err(|e| RunFailure::Codec(format!("call: {e}")))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Enqueued now, in order with the casts before it; answered later.
        actor
            .send_message(A::call_message(msg, tx.into()))
            .map_err(|_| RunFailure::returned("the actor is not running"))?;
        let reply: BoxFuture = Box::pin(async move {
            let reply = rx
                .await
                .map_err(|_| RunFailure::returned("the actor stopped before it answered"))?;
            encode(&reply)
                .map(Args::encoded)
                .map_err(|e| RunFailure::Codec(format!("reply: {e}")))
        });
        Ok(reply)
    });
    Placed { cell, cast, call }
}

impl From<FnError> for RunFailure {
    fn from(err: FnError) -> Self {
        if err.is_panic() {
            RunFailure::Panicked(err.message().to_owned())
        } else {
            RunFailure::Returned(err.kind(), err.message().to_owned())
        }
    }
}
