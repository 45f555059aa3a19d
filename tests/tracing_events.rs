//! The library's tracing: stable targets and fields, lower-case messages,
//! and never a secret (STYLE 13).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor_flame::{LocalBackend, Parent, Pool, RunnerId};
use support::functions::Echo;
use support::{config, eventually};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};

/// One captured event: target, message and fields, all as text.
#[derive(Debug, Clone, Default)]
struct Captured {
    target: String,
    text: String,
}

struct Capture(Arc<Mutex<Vec<Captured>>>);

impl Visit for Captured {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.text.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut captured = Captured {
            target: event.metadata().target().to_owned(),
            ..Captured::default()
        };
        event.record(&mut captured);
        self.0.lock().unwrap().push(captured);
    }
}

// Current-thread runtime: the thread-local subscriber sees every task.
#[tokio::test]
async fn lifecycle_events_carry_the_pool_and_runner_and_no_secret() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Capture(events.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);

    let cfg = config(1).name("traced").idle_shutdown_after(Duration::from_millis(50));
    let pool = Pool::start(cfg, LocalBackend::new(), &support::functions::registry())
        .await
        .unwrap();
    assert_eq!(pool.call::<Echo>("x".into()).await.unwrap(), "x");
    eventually("the runner idles down", Duration::from_secs(10), || async {
        pool.stats().await.unwrap().runners == 0
    })
    .await;
    pool.stop().await;

    let events = events.lock().unwrap().clone();
    let find = |message: &str| {
        events
            .iter()
            .find(|e| e.text.contains(&format!("message={message} ")))
            .unwrap_or_else(|| panic!("no `{message}` event in {events:#?}"))
    };
    let up = find("runner up");
    assert_eq!(up.target, "ractor_flame::pool");
    assert!(up.text.contains("pool=traced"), "{}", up.text);
    assert!(up.text.contains("runner="), "{}", up.text);
    let left = find("runner left");
    assert!(left.text.contains("count=0"), "{}", left.text);
    assert_eq!(
        find("idle, asking the parent to stop").target,
        "ractor_flame::terminator"
    );
    for e in &events {
        // Our events use the stable `ractor_flame::*` targets, never a module path.
        assert!(
            !e.target.starts_with("ractor_flame_actors"),
            "unstable target {}",
            e.target
        );
        assert!(!e.text.contains("token"), "a secret in {e:?}");
    }

    // The FLAME_PARENT token is redacted wherever it is printed.
    let parent = Parent::new(
        RunnerId::new(),
        vec!["127.0.0.1:1".parse().unwrap()],
        ractor_flame::actors::Token::generate(),
        "local",
        ractor_flame::BuildId(1),
    );
    assert!(format!("{parent:?}").contains("Token(<redacted>)"));
}
