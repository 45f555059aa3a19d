//! Quickstart: fan a CPU job out over an elastic pool, watch it grow to `max`
//! runners and scale back to zero.
//!
//! The job: 48 synthetic 256x256 RGB "photos", each generated from a seed on
//! the runner (so the arguments stay a few bytes), denoised with a 3x3 box
//! blur, box-filtered 4x down to a 64x64 thumbnail and checksummed (FNV-1a).
//! All 48 calls are made at once; the pool (max 4 runners, 2 calls each)
//! queues what does not fit, boots runners up to `max`, and lets them stop
//! themselves 500 ms after the burst.
//!
//! ```text
//! cargo run --release --example quickstart                       # runners are tasks in this process
//! cargo run --release --example quickstart -- --backend process  # runners are child processes
//! cargo run --release --example quickstart -- --jobs 200         # more photos
//! ```
//!
//! (`-- --backend docker` runs the runners as containers, with the default
//! `docker` feature and a Docker Engine.)
//!
//! Expected output, in this order (timings from one `--release` run on a
//! 2-core machine; yours will differ):
//!
//! ```text
//! pool `quickstart` on the local backend: max 4 runners x 2 calls, 48 jobs
//! grow   -> 1 runner
//! booted -> runner #1 ready
//! grow   -> 2 runners
//! ...                                   (up to 4 runners)
//! thumb 17: 64x64 checksum 0x5d2a...  runner 3f2ab1c0 (pid 4242)
//! ...                                   (48 lines, in completion order)
//! 48 thumbnails in 59 ms
//! pool stats after the burst: 4 runners (max 4), 0 booting, 0 busy, 0 waiting
//! peak during the burst: 4 runners, 8 busy slots, 36 callers waiting
//! jobs per runner: 3f2ab1c0 13, 8c01d2e4 12, ...
//! shrink -> 3 runners
//! ...                                   (down to 0)
//! scaled to zero after 513 ms
//! done: 48 jobs on the local backend, 0 failed, wall time 574 ms
//! ```
//!
//! On the process backend every runner is a copy of this binary: `main` calls
//! [`ractor_flame::run_if_runner`] first, which turns such a copy into a
//! runner (it never gets past that line), so the pids differ per runner.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ractor_flame::{AnyBackend, FnError, Pool, PoolConfig, PoolEvent, Registry, RemoteFn};
use serde::{Deserialize, Serialize};

/// Runners at most.
const MAX_RUNNERS: usize = 4;
/// Calls per runner at once.
const MAX_CONCURRENCY: usize = 2;
/// Side of a photo, in pixels.
const SIZE: u32 = 256;
/// Downsampling factor: 256 / 4 = 64.
const FACTOR: u32 = 4;

/// One thumbnail job: how to make the photo, not the photo itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Photo {
    seed: u64,
    size: u32,
    factor: u32,
}

/// What a runner sends back.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Thumb {
    width: u32,
    height: u32,
    checksum: u64,
    /// The runner that made it (short id).
    runner: String,
    /// The process it ran in.
    pid: u32,
}

/// Generates the photo, blurs it, box-filters it down by `factor`, and
/// checksums the thumbnail.
struct Thumbnail;

impl RemoteFn for Thumbnail {
    const NAME: &'static str = "quickstart.thumbnail";
    type Args = Photo;
    type Output = Thumb;

    async fn run(photo: Photo) -> Result<Thumb, FnError> {
        if photo.size == 0 || photo.factor == 0 || photo.size % photo.factor != 0 {
            return Err(FnError::msg("the size must be a non-zero multiple of the factor"));
        }
        // Read on the runner's task, before moving to a blocking thread.
        let runner = ractor_flame::current_runner().map_or_else(|| "?".to_owned(), |id| id.to_string());
        // CPU work belongs off the async workers.
        let (width, height, checksum) = tokio::task::spawn_blocking(move || thumbnail(&photo))
            .await
            .map_err(FnError::from)?;
        Ok(Thumb {
            width,
            height,
            checksum,
            runner,
            pid: std::process::id(),
        })
    }
}

/// The CPU work: returns (width, height, checksum) of the thumbnail.
fn thumbnail(photo: &Photo) -> (u32, u32, u64) {
    let (size, factor) = (photo.size as usize, photo.factor as usize);
    let pixels = generate(photo.seed, size);
    let smooth = blur3(&pixels, size);
    let out = size / factor;
    let mut thumb = vec![0u8; out * out * 3];
    for y in 0..out {
        for x in 0..out {
            for c in 0..3 {
                let mut sum = 0u32;
                for dy in 0..factor {
                    for dx in 0..factor {
                        sum += u32::from(smooth[((y * factor + dy) * size + x * factor + dx) * 3 + c]);
                    }
                }
                thumb[(y * out + x) * 3 + c] = (sum / (factor * factor) as u32) as u8;
            }
        }
    }
    (out as u32, out as u32, fnv1a(&thumb))
}

/// A deterministic RGB "photo": xorshift noise over a diagonal gradient.
fn generate(seed: u64, size: usize) -> Vec<u8> {
    let mut state = seed | 1;
    let mut pixels = vec![0u8; size * size * 3];
    for (i, px) in pixels.iter_mut().enumerate() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let (x, y) = (i / 3 % size, i / 3 / size);
        *px = ((x + y) as u64 / 2 + (state & 0x3f)) as u8;
    }
    pixels
}

/// A 3x3 box blur of an RGB image (edges clamped).
fn blur3(pixels: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; pixels.len()];
    for y in 0..size {
        let rows = y.saturating_sub(1)..=(y + 1).min(size - 1);
        for x in 0..size {
            let cols = x.saturating_sub(1)..=(x + 1).min(size - 1);
            let n = (rows.clone().count() * cols.clone().count()) as u32;
            for c in 0..3 {
                let mut sum = 0u32;
                for ny in rows.clone() {
                    for nx in cols.clone() {
                        sum += u32::from(pixels[(ny * size + nx) * 3 + c]);
                    }
                }
                out[(y * size + x) * 3 + c] = (sum / n) as u8;
            }
        }
    }
    out
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The most the sampler saw at once.
#[derive(Debug, Default, Clone, Copy)]
struct Peak {
    runners: usize,
    busy: usize,
    waiting: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `RUST_LOG=ractor_flame=info` shows the pool's own lifecycle events too.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let registry = Registry::new().register::<Thumbnail>();
    // On a runner (process or docker backend) this serves and exits; on the
    // parent it returns at once.
    ractor_flame::run_if_runner(&registry).await?;

    let args: Vec<String> = std::env::args().skip(1).collect();
    let backend = flag(&args, "--backend")?.unwrap_or_else(|| "local".to_owned());
    let jobs: u64 = match flag(&args, "--jobs")? {
        Some(n) => n.parse().map_err(|e| format!("--jobs {n}: {e}"))?,
        None => 48,
    };

    let ready = Arc::new(AtomicUsize::new(0));
    let (on_up, on_down) = (Arc::clone(&ready), Arc::clone(&ready));
    let config = PoolConfig::new(MAX_RUNNERS)
        .name("quickstart")
        .min(0)
        .max_concurrency(MAX_CONCURRENCY)
        .idle_shutdown_after(Duration::from_millis(500))
        .on_grow_start(|event| {
            if let PoolEvent::GrowStart { target, .. } = event {
                println!("grow   -> {}", runners(*target));
            }
        })
        .on_grow_end(move |event| {
            if let PoolEvent::GrowEnd { result, .. } = event {
                match result {
                    Ok(()) => println!("booted -> runner #{} ready", on_up.fetch_add(1, Ordering::Relaxed) + 1),
                    Err(err) => println!("booted -> failed: {err}"),
                }
            }
        })
        .on_shrink(move |event| {
            if let PoolEvent::Shrink { count, .. } = event {
                on_down.fetch_sub(1, Ordering::Relaxed);
                println!("shrink -> {}", runners(*count));
            }
        });

    // `local`, `process` (runners re-run this executable with the same
    // arguments) or `docker`: one `Pool::start` whatever the choice.
    let chosen: AnyBackend = backend.parse()?;
    let pool = Pool::start(config, chosen, &registry).await?;
    println!(
        "pool `{}` on the {backend} backend: max {MAX_RUNNERS} runners x {MAX_CONCURRENCY} calls, {jobs} jobs",
        pool.name()
    );

    // Sample the pool's stats while the burst runs.
    let burst_over = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (pool, burst_over) = (pool.clone(), Arc::clone(&burst_over));
        async move {
            let mut peak = Peak::default();
            while !burst_over.load(Ordering::Relaxed) {
                if let Ok(s) = pool.stats().await {
                    peak.runners = peak.runners.max(s.runners);
                    peak.busy = peak.busy.max(s.busy);
                    peak.waiting = peak.waiting.max(s.waiting);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        }
    });

    // The burst: every job at once.
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..jobs {
        let pool = pool.clone();
        tasks.spawn(async move {
            let photo = Photo {
                seed: splitmix64(n),
                size: SIZE,
                factor: FACTOR,
            };
            (n, pool.call::<Thumbnail>(photo).await)
        });
    }
    let mut per_runner = BTreeMap::<String, usize>::new();
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        match done? {
            (n, Ok(t)) => {
                println!(
                    "thumb {n:>2}: {}x{} checksum {:#018x}  runner {} (pid {})",
                    t.width, t.height, t.checksum, t.runner, t.pid
                );
                *per_runner.entry(t.runner).or_default() += 1;
            }
            (n, Err(err)) => {
                println!("thumb {n:>2}: failed: {err}");
                failed += 1;
            }
        }
    }
    let burst = started.elapsed();
    burst_over.store(true, Ordering::Relaxed);
    let peak = sampler.await?;
    println!("{} thumbnails in {} ms", jobs - failed, burst.as_millis());

    let s = pool.stats().await?;
    println!(
        "pool stats after the burst: {} (max {MAX_RUNNERS}), {} booting, {} busy, {} waiting",
        runners(s.runners),
        s.booting,
        s.busy,
        s.waiting
    );
    println!(
        "peak during the burst: {}, {} busy slots, {} callers waiting",
        runners(peak.runners),
        peak.busy,
        peak.waiting
    );
    let spread: Vec<String> = per_runner.iter().map(|(r, n)| format!("{r} {n}")).collect();
    println!("jobs per runner: {}", spread.join(", "));

    // Nothing more to do: the runners stop themselves once idle.
    let idle_since = Instant::now();
    loop {
        let s = pool.stats().await?;
        if s.runners + s.booting == 0 {
            println!("scaled to zero after {} ms", idle_since.elapsed().as_millis());
            break;
        }
        if idle_since.elapsed() > Duration::from_secs(10) {
            println!("still {} after 10 s; stopping the pool", runners(s.runners + s.booting));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.stop().await;
    println!(
        "done: {jobs} jobs on the {backend} backend, {failed} failed, wall time {} ms",
        started.elapsed().as_millis()
    );
    if failed > 0 {
        return Err(format!("{failed} jobs failed").into());
    }
    Ok(())
}

/// "1 runner", "3 runners".
fn runners(n: usize) -> String {
    if n == 1 {
        "1 runner".to_owned()
    } else {
        format!("{n} runners")
    }
}

/// A well-mixed seed per job.
fn splitmix64(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The value after `name` in `args` (`--name value` or `--name=value`).
fn flag(args: &[String], name: &str) -> Result<Option<String>, String> {
    for (i, arg) in args.iter().enumerate() {
        if arg == name {
            return match args.get(i + 1) {
                Some(value) => Ok(Some(value.clone())),
                None => Err(format!("{name} needs a value")),
            };
        }
        if let Some(value) = arg.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')) {
            return Ok(Some(value.to_owned()));
        }
    }
    Ok(None)
}
