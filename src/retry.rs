//! Opt-in retries of a call whose runner went down or whose boot failed.

use std::num::NonZeroU32;
use std::time::Duration;

/// When and how often a call is tried again; set it with
/// [`CallOptions::retry`](crate::CallOptions::retry). Calls are never
/// retried without one.
///
/// A call with a policy is tried again only when it failed with
/// [`Error::RunnerDown`](crate::Error::RunnerDown) (its runner crashed, was
/// killed or stopped answering) or [`Error::BootFailed`](crate::Error::BootFailed)
/// (no runner could boot for it); never after the function's own error, a
/// panic, a deadline, a checkout timeout or any other error. A runner that
/// went down may have run part of the work, so every attempt of one call
/// carries the same idempotency key, which the body reads with
/// [`CurrentCall::idempotency_key`](crate::CurrentCall::idempotency_key).
///
/// | option | meaning | default |
/// |---|---|---|
/// | `max_attempts` | attempts in all, the first included | given to `new` |
/// | `budget` | time for all attempts and the waits between them; the call's own `timeout`, when set, bounds it too | 30 s |
/// | `backoff` | wait before the second attempt, doubling up to a cap, each wait drawn at random between half of it and all of it (jitter) | 50 ms, capped at 2 s |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ractor_flame::{CallOptions, RetryPolicy};
///
/// let policy = RetryPolicy::new(3)
///     .budget(Duration::from_secs(10))
///     .backoff(Duration::from_millis(100), Duration::from_secs(1));
/// let opts = CallOptions::new().retry(policy);
/// assert_eq!(opts.get_retry(), Some(policy));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    // Kept small (16 bytes, milliseconds): it travels inside `CallOptions`,
    // which every call's future holds, retried or not.
    max_attempts: NonZeroU32,
    budget_ms: u32,
    initial_backoff_ms: u32,
    max_backoff_ms: u32,
}

/// `d` in whole milliseconds, saturated (about 49 days).
fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl RetryPolicy {
    /// At most `max_attempts` attempts in all (the first included; 0 and 1
    /// both mean no retry; times are kept to the millisecond), within 30 s, waiting 50 ms before the second
    /// and doubling up to 2 s.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::RetryPolicy;
    ///
    /// assert_eq!(RetryPolicy::new(4).get_max_attempts(), 4);
    /// ```
    pub fn new(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts: NonZeroU32::new(max_attempts).unwrap_or(NonZeroU32::MIN),
            budget_ms: 30_000,
            initial_backoff_ms: 50,
            max_backoff_ms: 2_000,
        }
    }

    /// Time for all attempts and the waits between them (default 30 s): no
    /// attempt starts once it has passed, nor when the wait before it would
    /// pass it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ractor_flame::RetryPolicy;
    ///
    /// let policy = RetryPolicy::new(5).budget(Duration::from_secs(2));
    /// assert_eq!(policy.get_budget(), Duration::from_secs(2));
    /// ```
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget_ms = millis(budget);
        self
    }

    /// The wait before the second attempt (default 50 ms), doubled for each
    /// attempt after it up to `max` (default 2 s). Each wait is drawn at
    /// random between half of it and all of it, so callers that failed
    /// together do not come back together.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ractor_flame::RetryPolicy;
    ///
    /// let policy = RetryPolicy::new(5).backoff(Duration::from_millis(10), Duration::from_millis(80));
    /// # let _ = policy;
    /// ```
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff_ms = millis(initial);
        self.max_backoff_ms = millis(max.max(initial));
        self
    }

    /// Attempts in all, the first included.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(ractor_flame::RetryPolicy::new(2).get_max_attempts(), 2);
    /// ```
    pub fn get_max_attempts(&self) -> u32 {
        self.max_attempts.get()
    }

    /// Time for all attempts.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// assert_eq!(ractor_flame::RetryPolicy::new(2).get_budget(), Duration::from_secs(30));
    /// ```
    pub fn get_budget(&self) -> Duration {
        Duration::from_millis(self.budget_ms.into())
    }

    /// The wait after failed attempt `attempt` (1 for the first), before
    /// jitter: the initial backoff doubled per attempt, capped.
    pub(crate) fn backoff_after(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let ms = u64::from(self.initial_backoff_ms)
            .saturating_mul(1 << doublings)
            .min(u64::from(self.max_backoff_ms));
        Duration::from_millis(ms)
    }

    /// `delay` with jitter: uniform between half of it and all of it.
    pub(crate) fn jittered(delay: Duration) -> Duration {
        let half = delay / 2;
        let spread = delay.saturating_sub(half).as_nanos() as u64;
        let draw = if spread == 0 {
            0
        } else {
            uuid::Uuid::new_v4().as_u64_pair().0 % (spread + 1)
        };
        half + Duration::from_nanos(draw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b60_backoff_doubles_to_its_cap_with_jitter_inside_it() {
        let p = RetryPolicy::new(6).backoff(Duration::from_millis(10), Duration::from_millis(50));
        let waits: Vec<u128> = (1..=5).map(|a| p.backoff_after(a).as_millis()).collect();
        assert_eq!(waits, vec![10, 20, 40, 50, 50]);
        for _ in 0..1_000 {
            let j = RetryPolicy::jittered(Duration::from_millis(40));
            assert!(
                j >= Duration::from_millis(20) && j <= Duration::from_millis(40),
                "{j:?}"
            );
        }
        let draws: std::collections::HashSet<_> = (0..100)
            .map(|_| RetryPolicy::jittered(Duration::from_millis(40)))
            .collect();
        assert!(draws.len() > 50, "jitter varies");
        assert_eq!(RetryPolicy::jittered(Duration::ZERO), Duration::ZERO);
    }
}
