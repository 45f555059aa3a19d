//! The behaviour suite of `tests/BEHAVIOURS.md`, run unchanged on every
//! backend: each behaviour is an `async fn(kind)` in a module of
//! `pool_conformance/` by topic, instantiated per backend by the
//! `conformance!` macro below.

mod support;

#[path = "pool_conformance/calls.rs"]
mod calls;
#[path = "pool_conformance/keys.rs"]
mod keys;
#[path = "pool_conformance/placed.rs"]
mod placed;
#[path = "pool_conformance/pool.rs"]
mod pool;
#[path = "pool_conformance/resize.rs"]
mod resize;
#[path = "pool_conformance/retry.rs"]
mod retry;
#[path = "pool_conformance/shutdown.rs"]
mod shutdown;
#[path = "pool_conformance/standby.rs"]
mod standby;
#[path = "pool_conformance/streams.rs"]
mod streams;

use std::time::Duration;

use calls::*;
use keys::*;
use placed::*;
use pool::*;
use resize::*;
use retry::*;
use shutdown::*;
use standby::*;
use streams::*;
use support::Kind;

const WAIT: Duration = Duration::from_secs(10);

macro_rules! conformance {
    (containers: $($cname:ident),* $(,)?) => {
        #[cfg(feature = "docker")]
        mod docker {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $cname() {
                    if super::support::docker::engine(stringify!($cname)).await.is_none() {
                        return;
                    }
                    super::$cname(super::Kind::Docker).await
                }
            )*
        }
        // Runners as pods of the stand-in of the Kubernetes API (each a
        // Docker container).
        #[cfg(all(feature = "kubernetes", feature = "docker"))]
        mod kubernetes {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $cname() {
                    if super::support::docker::engine(stringify!($cname)).await.is_none() {
                        return;
                    }
                    super::$cname(super::Kind::Kubernetes).await
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Local).await
                }
            )*
        }
        mod process {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Process).await
                }
            )*
        }
    };
}

conformance!(
    b01_call_runs_on_a_runner_and_returns_its_value,
    b02_default_budgets_are_boot_timeout_then_timeout,
    b03_explicit_timeout_is_a_total_budget,
    b04_no_slot_in_time_is_a_checkout_timeout_and_leaves_the_queue,
    b04_a_slot_that_leaves_no_execution_budget_is_a_checkout_timeout,
    b05_deadline_aborts_the_remote_task,
    b05_an_error_returned_at_the_deadline_is_the_deadline,
    b06_remote_error_and_panic_reach_the_caller_typed,
    b06_unknown_function_is_a_clear_error,
    b07_dropping_the_call_cancels_the_remote_task,
    b08_cast_returns_at_once_and_holds_a_slot_while_it_runs,
    b09_calls_to_a_stopped_pool_fail_at_once,
    b10_invalid_options_are_rejected,
    b12_min_runners_boot_in_parallel_at_start,
    b13_checkout_picks_the_least_loaded_runner,
    b14_growth_boots_only_what_booting_runners_cannot_absorb,
    b15_at_max_callers_wait_fifo_and_a_bounded_queue_refuses,
    b16_waiters_that_gave_up_are_skipped,
    b17_a_fresh_runner_serves_its_waiters_at_once,
    b19_hooks_report_growth_and_shrink,
    b20_every_call_checks_in_exactly_once,
    b21_a_dying_runner_fails_its_calls_and_the_pool_refills_to_min,
    b22_idle_runners_stop_and_min_runners_follow_their_own_setting,
    b22_an_idle_runner_leaves_without_waiting_out_the_drain_budget,
    b22_an_idle_predicate_holds_the_runner_until_it_agrees,
    b23_single_use_runners_stop_after_their_first_call,
    b62_single_use_runners_count_against_min_as_chosen,
    b24_stopping_a_pool_drains_then_stops_every_runner,
    b29_idle_shutdown_never_interrupts_work,
    b32_place_child_starts_an_actor_that_the_handle_casts_and_calls,
    b33_a_placed_child_holds_a_slot_and_keeps_its_runner_up,
    b33_a_crashed_child_frees_its_slot_while_its_handle_is_held,
    b34_linked_children_stop_with_their_handle_and_exits_are_reported,
    b59_a_lower_max_drains_surplus_runners_after_their_work,
    b59_a_higher_min_boots_at_once,
    b59_waiting_callers_take_new_room_at_once,
    b59_a_lower_max_concurrency_keeps_work_and_takes_no_more,
    b59_invalid_resizes_are_refused_and_change_nothing,
    b58_calls_with_a_key_return_to_its_runner_even_when_busier,
    b58_a_full_home_sends_the_key_elsewhere_and_it_moves,
    b58_a_key_moves_when_its_runner_drains,
    b58_a_key_moves_when_its_runner_dies,
    b60_a_retried_call_survives_its_runner_dying_under_one_key,
    b60_calls_are_never_retried_by_default,
    b60_no_retry_after_an_error_a_panic_or_a_deadline,
    b57_a_stream_yields_every_item_in_order_then_ends,
    b57_a_slow_consumer_pauses_the_body_within_its_window,
    b57_dropping_the_stream_cancels_the_work_and_its_slot_returns,
    b57_an_error_or_a_panic_mid_stream_ends_it_after_the_items_before,
    b57_the_deadline_covers_the_whole_stream_and_each_item_may_be_bounded,
    b57_large_items_stream_intact,
    standby_runners_take_growth_without_a_boot,
    standby_runners_leave_on_idle_and_come_back_with_work,
);

// Where it applies on containers (Docker, and Kubernetes pods): everything
// but what kills runners by process id (the Docker fault tests kill through
// the engine instead).
conformance!(containers:
    b01_call_runs_on_a_runner_and_returns_its_value,
    b02_default_budgets_are_boot_timeout_then_timeout,
    b05_deadline_aborts_the_remote_task,
    b05_an_error_returned_at_the_deadline_is_the_deadline,
    b06_remote_error_and_panic_reach_the_caller_typed,
    b06_unknown_function_is_a_clear_error,
    b07_dropping_the_call_cancels_the_remote_task,
    b08_cast_returns_at_once_and_holds_a_slot_while_it_runs,
    b09_calls_to_a_stopped_pool_fail_at_once,
    b10_invalid_options_are_rejected,
    b13_checkout_picks_the_least_loaded_runner,
    b15_at_max_callers_wait_fifo_and_a_bounded_queue_refuses,
    b16_waiters_that_gave_up_are_skipped,
    b17_a_fresh_runner_serves_its_waiters_at_once,
    b19_hooks_report_growth_and_shrink,
    b20_every_call_checks_in_exactly_once,
    b22_idle_runners_stop_and_min_runners_follow_their_own_setting,
    b22_an_idle_runner_leaves_without_waiting_out_the_drain_budget,
    b22_an_idle_predicate_holds_the_runner_until_it_agrees,
    b23_single_use_runners_stop_after_their_first_call,
    b62_single_use_runners_count_against_min_as_chosen,
    b24_stopping_a_pool_drains_then_stops_every_runner,
    b29_idle_shutdown_never_interrupts_work,
    b32_place_child_starts_an_actor_that_the_handle_casts_and_calls,
    b33_a_placed_child_holds_a_slot_and_keeps_its_runner_up,
    b33_a_crashed_child_frees_its_slot_while_its_handle_is_held,
    b34_linked_children_stop_with_their_handle_and_exits_are_reported,
    b59_a_lower_max_drains_surplus_runners_after_their_work,
    b59_a_higher_min_boots_at_once,
    b59_waiting_callers_take_new_room_at_once,
    b59_a_lower_max_concurrency_keeps_work_and_takes_no_more,
    b59_invalid_resizes_are_refused_and_change_nothing,
    b58_calls_with_a_key_return_to_its_runner_even_when_busier,
    b58_a_full_home_sends_the_key_elsewhere_and_it_moves,
    b58_a_key_moves_when_its_runner_drains,
    b57_a_stream_yields_every_item_in_order_then_ends,
    b57_a_slow_consumer_pauses_the_body_within_its_window,
    b57_dropping_the_stream_cancels_the_work_and_its_slot_returns,
    b57_an_error_or_a_panic_mid_stream_ends_it_after_the_items_before,
    b57_large_items_stream_intact,
    standby_runners_take_growth_without_a_boot,
    standby_runners_leave_on_idle_and_come_back_with_work,
);
