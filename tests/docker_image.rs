//! Runner images made from executables, against the real engine: pruning
//! never takes an image a live parent may still boot, a lost image is made
//! again, the running process is what gets imaged, and a library that
//! cannot be found is a clear error. Where no engine answers these tests
//! skip with a printed reason, unless `FLAME_REQUIRE_DOCKER` is set (CI),
//! where they fail.

#![cfg(feature = "docker")]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ractor_flame::docker::{DockerBackend, Image};
use ractor_flame::{BootRetry, Error, Pool};
use support::docker::{ParentProcess, containers, engine, remove_image, runner_copy};
use support::functions::Echo;
use support::{config, eventually, key};

const WAIT: Duration = Duration::from_secs(30);

fn once() -> BootRetry {
    BootRetry {
        max_attempts: 1,
        ..Default::default()
    }
}

/// A copy of `/bin/sleep` with `extra` bytes: a small, distinct build.
fn small_build(path: &Path, extra: &str) {
    let mut bytes = std::fs::read("/bin/sleep").unwrap();
    bytes.extend_from_slice(extra.as_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_image_pruning_keeps_a_live_parents_image_and_takes_a_dead_ones() {
    let Some(docker) = engine("docker_image_pruning_keeps_a_live_parents_image_and_takes_a_dead_ones").await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("flame-prune-{}", key()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("app");
    let salt = key();
    small_build(&exe, &format!("{salt}-1"));
    // Another parent process images build 1 and lives on, scaled to zero.
    let mut sibling = ParentProcess::spawn(Path::new(support::runner_exe()), &["prepare", exe.to_str().unwrap()]);
    sibling.until("image", WAIT).await;
    let first = sibling.image.clone().unwrap();
    // A rebuild, imaged here: build 1 is older, but its parent lives.
    small_build(&exe, &format!("{salt}-2"));
    let second = prepare(&exe).await;
    assert_ne!(first, second);
    assert!(
        docker.inspect_image(&first).await.is_ok(),
        "a live parent's image was pruned"
    );
    // The sibling exits: the next rebuild prunes its image.
    sibling.close_stdin();
    let _ = sibling.child.wait().await;
    small_build(&exe, &format!("{salt}-3"));
    let third = prepare(&exe).await;
    assert!(
        docker.inspect_image(&first).await.is_err(),
        "a dead parent's image was kept"
    );
    assert!(
        docker.inspect_image(&second).await.is_ok(),
        "this live process's own earlier image was pruned"
    );
    for tag in [first, second, third] {
        remove_image(&docker, &tag).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// B54, claims: a parent that dies leaves its claim tag on the image it
/// used; the next parent to start on that image drops it, and keeps the
/// image, its plain tag and its own claim. Claim tags of dead parents do not
/// pile up on the image in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b54_claim_tags_of_dead_parents_go_when_the_next_parent_starts() {
    let Some(docker) = engine("b54_claim_tags_of_dead_parents_go_when_the_next_parent_starts").await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("flame-claims-{}", key()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("app");
    small_build(&exe, &key());
    let claims = |tags: Vec<String>| -> Vec<String> { tags.into_iter().filter(|t| t.contains("-claim-")).collect() };
    // Two parents in turn use the image, each dying before the next starts.
    let mut dead = Vec::new();
    for _ in 0..2 {
        let mut parent = ParentProcess::spawn(Path::new(support::runner_exe()), &["prepare", exe.to_str().unwrap()]);
        parent.until("image", WAIT).await;
        let tag = parent.image.clone().unwrap();
        parent.close_stdin();
        let _ = parent.child.wait().await;
        dead.push(tag);
    }
    assert_eq!(dead[0], dead[1], "one build, one image");
    let tag = dead[0].clone();
    // The second dropped the first's claim as it started; its own is left.
    let before = claims(docker.inspect_image(&tag).await.unwrap().repo_tags.unwrap_or_default());
    assert_eq!(before.len(), 1, "one dead parent's claim is left, not two: {before:?}");

    // This process starts on the same image.
    assert_eq!(prepare(&exe).await, tag);
    let tags = docker.inspect_image(&tag).await.unwrap().repo_tags.unwrap_or_default();
    // Podman lists a local name under `docker.io/library/` or `localhost/`.
    let plain = |t: &String| t == &tag || t.ends_with(&format!("/{tag}"));
    assert!(tags.iter().any(plain), "the plain tag stays: {tags:?}");
    let after = claims(tags);
    assert_eq!(after.len(), 1, "only this live parent's claim is left: {after:?}");
    assert!(!before.contains(&after[0]), "{after:?} is a dead parent's");
    remove_image(&docker, &tag).await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn prepare(exe: &Path) -> String {
    DockerBackend::new()
        .image(Image::Executable(exe.to_owned()))
        .prepare_image()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_a_parent_whose_image_was_removed_imports_it_again_on_its_next_boot() {
    let Some(docker) = engine("docker_a_parent_whose_image_was_removed_imports_it_again_on_its_next_boot").await else {
        return;
    };
    let (dir, exe) = runner_copy(key().as_bytes());
    let backend = DockerBackend::new()
        .image(Image::Executable(exe))
        .stop_timeout(Duration::from_secs(1));
    let registry = support::functions::registry();
    let pool = Pool::start(config(1).boot_retry(once()), backend.clone(), &registry)
        .await
        .unwrap();
    assert_eq!(pool.call::<Echo>("first".into()).await.unwrap(), "first");
    pool.stop().await;
    let name = pool.name().to_owned();
    eventually("no container is left", WAIT, || async {
        containers(&docker, &name).await == 0
    })
    .await;
    // Scaled to zero, its tag cached: the image goes behind its back.
    let tag = backend.prepare_image().await.unwrap();
    remove_image(&docker, &tag).await;
    assert!(docker.inspect_image(&tag).await.is_err());
    let pool = Pool::start(config(1).boot_retry(once()), backend.clone(), &registry)
        .await
        .unwrap();
    let again = pool.call::<Echo>("again".into()).await;
    pool.stop().await;
    assert_eq!(again.unwrap(), "again");
    assert!(docker.inspect_image(&tag).await.is_ok(), "the image was made again");
    remove_image(&docker, &tag).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_an_executable_replaced_after_start_is_imaged_from_the_running_process() {
    let Some(docker) = engine("docker_an_executable_replaced_after_start_is_imaged_from_the_running_process").await
    else {
        return;
    };
    let (dir, exe) = runner_copy(key().as_bytes());
    let name = format!("test-replaced-{}", key());
    let mut parent = ParentProcess::spawn(&exe, &["parent", "docker-wait", &name]);
    // Once started, its file is replaced by another program.
    std::fs::remove_file(&exe).unwrap();
    small_build(&exe, &key());
    parent.say("go").await;
    parent.until("ready", WAIT).await;
    let tag = parent.image.clone().unwrap();
    support::kill(parent.child.id().unwrap(), "KILL");
    let _ = parent.child.wait().await;
    eventually("no container is left", WAIT, || async {
        containers(&docker, &name).await == 0
    })
    .await;
    remove_image(&docker, &tag).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Builds `dir/bin/app` from C, linked to `dir/lib/libflamelib.so`, with
/// `extra` linker arguments; the program prints a line from the library and
/// exits with code 3.
fn c_program(dir: &Path, extra: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::write(
        dir.join("lib.c"),
        "#include <stdio.h>\nvoid hello(void) { puts(\"hello from a linked library\"); fflush(stdout); }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("main.c"),
        "void hello(void);\nint main(void) { hello(); return 3; }\n",
    )
    .unwrap();
    let cc = |args: Vec<String>| {
        let status = std::process::Command::new("cc").args(&args).status().expect("cc runs");
        assert!(status.success(), "cc {args:?}");
    };
    let p = |rel: &str| dir.join(rel).to_str().unwrap().to_owned();
    cc(vec![
        "-shared".into(),
        "-fPIC".into(),
        "-o".into(),
        p("lib/libflamelib.so"),
        p("lib.c"),
    ]);
    let mut args = vec![
        "-o".into(),
        p("bin/app"),
        p("main.c"),
        format!("-L{}", p("lib")),
        "-lflamelib".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    cc(args);
    dir.join("bin/app")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_a_library_ldd_cannot_find_fails_the_image_build_naming_it() {
    let Some(_docker) = engine("docker_a_library_ldd_cannot_find_fails_the_image_build_naming_it").await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("flame-c-{}", key()));
    let app = c_program(&dir, &[]);
    let err = DockerBackend::new()
        .image(Image::Executable(app.clone()))
        .prepare_image()
        .await
        .unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    let err = err.to_string();
    assert!(err.contains("libflamelib.so"), "{err}");
    assert!(err.contains("ldd finds no"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_origin_relative_runpaths_and_static_executables_run_in_their_image() {
    let Some(docker) = engine("docker_origin_relative_runpaths_and_static_executables_run_in_their_image").await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("flame-c-{}", key()));
    let app = c_program(&dir, &["-Wl,-rpath,$ORIGIN/../lib"]);
    std::fs::write(
        dir.join("static.c"),
        "#include <stdio.h>\nint main(void) { puts(\"hello from a static program\"); return 3; }\n",
    )
    .unwrap();
    let made = std::process::Command::new("cc")
        .args(["-static", "-o"])
        .arg(dir.join("static"))
        .arg(dir.join("static.c"))
        .status()
        .unwrap();
    assert!(made.success(), "cc -static");
    for (exe, line) in [
        (app, "hello from a linked library"),
        (dir.join("static"), "hello from a static program"),
    ] {
        let backend = DockerBackend::new().image(Image::Executable(exe.clone()));
        let tag = backend.prepare_image().await.unwrap();
        let pool = Pool::start(config(1).boot_retry(once()), backend, &support::functions::registry())
            .await
            .unwrap();
        let err = pool.call::<Echo>("x".into()).await.unwrap_err();
        pool.stop().await;
        remove_image(&docker, &tag).await;
        let Error::BootFailed { reason } = err else {
            panic!("{err:?}")
        };
        assert!(reason.contains("exited with code 3"), "{}: {reason}", exe.display());
        assert!(reason.contains(line), "{}: {reason}", exe.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
