//! `FLAME_PARENT`: how a runner learns who its parent is.
//!
//! One environment variable holds base64 of an rmp-serde [`Parent`]. Only the
//! entry point reads the environment ([`Parent::get`]); everything else is
//! handed the decoded value, so tests inject a `Parent` instead of setting
//! process-global variables.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::ids::{BuildId, RunnerId, Token};
use crate::wire::{Fingerprint, MIN_FRAME_LIMIT, PROTOCOL_VERSION};

/// The environment variable that turns a process into a runner.
pub const FLAME_PARENT: &str = "FLAME_PARENT";

/// What a runner needs to find and prove itself to its parent.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ractor_flame_actors::{BuildId, Parent, RunnerId, Token};
///
/// let parent = Parent::new(
///     RunnerId::new(),
///     vec!["127.0.0.1:4000".parse().unwrap()],
///     Token::generate(),
///     "process",
///     BuildId(7),
/// );
/// let encoded = parent.encode();
/// let back = Parent::decode(&encoded).unwrap();
/// assert_eq!(back.runner_id, parent.runner_id);
/// assert!(Parent::decode("not base64!").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parent {
    /// The runner this process is.
    pub runner_id: RunnerId,
    /// Where the parent listens, tried in order (IP literals: no DNS on boot).
    pub parent_addrs: Vec<std::net::SocketAddr>,
    /// The per-runner secret.
    pub token: Token,
    /// The backend that booted this runner (`"process"`, `"docker"`, ...).
    pub backend: String,
    /// A base name for the runner's node, for logs.
    pub node_base: String,
    /// The environment variable that holds the host's address, if the backend
    /// sets one.
    pub host_env: String,
    /// Wire protocol version.
    pub protocol_version: u32,
    /// `ractor-flame-actors` version of the parent.
    pub crate_version: String,
    /// The parent's [`BuildId`].
    pub build_id: BuildId,
    /// Settings the runner applies.
    pub settings: RunnerSettings,
    /// The fingerprint of the parent's certificate when the link is TLS:
    /// the runner accepts no other. `None`: plain TCP.
    #[serde(default)]
    pub tls: Option<Fingerprint>,
}

impl fmt::Debug for Parent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parent")
            .field("runner_id", &self.runner_id)
            .field("parent_addrs", &self.parent_addrs)
            .field("token", &self.token)
            .field("backend", &self.backend)
            .field("node_base", &self.node_base)
            .field("protocol_version", &self.protocol_version)
            .field("build_id", &self.build_id)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Runner-side settings handed down from the pool configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerSettings {
    /// No parent connection within this: the runner stops.
    pub failsafe_timeout: Duration,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Silence after which the parent is lost.
    pub heartbeat_timeout: Duration,
    /// Idle shutdown: `None` for never.
    pub idle_after: Option<Duration>,
    /// Named idle predicate, if any.
    pub idle_predicate: Option<String>,
    /// Drain budget on shutdown.
    pub shutdown_timeout: Duration,
    /// Largest frame in bytes.
    pub max_frame_size: usize,
    /// Quiet time after which the runner gives memory back: `None` for
    /// never (absent from a parent of an earlier release: the default).
    #[serde(default = "default_release_memory_after")]
    pub release_memory_after: Option<Duration>,
}

fn default_release_memory_after() -> Option<Duration> {
    Some(crate::config::DEFAULT_RELEASE_MEMORY_AFTER)
}

impl Default for RunnerSettings {
    fn default() -> Self {
        RunnerSettings {
            failsafe_timeout: crate::config::DEFAULT_FAILSAFE,
            heartbeat_interval: crate::config::DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: crate::config::DEFAULT_HEARTBEAT_TIMEOUT,
            idle_after: Some(crate::config::DEFAULT_IDLE_SHUTDOWN),
            idle_predicate: None,
            shutdown_timeout: crate::config::DEFAULT_TIMEOUT,
            max_frame_size: crate::wire::DEFAULT_MAX_FRAME,
            release_memory_after: default_release_memory_after(),
        }
    }
}

impl RunnerSettings {
    /// Whether a runner can work with these settings: `Err` names the first
    /// field that it cannot, and why. [`Parent::decode`] refuses such a
    /// `FLAME_PARENT`, and [`PoolConfig::validate`](crate::PoolConfig::validate)
    /// the options they would come from.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.heartbeat_interval.is_zero() {
            return Err("heartbeat_interval must be above zero: the link could not pace its heartbeats".into());
        }
        if self.heartbeat_timeout.is_zero() {
            return Err("heartbeat_timeout must be above zero: every link would be lost at once".into());
        }
        if self.heartbeat_timeout <= self.heartbeat_interval {
            return Err(format!(
                "heartbeat_timeout ({:?}) must exceed heartbeat_interval ({:?}): a link would be lost between two \
                 heartbeats",
                self.heartbeat_timeout, self.heartbeat_interval
            ));
        }
        if self.max_frame_size < MIN_FRAME_LIMIT {
            return Err(format!(
                "max_frame_size must be at least {MIN_FRAME_LIMIT} bytes (the handshake's own limit), not {}: \
                 calls and replies would not fit in a frame",
                self.max_frame_size
            ));
        }
        if self.failsafe_timeout.is_zero() {
            return Err("failsafe_timeout must be above zero: a runner would stop before it could connect".into());
        }
        Ok(())
    }
}

/// A `FLAME_PARENT` value that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed FLAME_PARENT: {0}")]
pub struct ParentError(String);

impl Parent {
    /// A parent description with default runner settings.
    pub fn new(
        runner_id: RunnerId,
        parent_addrs: Vec<std::net::SocketAddr>,
        token: Token,
        backend: impl Into<String>,
        build_id: BuildId,
    ) -> Self {
        Parent {
            runner_id,
            parent_addrs,
            token,
            backend: backend.into(),
            node_base: "flame".to_owned(),
            host_env: String::new(),
            protocol_version: PROTOCOL_VERSION,
            crate_version: env!("CARGO_PKG_VERSION").to_owned(),
            build_id,
            settings: RunnerSettings::default(),
            tls: None,
        }
    }

    /// Base64 of the rmp-serde encoding: the value of `FLAME_PARENT`.
    pub fn encode(&self) -> String {
        let bytes = rmp_serde::to_vec_named(self).expect("a Parent always encodes");
        B64.encode(bytes)
    }

    /// Decodes a `FLAME_PARENT` value.
    ///
    /// # Errors
    ///
    /// [`ParentError`] when the value is not base64, not a `Parent`, has no
    /// parent address, speaks another protocol version, or carries settings
    /// a runner cannot work with (a zero heartbeat interval or timeout, a
    /// timeout not above the interval, a frame limit below the handshake's,
    /// a zero failsafe): the message names the field and why.
    pub fn decode(value: &str) -> Result<Self, ParentError> {
        let bytes = B64
            .decode(value.trim())
            .map_err(|e| ParentError(format!("not base64: {e}")))?;
        let parent: Parent =
            rmp_serde::from_slice(&bytes).map_err(|e| ParentError(format!("not a parent description: {e}")))?;
        if parent.protocol_version != PROTOCOL_VERSION {
            return Err(ParentError(format!(
                "protocol version {} (this build speaks {PROTOCOL_VERSION})",
                parent.protocol_version
            )));
        }
        if parent.parent_addrs.is_empty() {
            return Err(ParentError("no parent address".into()));
        }
        parent
            .settings
            .check()
            .map_err(|why| ParentError(format!("unusable runner settings: {why}")))?;
        Ok(parent)
    }

    /// Reads `FLAME_PARENT`: `Ok(None)` on a parent (unset), `Ok(Some(_))` on
    /// a runner.
    ///
    /// # Errors
    ///
    /// [`ParentError`] when the variable is set but malformed; never a panic.
    pub fn get() -> Result<Option<Self>, ParentError> {
        match std::env::var(FLAME_PARENT) {
            Ok(value) => Parent::decode(&value).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(ParentError("not unicode".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Parent {
        Parent::new(
            RunnerId::new(),
            vec!["127.0.0.1:9".parse().unwrap()],
            Token::generate(),
            "process",
            BuildId(42),
        )
    }

    #[test]
    fn b35_parent_carries_everything_and_round_trips() {
        let p = sample();
        let back = Parent::decode(&p.encode()).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.backend, "process");
        assert_eq!(back.build_id, BuildId(42));
        assert_eq!(back.protocol_version, PROTOCOL_VERSION);
        assert_eq!(back.crate_version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn b35_malformed_values_are_clear_errors() {
        for bad in ["", "%%%", "aGVsbG8=", &B64.encode([0xc1, 0xff, 0x00])] {
            let err = Parent::decode(bad).unwrap_err();
            assert!(err.to_string().starts_with("malformed FLAME_PARENT"), "{err}");
        }
        let mut p = sample();
        p.protocol_version += 1;
        assert!(
            Parent::decode(&p.encode())
                .unwrap_err()
                .to_string()
                .contains("protocol")
        );
        let mut p = sample();
        p.parent_addrs.clear();
        assert!(Parent::decode(&p.encode()).is_err());
    }

    #[test]
    fn b55_a_flame_parent_with_unusable_settings_is_refused_with_a_clear_error() {
        type Spoil = fn(&mut RunnerSettings);
        let unusable: [(Spoil, &str); 7] = [
            (
                |s| s.heartbeat_interval = Duration::ZERO,
                "heartbeat_interval must be above zero",
            ),
            (
                |s| s.heartbeat_timeout = Duration::ZERO,
                "heartbeat_timeout must be above zero",
            ),
            (
                |s| s.heartbeat_timeout = s.heartbeat_interval,
                "heartbeat_timeout (500ms) must exceed heartbeat_interval (500ms)",
            ),
            (
                |s| s.heartbeat_interval = Duration::from_secs(3),
                "must exceed heartbeat_interval (3s)",
            ),
            (|s| s.max_frame_size = 0, "max_frame_size must be at least 4096 bytes"),
            (|s| s.max_frame_size = MIN_FRAME_LIMIT - 1, "not 4095"),
            (
                |s| s.failsafe_timeout = Duration::ZERO,
                "failsafe_timeout must be above zero",
            ),
        ];
        for (spoil, needle) in unusable {
            let mut p = sample();
            spoil(&mut p.settings);
            let err = Parent::decode(&p.encode()).unwrap_err().to_string();
            assert!(
                err.starts_with("malformed FLAME_PARENT: unusable runner settings: "),
                "{err}"
            );
            assert!(err.contains(needle), "{err} (wanted {needle:?})");
        }
        // The limits themselves are usable.
        let mut p = sample();
        p.settings.max_frame_size = MIN_FRAME_LIMIT;
        p.settings.heartbeat_interval = Duration::from_millis(1);
        p.settings.heartbeat_timeout = Duration::from_millis(2);
        p.settings.failsafe_timeout = Duration::from_millis(1);
        assert_eq!(Parent::decode(&p.encode()).unwrap(), p);
        // What a valid pool configuration hands down always is.
        assert!(RunnerSettings::default().check().is_ok());
    }

    #[test]
    fn token_debug_is_redacted_and_compare_is_exact() {
        let t = Token::generate();
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert!(!format!("{:?}", sample()).contains(&format!("{:?}", t.as_bytes())));
        assert!(t.verify(t.as_bytes()));
        let mut other = t.as_bytes().to_vec();
        other[31] ^= 1;
        assert!(!t.verify(&other));
        assert!(!t.verify(&other[..5]));
    }
}
