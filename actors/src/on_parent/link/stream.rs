//! Streaming calls on the parent: a [`StreamCall`] sends its call as any
//! call is sent (`send.rs`: the table of calls in flight, the deadline
//! watch, the cancel on drop, the slot kept until the work ends), and
//! receives the call's items on a channel of its own, bounded by the
//! window of credit it grants the runner.
//!
//! The endpoint's frame loop hands each item frame to
//! [`RunnerConn::deliver_item`], which puts it on the call's channel; the
//! consumer takes items from there and grants the runner credit for more
//! as it does (half a window at a time). The runner sends no item beyond
//! its credit, so the channel never holds more than a window: a runner that
//! does is cut off (its call cancelled, the stream ended with a codec
//! error). Items and the call's reply come in order on one connection, so
//! when the reply is in, every item before it is in the channel.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::outcome::outcome_into_result;
use super::{CallRequest, RunnerConn};
use crate::error::Error;
use crate::func::args::Args;
use crate::on_parent::pool::Lease;
use crate::wire::frame::Outcome;

/// An item as it came: its bytes, and whether they are the item's bytes
/// themselves (a `ByteBuf`) rather than their encoding.
type RawItem = (Vec<u8>, bool);

/// A streaming call's call: its outcome once its work has ended.
type Call = Pin<Box<dyn Future<Output = Result<Outcome, Error>> + Send>>;

/// The connection's end of one streaming call: where its items go.
pub(super) struct StreamTx {
    items: mpsc::Sender<RawItem>,
    /// Set when the runner sent an item beyond its credit.
    overrun: Arc<AtomicBool>,
}

/// What a caller asks of a streaming call.
#[derive(Debug)]
pub struct StreamRequest {
    /// The registered stream's name.
    pub function: &'static str,
    /// The arguments.
    pub args: Args,
    /// When the whole stream must be done; `None` for no deadline.
    pub deadline: Option<Instant>,
    /// Items the runner may send ahead of the consumer (at least 1).
    pub window: u32,
    /// The longest wait for the next item; `None` for no limit.
    pub item_timeout: Option<Duration>,
}

/// A streaming call in progress: its items as they come, then its end.
///
/// A [`Stream`](futures_util::Stream) of encoded items: each item is `Ok`
/// with its bytes; the stream's error, if it ended with one, comes last.
/// Made by [`Lease::stream`]; the facade's `Pool::stream` decodes the
/// items for you.
///
/// # Cancel safety
///
/// Dropping it cancels the work on the runner (an async body is aborted; a
/// blocking one is told and its sends fail); the call's slot returns when
/// the work has ended.
pub struct StreamCall {
    conn: RunnerConn,
    id: u64,
    function: &'static str,
    /// The call's budget, named in its deadline error.
    budget: Duration,
    /// The call itself, until it has ended.
    call: Option<Call>,
    items: mpsc::Receiver<RawItem>,
    overrun: Arc<AtomicBool>,
    window: u32,
    /// Items taken since credit was last granted.
    taken: u32,
    item_timeout: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
    /// The call's end, held until the items before it are taken.
    end: Option<Result<(), Error>>,
    done: bool,
}

impl std::fmt::Debug for StreamCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamCall")
            .field("runner", &self.conn.runner())
            .field("function", &self.function)
            .field("id", &self.id)
            .field("window", &self.window)
            .field("done", &self.done)
            .finish()
    }
}

impl Lease {
    /// Starts a streaming call on this slot's runner. Nothing is sent until
    /// the stream is first polled. The slot is checked in when the call's
    /// work has ended on the runner.
    ///
    /// The call is linked: dropping the stream cancels its work.
    pub fn stream(self, req: StreamRequest) -> StreamCall {
        let conn = self.conn().clone();
        let id = conn.next_call_id();
        let window = req.window.max(1);
        let (tx, items) = mpsc::channel(window as usize);
        let overrun = Arc::new(AtomicBool::new(false));
        conn.inner.streams.lock().expect("poisoned").insert(
            id,
            StreamTx {
                items: tx,
                overrun: Arc::clone(&overrun),
            },
        );
        let budget = req
            .deadline
            .map_or(Duration::MAX, |at| at.saturating_duration_since(Instant::now()));
        let (function, args, deadline) = (req.function, req.args, req.deadline);
        let call_conn = conn.clone();
        let call = Box::pin(async move {
            let lease = self;
            let req = CallRequest {
                function,
                args,
                deadline,
                linked: true,
                want_result: true,
                idempotency_key: None,
            };
            call_conn.call_as(id, req, Some(&lease), Some(window)).await
        });
        let item_timeout = req.item_timeout.map(|wait| (wait, Box::pin(tokio::time::sleep(wait))));
        StreamCall {
            conn,
            id,
            function,
            budget,
            call: Some(call),
            items,
            overrun,
            window,
            taken: 0,
            item_timeout,
            end: None,
            done: false,
        }
    }
}

impl StreamCall {
    /// The runner serving the call.
    pub fn runner(&self) -> crate::ids::RunnerId {
        self.conn.runner()
    }

    /// An item is taken: credit for half a window goes back to the runner
    /// once that many are taken, and the wait for the next item starts.
    fn took(&mut self, (bytes, bare): RawItem) -> Args {
        self.taken += 1;
        if self.call.is_some() && self.taken >= (self.window / 2).max(1) {
            self.conn.credit(self.id, self.taken);
            self.taken = 0;
        }
        if let Some((wait, sleep)) = &mut self.item_timeout {
            sleep.as_mut().reset((Instant::now() + *wait).into());
        }
        if bare { Args::bare(bytes) } else { Args::encoded(bytes) }
    }

    /// Ends the stream with `error`; the call, if still running, is dropped
    /// (and so cancelled).
    fn fail(&mut self, error: Error) -> Poll<Option<Result<Args, Error>>> {
        self.done = true;
        self.call = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl futures_util::Stream for StreamCall {
    type Item = Result<Args, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.items.poll_recv(cx) {
            Poll::Ready(Some(item)) => return Poll::Ready(Some(Ok(this.took(item)))),
            Poll::Ready(None) if this.overrun.load(Ordering::Acquire) => {
                return this.fail(Error::Codec(format!(
                    "the runner sent items of `{}` beyond the window of {} it was granted",
                    this.function, this.window
                )));
            }
            Poll::Ready(None) | Poll::Pending => {}
        }
        if let Some(call) = &mut this.call {
            let Poll::Ready(result) = call.as_mut().poll(cx) else {
                if let Some((wait, sleep)) = &mut this.item_timeout
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    let timeout = *wait;
                    return this.fail(Error::Deadline {
                        function: this.function.to_owned(),
                        timeout,
                    });
                }
                return Poll::Pending;
            };
            this.call = None;
            this.end =
                Some(result.and_then(|outcome| outcome_into_result(outcome, this.function, this.budget).map(drop)));
        }
        // The call has ended: the items it sent before its end are in the
        // channel already.
        if let Ok(item) = this.items.try_recv() {
            return Poll::Ready(Some(Ok(this.took(item))));
        }
        this.done = true;
        match this.end.take() {
            Some(Err(error)) => Poll::Ready(Some(Err(error))),
            _ => Poll::Ready(None),
        }
    }
}

impl Drop for StreamCall {
    fn drop(&mut self) {
        self.conn.inner.streams.lock().expect("poisoned").remove(&self.id);
    }
}

impl RunnerConn {
    /// Routes an item of streaming call `id` to its consumer. Items of a
    /// call nobody streams any more are dropped; a runner that sends more
    /// than its credit allows has its call cancelled.
    pub(crate) fn deliver_item(&self, id: u64, bytes: Vec<u8>, bare: bool) {
        let mut streams = self.inner.streams.lock().expect("poisoned");
        let Some(stream) = streams.get(&id) else {
            return;
        };
        match stream.items.try_send((bytes, bare)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => {
                streams.remove(&id);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                stream.overrun.store(true, Ordering::Release);
                streams.remove(&id);
                drop(streams);
                tracing::warn!(target: "ractor_flame::pool", runner = %self.inner.runner, call = id,
                    "runner sent stream items beyond its credit; call cancelled");
                self.cancel(id);
            }
        }
    }

    /// Ends every stream of the connection (the runner is gone): their
    /// consumers see the call's end.
    pub(super) fn close_streams(&self) {
        let streams = std::mem::take(&mut *self.inner.streams.lock().expect("poisoned"));
        drop(streams);
    }
}
