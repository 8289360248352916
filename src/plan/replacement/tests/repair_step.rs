//! Repair between the breaker and the strategy: actions in order, restarts within the budget,
//! escalation, dry run and the remediation history ([`crate::plan::repair`]).

use super::*;
use crate::api::{
    Remediation, RemediationOutcome, Repair, RepairAction, RepairMode, RepairStep, WouldRepair,
};
use crate::plan::repair::{self, MAX_REMEDIATIONS, restart_token};

fn restart_then_replace(timeout: i32) -> Repair {
    Repair {
        actions: vec![
            RepairStep {
                action: RepairAction::Restart,
                timeout_seconds: Some(timeout),
            },
            RepairStep {
                action: RepairAction::Replace,
                timeout_seconds: None,
            },
        ],
        mode: RepairMode::Auto,
    }
}

fn with_repair(repair: Repair) -> ScalingGroupSpec {
    let mut s = spec(3, 3);
    s.repair = repair;
    s
}

fn remediation(instance: &str, action: RepairAction, step: i32, started: i64) -> Remediation {
    Remediation {
        instance: instance.into(),
        action,
        step,
        reason: "Unhealthy".into(),
        started: Time(t(started)),
        finished: None,
        outcome: RemediationOutcome::InProgress,
        replacement: None,
        detected: None,
        recovered: None,
    }
}

/// `i` restarted for `r`: the Instance saw the request and its new Pod runs since `running`.
fn restarted(mut i: InstanceView, r: &Remediation, running: Option<i64>) -> InstanceView {
    i.repair.requested = Some(restart_token(r));
    i.repair.recorded = Some(restart_token(r));
    i.repair.pod_running_at = running.map(t);
    i.repair.restart_count = 1;
    i
}

#[test]
fn the_default_replaces_and_records_the_remediation() {
    let plan = Case::new(spec(3, 3), vec![inst("a"), sick("b"), inst("c")]).plan();
    assert_eq!(plan.terminate, vec!["b"]);
    assert!(plan.restart.is_empty());
    let r = &plan.remediations[0];
    assert_eq!(
        (r.instance.as_str(), r.action, r.step, r.outcome),
        (
            "b",
            RepairAction::Replace,
            0,
            RemediationOutcome::InProgress
        )
    );
    assert_eq!(r.started, Time(t(1000)));
}

#[test]
fn a_restart_comes_first_and_is_requested_after_the_record() {
    let plan = Case::new(
        with_repair(restart_then_replace(60)),
        vec![inst("a"), sick("b"), inst("c")],
    )
    .plan();
    assert!(plan.terminate.is_empty() && plan.launch_replacements_for.is_empty());
    let r = &plan.remediations[0];
    assert_eq!((r.action, r.step), (RepairAction::Restart, 0));
    assert_eq!(plan.restart, vec![("b".to_string(), restart_token(r))]);
    assert!(reasons(&plan).contains(&reason::RESTARTING));
    assert_eq!(plan.in_flight, 1);
    assert_eq!(plan.memory.last_replacement_time, Some(t(1000)));
}

#[test]
fn restarts_share_max_in_flight_with_replacements() {
    // b escalated already (its next action is Replace), c gets a Restart: maxInFlight 1 lets
    // exactly one of them start.
    let mut case = Case::new(
        with_repair(restart_then_replace(60)),
        vec![inst("a"), sick("b"), sick("c")],
    );
    let mut escalated = remediation("b", RepairAction::Restart, 0, 900);
    escalated.outcome = RemediationOutcome::Escalated;
    escalated.finished = Some(Time(t(990)));
    case.remediations = vec![escalated];
    let plan = case.plan();
    let started = plan.restart.len() + plan.terminate.len() + plan.launch_replacements_for.len();
    assert_eq!(started, 1, "{plan:?}");
    assert_eq!(plan.in_flight, 1);

    // While c's restart is in flight, b waits.
    let r = remediation("c", RepairAction::Restart, 0, 995);
    case.instances[2] = restarted(sick("c"), &r, None);
    case.remediations.insert(0, r);
    let plan = case.plan();
    assert!(
        plan.restart.is_empty() && plan.terminate.is_empty(),
        "{plan:?}"
    );
    assert_eq!(plan.in_flight, 1);
}

#[test]
fn restarts_respect_min_healthy_percentage() {
    // 100%: a restart's hole is never allowed, so the Replace step comes at once (surge).
    let mut s = with_repair(restart_then_replace(60));
    s.replacement.min_healthy_percentage = 100;
    s.max_size = 4;
    let plan = Case::new(s, vec![inst("a"), sick("b"), inst("c")]).plan();
    assert!(plan.restart.is_empty());
    assert_eq!(plan.launch_replacements_for, vec!["b"]);
    assert_eq!(plan.remediations[0].action, RepairAction::Replace);
    assert_eq!(plan.remediations[0].step, 1);

    // 67% of 3: room for one hole, taken by a restart in flight: the next restart waits.
    let mut s = with_repair(restart_then_replace(60));
    s.replacement.min_healthy_percentage = 67;
    s.replacement.max_in_flight = IntOrString::Int(3);
    let mut case = Case::new(s, vec![inst("a"), sick("b"), sick("c")]);
    let r = remediation("b", RepairAction::Restart, 0, 995);
    case.instances[1] = restarted(sick("b"), &r, None);
    case.remediations = vec![r];
    let plan = case.plan();
    assert!(plan.restart.is_empty(), "{plan:?}");
}

#[test]
fn a_restart_is_judged_when_its_timeout_ends_after_the_new_pod_runs() {
    let r = remediation("b", RepairAction::Restart, 0, 900);
    let mut case = Case::new(
        with_repair(restart_then_replace(60)),
        vec![inst("a"), restarted(sick("b"), &r, Some(950)), inst("c")],
    );
    case.remediations = vec![r.clone()];
    // Within the timeout: in flight, nothing else happens; come back when it ends.
    let plan = case.plan();
    assert!(plan.terminate.is_empty() && plan.restart.is_empty());
    assert_eq!(plan.remediations[0].outcome, RemediationOutcome::InProgress);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(10)));

    // Still Unhealthy when it ends: escalated, and the next action (Replace) starts at once.
    case.now = t(1010);
    let plan = case.plan();
    assert_eq!(plan.terminate, vec!["b"]);
    assert!(reasons(&plan).contains(&reason::REPAIR_ESCALATED));
    let newest = &plan.remediations[0];
    assert_eq!(
        (newest.action, newest.step, newest.outcome),
        (RepairAction::Replace, 1, RemediationOutcome::InProgress)
    );
    assert_eq!(plan.remediations[1].outcome, RemediationOutcome::Escalated);
    assert_eq!(plan.remediations[1].finished, Some(Time(t(1010))));
}

#[test]
fn a_restart_that_heals_succeeds() {
    let r = remediation("b", RepairAction::Restart, 0, 900);
    let mut case = Case::new(
        with_repair(restart_then_replace(60)),
        vec![inst("a"), restarted(inst("b"), &r, Some(950)), inst("c")],
    );
    case.remediations = vec![r];
    case.now = t(1010);
    let plan = case.plan();
    assert!(plan.terminate.is_empty() && plan.restart.is_empty());
    assert_eq!(plan.remediations[0].outcome, RemediationOutcome::Succeeded);
    assert!(reasons(&plan).contains(&reason::RESTART_SUCCEEDED));
    assert_eq!(plan.in_flight, 0);
}

#[test]
fn a_new_unhealthy_spell_starts_again_at_the_first_action() {
    let mut escalated = remediation("b", RepairAction::Restart, 0, 900);
    escalated.outcome = RemediationOutcome::Escalated;
    escalated.finished = Some(Time(t(960)));
    // The same spell (verdict before the escalation): Replace.
    let mut b = sick("b");
    b.health_since = Some(t(890));
    let mut case = Case::new(
        with_repair(restart_then_replace(60)),
        vec![inst("a"), b, inst("c")],
    );
    case.remediations = vec![escalated];
    assert_eq!(case.plan().terminate, vec!["b"]);
    // Healthy since, Unhealthy again later: a new spell, a Restart first.
    case.instances[1].health_since = Some(t(990));
    let plan = case.plan();
    assert!(plan.terminate.is_empty());
    assert_eq!(plan.restart.len(), 1);
}

#[test]
fn a_restarted_pod_that_never_runs_is_escalated_after_the_startup_timeout() {
    let r = remediation("b", RepairAction::Restart, 0, 0);
    let mut case = Case::new(
        with_repair(restart_then_replace(60)),
        vec![inst("a"), restarted(sick("b"), &r, None), inst("c")],
    );
    case.remediations = vec![r];
    case.spec.health_check.startup_timeout_seconds = 600;
    case.now = t(659);
    let plan = case.plan();
    assert!(plan.terminate.is_empty());
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(1)));
    case.now = t(660);
    let plan = case.plan();
    assert_eq!(plan.remediations[1].outcome, RemediationOutcome::Escalated);
    assert_eq!(plan.terminate, vec!["b"]);
}

#[test]
fn a_restart_whose_instance_is_not_judged_in_time_is_abandoned() {
    // Standby after the restart: out of repair.
    let r = remediation("b", RepairAction::Restart, 0, 900);
    let mut b = restarted(inst("b"), &r, Some(950));
    b.standby = true;
    let mut case = Case::new(
        with_repair(restart_then_replace(60)),
        vec![inst("a"), b, inst("c")],
    );
    case.remediations = vec![r.clone()];
    assert_eq!(
        case.plan().remediations[0].outcome,
        RemediationOutcome::Abandoned
    );
    // Never verified (no probe results): waited for one startup timeout past the deadline.
    let mut b = restarted(inst("b"), &r, Some(950));
    b.detail = Some(HealthDetail::InsufficientData);
    case.instances[1] = b;
    case.spec.health_check.startup_timeout_seconds = 100;
    case.now = t(1100);
    let plan = case.plan();
    assert_eq!(plan.remediations[0].outcome, RemediationOutcome::InProgress);
    assert_eq!(plan.in_flight, 1);
    case.now = t(1110);
    assert_eq!(
        case.plan().remediations[0].outcome,
        RemediationOutcome::Abandoned
    );
}

#[test]
fn nothing_is_requested_while_the_group_is_paused() {
    let r = remediation("b", RepairAction::Restart, 0, 990);
    let mut case = Case::new(
        with_repair(restart_then_replace(60)),
        vec![inst("a"), sick("b"), inst("c")],
    );
    case.remediations = vec![r];
    case.paused = true;
    let plan = case.plan();
    assert!(plan.restart.is_empty());
    assert_eq!(plan.remediations[0].outcome, RemediationOutcome::InProgress);
}

#[test]
fn a_surge_or_an_instance_being_replaced_is_never_restarted() {
    // b's surge replacement n failed: n is surplus and terminated, b keeps its Replace.
    let mut case = Case::new(
        {
            let mut s = with_repair(restart_then_replace(60));
            s.replacement.strategy = ReplacementStrategy::LaunchBeforeTerminate;
            s.max_size = 4;
            s
        },
        vec![inst("a"), sick("b"), inst("c"), replacing(sick("n"), "b")],
    );
    let mut replace = remediation("b", RepairAction::Replace, 1, 900);
    replace.outcome = RemediationOutcome::Failed;
    case.remediations = vec![replace];
    let plan = case.plan();
    assert!(plan.restart.is_empty(), "{plan:?}");
}

#[test]
fn a_restart_whose_instance_left_is_abandoned() {
    let r = remediation("b", RepairAction::Restart, 0, 900);
    let mut case = Case::new(
        with_repair(restart_then_replace(60)),
        vec![
            inst("a"),
            leaving(restarted(sick("b"), &r, None)),
            inst("c"),
        ],
    );
    case.remediations = vec![r];
    let plan = case.plan();
    assert_eq!(plan.remediations[0].outcome, RemediationOutcome::Abandoned);
    assert!(plan.restart.is_empty());
}

#[test]
fn a_restart_request_the_instance_has_not_seen_is_sent_again_and_recorded_once() {
    // A crash between the status write and the annotation: the next pass re-sends it.
    let r = remediation("b", RepairAction::Restart, 0, 990);
    let mut case = Case::new(
        with_repair(restart_then_replace(60)),
        vec![inst("a"), sick("b"), inst("c")],
    );
    case.remediations = vec![r.clone()];
    let plan = case.plan();
    assert_eq!(plan.restart, vec![("b".to_string(), restart_token(&r))]);
    assert_eq!(plan.remediations, vec![r]);
}

#[test]
fn a_replacement_remediation_ends_with_its_replacements_judgement() {
    let r = remediation("b", RepairAction::Replace, 0, 900);
    let mut case = Case::new(
        spec(3, 3),
        vec![
            inst("a"),
            leaving(sick("b")),
            inst("c"),
            replacing(inst("n"), "b"),
        ],
    );
    case.remediations = vec![r];
    let plan = case.plan();
    let r = &plan.remediations[0];
    assert_eq!(r.outcome, RemediationOutcome::Succeeded, "{r:?}");
    assert_eq!(r.replacement.as_deref(), Some("n"));

    // The old Instance gone and nothing replacing it: abandoned.
    let mut case = Case::new(spec(3, 3), vec![inst("a"), inst("c")]);
    case.remediations = vec![remediation("b", RepairAction::Replace, 0, 900)];
    assert_eq!(
        case.plan().remediations[0].outcome,
        RemediationOutcome::Abandoned
    );
}

#[test]
fn dry_run_lists_every_candidate_and_acts_on_nothing() {
    let mut s = with_repair(restart_then_replace(60));
    s.repair.mode = RepairMode::DryRun;
    let mut case = Case::new(s, vec![inst("a"), sick("b"), sick("c")]);
    let plan = case.plan();
    assert!(plan.terminate.is_empty() && plan.launch_replacements_for.is_empty());
    assert!(plan.restart.is_empty() && plan.remediations.is_empty());
    assert_eq!(plan.memory.last_replacement_time, None);
    let listed: Vec<(&str, RepairAction)> = plan
        .would_repair
        .iter()
        .map(|w| (w.instance.as_str(), w.action))
        .collect();
    assert_eq!(
        listed,
        vec![("b", RepairAction::Restart), ("c", RepairAction::Restart)]
    );
    assert_eq!(
        (plan.condition.status, plan.condition.reason.as_str()),
        ("False", reason::DRY_RUN)
    );
    assert!(plan.condition.message.contains("b (Restart), c (Restart)"));
    let would = plan
        .events
        .iter()
        .filter(|e| e.reason == reason::WOULD_REPAIR)
        .count();
    assert_eq!(would, 2);

    // Announced once: what the status lists already gets no second Event.
    let stored: Vec<WouldRepair> = plan.would_repair.clone();
    let plan = plan_replacements(&ReplacementInputs {
        spec: &case.spec,
        paused: false,
        instances: &case.instances,
        nodes: &[],
        memory: &case.memory,
        template_hash: CUR,
        reset_request: None,
        previous_condition: None,
        backoff: Backoff::default(),
        remediations: &[],
        would_repair: &stored,
        now: case.now,
    });
    assert!(!reasons(&plan).contains(&reason::WOULD_REPAIR));

    // Back to Auto: the current plan is acted on (b first, maxInFlight 1).
    case.spec.repair.mode = RepairMode::Auto;
    let plan = case.plan();
    assert_eq!(plan.restart.len(), 1);
    assert!(plan.would_repair.is_empty());
}

#[test]
fn dry_run_with_nothing_to_repair_holds_nothing() {
    let mut s = spec(3, 3);
    s.repair.mode = RepairMode::DryRun;
    let plan = Case::new(s, vec![inst("a"), inst("b"), inst("c")]).plan();
    assert_eq!(
        (plan.condition.status, plan.condition.reason.as_str()),
        ("True", reason::DRY_RUN)
    );
}

#[test]
fn dry_run_lists_nothing_while_the_breaker_holds() {
    let mut s = spec(3, 3);
    s.repair.mode = RepairMode::DryRun;
    s.replacement.max_unhealthy = IntOrString::Int(1);
    let plan = Case::new(s, vec![inst("a"), sick("b"), sick("c")]).plan();
    assert!(plan.would_repair.is_empty());
    assert_eq!(plan.condition.reason, reason::TOO_MANY_UNHEALTHY);
}

#[test]
fn the_history_is_bounded_but_keeps_every_repair_in_progress() {
    let mut list: Vec<Remediation> = (0..60)
        .map(|n| {
            let mut r = remediation(&format!("x{n}"), RepairAction::Replace, 0, n);
            r.outcome = RemediationOutcome::Succeeded;
            r
        })
        .collect();
    list.push(remediation("p", RepairAction::Restart, 0, 100));
    list.insert(3, remediation("q", RepairAction::Restart, 0, 100));
    // x55 is still there: its newest entry is kept (its escalation step lives there).
    let present = [inst("x55")];
    let index = by_name(&present);
    repair::bound(&mut list, &index);
    assert_eq!(list.len(), MAX_REMEDIATIONS);
    for name in ["p", "q", "x0", "x46", "x55"] {
        assert!(list.iter().any(|r| r.instance == name), "{name}");
    }
    assert!(!list.iter().any(|r| r.instance == "x47"));
}

#[test]
fn the_repair_clock_stops_once_the_group_is_whole_again() {
    let mut list = vec![
        remediation("a", RepairAction::Restart, 0, 900),
        remediation("b", RepairAction::Replace, 0, 950),
    ];
    list[1].outcome = RemediationOutcome::Succeeded;
    list[1].detected = Some(Time(t(940)));
    assert!(repair::mark_recovered(&mut list, false, t(1000)).is_empty());
    assert_eq!(repair::mark_recovered(&mut list, true, t(1000)), vec![60.0]);
    assert_eq!(list[1].recovered, Some(Time(t(1000))));
    assert_eq!(list[0].recovered, None, "still in progress");
    // Stamped once.
    assert!(repair::mark_recovered(&mut list, true, t(1100)).is_empty());
}

proptest! {
    /// Whatever the history says, never more repairs in flight than maxInFlight once the plan
    /// is applied, and never an action in dry run.
    #[test]
    fn repairs_stay_within_max_in_flight(
        sick_count in 0usize..6,
        restarting in proptest::collection::vec(any::<bool>(), 6),
        running in 850i64..1000,
        dry in any::<bool>(),
    ) {
        let mut s = with_repair(restart_then_replace(60));
        s.desired_capacity = Some(6);
        s.max_size = 6;
        s.replacement.max_in_flight = IntOrString::Int(2);
        if dry {
            s.repair.mode = RepairMode::DryRun;
        }
        let mut case = Case::new(s, Vec::new());
        for (n, restarts) in restarting.iter().enumerate() {
            let name = format!("i{n}");
            if n < sick_count {
                if *restarts {
                    let r = remediation(&name, RepairAction::Restart, 0, 800);
                    case.instances.push(restarted(sick(&name), &r, Some(running)));
                    case.remediations.push(r);
                } else {
                    case.instances.push(sick(&name));
                }
            } else {
                case.instances.push(inst(&name));
            }
        }
        let plan = case.plan();
        if dry {
            prop_assert!(plan.restart.is_empty());
            prop_assert!(plan.terminate.is_empty() && plan.launch_replacements_for.is_empty());
        }
        // Restarts still in flight (their timeout not over) hold their slots.
        let before = plan
            .remediations
            .iter()
            .filter(|r| r.outcome == RemediationOutcome::InProgress && r.started == Time(t(800)))
            .count();
        let started = plan
            .remediations
            .iter()
            .filter(|r| r.outcome == RemediationOutcome::InProgress && r.started == Time(t(1000)))
            .count();
        prop_assert!(started <= 2usize.saturating_sub(before), "{plan:?}");
        // (The input may hold more restarts in flight than allowed: nothing is added then.)
        prop_assert!(plan.in_flight <= 2.max(before), "{plan:?}");
        prop_assert!(plan.restart.len() <= plan.remediations.len());
    }
}
