//! An established TLS link: records sealed by the writers, opened by the
//! reader, each side under its own keys.
//!
//! How the bytes move, and why:
//!
//! - A writer copies each piece of plaintext once, into the buffer of
//!   records on their way to the socket, and seals it there; every
//!   [`BATCH`] bytes of records go to the socket at once, so the peer opens
//!   the first records of a large frame while the rest are sealed.
//! - What the socket cannot take yet waits, up to [`UNSENT_MAX`] bytes of
//!   records; past that, a writer stops and says how much it took, and the
//!   rest stays plaintext until the socket drains (a 64 MiB frame is not
//!   64 MiB of records held at once, in memory that must be faulted in
//!   anew for every frame).
//! - The reader reads up to [`READ_AHEAD`] bytes at a time, opens each whole
//!   record where it lies and copies its content out.
//! - Sending and receiving share nothing but the socket (and, for a key
//!   update, the key schedule): the reader never waits for a writer sealing
//!   a large frame, nor a writer for the reader.

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::handshake::{Done, Kernel, tls_error};
use super::record::{
    ALERT, APPLICATION_DATA, HANDSHAKE, KEY_UPDATE, Keys, MAX_PLAIN, NEW_SESSION_TICKET, invalid, whole_record,
};

/// How many bytes of records a writer seals before it offers them to the
/// socket (four full records).
pub(super) const BATCH: usize = 64 * 1024;

/// How many bytes of sealed records may wait for the socket; a writer that
/// finds that many waiting and the socket full stops sealing.
pub(super) const UNSENT_MAX: usize = 256 * 1024;

/// How many bytes the reader asks the socket for at a time.
const READ_AHEAD: usize = 64 * 1024;

/// An established TLS connection, shared by its reader and its writers.
///
/// The socket is non-blocking and shared by reference. Writers seal under
/// the sending keys' lock, held only to seal and write, never across an
/// await; the reader owns the receiving keys.
pub(crate) struct TlsLink {
    sock: TcpStream,
    tx: Mutex<Tx>,
    /// rustls's key schedule, for key updates.
    kernel: Mutex<Kernel>,
    /// The peer updated its keys and asked us to update ours: done before
    /// our next record (RFC 8446, 4.6.3).
    update_asked: AtomicBool,
}

impl std::fmt::Debug for TlsLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLink").finish_non_exhaustive()
    }
}

/// The sending side.
struct Tx {
    keys: Keys,
    /// The suite's confidentiality limit: how many records a key seals.
    limit: u64,
    /// Sealed records: `records[sent..]` is not on the socket yet.
    records: Vec<u8>,
    sent: usize,
}

impl Tx {
    fn unsent(&self) -> usize {
        self.records.len() - self.sent
    }

    /// Writes the records that wait, until the socket is full; `true` when
    /// none is left.
    fn send(&mut self, sock: &TcpStream) -> io::Result<bool> {
        while self.sent < self.records.len() {
            match sock.try_write(&self.records[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.records.clear();
        self.sent = 0;
        Ok(true)
    }

    /// Room for more records: what was sent goes from the front once it is
    /// most of the buffer.
    fn compact(&mut self) {
        if self.sent > 0 && self.sent >= self.records.len() / 2 {
            self.records.drain(..self.sent);
            self.sent = 0;
        }
    }
}

/// What a write achieved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wrote {
    /// How many bytes of the plaintext were taken (sealed; on the socket or
    /// waiting for it).
    pub(crate) taken: usize,
    /// Nothing waits for the socket.
    pub(crate) clear: bool,
}

impl TlsLink {
    /// The link, with the reader of its first bytes, once the handshake is
    /// done.
    pub(super) fn start(sock: TcpStream, done: Done) -> io::Result<TlsStream> {
        let Done {
            secrets,
            kernel,
            read_ahead,
        } = done;
        let limit = kernel
            .suite()
            .tls13()
            .map_or(u64::MAX, |s| s.common.confidentiality_limit);
        let (tx_seq, tx_secrets) = secrets.tx;
        let (rx_seq, rx_secrets) = secrets.rx;
        let link = Arc::new(TlsLink {
            sock,
            tx: Mutex::new(Tx {
                keys: Keys::new(tx_seq, tx_secrets, limit)?,
                limit,
                records: Vec::new(),
                sent: 0,
            }),
            kernel: Mutex::new(kernel),
            update_asked: AtomicBool::new(false),
        });
        let reader = TlsReader {
            link: Arc::clone(&link),
            keys: Keys::new(rx_seq, rx_secrets, u64::MAX)?,
            at: 0,
            content: 0..0,
            records: read_ahead,
            ended: false,
        };
        Ok(TlsStream { link, reader })
    }

    pub(crate) fn sock(&self) -> &TcpStream {
        &self.sock
    }

    /// Seals `plain` and writes what the socket takes now, without waiting:
    /// at most `budget` bytes of it, and less when records are waiting for
    /// a full socket already (see [`UNSENT_MAX`]).
    pub(crate) fn write_now(&self, plain: &[u8], budget: usize) -> io::Result<Wrote> {
        let mut tx = self.tx.lock().expect("poisoned");
        self.seal_and_send(&mut tx, plain, budget)
    }

    /// Like [`TlsLink::write_now`], but gives up at once (`None`) when
    /// another writer holds the sending side.
    pub(crate) fn try_write_now(&self, plain: &[u8], budget: usize) -> Option<io::Result<Wrote>> {
        let mut tx = self.tx.try_lock().ok()?;
        Some(self.seal_and_send(&mut tx, plain, budget))
    }

    fn seal_and_send(&self, tx: &mut Tx, plain: &[u8], budget: usize) -> io::Result<Wrote> {
        let budget = budget.min(plain.len());
        // Whether the socket has said it is full during this write: it is
        // not asked again until there is reason to.
        let mut full = tx.unsent() > 0 && !tx.send(&self.sock)?;
        let mut taken = 0;
        while taken < budget {
            if tx.unsent() >= UNSENT_MAX {
                full = !tx.send(&self.sock)?;
                if full && tx.unsent() >= UNSENT_MAX {
                    break;
                }
            }
            tx.compact();
            let until = budget.min(taken + BATCH);
            while taken < until {
                let piece = &plain[taken..until.min(taken + MAX_PLAIN)];
                self.seal(tx, APPLICATION_DATA, piece)?;
                taken += piece.len();
            }
            if !full {
                full = !tx.send(&self.sock)?;
            }
        }
        Ok(Wrote {
            taken,
            clear: tx.unsent() == 0,
        })
    }

    /// Seals one record, under new keys first when the peer asked for them
    /// or the current ones have sealed all they may.
    fn seal(&self, tx: &mut Tx, kind: u8, content: &[u8]) -> io::Result<()> {
        if tx.keys.worn_out() || self.update_asked.load(Ordering::Relaxed) {
            self.update_asked.store(false, Ordering::Relaxed);
            // Sent under the old keys; what follows goes under the new.
            tx.keys.seal(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], &mut tx.records)?;
            let (seq, secrets) = self.kernel.lock().expect("poisoned").update_tx().map_err(tls_error)?;
            tx.keys = Keys::new(seq, secrets, tx.limit)?;
        }
        tx.keys.seal(kind, content, &mut tx.records)
    }

    /// Writes what the socket takes of the records that wait; `true` when
    /// none is left.
    pub(crate) fn send_now(&self) -> io::Result<bool> {
        self.tx.lock().expect("poisoned").send(&self.sock)
    }

    /// Writes every record that waits.
    pub(crate) async fn flush(&self) -> io::Result<()> {
        while !self.send_now()? {
            self.sock.writable().await?;
        }
        Ok(())
    }

    /// Writes all of `plain`, waiting for the socket as needed. Each turn
    /// seals at most [`UNSENT_MAX`] bytes before it lets other tasks run:
    /// a large frame does not hold the thread it is written from.
    pub(crate) async fn write_all(&self, mut plain: &[u8]) -> io::Result<()> {
        loop {
            let wrote = self.write_now(plain, UNSENT_MAX)?;
            plain = &plain[wrote.taken..];
            if plain.is_empty() {
                return self.flush().await;
            }
            if wrote.clear {
                tokio::task::yield_now().await;
            } else {
                self.sock.writable().await?;
            }
        }
    }

    /// Says goodbye (a close_notify) and shuts the write direction down.
    pub(crate) async fn close(&self) {
        let sealed = {
            let mut tx = self.tx.lock().expect("poisoned");
            self.seal(&mut tx, ALERT, &[1, 0])
        };
        if sealed.is_ok() {
            let _ = self.flush().await;
        }
        let _ = socket2::SockRef::from(&self.sock).shutdown(std::net::Shutdown::Write);
    }

    /// The peer updated its keys and asks us to update ours.
    fn ask_update(&self) {
        self.update_asked.store(true, Ordering::Relaxed);
    }

    /// Keys that seal only `records` records each, to see key updates.
    #[cfg(test)]
    pub(super) fn wear_keys_after(&self, records: u64) {
        let mut tx = self.tx.lock().expect("poisoned");
        tx.limit = records;
        tx.keys.set_limit(records);
    }

    /// The negotiated cipher suite.
    #[cfg(test)]
    pub(super) fn suite(&self) -> rustls::CipherSuite {
        self.kernel.lock().expect("poisoned").suite().suite()
    }

    /// How many bytes of records wait for the socket.
    #[cfg(test)]
    pub(super) fn unsent(&self) -> usize {
        self.tx.lock().expect("poisoned").unsent()
    }
}

/// Decrypted bytes of a [`TlsLink`]: the link's one reader.
pub(crate) struct TlsReader {
    link: Arc<TlsLink>,
    keys: Keys,
    /// Records read from the socket, `records[at..]` not opened yet (the
    /// last one maybe not all there).
    records: Vec<u8>,
    at: usize,
    /// The opened content not yet handed out: `records[content]`.
    content: Range<usize>,
    /// The peer said goodbye, or the socket ended.
    ended: bool,
}

impl TlsReader {
    /// Opens the next whole record, if there is one; `false` when there is
    /// none (or the stream ended).
    fn open_next(&mut self) -> io::Result<bool> {
        if self.ended {
            return Ok(false);
        }
        let Some(len) = whole_record(&self.records[self.at..])? else {
            return Ok(false);
        };
        let start = self.at;
        self.at += len;
        let record = &mut self.records[start..start + len];
        let (kind, content) = self.keys.open(record)?;
        let content = start + content.start..start + content.end;
        match kind {
            APPLICATION_DATA => self.content = content,
            ALERT => match self.records[content] {
                // close_notify: the end of the stream.
                [_, 0] => self.ended = true,
                // user_canceled: a close_notify follows.
                [_, 90] => {}
                [_, description] => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!("the peer sent TLS alert {description}"),
                    ));
                }
                _ => return Err(invalid("a malformed TLS alert")),
            },
            HANDSHAKE => self.handshake(content)?,
            _ => return Err(invalid("a TLS record of an unexpected type")),
        }
        Ok(true)
    }

    /// Handshake messages after the handshake: key updates (and session
    /// tickets, which our servers do not send).
    fn handshake(&mut self, content: Range<usize>) -> io::Result<()> {
        let mut messages = &self.records[content];
        while !messages.is_empty() {
            let &[kind, a, b, c, ref rest @ ..] = messages else {
                return Err(invalid("a truncated TLS handshake message"));
            };
            let len = u32::from_be_bytes([0, a, b, c]) as usize;
            if rest.len() < len {
                return Err(invalid("a TLS handshake message split across records"));
            }
            let (body, rest) = rest.split_at(len);
            messages = rest;
            let mut kernel = self.link.kernel.lock().expect("poisoned");
            match (kind, body) {
                // The peer's next records are under its new keys.
                (KEY_UPDATE, [asked @ (0 | 1)]) => {
                    let (seq, secrets) = kernel.update_rx().map_err(tls_error)?;
                    self.keys = Keys::new(seq, secrets, u64::MAX)?;
                    if *asked == 1 {
                        self.link.ask_update();
                    }
                }
                (NEW_SESSION_TICKET, _) => kernel.new_session_ticket(body).map_err(tls_error)?,
                _ => return Err(invalid("an unexpected TLS handshake message")),
            }
        }
        Ok(())
    }

    /// Hands out opened content into `buf`; the number of bytes.
    fn hand_out(&mut self, buf: &mut ReadBuf<'_>) -> usize {
        let n = self.content.len().min(buf.remaining());
        buf.put_slice(&self.records[self.content.start..self.content.start + n]);
        self.content.start += n;
        n
    }
}

impl AsyncRead for TlsReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        loop {
            // Opened content first, then the records already read.
            while buf.remaining() > 0 {
                if this.hand_out(buf) == 0 && !this.open_next()? {
                    break;
                }
            }
            // Nothing is copied into `buf` but what it receives: a read
            // initialises only the bytes it fills (see the B49 test).
            if buf.remaining() == 0 || buf.filled().len() > before || this.ended {
                return Poll::Ready(Ok(()));
            }
            // Read more: what is left of a record goes to the front first.
            if this.at > 0 {
                this.records.drain(..this.at);
                this.at = 0;
            }
            this.content = 0..0;
            this.records.reserve(READ_AHEAD);
            ready!(this.link.sock.poll_read_ready(cx))?;
            match this.link.sock.try_read_buf(&mut this.records) {
                // The end of the stream, with or without a goodbye (a
                // record cut short is dropped).
                Ok(0) => this.ended = true,
                Ok(_) => {}
                // Readiness was stale: poll again (and register the waker).
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// A link and its reader before they go their ways: the TLS stream on which
/// the runner proves itself.
pub(crate) struct TlsStream {
    link: Arc<TlsLink>,
    reader: TlsReader,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream").finish_non_exhaustive()
    }
}

impl TlsStream {
    pub(crate) fn link(&self) -> &Arc<TlsLink> {
        &self.link
    }

    /// The link (for its writers) and its reader.
    pub(crate) fn split(self) -> (Arc<TlsLink>, TlsReader) {
        (self.link, self.reader)
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let wrote = self.link.write_now(buf, usize::MAX)?;
            if wrote.taken > 0 || buf.is_empty() {
                return Poll::Ready(Ok(wrote.taken));
            }
            ready!(self.link.sock.poll_write_ready(cx))?;
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.link.send_now()? {
            ready!(self.link.sock.poll_write_ready(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}
