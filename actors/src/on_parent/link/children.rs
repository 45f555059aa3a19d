//! Children placed on the runner: their exit notices and their casts.
//!
//! A placed child's handle (in the facade) watches here for its child's
//! exit. The exit comes from the runner through the endpoint's frame loop
//! (`child_exited`), or from `close.rs` when the runner is gone. Calls to a
//! child go out as calls (`send.rs`); casts go out here, each entered in
//! the table of calls in flight with its bytes counted against the child's
//! [`CastBudget`] until the runner reports it handed to the child.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, watch};

use super::pending::Pending;
use super::{RunnerConn, Transport};
use crate::error::Error;
use crate::wire::frame::{CHILD_CAST, CallFrame, ToRunner};

/// The bytes of casts to one placed child that are on their way to it:
/// sent by its handle, and not yet handed to the child on its runner (the
/// runner reports each as it enqueues it on the child). Bounded: a cast
/// past the bound fails with [`Error::ChildBusy`], or waits for room.
#[derive(Debug)]
pub struct CastBudget {
    queued: AtomicUsize,
    limit: usize,
    room: Notify,
}

impl CastBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(CastBudget {
            queued: AtomicUsize::new(0),
            limit,
            room: Notify::new(),
        })
    }

    /// Bytes of casts on their way now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Takes room for a cast of `bytes`: within the bound, or a cast of any
    /// size when nothing else is on its way.
    fn reserve(self: &Arc<Self>, bytes: usize) -> Result<Queued, Error> {
        let mut queued = self.queued.load(Ordering::Acquire);
        loop {
            if queued > 0 && queued.saturating_add(bytes) > self.limit {
                return Err(Error::ChildBusy {
                    queued,
                    limit: self.limit,
                });
            }
            match self
                .queued
                .compare_exchange_weak(queued, queued + bytes, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Ok(Queued {
                        budget: Arc::clone(self),
                        bytes,
                    });
                }
                Err(now) => queued = now,
            }
        }
    }
}

/// A cast's bytes, counted against its child's budget until it drops (the
/// runner reported the cast handed on, or the runner is gone).
pub(super) struct Queued {
    budget: Arc<CastBudget>,
    bytes: usize,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.budget.queued.fetch_sub(self.bytes, Ordering::AcqRel);
        self.budget.room.notify_waiters();
    }
}

impl RunnerConn {
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
}

impl RunnerConn {
    /// Sends a cast (an encoded [`ChildEnvelope`](crate::wire::ChildEnvelope))
    /// to a placed child, counted against `budget` until the runner has
    /// handed it to the child. Casts and calls sent from one task reach the
    /// child in the order they were sent.
    ///
    /// # Errors
    ///
    /// [`Error::ChildBusy`] when the budget is full (nothing is sent),
    /// [`Error::RunnerDown`] when the runner is gone.
    pub fn cast_child(&self, envelope: Vec<u8>, budget: &Arc<CastBudget>) -> Result<(), Error> {
        let Transport::Remote { tx } = &self.inner.transport else {
            // In-process: the cast is on the child's mailbox when this
            // returns; nothing is on its way.
            return self.send_now(CHILD_CAST, envelope);
        };
        if let Some(reason) = self.down_reason() {
            return Err(Error::RunnerDown { reason });
        }
        let queued = budget.reserve(envelope.len())?;
        let id = self.next_call_id();
        if self.track(id, Pending::ChildCast(queued)).is_err() {
            return Err(self.down_error());
        }
        if tx.send(ToRunner::Call(CallFrame::one_way(id, CHILD_CAST, envelope))) {
            Ok(())
        } else {
            drop(self.untrack(id));
            Err(self.down_error())
        }
    }

    /// [`RunnerConn::cast_child`] that waits for room in `budget` instead
    /// of failing with [`Error::ChildBusy`].
    ///
    /// # Errors
    ///
    /// [`Error::RunnerDown`] when the runner is gone (or goes while this
    /// waits).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a wait dropped before it resolved sent nothing.
    pub async fn cast_child_wait(&self, envelope: Vec<u8>, budget: &Arc<CastBudget>) -> Result<(), Error> {
        loop {
            let room = budget.room.notified();
            match self.cast_child(envelope.clone(), budget) {
                Err(Error::ChildBusy { .. }) => {}
                done => return done,
            }
            tokio::select! {
                () = room => {}
                () = self.closed() => {}
            }
        }
    }
}
