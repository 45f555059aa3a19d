//! Placed children: long-lived ractor actors started on a runner with
//! [`Pool::place_child`](crate::Pool::place_child) (FLAME's third verb).

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor_flame_actors::wire::{CHILD_CALL, CHILD_STOP, ChildEnvelope};
use ractor_flame_actors::{
    Args, CallRequest, CastBudget, Error, Lease, RemoteActor, RunnerConn, RunnerId, outcome_into_result,
};
use tokio::sync::watch;

use crate::call::CallOptions;

/// A typed handle to an actor placed on a runner. Cheap to clone.
///
/// The child holds one slot of its runner for its whole life, and its runner
/// never idles down while it lives.
///
/// - Linked (the default): when the last handle is dropped, or the parent
///   goes away, the child is stopped.
/// - Unlinked: the child outlives its handles; its slot, and its runner,
///   stay until it exits.
///
/// When the child stops or crashes, [`Child::exited`] resolves with the
/// reason and later calls fail with [`Error::ChildStopped`].
///
/// # Examples
///
/// ```
/// use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
/// use ractor_flame::{LocalBackend, Pool, PoolConfig, Registry, RemoteActor};
///
/// #[derive(Default)]
/// struct Tally;
/// enum TallyMsg { Add(u64), Total(RpcReplyPort<u64>) }
///
/// impl Actor for Tally {
///     type Msg = TallyMsg;
///     type State = u64;
///     type Arguments = u64;
///     async fn pre_start(&self, _: ActorRef<TallyMsg>, start: u64) -> Result<u64, ActorProcessingErr> { Ok(start) }
///     async fn handle(&self, _: ActorRef<TallyMsg>, msg: TallyMsg, total: &mut u64) -> Result<(), ActorProcessingErr> {
///         match msg {
///             TallyMsg::Add(n) => *total += n,
///             TallyMsg::Total(reply) => { let _ = reply.send(*total); }
///         }
///         Ok(())
///     }
/// }
///
/// impl RemoteActor for Tally {
///     const NAME: &'static str = "tally";
///     type Cast = u64;
///     type Call = ();
///     type Reply = u64;
///     fn cast_message(n: u64) -> TallyMsg { TallyMsg::Add(n) }
///     fn call_message(_: (), reply: RpcReplyPort<u64>) -> TallyMsg { TallyMsg::Total(reply) }
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), ractor_flame::Error> {
/// let registry = Registry::new().register_actor::<Tally>();
/// let pool = Pool::start(PoolConfig::new(1), LocalBackend::new(), &registry).await?;
/// let tally = pool.place_child::<Tally>(10).await?;
/// tally.cast(5)?;
/// assert_eq!(tally.call(()).await?, 15);
/// drop(tally); // linked: the child stops and its slot returns
/// # pool.stop().await;
/// # Ok(()) }
/// ```
pub struct Child<A> {
    inner: Arc<ChildInner>,
    _actor: PhantomData<fn() -> A>,
}

impl<A> Clone for Child<A> {
    fn clone(&self) -> Self {
        Child {
            inner: Arc::clone(&self.inner),
            _actor: PhantomData,
        }
    }
}

impl<A> fmt::Debug for Child<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("id", &self.inner.id)
            .field("runner", &self.inner.conn.runner())
            .field("linked", &self.inner.linked)
            .finish()
    }
}

struct ChildInner {
    id: u64,
    conn: RunnerConn,
    /// The runner slot the child holds; returned when the child is done.
    /// The child's slot. Released when the child exits, even while
    /// handles remain (a watcher task takes it), or with the last handle.
    lease: Arc<Mutex<Option<Lease>>>,
    linked: bool,
    exit: watch::Receiver<Option<String>>,
    timeout: Duration,
    /// Bytes of casts on their way to the child, bounded.
    casts: Arc<CastBudget>,
}

impl<A: RemoteActor> Child<A> {
    pub(crate) fn new(id: u64, lease: Lease, linked: bool, timeout: Duration, cast_bytes: usize) -> Self {
        let conn = lease.conn().clone();
        let exit = conn.watch_child(id);
        let lease = Arc::new(Mutex::new(Some(lease)));
        // A child that stops or crashes frees its slot at once: its handles
        // then only report the exit.
        let (held, mut watch) = (Arc::clone(&lease), exit.clone());
        tokio::spawn(async move {
            if let Ok(exited) = watch.wait_for(Option::is_some).await {
                drop(exited);
                let lease = held.lock().expect("poisoned").take();
                drop(lease);
            }
        });
        Child {
            inner: Arc::new(ChildInner {
                id,
                conn,
                lease,
                linked,
                exit,
                timeout,
                casts: CastBudget::new(cast_bytes),
            }),
            _actor: PhantomData,
        }
    }

    /// Sends the child a cast without waiting. Casts and calls from one
    /// task reach the child in the order they were made.
    ///
    /// Casts on their way to the child (sent, not yet handed to it on its
    /// runner) are bounded by the pool's `child_cast_bytes` (8 MiB by
    /// default): past it this fails with [`Error::ChildBusy`] and sends
    /// nothing, so a child that has fallen behind cannot grow this
    /// process's memory. [`Child::cast_wait`] waits for room instead.
    ///
    /// # Errors
    ///
    /// [`Error::ChildStopped`] once the child is gone, [`Error::ChildBusy`]
    /// when its casts fill their bound, [`Error::RunnerDown`],
    /// [`Error::Codec`] when the message does not encode.
    pub fn cast(&self, msg: A::Cast) -> Result<(), Error> {
        self.alive()?;
        let envelope = self.envelope(&msg)?;
        self.inner.conn.cast_child(envelope, &self.inner.casts)
    }

    /// Sends the child a cast, waiting while its casts on their way fill
    /// their bound (see [`Child::cast`]): the sender slows to the child's
    /// pace.
    ///
    /// # Errors
    ///
    /// As [`Child::cast`], but for [`Error::ChildBusy`]: [`Error::ChildStopped`]
    /// when the child goes while this waits.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a wait dropped before it resolved sent nothing.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use ractor_flame::{Child, RemoteActor};
    /// # async fn feed<A: RemoteActor<Cast = u64>>(child: Child<A>) -> Result<(), ractor_flame::Error> {
    /// for n in 0..1_000_000 {
    ///     child.cast_wait(n).await?; // never more than the bound on its way
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cast_wait(&self, msg: A::Cast) -> Result<(), Error> {
        self.alive()?;
        let envelope = self.envelope(&msg)?;
        let mut exit = self.inner.exit.clone();
        tokio::select! {
            sent = self.inner.conn.cast_child_wait(envelope, &self.inner.casts) => sent,
            Ok(reason) = exit.wait_for(Option::is_some) => Err(Error::ChildStopped {
                reason: reason.clone().unwrap_or_default(),
            }),
        }
    }

    /// Bytes of casts on their way to the child now (sent, not yet handed
    /// to it on its runner).
    pub fn casts_queued(&self) -> usize {
        self.inner.casts.queued()
    }

    /// Calls the child and waits for its reply, at most the pool's `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::ChildStopped`] once the child is gone, [`Error::Deadline`]
    /// when it does not answer in time, [`Error::RunnerDown`],
    /// [`Error::Codec`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the reply; the message may already have
    /// reached the child.
    pub async fn call(&self, msg: A::Call) -> Result<A::Reply, Error> {
        self.call_with(msg, CallOptions::new()).await
    }

    /// Calls the child with per-call options, as
    /// [`Pool::call_with`](crate::Pool::call_with) takes them: `timeout` is
    /// the time the child has to answer (default: the pool's `timeout`). A
    /// child's call is always linked: its reply is abandoned when the future
    /// is dropped, so `link` does not apply.
    ///
    /// # Errors
    ///
    /// As [`Child::call`].
    ///
    /// # Cancel safety
    ///
    /// As [`Child::call`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use ractor_flame::{CallOptions, Child, RemoteActor};
    /// # async fn ask<A: RemoteActor<Call = ()>>(child: Child<A>) -> Result<(), ractor_flame::Error> {
    /// use std::time::Duration;
    /// let reply = child.call_with((), CallOptions::new().timeout(Duration::from_millis(200))).await?;
    /// # let _ = reply; Ok(()) }
    /// ```
    pub async fn call_with(&self, msg: A::Call, opts: CallOptions) -> Result<A::Reply, Error> {
        let timeout = opts.get_timeout().unwrap_or(self.inner.timeout);
        self.alive()?;
        let req = CallRequest {
            function: CHILD_CALL,
            args: Args::encoded(self.envelope(&msg)?),
            deadline: Some(Instant::now() + timeout),
            linked: true,
            want_result: true,
            idempotency_key: None,
        };
        let outcome = self.inner.conn.call(req).await?;
        let bytes = outcome_into_result(outcome, A::NAME, timeout)?;
        bytes
            .decode()
            .map_err(|e| Error::Codec(format!("reply of `{}`: {e}", A::NAME)))
    }

    /// Resolves when the child has stopped or crashed, with the reason.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is lost by dropping the future.
    pub async fn exited(&self) -> String {
        let mut exit = self.inner.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "runner connection closed".to_owned(),
        }
    }

    /// Whether the child still runs (as far as the parent has heard).
    pub fn is_alive(&self) -> bool {
        self.inner.exit.borrow().is_none()
    }

    /// Stops the child, linked or not.
    ///
    /// # Errors
    ///
    /// [`Error::RunnerDown`] when the runner is already gone.
    pub fn stop(&self) -> Result<(), Error> {
        let id = rmp_serde::to_vec(&self.inner.id).map_err(|e| Error::Codec(e.to_string()))?;
        self.inner.conn.send_now(CHILD_STOP, id)
    }

    /// The runner the child lives on.
    pub fn runner(&self) -> RunnerId {
        self.inner.conn.runner()
    }

    fn alive(&self) -> Result<(), Error> {
        match self.inner.exit.borrow().as_ref() {
            Some(reason) => Err(Error::ChildStopped { reason: reason.clone() }),
            None => Ok(()),
        }
    }

    fn envelope<T: serde::Serialize>(&self, msg: &T) -> Result<Vec<u8>, Error> {
        let msg = rmp_serde::to_vec_named(msg).map_err(|e| Error::Codec(format!("message: {e}")))?;
        let envelope = ChildEnvelope {
            child: self.inner.id,
            msg,
        };
        rmp_serde::to_vec_named(&envelope).map_err(|e| Error::Codec(e.to_string()))
    }
}

impl Drop for ChildInner {
    fn drop(&mut self) {
        let lease = self.lease.lock().expect("poisoned").take();
        let exited = self.exit.borrow().is_some();
        if exited || self.linked {
            if !exited {
                // Linked: the last handle is gone, so is the child (B34).
                if let Ok(id) = rmp_serde::to_vec(&self.id) {
                    let _ = self.conn.send_now(CHILD_STOP, id);
                }
            }
            self.conn.unwatch_child(self.id);
            drop(lease);
            return;
        }
        // Unlinked: the child lives on, and holds its slot until it exits.
        let (conn, id, mut exit) = (self.conn.clone(), self.id, self.exit.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = exit.wait_for(Option::is_some).await;
                conn.unwatch_child(id);
                drop(lease);
            });
        }
    }
}
