//! Remote functions shared by the integration tests and the test runner
//! binary (`flame-test-runner`), which registers exactly these.
//!
//! Probes are keyed by a string each test chooses, so tests running in
//! parallel in one process never see each other's counts.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use ractor_flame::{ByteBuf, FnError, Registry, RemoteFn, RemoteStream, StreamSender};
use serde::{Deserialize, Serialize};

/// Counts of one probe key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Sleeps running now.
    pub running: u32,
    /// Sleeps that ended without finishing (aborted).
    pub dropped: u32,
    /// Sleeps that finished.
    pub completed: u32,
    /// Stream items sent.
    pub sent: u32,
}

fn probes() -> &'static Mutex<HashMap<String, Counts>> {
    static PROBES: OnceLock<Mutex<HashMap<String, Counts>>> = OnceLock::new();
    PROBES.get_or_init(Mutex::default)
}

fn update(key: &str, f: impl FnOnce(&mut Counts)) {
    f(probes().lock().unwrap().entry(key.to_owned()).or_default());
}

/// Sleeps for `ms`, counting starts, completions and aborts under `key`.
pub struct Sleep;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SleepArgs {
    pub key: String,
    pub ms: u64,
}

struct Running(String, bool);

impl Drop for Running {
    fn drop(&mut self) {
        let done = self.1;
        update(&self.0, |c| {
            c.running -= 1;
            if done { c.completed += 1 } else { c.dropped += 1 }
        });
    }
}

impl RemoteFn for Sleep {
    const NAME: &'static str = "test.sleep";
    type Args = SleepArgs;
    type Output = u64;
    async fn run(args: SleepArgs) -> Result<u64, FnError> {
        update(&args.key, |c| c.running += 1);
        let mut guard = Running(args.key, false);
        tokio::time::sleep(Duration::from_millis(args.ms)).await;
        guard.1 = true;
        Ok(args.ms)
    }
}

/// The counts of a key.
pub struct Probe;

impl RemoteFn for Probe {
    const NAME: &'static str = "test.probe";
    type Args = String;
    type Output = Counts;
    async fn run(key: String) -> Result<Counts, FnError> {
        Ok(probes().lock().unwrap().get(&key).copied().unwrap_or_default())
    }
}

/// Echoes its argument.
pub struct Echo;

impl RemoteFn for Echo {
    const NAME: &'static str = "test.echo";
    type Args = String;
    type Output = String;
    async fn run(s: String) -> Result<String, FnError> {
        Ok(s)
    }
}

/// Where the call ran: the process id, the runner id, the task id.
pub struct WhereAmI;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    pub pid: u32,
    pub runner: String,
    pub task: String,
}

impl RemoteFn for WhereAmI {
    const NAME: &'static str = "test.where";
    type Args = ();
    type Output = Place;
    async fn run(_: ()) -> Result<Place, FnError> {
        Ok(Place {
            pid: std::process::id(),
            runner: ractor_flame::current_runner()
                .map(|r| format!("{r:?}"))
                .unwrap_or_default(),
            task: tokio::task::try_id().map(|t| t.to_string()).unwrap_or_default(),
        })
    }
}

/// One attempt of a call, recorded as a file in `dir` named
/// `<pid>-<uuid>` that holds the call's idempotency key (empty without
/// one). The first attempt under a key sleeps `ms` (or fails as `fail`
/// says: `"error"`, `"panic"`); a later one under the same key returns at
/// once. Returns the key.
pub struct Attempt;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptArgs {
    pub dir: String,
    pub ms: u64,
    pub fail: Option<String>,
}

impl RemoteFn for Attempt {
    const NAME: &'static str = "test.attempt";
    type Args = AttemptArgs;
    type Output = String;
    async fn run(args: AttemptArgs) -> Result<String, FnError> {
        let key = ractor_flame::current_call()
            .and_then(|c| c.idempotency_key().map(str::to_owned))
            .unwrap_or_default();
        let dir = std::path::Path::new(&args.dir);
        let seen = !key.is_empty()
            && std::fs::read_dir(dir)?
                .flatten()
                .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|k| k == key));
        let name = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        std::fs::write(dir.join(name), &key)?;
        if seen {
            return Ok(key);
        }
        match args.fail.as_deref() {
            Some("error") => return Err(FnError::msg("failed on purpose")),
            Some("panic") => panic!("panicked on purpose"),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(args.ms)).await;
        Ok(key)
    }
}

/// Returns an error with the given message.
pub struct Fail;

impl RemoteFn for Fail {
    const NAME: &'static str = "test.fail";
    type Args = String;
    type Output = ();
    async fn run(message: String) -> Result<(), FnError> {
        Err(FnError::msg(message))
    }
}

/// Reads a file on the runner.
pub struct ReadFile;

impl RemoteFn for ReadFile {
    const NAME: &'static str = "test.read_file";
    type Args = String;
    type Output = String;
    async fn run(path: String) -> Result<String, FnError> {
        Ok(std::fs::read_to_string(path)?)
    }
}

/// Writes `(path, text)` on the runner.
pub struct WriteFile;

impl RemoteFn for WriteFile {
    const NAME: &'static str = "test.write_file";
    type Args = (String, String);
    type Output = ();
    async fn run((path, text): (String, String)) -> Result<(), FnError> {
        Ok(std::fs::write(path, text)?)
    }
}

/// Returns its `Bytes` argument reversed, as `Bytes`.
pub struct ReverseBytes;

impl RemoteFn for ReverseBytes {
    const NAME: &'static str = "test.reverse_bytes";
    type Args = ractor_flame::Bytes;
    type Output = ractor_flame::Bytes;
    async fn run(bytes: ractor_flame::Bytes) -> Result<ractor_flame::Bytes, FnError> {
        let mut out = bytes.to_vec();
        out.reverse();
        Ok(out.into())
    }
}

/// Fails with an error of kind `InvalidArgument` and the given message.
pub struct Reject;

impl RemoteFn for Reject {
    const NAME: &'static str = "test.reject";
    type Args = String;
    type Output = ();
    async fn run(message: String) -> Result<(), FnError> {
        Err(FnError::invalid_argument(message))
    }
}

/// A blocking body that works in small steps, checks for cancellation
/// between them as the heavy-work guide shows, and returns an error the
/// moment it sees it: `cancelled_kind` picks `FnError::cancelled()` over a
/// plain message.
pub struct StopWhenCancelled;

impl RemoteFn for StopWhenCancelled {
    const NAME: &'static str = "test.stop_when_cancelled";
    const BLOCKING: bool = true;
    type Args = bool;
    type Output = u64;
    async fn run(cancelled_kind: bool) -> Result<u64, FnError> {
        let call = ractor_flame::current_call().expect("a blocking body has its call");
        let mut steps = 0u64;
        loop {
            if call.is_cancelled() {
                return Err(if cancelled_kind {
                    FnError::cancelled()
                } else {
                    FnError::msg(format!("cancelled after {steps} steps"))
                });
            }
            // One step: about 50 us of work that never yields.
            spin_for_us(50);
            steps += 1;
        }
    }
}

/// Spins on the current thread for `us` microseconds, never yielding.
pub fn spin_for_us(us: u64) -> u64 {
    let until = std::time::Instant::now() + Duration::from_micros(us);
    let mut n = 0u64;
    while std::time::Instant::now() < until {
        n = std::hint::black_box(n.wrapping_add(1));
    }
    n
}

/// Panics with the given message.
pub struct Panic;

impl RemoteFn for Panic {
    const NAME: &'static str = "test.panic";
    type Args = String;
    type Output = ();
    async fn run(message: String) -> Result<(), FnError> {
        panic!("{message}")
    }
}

/// Logs one `info` event (message "chatty at work", field `n`) and one
/// `warn` event, then returns its argument.
pub struct Chatty;

impl RemoteFn for Chatty {
    const NAME: &'static str = "test.chatty";
    type Args = u32;
    type Output = u32;
    async fn run(n: u32) -> Result<u32, FnError> {
        tracing::info!(target: "flame_test", n, "chatty at work");
        tracing::warn!(target: "flame_test", n, "chatty warns");
        Ok(n)
    }
}

/// Returns the OpenTelemetry trace id of the span its body runs in (the
/// runner's `flame.call`), as hex.
#[cfg(feature = "opentelemetry")]
pub struct TraceId;

#[cfg(feature = "opentelemetry")]
impl RemoteFn for TraceId {
    const NAME: &'static str = "test.trace_id";
    type Args = ();
    type Output = String;
    async fn run(_: ()) -> Result<String, FnError> {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let context = tracing::Span::current().context();
        Ok(context.span().span_context().trace_id().to_string())
    }
}

/// Returns the length of its argument.
pub struct Len;

impl RemoteFn for Len {
    const NAME: &'static str = "test.len";
    type Args = serde_bytes::ByteBuf;
    type Output = usize;
    async fn run(bytes: serde_bytes::ByteBuf) -> Result<usize, FnError> {
        Ok(bytes.len())
    }
}

/// A checksum of every byte of its argument and where each sits (FNV-1a
/// over the bytes, then the length).
pub fn digest(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ bytes.len() as u64
}

/// The [`digest`] of its argument, computed on the runner.
pub struct Digest;

impl RemoteFn for Digest {
    const NAME: &'static str = "test.digest";
    type Args = serde_bytes::ByteBuf;
    type Output = u64;
    async fn run(bytes: serde_bytes::ByteBuf) -> Result<u64, FnError> {
        Ok(digest(&bytes))
    }
}

/// A named blob: a large byte string inside a struct.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Blob {
    pub name: String,
    pub data: serde_bytes::ByteBuf,
}

/// The blob's name and the [`digest`] of its data, computed on the runner.
pub struct BlobDigest;

impl RemoteFn for BlobDigest {
    const NAME: &'static str = "test.blob_digest";
    type Args = Blob;
    type Output = (String, u64);
    async fn run(blob: Blob) -> Result<(String, u64), FnError> {
        Ok((blob.name, digest(&blob.data)))
    }
}

/// Returns `n` bytes.
pub struct Bytes;

impl RemoteFn for Bytes {
    const NAME: &'static str = "test.bytes";
    type Args = usize;
    type Output = serde_bytes::ByteBuf;
    async fn run(n: usize) -> Result<serde_bytes::ByteBuf, FnError> {
        Ok(serde_bytes::ByteBuf::from(vec![7u8; n]))
    }
}

/// Exits the runner process with the given code (process backend only).
pub struct Exit;

impl RemoteFn for Exit {
    const NAME: &'static str = "test.exit";
    type Args = i32;
    type Output = ();
    async fn run(code: i32) -> Result<(), FnError> {
        std::process::exit(code)
    }
}

/// Starts a pool with `min` 2 where it runs and reports its runners plus
/// booting (B11: 0 on a runner).
pub struct NestedPool;

impl RemoteFn for NestedPool {
    const NAME: &'static str = "test.nested_pool";
    type Args = ();
    type Output = usize;
    async fn run(_: ()) -> Result<usize, FnError> {
        let config = ractor_flame::PoolConfig::new(2)
            .min(2)
            .name(format!("nested-{}", std::process::id()));
        let pool = ractor_flame::Pool::start(config, ractor_flame::LocalBackend::new(), &registry())
            .await
            .map_err(FnError::from)?;
        let stats = pool.stats().await.map_err(FnError::from)?;
        pool.stop().await;
        Ok(stats.runners + stats.booting)
    }
}

/// Allocates and touches `mib` MiB, then returns how many it held.
pub struct Alloc;

impl RemoteFn for Alloc {
    const NAME: &'static str = "test.alloc";
    type Args = usize;
    type Output = usize;
    async fn run(mib: usize) -> Result<usize, FnError> {
        let mut held = Vec::new();
        for _ in 0..mib {
            let chunk = vec![1u8; 1 << 20];
            held.push(std::hint::black_box(chunk));
            tokio::task::yield_now().await;
        }
        Ok(held.len())
    }
}

/// A placeable actor: keeps a total, counts its life under a probe key
/// (`running` while alive, `completed` once stopped cleanly).
#[derive(Default)]
pub struct Keeper;

pub enum KeeperMsg {
    Cast(KeeperCast),
    Get(ractor::RpcReplyPort<(u64, u32)>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum KeeperCast {
    Add(u64),
    Crash,
    StopAfter(u64),
    /// Writes `<marker>.started`, works `ms` (awaiting), then writes
    /// `marker` (file paths).
    Work {
        ms: u64,
        marker: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeeperArgs {
    pub key: String,
    pub start: u64,
}

impl ractor::Actor for Keeper {
    type Msg = KeeperMsg;
    type State = (String, u64);
    type Arguments = KeeperArgs;

    async fn pre_start(
        &self,
        _: ractor::ActorRef<KeeperMsg>,
        args: KeeperArgs,
    ) -> Result<(String, u64), ractor::ActorProcessingErr> {
        update(&args.key, |c| c.running += 1);
        Ok((args.key, args.start))
    }

    async fn handle(
        &self,
        myself: ractor::ActorRef<KeeperMsg>,
        msg: KeeperMsg,
        state: &mut (String, u64),
    ) -> Result<(), ractor::ActorProcessingErr> {
        match msg {
            KeeperMsg::Cast(KeeperCast::Add(n)) => state.1 += n,
            KeeperMsg::Cast(KeeperCast::Crash) => return Err("asked to crash".into()),
            KeeperMsg::Cast(KeeperCast::StopAfter(ms)) => {
                myself.exit_after(Duration::from_millis(ms));
            }
            KeeperMsg::Cast(KeeperCast::Work { ms, marker }) => {
                std::fs::write(format!("{marker}.started"), b"started")?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                std::fs::write(&marker, b"done")?;
            }
            KeeperMsg::Get(reply) => {
                let _ = reply.send((state.1, std::process::id()));
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ractor::ActorRef<KeeperMsg>,
        state: &mut (String, u64),
    ) -> Result<(), ractor::ActorProcessingErr> {
        update(&state.0, |c| {
            c.running -= 1;
            c.completed += 1;
        });
        Ok(())
    }
}

impl ractor_flame::RemoteActor for Keeper {
    const NAME: &'static str = "test.keeper";
    type Cast = KeeperCast;
    type Call = ();
    type Reply = (u64, u32);
    fn cast_message(msg: KeeperCast) -> KeeperMsg {
        KeeperMsg::Cast(msg)
    }
    fn call_message(_: (), reply: ractor::RpcReplyPort<(u64, u32)>) -> KeeperMsg {
        KeeperMsg::Get(reply)
    }
}

/// Burns CPU for `ms` milliseconds without ever yielding to the runtime
/// (the shape of a transcode or an inference step); returns the loop count.
pub struct Spin;

/// Spins on the current thread for `ms`, never yielding.
pub fn spin_for(ms: u64) -> u64 {
    let until = std::time::Instant::now() + Duration::from_millis(ms);
    let mut n = 0u64;
    while std::time::Instant::now() < until {
        n = std::hint::black_box(n.wrapping_add(1));
    }
    n
}

impl RemoteFn for Spin {
    const NAME: &'static str = "test.spin";
    type Args = u64;
    type Output = u64;
    async fn run(ms: u64) -> Result<u64, FnError> {
        Ok(spin_for(ms))
    }
}

/// A blocking function: spins up to `ms`, and stops early when its call is
/// cancelled if `heed_cancel`; counts under `key` (`completed` when it ran
/// to the end, `dropped` when it stopped for a cancel). Returns whether it
/// saw the cancellation.
pub struct SpinBlocking;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpinArgs {
    pub key: String,
    pub ms: u64,
    pub heed_cancel: bool,
}

impl RemoteFn for SpinBlocking {
    const NAME: &'static str = "test.spin_blocking";
    const BLOCKING: bool = true;
    type Args = SpinArgs;
    type Output = bool;
    async fn run(args: SpinArgs) -> Result<bool, FnError> {
        let call = ractor_flame::current_call().expect("a blocking body has its call");
        update(&args.key, |c| c.running += 1);
        let until = std::time::Instant::now() + Duration::from_millis(args.ms);
        let mut stopped = false;
        while std::time::Instant::now() < until {
            if args.heed_cancel && call.is_cancelled() {
                stopped = true;
                break;
            }
            std::hint::black_box(spin_for(1));
        }
        update(&args.key, |c| {
            c.running -= 1;
            if stopped { c.dropped += 1 } else { c.completed += 1 }
        });
        Ok(call.is_cancelled())
    }
}

/// A blocking function that panics with its argument.
pub struct BlockingPanic;

impl RemoteFn for BlockingPanic {
    const NAME: &'static str = "test.blocking_panic";
    const BLOCKING: bool = true;
    type Args = String;
    type Output = ();
    async fn run(message: String) -> Result<(), FnError> {
        panic!("{message}")
    }
}

/// An async function whose `spawn_blocking` work panics; the body awaits it
/// with `?`.
pub struct AwaitedPanic;

impl RemoteFn for AwaitedPanic {
    const NAME: &'static str = "test.awaited_panic";
    type Args = String;
    type Output = ();
    async fn run(message: String) -> Result<(), FnError> {
        tokio::task::spawn_blocking(move || panic!("{message}")).await?;
        Ok(())
    }
}

/// A streamed count, for the streaming tests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TicksArgs {
    /// Probe key: `running`, `completed`/`dropped` as [`Sleep`] counts
    /// them, and `sent` for every item sent.
    pub key: String,
    /// Items to send: 0, 1, 2, ...
    pub n: u32,
    /// Pause before each item (an async sleep, or a CPU spin for
    /// [`BlockingTicks`]).
    pub ms: u64,
    /// Return an error instead of sending this item.
    pub fail_at: Option<u32>,
    /// Panic instead of sending this item.
    pub panic_at: Option<u32>,
}

impl TicksArgs {
    pub fn new(key: &str, n: u32) -> Self {
        TicksArgs {
            key: key.to_owned(),
            n,
            ..TicksArgs::default()
        }
    }
}

/// Streams `0..n`, as [`TicksArgs`] says.
pub struct Ticks;

impl RemoteStream for Ticks {
    const NAME: &'static str = "test.ticks";
    type Args = TicksArgs;
    type Item = u32;
    async fn run(args: TicksArgs, items: StreamSender<u32>) -> Result<(), FnError> {
        ticks(args, items, false).await
    }
}

/// The body of [`Ticks`] and [`BlockingTicks`]: before each item, an async
/// sleep or (`spin`) a CPU spin that never yields; then the configured
/// error or panic, or the item.
async fn ticks(args: TicksArgs, items: StreamSender<u32>, spin: bool) -> Result<(), FnError> {
    update(&args.key, |c| c.running += 1);
    let mut running = Running(args.key.clone(), false);
    for i in 0..args.n {
        if spin {
            spin_for(args.ms);
        } else if args.ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.ms)).await;
        }
        if args.fail_at == Some(i) {
            return Err(FnError::invalid_argument(format!("failed at item {i}")));
        }
        assert!(args.panic_at != Some(i), "panicked at item {i}");
        items.send(i).await?;
        update(&args.key, |c| c.sent += 1);
    }
    running.1 = true;
    Ok(())
}

/// [`Ticks`] as a blocking body: spins `ms` on its thread before each item
/// (never yielding between items).
pub struct BlockingTicks;

impl RemoteStream for BlockingTicks {
    const NAME: &'static str = "test.blocking_ticks";
    const BLOCKING: bool = true;
    type Args = TicksArgs;
    type Item = u32;
    async fn run(args: TicksArgs, items: StreamSender<u32>) -> Result<(), FnError> {
        ticks(args, items, true).await
    }
}

/// Streams `n` byte strings of `size` bytes, the `i`th filled with `i as
/// u8`.
pub struct Chunks;

impl RemoteStream for Chunks {
    const NAME: &'static str = "test.chunks";
    type Args = (u32, usize);
    type Item = ByteBuf;
    async fn run((n, size): (u32, usize), items: StreamSender<ByteBuf>) -> Result<(), FnError> {
        for i in 0..n {
            items.send(ByteBuf::from(vec![i as u8; size])).await?;
        }
        Ok(())
    }
}

/// A registry that differs from [`registry`] by one function: another build
/// of the same program.
pub fn other_registry() -> Registry {
    registry().register::<OnlyInOtherBuild>()
}

/// Registered only in [`other_registry`].
pub struct OnlyInOtherBuild;

impl RemoteFn for OnlyInOtherBuild {
    const NAME: &'static str = "test.only_in_other_build";
    type Args = ();
    type Output = String;
    async fn run(_: ()) -> Result<String, FnError> {
        Ok("other build".into())
    }
}

/// Every function above, as both sides register them.
pub fn registry() -> Registry {
    let registry = Registry::new()
        .register::<Sleep>()
        .register::<Probe>()
        .register::<Echo>()
        .register::<WhereAmI>()
        .register::<Attempt>()
        .register::<Fail>()
        .register::<Panic>()
        .register::<Reject>()
        .register::<ReverseBytes>()
        .register::<ReadFile>()
        .register::<WriteFile>()
        .register::<StopWhenCancelled>()
        .register::<Chatty>()
        .register::<Len>()
        .register::<Bytes>()
        .register::<Digest>()
        .register::<BlobDigest>()
        .register::<Exit>()
        .register::<NestedPool>()
        .register::<Alloc>()
        .register::<Spin>()
        .register::<SpinBlocking>()
        .register::<BlockingPanic>()
        .register::<AwaitedPanic>()
        .register::<SleepWhere>()
        .register::<Env>()
        .register::<EnvAfter>()
        .register::<Threads>()
        .register::<AllowIdle>()
        .register::<IdleAsks>()
        .register_stream::<Ticks>()
        .register_stream::<BlockingTicks>()
        .register_stream::<Chunks>()
        .idle_predicate(IDLE_PREDICATE, idle_allowed)
        .register_actor::<Keeper>()
        .with_state(build_runner_state)
        .register::<StateProbe>();
    #[cfg(feature = "opentelemetry")]
    let registry = registry.register::<TraceId>();
    registry
}

/// States built in this process so far.
pub static STATES_BUILT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Per-runner state of the tests: which construction it was, and an id.
pub struct RunnerState {
    pub construction: u32,
    pub id: String,
}

/// Builds the runner state; fails (as a missing model file would) when the
/// runner's environment has `FLAME_TEST_STATE_FAIL`.
async fn build_runner_state() -> Result<RunnerState, String> {
    if std::env::var_os("FLAME_TEST_STATE_FAIL").is_some() {
        return Err("model file /models/missing.bin not found".into());
    }
    let construction = STATES_BUILT.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    // Before the runner has reached its parent: still forwarded to it.
    tracing::info!(target: "flame_test", pid = std::process::id(), "building runner state");
    Ok(RunnerState {
        construction,
        id: uuid::Uuid::new_v4().simple().to_string(),
    })
}

/// Reports the runner state it was given: (pid, construction, state id).
pub struct StateProbe;

impl ractor_flame::StatefulFn for StateProbe {
    const NAME: &'static str = "test.state_probe";
    type State = RunnerState;
    type Args = ();
    type Output = (u32, u32, String);
    async fn run(state: std::sync::Arc<RunnerState>, _: ()) -> Result<(u32, u32, String), FnError> {
        Ok((std::process::id(), state.construction, state.id.clone()))
    }
}

/// Sleeps like [`Sleep`] (counted under `key`), then reports where it ran:
/// a call that holds its runner and names it.
pub struct SleepWhere;

impl RemoteFn for SleepWhere {
    const NAME: &'static str = "test.sleep_where";
    type Args = SleepArgs;
    type Output = Place;
    async fn run(args: SleepArgs) -> Result<Place, FnError> {
        Sleep::run(args).await?;
        WhereAmI::run(()).await
    }
}

/// The value of an environment variable on the runner.
pub struct Env;

impl RemoteFn for Env {
    const NAME: &'static str = "test.env";
    type Args = String;
    type Output = Option<String>;
    async fn run(name: String) -> Result<Option<String>, FnError> {
        Ok(std::env::var(name).ok())
    }
}

/// Sleeps `ms`, then reports an environment variable of the runner: a call
/// that holds its runner and says which engine it runs on.
pub struct EnvAfter;

/// Arguments of [`EnvAfter`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvAfterArgs {
    pub name: String,
    pub ms: u64,
}

impl RemoteFn for EnvAfter {
    const NAME: &'static str = "test.env_after";
    type Args = EnvAfterArgs;
    type Output = Option<String>;
    async fn run(args: EnvAfterArgs) -> Result<Option<String>, FnError> {
        tokio::time::sleep(std::time::Duration::from_millis(args.ms)).await;
        Ok(std::env::var(args.name).ok())
    }
}

/// Starts up to `n` threads that all stay alive until the last one started,
/// then ends them; returns how many could start (a pids limit stops a
/// fork bomb here).
pub struct Threads;

impl RemoteFn for Threads {
    const NAME: &'static str = "test.threads";
    const BLOCKING: bool = true;
    type Args = usize;
    type Output = usize;
    async fn run(n: usize) -> Result<usize, FnError> {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = std::sync::Arc::new(Mutex::new(wait));
        let mut started = Vec::new();
        for _ in 0..n {
            let wait = wait.clone();
            let spawned = std::thread::Builder::new().stack_size(64 * 1024).spawn(move || {
                // Blocks until `release` is dropped.
                let _ = wait.lock().map(|w| w.recv());
            });
            match spawned {
                Ok(handle) => started.push(handle),
                Err(_) => break,
            }
        }
        let count = started.len();
        drop(release);
        for handle in started {
            let _ = handle.join();
        }
        Ok(count)
    }
}

/// The idle predicate the tests register: a runner whose pool says
/// `IdleShutdown::when(_, IDLE_PREDICATE)` idles down only after
/// [`AllowIdle`] said `true` in its process. Each question is counted
/// ([`IdleAsks`]).
pub const IDLE_PREDICATE: &str = "test.idle_allowed";

static IDLE_ALLOWED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static IDLE_ASKED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn idle_allowed() -> bool {
    IDLE_ASKED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    IDLE_ALLOWED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Sets what [`IDLE_PREDICATE`] answers in the runner's process.
pub struct AllowIdle;

impl RemoteFn for AllowIdle {
    const NAME: &'static str = "test.allow_idle";
    type Args = bool;
    type Output = ();
    async fn run(allowed: bool) -> Result<(), FnError> {
        IDLE_ALLOWED.store(allowed, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// How often [`IDLE_PREDICATE`] was asked in the runner's process.
pub struct IdleAsks;

impl RemoteFn for IdleAsks {
    const NAME: &'static str = "test.idle_asks";
    type Args = ();
    type Output = u32;
    async fn run(_: ()) -> Result<u32, FnError> {
        Ok(IDLE_ASKED.load(std::sync::atomic::Ordering::SeqCst))
    }
}
