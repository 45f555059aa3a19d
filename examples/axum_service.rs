//! An HTTP service that offloads CPU work to an elastic pool: the shape of
//! a thumbnail, transcode or inference endpoint.
//!
//! - Handlers reach the pool through axum's `State`; a request's body goes
//!   to a runner as the `Bytes` axum hands over, with no copy on the way
//!   out, and arrives there in a buffer of its own.
//! - Typed errors become statuses: a body's `FnError::invalid_argument` is
//!   422, a deadline 504, no slot (a full queue, a checkout timeout) 503,
//!   the rest 500. No message is matched.
//! - `GET /stats` is the pool's `PoolStats` as JSON; `GET /metrics` the
//!   Prometheus text of the library's metrics.
//! - SIGTERM (or Ctrl-C) stops in the right order: stop accepting, let
//!   every request in flight get its answer, then stop the pool (which
//!   drains its runners). The library installs no signal handler in a
//!   parent: shutting down is the application's call.
//!
//! ```sh
//! cargo run --example axum_service -- --backend process --addr 127.0.0.1:3000
//! printf 'IMG1\000\004%01000d' 7 | curl -s --data-binary @- http://127.0.0.1:3000/thumbnail | wc -c
//! curl -s http://127.0.0.1:3000/stats
//! ```
//!
//! The "image" is a stand-in so that the example needs no image crate: the
//! bytes `IMG1`, the number of blur passes (two bytes, big-endian), then
//! pixels. The work is real CPU work that checks for cancellation between
//! steps, as the heavy-work guide advises.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ractor_flame::{
    AnyBackend, Bytes, CallOptions, Error, FnError, FnErrorKind, Pool, PoolConfig, Registry, RemoteFn, current_call,
};
use serde::Deserialize;

/// The header of the stand-in image format.
const MAGIC: &[u8] = b"IMG1";

/// Shrinks an image 4:1 after its blur passes. A blocking body: it runs
/// on the runner's blocking pool, and checks between rows whether its
/// caller still waits.
struct Thumbnail;

impl RemoteFn for Thumbnail {
    const NAME: &'static str = "thumbnail";
    const BLOCKING: bool = true;
    type Args = Bytes;
    type Output = Bytes;

    async fn run(image: Bytes) -> Result<Bytes, FnError> {
        let call = current_call().expect("a remote function runs inside a call");
        let (passes, pixels) = image
            .strip_prefix(MAGIC)
            .and_then(|rest| rest.split_first_chunk::<2>())
            .filter(|(_, pixels)| !pixels.is_empty())
            .ok_or_else(|| FnError::invalid_argument("not an image (no IMG1 header)"))?;
        let mut image = pixels.to_vec();
        for _ in 0..u16::from_be_bytes(*passes) {
            for row in image.chunks_mut(1024) {
                if call.is_cancelled() {
                    // The caller hears of its deadline, not of this error.
                    return Err(FnError::cancelled());
                }
                for i in 1..row.len() {
                    row[i] = ((u16::from(row[i - 1]) + u16::from(row[i])) / 2) as u8;
                }
            }
        }
        let mut out = MAGIC.to_vec();
        out.extend(image.chunks(4).map(|px| px[0]));
        // Made from a `Vec`: it leaves the runner without a copy.
        Ok(Bytes::from(out))
    }
}

/// What every handler shares.
#[derive(Clone)]
struct App {
    pool: Pool,
    /// The total budget of a request's call: waiting for a slot, then work.
    timeout: Duration,
    metrics: PrometheusHandle,
}

#[derive(Debug, Deserialize)]
struct Params {
    /// A budget of the client's own, shorter or longer than the service's.
    timeout_ms: Option<u64>,
}

async fn thumbnail(State(app): State<App>, Query(params): Query<Params>, body: Bytes) -> Response {
    let timeout = params.timeout_ms.map_or(app.timeout, Duration::from_millis);
    let opts = CallOptions::new().timeout(timeout);
    // The body goes as it is: no copy before the socket.
    match app.pool.call_with::<Thumbnail>(body, opts).await {
        Ok(thumb) => (StatusCode::OK, thumb).into_response(),
        Err(err) => (status(&err), err.to_string()).into_response(),
    }
}

/// The status of a failed call, by the error's variant and kind.
fn status(err: &Error) -> StatusCode {
    match err {
        Error::Remote {
            kind: FnErrorKind::InvalidArgument,
            ..
        } => StatusCode::UNPROCESSABLE_ENTITY,
        Error::Remote {
            kind: FnErrorKind::Unavailable | FnErrorKind::ResourceExhausted,
            ..
        }
        | Error::CheckoutTimeout { .. }
        | Error::QueueFull { .. }
        | Error::PoolNotRunning => StatusCode::SERVICE_UNAVAILABLE,
        Error::Deadline { .. } => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn stats(State(app): State<App>) -> Response {
    match app.pool.stats().await {
        Ok(stats) => Json(stats).into_response(),
        Err(err) => (status(&err), err.to_string()).into_response(),
    }
}

async fn metrics_text(State(app): State<App>) -> String {
    app.metrics.render()
}

/// Resolves at SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    println!("shutting down: no new requests; answering those in flight");
}

/// `--name value` from the command line.
fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = Registry::new().register::<Thumbnail>();
    // A runner this binary booted serves here and exits; the service
    // never starts in it.
    ractor_flame::run_if_runner(&registry).await?;

    let backend: AnyBackend = arg("--backend").unwrap_or_else(|| "local".into()).parse()?;
    let addr: SocketAddr = arg("--addr").unwrap_or_else(|| "127.0.0.1:3000".into()).parse()?;
    let timeout = Duration::from_millis(arg("--timeout-ms").map_or(Ok(2_000), |ms| ms.parse())?);
    // Installed before the pool starts: the pool registers its series then.
    let metrics = PrometheusBuilder::new().install_recorder()?;
    let config = PoolConfig::new(4)
        .max_concurrency(2)
        .queue_capacity(16)
        .name("thumbnails");
    let pool = Pool::start(config, backend, &registry).await?;

    let app = App {
        pool: pool.clone(),
        timeout,
        metrics,
    };
    let router = Router::new()
        .route("/thumbnail", post(thumbnail))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics_text))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // Every request has its answer: now the pool drains and stops its
    // runners (none outlives this process).
    pool.stop().await;
    println!("stopped");
    Ok(())
}
