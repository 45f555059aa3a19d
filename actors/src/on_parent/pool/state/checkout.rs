//! Checkout: which runner a caller gets, and the FIFO queue of callers
//! waiting for a slot.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ractor::ActorRef;

use super::{PoolState, Waiter};
use crate::error::Error;
use crate::events::PoolEvent;
use crate::ids::RunnerId;
use crate::on_parent::backend::Backend;
use crate::on_parent::pool::gate::SlotShared;
use crate::on_parent::pool::{Lease, PoolMessage};
use crate::wire::frame::ToRunner;

impl<B: Backend> PoolState<B> {
    /// Claims a slot on the booted runner with the fewest checkouts below
    /// its limit. Callers on the fast path claim too, so a runner that
    /// looked free may be full by now: then the next one is tried.
    fn pick(&self) -> Option<Arc<SlotShared>> {
        let limit = self.per_runner();
        let mut candidates: Vec<&Arc<SlotShared>> = self
            .runners
            .values()
            .filter_map(|s| s.shared.as_ref())
            .filter(|s| !s.draining.load(Ordering::SeqCst) && s.active() < limit)
            .collect();
        candidates.sort_by_key(|s| s.active());
        candidates.into_iter().find(|s| s.claim(limit)).cloned()
    }

    /// Hands a claimed slot to `waiter`. A waiter that already gave up gets
    /// nothing and the slot stays free (its lease is dropped, which checks in).
    fn grant(&mut self, slot: Arc<SlotShared>, waiter: Waiter) {
        let single_use = self.config.single_use;
        if single_use {
            // One checkout per runner (B23).
            self.set_draining(slot.runner);
        }
        let lease = Lease::new(slot);
        let _ = waiter.send(Ok(lease));
    }

    pub(crate) async fn checkout(&mut self, myself: &ActorRef<PoolMessage>, waiter: Waiter) {
        if self.stopping {
            let _ = waiter.send(Err(Error::PoolNotRunning));
            return;
        }
        // FIFO: a new caller only jumps in when nobody waits (B15).
        if self.waiting.iter().all(|w| w.is_closed()) {
            self.waiting.clear();
            if let Some(slot) = self.pick() {
                return self.grant(slot, waiter);
            }
        }
        if let Some(capacity) = self.config.queue_capacity {
            self.waiting.retain(|w| !w.is_closed());
            if self.waiting.len() >= capacity {
                let _ = waiter.send(Err(Error::QueueFull { capacity }));
                self.emit(PoolEvent::QueueFull { capacity });
                return;
            }
        }
        self.waiting.push_back(waiter);
        // Announce the waiter before looking again: a lease dropped since
        // the look above either sees the flag or left its slot for this one.
        self.gate.has_waiters.store(true, Ordering::SeqCst);
        self.serve_waiters();
        self.maybe_grow(myself).await;
    }

    pub(crate) async fn checkin(&mut self, myself: &ActorRef<PoolMessage>, runner: RunnerId) {
        // A late or duplicate checkin is harmless (B20).
        let Some(slot) = self.runners.get_mut(&runner) else {
            return;
        };
        if self.config.single_use
            && slot.active() == 0
            && let Some(conn) = slot.conn()
        {
            conn.control(ToRunner::Shutdown);
        }
        self.serve_waiters();
        self.maybe_grow(myself).await;
    }

    /// Serves waiters in order while runners have free slots.
    pub(super) fn serve_waiters(&mut self) {
        while let Some(front) = self.waiting.front() {
            if front.is_closed() {
                self.waiting.pop_front();
                continue;
            }
            let Some(slot) = self.pick() else { break };
            let waiter = self.waiting.pop_front().expect("front exists");
            self.grant(slot, waiter);
        }
        if self.waiting.is_empty() {
            self.gate.has_waiters.store(false, Ordering::SeqCst);
        }
    }
}
