//! Deadlines on the wire: absolute microseconds since the Unix epoch, so a
//! deadline means the same on both sides of a connection (their clocks
//! agree on one host; across hosts they must be synchronised).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// An `Instant` as microseconds since the Unix epoch, for the wire.
pub(crate) fn unix_micros(at: Instant) -> u64 {
    let now_i = Instant::now();
    let now_s = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let at_s = if at >= now_i {
        now_s + (at - now_i)
    } else {
        now_s.saturating_sub(now_i - at)
    };
    at_s.as_micros() as u64
}

/// The `Instant` for microseconds since the Unix epoch.
pub(crate) fn instant_from_unix_micros(us: u64) -> Instant {
    let now_i = Instant::now();
    let now_s = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let at_s = Duration::from_micros(us);
    if at_s >= now_s {
        now_i + (at_s - now_s)
    } else {
        now_i.checked_sub(now_s - at_s).unwrap_or(now_i)
    }
}
