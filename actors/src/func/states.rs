//! The states of one runner, built once per runner by the constructors
//! registered with `Registry::with_state` and read by calls through
//! `CurrentCall::state`.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub(crate) type StateFuture = Pin<Box<dyn Future<Output = Result<Arc<dyn Any + Send + Sync>, String>> + Send>>;
pub(crate) type StateBuilder = Arc<dyn Fn() -> StateFuture + Send + Sync>;

/// The states of one runner, by type.
#[derive(Default)]
pub(crate) struct States(HashMap<TypeId, Arc<dyn Any + Send + Sync>>);

impl fmt::Debug for States {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "States({})", self.0.len())
    }
}

impl States {
    pub(crate) fn insert(&mut self, type_id: TypeId, state: Arc<dyn Any + Send + Sync>) {
        self.0.insert(type_id, state);
    }

    pub(crate) fn get<S: Send + Sync + 'static>(&self) -> Option<Arc<S>> {
        self.0.get(&TypeId::of::<S>())?.clone().downcast::<S>().ok()
    }
}
