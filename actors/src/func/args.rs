//! A call's arguments on their way to a runner, and back into the
//! function's own type there; its output the same way back.
//!
//! Values travel rmp-serde encoded, but for one case that matters to heavy
//! work: an argument or output that is one byte string
//! ([`serde_bytes::ByteBuf`] or [`bytes::Bytes`]: an image, a model's
//! input, an archive, an HTTP body) travels as its bytes, *bare*. The
//! sender hands the buffer to the socket as it is, the receiver reads it
//! into a buffer of its own, and that buffer becomes the `ByteBuf` or
//! `Bytes` on the other side: neither side copies the bytes. (A `Bytes`
//! output leaves its runner without a copy when it is the only handle of a
//! buffer made from a `Vec`, `Bytes::from(vec)`; one that shares its
//! buffer is copied once there.)

use std::any::Any;
use std::borrow::Cow;

use bytes::Bytes;
use serde::Serialize;
use serde::de::{DeserializeOwned, Deserializer, Visitor};
use serde_bytes::ByteBuf;

use crate::error::CodecError;
use crate::wire::Payload;

/// A call's arguments (or output), ready to send: encoded, or a value that
/// is one byte string as its bytes.
///
/// # Examples
///
/// ```
/// use ractor_flame_actors::Args;
/// use serde_bytes::ByteBuf;
///
/// let text = Args::encode("hello".to_owned()).unwrap();
/// assert!(!text.is_bare());
///
/// let blob = Args::encode(ByteBuf::from(vec![7u8; 1 << 20])).unwrap();
/// assert!(blob.is_bare());
/// assert_eq!(blob.len(), 1 << 20);
///
/// // An HTTP body as a web framework hands it over: not copied.
/// let body = bytes::Bytes::from(vec![1u8; 4096]);
/// assert!(Args::encode(body).unwrap().is_bare());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Args {
    bytes: Payload,
    bare: bool,
}

impl Args {
    /// Encodes `value` the way every call does (rmp-serde, named fields); a
    /// [`ByteBuf`] or a [`Bytes`] is taken as it is, without a copy.
    ///
    /// # Errors
    ///
    /// When `value` does not encode (a map with non-string keys in a
    /// format that needs them, a failing `Serialize` impl).
    pub fn encode<T: Serialize + 'static>(value: T) -> Result<Args, CodecError> {
        let mut value = value;
        let any = &mut value as &mut dyn Any;
        if let Some(buf) = any.downcast_mut::<ByteBuf>() {
            return Ok(Args::bare(std::mem::take(buf).into_vec()));
        }
        if let Some(bytes) = any.downcast_mut::<Bytes>() {
            return Ok(Args {
                bytes: Payload::Shared(std::mem::take(bytes)),
                bare: true,
            });
        }
        Ok(Args::encoded(encode(&value).map_err(CodecError::new)?))
    }

    /// Arguments already encoded with rmp-serde.
    pub fn encoded(bytes: Vec<u8>) -> Args {
        Args {
            bytes: Payload::Owned(bytes),
            bare: false,
        }
    }

    /// A byte string's own bytes (what a `ByteBuf` argument or output
    /// travels as).
    pub(crate) fn bare(bytes: Vec<u8>) -> Args {
        Args {
            bytes: Payload::Owned(bytes),
            bare: true,
        }
    }

    /// Decodes the value these bytes carry: a call's output, on the parent.
    /// Bare bytes become a [`ByteBuf`] as they are.
    ///
    /// # Errors
    ///
    /// When the bytes are not a `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame_actors::Args;
    /// use serde_bytes::ByteBuf;
    ///
    /// let n: u64 = Args::encode(7u64).unwrap().decode().unwrap();
    /// assert_eq!(n, 7);
    /// let buf: ByteBuf = Args::encode(ByteBuf::from(vec![1u8, 2])).unwrap().decode().unwrap();
    /// assert_eq!(buf.into_vec(), vec![1, 2]);
    /// ```
    pub fn decode<T: DeserializeOwned>(self) -> Result<T, CodecError> {
        let bytes: Cow<'_, [u8]> = match self.bytes {
            Payload::Owned(bytes) => Cow::Owned(bytes),
            // Decoded where they lie (a shared buffer is not taken apart).
            Payload::Shared(ref bytes) => Cow::Borrowed(bytes),
        };
        ArgBytes::new(bytes, self.bare).decode().map_err(CodecError::new)
    }

    /// Their size in bytes, as they travel.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether there are no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Whether these are a byte string's own bytes rather than an encoding.
    pub fn is_bare(&self) -> bool {
        self.bare
    }

    /// The bytes as they travel.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes and whether they are bare.
    pub(crate) fn into_parts(self) -> (Payload, bool) {
        (self.bytes, self.bare)
    }
}

/// Arguments as a runner received them: in the connection's read buffer,
/// or in a buffer of their own (a split frame's payload), which bare bytes
/// become as they are.
#[derive(Debug)]
pub(crate) struct ArgBytes<'a> {
    bytes: Cow<'a, [u8]>,
    bare: bool,
}

impl<'a> ArgBytes<'a> {
    pub(crate) fn new(bytes: impl Into<Cow<'a, [u8]>>, bare: bool) -> Self {
        ArgBytes {
            bytes: bytes.into(),
            bare,
        }
    }

    /// The bytes as they travelled.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The same arguments, owning their bytes (copied only if borrowed).
    pub(crate) fn into_owned(self) -> ArgBytes<'static> {
        ArgBytes::new(self.bytes.into_owned(), self.bare)
    }

    /// Decodes the argument.
    ///
    /// # Errors
    ///
    /// The decoder's message, for bytes that are not a `T`.
    pub(crate) fn decode<T: DeserializeOwned>(self) -> Result<T, String> {
        if self.bare {
            T::deserialize(OwnedBytes(self.bytes.into_owned())).map_err(|e| e.to_string())
        } else {
            rmp_serde::from_slice(&self.bytes).map_err(|e| e.to_string())
        }
    }
}

/// A deserializer of one owned byte string: a type that can take the
/// buffer (`ByteBuf`) takes it as it is.
struct OwnedBytes(Vec<u8>);

impl<'de> Deserializer<'de> for OwnedBytes {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_byte_buf(self.0)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// Encodes a value the way every call does (rmp-serde, named fields).
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    // Room for most small values at once: an empty buffer grows by steps
    // from 8 bytes, each step a reallocation.
    let mut bytes = Vec::with_capacity(64);
    value.serialize(&mut rmp_serde::Serializer::new(&mut bytes).with_struct_map())?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_buf_is_sent_as_it_lies() {
        let buf = ByteBuf::from(vec![3u8; 100_000]);
        let at = buf.as_ptr();
        let args = Args::encode(buf).unwrap();
        assert!(args.is_bare());
        assert_eq!(args.as_bytes().as_ptr(), at, "the bytes were not copied");
        assert_eq!(args.len(), 100_000);
    }

    #[test]
    fn a_shared_bytes_is_sent_as_it_lies_and_arrives_as_its_buffer() {
        let body = Bytes::from(vec![5u8; 100_000]);
        let at = body.as_ptr();
        let args = Args::encode(body.clone()).unwrap();
        assert!(args.is_bare());
        assert_eq!(args.as_bytes().as_ptr(), at, "the shared bytes were not copied");
        let (payload, bare) = args.into_parts();
        assert!(bare && matches!(payload, Payload::Shared(_)));
        // On the runner: the buffer the payload was read into becomes the
        // `Bytes` the function gets.
        let received = vec![5u8; 100_000];
        let at = received.as_ptr();
        let arg: Bytes = ArgBytes::new(received, true).decode().unwrap();
        assert_eq!(arg.as_ptr(), at, "the buffer was not copied");
        assert_eq!(arg, body);
        // A `Bytes` output made from a `Vec` leaves its runner as that
        // `Vec`.
        let output = Bytes::from(vec![6u8; 50_000]);
        let at = output.as_ptr();
        let (payload, _) = Args::encode(output).unwrap().into_parts();
        let out = payload.into_vec();
        assert_eq!(out.as_ptr(), at, "the output was not copied");
    }

    #[test]
    fn other_types_are_encoded() {
        let args = Args::encode(vec![1u8, 2, 3]).unwrap();
        assert!(!args.is_bare());
        assert_eq!(args.as_bytes(), rmp_serde::to_vec_named(&vec![1u8, 2, 3]).unwrap());
        let args = Args::encode(Some(ByteBuf::from(vec![1u8]))).unwrap();
        assert!(!args.is_bare(), "only a ByteBuf itself goes bare");
        let back: Option<ByteBuf> = ArgBytes::new(args.as_bytes(), false).decode().unwrap();
        assert_eq!(back.unwrap().into_vec(), vec![1u8]);
    }

    #[test]
    fn bare_bytes_in_a_buffer_of_their_own_become_the_argument() {
        let bytes = vec![9u8; 100_000];
        let at = bytes.as_ptr();
        let buf: ByteBuf = ArgBytes::new(bytes, true).decode().unwrap();
        assert_eq!(buf.as_ptr(), at, "the buffer was not copied");
        assert_eq!(buf.len(), 100_000);
        let borrowed: ByteBuf = ArgBytes::new(&[1u8, 2, 3][..], true).decode().unwrap();
        assert_eq!(borrowed.into_vec(), vec![1, 2, 3]);
    }

    #[test]
    fn a_bare_output_decodes_into_its_own_buffer() {
        let bytes = vec![4u8; 100_000];
        let at = bytes.as_ptr();
        let out: ByteBuf = Args::bare(bytes).decode().unwrap();
        assert_eq!(out.as_ptr(), at, "the buffer was not copied");
        let err = Args::bare(vec![1]).decode::<u64>().unwrap_err();
        assert!(err.to_string().contains("byte array"), "{err}");
        let n: u64 = Args::encode(5u64).unwrap().decode().unwrap();
        assert_eq!(n, 5);
    }

    #[test]
    fn bare_bytes_for_another_type_are_a_clear_error() {
        let err = ArgBytes::new(vec![1, 2], true).decode::<u64>().unwrap_err();
        assert!(err.contains("byte array"), "{err}");
        let err = ArgBytes::new(&[1u8, 2][..], true).decode::<Vec<u32>>().unwrap_err();
        assert!(err.contains("byte array"), "{err}");
    }
}
