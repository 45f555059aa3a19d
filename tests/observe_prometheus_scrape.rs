//! The observability example's Prometheus exporter, scraped over plain TCP:
//! the pool's series are there, with their labels, what its runners cost
//! among them.

#[path = "../examples/observability.rs"]
#[allow(dead_code, unreachable_pub, missing_docs)]
mod example;
mod support;

use support::functions::Echo;
use support::{Kind, config, eventually, pool_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_of_metrics_shows_the_pools_series() {
    let addr = example::install_exporter(([127, 0, 0, 1], 0).into()).expect("exporter");
    let pool = pool_with(Kind::Process, config(2)).await;
    for _ in 0..2 {
        pool.call::<Echo>("x".into()).await.unwrap();
    }
    let pool_label = format!("pool=\"{}\"", pool.name());
    let line = |body: &str, name: &str, labels: &[&str]| {
        body.lines()
            .find(|l| {
                l.starts_with(&format!("{name}{{")) && l.contains(&pool_label) && labels.iter().all(|x| l.contains(x))
            })
            .map(str::to_owned)
    };
    let body = example::scrape(addr).await.expect("scrape");
    let calls = line(
        &body,
        "flame_calls_total",
        &["function=\"test.echo\"", "outcome=\"ok\""],
    );
    assert!(
        calls.as_deref().is_some_and(|l| l.ends_with(" 2")),
        "{calls:?} in\n{body}"
    );
    let boots = line(&body, "flame_boots_total", &["backend=\"process\"", "outcome=\"ok\""]);
    assert!(
        boots.as_deref().is_some_and(|l| l.ends_with(" 1")),
        "{boots:?} in\n{body}"
    );
    assert!(line(&body, "flame_call_duration_seconds", &[]).is_some(), "{body}");
    assert!(line(&body, "flame_boot_duration_seconds", &[]).is_some(), "{body}");
    eventually(
        "the runners gauge reads 1",
        std::time::Duration::from_secs(5),
        || async {
            let body = example::scrape(addr).await.expect("scrape");
            line(&body, "flame_runners", &[]).is_some_and(|l| l.ends_with(" 1"))
        },
    )
    .await;
    // What the runner cost: its boot is billed once it serves, its serving
    // time once it is gone.
    let booting = line(&body, "flame_runner_milliseconds_total", &["phase=\"booting\""]);
    assert!(booting.is_some(), "{body}");
    pool.stop().await;
    eventually(
        "the runner's serving time is billed",
        std::time::Duration::from_secs(5),
        || async {
            let body = example::scrape(addr).await.expect("scrape");
            line(&body, "flame_runner_milliseconds_total", &["phase=\"serving\""]).is_some()
        },
    )
    .await;
}
