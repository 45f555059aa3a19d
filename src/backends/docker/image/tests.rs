use std::sync::mpsc;
use std::time::Duration;

use super::*;

#[test]
fn ldd_not_found_libraries_are_named() {
    let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
               \tlibflame_gone.so.1 => not found\n\
               \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
               \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
    let (libs, missing) = parse_ldd(out);
    assert_eq!(missing, ["libflame_gone.so.1"]);
    assert_eq!(
        libs,
        [
            PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
            PathBuf::from("/lib64/ld-linux-x86-64.so.2")
        ]
    );
}

#[test]
fn a_static_executable_needs_no_ldd() {
    // A 64-bit little-endian ELF header with no program headers: nothing
    // names an interpreter.
    let mut header = vec![0u8; 64];
    header[..6].copy_from_slice(b"\x7fELF\x02\x01");
    assert_eq!(elf_interpreter(&header), Ok(false));
    let dynamic = std::fs::read("/bin/sh").unwrap();
    assert_eq!(elf_interpreter(&dynamic), Ok(true));
    assert!(elf_interpreter(b"#!/bin/sh\n").unwrap_err().contains("not an ELF"));
}

#[test]
fn the_running_process_is_read_from_proc_self_exe() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let exe = rt.block_on(read(Source::CurrentExe)).unwrap();
    assert_eq!(exe.bytes, std::fs::read("/proc/self/exe").unwrap());
    assert_eq!(exe.path, std::env::current_exe().unwrap());
}

#[test]
fn reading_and_hashing_never_block_the_async_worker() {
    // The executable is a FIFO its writer fills from a task on the same
    // single-threaded runtime: were the read done on the async worker, it
    // would wait forever for a writer that can never run.
    let dir = std::env::temp_dir().join(format!("flame-fifo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("exe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let (done, result) = mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let exe = rt.block_on(async {
            let writer = tokio::spawn({
                let path = path.clone();
                async move {
                    tokio::task::yield_now().await;
                    std::fs::write(&path, b"\x7fELF from a fifo").unwrap();
                }
            });
            let exe = read(Source::Path(path)).await;
            writer.await.unwrap();
            exe
        });
        let _ = done.send(exe.map(|e| e.bytes));
    });
    let outcome = result.recv_timeout(Duration::from_secs(5));
    if outcome.is_err() {
        // Unblock the stuck reader before failing.
        let _ = std::fs::write(&fifo, b"");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let bytes = outcome.expect("the read finished while its writer needed the async worker");
    assert_eq!(bytes.unwrap(), b"\x7fELF from a fifo");
}

#[test]
fn json_strings_escape_quotes() {
    assert_eq!(json_string(r#"/a "b"\c"#), r#""/a \"b\"\\c""#);
}

#[test]
fn library_paths_through_dot_dot_land_in_real_directories() {
    assert_eq!(
        relative(Path::new("/opt/app/bin/../lib/./libfoo.so")),
        PathBuf::from("opt/app/lib/libfoo.so")
    );
}

#[test]
fn import_changes_go_one_per_parameter() {
    let joined = "fromSrc=-&changes=ENTRYPOINT+%5B%22%2Fx%22%5D%0ALABEL+ractor-flame.exe%3D1f&platform=";
    assert_eq!(
        split_changes(joined),
        "fromSrc=-&changes=ENTRYPOINT+%5B%22%2Fx%22%5D&changes=LABEL+ractor-flame.exe%3D1f&platform="
    );
    assert_eq!(
        split_changes("fromSrc=-&changes=ENV+A%3D1"),
        "fromSrc=-&changes=ENV+A%3D1"
    );
    assert_eq!(split_changes("all=true"), "all=true");
}

#[test]
fn the_imported_image_id_is_read_from_either_field() {
    let docker = bollard::models::CreateImageInfo {
        status: Some("sha256:8d8d".into()),
        ..Default::default()
    };
    assert_eq!(imported_id(&docker).as_deref(), Some("sha256:8d8d"));
    let podman = bollard::models::CreateImageInfo {
        id: Some("sha256:47c5".into()),
        status: Some("sha256:47c5".into()),
        ..Default::default()
    };
    assert_eq!(imported_id(&podman).as_deref(), Some("sha256:47c5"));
    let progress = bollard::models::CreateImageInfo {
        status: Some("Importing".into()),
        ..Default::default()
    };
    assert_eq!(imported_id(&progress), None);
}

#[test]
fn local_names_lose_the_registry_an_engine_adds() {
    assert_eq!(short_name("localhost/ractor-flame-runner:ab"), "ractor-flame-runner:ab");
    assert_eq!(
        short_name("docker.io/library/ractor-flame-runner:ab"),
        "ractor-flame-runner:ab"
    );
    assert_eq!(short_name("ractor-flame-runner:ab"), "ractor-flame-runner:ab");
    assert_eq!(short_name("registry.example/x:1"), "registry.example/x:1");
}
