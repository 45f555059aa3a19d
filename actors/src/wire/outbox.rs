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
//! closes its half of the connection.//!
//! Where the bytes go (a plain socket or a TLS session) is in [`sink`]; the
//! queue the writer drains, and the encoding into it, in [`queue`].

mod queue;
mod sink;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use super::connection::OutFrame;
pub(crate) use queue::{Queue, Splice};
use queue::{Shared, State, push};
pub(crate) use sink::Sink;
use sink::{Chunk, Straight};

/// Sends frames on one connection (or, in-process, on a channel). Cheap to
/// clone; the connection closes when the last one is dropped.
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

    /// The largest frame this outbox sends, in bytes.
    pub(crate) fn max_frame(&self) -> usize {
        self.shared().state.lock().expect("poisoned").max_frame
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
                    let bytes = state.scratch[written..].to_vec().into();
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
