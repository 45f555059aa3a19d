//! A placed stateful actor: load something expensive once on a runner, then
//! answer many calls from it (FLAME's `place_child`).
//!
//! The "model" here is a prime sieve up to ten million, built once when the
//! actor starts on its runner (about 10 MB of state that never crosses the
//! wire); each call then asks for the primes in a range.
//!
//! ```text
//! cargo run --release --example placed_worker                       # runner in this process
//! cargo run --release --example placed_worker -- --backend process  # runner as a child process
//! ```
//!
//! Expected output: the load time of the sieve, the answers of a batch of
//! calls with their average latency, then the runner scaling to zero once
//! the worker (linked to its handle) is dropped.

use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_flame::{LocalBackend, Pool, PoolConfig, ProcessBackend, Registry, RemoteActor};

/// The worker: a sieve built in `pre_start`, queried by calls.
#[derive(Default)]
struct PrimeWorker;

/// The worker's own messages (a ractor call carries its reply port).
enum PrimeMsg {
    /// Count the primes in `[lo, hi)`.
    Count(u64, u64, RpcReplyPort<u64>),
    /// Log a line on the runner.
    Note(String),
}

impl Actor for PrimeWorker {
    type Msg = PrimeMsg;
    /// `is_prime[n]` for every `n` below the limit.
    type State = Vec<bool>;
    /// The sieve's limit.
    type Arguments = u64;

    async fn pre_start(&self, _: ActorRef<PrimeMsg>, limit: u64) -> Result<Vec<bool>, ActorProcessingErr> {
        // The expensive part, once per placement.
        Ok(tokio::task::spawn_blocking(move || sieve(limit as usize)).await?)
    }

    async fn handle(
        &self,
        _: ActorRef<PrimeMsg>,
        msg: PrimeMsg,
        sieve: &mut Vec<bool>,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PrimeMsg::Count(lo, hi, reply) => {
                let hi = (hi as usize).min(sieve.len());
                let count = sieve[(lo as usize).min(hi)..hi].iter().filter(|p| **p).count();
                let _ = reply.send(count as u64);
            }
            PrimeMsg::Note(line) => println!("runner {}: {line}", std::process::id()),
        }
        Ok(())
    }
}

impl RemoteActor for PrimeWorker {
    const NAME: &'static str = "example.prime_worker";
    type Cast = String;
    type Call = (u64, u64);
    type Reply = u64;

    fn cast_message(line: String) -> PrimeMsg {
        PrimeMsg::Note(line)
    }

    fn call_message((lo, hi): (u64, u64), reply: RpcReplyPort<u64>) -> PrimeMsg {
        PrimeMsg::Count(lo, hi, reply)
    }
}

fn sieve(limit: usize) -> Vec<bool> {
    let mut is_prime = vec![true; limit];
    is_prime.iter_mut().take(2).for_each(|p| *p = false);
    let mut n = 2;
    while n * n < limit {
        if is_prime[n] {
            (n * n..limit).step_by(n).for_each(|m| is_prime[m] = false);
        }
        n += 1;
    }
    is_prime
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = Registry::new().register_actor::<PrimeWorker>();
    ractor_flame::run_if_runner(&registry).await?;

    let args: Vec<String> = std::env::args().collect();
    let backend = args
        .iter()
        .position(|a| a == "--backend")
        .and_then(|i| args.get(i + 1))
        .map_or("local", String::as_str);
    let config = PoolConfig::new(1)
        .name("placed-worker")
        .idle_shutdown_after(Duration::from_millis(300));
    let pool = match backend {
        "local" => Pool::start(config, LocalBackend::new(), &registry).await?,
        "process" => Pool::start(config, ProcessBackend::current_exe()?, &registry).await?,
        other => return Err(format!("unknown backend `{other}` (local or process)").into()),
    };

    let started = Instant::now();
    let worker = pool.place_child::<PrimeWorker>(10_000_000).await?;
    println!(
        "worker placed on runner {} in {:.2?} (sieve built there)",
        worker.runner(),
        started.elapsed()
    );
    worker.cast("ready for queries".to_owned())?;

    let queries: Vec<(u64, u64)> = (0..10).map(|k| (k * 1_000_000, (k + 1) * 1_000_000)).collect();
    let started = Instant::now();
    let mut total = 0;
    for &(lo, hi) in &queries {
        let count = worker.call((lo, hi)).await?;
        println!("primes in [{lo:>8}, {hi:>8}): {count}");
        total += count;
    }
    let per_call = started.elapsed() / queries.len() as u32;
    println!("{total} primes below 10,000,000 (expected 664579); {per_call:.2?} per call");

    // Linked: dropping the handle stops the worker, frees its slot, and the
    // idle runner then leaves.
    drop(worker);
    let dropped = Instant::now();
    while pool.stats().await?.runners > 0 && dropped.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("runner gone {:.2?} after the worker was dropped", dropped.elapsed());
    pool.stop().await;
    Ok(())
}
