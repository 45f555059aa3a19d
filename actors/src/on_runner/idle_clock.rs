//! The runner's idle clock: how long since its last call ended, read at
//! the end of every busy spell (every call, when they come one at a time).
//!
//! On Linux it is the kernel's coarse monotonic clock, read in a few
//! nanoseconds where the precise one takes about 30 on a virtual machine
//! (a tenth of a local call). It moves in steps of the kernel's tick (1 to
//! 4 ms): an idle runner stops within a tick of its idle timeout.
//!
//! A leaf (it imports nothing of the crate), and with `tidy.rs` the only
//! module with `unsafe` code: one call into the C library.
#![allow(unsafe_code)]

/// The idle clock now, in microseconds.
#[cfg(target_os = "linux")]
pub(crate) fn now_us() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable timespec for the call to fill,
    // and the clock id is a constant every Linux since 2.6.32 knows.
    let read = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    debug_assert_eq!(read, 0, "CLOCK_MONOTONIC_COARSE is there on Linux");
    (now.tv_sec as u64) * 1_000_000 + (now.tv_nsec as u64) / 1_000
}

/// The idle clock now, in microseconds since its first reading (elsewhere
/// than Linux: the precise monotonic clock).
#[cfg(not(target_os = "linux"))]
pub(crate) fn now_us() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_micros() as u64
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn the_idle_clock_keeps_time_within_a_tick() {
        let (start, precise) = (super::now_us(), Instant::now());
        std::thread::sleep(Duration::from_millis(50));
        let (passed, precise) = (super::now_us() - start, precise.elapsed().as_micros() as u64);
        // The coarse clock moves in ticks of at most 4 ms (and reads as
        // late as one tick at either end).
        assert!(passed.abs_diff(precise) <= 8_000, "{passed} us against {precise} us");
    }
}
