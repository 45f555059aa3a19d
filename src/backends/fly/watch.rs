//! A runner machine watched through the Machines API: a machine whose host
//! fails may leave its connection open with nothing more sent on it, so the
//! parent also asks the API, every interval, what state the machine is in.

use std::time::Duration;

use ractor_flame_actors::{DownReason, RunnerNotifier};

use super::api::{Api, Seen};

/// Told to the Runner when the API reports its machine down.
#[derive(Debug)]
pub(super) struct MachineDown {
    pub(super) machine: String,
    pub(super) state: String,
}

impl MachineDown {
    /// The reason the Runner reports.
    pub(super) fn reason(&self) -> DownReason {
        DownReason::Backend(format!(
            "fly machine {} is {} (as the Machines API reports it)",
            self.machine, self.state
        ))
    }
}

/// A state in which a machine runs no runner.
pub(super) fn is_down(state: &str) -> bool {
    matches!(
        state,
        "stopping" | "stopped" | "suspending" | "suspended" | "destroying" | "destroyed" | "failed"
    )
}

/// Aborts the watch when dropped.
#[derive(Debug)]
pub(crate) struct Watch(tokio::task::AbortHandle);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Looks at `machine` every `every` and tells `runner` once the API reports
/// it down or gone. An API that does not answer is asked again at the next
/// interval (heartbeats still cover the runner meanwhile).
pub(super) fn watch(api: Api, machine: String, every: Duration, runner: RunnerNotifier) -> Watch {
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let state = match api.look(&machine, every.max(Duration::from_secs(1))).await {
                Ok(Seen::Gone) => "destroyed".to_owned(),
                Ok(Seen::State(state)) if is_down(&state) => state,
                Ok(Seen::State(_)) => continue,
                Err(error) => {
                    tracing::debug!(target: "ractor_flame::fly", %machine, %error, "cannot read the machine's state");
                    continue;
                }
            };
            runner.notify(MachineDown { machine, state });
            return;
        }
    });
    Watch(task.abort_handle())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_states_that_run_no_runner_are_down() {
        for state in ["stopped", "failed", "destroyed", "suspended", "stopping"] {
            assert!(is_down(state), "{state}");
        }
        for state in ["created", "starting", "started", "replacing", "updating"] {
            assert!(!is_down(state), "{state}");
        }
    }
}
