//! What an application implements: [`RemoteFn`] (a named function a runner
//! runs), [`StatefulFn`] (one that also gets the runner's state) and
//! [`RemoteActor`] (a ractor actor a runner can host as a placed child).
//!
//! Rust cannot ship closures to another process, and FLAME's runners run the
//! same binary as the parent, so work is *named*: each has a stable name, a
//! serde argument and a serde output.

use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::FnError;

/// A function that runs on a runner.
///
/// # Examples
///
/// ```
/// use ractor_flame_actors::{FnError, RemoteFn};
///
/// struct Square;
///
/// impl RemoteFn for Square {
///     const NAME: &'static str = "square";
///     type Args = u64;
///     type Output = u64;
///
///     async fn run(n: u64) -> Result<u64, FnError> {
///         n.checked_mul(n).ok_or_else(|| FnError::msg("overflow"))
///     }
/// }
/// ```
pub trait RemoteFn: Send + Sync + 'static {
    /// The stable name the function is called by. Unique in a registry.
    const NAME: &'static str;
    /// The argument, encoded with rmp-serde on its way to the runner. An
    /// argument that is one [`serde_bytes::ByteBuf`] is not encoded: its
    /// bytes travel as they are, and are copied on neither side. Prefer it
    /// to `Vec<u8>` for binary data (a `Vec<u8>` encodes as a list of
    /// numbers).
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// The output, encoded with rmp-serde on its way back; a
    /// [`serde_bytes::ByteBuf`] travels as its bytes, as an argument does.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Whether the body is blocking or CPU-heavy work. A blocking body runs
    /// on the runtime's blocking thread pool (`spawn_blocking`), never on a
    /// worker that async work needs; it may compute or block for as long as
    /// its deadline allows and should poll
    /// [`current_call`](crate::current_call)`().is_cancelled()` between
    /// steps. Default `false`; [`Registry::register_blocking`](crate::Registry::register_blocking) sets it per
    /// registration.
    const BLOCKING: bool = false;

    /// The function's body: what every call or cast of this function runs,
    /// with the decoded argument.
    ///
    /// Where it runs depends on the backend:
    ///
    /// - **local**: in this process (inline in the caller's task, or on the
    ///   blocking pool for a blocking function);
    /// - **process and Docker**: in the runner process, as a task of the
    ///   application's runtime (or on its blocking pool for a blocking
    ///   function).
    ///
    /// It never runs on the thread that carries the connection to the
    /// parent, so a body that computes for seconds without an `.await`
    /// cannot make its runner miss a heartbeat. Still, such a body holds a
    /// worker thread for as long as it runs: mark CPU-heavy functions
    /// [`BLOCKING`](RemoteFn::BLOCKING).
    ///
    /// An async body is aborted (dropped at its next `.await`) at its deadline
    /// or when its caller cancels; a blocking body cannot be aborted and sees
    /// the same through [`CurrentCall::is_cancelled`](crate::CurrentCall::is_cancelled).
    /// Either way the call's slot stays taken until the body has returned.
    ///
    /// # Errors
    ///
    /// Return an [`FnError`] to fail the call: the caller gets
    /// [`Error::Remote`](crate::Error::Remote) with its kind and message
    /// (or [`Error::Deadline`](crate::Error::Deadline) when the call's
    /// deadline had passed by then). A panic in the body does not take the
    /// runner down; the caller gets [`Error::Panic`](crate::Error::Panic).
    fn run(args: Self::Args) -> impl Future<Output = Result<Self::Output, FnError>> + Send;
}

/// A ractor actor that can be placed on a runner with `place_child`.
///
/// Its arguments and the messages the parent may send travel through the
/// codec, so they are serde types; ractor messages themselves need not be
/// (a call carries an `RpcReplyPort`). `cast_message` and `call_message` turn
/// the wire types into the actor's own messages.
///
/// # Examples
///
/// ```
/// use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
/// use ractor_flame_actors::RemoteActor;
///
/// #[derive(Default)]
/// struct Counter;
///
/// enum CounterMsg {
///     Add(u64),
///     Get(RpcReplyPort<u64>),
/// }
///
/// impl Actor for Counter {
///     type Msg = CounterMsg;
///     type State = u64;
///     type Arguments = u64;
///     async fn pre_start(&self, _: ActorRef<CounterMsg>, start: u64) -> Result<u64, ActorProcessingErr> {
///         Ok(start)
///     }
///     async fn handle(&self, _: ActorRef<CounterMsg>, msg: CounterMsg, n: &mut u64) -> Result<(), ActorProcessingErr> {
///         match msg {
///             CounterMsg::Add(k) => *n += k,
///             CounterMsg::Get(reply) => { let _ = reply.send(*n); }
///         }
///         Ok(())
///     }
/// }
///
/// impl RemoteActor for Counter {
///     const NAME: &'static str = "counter";
///     type Cast = u64;
///     type Call = ();
///     type Reply = u64;
///     fn cast_message(k: u64) -> CounterMsg { CounterMsg::Add(k) }
///     fn call_message(_: (), reply: RpcReplyPort<u64>) -> CounterMsg { CounterMsg::Get(reply) }
/// }
/// ```
pub trait RemoteActor: ractor::Actor<Arguments: Serialize + DeserializeOwned> + Default {
    /// The stable name the actor type is placed by. Unique in a registry.
    const NAME: &'static str;
    /// What a cast carries.
    type Cast: Serialize + DeserializeOwned + Send + 'static;
    /// What a call carries.
    type Call: Serialize + DeserializeOwned + Send + 'static;
    /// What a call answers.
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// The actor's message for a cast.
    fn cast_message(msg: Self::Cast) -> Self::Msg;

    /// The actor's message for a call; the actor answers on `reply`.
    fn call_message(msg: Self::Call, reply: ractor::RpcReplyPort<Self::Reply>) -> Self::Msg;
}

/// A remote function with state: like [`RemoteFn`], and its body also gets
/// the runner's `Arc<State>`, built once per runner by the constructor
/// registered with [`Registry::with_state`](crate::Registry::with_state). Use it for what a function needs
/// and should not rebuild per call: a loaded model, a connection pool,
/// configuration.
///
/// Every `StatefulFn` is a [`RemoteFn`]: register it with
/// [`Registry::register`](crate::Registry::register) and call it with `pool.call::<F>(args)` as any
/// other.
///
/// # Errors
///
/// A call fails with the function's error when no state of type `State` is
/// registered (the message names the type).
///
/// # Examples
///
/// See [`Registry::with_state`](crate::Registry::with_state).
pub trait StatefulFn: Send + Sync + 'static {
    /// The stable name the function is called by. Unique in a registry.
    const NAME: &'static str;
    /// As [`RemoteFn::BLOCKING`].
    const BLOCKING: bool = false;
    /// The state the body gets (registered with [`Registry::with_state`](crate::Registry::with_state)).
    type State: Send + Sync + 'static;
    /// The argument.
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// The output.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// The function's body; runs as [`RemoteFn::run`] does.
    fn run(state: Arc<Self::State>, args: Self::Args) -> impl Future<Output = Result<Self::Output, FnError>> + Send;
}

impl<F: StatefulFn> RemoteFn for F {
    const NAME: &'static str = F::NAME;
    const BLOCKING: bool = F::BLOCKING;
    type Args = F::Args;
    type Output = F::Output;

    async fn run(args: Self::Args) -> Result<Self::Output, FnError> {
        let state = crate::func::context::current_call()
            .and_then(|call| call.state::<F::State>())
            .ok_or_else(|| {
                FnError::msg(format!(
                    "no state of type {} is registered (Registry::with_state)",
                    std::any::type_name::<F::State>()
                ))
            })?;
        <F as StatefulFn>::run(state, args).await
    }
}
