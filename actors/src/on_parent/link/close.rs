//! Whether and why the runner is gone, and closing its connection.
//!
//! When the socket drops, the endpoint marks the connection lost and
//! checkouts skip it; the Runner actor then settles why (or the endpoint
//! does, for a Runner that is stopping) and calls `close`, which fails every
//! call still in the table (`pending.rs`), tells every child watch
//! (`children.rs`) and wakes whoever awaits `closed`. Calls sent after that
//! fail at once with the reason (`send.rs`), those that raced it included:
//! the table, once emptied, takes no call (`pending.rs`).

use std::sync::atomic::Ordering;

use super::{RunnerConn, Transport};
use crate::error::{DownReason, Error};

impl RunnerConn {
    /// Whether the runner is gone (cheap: no lock).
    pub fn is_down(&self) -> bool {
        self.inner.is_down.load(Ordering::Acquire)
    }

    /// Whether new work may go to this runner: it is not gone, and its
    /// connection has not dropped (cheap: no lock).
    pub fn is_usable(&self) -> bool {
        !self.is_down() && !self.inner.lost.load(Ordering::Acquire)
    }

    /// The connection dropped; why is settled later (by [`RunnerConn::close`]).
    /// Checkouts skip the runner from now on.
    pub(crate) fn mark_lost(&self) {
        self.inner.lost.store(true, Ordering::Release);
    }

    /// Why the runner is gone, if it is.
    pub fn down_reason(&self) -> Option<DownReason> {
        self.inner.down.lock().expect("poisoned").clone()
    }

    pub(super) fn down_error(&self) -> Error {
        let reason = self
            .down_reason()
            .unwrap_or_else(|| DownReason::ConnectionLost("runner went away".into()));
        Error::RunnerDown { reason }
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
        // Dropping the senders wakes every waiter, which then reads `down`;
        // parked slots are released (the runner and its work are gone). The
        // table is closed under its lock: a call that raced this, past its
        // look at `is_down`, is either taken here or refused by `track`, and
        // never waits for ever in a table nobody empties again.
        let pending = self.inner.calls.pending.lock().expect("poisoned").close();
        drop(pending);
        self.close_streams();
        if let Transport::Local { serve, .. } = &self.inner.transport {
            serve.fail_all();
        }
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
}
