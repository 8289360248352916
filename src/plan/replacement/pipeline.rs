//! The replacement planner as one pipeline of named steps: judge → breaker → budget →
//! strategy (each in its own module).

use super::*;

/// Plans the replacement of Unhealthy Instances. Pure and total: see the module documentation.
///
/// A pipeline of four steps:
///
/// 1. [`judge::judge`]: judge past replacements (successes, failures, the failure count and
///    its reset) into the memory carried on;
/// 2. [`breaker::breaker`]: the circuit breaker (paused, suspended, keeps failing, too many
///    Unhealthy, judged on the [`breaker::View`] of failures, their Nodes and zones) says
///    whether replacement may proceed at all, and which fresh verdicts still settle;
/// 3. [`budget::budget`]: how many replacements may start now (maxInFlight,
///    minHealthyPercentage, maxSize + maxInFlight, backoff);
/// 4. [`strategy::strategy`]: which Instances terminate and which get a surge replacement
///    first, within that budget.
///
/// The `ReplacementAllowed` condition comes from the breaker, or once replacement proceeds
/// from [`breaker::allowed_condition`]; its changes are announced by
/// [`breaker::condition_event`].
pub fn plan_replacements(inputs: &ReplacementInputs<'_>) -> ReplacementPlan {
    let now = inputs.now;
    let limits = Limits::of(inputs.spec);
    let index = by_name(inputs.instances);

    let judge::Judged {
        mut memory,
        mut events,
        mut requeue_after,
    } = judge::judge(inputs, &limits, &index);

    let unhealthy = unhealthy_candidates(&index);
    let view = breaker::View::of(inputs, &limits, &index, &unhealthy);
    let (condition, moves) = match breaker::breaker(inputs, &limits, &memory, &view) {
        breaker::Gate::Stop(condition) => (condition, strategy::Moves::default()),
        breaker::Gate::Proceed => {
            let budget = budget::budget(
                &limits,
                &memory,
                inputs.backoff,
                budget::Load {
                    in_flight: in_flight(inputs.instances),
                    counting: counting_toward_capacity(&index),
                },
                now,
            );
            // Fresh probe verdicts settle before they are acted on; look again then.
            let settling = view.settling();
            if let Some(until) = view.settle_until {
                requeue_after = earliest(requeue_after, time_until(now, until));
            }
            let moves = strategy::strategy(
                &index,
                inputs.spec.replacement.strategy,
                &limits,
                &budget,
                &settling,
            );
            if moves.started > 0 {
                memory.last_replacement_time = Some(now);
            }
            if let Some(d) = budget.requeue_after(moves.waiting, moves.started, now) {
                requeue_after = earliest(requeue_after, d);
            }
            let condition = breaker::allowed_condition(
                &limits,
                &memory,
                &unhealthy,
                budget.backing_off && moves.waiting > 0,
                budget.backoff_until,
            );
            (condition, moves)
        }
    };
    events.extend(moves.events);
    events.extend(breaker::condition_event(
        inputs.previous_condition,
        &condition,
    ));
    let in_flight = in_flight_after(inputs, &moves.terminate, &moves.launch);

    ReplacementPlan {
        terminate: moves.terminate,
        launch_replacements_for: moves.launch,
        memory,
        condition,
        events,
        requeue_after,
        unhealthy,
        in_flight,
    }
}

/// The replacements in flight once `terminate` and `launch` are applied to the inputs'
/// Instances.
fn in_flight_after(
    inputs: &ReplacementInputs<'_>,
    terminate: &[String],
    launch: &[String],
) -> usize {
    let mut after: Vec<InstanceView> = inputs.instances.to_vec();
    for i in after.iter_mut() {
        if terminate.contains(&i.name) {
            i.being_deleted = true;
            i.termination_reason = Some(TerminationReason::Unhealthy.as_str().into());
        }
    }
    for (n, old) in launch.iter().enumerate() {
        after.push(planned_surge(old, n, inputs.template_hash, inputs.now));
    }
    in_flight(&after)
}

/// The view of a surge Instance about to be launched for `old` (used to count what a plan
/// leads to).
fn planned_surge(old: &str, n: usize, template_hash: &str, now: Timestamp) -> InstanceView {
    InstanceView {
        placement: Default::default(),
        name: format!("\u{0}planned-surge-{n}-for-{old}"),
        created_at: now,
        state: LifecycleState::Pending,
        health: None,
        detail: None,
        protected: false,
        in_service_since: None,
        replaces: Some(old.to_string()),
        template_hash: Some(template_hash.to_string()),
        being_deleted: false,
        maintenance: false,
        standby: false,
        evidence: None,
        termination_reason: None,
        health_reason: None,
        health_since: None,
    }
}
