//! The parent's end of one runner: where a caller sends its call and awaits
//! its own reply, without passing through the Pool or Runner mailboxes.
//!
//! One seam, two transports: the local backend hands calls straight to the
//! in-process [`Serve`](crate::terminator::Serve) core; remote backends queue
//! frames on the runner's TCP connection and match replies by call id.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ractor::ActorRef;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{DownReason, Error};
use crate::parent::RunnerId;
use crate::terminator::{Serve, TerminatorMessage};
use crate::wire::frame::{CallFrame, CallRef, Outcome, ToRunner};

/// How long past its deadline the parent waits for a runner's own deadline
/// reply before it gives up on its own.
const DEADLINE_GRACE: Duration = Duration::from_millis(250);

/// What a caller asks a runner to do.
#[derive(Debug)]
pub struct CallRequest<'a> {
    /// The registered function's name.
    pub function: &'a str,
    /// Encoded arguments.
    pub args: Vec<u8>,
    /// When the work must be done; `None` for no deadline.
    pub deadline: Option<Instant>,
    /// Cancel the remote task when the caller goes away.
    pub linked: bool,
    /// `false` for a cast: only completion is reported.
    pub want_result: bool,
}

/// A connection to one runner. Cheap to clone.
#[derive(Clone)]
pub struct RunnerConn {
    inner: Arc<ConnInner>,
}

struct ConnInner {
    runner: RunnerId,
    transport: Transport,
    /// Calls sent on a remote transport and not yet answered.
    pending: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
    next_id: AtomicU64,
    /// Set once, when the runner is gone; later calls fail with it.
    down: Mutex<Option<DownReason>>,
    /// `down.is_some()`, readable without the lock (the checkout fast path).
    is_down: std::sync::atomic::AtomicBool,
    /// Woken when `down` is set.
    closed: tokio::sync::Notify,
    /// Exit notices of placed children, by child id.
    children: Mutex<HashMap<u64, watch::Sender<Option<String>>>>,
    max_frame: usize,
}

enum Transport {
    Local {
        serve: Arc<Serve>,
        control: ActorRef<TerminatorMessage>,
    },
    Remote {
        tx: mpsc::UnboundedSender<ToRunner>,
    },
}

impl fmt::Debug for RunnerConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner.transport {
            Transport::Local { .. } => "local",
            Transport::Remote { .. } => "tcp",
        };
        f.debug_struct("RunnerConn")
            .field("runner", &self.inner.runner)
            .field("transport", &kind)
            .finish()
    }
}

impl RunnerConn {
    pub(crate) fn local(runner: RunnerId, serve: Arc<Serve>, control: ActorRef<TerminatorMessage>) -> Self {
        Self::with(runner, Transport::Local { serve, control }, usize::MAX)
    }

    pub(crate) fn remote(runner: RunnerId, tx: mpsc::UnboundedSender<ToRunner>, max_frame: usize) -> Self {
        Self::with(runner, Transport::Remote { tx }, max_frame)
    }

    fn with(runner: RunnerId, transport: Transport, max_frame: usize) -> Self {
        RunnerConn {
            inner: Arc::new(ConnInner {
                runner,
                transport,
                pending: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                down: Mutex::new(None),
                is_down: std::sync::atomic::AtomicBool::new(false),
                closed: tokio::sync::Notify::new(),
                children: Mutex::new(HashMap::new()),
                max_frame,
            }),
        }
    }

    /// The runner at the other end.
    pub fn runner(&self) -> RunnerId {
        self.inner.runner
    }

    /// Whether the runner is gone (cheap: no lock).
    pub fn is_down(&self) -> bool {
        self.inner.is_down.load(Ordering::Acquire)
    }

    /// Why the runner is gone, if it is.
    pub fn down_reason(&self) -> Option<DownReason> {
        self.inner.down.lock().expect("poisoned").clone()
    }

    /// Sends a call and waits for its outcome.
    ///
    /// # Errors
    ///
    /// [`Error::RunnerDown`] when the runner is gone before it answers,
    /// [`Error::Codec`] when the arguments exceed the frame limit,
    /// [`Error::Deadline`] when no answer came by the deadline (plus a short
    /// grace for the runner's own deadline reply).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future forgets the call; a linked call is also cancelled on
    /// the runner (its task is aborted).
    pub async fn call(&self, req: CallRequest<'_>) -> Result<Outcome, Error> {
        if self.is_down() {
            return Err(self.down_error());
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        match &self.inner.transport {
            // In-process: a borrowed view, no frame to build. Unlinked calls
            // and casts already run in a task of their own (see the facade),
            // so inline is right for every local call.
            Transport::Local { serve, .. } => {
                let call = CallRef {
                    id,
                    function: req.function,
                    args: &req.args,
                    deadline_us: None,
                    want_result: req.want_result,
                    linked: req.linked,
                };
                serve
                    .run_inline(call, req.deadline)
                    .await
                    .ok_or_else(|| self.down_error())
            }
            Transport::Remote { tx } => {
                let frame = CallFrame {
                    id,
                    function: req.function.to_owned(),
                    args: req.args,
                    deadline_us: req.deadline.map(unix_micros),
                    want_result: req.want_result,
                    linked: req.linked,
                };
                self.call_remote(tx, frame, req.deadline).await
            }
        }
    }

    async fn call_remote(
        &self,
        out: &mpsc::UnboundedSender<ToRunner>,
        frame: CallFrame,
        deadline: Option<Instant>,
    ) -> Result<Outcome, Error> {
        // Leave room for the frame's envelope; a too-large argument fails
        // this call only, never the connection.
        let limit = self.inner.max_frame.saturating_sub(512 + frame.function.len());
        if frame.args.len() > limit {
            return Err(Error::Codec(format!(
                "argument of {} bytes exceeds max_frame_size of {} bytes",
                frame.args.len(),
                self.inner.max_frame
            )));
        }
        let (id, linked) = (frame.id, frame.linked);
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().expect("poisoned").insert(id, tx);
        if out.send(ToRunner::Call(frame)).is_err() {
            self.inner.pending.lock().expect("poisoned").remove(&id);
            return Err(self.down_error());
        }
        let mut guard = CancelGuard {
            conn: self,
            out,
            id,
            linked,
            armed: true,
        };
        // The runner enforces the deadline; the parent keeps its own timer
        // too, in case the runner is frozen.
        let received = match deadline {
            Some(deadline) => match tokio::time::timeout_at((deadline + DEADLINE_GRACE).into(), rx).await {
                Ok(received) => received,
                // Not even the runner's own deadline reply came: the guard
                // cancels the remote task.
                Err(_) => return Ok(Outcome::Deadline),
            },
            None => rx.await,
        };
        guard.armed = false;
        received.map_err(|_| self.down_error())
    }

    /// Sends a call whose outcome nobody awaits (a cast to a placed child),
    /// before returning: what one task sends this way reaches the runner in
    /// order.
    ///
    /// # Errors
    ///
    /// [`Error::RunnerDown`] when the runner is gone.
    pub fn send_now(&self, function: &str, args: Vec<u8>) -> Result<(), Error> {
        if let Some(reason) = self.down_reason() {
            return Err(Error::RunnerDown { reason });
        }
        let frame = CallFrame {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            function: function.to_owned(),
            args,
            deadline_us: None,
            want_result: false,
            linked: false,
        };
        match &self.inner.transport {
            Transport::Local { serve, .. } => {
                let serve = Arc::clone(serve);
                // Child messages are enqueued when the work is created, so
                // create it now; only the (trivial) rest runs in a task.
                let work = serve.start_now(frame);
                tokio::spawn(work);
                Ok(())
            }
            // The reply (`Done`) matches no pending call and is dropped.
            Transport::Remote { tx } => tx.send(ToRunner::Call(frame)).map_err(|_| self.down_error()),
        }
    }

    fn down_error(&self) -> Error {
        let reason = self
            .down_reason()
            .unwrap_or_else(|| DownReason::ConnectionLost("runner went away".into()));
        Error::RunnerDown { reason }
    }

    /// Sends a control frame (idle verdict, shutdown).
    pub(crate) fn control(&self, frame: ToRunner) {
        match &self.inner.transport {
            Transport::Local { control, .. } => {
                let _ = control.cast(TerminatorMessage::FromParent(frame));
            }
            Transport::Remote { tx } => {
                let _ = tx.send(frame);
            }
        }
    }

    /// Routes a runner's reply to its caller. Unknown ids (a call whose caller
    /// gave up) are ignored.
    pub(crate) fn deliver(&self, id: u64, outcome: Outcome) {
        let waiter = self.inner.pending.lock().expect("poisoned").remove(&id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(outcome);
        }
    }

    /// Marks the runner gone and fails every call in flight with `reason`.
    /// The first reason wins.
    pub fn close(&self, reason: DownReason) {
        {
            let mut down = self.inner.down.lock().expect("poisoned");
            if down.is_none() {
                *down = Some(reason);
            }
            self.inner.is_down.store(true, Ordering::Release);
        }
        self.inner.closed.notify_waiters();
        let reason = self
            .down_reason()
            .map(|r| format!("runner down: {r}"))
            .unwrap_or_default();
        for notice in self.inner.children.lock().expect("poisoned").values() {
            notice.send_if_modified(|exit| exit.is_none() && exit.replace(reason.clone()).is_none());
        }
        // Dropping the senders wakes every waiter, which then reads `down`.
        let pending = std::mem::take(&mut *self.inner.pending.lock().expect("poisoned"));
        drop(pending);
        if let Transport::Local { serve, .. } = &self.inner.transport {
            serve.fail_all();
        }
    }

    /// Watches for the exit of placed child `child`.
    pub fn watch_child(&self, child: u64) -> watch::Receiver<Option<String>> {
        let mut children = self.inner.children.lock().expect("poisoned");
        let notice = children.entry(child).or_insert_with(|| watch::channel(None).0);
        if let Some(reason) = self.down_reason() {
            notice.send_replace(Some(format!("runner down: {reason}")));
        }
        notice.subscribe()
    }

    /// Stops watching child `child` (its handle is gone).
    pub fn unwatch_child(&self, child: u64) {
        self.inner.children.lock().expect("poisoned").remove(&child);
    }

    /// A placed child exited (possibly before anyone watched it).
    pub(crate) fn child_exited(&self, child: u64, reason: String) {
        let mut children = self.inner.children.lock().expect("poisoned");
        let notice = children.entry(child).or_insert_with(|| watch::channel(None).0);
        notice.send_replace(Some(reason));
    }

    /// Resolves once the runner is gone.
    pub async fn closed(&self) {
        loop {
            let notified = self.inner.closed.notified();
            if self.down_reason().is_some() {
                return;
            }
            notified.await;
        }
    }

    /// Calls in flight on a remote transport (for tests and stats).
    pub fn pending(&self) -> usize {
        self.inner.pending.lock().expect("poisoned").len()
    }
}

/// Cancels a remote call whose caller stopped waiting (B07).
struct CancelGuard<'a> {
    conn: &'a RunnerConn,
    out: &'a mpsc::UnboundedSender<ToRunner>,
    id: u64,
    linked: bool,
    armed: bool,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.conn.inner.pending.lock().expect("poisoned").remove(&self.id);
        if self.linked {
            let _ = self.out.send(ToRunner::Cancel { id: self.id });
        }
    }
}

/// An `Instant` as microseconds since the Unix epoch, for the wire.
pub(crate) fn unix_micros(at: Instant) -> u64 {
    let now_i = Instant::now();
    let now_s = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let at_s = if at >= now_i {
        now_s + (at - now_i)
    } else {
        now_s.saturating_sub(now_i - at)
    };
    at_s.as_micros() as u64
}

/// The `Instant` for microseconds since the Unix epoch.
pub(crate) fn instant_from_unix_micros(us: u64) -> Instant {
    let now_i = Instant::now();
    let now_s = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let at_s = Duration::from_micros(us);
    if at_s >= now_s {
        now_i + (at_s - now_s)
    } else {
        now_i.checked_sub(now_s - at_s).unwrap_or(now_i)
    }
}

/// Turns a runner's outcome into the caller's result.
pub fn outcome_into_result(outcome: Outcome, function: &str, timeout: Duration) -> Result<Vec<u8>, Error> {
    let function = function.to_owned();
    match outcome {
        Outcome::Ok(bytes) => Ok(bytes),
        Outcome::Done => Ok(Vec::new()),
        Outcome::Returned(message) => Err(Error::Remote { function, message }),
        Outcome::Panicked(message) => Err(Error::Panic { function, message }),
        Outcome::Deadline => Err(Error::Deadline { function, timeout }),
        Outcome::UnknownFunction => Err(Error::UnknownFunction { function }),
        Outcome::Codec(message) => Err(Error::Codec(message)),
        Outcome::Refused => Err(Error::RunnerDown {
            reason: DownReason::ShuttingDown,
        }),
        Outcome::ChildStopped(reason) => Err(Error::ChildStopped { reason }),
    }
}
