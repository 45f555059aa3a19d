//! The pool's metrics: names, and handles registered once per pool (never
//! looked up by name on a call's path).

use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge, Histogram};

/// Gauge: runners booted and serving, per pool.
pub const RUNNERS: &str = "flame_runners";
/// Gauge: runners booting, per pool.
pub const RUNNERS_BOOTING: &str = "flame_runners_booting";
/// Gauge: slots in use (calls, casts, placed children), per pool.
pub const BUSY_SLOTS: &str = "flame_busy_slots";
/// Gauge: callers waiting for a slot, per pool.
pub const WAITING_CALLERS: &str = "flame_waiting_callers";
/// Histogram: seconds from a boot's start until its runner serves, per pool
/// and backend.
pub const BOOT_DURATION_SECONDS: &str = "flame_boot_duration_seconds";
/// Histogram: seconds a call waited for its slot, per pool.
pub const CHECKOUT_WAIT_SECONDS: &str = "flame_checkout_wait_seconds";
/// Histogram: seconds a call took, checkout included, per pool and function.
pub const CALL_DURATION_SECONDS: &str = "flame_call_duration_seconds";
/// Counter: calls by pool, function and outcome.
pub const CALLS_TOTAL: &str = "flame_calls_total";
/// Counter: attempts of calls that opted into retries, beyond their first,
/// by pool, function and `cause` (`runner_down`, `boot_failed`).
///
/// # Examples
///
/// ```
/// assert_eq!(ractor_flame_actors::observe::CALL_RETRIES_TOTAL, "flame_call_retries_total");
/// ```
pub const CALL_RETRIES_TOTAL: &str = "flame_call_retries_total";
/// Counter: boots by pool, backend and outcome (`ok`, `failed`).
pub const BOOTS_TOTAL: &str = "flame_boots_total";
/// Counter: runners that stopped because they were idle, per pool.
pub const IDLE_SHUTDOWNS_TOTAL: &str = "flame_idle_shutdowns_total";
/// Counter: runners lost (not idle, not stopped by the pool), by pool and
/// reason.
pub const RUNNERS_LOST_TOTAL: &str = "flame_runners_lost_total";
/// Counter: runner log records dropped, by pool and `side`: `runner` (its
/// rate limit, or its connection's queue full) or `parent` (the parent's
/// log subscriber was behind and that runner's queue of records was full).
pub const LOG_RECORDS_DROPPED_TOTAL: &str = "flame_log_records_dropped_total";

/// Counter: milliseconds runners existed, by pool, backend and `phase`:
/// `booting` (from the boot's start until the runner serves, or its boot
/// fails) and `serving` (from then until it is gone). Added every 10 s
/// while a runner lives, and when each phase ends. (Counters of the
/// `metrics` facade count whole numbers: milliseconds, not seconds.)
pub const RUNNER_MILLISECONDS_TOTAL: &str = "flame_runner_milliseconds_total";

/// Adds `ms` milliseconds of one runner's `phase` to its pool's count.
pub(crate) fn runner_time(pool: &str, backend: &'static str, phase: &'static str, ms: u64) {
    if ms > 0 {
        metrics::counter!(RUNNER_MILLISECONDS_TOTAL, "pool" => pool.to_owned(), "backend" => backend, "phase" => phase)
            .increment(ms);
    }
}

/// Whether a `metrics` recorder is installed (globally, or for this
/// thread). The no-op recorder `metrics` falls back to has no size; every
/// real recorder holds its storage.
///
/// # Examples
///
/// ```
/// assert!(!ractor_flame_actors::observe::recorder_installed());
/// ```
pub fn recorder_installed() -> bool {
    metrics::with_recorder(|recorder| std::mem::size_of_val(recorder) != 0)
}

/// The metrics of one pool, registered when it starts.
pub(crate) struct PoolMetrics {
    pool: Arc<str>,
    runners: Gauge,
    booting: Gauge,
    busy: Gauge,
    waiting: Gauge,
    boot_duration: Histogram,
    boots_ok: Counter,
    boots_failed: Counter,
    idle_shutdowns: Counter,
    /// Whether a recorder was installed at start (the periodic refresh of
    /// the gauges runs only then).
    pub(crate) enabled: bool,
    /// Lost runners, by reason, registered on first use.
    lost: OnceLock<std::sync::Mutex<Vec<(&'static str, Counter)>>>,
}

impl PoolMetrics {
    pub(crate) fn new(pool: &str, backend: &'static str) -> Self {
        let pool: Arc<str> = pool.into();
        let p = || ("pool", pool.to_string());
        PoolMetrics {
            runners: metrics::gauge!(RUNNERS, &[p()]),
            booting: metrics::gauge!(RUNNERS_BOOTING, &[p()]),
            busy: metrics::gauge!(BUSY_SLOTS, &[p()]),
            waiting: metrics::gauge!(WAITING_CALLERS, &[p()]),
            boot_duration: metrics::histogram!(BOOT_DURATION_SECONDS, &[p(), ("backend", backend.to_owned())]),
            boots_ok: metrics::counter!(
                BOOTS_TOTAL,
                &[p(), ("backend", backend.to_owned()), ("outcome", "ok".to_owned())]
            ),
            boots_failed: metrics::counter!(
                BOOTS_TOTAL,
                &[p(), ("backend", backend.to_owned()), ("outcome", "failed".to_owned())]
            ),
            idle_shutdowns: metrics::counter!(IDLE_SHUTDOWNS_TOTAL, &[p()]),
            enabled: recorder_installed(),
            lost: OnceLock::new(),
            pool,
        }
    }

    /// The gauges, from a snapshot of the pool.
    pub(crate) fn gauges(&self, runners: usize, booting: usize, busy: usize, waiting: usize) {
        self.runners.set(runners as f64);
        self.booting.set(booting as f64);
        self.busy.set(busy as f64);
        self.waiting.set(waiting as f64);
    }

    pub(crate) fn boot_ok(&self, took: std::time::Duration) {
        self.boots_ok.increment(1);
        self.boot_duration.record(took.as_secs_f64());
    }

    pub(crate) fn boot_failed(&self) {
        self.boots_failed.increment(1);
    }

    pub(crate) fn idle_shutdown(&self) {
        self.idle_shutdowns.increment(1);
    }

    pub(crate) fn runner_lost(&self, reason: &'static str) {
        let mut lost = self.lost.get_or_init(Default::default).lock().expect("poisoned");
        if let Some((_, counter)) = lost.iter().find(|(r, _)| *r == reason) {
            return counter.increment(1);
        }
        let counter = metrics::counter!(RUNNERS_LOST_TOTAL, "pool" => self.pool.to_string(), "reason" => reason);
        counter.increment(1);
        lost.push((reason, counter));
    }
}
