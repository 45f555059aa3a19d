//! Keyed routing: the runner each call key was last served on (its
//! "home"), so calls with the same key go back to it while it serves and
//! has room: one model loaded per runner, a cache per tenant. Affinity, not
//! a promise: a key whose home is full, draining or gone is served where
//! the pool finds room, and that runner becomes its home.
//!
//! The table is bounded: it holds at most `key_capacity` keys (a pool
//! option); when a new key finds it full, the keys of runners that are gone
//! are forgotten first, then the least recently used half. It holds a weak
//! reference to each home, so a gone runner's keys never keep its
//! connection alive. Only keyed calls touch it: the unkeyed checkout does
//! not read it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::gate::SlotShared;
use crate::ids::RunnerId;

/// What the table needs of a runner (a trait so the table's rules test
/// without connections).
pub(crate) trait KeyHome {
    fn runner(&self) -> RunnerId;
    /// Booted, listed for the fast path, not draining.
    fn serves(&self) -> bool;
}

impl KeyHome for SlotShared {
    fn runner(&self) -> RunnerId {
        self.runner
    }

    fn serves(&self) -> bool {
        self.listed() && !self.draining.load(Ordering::SeqCst)
    }
}

/// One key's home.
#[derive(Debug)]
struct Home<S> {
    slot: Weak<S>,
    runner: RunnerId,
    /// The table's clock when the key was last used.
    used: u64,
}

/// Call keys (their 64-bit hashes) and their homes.
#[derive(Debug)]
pub(crate) struct KeyTable<S = SlotShared> {
    homes: HashMap<u64, Home<S>>,
    /// Keys homed on each runner, to spread new keys over the runners.
    per_runner: HashMap<RunnerId, usize>,
    capacity: usize,
    clock: u64,
}

impl<S: KeyHome> KeyTable<S> {
    pub(crate) fn new(capacity: usize) -> Self {
        KeyTable {
            homes: HashMap::new(),
            per_runner: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// The home of `key` while its runner still serves (booted, listed for
    /// the fast path, not draining); marks the key used.
    pub(crate) fn home(&mut self, key: u64) -> Option<Arc<S>> {
        self.clock += 1;
        let clock = self.clock;
        let home = self.homes.get_mut(&key)?;
        home.used = clock;
        let slot = home.slot.upgrade()?;
        slot.serves().then_some(slot)
    }

    /// Keys homed on `runner`.
    pub(crate) fn homes_on(&self, runner: RunnerId) -> usize {
        self.per_runner.get(&runner).copied().unwrap_or(0)
    }

    /// `slot` is now the home of `key`.
    pub(crate) fn set(&mut self, key: u64, slot: &Arc<S>) {
        self.clock += 1;
        let runner = slot.runner();
        if let Some(home) = self.homes.get_mut(&key) {
            if home.runner == runner && home.slot.strong_count() > 0 {
                home.used = self.clock;
                return;
            }
            let old = home.runner;
            self.forget_home_of(old);
        } else if self.homes.len() >= self.capacity {
            self.evict();
        }
        self.homes.insert(
            key,
            Home {
                slot: Arc::downgrade(slot),
                runner,
                used: self.clock,
            },
        );
        *self.per_runner.entry(runner).or_default() += 1;
    }

    /// Keys in the table.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.homes.len()
    }

    /// Forgets every key.
    pub(crate) fn clear(&mut self) {
        self.homes.clear();
        self.per_runner.clear();
    }

    fn forget_home_of(&mut self, runner: RunnerId) {
        if let Some(n) = self.per_runner.get_mut(&runner) {
            *n -= 1;
            if *n == 0 {
                self.per_runner.remove(&runner);
            }
        }
    }

    /// Makes room for one key: the keys of gone runners go first; if that
    /// frees nothing, the least recently used half (at least one key).
    /// A full turn over the table, at most once per half-table of new keys.
    fn evict(&mut self) {
        let before = self.homes.len();
        let mut gone = Vec::new();
        self.homes.retain(|_, home| {
            let keep = home.slot.strong_count() > 0;
            if !keep {
                gone.push(home.runner);
            }
            keep
        });
        for runner in gone {
            self.forget_home_of(runner);
        }
        if self.homes.len() < before && self.homes.len() < self.capacity {
            return;
        }
        let keep = self.capacity / 2;
        let mut stamps: Vec<u64> = self.homes.values().map(|h| h.used).collect();
        let cut_at = stamps.len() - keep;
        // The `cut_at`-th oldest stamp: every key used before it goes.
        let (_, cut, _) = stamps.select_nth_unstable(cut_at.saturating_sub(1));
        let cut = *cut;
        let mut dropped = Vec::new();
        self.homes.retain(|_, home| {
            let keep = home.used > cut;
            if !keep {
                dropped.push(home.runner);
            }
            keep
        });
        for runner in dropped {
            self.forget_home_of(runner);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    struct Fake {
        runner: RunnerId,
        serves: AtomicBool,
    }

    impl KeyHome for Fake {
        fn runner(&self) -> RunnerId {
            self.runner
        }
        fn serves(&self) -> bool {
            self.serves.load(Ordering::SeqCst)
        }
    }

    fn runner() -> Arc<Fake> {
        Arc::new(Fake {
            runner: RunnerId::new(),
            serves: AtomicBool::new(true),
        })
    }

    #[test]
    fn b58_a_key_stays_home_while_its_runner_serves() {
        let (a, b) = (runner(), runner());
        let mut table = KeyTable::new(16);
        table.set(1, &a);
        table.set(2, &b);
        assert_eq!(table.home(1).map(|s| s.runner), Some(a.runner));
        assert_eq!((table.homes_on(a.runner), table.homes_on(b.runner)), (1, 1));
        // Draining: no home until the key is served elsewhere, which moves it.
        a.serves.store(false, Ordering::SeqCst);
        assert!(table.home(1).is_none());
        table.set(1, &b);
        assert_eq!(table.home(1).map(|s| s.runner), Some(b.runner));
        assert_eq!((table.homes_on(a.runner), table.homes_on(b.runner)), (0, 2));
    }

    #[test]
    fn b58_a_gone_runners_keys_have_no_home_and_go_first() {
        let (a, b) = (runner(), runner());
        let mut table = KeyTable::new(2);
        table.set(1, &a);
        table.set(2, &b);
        let gone = a.runner;
        drop(a);
        assert!(table.home(1).is_none(), "the weak home is gone with its runner");
        // Full: the new key takes the gone runner's place, the live key stays.
        table.set(3, &b);
        assert_eq!(table.len(), 2);
        assert_eq!(table.homes_on(gone), 0);
        assert!(table.home(2).is_some() && table.home(3).is_some());
    }

    #[test]
    fn b58_the_table_stays_bounded_and_forgets_the_least_recently_used() {
        let a = runner();
        let mut table = KeyTable::new(8);
        for key in 0..8 {
            table.set(key, &a);
        }
        // Keys 4..8 used again: 0..4 are the least recently used.
        for key in 4..8 {
            assert!(table.home(key).is_some());
        }
        for key in 100..1_000 {
            table.set(key, &a);
            assert!(table.len() <= 8, "bounded");
        }
        assert_eq!(table.homes_on(a.runner), table.len(), "counts follow the table");
        let mut table = KeyTable::new(8);
        for key in 0..8 {
            table.set(key, &a);
        }
        for key in 4..8 {
            table.home(key);
        }
        table.set(8, &a);
        assert!((0..4).all(|k| table.home(k).is_none()), "the oldest half went");
        assert!((4..9).all(|k| table.home(k).is_some()), "the recent ones stayed");
        // A capacity of one still takes a new key.
        let mut one = KeyTable::new(1);
        one.set(1, &a);
        one.set(2, &a);
        assert_eq!(one.len(), 1);
        assert!(one.home(2).is_some());
    }
}
