//! The runner's `tracing` events, re-emitted in the parent.
//!
//! A traced call leaves its caller's span here, by call id, when `send.rs`
//! sends it, and takes it away when its caller stops waiting. Meanwhile the
//! runner's log records (routed here by the endpoint's frame loop, on the
//! link thread) are queued for the connection's log task on the
//! application's runtime (`observe/logs.rs`), which re-emits them under the
//! span of the call that emitted them, tagged with the runner and the pool.
//! The link thread only queues: no subscriber, sink or stderr write runs
//! there, so a blocked log sink never holds up heartbeats or replies (B48).
//! A record is queued with the id of its caller's span, not a handle (a
//! handle's clone is the subscriber's work); the span is kept open for it
//! instead. When a traced call ends, its caller emits the records queued
//! if the log task is idle (so they come before the caller has its reply,
//! as they did), and lets go of its span through the queue, behind them,
//! if some are still queued.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use super::{ConnInner, RunnerConn, Transport};
use crate::observe::logs::LogQueue;

/// Each remote connection's log queue, by the address of its state (with
/// the state, to tell a live connection from a later one at the same
/// address). Entries of connections that are gone are swept when another
/// connection gets its queue; dropping an entry ends its task once the
/// records queued are emitted.
static QUEUES: LazyLock<Mutex<HashMap<usize, Entry>>> = LazyLock::new(Mutex::default);

/// A connection (while it lives) and its log queue.
type Entry = (Weak<ConnInner>, Arc<LogQueue>);

impl RunnerConn {
    /// Names the pool this runner serves, and the subscriber its events
    /// go to: the one current where the pool's Runner actor runs (the link
    /// thread's tasks may not share a thread-local one). Starts the task
    /// that emits the runner's records, on the runtime of that actor (the
    /// application's).
    pub(crate) fn set_observer(&self, pool: &str) {
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        if self.inner.observer.set((pool.to_owned(), dispatch.clone())).is_err() {
            return;
        }
        // An in-process runner's events are this process's own: none come
        // on the connection.
        if let Transport::Remote { .. } = self.inner.transport {
            self.log_queue(true)
                .expect("made when missing")
                .start(self.inner.runner, pool, dispatch);
        }
    }

    /// Re-emits one of the runner's `tracing` events here: under the span
    /// of the call that emitted it while that call is in flight, tagged
    /// with the runner and the pool. On the link thread this only queues
    /// the record (dropped and counted when the queue is full).
    pub(crate) fn log(&self, record: &crate::wire::frame::LogRecord) {
        let queue = self.log_queue(true).expect("made when missing");
        let record = record.clone();
        let Some(call) = record.call else {
            return queue.push(record, None);
        };
        // Queued under the lock: a release of the span comes after it.
        let spans = self.inner.spans.lock().expect("poisoned");
        let parent = spans.get(&call).and_then(tracing::Span::id);
        queue.push(record, parent);
        drop(spans);
    }

    /// This connection's log queue; made (and the queues of connections
    /// that are gone swept) when missing, if `make`.
    fn log_queue(&self, make: bool) -> Option<Arc<LogQueue>> {
        let key = Arc::as_ptr(&self.inner) as usize;
        let mut queues = QUEUES.lock().expect("poisoned");
        if let Some((conn, queue)) = queues.get(&key)
            && Weak::as_ptr(conn) == Arc::as_ptr(&self.inner)
            && conn.strong_count() > 0
        {
            return Some(Arc::clone(queue));
        }
        if !make {
            return None;
        }
        queues.retain(|_, (conn, _)| conn.strong_count() > 0);
        let queue = Arc::new(LogQueue::new());
        queues.insert(key, (Arc::downgrade(&self.inner), Arc::clone(&queue)));
        Some(queue)
    }
}

/// A traced call in flight: its caller's span is findable by call id until
/// the caller stops waiting.
pub(super) struct TracedCall<'a> {
    conn: &'a RunnerConn,
    id: u64,
}

impl<'a> TracedCall<'a> {
    pub(super) fn new(conn: &'a RunnerConn, id: u64, span: tracing::Span) -> Self {
        conn.inner.spans.lock().expect("poisoned").insert(id, span);
        TracedCall { conn, id }
    }
}

impl Drop for TracedCall<'_> {
    fn drop(&mut self) {
        let queue = self.conn.log_queue(false);
        // The call's records that came before its reply reach the
        // subscriber before its caller goes on, unless the log task is
        // behind.
        if let Some(queue) = &queue {
            queue.flush_if_idle();
        }
        let mut spans = self.conn.inner.spans.lock().expect("poisoned");
        let Some(span) = spans.remove(&self.id) else {
            return;
        };
        // Records of this call still queued keep it open until they are
        // emitted; under the lock, so none is queued after the release.
        let span = match queue {
            Some(queue) => match queue.release(span) {
                Ok(()) => return,
                Err(span) => span,
            },
            None => span,
        };
        drop(spans);
        // Closed outside the lock (a subscriber may do work on close).
        drop(span);
    }
}
