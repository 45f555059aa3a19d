//! The runner's `tracing` events, re-emitted in the parent.
//!
//! A traced call leaves its caller's span here, by call id, when `send.rs`
//! sends it, and takes it away when its caller stops waiting. Meanwhile the
//! runner's log records (routed here by the endpoint's frame loop) are
//! re-emitted under the span of the call that emitted them, tagged with the
//! runner and the pool.

use super::RunnerConn;

impl RunnerConn {
    /// Names the pool this runner serves, and the subscriber its events
    /// go to: the one current where the pool's Runner actor runs (the link
    /// thread's tasks may not share a thread-local one).
    pub(crate) fn set_observer(&self, pool: &str) {
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let _ = self.inner.observer.set((pool.to_owned(), dispatch));
    }

    /// Re-emits one of the runner's `tracing` events here: under the span
    /// of the call that emitted it while that call is in flight, tagged
    /// with the runner and the pool.
    pub(crate) fn log(&self, record: &crate::wire::frame::LogRecord) {
        let span = record
            .call
            .and_then(|call| self.inner.spans.lock().expect("poisoned").get(&call).cloned());
        let runner = self.inner.runner;
        match self.inner.observer.get() {
            Some((pool, dispatch)) => tracing::dispatcher::with_default(dispatch, || {
                crate::observe::logs::reemit(record, runner, pool, span.as_ref());
            }),
            None => crate::observe::logs::reemit(record, runner, "", span.as_ref()),
        }
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
        let span = self.conn.inner.spans.lock().expect("poisoned").remove(&self.id);
        // Closed outside the lock (a subscriber may do work on close).
        drop(span);
    }
}
