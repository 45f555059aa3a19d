//! Per-tenant work on an elastic pool: calls keyed by tenant go back to the
//! runner that already holds the tenant's model, calls that must not be lost
//! opt into retries under one idempotency key, and the pool is resized while
//! it serves.
//!
//! ```text
//! cargo run --release --example tenants                      # runners as child processes
//! cargo run --release --example tenants -- --backend local   # runners in this process
//! ```
//!
//! Output of a run (runner ids and times vary):
//!
//! ```text
//! 4 tenants x 25 calls, keyed: 4 model loads, 96 of 100 calls found their model (0.96)
//! the same calls, unkeyed: 7 model loads
//! resized to min 0, max 2: 2 runners retiring
//! a retried call ran under idempotency key 68caa6f88aba48f3b96bcebe752454e1
//! ```

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use ractor_flame::{
    AnyBackend, CallOptions, FnError, Pool, PoolConfig, PoolEvent, ProcessBackend, Registry, RemoteFn, RetryPolicy,
};
use serde::{Deserialize, Serialize};

/// The models loaded, as `runner/tenant` (in-process runners share this
/// process).
static LOADED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// A request for one tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Request {
    tenant: String,
    input: u64,
}

/// What a runner answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Scored {
    score: u64,
    /// The tenant's model was loaded here before this call.
    warm: bool,
    /// The idempotency key of a call opted into retries.
    key: Option<String>,
}

/// Scores an input with the tenant's model, loading it first (20 ms) when
/// this runner has not yet.
struct Score;

impl RemoteFn for Score {
    const NAME: &'static str = "tenants.score";
    type Args = Request;
    type Output = Scored;
    async fn run(req: Request) -> Result<Scored, FnError> {
        let model = format!("{:?}/{}", ractor_flame::current_runner(), req.tenant);
        let warm = !LOADED
            .lock()
            .expect("poisoned")
            .get_or_insert_with(HashSet::new)
            .insert(model);
        if !warm {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let key = ractor_flame::current_call().and_then(|c| c.idempotency_key().map(str::to_owned));
        Ok(Scored {
            score: req.input.wrapping_mul(31) ^ req.tenant.len() as u64,
            warm,
            key,
        })
    }
}

/// Calls every tenant `rounds` times, four callers at once; returns how
/// many calls found their tenant's model loaded.
async fn round(pool: &Pool, tenants: &[&str], rounds: u64, keyed: bool) -> Result<usize, ractor_flame::Error> {
    let mut warm = 0;
    for input in 0..rounds {
        let calls = tenants.iter().map(|tenant| {
            let opts = if keyed {
                CallOptions::new().key(*tenant)
            } else {
                CallOptions::new()
            };
            let req = Request {
                tenant: (*tenant).to_owned(),
                input,
            };
            pool.call_with::<Score>(req, opts)
        });
        for scored in futures_util::future::join_all(calls).await {
            warm += usize::from(scored?.warm);
        }
    }
    Ok(warm)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = Registry::new().register::<Score>();
    ractor_flame::run_if_runner(&registry).await?;

    let args: Vec<String> = std::env::args().collect();
    let backend = match args.iter().position(|a| a == "--backend").and_then(|i| args.get(i + 1)) {
        Some(name) if name != "process" => name.parse::<AnyBackend>()?,
        _ => AnyBackend::from(ProcessBackend::current_exe()?.args(Vec::<String>::new())),
    };
    let tenants = ["acme", "globex", "initech", "umbrella"];
    const ROUNDS: u64 = 25;
    let total = tenants.len() * ROUNDS as usize;

    // Four runners kept up, one call each at a time: without keys, a
    // tenant's calls land wherever there is room.
    let config = PoolConfig::new(4).min(4).max_concurrency(1).name("tenants");
    let pool = Pool::start(config, backend.clone(), &registry).await?;
    let warm = round(&pool, &tenants, ROUNDS, true).await?;
    println!(
        "{} tenants x {ROUNDS} calls, keyed: {} model loads, {warm} of {total} calls found their model ({:.2})",
        tenants.len(),
        total - warm,
        warm as f64 / total as f64
    );
    pool.stop().await;

    // The same on fresh runners, without keys.
    let config = PoolConfig::new(4).min(4).max_concurrency(1).name("tenants-unkeyed");
    let pool = Pool::start(config, backend, &registry).await?;
    let warm = round(&pool, &tenants, ROUNDS, false).await?;
    println!("the same calls, unkeyed: {} model loads", total - warm);

    // Fewer runners while it serves: the surplus leaves after its work.
    let mut events = pool.events();
    pool.resize(0, 2).await?;
    while let Ok(event) = events.recv().await {
        if let PoolEvent::Resized { min, max, retiring, .. } = event {
            println!("resized to min {min}, max {max}: {retiring} runners retiring");
            break;
        }
    }

    // A call that must not be lost: retried on a lost runner or a failed
    // boot, never after its own error, under one idempotency key.
    let opts = CallOptions::new()
        .key("acme")
        .retry(RetryPolicy::new(3).budget(Duration::from_secs(10)));
    let req = Request {
        tenant: "acme".into(),
        input: 7,
    };
    let scored = pool.call_with::<Score>(req, opts).await?;
    println!(
        "a retried call ran under idempotency key {}",
        scored.key.as_deref().unwrap_or("(none)")
    );
    pool.stop().await;
    Ok(())
}
