//! A chaos workload shared by `tests/fault_chaos.rs` and `examples/chaos_soak.rs`:
//! mixed calls, casts, placed-child calls, runner logs and large arguments
//! on a pool while a chaos task kills, freezes and thaws its runners
//! (signals on the process backend, the engine's kill / pause / unpause on
//! Docker), floods the parent's listener with idle connections that never
//! authenticate (process backend), and blocks the parent's log sink (with
//! [`BlockingSink`] installed).
//!
//! Every operation has a deadline (the sum of its timeouts); the report says
//! how each one resolved, which ones resolved late (more than a second past
//! their deadline) or wrongly, and what panicked. Checking the report is the
//! caller's business, so the test and the soak share one workload.
//!
//! This file is included by path from the example, so it refers only to its
//! sibling `functions` module.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ractor_flame::{CallOptions, DownReason, Error, Pool};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::functions::{Chatty, Digest, Echo, Fail, Keeper, KeeperArgs, KeeperCast, Panic, Sleep, SleepArgs, digest};

/// The timeout of each call and of each step of a placed-child operation.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// How far past its deadline an operation may resolve.
pub const GRACE: Duration = Duration::from_secs(1);

/// While set, [`BlockingSink`] holds every event it is given: a log sink
/// stuck on a full pipe.
pub static SINK_BLOCKED: AtomicBool = AtomicBool::new(false);

/// A `tracing` layer that blocks the thread emitting a runner's log record
/// (target `ractor_flame::remote`) for as long as [`SINK_BLOCKED`] is set,
/// as an application's subscriber writing them to a stuck pipe would.
/// Install it (as part of the global subscriber) for the chaos task's sink
/// blocks to bite. (A sink that blocks every event blocks the application's
/// own threads too, the runtime's workers among them, whatever emits on
/// them: that is the application's runtime, not the link, and no library
/// can keep its deadlines then.)
#[derive(Debug, Clone, Copy)]
pub struct BlockingSink;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for BlockingSink {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "ractor_flame::remote" {
            return;
        }
        while SINK_BLOCKED.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// How much work to make.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Stop after this many operations (`None`: only `duration` bounds it).
    pub ops: Option<usize>,
    /// Stop starting operations after this long (`None`: only `ops` bounds it).
    pub duration: Option<Duration>,
    /// Operations in flight at most.
    pub in_flight: usize,
    /// Seeds the operation mix and the chaos task's choices.
    pub seed: u64,
}

/// What the chaos task attacks.
#[derive(Clone)]
pub enum Target {
    /// Child processes of this process running `exe`.
    Process { exe: PathBuf },
    /// Containers labelled with pool `pool`.
    #[cfg(feature = "docker")]
    Docker { docker: bollard::Docker, pool: String },
}

impl Target {
    /// Runner process ids (none for containers: their processes are the
    /// engine's).
    fn pids(&self) -> Vec<u32> {
        match self {
            Target::Process { exe } => runner_pids(exe),
            #[cfg(feature = "docker")]
            Target::Docker { .. } => Vec::new(),
        }
    }
}

/// How a run went.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub made: usize,
    pub ok: usize,
    /// Errors by kind (variant, and the reason of `RunnerDown`).
    pub errors: BTreeMap<String, usize>,
    /// The first error of each kind, in full.
    pub samples: BTreeMap<String, String>,
    /// Operations by kind.
    pub by_op: BTreeMap<&'static str, usize>,
    /// Operations that had not resolved a second past their deadline.
    pub late: Vec<String>,
    /// Wrong answers, and errors the operation cannot produce.
    pub wrong: Vec<String>,
    /// Panics: of operation tasks, and any seen by the panic hook.
    pub panics: Vec<String>,
    pub killed: usize,
    pub stopped: usize,
    /// Floods of idle unauthenticated connections on the parent's listener.
    pub floods: usize,
    /// Times the parent's log sink was blocked.
    pub sink_blocks: usize,
    /// Largest resident set seen of one runner (process backend), KiB.
    pub runner_max_rss_kib: u64,
    /// This process's resident set when the run started and when it ended, KiB.
    pub parent_rss_start_kib: u64,
    pub parent_rss_end_kib: u64,
    pub elapsed: Duration,
}

impl Report {
    /// Operations that failed with `RunnerDown`.
    pub fn runner_down(&self) -> usize {
        self.errors
            .iter()
            .filter(|(kind, _)| kind.starts_with("RunnerDown"))
            .map(|(_, n)| n)
            .sum()
    }

    /// The most `RunnerDown` failures the faults can explain: each killed or
    /// frozen runner fails the calls on its slots and the calls to placed
    /// children riding on them, at most `2 * max_concurrency`. More means
    /// calls were handed to a runner already known to be gone.
    pub fn runner_down_bound(&self, max_concurrency: usize) -> usize {
        (self.killed + self.stopped) * 2 * max_concurrency
    }

    /// Adds the figures of a later run of the same workload.
    pub fn absorb(&mut self, other: Report) {
        self.made += other.made;
        self.ok += other.ok;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        for (kind, sample) in other.samples {
            self.samples.entry(kind).or_insert(sample);
        }
        for (op, n) in other.by_op {
            *self.by_op.entry(op).or_default() += n;
        }
        self.late.extend(other.late);
        self.wrong.extend(other.wrong);
        self.panics.extend(other.panics);
        self.killed += other.killed;
        self.stopped += other.stopped;
        self.floods += other.floods;
        self.sink_blocks += other.sink_blocks;
        self.runner_max_rss_kib = self.runner_max_rss_kib.max(other.runner_max_rss_kib);
        if self.parent_rss_start_kib == 0 {
            self.parent_rss_start_kib = other.parent_rss_start_kib;
        }
        self.parent_rss_end_kib = other.parent_rss_end_kib;
        self.elapsed += other.elapsed;
    }

    /// One line, for logs and BENCHMARKS.md.
    pub fn summary(&self) -> String {
        let errors: Vec<String> = self.errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
        let ops: Vec<String> = self.by_op.iter().map(|(k, n)| format!("{k}={n}")).collect();
        format!(
            "made={} ok={} errors=[{}] ops=[{}] late={} wrong={} panics={} killed={} stopped={} floods={} sink_blocks={} runner_max_rss_kib={} parent_rss_kib={}->{} elapsed={:.1}s",
            self.made,
            self.ok,
            errors.join(" "),
            ops.join(" "),
            self.late.len(),
            self.wrong.len(),
            self.panics.len(),
            self.killed,
            self.stopped,
            self.floods,
            self.sink_blocks,
            self.runner_max_rss_kib,
            self.parent_rss_start_kib,
            self.parent_rss_end_kib,
            self.elapsed.as_secs_f64(),
        )
    }
}

/// A seed from `CHAOS_SEED`, else from the clock.
pub fn seed() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// Runs `plan` on `pool` while a chaos task attacks `target`. Returns once
/// every operation resolved (or was given up as late) and the chaos task
/// has thawed every runner it froze.
pub async fn run(pool: &Pool, target: Target, plan: Plan) -> Report {
    let panics_before = panic_count();
    let parent_rss_start_kib = own_rss_kib();
    let started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let chaos = tokio::spawn(chaos(target, plan.seed ^ 0x9e37_79b9_7f4a_7c15, stop_rx));
    let permits = Arc::new(Semaphore::new(plan.in_flight));
    let mut ops = JoinSet::new();
    let mut report = Report::default();
    let mut i = 0u64;
    loop {
        let enough_ops = plan.ops.is_some_and(|n| i as usize >= n);
        let enough_time = plan.duration.is_some_and(|d| started.elapsed() >= d);
        if enough_ops || enough_time {
            break;
        }
        let permit = Arc::clone(&permits).acquire_owned().await.expect("semaphore open");
        while let Some(done) = ops.try_join_next() {
            tally(&mut report, done);
        }
        let pool = pool.clone();
        let rng = Rng::new(plan.seed ^ i.wrapping_mul(0x2545_f491_4f6c_dd1d));
        ops.spawn(async move {
            let outcome = op(&pool, rng, i).await;
            drop(permit);
            outcome
        });
        i += 1;
    }
    while let Some(done) = ops.join_next().await {
        tally(&mut report, done);
    }
    let _ = stop_tx.send(true);
    let faults = chaos.await.expect("chaos task");
    report.killed = faults.killed;
    report.stopped = faults.stopped;
    report.floods = faults.floods;
    report.sink_blocks = faults.sink_blocks;
    report.runner_max_rss_kib = faults.max_rss_kib;
    report.parent_rss_start_kib = parent_rss_start_kib;
    report.parent_rss_end_kib = own_rss_kib();
    report.panics.extend(panics_since(panics_before));
    report.elapsed = started.elapsed();
    report
}

/// Whether `pool` has no busy slot and no waiting caller.
pub async fn quiet(pool: &Pool) -> bool {
    pool.stats().await.is_ok_and(|s| s.busy == 0 && s.waiting == 0)
}

/// Runner processes or containers of `target` left (in any state but dead).
pub async fn leftovers(target: &Target) -> Vec<String> {
    match target {
        Target::Process { exe } => runner_pids(exe).iter().map(|p| format!("pid {p}")).collect(),
        #[cfg(feature = "docker")]
        Target::Docker { docker, pool } => docker::list(docker, pool, true).await,
    }
}

/// One operation's outcome.
struct Outcome {
    op: &'static str,
    /// `None` when the operation was given up as late.
    result: Option<Result<(), Error>>,
    late: Option<String>,
    wrong: Option<String>,
}

fn tally(report: &mut Report, done: Result<Outcome, tokio::task::JoinError>) {
    report.made += 1;
    let outcome = match done {
        Ok(outcome) => outcome,
        Err(e) => {
            report.panics.push(format!("operation task: {e}"));
            return;
        }
    };
    *report.by_op.entry(outcome.op).or_default() += 1;
    match &outcome.result {
        Some(Ok(())) => report.ok += 1,
        Some(Err(e)) => {
            let kind = kind(e);
            report
                .samples
                .entry(kind.clone())
                .or_insert_with(|| format!("{} {e}", outcome.op));
            *report.errors.entry(kind).or_default() += 1;
        }
        None => {}
    }
    report.late.extend(outcome.late);
    report.wrong.extend(outcome.wrong);
}

/// An error's kind: its variant, with the reason of `RunnerDown`.
pub fn kind(e: &Error) -> String {
    match e {
        Error::RunnerDown { reason } => {
            let reason = match reason {
                DownReason::ConnectionLost(_) => "ConnectionLost".to_owned(),
                DownReason::HeartbeatLost(_) => "HeartbeatLost".to_owned(),
                DownReason::Exited(code) => format!("Exited({code})"),
                DownReason::Backend(_) => "Backend".to_owned(),
                other => format!("{other:?}"),
            };
            format!("RunnerDown({reason})")
        }
        other => {
            let name = format!("{other:?}");
            name.split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or("")
                .to_owned()
        }
    }
}

/// Runs one operation of the mix, chosen by `rng`, under its deadline plus
/// the grace.
async fn op(pool: &Pool, mut rng: Rng, i: u64) -> Outcome {
    let roll = rng.below(100);
    let (name, deadline) = match roll {
        0..30 => ("echo", OP_TIMEOUT),
        30..33 => ("chatty", OP_TIMEOUT),
        33..35 => ("big", OP_TIMEOUT),
        35..57 => ("sleep", OP_TIMEOUT),
        57..62 => ("overrun", OP_TIMEOUT),
        62..67 => ("fail", OP_TIMEOUT),
        67..70 => ("panic", OP_TIMEOUT),
        70..82 => ("cast", Duration::ZERO),
        _ => ("child", 2 * OP_TIMEOUT),
    };
    let opts = CallOptions::new().timeout(OP_TIMEOUT);
    let key = format!("chaos-{i}");
    let work = async {
        match name {
            "echo" => {
                let text = format!("echo-{i}");
                pool.call_with::<Echo>(text.clone(), opts)
                    .await
                    .map(|got| (got != text).then(|| format!("echo {i}: got {got:?}, want {text:?}")))
            }
            "sleep" | "overrun" => {
                let ms = if name == "sleep" {
                    10 + rng.below(290)
                } else {
                    OP_TIMEOUT.as_millis() as u64 + 500
                };
                let args = SleepArgs { key, ms };
                pool.call_with::<Sleep>(args, opts).await.map(|got| {
                    let wrong = name == "overrun" || got != ms;
                    wrong.then(|| format!("{name} {i}: got Ok({got}), want {ms} or a deadline"))
                })
            }
            "chatty" => {
                let n = i as u32;
                pool.call_with::<Chatty>(n, opts)
                    .await
                    .map(|got| (got != n).then(|| format!("chatty {i}: got {got}, want {n}")))
            }
            "big" => {
                // 1 to 4 MiB, over the link (TLS where the pool uses it).
                let len = (1 + rng.below(4) as usize) << 20;
                let bytes: Vec<u8> = (0..len).map(|b| (b as u64 ^ i) as u8).collect();
                let want = digest(&bytes);
                pool.call_with::<Digest>(serde_bytes::ByteBuf::from(bytes), opts)
                    .await
                    .map(|got| (got != want).then(|| format!("big {i}: digest {got:x}, want {want:x}")))
            }
            "fail" => pool
                .call_with::<Fail>(format!("fail-{i}"), opts)
                .await
                .map(|()| Some(format!("fail {i}: got Ok"))),
            "panic" => pool
                .call_with::<Panic>(format!("panic-{i}"), opts)
                .await
                .map(|()| Some(format!("panic {i}: got Ok"))),
            "cast" => {
                let args = SleepArgs {
                    key,
                    ms: 10 + rng.below(190),
                };
                pool.cast::<Sleep>(args).map(|()| None)
            }
            _ => {
                let (start, add) = (rng.below(1_000), 1 + rng.below(1_000));
                let child = pool.place_child_with::<Keeper>(KeeperArgs { key, start }, opts).await?;
                child.cast(KeeperCast::Add(add))?;
                let (total, _pid) = child
                    .call_with((), ractor_flame::CallOptions::new().timeout(OP_TIMEOUT))
                    .await?;
                let wrong = total != start + add;
                Ok(wrong.then(|| format!("child {i}: total {total}, want {}", start + add)))
            }
        }
    };
    let started = Instant::now();
    let (result, late, mut wrong) = match tokio::time::timeout(deadline + GRACE, work).await {
        Ok(Ok(wrong)) => (Some(Ok(())), None, wrong),
        Ok(Err(e)) => (Some(Err(e)), None, None),
        Err(_) => (
            None,
            Some(format!("{name} {i}: unresolved {:?} after start", started.elapsed())),
            None,
        ),
    };
    if let Some(Err(e)) = &result {
        if !possible(name, e) {
            wrong = Some(format!("{name} {i}: impossible error {e:?}"));
        }
    }
    Outcome {
        op: name,
        result,
        late,
        wrong,
    }
}

/// Whether operation `name` may fail with `e` under chaos.
fn possible(name: &str, e: &Error) -> bool {
    match e {
        Error::Remote { .. } => name == "fail",
        Error::Panic { .. } => name == "panic",
        Error::ChildStopped { .. } => name == "child",
        Error::Codec(_) | Error::UnknownFunction { .. } | Error::Config(_) | Error::PoolNotRunning => false,
        _ => true,
    }
}

/// What the chaos task did.
#[derive(Debug, Default)]
struct Faults {
    killed: usize,
    stopped: usize,
    floods: usize,
    sink_blocks: usize,
    max_rss_kib: u64,
}

/// Every 100-400 ms, picks a live runner of `target`: kills it, or freezes
/// it for 200-1,500 ms (past the test heartbeat timeout of 1 s about half of
/// the time); one time in ten it floods the parent's listener instead with
/// 128 connections that never authenticate, held 500-1,500 ms (process
/// target), and one in ten blocks the parent's log sink for 200-1,500 ms.
/// On `stop`, thaws every runner still frozen, ends every flood and block,
/// and returns.
async fn chaos(target: Target, seed: u64, mut stop: watch::Receiver<bool>) -> Faults {
    let mut rng = Rng::new(seed);
    let mut faults = Faults::default();
    let frozen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut thaws = JoinSet::new();
    loop {
        let pause = Duration::from_millis(100 + rng.below(300));
        // The chaos pace, not a wait for an event: stop ends it at once.
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep(pause) => {}
        }
        for pid in target.pids() {
            faults.max_rss_kib = faults.max_rss_kib.max(rss_kib(pid));
        }
        let live = victims(&target).await;
        let victims: Vec<String> = {
            let frozen = frozen.lock().unwrap();
            live.into_iter().filter(|v| !frozen.contains(v)).collect()
        };
        if victims.is_empty() {
            continue;
        }
        let victim = victims[rng.below(victims.len() as u64) as usize].clone();
        let hold = Duration::from_millis(200 + rng.below(1_300));
        // Until the sink has been blocked once (and, on the process
        // target, the listener flooded once), that is the fault tried: a
        // short run has each at least once. The sink flag is global, so
        // another test of this binary may hold it; then this pick falls
        // through to a kill or a freeze and the next one tries again.
        let pick = if faults.sink_blocks == 0 {
            9
        } else if faults.floods == 0 && matches!(target, Target::Process { .. }) {
            8
        } else {
            rng.below(10)
        };
        match pick {
            8 => {
                if let Some(conns) = flood(&target, &victim).await {
                    faults.floods += 1;
                    let mut stop = stop.clone();
                    thaws.spawn(async move {
                        tokio::select! {
                            _ = stop.wait_for(|s| *s) => {}
                            () = tokio::time::sleep(hold.max(Duration::from_millis(500))) => {}
                        }
                        drop(conns);
                    });
                    continue;
                }
            }
            9 if !SINK_BLOCKED.swap(true, Ordering::AcqRel) => {
                faults.sink_blocks += 1;
                // Unblocked from a thread of its own: every runtime worker
                // may be stuck in the sink meanwhile.
                std::thread::spawn(move || {
                    std::thread::sleep(hold);
                    SINK_BLOCKED.store(false, Ordering::Release);
                });
                continue;
            }
            _ => {}
        }
        if rng.below(2) == 0 {
            if signal(&target, &victim, Fault::Kill).await {
                faults.killed += 1;
            }
        } else if signal(&target, &victim, Fault::Stop).await {
            faults.stopped += 1;
            frozen.lock().unwrap().insert(victim.clone());
            let (target, frozen, mut stop) = (target.clone(), Arc::clone(&frozen), stop.clone());
            thaws.spawn(async move {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => {}
                    () = tokio::time::sleep(hold) => {}
                }
                signal(&target, &victim, Fault::Cont).await;
                frozen.lock().unwrap().remove(&victim);
            });
        }
    }
    SINK_BLOCKED.store(false, Ordering::Release);
    while thaws.join_next().await.is_some() {}
    faults
}

/// Idle connections to the listener runner `victim` reaches its parent at
/// (read from its `FLAME_PARENT`), opened and held by the caller; `None`
/// where that cannot be read (containers).
async fn flood(target: &Target, victim: &str) -> Option<Vec<tokio::net::TcpStream>> {
    if !matches!(target, Target::Process { .. }) {
        return None;
    }
    let environ = std::fs::read(format!("/proc/{victim}/environ")).ok()?;
    let encoded = environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"FLAME_PARENT="))
        .map(|v| String::from_utf8_lossy(v).into_owned())?;
    let addr = *ractor_flame::Parent::decode(&encoded).ok()?.parent_addrs.first()?;
    let mut conns = Vec::new();
    for _ in 0..128 {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(conn) => conns.push(conn),
            Err(_) => break,
        }
    }
    Some(conns)
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill,
    Stop,
    Cont,
}

/// Live runners of `target`, as ids `signal` takes.
async fn victims(target: &Target) -> Vec<String> {
    match target {
        Target::Process { exe } => runner_pids(exe).iter().map(u32::to_string).collect(),
        #[cfg(feature = "docker")]
        Target::Docker { docker, pool } => docker::list(docker, pool, false).await,
    }
}

/// Applies `fault` to `victim`; whether it took (the victim may be gone).
async fn signal(target: &Target, victim: &str, fault: Fault) -> bool {
    match target {
        Target::Process { .. } => {
            let sig = match fault {
                Fault::Kill => "-KILL",
                Fault::Stop => "-STOP",
                Fault::Cont => "-CONT",
            };
            tokio::process::Command::new("kill")
                .args([sig, victim])
                .stderr(std::process::Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success())
        }
        #[cfg(feature = "docker")]
        Target::Docker { docker, .. } => docker::fault(docker, victim, fault).await,
    }
}

/// Live (not zombie) child processes of this process running `exe`.
pub fn runner_pids(exe: &std::path::Path) -> Vec<u32> {
    let me = std::process::id();
    let want = std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_owned());
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the command name: state, then the parent's pid.
            let mut fields = stat.rsplit(')').next().unwrap_or("").split_whitespace();
            let (state, ppid) = (fields.next(), fields.next().and_then(|p| p.parse::<u32>().ok()));
            ppid == Some(me)
                && state != Some("Z")
                && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == want)
        })
        .collect()
}

/// A process's resident set, KiB (0 when unknown).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// This process's resident set now, KiB (0 when unknown).
pub fn own_rss_kib() -> u64 {
    rss_kib(std::process::id())
}

/// This process's peak resident set, KiB (0 when unknown).
pub fn own_peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

#[cfg(feature = "docker")]
mod docker {
    use std::collections::HashMap;

    use bollard::Docker;
    use bollard::query_parameters::{KillContainerOptionsBuilder, ListContainersOptionsBuilder};
    use ractor_flame::docker::{LABEL_MANAGED, LABEL_POOL};

    use super::Fault;

    /// Ids of the containers of `pool`: running ones, or any not removed.
    pub(super) async fn list(docker: &Docker, pool: &str, all: bool) -> Vec<String> {
        let mut filters = HashMap::from([(
            "label",
            vec![format!("{LABEL_MANAGED}=true"), format!("{LABEL_POOL}={pool}")],
        )]);
        if !all {
            filters.insert("status", vec!["running".to_owned()]);
        }
        let options = ListContainersOptionsBuilder::new().all(all).filters(&filters).build();
        match docker.list_containers(Some(options)).await {
            Ok(list) => list.into_iter().filter_map(|c| c.id).collect(),
            Err(e) => vec![format!("(cannot list containers: {e})")],
        }
    }

    pub(super) async fn fault(docker: &Docker, id: &str, fault: Fault) -> bool {
        let result = match fault {
            Fault::Kill => {
                let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
                docker.kill_container(id, Some(options)).await
            }
            Fault::Stop => docker.pause_container(id).await,
            Fault::Cont => docker.unpause_container(id).await,
        };
        result.is_ok()
    }
}

/// SplitMix64: a small seeded generator, so a run's choices repeat with its
/// seed (timing does not).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Panics seen anywhere in this process since the hook was installed.
fn panics() -> &'static Mutex<Vec<String>> {
    static PANICS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    PANICS.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or("unnamed").to_owned();
            // A failed assertion of a chaos test (on its own thread) fails
            // that test already; it is no panic of the workload.
            if !thread.starts_with("chaos_") {
                if let Ok(mut seen) = panics().try_lock() {
                    seen.push(format!("thread {thread}: {info}"));
                }
                PANIC_COUNT.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
        Mutex::default()
    })
}

static PANIC_COUNT: AtomicUsize = AtomicUsize::new(0);

fn panic_count() -> usize {
    let _ = panics();
    PANIC_COUNT.load(Ordering::SeqCst)
}

fn panics_since(before: usize) -> Vec<String> {
    let now = PANIC_COUNT.load(Ordering::SeqCst);
    if now == before {
        return Vec::new();
    }
    let seen = panics().lock().unwrap();
    let skip = seen.len().saturating_sub(now - before);
    seen[skip..].to_vec()
}

/// The op mix in words, for the docs of the test and the soak.
pub const MIX: &str = "30% echo, 3% a call that logs on the runner, 2% a 1-4 MiB argument, \
22% sleep 10-300 ms, 5% sleep past the 2 s timeout, 5% failing, 3% panicking, \
12% cast sleep 10-200 ms, 18% placed child (place, cast, call, drop)";
