//! B48: no code of the application runs on the link thread. Idle
//! predicates and the decoders of the application's argument types are its
//! code; one that blocks for three times the heartbeat timeout holds up
//! neither heartbeats nor calls. A remote runner's Terminator (which asks
//! the predicate) and its connection's reader (which admits calls) run on
//! the link thread; the runner here is a Terminator of this process reached
//! over TCP, like a process runner's, so that its registry can carry
//! functions and a predicate that block. An in-process (local) runner asks
//! its predicate too.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ractor_flame::actors::on_runner::{TerminatorLink, spawn_terminator};
use ractor_flame::actors::{Endpoint, ractor};
use ractor_flame::{
    Backend, BackendError, FnError, IdleShutdown, LocalBackend, Pool, PoolEvent, Registry, RemoteFn, RunnerContext,
};
use serde::{Deserialize, Deserializer, Serialize};
use support::functions::WhereAmI;
use support::{config, eventually};
use tracing::Instrument as _;
use tracing::instrument::WithSubscriber as _;

/// How long the predicate blocks each time it is asked.
const STUCK: Duration = Duration::from_secs(3);
const PREDICATE: &str = "test.slow_idle";

/// A predicate that blocks its thread for [`STUCK`], then says "not yet".
#[derive(Default)]
struct SlowPredicate {
    /// Answers under way.
    now: AtomicU64,
    /// Answers given.
    done: AtomicU64,
}

impl SlowPredicate {
    fn ask(&self) -> bool {
        self.now.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(STUCK);
        self.now.fetch_sub(1, Ordering::SeqCst);
        self.done.fetch_add(1, Ordering::SeqCst);
        false
    }
}

/// Decodes of [`SlowArgs`] under way.
static DECODING: AtomicU64 = AtomicU64::new(0);
/// Decodes of [`SlowArgs`] done.
static DECODED: AtomicU64 = AtomicU64::new(0);

/// An argument whose decoder (the application's `Deserialize`) blocks its
/// thread for [`STUCK`].
#[derive(Serialize)]
struct SlowArgs(Vec<u8>);

impl<'de> Deserialize<'de> for SlowArgs {
    fn deserialize<D: Deserializer<'de>>(decoder: D) -> Result<Self, D::Error> {
        let bytes = Vec::deserialize(decoder)?;
        DECODING.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(STUCK);
        DECODING.fetch_sub(1, Ordering::SeqCst);
        DECODED.fetch_add(1, Ordering::SeqCst);
        Ok(SlowArgs(bytes))
    }
}

/// The length of its (slowly decoded) argument.
struct SlowDecode;

impl RemoteFn for SlowDecode {
    const NAME: &'static str = "test.slow_decode";
    type Args = SlowArgs;
    type Output = usize;
    async fn run(args: SlowArgs) -> Result<usize, FnError> {
        Ok(args.0.len())
    }
}

/// A cast to a [`Tally`]: its decoder blocks for [`STUCK`] when `slow`.
#[derive(Serialize)]
struct Step {
    n: u64,
    slow: bool,
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(decoder: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            n: u64,
            slow: bool,
        }
        let Raw { n, slow } = Raw::deserialize(decoder)?;
        if slow {
            DECODING.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(STUCK);
            DECODING.fetch_sub(1, Ordering::SeqCst);
            DECODED.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Step { n, slow })
    }
}

/// A placed child that notes the steps cast to it, in the order they came,
/// and answers a call with them.
#[derive(Default)]
struct Tally;

enum TallyMsg {
    Step(Step),
    Get(ractor::RpcReplyPort<Vec<u64>>),
}

impl ractor::Actor for Tally {
    type Msg = TallyMsg;
    type State = Vec<u64>;
    type Arguments = ();

    async fn pre_start(&self, _: ractor::ActorRef<TallyMsg>, _: ()) -> Result<Vec<u64>, ractor::ActorProcessingErr> {
        Ok(Vec::new())
    }

    async fn handle(
        &self,
        _: ractor::ActorRef<TallyMsg>,
        msg: TallyMsg,
        steps: &mut Vec<u64>,
    ) -> Result<(), ractor::ActorProcessingErr> {
        match msg {
            TallyMsg::Step(step) => steps.push(step.n),
            TallyMsg::Get(reply) => {
                let _ = reply.send(steps.clone());
            }
        }
        Ok(())
    }
}

impl ractor_flame::RemoteActor for Tally {
    const NAME: &'static str = "test.tally";
    type Cast = Step;
    type Call = ();
    type Reply = Vec<u64>;
    fn cast_message(step: Step) -> TallyMsg {
        TallyMsg::Step(step)
    }
    fn call_message(_: (), reply: ractor::RpcReplyPort<Vec<u64>>) -> TallyMsg {
        TallyMsg::Get(reply)
    }
}

/// The test functions, [`SlowDecode`], [`Tally`], and `predicate` as the
/// idle predicate.
fn registry(predicate: &Arc<SlowPredicate>) -> Registry {
    let predicate = Arc::clone(predicate);
    support::functions::registry()
        .register::<SlowDecode>()
        .register_actor::<Tally>()
        .idle_predicate(PREDICATE, move || predicate.ask())
}

/// A runner that is a Terminator of this process, connected to the pool's
/// endpoint over TCP as a process runner is (and so served from the link
/// thread), serving the pool's registry.
#[derive(Clone, Default)]
struct LinkedInProcess {
    endpoint: Arc<tokio::sync::OnceCell<Endpoint>>,
}

impl Backend for LinkedInProcess {
    type State = Option<ractor::ActorRef<ractor_flame::actors::on_runner::TerminatorMessage>>;

    fn name(&self) -> &'static str {
        "linked-in-process"
    }

    async fn init(&self, _ctx: &RunnerContext) -> Result<Self::State, BackendError> {
        Ok(None)
    }

    async fn remote_boot(&self, state: &mut Self::State, ctx: &RunnerContext) -> Result<(), BackendError> {
        let endpoint = self
            .endpoint
            .get_or_try_init(|| Endpoint::bind("127.0.0.1:0".parse().expect("address")))
            .await
            .map_err(|e| BackendError::new(e.to_string()))?;
        let parent = endpoint.expect(ctx, vec![endpoint.addr()], self.name());
        let (terminator, _, _) = spawn_terminator(
            parent.runner_id,
            ctx.registry.clone(),
            parent.settings.clone(),
            TerminatorLink::Remote(Box::new(parent)),
            None,
            None,
        )
        .await
        .map_err(|e| BackendError::new(e.to_string()))?;
        *state = Some(terminator);
        Ok(())
    }

    async fn terminate(&self, state: &mut Self::State) {
        if let Some(terminator) = state.take() {
            terminator.stop(None);
        }
    }
}

/// A runner of `pool` idles (100 ms) and asks `predicate`, which blocks:
/// a call made meanwhile is served before the answer, and once the answer
/// came (after three heartbeat timeouts) the same runner still serves.
async fn a_blocked_predicate_holds_up_nothing<B: Backend>(backend: B, predicate: Arc<SlowPredicate>) {
    let cfg = config(1).idle_shutdown_after(IdleShutdown::when(Duration::from_millis(100), PREDICATE));
    let pool = Pool::start(cfg, backend, &registry(&predicate)).await.expect("pool");
    let mut events = pool.events();
    let runner = pool.call::<WhereAmI>(()).await.expect("warm-up call").runner;
    eventually(
        "the runner asks its idle predicate",
        Duration::from_secs(10),
        || async { predicate.now.load(Ordering::SeqCst) > 0 },
    )
    .await;

    // The predicate is blocked: calls go on.
    let done = predicate.done.load(Ordering::SeqCst);
    let during = pool
        .call::<WhereAmI>(())
        .await
        .expect("a call while the predicate blocks");
    assert_eq!(during.runner, runner, "the same runner serves");
    assert_eq!(
        predicate.done.load(Ordering::SeqCst),
        done,
        "the call waited for the idle predicate"
    );

    // It blocked three times the heartbeat timeout (1 s): neither end took
    // the other for lost.
    eventually("the predicate answers", Duration::from_secs(10), || async {
        predicate.done.load(Ordering::SeqCst) > done
    })
    .await;
    let after = pool.call::<WhereAmI>(()).await.expect("a call after the answer");
    assert_eq!(after.runner, runner, "the runner was replaced");
    assert_eq!(pool.stats().await.expect("stats").runners, 1);
    while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(10), events.recv()).await {
        assert!(
            !matches!(event, PoolEvent::RunnerLost { .. }),
            "the runner was lost: {event:?}"
        );
    }
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b48_a_blocked_idle_predicate_never_stops_heartbeats_or_calls() {
    a_blocked_predicate_holds_up_nothing(LinkedInProcess::default(), Arc::default()).await;
}

// One worker thread: a predicate asked there would hold up every call.
#[tokio::test]
async fn b48_a_blocked_idle_predicate_of_a_local_runner_holds_up_no_call() {
    a_blocked_predicate_holds_up_nothing(LocalBackend::new(), Arc::default()).await;
}

/// A call of [`SlowDecode`] with `len` bytes, traced or not, is served
/// while a call of the runner's decodes its argument, before that decode
/// ends; and the runner is not lost.
async fn a_blocked_decoder_holds_up_nothing(pool: &Pool, runner: &str, len: usize, traced: bool) {
    let call = {
        let pool = pool.clone();
        async move { pool.call::<SlowDecode>(SlowArgs(vec![7; len])).await }
    };
    let call = if traced {
        // The caller's span, with a subscriber of the caller's own: the call
        // carries a trace context.
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry());
        let span = tracing::dispatcher::with_default(&dispatch, || tracing::info_span!("caller"));
        tokio::spawn(call.instrument(span).with_subscriber(dispatch))
    } else {
        tokio::spawn(call)
    };
    eventually("the runner decodes the argument", Duration::from_secs(10), || async {
        DECODING.load(Ordering::SeqCst) > 0
    })
    .await;
    let decoded = DECODED.load(Ordering::SeqCst);
    let during = pool.call::<WhereAmI>(()).await.expect("a call while a decoder blocks");
    assert_eq!(during.runner, runner, "the same runner serves");
    assert_eq!(
        DECODED.load(Ordering::SeqCst),
        decoded,
        "the call waited for another call's decoder (traced: {traced}, {len} bytes)"
    );
    let served = call.await.expect("the slow call's task").expect("the slow call");
    assert_eq!(served, len);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b48_a_blocked_argument_decoder_never_stops_heartbeats_or_calls() {
    let cfg = config(2).idle_shutdown_after(IdleShutdown::Never);
    let pool = Pool::start(cfg, LinkedInProcess::default(), &registry(&Arc::default()))
        .await
        .expect("pool");
    let mut events = pool.events();
    let runner = pool.call::<WhereAmI>(()).await.expect("warm-up call").runner;
    // Held in the call's own record, or copied out of the frame; traced.
    for (len, traced) in [(4, false), (200, false), (4, true)] {
        a_blocked_decoder_holds_up_nothing(&pool, &runner, len, traced).await;
    }
    // A placed child's messages: decoded off the link thread, and still
    // in the order they were sent.
    let child = pool.place_child::<Tally>(()).await.expect("a placed child");
    child.cast(Step { n: 0, slow: true }).expect("a slow cast");
    eventually(
        "the runner decodes the child's message",
        Duration::from_secs(10),
        || async { DECODING.load(Ordering::SeqCst) > 0 },
    )
    .await;
    let decoded = DECODED.load(Ordering::SeqCst);
    let during = pool
        .call::<WhereAmI>(())
        .await
        .expect("a call while a child's decoder blocks");
    assert_eq!(during.runner, runner, "the same runner serves");
    assert_eq!(
        DECODED.load(Ordering::SeqCst),
        decoded,
        "the call waited for a child message's decoder"
    );
    for n in 1..200 {
        child.cast(Step { n, slow: false }).expect("a cast");
    }
    let steps = child.call(()).await.expect("the child's steps");
    assert_eq!(
        steps,
        (0..200).collect::<Vec<_>>(),
        "the child's messages kept their order"
    );
    drop(child);
    // Each decode blocked three times the heartbeat timeout (1 s).
    let after = pool.call::<WhereAmI>(()).await.expect("a call after the decodes");
    assert_eq!(after.runner, runner, "the runner was replaced");
    while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(10), events.recv()).await {
        assert!(
            !matches!(event, PoolEvent::RunnerLost { .. }),
            "the runner was lost: {event:?}"
        );
    }
    pool.stop().await;
}
