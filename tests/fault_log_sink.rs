//! B48: a parent whose log sink blocks. The parent's `tracing` subscriber
//! (the global one of this test binary) writes through a sink that, while
//! told to, sleeps 3 s in every write: three times the heartbeat timeout.
//! A process runner logs while it serves calls. The link thread only queues
//! the runner's records, so heartbeats and calls go on: the runner is not
//! lost, calls succeed while the sink is stuck, and records beyond the
//! queue's bound are dropped and counted.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use ractor_flame::actors::observe::{LOG_RECORDS_DROPPED_TOTAL, dropped_log_records};
use ractor_flame::{Pool, PoolEvent, ProcessBackend};
use support::functions::{Chatty, WhereAmI};
use support::{config, eventually};

/// How long a write of the sink takes while it is blocked.
const STUCK: Duration = Duration::from_secs(3);

/// The sink blocks its writes while set.
static BLOCK: AtomicBool = AtomicBool::new(false);
/// Blocked writes under way.
static STUCK_NOW: AtomicU64 = AtomicU64::new(0);
/// Blocked writes that are over.
static STUCK_DONE: AtomicU64 = AtomicU64::new(0);

/// A log sink (a slow pipe): while [`BLOCK`] is set, each write takes
/// [`STUCK`]. What it is given is thrown away.
struct SlowSink;

impl std::io::Write for SlowSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if BLOCK.load(Ordering::SeqCst) {
            STUCK_NOW.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(STUCK);
            STUCK_NOW.fetch_sub(1, Ordering::SeqCst);
            STUCK_DONE.fetch_add(1, Ordering::SeqCst);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The count of `name` with `labels` among its series, summed over the
/// snapshots so far (a snapshot resets what it reads).
fn counter(snapshotter: &Snapshotter, sum: &mut u64, name: &str, labels: &[(&str, &str)]) -> u64 {
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let matches = key.name() == name
            && labels
                .iter()
                .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v));
        if let (true, DebugValue::Counter(n)) = (matches, value) {
            *sum += n;
        }
    }
    *sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b48_a_blocked_log_sink_never_stops_heartbeats_or_calls() {
    // The only test of this binary: its subscriber and recorder are global.
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(|| SlowSink)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this binary");
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder of this binary");

    let name = format!("log-sink-{}", support::key());
    let cfg = config(1).name(name.clone());
    let pool = Pool::start(
        cfg,
        ProcessBackend::new(support::runner_exe()),
        &support::functions::registry(),
    )
    .await
    .expect("pool");
    let mut events = pool.events();
    let runner = pool.call::<WhereAmI>(()).await.expect("warm-up call");

    // The sink sticks; a call whose body logs comes back all the same.
    BLOCK.store(true, Ordering::SeqCst);
    assert_eq!(pool.call::<Chatty>(7).await.expect("a call that logs"), 7);
    eventually(
        "the sink is stuck in a runner's record",
        Duration::from_secs(10),
        || async { STUCK_NOW.load(Ordering::SeqCst) > 0 },
    )
    .await;

    // While it is stuck, calls go on: this one is over before the write.
    let done = STUCK_DONE.load(Ordering::SeqCst);
    let during = pool.call::<WhereAmI>(()).await.expect("a call while the sink is stuck");
    assert_eq!(during.pid, runner.pid, "the same runner serves");
    assert_eq!(
        STUCK_DONE.load(Ordering::SeqCst),
        done,
        "the call waited for the stuck log sink"
    );

    // The stuck write outlasts the heartbeat timeout (1 s) three times;
    // neither end took the other for lost.
    eventually("the stuck write ends", Duration::from_secs(10), || async {
        STUCK_DONE.load(Ordering::SeqCst) > done
    })
    .await;
    let after = pool.call::<WhereAmI>(()).await.expect("a call after the stuck write");
    assert_eq!(after.pid, runner.pid, "the runner was replaced");
    assert!(support::alive(runner.pid), "the runner process is gone");
    assert_eq!(pool.stats().await.expect("stats").runners, 1);

    // Records beyond the queue's bound are dropped, and counted, while
    // calls go on (the runner's rate limit passes 512 at once, then 1000
    // a second).
    let mut sent = 0;
    while dropped_log_records() == 0 {
        assert!(sent < 20_000, "no record was dropped after {sent} calls that log");
        assert_eq!(pool.call::<Chatty>(sent).await.expect("a call that logs"), sent);
        sent += 1;
    }
    BLOCK.store(false, Ordering::SeqCst);
    let mut dropped = 0;
    let labels = [("pool", name.as_str()), ("side", "parent")];
    eventually("the drops are counted in the metric", Duration::from_secs(30), || {
        let count = counter(&snapshotter, &mut dropped, LOG_RECORDS_DROPPED_TOTAL, &labels);
        async move { count > 0 }
    })
    .await;

    while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(10), events.recv()).await {
        assert!(
            !matches!(event, PoolEvent::RunnerLost { .. }),
            "the runner was lost: {event:?}"
        );
    }
    pool.stop().await;
}
