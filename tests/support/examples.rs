//! The examples as the tests run them: their binaries, built when stale,
//! and the processes they leave (found by an environment variable their
//! runners inherit).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// `target/<profile>/examples/<name>`, from the test's
/// `target/<profile>/deps/<test>-<hash>`; built first when it may be stale.
///
/// `cargo test` with no target named builds every example first (CI's
/// `cargo test --workspace`), but `cargo test --test <one>` builds none:
/// when the binary is missing, or older than its source or the test, the
/// `cargo` that runs the test builds it (a no-op when it is fresh).
pub fn example_binary(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("the test's own path");
    let profile_dir = me
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps");
    let binary = profile_dir.join("examples").join(name);
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.rs"));
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
            .args(["build", "-p", "ractor-flame", "--example", name])
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
        assert!(status.success(), "cargo build --example {name}: {status}");
    }
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p ractor-flame --example {name}`",
        binary.display()
    );
    binary
}

/// Processes whose environment carries `var=tag`: an example's runners.
pub fn tagged(var: &str, tag: &str) -> Vec<u32> {
    let needle = format!("{var}={tag}");
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

/// A check for leftovers can fail only if `tagged` sees processes: make
/// sure it does, with a stand-in carrying a tag of its own.
pub fn detector_sees_a_tagged_process(var: &str) {
    let tag = format!("detector-{}", std::process::id());
    let mut sleeper = Command::new("sleep")
        .arg("30")
        .env(var, &tag)
        .spawn()
        .expect("run sleep");
    // Until it has exec'd, the fork still shows the test's environment.
    let started = Instant::now();
    let mut seen = tagged(var, &tag);
    while seen.is_empty() && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
        seen = tagged(var, &tag);
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(
        seen,
        vec![sleeper.id()],
        "the /proc scan does not find a tagged process"
    );
}
