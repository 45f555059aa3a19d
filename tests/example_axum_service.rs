//! `examples/axum_service.rs`, an HTTP service on a pool of process
//! runners, as a client sees it: thumbnails come back, a bad image is 422,
//! an overload is answered 503 or 504 (never 500), `/stats` and `/metrics`
//! report, and SIGTERM answers every request in flight before the service
//! exits 0, leaving no runner behind.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use support::examples::{detector_sees_a_tagged_process, example_binary, tagged};
use support::{eventually, kill};

/// Set on the service, inherited by its runners: how to find them.
const TAG: &str = "FLAME_AXUM_EXAMPLE_TAG";
const WAIT: Duration = Duration::from_secs(30);

/// One HTTP/1.0 request; the status and the body.
async fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the service");
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, response[split + 4..].to_vec())
}

/// A stand-in image of `len` pixels that asks for `passes` blur passes.
fn image(len: usize, passes: u16) -> Vec<u8> {
    let mut bytes = b"IMG1".to_vec();
    bytes.extend(passes.to_be_bytes());
    bytes.extend((0..len).map(|i| (i % 251) as u8));
    bytes
}

async fn busy(addr: SocketAddr) -> u64 {
    let (status, body) = request(addr, "GET", "/stats", b"").await;
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_slice(&body).expect("stats as JSON");
    stats["busy"].as_u64().expect("a busy count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_maps_errors_to_statuses_and_drains_on_sigterm() {
    let binary = tokio::task::spawn_blocking(|| example_binary("axum_service"))
        .await
        .unwrap();
    detector_sees_a_tagged_process(TAG);
    let tag = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    let mut service = tokio::process::Command::new(&binary)
        .args(["--backend", "process", "--addr", "127.0.0.1:0"])
        .env(TAG, &tag)
        .env_remove("FLAME_PARENT")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the service");
    let mut lines = BufReader::new(service.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the service listens in time")
        .unwrap()
        .expect("a line");
    let addr: SocketAddr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();

    // A good image: its thumbnail, a quarter of its pixels.
    let (status, body) = request(addr, "POST", "/thumbnail", &image(4_000, 2)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body.len(), 4 + 1_000);
    assert_eq!(&body[..4], b"IMG1");

    // A bad one: the body's invalid-argument error is 422, with its message.
    let (status, body) = request(addr, "POST", "/thumbnail", b"GIF89a...").await;
    assert_eq!(status, 422);
    assert!(String::from_utf8_lossy(&body).contains("not an image"), "{body:?}");

    // Overload: more work than 8 slots and a queue of 16 take, each with
    // a budget of 300 ms. Every answer is 503 (no slot) or 504 (the
    // deadline), and both happen.
    let heavy = image(64 * 1024, u16::MAX);
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let heavy = heavy.clone();
            tokio::spawn(async move { request(addr, "POST", "/thumbnail?timeout_ms=300", &heavy).await.0 })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.unwrap());
    }
    assert!(statuses.iter().all(|s| *s == 503 || *s == 504), "{statuses:?}");
    assert!(statuses.contains(&503) && statuses.contains(&504), "{statuses:?}");
    // The cancelled bodies stop at their next row: every slot comes back.
    eventually("every slot is free again", WAIT, || async { busy(addr).await == 0 }).await;

    // The library's metrics, through the service's recorder.
    let (status, body) = request(addr, "GET", "/metrics", b"").await;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("flame_calls_total"), "{text}");
    assert!(text.contains("outcome=\"deadline\""), "{text}");

    // SIGTERM with requests in flight: each is answered, then the service
    // stops its pool and exits. Each takes long enough (about a second in a
    // debug build) that the four are at work together whatever order they
    // start in: with 40 passes, a CI run once saw each end before the last
    // began.
    let working: Vec<_> = (0..4)
        .map(|_| {
            let work = image(64 * 1024, 2_000);
            tokio::spawn(async move { request(addr, "POST", "/thumbnail?timeout_ms=20000", &work).await })
        })
        .collect();
    eventually("four requests at work", WAIT, || async { busy(addr).await == 4 }).await;
    kill(service.id().expect("the service runs"), "TERM");
    for call in working {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body.len(), 4 + 16 * 1024);
    }
    let exit = tokio::time::timeout(WAIT, service.wait())
        .await
        .expect("the service exits after SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit}");
    let mut rest = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push(line);
    }
    assert_eq!(rest.last().map(String::as_str), Some("stopped"), "{rest:?}");
    eventually("no runner outlives the service", Duration::from_secs(5), || async {
        tagged(TAG, &tag).is_empty()
    })
    .await;
}
