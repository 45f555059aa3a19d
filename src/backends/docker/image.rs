//! Runner images made from an executable, with no registry and no
//! Dockerfile: `docker import` of a root fs holding the executable at its
//! own absolute path (so `$ORIGIN`-relative library paths resolve as on the
//! host) and the shared libraries it links, tagged by a hash of both so the
//! import runs once per build.
//!
//! # What goes in
//!
//! - The bytes of the running process (`/proc/self/exe`) for
//!   [`Image::CurrentExe`](super::Image::CurrentExe): an executable deleted
//!   or replaced on disk after start still images the build that runs.
//! - No libraries for a static executable (no ELF interpreter); `ldd` is
//!   not needed then. A dynamic one gets the libraries `ldd` lists, with
//!   the loader; a library `ldd` cannot find fails the build, naming it.
//! - Reading and hashing run on Tokio's blocking pool, never on an async
//!   worker.
//!
//! # Claims and pruning
//!
//! Each parent process that uses an image tags it with a *claim*
//! (`ractor-flame-runner:<hash>-claim-<process key>`). A parent's first
//! use of an image removes the images of other builds of the same
//! executable path whose every claim belongs to a provably dead process
//! (see [`liveness`](super::liveness)), and the claims of dead processes on
//! every image of that path, its own included; an image a live parent (or
//! one that cannot be checked from here) may still boot is kept. A parent whose
//! image was removed anyway (by hand, say) imports it again on its next
//! boot.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use bollard::Docker;
use bollard::query_parameters::{
    CreateImageOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptions, TagImageOptionsBuilder,
};
use futures_util::StreamExt as _;
use ractor_flame_actors::BackendError;

use super::liveness::{Liveness, ProcessKey};

#[cfg(test)]
mod tests;

/// The repository of images made from executables.
pub(crate) const REPO: &str = "ractor-flame-runner";

/// Label on an imported image: which executable path it was made from.
const LABEL_EXE: &str = "ractor-flame.exe";

/// Between an image's hash and a claiming process's key, in a claim tag.
const CLAIM: &str = "-claim-";

/// Where the executable comes from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// The running process.
    CurrentExe,
    /// A file.
    Path(PathBuf),
}

/// An executable read and hashed, ready to image.
#[derive(Debug)]
pub(crate) struct Exe {
    /// Its bytes.
    pub(crate) bytes: Vec<u8>,
    /// Its absolute path in the image (the entrypoint).
    pub(crate) path: PathBuf,
    /// The file `ldd` inspects: `path` while it is still the file read,
    /// else the running process's `/proc/<pid>/exe`.
    pub(crate) ldd_target: PathBuf,
    /// Hash of `path` and `bytes`: the image tag.
    pub(crate) hash: u64,
}

/// Tags already made or found in this process, by file identity (device,
/// inode, size, modification time): hashing a large executable is not free.
type Known = Mutex<HashMap<(u64, u64, u64, i64, i64), String>>;

fn known() -> &'static Known {
    static KNOWN: OnceLock<Known> = OnceLock::new();
    KNOWN.get_or_init(Mutex::default)
}

/// Makes (or finds) the image for `source`, claims it for this process and
/// returns its tag. One import at a time in this process: pools booting
/// together wait for the first.
pub(crate) async fn ensure(docker: &Docker, source: Source) -> Result<String, BackendError> {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let file = match &source {
        Source::CurrentExe => PathBuf::from("/proc/self/exe"),
        Source::Path(path) => path.clone(),
    };
    let meta = tokio::fs::metadata(&file)
        .await
        .map_err(|e| BackendError::new(format!("cannot read {}: {e}", file.display())))?;
    let key = (meta.dev(), meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec());
    let cached = known().lock().expect("poisoned").get(&key).cloned();
    if let Some(tag) = cached
        && docker.inspect_image(&tag).await.is_ok()
    {
        claim(docker, &tag).await;
        return Ok(tag);
    }
    let exe = read(source).await?;
    let label = exe_label(&exe.path);
    let tag = make(docker, exe).await?;
    claim(docker, &tag).await;
    // Once per image in this process (later boots take the cached path):
    // what dead parents left of this executable goes, their claims on this
    // very image included.
    prune(docker, &label, &tag).await;
    known().lock().expect("poisoned").insert(key, tag.clone());
    Ok(tag)
}

/// Reads and hashes the executable on the blocking pool.
pub(crate) async fn read(source: Source) -> Result<Exe, BackendError> {
    tokio::task::spawn_blocking(move || read_blocking(&source))
        .await
        .map_err(|e| BackendError::new(format!("reading the executable: {e}")))?
}

/// Blocking: only ever called through [`read`].
fn read_blocking(source: &Source) -> Result<Exe, BackendError> {
    let cannot = |p: &Path, e: std::io::Error| BackendError::new(format!("cannot read {}: {e}", p.display()));
    let (bytes, path, ldd_target) = match source {
        Source::Path(path) => {
            let path = std::fs::canonicalize(path).map_err(|e| cannot(path, e))?;
            let bytes = std::fs::read(&path).map_err(|e| cannot(&path, e))?;
            (bytes, path.clone(), path)
        }
        Source::CurrentExe => {
            let running = Path::new("/proc/self/exe");
            let bytes = std::fs::read(running).map_err(|e| cannot(running, e))?;
            let link = std::fs::read_link(running).map_err(|e| cannot(running, e))?;
            let link = link.to_string_lossy();
            let path = PathBuf::from(link.strip_suffix(" (deleted)").unwrap_or(&link));
            // `ldd` resolves `$ORIGIN` from the path it is given: the
            // original path while it is still the running file.
            let same = |p: &Path| {
                let (a, b) = (std::fs::metadata(p), std::fs::metadata(running));
                matches!((a, b), (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino())
            };
            let ldd_target = if same(&path) {
                path.clone()
            } else {
                PathBuf::from(format!("/proc/{}/exe", std::process::id()))
            };
            (bytes, path, ldd_target)
        }
    };
    if path.to_str().is_none() {
        return Err(BackendError::new(format!(
            "cannot image {}: its path is not UTF-8",
            path.display()
        )));
    }
    let mut hashed = path.as_os_str().as_encoded_bytes().to_vec();
    hashed.push(0);
    let hash = fnv64(&hashed) ^ fnv64(&bytes);
    Ok(Exe {
        bytes,
        path,
        ldd_target,
        hash,
    })
}

async fn make(docker: &Docker, exe: Exe) -> Result<String, BackendError> {
    let hash = format!("{:016x}", exe.hash);
    let tag = format!("{REPO}:{hash}");
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    let libs = match elf_interpreter(&exe.bytes) {
        Err(why) => return Err(BackendError::new(format!("cannot image {}: {why}", exe.path.display()))),
        Ok(false) => Vec::new(),
        Ok(true) => shared_libraries(&exe.ldd_target, &exe.path).await?,
    };
    let path = exe.path.clone();
    let label = exe_label(&path);
    let entrypoint = format!("ENTRYPOINT [{}]", json_string(path.to_str().unwrap_or("/runner")));
    let root_fs = tokio::task::spawn_blocking(move || root_fs(&exe, &libs))
        .await
        .map_err(|e| BackendError::new(format!("root fs: {e}")))?
        .map_err(|e| BackendError::new(format!("root fs for {}: {e}", path.display())))?;
    // Imported untagged, then tagged by the id the engine reports: Podman
    // 4.3 ignores the import's `tag` parameter (it would tag `:latest`),
    // and Docker takes the explicit tag the same way.
    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .changes(vec![entrypoint, format!("LABEL {LABEL_EXE}={label}")])
        .build();
    let importer = docker.clone().with_request_modifier(one_change_per_parameter);
    let mut progress = importer.create_image(Some(options), Some(bollard::body_full(root_fs.into())), None);
    let mut id = None;
    while let Some(step) = progress.next().await {
        let step = step.map_err(|e| BackendError::new(format!("image import failed: {e}")))?;
        if let Some(found) = imported_id(&step) {
            id = Some(found);
        }
    }
    let id = id.ok_or_else(|| BackendError::new("image import failed: the engine named no image id"))?;
    let options = TagImageOptionsBuilder::new().repo(REPO).tag(&hash).build();
    docker
        .tag_image(&id, Some(options))
        .await
        .map_err(|e| BackendError::new(format!("cannot tag the imported image {id} as {tag}: {e}")))?;
    tracing::info!(target: "ractor_flame::docker", image = %tag, exe = %path.display(), "runner image imported");
    Ok(tag)
}

/// The image id in an import's progress: Docker reports it as the status
/// (`sha256:...`), Podman as the status and the id.
fn imported_id(step: &bollard::models::CreateImageInfo) -> Option<String> {
    [step.id.as_deref(), step.status.as_deref()]
        .into_iter()
        .flatten()
        .find(|s| s.starts_with("sha256:"))
        .map(str::to_owned)
}

/// Rewrites an import's `changes` query parameter, which bollard sends as
/// one value with the changes joined by newlines, into one parameter per
/// change. Docker reads either form (it joins the values with newlines
/// again); Podman 4.3 takes each value as a single instruction, so the
/// joined form would make the `LABEL` part of a shell-form `ENTRYPOINT`.
fn one_change_per_parameter(mut request: bollard::BollardRequest) -> bollard::BollardRequest {
    let Some(query) = request.uri().query() else {
        return request;
    };
    if !request.uri().path().ends_with("/images/create") {
        return request;
    }
    let split = split_changes(query);
    if split == query {
        return request;
    }
    let uri = request.uri();
    let origin = match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => String::new(),
    };
    let uri = format!("{origin}{}?{split}", uri.path());
    match uri.parse() {
        Ok(uri) => *request.uri_mut() = uri,
        Err(e) => tracing::debug!(target: "ractor_flame::docker", error = %e, "import query kept as it was"),
    }
    request
}

/// `changes=A%0AB` (URL-encoded, a newline between changes) as
/// `changes=A&changes=B`; every other parameter as it is.
fn split_changes(query: &str) -> String {
    query
        .split('&')
        .flat_map(|param| match param.strip_prefix("changes=") {
            Some(value) => value.split("%0A").map(|c| format!("changes={c}")).collect(),
            None => vec![param.to_owned()],
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn exe_label(exe: &Path) -> String {
    format!("{:016x}", fnv64(exe.as_os_str().as_encoded_bytes()))
}

/// Tags `tag` with this process's claim (where `/proc` can name this
/// process). Best effort: a failure only weakens pruning's knowledge.
async fn claim(docker: &Docker, tag: &str) {
    let (Some(me), Some(hash)) = (ProcessKey::current(), tag.strip_prefix(&format!("{REPO}:"))) else {
        return;
    };
    let claim = format!("{hash}{CLAIM}{}", me.encode());
    let options = TagImageOptionsBuilder::new().repo(REPO).tag(&claim).build();
    if let Err(e) = docker.tag_image(tag, Some(options)).await {
        tracing::debug!(target: "ractor_flame::docker", image = tag, error = %e, "image not claimed");
    }
}

/// Removes the images of other builds of the executable labelled `label`,
/// except those a live or unverifiable parent claims, and drops the claims
/// of dead parents on every image of it, `current` included (whose image
/// and plain tag stay). Engine errors (an image a container still uses) are
/// only logged.
async fn prune(docker: &Docker, label: &str, current: &str) {
    let filters = HashMap::from([("label", vec![format!("{LABEL_EXE}={label}")])]);
    let options = ListImagesOptionsBuilder::new().filters(&filters).build();
    let images = match docker.list_images(Some(options)).await {
        Ok(images) => images,
        Err(e) => {
            tracing::debug!(target: "ractor_flame::docker", error = %e, "older runner images not listed");
            return;
        }
    };
    for image in images {
        // The current image is kept whoever claims it.
        let mut kept = image.repo_tags.iter().any(|t| short_name(t) == current);
        let mut untag = Vec::new();
        let mut plain = Vec::new();
        for tag in &image.repo_tags {
            match short_name(tag).split_once(CLAIM).map(|(_, key)| ProcessKey::parse(key)) {
                None => plain.push(tag),
                Some(Some(key)) if key.liveness() == Liveness::Dead => untag.push(tag),
                // A live claimant, or one that cannot be checked from here.
                Some(_) => kept = true,
            }
        }
        if !kept {
            untag.extend(plain);
        }
        for tag in untag {
            // Not forced: the last tag's removal deletes the image only
            // when no container uses it.
            if let Err(e) = docker.remove_image(tag, None::<RemoveImageOptions>, None).await {
                tracing::debug!(target: "ractor_flame::docker", image = %tag, error = %e, "older runner image kept");
            }
        }
    }
}

/// An image name without the registry part an engine adds to a local
/// name: Podman lists `ractor-flame-runner:<hash>` as
/// `localhost/ractor-flame-runner:<hash>` (or under `docker.io/library/`).
pub(crate) fn short_name(name: &str) -> &str {
    ["localhost/", "docker.io/library/"]
        .into_iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .unwrap_or(name)
}

/// Whether an ELF executable names an interpreter (is dynamically linked).
fn elf_interpreter(bytes: &[u8]) -> Result<bool, String> {
    const PT_INTERP: u32 = 3;
    if bytes.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF executable (a runner image holds only the executable and its libraries)".into());
    }
    let wide = match bytes.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err("unknown ELF class".into()),
    };
    let little = bytes.get(5) == Some(&1);
    let int = |at: usize, len: usize| -> Result<u64, String> {
        let field = bytes.get(at..at + len).ok_or("truncated ELF header")?;
        let mut v = 0u64;
        for i in 0..len {
            let b = if little { field[len - 1 - i] } else { field[i] };
            v = (v << 8) | u64::from(b);
        }
        Ok(v)
    };
    let (phoff, phentsize, phnum) = if wide {
        (int(0x20, 8)?, int(0x36, 2)?, int(0x38, 2)?)
    } else {
        (int(0x1c, 4)?, int(0x2a, 2)?, int(0x2c, 2)?)
    };
    for i in 0..phnum {
        let at = usize::try_from(phoff + i * phentsize).map_err(|_| "bad ELF header")?;
        if int(at, 4)? == u64::from(PT_INTERP) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The shared libraries `target` needs, with the loader, as `ldd` lists
/// them; an error naming any it cannot find.
async fn shared_libraries(target: &Path, shown: &Path) -> Result<Vec<PathBuf>, BackendError> {
    let out = tokio::process::Command::new("ldd")
        .arg(target)
        .output()
        .await
        .map_err(|e| BackendError::new(format!("ldd (needed to image a dynamic executable): {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (libs, missing) = parse_ldd(&text);
    if !missing.is_empty() {
        return Err(BackendError::new(format!(
            "cannot image {}: ldd finds no {}",
            shown.display(),
            missing.join(", ")
        )));
    }
    if !out.status.success() {
        return Err(BackendError::new(format!(
            "cannot image {}: ldd failed: {}",
            shown.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(libs)
}

/// Library paths and the names `ldd` reports "not found", from its output.
fn parse_ldd(text: &str) -> (Vec<PathBuf>, Vec<String>) {
    let (mut libs, mut missing) = (Vec::new(), Vec::new());
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)",
        // "libfoo.so.1 => not found", "/lib64/ld-linux-x86-64.so.2 (0x...)";
        // "linux-vdso.so.1 (0x...)" has no file.
        let path = match line.split_once("=>") {
            Some((name, rest)) if rest.trim() == "not found" => {
                missing.push(name.trim().to_owned());
                continue;
            }
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    (libs, missing)
}

/// A tar of an empty `/tmp`, the executable at its path, and the
/// libraries at theirs.
fn root_fs(exe: &Exe, libs: &[PathBuf]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o1777);
    dir.set_size(0);
    dir.set_mtime(0);
    dir.set_cksum();
    tar.append_data(&mut dir, "tmp/", std::io::empty())?;
    append(&mut tar, &exe.path, &exe.bytes)?;
    for lib in libs {
        if *lib == exe.path {
            continue;
        }
        // Read through symlinks: the image holds the real bytes at the
        // path the loader looks for.
        let bytes = std::fs::read(lib)?;
        append(&mut tar, lib, &bytes)?;
    }
    tar.into_inner()
}

fn append(tar: &mut tar::Builder<Vec<u8>>, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o755);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, relative(path), bytes)
}

/// `path` without its root and with `.` and `..` resolved lexically: `ldd`
/// reports `$ORIGIN/../lib` libraries as `/x/bin/../lib/libfoo.so`, and the
/// image holds real directories at those places.
fn relative(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// FNV-1a 64 (the project's one hash): stable across builds and
/// platforms, and enough to tell executables apart.
fn fnv64(bytes: &[u8]) -> u64 {
    ractor_flame_actors::Fnv::hash(bytes)
}
