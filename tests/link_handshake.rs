//! Byte-level tests of the parent's endpoint (B26, B36): only a runner that
//! proves its token, speaks our protocol and runs our build is let in;
//! everything else is refused without a panic and without changing state.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::Actor;
use ractor_flame::actors::wire::{Hello, ToParent, ToRunner, Welcome, decode_body, encode_frame};
use ractor_flame::actors::{Endpoint, LinkTls, Token};
use ractor_flame::{BuildId, Registry, RunnerContext, RunnerId};
use support::functions::Echo;
use support::{RunnerRecorder, config, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The build the fixture's runner must serve: that of its pool's registry.
fn build() -> BuildId {
    Registry::new().build_id()
}

struct Fixture {
    endpoint: Endpoint,
    runner: RunnerId,
    token: Token,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn fixture() -> Fixture {
    let endpoint = Endpoint::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (actor, _) = Actor::spawn(None, RunnerRecorder(seen.clone()), ()).await.unwrap();
    let runner = RunnerId::new();
    let token = Token::generate();
    let addrs = vec![endpoint.addr()];
    let mut ctx = RunnerContext::new(runner, "wire", Registry::new(), actor);
    ctx.token = token.clone();
    ctx.link_tls = LinkTls::Never;
    endpoint.expect(&ctx, addrs, "wire");
    Fixture {
        endpoint,
        runner,
        token,
        seen,
    }
}

fn hello(runner: RunnerId, token: Token, build: BuildId) -> Vec<u8> {
    let mut out = Vec::new();
    let frame = ToParent::Hello(Hello {
        version: ractor_flame::actors::wire::PROTOCOL_VERSION,
        runner_id: runner,
        token,
        build_id: build,
        failed: None,
    });
    encode_frame(&frame, 4096, &mut out).unwrap();
    out
}

/// Sends `bytes`, then reads the answer frame, if any, until the parent
/// closes the connection.
async fn exchange(fx: &Fixture, bytes: &[u8]) -> Option<Welcome> {
    let mut stream = TcpStream::connect(fx.endpoint.addr()).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut all)).await;
    if all.len() < 4 {
        return None;
    }
    match decode_body::<ToRunner>(&all[4..]).ok()? {
        ToRunner::Welcome(w) => Some(w),
        _ => None,
    }
}

fn refused(w: Option<Welcome>) -> String {
    match w {
        Some(Welcome::Refused(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn b36_a_wrong_token_is_refused_and_changes_nothing() {
    let fx = fixture().await;
    let reason = refused(exchange(&fx, &hello(fx.runner, Token::generate(), build())).await);
    assert_eq!(reason, "wrong token");
    assert_eq!(fx.endpoint.expected(), 1, "the real runner may still connect");
    assert!(fx.seen.lock().unwrap().is_empty(), "no RemoteUp");
}

#[tokio::test]
async fn b36_another_build_is_refused() {
    let fx = fixture().await;
    let reason = refused(exchange(&fx, &hello(fx.runner, fx.token.clone(), BuildId(1))).await);
    // The refusal names both sides.
    assert!(reason.contains(&BuildId(1).to_string()), "{reason}");
    assert!(reason.contains(&build().to_string()), "{reason}");
    // It proved its token: it is our runner, of the wrong build. Its boot
    // fails with the reason, and it is no longer expected.
    assert_eq!(fx.endpoint.expected(), 0);
    eventually("the Runner hears the refusal", Duration::from_secs(5), || async {
        fx.seen.lock().unwrap().iter().any(|s| s.starts_with("Refused"))
    })
    .await;
    assert!(!fx.seen.lock().unwrap().iter().any(|s| s == "RemoteUp"));
}

#[tokio::test]
async fn b36_an_unknown_runner_is_refused() {
    let fx = fixture().await;
    let reason = refused(exchange(&fx, &hello(RunnerId::new(), fx.token.clone(), build())).await);
    assert!(reason.starts_with("unknown runner"), "{reason}");
}

#[tokio::test]
async fn b36_garbage_and_oversized_frames_are_dropped_without_a_panic() {
    let fx = fixture().await;
    // A well-formed length with a body that is not a message.
    assert_eq!(exchange(&fx, &[0, 0, 0, 3, 0xc1, 0xc1, 0xc1]).await, None);
    // A length far above the pre-authentication limit.
    assert_eq!(exchange(&fx, &[0x00, 0x10, 0x00, 0x00, 1, 2, 3]).await, None);
    // Random noise.
    let noise: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_eq!(exchange(&fx, &noise).await, None);
    assert_eq!(fx.endpoint.expected(), 1);
    assert!(fx.seen.lock().unwrap().is_empty());
    // The endpoint still admits the real runner afterwards.
    assert_eq!(
        exchange(&fx, &hello(fx.runner, fx.token.clone(), build())).await,
        Some(Welcome::Accepted)
    );
}

#[tokio::test]
async fn b36_a_silent_peer_is_dropped_after_the_handshake_deadline() {
    let fx = fixture().await;
    let started = Instant::now();
    assert_eq!(exchange(&fx, &[]).await, None);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert_eq!(fx.endpoint.expected(), 1);
}

#[tokio::test]
async fn b26_a_proven_runner_is_accepted_once_and_its_runner_hears_remote_up() {
    let fx = fixture().await;
    let mut stream = TcpStream::connect(fx.endpoint.addr()).await.unwrap();
    stream
        .write_all(&hello(fx.runner, fx.token.clone(), build()))
        .await
        .unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.unwrap();
    let mut body = vec![0; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).await.unwrap();
    assert_eq!(
        decode_body::<ToRunner>(&body).unwrap(),
        ToRunner::Welcome(Welcome::Accepted)
    );
    eventually("RemoteUp reaches the Runner", Duration::from_secs(5), || async {
        fx.seen.lock().unwrap().first().map(String::as_str) == Some("RemoteUp")
    })
    .await;
    assert_eq!(fx.endpoint.expected(), 0, "one connection per runner");
    // A replay of the same proof is refused.
    let reason = refused(exchange(&fx, &hello(fx.runner, fx.token.clone(), build())).await);
    assert!(reason.starts_with("unknown runner"), "{reason}");
    drop(stream);
    eventually("the close reaches the Runner", Duration::from_secs(5), || async {
        fx.seen.lock().unwrap().iter().any(|s| s == "ConnectionLost")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b36_rogue_peers_do_not_change_a_running_pools_state() {
    let registry = support::functions::registry();
    let backend = ractor_flame::ProcessBackend::new(support::runner_exe());
    let pool = ractor_flame::Pool::start(config(2).min(1), backend.clone(), &registry)
        .await
        .unwrap();
    support::runners(&pool, 1).await;
    let before = pool.stats().await.unwrap();
    let addr = backend.listen_addr().expect("the endpoint is bound");
    for bytes in [
        hello(RunnerId::new(), Token::generate(), registry.build_id()),
        vec![0xff; 64],
        vec![0, 0, 0, 5, 1, 2, 3, 4, 5],
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut Vec::new())).await;
    }
    assert_eq!(pool.stats().await.unwrap(), before);
    assert_eq!(pool.call::<Echo>("unharmed".into()).await.unwrap(), "unharmed");
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b44_a_flood_of_idle_connections_evicts_the_oldest_and_spares_a_real_runner() {
    let fx = fixture().await;
    // 500 peers that connect and say nothing.
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(TcpStream::connect(fx.endpoint.addr()).await.unwrap());
    }
    // The real runner proves itself at once and is let in.
    let started = Instant::now();
    assert_eq!(
        exchange_open(&fx, &hello(fx.runner, fx.token.clone(), build())).await,
        Some(Welcome::Accepted)
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // The oldest idle peers were closed long before the handshake deadline.
    let first = idle.first_mut().unwrap();
    let closed = tokio::time::timeout(Duration::from_millis(1500), first.read(&mut [0u8; 1])).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the oldest idle peer was evicted: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b44_a_real_boot_is_not_delayed_by_500_idle_connections() {
    let registry = support::functions::registry();
    let backend = ractor_flame::ProcessBackend::new(support::runner_exe());
    let pool = ractor_flame::Pool::start(config(2).min(1).max_concurrency(1), backend.clone(), &registry)
        .await
        .unwrap();
    support::runners(&pool, 1).await;
    let addr = backend.listen_addr().expect("the endpoint is bound");
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // The one runner is busy: a second call boots a second runner.
    let k = support::key();
    let busy = support::sleeping(&pool, &k, 1_000);
    support::busy(&pool, 1).await;
    let started = Instant::now();
    assert_eq!(pool.call::<Echo>("second".into()).await.unwrap(), "second");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "boot took {:?}",
        started.elapsed()
    );
    busy.await.unwrap().unwrap();
    drop(idle);
    pool.stop().await;
}

/// Sends `bytes` and reads one answer frame, keeping the connection open.
async fn exchange_open(fx: &Fixture, bytes: &[u8]) -> Option<Welcome> {
    let mut stream = TcpStream::connect(fx.endpoint.addr()).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut len = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(3), stream.read_exact(&mut len))
        .await
        .ok()?
        .ok()?;
    let mut body = vec![0; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).await.ok()?;
    match decode_body::<ToRunner>(&body).ok()? {
        ToRunner::Welcome(w) => Some(w),
        _ => None,
    }
}
