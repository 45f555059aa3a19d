//! The parent-runner wire protocol.
//!
//! Layered as mini-redis layers its protocol: `frame` holds the message
//! types, `codec` turns them into length-prefixed rmp-serde frames and back,
//! `connection` drives one TCP connection (batched writes, heartbeats both
//! ways, a reader that hands decoded frames to a callback), `outbox` is the
//! queue of encoded frames a connection's writer drains, `tls` wraps a
//! connection in TLS with a pinned certificate, `clock` turns deadlines into
//! the budgets frames carry and back, and `thread` is the link thread every
//! connection of the process runs on (both sides use it; no function body
//! ever runs there).
//!
//! Both sides speak it: nothing here imports the parent's or the runner's
//! code. The message types and the codec are public so other
//! implementations and byte-level tests can speak the protocol.

pub(crate) mod clock;
pub(crate) mod codec;
pub(crate) mod connection;
pub(crate) mod frame;
pub(crate) mod outbox;
pub(crate) mod payload;
pub(crate) mod thread;
pub(crate) mod tls;

pub use codec::FrameError;
pub use codec::{decode_body, encode_frame};
pub use frame::{
    CHILD_CALL, CHILD_CAST, CHILD_STOP, CallFrame, ChildEnvelope, Hello, LogRecord, Outcome, PLACE, ToParent, ToRunner,
    TraceContext, Welcome,
};
pub use outbox::Outbox;
pub use payload::Payload;
pub use tls::Fingerprint;

/// The protocol version carried in `FLAME_PARENT` and the handshake.
pub const PROTOCOL_VERSION: u32 = 10;
/// Default largest frame after authentication: 64 MiB.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024 * 1024;
/// Largest frame a peer may send before it has authenticated.
pub const HANDSHAKE_MAX_FRAME: usize = 4 * 1024;
/// The smallest frame limit (`max_frame_size`) a pool or a runner accepts:
/// the handshake's own, room for every control frame and a call's envelope.
pub const MIN_FRAME_LIMIT: usize = HANDSHAKE_MAX_FRAME;
/// How long a peer has to authenticate after it connects.
pub const HANDSHAKE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);
