//! Streaming results: small items per second through one stream beside
//! remote casts per second in the same run, and 1 MiB items through one
//! stream beside the same bytes as one call each. Included by `report.rs`.

use std::time::Instant;

use ractor_flame::{
    ByteBuf, FnError, Pool, PoolConfig, ProcessBackend, Registry, RemoteStream, StreamOptions, StreamSender,
};

use super::{Make, Plan, cast_rate, emit};

/// Streams `0..n`.
pub(super) struct Ticks;
impl RemoteStream for Ticks {
    const NAME: &'static str = "bench.ticks";
    type Args = u64;
    type Item = u64;
    async fn run(n: u64, items: StreamSender<u64>) -> Result<(), FnError> {
        for i in 0..n {
            items.send(i).await?;
        }
        Ok(())
    }
}

/// Streams `n` byte strings of `size` bytes.
pub(super) struct Chunks;
impl RemoteStream for Chunks {
    const NAME: &'static str = "bench.chunks";
    type Args = (u32, usize);
    type Item = ByteBuf;
    async fn run((n, size): (u32, usize), items: StreamSender<ByteBuf>) -> Result<(), FnError> {
        for _ in 0..n {
            items.send(ByteBuf::from(vec![0xA5u8; size])).await?;
        }
        Ok(())
    }
}

const MIB_ITEMS: u32 = 32;

pub(super) async fn run(plan: &Plan, registry: &Registry) {
    let backend = ProcessBackend::current_exe().unwrap().args(Vec::<String>::new());
    let config = PoolConfig::new(1).name("bench-streams").max_concurrency(1_000_000);
    let pool = Pool::start(config, backend, registry).await.unwrap();
    let n = plan.casts / 4;
    // Alternating rounds, medians of three: one stream of `n` items with
    // the default window, one with a window of 256, and `n` casts.
    let (mut default, mut wide, mut casts) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        default.push(n as f64 / ticks(&pool, n, StreamOptions::DEFAULT_WINDOW).await);
        wide.push(n as f64 / ticks(&pool, n, 256).await);
        casts.push(cast_rate(&pool, n).await);
    }
    for v in [&mut default, &mut wide, &mut casts] {
        v.sort_by(f64::total_cmp);
    }
    emit("stream_items_per_s", default[1], "items/s");
    emit("stream_items_per_s_window_256", wide[1], "items/s");
    emit("remote_cast_throughput_per_s_beside_stream", casts[1], "casts/s");
    emit("stream_vs_cast_ratio", default[1] / casts[1], "ratio");
    // 1 MiB items: one stream of 32 (a window of 2) beside 32 calls that
    // each return 1 MiB, alternately, medians of three. Measured: wider
    // windows are slower here, not faster (0.20 ms an item with a window
    // of 1, 0.36 to 0.50 ms with 16): with many megabytes in flight the
    // allocator hands out fresh pages for every item (27k minor faults
    // against 7.5k), which costs more than the round trip a window hides.
    let (mut streamed, mut called) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let start = Instant::now();
        let opts = StreamOptions::new().window(2);
        let mut stream = pool.stream_with::<Chunks>((MIB_ITEMS, 1 << 20), opts);
        let mut got = 0;
        while let Some(item) = stream.next().await {
            got += item.unwrap().len();
        }
        assert_eq!(got, (MIB_ITEMS as usize) << 20);
        streamed.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        for _ in 0..MIB_ITEMS {
            assert_eq!(pool.call::<Make>(1 << 20).await.unwrap().len(), 1 << 20);
        }
        called.push(start.elapsed().as_secs_f64());
    }
    streamed.sort_by(f64::total_cmp);
    called.sort_by(f64::total_cmp);
    emit(
        "stream_1mib_items_ms",
        streamed[1] * 1e3 / f64::from(MIB_ITEMS),
        "ms/item",
    );
    emit(
        "call_1mib_results_ms_beside_stream",
        called[1] * 1e3 / f64::from(MIB_ITEMS),
        "ms/call",
    );
    emit("stream_1mib_items_vs_calls_ratio", streamed[1] / called[1], "ratio");
    pool.stop().await;
}

/// Seconds to take `n` items of one stream with a window of `window`.
async fn ticks(pool: &Pool, n: u64, window: u32) -> f64 {
    let start = Instant::now();
    let mut stream = pool.stream_with::<Ticks>(n, StreamOptions::new().window(window));
    let mut expect = 0;
    while let Some(item) = stream.next().await {
        assert_eq!(item.unwrap(), expect);
        expect += 1;
    }
    assert_eq!(expect, n);
    start.elapsed().as_secs_f64()
}
