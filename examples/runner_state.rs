//! Typed state for remote functions: something expensive (here a lookup
//! table standing in for a loaded model) is built once per runner, on the
//! runner, and every call gets it.
//!
//! ```text
//! cargo run --release --example runner_state                       # runners in this process
//! cargo run --release --example runner_state -- --backend process  # runners as child processes
//! ```
//!
//! Output of a run (pids and the split of calls vary): on the process
//! backend each runner process built its table once; on the local backend
//! both runners live in this process, whose count is then 2 (once per
//! runner).
//!
//! ```text
//! 40 calls on the process backend: runner 30347 built its table 1 time(s) and served 24 calls; runner 30348 built its table 1 time(s) and served 16 calls
//! 40 calls on the local backend: runner 30357 built its table 2 time(s) and served 40 calls
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use ractor_flame::{AnyBackend, FnError, Pool, PoolConfig, Registry, StatefulFn};

/// How many tables this process has built (on a runner: its own count).
static BUILT: AtomicU32 = AtomicU32::new(0);

/// The expensive state: squares of the first million numbers.
struct Table {
    squares: Vec<u64>,
    builds: u32,
}

async fn build_table() -> Result<Table, FnError> {
    // Stands in for reading a model file; an error here fails the boot.
    let squares = (0..1_000_000u64).map(|n| n * n).collect();
    let builds = BUILT.fetch_add(1, Ordering::SeqCst) + 1;
    Ok(Table { squares, builds })
}

/// Looks a number up in the runner's table.
struct Square;

impl StatefulFn for Square {
    const NAME: &'static str = "example.square";
    type State = Table;
    type Args = usize;
    /// The square, the pid of the runner, and how many tables it built.
    type Output = (u64, u32, u32);

    async fn run(table: Arc<Table>, n: usize) -> Result<(u64, u32, u32), FnError> {
        let square = *table.squares.get(n).ok_or_else(|| FnError::msg("out of range"))?;
        Ok((square, std::process::id(), table.builds))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = Registry::new().with_state(build_table).register::<Square>();
    ractor_flame::run_if_runner(&registry).await?;

    let args: Vec<String> = std::env::args().collect();
    let name = match args.iter().position(|a| a == "--backend") {
        Some(i) => args.get(i + 1).cloned().unwrap_or_default(),
        None => "local".to_owned(),
    };
    let backend: AnyBackend = name.parse()?;
    let config = PoolConfig::new(2).min(2).max_concurrency(1).name("runner-state");
    let pool = Pool::start(config, backend, &registry).await?;

    let mut served: BTreeMap<u32, (u32, usize)> = BTreeMap::new();
    for round in 0..20 {
        let (a, b) = tokio::join!(pool.call::<Square>(round), pool.call::<Square>(round + 1));
        for (square, pid, builds) in [a?, b?] {
            assert!(square > 0 || round == 0);
            let entry = served.entry(pid).or_insert((builds, 0));
            entry.0 = entry.0.max(builds);
            entry.1 += 1;
        }
    }
    let lines: Vec<String> = served
        .iter()
        .map(|(pid, (builds, calls))| format!("runner {pid} built its table {builds} time(s) and served {calls} calls"))
        .collect();
    println!("40 calls on the {name} backend: {}", lines.join("; "));
    pool.stop().await;
    Ok(())
}
