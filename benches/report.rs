//! The bench report: one JSON object per line,
//! `{"metric": NAME, "value": NUMBER, "unit": UNIT}`.
//!
//! ```text
//! cargo bench --bench report -- --quick     # about a minute
//! cargo bench --bench report                # longer runs, steadier figures
//! cargo bench --bench report -- --quick --only remote,tls   # some parts
//! ```
//!
//! Parts: local, remote, tls, throughput, keyed, streams, scale, boot, cpu, docker, engines.
//!
//! Floors are measured in the same run as the figures they bound (a bare
//! ractor call, a plain TCP request/response), so ratios stay meaningful on a
//! noisy machine. The binary is also its own runner for the process backend.

#![allow(missing_docs)]

#[cfg(feature = "docker")]
#[path = "report_parts/engines.rs"]
mod engines;
#[path = "report_parts/floors.rs"]
mod floors;
#[path = "report_parts/keyed.rs"]
mod keyed;
#[path = "report_parts/mux.rs"]
mod mux;
#[path = "report_parts/scale.rs"]
mod scale;
#[path = "report_parts/streams.rs"]
mod streams;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_flame::{FnError, LinkTls, LocalBackend, Pool, PoolConfig, ProcessBackend, Registry, RemoteFn};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---- remote functions -------------------------------------------------------

struct Noop;
impl RemoteFn for Noop {
    const NAME: &'static str = "bench.noop";
    type Args = u64;
    type Output = u64;
    async fn run(n: u64) -> Result<u64, FnError> {
        Ok(n)
    }
}

/// CPU-bound work that never yields: spins for `ms` milliseconds.
struct Spin;
impl RemoteFn for Spin {
    const NAME: &'static str = "bench.spin";
    type Args = u64;
    type Output = u64;
    async fn run(ms: u64) -> Result<u64, FnError> {
        let until = Instant::now() + Duration::from_millis(ms);
        let mut n = 0u64;
        while Instant::now() < until {
            n = std::hint::black_box(n.wrapping_add(1));
        }
        Ok(n)
    }
}

static CASTS: AtomicU64 = AtomicU64::new(0);
/// Woken by the `CountCast` that brings `CASTS` to `CASTS_AWAITED`.
static CASTS_REACHED: tokio::sync::Notify = tokio::sync::Notify::const_new();
static CASTS_AWAITED: AtomicU64 = AtomicU64::new(u64::MAX);

/// Returns once this runner has run `n` `CountCast`s in all: one call, like
/// the raw floor's single answer when its echo child has counted its frames.
struct CastsReach;
impl RemoteFn for CastsReach {
    const NAME: &'static str = "bench.casts_reach";
    type Args = u64;
    type Output = u64;
    async fn run(n: u64) -> Result<u64, FnError> {
        CASTS_AWAITED.store(n, Ordering::SeqCst);
        loop {
            let reached = CASTS_REACHED.notified();
            let now = CASTS.load(Ordering::SeqCst);
            if now >= n {
                CASTS_AWAITED.store(u64::MAX, Ordering::SeqCst);
                return Ok(now);
            }
            reached.await;
        }
    }
}

/// How many `CountCast`s this runner has run.
struct CastCount;
impl RemoteFn for CastCount {
    const NAME: &'static str = "bench.cast_count";
    type Args = ();
    type Output = u64;
    async fn run(_: ()) -> Result<u64, FnError> {
        Ok(CASTS.load(Ordering::Relaxed))
    }
}

struct CountCast;
impl RemoteFn for CountCast {
    const NAME: &'static str = "bench.count";
    type Args = u64;
    type Output = ();
    async fn run(_: u64) -> Result<(), FnError> {
        if CASTS.fetch_add(1, Ordering::SeqCst) + 1 == CASTS_AWAITED.load(Ordering::SeqCst) {
            CASTS_REACHED.notify_one();
        }
        Ok(())
    }
}

struct Len;
impl RemoteFn for Len {
    const NAME: &'static str = "bench.len";
    type Args = ByteBuf;
    type Output = u64;
    async fn run(b: ByteBuf) -> Result<u64, FnError> {
        Ok(b.len() as u64)
    }
}

/// `n` bytes, made on the runner.
struct Make;
impl RemoteFn for Make {
    const NAME: &'static str = "bench.make";
    type Args = u64;
    type Output = ByteBuf;
    async fn run(n: u64) -> Result<ByteBuf, FnError> {
        Ok(ByteBuf::from(vec![0xA5u8; n as usize]))
    }
}

struct Pid;
impl RemoteFn for Pid {
    const NAME: &'static str = "bench.pid";
    type Args = ();
    type Output = u32;
    async fn run(_: ()) -> Result<u32, FnError> {
        Ok(std::process::id())
    }
}

/// A placed actor that answers calls with their argument.
#[derive(Default)]
struct Mirror;

impl Actor for Mirror {
    type Msg = (u64, Option<RpcReplyPort<u64>>);
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        (n, reply): Self::Msg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let Some(reply) = reply {
            let _ = reply.send(n);
        }
        Ok(())
    }
}

impl ractor_flame::RemoteActor for Mirror {
    const NAME: &'static str = "bench.mirror";
    type Cast = u64;
    type Call = u64;
    type Reply = u64;
    fn cast_message(n: u64) -> Self::Msg {
        (n, None)
    }
    fn call_message(n: u64, reply: RpcReplyPort<u64>) -> Self::Msg {
        (n, Some(reply))
    }
}

fn registry() -> Registry {
    Registry::new()
        .register_actor::<Mirror>()
        .register::<Noop>()
        .register::<CountCast>()
        .register::<Len>()
        .register::<Make>()
        .register::<Pid>()
        .register::<Spin>()
        .register::<CastCount>()
        .register::<CastsReach>()
        .register::<scale::Hold>()
        .register_stream::<streams::Ticks>()
        .register_stream::<streams::Chunks>()
}

// ---- output -----------------------------------------------------------------

fn emit(metric: &str, value: f64, unit: &str) {
    println!("{{\"metric\": \"{metric}\", \"value\": {value:.3}, \"unit\": \"{unit}\"}}");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

struct Plan {
    samples: usize,
    throughput_for: Duration,
    casts: u64,
    /// Samples of the 64 MiB argument.
    big_samples: usize,
    boots: usize,
    /// How long each CPU-bound call spins.
    spin_ms: u64,
}

// ---- measurements -----------------------------------------------------------

/// Calls per second with `callers` concurrent callers for `for_`.
async fn throughput(pool: &Pool, callers: usize, for_: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (pool, done) = (pool.clone(), done.clone());
            tokio::spawn(async move {
                while start.elapsed() < for_ {
                    pool.call::<Noop>(1).await.expect("call");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// How long a pool of `max_concurrency` 1 that starts with no runner takes
/// to have `n` runners up when `n` calls arrive at once: the time to scale
/// it from 0 to `n`. (The calls alone would end as soon as the first runner
/// is up and served them in turn.)
#[cfg(feature = "docker")]
async fn scale_out(pool: &Pool, n: u64) -> Duration {
    let mut events = pool.events();
    let start = Instant::now();
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call::<Noop>(i).await.unwrap() })
        })
        .collect();
    let mut up = 0;
    while up < n {
        match events.recv().await {
            Ok(ractor_flame::PoolEvent::GrowEnd { result: Ok(()), .. }) => up += 1,
            Ok(ractor_flame::PoolEvent::GrowEnd { result: Err(e), .. }) => panic!("a boot failed: {e}"),
            Ok(_) => {}
            Err(e) => panic!("pool events: {e}"),
        }
    }
    let took = start.elapsed();
    for c in calls {
        c.await.unwrap();
    }
    took
}

/// How long `work` takes.
async fn timed<T>(work: impl std::future::Future<Output = T>) -> Duration {
    let t = Instant::now();
    work.await;
    t.elapsed()
}

/// Sorted latencies of `a` and `b`, sampled alternately from one task so
/// both see the same scheduling (on 2 cores a round trip costs about 2 us
/// when both tasks share a worker and about 20 us across workers; measuring
/// the two in separate phases would compare luck, not code).
struct Paired {
    a: Vec<Duration>,
    b: Vec<Duration>,
}

impl Paired {
    fn new(samples: usize) -> Self {
        Paired {
            a: Vec::with_capacity(samples),
            b: Vec::with_capacity(samples),
        }
    }

    /// Keeps a pair of samples once past the warm-up.
    fn push(&mut self, keep: bool, a: Duration, b: Duration) {
        if keep {
            self.a.push(a);
            self.b.push(b);
        }
    }

    /// Emits the floor's p50 (`a`), our p50 and p99 (`b`), and their ratio.
    fn emit(mut self, [floor_name, p50_name, p99_name, ratio_name]: [&str; 4]) {
        self.a.sort();
        self.b.sort();
        let (floor, p50) = (percentile(&self.a, 0.5), percentile(&self.b, 0.5));
        emit(floor_name, us(floor), "us");
        emit(p50_name, us(p50), "us");
        emit(p99_name, us(percentile(&self.b, 0.99)), "us");
        emit(ratio_name, us(p50) / us(floor), "ratio");
    }
}

async fn local(plan: &Plan, registry: &Registry) {
    let config = PoolConfig::new(1).name("bench-local").max_concurrency(100_000);
    let pool = Pool::start(config, LocalBackend::new(), registry).await.unwrap();
    let (pong, pong_done) = Actor::spawn(None, Pong, ()).await.unwrap();
    let warm = plan.samples / 10;
    // The floor: the same function called directly, with the codec round
    // trip a call makes (argument and result encoded and decoded).
    let mut paired = Paired::new(plan.samples);
    for i in 0..warm + plan.samples {
        let floor = timed(direct_noop(i as u64)).await;
        let ours = timed(async { pool.call::<Noop>(i as u64).await.unwrap() }).await;
        paired.push(i >= warm, floor, ours);
    }
    paired.emit([
        "direct_call_p50_us",
        "local_call_p50_us",
        "local_call_p99_us",
        "local_vs_direct_ratio",
    ]);
    // A bare ractor round trip, for comparison (a plain number: a local
    // call does not pass through an actor, so this bounds nothing).
    let mut rtts = Vec::with_capacity(plan.samples);
    for i in 0..warm + plan.samples {
        let rtt = timed(async { pong.call(|p| p, None).await.unwrap() }).await;
        if i >= warm {
            rtts.push(rtt);
        }
    }
    rtts.sort();
    emit("ractor_call_rtt_p50_us", us(percentile(&rtts, 0.5)), "us");
    pong.stop(None);
    let _ = pong_done.await;
    emit(
        "local_call_throughput_per_s",
        throughput(&pool, 64, plan.throughput_for).await,
        "calls/s",
    );

    CASTS.store(0, Ordering::Relaxed);
    let start = Instant::now();
    for i in 0..plan.casts {
        pool.cast::<CountCast>(i).unwrap();
    }
    while CASTS.load(Ordering::Relaxed) < plan.casts {
        tokio::task::yield_now().await;
    }
    emit(
        "local_cast_throughput_per_s",
        plan.casts as f64 / start.elapsed().as_secs_f64(),
        "casts/s",
    );
    pool.stop().await;
}

/// `FLAME_BENCH_CALLS` of the `local` and `direct` profiles: that many calls
/// instead of their default (for counting instructions under a simulator:
/// two counts give the instructions of one call).
fn bench_calls() -> Option<u64> {
    std::env::var("FLAME_BENCH_CALLS").ok().and_then(|n| n.parse().ok())
}

/// `Noop` called directly, its argument and result through the codec.
async fn direct_noop(n: u64) -> u64 {
    let arg: u64 = rmp_serde::from_slice(&rmp_serde::to_vec(&n).unwrap()).unwrap();
    let out = Noop::run(std::hint::black_box(arg)).await.unwrap();
    rmp_serde::from_slice(&rmp_serde::to_vec(&out).unwrap()).unwrap()
}

/// A trivial actor: one ractor round trip.
struct Pong;
impl Actor for Pong {
    type Msg = RpcReplyPort<u64>;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(&self, _: ActorRef<Self::Msg>, port: Self::Msg, _: &mut ()) -> Result<(), ActorProcessingErr> {
        let _ = port.send(1);
        Ok(())
    }
}

async fn remote(plan: &Plan, registry: &Registry) {
    let backend = ProcessBackend::current_exe().unwrap().args(Vec::<String>::new());
    // Frames up to 80 MiB: room for the 64 MiB argument.
    let config = PoolConfig::new(1)
        .name("bench-remote")
        .max_concurrency(100_000)
        .max_frame_size(80 << 20);
    let pool = Pool::start(config, backend, registry).await.unwrap();
    // A fresh runner: one small call served, then a second idle (it gives
    // memory back after half a second of quiet).
    let pid = pool.call::<Pid>(()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    emit_rss("runner_rss_fresh", pid);
    // What that costs the next call (the code it runs maps again): the
    // median of three calls, each after 700 ms of quiet.
    let mut after_quiet = Vec::new();
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        after_quiet.push(timed(async { pool.call::<Noop>(1).await.unwrap() }).await);
    }
    after_quiet.sort();
    emit("remote_call_after_quiet_us", us(after_quiet[1]), "us");
    let mut raw = RawClient::start().await;
    let warm = plan.samples / 10;
    let mut paired = Paired::new(plan.samples);
    for i in 0..warm + plan.samples {
        let floor = timed(raw.ping(i as u64)).await;
        let ours = timed(async { pool.call::<Noop>(i as u64).await.unwrap() }).await;
        paired.push(i >= warm, floor, ours);
    }
    paired.emit([
        "raw_tcp_rtt_p50_us",
        "remote_call_p50_us",
        "remote_call_p99_us",
        "remote_vs_raw_ratio",
    ]);
    emit(
        "remote_call_throughput_per_s",
        throughput(&pool, 64, plan.throughput_for).await,
        "calls/s",
    );

    // The kernel's floor: a blocking std ping-pong with a blocking echo
    // child, sampled alternately with ours.
    let mut std_client = floors::StdClient::start("FLAME_BENCH_STD_ECHO");
    let mut paired = Paired::new(plan.samples);
    for i in 0..warm + plan.samples {
        let floor = std_client.exchange(&(i as u64).to_be_bytes());
        let ours = timed(async { pool.call::<Noop>(i as u64).await.unwrap() }).await;
        paired.push(i >= warm, floor, ours);
    }
    paired.emit([
        "std_rtt_p50_us",
        "remote_call_p50_us_beside_std",
        "remote_call_p99_us_beside_std",
        "remote_vs_std_ratio",
    ]);

    // 1 MiB arguments, beside the same bytes sent raw (encoded the same
    // way) and beside plain bytes (no encoding), in turn.
    let mib = ByteBuf::from(vec![0xA5u8; 1 << 20]);
    let samples = (plan.samples / 200).max(20);
    let [raw_mib, bytes_mib, ours] = arg_latencies(&pool, &mut raw, Some(&mut std_client), &mib, samples).await;
    // 1 MiB results: bytes made on the runner and sent back, beside the
    // same from the blocking echo child, in turn.
    let mut paired = Paired::new(samples);
    for i in 0..samples + samples / 10 {
        let floor = std_client.fetch(1 << 20);
        let ours = timed(async { pool.call::<Make>(1 << 20).await.unwrap() }).await;
        paired.push(i >= samples / 10, floor, ours);
    }
    drop(std_client);
    emit("raw_tcp_1mib_p50_ms", us(raw_mib) / 1000.0, "ms");
    emit("raw_bytes_1mib_p50_ms", us(bytes_mib) / 1000.0, "ms");
    emit("remote_1mib_arg_p50_ms", us(ours) / 1000.0, "ms");
    emit("remote_1mib_vs_raw_ratio", us(ours) / us(raw_mib), "ratio");
    emit("remote_1mib_vs_bytes_ratio", us(ours) / us(bytes_mib), "ratio");
    paired.emit([
        "std_bytes_1mib_result_p50_us",
        "remote_1mib_result_p50_us",
        "remote_1mib_result_p99_us",
        "remote_1mib_result_vs_bytes_ratio",
    ]);

    // 64 MiB arguments beside the same bytes sent raw (encoded the same way).
    let big = ByteBuf::from(vec![0x5Au8; 64 << 20]);
    let [raw_big, _, ours] = arg_latencies(&pool, &mut raw, None, &big, plan.big_samples).await;
    drop(big);
    emit("raw_tcp_64mib_p50_ms", us(raw_big) / 1000.0, "ms");
    emit("remote_64mib_arg_p50_ms", us(ours) / 1000.0, "ms");
    emit("remote_64mib_vs_raw_ratio", us(ours) / us(raw_big), "ratio");
    raw.stop().await;

    let child = pool.place_child::<Mirror>(()).await.unwrap();
    let mut paired = Paired::new(plan.samples);
    for i in 0..warm + plan.samples {
        let call = timed(async { pool.call::<Noop>(i as u64).await.unwrap() }).await;
        let placed = timed(async { child.call(i as u64).await.unwrap() }).await;
        paired.push(i >= warm, call, placed);
    }
    // The remote call, sampled again alongside: this ratio's own floor.
    paired.emit([
        "remote_call_p50_us_with_placed",
        "placed_call_p50_us",
        "placed_call_p99_us",
        "placed_vs_remote_call_ratio",
    ]);
    drop(child);

    let pid = pool.call::<Pid>(()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Some(kib) = vm_rss_kib(pid) {
        emit("runner_rss_idle_kib", kib as f64, "KiB");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    emit_rss("runner_rss_after_large", pid);
    pool.stop().await;
}

/// The resident memory of process `pid`: `<name>_kib`, and its anonymous
/// and file-backed parts (`_anon_kib`, `_file_kib`: the heap and stacks,
/// and the pages of the executable and libraries it has touched, which it
/// shares with every process that maps the same file); then its
/// proportional set size, each shared page divided among its sharers
/// (`<name>` with `rss` read as `pss`).
fn emit_rss(name: &str, pid: u32) {
    let read = |file: &str, pairs: &[(&str, &str)], name: &str| {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/{file}")) else {
            return;
        };
        for (key, suffix) in pairs {
            let value = text
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok());
            if let Some(kib) = value {
                emit(&format!("{name}{suffix}_kib"), kib, "KiB");
            }
        }
    };
    read(
        "status",
        &[("VmRSS:", ""), ("RssAnon:", "_anon"), ("RssFile:", "_file")],
        name,
    );
    let pss = name.replace("rss", "pss");
    read(
        "smaps_rollup",
        &[("Pss:", ""), ("Pss_Anon:", "_anon"), ("Pss_File:", "_file")],
        &pss,
    );
    if std::env::var_os("FLAME_BENCH_SMAPS").is_some() {
        print_largest_mappings(name, pid);
    }
}

/// Prints the ten mappings of process `pid` with the most resident memory,
/// on stderr (with `FLAME_BENCH_SMAPS` set): where a runner's memory is.
fn print_largest_mappings(name: &str, pid: u32) {
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return;
    };
    let mut rows: Vec<(u64, u64, String)> = Vec::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if !first.ends_with(':') {
            let perms = words.next().unwrap_or("");
            let path = words.nth(3).unwrap_or("[anonymous]");
            rows.push((0, 0, format!("{perms} {path}")));
        } else if let Some(row) = rows.last_mut() {
            let kib = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            match first {
                "Rss:" => row.0 = kib,
                "Anonymous:" => row.1 = kib,
                _ => {}
            }
        }
    }
    rows.sort_by_key(|row| std::cmp::Reverse(row.0));
    for (rss, anon, what) in rows.iter().take(10) {
        eprintln!("{name}: {rss:>6} KiB resident ({anon} anonymous) {what}");
    }
}

/// The encrypted link beside the plain one: two pools of one runner each,
/// sampled alternately in the same run.
async fn tls(plan: &Plan, registry: &Registry) {
    let start = |tls: LinkTls, name: &str| {
        let backend = ProcessBackend::current_exe().unwrap().args(Vec::<String>::new());
        // Frames up to 80 MiB: room for the 64 MiB argument.
        let config = PoolConfig::new(1)
            .name(name)
            .max_concurrency(100_000)
            .max_frame_size(80 << 20)
            .link_tls(tls);
        Pool::start(config, backend, registry)
    };
    let plain = start(LinkTls::Never, "bench-plain").await.unwrap();
    let tls = start(LinkTls::Always, "bench-tls").await.unwrap();
    let warm = plan.samples / 10;
    let mut paired = Paired::new(plan.samples);
    for i in 0..warm + plan.samples {
        let floor = timed(async { plain.call::<Noop>(i as u64).await.unwrap() }).await;
        let ours = timed(async { tls.call::<Noop>(i as u64).await.unwrap() }).await;
        paired.push(i >= warm, floor, ours);
    }
    paired.emit([
        "plain_call_p50_us_beside_tls",
        "tls_call_p50_us",
        "tls_call_p99_us",
        "tls_vs_plain_call_ratio",
    ]);
    let mib = ByteBuf::from(vec![0xA5u8; 1 << 20]);
    let mut paired = Paired::new(plan.samples / 200);
    for i in 0..(plan.samples / 200).max(20) + 5 {
        let floor = timed(async { plain.call::<Len>(mib.clone()).await.unwrap() }).await;
        let ours = timed(async { tls.call::<Len>(mib.clone()).await.unwrap() }).await;
        paired.push(i >= 5, floor, ours);
    }
    paired.a.sort();
    paired.b.sort();
    let (floor, ours) = (percentile(&paired.a, 0.5), percentile(&paired.b, 0.5));
    emit("plain_1mib_arg_p50_ms_beside_tls", us(floor) / 1000.0, "ms");
    emit("tls_1mib_arg_p50_ms", us(ours) / 1000.0, "ms");
    emit("tls_vs_plain_1mib_ratio", us(ours) / us(floor), "ratio");
    // 64 MiB arguments: an N-byte frame over TLS costs what it costs over
    // TCP plus the cipher, linear in N (B49). Each call's copy of the
    // argument is made before its clock starts.
    let big = ByteBuf::from(vec![0x5Au8; 64 << 20]);
    let mut paired = Paired::new(plan.big_samples);
    for i in 0..plan.big_samples + 1 {
        let arg = big.clone();
        let floor = timed(async { plain.call::<Len>(arg).await.unwrap() }).await;
        let arg = big.clone();
        let ours = timed(async { tls.call::<Len>(arg).await.unwrap() }).await;
        paired.push(i >= 1, floor, ours);
    }
    drop(big);
    paired.a.sort();
    paired.b.sort();
    let (floor, ours) = (percentile(&paired.a, 0.5), percentile(&paired.b, 0.5));
    emit("plain_64mib_arg_p50_ms_beside_tls", us(floor) / 1000.0, "ms");
    emit("tls_64mib_arg_p50_ms", us(ours) / 1000.0, "ms");
    emit("tls_vs_plain_64mib_ratio", us(ours) / us(floor), "ratio");
    plain.stop().await;
    tls.stop().await;
}

/// Casts/s of `n` casts on `pool`, until its runner has run them all
/// (awaited with one call).
async fn cast_rate(pool: &Pool, n: u64) -> f64 {
    let before = pool.call::<CastCount>(()).await.unwrap();
    let start = Instant::now();
    for i in 0..n {
        pool.cast::<CountCast>(i).unwrap();
    }
    pool.call::<CastsReach>(before + n).await.unwrap();
    n as f64 / start.elapsed().as_secs_f64()
}

/// Median latencies of `samples` calls with `arg`, in turn: the raw client
/// sending it rmp-encoded, the blocking std client (if given) sending its
/// plain bytes, and `pool.call::<Len>`. `[raw, bytes, ours]`; `bytes` is
/// zero without a std client.
async fn arg_latencies(
    pool: &Pool,
    raw: &mut RawClient,
    mut std_client: Option<&mut floors::StdClient>,
    arg: &ByteBuf,
    samples: usize,
) -> [Duration; 3] {
    let mut lat: [Vec<Duration>; 3] = Default::default();
    for i in 0..samples {
        let t = Instant::now();
        let body = rmp_serde::to_vec(arg).unwrap();
        raw.send(RawFrame { id: i as u64, body }).await;
        lat[0].push(t.elapsed());
        if let Some(std_client) = std_client.as_deref_mut() {
            lat[1].push(std_client.exchange(arg));
        }
        let arg = arg.clone();
        let t = Instant::now();
        pool.call::<Len>(arg).await.unwrap();
        lat[2].push(t.elapsed());
    }
    lat.map(|mut l| {
        l.sort();
        if l.is_empty() {
            Duration::ZERO
        } else {
            percentile(&l, 0.5)
        }
    })
}

/// Remote throughput beside its floor, a raw multiplexed client against an
/// echo child, in alternating rounds of the same run (medians of three);
/// remote casts beside raw one-way frames.
async fn throughput_floors(plan: &Plan, registry: &Registry) {
    let backend = ProcessBackend::current_exe().unwrap().args(Vec::<String>::new());
    // More slots than a burst of casts holds at once: the raw one-way
    // frames have no limit, so a cast waiting for a free slot (the pool's
    // back-pressure, a path of its own) would measure something else.
    let config = PoolConfig::new(1).name("bench-mux").max_concurrency(1_000_000);
    let pool = Pool::start(config, backend, registry).await.unwrap();
    let raw = mux::MuxClient::start().await;
    let round = plan.throughput_for / 2;
    for callers in [64usize, 512] {
        let (mut ours, mut floor) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            floor.push(mux::mux_throughput(&raw, callers, round).await);
            ours.push(throughput(&pool, callers, round).await);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (ours, floor) = (median(&mut ours), median(&mut floor));
        let suffix = if callers == 64 {
            String::new()
        } else {
            format!("_{callers}")
        };
        emit(&format!("raw_mux_throughput_per_s{suffix}"), floor, "calls/s");
        emit(&format!("remote_throughput_per_s_beside_mux{suffix}"), ours, "calls/s");
        emit(
            &format!("remote_vs_raw_mux_throughput_ratio{suffix}"),
            ours / floor,
            "ratio",
        );
    }
    // Casts: `n` of them until the runner has run them all, beside `n` raw
    // one-way frames until the echo child has counted them all: frames that
    // each get a task of their own there, and frames handed to one task.
    let n = plan.casts / 4;
    let (mut ours, mut floor, mut handed) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        floor.push(n as f64 / raw.one_way(0, n).await.as_secs_f64());
        handed.push(n as f64 / raw.one_way(mux::HANDED_OFF, n).await.as_secs_f64());
        ours.push(cast_rate(&pool, n).await);
    }
    for v in [&mut ours, &mut floor, &mut handed] {
        v.sort_by(f64::total_cmp);
    }
    emit("raw_one_way_frames_per_s", floor[1], "frames/s");
    emit("raw_one_way_handed_frames_per_s", handed[1], "frames/s");
    emit("remote_cast_throughput_per_s", ours[1], "casts/s");
    emit("remote_vs_raw_cast_ratio", ours[1] / floor[1], "ratio");
    emit("remote_vs_raw_handed_cast_ratio", ours[1] / handed[1], "ratio");
    raw.stop().await;
    pool.stop().await;
}

/// CPU-bound bodies that never yield, on every slot of one runner (2 x the
/// cores) and 8 at the default `max_concurrency`, with the default heartbeat
/// settings: the share of calls that succeed.
async fn cpu_bound(plan: &Plan, registry: &Registry) {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (mut made, mut ok) = (0usize, 0usize);
    for (calls, max_concurrency) in [(2 * cores, 2 * cores), (8, 100)] {
        let backend = ProcessBackend::current_exe().unwrap().args(Vec::<String>::new());
        let config = PoolConfig::new(1)
            .name(format!("bench-cpu-{calls}"))
            .max_concurrency(max_concurrency)
            .timeout(Duration::from_secs(300));
        let pool = Pool::start(config, backend, registry).await.unwrap();
        let tasks: Vec<_> = (0..calls)
            .map(|_| {
                let (pool, ms) = (pool.clone(), plan.spin_ms);
                tokio::spawn(async move { pool.call::<Spin>(ms).await })
            })
            .collect();
        for task in tasks {
            made += 1;
            match task.await.unwrap() {
                Ok(_) => ok += 1,
                Err(e) => eprintln!("report: a CPU-bound call failed: {e}"),
            }
        }
        pool.stop().await;
    }
    emit("cpu_bound_calls_ok_ratio", ok as f64 / made as f64, "ratio");
}

async fn cold_boot(plan: &Plan, registry: &Registry) {
    let mut boots = Vec::new();
    for n in 0..plan.boots {
        let backend = ProcessBackend::current_exe().unwrap().args(Vec::<String>::new());
        let config = PoolConfig::new(1).name(format!("bench-boot-{n}"));
        let start = Instant::now();
        let pool = Pool::start(config, backend, registry).await.unwrap();
        pool.call::<Noop>(1).await.unwrap();
        boots.push(start.elapsed());
        pool.stop().await;
    }
    boots.sort();
    emit("process_cold_boot_ms", us(percentile(&boots, 0.5)) / 1000.0, "ms");
    let mut standby = Vec::new();
    for n in 0..plan.boots {
        let backend = ProcessBackend::current_exe().unwrap().args(Vec::<String>::new());
        let config = PoolConfig::new(2).standby(1).name(format!("bench-standby-{n}"));
        standby.push(standby_boot(config, backend, registry).await);
    }
    standby.sort();
    emit("process_standby_boot_ms", us(percentile(&standby, 0.5)) / 1000.0, "ms");
}

/// A pool with a runner on standby and none in service: the time from a
/// call that makes the pool grow to its result (the standby is admitted).
async fn standby_boot<B: ractor_flame::Backend>(config: PoolConfig, backend: B, registry: &Registry) -> Duration {
    let pool = Pool::start(config, backend, registry).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while pool.stats().await.unwrap().standby < 1 {
        assert!(Instant::now() < deadline, "standby: no runner came up on standby");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let start = Instant::now();
    pool.call::<Noop>(1).await.unwrap();
    let took = start.elapsed();
    pool.stop().await;
    took
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs one workload of ours alone for a few seconds, for `perf record`:
/// `calls64` / `calls512` (concurrent callers), `raw512` (the raw
/// multiplexed floor's 512 callers), `casts` (bursts of 90 000),
/// `mib` (1 MiB arguments one at a time), `single` (one call at a time),
/// `local` (one call at a time to an in-process runner) or `local-casts`
/// (bursts of casts to one).
async fn profile(what: &str, registry: &Registry) {
    if what == "raw512" {
        // The raw floor's 512 callers, for its CPU per call beside ours.
        let raw = mux::MuxClient::start().await;
        mux::mux_throughput(&raw, 64, Duration::from_millis(300)).await;
        let rate = mux::mux_throughput(&raw, 512, Duration::from_secs(5)).await;
        println!("raw512: {rate:.0} calls/s");
        return raw.stop().await;
    }
    if what == "direct" {
        // The local floor (`direct_noop`), counted like `local` below.
        let calls = bench_calls().unwrap_or(1_000_000);
        let mut n = 0u64;
        while n < calls {
            n = direct_noop(n).await + 1;
        }
        return println!("direct: {n} calls");
    }
    if what == "local" {
        // One local call at a time, beside nothing.
        let config = PoolConfig::new(1).name("bench-profile-local");
        let pool = Pool::start(config, LocalBackend::new(), registry).await.unwrap();
        let start = Instant::now();
        let mut n = 0u64;
        let calls = bench_calls();
        while calls.map_or(start.elapsed() < Duration::from_secs(5), |calls| n < calls) {
            for _ in 0..10_000 {
                n = pool.call::<Noop>(n).await.unwrap() + 1;
            }
        }
        println!("local: {:.0} calls/s", n as f64 / start.elapsed().as_secs_f64());
        return pool.stop().await;
    }
    if what == "local-casts" {
        // Bursts of casts to an in-process runner, as the report sends them.
        let config = PoolConfig::new(1).name("bench-profile-local").max_concurrency(100_000);
        let pool = Pool::start(config, LocalBackend::new(), registry).await.unwrap();
        for _ in 0..20 {
            let n = 200_000u64;
            CASTS.store(0, Ordering::Relaxed);
            let start = Instant::now();
            for i in 0..n {
                pool.cast::<CountCast>(i).unwrap();
            }
            while CASTS.load(Ordering::Relaxed) < n {
                tokio::task::yield_now().await;
            }
            println!("local casts: {:.0}/s", n as f64 / start.elapsed().as_secs_f64());
        }
        return pool.stop().await;
    }
    let backend = ProcessBackend::current_exe().unwrap().args(Vec::<String>::new());
    // `…-tls`: the same over an encrypted link.
    let (what, tls) = match what.strip_suffix("-tls") {
        Some(what) => (what, LinkTls::Always),
        None => (what, LinkTls::Never),
    };
    let config = PoolConfig::new(1)
        .name("bench-profile")
        .max_concurrency(100_000)
        .max_frame_size(80 << 20)
        .link_tls(tls);
    let pool = Pool::start(config, backend, registry).await.unwrap();
    throughput(&pool, 64, Duration::from_millis(300)).await;
    match what {
        "calls64" | "calls512" => {
            let callers = if what == "calls64" { 64 } else { 512 };
            let rate = throughput(&pool, callers, Duration::from_secs(5)).await;
            println!("{what}: {rate:.0} calls/s");
        }
        "casts" => {
            for _ in 0..10 {
                let n = 90_000u64;
                let before = pool.call::<CastCount>(()).await.unwrap();
                let start = Instant::now();
                for i in 0..n {
                    pool.cast::<CountCast>(i).unwrap();
                }
                pool.call::<CastsReach>(before + n).await.unwrap();
                println!("casts: {:.0}/s", n as f64 / start.elapsed().as_secs_f64());
            }
        }
        "mib" | "64mib" | "single" => {
            let size = if what == "64mib" { 64 << 20 } else { 1 << 20 };
            let mib = ByteBuf::from(vec![0xA5u8; size]);
            let mut lat = Vec::new();
            let calls = match what {
                "mib" => 3_000,
                "64mib" => 100,
                _ => 50_000,
            };
            for i in 0..calls {
                let arg = mib.clone();
                let t = Instant::now();
                if what != "single" {
                    pool.call::<Len>(arg).await.unwrap();
                } else {
                    pool.call::<Noop>(i).await.unwrap();
                }
                lat.push(t.elapsed());
            }
            lat.sort();
            println!("{what}: p50 {:?}", percentile(&lat, 0.5));
        }
        other => eprintln!("report: unknown FLAME_BENCH_PROFILE {other:?}"),
    }
    pool.stop().await;
}

// ---- the raw TCP floor --------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct RawFrame {
    id: u64,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
}

async fn read_raw(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<RawFrame> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.ok()?;
    buf.resize(u32::from_be_bytes(len) as usize, 0);
    stream.read_exact(buf).await.ok()?;
    rmp_serde::from_slice(buf).ok()
}

async fn write_raw(stream: &mut TcpStream, frame: &RawFrame, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0; 4]);
    rmp_serde::encode::write_named(out, frame).unwrap();
    let n = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&n.to_be_bytes());
    stream.write_all(out).await.unwrap();
}

/// Serves echo frames (run in a child process, like a runner).
async fn raw_echo_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    let (mut stream, _) = listener.accept().await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    while let Some(frame) = read_raw(&mut stream, &mut buf).await {
        // Large requests get a small answer, like a call that returns a length.
        let answer = if frame.body.len() > 1024 {
            RawFrame {
                id: frame.id,
                body: rmp_serde::to_vec(&(frame.body.len() as u64)).unwrap(),
            }
        } else {
            frame
        };
        write_raw(&mut stream, &answer, &mut out).await;
    }
}

/// A plain tokio TCP client of `raw_echo_server` (in a child process, like
/// a runner): one request/response with rmp-serde frames per `ping`.
struct RawClient {
    child: tokio::process::Child,
    stream: TcpStream,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl RawClient {
    async fn start() -> Self {
        let (child, stream) = mux::echo_child("FLAME_BENCH_RAW_ECHO").await;
        RawClient {
            child,
            stream,
            buf: Vec::new(),
            out: Vec::new(),
        }
    }

    async fn ping(&mut self, i: u64) {
        self.send(RawFrame {
            id: i,
            body: rmp_serde::to_vec(&i).unwrap(),
        })
        .await;
    }

    /// One request/response with `body` (bytes of an encoded argument).
    async fn send(&mut self, frame: RawFrame) {
        write_raw(&mut self.stream, &frame, &mut self.out).await;
        read_raw(&mut self.stream, &mut self.buf).await.unwrap();
    }

    async fn stop(mut self) {
        drop(self.stream);
        let _ = self.child.kill().await;
    }
}

// ---- docker -----------------------------------------------------------------

#[cfg(feature = "docker")]
mod docker {
    use super::*;
    use bollard::Docker;
    use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
    use bollard::query_parameters::{
        CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder, StartContainerOptions,
    };
    use futures_util::StreamExt as _;
    use ractor_flame::DockerBackend;
    use ractor_flame::actors::Token;
    use ractor_flame::{Parent, RunnerId};

    /// Bare bollard: create and start `n` containers of `image` in parallel,
    /// until each has connected back. The floor of a Docker boot. Each
    /// container is made the way the backend makes its runners: named,
    /// labelled, the same host settings and stop timeout, started, and its
    /// output followed (one more request the engine serves per container).
    async fn raw_boot(docker: &Docker, image: &str, build: ractor_flame::BuildId, n: usize) -> Duration {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let start = Instant::now();
        let ids: Vec<_> = futures_util::future::join_all((0..n).map(|_| async {
            let runner = RunnerId::new();
            let parent = Parent::new(runner, vec![addr], Token::generate(), "docker", build);
            let body = ContainerCreateBody {
                image: Some(image.to_owned()),
                env: Some(vec![format!("FLAME_PARENT={}", parent.encode())]),
                labels: Some(
                    [
                        ("ractor-flame.managed".to_owned(), "true".to_owned()),
                        ("ractor-flame.runner".to_owned(), runner.simple()),
                    ]
                    .into(),
                ),
                host_config: Some(HostConfig {
                    network_mode: Some("host".into()),
                    auto_remove: Some(true),
                    restart_policy: Some(RestartPolicy {
                        name: Some(RestartPolicyNameEnum::NO),
                        maximum_retry_count: None,
                    }),
                    ..HostConfig::default()
                }),
                stop_timeout: Some(1),
                ..ContainerCreateBody::default()
            };
            let name = format!("flame-bench-floor-{}", &runner.simple()[..12]);
            let options = CreateContainerOptionsBuilder::new().name(&name).build();
            let id = docker.create_container(Some(options), body).await.unwrap().id;
            docker
                .start_container(&id, None::<StartContainerOptions>)
                .await
                .unwrap();
            let logs = LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true).build();
            let mut output = docker.logs(&id, Some(logs));
            tokio::spawn(async move { while let Some(Ok(_)) = output.next().await {} });
            id
        }))
        .await;
        let mut accepted = Vec::new();
        while accepted.len() < n {
            accepted.push(listener.accept().await.unwrap());
        }
        let took = start.elapsed();
        drop(accepted);
        for id in ids {
            let force = RemoveContainerOptionsBuilder::new().force(true).build();
            let _ = docker.remove_container(&id, Some(force)).await;
        }
        took
    }

    pub(super) async fn run(plan: &Plan, registry: &Registry) {
        let backend = DockerBackend::new().stop_timeout(Duration::from_secs(1));
        let image = match backend.prepare_image().await {
            Ok(image) => image,
            Err(e) => {
                eprintln!("report: docker metrics skipped: {e}");
                return;
            }
        };
        let docker = bollard::Docker::connect_with_defaults()
            .expect("docker client")
            .negotiate_version()
            .await
            .expect("docker version");
        let runs = plan.boots.min(7);
        let (mut ours, mut raw) = (Vec::new(), Vec::new());
        for n in 0..runs {
            // Alternate, so drift in the engine's speed hits both alike.
            raw.push(raw_boot(&docker, &image, registry.build_id(), 1).await);
            let start = Instant::now();
            let pool = Pool::start(
                PoolConfig::new(1).name(format!("bench-docker-{n}")),
                backend.clone(),
                registry,
            )
            .await
            .unwrap();
            pool.call::<Noop>(1).await.unwrap();
            ours.push(start.elapsed());
            pool.stop().await;
        }
        ours.sort();
        raw.sort();
        let (cold, floor) = (percentile(&ours, 0.5), percentile(&raw, 0.5));
        emit("docker_cold_boot_ms", us(cold) / 1000.0, "ms");
        emit("docker_raw_boot_ms", us(floor) / 1000.0, "ms");
        emit("docker_boot_ratio", cold.as_secs_f64() / floor.as_secs_f64(), "ratio");
        // A runner on standby: growth admits it instead of booting one.
        let mut standby = Vec::new();
        for n in 0..runs {
            let config = PoolConfig::new(2).standby(1).name(format!("bench-docker-standby-{n}"));
            standby.push(super::standby_boot(config, backend.clone(), registry).await);
        }
        standby.sort();
        let standby = percentile(&standby, 0.5);
        emit("docker_standby_boot_ms", us(standby) / 1000.0, "ms");
        emit(
            "docker_standby_vs_raw_boot_ratio",
            standby.as_secs_f64() / floor.as_secs_f64(),
            "ratio",
        );

        let (mut ours, mut raw) = (Vec::new(), Vec::new());
        for n in 0..runs.min(4) {
            // Each goes first in turn: what one leaves the engine to clean
            // up falls on both alike.
            if n % 2 == 0 {
                raw.push(raw_boot(&docker, &image, registry.build_id(), 8).await);
            }
            let config = PoolConfig::new(8)
                .max_concurrency(1)
                .name(format!("bench-docker-scale-{n}"));
            let pool = Pool::start(config, backend.clone(), registry).await.unwrap();
            ours.push(scale_out(&pool, 8).await);
            pool.stop().await;
            if n % 2 == 1 {
                raw.push(raw_boot(&docker, &image, registry.build_id(), 8).await);
            }
        }
        ours.sort();
        raw.sort();
        let (scale, floor) = (percentile(&ours, 0.5), percentile(&raw, 0.5));
        emit("docker_scale_0_to_8_ms", us(scale) / 1000.0, "ms");
        emit("docker_raw_parallel_8_ms", us(floor) / 1000.0, "ms");
        emit("docker_scale_ratio", scale.as_secs_f64() / floor.as_secs_f64(), "ratio");
    }
}

// ---- main -------------------------------------------------------------------

#[tokio::main]
async fn main() {
    let registry = registry();
    if let Err(e) = ractor_flame::run_if_runner(&registry).await {
        eprintln!("{e}");
        std::process::exit(2);
    }
    if std::env::var_os("FLAME_BENCH_RAW_ECHO").is_some() {
        return raw_echo_server().await;
    }
    if std::env::var_os("FLAME_BENCH_RAW_MUX").is_some() {
        return mux::echo_server().await;
    }
    if std::env::var_os("FLAME_BENCH_STD_ECHO").is_some() {
        return floors::std_echo_server();
    }
    // One workload of ours alone, for a profiler (see BENCHMARKS.md).
    if let Ok(what) = std::env::var("FLAME_BENCH_PROFILE") {
        return profile(&what, &registry).await;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let plan = if quick {
        Plan {
            samples: 20_000,
            throughput_for: Duration::from_secs(1),
            casts: 200_000,
            big_samples: 5,
            boots: 5,
            spin_ms: 2_500,
        }
    } else {
        Plan {
            samples: 100_000,
            throughput_for: Duration::from_secs(5),
            casts: 1_000_000,
            big_samples: 21,
            boots: 15,
            spin_ms: 5_000,
        }
    };
    // `--only a,b` runs only the named parts.
    let only: Option<Vec<String>> = std::env::args()
        .skip_while(|a| a != "--only")
        .nth(1)
        .map(|list| list.split(',').map(str::to_owned).collect());
    let run = |part: &str| only.as_ref().is_none_or(|only| only.iter().any(|p| p == part));
    if run("local") {
        local(&plan, &registry).await;
    }
    if run("remote") {
        remote(&plan, &registry).await;
    }
    if run("tls") {
        tls(&plan, &registry).await;
    }
    if run("throughput") {
        throughput_floors(&plan, &registry).await;
    }
    if run("keyed") {
        keyed::run(&plan, &registry).await;
    }
    if run("streams") {
        streams::run(&plan, &registry).await;
    }
    if run("scale") {
        scale::run(&plan, &registry).await;
    }
    if run("boot") {
        cold_boot(&plan, &registry).await;
    }
    if run("cpu") {
        cpu_bound(&plan, &registry).await;
    }
    #[cfg(feature = "docker")]
    if run("docker") {
        docker::run(&plan, &registry).await;
    }
    #[cfg(feature = "docker")]
    if run("engines") {
        engines::run(&plan, &registry).await;
    }
}
