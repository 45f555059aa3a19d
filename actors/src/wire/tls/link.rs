//! An established TLS link: records sealed by the writers, opened by the
//! reader, each side under its own keys.
//!
//! How the bytes move, and why:
//!
//! - A writer seals each record straight from the plaintext where it lies
//!   into the buffer of records on their way to the socket (no copy of the
//!   plaintext first); every [`BATCH`] bytes go to the socket at once, so
//!   the peer opens the first records of a large frame while the rest are
//!   sealed, without a system call per record.
//! - What the socket cannot take yet waits, up to [`UNSENT_MAX`] bytes of
//!   records; past that, a writer stops and says how much it took, and the
//!   rest stays plaintext until the socket drains (a 64 MiB frame is not
//!   64 MiB of records held at once, in memory that must be faulted in
//!   anew for every frame).
//! - The reader reads many records at a time and opens each straight into
//!   the buffer it is read into (for a large frame, the frame's own buffer),
//!   so its content is not copied after it is opened.
//! - Sending and receiving share nothing but the socket (and, for a key
//!   update, the key schedule): the reader never waits for a writer sealing
//!   a large frame, nor a writer for the reader.
//!
//! The buffers a burst of large frames grows are given back a while after
//! the burst, so that an idle link holds no more than [`KEEP`] bytes each
//! way.

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::handshake::{Done, Kernel, tls_error};
use super::record::{
    ALERT, APPLICATION_DATA, HANDSHAKE, KEY_UPDATE, Keys, MAX_PLAIN, NEW_SESSION_TICKET, inner_len, invalid,
    record_len, whole_record,
};

/// How many bytes of records a writer seals before it offers them to the
/// socket (thirty-two full records): fewer, larger writes cost less than a
/// write per record, and the peer still starts on a large frame early. Half
/// a MiB measured best on a 1 MiB frame: a 1 MiB call over TLS took 1.08 to
/// 1.33 times the plain call with it, 1.26 to 1.48 with 256 KiB, 1.5 to
/// 1.7 with 64 KiB, and 1.33 to 1.66 with a whole MiB (no overlap of
/// sealing and opening left); `cargo bench --bench report -- --only tls`.
pub(super) const BATCH: usize = 512 * 1024;

/// How many bytes of sealed records may wait for the socket; a writer that
/// finds that many waiting and the socket full stops sealing.
pub(super) const UNSENT_MAX: usize = 512 * 1024;

/// How many bytes the reader asks the socket for at a time while large
/// frames arrive (its last read filled all the room it had); [`KEEP`]
/// otherwise.
const READ_AHEAD: usize = 256 * 1024;

/// The room for records a link keeps for good, each way; more is given
/// back [`KEEP_FOR`] after the last write or read that needed it.
pub(super) const KEEP: usize = 64 * 1024;
pub(super) const KEEP_FOR: Duration = Duration::from_secs(1);

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
    /// Sealed records, `buf[sent..end]` not on the socket yet. The buffer
    /// is reused, zeroed only where it grows: records are sealed into it
    /// straight from the plaintext.
    buf: Vec<u8>,
    sent: usize,
    end: usize,
    /// When a write last needed more than [`KEEP`] bytes of room.
    large_at: Option<Instant>,
}

impl Tx {
    fn unsent(&self) -> usize {
        self.end - self.sent
    }

    /// Seals one record of `kind` carrying `content` at the end of the
    /// records.
    fn push(&mut self, kind: u8, content: &[u8]) -> io::Result<()> {
        let len = record_len(content.len());
        if self.buf.len() < self.end + len {
            self.buf.resize(self.end + len, 0);
        }
        self.keys
            .seal_into(kind, content, &mut self.buf[self.end..self.end + len])?;
        self.end += len;
        Ok(())
    }

    /// Writes the records that wait, until the socket is full; `true` when
    /// none is left.
    fn send(&mut self, sock: &TcpStream) -> io::Result<bool> {
        while self.sent < self.end {
            match sock.try_write(&self.buf[self.sent..self.end]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        (self.sent, self.end) = (0, 0);
        Ok(true)
    }

    /// Room for more records: what was sent goes from the front once it is
    /// as much as what was not.
    fn compact(&mut self) {
        if self.sent > 0 && self.sent >= self.unsent() {
            self.buf.copy_within(self.sent..self.end, 0);
            (self.sent, self.end) = (0, self.unsent());
        }
    }

    /// Keeps the room a large write took while large writes keep coming,
    /// and gives it back a while after the last (an idle link would hold
    /// it for its life). Heartbeats bring the check round.
    fn trim(&mut self, sealed: usize) {
        if self.buf.len() <= KEEP {
            return;
        }
        let now = Instant::now();
        if sealed > KEEP {
            self.large_at = Some(now);
        } else if self.end == 0 && self.large_at.is_none_or(|at| now.duration_since(at) > KEEP_FOR) {
            self.buf = Vec::new();
            self.large_at = None;
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
                buf: Vec::new(),
                sent: 0,
                end: 0,
                large_at: None,
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
            burst_at: None,
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
        self.seal_and_send(&mut tx, &[plain], budget)
    }

    /// Like [`TlsLink::write_now`] for `parts` one after the other (a
    /// frame's head and its payload: sealed into the same writes, as plain
    /// TCP writes them in one), but gives up at once (`None`) when another
    /// writer holds the sending side.
    pub(crate) fn try_write_now(&self, parts: &[&[u8]], budget: usize) -> Option<io::Result<Wrote>> {
        let mut tx = self.tx.try_lock().ok()?;
        Some(self.seal_and_send(&mut tx, parts, budget))
    }

    fn seal_and_send(&self, tx: &mut Tx, parts: &[&[u8]], budget: usize) -> io::Result<Wrote> {
        let budget = budget.min(parts.iter().map(|part| part.len()).sum());
        // Whether the socket has said it is full during this write: it is
        // not asked again until there is reason to.
        let mut full = tx.unsent() > 0 && !tx.send(&self.sock)?;
        // Where the next record starts: `parts[part][at..]`.
        let (mut part, mut at) = (0, 0);
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
                let rest = &parts[part][at..];
                if rest.is_empty() {
                    (part, at) = (part + 1, 0);
                    continue;
                }
                let piece = &rest[..rest.len().min(MAX_PLAIN).min(until - taken)];
                self.seal(tx, APPLICATION_DATA, piece)?;
                at += piece.len();
                taken += piece.len();
            }
            if !full {
                full = !tx.send(&self.sock)?;
            }
        }
        tx.trim(taken);
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
            tx.push(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0])?;
            let (seq, secrets) = self.kernel.lock().expect("poisoned").update_tx().map_err(tls_error)?;
            tx.keys = Keys::new(seq, secrets, tx.limit)?;
        }
        tx.push(kind, content)
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

    /// The room the writers hold for records.
    #[cfg(test)]
    pub(super) fn write_room(&self) -> usize {
        self.tx.lock().expect("poisoned").buf.len()
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
    /// Content opened in place and not yet handed out: `records[content]`.
    content: Range<usize>,
    /// The peer said goodbye, or the socket ended.
    ended: bool,
    /// When a read last filled all the room it had.
    burst_at: Option<Instant>,
}

impl TlsReader {
    /// Opens the next whole record, if there is one, straight into `buf`
    /// when its content fits there (the usual case: a frame's reader asks
    /// for all the frame), else where it lies; `false` when there is none
    /// (or the stream ended).
    fn open_next(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<bool> {
        if self.ended {
            return Ok(false);
        }
        let Some(len) = whole_record(&self.records[self.at..])? else {
            return Ok(false);
        };
        let record = self.at..self.at + len;
        self.at += len;
        let inner = inner_len(&self.records[record.clone()]);
        if buf.remaining() >= inner {
            // Opened where it is to be read: no copy. Only the bytes it
            // fills are initialised (see the B49 test).
            let out = buf.initialize_unfilled_to(inner);
            let (kind, n) = self.keys.open_into(&self.records[record], out)?;
            if kind == APPLICATION_DATA {
                buf.advance(n);
            } else {
                let content = out[..n].to_vec();
                self.control(kind, &content)?;
            }
        } else {
            let (kind, content) = self.keys.open(&mut self.records[record.clone()])?;
            let content = record.start + content.start..record.start + content.end;
            if kind == APPLICATION_DATA {
                self.content = content;
            } else {
                let content = self.records[content].to_vec();
                self.control(kind, &content)?;
            }
        }
        Ok(true)
    }

    /// A record other than application data: an alert, or handshake
    /// messages after the handshake (key updates; session tickets, which
    /// our servers do not send).
    fn control(&mut self, kind: u8, content: &[u8]) -> io::Result<()> {
        match (kind, content) {
            // close_notify: the end of the stream.
            (ALERT, [_, 0]) => self.ended = true,
            // user_canceled: a close_notify follows.
            (ALERT, [_, 90]) => {}
            (ALERT, [_, description]) => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("the peer sent TLS alert {description}"),
                ));
            }
            (HANDSHAKE, mut messages) => {
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
                        // The peer's next records are under its new keys;
                        // nothing may follow in this record (RFC 8446, 5.1).
                        (KEY_UPDATE, [asked @ (0 | 1)]) if messages.is_empty() => {
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
            }
            _ => return Err(invalid("a malformed or unexpected TLS record")),
        }
        Ok(())
    }

    /// Hands out content opened in place into `buf`; the number of bytes.
    fn hand_out(&mut self, buf: &mut ReadBuf<'_>) -> usize {
        let n = self.content.len().min(buf.remaining());
        buf.put_slice(&self.records[self.content.start..self.content.start + n]);
        self.content.start += n;
        n
    }

    /// Room to read more: what is left of a record goes to the front, and
    /// [`READ_AHEAD`] bytes of room while large frames arrive, [`KEEP`]
    /// otherwise. The room returns to [`KEEP`] a while after the last
    /// burst. How much room there is to read into.
    fn make_room(&mut self) -> usize {
        self.records.drain(..self.at);
        (self.at, self.content) = (0, 0..0);
        let burst = self.burst_at.is_some_and(|at| at.elapsed() < KEEP_FOR);
        if !burst && self.records.capacity() > 2 * KEEP {
            self.records.shrink_to(KEEP);
            self.burst_at = None;
        }
        let want = if burst { READ_AHEAD } else { KEEP };
        if self.records.capacity() - self.records.len() < want / 2 {
            self.records.reserve_exact(want);
        }
        self.records.capacity() - self.records.len()
    }
}

#[cfg(test)]
impl TlsReader {
    /// The room the reader holds for records.
    pub(super) fn read_room(&self) -> usize {
        self.records.capacity()
    }
}

impl AsyncRead for TlsReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        loop {
            // Content opened in place first, then the records already read.
            while buf.remaining() > 0 {
                if this.hand_out(buf) == 0 && !this.open_next(buf)? {
                    break;
                }
            }
            if buf.remaining() == 0 || buf.filled().len() > before || this.ended {
                return Poll::Ready(Ok(()));
            }
            let room = this.make_room();
            ready!(this.link.sock.poll_read_ready(cx))?;
            match this.link.sock.try_read_buf(&mut this.records) {
                // The end of the stream, with or without a goodbye (a
                // record cut short is dropped).
                Ok(0) => this.ended = true,
                Ok(n) if n == room => this.burst_at = Some(Instant::now()),
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
