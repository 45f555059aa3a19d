//! The encrypted runner link (B45): runners pin the parent's certificate,
//! plaintext is refused where TLS is due, and nothing secret crosses the
//! network in clear.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::Actor;
use ractor_flame::actors::wire::{Hello, PROTOCOL_VERSION, ToParent, ToRunner, Welcome, decode_body, encode_frame};
use ractor_flame::actors::{Endpoint, Fingerprint, RunnerSettings, Token};
use ractor_flame::{LinkTls, Parent, Pool, ProcessBackend, Registry, RunnerContext, RunnerId};
use support::functions::{Echo, Len};
use support::{RunnerRecorder, config, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Fixture {
    endpoint: Endpoint,
    parent: Parent,
    seen: Arc<Mutex<Vec<String>>>,
}

/// An endpoint that expects one runner of the test registry, with `tls`.
async fn fixture(tls: LinkTls) -> Fixture {
    let endpoint = Endpoint::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (actor, _) = Actor::spawn(None, RunnerRecorder(seen.clone()), ()).await.unwrap();
    let settings = RunnerSettings {
        failsafe_timeout: Duration::from_secs(3),
        ..RunnerSettings::default()
    };
    let mut ctx = RunnerContext::new(RunnerId::new(), "tls", support::functions::registry(), actor);
    ctx.settings = settings;
    ctx.boot_timeout = Duration::from_secs(5);
    ctx.link_tls = tls;
    let parent = endpoint.expect(&ctx, vec![endpoint.addr()], "process");
    Fixture { endpoint, parent, seen }
}

fn hello(parent: &Parent, token: Token) -> Vec<u8> {
    let mut out = Vec::new();
    let frame = ToParent::Hello(Hello {
        version: PROTOCOL_VERSION,
        runner_id: parent.runner_id,
        token,
        build_id: parent.build_id,
        failed: None,
    });
    encode_frame(&frame, 4096, &mut out).unwrap();
    out
}

/// Sends `bytes` in clear, then reads the answer until the parent closes.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Welcome> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut all)).await;
    match decode_body::<ToRunner>(all.get(4..)?).ok()? {
        ToRunner::Welcome(w) => Some(w),
        _ => None,
    }
}

#[test]
fn b45_tls_by_default_only_off_loopback() {
    let loopback: Vec<SocketAddr> = vec!["127.0.0.1:7000".parse().unwrap(), "[::1]:7000".parse().unwrap()];
    let lan: Vec<SocketAddr> = vec!["192.168.1.20:7000".parse().unwrap()];
    let fly: Vec<SocketAddr> = vec!["[fdaa:0:1::3]:7000".parse().unwrap()];
    assert!(!LinkTls::Auto.applies_to(&loopback));
    assert!(LinkTls::Auto.applies_to(&lan));
    assert!(LinkTls::Auto.applies_to(&fly));
    assert!(LinkTls::Always.applies_to(&loopback));
    assert!(!LinkTls::Never.applies_to(&lan));
    assert_eq!(LinkTls::default(), LinkTls::Auto);
}

#[tokio::test]
async fn b45_flame_parent_pins_the_endpoints_certificate_only_when_tls_applies() {
    let plain = fixture(LinkTls::Auto).await;
    assert_eq!(plain.parent.tls, None, "loopback: plain TCP by default");
    let tls = fixture(LinkTls::Always).await;
    let pin = tls.parent.tls.expect("a pinned certificate");
    // It survives the trip through the environment.
    assert_eq!(Parent::decode(&tls.parent.encode()).unwrap().tls, Some(pin));
    // One certificate per endpoint: every runner of it pins the same one.
    let ctx_parent = {
        let (actor, _) = Actor::spawn(None, RunnerRecorder(Arc::default()), ()).await.unwrap();
        let mut ctx = RunnerContext::new(RunnerId::new(), "tls", Registry::new(), actor);
        ctx.link_tls = LinkTls::Always;
        tls.endpoint.expect(&ctx, vec![tls.endpoint.addr()], "process")
    };
    assert_eq!(ctx_parent.tls, Some(pin));
}

#[tokio::test]
async fn b45_a_plaintext_peer_is_refused_where_tls_is_due() {
    let fx = fixture(LinkTls::Always).await;
    // Someone without the token, in clear: refused, nothing changes.
    let reason = match exchange(fx.endpoint.addr(), &hello(&fx.parent, Token::generate())).await {
        Some(Welcome::Refused(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(reason, "wrong token");
    assert_eq!(fx.endpoint.expected(), 1);
    // The runner's own token in clear: refused, and that runner's boot
    // fails (its token may have been seen on the way).
    let reason = match exchange(fx.endpoint.addr(), &hello(&fx.parent, fx.parent.token.clone())).await {
        Some(Welcome::Refused(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(reason.contains("without TLS"), "{reason}");
    assert_eq!(fx.endpoint.expected(), 0);
    eventually("the Runner hears the refusal", Duration::from_secs(5), || async {
        fx.seen.lock().unwrap().iter().any(|s| s.contains("without TLS"))
    })
    .await;
    assert!(!fx.seen.lock().unwrap().iter().any(|s| s == "RemoteUp"));
}

#[tokio::test]
async fn b45_a_tls_handshake_where_no_runner_uses_tls_is_dropped() {
    let fx = fixture(LinkTls::Never).await;
    // The first bytes of a TLS ClientHello, then silence.
    let mut stream = TcpStream::connect(fx.endpoint.addr()).await.unwrap();
    stream
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the endpoint closes the connection");
    assert!(rest.is_empty(), "and says nothing: {rest:?}");
    assert_eq!(fx.endpoint.expected(), 1);
}

/// Runs the test runner with `parent` as its FLAME_PARENT; its exit status
/// and stderr.
async fn run_runner(parent: &Parent) -> (std::process::ExitStatus, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(support::runner_exe())
            .env("FLAME_PARENT", parent.encode())
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the runner exits by itself")
    .unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b45_a_runner_refuses_a_parent_with_another_certificate_and_exits() {
    let fx = fixture(LinkTls::Always).await;
    let mut parent = fx.parent.clone();
    // FLAME_PARENT pins another certificate than the one this endpoint shows.
    parent.tls = Some(Fingerprint([0x5a; 32]));
    let (status, stderr) = run_runner(&parent).await;
    assert!(!status.success(), "{status:?}");
    assert!(stderr.contains("not the pinned"), "{stderr}");
    // It said nothing to the impostor: the endpoint still waits for it and
    // heard no proof at all.
    assert_eq!(fx.endpoint.expected(), 1);
    assert!(fx.seen.lock().unwrap().is_empty(), "{:?}", fx.seen.lock().unwrap());

    // The same runner with the right pin joins.
    let child = tokio::process::Command::new(support::runner_exe())
        .env("FLAME_PARENT", fx.parent.encode())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("the pinned runner is up", Duration::from_secs(10), || async {
        fx.seen.lock().unwrap().iter().any(|s| s == "RemoteUp")
    })
    .await;
    drop(child);
}

/// A loopback proxy that records every byte it forwards, both ways.
struct Tap {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
}

async fn tap(backend: ProcessBackend) -> Tap {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            // The endpoint is bound before the first runner starts.
            let target = backend.listen_addr().expect("the endpoint is bound");
            let outbound = TcpStream::connect(target).await.unwrap();
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pump(ri, wo, log.clone()));
            tokio::spawn(pump(ro, wi, log.clone()));
        }
    });
    Tap { addr, seen }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    log: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                log.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// The FLAME_PARENT of live processes told to connect to `addr`.
fn flame_parents_for(addr: SocketAddr) -> Vec<Parent> {
    support::flame_processes()
        .into_iter()
        .map(|(_, parent)| parent)
        .filter(|p| p.parent_addrs == [addr])
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What crossed the tap for one call of a recognisable argument: whether the
/// token and the argument were visible in it.
async fn tapped_call(tls: LinkTls) -> (bool, bool) {
    let registry = support::functions::registry();
    let backend = ProcessBackend::new(support::runner_exe());
    let tap = tap(backend.clone()).await;
    let backend = backend.parent_addr(tap.addr);
    let pool = Pool::start(config(1).link_tls(tls), backend, &registry).await.unwrap();
    let secret = format!("an argument nobody may read {}", uuid::Uuid::new_v4());
    assert_eq!(pool.call::<Echo>(secret.clone()).await.unwrap(), secret);
    let parents = flame_parents_for(tap.addr);
    assert_eq!(parents.len(), 1, "one runner, reached through the tap");
    assert_eq!(parents[0].tls.is_some(), tls == LinkTls::Always);
    // The token's bytes, as its encoding carries them (a 32-byte string).
    let encoded = rmp_serde::to_vec(&parents[0].token).unwrap();
    let token = encoded[encoded.len() - 32..].to_vec();
    pool.stop().await;
    let wire = tap.seen.lock().unwrap().clone();
    assert!(wire.len() > 100, "the tap saw the link: {} bytes", wire.len());
    (contains(&wire, &token), contains(&wire, secret.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b45_the_tls_link_shows_neither_token_nor_arguments_on_the_wire() {
    // The tap reads a plaintext link: it would see both.
    assert_eq!(tapped_call(LinkTls::Never).await, (true, true));
    // Over TLS it sees neither.
    assert_eq!(tapped_call(LinkTls::Always).await, (false, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b45_a_tls_pool_serves_concurrent_and_large_calls() {
    let registry = support::functions::registry();
    let pool = Pool::start(
        config(2).link_tls(LinkTls::Always).max_concurrency(64),
        ProcessBackend::new(support::runner_exe()),
        &registry,
    )
    .await
    .unwrap();
    let calls = (0..300).map(|i| {
        let pool = pool.clone();
        tokio::spawn(async move { pool.call::<Echo>(format!("call {i}")).await })
    });
    for (i, call) in calls.enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), format!("call {i}"));
    }
    for size in [1 << 20, 8 << 20] {
        let bytes = serde_bytes::ByteBuf::from(vec![3u8; size]);
        assert_eq!(pool.call::<Len>(bytes).await.unwrap(), size);
    }
    let big = pool.call::<support::functions::Bytes>(16 << 20).await.unwrap();
    assert_eq!(big.len(), 16 << 20);
    assert!(big.iter().all(|b| *b == 7));
    pool.stop().await;
}

/// Streams cross the TLS link as they cross a plain one (B57): small items
/// in order, 1 MiB items intact within a window of two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b57_streams_cross_the_tls_link() {
    use futures_util::StreamExt as _;
    use support::functions::{Chunks, Ticks, TicksArgs};

    let registry = support::functions::registry();
    let pool = Pool::start(
        config(1).link_tls(LinkTls::Always),
        ProcessBackend::new(support::runner_exe()),
        &registry,
    )
    .await
    .unwrap();
    let ticks: Vec<u32> = pool
        .stream::<Ticks>(TicksArgs::new(&support::key(), 2_000))
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(ticks, (0..2_000).collect::<Vec<_>>());
    let opts = ractor_flame::StreamOptions::new().window(2);
    let chunks: Vec<_> = pool
        .stream_with::<Chunks>((8, 1 << 20), opts)
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(chunks.len(), 8);
    for (i, chunk) in chunks.iter().enumerate() {
        assert!(
            chunk.len() == 1 << 20 && chunk.iter().all(|b| *b == i as u8),
            "chunk {i}"
        );
    }
    pool.stop().await;
}

/// The best of `samples` round trips of a `size`-byte argument, then of a
/// `size`-byte result, on `pool`.
async fn best_large_round_trips(pool: &Pool, size: usize, samples: usize) -> Duration {
    let arg = serde_bytes::ByteBuf::from(vec![5u8; size]);
    let mut best = Duration::MAX;
    for _ in 0..samples {
        let copy = arg.clone();
        let started = std::time::Instant::now();
        assert_eq!(pool.call::<Len>(copy).await.unwrap(), size);
        let result = pool.call::<support::functions::Bytes>(size).await.unwrap();
        best = best.min(started.elapsed());
        assert_eq!(result.len(), size);
    }
    best
}

/// B49: a 48 MiB argument and a 48 MiB result over TLS cost about what they
/// cost over plain TCP plus the cipher: time linear in their size (reading
/// a frame record by record once zeroed the rest of it on every record:
/// 1.1 s for 48 MiB over TLS, 41 ms over TCP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b49_a_large_frame_over_tls_costs_about_what_it_costs_over_tcp() {
    let registry = support::functions::registry();
    let start = |tls: LinkTls| {
        Pool::start(
            config(1).link_tls(tls),
            ProcessBackend::new(support::runner_exe()),
            &registry,
        )
    };
    let plain = start(LinkTls::Never).await.unwrap();
    let tls = start(LinkTls::Always).await.unwrap();
    let size = 48 << 20;
    // A warm-up each, then the best of three.
    best_large_round_trips(&plain, size, 1).await;
    best_large_round_trips(&tls, size, 1).await;
    let over_tcp = best_large_round_trips(&plain, size, 3).await;
    let over_tls = best_large_round_trips(&tls, size, 3).await;
    eprintln!("48 MiB each way: TCP {over_tcp:?}, TLS {over_tls:?}");
    // Generous for a loaded 2-core machine: the cipher costs a few ms per
    // MiB at most; the quadratic read took seconds.
    assert!(
        over_tls < over_tcp * 4 + Duration::from_millis(250),
        "48 MiB each way: TLS {over_tls:?} against TCP {over_tcp:?}"
    );
    plain.stop().await;
    tls.stop().await;
}
