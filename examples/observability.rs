//! Observability: a pool on the process backend whose metrics a Prometheus
//! exporter serves at `/metrics`, and a `fmt` subscriber that shows each
//! request's span with the work its runner did nested inside.
//!
//! ```text
//! cargo run --example observability              # three requests, one scrape, then exit
//! cargo run --example observability -- --serve   # then keep serving /metrics until Ctrl-C
//! ```
//!
//! Output of a run (times, ids and ports vary). The runner's own event
//! (`resizing`) is printed by the parent, inside the caller's `request` and
//! `flame.call` spans, tagged with the runner and the pool (the span shows
//! `runner_us`, the time the call ran on the runner, once the reply is in);
//! then the pool's series as Prometheus scrapes them, what the runner cost
//! so far among them:
//!
//! ```text
//! INFO request{id=0}:flame.call{function="resize" pool="images" runner=6f1c…}: ractor_flame::remote: resizing runner=6f1c… pool="images" remote_target=observability fields=width=640 call=1
//! INFO request{id=0}: observability: resized width=640 bytes=160
//! ...
//! metrics at http://127.0.0.1:9464/metrics
//! flame_runner_milliseconds_total{pool="images",backend="process",phase="booting"} 4
//! flame_calls_total{pool="images",function="resize",outcome="ok"} 3
//! flame_runners{pool="images"} 1
//! flame_boot_duration_seconds_count{pool="images",backend="process"} 1
//! ...
//! ```

use std::net::SocketAddr;

use ractor_flame::{FnError, Pool, PoolConfig, ProcessBackend, Registry, RemoteFn};
use tracing::Instrument as _;

/// Stands in for an image resize; logs on the runner.
struct Resize;

impl RemoteFn for Resize {
    const NAME: &'static str = "resize";
    type Args = u32;
    type Output = usize;
    async fn run(width: u32) -> Result<usize, FnError> {
        tracing::info!(width, "resizing");
        Ok(width as usize / 4)
    }
}

/// Installs the Prometheus exporter as the global `metrics` recorder,
/// serving `/metrics` on `addr` (loopback only); returns where it listens.
///
/// # Errors
///
/// When a recorder is installed already or the address cannot be used.
pub fn install_exporter(addr: SocketAddr) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    // Port 0: find a free port first (the exporter binds by itself).
    let addr = std::net::TcpListener::bind(addr)?.local_addr()?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()?;
    Ok(addr)
}

/// Reads `/metrics` from `addr` with a plain HTTP/1.0 GET; returns the body.
///
/// # Errors
///
/// When the exporter cannot be reached.
pub async fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

#[allow(dead_code)] // The test that reuses this file's helpers has its own main.
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = Registry::new().register::<Resize>();
    // On a runner: its events travel to this parent; it never returns.
    ractor_flame::run_if_runner(&registry).await?;

    // Spans at debug for the pool's `flame.call`; info for the rest.
    tracing_subscriber::fmt()
        .with_env_filter("info,ractor_flame::pool=debug")
        .init();
    let addr = install_exporter(SocketAddr::from(([127, 0, 0, 1], 9464)))
        .or_else(|_| install_exporter(SocketAddr::from(([127, 0, 0, 1], 0))))?;

    let backend = ProcessBackend::current_exe()?.args(Vec::<String>::new());
    let pool = Pool::start(PoolConfig::new(2).name("images"), backend, &registry).await?;
    for id in 0..3 {
        let request = tracing::info_span!("request", id);
        async {
            let bytes = pool.call::<Resize>(640).await?;
            tracing::info!(width = 640, bytes, "resized");
            Ok::<_, ractor_flame::Error>(())
        }
        .instrument(request)
        .await?;
    }

    println!("metrics at http://{addr}/metrics");
    for line in scrape(addr).await?.lines().filter(|l| l.starts_with("flame_")) {
        println!("{line}");
    }
    if std::env::args().any(|a| a == "--serve") {
        tokio::signal::ctrl_c().await?;
    }
    pool.stop().await;
    Ok(())
}
