//! Metrics through the `metrics` facade: a scripted run produces exactly the
//! expected series and counts (read with metrics-util's DebuggingRecorder,
//! installed as the global recorder of this test binary).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use ractor_flame::actors::observe::{
    BOOT_DURATION_SECONDS, BOOTS_TOTAL, BUSY_SLOTS, CALL_DURATION_SECONDS, CALLS_TOTAL, CHECKOUT_WAIT_SECONDS,
    IDLE_SHUTDOWNS_TOTAL, RUNNER_MILLISECONDS_TOTAL, RUNNERS, RUNNERS_LOST_TOTAL, WAITING_CALLERS,
};
use ractor_flame::{CallOptions, Error, PoolEvent};
use support::functions::{Echo, Fail, Panic, Sleep, WhereAmI};
use support::{Kind, config, eventually, kill, pool_with};

/// Everything recorded so far, summed over snapshots (a snapshot of the
/// DebuggingRecorder resets what it reads).
struct Recorded {
    snapshotter: Snapshotter,
    counters: HashMap<String, u64>,
    samples: HashMap<String, usize>,
    gauges: HashMap<String, f64>,
}

/// `name{k=v,...}` with the labels sorted.
fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

impl Recorded {
    fn install() -> Self {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the only recorder of this binary");
        Recorded {
            snapshotter,
            counters: HashMap::new(),
            samples: HashMap::new(),
            gauges: HashMap::new(),
        }
    }

    fn take(&mut self) {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
            let name = series(key.name(), &labels);
            match value {
                DebugValue::Counter(n) => *self.counters.entry(name).or_default() += n,
                DebugValue::Histogram(values) => *self.samples.entry(name).or_default() += values.len(),
                DebugValue::Gauge(g) => {
                    self.gauges.insert(name, g.into_inner());
                }
            }
        }
    }

    fn counter(&mut self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.take();
        self.counters.get(&series(name, labels)).copied().unwrap_or(0)
    }

    fn samples(&mut self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.take();
        self.samples.get(&series(name, labels)).copied().unwrap_or(0)
    }

    /// Every counter of `name` for `pool`, as (series, count).
    fn counters_of(&mut self, name: &str, pool: &str) -> Vec<(String, u64)> {
        self.take();
        let prefix = format!("{name}{{");
        let mut found: Vec<_> = self
            .counters
            .iter()
            .filter(|(k, v)| k.starts_with(&prefix) && k.contains(&format!("pool={pool}")) && **v > 0)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        found.sort();
        found
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b64_a_scripted_run_records_the_expected_metrics_and_bills_runner_time() {
    let mut recorded = Recorded::install();

    // Local backend: a boot, six calls of four outcomes, an idle shutdown.
    let began = std::time::Instant::now();
    let cfg = config(1).idle_shutdown_after(Duration::from_secs(2));
    let pool = pool_with(Kind::Local, cfg).await;
    let name = pool.name().to_owned();
    let p = name.as_str();
    let mut events = pool.events();
    for _ in 0..3 {
        pool.call::<Echo>("hi".into()).await.unwrap();
    }
    assert!(matches!(
        pool.call::<Fail>("no".into()).await,
        Err(Error::Remote { .. })
    ));
    assert!(matches!(
        pool.call::<Panic>("boom".into()).await,
        Err(Error::Panic { .. })
    ));
    let short = CallOptions::new().timeout(Duration::from_millis(50));
    let slow = pool
        .call_with::<Sleep>(support::sleep(&support::key(), 5_000), short)
        .await;
    assert!(matches!(slow, Err(Error::Deadline { .. })), "{slow:?}");
    // Streams count as calls: one to its end, one dropped after an item.
    let ticks = |n| support::functions::TicksArgs::new(&support::key(), n);
    let mut stream = pool.stream::<support::functions::Ticks>(ticks(3));
    while stream.next().await.transpose().unwrap().is_some() {}
    let mut stream = pool.stream::<support::functions::Ticks>(ticks(1_000));
    stream.next().await.unwrap().unwrap();
    drop(stream);

    // The gauges follow the pool (refreshed as it changes, and each second;
    // the runner stays up for its idle time of 2 s).
    eventually("the runner gauge shows one runner", Duration::from_secs(5), || {
        recorded.take();
        let up = recorded.gauges.get(&series(RUNNERS, &[("pool", p)])) == Some(&1.0)
            && recorded.gauges.get(&series(BUSY_SLOTS, &[("pool", p)])) == Some(&0.0)
            && recorded.gauges.get(&series(WAITING_CALLERS, &[("pool", p)])) == Some(&0.0);
        std::future::ready(up)
    })
    .await;

    assert_eq!(
        recorded.counters_of(CALLS_TOTAL, p),
        vec![
            (
                series(
                    CALLS_TOTAL,
                    &[("pool", p), ("function", "test.echo"), ("outcome", "ok")]
                ),
                3
            ),
            (
                series(
                    CALLS_TOTAL,
                    &[("pool", p), ("function", "test.fail"), ("outcome", "remote_error")]
                ),
                1
            ),
            (
                series(
                    CALLS_TOTAL,
                    &[("pool", p), ("function", "test.panic"), ("outcome", "panic")]
                ),
                1
            ),
            (
                series(
                    CALLS_TOTAL,
                    &[("pool", p), ("function", "test.sleep"), ("outcome", "deadline")]
                ),
                1
            ),
            (
                series(
                    CALLS_TOTAL,
                    &[("pool", p), ("function", "test.ticks"), ("outcome", "cancelled")]
                ),
                1
            ),
            (
                series(
                    CALLS_TOTAL,
                    &[("pool", p), ("function", "test.ticks"), ("outcome", "ok")]
                ),
                1
            ),
        ]
    );
    assert_eq!(
        recorded.samples(CALL_DURATION_SECONDS, &[("pool", p), ("function", "test.echo")]),
        3
    );
    assert_eq!(
        recorded.samples(CALL_DURATION_SECONDS, &[("pool", p), ("function", "test.sleep")]),
        1
    );
    assert_eq!(recorded.samples(CHECKOUT_WAIT_SECONDS, &[("pool", p)]), 6);
    let local = [("pool", p), ("backend", "local"), ("outcome", "ok")];
    assert_eq!(recorded.counter(BOOTS_TOTAL, &local), 1);
    assert_eq!(
        recorded.samples(BOOT_DURATION_SECONDS, &[("pool", p), ("backend", "local")]),
        1
    );

    // Idle: the runner leaves, counted as an idle shutdown, not a loss.
    loop {
        if let PoolEvent::Shrink { count: 0, .. } = events.recv().await.unwrap() {
            break;
        }
    }
    assert_eq!(recorded.counter(IDLE_SHUTDOWNS_TOTAL, &[("pool", p)]), 1);
    assert_eq!(recorded.counters_of(RUNNERS_LOST_TOTAL, p), vec![]);
    // What the runner cost: it served for at least its idle time of 2 s,
    // and no longer than the pool has existed.
    let serving = [("pool", p), ("backend", "local"), ("phase", "serving")];
    eventually("the runner's time is counted", Duration::from_secs(5), || {
        std::future::ready(recorded.counter(RUNNER_MILLISECONDS_TOTAL, &serving) >= 2_000)
    })
    .await;
    let lived = began.elapsed().as_millis() as u64;
    let billed: u64 = recorded
        .counters_of(RUNNER_MILLISECONDS_TOTAL, p)
        .iter()
        .map(|(_, ms)| ms)
        .sum();
    assert!(billed <= lived, "billed {billed} ms of a pool {lived} ms old");
    pool.stop().await;
    assert_eq!(recorded.counter(BOOTS_TOTAL, &local), 1, "no boot more");

    // Process backend: a killed runner is one loss, with its reason.
    let pool = pool_with(Kind::Process, config(1)).await;
    let q = pool.name().to_owned();
    let mut events = pool.events();
    let victim = pool.call::<WhereAmI>(()).await.unwrap();
    kill(victim.pid, "KILL");
    loop {
        if let PoolEvent::RunnerLost { .. } = events.recv().await.unwrap() {
            break;
        }
    }
    let lost = recorded.counters_of(RUNNERS_LOST_TOTAL, &q);
    // A process runner's boot takes milliseconds, and they are counted.
    let booting = [("pool", q.as_str()), ("backend", "process"), ("phase", "booting")];
    eventually("the boot's time is counted", Duration::from_secs(5), || {
        std::future::ready(recorded.counter(RUNNER_MILLISECONDS_TOTAL, &booting) >= 1)
    })
    .await;
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].1, 1);
    assert!(
        lost[0].0.contains("reason=connection_lost") || lost[0].0.contains("reason=killed"),
        "{lost:?}"
    );
    let process = [("pool", q.as_str()), ("backend", "process"), ("outcome", "ok")];
    assert_eq!(recorded.counter(BOOTS_TOTAL, &process), 1);
    assert_eq!(recorded.counter(IDLE_SHUTDOWNS_TOTAL, &[("pool", q.as_str())]), 0);
    pool.stop().await;
}
