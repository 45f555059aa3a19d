//! B51: a flood of unauthenticated connections cannot lock a real runner
//! out. The endpoint evicts only peers that have sent nothing, never a
//! runner in its handshake (TLS makes that handshake slow enough for a flood
//! to overtake it); a runner whose handshake fails tries the parent's other
//! addresses and tries again until its failsafe, while a refusal by the
//! parent is final.

mod support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::Actor;
use ractor_flame::actors::{Endpoint, RunnerSettings, Token};
use ractor_flame::{BootRetry, LinkTls, Parent, Pool, ProcessBackend, RunnerContext, RunnerId};
use support::functions::{Echo, registry};
use support::{RunnerRecorder, config, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Idle connections opened before the boot, and kept open.
const IDLE: usize = 200;
/// The flooder's newer connections it keeps open at once.
const KEEP: usize = 300;
/// At most this many connections in all, and for at most [`FLOOD_FOR`].
const MAX_FLOOD: usize = 100_000;
const FLOOD_FOR: Duration = Duration::from_secs(20);

/// Connections the flooder opens at once.
const FLOODERS: usize = 16;

/// Opens idle connections to `addr`, [`FLOODERS`] at a time, until told to
/// stop (or its bounds): how many it opened. The newest [`KEEP`] of them
/// stay open; all are closed when it ends.
fn flood(addr: SocketAddr, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let started = Instant::now();
        let opened = Arc::new(AtomicUsize::new(0));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..FLOODERS {
            let (stop, opened) = (stop.clone(), opened.clone());
            workers.spawn(async move {
                let mut open = VecDeque::with_capacity(KEEP / FLOODERS + 1);
                while !stop.load(Ordering::Relaxed)
                    && opened.load(Ordering::Relaxed) < MAX_FLOOD
                    && started.elapsed() < FLOOD_FOR
                {
                    // A full accept queue drops the SYN, retried after a
                    // second: give up sooner and connect anew instead.
                    let connect = tokio::time::timeout(Duration::from_millis(50), TcpStream::connect(addr));
                    if let Ok(Ok(stream)) = connect.await {
                        opened.fetch_add(1, Ordering::Relaxed);
                        open.push_back(stream);
                        if open.len() > KEEP / FLOODERS {
                            open.pop_front();
                        }
                    }
                }
                // Every socket closes here.
                drop(open);
            });
        }
        workers.join_all().await;
        opened.load(Ordering::Relaxed)
    })
}

/// One-way delay of the runners' link in the flood test.
const LATENCY: Duration = Duration::from_millis(100);

/// A loopback link with [`LATENCY`] each way to the endpoint of `backend`,
/// as a runner on another machine has: it connects onwards when the
/// runner's first bytes come through (so the endpoint sees them at once, as
/// it does from a runner that sends its ClientHello the moment it connects),
/// and delays every chunk either way. A TLS handshake through it takes a
/// few hundred milliseconds: long enough for a flood to overtake it.
async fn far_link(backend: ProcessBackend) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut links = tokio::task::JoinSet::new();
        while let Ok((inbound, _)) = listener.accept().await {
            let target = backend.listen_addr().expect("the endpoint is bound");
            links.spawn(async move {
                let (mut ri, wi) = inbound.into_split();
                let mut first = vec![0u8; 64 * 1024];
                let n = match ri.read(&mut first).await {
                    Ok(n) if n > 0 => n,
                    _ => return,
                };
                tokio::time::sleep(LATENCY).await;
                let Ok(outbound) = TcpStream::connect(target).await else {
                    return;
                };
                let (ro, mut wo) = outbound.into_split();
                if wo.write_all(&first[..n]).await.is_err() {
                    return;
                }
                // Each direction ends when either side closes; dropping the
                // halves closes both sockets.
                tokio::select! {
                    () = delayed(ri, wo) => {}
                    () = delayed(ro, wi) => {}
                }
            });
        }
    });
    (addr, task)
}

async fn delayed(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        tokio::time::sleep(LATENCY).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b51_a_flood_of_idle_connections_does_not_lock_out_a_runner_in_its_tls_handshake() {
    let backend = ProcessBackend::new(support::runner_exe());
    let (far, link) = far_link(backend.clone()).await;
    // One boot attempt: the runner itself must get through the flood.
    let cfg = config(2)
        .min(1)
        .max_concurrency(1)
        .link_tls(LinkTls::Always)
        .boot_retry(BootRetry {
            max_attempts: 1,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
        });
    let pool = Pool::start(cfg, backend.clone().parent_addr(far), &registry())
        .await
        .unwrap();
    support::runners(&pool, 1).await;
    let addr = backend.listen_addr().expect("the endpoint is bound");

    // Idle peers, held open throughout, and a flooder that keeps opening
    // new ones while the second runner boots.
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flood_started = Instant::now();
    let flooder = flood(addr, stop.clone());
    // Let the flood get going before the boot.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The one runner is busy (for longer than the second runner's failsafe):
    // the next call boots a second runner, whose TLS handshake races the
    // flood.
    let k = support::key();
    let busy = support::sleeping(&pool, &k, 10_000);
    support::busy(&pool, 1).await;
    let boot_started = Instant::now();
    let second = tokio::time::timeout(Duration::from_secs(20), pool.call::<Echo>("through the flood".into())).await;
    let boot = boot_started.elapsed();
    let served_by_a_new_runner = !busy.is_finished() && pool.stats().await.unwrap().runners == 2;

    stop.store(true, Ordering::Relaxed);
    let opened = flooder.await.unwrap();
    let flood_for = flood_started.elapsed();
    drop(idle);
    eprintln!("{opened} flood connections in {flood_for:?}; the second call ended after {boot:?}");
    let second = second.expect("the call ends");
    assert_eq!(
        second.as_deref().ok(),
        Some("through the flood"),
        "{second:?} ({opened} flood connections)"
    );
    assert!(served_by_a_new_runner, "the second runner served the call");
    // The flood ran all through the boot, and well past the endpoint's cap.
    assert!(opened > 128, "{opened} flood connections");
    busy.abort();
    pool.stop().await;
    link.abort();
}

/// An endpoint that expects one runner of the test registry: its
/// FLAME_PARENT with `addrs` as the parent's addresses, and what its Runner
/// hears.
async fn expect_runner(endpoint: &Endpoint, addrs: Vec<SocketAddr>) -> (Parent, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (actor, _) = Actor::spawn(None, RunnerRecorder(seen.clone()), ()).await.unwrap();
    let mut ctx = RunnerContext::new(RunnerId::new(), "flood", registry(), actor);
    ctx.settings = RunnerSettings {
        failsafe_timeout: Duration::from_secs(10),
        ..RunnerSettings::default()
    };
    ctx.boot_timeout = Duration::from_secs(10);
    ctx.link_tls = LinkTls::Always;
    let parent = endpoint.expect(&ctx, addrs, "process");
    (parent, seen)
}

/// A runner process under `parent`, killed when dropped.
fn run_runner(parent: &Parent) -> tokio::process::Child {
    tokio::process::Command::new(support::runner_exe())
        .env("FLAME_PARENT", parent.encode())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// A listener that accepts connections and closes the first `close` of them
/// at once (as an endpoint flooded by strangers may), forwarding the rest
/// to `target` (none when `target` is `None`): its address, and how many
/// connections it accepted.
async fn gate(close: usize, target: Option<SocketAddr>) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            let Some(target) = target.filter(|_| n >= close) else {
                drop(inbound);
                continue;
            };
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, accepted, task)
}

/// A port nothing listens on.
async fn dead_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b51_a_runner_whose_handshake_is_cut_short_tries_the_parents_next_address() {
    let endpoint = Endpoint::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // The first address accepts and closes every connection at once.
    let (closer, closed, closer_task) = gate(usize::MAX, None).await;
    let (parent, seen) = expect_runner(&endpoint, vec![closer, endpoint.addr()]).await;
    let child = run_runner(&parent);
    eventually(
        "the runner joins through the second address",
        Duration::from_secs(10),
        || async { seen.lock().unwrap().iter().any(|s| s == "RemoteUp") },
    )
    .await;
    assert!(closed.load(Ordering::SeqCst) >= 1, "the first address was tried first");
    assert_eq!(endpoint.expected(), 0);
    drop(child);
    closer_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b51_a_runner_tries_again_until_a_handshake_gets_through() {
    let endpoint = Endpoint::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // Nothing at the first address; the second closes the first three
    // connections mid-handshake, then leads to the endpoint.
    let (flaky, accepted, flaky_task) = gate(3, Some(endpoint.addr())).await;
    let (parent, seen) = expect_runner(&endpoint, vec![dead_port().await, flaky]).await;
    let started = Instant::now();
    let child = run_runner(&parent);
    eventually(
        "the runner gets in at its fourth try",
        Duration::from_secs(10),
        || async { seen.lock().unwrap().iter().any(|s| s == "RemoteUp") },
    )
    .await;
    assert_eq!(accepted.load(Ordering::SeqCst), 4, "three cut short, then in");
    // Short pauses between rounds: far inside the failsafe.
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    drop(child);
    flaky_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b51_a_refusal_by_the_parent_is_final() {
    let endpoint = Endpoint::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (counted, accepted, counted_task) = gate(0, Some(endpoint.addr())).await;
    let (mut parent, seen) = expect_runner(&endpoint, vec![counted, dead_port().await]).await;
    // The right runner with a wrong token: the parent refuses it.
    parent.token = Token::generate();
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(20), run_runner(&parent).wait_with_output())
        .await
        .expect("the refused runner exits")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("refused by the parent: wrong token"), "{stderr}");
    // At once, after one try: not at the failsafe, after retries.
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one try only");
    assert_eq!(endpoint.expected(), 1, "a wrong token changes nothing");
    assert!(seen.lock().unwrap().is_empty());
    counted_task.abort();
}
