//! `examples/command_backend.rs`, a backend written against the public API
//! only, runs end to end: its remote results are right, a crashed runner's
//! exit code reaches the caller, the example exits 0, and no runner outlives
//! it.
//!
//! It runs the example binary Cargo built next to this test's binary
//! (`target/<profile>/examples/command_backend`). `cargo test` with no
//! target named builds every example first (CI's `cargo test --workspace`),
//! but `cargo test --test backend_command_example` builds none: when the
//! binary is missing, or older than its source or this test, the test has
//! the `cargo` that runs it build the example (a no-op when it is fresh).

mod support;

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::examples::{detector_sees_a_tagged_process, example_binary, tagged};

/// How long the example may take, boots included.
const DEADLINE: Duration = Duration::from_secs(60);
/// Set on the example, inherited by its runners: how to find them in `/proc`.
const TAG: &str = "FLAME_COMMAND_EXAMPLE_TAG";

/// Reads a pipe to its end on a thread of its own.
fn collect(mut pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    rx
}

/// The Collatz step count the example's runners should have computed.
fn collatz(mut n: u64) -> u32 {
    let mut steps = 0;
    while n != 1 {
        n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
        steps += 1;
    }
    steps
}

#[test]
fn the_command_backend_example_computes_remotely_and_leaves_no_runner_behind() {
    let binary = example_binary("command_backend");
    detector_sees_a_tagged_process(TAG);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tag = format!("{}-{nanos}", std::process::id());
    let mut child = Command::new(&binary)
        .env(TAG, &tag)
        .env_remove("FLAME_PARENT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    let example_pid = child.id();
    let stdout = collect(child.stdout.take().expect("piped"));
    let stderr = collect(child.stderr.take().expect("piped"));

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the example") {
            break Some(status);
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Runners the example left behind, found before anything else can end them.
    let leftovers = tagged(TAG, &tag);
    for pid in &leftovers {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    let out = stdout
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| "(stdout still open: held by a leftover process?)".to_owned());
    let err = stderr
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| "(stderr still open: held by a leftover process?)".to_owned());
    let report = format!("--- stdout ---\n{out}\n--- stderr ---\n{err}");

    let status = status.unwrap_or_else(|| panic!("the example ran past {DEADLINE:?}\n{report}"));
    assert!(status.success(), "the example failed: {status}\n{report}");
    assert!(
        leftovers.is_empty(),
        "runners outlived the example: {leftovers:?}\n{report}"
    );

    let parent: u32 = out
        .lines()
        .find_map(|line| line.strip_prefix("parent pid ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no parent pid printed\n{report}"));
    assert_eq!(parent, example_pid, "the parent pid printed is the example's\n{report}");

    // Each result, computed on a runner (another process), is right.
    let mut runners = Vec::new();
    for n in [27u64, 97, 871, 6171] {
        let prefix = format!("collatz({n}) = {} steps, on runner pid ", collatz(n));
        let pid: u32 = out
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no line `{prefix}<pid>`\n{report}"));
        assert_ne!(pid, parent, "collatz({n}) ran in the parent, not on a runner\n{report}");
        runners.push(pid);
    }
    runners.sort_unstable();
    runners.dedup();
    let listed = format!(
        "runner pids: {}",
        runners.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
    );
    assert!(out.lines().any(|line| line == listed), "no line `{listed}`\n{report}");

    // The crashed runner's exit code came through `handle_info`.
    assert!(
        out.lines().any(|line| line == "crash: runner down: exited with code 7"),
        "the crash was not reported as exit code 7\n{report}"
    );
    assert_eq!(out.lines().last(), Some("pool stopped"), "{report}");
}
