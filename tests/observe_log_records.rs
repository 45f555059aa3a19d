//! The library's tracing: stable targets and fields, lower-case messages,
//! and never a secret.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor_flame::{LocalBackend, Parent, Pool, RunnerId};
use support::functions::{Echo, Spin};
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
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, _: &tracing::span::Id, _: Context<'_, S>) {
        let mut captured = Captured {
            target: attrs.metadata().target().to_owned(),
            text: format!("span={} ", attrs.metadata().name()),
        };
        attrs.record(&mut captured);
        self.0.lock().unwrap().push(captured);
    }

    fn on_record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>, _: Context<'_, S>) {
        let mut captured = Captured::default();
        values.record(&mut captured);
        self.0.lock().unwrap().push(captured);
    }

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

/// Every event and span (fields as text) from every thread of this test
/// binary, from the first call on: runtimes' workers, link threads and
/// blocking threads included, which a thread-local subscriber would miss.
fn global_capture() -> Arc<Mutex<Vec<Captured>>> {
    static ALL: std::sync::OnceLock<Arc<Mutex<Vec<Captured>>>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let all = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(all.clone()));
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        all
    })
    .clone()
}

/// The token bytes of a runner's `FLAME_PARENT`.
fn token_of(parent: &Parent) -> Vec<u8> {
    let encoded = rmp_serde::to_vec(&parent.token).unwrap();
    let bytes = rmp_serde::from_slice::<serde_bytes::ByteBuf>(&encoded)
        .unwrap()
        .into_vec();
    assert_eq!(bytes.len(), 32, "a 32-byte token");
    bytes
}

fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
    }
    out
}

/// How a token could show up in text: hex, base64 (both alphabets), a
/// `Debug` of its bytes; whole and its first 12 bytes (a truncated print).
fn renderings(token: &[u8]) -> Vec<String> {
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::new();
    for part in [token, &token[..12]] {
        let hex: String = part.iter().map(|b| format!("{b:02x}")).collect();
        out.push(hex.to_uppercase());
        out.push(hex);
        out.push(base64(part, STD));
        out.push(base64(part, URL));
    }
    let head = &token[..8];
    out.push(format!("{head:?}").trim_end_matches(']').to_owned());
    out.push(format!("{head:x?}").trim_end_matches(']').to_owned());
    out.push(String::from_utf8_lossy(token).into_owned());
    out
}

/// Runs calls, errors, a cast, idle shutdown and stop on a two-runner pool
/// of `kind` while reading each runner's real `FLAME_PARENT` (from the
/// process environment, or the container's); then no captured event or
/// span, in any thread, and no `Debug` output of the pool, backend, parents,
/// stats or errors holds a token or the user's secret env value.
async fn runner_tokens_never_appear(kind: support::Kind) {
    use support::functions::{Fail, Panic, Sleep, SleepWhere};
    let captured = global_capture();
    let user_secret = format!("user-secret-{}", support::key());
    let cfg = config(2)
        .max_concurrency(1)
        .idle_shutdown_after(Duration::from_millis(1_500));
    let name = cfg.get_name().to_owned();
    let registry = support::functions::registry();
    let mut printed = Vec::new();
    #[cfg(all(feature = "kubernetes", feature = "docker"))]
    let mut cluster = None;
    let pool = match kind {
        support::Kind::Process => {
            let backend =
                ractor_flame::ProcessBackend::new(support::runner_exe()).env("FLAME_USER_SECRET", &user_secret);
            printed.push(format!("{backend:?}"));
            let pool = Pool::start(cfg, backend.clone(), &registry).await.unwrap();
            printed.push(format!("{backend:?}"));
            pool
        }
        #[cfg(feature = "docker")]
        support::Kind::Docker => {
            let backend = support::docker::backend().env("FLAME_USER_SECRET", &user_secret);
            printed.push(format!("{backend:?}"));
            let pool = Pool::start(cfg, backend.clone(), &registry).await.unwrap();
            printed.push(format!("{backend:?}"));
            pool
        }
        #[cfg(all(feature = "kubernetes", feature = "docker"))]
        support::Kind::Kubernetes => {
            let made = support::kube::cluster("runner_tokens_never_appear")
                .await
                .expect("an engine");
            let backend = made.backend().secret_env("FLAME_USER_SECRET", &user_secret);
            printed.push(format!("{backend:?}"));
            let pool = Pool::start(cfg, backend.clone(), &registry).await.unwrap();
            printed.push(format!("{backend:?}"));
            cluster = Some(made);
            pool
        }
        _ => unreachable!("remote backends only: the local one has no token"),
    };
    // Two runners, both up.
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let (pool, args) = (pool.clone(), support::sleep(&support::key(), 300));
            tokio::spawn(async move { pool.call::<SleepWhere>(args).await })
        })
        .collect();
    support::busy(&pool, 2).await;
    let mut flame_parents = Vec::new();
    match kind {
        support::Kind::Process => {
            for call in calls {
                let place = call.await.unwrap().unwrap();
                let environ = std::fs::read(format!("/proc/{}/environ", place.pid)).unwrap();
                flame_parents.extend(
                    environ
                        .split(|b| *b == 0)
                        .filter_map(|kv| kv.strip_prefix(b"FLAME_PARENT="))
                        .map(|v| String::from_utf8(v.to_vec()).unwrap()),
                );
            }
        }
        #[cfg(feature = "docker")]
        support::Kind::Docker => {
            let docker = bollard::Docker::connect_with_defaults().unwrap();
            for id in support::docker::running(&docker, &name).await {
                let inspect = docker.inspect_container(&id, None).await.unwrap();
                let env = inspect.config.and_then(|c| c.env).unwrap_or_default();
                flame_parents.extend(
                    env.iter()
                        .filter_map(|kv| kv.strip_prefix("FLAME_PARENT="))
                        .map(str::to_owned),
                );
            }
            for call in calls {
                call.await.unwrap().unwrap();
            }
        }
        #[cfg(all(feature = "kubernetes", feature = "docker"))]
        support::Kind::Kubernetes => {
            // Only the runners' secrets hold them.
            let cluster = cluster.as_ref().unwrap();
            for secret in cluster.standin.secrets() {
                let value = &secret.data.unwrap()["FLAME_PARENT"].0;
                flame_parents.push(String::from_utf8(value.clone()).unwrap());
            }
            for call in calls {
                call.await.unwrap().unwrap();
            }
            // What the cluster shows: pod specs and events.
            printed.push(serde_json::to_string(&cluster.standin.pods()).unwrap());
            printed.push(serde_json::to_string(&cluster.standin.events()).unwrap());
        }
        _ => unreachable!(),
    }
    assert_eq!(flame_parents.len(), 2, "each runner's FLAME_PARENT was read");
    let parents: Vec<Parent> = flame_parents.iter().map(|v| Parent::decode(v).unwrap()).collect();
    // Errors, a panic, a deadline, a cast: the paths that log.
    printed.push(format!("{:?}", pool.call::<Fail>("x".into()).await.unwrap_err()));
    printed.push(format!("{:?}", pool.call::<Panic>("y".into()).await.unwrap_err()));
    let deadline = ractor_flame::CallOptions::new().timeout(Duration::from_millis(50));
    let err = pool
        .call_with::<Sleep>(support::sleep(&support::key(), 5_000), deadline)
        .await
        .unwrap_err();
    printed.push(format!("{err:?}"));
    pool.cast::<Fail>("z".into()).unwrap();
    printed.push(format!("{:?}", pool.stats().await.unwrap()));
    printed.push(format!("{pool:?}"));
    printed.push(format!("{parents:?}"));
    // Idle shutdown, then stop.
    eventually("the runners idle down", Duration::from_secs(20), || async {
        pool.stats().await.unwrap().runners == 0
    })
    .await;
    pool.stop().await;
    printed.push(format!("{pool:?}"));

    let texts: Vec<String> = captured
        .lock()
        .unwrap()
        .iter()
        .map(|e| format!("{} {}", e.target, e.text))
        .collect();
    // The capture saw this pool's life, so the search below means something.
    let ups = texts
        .iter()
        .filter(|t| t.contains("message=runner up ") && t.contains(&format!("pool={name} ")))
        .count();
    assert!(ups >= 2, "captured {ups} `runner up` events of {name}");
    let mut secrets: Vec<(String, String)> = flame_parents
        .iter()
        .map(|v| ("FLAME_PARENT".into(), v.clone()))
        .collect();
    secrets.push(("the user's env value".into(), user_secret.clone()));
    for parent in &parents {
        for r in renderings(&token_of(parent)) {
            secrets.push((format!("the token of {:?}", parent.runner_id), r));
        }
    }
    for (what, secret) in &secrets {
        for text in texts.iter().chain(&printed) {
            assert!(!text.contains(secret.as_str()), "{what} ({secret}) appears in: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b35_process_runner_tokens_never_appear_in_events_or_debug_output() {
    runner_tokens_never_appear(support::Kind::Process).await;
}

#[cfg(feature = "docker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b35_docker_runner_tokens_never_appear_in_events_or_debug_output() {
    if support::docker::engine("b35_docker_runner_tokens_never_appear_in_events_or_debug_output")
        .await
        .is_none()
    {
        return;
    }
    runner_tokens_never_appear(support::Kind::Docker).await;
}

#[cfg(all(feature = "kubernetes", feature = "docker"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b56_kubernetes_runner_tokens_never_appear_in_events_pod_specs_or_debug_output() {
    if support::docker::engine("b56_kubernetes_runner_tokens_never_appear_in_events_pod_specs_or_debug_output")
        .await
        .is_none()
    {
        return;
    }
    runner_tokens_never_appear(support::Kind::Kubernetes).await;
}

/// A cast sent straight from the caller (a free slot on a remote runner)
/// has no task of its own to report its failure: the failure is logged when
/// the runner reports the end, with the function and the error's text.
/// What a runner logs while it builds its state, before it has reached its
/// parent, is kept and reaches the parent's subscriber once it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_runner_before_it_reaches_its_parent_reach_the_parent() {
    use support::functions::WhereAmI;
    let captured = global_capture();
    let pool = support::pool_with(support::Kind::Process, config(1)).await;
    let runner = pool.call::<WhereAmI>(()).await.unwrap();
    assert_ne!(runner.pid, std::process::id(), "a runner of its own");
    let pid = format!("pid={}", runner.pid);
    eventually("the state builder's event", Duration::from_secs(10), || async {
        captured.lock().unwrap().iter().any(|e| {
            e.target == "ractor_flame::remote"
                && e.text.contains("message=building runner state")
                && e.text.contains(&pid)
        })
    })
    .await;
    pool.stop().await;
}

/// Casts beyond the free slots wait for one and run too, and each slot comes
/// back once its cast has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_casts_are_logged_with_their_function_and_every_cast_runs() {
    use support::functions::{Fail, Sleep};
    let captured = global_capture();
    let pool = support::pool_with(support::Kind::Process, config(1).max_concurrency(2)).await;
    pool.call::<Echo>("warm".into()).await.unwrap();
    let reason = format!("cast-failure-{}", support::key());
    pool.cast::<Fail>(reason.clone()).unwrap();
    eventually("the failed cast is logged", Duration::from_secs(10), || async {
        captured.lock().unwrap().iter().any(|e| {
            e.target == "ractor_flame::pool"
                && e.text.contains("message=cast failed")
                && e.text.contains("function=\"test.fail\"")
                && e.text.contains(&reason)
        })
    })
    .await;
    // Six casts on two slots: four wait for a slot, then all run.
    let k = support::key();
    for _ in 0..6 {
        pool.cast::<Sleep>(support::sleep(&k, 100)).unwrap();
    }
    eventually(
        "all six casts ran and their slots came back",
        Duration::from_secs(10),
        || async { support::probe(&pool, &k).await.completed == 6 && pool.stats().await.unwrap().busy == 0 },
    )
    .await;
    pool.stop().await;
}

/// Casts that end while others run report their ends together: every slot
/// still comes back, and a failure among them is still logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_casts_gives_back_every_slot_and_logs_its_failure() {
    use support::functions::{Fail, Sleep};
    let captured = global_capture();
    let pool = support::pool_with(support::Kind::Process, config(1).max_concurrency(256)).await;
    pool.call::<Echo>("warm".into()).await.unwrap();
    let (k, casts) = (support::key(), 3_000u32);
    let reason = format!("burst-failure-{k}");
    for i in 0..casts {
        pool.cast::<Sleep>(support::sleep(&k, 1)).unwrap();
        if i == casts / 2 {
            pool.cast::<Fail>(reason.clone()).unwrap();
        }
    }
    eventually(
        "every cast ran and every slot came back",
        Duration::from_secs(20),
        || async { support::probe(&pool, &k).await.completed == casts && pool.stats().await.unwrap().busy == 0 },
    )
    .await;
    assert!(
        captured
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.text.contains("message=cast failed") && e.text.contains(&reason)),
        "the failed cast among the burst is logged"
    );
    pool.stop().await;
}

/// B64: a call's `flame.call` span carries the time its work ran on the
/// runner (`runner_us`, measured there), next to the time the caller waited
/// for it (`remote_us`), on an in-process runner and over a real link. A
/// body that spins for 30 ms is at least 30 ms on the runner, and never
/// longer there than the caller waited for it.
#[tokio::test]
async fn b64_a_calls_span_carries_the_time_it_ran_on_the_runner() {
    const SPIN_MS: u64 = 30;
    for kind in [support::Kind::Local, support::Kind::Process] {
        let events = captured_on(kind, async |pool| {
            pool.call::<Spin>(SPIN_MS).await.unwrap();
        })
        .await;
        let field = |name: &str| -> Vec<u64> {
            events
                .iter()
                .flat_map(|e| e.text.split(' '))
                .filter_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v}")))
                .collect()
        };
        let (runner, remote) = (field("runner_us"), field("remote_us"));
        assert_eq!((runner.len(), remote.len()), (1, 1), "{kind:?}: {events:#?}");
        assert!(
            runner[0] >= SPIN_MS * 1_000,
            "{kind:?}: {} us on the runner for a {SPIN_MS} ms body",
            runner[0]
        );
        assert!(
            runner[0] <= remote[0],
            "{kind:?}: {} us on the runner, {} us for the caller",
            runner[0],
            remote[0]
        );
    }
}

/// What a subscriber of its own sees while `work` runs on a pool of `kind`
/// whose runner has booted before it looks (only the work's spans count).
async fn captured_on(kind: support::Kind, work: impl AsyncFnOnce(&Pool)) -> Vec<Captured> {
    let pool = support::pool_with(kind, config(1)).await;
    pool.call::<Echo>("warm".into()).await.unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Capture(events.clone()));
    {
        let _guard = tracing::subscriber::set_default(subscriber);
        work(&pool).await;
    }
    pool.stop().await;
    events.lock().unwrap().clone()
}

/// B57: a stream has a `flame.stream` span of its own, with the runner that
/// served it, how many items it yielded and how it ended.
#[tokio::test]
async fn b57_a_stream_has_a_span_with_its_items_and_outcome() {
    use support::functions::{Ticks, TicksArgs};
    for kind in [support::Kind::Local, support::Kind::Process] {
        let events = captured_on(kind, async |pool| {
            let mut stream = pool.stream::<Ticks>(TicksArgs::new(&support::key(), 3));
            let mut n = 0;
            while let Some(item) = stream.next().await {
                item.unwrap();
                n += 1;
            }
            assert_eq!(n, 3);
        })
        .await;
        let text: Vec<&str> = events.iter().map(|e| e.text.as_str()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("span=flame.stream") && t.contains("function=\"test.ticks\"")),
            "{kind:?}: {text:#?}"
        );
        assert!(text.iter().any(|t| t.contains("items=3")), "{kind:?}: {text:#?}");
        assert!(text.iter().any(|t| t.contains("outcome=\"ok\"")), "{kind:?}: {text:#?}");
        assert!(text.iter().any(|t| t.starts_with("runner=")), "{kind:?}: {text:#?}");
    }
}
