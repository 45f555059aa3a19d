//! Per-call options.

use std::time::Duration;

/// Options of one call.
///
/// | option | meaning | default |
/// |---|---|---|
/// | `timeout` | total budget: checkout plus execution | none: the pool's `boot_timeout` for checkout, then its `timeout` for execution |
/// | `link` | cancel the remote task when the caller's future is dropped | `true` |
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
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            timeout: None,
            link: true,
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

    /// The total budget, if set.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether the call is linked.
    pub fn is_linked(&self) -> bool {
        self.link
    }
}
