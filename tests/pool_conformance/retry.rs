//! Safe retries (B60): a call opted into retries survives its runner going
//! down, every attempt under one idempotency key its body can read; never
//! retried without a policy, nor after the function's error, a panic or a
//! deadline. Local and process backends (the test kills runners and reads
//! the attempts' files; a container's files are its own).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ractor_flame::{CallOptions, Error, RetryPolicy};

use super::WAIT;
use crate::support::functions::{Attempt, AttemptArgs};
use crate::support::{self, Kind, TestPool, config, eventually, pool_with};

/// A fresh directory for one test's attempt files, removed on drop.
struct Dir(PathBuf);

impl std::ops::Deref for Dir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn attempts_dir() -> Dir {
    let dir = std::env::temp_dir().join(format!("flame-b60-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    Dir(dir)
}

/// The attempts recorded in `dir`: (pid, idempotency key) each.
fn attempts(dir: &Path) -> Vec<(u32, String)> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().unwrap().parse().unwrap();
            (pid, std::fs::read_to_string(e.path()).unwrap())
        })
        .collect()
}

fn args(dir: &Path, ms: u64, fail: Option<&str>) -> AttemptArgs {
    AttemptArgs {
        dir: dir.to_string_lossy().into_owned(),
        ms,
        fail: fail.map(str::to_owned),
    }
}

fn quick_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy::new(attempts).backoff(Duration::from_millis(5), Duration::from_millis(20))
}

/// Starts a 10 s attempt with `opts`, waits until it runs, and kills its
/// runner; returns the call's outcome.
async fn kill_the_first_attempt(pool: &TestPool, dir: &Path, opts: CallOptions) -> Result<String, Error> {
    let call = {
        let (pool, args) = (pool.pool.clone(), args(dir, 10_000, None));
        tokio::spawn(async move { pool.call_with::<Attempt>(args, opts).await })
    };
    eventually("the first attempt runs", WAIT, || async { attempts(dir).len() == 1 }).await;
    let (pid, _) = attempts(dir)[0].clone();
    match &pool.local {
        Some(local) => assert_eq!(local.kill_runners(), 1),
        None => support::kill(pid, "KILL"),
    }
    call.await.unwrap()
}

pub(super) async fn b60_a_retried_call_survives_its_runner_dying_under_one_key(kind: Kind) {
    let pool = pool_with(kind, config(2).min(1)).await;
    support::runners(&pool, 1).await;
    let dir = attempts_dir();
    let opts = CallOptions::new().retry(quick_retries(3));
    let key = kill_the_first_attempt(&pool, &dir, opts).await.unwrap();
    let seen = attempts(&dir);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(!key.is_empty());
    assert!(
        seen.iter().all(|(_, k)| *k == key),
        "one key for every attempt: {seen:?}"
    );
    if kind == Kind::Process {
        assert_ne!(seen[0].0, seen[1].0, "the second attempt ran on another runner");
    }
    // Another call gets a key of its own.
    let other = pool
        .call_with::<Attempt>(args(&attempts_dir(), 0, None), opts)
        .await
        .unwrap();
    assert_ne!(other, key);
    pool.stop().await;
}

pub(super) async fn b60_calls_are_never_retried_by_default(kind: Kind) {
    let pool = pool_with(kind, config(2).min(1)).await;
    support::runners(&pool, 1).await;
    let dir = attempts_dir();
    let err = kill_the_first_attempt(&pool, &dir, CallOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RunnerDown { .. }), "{err:?}");
    let seen = attempts(&dir);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].1, "", "no idempotency key without a policy");
    pool.stop().await;
}

pub(super) async fn b60_no_retry_after_an_error_a_panic_or_a_deadline(kind: Kind) {
    let pool = pool_with(kind, config(2).min(1)).await;
    support::runners(&pool, 1).await;
    let opts = CallOptions::new().retry(quick_retries(5));
    let dir = attempts_dir();
    let err = pool
        .call_with::<Attempt>(args(&dir, 0, Some("error")), opts)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Remote { .. }), "{err:?}");
    assert_eq!(attempts(&dir).len(), 1);
    let dir = attempts_dir();
    let err = pool
        .call_with::<Attempt>(args(&dir, 0, Some("panic")), opts)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Panic { .. }), "{err:?}");
    assert_eq!(attempts(&dir).len(), 1);
    let dir = attempts_dir();
    let short = opts.timeout(Duration::from_millis(200));
    let err = pool
        .call_with::<Attempt>(args(&dir, 5_000, None), short)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Deadline { .. }), "{err:?}");
    assert_eq!(attempts(&dir).len(), 1);
    pool.stop().await;
}
