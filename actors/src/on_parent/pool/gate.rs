//! The checkout fast path: when nobody waits and a booted runner has room, a
//! caller claims the slot itself with one atomic operation instead of a
//! round trip to the Pool actor. Everything else (queueing, FIFO, growth,
//! idle verdicts) stays with the Pool, which also keeps the list of runners
//! the fast path may use.
//!
//! The choice costs the same at any pool size. Up to [`EXACT_UP_TO`] serving
//! runners it is exact: the least loaded one. Beyond, a caller takes the
//! less loaded of two runners drawn at random, else the first with room
//! among the next [`PROBES`]; one that finds none asks the Pool, which knows
//! where room is (see `state/checkout.rs`). The list itself changes in O(1):
//! each runner knows its place in it, and leaves by a swap with the last.
//!
//! The Pool and the callers agree through two Dekker-style handshakes, all
//! SeqCst: a caller increments a runner's load, then reads its `draining`
//! flag; the Pool sets `draining`, then reads the load (idle verdicts). And
//! a caller reads `has_waiters` after decrementing a load, while the Pool
//! sets it before it looks at the loads again.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use ractor::ActorRef;

use super::keys::KeyTable;
use super::{Lease, PoolMessage};
use crate::ids::RunnerId;
use crate::on_parent::link::RunnerConn;

/// Up to this many serving runners, a checkout takes the least loaded one
/// (every runner's load is read); beyond, it samples.
pub(crate) const EXACT_UP_TO: usize = 16;

/// Runners a checkout in a larger pool tries, after its two random draws,
/// before it asks the Pool.
const PROBES: usize = 64;

/// `SlotShared::pos` of a runner the fast path does not list.
const UNLISTED: usize = usize::MAX;

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
    /// Tell the pool of every check-in (single-use runners, and runners
    /// retired by a lower `max`, which stop once their work is over). The
    /// pool sets it, then reads the load; a lease decrements the load, then
    /// reads it (both SeqCst): one of the two sees the other.
    pub(crate) always_tell: AtomicBool,
    /// Its index in the gate's list, or `UNLISTED`; written only under the
    /// list's write lock.
    pos: AtomicUsize,
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
            always_tell: AtomicBool::new(always_tell),
            pos: AtomicUsize::new(UNLISTED),
        })
    }

    pub(crate) fn active(&self) -> usize {
        self.load.load(Ordering::SeqCst)
    }

    /// Whether the fast path lists it (booted, not draining).
    pub(crate) fn listed(&self) -> bool {
        self.pos.load(Ordering::Relaxed) != UNLISTED
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
    /// Runners the fast path may use (booted, not draining), in no order;
    /// each knows its index (`SlotShared::pos`). Only the Pool writes it.
    serving: RwLock<Vec<Arc<SlotShared>>>,
    /// `true` while callers may be waiting in the Pool's queue.
    pub(crate) has_waiters: Arc<AtomicBool>,
    /// Slots per runner. The Pool changes it when `max_concurrency` does
    /// (a live resize); a caller reads it once per checkout (Relaxed: a
    /// checkout that read the old value is one the change had not reached).
    limit: AtomicUsize,
    /// Off for single-use pools (every checkout must pass the Pool).
    enabled: AtomicBool,
    /// Where the Pool's next full scan starts (only the Pool uses it).
    cursor: AtomicUsize,
    /// The homes of call keys (keyed calls only).
    keys: Mutex<KeyTable>,
}

impl Gate {
    pub(crate) fn new(limit: usize, enabled: bool, key_capacity: usize) -> Arc<Self> {
        Arc::new(Gate {
            serving: RwLock::default(),
            has_waiters: Arc::default(),
            limit: AtomicUsize::new(limit),
            enabled: AtomicBool::new(enabled),
            cursor: AtomicUsize::new(0),
            keys: Mutex::new(KeyTable::new(key_capacity)),
        })
    }

    /// Whether a caller may claim a slot here rather than ask the Pool: the
    /// gate is open, nobody waits, and the pool actor runs (one that died
    /// without its `post_stop`, killed, takes no work: the caller goes to
    /// the actor, which is not there).
    #[inline]
    fn open(&self, pool: &ActorRef<PoolMessage>) -> bool {
        self.enabled.load(Ordering::Acquire)
            && !self.has_waiters.load(Ordering::SeqCst)
            && matches!(
                pool.get_status(),
                ractor::ActorStatus::Running | ractor::ActorStatus::Starting | ractor::ActorStatus::Upgrading
            )
    }

    /// Claims a slot without asking the Pool, when that is fair: nobody
    /// waits, and a runner has room. `None` sends the caller to the Pool.
    pub fn try_checkout(&self, pool: &ActorRef<PoolMessage>) -> Option<Lease> {
        if !self.open(pool) {
            return None;
        }
        let limit = self.limit.load(Ordering::Relaxed);
        // Claimed under the read lock: no clone of the list.
        let serving = self.serving.read().expect("poisoned");
        let slot = if serving.len() <= EXACT_UP_TO {
            // Least loaded first; a lost race falls back to any with room.
            let least = serving.iter().min_by_key(|s| s.active())?;
            if least.claim(limit) {
                least
            } else {
                serving.iter().find(|s| s.claim(limit))?
            }
        } else {
            self.sample(&serving, limit)?
        };
        Some(Lease::new(Arc::clone(slot)))
    }

    /// Claims a slot for a call with `key` (its hash) without asking the
    /// Pool, on the same terms as [`Gate::try_checkout`]: the key's home
    /// when it serves and has room, else the least loaded runner (among
    /// equals, the one home to the fewest keys), which becomes the key's
    /// home. `None` sends the caller to the Pool; remember the runner it
    /// gets there with [`Gate::remember`].
    pub fn try_checkout_keyed(&self, pool: &ActorRef<PoolMessage>, key: u64) -> Option<Lease> {
        if !self.open(pool) {
            return None;
        }
        let limit = self.limit.load(Ordering::Relaxed);
        let mut keys = self.keys.lock().expect("poisoned");
        if let Some(home) = keys.home(key)
            && home.claim(limit)
        {
            return Some(Lease::new(home));
        }
        let serving = self.serving.read().expect("poisoned");
        let slot = if serving.len() <= EXACT_UP_TO {
            let mut candidates: Vec<&Arc<SlotShared>> = serving.iter().collect();
            candidates.sort_by_key(|s| (s.active(), keys.homes_on(s.runner)));
            candidates.into_iter().find(|s| s.claim(limit))?
        } else {
            self.sample(&serving, limit)?
        };
        keys.set(key, slot);
        Some(Lease::new(Arc::clone(slot)))
    }

    /// The runner of `lease` is now the home of `key` (a keyed call the
    /// Pool served).
    pub fn remember(&self, key: u64, lease: &Lease) {
        self.keys.lock().expect("poisoned").set(key, &lease.slot);
    }

    /// The less loaded of two runners, the one this thread checked in last
    /// (ties go to it) and one drawn at random, else the first with room
    /// among the `PROBES` after the draw: a bounded number of loads whatever
    /// the pool's size. Preferring the runner just checked in keeps a caller
    /// that calls in a loop on the same runner, whose memory is still in
    /// this core's caches, instead of touching a cold one on every call.
    fn sample<'a>(&self, serving: &'a [Arc<SlotShared>], limit: usize) -> Option<&'a Arc<SlotShared>> {
        let n = serving.len();
        let draw = random();
        let b = (draw >> 32) as usize % n;
        let a = LAST_IN
            .with(Cell::get)
            .filter(|&(gate, pos)| gate == self.key() && pos < n)
            .map_or((draw as u32) as usize % n, |(_, pos)| pos);
        let (first, second) = if serving[a].active() > 0 && serving[b].active() < serving[a].active() {
            (&serving[b], &serving[a])
        } else {
            (&serving[a], &serving[b])
        };
        if first.claim(limit) {
            return Some(first);
        }
        if second.claim(limit) {
            return Some(second);
        }
        (1..=PROBES.min(n - 1))
            .map(|i| &serving[(a + i) % n])
            .find(|s| s.claim(limit))
    }

    /// Tells the gate of `slot`'s pool that this thread just checked in on
    /// `slot` (the first candidate of this thread's next checkout).
    pub(crate) fn checked_in(slot: &SlotShared) {
        let pos = slot.pos.load(Ordering::Relaxed);
        if pos != UNLISTED {
            LAST_IN.with(|last| last.set(Some((Arc::as_ptr(&slot.has_waiters) as usize, pos))));
        }
    }

    /// This gate, as `checked_in` names it.
    fn key(&self) -> usize {
        Arc::as_ptr(&self.has_waiters) as usize
    }

    /// The Pool's choice. In a pool of up to `EXACT_UP_TO` runners: the
    /// least loaded with room. In a larger one: `hint` (a runner the Pool
    /// knows to have room: one that just checked in or came up) if it still
    /// has room, else, when `scan`, the first runner with room from where
    /// the last scan stopped (a full turn at most); else nothing.
    pub(crate) fn pick(&self, hint: Option<&Arc<SlotShared>>, scan: bool) -> Option<Arc<SlotShared>> {
        let limit = self.limit.load(Ordering::Relaxed);
        let serving = self.serving.read().expect("poisoned");
        let n = serving.len();
        if n <= EXACT_UP_TO {
            let mut candidates: Vec<&Arc<SlotShared>> = serving.iter().collect();
            // Loads move under us (the fast path claims too): sorted once,
            // then the next is tried when one filled up meanwhile.
            candidates.sort_by_key(|s| s.active());
            return candidates.into_iter().find(|s| s.claim(limit)).cloned();
        }
        if let Some(hint) = hint
            && hint.pos.load(Ordering::Relaxed) != UNLISTED
            && hint.claim(limit)
        {
            return Some(Arc::clone(hint));
        }
        if !scan {
            return None;
        }
        let start = self.cursor.load(Ordering::Relaxed) % n;
        let found = (0..n).map(|i| (start + i) % n).find(|&i| serving[i].claim(limit))?;
        self.cursor.store(found + 1, Ordering::Relaxed);
        Some(Arc::clone(&serving[found]))
    }

    /// Slots per runner from now on (a live change of `max_concurrency`).
    /// Runners above the new limit keep their work and take no more until
    /// they are below it.
    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Lists a runner for the fast path (no-op when listed).
    pub(crate) fn insert(&self, slot: &Arc<SlotShared>) {
        let mut serving = self.serving.write().expect("poisoned");
        if slot.pos.load(Ordering::Relaxed) == UNLISTED {
            slot.pos.store(serving.len(), Ordering::Relaxed);
            serving.push(Arc::clone(slot));
        }
    }

    /// Takes a runner off the fast path's list (no-op when not listed): the
    /// last one takes its place.
    pub(crate) fn remove(&self, slot: &SlotShared) {
        let mut serving = self.serving.write().expect("poisoned");
        let pos = slot.pos.swap(UNLISTED, Ordering::Relaxed);
        if pos == UNLISTED {
            return;
        }
        serving.swap_remove(pos);
        if let Some(moved) = serving.get(pos) {
            moved.pos.store(pos, Ordering::Relaxed);
        }
    }

    /// The pool is stopping: every checkout goes to the Pool (which refuses).
    pub(crate) fn close(&self) {
        self.enabled.store(false, Ordering::Release);
        self.keys.lock().expect("poisoned").clear();
        let mut serving = self.serving.write().expect("poisoned");
        for slot in serving.drain(..) {
            slot.pos.store(UNLISTED, Ordering::Relaxed);
        }
    }
}

thread_local! {
    /// The gate (by address) and list index of the runner this thread
    /// checked in on last.
    static LAST_IN: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
}

/// A cheap per-thread random number (xorshift64), to spread checkouts over
/// a large pool without a counter every caller would write.
fn random() -> u64 {
    thread_local! {
        // Seeded by the standard library's random hash keys; never 0.
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()) | 1);
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}
