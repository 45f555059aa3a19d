//! Streaming calls: [`StreamOptions`] and the [`ItemStream`] that
//! [`Pool::stream`](crate::Pool::stream) returns.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::Stream;
use ractor_flame_actors::{Error, StreamCall};
use serde::de::DeserializeOwned;

/// Options of one streaming call.
///
/// | option | meaning | default |
/// |---|---|---|
/// | `timeout` | total budget of the whole stream: checkout plus every item plus the end | none: the pool's `boot_timeout` for checkout, then its `timeout` for the stream |
/// | `window` | items the runner may send ahead of the consumer | 32 |
/// | `item_timeout` | the longest wait for the next item | none |
/// | `key` | route by key, as [`CallOptions::key`](crate::CallOptions::key) | none |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ractor_flame::StreamOptions;
///
/// let opts = StreamOptions::new()
///     .timeout(Duration::from_secs(600))
///     .window(8)
///     .item_timeout(Duration::from_secs(30));
/// assert_eq!(opts.get_window(), 8);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) window: u32,
    pub(crate) item_timeout: Option<Duration>,
    pub(crate) key: Option<NonZeroU64>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            timeout: None,
            window: StreamOptions::DEFAULT_WINDOW,
            item_timeout: None,
            key: None,
        }
    }
}

impl StreamOptions {
    /// Items a runner may send ahead of the consumer unless told otherwise.
    pub const DEFAULT_WINDOW: u32 = 32;

    /// Default options: pool budgets, a window of
    /// [`DEFAULT_WINDOW`](StreamOptions::DEFAULT_WINDOW) items.
    pub fn new() -> Self {
        Self::default()
    }

    /// A total budget for the whole stream, its checkout included: what the
    /// wait for a slot leaves is the deadline the runner enforces on the
    /// body. A stream still running then ends with
    /// [`Error::Deadline`] after the items it sent.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How many items the runner may send ahead of the consumer (at least
    /// 1). A body that gets that far ahead waits in
    /// [`StreamSender::send`](crate::StreamSender::send) until the consumer
    /// takes more: memory on both sides stays within `window` items. Larger
    /// windows hide the round trip; smaller ones bound memory for large
    /// items.
    pub fn window(mut self, items: u32) -> Self {
        self.window = items.max(1);
        self
    }

    /// The longest wait for the next item (and for the first): past it the
    /// stream ends with [`Error::Deadline`] naming
    /// this timeout, and the work is cancelled.
    pub fn item_timeout(mut self, timeout: Duration) -> Self {
        self.item_timeout = Some(timeout);
        self
    }

    /// Routes the stream by `key`, as
    /// [`CallOptions::key`](crate::CallOptions::key) routes a call.
    pub fn key(mut self, key: impl Hash) -> Self {
        self.key = Some(crate::call::key_hash(key));
        self
    }

    /// The window, in items.
    pub fn get_window(&self) -> u32 {
        self.window
    }

    /// The total budget, if set.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The wait for each item, if bounded.
    pub fn get_item_timeout(&self) -> Option<Duration> {
        self.item_timeout
    }
}

/// What a stream waits for before its first item: its runner and its start.
pub(crate) type Starting = Pin<Box<dyn Future<Output = Result<StreamCall, Error>> + Send>>;

/// The items of a streaming call, as they come: a
/// [`Stream`] of `Result<T, Error>`.
///
/// Each item the runner's body sent comes as `Ok`, in order. A stream
/// whose body returned `Ok(())` then ends; one that failed (the body's
/// error, a panic, its deadline, a lost runner, a failed checkout) yields
/// that error last, after the items sent before it. Nothing happens until
/// it is first polled.
///
/// # Cancel safety
///
/// Dropping it cancels the work on the runner; the runner's slot returns
/// when the body has stopped.
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt as _;
/// use ractor_flame::{FnError, LocalBackend, Pool, PoolConfig, Registry, RemoteStream, StreamSender};
///
/// struct Progress;
/// impl RemoteStream for Progress {
///     const NAME: &'static str = "progress";
///     type Args = u32;
///     type Item = u32;
///     async fn run(steps: u32, items: StreamSender<u32>) -> Result<(), FnError> {
///         for done in 1..=steps {
///             items.send(done * 100 / steps).await?;
///         }
///         Ok(())
///     }
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), ractor_flame::Error> {
/// let registry = Registry::new().register_stream::<Progress>();
/// let pool = Pool::start(PoolConfig::new(1), LocalBackend::new(), &registry).await?;
/// let percents: Vec<u32> = pool.stream::<Progress>(4).map(Result::unwrap).collect().await;
/// assert_eq!(percents, [25, 50, 75, 100]);
/// # pool.stop().await;
/// # Ok(()) }
/// ```
pub struct ItemStream<T> {
    function: &'static str,
    state: State,
    /// Where the stream reports its end, when anyone looks.
    watch: Option<Box<Watch>>,
    _item: PhantomData<fn() -> T>,
}

/// A watched stream: its `flame.stream` span, and the pool's metrics when a
/// recorder is installed.
pub(crate) struct Watch {
    pub(crate) span: tracing::Span,
    pub(crate) metrics: Option<Arc<crate::observe::CallMetrics>>,
    pub(crate) started: Instant,
    pub(crate) items: u64,
}

enum State {
    Starting(Starting),
    Streaming(StreamCall),
    Done,
}

impl<T> fmt::Debug for ItemStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Starting(_) => "starting",
            State::Streaming(_) => "streaming",
            State::Done => "done",
        };
        f.debug_struct("ItemStream")
            .field("function", &self.function)
            .field("state", &state)
            .finish()
    }
}

impl<T> ItemStream<T> {
    pub(crate) fn new(function: &'static str, starting: Starting, watch: Option<Box<Watch>>) -> Self {
        ItemStream {
            function,
            state: State::Starting(starting),
            watch,
            _item: PhantomData,
        }
    }

    /// A stream that yields `error` and ends.
    pub(crate) fn failed(function: &'static str, error: Error) -> Self {
        Self::new(function, Box::pin(std::future::ready(Err(error))), None)
    }

    /// The stream has ended with `outcome` (a label of
    /// `flame_calls_total`): its span and metrics say so, once.
    fn ended(&mut self, outcome: &'static str) {
        self.state = State::Done;
        if let Some(watch) = self.watch.take() {
            watch.span.record("outcome", outcome);
            watch.span.record("items", watch.items);
            if let Some(metrics) = &watch.metrics {
                metrics.call(self.function, outcome, watch.started.elapsed());
            }
        }
    }

    /// The next item; `None` once the stream has ended. The same as
    /// `StreamExt::next` of the futures crates, without needing one.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an item is taken only when this resolves.
    pub async fn next(&mut self) -> Option<Result<T, Error>>
    where
        T: DeserializeOwned,
    {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// The runner serving the stream, once it has one.
    pub fn runner(&self) -> Option<ractor_flame_actors::RunnerId> {
        match &self.state {
            State::Streaming(call) => Some(call.runner()),
            _ => None,
        }
    }
}

impl<T: DeserializeOwned> Stream for ItemStream<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        // The call is made, and its trace context taken, in the stream's
        // span.
        let span = this.watch.as_ref().map(|watch| watch.span.clone());
        let _entered = span.as_ref().map(tracing::Span::enter);
        loop {
            match &mut this.state {
                State::Starting(starting) => match starting.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(call)) => {
                        if let Some(watch) = &this.watch {
                            watch.span.record("runner", tracing::field::display(call.runner()));
                            let waited = watch.started.elapsed().as_micros() as u64;
                            watch.span.record("queue_wait_us", waited);
                        }
                        this.state = State::Streaming(call);
                    }
                    Poll::Ready(Err(error)) => {
                        this.ended(ractor_flame_actors::observe::outcome_label::<()>(Err(&error)));
                        return Poll::Ready(Some(Err(error)));
                    }
                },
                State::Streaming(call) => {
                    return match Pin::new(call).poll_next(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(None) => {
                            this.ended("ok");
                            Poll::Ready(None)
                        }
                        Poll::Ready(Some(Ok(bytes))) => {
                            if let Some(watch) = &mut this.watch {
                                watch.items += 1;
                            }
                            Poll::Ready(Some(
                                bytes
                                    .decode()
                                    .map_err(|e| Error::Codec(format!("item of `{}`: {e}", this.function))),
                            ))
                        }
                        Poll::Ready(Some(Err(error))) => {
                            this.ended(ractor_flame_actors::observe::outcome_label::<()>(Err(&error)));
                            Poll::Ready(Some(Err(error)))
                        }
                    };
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

impl<T> Drop for ItemStream<T> {
    fn drop(&mut self) {
        // Dropped before its end: the work is cancelled.
        if self.watch.is_some() {
            self.ended("cancelled");
        }
    }
}
