//! The messages of the protocol. Fields are encoded by position (msgpack
//! arrays, rmp-serde's default), the cheapest to write and read; a field is
//! added at the end of its struct with `#[serde(default)]`, and
//! [`Hello::version`] names the layout, so a peer of another protocol is
//! refused by name at the handshake, never misread.

use serde::{Deserialize, Serialize};

use super::codec::FrameError;
use super::payload::Payload;
use crate::error::FnErrorKind;

use crate::ids::BuildId;
use crate::ids::{RunnerId, Token};

/// Function-name prefix of a `place_child`: the actor type's name follows.
pub const PLACE: &str = "flame.place/";
/// Function name of a cast to a placed child ([`ChildEnvelope`] argument).
pub const CHILD_CAST: &str = "flame.child.cast";
/// Function name of a call to a placed child ([`ChildEnvelope`] argument).
pub const CHILD_CALL: &str = "flame.child.call";
/// Function name that stops a placed child (its id as the argument).
pub const CHILD_STOP: &str = "flame.child.stop";

/// Whether `function` names an operation on placed children (placing one,
/// or a message to one) rather than a registered function: the runner
/// serves those itself, whatever the registry holds.
pub(crate) fn is_child_operation(function: &str) -> bool {
    function.starts_with(PLACE) || matches!(function, CHILD_CAST | CHILD_CALL | CHILD_STOP)
}

/// A message for a placed child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildEnvelope {
    /// The child's id (the id of the call that placed it).
    pub child: u64,
    /// The encoded cast or call.
    #[serde(with = "serde_bytes")]
    pub msg: Vec<u8>,
}

/// The runner's first frame: who it is and the proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version the runner speaks.
    pub version: u32,
    /// The runner's id, as handed to it in `FLAME_PARENT`.
    pub runner_id: RunnerId,
    /// The per-runner secret.
    pub token: Token,
    /// The runner's registry build id.
    pub build_id: BuildId,
    /// Why the runner cannot serve (a state that failed to build); the
    /// parent then fails the boot with this reason.
    #[serde(default)]
    pub failed: Option<String>,
}

/// The parent's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Welcome {
    /// Authenticated: frames may flow.
    Accepted,
    /// Refused, with the reason; the parent closes the connection.
    Refused(String),
}

/// One call or cast sent to a runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallFrame {
    /// Unique on its connection.
    pub id: u64,
    /// The registered function's name.
    pub function: String,
    /// The call's budget: microseconds left before its deadline when the
    /// frame was built; `None` for no deadline. The runner counts it from
    /// the frame's arrival on its own monotonic clock: a deadline never
    /// crosses the wire as a clock instant, so a peer whose wall clock is off
    /// keeps it all the same.
    pub budget_us: Option<u64>,
    /// `false` for a cast: the runner answers [`Outcome::Done`] without a value.
    pub want_result: bool,
    /// Whether the call is linked to its caller (cancelled when the caller
    /// goes, aborted when the parent goes).
    pub linked: bool,
    /// The caller's trace context; `None` (one byte) when the caller traces
    /// nothing.
    #[serde(default)]
    pub trace: Option<TraceContext>,
    /// rmp-serde encoded arguments (large ones travel after the frame's
    /// other fields, read into a buffer of their own).
    pub args: Payload,
    /// `true` when `args` holds the argument's bytes themselves, not their
    /// encoding: an argument that is one byte string
    /// ([`serde_bytes::ByteBuf`]) is sent and received without a copy.
    #[serde(default)]
    pub bare: bool,
    /// The key that names the call across its attempts, for a call that
    /// may be retried (`CallOptions::retry` in the facade); the body reads
    /// it from `current_call()`. Not written at all when `None`, so other
    /// calls' frames are as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Where a call sits in its caller's trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// The caller's span, as the parent's subscriber numbers it: the runner
    /// tags what it reports with the call, and the parent re-attaches it
    /// under this span.
    pub span: u64,
    /// A W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), when the
    /// parent runs with OpenTelemetry.
    #[serde(default)]
    pub traceparent: Option<String>,
}

/// A [`TraceContext`] decoded in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) struct TraceRef<'a> {
    #[allow(dead_code)]
    pub(crate) span: u64,
    #[serde(default, borrow)]
    pub(crate) traceparent: Option<&'a str>,
}

/// One `tracing` event of a runner, on its way to the parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// 1 = error, 2 = warn, 3 = info, 4 = debug, 5 = trace.
    pub level: u8,
    /// The event's target on the runner.
    pub target: String,
    /// Its message.
    pub message: String,
    /// Its other fields, as `name=value` pairs separated by spaces.
    #[serde(default)]
    pub fields: String,
    /// The call whose work emitted it, if any.
    #[serde(default)]
    pub call: Option<u64>,
    /// Events the runner dropped (queue full, rate limit) since the last
    /// record it sent.
    #[serde(default)]
    pub dropped: u64,
}

impl CallFrame {
    /// A call nobody awaits: no deadline, not linked, no result sent back
    /// (only its end), no trace.
    pub(crate) fn one_way(id: u64, function: &str, args: impl Into<Payload>) -> Self {
        CallFrame {
            id,
            function: function.to_owned(),
            budget_us: None,
            want_result: false,
            linked: false,
            trace: None,
            args: args.into(),
            bare: false,
            idempotency_key: None,
        }
    }

    /// The frame as a borrowed view.
    pub(crate) fn view(&self) -> CallRef<'_> {
        CallRef {
            id: self.id,
            function: &self.function,
            args: &self.args,
            budget_us: self.budget_us,
            want_result: self.want_result,
            linked: self.linked,
            trace: self.trace.as_ref().map(|t| TraceRef {
                span: t.span,
                traceparent: t.traceparent.as_deref(),
            }),
            bare: self.bare,
            idempotency_key: self.idempotency_key.as_deref(),
        }
    }
}

/// A [`CallFrame`] decoded in place: its name and arguments borrow the
/// connection's read buffer, so a large argument is not copied once more on
/// its way to the function's own decoder. Its fields are in
/// [`CallFrame`]'s order: frames are decoded by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) struct CallRef<'a> {
    pub(crate) id: u64,
    pub(crate) function: &'a str,
    pub(crate) budget_us: Option<u64>,
    pub(crate) want_result: bool,
    pub(crate) linked: bool,
    #[serde(default, borrow)]
    pub(crate) trace: Option<TraceRef<'a>>,
    pub(crate) args: &'a [u8],
    #[serde(default)]
    pub(crate) bare: bool,
    #[serde(default, borrow)]
    pub(crate) idempotency_key: Option<&'a str>,
}

impl CallRef<'_> {
    /// The call's deadline on this process's monotonic clock: its budget
    /// counted from `arrived`, when its frame arrived; `None` for no
    /// deadline.
    pub(crate) fn deadline_from(&self, arrived: std::time::Instant) -> Option<std::time::Instant> {
        self.budget_us
            .and_then(|us| super::clock::deadline_from_budget(arrived, us))
    }
}

/// [`ToRunner`] decoded in place (same encoding; a codec test keeps the two
/// in step).
#[derive(Debug, Deserialize)]
pub(crate) enum ToRunnerRef<'a> {
    Welcome(#[allow(dead_code)] Welcome),
    #[serde(borrow)]
    Call(CallRef<'a>),
    Cancel {
        id: u64,
    },
    Ping,
    IdleVerdict {
        granted: bool,
    },
    Shutdown,
    Credit {
        id: u64,
        items: u32,
    },
}

/// How a call ended on the runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The encoded output (a large one travels after the frame).
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A cast finished (its value is not sent back).
    Done,
    /// The function returned an error.
    Returned {
        /// Its kind.
        kind: FnErrorKind,
        /// Its message.
        message: String,
    },
    /// The function panicked with this message.
    Panicked(String),
    /// The function passed its deadline and was aborted.
    Deadline,
    /// No function of that name is registered.
    UnknownFunction,
    /// Arguments or output failed to (de)code, or a frame was too large.
    Codec(String),
    /// The runner is draining and took no new work.
    Refused,
    /// The placed child is gone; why.
    ChildStopped(String),
    /// The work was aborted on the runner (its caller cancelled it, or the
    /// runner stopped) before it produced an outcome.
    Aborted,
    /// An output that is one byte string (a `ByteBuf`), as its bytes rather
    /// than their encoding: copied on neither side.
    OkBare(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// Frames from parent to runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToRunner {
    /// Answer to the handshake.
    Welcome(Welcome),
    /// Run a function.
    Call(CallFrame),
    /// Abort the call with this id.
    Cancel {
        /// The call's id.
        id: u64,
    },
    /// Heartbeat.
    Ping,
    /// Answer to [`ToParent::IdleRequest`].
    IdleVerdict {
        /// `true`: stop now; `false`: work arrived, stay.
        granted: bool,
    },
    /// Drain and stop.
    Shutdown,
    /// The caller of streaming call `id` has room for `items` more of its
    /// items (protocol 10): the runner's body sends no item beyond the
    /// credit it was given.
    Credit {
        /// The call's id.
        id: u64,
        /// Items granted.
        items: u32,
    },
}

/// Frames from runner to parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToParent {
    /// The handshake.
    Hello(Hello),
    /// A call's outcome, sent when its work has ended: the call's slot is
    /// free again.
    Reply {
        /// The call's id.
        id: u64,
        /// What happened.
        outcome: Outcome,
        /// How long the call's work ran on the runner, in microseconds, from
        /// its admission to its end (protocol 9); 0 where not measured.
        #[serde(default)]
        runner_us: u64,
    },
    /// A call's outcome while its work still runs (a blocking body past its
    /// deadline): the caller gets it now, and a [`ToParent::Reply`] follows
    /// when the work has ended.
    Early {
        /// The call's id.
        id: u64,
        /// What the caller gets.
        outcome: Outcome,
    },
    /// Calls whose work has ended with nothing to report but the end (casts
    /// that succeeded), many in one frame (protocol 6): each is as a
    /// [`ToParent::Reply`] with [`Outcome::Done`].
    Ended {
        /// The calls' ids.
        ids: Vec<u64>,
    },
    /// Heartbeat.
    Ping,
    /// The runner has been idle long enough and asks to stop.
    IdleRequest,
    /// The runner is stopping for its own reason (SIGTERM, failsafe).
    Stopping {
        /// Why.
        reason: String,
    },
    /// A placed child stopped or crashed.
    ChildExited {
        /// The child's id.
        child: u64,
        /// Why.
        reason: String,
    },
    /// A `tracing` event of the runner (protocol 3).
    Log(LogRecord),
    /// One item of streaming call `id`, sent within the credit its caller
    /// gave (protocol 10). The call's [`ToParent::Reply`] follows its last
    /// item.
    Item {
        /// The call's id.
        id: u64,
        /// The encoded item (a large one travels after the frame).
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
        /// `true` when `bytes` are the item's bytes themselves (an item that
        /// is one [`serde_bytes::ByteBuf`]), not their encoding.
        bare: bool,
    },
}

impl ToParent {
    /// A result's or an item's bytes, the one byte string a frame to the
    /// parent carries after its head when it is large.
    pub(crate) fn result_bytes(&mut self) -> Option<&mut Vec<u8>> {
        match self {
            ToParent::Reply {
                outcome: Outcome::Ok(bytes) | Outcome::OkBare(bytes),
                ..
            }
            | ToParent::Early {
                outcome: Outcome::Ok(bytes) | Outcome::OkBare(bytes),
                ..
            }
            | ToParent::Item { bytes, .. } => Some(bytes),
            _ => None,
        }
    }

    /// Puts a split frame's payload back where its sender took it from (a
    /// result's bytes).
    ///
    /// # Errors
    ///
    /// [`FrameError::Decode`] for a frame with no such place.
    pub(crate) fn put_payload(&mut self, payload: Vec<u8>) -> Result<(), FrameError> {
        match self.result_bytes() {
            Some(bytes) if bytes.is_empty() => {
                *bytes = payload;
                Ok(())
            }
            _ => Err(misplaced_payload()),
        }
    }
}

/// The error for a split frame whose message has no place for its payload.
pub(crate) fn misplaced_payload() -> FrameError {
    FrameError::Decode("a split frame with no place for its payload".into())
}

/// Frames that can be sent as heartbeats.
pub(crate) trait Heartbeat {
    fn ping() -> Self;
}

impl Heartbeat for ToRunner {
    fn ping() -> Self {
        ToRunner::Ping
    }
}

impl Heartbeat for ToParent {
    fn ping() -> Self {
        ToParent::Ping
    }
}
