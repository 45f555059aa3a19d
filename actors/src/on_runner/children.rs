//! Placed children (FLAME's `place_child`) on the runner side: a nursery
//! actor supervises them, each holds one of the runner's slots for its whole
//! life, and their exits are reported to the parent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::wire::outbox::{Outbox, WeakOutbox};
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::Serve;
use crate::func::args::ArgBytes;
use crate::func::args::encode;
use crate::func::erased::{BoxFuture, Placed, RunFailure};
use crate::wire::frame::{ChildEnvelope, Outcome, ToParent};

/// The children of one runner.
#[derive(Debug, Default)]
pub(crate) struct Children {
    nursery: tokio::sync::OnceCell<ActorRef<()>>,
    by_id: Mutex<HashMap<u64, (Placed, bool)>>,
    by_actor: Mutex<HashMap<ActorId, u64>>,
    /// Where exit notices go (weak: it must not keep the connection open).
    events: Mutex<Option<WeakOutbox<ToParent>>>,
}

impl Children {
    pub(crate) fn set_events(&self, tx: &Outbox<ToParent>) {
        *self.events.lock().expect("poisoned") = Some(tx.downgrade());
    }

    async fn nursery(&self, serve: &Arc<Serve>) -> Result<&ActorRef<()>, RunFailure> {
        self.nursery
            .get_or_try_init(|| async {
                let nursery = Nursery(Arc::downgrade(serve));
                Actor::spawn(None, nursery, ())
                    .await
                    .map(|(actor, _)| actor)
                    .map_err(|e| RunFailure::returned(format!("no nursery: {e}")))
            })
            .await
    }

    /// Places an actor of type `name`; the child's id is the placing call's.
    pub(crate) async fn place(
        &self,
        serve: &Arc<Serve>,
        name: &str,
        args: ArgBytes<'_>,
        id: u64,
        linked: bool,
    ) -> Result<Vec<u8>, RunFailure> {
        let nursery = self.nursery(serve).await?.get_cell();
        let placing = serve
            .registry()
            .place(name, args, nursery)
            .ok_or_else(|| RunFailure::returned(format!("no remote actor named `{name}` is registered")))?;
        let placed = placing.await?;
        let cell = placed.cell.clone();
        serve.child_started();
        self.by_actor.lock().expect("poisoned").insert(cell.get_id(), id);
        self.by_id.lock().expect("poisoned").insert(id, (placed, linked));
        // It may have stopped before it was on the books.
        if matches!(
            cell.get_status(),
            ractor::ActorStatus::Stopping | ractor::ActorStatus::Stopped
        ) {
            self.exited(serve, cell.get_id(), "stopped".into());
        }
        encode(&id).map_err(|e| RunFailure::Codec(e.to_string()))
    }

    /// Casts to a child, in order with everything sent to it before.
    pub(crate) fn cast(&self, envelope: &ChildEnvelope) -> Result<(), Outcome> {
        let children = self.by_id.lock().expect("poisoned");
        let (placed, _) = children.get(&envelope.child).ok_or_else(gone)?;
        (placed.cast)(&envelope.msg).map_err(failure)
    }

    /// Calls a child: the message is enqueued now, the answer awaited later.
    pub(crate) fn call(&self, envelope: &ChildEnvelope) -> Result<BoxFuture, Outcome> {
        let children = self.by_id.lock().expect("poisoned");
        let (placed, _) = children.get(&envelope.child).ok_or_else(gone)?;
        (placed.call)(&envelope.msg).map_err(failure)
    }

    /// Stops a child (its caller let go of it).
    pub(crate) fn stop(&self, child: u64) {
        if let Some((placed, _)) = self.by_id.lock().expect("poisoned").get(&child) {
            placed.cell.stop(Some("stopped by its caller".into()));
        }
    }

    /// Kills the linked children at once, their message in progress
    /// included: their parent is gone, and nothing they do has a reader.
    /// (Unlinked ones keep the drain's grace to finish.)
    pub(crate) fn kill_linked(&self) {
        for (placed, linked) in self.by_id.lock().expect("poisoned").values() {
            if *linked {
                placed.cell.kill();
            }
        }
    }

    /// Stops the linked children (the parent is gone), or all of them.
    pub(crate) fn stop_all(&self, linked_only: bool, reason: &str) {
        for (placed, linked) in self.by_id.lock().expect("poisoned").values() {
            if *linked || !linked_only {
                placed.cell.stop(Some(reason.to_owned()));
            }
        }
    }

    /// A child is gone: free its slot and tell the parent, once.
    fn exited(&self, serve: &Serve, actor: ActorId, reason: String) {
        let Some(id) = self.by_actor.lock().expect("poisoned").remove(&actor) else {
            return;
        };
        if self.by_id.lock().expect("poisoned").remove(&id).is_none() {
            return;
        }
        tracing::debug!(target: "ractor_flame::terminator", child = id, %reason, "placed child exited");
        let events = self.events.lock().expect("poisoned").as_ref().and_then(|w| w.upgrade());
        if let Some(tx) = events {
            let _ = tx.send(ToParent::ChildExited { child: id, reason });
        }
        serve.child_stopped();
    }
}

fn gone() -> Outcome {
    Outcome::ChildStopped("no such child: it has stopped".into())
}

fn failure(f: RunFailure) -> Outcome {
    match f {
        RunFailure::Returned(_, m) => Outcome::ChildStopped(m),
        RunFailure::Panicked(m) => Outcome::Panicked(m),
        RunFailure::Codec(m) => Outcome::Codec(m),
    }
}

/// Supervises the placed children of one runner.
struct Nursery(Weak<Serve>);

impl Actor for Nursery {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        event: SupervisionEvent,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        // A child's end never ends the nursery.
        let (cell, reason): (&ActorCell, String) = match &event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.clone().unwrap_or_else(|| "stopped".into()))
            }
            SupervisionEvent::ActorFailed(cell, error) => (cell, format!("crashed: {error}")),
            _ => return Ok(()),
        };
        if let Some(serve) = self.0.upgrade() {
            serve.children().exited(&serve, cell.get_id(), reason);
        }
        Ok(())
    }
}
