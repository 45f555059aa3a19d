//! Observability: one trace from the caller's span to the runner's events,
//! runner logs and panics at home (with or without a subscriber), pool
//! events, and stats that are current when an event arrives.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor_flame::observe::EventsError;
use ractor_flame::{Pool, PoolEvent};
use support::functions::{Chatty, Echo, WhereAmI};
use support::{Kind, config, kill, pool_with};
use tracing::Instrument as _;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

const WAIT: Duration = Duration::from_secs(10);

/// One captured event: its target, message, fields, and the names of the
/// spans it sits in, root first.
#[derive(Debug, Clone, Default)]
struct Captured {
    target: String,
    message: String,
    fields: String,
    scope: Vec<String>,
}

impl Visit for Captured {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields.push_str(&format!("{}={value:?} ", field.name()));
        }
    }
}

/// A real tracing layer that records every event with its span chain (as
/// the registry sees it: a wrong parent shows here).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

impl<S> tracing_subscriber::Layer<S> for Capture
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut captured = Captured {
            target: event.metadata().target().to_owned(),
            ..Captured::default()
        };
        event.record(&mut captured);
        captured.scope = ctx
            .event_scope(event)
            .map(|scope| scope.from_root().map(|span| span.name().to_owned()).collect())
            .unwrap_or_default();
        self.0.lock().unwrap().push(captured);
    }
}

impl Capture {
    fn find(&self, message: &str) -> Option<Captured> {
        self.0.lock().unwrap().iter().find(|e| e.message == message).cloned()
    }
}

/// A call inside `request` on `pool`: the runner's events come back under
/// `request` > `flame.call`, tagged with the runner and the pool.
async fn runner_events_join_the_callers_trace(pool: &Pool, capture: &Capture) {
    let mut events = pool.events();
    let n = pool
        .call::<Chatty>(7)
        .instrument(tracing::info_span!("request"))
        .await
        .unwrap();
    assert_eq!(n, 7);
    // Sent ahead of the reply on the same connection: here already.
    let event = capture
        .find("chatty at work")
        .expect("the runner's event reached the parent before the reply");
    assert_eq!(event.target, "ractor_flame::remote");
    assert_eq!(event.scope, ["request", "flame.call"], "{event:?}");
    assert!(event.fields.contains("remote_target=flame_test"), "{event:?}");
    assert!(event.fields.contains("n=7"), "{event:?}");
    assert!(event.fields.contains(&format!("pool=\"{}\"", pool.name())), "{event:?}");
    let runner = loop {
        if let PoolEvent::GrowEnd { runner, .. } = events.recv().await.unwrap() {
            break runner;
        }
    };
    assert!(event.fields.contains(&format!("runner={runner}")), "{event:?}");
    let warn = capture.find("chatty warns").expect("the warning too");
    assert_eq!(warn.scope, ["request", "flame.call"]);
}

// Current-thread runtime: the thread-local subscriber sees every task, and
// the link thread's tasks carry it.
#[tokio::test]
async fn process_runner_events_come_home_under_the_callers_span() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let pool = pool_with(Kind::Process, config(1)).await;
    runner_events_join_the_callers_trace(&pool, &capture).await;
    pool.stop().await;
}

#[cfg(feature = "docker")]
#[tokio::test]
async fn docker_runner_events_come_home_under_the_callers_span() {
    let Some(_docker) = support::docker::engine("docker_runner_events_come_home_under_the_callers_span").await else {
        return;
    };
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let pool = pool_with(Kind::Docker, config(1)).await;
    runner_events_join_the_callers_trace(&pool, &capture).await;
    pool.stop().await;
}

#[tokio::test]
async fn local_runner_events_sit_in_the_callers_span_tagged_with_the_pool() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let pool = pool_with(Kind::Local, config(1)).await;
    pool.call::<Chatty>(3)
        .instrument(tracing::info_span!("request"))
        .await
        .unwrap();
    // In-process: the body's own event, inside the caller's `flame.call`
    // span, which names the pool and the runner.
    let event = capture.find("chatty at work").expect("event");
    assert_eq!(event.scope, ["request", "flame.call"]);
    pool.stop().await;
}

#[tokio::test]
async fn with_no_subscriber_a_runners_panic_reaches_the_parents_stderr_with_its_runner_id() {
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(support::runner_exe())
            .args(["parent", "panic"])
            .env_remove(ractor_flame::actors::FLAME_PARENT)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the parent program ends")
    .expect("it runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("the runner's own panic message"),
        "the caller's error: {stdout}"
    );
    let runner = stdout
        .lines()
        .find_map(|l| l.strip_prefix("runner "))
        .unwrap_or_else(|| panic!("no runner id in {stdout}"));
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(runner) && l.contains("the runner's own panic message")),
        "no line of the parent's stderr names runner {runner} and the panic:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_sees_every_event_and_a_lost_runner_is_gone_from_stats_when_its_event_arrives() {
    let pool = pool_with(Kind::Process, config(2)).await;
    let (mut first, mut second) = (pool.events(), pool.events());
    let victim = pool.call::<WhereAmI>(()).await.unwrap();
    let Ok(PoolEvent::GrowStart { runner: booted, .. }) = first.recv().await else {
        panic!("GrowStart first");
    };
    assert!(matches!(second.recv().await.unwrap(), PoolEvent::GrowStart { runner, .. } if runner == booted));
    for events in [&mut first, &mut second] {
        match events.recv().await.unwrap() {
            PoolEvent::GrowEnd {
                result: Ok(()),
                runner,
                boot_time,
                ..
            } => {
                assert_eq!(runner, booted);
                assert!(boot_time > Duration::ZERO);
            }
            other => panic!("{other:?}"),
        }
    }
    let killed = Instant::now();
    kill(victim.pid, "KILL");
    // The next event is the loss.
    let next = tokio::time::timeout(WAIT, first.recv())
        .await
        .expect("an event")
        .unwrap();
    let PoolEvent::RunnerLost { runner, reason, .. } = next else {
        panic!("before RunnerLost: {next:?}");
    };
    assert_eq!(runner, booted);
    let after = killed.elapsed();
    // Stats read after the event already count the loss: no lag.
    let stats = pool.stats().await.unwrap();
    assert_eq!((stats.runners, stats.booting, stats.busy), (0, 0, 0), "{stats:?}");
    assert!(!reason.is_empty());
    assert!(
        after < Duration::from_millis(500),
        "the loss took {after:?} to be known"
    );
    assert!(matches!(first.recv().await.unwrap(), PoolEvent::Shrink { runner, count: 0, .. } if runner == booted));
    // The second subscriber saw the same.
    assert!(matches!(second.recv().await.unwrap(), PoolEvent::RunnerLost { .. }));
    assert!(matches!(second.recv().await.unwrap(), PoolEvent::Shrink { .. }));
    assert_eq!(pool.call::<Echo>("after".into()).await.unwrap(), "after");
    pool.stop().await;
    // A stopped pool ends every subscription.
    loop {
        match first.recv().await {
            Err(EventsError::Closed) => break,
            Err(other) => panic!("{other:?}"),
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn a_lagging_subscriber_learns_how_many_events_it_missed() {
    let pool = pool_with(Kind::Local, config(1).max_concurrency(1).queue_capacity(1)).await;
    let mut events = pool.events();
    // The one slot taken, the one queue place taken: every other caller is
    // turned away, one QueueFull event each.
    let _busy = support::sleeping(&pool, &support::key(), 10_000);
    support::busy(&pool, 1).await;
    let _queued = support::sleeping(&pool, &support::key(), 10);
    support::eventually("a caller waits", WAIT, || async {
        pool.stats().await.unwrap().waiting == 1
    })
    .await;
    let extra = 10;
    for _ in 0..ractor_flame::actors::EVENTS_CAPACITY + extra {
        let err = pool.call::<Echo>("x".into()).await.unwrap_err();
        assert!(matches!(err, ractor_flame::Error::QueueFull { capacity: 1 }), "{err:?}");
    }
    // GrowStart and GrowEnd came first: all but the last CAPACITY are gone.
    let missed = (ractor_flame::actors::EVENTS_CAPACITY + extra + 2 - ractor_flame::actors::EVENTS_CAPACITY) as u64;
    assert_eq!(events.recv().await.unwrap_err(), EventsError::Lagged { missed });
    assert!(matches!(
        events.recv().await.unwrap(),
        PoolEvent::QueueFull { capacity: 1, .. }
    ));
    pool.stop().await;
}
