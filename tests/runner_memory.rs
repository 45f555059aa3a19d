//! What an idle runner holds: after half a second with no call, a runner
//! process gives back the heap the C library kept and the pages of code it
//! mapped; the next call maps what it runs again and is served as before.

mod support;

use std::time::Duration;

use ractor_flame::{Pool, ProcessBackend};
use serde_bytes::ByteBuf;
use support::functions::{Alloc, Digest, WhereAmI, digest, registry};
use support::{config, eventually};

/// `(RssAnon, RssFile)` of process `pid`, in KiB.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the runner's status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("RssAnon:"), field("RssFile:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_runner_gives_back_mapped_code_and_freed_heap_and_serves_on() {
    let pool = Pool::start(config(1), ProcessBackend::new(support::runner_exe()), &registry())
        .await
        .unwrap();
    let pid = pool.call::<WhereAmI>(()).await.unwrap().pid;
    // A first quiet spell: what the boot mapped goes.
    let booted = rss(pid);
    eventually(
        "the runner's boot code to leave its resident set",
        Duration::from_secs(5),
        || std::future::ready(rss(pid).1 * 2 <= booted.1),
    )
    .await;
    // Then work that maps code and grows the heap (megabytes allocated and
    // freed on the runner, and large arguments read there), and a second
    // quiet spell: a runner gives memory back each time it goes quiet.
    let arg = ByteBuf::from((0..3 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    for _ in 0..4 {
        assert_eq!(pool.call::<Alloc>(16).await.unwrap(), 16);
        assert_eq!(pool.call::<Digest>(arg.clone()).await.unwrap(), digest(&arg));
    }
    let busy = rss(pid);
    let mut quiet = busy;
    // Both parts at least halve (here: from 14 to 26 MiB and about 9 MiB
    // to 5 and 2). Without the heap trimmed, the anonymous part stays
    // where the work left it; without the code given back, or without the
    // end of the work waking the thread that gives it back, the
    // file-backed part stays at 9.
    let what = "the quiet runner's freed heap and mapped code to leave its resident set";
    eventually(what, Duration::from_secs(5), || {
        quiet = rss(pid);
        std::future::ready(quiet.0 * 2 <= busy.0 && quiet.1 * 2 <= busy.1)
    })
    .await;
    eprintln!("runner {pid} (anonymous, file-backed) KiB: busy {busy:?}, quiet {quiet:?}");
    // Served as before, with everything it needs mapped again.
    assert_eq!(pool.call::<Digest>(arg.clone()).await.unwrap(), digest(&arg));
    assert_eq!(pool.call::<WhereAmI>(()).await.unwrap().pid, pid);
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_told_to_keep_its_memory_keeps_it() {
    let config = config(1).release_memory_after(None);
    let pool = Pool::start(config, ProcessBackend::new(support::runner_exe()), &registry())
        .await
        .unwrap();
    let pid = pool.call::<WhereAmI>(()).await.unwrap().pid;
    let busy = rss(pid);
    // Three times the default quiet time.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let quiet = rss(pid);
    assert!(
        quiet.1 * 10 >= busy.1 * 8,
        "the runner gave back its mapped code: {busy:?} -> {quiet:?}"
    );
    pool.stop().await;
}
