//! Pool options: a typed struct with documented defaults.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::events::{Hook, PoolEvent};

/// Default for [`PoolConfig::max_concurrency`].
pub const DEFAULT_MAX_CONCURRENCY: usize = 100;
/// Default for [`PoolConfig::key_capacity`]: call keys whose runner a pool
/// remembers.
///
/// # Examples
///
/// ```
/// use ractor_flame_actors::{DEFAULT_KEY_CAPACITY, PoolConfig};
///
/// assert_eq!(PoolConfig::new(4).get_key_capacity(), DEFAULT_KEY_CAPACITY);
/// ```
pub const DEFAULT_KEY_CAPACITY: usize = 4096;
/// Default for [`PoolConfig::child_cast_bytes`]: bytes of casts to one
/// placed child that may be on their way to it at once.
pub const DEFAULT_CHILD_CAST_BYTES: usize = 8 << 20;
/// Default for [`PoolConfig::timeout`], [`PoolConfig::boot_timeout`] and
/// [`PoolConfig::shutdown_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`PoolConfig::idle_shutdown_after`].
pub const DEFAULT_IDLE_SHUTDOWN: Duration = Duration::from_secs(30);
/// Default for [`PoolConfig::failsafe_timeout`].
pub const DEFAULT_FAILSAFE: Duration = Duration::from_secs(20);
/// Default for [`PoolConfig::heartbeat_interval`].
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// Default for [`PoolConfig::heartbeat_timeout`].
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default quiet time before a runner gives memory back (see
/// [`PoolConfig::release_memory_after`]).
pub const DEFAULT_RELEASE_MEMORY_AFTER: Duration = Duration::from_millis(500);

/// When a runner with no work stops itself.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ractor_flame_actors::IdleShutdown;
///
/// let never = IdleShutdown::Never;
/// let after = IdleShutdown::After(Duration::from_secs(10));
/// // Only when the predicate registered as "cache-flushed" agrees on the runner.
/// let when = IdleShutdown::when(Duration::from_secs(10), "cache-flushed");
/// assert_eq!(after.duration(), Some(Duration::from_secs(10)));
/// assert_eq!(never.duration(), None);
/// assert_eq!(when.duration(), Some(Duration::from_secs(10)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdleShutdown {
    /// Never stop for idleness.
    Never,
    /// Stop after this long without work.
    After(Duration),
    /// Stop after this long without work, when the predicate registered under
    /// this name (see [`Registry::idle_predicate`](crate::Registry::idle_predicate))
    /// returns `true` on the runner.
    AfterWhen(Duration, String),
}

impl IdleShutdown {
    /// Idle shutdown after `after`, when the named predicate agrees.
    pub fn when(after: Duration, predicate: impl Into<String>) -> Self {
        IdleShutdown::AfterWhen(after, predicate.into())
    }

    /// The idle duration, if any.
    pub fn duration(&self) -> Option<Duration> {
        match self {
            IdleShutdown::Never => None,
            IdleShutdown::After(d) | IdleShutdown::AfterWhen(d, _) => Some(*d),
        }
    }

    /// The predicate's name, if any.
    pub fn predicate(&self) -> Option<&str> {
        match self {
            IdleShutdown::AfterWhen(_, name) => Some(name),
            _ => None,
        }
    }
}

/// How failed boots are retried.
///
/// A boot that fails is retried after `initial_backoff`, doubling up to
/// `max_backoff`, while callers still wait. After `max_attempts` failed boots
/// in a row the waiting callers get [`Error::BootFailed`]. Boots that refill
/// `min` keep retrying at `max_backoff`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ractor_flame_actors::BootRetry;
///
/// let retry = BootRetry::default();
/// assert_eq!(retry.backoff(1), Duration::from_millis(100));
/// assert_eq!(retry.backoff(2), Duration::from_millis(200));
/// assert_eq!(retry.backoff(30), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootRetry {
    /// Failed boots in a row before waiting callers are failed. Default 3.
    pub max_attempts: u32,
    /// Delay before the first retry. Default 100 ms.
    pub initial_backoff: Duration,
    /// The cap on the delay. Default 5 s.
    pub max_backoff: Duration,
}

impl Default for BootRetry {
    fn default() -> Self {
        BootRetry {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl BootRetry {
    /// The delay before retry number `failures` (1 = after the first failure).
    pub fn backoff(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(20);
        self.initial_backoff.saturating_mul(1u32 << shift).min(self.max_backoff)
    }
}

/// Whether the runner link is encrypted.
///
/// With TLS the endpoint presents a certificate made for it, and the runner
/// accepts only that certificate (its fingerprint travels in `FLAME_PARENT`),
/// then proves itself with its token. Nothing on the network between them
/// sees the token, the arguments or the results.
///
/// # Examples
///
/// ```
/// use ractor_flame_actors::{LinkTls, PoolConfig};
///
/// // Encrypt even on loopback (the default encrypts only off it).
/// let config = PoolConfig::new(4).link_tls(LinkTls::Always);
/// assert!(config.validate().is_ok());
/// assert!(LinkTls::Auto.applies_to(&["10.0.0.2:4000".parse().unwrap()]));
/// assert!(!LinkTls::Auto.applies_to(&["127.0.0.1:4000".parse().unwrap()]));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LinkTls {
    /// TLS unless every address runners are given for the parent is a
    /// loopback address (the default): runners on this machine speak plain
    /// TCP, runners anywhere else TLS.
    #[default]
    Auto,
    /// TLS on every runner link.
    Always,
    /// Plain TCP on every runner link, even across a network.
    Never,
}

impl LinkTls {
    /// Whether a runner given these parent addresses uses TLS.
    pub fn applies_to(self, parent_addrs: &[std::net::SocketAddr]) -> bool {
        match self {
            LinkTls::Always => true,
            LinkTls::Never => false,
            LinkTls::Auto => parent_addrs.iter().any(|addr| !addr.ip().is_loopback()),
        }
    }
}

/// The options of a pool.
///
/// | option | meaning | default |
/// |---|---|---|
/// | `name` | pool name, used in logs, labels and the actor name | `"flame"` |
/// | `min` | runners kept booted (forced to 0 on a runner) | 0 |
/// | `max` | most runners at once (required, at least 1) | - |
/// | `max_concurrency` | concurrent calls per runner | 100 |
/// | `single_use` | stop each runner after its first call | false |
/// | `single_use_beyond_min` | with `single_use`: the `min` runners serve call after call, only the runners beyond them are single-use | false |
/// | `timeout` | execution budget of a call without explicit timeout | 30 s |
/// | `boot_timeout` | boot budget; also the checkout budget of a call without explicit timeout | 30 s |
/// | `shutdown_timeout` | drain budget on shutdown | 30 s |
/// | `idle_shutdown_after` | when a runner with no work stops | after 30 s |
/// | `min_idle_shutdown_after` | the same for the `min` runners | never |
/// | `queue_capacity` | bound of the waiting queue (`None`: unbounded) | unbounded |
/// | `key_capacity` | call keys whose runner the pool remembers (keyed calls) | 4096 |
/// | `child_cast_bytes` | bytes of casts to one placed child on their way to it at once | 8 MiB |
/// | `standby` | runners booted ahead of demand, admitted when the pool grows | 0 |
/// | `boot_retry` | retry and backoff of failed boots | 3 attempts, 100 ms to 5 s |
/// | `failsafe_timeout` | a runner with no parent connection by then stops | 20 s |
/// | `heartbeat_interval` | heartbeat period, both ways | 500 ms |
/// | `heartbeat_timeout` | silence after which the peer is lost | 2 s |
/// | `max_frame_size` | largest wire frame (argument or result) | 64 MiB |
/// | `link_tls` | encryption of the runner link | TLS off loopback |
/// | `on_grow_start`, `on_grow_end`, `on_shrink` | hooks | none |
/// | `log` | level of the pool's lifecycle events | `info` |
///
/// **Which runner a call gets.** In a pool of up to 16 booted runners, the
/// least loaded one with room (the fewest calls in flight). In a larger
/// pool a call compares two runners instead of reading every runner's load,
/// so that its cost does not grow with the pool: the one its thread last
/// returned a slot to (still in that core's caches) and one drawn at random,
/// and it takes the less loaded; when neither has room it tries the next 64
/// in turn, then asks the Pool, which finds a runner with room if one has
/// any. Loads stay even (the "power of two choices"), and callers that wait
/// for a slot are served first in first out at any size.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ractor_flame_actors::PoolConfig;
///
/// let config = PoolConfig::new(8)
///     .name("thumbnails")
///     .min(1)
///     .max_concurrency(4)
///     .idle_shutdown_after(Duration::from_secs(60));
/// assert!(config.validate().is_ok());
/// assert!(PoolConfig::new(0).validate().is_err());
/// ```
#[derive(Clone)]
pub struct PoolConfig {
    pub(crate) name: String,
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) max_concurrency: usize,
    pub(crate) single_use: bool,
    pub(crate) single_use_beyond_min: bool,
    pub(crate) timeout: Duration,
    pub(crate) boot_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) idle_shutdown_after: IdleShutdown,
    pub(crate) min_idle_shutdown_after: IdleShutdown,
    pub(crate) queue_capacity: Option<usize>,
    pub(crate) key_capacity: usize,
    pub(crate) child_cast_bytes: usize,
    pub(crate) standby: usize,
    pub(crate) boot_retry: BootRetry,
    pub(crate) failsafe_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) heartbeat_timeout: Duration,
    pub(crate) max_frame_size: usize,
    pub(crate) release_memory_after: Option<Duration>,
    pub(crate) link_tls: LinkTls,
    pub(crate) on_grow_start: Option<Hook>,
    pub(crate) on_grow_end: Option<Hook>,
    pub(crate) on_shrink: Option<Hook>,
    pub(crate) log: tracing::Level,
}

impl fmt::Debug for PoolConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolConfig")
            .field("name", &self.name)
            .field("min", &self.min)
            .field("max", &self.max)
            .field("max_concurrency", &self.max_concurrency)
            .field("single_use", &self.single_use)
            .field("single_use_beyond_min", &self.single_use_beyond_min)
            .field("timeout", &self.timeout)
            .field("boot_timeout", &self.boot_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("idle_shutdown_after", &self.idle_shutdown_after)
            .field("min_idle_shutdown_after", &self.min_idle_shutdown_after)
            .field("queue_capacity", &self.queue_capacity)
            .field("key_capacity", &self.key_capacity)
            .field("child_cast_bytes", &self.child_cast_bytes)
            .field("standby", &self.standby)
            .field("boot_retry", &self.boot_retry)
            .field("release_memory_after", &self.release_memory_after)
            .finish_non_exhaustive()
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.$name = value;
            self
        }
    };
}

impl PoolConfig {
    /// Options for a pool of at most `max` runners, every other option at its
    /// default.
    pub fn new(max: usize) -> Self {
        PoolConfig {
            name: "flame".to_owned(),
            min: 0,
            max,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            single_use: false,
            single_use_beyond_min: false,
            timeout: DEFAULT_TIMEOUT,
            boot_timeout: DEFAULT_TIMEOUT,
            shutdown_timeout: DEFAULT_TIMEOUT,
            idle_shutdown_after: IdleShutdown::After(DEFAULT_IDLE_SHUTDOWN),
            min_idle_shutdown_after: IdleShutdown::Never,
            queue_capacity: None,
            key_capacity: DEFAULT_KEY_CAPACITY,
            child_cast_bytes: DEFAULT_CHILD_CAST_BYTES,
            standby: 0,
            boot_retry: BootRetry::default(),
            failsafe_timeout: DEFAULT_FAILSAFE,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            max_frame_size: crate::wire::DEFAULT_MAX_FRAME,
            release_memory_after: Some(DEFAULT_RELEASE_MEMORY_AFTER),
            link_tls: LinkTls::Auto,
            on_grow_start: None,
            on_grow_end: None,
            on_shrink: None,
            log: tracing::Level::INFO,
        }
    }

    /// The pool's name (default `"flame"`), used in logs and labels.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    setter!(
        /// Runners kept booted (default 0). Forced to 0 on a runner.
        min: usize
    );
    setter!(
        /// Most runners at once (required, at least 1).
        max: usize
    );
    setter!(
        /// Concurrent calls, casts and placed children per runner (default 100).
        max_concurrency: usize
    );
    setter!(
        /// Stop each runner after its first call completes (default false).
        /// Every runner takes one call at a time then. With `min` runners,
        /// each of them stops too after its call and is booted again, so
        /// the pool dips below `min` for a boot's time; see
        /// [`PoolConfig::single_use_beyond_min`] to keep them.
        single_use: bool
    );
    setter!(
        /// With [`PoolConfig::single_use`]: whether only the runners beyond
        /// `min` are single-use (default false: every runner is). When
        /// true, the `min` runners stay up and serve call after call, one
        /// at a time like every runner of the pool, and only the runners
        /// booted beyond them stop after their call: a warm floor for
        /// steady work, fresh runners for bursts.
        ///
        /// # Examples
        ///
        /// ```
        /// use ractor_flame_actors::PoolConfig;
        ///
        /// let config = PoolConfig::new(8).min(2).single_use(true).single_use_beyond_min(true);
        /// assert!(config.validate().is_ok());
        /// ```
        single_use_beyond_min: bool
    );
    setter!(
        /// Execution budget of a call without an explicit timeout (default 30 s).
        timeout: Duration
    );
    setter!(
        /// How long a boot may take to connect back (default 30 s). Also the
        /// checkout budget of a call without an explicit timeout.
        boot_timeout: Duration
    );
    setter!(
        /// How long a runner drains calls in flight on shutdown (default 30 s).
        shutdown_timeout: Duration
    );
    setter!(
        /// How long a runner may wait for a parent connection (default 20 s).
        failsafe_timeout: Duration
    );
    setter!(
        /// Heartbeat period, both ways (default 500 ms).
        heartbeat_interval: Duration
    );
    setter!(
        /// Silence after which a peer is declared lost (default 2 s).
        heartbeat_timeout: Duration
    );
    setter!(
        /// Largest wire frame in bytes (default 64 MiB). A larger argument or
        /// result fails that call with a codec error; the connection survives.
        max_frame_size: usize
    );
    setter!(
        /// How long a runner process is quiet (no call running, none ended)
        /// before it gives memory back (default 500 ms; `None`: never).
        ///
        /// It returns the heap the C library keeps after freeing (glibc's
        /// `malloc_trim`) and unmaps the pages of its executable's code and
        /// read-only data: they stay in the page cache, shared with the
        /// parent that runs the same file, and map again, a minor fault per
        /// 16 pages, when a later call runs them. An idle runner then holds
        /// 3 to 4 MiB instead of about 11, and the first call after a quiet
        /// spell takes a few hundred microseconds longer (0.46 to 0.66 ms
        /// against 0.07 to 0.10 for calls one after another, in the bench
        /// on a 2-core VM). `None` suits a runner that
        /// serves short calls seconds apart and must answer each at once.
        /// In-process runners (the local backend) never do this: their
        /// memory is their parent's.
        ///
        /// # Examples
        ///
        /// ```
        /// use std::time::Duration;
        /// use ractor_flame_actors::PoolConfig;
        ///
        /// let later = PoolConfig::new(4).release_memory_after(Some(Duration::from_secs(5)));
        /// let never = PoolConfig::new(4).release_memory_after(None);
        /// assert!(later.validate().is_ok() && never.validate().is_ok());
        /// ```
        release_memory_after: Option<Duration>
    );
    setter!(
        /// Encryption of the runner link (default [`LinkTls::Auto`]: TLS
        /// whenever runners reach the parent at an address other than
        /// loopback).
        link_tls: LinkTls
    );
    setter!(
        /// Retry and backoff of failed boots (default: 3 attempts, 100 ms
        /// doubling to 5 s).
        boot_retry: BootRetry
    );
    setter!(
        /// Level of the pool's lifecycle events (default `INFO`).
        log: tracing::Level
    );

    /// Idle shutdown of runners (default: after 30 s without work). A
    /// runner's idle time is counted on a coarse clock (on Linux, the
    /// kernel's tick of 1 to 4 ms): it stops within a tick of the timeout.
    pub fn idle_shutdown_after(mut self, after: impl Into<IdleShutdown>) -> Self {
        self.idle_shutdown_after = after.into();
        self
    }

    /// Idle shutdown of the `min` runners (default: never).
    pub fn min_idle_shutdown_after(mut self, after: impl Into<IdleShutdown>) -> Self {
        self.min_idle_shutdown_after = after.into();
        self
    }

    /// Bound the waiting queue: a caller that would be queued beyond
    /// `capacity` gets [`Error::QueueFull`] at once (default: unbounded).
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = Some(capacity);
        self
    }

    /// How many call keys (`CallOptions::key` in the facade) the pool
    /// remembers the runner of (default [`DEFAULT_KEY_CAPACITY`], 4096).
    /// When a new key finds the table full, the keys of runners that are
    /// gone are forgotten first, then the least recently used half; a
    /// forgotten key's next call goes to the least loaded runner, which
    /// becomes its home again. Validation refuses 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame_actors::PoolConfig;
    ///
    /// let config = PoolConfig::new(4).key_capacity(100_000);
    /// assert_eq!(config.get_key_capacity(), 100_000);
    /// assert!(PoolConfig::new(4).key_capacity(0).validate().is_err());
    /// ```
    pub fn key_capacity(mut self, capacity: usize) -> Self {
        self.key_capacity = capacity;
        self
    }

    /// The configured bound of the call-key table.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame_actors::PoolConfig;
    ///
    /// assert_eq!(PoolConfig::new(4).key_capacity(8).get_key_capacity(), 8);
    /// ```
    pub fn get_key_capacity(&self) -> usize {
        self.key_capacity
    }

    /// How many bytes of casts to one placed child may be on their way to
    /// it at once (default 8 MiB): sent by its handle and not yet handed to
    /// the child's actor on its runner. Past it `Child::cast` fails with
    /// [`Error::ChildBusy`] and `Child::cast_wait`
    /// waits, so a child that falls behind (its runner frozen, its link
    /// slow) cannot grow the parent's memory without bound. One cast larger
    /// than the bound still goes when nothing else is on its way. The
    /// actor's own mailbox is ractor's and unbounded: an actor slower than
    /// its casts should answer calls its senders await. Validation refuses
    /// 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame_actors::PoolConfig;
    ///
    /// let config = PoolConfig::new(4).child_cast_bytes(1 << 20);
    /// assert_eq!(config.get_child_cast_bytes(), 1 << 20);
    /// assert!(PoolConfig::new(4).child_cast_bytes(0).validate().is_err());
    /// ```
    pub fn child_cast_bytes(mut self, bytes: usize) -> Self {
        self.child_cast_bytes = bytes;
        self
    }

    /// The configured bound of casts on their way to one placed child.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame_actors::{DEFAULT_CHILD_CAST_BYTES, PoolConfig};
    ///
    /// assert_eq!(PoolConfig::new(4).get_child_cast_bytes(), DEFAULT_CHILD_CAST_BYTES);
    /// ```
    pub fn get_child_cast_bytes(&self) -> usize {
        self.child_cast_bytes
    }

    /// Runners the pool boots ahead of demand (default 0): booted and
    /// connected, but handed no work until the pool needs to grow, when one
    /// is admitted at once instead of a boot being waited for (and another
    /// boots to take its place). They count toward `max`. They are booted
    /// when the pool starts and again when a caller has to ask the pool for
    /// a slot (no runner in service had room), and leave on idle like any
    /// runner, so a pool with no work still scales to zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame_actors::PoolConfig;
    ///
    /// let config = PoolConfig::new(8).standby(2);
    /// assert_eq!(config.get_standby(), 2);
    /// assert!(PoolConfig::new(2).standby(3).validate().is_err());
    /// ```
    pub fn standby(mut self, runners: usize) -> Self {
        self.standby = runners;
        self
    }

    /// Runners booted ahead of demand.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame_actors::PoolConfig;
    ///
    /// assert_eq!(PoolConfig::new(4).get_standby(), 0);
    /// ```
    pub fn get_standby(&self) -> usize {
        self.standby
    }

    /// Called before each growth boot with the target count.
    pub fn on_grow_start(mut self, hook: impl Fn(&PoolEvent) + Send + Sync + 'static) -> Self {
        self.on_grow_start = Some(Arc::new(hook));
        self
    }

    /// Called after each growth boot with its result and the new count.
    pub fn on_grow_end(mut self, hook: impl Fn(&PoolEvent) + Send + Sync + 'static) -> Self {
        self.on_grow_end = Some(Arc::new(hook));
        self
    }

    /// Called when a runner leaves the pool, with the new count.
    pub fn on_shrink(mut self, hook: impl Fn(&PoolEvent) + Send + Sync + 'static) -> Self {
        self.on_shrink = Some(Arc::new(hook));
        self
    }

    /// The pool's name.
    pub fn get_name(&self) -> &str {
        &self.name
    }

    /// The configured `min`.
    pub fn get_min(&self) -> usize {
        self.min
    }

    /// The configured `max`.
    pub fn get_max(&self) -> usize {
        self.max
    }

    /// The configured per-runner concurrency.
    pub fn get_max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    /// The default execution budget.
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }

    /// The boot budget, also the default checkout budget.
    pub fn get_boot_timeout(&self) -> Duration {
        self.boot_timeout
    }

    /// The drain budget.
    pub fn get_shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// Idle shutdown of ordinary runners.
    pub fn get_idle_shutdown_after(&self) -> &IdleShutdown {
        &self.idle_shutdown_after
    }

    /// Idle shutdown of the `min` runners.
    pub fn get_min_idle_shutdown_after(&self) -> &IdleShutdown {
        &self.min_idle_shutdown_after
    }

    /// Checks the options, then checks them against the functions runners
    /// will serve: an idle predicate must be registered (an unknown one
    /// would keep runners up for ever).
    ///
    /// # Errors
    ///
    /// [`Error::Config`], as [`PoolConfig::validate`], or naming the idle
    /// predicate that `registry` does not know.
    pub fn validate_for(&self, registry: &crate::func::registry::Registry) -> Result<(), Error> {
        self.validate()?;
        for idle in [&self.idle_shutdown_after, &self.min_idle_shutdown_after] {
            if let Some(name) = idle.predicate()
                && !registry.has_idle_predicate(name)
            {
                return Err(Error::Config(format!(
                    "idle predicate `{name}` is not registered (Registry::idle_predicate)"
                )));
            }
        }
        Ok(())
    }

    /// Checks the options.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `max` is 0, `min > max`, `max_concurrency` is 0,
    /// a queue bound or the key capacity is 0, the heartbeat interval or timeout is zero, the
    /// timeout is not above the interval, the frame limit is below
    /// [`MIN_FRAME_LIMIT`](crate::wire::MIN_FRAME_LIMIT) (4 KiB), the failsafe
    /// timeout is zero, or the name is empty.
    pub fn validate(&self) -> Result<(), Error> {
        let fail = |msg: String| Err(Error::Config(msg));
        if self.max == 0 {
            return fail("max must be at least 1".into());
        }
        if self.min > self.max {
            return fail(format!("min ({}) exceeds max ({})", self.min, self.max));
        }
        if self.max_concurrency == 0 {
            return fail("max_concurrency must be at least 1".into());
        }
        if self.queue_capacity == Some(0) {
            return fail("queue_capacity must be at least 1".into());
        }
        if self.standby > self.max {
            return fail(format!("standby ({}) must not exceed max ({})", self.standby, self.max));
        }
        if self.child_cast_bytes == 0 {
            return fail("child_cast_bytes must be at least 1".into());
        }
        if self.key_capacity == 0 {
            return fail("key_capacity must be at least 1".into());
        }
        // What runners get of the options: the rules a runner holds its
        // `FLAME_PARENT` to, so a valid pool never boots a runner that
        // refuses its settings.
        let settings = crate::flame_parent::RunnerSettings {
            failsafe_timeout: self.failsafe_timeout,
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_timeout: self.heartbeat_timeout,
            idle_after: self.idle_shutdown_after.duration(),
            idle_predicate: None,
            shutdown_timeout: self.shutdown_timeout,
            max_frame_size: self.max_frame_size,
            release_memory_after: self.release_memory_after,
        };
        settings.check().map_err(Error::Config)?;
        if self.name.is_empty() {
            return fail("name must not be empty".into());
        }
        Ok(())
    }
}

impl From<Duration> for IdleShutdown {
    fn from(d: Duration) -> Self {
        IdleShutdown::After(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b10_defaults_mirror_flame() {
        let c = PoolConfig::new(3);
        assert_eq!(c.min, 0);
        assert_eq!(c.max_concurrency, 100);
        assert!(!c.single_use);
        assert!(!c.single_use_beyond_min);
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.boot_timeout, Duration::from_secs(30));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(c.idle_shutdown_after, IdleShutdown::After(Duration::from_secs(30)));
        assert_eq!(c.min_idle_shutdown_after, IdleShutdown::Never);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn b10_invalid_options_are_rejected() {
        for (config, needle) in [
            (PoolConfig::new(0), "max must be at least 1"),
            (PoolConfig::new(1).min(2), "min (2) exceeds max (1)"),
            (PoolConfig::new(1).max_concurrency(0), "max_concurrency"),
            (PoolConfig::new(1).queue_capacity(0), "queue_capacity"),
            (PoolConfig::new(1).key_capacity(0), "key_capacity"),
            (
                PoolConfig::new(1).heartbeat_interval(Duration::ZERO),
                "heartbeat_interval must be above zero",
            ),
            (
                PoolConfig::new(1)
                    .heartbeat_interval(Duration::ZERO)
                    .heartbeat_timeout(Duration::ZERO),
                "heartbeat_interval must be above zero",
            ),
            (
                PoolConfig::new(1).heartbeat_timeout(Duration::ZERO),
                "heartbeat_timeout must be above zero",
            ),
            (
                PoolConfig::new(1)
                    .heartbeat_interval(Duration::from_secs(2))
                    .heartbeat_timeout(Duration::from_secs(2)),
                "must exceed heartbeat_interval",
            ),
            (
                PoolConfig::new(1).max_frame_size(0),
                "max_frame_size must be at least 4096 bytes",
            ),
            (PoolConfig::new(1).max_frame_size(4095), "max_frame_size"),
            (
                PoolConfig::new(1).failsafe_timeout(Duration::ZERO),
                "failsafe_timeout must be above zero",
            ),
            (
                PoolConfig::new(1).child_cast_bytes(0),
                "child_cast_bytes must be at least 1",
            ),
            (PoolConfig::new(1).standby(2), "standby (2) must not exceed max (1)"),
        ] {
            let err = config.validate().unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
        assert!(PoolConfig::new(1).max_frame_size(4096).validate().is_ok());
    }
}
