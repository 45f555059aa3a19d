//! The checkout fast path: when nobody waits and a booted runner has room, a
//! caller claims the slot itself with one atomic operation instead of a
//! round trip to the Pool actor. Everything else (queueing, FIFO, growth,
//! idle verdicts) stays with the Pool, which also keeps the list of runners
//! the fast path may use.
//!
//! The Pool and the callers agree through two Dekker-style handshakes, all
//! SeqCst: a caller increments a runner's load, then reads its `draining`
//! flag; the Pool sets `draining`, then reads the load (idle verdicts). And
//! a caller reads `has_waiters` after decrementing a load, while the Pool
//! sets it before it looks at the loads again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use ractor::ActorRef;

use super::{Lease, PoolMessage};
use crate::ids::RunnerId;
use crate::on_parent::link::RunnerConn;

/// What the Pool and callers share about one booted runner: all a
/// [`Lease`] needs, so that a checkout clones one `Arc` (every atomic a call
/// touches on a shared cache line costs it a trip between cores).
#[derive(Debug)]
pub(crate) struct SlotShared {
    pub(crate) runner: RunnerId,
    pub(crate) conn: RunnerConn,
    /// Checkouts in flight.
    pub(crate) load: AtomicUsize,
    /// Takes no new work.
    pub(crate) draining: AtomicBool,
    /// The pool, told of check-ins when it has a use for them.
    pub(crate) pool: ActorRef<PoolMessage>,
    /// Whether callers wait for a slot (the gate's flag).
    pub(crate) has_waiters: Arc<AtomicBool>,
    /// Tell the pool of every check-in (single-use runners).
    pub(crate) always_tell: bool,
}

impl SlotShared {
    pub(crate) fn new(
        runner: RunnerId,
        conn: RunnerConn,
        pool: ActorRef<PoolMessage>,
        gate: &Gate,
        always_tell: bool,
    ) -> Arc<Self> {
        Arc::new(SlotShared {
            runner,
            conn,
            load: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            pool,
            has_waiters: Arc::clone(&gate.has_waiters),
            always_tell,
        })
    }

    pub(crate) fn active(&self) -> usize {
        self.load.load(Ordering::SeqCst)
    }

    /// Takes one slot if the runner serves and has room below `limit`. A
    /// runner whose connection is gone is skipped even before the Pool has
    /// heard of its loss.
    pub(crate) fn claim(&self, limit: usize) -> bool {
        if !self.conn.is_usable() {
            return false;
        }
        let mut current = self.load.load(Ordering::SeqCst);
        loop {
            if current >= limit || self.draining.load(Ordering::SeqCst) {
                return false;
            }
            match self
                .load
                .compare_exchange_weak(current, current + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        // The Pool may have started draining it meanwhile: it then reads our
        // increment, or we read its flag.
        if self.draining.load(Ordering::SeqCst) {
            self.load.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }
}

/// The fast path's view of a pool. Shared by the Pool actor and every
/// handle of it.
#[derive(Debug)]
pub struct Gate {
    /// Runners the fast path may use (booted, not draining).
    serving: RwLock<Arc<Vec<Arc<SlotShared>>>>,
    /// `true` while callers may be waiting in the Pool's queue.
    pub(crate) has_waiters: Arc<AtomicBool>,
    /// Slots per runner.
    limit: usize,
    /// Off for single-use pools (every checkout must pass the Pool).
    enabled: AtomicBool,
}

impl Gate {
    pub(crate) fn new(limit: usize, enabled: bool) -> Arc<Self> {
        Arc::new(Gate {
            serving: RwLock::new(Arc::default()),
            has_waiters: Arc::default(),
            limit,
            enabled: AtomicBool::new(enabled),
        })
    }

    /// Claims a slot without asking the Pool, when that is fair: nobody
    /// waits, and a runner has room. `None` sends the caller to the Pool.
    pub fn try_checkout(&self, pool: &ActorRef<PoolMessage>) -> Option<Lease> {
        if !self.enabled.load(Ordering::Acquire) || self.has_waiters.load(Ordering::SeqCst) {
            return None;
        }
        // A pool actor that died without its `post_stop` (killed) takes no
        // work: the caller goes to the actor, which is not there.
        if !matches!(
            pool.get_status(),
            ractor::ActorStatus::Running | ractor::ActorStatus::Starting | ractor::ActorStatus::Upgrading
        ) {
            return None;
        }
        // Claimed under the read lock: no clone of the list.
        let serving = self.serving.read().expect("poisoned");
        // Least loaded first (B13); a lost race falls back to any with room.
        let least = serving.iter().min_by_key(|s| s.active())?;
        let slot = if least.claim(self.limit) {
            least
        } else {
            serving.iter().find(|s| s.claim(self.limit))?
        };
        Some(Lease::new(Arc::clone(slot)))
    }

    /// Replaces the fast path's runner list.
    pub(crate) fn publish(&self, serving: Vec<Arc<SlotShared>>) {
        *self.serving.write().expect("poisoned") = Arc::new(serving);
    }

    /// The pool is stopping: every checkout goes to the Pool (which refuses).
    pub(crate) fn close(&self) {
        self.enabled.store(false, Ordering::Release);
        self.publish(Vec::new());
    }
}
