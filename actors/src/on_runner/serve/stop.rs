//! Stopping calls from outside their work: the parent's cancel, the loss of
//! the parent (linked calls and children), the runner's stop, and drain.
//! Each reaches a running call through its entry among the running calls,
//! written at admission (`admit.rs`); a stopped call still ends through
//! `end.rs`, which replies for it.

use std::time::Duration;

use super::Serve;

impl Serve {
    /// Cancels a call: an async body is aborted, a blocking one is told.
    /// Unknown ids are ignored.
    pub(crate) fn cancel(&self, id: u64) {
        if let Some(running) = self.calls.tasks.lock().expect("poisoned").get(&id) {
            running.stop();
        }
    }

    /// Stops every linked call and every linked child: their parent is gone.
    pub(crate) fn abort_linked(&self) {
        self.children.stop_all(true, "parent lost");
        for running in self.calls.tasks.lock().expect("poisoned").values() {
            if running.linked {
                running.stop();
            }
        }
    }

    /// Stops every call and every child.
    pub(crate) fn fail_all(&self) {
        self.stop_accepting();
        self.children.stop_all(false, "runner stopped");
        for running in self.calls.tasks.lock().expect("poisoned").values() {
            running.stop();
        }
    }

    /// Waits until no call runs, at most `budget`; then stops what is left.
    /// Returns whether the drain finished in time.
    pub(crate) async fn drain(&self, budget: Duration) -> bool {
        let waited = tokio::time::timeout(budget, async {
            loop {
                let quiet = self.quiet.notified();
                if self.active() == 0 {
                    return;
                }
                quiet.await;
            }
        })
        .await;
        if waited.is_err() {
            self.fail_all();
        }
        waited.is_ok()
    }
}
