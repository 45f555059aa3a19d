//! A runner's `tracing` events on their way to the parent, and their
//! re-emission there.
//!
//! Runner side: [`forward_event`] (called by the facade's tracing layer)
//! turns an event into a [`LogRecord`] and queues it on the parent
//! connection, behind the same queue as the call replies, so a call's events
//! reach the parent before its reply. It is bounded twice: a token bucket
//! (a burst of [`BURST`], then [`PER_SECOND`]) and the connection's queue
//! ([`MAX_QUEUED`] frames not yet written); what either drops is counted and
//! reported in the next record sent. It never waits: an event of the link
//! thread itself (the Terminator's, the connection's) only takes a token and
//! queues a frame there.
//!
//! Parent side: the link thread only queues a record ([`LogQueue`], one per
//! runner connection, [`PARENT_QUEUE`] records at most); no subscriber, log
//! sink or stderr write runs there (B48). A task on the application's
//! runtime (started with the connection's Runner actor) drains the queue
//! and [`reemit`]s each record, under the caller's span when it belongs to
//! a call in flight (else under no span), tagged with the runner id and the
//! pool. When a traced call's reply comes while that task is idle (the
//! subscriber keeps up), the caller emits what is queued itself before it
//! goes on, so a call's events still reach the parent's subscriber before
//! its caller has the reply; when the task is behind, nobody waits for it.
//! A sink that blocks holds up only that task: records wait, and once
//! the queue is full they are dropped, counted
//! ([`dropped_log_records`], the `flame_log_records_dropped_total` metric)
//! and reported by a warning when the task gets going again. With no
//! subscriber installed on the parent, warnings and errors are written to
//! its stderr instead, prefixed with the runner id, so they are never
//! silently lost.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio::sync::Notify;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Id, Level, Span};

use crate::func::context::current_call;
use crate::ids::RunnerId;
use crate::wire::frame::{LogRecord, ToParent};
use crate::wire::outbox::WeakOutbox;

use super::metrics::LOG_RECORDS_DROPPED_TOTAL;

/// Events a runner may send at once before the rate limit applies.
pub(crate) const BURST: f64 = 512.0;
/// Events per second a runner sends at most, over time.
pub(crate) const PER_SECOND: f64 = 1_000.0;
/// Frames queued on the parent connection beyond which events are dropped.
pub(crate) const MAX_QUEUED: usize = 1_024;
/// Longest message (and longest field text) forwarded; longer ones are cut.
pub(crate) const MAX_TEXT: usize = 16 * 1024;
/// Records of one runner a parent holds at most while its subscriber is
/// behind; more are dropped (and counted).
pub(crate) const PARENT_QUEUE: usize = 1_024;
/// Records the parent's task emits in one go before it lets other tasks of
/// its worker run.
const DRAIN_BATCH: usize = 64;

/// Where this runner's events go: its parent connection, once connected
/// (a weak handle: forwarding never keeps a connection open).
static SINK: Mutex<Option<WeakOutbox<ToParent>>> = Mutex::new(None);
/// Events emitted before the runner reached its parent (while its states
/// were built, say), kept to be sent first once it does.
static EARLY: Mutex<VecDeque<LogRecord>> = Mutex::new(VecDeque::new());
/// Records kept before the runner reaches its parent at most; more are
/// dropped (and counted).
pub(crate) const EARLY_RECORDS: usize = 256;
/// Events dropped since the last record sent.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// The token bucket: tokens left and when it was last filled.
static BUCKET: Mutex<Option<(f64, Instant)>> = Mutex::new(None);

thread_local! {
    /// Set while this thread forwards an event: events emitted meanwhile
    /// (by the sending code itself) are not forwarded again.
    static FORWARDING: Cell<bool> = const { Cell::new(false) };
}

/// Sends this process's runner events to `sink` from now on, those kept
/// from before it first.
pub(crate) fn set_sink(sink: WeakOutbox<ToParent>) {
    // Under the sink's lock (taken before the early records', as by
    // `forward_event`): no event overtakes the early ones.
    let mut current = SINK.lock().expect("poisoned");
    let early = std::mem::take(&mut *EARLY.lock().expect("poisoned"));
    if let Some(outbox) = sink.upgrade() {
        FORWARDING.with(|f| f.set(true));
        for record in early {
            let _ = outbox.send(ToParent::Log(record));
        }
        FORWARDING.with(|f| f.set(false));
    }
    *current = Some(sink);
}

/// Forwards a runner's `tracing` event to its parent. Before the runner has
/// reached its parent (while its states are built), up to 256 events are
/// kept and sent first once it does. The facade's runner layer calls it for
/// every event at `info` or above; events of the wire itself
/// (`ractor_flame::wire`) are not forwarded.
///
/// # Examples
///
/// ```
/// // In a tracing layer's `on_event`; outside a runner, nothing happens.
/// # struct Layer;
/// # impl Layer {
/// fn on_event(&self, event: &tracing::Event<'_>) {
///     ractor_flame_actors::observe::forward_event(event);
/// }
/// # }
/// ```
pub fn forward_event(event: &tracing::Event<'_>) {
    let meta = event.metadata();
    if meta.target().starts_with("ractor_flame::wire") || FORWARDING.with(Cell::get) {
        return;
    }
    let sink = {
        let sink = SINK.lock().expect("poisoned");
        match &*sink {
            Some(sink) => sink.clone(),
            None => {
                // Not connected yet: kept for the parent, a few at most.
                let mut early = EARLY.lock().expect("poisoned");
                if early.len() < EARLY_RECORDS {
                    early.push_back(record(event));
                } else {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        }
    };
    let Some(outbox) = sink.upgrade() else {
        return;
    };
    if sink.queued() >= MAX_QUEUED || !take_token() {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let record = record(event);
    FORWARDING.with(|f| f.set(true));
    let _ = outbox.send(ToParent::Log(record));
    FORWARDING.with(|f| f.set(false));
}

/// The record of an event, carrying the count of those dropped before it.
fn record(event: &tracing::Event<'_>) -> LogRecord {
    let meta = event.metadata();
    let mut visitor = Fields::default();
    event.record(&mut visitor);
    LogRecord {
        level: level_number(*meta.level()),
        target: meta.target().to_owned(),
        message: cut(visitor.message),
        fields: cut(visitor.fields.trim_end().to_owned()),
        call: current_call().map(|c| c.id()),
        dropped: DROPPED.swap(0, Ordering::Relaxed),
    }
}

/// `text`, cut to at most [`MAX_TEXT`] bytes (on a character boundary).
fn cut(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Takes one token from the bucket; `false` when it is empty.
fn take_token() -> bool {
    let mut bucket = BUCKET.lock().expect("poisoned");
    let now = Instant::now();
    let (tokens, last) = bucket.get_or_insert((BURST, now));
    *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * PER_SECOND).min(BURST);
    *last = now;
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        true
    } else {
        false
    }
}

fn level_number(level: Level) -> u8 {
    match level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// An event's message and its other fields as text.
#[derive(Default)]
struct Fields {
    message: String,
    fields: String,
}

impl Visit for Fields {
    // A second `message` (an event's own field of that name beside its
    // text) stays a field: glued to the text it would read as one word.
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" && self.message.is_empty() {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, "{}={value:?} ", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && self.message.is_empty() {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, "{}={value:?} ", field.name());
        }
    }
}

/// What a runner connection's [`LogQueue`] carries, in the order it came.
#[derive(Debug)]
pub(crate) enum Held {
    /// A record, and the caller's span it goes under (the call's, while
    /// that call was in flight when the record came).
    Record(LogRecord, Option<Id>),
    /// A traced call's caller span, let go of after the records queued
    /// before it were emitted under it (so it cannot close before them).
    Release(Span),
}

/// One runner connection's records on their way from the link thread (which
/// only queues them, never waiting) to the application's subscriber: a task
/// on the application's runtime emits them, in order. Dropping it ends that
/// task once what is queued is emitted.
#[derive(Debug)]
pub(crate) struct LogQueue {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    items: Mutex<Items>,
    /// Held by whoever emits (the task, or a caller that helps it): records
    /// are emitted one at a time, in the order they came.
    emitting: Mutex<()>,
    /// The task waits for records (the subscriber keeps up).
    idle: AtomicBool,
    /// Wakes the task: something was queued, or the queue is closed.
    ready: Notify,
    /// The runner, the pool and the subscriber records go to; set when the
    /// task starts.
    observer: OnceLock<(RunnerId, String, Dispatch)>,
    /// Records dropped since the last report.
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct Items {
    queue: VecDeque<Held>,
    /// Records in `queue`.
    records: usize,
    /// Items queued and not yet emitted (or let go of).
    in_flight: usize,
    /// The connection's side is gone.
    closed: bool,
}

/// Runner log records this process dropped because its subscriber was
/// behind (a runner's queue of [`PARENT_QUEUE`] records was full, or its
/// runtime was gone), since it started.
static PARENT_DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many runner log records this parent process has dropped, since it
/// started, because its `tracing` subscriber fell behind: the link thread
/// hands each runner's records to a task of the application's runtime
/// through a bounded queue, and drops (and counts) a record when that queue
/// is full. The drops are also reported by a `warn` event (target
/// `ractor_flame::remote`) and counted in the metric
/// `flame_log_records_dropped_total` (labels `pool`, `side` = `parent`)
/// once that task gets going again.
///
/// # Examples
///
/// ```
/// assert_eq!(ractor_flame_actors::observe::dropped_log_records(), 0);
/// ```
pub fn dropped_log_records() -> u64 {
    PARENT_DROPPED.load(Ordering::Relaxed)
}

/// What an emitting turn ended with.
#[derive(Debug, PartialEq, Eq)]
enum Turn {
    /// Nothing is queued.
    Empty,
    /// More is queued.
    More,
    /// Someone else emits.
    Busy,
}

impl LogQueue {
    pub(crate) fn new() -> Self {
        LogQueue { shared: Arc::default() }
    }

    /// Queues a record (the link thread's part); drops and counts it when
    /// the queue is full. Never waits.
    pub(crate) fn push(&self, record: LogRecord, parent: Option<Id>) {
        let mut items = self.shared.items.lock().expect("poisoned");
        if items.records >= PARENT_QUEUE {
            drop(items);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            PARENT_DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        items.queue.push_back(Held::Record(record, parent));
        items.records += 1;
        items.in_flight += 1;
        drop(items);
        self.shared.ready.notify_one();
    }

    /// Lets go of a traced call's span once the records queued before it
    /// are emitted; the span back when nothing waits (drop it at once) or
    /// it cannot wait its turn (the queue is that far behind).
    pub(crate) fn release(&self, span: Span) -> Result<(), Span> {
        let mut items = self.shared.items.lock().expect("poisoned");
        if items.in_flight == 0 || items.queue.len() >= 2 * PARENT_QUEUE {
            return Err(span);
        }
        items.queue.push_back(Held::Release(span));
        items.in_flight += 1;
        drop(items);
        self.shared.ready.notify_one();
        Ok(())
    }

    /// Emits the records queued now here, in the caller's task, when the
    /// connection's task is idle (the subscriber keeps up) and nobody else
    /// emits: a call's events then reach the subscriber before its caller
    /// has its reply, as they did when the link thread emitted them. Never
    /// waits for the task, which may be stuck in a blocked sink.
    pub(crate) fn flush_if_idle(&self) {
        if !self.shared.idle.load(Ordering::Acquire) {
            return;
        }
        let queued = self.shared.items.lock().expect("poisoned").queue.len();
        if queued > 0 && self.shared.emit(queued) == Turn::More {
            self.shared.ready.notify_one();
        }
    }

    /// Starts emitting the records, on the current runtime (the
    /// application's: the connection's Runner actor calls this), through
    /// `dispatch`, tagged with `runner` and `pool`. Only the first call
    /// starts a task; outside a runtime none starts (records are dropped
    /// once the queue is full).
    pub(crate) fn start(&self, runner: RunnerId, pool: &str, dispatch: Dispatch) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.shared.observer.set((runner, pool.to_owned(), dispatch)).is_ok() {
            runtime.spawn(drain(Arc::clone(&self.shared)));
        }
    }
}

impl Drop for LogQueue {
    fn drop(&mut self) {
        self.shared.items.lock().expect("poisoned").closed = true;
        self.shared.ready.notify_one();
    }
}

impl Shared {
    /// Emits at most `most` items, in order, unless someone else emits.
    fn emit(&self, most: usize) -> Turn {
        let Some((runner, pool, dispatch)) = self.observer.get() else {
            return Turn::Busy;
        };
        let Ok(_emitting) = self.emitting.try_lock() else {
            return Turn::Busy;
        };
        tracing::dispatcher::with_default(dispatch, || {
            for _ in 0..most {
                let Some(held) = self.items.lock().expect("poisoned").queue.pop_front() else {
                    break;
                };
                let record = matches!(held, Held::Record(..));
                match held {
                    Held::Record(record, parent) => reemit(&record, *runner, pool, parent),
                    // Closed here, if this was the last handle.
                    Held::Release(span) => drop(span),
                }
                let mut items = self.items.lock().expect("poisoned");
                items.in_flight -= 1;
                if record {
                    items.records -= 1;
                }
            }
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                report_dropped(dropped, "parent", *runner, pool);
            }
        });
        let items = self.items.lock().expect("poisoned");
        if items.queue.is_empty() {
            Turn::Empty
        } else {
            Turn::More
        }
    }
}

/// Emits a connection's records as they come, until the connection's side
/// is gone and nothing is left.
async fn drain(shared: Arc<Shared>) {
    loop {
        let ready = shared.ready.notified();
        let mut ready = std::pin::pin!(ready);
        ready.as_mut().enable();
        match shared.emit(DRAIN_BATCH) {
            Turn::More => {
                tokio::task::coop::consume_budget().await;
                continue;
            }
            // Whoever emits tells the task when it is done.
            Turn::Busy => {}
            Turn::Empty if shared.items.lock().expect("poisoned").closed => return,
            Turn::Empty => {}
        }
        shared.idle.store(true, Ordering::Release);
        ready.await;
        shared.idle.store(false, Ordering::Release);
    }
}

/// Emits a runner's event on the parent, under `parent` (the call's span)
/// if given. Runs where the connection's records are drained, never on the
/// link thread.
pub(crate) fn reemit(record: &LogRecord, runner: RunnerId, pool: &str, parent: Option<Id>) {
    if record.dropped > 0 {
        report_dropped(record.dropped, "runner", runner, pool);
    }
    let no_subscriber = tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>());
    if no_subscriber {
        // Nobody would see it: warnings and errors go to stderr.
        if record.level <= 2 {
            let level = if record.level == 1 { "ERROR" } else { "WARN" };
            eprintln!(
                "flame runner {runner} (pool {pool}): {level} {}: {} {}",
                record.target, record.message, record.fields
            );
        }
        return;
    }
    let (target, message, fields, call) = (&record.target, &record.message, &record.fields, record.call);
    macro_rules! emit {
        ($level:expr) => {
            tracing::event!(target: "ractor_flame::remote", parent: parent.clone(), $level,
                runner = %runner, pool, remote_target = %target, fields = %fields, call, "{message}")
        };
    }
    match record.level {
        1 => emit!(Level::ERROR),
        2 => emit!(Level::WARN),
        3 => emit!(Level::INFO),
        4 => emit!(Level::DEBUG),
        _ => emit!(Level::TRACE),
    }
}

/// Reports records dropped on the `side` where it happened: on the runner
/// (rate limit, full connection queue) or on the parent (its subscriber was
/// behind).
fn report_dropped(dropped: u64, side: &'static str, runner: RunnerId, pool: &str) {
    metrics::counter!(LOG_RECORDS_DROPPED_TOTAL, "pool" => pool.to_owned(), "side" => side).increment(dropped);
    let stderr = tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>());
    match (side, stderr) {
        ("runner", true) => {
            eprintln!(
                "flame runner {runner} (pool {pool}): WARN dropped {dropped} log events (rate limit or full queue)"
            );
        }
        ("runner", false) => {
            tracing::warn!(target: "ractor_flame::remote", runner = %runner, pool, dropped, "runner dropped log events");
        }
        (_, true) => eprintln!(
            "flame runner {runner} (pool {pool}): WARN the parent dropped {dropped} of its log events (its log sink was behind)"
        ),
        (_, false) => {
            tracing::warn!(target: "ractor_flame::remote", runner = %runner, pool, dropped, "parent dropped runner log events: its log sink is behind");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> LogRecord {
        LogRecord {
            level: 3,
            target: "t".into(),
            message: n.to_string(),
            fields: String::new(),
            call: None,
            dropped: 0,
        }
    }

    /// B48: the link thread's part never waits; past the bound, records
    /// are dropped and counted.
    #[test]
    fn b48_a_full_queue_drops_records_and_counts_them() {
        let queue = LogQueue::new();
        let before = dropped_log_records();
        for n in 0..PARENT_QUEUE as u64 + 5 {
            queue.push(record(n), None);
        }
        assert_eq!(queue.shared.dropped.load(Ordering::Relaxed), 5);
        assert!(dropped_log_records() >= before + 5);
        assert_eq!(queue.shared.items.lock().unwrap().records, PARENT_QUEUE);
    }

    /// A span is let go of at once when no record waits, else behind them.
    #[test]
    fn a_span_waits_only_behind_records() {
        let queue = LogQueue::new();
        assert!(queue.release(Span::none()).is_err(), "nothing queued: dropped at once");
        queue.push(record(1), None);
        assert!(queue.release(Span::none()).is_ok(), "queued behind the record");
        let items = queue.shared.items.lock().unwrap();
        assert!(matches!(items.queue.front(), Some(Held::Record(..))));
        assert!(matches!(items.queue.back(), Some(Held::Release(_))));
    }

    /// The task emits what comes, in order, and ends with its queue; a
    /// caller helps while the task is idle.
    #[tokio::test]
    async fn the_task_emits_in_order_and_a_caller_helps_while_it_is_idle() {
        let queue = LogQueue::new();
        let shared = Arc::clone(&queue.shared);
        queue.start(RunnerId::new(), "pool", Dispatch::none());
        queue.push(record(1), None);
        while shared.items.lock().unwrap().in_flight > 0 {
            tokio::task::yield_now().await;
        }
        // The task waits now (this runtime's only thread is here): the
        // caller emits what is queued itself.
        assert!(shared.idle.load(Ordering::Acquire));
        queue.push(record(2), None);
        queue.push(record(3), None);
        queue.flush_if_idle();
        assert_eq!(shared.items.lock().unwrap().in_flight, 0);
        drop(queue);
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(Arc::strong_count(&shared), 1, "the task ended with its queue");
    }

    /// Runs `visit` on the fields of the one event `emit` makes.
    fn fields_of(emit: impl FnOnce()) -> Fields {
        use std::sync::Mutex;
        struct One(Mutex<Option<Fields>>);
        impl tracing::Subscriber for One {
            fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &tracing::span::Attributes<'_>) -> Id {
                Id::from_u64(1)
            }
            fn record(&self, _: &Id, _: &tracing::span::Record<'_>) {}
            fn record_follows_from(&self, _: &Id, _: &Id) {}
            fn event(&self, event: &tracing::Event<'_>) {
                let mut fields = Fields::default();
                event.record(&mut fields);
                *self.0.lock().unwrap() = Some(fields);
            }
            fn enter(&self, _: &Id) {}
            fn exit(&self, _: &Id) {}
        }
        let one = Arc::new(One(Mutex::new(None)));
        tracing::dispatcher::with_default(&Dispatch::new(Arc::clone(&one)), emit);
        one.0.lock().unwrap().take().expect("one event")
    }

    #[test]
    fn a_field_named_message_stays_a_field() {
        let fields = fields_of(|| {
            let message = "panic-30005";
            tracing::warn!(call = 91, %message, "function panicked");
        });
        assert_eq!(fields.message, "function panicked");
        assert_eq!(fields.fields, "call=91 message=panic-30005 ");
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_TEXT);
        let cut = cut(long);
        assert!(cut.len() <= MAX_TEXT + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(super::cut("short".into()), "short");
    }
}
