//! Deadlines on the wire: as the time remaining, never as a clock instant.
//!
//! A call's frame carries its budget, the microseconds left before its
//! deadline when the frame is built; the runner counts it from the frame's
//! arrival on its own monotonic clock. Neither side reads a wall clock, so
//! a runner whose host clock is minutes off (or steps while it serves)
//! keeps every deadline; the time the frame spent on its way is not
//! counted, which makes the runner's deadline later by that much, never
//! earlier (the parent keeps its own watch of the deadline as well).
//!
//! One monotonic clock read per call on each side.

use std::time::{Duration, Instant};

/// The budget left before `deadline`, in microseconds, for a frame built
/// now: 0 once the deadline has passed.
pub(crate) fn budget_micros(deadline: Instant) -> u64 {
    let left = deadline.saturating_duration_since(Instant::now());
    u64::try_from(left.as_micros()).unwrap_or(u64::MAX)
}

/// The local deadline of a call whose frame, received at `arrived`,
/// carries a budget of `us` microseconds; `None` for a budget too large for
/// this clock (no deadline in practice).
pub(crate) fn deadline_from_budget(arrived: Instant, us: u64) -> Option<Instant> {
    arrived.checked_add(Duration::from_micros(us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b52_a_budget_is_the_time_left_and_comes_back_as_a_local_deadline() {
        let apart = |a: Instant, b: Instant| a.max(b) - a.min(b);
        let in_a_second = Instant::now() + Duration::from_secs(1);
        let us = budget_micros(in_a_second);
        assert!((990_000..=1_000_000).contains(&us), "{us} us left");
        let back = deadline_from_budget(Instant::now(), us).unwrap();
        let drift = apart(back, in_a_second);
        assert!(drift <= Duration::from_millis(10), "{drift:?}");
        // A deadline already past leaves no budget, and no budget is a
        // deadline already here.
        assert_eq!(budget_micros(Instant::now() - Duration::from_millis(5)), 0);
        assert!(deadline_from_budget(Instant::now(), 0).unwrap() <= Instant::now());
        // The largest budget is no panic.
        let _ = deadline_from_budget(Instant::now(), u64::MAX);
    }
}
