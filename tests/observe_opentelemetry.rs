//! With the `opentelemetry` feature, a call carries a W3C `traceparent`:
//! the runner's own `flame.call` span is in the caller's trace.

#![cfg(feature = "opentelemetry")]

mod support;

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use ractor_flame::{Pool, ProcessBackend};
use support::functions::TraceId;
use support::{config, runner_exe};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;

// Current-thread runtime: the thread-local subscriber sees every task.
#[tokio::test]
async fn the_runners_call_span_has_the_callers_trace_id() {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("parent"));
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let backend = ProcessBackend::new(runner_exe()).env("FLAME_TEST_OTEL", "1");
    let pool = Pool::start(config(1), backend, &support::functions::registry())
        .await
        .unwrap();
    let request = tracing::info_span!("request");
    let caller = request.context().span().span_context().trace_id();
    assert_ne!(caller, opentelemetry::trace::TraceId::INVALID);
    let on_runner = pool.call::<TraceId>(()).instrument(request).await.unwrap();
    assert_eq!(
        on_runner,
        caller.to_string(),
        "the runner's span is in the caller's trace"
    );
    // A call outside any trace starts none on the runner's side of it.
    let untraced = pool.call::<TraceId>(()).await.unwrap();
    assert_ne!(untraced, caller.to_string());
    pool.stop().await;
}
