//! Stopping calls from outside their work: the parent's cancel, the loss of
//! the parent (linked calls and children), the runner's stop, and drain.
//! Each reaches a running call through its entry among the running calls,
//! written at admission (`admit.rs`); a stopped call still ends through
//! `end.rs`, which replies for it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Running, Serve};

impl Serve {
    /// Cancels a call: an async body is aborted, a blocking one is told.
    /// Unknown ids are ignored.
    pub(crate) fn cancel(&self, id: u64) {
        if let Some(running) = self.calls.tasks.lock().expect("poisoned").get(&id) {
            running.stop();
        }
    }

    /// Stops every linked call and kills every linked child: their parent
    /// is gone. Unlinked calls and children are left to finish within the
    /// drain's budget.
    pub(crate) fn abort_linked(&self) {
        // Before the look at the entries: a call entered after it sees this.
        self.parent_lost.store(true, Ordering::SeqCst);
        self.children.kill_linked();
        for running in self.calls.tasks.lock().expect("poisoned").values() {
            if running.linked {
                running.stop();
            }
        }
    }

    /// Whether every call still counted is a linked one (children and
    /// unlinked calls count too, and are not).
    fn only_linked_left(&self) -> bool {
        let linked = self
            .calls
            .tasks
            .lock()
            .expect("poisoned")
            .values()
            .filter(|running| running.linked)
            .count();
        self.active() <= linked
    }

    /// Stops every call and every child.
    pub(crate) fn fail_all(&self) {
        self.stop_accepting();
        // Before the look at the entries: a call entered after it sees this.
        self.failed.store(true, Ordering::SeqCst);
        self.children.stop_all(false, "runner stopped");
        for running in self.calls.tasks.lock().expect("poisoned").values() {
            running.stop();
        }
    }

    /// Whether every call (or, for a `linked` one, every linked call) was
    /// stopped: for a call that has no entry among the running calls yet.
    pub(super) fn stopping_all(&self, linked: bool) -> bool {
        self.failed.load(Ordering::SeqCst) || (linked && self.parent_lost.load(Ordering::SeqCst))
    }

    /// Enters call `id`, admitted without an entry among the running calls,
    /// there, as it goes on waiting past its first poll. `false` when a stop
    /// of every call (or every linked one, for a linked call) looked at the
    /// entries before this one was in: that stop set its flag first, and
    /// the call must stop now.
    pub(super) fn enter_late(&self, id: u64, running: Running) -> bool {
        let linked = running.linked;
        self.calls.tasks.lock().expect("poisoned").insert(id, running);
        !self.stopping_all(linked)
    }

    /// Waits until no call runs, at most `budget`; then stops what is left.
    /// A runner whose parent is gone (`parent_gone`) waits only while work
    /// other than linked calls runs: those were told to stop (a blocking
    /// body may not listen) and nobody waits for what they return, so the
    /// runner goes at once unless unlinked work may still finish.
    /// Returns whether the drain finished in time.
    pub(crate) async fn drain(&self, budget: Duration, parent_gone: bool) -> bool {
        // The end of the last call wakes `quiet` only while someone waits.
        let _watch = QuietWatch::new(self);
        let waited = tokio::time::timeout(budget, async {
            loop {
                let quiet = self.quiet.notified();
                if self.active() == 0 || (parent_gone && self.only_linked_left()) {
                    return;
                }
                if parent_gone {
                    // `quiet` wakes only when the last call ends: look again
                    // soon for the last unlinked one.
                    tokio::select! {
                        () = quiet => {}
                        () = tokio::time::sleep(Duration::from_millis(10)) => {}
                    }
                } else {
                    quiet.await;
                }
            }
        })
        .await;
        if waited.is_err() {
            self.fail_all();
        }
        waited.is_ok()
    }
}

/// A wait for the quiet (`drain`): while one lasts, the end of the last
/// running call wakes `Serve::quiet`.
struct QuietWatch<'a>(&'a Serve);

impl<'a> QuietWatch<'a> {
    fn new(serve: &'a Serve) -> Self {
        // SeqCst, before the waiter looks at the count: see `went_quiet`.
        serve.quiet_watchers.fetch_add(1, Ordering::SeqCst);
        QuietWatch(serve)
    }
}

impl Drop for QuietWatch<'_> {
    fn drop(&mut self) {
        self.0.quiet_watchers.fetch_sub(1, Ordering::SeqCst);
    }
}
