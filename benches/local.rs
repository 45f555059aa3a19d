//! Criterion benches of the local backend's call path.
//!
//! ```text
//! cargo bench --bench local
//! ```

#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ractor_flame::{FnError, LocalBackend, Pool, PoolConfig, Registry, RemoteFn};

struct Noop;
impl RemoteFn for Noop {
    const NAME: &'static str = "bench.noop";
    type Args = u64;
    type Output = u64;
    async fn run(n: u64) -> Result<u64, FnError> {
        Ok(n)
    }
}

fn local_call(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = Registry::new().register::<Noop>();
    let pool = rt.block_on(async {
        let config = PoolConfig::new(1).name("criterion-local").max_concurrency(10_000);
        let pool = Pool::start(config, LocalBackend::new(), &registry).await.unwrap();
        pool.call::<Noop>(0).await.unwrap();
        pool
    });

    let mut group = c.benchmark_group("local");
    group.bench_function("call_latency", |b| {
        b.to_async(&rt).iter(|| async { pool.call::<Noop>(7).await.unwrap() })
    });
    group.throughput(Throughput::Elements(64 * 100));
    group.bench_function("call_64_callers_x100", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let pool = pool.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..64)
                        .map(|_| {
                            let pool = pool.clone();
                            tokio::spawn(async move {
                                for i in 0..100 {
                                    pool.call::<Noop>(i).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                    total += start.elapsed();
                }
                total
            }
        })
    });
    group.finish();
    rt.block_on(pool.stop());
}

criterion_group!(benches, local_call);
criterion_main!(benches);
