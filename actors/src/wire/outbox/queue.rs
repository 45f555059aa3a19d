//! The writer's side of an outbox: what senders and the writer share, the
//! bytes and frames queued for the writer, and how a frame is encoded into
//! them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::sink::{Chunk, Sink};
use crate::wire::codec::{SPLIT_AT, encode_frame, encode_frame_split};
use crate::wire::connection::OutFrame;
use crate::wire::payload::Payload;

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
    pub(super) queued: AtomicUsize,
    /// The receiving end is gone: nothing sent is taken any more.
    pub(super) closed: AtomicBool,
    pub(super) state: Mutex<State<Out>>,
    /// Wakes the receiving end when the first frame of a batch is queued
    /// (and when the last sender goes).
    pub(super) ready: Notify,
    /// Ends noted by [`Outbox::send_ended`](super::Outbox::send_ended) and
    /// not yet taken into a frame.
    pub(super) ended: Mutex<Vec<u64>>,
}

pub(crate) struct State<Out> {
    /// The socket, once the connection is driven; `None` in-process and
    /// after the close.
    pub(super) sink: Option<Sink>,
    pub(super) max_frame: usize,
    /// Frames are encoded as they are sent (a connection), rather than
    /// handed over as they are (in-process).
    pub(super) wire: bool,
    /// The writer has bytes on their way out: senders queue.
    pub(super) in_flight: bool,
    /// The unwritten rest of a frame written straight out; the writer sends
    /// it before anything else.
    pub(super) leftover: Vec<Chunk>,
    /// Reused encoding buffer for the fast path.
    pub(super) scratch: Vec<u8>,
    /// Frames queued on a connection, encoded by their senders: the writer
    /// takes them all at once, as they lie.
    pub(super) bytes: Vec<u8>,
    /// What goes between the bytes queued, by offset, in order: large
    /// payloads (written from where they lie) and frames of ends (filled
    /// when the writer takes them).
    pub(super) splices: Vec<(usize, Splice)>,
    /// Frames queued in-process.
    pub(super) frames: VecDeque<Out>,
    /// Every [`Outbox`](super::Outbox) is gone: once what is queued is
    /// written, the connection closes.
    pub(super) senders_gone: bool,
}

/// Something queued between encoded frames.
pub(crate) enum Splice {
    /// A large payload, after the head of its frame.
    Payload(Payload),
    /// A frame of ends, filled as the writer takes it.
    Ended,
}

/// What the writer took from the queue in one go.
pub(crate) struct Batch {
    /// What straight writes left over: it goes first.
    pub(crate) leftover: Vec<Chunk>,
    /// What goes between the encoded frames, by offset into them.
    pub(crate) splices: Vec<(usize, Splice)>,
    /// How many frames the batch holds.
    pub(crate) frames: usize,
}

impl<Out> Shared<Out> {
    /// Counts a frame just queued; the first of a batch wakes the receiving
    /// end (a later one finds it awake, or about to take the batch).
    pub(super) fn queued_one(&self) {
        if self.queued.fetch_add(1, Ordering::SeqCst) == 0 {
            self.ready.notify_one();
        }
    }
}

impl<Out: OutFrame> State<Out> {
    /// Queues `frame`: encoded at the end of the batch (a connection), or
    /// as it is (in-process).
    pub(super) fn append(&mut self, frame: Out) {
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

#[allow(private_bounds)]
impl<Out: OutFrame> Queue<Out> {
    /// Waits until there is something to write, or every outbox is gone.
    pub(crate) async fn wait(&self) {
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
    pub(crate) fn take(&self, ping: bool, bytes: &mut Vec<u8>) -> Option<Batch> {
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
    pub(crate) fn written(&self) {
        self.shared.state.lock().expect("poisoned").in_flight = false;
    }

    /// Sets where the writer writes: straight writes may go there too.
    pub(crate) fn drive(&self, sink: Sink) {
        self.shared.state.lock().expect("poisoned").sink = Some(sink);
    }

    /// Encodes the frames of ends among `splices` into `bytes`, where they
    /// were queued, each filled with every end noted so far; what is left
    /// in `splices` are large payloads, at their offsets.
    pub(crate) fn fill_ended(&self, bytes: &mut Vec<u8>, splices: &mut Vec<(usize, Splice)>) {
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
pub(super) fn push<Out: OutFrame>(mut msg: Out, buf: &mut Vec<u8>, limit: usize) -> Option<Payload> {
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
