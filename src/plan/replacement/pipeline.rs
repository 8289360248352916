//! The replacement planner as one pipeline of named steps: judge → breaker → budget →
//! strategy (each in its own module).

use super::*;
use crate::api::RepairAction;
use crate::plan::repair;

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

    // Verdicts a Node that is Ready again has outdated wait for the Instance's re-evaluation.
    let outdated: BTreeSet<String> = index
        .values()
        .filter(|i| is_candidate(i) && node_verdict_outdated(i, inputs.nodes))
        .map(|i| i.name.clone())
        .collect();
    let unhealthy: Vec<String> = unhealthy_candidates(&index)
        .into_iter()
        .filter(|n| !outdated.contains(n))
        .collect();
    let repair_spec = &inputs.spec.repair;
    let seconds = |s: i32| SignedDuration::from_secs(i64::from(s.max(0)));
    let clocks = repair::Clocks {
        grace: seconds(inputs.spec.health_check.grace_period_seconds),
        startup_timeout: seconds(inputs.spec.health_check.startup_timeout_seconds),
        restart_possible: limits.terminate_then_launch_room > 0,
    };
    let assessed = repair::assess(
        repair_spec,
        &index,
        &unhealthy,
        inputs.remediations,
        clocks,
        now,
    );
    events.extend(assessed.events.iter().cloned());
    if let Some(d) = assessed.requeue_after {
        requeue_after = earliest(requeue_after, d);
    }
    let mut remediations = assessed.remediations.clone();
    let mut would_repair = Vec::new();
    let mut restarts: Vec<String> = Vec::new();
    let view = breaker::View::of(inputs, &limits, &index, &unhealthy);
    let gate = breaker::breaker(inputs, &limits, &memory, &view);
    // Recorded restarts are requested only while repairs may be taken.
    let may_act = matches!(gate, breaker::Gate::Proceed) && !repair::dry_run(repair_spec);
    let (condition, moves) = match gate {
        breaker::Gate::Stop(condition) => (condition, strategy::Moves::default()),
        breaker::Gate::Proceed if repair::dry_run(repair_spec) => {
            would_repair = repair::would_repair(&assessed.next, &index);
            events.extend(repair::would_repair_events(
                inputs.would_repair,
                &would_repair,
            ));
            (
                repair::dry_run_condition(&would_repair),
                strategy::Moves::default(),
            )
        }
        breaker::Gate::Proceed => {
            let mut budget = budget::budget(
                &limits,
                &memory,
                inputs.backoff,
                budget::Load {
                    in_flight: in_flight(inputs.instances) + assessed.restarting.len(),
                    counting: counting_toward_capacity(&index),
                },
                now,
            );
            // Fresh probe verdicts settle before they are acted on; look again then.
            let mut settling = view.settling();
            settling.extend(outdated.iter().cloned());
            if let Some(until) = view.settle_until {
                requeue_after = earliest(requeue_after, time_until(now, until));
            }
            // Restarts first, within the same budget; their Instances stay out of the strategy.
            let restart_next: Vec<&String> = assessed
                .next
                .iter()
                .filter(|(_, (action, _))| *action == RepairAction::Restart)
                .map(|(name, _)| name)
                .collect();
            // A restart leaves a hole in service, as a TerminateThenLaunch replacement does.
            restarts = restart_next
                .iter()
                .filter(|n| !settling.contains(n.as_str()))
                .take(budget.starts.min(budget.terminate_then_launch))
                .map(|n| (*n).clone())
                .collect();
            budget.starts -= restarts.len();
            budget.terminate_then_launch =
                budget.terminate_then_launch.saturating_sub(restarts.len());
            let mut for_strategy = index.clone();
            for name in assessed
                .restarting
                .iter()
                .chain(restart_next.iter().copied())
            {
                for_strategy.remove(name.as_str());
            }
            let mut moves = strategy::strategy(
                &for_strategy,
                inputs.spec.replacement.strategy,
                &limits,
                &budget,
                &settling,
            );
            moves.waiting += restart_next.len() - restarts.len();
            moves.started += restarts.len();
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
    // The remediations started now: restarts, and the candidates whose replacement starts.
    let step_of = |name: &str, action: RepairAction| {
        assessed
            .next
            .get(name)
            .map_or((action, 0), |(a, s)| (*a, *s))
    };
    let started: Vec<(String, RepairAction, i32)> = restarts
        .iter()
        .map(|n| {
            let (a, s) = step_of(n, RepairAction::Restart);
            (n.clone(), a, s)
        })
        .chain(
            moves
                .terminate
                .iter()
                .chain(moves.launch.iter())
                .filter(|n| unhealthy.contains(n))
                .map(|n| {
                    let (_, s) = step_of(n, RepairAction::Replace);
                    (n.clone(), RepairAction::Replace, s)
                }),
        )
        .collect();
    for (name, _, step) in started
        .iter()
        .filter(|(_, a, _)| *a == RepairAction::Restart)
    {
        events.push(PlannedEvent {
            type_: EventType::Normal,
            reason: crate::api::names::reason::RESTARTING,
            instance: Some(name.clone()),
            message: format!(
                "Restarting the Pod of Unhealthy instance {name} (repair action {} of {}): {}",
                step + 1,
                repair_spec.actions.len().max(1),
                repair::why(index.get(name.as_str()).copied())
            ),
        });
    }
    repair::record_started(&mut remediations, &started, &index, now);
    let restart = if may_act {
        repair::restart_orders(&remediations, &index)
    } else {
        Vec::new()
    };
    events.extend(moves.events);
    events.extend(breaker::condition_event(
        inputs.previous_condition,
        &condition,
    ));
    let in_flight = in_flight_after(inputs, &moves.terminate, &moves.launch)
        + assessed.restarting.len()
        + restarts.len();

    ReplacementPlan {
        terminate: moves.terminate,
        launch_replacements_for: moves.launch,
        memory,
        condition,
        events,
        requeue_after,
        unhealthy,
        in_flight,
        remediations,
        would_repair,
        restart,
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
        repair: Default::default(),
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
