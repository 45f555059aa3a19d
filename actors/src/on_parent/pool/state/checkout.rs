//! Checkout: which runner a caller gets, and the FIFO queue of callers
//! waiting for a slot.
//!
//! The Pool serves its waiters without looking at every runner each time.
//! While callers wait, every dropped lease tells the Pool which runner has
//! room again (`has_waiters`), and a runner that comes up has room: those
//! runners are the only ones to try. The one moment room can be anywhere is
//! when the queue starts (the fast path freed slots unseen): then one scan
//! (`rescan`) looks for it, from where the previous scan stopped, and ends at
//! the first runner with room or after a full turn. Pools of up to
//! `EXACT_UP_TO` runners always take the least loaded runner instead.

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

impl<B: Backend> PoolState<B> {
    /// Claims a slot: on the least loaded runner in a small pool; in a
    /// larger one on `hint` (a runner known to have room), else, while a
    /// scan is due, on the first runner found with room. A scan that finds
    /// none is not repeated: from then on, the check-ins say where room is.
    fn pick(&mut self, hint: Option<&Arc<SlotShared>>) -> Option<Arc<SlotShared>> {
        let slot = self.gate.pick(hint, self.rescan);
        if slot.is_none() {
            self.rescan = false;
        }
        slot
    }

    /// Hands a claimed slot to `waiter`. A waiter that already gave up gets
    /// nothing and the slot stays free (its lease is dropped, which checks in).
    fn grant(&mut self, slot: Arc<SlotShared>, waiter: Waiter) {
        if self.single_use(slot.runner) {
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
            // This caller is the queue's front: served below if a runner
            // has room.
            self.waiting.clear();
            // Leases dropped while nobody waited did not tell the pool.
            self.rescan = true;
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
        // Announce the waiter before looking: a lease dropped from now on
        // tells the pool, and one dropped before left its slot for the scan
        // that a raised flag calls for.
        if !self.gate.has_waiters.swap(true, Ordering::SeqCst) {
            self.rescan = true;
        }
        self.serve_waiters(None);
        // Growth admits runners on standby and boots their successors; work
        // arriving brings back any that left on idle.
        self.maybe_grow(myself).await;
        self.refill_standby(myself).await;
    }

    pub(crate) async fn checkin(&mut self, myself: &ActorRef<PoolMessage>, runner: RunnerId) {
        // A late or duplicate checkin is harmless (B20).
        let single_use = self.single_use(runner);
        let Some(slot) = self.runners.get(&runner) else {
            return;
        };
        // A used-up single-use runner, or one retired by a lower `max`,
        // stops once its last slot is back.
        if single_use || slot.retiring {
            self.stop_if_done(runner);
        }
        // The runner that checked in has room: the first to try.
        let hint = self.runners.get(&runner).and_then(|slot| slot.shared.clone());
        self.serve_waiters(hint.as_ref());
        self.maybe_grow(myself).await;
    }

    /// Whether `runner` stops after its call: every runner of a single-use
    /// pool, or only those beyond `min` when the pool says so.
    fn single_use(&self, runner: RunnerId) -> bool {
        self.config.single_use
            && !(self.config.single_use_beyond_min && self.runners.get(&runner).is_some_and(|slot| slot.is_min))
    }

    /// Serves waiters in order while runners have free slots; `hint` is a
    /// runner that has room (it checked in, or came up).
    pub(super) fn serve_waiters(&mut self, hint: Option<&Arc<SlotShared>>) {
        while let Some(front) = self.waiting.front() {
            if front.is_closed() {
                self.waiting.pop_front();
                continue;
            }
            let Some(slot) = self.pick(hint) else { break };
            let waiter = self.waiting.pop_front().expect("front exists");
            self.grant(slot, waiter);
        }
        if self.waiting.is_empty() {
            self.gate.has_waiters.store(false, Ordering::SeqCst);
        }
    }
}
