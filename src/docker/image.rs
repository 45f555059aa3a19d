//! Runner images made from an executable, with no registry and no
//! Dockerfile: `docker import` of a root fs holding the executable at
//! `/runner` and the shared libraries `ldd` lists, tagged by the
//! executable's hash so the import runs once per build.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use bollard::Docker;
use bollard::query_parameters::{CreateImageOptionsBuilder, PruneImagesOptionsBuilder};
use futures_util::StreamExt as _;
use ractor_flame_actors::BackendError;

/// The repository of images made from executables.
pub(crate) const REPO: &str = "ractor-flame-runner";

/// Tags already made or found in this process, by executable path, size
/// and modification time: hashing a large executable is not free.
type Known = Mutex<HashMap<(PathBuf, u64, SystemTime), String>>;

fn known() -> &'static Known {
    static KNOWN: OnceLock<Known> = OnceLock::new();
    KNOWN.get_or_init(Mutex::default)
}

/// Makes (or finds) the image for `exe`; returns its tag. One import at a
/// time in this process: pools booting together wait for the first.
pub(crate) async fn ensure(docker: &Docker, exe: &Path) -> Result<String, BackendError> {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let meta = tokio::fs::metadata(exe)
        .await
        .map_err(|e| BackendError::new(format!("cannot read {}: {e}", exe.display())))?;
    let key = (
        exe.to_owned(),
        meta.len(),
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    );
    let cached = known().lock().expect("poisoned").get(&key).cloned();
    if let Some(tag) = cached
        && docker.inspect_image(&tag).await.is_ok()
    {
        return Ok(tag);
    }
    let tag = make(docker, exe).await?;
    known().lock().expect("poisoned").insert(key, tag.clone());
    Ok(tag)
}

async fn make(docker: &Docker, exe: &Path) -> Result<String, BackendError> {
    let bytes = tokio::fs::read(exe)
        .await
        .map_err(|e| BackendError::new(format!("cannot read {}: {e}", exe.display())))?;
    let tag = format!("{REPO}:{:016x}", fnv64(&bytes));
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    let libs = shared_libraries(exe).await?;
    let exe_path = exe.to_owned();
    let root_fs = tokio::task::spawn_blocking(move || root_fs(&bytes, &libs))
        .await
        .map_err(|e| BackendError::new(format!("root fs: {e}")))?
        .map_err(|e| BackendError::new(format!("root fs for {}: {e}", exe_path.display())))?;
    prune_older(docker, exe).await;
    let hash = &tag[REPO.len() + 1..];
    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(REPO)
        .tag(hash)
        .changes(vec![
            r#"ENTRYPOINT ["/runner"]"#.to_owned(),
            format!("LABEL {LABEL_EXE}={}", exe_label(exe)),
        ])
        .build();
    let mut progress = docker.create_image(Some(options), Some(bollard::body_full(root_fs.into())), None);
    while let Some(step) = progress.next().await {
        step.map_err(|e| BackendError::new(format!("image import failed: {e}")))?;
    }
    tracing::info!(target: "ractor_flame::docker", image = %tag, exe = %exe.display(), "runner image imported");
    Ok(tag)
}

/// Label on an imported image: which executable path it was made from.
const LABEL_EXE: &str = "ractor-flame.exe";

fn exe_label(exe: &Path) -> String {
    format!("{:016x}", fnv64(exe.as_os_str().as_encoded_bytes()))
}

/// Removes the unused images made from earlier builds of the same
/// executable path, so rebuilds do not pile images up. Runs before the new
/// import (a prune takes every unused image it matches). An image a
/// container still uses is kept; engine errors are only logged.
async fn prune_older(docker: &Docker, exe: &Path) {
    let filters = HashMap::from([
        ("label", vec![format!("{LABEL_EXE}={}", exe_label(exe))]),
        ("dangling", vec!["false".to_owned()]),
    ]);
    let options = PruneImagesOptionsBuilder::new().filters(&filters).build();
    if let Err(e) = docker.prune_images(Some(options)).await {
        tracing::debug!(target: "ractor_flame::docker", error = %e, "older runner images not pruned");
    }
}

/// The shared libraries `exe` needs, with the loader; none for a static
/// executable.
async fn shared_libraries(exe: &Path) -> Result<Vec<PathBuf>, BackendError> {
    let out = tokio::process::Command::new("ldd")
        .arg(exe)
        .output()
        .await
        .map_err(|e| BackendError::new(format!("ldd (needed to image a dynamic executable): {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; "linux-vdso.so.1 (0x...)" has no file.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// A tar of `/runner`, the libraries at their paths, and an empty `/tmp`.
fn root_fs(exe: &[u8], libs: &[PathBuf]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    append(&mut tar, "runner", exe, 0o755)?;
    for lib in libs {
        // Read through symlinks: the image holds the real bytes at the
        // path the loader looks for.
        let bytes = std::fs::read(lib)?;
        let path = lib.to_string_lossy();
        append(&mut tar, path.trim_start_matches('/'), &bytes, 0o755)?;
    }
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o1777);
    dir.set_size(0);
    dir.set_mtime(0);
    dir.set_cksum();
    tar.append_data(&mut dir, "tmp/", std::io::empty())?;
    tar.into_inner()
}

fn append(tar: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, path, bytes)
}

/// FNV-1a 64 over the executable: stable, and enough to tell builds apart.
fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
