//! Typed remote functions and the registry that names them.
//!
//! Rust cannot ship closures to another process, and FLAME's runners run the
//! same binary as the parent, so work is *named*: a [`RemoteFn`] has a stable
//! name, a serde argument and a serde output. Both sides run the same
//! registration code; the handshake compares a [`BuildId`] derived from the
//! registered names and types so a runner from another build is refused.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{FnError, panic_message};
pub(crate) use crate::func::args::ArgBytes;
use crate::func::args::Args;
use crate::func::args::encode;
use crate::func::context::CurrentCall;
use crate::ids::{BuildId, Fnv};

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
    /// steps. Default `false`; [`Registry::register_blocking`] sets it per
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
    /// [`Error::Remote`](crate::Error::Remote) with its message. A panic in
    /// the body does not take the runner down; the caller gets
    /// [`Error::Panic`](crate::Error::Panic).
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

type PlaceFuture = Pin<Box<dyn Future<Output = Result<Placed, RunFailure>> + Send>>;
type Placer = Arc<dyn Fn(ArgBytes<'_>, ractor::ActorCell) -> PlaceFuture + Send + Sync>;

/// The outcome of running an encoded call, before it reaches the caller.
/// A call's output as it travels (encoded, or a `ByteBuf`'s bytes as they
/// are), or why there is none.
pub(crate) type Encoded = Result<Args, RunFailure>;

/// Why an encoded call produced no output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum RunFailure {
    /// The function returned an error.
    Returned(String),
    /// The function panicked (in its body, or in blocking work it awaited).
    Panicked(String),
    /// The arguments did not decode, or the output did not encode.
    Codec(String),
}

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = Encoded> + Send>>;
type Handler = Arc<dyn Fn(ArgBytes<'_>, CurrentCall) -> BoxFuture + Send + Sync>;
type Predicate = Arc<dyn Fn() -> bool + Send + Sync>;

/// The functions a binary can run as a runner.
///
/// Cheap to clone. Build it once at the top of `main`, on the parent and the
/// runner alike (they run the same code).
///
/// # Examples
///
/// ```
/// use ractor_flame_actors::{FnError, Registry, RemoteFn};
///
/// struct Echo;
/// impl RemoteFn for Echo {
///     const NAME: &'static str = "echo";
///     type Args = String;
///     type Output = String;
///     async fn run(s: String) -> Result<String, FnError> { Ok(s) }
/// }
///
/// let registry = Registry::new().register::<Echo>();
/// assert!(registry.contains("echo"));
/// assert!(!registry.contains("missing"));
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    functions: BTreeMap<&'static str, Entry>,
    /// State constructors, by the state type's signature (a stable order for
    /// the build id).
    states: BTreeMap<String, (TypeId, StateBuilder)>,
    actors: BTreeMap<&'static str, (String, Placer)>,
    predicates: BTreeMap<String, Predicate>,
    app_version: Option<String>,
}

#[derive(Clone)]
struct Entry {
    signature: String,
    handler: Handler,
    blocking: bool,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("functions", &self.functions.keys().collect::<Vec<_>>())
            .field("actors", &self.actors.keys().collect::<Vec<_>>())
            .field("predicates", &self.predicates.keys().collect::<Vec<_>>())
            .field("states", &self.states.keys().collect::<Vec<_>>())
            .field("build_id", &self.build_id())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds `F`.
    ///
    /// # Panics
    ///
    /// When a function of the same name is already registered: two functions
    /// answering to one name is a programming error found at startup.
    #[track_caller]
    pub fn register<F: RemoteFn>(mut self) -> Self {
        self.insert::<F>(F::BLOCKING);
        self
    }

    /// Adds `F` as a blocking function, whatever its
    /// [`BLOCKING`](RemoteFn::BLOCKING) says: its body runs on the blocking
    /// thread pool of the runner's runtime, where CPU-heavy or blocking work
    /// cannot hold up async work.
    ///
    /// # Panics
    ///
    /// When a function of the same name is already registered.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame_actors::{FnError, Registry, RemoteFn};
    /// use serde_bytes::ByteBuf;
    ///
    /// struct Hash;
    /// impl RemoteFn for Hash {
    ///     const NAME: &'static str = "hash";
    ///     type Args = ByteBuf;
    ///     type Output = u64;
    ///     async fn run(bytes: ByteBuf) -> Result<u64, FnError> {
    ///         Ok(bytes.iter().fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(*b)))
    ///     }
    /// }
    ///
    /// let registry = Registry::new().register_blocking::<Hash>();
    /// assert!(registry.contains("hash"));
    /// ```
    #[track_caller]
    pub fn register_blocking<F: RemoteFn>(mut self) -> Self {
        self.insert::<F>(true);
        self
    }

    #[track_caller]
    fn insert<F: RemoteFn>(&mut self, blocking: bool) {
        let signature = format!("{}({})->{}", F::NAME, type_sig::<F::Args>(), type_sig::<F::Output>());
        let handler: Handler = if blocking {
            Arc::new(|bytes: ArgBytes<'_>, call: CurrentCall| {
                let args = bytes.decode::<F::Args>();
                Box::pin(async move {
                    let args = args.map_err(|e| RunFailure::Codec(format!("arguments: {e}")))?;
                    // The body runs on a blocking thread, inside the runtime
                    // (it may still use tokio), with its call as the current
                    // one. Awaiting the join is the only way its end is known.
                    let runtime = tokio::runtime::Handle::current();
                    let joined = tokio::task::spawn_blocking(move || runtime.block_on(call.scope(F::run(args)))).await;
                    let output = match joined {
                        Ok(result) => result.map_err(RunFailure::from)?,
                        Err(e) if e.is_panic() => return Err(RunFailure::Panicked(panic_message(&*e.into_panic()))),
                        Err(e) => return Err(RunFailure::Returned(e.to_string())),
                    };
                    Args::encode(output).map_err(|e| RunFailure::Codec(format!("output: {e}")))
                })
            })
        } else {
            Arc::new(|bytes: ArgBytes<'_>, call: CurrentCall| {
                let args = bytes.decode::<F::Args>();
                Box::pin(call.scope(async move {
                    let args = args.map_err(|e| RunFailure::Codec(format!("arguments: {e}")))?;
                    let output = F::run(args).await.map_err(RunFailure::from)?;
                    Args::encode(output).map_err(|e| RunFailure::Codec(format!("output: {e}")))
                }))
            })
        };
        let entry = Entry {
            signature,
            handler,
            blocking,
        };
        let previous = self.functions.insert(F::NAME, entry);
        assert!(previous.is_none(), "remote function `{}` registered twice", F::NAME);
    }

    /// Adds the placeable actor type `A` (see
    /// [`RemoteActor`]).
    ///
    /// # Panics
    ///
    /// When an actor type of the same name is already registered.
    #[track_caller]
    pub fn register_actor<A: RemoteActor>(mut self) -> Self {
        let signature = format!(
            "actor {}({})<{},{}>{}",
            A::NAME,
            type_sig::<A::Arguments>(),
            type_sig::<A::Cast>(),
            type_sig::<A::Call>(),
            type_sig::<A::Reply>()
        );
        let placer: Placer = Arc::new(|bytes: ArgBytes<'_>, supervisor: ractor::ActorCell| {
            let args = bytes.decode::<A::Arguments>();
            Box::pin(async move {
                let args = args.map_err(|e| RunFailure::Codec(format!("actor arguments: {e}")))?;
                let (actor, _) = ractor::Actor::spawn_linked(None, A::default(), args, supervisor)
                    .await
                    .map_err(|e| RunFailure::Returned(format!("actor did not start: {e}")))?;
                Ok(placed::<A>(actor))
            })
        });
        let previous = self.actors.insert(A::NAME, (signature, placer));
        assert!(previous.is_none(), "remote actor `{}` registered twice", A::NAME);
        self
    }

    /// Registers the state of type `S` that [`StatefulFn`]s use: built once
    /// per runner, on the runner, when it starts (before it connects to its
    /// parent), by `build`, which may be async and may fail; every call then
    /// gets the same `Arc<S>`. A failure is the runner's boot error: the
    /// pool's `BootFailed` carries its message. Nothing is built on a
    /// parent that only calls.
    ///
    /// # Panics
    ///
    /// When a state of type `S` is already registered.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use ractor_flame_actors::{FnError, Registry, StatefulFn};
    ///
    /// struct Model { weights: Vec<f32> }
    ///
    /// struct Infer;
    /// impl StatefulFn for Infer {
    ///     const NAME: &'static str = "infer";
    ///     type State = Model;
    ///     type Args = f32;
    ///     type Output = f32;
    ///     async fn run(model: Arc<Model>, x: f32) -> Result<f32, FnError> {
    ///         Ok(model.weights.iter().map(|w| w * x).sum())
    ///     }
    /// }
    ///
    /// let registry = Registry::new()
    ///     .with_state(|| async { Ok::<_, FnError>(Model { weights: vec![0.5, 0.25] }) })
    ///     .register::<Infer>();
    /// assert!(registry.contains("infer"));
    /// ```
    #[track_caller]
    pub fn with_state<S, B, Fut, E>(mut self, build: B) -> Self
    where
        S: Send + Sync + 'static,
        B: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, E>> + Send + 'static,
        E: fmt::Display,
    {
        let signature = type_sig::<S>();
        let builder: StateBuilder = Arc::new(move || {
            let building = build();
            Box::pin(async move {
                building
                    .await
                    .map(|s| Arc::new(s) as Arc<dyn Any + Send + Sync>)
                    .map_err(|e| format!("state {}: {e}", std::any::type_name::<S>()))
            })
        });
        let previous = self.states.insert(signature, (TypeId::of::<S>(), builder));
        assert!(
            previous.is_none(),
            "state {} registered twice",
            std::any::type_name::<S>()
        );
        self
    }

    /// Builds every registered state (on a runner, at its start).
    pub(crate) async fn build_states(&self) -> Result<States, String> {
        let mut states = States::default();
        for (type_id, build) in self.states.values() {
            states.0.insert(*type_id, build().await?);
        }
        Ok(states)
    }

    /// Registers a named predicate for
    /// [`IdleShutdown::AfterWhen`](crate::IdleShutdown::AfterWhen): the runner
    /// idles down only when it returns `true`.
    pub fn idle_predicate(
        mut self,
        name: impl Into<String>,
        predicate: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicates.insert(name.into(), Arc::new(predicate));
        self
    }

    /// Mixes an application version into the [`BuildId`], so runners of an
    /// older deployment are refused even when their functions look alike.
    pub fn app_version(mut self, version: impl Into<String>) -> Self {
        self.app_version = Some(version.into());
        self
    }

    /// Whether a function of this name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.functions.contains_key(name)
    }

    /// The identity of this build: names, argument and output types of every
    /// function and actor (type names and layouts), the crate and protocol
    /// versions and the application version. Parent and runner each compute
    /// their own; a runner whose identity differs is refused when it
    /// connects. Set [`Registry::app_version`] to tell apart builds whose
    /// functions look alike but behave differently.
    pub fn build_id(&self) -> BuildId {
        let mut h = Fnv::new();
        h.write(crate::wire::PROTOCOL_VERSION.to_le_bytes().as_slice());
        h.write(env!("CARGO_PKG_VERSION").as_bytes());
        if let Some(v) = &self.app_version {
            h.write(v.as_bytes());
        }
        for entry in self.functions.values() {
            h.write(entry.signature.as_bytes());
            h.write(&[0]);
        }
        for (signature, _) in self.actors.values() {
            h.write(signature.as_bytes());
            h.write(&[0]);
        }
        for signature in self.states.keys() {
            h.write(b"state ");
            h.write(signature.as_bytes());
            h.write(&[0]);
        }
        BuildId(h.finish())
    }

    /// The registry's own copy of a function's name, and whether it runs on
    /// the blocking pool; `None` if unknown.
    pub(crate) fn key(&self, name: &str) -> Option<(&'static str, bool)> {
        self.functions.get_key_value(name).map(|(key, e)| (*key, e.blocking))
    }

    /// Starts the named function on encoded arguments, and tells whether it
    /// runs on the blocking pool; `None` if unknown.
    pub(crate) fn start(&self, name: &str, args: ArgBytes<'_>, call: CurrentCall) -> Option<(BoxFuture, bool)> {
        self.functions.get(name).map(|e| ((e.handler)(args, call), e.blocking))
    }

    /// Whether the named function runs on the blocking pool.
    pub(crate) fn is_blocking(&self, name: &str) -> bool {
        self.functions.get(name).is_some_and(|e| e.blocking)
    }

    /// Starts placing the named actor type; `None` if unknown.
    pub(crate) fn place(&self, name: &str, args: ArgBytes<'_>, supervisor: ractor::ActorCell) -> Option<PlaceFuture> {
        self.actors.get(name).map(|(_, placer)| placer(args, supervisor))
    }

    /// Whether an idle predicate of this name is registered.
    pub fn has_idle_predicate(&self, name: &str) -> bool {
        self.predicates.contains_key(name)
    }

    /// Runs the named predicate; an unknown name counts as "not yet".
    pub(crate) fn predicate_holds(&self, name: &str) -> bool {
        match self.predicates.get(name) {
            Some(p) => p(),
            None => {
                tracing::warn!(target: "ractor_flame::terminator", predicate = name, "unknown idle predicate");
                false
            }
        }
    }
}

type StateFuture = Pin<Box<dyn Future<Output = Result<Arc<dyn Any + Send + Sync>, String>> + Send>>;
type StateBuilder = Arc<dyn Fn() -> StateFuture + Send + Sync>;

/// The states of one runner, by type.
#[derive(Default)]
pub(crate) struct States(HashMap<TypeId, Arc<dyn Any + Send + Sync>>);

impl fmt::Debug for States {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "States({})", self.0.len())
    }
}

impl States {
    pub(crate) fn get<S: Send + Sync + 'static>(&self) -> Option<Arc<S>> {
        self.0.get(&TypeId::of::<S>())?.clone().downcast::<S>().ok()
    }
}

/// A remote function with state: like [`RemoteFn`], and its body also gets
/// the runner's `Arc<State>`, built once per runner by the constructor
/// registered with [`Registry::with_state`]. Use it for what a function needs
/// and should not rebuild per call: a loaded model, a connection pool,
/// configuration.
///
/// Every `StatefulFn` is a [`RemoteFn`]: register it with
/// [`Registry::register`] and call it with `pool.call::<F>(args)` as any
/// other.
///
/// # Errors
///
/// A call fails with the function's error when no state of type `State` is
/// registered (the message names the type).
///
/// # Examples
///
/// See [`Registry::with_state`].
pub trait StatefulFn: Send + Sync + 'static {
    /// The stable name the function is called by. Unique in a registry.
    const NAME: &'static str;
    /// As [`RemoteFn::BLOCKING`].
    const BLOCKING: bool = false;
    /// The state the body gets (registered with [`Registry::with_state`]).
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

/// The erased face of a placed `A`.
fn placed<A: RemoteActor>(actor: ractor::ActorRef<A::Msg>) -> Placed {
    let cell = actor.get_cell();
    let for_cast = actor.clone();
    let cast = Box::new(move |bytes: &[u8]| {
        let msg = rmp_serde::from_slice::<A::Cast>(bytes).map_err(|e| RunFailure::Codec(format!("cast: {e}")))?;
        for_cast
            .send_message(A::cast_message(msg))
            .map_err(|_| RunFailure::Returned("the actor is not running".into()))
    });
    let call = Box::new(move |bytes: &[u8]| {
        let msg = rmp_serde::from_slice::<A::Call>(bytes).map_err(|e| RunFailure::Codec(format!("call: {e}")))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Enqueued now, in order with the casts before it; answered later.
        actor
            .send_message(A::call_message(msg, tx.into()))
            .map_err(|_| RunFailure::Returned("the actor is not running".into()))?;
        let reply: BoxFuture = Box::pin(async move {
            let reply = rx
                .await
                .map_err(|_| RunFailure::Returned("the actor stopped before it answered".into()))?;
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
            RunFailure::Returned(err.message().to_owned())
        }
    }
}

/// How a type enters the [`BuildId`]: its name without module paths (the
/// same type has other paths in a test harness and its runner binary, or
/// after a module moves) plus its size and alignment, which change with most
/// changes of its fields.
fn type_sig<T>() -> String {
    let name = std::any::type_name::<T>();
    let mut short = String::with_capacity(name.len());
    let mut segment = String::new();
    for c in name.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            segment.push(c);
        } else {
            short.push_str(segment.rsplit("::").next().unwrap_or(""));
            segment.clear();
            short.push(c);
        }
    }
    short.push_str(segment.rsplit("::").next().unwrap_or(""));
    format!("{short}/{}/{}", std::mem::size_of::<T>(), std::mem::align_of::<T>())
}

#[cfg(test)]
mod tests {
    use super::type_sig;

    #[test]
    fn type_signatures_ignore_module_paths_but_not_shape() {
        mod a {
            pub(super) struct Args(pub(super) u64);
        }
        mod b {
            pub(super) struct Args(pub(super) u64);
        }
        mod c {
            pub(super) struct Args(pub(super) u64, pub(super) u64);
        }
        assert_eq!(type_sig::<a::Args>(), type_sig::<b::Args>());
        assert_ne!(type_sig::<a::Args>(), type_sig::<c::Args>());
        assert_eq!(type_sig::<Vec<a::Args>>(), "Vec<Args>/24/8");
        assert_ne!(type_sig::<u32>(), type_sig::<u64>());
        let _ = (a::Args(1).0, b::Args(1).0, c::Args(1, 2).0, c::Args(1, 2).1);
    }
}
