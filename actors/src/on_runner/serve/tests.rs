use tokio::runtime::Handle;

use super::Serve;
use crate::func::registry::Registry;
use crate::func::states::States;
use crate::ids::RunnerId;

/// Tasks alive on this runtime, once those that are ending have ended.
async fn settled_tasks() -> usize {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    Handle::current().metrics().num_alive_tasks()
}

#[tokio::test]
async fn the_helpers_end_with_their_engine() {
    let before = settled_tasks().await;
    let serve = Serve::new(
        RunnerId::new(),
        "pool".into(),
        Registry::new(),
        Handle::current(),
        States::default(),
    );
    // One helper per worker (this runtime has one), and one more.
    assert_eq!(settled_tasks().await, before + 2);
    drop(serve);
    assert_eq!(settled_tasks().await, before, "no helper outlives its engine");
}

/// Calls the local backend makes without a task of their own: calls run in
/// their caller's task, and casts whose end a caller's hold receives.
mod in_process {
    use std::cell::RefCell;
    use std::sync::{Arc, Mutex, Weak};
    use std::time::Duration;

    use tokio::runtime::Handle;
    use tokio::sync::Notify;

    use crate::func::registry::Registry;
    use crate::func::states::States;
    use crate::ids::RunnerId;
    use crate::on_runner::serve::{Release, Serve};
    use crate::wire::frame::{CallRef, Outcome};
    use crate::{FnError, RemoteFn};

    thread_local! {
        /// The engine of the test running on this thread (each test runs
        /// on a runtime of one thread), for bodies that stop every call.
        static ENGINE: RefCell<Weak<Serve>> = const { RefCell::new(Weak::new()) };
    }

    /// Never returns.
    struct Hang;
    impl RemoteFn for Hang {
        const NAME: &'static str = "hang";
        type Args = ();
        type Output = ();
        async fn run(_: ()) -> Result<(), FnError> {
            std::future::pending().await
        }
    }

    /// Stops every call of its engine in its first poll, then never
    /// returns: the stop looks at the running calls before this one has an
    /// entry there.
    struct StopAllThenHang;
    impl RemoteFn for StopAllThenHang {
        const NAME: &'static str = "stop_all_then_hang";
        type Args = ();
        type Output = ();
        async fn run(_: ()) -> Result<(), FnError> {
            ENGINE.with(|engine| engine.borrow().upgrade().expect("the test's engine").fail_all());
            std::future::pending().await
        }
    }

    /// Sleeps 50 ms.
    struct Nap;
    impl RemoteFn for Nap {
        const NAME: &'static str = "nap";
        type Args = ();
        type Output = ();
        async fn run(_: ()) -> Result<(), FnError> {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(())
        }
    }

    /// Fails at once.
    struct Fail;
    impl RemoteFn for Fail {
        const NAME: &'static str = "fail";
        type Args = ();
        type Output = ();
        async fn run(_: ()) -> Result<(), FnError> {
            Err(FnError::new(crate::FnErrorKind::Internal, "no"))
        }
    }

    fn engine() -> Arc<Serve> {
        let registry = Registry::new()
            .register::<Hang>()
            .register::<StopAllThenHang>()
            .register::<Fail>()
            .register::<Nap>();
        let serve = Serve::new(
            RunnerId::new(),
            "pool".into(),
            registry,
            Handle::current(),
            States::default(),
        );
        ENGINE.with(|engine| *engine.borrow_mut() = Arc::downgrade(&serve));
        serve
    }

    fn call(id: u64, function: &str) -> CallRef<'_> {
        CallRef {
            id,
            function,
            budget_us: None,
            want_result: false,
            linked: false,
            trace: None,
            // `()` encoded.
            args: &[0xc0],
            bare: false,
            idempotency_key: None,
        }
    }

    /// A caller's hold: the outcomes it was released with.
    #[derive(Default)]
    struct Hold {
        outcomes: Mutex<Vec<Outcome>>,
        released: Notify,
    }

    impl Release for Hold {
        fn release(&self, function: &'static str, outcome: Outcome) {
            assert!(!function.is_empty());
            self.outcomes.lock().unwrap().push(outcome);
            self.released.notify_one();
        }
    }

    impl Hold {
        /// The outcomes, once there are `n`.
        async fn outcomes(&self, n: usize) -> Vec<Outcome> {
            tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    let released = self.released.notified();
                    let outcomes = self.outcomes.lock().unwrap().clone();
                    if outcomes.len() >= n {
                        return outcomes;
                    }
                    released.await;
                }
            })
            .await
            .expect("the hold is released")
        }
    }

    /// Lets the helpers run until `done` holds.
    async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("never: {what}");
    }

    #[tokio::test]
    async fn a_cast_releases_its_hold_once_with_its_outcome() {
        let serve = engine();
        let hold = Arc::new(Hold::default());
        serve.dispatch_held(Fail::NAME, call(1, Fail::NAME), hold.clone());
        serve.dispatch_held("nothing", call(2, "nothing"), hold.clone());
        let outcomes = hold.outcomes(2).await;
        assert_eq!(outcomes.len(), 2, "{outcomes:?}");
        assert!(outcomes.contains(&Outcome::UnknownFunction), "{outcomes:?}");
        assert!(
            outcomes
                .iter()
                .any(|o| matches!(o, Outcome::Returned { message, .. } if message == "no")),
            "{outcomes:?}"
        );
        until("both counted out", || serve.active() == 0).await;
        assert_eq!(hold.outcomes.lock().unwrap().len(), 2, "released once each");
    }

    #[tokio::test]
    async fn a_cast_that_waits_is_stopped_with_every_call() {
        let serve = engine();
        let hold = Arc::new(Hold::default());
        serve.dispatch_held(Hang::NAME, call(1, Hang::NAME), hold.clone());
        // Past its first poll, it has an entry among the running calls.
        until("the cast waits", || !serve.calls.tasks.lock().unwrap().is_empty()).await;
        assert_eq!(serve.active(), 1);
        serve.fail_all();
        assert_eq!(hold.outcomes(1).await, vec![Outcome::Aborted]);
        until("counted out", || serve.active() == 0).await;
    }

    #[tokio::test]
    async fn a_cast_stopped_during_its_first_poll_ends() {
        let serve = engine();
        let hold = Arc::new(Hold::default());
        serve.dispatch_held(StopAllThenHang::NAME, call(1, StopAllThenHang::NAME), hold.clone());
        assert_eq!(hold.outcomes(1).await, vec![Outcome::Aborted]);
        until("counted out", || serve.active() == 0).await;
        // Queued after the stop: never started.
        serve.dispatch_held(Hang::NAME, call(2, Hang::NAME), hold.clone());
        assert_eq!(hold.outcomes(2).await[1], Outcome::Refused);
    }

    #[tokio::test]
    async fn a_call_in_its_callers_task_that_waits_is_stopped_with_every_call() {
        let serve = engine();
        let Ok(run) = serve.run_inline(call(1, Hang::NAME), None) else {
            panic!("not blocking");
        };
        let stop = async {
            until("the call waits", || !serve.calls.tasks.lock().unwrap().is_empty()).await;
            serve.fail_all();
        };
        let (outcome, ()) = tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(run, stop) })
            .await
            .expect("the call ends");
        assert_eq!(outcome, None, "aborted: the runner is going away");
        assert_eq!(serve.active(), 0);
    }

    #[tokio::test]
    async fn a_call_in_its_callers_task_stopped_during_its_first_poll_ends() {
        let serve = engine();
        let Ok(run) = serve.run_inline(call(1, StopAllThenHang::NAME), None) else {
            panic!("not blocking");
        };
        let outcome = tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("the call ends");
        assert_eq!(outcome, None);
        assert_eq!(serve.active(), 0);
        assert!(serve.calls.tasks.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_drain_ends_when_the_last_call_ends() {
        let serve = engine();
        let hold = Arc::new(Hold::default());
        serve.dispatch_held(Nap::NAME, call(1, Nap::NAME), hold.clone());
        until("the cast waits", || !serve.calls.tasks.lock().unwrap().is_empty()).await;
        let started = std::time::Instant::now();
        assert!(serve.drain(Duration::from_secs(5), false).await, "drained in time");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the end of the last call ended the drain, not its budget: {:?}",
            started.elapsed()
        );
        assert_eq!(hold.outcomes(1).await, vec![Outcome::Done]);
    }
}
