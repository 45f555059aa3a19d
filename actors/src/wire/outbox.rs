//! The sending side of a connection: a queue for the link thread's batching
//! writer, with a fast path that skips the thread hop.
//!
//! A frame sent while nothing is queued or being written is encoded and
//! written to the socket at once, from the sender's own thread (a
//! non-blocking write): a lone call or reply costs no wake-up of the link
//! thread. Otherwise it joins the queue, and the writer on the link thread
//! batches it with the others into one write. Frames from one sender keep
//! their order either way: a frame goes straight out only when nothing is
//! ahead of it.
//!
//! Once every [`Outbox`] is dropped, the writer writes what is queued and
//! closes its half of the connection.

use std::io::IoSlice;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

use super::codec::{SPLIT_AT, encode_frame, encode_frame_split};
use super::connection::OutFrame;
use super::tls::TlsLink;

/// Where a connection's bytes go: a plain socket's write half, or a TLS
/// session that encrypts them on the way.
#[derive(Clone)]
pub(crate) enum Sink {
    Plain(Arc<OwnedWriteHalf>),
    Tls(Arc<TlsLink>),
}

impl Sink {
    /// Writes all of `buf`, waiting for the socket as needed.
    pub(super) async fn write_all(&self, mut buf: &[u8]) -> std::io::Result<()> {
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
            Sink::Tls(link) => {
                if link.write_now(buf)? {
                    Ok(())
                } else {
                    link.flush().await
                }
            }
        }
    }

    /// Writes the rest of each chunk, in order (what straight writes left
    /// over).
    pub(super) async fn write_chunks(&self, chunks: &[Chunk]) -> std::io::Result<()> {
        for chunk in chunks {
            self.write_all(chunk.rest()).await?;
        }
        Ok(())
    }

    /// What a sender's straight write of `head` and then `tail` achieved
    /// (one vectored write on plain TCP: a large payload is not copied).
    fn write_now(&self, head: &[u8], tail: &[u8]) -> Straight {
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
            Sink::Tls(link) => {
                let mut pending = false;
                for (written, part) in [(0, head), (head.len(), tail)] {
                    if part.is_empty() {
                        continue;
                    }
                    match link.try_write_now(part) {
                        Some(Ok(done)) => pending |= !done,
                        Some(Err(_)) => return Straight::Broken,
                        // The reader is decrypting: the writer sends the rest.
                        None => return Straight::Partly(written),
                    }
                }
                if pending {
                    // Encrypted; some of it waits in the session for the
                    // writer's flush.
                    Straight::Flush
                } else {
                    Straight::Done
                }
            }
        }
    }
}

/// The outcome of a straight write.
enum Straight {
    /// Every byte is on the socket.
    Done,
    /// The first `n` bytes are on the socket; the rest is left over.
    Partly(usize),
    /// Every byte is in the TLS session, some not yet on the socket.
    Flush,
    /// The connection is broken: its reader reports the loss.
    Broken,
}

/// Bytes still to write: `bytes[from..]`.
pub(crate) struct Chunk {
    bytes: Vec<u8>,
    from: usize,
}

impl Chunk {
    fn rest(&self) -> &[u8] {
        &self.bytes[self.from..]
    }
}

/// Sends frames on one connection (or, in-process, on a channel). Cheap to
/// clone.
#[doc(hidden)]
pub struct Outbox<Out> {
    tx: mpsc::UnboundedSender<Out>,
    shared: Arc<Shared>,
}

impl<Out> Clone for Outbox<Out> {
    fn clone(&self) -> Self {
        Outbox {
            tx: self.tx.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Out> std::fmt::Debug for Outbox<Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("queued", &self.shared.queued.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// An [`Outbox`] that does not keep the connection open.
pub(crate) struct WeakOutbox<Out> {
    tx: mpsc::WeakUnboundedSender<Out>,
    shared: Arc<Shared>,
}

impl<Out> Clone for WeakOutbox<Out> {
    fn clone(&self) -> Self {
        WeakOutbox {
            tx: self.tx.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Out> std::fmt::Debug for WeakOutbox<Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WeakOutbox")
    }
}

/// The receiving end: the writer task's (or the in-process loop's).
pub(crate) struct Queue<Out> {
    rx: mpsc::UnboundedReceiver<Out>,
    pub(super) shared: Arc<Shared>,
}

/// What senders and the writer share.
pub(crate) struct Shared {
    /// Frames in the queue that the writer has not taken into a write yet.
    /// While above zero, senders queue behind them.
    pub(super) queued: AtomicUsize,
    pub(super) state: Mutex<State>,
    /// Ends noted by [`Outbox::send_ended`] and not yet taken into a frame.
    ended: Mutex<Vec<u64>>,
}

pub(crate) struct State {
    /// The socket, once the connection is driven; `None` in-process and
    /// after the close.
    pub(super) sink: Option<Sink>,
    pub(super) max_frame: usize,
    /// The writer has bytes on their way out: senders queue.
    pub(super) in_flight: bool,
    /// The unwritten rest of a frame written straight out; the writer sends
    /// it before anything else.
    pub(super) leftover: Vec<Chunk>,
    /// Reused encoding buffer for the fast path.
    scratch: Vec<u8>,
}

// Only this crate sends frames: its frame types are the only `OutFrame`s.
#[allow(private_bounds)]
impl<Out: OutFrame> Outbox<Out> {
    /// A new outbox and its queue.
    pub(crate) fn new() -> (Outbox<Out>, Queue<Out>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            state: Mutex::new(State {
                sink: None,
                max_frame: usize::MAX,
                in_flight: false,
                leftover: Vec::new(),
                scratch: Vec::new(),
            }),
            ended: Mutex::new(Vec::new()),
        });
        let outbox = Outbox {
            tx,
            shared: Arc::clone(&shared),
        };
        (outbox, Queue { rx, shared })
    }

    /// Queues `frame` for the writer; `false` when the connection is gone.
    pub(crate) fn send(&self, frame: Out) -> bool {
        self.enqueue(frame)
    }

    /// Sends `frame`, straight out when `alone` (the sender knows of no
    /// other frame about to follow: nothing to batch it with) and nothing is
    /// ahead of it; queued for the writer's batches otherwise. `false` when
    /// the connection is gone.
    pub(crate) fn send_alone(&self, frame: Out, alone: bool) -> bool {
        if !alone {
            return self.enqueue(frame);
        }
        match self.try_direct(frame) {
            Ok(()) => true,
            Err(frame) => self.enqueue(frame),
        }
    }

    /// Notes that call `id` has ended with nothing to report but its end.
    /// Ends are sent together: the first one noted queues a frame, and the
    /// ids noted until the writer takes that frame all go in it (one frame,
    /// one decode and one lock on the parent for a burst of casts). Such an
    /// end may thus overtake frames queued after the first end of its
    /// frame; they are never its own call's, which were queued before its
    /// end. `false` when the connection is gone.
    pub(crate) fn send_ended(&self, id: u64) -> bool {
        let first = {
            let mut ended = self.shared.ended.lock().expect("poisoned");
            ended.push(id);
            ended.len() == 1
        };
        if !first {
            return !self.tx.is_closed();
        }
        Out::ended().is_some_and(|frame| self.enqueue(frame))
    }

    fn enqueue(&self, frame: Out) -> bool {
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(frame).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Writes `frame` straight to the socket when nothing is ahead of it and
    /// nobody else is writing; gives it back otherwise.
    fn try_direct(&self, frame: Out) -> Result<(), Out> {
        if self.shared.queued.load(Ordering::SeqCst) != 0 || self.tx.is_closed() {
            return Err(frame);
        }
        // Never wait for another writer: queue behind it instead.
        let Ok(mut state) = self.shared.state.try_lock() else {
            return Err(frame);
        };
        let state = &mut *state;
        if state.in_flight || !state.leftover.is_empty() || self.shared.queued.load(Ordering::SeqCst) != 0 {
            return Err(frame);
        }
        let Some(sink) = state.sink.clone() else {
            return Err(frame);
        };
        state.scratch.clear();
        let payload = push(frame, &mut state.scratch, state.max_frame);
        let head = state.scratch.len();
        let wake = match sink.write_now(&state.scratch, payload.as_deref().unwrap_or_default()) {
            Straight::Done | Straight::Broken => false,
            Straight::Flush => true,
            Straight::Partly(written) => {
                // The rest goes first in the writer's next write; a large
                // payload is handed over as it is, not copied.
                if written < head {
                    let bytes = state.scratch[written..].to_vec();
                    state.leftover.push(Chunk { bytes, from: 0 });
                }
                if let Some(bytes) = payload {
                    let from = written.saturating_sub(head);
                    state.leftover.push(Chunk { bytes, from });
                }
                true
            }
        };
        if wake {
            // The writer sends what is left when the socket can take it. A
            // heartbeat wakes it (and follows the rest: harmless).
            self.shared.queued.fetch_add(1, Ordering::SeqCst);
            if self.tx.send(Out::ping()).is_err() {
                self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            }
        }
        if state.scratch.capacity() > 1 << 20 {
            state.scratch = Vec::new();
        }
        Ok(())
    }

    /// A handle that does not keep the connection open.
    pub(crate) fn downgrade(&self) -> WeakOutbox<Out> {
        WeakOutbox {
            tx: self.tx.downgrade(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Out> WeakOutbox<Out> {
    /// The outbox, while the connection is open.
    pub(crate) fn upgrade(&self) -> Option<Outbox<Out>> {
        Some(Outbox {
            tx: self.tx.upgrade()?,
            shared: Arc::clone(&self.shared),
        })
    }

    /// Frames queued and not yet taken by the writer (bounds best-effort
    /// traffic such as forwarded logs).
    pub(crate) fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }
}

impl<Out> Queue<Out> {
    /// The next queued frame; `None` once every outbox is dropped. The
    /// frame still counts as queued until [`Queue::taken`].
    pub(crate) async fn recv(&mut self) -> Option<Out> {
        self.rx.recv().await
    }

    /// The next queued frame, if one is ready (counted as for `recv`).
    pub(crate) fn try_recv(&mut self) -> Option<Out> {
        self.rx.try_recv().ok()
    }

    /// `n` frames received have left the queue (they are written, or about
    /// to be, in order).
    pub(crate) fn taken(&self, n: usize) {
        self.shared.queued.fetch_sub(n, Ordering::SeqCst);
    }

    /// A frame received in-process (no writer) has been handled.
    pub(crate) async fn recv_one(&mut self) -> Option<Out>
    where
        Out: OutFrame,
    {
        let frame = self.rx.recv().await?;
        self.taken(1);
        Some(self.fill(frame))
    }

    /// Fills a frame of ends with every end noted so far, as it leaves the
    /// queue; other frames pass as they are.
    pub(crate) fn fill(&self, mut frame: Out) -> Out
    where
        Out: OutFrame,
    {
        if let Some(ids) = frame.ended_ids() {
            ids.append(&mut self.shared.ended.lock().expect("poisoned"));
        }
        frame
    }
}

/// Encodes `msg` into `buf`, but for a large payload that ends it: that is
/// returned, to be written right after `buf`. A frame over the limit is
/// replaced by its substitute (an error reply), if it has one.
pub(super) fn push<Out: OutFrame>(mut msg: Out, buf: &mut Vec<u8>, limit: usize) -> Option<Vec<u8>> {
    let payload = msg.take_payload(SPLIT_AT);
    let encoded = match &payload {
        Some(payload) => encode_frame_split(&msg, payload.len(), limit, buf),
        None => encode_frame(&msg, limit, buf),
    };
    if let Err(err) = encoded {
        tracing::warn!(target: "ractor_flame::wire", error = %err, "frame not sent");
        if let Some(substitute) = msg.oversized(&err) {
            let _ = encode_frame(&substitute, limit, buf);
        }
        return None;
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::ToParent;

    /// Ends noted while a frame of ends waits in the queue all go in it,
    /// whatever was queued between them; an end noted after it left starts
    /// a new one.
    #[tokio::test]
    async fn ends_noted_while_their_frame_waits_share_it() {
        let (outbox, mut queue) = Outbox::<ToParent>::new();
        assert!(outbox.send_ended(1));
        assert!(outbox.send_ended(2));
        assert!(outbox.send(ToParent::IdleRequest));
        assert!(outbox.send_ended(3));
        assert!(matches!(queue.recv_one().await, Some(ToParent::Ended { ids }) if ids == [1, 2, 3]));
        assert!(matches!(queue.recv_one().await, Some(ToParent::IdleRequest)));
        assert!(outbox.send_ended(4));
        assert!(matches!(queue.recv_one().await, Some(ToParent::Ended { ids }) if ids == [4]));
        assert!(queue.try_recv().is_none(), "one frame per burst of ends");
        drop(queue);
        assert!(!outbox.send_ended(5), "a closed connection takes no ends");
    }
}
