//! The Fly backend's typed errors.

use std::time::Duration;

use ractor_flame_actors::BackendError;

/// Why the Fly backend could not boot (or reclaim) a runner.
///
/// Every variant converts into [`BackendError`], so a failed boot reaches
/// callers as [`Error::BootFailed`](crate::Error::BootFailed) with this
/// message. No variant ever holds the API token.
///
/// # Examples
///
/// ```
/// use ractor_flame::fly::{FlyBackend, FlyError};
///
/// let err = FlyBackend::with_env(|_| None).validate().unwrap_err();
/// assert!(matches!(err, FlyError::Missing { option: "token", .. }));
/// assert!(err.to_string().contains("FLY_API_TOKEN"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlyError {
    /// A required option is unset. They are checked in FLAME's order:
    /// token, image, host, app.
    #[error("the Fly backend needs `{option}`: set {env} or call `FlyBackend::{option}`")]
    Missing {
        /// The option's name.
        option: &'static str,
        /// Where its default comes from (an environment variable), or what
        /// to set instead.
        env: &'static str,
    },
    /// No address for runners to reach the parent at: `FLY_PRIVATE_IP` is
    /// unset and no [`parent_addr`](super::FlyBackend::parent_addr) was given.
    #[error(
        "the Fly backend has no parent address: FLY_PRIVATE_IP is not set (or not an IP address) and no `parent_addr` was given"
    )]
    NoParentAddress,
    /// An option has a value the Machines API cannot take.
    #[error("invalid Fly backend option: {0}")]
    Invalid(String),
    /// The API refused the token (HTTP 401 or 403).
    #[error("the Fly API rejected the token ({status}): check FLY_API_TOKEN and its access to app `{app}`")]
    TokenRejected {
        /// 401 or 403.
        status: u16,
        /// The app the request was for.
        app: String,
    },
    /// The app or the image does not exist (HTTP 404 on create).
    #[error("the Fly API found no app `{app}` or no image `{image}` (404): {body}")]
    NotFound {
        /// The app asked for.
        app: String,
        /// The image asked for.
        image: String,
        /// The answer's body (cut to a few hundred bytes).
        body: String,
    },
    /// The region had no capacity (HTTP 409, 412 or 422) on every attempt.
    #[error("no capacity for a machine in region {region} after {attempts} attempts (last answer {status}): {body}")]
    NoCapacity {
        /// The region asked for (`"(any)"` when none was set).
        region: String,
        /// Create requests sent.
        attempts: u32,
        /// The last status.
        status: u16,
        /// The last answer's body.
        body: String,
    },
    /// The API kept answering 429 or 5xx (or could not be reached) until the
    /// boot timeout ran out.
    #[error("the Fly API did not accept the request within {waited:?} ({attempts} attempts); last answer: {last}")]
    Unavailable {
        /// Requests sent.
        attempts: u32,
        /// How long it tried.
        waited: Duration,
        /// The last status and body, or the transport error.
        last: String,
    },
    /// Any other answer the backend does not expect.
    #[error("the Fly API answered {status} to {action}: {body}")]
    Api {
        /// What was asked (`"create machine"`, `"wait for machine"`).
        action: &'static str,
        /// The status.
        status: u16,
        /// The answer's body.
        body: String,
    },
    /// An answer that does not parse as the documented JSON.
    #[error("the Fly API's answer to {action} does not parse: {reason}")]
    Decode {
        /// What was asked.
        action: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// The machine was created but did not reach `started` in time.
    #[error("machine {machine} did not start within the boot timeout of {timeout:?}")]
    StartTimeout {
        /// The machine id.
        machine: String,
        /// The backend's boot timeout.
        timeout: Duration,
    },
    /// The app has no volume of the name the backend mounts (in its region,
    /// when one is set).
    #[error(
        "the Fly app `{app}` has no volume named `{name}`{in_region}: create one per runner (`fly volumes create {name}`)"
    )]
    VolumeMissing {
        /// The app.
        app: String,
        /// The volume name asked for.
        name: String,
        /// `" in region <r>"`, or empty when no region is set.
        in_region: String,
    },
    /// Every volume of that name is attached to a machine: a Fly volume
    /// serves one machine at a time.
    #[error(
        "every Fly volume named `{name}` is attached ({count} of {count}): a runner needs a free one; create one per runner the pool may run (its `max`)"
    )]
    VolumesAttached {
        /// The volume name.
        name: String,
        /// How many volumes of that name exist.
        count: usize,
    },
    /// The parent cannot listen for runners, or the HTTP client cannot be
    /// built.
    #[error("{0}")]
    Local(String),
}

impl From<FlyError> for BackendError {
    fn from(err: FlyError) -> Self {
        BackendError::new(err)
    }
}

/// At most this many bytes of an answer's body go into an error.
const BODY_LIMIT: usize = 512;

/// The body cut to [`BODY_LIMIT`] bytes, on a character boundary.
pub(super) fn cut(body: &str) -> String {
    let body = body.trim();
    if body.len() <= BODY_LIMIT {
        return body.to_owned();
    }
    let mut end = BODY_LIMIT;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &body[..end])
}
