//! Observability: the trace context a call carries, the runner's logs on
//! their way home, and the pool's metrics.
//!
//! Everything here costs next to nothing when nobody looks: no trace context
//! is built while no `tracing` subscriber exists, and metrics handles made
//! while no `metrics` recorder is installed are no-ops.
//!
//! # Metrics
//!
//! Recorded through the [`metrics`](https://docs.rs/metrics) facade (install a recorder, such as
//! `metrics-exporter-prometheus`, to collect them). Every series carries the
//! label `pool`.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `flame_runners` | gauge | `pool` | runners booted and serving |
//! | `flame_runners_booting` | gauge | `pool` | runners booting |
//! | `flame_busy_slots` | gauge | `pool` | slots in use |
//! | `flame_waiting_callers` | gauge | `pool` | callers waiting for a slot |
//! | `flame_boot_duration_seconds` | histogram | `pool`, `backend` | boot start to runner serving |
//! | `flame_checkout_wait_seconds` | histogram | `pool` | how long a call waited for its slot |
//! | `flame_call_duration_seconds` | histogram | `pool`, `function` | a call, checkout included |
//! | `flame_calls_total` | counter | `pool`, `function`, `outcome` | calls by outcome |
//! | `flame_boots_total` | counter | `pool`, `backend`, `outcome` (`ok`, `failed`) | boots |
//! | `flame_idle_shutdowns_total` | counter | `pool` | runners that stopped idle |
//! | `flame_runners_lost_total` | counter | `pool`, `reason` | runners gone other than idle or stopped |
//! | `flame_runner_milliseconds_total` | counter | `pool`, `backend`, `phase` (`booting`, `serving`) | what runners cost: milliseconds they existed, added every 10 s and when each phase ends |
//! | `flame_log_records_dropped_total` | counter | `pool`, `side` (`runner`, `parent`) | runner log records dropped: by the runner's rate limit or full queue, or by the parent when its log subscriber was behind |
//!
//! Call outcomes: `ok`, `remote_error`, `panic`, `deadline`, `runner_down`,
//! `checkout_timeout`, `boot_failed`, `pool_not_running`, `queue_full`,
//! `unknown_function`, `codec`, `cancelled`, `child_stopped`, `config`.
//! Loss reasons: `connection_lost`, `heartbeat_lost`, `exited`, `killed`,
//! `out_of_memory`, `shutting_down`, `backend`.

pub(crate) mod logs;
pub(crate) mod metrics;

use tracing::Span;

use crate::error::{DownReason, Error};
use crate::wire::frame::TraceContext;

pub use logs::{dropped_log_records, forward_event};
pub use metrics::{
    BOOT_DURATION_SECONDS, BOOTS_TOTAL, BUSY_SLOTS, CALL_DURATION_SECONDS, CALL_RETRIES_TOTAL, CALLS_TOTAL,
    CHECKOUT_WAIT_SECONDS, IDLE_SHUTDOWNS_TOTAL, LOG_RECORDS_DROPPED_TOTAL, RUNNER_MILLISECONDS_TOTAL, RUNNERS,
    RUNNERS_BOOTING, RUNNERS_LOST_TOTAL, WAITING_CALLERS, recorder_installed,
};

/// The trace context of the current span, and the span; `None` (at the cost
/// of one atomic load) while no subscriber was ever set, or when the current
/// span is disabled.
pub(crate) fn current_trace() -> Option<(TraceContext, Span)> {
    if !tracing::dispatcher::has_been_set() {
        return None;
    }
    let span = Span::current();
    let id = span.id()?;
    let traceparent = otel::traceparent(&span);
    Some((
        TraceContext {
            span: id.into_u64(),
            traceparent,
        },
        span,
    ))
}

/// The runner-side span of a call whose caller sent a trace context: a
/// child of the caller's span in the caller's trace (with the
/// `opentelemetry` feature), and the scope the runner's forwarded events
/// are tagged from.
pub(crate) fn runner_call_span(function: &str, call: u64, runner: &str, pool: &str, traceparent: Option<&str>) -> Span {
    let span = tracing::debug_span!(target: "ractor_flame::terminator", "flame.call", function, call, runner, pool);
    if let Some(traceparent) = traceparent {
        otel::set_parent(&span, traceparent);
    }
    span
}

/// The `outcome` label of a call's result.
///
/// # Examples
///
/// ```
/// use ractor_flame_actors::{Error, observe::outcome_label};
///
/// assert_eq!(outcome_label(Ok(&())), "ok");
/// assert_eq!(outcome_label::<()>(Err(&Error::PoolNotRunning)), "pool_not_running");
/// ```
pub fn outcome_label<T>(result: Result<&T, &Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(Error::Remote { .. }) => "remote_error",
        Err(Error::Panic { .. }) => "panic",
        Err(Error::Deadline { .. }) => "deadline",
        Err(Error::RunnerDown { .. }) => "runner_down",
        Err(Error::CheckoutTimeout { .. }) => "checkout_timeout",
        Err(Error::BootFailed { .. }) => "boot_failed",
        Err(Error::PoolNotRunning) => "pool_not_running",
        Err(Error::QueueFull { .. }) => "queue_full",
        Err(Error::UnknownFunction { .. }) => "unknown_function",
        Err(Error::Codec(_)) => "codec",
        Err(Error::Cancelled(_)) => "cancelled",
        Err(Error::ChildStopped { .. }) => "child_stopped",
        Err(Error::Config(_)) => "config",
        Err(Error::ChildBusy { .. }) => "child_busy",
    }
}

/// The `reason` label of a lost runner.
pub(crate) fn down_label(reason: &DownReason) -> &'static str {
    match reason {
        DownReason::ConnectionLost(_) => "connection_lost",
        DownReason::HeartbeatLost(_) => "heartbeat_lost",
        DownReason::Exited(_) => "exited",
        DownReason::Killed => "killed",
        DownReason::OutOfMemory => "out_of_memory",
        DownReason::ShuttingDown => "shutting_down",
        DownReason::Stopped => "stopped",
        DownReason::Backend(_) => "backend",
    }
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    /// The span's W3C `traceparent`, when it belongs to a valid trace.
    pub(super) fn traceparent(span: &tracing::Span) -> Option<String> {
        let context = span.context();
        let otel_span = context.span();
        let sc = otel_span.span_context();
        sc.is_valid()
            .then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
    }

    /// Makes the caller's span (given as a `traceparent`) the parent of `span`.
    pub(super) fn set_parent(span: &tracing::Span, traceparent: &str) {
        let mut parts = traceparent.split('-');
        let (Some("00"), Some(trace), Some(parent), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let (Ok(trace), Ok(parent), Ok(flags)) = (
            TraceId::from_hex(trace),
            SpanId::from_hex(parent),
            u8::from_str_radix(flags, 16),
        ) else {
            return;
        };
        let remote = SpanContext::new(trace, parent, TraceFlags::new(flags), true, TraceState::default());
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
}

#[cfg(not(feature = "opentelemetry"))]
mod otel {
    pub(super) fn traceparent(_: &tracing::Span) -> Option<String> {
        None
    }

    pub(super) fn set_parent(_: &tracing::Span, _: &str) {}
}
