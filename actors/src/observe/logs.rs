//! A runner's `tracing` events on their way to the parent, and their
//! re-emission there.
//!
//! Runner side: [`forward_event`] (called by the facade's tracing layer)
//! turns an event into a [`LogRecord`] and queues it on the parent
//! connection, behind the same queue as the call replies, so a call's events
//! reach the parent before its reply. It is bounded twice: a token bucket
//! (a burst of [`BURST`], then [`PER_SECOND`]) and the connection's queue
//! ([`MAX_QUEUED`] frames not yet written); what either drops is counted and
//! reported in the next record sent.
//!
//! Parent side: [`reemit`] emits the record again, under the caller's span
//! when it belongs to a call in flight (else under no span), tagged with
//! the runner id and the pool. With no subscriber installed on the parent,
//! warnings and errors are written to its stderr instead, prefixed with the
//! runner id, so they are never silently lost.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tracing::field::{Field, Visit};
use tracing::{Level, Span};

use crate::func::context::current_call;
use crate::ids::RunnerId;
use crate::wire::frame::{LogRecord, ToParent};
use crate::wire::outbox::WeakOutbox;

/// Events a runner may send at once before the rate limit applies.
pub(crate) const BURST: f64 = 512.0;
/// Events per second a runner sends at most, over time.
pub(crate) const PER_SECOND: f64 = 1_000.0;
/// Frames queued on the parent connection beyond which events are dropped.
pub(crate) const MAX_QUEUED: usize = 1_024;
/// Longest message (and longest field text) forwarded; longer ones are cut.
pub(crate) const MAX_TEXT: usize = 16 * 1024;

/// Where this runner's events go: its parent connection, once connected
/// (a weak handle: forwarding never keeps a connection open).
static SINK: Mutex<Option<WeakOutbox<ToParent>>> = Mutex::new(None);
/// Events dropped since the last record sent.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// The token bucket: tokens left and when it was last filled.
static BUCKET: Mutex<Option<(f64, Instant)>> = Mutex::new(None);

thread_local! {
    /// Set while this thread forwards an event: events emitted meanwhile
    /// (by the sending code itself) are not forwarded again.
    static FORWARDING: Cell<bool> = const { Cell::new(false) };
}

/// Sends this process's runner events to `sink` from now on.
pub(crate) fn set_sink(sink: WeakOutbox<ToParent>) {
    *SINK.lock().expect("poisoned") = Some(sink);
}

/// Forwards a runner's `tracing` event to its parent (a no-op in a process
/// that is not a connected runner). The facade's runner layer calls it for
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
    let Some(sink) = SINK.lock().expect("poisoned").clone() else {
        return;
    };
    let Some(outbox) = sink.upgrade() else {
        return;
    };
    if sink.queued() >= MAX_QUEUED || !take_token() {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut visitor = Fields::default();
    event.record(&mut visitor);
    let record = LogRecord {
        level: level_number(*meta.level()),
        target: meta.target().to_owned(),
        message: cut(visitor.message),
        fields: cut(visitor.fields.trim_end().to_owned()),
        call: current_call().map(|c| c.id()),
        dropped: DROPPED.swap(0, Ordering::Relaxed),
    };
    FORWARDING.with(|f| f.set(true));
    let _ = outbox.send(ToParent::Log(record));
    FORWARDING.with(|f| f.set(false));
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
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, "{}={value:?} ", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, "{}={value:?} ", field.name());
        }
    }
}

/// Emits a runner's event on the parent, under `parent` (the call's span)
/// if given.
pub(crate) fn reemit(record: &LogRecord, runner: RunnerId, pool: &str, parent: Option<&Span>) {
    if record.dropped > 0 {
        report_dropped(record.dropped, runner, pool);
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
    let parent = parent.and_then(Span::id);
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

fn report_dropped(dropped: u64, runner: RunnerId, pool: &str) {
    if tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>()) {
        eprintln!("flame runner {runner} (pool {pool}): WARN dropped {dropped} log events (rate limit or full queue)");
    } else {
        tracing::warn!(target: "ractor_flame::remote", runner = %runner, pool, dropped, "runner dropped log events");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_TEXT);
        let cut = cut(long);
        assert!(cut.len() <= MAX_TEXT + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(super::cut("short".into()), "short");
    }
}
