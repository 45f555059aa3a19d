//! Frames of a video transcoded on runners and streamed back as they are
//! done: a streaming function (`RemoteStream`) sends each encoded frame
//! through its `StreamSender`, and the caller consumes them as a `Stream`,
//! with progress, while the runner is never more than a window of frames
//! ahead. Dropping a stream stops its work on the runner.
//!
//! ```text
//! cargo run --release --example transcode                      # runners as child processes
//! cargo run --release --example transcode -- --backend local   # runners in this process
//! ```
//!
//! Output of a run (runner ids and times vary):
//!
//! ```text
//! clip-a: 25% 50% 75% 100%
//! clip-b: 25% 50% 75% 100%
//! clip-a: 96 frames, 28.1 MiB raw, 3.0 MiB encoded, on runner 4d31449f
//! clip-b: 96 frames, 28.1 MiB raw, 3.0 MiB encoded, on runner ba975235
//! clip-c: stopped after 8 of 10000 frames; slots busy once it ended: 0
//! ```

use std::time::Duration;

use ractor_flame::{
    AnyBackend, ByteBuf, FnError, ItemStream, Pool, PoolConfig, ProcessBackend, Registry, RemoteStream, StreamOptions,
    StreamSender,
};
use serde::{Deserialize, Serialize};

const WIDTH: usize = 320;
const HEIGHT: usize = 320;

/// One clip to transcode.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Clip {
    name: String,
    frames: u32,
}

/// One transcoded frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Encoded {
    index: u32,
    raw_bytes: usize,
    data: ByteBuf,
}

/// Renders and encodes every frame of a clip, sending each as it is done.
/// CPU-bound work: it runs on the runner's blocking pool.
struct Transcode;

impl RemoteStream for Transcode {
    const NAME: &'static str = "transcode.frames";
    const BLOCKING: bool = true;
    type Args = Clip;
    type Item = Encoded;

    async fn run(clip: Clip, frames: StreamSender<Encoded>) -> Result<(), FnError> {
        for index in 0..clip.frames {
            let raw = render(index);
            let data = ByteBuf::from(encode(&raw));
            // Waits while the caller is a window of frames behind; fails
            // once the caller has dropped the stream.
            frames
                .send(Encoded {
                    index,
                    raw_bytes: raw.len(),
                    data,
                })
                .await?;
        }
        Ok(())
    }
}

/// A synthetic RGB frame: a gradient that moves with the frame index.
fn render(index: u32) -> Vec<u8> {
    let mut frame = Vec::with_capacity(WIDTH * HEIGHT * 3);
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            let shade = ((x + y + index as usize) / 8) as u8;
            frame.extend_from_slice(&[shade, shade / 2, 255 - shade]);
        }
    }
    frame
}

/// "Encodes" a frame: halves it in both directions, splits it into colour
/// planes, then run-length codes them as (count, byte) pairs.
fn encode(frame: &[u8]) -> Vec<u8> {
    let mut planes = [(); 3].map(|()| Vec::with_capacity(frame.len() / 12));
    for y in (0..HEIGHT).step_by(2) {
        for x in (0..WIDTH).step_by(2) {
            let at = (y * WIDTH + x) * 3;
            for (plane, byte) in planes.iter_mut().zip(&frame[at..at + 3]) {
                plane.push(*byte);
            }
        }
    }
    let mut out = Vec::new();
    let mut bytes = planes.concat().into_iter().peekable();
    while let Some(byte) = bytes.next() {
        let mut run = 1u8;
        while run < u8::MAX && bytes.peek() == Some(&byte) {
            bytes.next();
            run += 1;
        }
        out.extend_from_slice(&[run, byte]);
    }
    out
}

/// Consumes a clip's frames, printing progress at every quarter.
async fn follow(name: &str, frames: u32, mut stream: ItemStream<Encoded>) -> Result<String, ractor_flame::Error> {
    let (mut raw, mut encoded, mut shown) = (0usize, 0usize, 0);
    let mut runner = None;
    let mut progress = format!("{name}:");
    while let Some(frame) = stream.next().await {
        let frame = frame?;
        runner = runner.or(stream.runner());
        raw += frame.raw_bytes;
        encoded += frame.data.len();
        let percent = (frame.index + 1) * 100 / frames;
        if percent >= shown + 25 {
            shown = percent - percent % 25;
            progress.push_str(&format!(" {shown}%"));
        }
    }
    println!("{progress}");
    let mib = |n: usize| n as f64 / f64::from(1 << 20);
    Ok(format!(
        "{name}: {frames} frames, {:.1} MiB raw, {:.1} MiB encoded, on runner {}",
        mib(raw),
        mib(encoded),
        runner.map_or_else(|| "?".to_owned(), |r| r.to_string())
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = Registry::new().register_stream::<Transcode>();
    ractor_flame::run_if_runner(&registry).await?;

    let args: Vec<String> = std::env::args().collect();
    let backend = match args.iter().position(|a| a == "--backend").and_then(|i| args.get(i + 1)) {
        Some(name) if name != "process" => name.parse::<AnyBackend>()?,
        _ => AnyBackend::from(ProcessBackend::current_exe()?.args(Vec::<String>::new())),
    };
    let config = PoolConfig::new(2).max_concurrency(1).name("transcode");
    let pool = Pool::start(config, backend, &registry).await?;

    // Two clips at once, one runner each; at most 8 frames in flight each.
    const FRAMES: u32 = 96;
    let opts = StreamOptions::new().window(8).timeout(Duration::from_secs(120));
    let clips = ["clip-a", "clip-b"].map(|name| {
        let clip = Clip {
            name: name.to_owned(),
            frames: FRAMES,
        };
        follow(name, FRAMES, pool.stream_with::<Transcode>(clip, opts))
    });
    for summary in futures_util::future::join_all(clips).await {
        println!("{}", summary?);
    }

    // A long clip the caller gives up on: dropping the stream stops the
    // work on its runner, and the slot returns once it has.
    let clip = Clip {
        name: "clip-c".to_owned(),
        frames: 10_000,
    };
    let mut stream = pool.stream_with::<Transcode>(clip, StreamOptions::new().window(4));
    let mut taken = 0;
    while taken < 8 {
        stream.next().await.transpose()?;
        taken += 1;
    }
    drop(stream);
    let mut busy = pool.stats().await?.busy;
    for _ in 0..200 {
        if busy == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        busy = pool.stats().await?.busy;
    }
    println!("clip-c: stopped after {taken} of 10000 frames; slots busy once it ended: {busy}");
    pool.stop().await;
    Ok(())
}
