//! Exit notices of children placed on the runner.
//!
//! A placed child's handle (in the facade) watches here for its child's
//! exit. The exit comes from the runner through the endpoint's frame loop
//! (`child_exited`), or from `close.rs` when the runner is gone. Messages
//! to a child go out as calls nobody awaits (`send_now` in `send.rs`).

use tokio::sync::watch;

use super::RunnerConn;

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
