//! Length-prefixed frames: a 4-byte big-endian body length, then the
//! rmp-serde body. A frame with a large byte string (a call's arguments, a
//! result) is split: the rest of the message first, the bytes after it, so
//! that neither side copies them (see [`encode_frame_split`]).

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};

/// A frame that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer announced or we tried to send a frame above the limit.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The frame's size.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The body is not a valid message.
    #[error("undecodable frame: {0}")]
    Decode(String),
    /// The value could not be encoded.
    #[error("unencodable frame: {0}")]
    Encode(String),
    /// The connection failed or closed mid-frame.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A length prefix with this bit set starts a split frame (see
/// [`encode_frame_split`]); a whole frame's body is shorter than this.
pub(crate) const SPLIT_FLAG: u32 = 1 << 31;

/// Appends one frame holding `value` to `out`.
///
/// # Errors
///
/// [`FrameError::TooLarge`] when the body exceeds `limit` (nothing is
/// appended), [`FrameError::Encode`] when the value does not encode.
pub fn encode_frame<T: Serialize>(value: &T, limit: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    let size = encode_after(value, out, 4)?;
    if size > limit || size >= SPLIT_FLAG as usize {
        out.truncate(start);
        return Err(FrameError::TooLarge { size, limit });
    }
    out[start..start + 4].copy_from_slice(&(size as u32).to_be_bytes());
    Ok(())
}

/// Appends `header` zero bytes (room for the lengths) and `value`'s
/// encoding to `out`; returns the encoding's size. Nothing is appended when
/// the value does not encode.
fn encode_after<T: Serialize>(value: &T, out: &mut Vec<u8>, header: usize) -> Result<usize, FrameError> {
    let start = out.len();
    out.resize(start + header, 0);
    // Fields go by position (msgpack arrays): no field names to write,
    // read and compare on every frame. `Hello::version` says which layout a
    // peer speaks; a decoder still takes named fields too.
    let mut ser = rmp_serde::Serializer::new(&mut *out);
    if let Err(e) = value.serialize(&mut ser) {
        out.truncate(start);
        return Err(FrameError::Encode(e.to_string()));
    }
    Ok(out.len() - start - header)
}

/// Payloads from this size on are written from where they lie: their frame
/// is encoded without them, and they follow it on the socket.
pub(crate) const SPLIT_AT: usize = 32 * 1024;

/// Appends the head of a split frame to `out`: `value`, whose one large byte
/// string (its payload, `payload_len` bytes) has been taken out of it. The
/// bytes to write are then `out` and, right after it, the payload itself;
/// nothing of the payload is copied, and the reader gets it in a buffer of
/// its own, which becomes the decoded message's byte string, again without
/// a copy.
///
/// A split frame is a length prefix with [`SPLIT_FLAG`] set over the head's
/// length, the payload's length (4 bytes, big-endian), the head (`value`
/// encoded, an empty byte string where the payload goes) and the payload.
///
/// # Errors
///
/// As [`encode_frame`], the payload counted in the size; nothing is
/// appended then.
pub(crate) fn encode_frame_split<T: Serialize>(
    value: &T,
    payload_len: usize,
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let start = out.len();
    let head = encode_after(value, out, 8)?;
    let size = head.saturating_add(payload_len);
    if size > limit || head >= SPLIT_FLAG as usize || payload_len > u32::MAX as usize {
        out.truncate(start);
        return Err(FrameError::TooLarge { size, limit });
    }
    out[start..start + 4].copy_from_slice(&(SPLIT_FLAG | head as u32).to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&(payload_len as u32).to_be_bytes());
    Ok(())
}

/// Decodes a frame body.
///
/// # Errors
///
/// [`FrameError::Decode`] for anything that is not a `T`; never panics,
/// whatever the bytes.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    rmp_serde::from_slice(body).map_err(|e| FrameError::Decode(e.to_string()))
}

/// Reads one frame, reusing `buf`. `Ok(None)` on a clean end of stream
/// between frames. Only whole frames are expected here (the handshake's):
/// a split frame is an error.
pub(crate) async fn read_frame<R, T>(reader: &mut R, buf: &mut Vec<u8>, limit: usize) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    match read_body(reader, buf, limit).await? {
        Body::Closed => Ok(None),
        Body::Whole => decode_body(buf).map(Some),
        Body::Split(_) => Err(FrameError::Decode(
            "a split frame where a whole one was expected".into(),
        )),
    }
}

/// What [`read_body`] read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Body {
    /// The stream ended cleanly between frames.
    Closed,
    /// A whole frame's body, in the buffer.
    Whole,
    /// A split frame: its head in the buffer, its payload here.
    Split(Vec<u8>),
}

/// Reads one frame's body into `buf` (a split frame's head, and its payload
/// into a buffer of its own). A body above `limit` is refused before it is
/// read.
pub(crate) async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<Body, FrameError> {
    read_body_with(reader, buf, limit, false).await
}

/// [`read_body`], with a split frame's payload read into zeroed memory when
/// `zeroed`: for a reader that writes only into initialised memory (a TLS
/// link opens its records straight into the buffer it is handed, which
/// must otherwise be zeroed a record at a time). The allocator hands a
/// large buffer over zeroed for nothing (pages the kernel maps zeroed
/// anyway); a plain socket writes into uninitialised memory as it is.
pub(crate) async fn read_body_with<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
    zeroed: bool,
) -> Result<Body, FrameError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Body::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len);
    if len & SPLIT_FLAG == 0 {
        read_exactly(reader, buf, len as usize, limit).await?;
        return Ok(Body::Whole);
    }
    let head = (len & !SPLIT_FLAG) as usize;
    if head > limit {
        return Err(FrameError::TooLarge { size: head, limit });
    }
    let mut payload_len = [0u8; 4];
    reader.read_exact(&mut payload_len).await?;
    // Saturating: a peer's lengths must not overflow a 32-bit `usize`.
    let size = head.saturating_add(u32::from_be_bytes(payload_len) as usize);
    if size > limit {
        return Err(FrameError::TooLarge { size, limit });
    }
    read_exactly(reader, buf, head, limit).await?;
    if zeroed {
        let mut payload = vec![0; size - head];
        reader.read_exact(&mut payload).await?;
        return Ok(Body::Split(payload));
    }
    let mut payload = Vec::new();
    read_exactly(reader, &mut payload, size - head, limit).await?;
    Ok(Body::Split(payload))
}

/// Reads exactly `size` bytes into `buf`, replacing what it held.
async fn read_exactly<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    size: usize,
    limit: usize,
) -> Result<(), FrameError> {
    if size > limit {
        return Err(FrameError::TooLarge { size, limit });
    }
    // Read into the buffer's spare room: no zero-filling of a large body
    // that the read then overwrites.
    buf.clear();
    buf.reserve_exact(size);
    while buf.len() < size {
        let want = size - buf.len();
        if reader.read_buf(&mut bytes::BufMut::limit(&mut *buf, want)).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::{CallFrame, ToRunner};
    use proptest::prelude::*;

    fn call(args: Vec<u8>) -> ToRunner {
        ToRunner::Call(CallFrame {
            id: 7,
            function: "f".into(),
            args: args.into(),
            budget_us: Some(1),
            want_result: true,
            linked: true,
            trace: None,
            bare: false,
            idempotency_key: None,
        })
    }

    fn keyed(args: Vec<u8>) -> ToRunner {
        let ToRunner::Call(mut frame) = traced(args) else {
            unreachable!()
        };
        frame.idempotency_key = Some("9f2c".into());
        ToRunner::Call(frame)
    }

    fn traced(args: Vec<u8>) -> ToRunner {
        let ToRunner::Call(mut frame) = call(args) else {
            unreachable!()
        };
        frame.trace = Some(crate::wire::frame::TraceContext {
            span: 42,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        });
        ToRunner::Call(frame)
    }

    #[tokio::test]
    async fn frames_round_trip_back_to_back() {
        let mut out = Vec::new();
        encode_frame(&call(vec![1, 2, 3]), 1024, &mut out).unwrap();
        encode_frame(&ToRunner::Ping, 1024, &mut out).unwrap();
        let mut reader = out.as_slice();
        let mut buf = Vec::new();
        let a: ToRunner = read_frame(&mut reader, &mut buf, 1024).await.unwrap().unwrap();
        let b: ToRunner = read_frame(&mut reader, &mut buf, 1024).await.unwrap().unwrap();
        assert_eq!(a, call(vec![1, 2, 3]));
        assert_eq!(b, ToRunner::Ping);
        assert!(
            read_frame::<_, ToRunner>(&mut reader, &mut buf, 1024)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn oversized_frames_are_refused_before_sending() {
        let mut out = vec![9];
        let err = encode_frame(&call(vec![0; 2000]), 1024, &mut out).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { limit: 1024, .. }));
        assert_eq!(out, vec![9], "nothing appended");
    }

    #[tokio::test]
    async fn announced_oversized_frames_are_refused_without_reading() {
        let bytes = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let mut buf = Vec::new();
        let err = read_frame::<_, ToRunner>(&mut bytes.as_slice(), &mut buf, 1024)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn bytes_travel_as_binary_not_arrays() {
        let mut out = Vec::new();
        encode_frame(&call(vec![200; 1000]), 4096, &mut out).unwrap();
        assert!(out.len() < 1100, "{} bytes", out.len());
    }

    #[test]
    fn in_place_decoding_reads_every_frame_the_parent_sends() {
        use crate::wire::frame::{ToRunnerRef, Welcome};
        let frames = [
            ToRunner::Welcome(Welcome::Refused("no".into())),
            call(vec![1, 2, 3]),
            traced(vec![4, 5]),
            keyed(vec![6]),
            ToRunner::Cancel { id: 9 },
            ToRunner::Ping,
            ToRunner::IdleVerdict { granted: true },
            ToRunner::Shutdown,
            ToRunner::Credit { id: 7, items: 16 },
        ];
        for frame in frames {
            let mut out = Vec::new();
            encode_frame(&frame, 1024, &mut out).unwrap();
            let decoded: ToRunnerRef<'_> = rmp_serde::from_slice(&out[4..]).unwrap();
            match (&frame, decoded) {
                (ToRunner::Call(owned), ToRunnerRef::Call(view)) => assert_eq!(view, owned.view()),
                (ToRunner::Cancel { id }, ToRunnerRef::Cancel { id: v }) => assert_eq!(*id, v),
                (ToRunner::IdleVerdict { granted }, ToRunnerRef::IdleVerdict { granted: v }) => assert_eq!(*granted, v),
                (ToRunner::Credit { id, items }, ToRunnerRef::Credit { id: i, items: n }) => {
                    assert_eq!((*id, *items), (i, n));
                }
                (ToRunner::Welcome(_), ToRunnerRef::Welcome(_))
                | (ToRunner::Ping, ToRunnerRef::Ping)
                | (ToRunner::Shutdown, ToRunnerRef::Shutdown) => {}
                (owned, view) => panic!("{owned:?} decoded as {view:?}"),
            }
        }
    }

    #[test]
    fn an_untraced_call_sends_no_trace_field() {
        let (mut plain, mut with) = (Vec::new(), Vec::new());
        encode_frame(&call(vec![1]), 1024, &mut plain).unwrap();
        encode_frame(&traced(vec![1]), 1024, &mut with).unwrap();
        assert!(!plain.windows(5).any(|w| w == b"trace"), "no trace key without a trace");
        assert!(with.len() > plain.len());
        let ToRunner::Call(frame) = decode_body::<ToRunner>(&with[4..]).unwrap() else {
            panic!()
        };
        assert_eq!(frame.trace.map(|t| t.span), Some(42));
    }

    #[test]
    fn a_call_without_an_idempotency_key_is_written_as_before() {
        let (mut plain, mut with) = (Vec::new(), Vec::new());
        encode_frame(&traced(vec![1]), 1024, &mut plain).unwrap();
        encode_frame(&keyed(vec![1]), 1024, &mut with).unwrap();
        // The key is one trailing field, written only when there is one.
        assert_eq!(with.len(), plain.len() + 1 + 4);
        let ToRunner::Call(frame) = decode_body::<ToRunner>(&with[4..]).unwrap() else {
            panic!()
        };
        assert_eq!(frame.idempotency_key.as_deref(), Some("9f2c"));
        let ToRunner::Call(frame) = decode_body::<ToRunner>(&plain[4..]).unwrap() else {
            panic!()
        };
        assert_eq!(frame.idempotency_key, None);
    }

    /// A large payload is left out of its frame and written after it; the
    /// reader gets the head and the payload, each whole.
    #[tokio::test]
    async fn split_frames_read_back_as_head_and_payload() {
        use crate::wire::frame::{Outcome, ToParent};
        let args: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let empty_reply = ToParent::Reply {
            id: 3,
            outcome: Outcome::Ok(Vec::new()),
            runner_us: 0,
        };
        let mut wire = Vec::new();
        for head in [call(Vec::new()), traced(Vec::new())] {
            let before = wire.len();
            encode_frame_split(&head, args.len(), usize::MAX, &mut wire).unwrap();
            assert!(
                wire.len() - before < 200,
                "the head holds no payload: {} bytes",
                wire.len() - before
            );
            wire.extend_from_slice(&args);
        }
        encode_frame_split(&empty_reply, args.len(), usize::MAX, &mut wire).unwrap();
        wire.extend_from_slice(&args);
        encode_frame(&ToRunner::Ping, 1024, &mut wire).unwrap();

        // Payloads into uninitialised memory, or zeroed (a TLS reader's).
        for zeroed in [false, true] {
            let mut reader = wire.as_slice();
            let mut buf = Vec::new();
            for expected in [call(Vec::new()), traced(Vec::new())] {
                let body = read_body_with(&mut reader, &mut buf, args.len() + 200, zeroed)
                    .await
                    .unwrap();
                assert_eq!(body, Body::Split(args.clone()));
                assert_eq!(decode_body::<ToRunner>(&buf).unwrap(), expected);
            }
            assert_eq!(
                read_body_with(&mut reader, &mut buf, usize::MAX, zeroed).await.unwrap(),
                Body::Split(args.clone())
            );
            assert_eq!(decode_body::<ToParent>(&buf).unwrap(), empty_reply);
            assert_eq!(
                read_body_with(&mut reader, &mut buf, usize::MAX, zeroed).await.unwrap(),
                Body::Whole
            );
            assert_eq!(decode_body::<ToRunner>(&buf).unwrap(), ToRunner::Ping);
            assert_eq!(
                read_body_with(&mut reader, &mut buf, usize::MAX, zeroed).await.unwrap(),
                Body::Closed
            );
        }
    }

    /// A payload goes back only where a result's bytes were taken out: a
    /// peer that sends one with any other frame is refused.
    #[test]
    fn a_payload_fits_only_an_emptied_result() {
        use crate::wire::frame::{Outcome, ToParent};
        let mut reply = ToParent::Reply {
            id: 1,
            outcome: Outcome::Ok(Vec::new()),
            runner_us: 0,
        };
        reply.put_payload(vec![1, 2]).unwrap();
        assert_eq!(
            reply,
            ToParent::Reply {
                id: 1,
                outcome: Outcome::Ok(vec![1, 2]),
                runner_us: 0,
            }
        );
        for mut other in [
            reply,
            ToParent::Ping,
            ToParent::Reply {
                id: 2,
                outcome: Outcome::Returned {
                    kind: crate::error::FnErrorKind::InvalidArgument,
                    message: "no".into(),
                },
                runner_us: 0,
            },
            ToParent::Stopping { reason: "x".into() },
        ] {
            let err = other.put_payload(vec![3]).unwrap_err();
            assert!(matches!(err, FrameError::Decode(_)), "{err}");
        }
    }

    #[test]
    fn split_frames_count_the_payload_against_the_limit() {
        let mut out = vec![9];
        let err = encode_frame_split(&call(Vec::new()), 2000, 1024, &mut out).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { limit: 1024, .. }));
        assert_eq!(out, vec![9], "nothing appended");
    }

    /// A split frame whose head and payload together pass the limit is
    /// refused before either is read; one cut short is an error.
    #[tokio::test]
    async fn announced_oversized_split_frames_are_refused_without_reading() {
        let mut wire = Vec::new();
        encode_frame_split(&call(Vec::new()), 5000, usize::MAX, &mut wire).unwrap();
        wire.extend_from_slice(&[7; 5000]);
        let mut buf = Vec::new();
        let err = read_body(&mut wire.as_slice(), &mut buf, 4096).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { limit: 4096, .. }), "{err}");
        assert!(buf.capacity() < 4096);
        let cut = &wire[..wire.len() - 1];
        let err = read_body(&mut &cut[..], &mut buf, usize::MAX).await.unwrap_err();
        assert!(matches!(err, FrameError::Io(_)), "{err}");
        // The handshake takes whole frames only.
        let err = read_frame::<_, ToRunner>(&mut wire.as_slice(), &mut buf, usize::MAX)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err}");
    }

    /// A body read in pieces, as a socket delivers it, arrives whole; a
    /// stream that ends inside a body is an error, not a short frame.
    #[tokio::test]
    async fn bodies_are_read_whole_across_short_reads() {
        let mut frame = Vec::new();
        encode_frame(&call(vec![5; 300_000]), usize::MAX, &mut frame).unwrap();
        let (mut tx, mut rx) = tokio::io::duplex(4096);
        let sent = frame.clone();
        let writer = tokio::spawn(async move {
            tokio::io::AsyncWriteExt::write_all(&mut tx, &sent).await.unwrap();
        });
        let mut buf = vec![1; 16];
        assert_eq!(read_body(&mut rx, &mut buf, usize::MAX).await.unwrap(), Body::Whole);
        assert_eq!(buf, frame[4..]);
        writer.await.unwrap();
        let cut = &frame[..frame.len() - 1];
        let err = read_body(&mut &cut[..], &mut buf, usize::MAX).await.unwrap_err();
        assert!(matches!(err, FrameError::Io(_)), "{err}");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_body::<ToRunner>(&bytes);
            let _ = decode_body::<crate::wire::frame::ToParent>(&bytes);
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut buf = Vec::new();
            let _ = rt.block_on(read_frame::<_, ToRunner>(&mut bytes.as_slice(), &mut buf, 256));
        }
    }
}
