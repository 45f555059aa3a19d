//! The runner side as a real process against a hand-made parent (B27, B28,
//! B35): failsafe, parent loss by close and by silence, refusal, and a
//! malformed FLAME_PARENT.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use ractor_flame::actors::wire::{ToParent, ToRunner, Welcome, decode_body, encode_frame};
use ractor_flame::actors::{RunnerSettings, Token};
use ractor_flame::{Parent, RunnerId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

fn settings() -> RunnerSettings {
    RunnerSettings {
        failsafe_timeout: Duration::from_millis(300),
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_timeout: Duration::from_millis(500),
        idle_after: None,
        ..RunnerSettings::default()
    }
}

fn start_runner(addr: std::net::SocketAddr, token: Token) -> (Child, RunnerId) {
    let runner = RunnerId::new();
    let mut parent = Parent::new(
        runner,
        vec![addr],
        token,
        "process",
        support::functions::registry().build_id(),
    );
    parent.settings = settings();
    let child = Command::new(support::runner_exe())
        .env("FLAME_PARENT", parent.encode())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, runner)
}

async fn read_frame(stream: &mut TcpStream) -> ToParent {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.unwrap();
    let mut body = vec![0; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).await.unwrap();
    decode_body(&body).unwrap()
}

async fn welcome(stream: &mut TcpStream, welcome: Welcome) {
    let mut out = Vec::new();
    encode_frame(&ToRunner::Welcome(welcome), 4096, &mut out).unwrap();
    stream.write_all(&out).await.unwrap();
}

/// Waits for the child to exit within `within`; returns its exit code.
async fn exits_within(child: &mut Child, within: Duration) -> i32 {
    let status = tokio::time::timeout(within, child.wait())
        .await
        .unwrap_or_else(|_| panic!("the runner still runs after {within:?}"))
        .unwrap();
    status.code().expect("exited, not killed")
}

#[tokio::test]
async fn b27_a_runner_with_no_parent_stops_at_the_failsafe() {
    // A port nobody listens on.
    let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let started = Instant::now();
    let (mut child, _) = start_runner(addr, Token::generate());
    // Non-zero: it never served its parent.
    assert_eq!(exits_within(&mut child, Duration::from_secs(3)).await, 3);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn b28_a_runner_whose_parent_closes_stops() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token = Token::generate();
    let (mut child, runner) = start_runner(listener.local_addr().unwrap(), token);
    let (mut stream, _) = listener.accept().await.unwrap();
    let ToParent::Hello(hello) = read_frame(&mut stream).await else {
        panic!("expected a hello")
    };
    assert_eq!(hello.runner_id, runner, "B26: the runner introduces itself");
    welcome(&mut stream, Welcome::Accepted).await;
    drop(stream);
    assert_eq!(exits_within(&mut child, Duration::from_secs(3)).await, 0);
}

#[tokio::test]
async fn b28_a_runner_whose_parent_goes_silent_stops_after_the_heartbeat_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (mut child, _) = start_runner(listener.local_addr().unwrap(), Token::generate());
    let (mut stream, _) = listener.accept().await.unwrap();
    let _ = read_frame(&mut stream).await;
    welcome(&mut stream, Welcome::Accepted).await;
    // Keep the connection open and say nothing, like a frozen parent.
    let silent_since = Instant::now();
    assert_eq!(exits_within(&mut child, Duration::from_secs(3)).await, 0);
    assert!(silent_since.elapsed() >= Duration::from_millis(400));
    // It sent heartbeats while it waited (after the events it logged
    // before it reached its parent).
    let mut frame = read_frame(&mut stream).await;
    while let ToParent::Log(_) = frame {
        frame = read_frame(&mut stream).await;
    }
    assert_eq!(frame, ToParent::Ping);
}

#[tokio::test]
async fn b36_a_refused_runner_exits() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (mut child, _) = start_runner(listener.local_addr().unwrap(), Token::generate());
    let (mut stream, _) = listener.accept().await.unwrap();
    let _ = read_frame(&mut stream).await;
    welcome(&mut stream, Welcome::Refused("wrong token".into())).await;
    // Non-zero: a refused runner failed.
    assert_eq!(exits_within(&mut child, Duration::from_secs(3)).await, 3);
    // It does not try again: the connection is closed from its side.
    assert_eq!(stream.read(&mut [0u8; 16]).await.unwrap(), 0);
}

#[tokio::test]
async fn b35_a_malformed_flame_parent_is_a_clear_error_not_a_panic() {
    let output = Command::new(support::runner_exe())
        .env("FLAME_PARENT", "this is not a parent")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("malformed FLAME_PARENT: not base64"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
