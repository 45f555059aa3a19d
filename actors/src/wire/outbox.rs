//! The sending side of a connection: a queue for the link thread's batching
//! writer, with a fast path that skips the thread hop.
//!
//! A frame sent while nothing is queued or being written is encoded and
//! written to the socket at once, from the sender's own thread (a
//! non-blocking write): a lone call or reply costs no wake-up of the link
//! thread. Otherwise the sender encodes it at the end of the queued bytes,
//! and the writer on the link thread takes them all at once into one write:
//! the link thread neither encodes nor frees anything per frame, and a
//! frame's allocations are freed on the thread that made them. Frames from
//! one sender keep their order either way: a frame goes straight out only
//! when nothing is ahead of it.
//!
//! Once every [`Outbox`] is dropped, the writer writes what is queued and
//! closes its half of the connection.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

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
    senders: Arc<Senders<Out>>,
}

/// Held by every [`Outbox`]: when the last one goes, the queue is told.
struct Senders<Out> {
    shared: Arc<Shared<Out>>,
}

impl<Out> Drop for Senders<Out> {
    fn drop(&mut self) {
        self.shared.state.lock().expect("poisoned").senders_gone = true;
        self.shared.ready.notify_one();
    }
}

impl<Out> Clone for Outbox<Out> {
    fn clone(&self) -> Self {
        Outbox {
            senders: Arc::clone(&self.senders),
        }
    }
}

impl<Out> std::fmt::Debug for Outbox<Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("queued", &self.senders.shared.queued.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// An [`Outbox`] that does not keep the connection open.
pub(crate) struct WeakOutbox<Out> {
    senders: Weak<Senders<Out>>,
    shared: Arc<Shared<Out>>,
}

impl<Out> Clone for WeakOutbox<Out> {
    fn clone(&self) -> Self {
        WeakOutbox {
            senders: Weak::clone(&self.senders),
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
    pub(super) shared: Arc<Shared<Out>>,
}

impl<Out> Drop for Queue<Out> {
    fn drop(&mut self) {
        // Nobody takes frames any more: senders learn it, and what waits
        // is dropped.
        self.shared.closed.store(true, Ordering::SeqCst);
        let waiting = {
            let mut state = self.shared.state.lock().expect("poisoned");
            state.bytes = Vec::new();
            state.splices.clear();
            std::mem::take(&mut state.frames)
        };
        drop(waiting);
    }
}

/// What senders and the writer share.
pub(crate) struct Shared<Out> {
    /// Frames waiting for the writer (or the in-process receiver); read
    /// without the lock to bound best-effort traffic.
    queued: AtomicUsize,
    /// The receiving end is gone: nothing sent is taken any more.
    closed: AtomicBool,
    pub(super) state: Mutex<State<Out>>,
    /// Wakes the receiving end when the first frame of a batch is queued
    /// (and when the last sender goes).
    ready: Notify,
    /// Ends noted by [`Outbox::send_ended`] and not yet taken into a frame.
    ended: Mutex<Vec<u64>>,
}

pub(crate) struct State<Out> {
    /// The socket, once the connection is driven; `None` in-process and
    /// after the close.
    pub(super) sink: Option<Sink>,
    max_frame: usize,
    /// Frames are encoded as they are sent (a connection), rather than
    /// handed over as they are (in-process).
    wire: bool,
    /// The writer has bytes on their way out: senders queue.
    in_flight: bool,
    /// The unwritten rest of a frame written straight out; the writer sends
    /// it before anything else.
    leftover: Vec<Chunk>,
    /// Reused encoding buffer for the fast path.
    scratch: Vec<u8>,
    /// Frames queued on a connection, encoded by their senders: the writer
    /// takes them all at once, as they lie.
    bytes: Vec<u8>,
    /// What goes between the bytes queued, by offset, in order: large
    /// payloads (written from where they lie) and frames of ends (filled
    /// when the writer takes them).
    splices: Vec<(usize, Splice)>,
    /// Frames queued in-process.
    frames: VecDeque<Out>,
    /// Every [`Outbox`] is gone: once what is queued is written, the
    /// connection closes.
    senders_gone: bool,
}

/// Something queued between encoded frames.
pub(crate) enum Splice {
    /// A large payload, after the head of its frame.
    Payload(Vec<u8>),
    /// A frame of ends, filled as the writer takes it.
    Ended,
}

/// What the writer took from the queue in one go.
pub(crate) struct Batch {
    /// What straight writes left over: it goes first.
    pub(super) leftover: Vec<Chunk>,
    /// What goes between the encoded frames, by offset into them.
    pub(super) splices: Vec<(usize, Splice)>,
    /// How many frames the batch holds.
    pub(super) frames: usize,
}

// Only this crate sends frames: its frame types are the only `OutFrame`s.
#[allow(private_bounds)]
impl<Out: OutFrame> Outbox<Out> {
    /// A new in-process outbox and its queue: frames are handed over as
    /// they are, to [`Queue::recv_one`].
    pub(crate) fn new() -> (Outbox<Out>, Queue<Out>) {
        Self::with(false, usize::MAX)
    }

    /// A new outbox of a connection whose frames may be at most
    /// `max_frame` bytes, and its queue, for the connection's writer:
    /// frames are encoded as they are sent.
    pub(crate) fn wire(max_frame: usize) -> (Outbox<Out>, Queue<Out>) {
        Self::with(true, max_frame)
    }

    fn with(wire: bool, max_frame: usize) -> (Outbox<Out>, Queue<Out>) {
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            state: Mutex::new(State {
                sink: None,
                max_frame,
                wire,
                in_flight: false,
                leftover: Vec::new(),
                scratch: Vec::new(),
                bytes: Vec::new(),
                splices: Vec::new(),
                frames: VecDeque::new(),
                senders_gone: false,
            }),
            ready: Notify::new(),
            ended: Mutex::new(Vec::new()),
        });
        let outbox = Outbox {
            senders: Arc::new(Senders {
                shared: Arc::clone(&shared),
            }),
        };
        (outbox, Queue { shared })
    }

    fn shared(&self) -> &Shared<Out> {
        &self.senders.shared
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
            let mut ended = self.shared().ended.lock().expect("poisoned");
            ended.push(id);
            ended.len() == 1
        };
        if !first {
            return !self.shared().closed.load(Ordering::SeqCst);
        }
        let Some(frame) = Out::ended() else {
            return false;
        };
        let shared = self.shared();
        let mut state = shared.state.lock().expect("poisoned");
        if shared.closed.load(Ordering::SeqCst) {
            return false;
        }
        if state.wire {
            let at = state.bytes.len();
            state.splices.push((at, Splice::Ended));
        } else {
            state.frames.push_back(frame);
        }
        shared.queued_one();
        true
    }

    fn enqueue(&self, frame: Out) -> bool {
        let shared = self.shared();
        let mut state = shared.state.lock().expect("poisoned");
        if shared.closed.load(Ordering::SeqCst) {
            return false;
        }
        state.append(frame);
        shared.queued_one();
        true
    }

    /// Writes `frame` straight to the socket when nothing is ahead of it and
    /// nobody else is writing; gives it back otherwise.
    fn try_direct(&self, frame: Out) -> Result<(), Out> {
        let shared = self.shared();
        if shared.queued.load(Ordering::SeqCst) != 0 || shared.closed.load(Ordering::SeqCst) {
            return Err(frame);
        }
        // Never wait for another writer: queue behind it instead.
        let Ok(mut state) = shared.state.try_lock() else {
            return Err(frame);
        };
        let state = &mut *state;
        if state.in_flight || !state.leftover.is_empty() || shared.queued.load(Ordering::SeqCst) != 0 {
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
            state.append(Out::ping());
            shared.queued_one();
        }
        if state.scratch.capacity() > 1 << 20 {
            state.scratch = Vec::new();
        }
        Ok(())
    }

    /// A handle that does not keep the connection open.
    pub(crate) fn downgrade(&self) -> WeakOutbox<Out> {
        WeakOutbox {
            senders: Arc::downgrade(&self.senders),
            shared: Arc::clone(&self.senders.shared),
        }
    }
}

impl<Out> Shared<Out> {
    /// Counts a frame just queued; the first of a batch wakes the receiving
    /// end (a later one finds it awake, or about to take the batch).
    fn queued_one(&self) {
        if self.queued.fetch_add(1, Ordering::SeqCst) == 0 {
            self.ready.notify_one();
        }
    }
}

impl<Out: OutFrame> State<Out> {
    /// Queues `frame`: encoded at the end of the batch (a connection), or
    /// as it is (in-process).
    fn append(&mut self, frame: Out) {
        if !self.wire {
            self.frames.push_back(frame);
            return;
        }
        if let Some(payload) = push(frame, &mut self.bytes, self.max_frame) {
            let at = self.bytes.len();
            self.splices.push((at, Splice::Payload(payload)));
        }
    }
}

impl<Out> WeakOutbox<Out> {
    /// The outbox, while the connection is open.
    pub(crate) fn upgrade(&self) -> Option<Outbox<Out>> {
        Some(Outbox {
            senders: self.senders.upgrade()?,
        })
    }

    /// Frames queued and not yet taken by the writer (bounds best-effort
    /// traffic such as forwarded logs).
    pub(crate) fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }
}

#[allow(private_bounds)]
impl<Out: OutFrame> Queue<Out> {
    /// Waits until there is something to write, or every outbox is gone.
    pub(super) async fn wait(&self) {
        loop {
            let ready = self.shared.ready.notified();
            let mut ready = std::pin::pin!(ready);
            // Registered before the look: a frame queued in between wakes it.
            ready.as_mut().enable();
            {
                let state = self.shared.state.lock().expect("poisoned");
                if self.shared.queued.load(Ordering::SeqCst) != 0 || state.senders_gone || !state.leftover.is_empty() {
                    return;
                }
            }
            ready.await;
        }
    }

    /// Takes everything queued into `bytes` (which must be empty; what it
    /// held is left for the senders to fill), with a heartbeat at its end
    /// when `ping`. From here until [`Queue::written`], senders queue behind
    /// it. `None` once every outbox is gone and everything is written: the
    /// connection is to close.
    pub(super) fn take(&self, ping: bool, bytes: &mut Vec<u8>) -> Option<Batch> {
        let mut state = self.shared.state.lock().expect("poisoned");
        if ping {
            state.append(Out::ping());
            self.shared.queued.fetch_add(1, Ordering::SeqCst);
        }
        let frames = self.shared.queued.swap(0, Ordering::SeqCst);
        if frames == 0 && state.leftover.is_empty() && state.senders_gone {
            state.sink = None;
            return None;
        }
        std::mem::swap(&mut state.bytes, bytes);
        state.in_flight = true;
        let batch = Batch {
            leftover: std::mem::take(&mut state.leftover),
            splices: std::mem::take(&mut state.splices),
            frames,
        };
        drop(state);
        Some(batch)
    }

    /// The batch taken last is written: senders may write straight out
    /// again.
    pub(super) fn written(&self) {
        self.shared.state.lock().expect("poisoned").in_flight = false;
    }

    /// Sets where the writer writes: straight writes may go there too.
    pub(super) fn drive(&self, sink: Sink) {
        self.shared.state.lock().expect("poisoned").sink = Some(sink);
    }

    /// Encodes the frames of ends among `splices` into `bytes`, where they
    /// were queued, each filled with every end noted so far; what is left
    /// in `splices` are large payloads, at their offsets.
    pub(super) fn fill_ended(&self, bytes: &mut Vec<u8>, splices: &mut Vec<(usize, Splice)>) {
        if !splices.iter().any(|(_, splice)| matches!(splice, Splice::Ended)) {
            return;
        }
        let limit = self.shared.state.lock().expect("poisoned").max_frame;
        let mut encoded = Vec::new();
        for i in (0..splices.len()).rev() {
            let (at, Splice::Ended) = splices[i] else {
                continue;
            };
            let Some(frame) = Out::ended() else {
                continue;
            };
            encoded.clear();
            // A frame of ends has no payload: all of it lands in `encoded`.
            let _ = push(self.fill(frame), &mut encoded, limit);
            bytes.splice(at..at, encoded.iter().copied());
            for (later, _) in &mut splices[i + 1..] {
                *later += encoded.len();
            }
            splices.remove(i);
        }
    }

    /// The next frame sent in-process, once there is one; `None` once every
    /// outbox is gone and nothing is left.
    pub(crate) async fn recv_one(&mut self) -> Option<Out> {
        loop {
            let ready = self.shared.ready.notified();
            let mut ready = std::pin::pin!(ready);
            ready.as_mut().enable();
            {
                let mut state = self.shared.state.lock().expect("poisoned");
                if let Some(frame) = state.frames.pop_front() {
                    self.shared.queued.fetch_sub(1, Ordering::SeqCst);
                    // More frames wait: the next call takes one without
                    // waiting for a wake-up that was spent on the first.
                    drop(state);
                    return Some(self.fill(frame));
                }
                if state.senders_gone {
                    return None;
                }
            }
            ready.await;
        }
    }

    /// Fills a frame of ends with every end noted so far, as it leaves the
    /// queue; other frames pass as they are.
    fn fill(&self, mut frame: Out) -> Out {
        if let Some(ids) = frame.ended_ids() {
            ids.append(&mut self.shared.ended.lock().expect("poisoned"));
        }
        frame
    }
}

/// Encodes `msg` into `buf`, but for a large payload that ends it: that is
/// returned, to be written right after `buf`. A frame over the limit is
/// replaced by its substitute (an error reply), if it has one.
fn push<Out: OutFrame>(mut msg: Out, buf: &mut Vec<u8>, limit: usize) -> Option<Vec<u8>> {
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
        assert_eq!(
            outbox.senders.shared.queued.load(Ordering::SeqCst),
            0,
            "one frame per burst of ends"
        );
        drop(queue);
        assert!(!outbox.send_ended(5), "a closed connection takes no ends");
    }
}
