//! A runner whose host clock is off: deadlines cross the wire as the time
//! remaining, never as wall-clock instants, so a runner whose wall clock is
//! minutes ahead or behind keeps every deadline (B52).
//!
//! The runner is a real process with its wall clock shifted by libfaketime
//! (Debian package `libfaketime`; `.ci/run` installs it). Where the library
//! is missing the test skips with a printed reason, unless
//! `FLAME_REQUIRE_DOCKER` is set (CI), where it fails.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use ractor_flame::actors::wire::{CallFrame, Outcome, ToParent, ToRunner, Welcome, decode_body, encode_frame};
use ractor_flame::actors::{Args, Token};
use ractor_flame::{CallOptions, Error, Parent, Pool, ProcessBackend, RunnerId};
use support::functions::{Sleep, registry};
use support::{config, eventually, key, probe, sleep};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Where Debian's `libfaketime` puts the library.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The library's path, or `None` (with the reason printed) when the test
/// must skip; panics where `FLAME_REQUIRE_DOCKER` is set and it is missing.
fn libfaketime(test: &str) -> Option<&'static str> {
    if Path::new(LIBFAKETIME).exists() {
        return Some(LIBFAKETIME);
    }
    let why = format!("{LIBFAKETIME} is missing (Debian package `libfaketime`)");
    assert!(
        std::env::var_os("FLAME_REQUIRE_DOCKER").is_none(),
        "{test}: {why}; CI installs it (.ci/run)"
    );
    eprintln!("skipping {test}: {why}");
    None
}

/// The environment that shifts a process's wall clock by `shift` (its
/// monotonic clock is left alone, as on a host whose clock is off).
fn shifted(lib: &str, shift: &str) -> [(&'static str, String); 3] {
    [
        ("LD_PRELOAD", lib.to_owned()),
        ("FAKETIME", shift.to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
    ]
}

fn unix_secs(out: &std::process::Output) -> i64 {
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("date +%s")
}

/// A process given [`shifted`]'s environment sees its wall clock that far
/// off: the library works here.
fn assert_the_shift_works(lib: &str, shift: &str, secs: i64) {
    let ours = std::process::Command::new("date")
        .arg("+%s")
        .output()
        .expect("date runs");
    let theirs = std::process::Command::new("date")
        .arg("+%s")
        .envs(shifted(lib, shift))
        .output()
        .expect("date runs");
    let off = unix_secs(&theirs) - unix_secs(&ours);
    assert!(
        (secs - 2..=secs + 2).contains(&off),
        "{shift}: the clock is {off} s off"
    );
}

/// The pid of the live process whose environment holds `marker`.
fn pid_with(marker: &str) -> u32 {
    let wanted = format!("FLAME_TEST_CLOCK={marker}");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|kv| kv == wanted.as_bytes()) && support::alive(pid) {
            return pid;
        }
    }
    panic!("no runner process with {wanted}")
}

/// A runner whose wall clock is `shift` off (`secs` seconds) keeps a call's
/// deadline: a 100 ms body with 2 s to spare succeeds, and a 5 s body with
/// 300 ms fails with `Deadline` at about 300 ms, its work ended on the runner
/// then (not when the body would have finished).
async fn deadlines_hold_on_a_runner_whose_clock_is_off(lib: &str, shift: &str, secs: i64) {
    assert_the_shift_works(lib, shift, secs);
    let marker = key();
    let backend = shifted(lib, shift).into_iter().fold(
        ProcessBackend::new(support::runner_exe()).env("FLAME_TEST_CLOCK", marker.as_str()),
        |backend, (name, value)| backend.env(name, value),
    );
    let pool = Pool::start(config(1).min(1), backend, &registry()).await.unwrap();
    support::runners(&pool, 1).await;
    // The runner is the shifted process: libfaketime is loaded in it.
    let pid = pid_with(&marker);
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(
        maps.contains("libfaketime"),
        "{shift}: libfaketime is not loaded in the runner"
    );

    // Time to spare: the call succeeds.
    let k = key();
    let opts = CallOptions::new().timeout(Duration::from_secs(2));
    let started = Instant::now();
    let done = pool.call_with::<Sleep>(sleep(&k, 100), opts).await;
    assert_eq!(done.unwrap(), 100, "{shift}: a 100 ms call with 2 s to spare");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{shift}: {:?}",
        started.elapsed()
    );

    // Too little time: the call fails with its deadline at about 300 ms...
    let k = key();
    let opts = CallOptions::new().timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = pool.call_with::<Sleep>(sleep(&k, 5_000), opts).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::Deadline { .. }), "{shift}: {err:?}");
    // From the runner: the parent's own watch would answer only 250 ms
    // after the deadline (a runner behind by minutes, keeping its deadline
    // by its wall clock, would be caught by that watch alone).
    assert!(
        (Duration::from_millis(290)..Duration::from_millis(500)).contains(&took),
        "{shift}: the 300 ms deadline came after {took:?}"
    );
    // ... and the runner ended the work at its deadline: the body was
    // dropped long before its 5 s were up.
    eventually(
        &format!("{shift}: the runner ends the late body"),
        Duration::from_secs(2),
        || async {
            let counts = probe(&pool, &k).await;
            counts.dropped == 1 && counts.running == 0
        },
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert_eq!(probe(&pool, &k).await.completed, 0, "{shift}");
    pool.stop().await;
}

/// Reads one whole frame's body.
async fn read_body(stream: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.expect("a frame from the runner");
    let len = u32::from_be_bytes(len);
    assert_eq!(
        len >> 31,
        0,
        "a split frame: the test sends nothing that needs one back"
    );
    let mut body = vec![0; len as usize];
    stream.read_exact(&mut body).await.unwrap();
    body
}

async fn send(stream: &mut TcpStream, frame: &ToRunner) {
    let mut out = Vec::new();
    encode_frame(frame, usize::MAX, &mut out).unwrap();
    stream.write_all(&out).await.unwrap();
}

/// The outcome the runner reports for call `id` (early or at its end).
async fn outcome_of(stream: &mut TcpStream, id: u64) -> Outcome {
    loop {
        match decode_body::<ToParent>(&read_body(stream).await).unwrap() {
            ToParent::Reply { id: got, outcome, .. } | ToParent::Early { id: got, outcome } if got == id => {
                return outcome;
            }
            _ => {}
        }
    }
}

/// The runner alone keeps the deadline, whatever its clock says: a parent of
/// the test's own, with no deadline watch of its own (a pool's parent gives
/// up on a call a grace after its deadline and cancels the work, which would
/// hide a runner that kept the deadline late), sends the frames and times
/// the runner's answers.
async fn the_runner_itself_keeps_the_deadline(lib: &str, shift: &str) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut parent = Parent::new(
        RunnerId::new(),
        vec![listener.local_addr().unwrap()],
        Token::generate(),
        "test",
        registry().build_id(),
    );
    // This parent sends no heartbeats: give the runner patience.
    parent.settings.heartbeat_timeout = Duration::from_secs(60);
    parent.settings.heartbeat_interval = Duration::from_secs(1);
    let _runner = tokio::process::Command::new(support::runner_exe())
        .env(ractor_flame::actors::FLAME_PARENT, parent.encode())
        .envs(shifted(lib, shift))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the runner connects")
        .unwrap();
    let hello = decode_body::<ToParent>(&read_body(&mut stream).await).unwrap();
    assert!(matches!(hello, ToParent::Hello(_)), "{hello:?}");
    send(&mut stream, &ToRunner::Welcome(Welcome::Accepted)).await;
    let call = |id: u64, budget: Duration, ms: u64| {
        ToRunner::Call(CallFrame {
            id,
            function: "test.sleep".to_owned(),
            budget_us: Some(budget.as_micros() as u64),
            want_result: true,
            linked: true,
            trace: None,
            args: Args::encode(sleep(&key(), ms)).unwrap().as_bytes().to_vec().into(),
            bare: false,
            idempotency_key: None,
        })
    };
    // Time to spare: the body's value.
    let started = Instant::now();
    send(&mut stream, &call(1, Duration::from_secs(2), 100)).await;
    let outcome = outcome_of(&mut stream, 1).await;
    assert!(
        matches!(outcome, Outcome::Ok(_)),
        "{shift}: {outcome:?} after {:?}",
        started.elapsed()
    );
    // Too little: the runner's own deadline, at about 300 ms.
    let started = Instant::now();
    send(&mut stream, &call(2, Duration::from_millis(300), 5_000)).await;
    let outcome = tokio::time::timeout(Duration::from_secs(2), outcome_of(&mut stream, 2))
        .await
        .unwrap_or_else(|_| panic!("{shift}: no answer 2 s into a call with a 300 ms budget"));
    let took = started.elapsed();
    assert_eq!(outcome, Outcome::Deadline, "{shift}");
    assert!(
        (Duration::from_millis(290)..Duration::from_millis(1_500)).contains(&took),
        "{shift}: the runner's 300 ms deadline came after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b52_a_runner_whose_clock_is_minutes_off_keeps_every_deadline_right() {
    let Some(lib) = libfaketime("b52_a_runner_whose_clock_is_minutes_off_keeps_every_deadline_right") else {
        return;
    };
    for (shift, secs) in [("+300s", 300), ("-300s", -300)] {
        deadlines_hold_on_a_runner_whose_clock_is_off(lib, shift, secs).await;
        the_runner_itself_keeps_the_deadline(lib, shift).await;
    }
}
