//! `FlyState`: the parent's handle on one runner machine.

use std::time::Duration;

use ractor_flame_actors::RunnerId;

use super::api::{Api, Machine};
use super::volume::VolumeClaim;
use super::watch::Watch;

/// The parent's handle on one runner machine: the [`Backend::State`](crate::Backend::State) of
/// [`FlyBackend`](super::FlyBackend). Dropped without the Runner's `terminate` (a killed
/// Runner), it still asks the API to destroy the machine, from a task on
/// the current Tokio runtime.
///
/// # Examples
///
/// ```
/// use ractor_flame::fly::FlyState;
///
/// fn describe(state: &FlyState) -> String {
///     format!("{} at {}", state.machine_id().unwrap_or("-"), state.private_ip().unwrap_or("-"))
/// }
/// ```
#[derive(Debug)]
pub struct FlyState {
    pub(super) runner: RunnerId,
    pub(super) api: Option<Api>,
    pub(super) machine: Option<Machine>,
    pub(super) stop_timeout: Duration,
    /// The volume the machine mounts, held until the machine is destroyed.
    pub(super) volume: Option<VolumeClaim>,
    /// The look at the machine's state through the API, while it serves.
    pub(super) watch: Option<Watch>,
}

impl FlyState {
    /// The machine's id, once created.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(state: &ractor_flame::fly::FlyState) {
    /// if let Some(id) = state.machine_id() { println!("runner machine {id}"); }
    /// # }
    /// ```
    pub fn machine_id(&self) -> Option<&str> {
        self.machine.as_ref().map(|m| m.id.as_str())
    }

    /// The machine's private (6PN) address, as the API reported it.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(state: &ractor_flame::fly::FlyState) {
    /// let ip = state.private_ip();
    /// # let _ = ip; }
    /// ```
    pub fn private_ip(&self) -> Option<&str> {
        self.machine.as_ref().and_then(|m| m.private_ip.as_deref())
    }

    /// The runner this machine serves.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(state: &ractor_flame::fly::FlyState) {
    /// println!("{}", state.runner());
    /// # }
    /// ```
    pub fn runner(&self) -> RunnerId {
        self.runner
    }

    /// The id of the volume the machine mounts, when the backend mounts one
    /// (see [`FlyBackend::volume`](super::FlyBackend::volume)).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(state: &ractor_flame::fly::FlyState) {
    /// if let Some(volume) = state.volume_id() { println!("runner on volume {volume}"); }
    /// # }
    /// ```
    pub fn volume_id(&self) -> Option<&str> {
        self.volume.as_ref().map(|v| v.id.as_str())
    }
}

impl Drop for FlyState {
    fn drop(&mut self) {
        let (Some(api), Some(machine)) = (self.api.take(), self.machine.take()) else {
            return;
        };
        let budget = self.stop_timeout;
        // Released once the machine is gone: the volume is free only then.
        let volume = self.volume.take();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    api.stop_and_destroy(&machine, budget).await;
                    drop(volume);
                });
            }
            Err(_) => {
                tracing::warn!(target: "ractor_flame::fly", machine = %machine.id, "runner machine dropped outside a runtime; it auto-destroys when its runner exits")
            }
        }
    }
}
