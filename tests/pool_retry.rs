//! Retries of calls whose boots fail (B60): a call opted into retries tries
//! again within its policy's attempts and time, each retry counted in
//! `flame_call_retries_total`; without a policy it fails at the first
//! failed boot. (The behaviour suite covers runner deaths; a backend whose
//! boots fail is not one of its backends.)

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use ractor_flame::{BootRetry, CallOptions, Error, Pool, PoolEvent, ProcessBackend, RetryPolicy};

use support::functions::Echo;
use support::{Events, config};

/// Counters of `flame_call_retries_total` by (pool, cause), summed over
/// the snapshots read so far (a snapshot resets what it reads).
struct Retries {
    snapshotter: Snapshotter,
    seen: HashMap<(String, String), u64>,
}

impl Retries {
    fn install() -> Self {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the only recorder of this binary");
        Retries {
            snapshotter,
            seen: HashMap::new(),
        }
    }

    fn of(&mut self, pool: &str, cause: &str) -> u64 {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            if key.name() != ractor_flame::actors::observe::CALL_RETRIES_TOTAL {
                continue;
            }
            let label = |name: &str| {
                key.labels()
                    .find(|l| l.key() == name)
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default()
            };
            if let DebugValue::Counter(n) = value {
                *self.seen.entry((label("pool"), label("cause"))).or_default() += n;
            }
        }
        self.seen
            .get(&(pool.to_owned(), cause.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

/// A pool whose every boot fails at once, and which fails its waiters at
/// the first failed boot.
async fn failing_pool(events: &Events) -> Pool {
    let once = BootRetry {
        max_attempts: 1,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
    };
    let backend = ProcessBackend::new("/nonexistent/flame-b60-runner");
    Pool::start(
        events.hooks(config(1).boot_retry(once)),
        backend,
        &support::functions::registry(),
    )
    .await
    .unwrap()
}

fn failed_boots(events: &Events) -> usize {
    events
        .all()
        .iter()
        .filter(|e| matches!(e, PoolEvent::GrowEnd { result: Err(_), .. }))
        .count()
}

// One test: the span check needs a subscriber of its own for the whole
// run (callsite interest is shared by every thread of the binary).
#[tokio::test(flavor = "current_thread")]
async fn b60_failed_boots_are_retried_within_the_policy_counted_and_traced() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let mut retries = Retries::install();
    let spans = Attempts::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));

    // Three attempts: three boots, two retries counted, then the boot error.
    let events = Events::default();
    let pool = failing_pool(&events).await;
    let policy = RetryPolicy::new(3).backoff(Duration::from_millis(5), Duration::from_millis(10));
    let err = pool
        .call_with::<Echo>("x".into(), CallOptions::new().retry(policy))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BootFailed { .. }), "{err:?}");
    assert_eq!(failed_boots(&events), 3, "{:?}", events.all());
    assert_eq!(retries.of(pool.name(), "boot_failed"), 2);
    // The call's span saw each attempt.
    assert_eq!(*spans.0.lock().unwrap(), vec![1, 2, 3]);
    pool.stop().await;

    // No policy: one boot, no retry.
    let events = Events::default();
    let pool = failing_pool(&events).await;
    let err = pool.call::<Echo>("x".into()).await.unwrap_err();
    assert!(matches!(err, Error::BootFailed { .. }), "{err:?}");
    assert_eq!(failed_boots(&events), 1);
    assert_eq!(retries.of(pool.name(), "boot_failed"), 0);
    pool.stop().await;

    // Many attempts allowed, little time: the time budget ends them.
    let events = Events::default();
    let pool = failing_pool(&events).await;
    let policy = RetryPolicy::new(1_000)
        .budget(Duration::from_millis(300))
        .backoff(Duration::from_millis(40), Duration::from_millis(40));
    let started = Instant::now();
    let err = pool
        .call_with::<Echo>("x".into(), CallOptions::new().retry(policy))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BootFailed { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let boots = failed_boots(&events);
    // Waits of 20 to 40 ms within 300 ms: at most 16 attempts, and more than one.
    assert!((2..=16).contains(&boots), "{boots} attempts");
    pool.stop().await;
}

/// Records the `attempts` field of `flame.call` spans.
#[derive(Clone, Default)]
struct Attempts(std::sync::Arc<std::sync::Mutex<Vec<u64>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Attempts {
    fn on_record(
        &self,
        _: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Visit<'a>(&'a Attempts);
        impl tracing::field::Visit for Visit<'_> {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "attempts" {
                    self.0.0.lock().unwrap().push(value);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        values.record(&mut Visit(self));
    }
}
