//! Where a connection's bytes go: a plain socket or a TLS session, written
//! to by the writer and by senders' straight writes.

use std::io::IoSlice;
use std::sync::Arc;

use tokio::net::tcp::OwnedWriteHalf;

use crate::wire::payload::Payload;
use crate::wire::tls::TlsLink;

/// How much of a frame a sender's straight write seals over TLS, at most
/// (about a millisecond of sealing and writing here).
const STRAIGHT_SEAL: usize = 4 << 20;

/// Where a connection's bytes go: a plain socket's write half, or a TLS
/// link that seals them on the way.
#[derive(Clone)]
pub(crate) enum Sink {
    Plain(Arc<OwnedWriteHalf>),
    Tls(Arc<TlsLink>),
}

impl Sink {
    /// Writes all of `buf`, waiting for the socket as needed.
    pub(crate) async fn write_all(&self, mut buf: &[u8]) -> std::io::Result<()> {
        match self {
            // The half is shared with senders' straight writes, hence
            // `try_write` rather than `write_all`.
            Sink::Plain(half) => {
                while !buf.is_empty() {
                    match half.try_write(buf) {
                        Ok(n) => buf = &buf[n..],
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => half.writable().await?,
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Sink::Tls(link) => link.write_all(buf).await,
        }
    }

    /// Writes the rest of each chunk, in order (what straight writes left
    /// over).
    pub(crate) async fn write_chunks(&self, chunks: &[Chunk]) -> std::io::Result<()> {
        for chunk in chunks {
            self.write_all(chunk.rest()).await?;
        }
        Ok(())
    }

    /// What a sender's straight write of `head` and then `tail` achieved
    /// (one vectored write on plain TCP: a large payload is not copied).
    pub(super) fn write_now(&self, head: &[u8], tail: &[u8]) -> Straight {
        match self {
            Sink::Plain(half) => {
                let total = head.len() + tail.len();
                let mut written = 0;
                while written < total {
                    let wrote = if written < head.len() {
                        let parts = [IoSlice::new(&head[written..]), IoSlice::new(tail)];
                        half.try_write_vectored(&parts)
                    } else {
                        half.try_write(&tail[written - head.len()..])
                    };
                    match wrote {
                        Ok(0) => return Straight::Broken,
                        Ok(n) => written += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => return Straight::Broken,
                    }
                }
                if written == total {
                    Straight::Done
                } else {
                    Straight::Partly(written)
                }
            }
            // Sealed into the same writes, head and payload; a very large
            // payload only in part, so that the queue is not held for long
            // (the writer seals the rest a bounded piece a turn).
            Sink::Tls(link) => match link.try_write_now(&[head, tail], STRAIGHT_SEAL) {
                // Records wait for a full socket, as many as may: the
                // writer seals the rest as it drains.
                Some(Ok(wrote)) if wrote.taken < head.len() + tail.len() => Straight::Partly(wrote.taken),
                Some(Ok(wrote)) if wrote.clear => Straight::Done,
                // Sealed; some records wait for the writer's flush.
                Some(Ok(_)) => Straight::Flush,
                Some(Err(_)) => Straight::Broken,
                // Another writer is sealing: the writer sends it all.
                None => Straight::Partly(0),
            },
        }
    }
}

/// The outcome of a straight write.
pub(super) enum Straight {
    /// Every byte is on the socket.
    Done,
    /// The first `n` bytes are on the socket (or sealed, over TLS, and
    /// waiting for it); the rest is left over.
    Partly(usize),
    /// Every byte is sealed, some records not yet on the socket.
    Flush,
    /// The connection is broken: its reader reports the loss.
    Broken,
}

/// Bytes still to write: `bytes[from..]`.
pub(crate) struct Chunk {
    pub(super) bytes: Payload,
    pub(super) from: usize,
}

impl Chunk {
    fn rest(&self) -> &[u8] {
        &self.bytes[self.from..]
    }
}
