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

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the example may take, boots included.
const DEADLINE: Duration = Duration::from_secs(60);
/// Set on the example, inherited by its runners: how to find them in `/proc`.
const TAG: &str = "FLAME_COMMAND_EXAMPLE_TAG";

/// `target/<profile>/examples/command_backend`, from this test's
/// `target/<profile>/deps/backend_command_example-<hash>`; built first when
/// it may be stale.
fn example_binary() -> PathBuf {
    let me = std::env::current_exe().expect("the test's own path");
    let profile_dir = me
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps");
    let binary = profile_dir.join("examples").join("command_backend");
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/command_backend.rs");
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    // Older than this test means the library may have changed since (this
    // test is rebuilt with it); then cargo decides, a no-op when fresh.
    let fresh = match (modified(&binary), modified(&source), modified(&me)) {
        (Some(built), Some(edited), Some(test)) => built >= edited && built >= test,
        _ => false,
    };
    let cargo = std::env::var_os("CARGO").filter(|_| !fresh);
    if let Some(cargo) = cargo {
        // `cargo test --test <this>` built no example: build this one, in
        // this test's profile (the directory is named after it).
        let mut build = Command::new(cargo);
        build
            .args(["build", "-p", "ractor-flame", "--example", "command_backend"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        match profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                build.arg("--release");
            }
            Some(profile) => {
                build.args(["--profile", profile]);
            }
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build --example command_backend: {status}");
    }
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p ractor-flame --example command_backend`",
        binary.display()
    );
    binary
}

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

/// Processes whose environment carries `TAG=tag`: the example's runners.
fn tagged(tag: &str) -> Vec<u32> {
    let needle = format!("{TAG}={tag}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
        })
        .collect()
}

/// The leftover check can fail only if `tagged` sees processes: make sure
/// it does, with a stand-in carrying a tag of its own.
fn detector_sees_a_tagged_process() {
    let tag = format!("detector-{}", std::process::id());
    let mut sleeper = Command::new("sleep")
        .arg("30")
        .env(TAG, &tag)
        .spawn()
        .expect("run sleep");
    // Until it has exec'd, the fork still shows the test's environment.
    let started = Instant::now();
    let mut seen = tagged(&tag);
    while seen.is_empty() && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
        seen = tagged(&tag);
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(
        seen,
        vec![sleeper.id()],
        "the /proc scan does not find a tagged process"
    );
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
    let binary = example_binary();
    detector_sees_a_tagged_process();
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
    let leftovers = tagged(&tag);
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
