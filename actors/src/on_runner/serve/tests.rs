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
