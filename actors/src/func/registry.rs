//! The [`Registry`]: the functions, actors, states and idle predicates a
//! binary serves as a runner, by name. Both sides run the same registration
//! code; the handshake compares a [`BuildId`] derived from the registered
//! names and types so a runner from another build is refused.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use crate::error::panic_message;
use crate::func::args::{ArgBytes, Args};
use crate::func::context::CurrentCall;
use crate::func::erased::{BoxFuture, Handler, PlaceFuture, Placer, Predicate, RunFailure, placed};
use crate::func::remote_fn::{RemoteActor, RemoteFn};
use crate::func::states::{StateBuilder, States};
use crate::func::stream::{RemoteStream, StreamSender};
use crate::ids::{BuildId, Fnv};

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
    /// Looked up by name on every call: hashed (FNV), not searched.
    functions: HashMap<&'static str, Entry, BuildHasherDefault<Fnv>>,
    /// State constructors, by the state type's signature (a stable order for
    /// the build id).
    states: BTreeMap<String, (TypeId, StateBuilder)>,
    actors: BTreeMap<&'static str, (String, Placer)>,
    predicates: BTreeMap<String, Predicate>,
    app_version: Option<String>,
}

/// A registered function: how it starts, and how it runs.
#[derive(Clone)]
pub(crate) struct Entry {
    signature: String,
    handler: Handler,
    blocking: bool,
    /// A [`RemoteStream`]: its calls get a sink for their items.
    stream: bool,
}

impl Entry {
    /// Whether the function runs on the blocking pool.
    pub(crate) fn blocking(&self) -> bool {
        self.blocking
    }

    /// Starts the function on encoded arguments.
    pub(crate) fn start(&self, args: ArgBytes<'_>, call: CurrentCall) -> BoxFuture {
        (self.handler)(args, call)
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("functions", &self.function_names())
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
                        Err(e) => return Err(RunFailure::returned(e.to_string())),
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
            stream: false,
        };
        let previous = self.functions.insert(F::NAME, entry);
        assert!(previous.is_none(), "remote function `{}` registered twice", F::NAME);
    }

    /// Adds the streaming function `S` (see [`RemoteStream`]).
    ///
    /// # Panics
    ///
    /// When a function or stream of the same name is already registered.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame_actors::{FnError, Registry, RemoteStream, StreamSender};
    ///
    /// struct Ticks;
    /// impl RemoteStream for Ticks {
    ///     const NAME: &'static str = "ticks";
    ///     type Args = u32;
    ///     type Item = u32;
    ///     async fn run(n: u32, items: StreamSender<u32>) -> Result<(), FnError> {
    ///         for i in 0..n {
    ///             items.send(i).await?;
    ///         }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let registry = Registry::new().register_stream::<Ticks>();
    /// assert!(registry.contains("ticks"));
    /// ```
    #[track_caller]
    pub fn register_stream<S: RemoteStream>(mut self) -> Self {
        let signature = format!(
            "stream {}({})->{}",
            S::NAME,
            type_sig::<S::Args>(),
            type_sig::<S::Item>()
        );
        let handler: Handler = Arc::new(|bytes: ArgBytes<'_>, call: CurrentCall| {
            let args = bytes.decode::<S::Args>();
            let items = StreamSender::<S::Item>::new(call.clone());
            let body = async move {
                let args = args.map_err(|e| RunFailure::Codec(format!("arguments: {e}")))?;
                let items = items.ok_or_else(|| RunFailure::returned("a stream called as a function"))?;
                S::run(args, items).await.map_err(RunFailure::from)?;
                Ok(Args::default())
            };
            if !S::BLOCKING {
                return Box::pin(call.scope(body));
            }
            Box::pin(async move {
                let runtime = tokio::runtime::Handle::current();
                let joined = tokio::task::spawn_blocking(move || runtime.block_on(call.scope(body))).await;
                match joined {
                    Ok(result) => result,
                    Err(e) if e.is_panic() => Err(RunFailure::Panicked(panic_message(&*e.into_panic()))),
                    Err(e) => Err(RunFailure::returned(e.to_string())),
                }
            })
        });
        let entry = Entry {
            signature,
            handler,
            blocking: S::BLOCKING,
            stream: true,
        };
        let previous = self.functions.insert(S::NAME, entry);
        assert!(previous.is_none(), "remote function `{}` registered twice", S::NAME);
        self
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
                    .map_err(|e| RunFailure::returned(format!("actor did not start: {e}")))?;
                Ok(placed::<A>(actor))
            })
        });
        let previous = self.actors.insert(A::NAME, (signature, placer));
        assert!(previous.is_none(), "remote actor `{}` registered twice", A::NAME);
        self
    }

    /// Registers the state of type `S` that [`StatefulFn`](crate::StatefulFn)s use: built once
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
            states.insert(*type_id, build().await?);
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
        for name in self.function_names() {
            h.write(self.functions[name].signature.as_bytes());
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

    /// The functions' names, in order (a stable order for the build id).
    fn function_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.functions.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// The registry's own copy of a function's name, whether it runs on the
    /// blocking pool, and whether it is a stream; `None` if unknown.
    pub(crate) fn key(&self, name: &str) -> Option<(&'static str, bool, bool)> {
        self.functions
            .get_key_value(name)
            .map(|(key, e)| (*key, e.blocking, e.stream))
    }

    /// Starts the named function on encoded arguments, and tells whether it
    /// runs on the blocking pool; `None` if unknown.
    pub(crate) fn start(&self, name: &str, args: ArgBytes<'_>, call: CurrentCall) -> Option<(BoxFuture, bool)> {
        self.functions.get(name).map(|e| ((e.handler)(args, call), e.blocking))
    }

    /// The named function, if registered: one lookup for a caller that
    /// asks how it runs and then starts it.
    pub(crate) fn function(&self, name: &str) -> Option<&Entry> {
        self.functions.get(name)
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

    /// Twenty functions whose signatures differ (the arguments' arity), so
    /// that their order shows in the build id.
    macro_rules! functions {
        ($($name:ident $args:ty),*) => {
            $(
                struct $name;
                impl crate::RemoteFn for $name {
                    const NAME: &'static str = stringify!($name);
                    type Args = $args;
                    type Output = ();
                    async fn run(_: $args) -> Result<(), crate::FnError> {
                        Ok(())
                    }
                }
            )*
            fn forwards() -> super::Registry {
                super::Registry::new()$(.register::<$name>())*
            }
            fn backwards() -> super::Registry {
                let mut registry = super::Registry::new();
                let mut each: Vec<fn(super::Registry) -> super::Registry> =
                    vec![$(|r| r.register::<$name>()),*];
                each.reverse();
                for register in each {
                    registry = register(registry);
                }
                registry
            }
        };
    }

    functions!(
        F01 (u8,), F02 (u8, u8), F03 (u8, u8, u8), F04 u16, F05 (u16, u16), F06 u32, F07 (u32, u32),
        F08 u64, F09 (u64, u64), F10 i8, F11 i16, F12 i32, F13 i64, F14 String, F15 (String, u8),
        F16 Vec<u8>, F17 Vec<u16>, F18 bool, F19 (bool, bool), F20 char
    );

    #[test]
    fn the_build_id_does_not_depend_on_the_order_of_registration() {
        let (forwards, backwards) = (forwards(), backwards());
        assert_eq!(forwards.build_id(), backwards.build_id());
        assert_ne!(forwards.build_id(), super::Registry::new().register::<F01>().build_id());
        assert!(forwards.function("F20").is_some() && forwards.function("F21").is_none());
    }
}
