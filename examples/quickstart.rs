//! Quickstart: fan a CPU job out over an elastic pool, watch it grow to `max`
//! runners and shrink back to zero.
//!
//! The job: 48 synthetic 512x512 RGB "photos" (generated from a seed on the
//! runner, so arguments stay small), each box-filtered down to a 64x64
//! thumbnail and checksummed.
//!
//! ```text
//! cargo run --release --example quickstart                       # runners in this process
//! cargo run --release --example quickstart -- --backend process  # runners as child processes
//! cargo run --release --example quickstart -- --backend docker   # runners as containers
//! ```
//!
//! Expected output: `grow` lines up to 4 runners, one line per thumbnail,
//! a peak of 4 runners, `shrink` lines down to 0, "scaled to zero after ...",
//! and a summary with the wall time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ractor_flame::{FnError, LocalBackend, Pool, PoolConfig, PoolEvent, ProcessBackend, Registry, RemoteFn};
use serde::{Deserialize, Serialize};

/// One thumbnail job.
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
}

/// Generates the photo, box-filters it down by `factor`, checksums the result.
struct Thumbnail;

impl RemoteFn for Thumbnail {
    const NAME: &'static str = "quickstart.thumbnail";
    type Args = Photo;
    type Output = Thumb;

    async fn run(photo: Photo) -> Result<Thumb, FnError> {
        if photo.factor == 0 || photo.size % photo.factor != 0 {
            return Err(FnError::msg("the size must be a multiple of the factor"));
        }
        // CPU work belongs off the async workers.
        tokio::task::spawn_blocking(move || thumbnail(&photo))
            .await
            .map_err(FnError::from)
    }
}

fn thumbnail(photo: &Photo) -> Thumb {
    let (size, factor) = (photo.size as usize, photo.factor as usize);
    // A deterministic "photo": xorshift noise over a gradient.
    let mut state = photo.seed | 1;
    let mut pixels = vec![0u8; size * size * 3];
    for (i, px) in pixels.iter_mut().enumerate() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *px = ((i / 3 % size) as u64 + (state & 0x3f)) as u8;
    }
    let out = size / factor;
    let mut thumb = vec![0u8; out * out * 3];
    for y in 0..out {
        for x in 0..out {
            for c in 0..3 {
                let mut sum = 0u32;
                for dy in 0..factor {
                    for dx in 0..factor {
                        sum += u32::from(pixels[((y * factor + dy) * size + x * factor + dx) * 3 + c]);
                    }
                }
                thumb[(y * out + x) * 3 + c] = (sum / (factor * factor) as u32) as u8;
            }
        }
    }
    // FNV-1a over the thumbnail.
    let checksum = thumb.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    Thumb {
        width: out as u32,
        height: out as u32,
        checksum,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `RUST_LOG=ractor_flame=info` shows the runners' lifecycle too.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let registry = Registry::new().register::<Thumbnail>();
    // On a runner (process or docker backend) this serves and exits.
    ractor_flame::run_if_runner(&registry).await?;

    let args: Vec<String> = std::env::args().collect();
    let backend = flag(&args, "--backend").unwrap_or_else(|| "local".into());
    let jobs: u64 = flag(&args, "--jobs").map(|j| j.parse()).transpose()?.unwrap_or(48);

    let peak = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&peak);
    let config = PoolConfig::new(4)
        .name("quickstart")
        .max_concurrency(2)
        .idle_shutdown_after(Duration::from_millis(500))
        .on_grow_start(|e| {
            if let PoolEvent::GrowStart { target } = e {
                println!("grow   -> booting runner {target}");
            }
        })
        .on_grow_end(move |e| {
            if let PoolEvent::GrowEnd { result, count } = e {
                seen.fetch_max(*count, Ordering::Relaxed);
                match result {
                    Ok(()) => println!("grow   -> {count} runners"),
                    Err(err) => println!("grow   -> failed: {err}"),
                }
            }
        })
        .on_shrink(|e| {
            if let PoolEvent::Shrink { count } = e {
                println!("shrink -> {count} runners");
            }
        });

    let pool = match backend.as_str() {
        "local" => Pool::start(config, LocalBackend::new(), &registry).await?,
        "process" => Pool::start(config, ProcessBackend::current_exe()?, &registry).await?,
        "docker" => Pool::start(config, ractor_flame::DockerBackend::new(), &registry).await?,
        other => return Err(format!("unknown backend `{other}` (local, process or docker)").into()),
    };
    println!("pool `quickstart` on the {backend} backend: max 4 runners, 2 jobs each, {jobs} jobs");

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..jobs {
        let pool = pool.clone();
        tasks.spawn(async move {
            let photo = Photo {
                seed: splitmix64(n),
                size: 512,
                factor: 8,
            };
            (n, pool.call::<Thumbnail>(photo).await)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (n, thumb) = done?;
        let thumb = thumb?;
        println!(
            "thumb {n:>2}: {}x{} checksum {:016x}",
            thumb.width, thumb.height, thumb.checksum
        );
    }
    let burst = started.elapsed();
    println!(
        "{jobs} thumbnails in {burst:.2?}; peak of {} runners",
        peak.load(Ordering::Relaxed)
    );

    let idle_since = Instant::now();
    loop {
        let stats = pool.stats().await?;
        if stats.runners + stats.booting == 0 {
            println!("scaled to zero after {:.2?} idle", idle_since.elapsed());
            break;
        }
        if idle_since.elapsed() > Duration::from_secs(10) {
            println!("still {} runners after 10 s", stats.runners);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.stop().await;
    println!("done: {jobs} jobs, wall time {:.2?}", started.elapsed());
    Ok(())
}

/// A well-mixed seed per job.
fn splitmix64(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The value after `name` in `args`, if any.
fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}
