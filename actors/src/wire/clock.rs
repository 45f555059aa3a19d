//! Deadlines on the wire: absolute microseconds since the Unix epoch, so a
//! deadline means the same on both sides of a connection (their clocks
//! agree on one host; across hosts they must be synchronised).
//!
//! Converting reads no clock: the wall-clock time of a fixed `Instant` is
//! kept, refreshed by every heartbeat of every connection (and on first
//! use), so a step of the wall clock is followed within a heartbeat.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The fixed `Instant` that conversions count from.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Microseconds since the Unix epoch at `base()`; 0 until first set.
static BASE_UNIX_US: AtomicU64 = AtomicU64::new(0);

/// Reads both clocks and notes the wall-clock time of `base()`.
pub(crate) fn refresh() -> u64 {
    let base = base();
    let since_base = Instant::now().saturating_duration_since(base);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let at_base = now.saturating_sub(since_base).as_micros() as u64;
    BASE_UNIX_US.store(at_base, Ordering::Relaxed);
    at_base
}

fn base_unix_us() -> u64 {
    match BASE_UNIX_US.load(Ordering::Relaxed) {
        0 => refresh(),
        at_base => at_base,
    }
}

/// An `Instant` as microseconds since the Unix epoch, for the wire.
pub(crate) fn unix_micros(at: Instant) -> u64 {
    let at_base = base_unix_us();
    let base = base();
    match at.checked_duration_since(base) {
        Some(after) => at_base + after.as_micros() as u64,
        None => at_base.saturating_sub((base - at).as_micros() as u64),
    }
}

/// The `Instant` for microseconds since the Unix epoch.
pub(crate) fn instant_from_unix_micros(us: u64) -> Instant {
    let at_base = base_unix_us();
    let base = base();
    if us >= at_base {
        base + Duration::from_micros(us - at_base)
    } else {
        base.checked_sub(Duration::from_micros(at_base - us)).unwrap_or(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_agree_with_the_wall_clock_and_each_other() {
        let apart = |a: Instant, b: Instant| a.max(b) - a.min(b);
        let in_a_second = Instant::now() + Duration::from_secs(1);
        let us = unix_micros(in_a_second);
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
        let ahead = us as i64 - wall as i64;
        assert!((990_000..=1_010_000).contains(&ahead), "{ahead} us ahead");
        let drift = apart(instant_from_unix_micros(us), in_a_second);
        assert!(drift <= Duration::from_micros(2), "{drift:?}");
        // A refresh keeps them consistent.
        refresh();
        let drift = apart(instant_from_unix_micros(unix_micros(in_a_second)), in_a_second);
        assert!(drift <= Duration::from_millis(1), "{drift:?}");
        // Long past deadlines stay in the past.
        assert!(instant_from_unix_micros(1) <= Instant::now());
    }
}
