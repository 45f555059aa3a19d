//! Streaming functions: a [`RemoteStream`]'s body sends items to its caller
//! through a [`StreamSender`], one by one, as it produces them, and ends
//! the stream by returning.
//!
//! Items travel as frames of their own ahead of the call's one reply. The
//! caller grants credit (a window of items it has room for) and grants more
//! as it consumes them; [`StreamSender::send`] waits while no credit is
//! left, so a consumer that falls behind pauses the body instead of filling
//! memory on either side.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use crate::error::FnError;
use crate::func::args::Args;
use crate::func::context::CurrentCall;
use crate::wire::frame::ToParent;
use crate::wire::outbox::Outbox;

/// A function that runs on a runner and yields a stream of items.
///
/// The body gets its decoded arguments and a [`StreamSender`] for its
/// items; the stream ends when the body returns: `Ok(())` ends it cleanly,
/// an error (or a panic) ends it with that error after the items sent
/// before. Register it with
/// [`Registry::register_stream`](crate::Registry::register_stream) and
/// consume it with `pool.stream::<S>(args)` (in the facade).
///
/// Everything a [`RemoteFn`](crate::RemoteFn) body may rely on holds: it
/// never runs on the thread that carries the connection, it is aborted at
/// its deadline or when its caller drops the stream (a blocking body sees
/// [`CurrentCall::is_cancelled`] and a failed `send`), and its slot stays
/// taken until it has returned.
///
/// # Examples
///
/// ```
/// use ractor_flame_actors::{FnError, RemoteStream, StreamSender};
///
/// /// Counts from 0 to `n`, one item at a time.
/// struct Count;
///
/// impl RemoteStream for Count {
///     const NAME: &'static str = "count";
///     type Args = u32;
///     type Item = u32;
///
///     async fn run(n: u32, items: StreamSender<u32>) -> Result<(), FnError> {
///         for i in 0..n {
///             items.send(i).await?;
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait RemoteStream: Send + Sync + 'static {
    /// The stable name the function is called by. Unique in a registry
    /// (among functions and streams alike).
    const NAME: &'static str;
    /// As [`RemoteFn::BLOCKING`](crate::RemoteFn::BLOCKING): the body runs on
    /// the blocking thread pool, where it may compute for as long as it
    /// likes between items; its `send(..).await` waits for credit on that
    /// thread.
    const BLOCKING: bool = false;
    /// The argument, as for a [`RemoteFn`](crate::RemoteFn).
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// One item of the stream, encoded with rmp-serde on its way to the
    /// caller; a [`serde_bytes::ByteBuf`] travels as its bytes.
    type Item: Serialize + DeserializeOwned + Send + 'static;

    /// The body: sends items through `items`, then returns.
    ///
    /// # Errors
    ///
    /// Return an [`FnError`] to end the stream with an error; the caller gets
    /// the items sent before it, then [`Error::Remote`](crate::Error::Remote).
    fn run(args: Self::Args, items: StreamSender<Self::Item>) -> impl Future<Output = Result<(), FnError>> + Send;
}

/// Where a streaming body sends its items.
///
/// [`send`](StreamSender::send) waits for credit: its caller grants a
/// window of items and more as it consumes them. It fails once the call is
/// over for its caller (the stream was dropped, its deadline passed, the
/// runner is stopping): return the error with `?`, the stream is over.
///
/// # Examples
///
/// See [`RemoteStream`].
pub struct StreamSender<T> {
    sink: Arc<StreamSink>,
    call: CurrentCall,
    _item: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for StreamSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSender")
            .field("call", &self.sink.id)
            .field("credit", &self.sink.credit.available_permits())
            .finish()
    }
}

impl<T: Serialize + 'static> StreamSender<T> {
    pub(crate) fn new(call: CurrentCall) -> Option<Self> {
        let sink = Arc::clone(call.stream()?);
        Some(StreamSender {
            sink,
            call,
            _item: PhantomData,
        })
    }

    /// Sends one item to the caller, once the caller has room for it.
    ///
    /// # Errors
    ///
    /// An error of kind [`Cancelled`](crate::FnErrorKind::Cancelled) when the
    /// call is over for its caller (it dropped the stream, the deadline
    /// passed, the runner is stopping or its parent is gone); an error when
    /// the item does not encode, or is larger than the pool's
    /// `max_frame_size` allows (it is not sent).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a send dropped while it waits sends nothing and uses no
    /// credit.
    pub async fn send(&self, item: T) -> Result<(), FnError> {
        tokio::select! {
            biased;
            permit = self.sink.credit.acquire() => match permit {
                Ok(permit) => permit.forget(),
                Err(_) => return Err(over()),
            },
            () = self.call.cancelled() => return Err(over()),
        }
        self.push(item)
    }

    /// Items the caller has room for now, without waiting.
    pub fn credit(&self) -> usize {
        self.sink.credit.available_permits()
    }

    fn push(&self, item: T) -> Result<(), FnError> {
        let (bytes, bare) = Args::encode(item)
            .map_err(|e| FnError::msg(format!("stream item: {e}")))?
            .into_parts();
        if bytes.len() > self.sink.max_item {
            // Never sent, never lost without a word: the body learns of it
            // here, and the stream ends with it if the body returns it.
            return Err(FnError::invalid_argument(format!(
                "stream item of {} bytes exceeds max_frame_size of {} bytes",
                bytes.len(),
                self.sink.max_item
            )));
        }
        let frame = ToParent::Item {
            id: self.sink.id,
            bytes: bytes.into_vec(),
            bare,
        };
        if self.sink.out.send(frame) { Ok(()) } else { Err(over()) }
    }
}

fn over() -> FnError {
    FnError::new(crate::FnErrorKind::Cancelled, "the stream is over for its caller")
}

/// A streaming call's end on the runner: where its items go and the credit
/// its caller granted. Made at admission (so the caller's first credit,
/// which follows the call's frame, finds it) and reached by the call's id.
pub(crate) struct StreamSink {
    id: u64,
    out: Outbox<ToParent>,
    /// The largest item that fits in a frame.
    max_item: usize,
    credit: Semaphore,
}

impl fmt::Debug for StreamSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSink")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl StreamSink {
    pub(crate) fn new(id: u64, out: Outbox<ToParent>) -> Arc<Self> {
        Arc::new(StreamSink {
            id,
            // Room for the frame's envelope.
            max_item: out.max_frame().saturating_sub(64),
            out,
            credit: Semaphore::new(0),
        })
    }

    /// The caller has room for `items` more.
    pub(crate) fn grant(&self, items: u32) {
        // A peer cannot overflow the semaphore: credit beyond its bound is
        // capped (a caller never grants more than its window anyway).
        let room = Semaphore::MAX_PERMITS.saturating_sub(self.credit.available_permits());
        self.credit.add_permits((items as usize).min(room));
    }

    /// No item goes out from now on (the call ended, or was stopped):
    /// a sender waiting for credit fails.
    pub(crate) fn close(&self) {
        self.credit.close();
    }
}
