//! The one error type callers match on, and the reasons it carries.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything that can go wrong with a call, a cast or a pool.
///
/// The variants name the cause: there is no bare "timeout". A slot that was not
/// found in time is [`Error::CheckoutTimeout`]; work that ran too long is
/// [`Error::Deadline`].
///
/// # Examples
///
/// ```
/// use ractor_flame_actors::Error;
///
/// fn retryable(err: &Error) -> bool {
///     matches!(err, Error::CheckoutTimeout { .. } | Error::RunnerDown { .. } | Error::QueueFull { .. })
/// }
/// assert!(retryable(&Error::QueueFull { capacity: 8 }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No runner slot became free before the caller's checkout budget ran out.
    /// The caller has left the queue.
    #[error("no runner slot within {waited:?}")]
    CheckoutTimeout {
        /// How long the caller waited for a slot.
        waited: Duration,
    },
    /// The work was still running at its deadline; the runner aborted it.
    #[error("`{function}` passed its deadline of {timeout:?}")]
    Deadline {
        /// The remote function's name.
        function: String,
        /// The execution budget the call had when it was sent.
        timeout: Duration,
    },
    /// The remote function returned an error.
    #[error("`{function}` failed: {message}")]
    Remote {
        /// The remote function's name.
        function: String,
        /// What kind of failure the function reported
        /// ([`FnErrorKind::Internal`] unless it chose one): match on it to
        /// map failures to statuses.
        kind: FnErrorKind,
        /// The error's message, as the function's error displayed it.
        message: String,
    },
    /// The remote function panicked. The runner survived and serves other calls.
    #[error("`{function}` panicked: {message}")]
    Panic {
        /// The remote function's name.
        function: String,
        /// The panic payload, when it was a string.
        message: String,
    },
    /// The runner the call was on went away before it answered.
    #[error("runner down: {reason}")]
    RunnerDown {
        /// Why the runner is gone.
        reason: DownReason,
    },
    /// A runner could not be booted; carries the backend's reason.
    #[error("boot failed: {reason}")]
    BootFailed {
        /// The backend's explanation.
        reason: String,
    },
    /// The pool is not running (never started, or stopped).
    #[error("pool is not running")]
    PoolNotRunning,
    /// The pool's bounded waiting queue is full.
    #[error("waiting queue is full ({capacity} callers)")]
    QueueFull {
        /// The configured queue bound.
        capacity: usize,
    },
    /// No function of that name is registered on the runner.
    #[error("no remote function named `{function}` is registered")]
    UnknownFunction {
        /// The name that was called.
        function: String,
    },
    /// A value could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(String),
    /// The call was cancelled before it completed (for example, its runner
    /// started draining before the call began).
    #[error("call cancelled: {0}")]
    Cancelled(String),
    /// The placed child is gone (it stopped or crashed, or its runner went
    /// away); later calls on its handle fail with this.
    #[error("placed child stopped: {reason}")]
    ChildStopped {
        /// Why it stopped.
        reason: String,
    },
    /// The pool configuration is invalid.
    #[error("invalid pool configuration: {0}")]
    Config(String),
    /// Casts to the placed child already on their way to it fill its bound
    /// (`PoolConfig::child_cast_bytes`): the child has fallen behind. The
    /// cast was not sent; send it again later, or wait for room with
    /// `Child::cast_wait`.
    #[error("casts to the placed child already hold {queued} of {limit} bytes on their way")]
    ChildBusy {
        /// Bytes of casts on their way to the child.
        queued: usize,
        /// The bound.
        limit: usize,
    },
}

/// Why a runner went away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DownReason {
    /// The connection to the runner closed unexpectedly.
    ConnectionLost(String),
    /// No heartbeat arrived within the heartbeat timeout.
    HeartbeatLost(Duration),
    /// The runner's process or container exited with this code.
    Exited(i64),
    /// The runner was killed (by a signal or by the engine).
    Killed,
    /// The runner was killed for exceeding its memory limit.
    OutOfMemory,
    /// The runner is shutting down and takes no new work.
    ShuttingDown,
    /// The pool stopped the runner.
    Stopped,
    /// The backend's own account (for example an exit with the last log
    /// lines of a container).
    Backend(String),
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::ConnectionLost(why) => write!(f, "connection lost ({why})"),
            DownReason::HeartbeatLost(after) => write!(f, "no heartbeat for {after:?}"),
            DownReason::Exited(code) => write!(f, "exited with code {code}"),
            DownReason::Killed => f.write_str("killed"),
            DownReason::OutOfMemory => f.write_str("killed: out of memory"),
            DownReason::ShuttingDown => f.write_str("shutting down"),
            DownReason::Stopped => f.write_str("stopped by the pool"),
            DownReason::Backend(why) => f.write_str(why),
        }
    }
}

/// What kind of failure a remote function reported, carried to the caller
/// in [`Error::Remote`]. A small set, after gRPC's status codes, so that a
/// service maps failures to its own statuses without matching messages (for
/// HTTP: `InvalidArgument` to 400 or 422, `NotFound` to 404,
/// `PermissionDenied` to 403, `FailedPrecondition` to 409 or 412,
/// `ResourceExhausted` to 429 or 507, `Unavailable` to 503, the rest to 500).
///
/// # Examples
///
/// ```
/// use ractor_flame_actors::{Error, FnErrorKind};
///
/// fn status(err: &Error) -> u16 {
///     match err {
///         Error::Remote { kind: FnErrorKind::InvalidArgument, .. } => 422,
///         Error::Remote { kind: FnErrorKind::NotFound, .. } => 404,
///         Error::Deadline { .. } => 504,
///         Error::CheckoutTimeout { .. } | Error::QueueFull { .. } => 503,
///         _ => 500,
///     }
/// }
/// let err = Error::Remote {
///     function: "thumbnail".into(),
///     kind: FnErrorKind::InvalidArgument,
///     message: "not an image".into(),
/// };
/// assert_eq!(status(&err), 422);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FnErrorKind {
    /// A failure of the work itself; the kind of every error that does not
    /// choose one (`?` on any error, [`FnError::msg`]).
    #[default]
    Internal,
    /// The arguments are wrong: the same call fails again.
    InvalidArgument,
    /// Something the call names does not exist.
    NotFound,
    /// Something the call would create exists already.
    AlreadyExists,
    /// The caller may not do this.
    PermissionDenied,
    /// The system is not in the state the call needs.
    FailedPrecondition,
    /// A quota, or the runner's memory or disk, ran out.
    ResourceExhausted,
    /// A resource the work needs is unavailable for now: a later try may
    /// succeed.
    Unavailable,
    /// The body stopped because its call was cancelled or its deadline
    /// passed. A caller whose call was stopped that way gets
    /// [`Error::Deadline`] (or [`Error::Cancelled`]) instead; it sees this
    /// kind only when a body returns it on its own.
    Cancelled,
}

impl FnErrorKind {
    /// The kind's name in `snake_case` (`"invalid_argument"`), as metrics
    /// and logs show it.
    pub fn as_str(self) -> &'static str {
        match self {
            FnErrorKind::Internal => "internal",
            FnErrorKind::InvalidArgument => "invalid_argument",
            FnErrorKind::NotFound => "not_found",
            FnErrorKind::AlreadyExists => "already_exists",
            FnErrorKind::PermissionDenied => "permission_denied",
            FnErrorKind::FailedPrecondition => "failed_precondition",
            FnErrorKind::ResourceExhausted => "resource_exhausted",
            FnErrorKind::Unavailable => "unavailable",
            FnErrorKind::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for FnErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error a remote function returns, carried to the caller as
/// [`Error::Remote`].
///
/// Any [`std::error::Error`] converts into it, so `?` works in a remote
/// function's body.
///
/// # Examples
///
/// ```
/// use ractor_flame_actors::FnError;
///
/// fn parse(s: &str) -> Result<u32, FnError> {
///     let n: u32 = s.parse()?;
///     if n == 0 {
///         return Err(FnError::msg("zero is not allowed"));
///     }
///     Ok(n)
/// }
/// assert_eq!(parse("0").unwrap_err().to_string(), "zero is not allowed");
/// assert!(parse("x").is_err());
/// ```
///
/// A panic that a body catches as a [`tokio::task::JoinError`] (a
/// `spawn_blocking` or `spawn` it awaited with `?`) stays a panic: the caller
/// gets [`Error::Panic`], not [`Error::Remote`].
///
/// A body gives its error a [`FnErrorKind`] so that callers can tell a bad
/// request from a failure without reading messages:
///
/// ```
/// use ractor_flame_actors::{FnError, FnErrorKind};
///
/// fn check(width: u32) -> Result<u32, FnError> {
///     if width == 0 {
///         return Err(FnError::invalid_argument("width must be positive"));
///     }
///     Ok(width)
/// }
/// assert_eq!(check(0).unwrap_err().kind(), FnErrorKind::InvalidArgument);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FnError {
    kind: FnErrorKind,
    message: String,
    panic: bool,
}

impl FnError {
    /// An error with this message, of kind [`FnErrorKind::Internal`].
    pub fn msg(message: impl fmt::Display) -> Self {
        FnError::new(FnErrorKind::Internal, message)
    }

    /// An error of this kind with this message.
    pub fn new(kind: FnErrorKind, message: impl fmt::Display) -> Self {
        FnError {
            kind,
            message: message.to_string(),
            panic: false,
        }
    }

    /// The caller's input is wrong ([`FnErrorKind::InvalidArgument`]):
    /// trying again with the same arguments fails again.
    pub fn invalid_argument(message: impl fmt::Display) -> Self {
        FnError::new(FnErrorKind::InvalidArgument, message)
    }

    /// Something the call names does not exist ([`FnErrorKind::NotFound`]).
    pub fn not_found(message: impl fmt::Display) -> Self {
        FnError::new(FnErrorKind::NotFound, message)
    }

    /// A resource the work needs is unavailable for now
    /// ([`FnErrorKind::Unavailable`]): trying again later may succeed.
    pub fn unavailable(message: impl fmt::Display) -> Self {
        FnError::new(FnErrorKind::Unavailable, message)
    }

    /// The body stopped because its call was cancelled or its deadline
    /// passed ([`FnErrorKind::Cancelled`]); return it when
    /// [`CurrentCall::is_cancelled`](crate::CurrentCall::is_cancelled) turns
    /// true. The caller gets what stopped the call
    /// ([`Error::Deadline`] for a deadline), never this error.
    pub fn cancelled() -> Self {
        FnError::new(FnErrorKind::Cancelled, "cancelled")
    }

    /// The same error with another kind.
    #[must_use]
    pub fn with_kind(mut self, kind: FnErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// The error's kind.
    pub fn kind(&self) -> FnErrorKind {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the error is a panic of work the body awaited.
    pub fn is_panic(&self) -> bool {
        self.panic
    }
}

impl fmt::Display for FnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + 'static> From<E> for FnError {
    fn from(err: E) -> Self {
        let message = err.to_string();
        let any: Box<dyn std::any::Any> = Box::new(err);
        match any.downcast::<tokio::task::JoinError>() {
            Ok(join) if join.is_panic() => FnError {
                kind: FnErrorKind::Internal,
                message: panic_message(&*join.into_panic()),
                panic: true,
            },
            _ => FnError::msg(message),
        }
    }
}

/// An error of a [`Backend`](crate::Backend) callback: a message for humans,
/// turned into [`Error::BootFailed`] for callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

impl BackendError {
    /// An error with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        BackendError(message.to_string())
    }
}

/// A value that did not encode, or bytes that did not decode as the type
/// asked for; the codec's message is kept.
///
/// # Examples
///
/// ```
/// use ractor_flame_actors::Args;
///
/// let err = Args::encode("text".to_owned()).unwrap().decode::<u64>().unwrap_err();
/// assert!(!err.to_string().is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(String);

impl CodecError {
    pub(crate) fn new(message: impl fmt::Display) -> Self {
        CodecError(message.to_string())
    }

    /// The codec's message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

impl From<CodecError> for Error {
    fn from(err: CodecError) -> Self {
        Error::Codec(err.0)
    }
}

/// The message of a panic payload, when it is a string.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
