//! A call's argument bytes on their way out: a buffer of the call's own,
//! or a shared [`Bytes`] (an HTTP body as a web framework hands it over),
//! written to the socket from where it lies either way.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes a frame carries: owned, or shared without a copy. It reads as a
/// byte slice, encodes as a byte string, and decodes as an owned buffer.
///
/// # Examples
///
/// ```
/// use ractor_flame_actors::wire::Payload;
///
/// let shared = Payload::from(bytes::Bytes::from_static(b"frame"));
/// let owned = Payload::from(b"frame".to_vec());
/// assert_eq!(shared, owned);
/// assert_eq!(&*shared, b"frame");
/// ```
#[derive(Clone)]
pub enum Payload {
    /// A buffer of its own.
    Owned(Vec<u8>),
    /// A shared buffer, sent as it lies.
    Shared(Bytes),
}

impl Payload {
    /// The bytes as an owned buffer: free for an owned one, and for a
    /// shared one that is the only handle of a buffer made from a `Vec`;
    /// a copy otherwise.
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            Payload::Owned(bytes) => bytes,
            Payload::Shared(bytes) => Vec::from(bytes),
        }
    }
}

impl Default for Payload {
    fn default() -> Self {
        Payload::Owned(Vec::new())
    }
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Payload::Owned(bytes) => bytes,
            Payload::Shared(bytes) => bytes,
        }
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Payload {}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.len())
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Payload::Owned(bytes)
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Payload::Shared(bytes)
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_bytes::ByteBuf::deserialize(deserializer).map(|buf| Payload::Owned(buf.into_vec()))
    }
}
