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
    /// Default options: pool budgets, linked.
    pub fn new() -> Self {
        Self::default()
    }

    /// A total budget for checkout and execution.
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
