//! Per-call options.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::num::NonZeroU64;
use std::time::Duration;

use crate::retry::RetryPolicy;

/// Options of one call.
///
/// | option | meaning | default |
/// |---|---|---|
/// | `timeout` | total budget: checkout plus execution | none: the pool's `boot_timeout` for checkout, then its `timeout` for execution |
/// | `link` | cancel the remote task when the caller's future is dropped | `true` |
/// | `key` | send calls with the same key to the same runner while it serves and has room | none |
/// | `retry` | try again after `RunnerDown` or a failed boot, by a [`RetryPolicy`] | never |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ractor_flame::CallOptions;
///
/// let opts = CallOptions::new().timeout(Duration::from_secs(5)).link(false);
/// assert_eq!(opts.get_timeout(), Some(Duration::from_secs(5)));
/// assert!(!opts.is_linked());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) link: bool,
    /// The 64-bit hash of the call's key, if any.
    pub(crate) key: Option<NonZeroU64>,
    pub(crate) retry: Option<RetryPolicy>,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            timeout: None,
            link: true,
            key: None,
            retry: None,
        }
    }
}

impl CallOptions {
    /// The least execution budget a call is sent with: one whose wait for a
    /// slot left less fails as a checkout timeout instead.
    pub const MIN_EXECUTION_BUDGET: Duration = Duration::from_millis(1);

    /// Default options: pool budgets, linked.
    pub fn new() -> Self {
        Self::default()
    }

    /// A total budget for checkout and execution: what waiting for a slot
    /// leaves is the deadline the runner enforces. A call whose wait leaves
    /// less than [`CallOptions::MIN_EXECUTION_BUDGET`] fails with
    /// [`Error::CheckoutTimeout`](crate::Error::CheckoutTimeout) without
    /// reaching a runner (sending it would only produce a deadline error).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Whether dropping the caller's future cancels the remote task (default
    /// `true`).
    pub fn link(mut self, link: bool) -> Self {
        self.link = link;
        self
    }

    /// Routes the call by `key`: calls with the same key go to the runner
    /// that served that key last, while it serves (not draining, not gone)
    /// and has a free slot. Otherwise the call goes where an unkeyed one
    /// would (the least loaded runner; among equals the one home to the
    /// fewest keys; else a new runner or the queue), and the runner that
    /// serves it becomes the key's home. Use it to keep a tenant's cache or
    /// a loaded model on one runner.
    ///
    /// Affinity, not a promise: a key moves when its runner is full, dies,
    /// drains or idles out, and while callers wait in the pool's queue a
    /// keyed call waits with them and takes the slot it is given. Only the
    /// key's 64-bit hash is kept (two keys whose hashes collide share a
    /// home), in a table of at most `PoolConfig::key_capacity` keys (4096
    /// by default; beyond it the least recently used keys are forgotten).
    /// Any `Hash` type is a key: `"tenant-42"` and `String::from("tenant-42")`
    /// are the same key. Applies to [`Pool::call_with`](crate::Pool::call_with)
    /// and [`Pool::place_child_with`](crate::Pool::place_child_with).
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::{CallOptions, FnError, LocalBackend, Pool, PoolConfig, Registry, RemoteFn};
    ///
    /// struct Where;
    /// impl RemoteFn for Where {
    ///     const NAME: &'static str = "where";
    ///     type Args = ();
    ///     type Output = String;
    ///     async fn run(_: ()) -> Result<String, FnError> {
    ///         Ok(format!("{:?}", ractor_flame::current_runner()))
    ///     }
    /// }
    ///
    /// # #[tokio::main] async fn main() -> Result<(), ractor_flame::Error> {
    /// let registry = Registry::new().register::<Where>();
    /// let pool = Pool::start(PoolConfig::new(4).min(4), LocalBackend::new(), &registry).await?;
    /// let first = pool.call_with::<Where>((), CallOptions::new().key("tenant-42")).await?;
    /// let again = pool.call_with::<Where>((), CallOptions::new().key("tenant-42")).await?;
    /// assert_eq!(first, again); // the runner had room
    /// # pool.stop().await;
    /// # Ok(()) }
    /// ```
    pub fn key(mut self, key: impl Hash) -> Self {
        self.key = Some(key_hash(key));
        self
    }

    /// Whether the call has a routing key ([`CallOptions::key`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::CallOptions;
    ///
    /// assert!(CallOptions::new().key(7_u64).has_key());
    /// assert!(!CallOptions::new().has_key());
    /// ```
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// Opts the call into retries by `policy`: after
    /// [`Error::RunnerDown`](crate::Error::RunnerDown) or
    /// [`Error::BootFailed`](crate::Error::BootFailed) only, within the
    /// policy's attempts and time (and the call's `timeout`, when set), with
    /// a jittered backoff between attempts. Every attempt carries one
    /// idempotency key, read by the body with
    /// [`CurrentCall::idempotency_key`](crate::CurrentCall::idempotency_key).
    /// Without it a call is tried once. Applies to
    /// [`Pool::call_with`](crate::Pool::call_with). Each retry is counted in
    /// `flame_call_retries_total` and logged at `warn`, and the call's span
    /// records its `attempts`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::{CallOptions, RetryPolicy};
    ///
    /// let opts = CallOptions::new().retry(RetryPolicy::new(3));
    /// assert_eq!(opts.get_retry().map(|p| p.get_max_attempts()), Some(3));
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// The retry policy, if set.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(ractor_flame::CallOptions::new().get_retry(), None);
    /// ```
    pub fn get_retry(&self) -> Option<RetryPolicy> {
        self.retry
    }

    /// The total budget, if set.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether the call is linked.
    pub fn is_linked(&self) -> bool {
        self.link
    }
}

/// A routing key's hash: SipHash with fixed keys, so the same key hashes
/// alike in every call and every handle of the process.
pub(crate) fn key_hash(key: impl Hash) -> NonZeroU64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    NonZeroU64::new(hasher.finish()).unwrap_or(NonZeroU64::MIN)
}
