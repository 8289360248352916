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
    let plan = Case::new(
        with_repair(restart_then_replace(60)),
        vec![inst("a"), sick("b"), sick("c")],
    )
    .plan();
    assert_eq!(plan.restart.len(), 1, "{:?}", plan.restart);
    assert_eq!(plan.restart[0].0, "b");
    assert!(plan.terminate.is_empty());

    // While b's restart is in flight, c waits (maxInFlight 1).
    let mut case = Case::new(
        with_repair(restart_then_replace(60)),
        vec![inst("a"), sick("b"), sick("c")],
    );
    let r = remediation("b", RepairAction::Restart, 0, 990);
    case.instances[1] = restarted(sick("b"), &r, None);
    case.remediations = vec![r];
    let plan = case.plan();
    assert!(
        plan.restart.is_empty() && plan.terminate.is_empty(),
        "{plan:?}"
    );
    assert_eq!(plan.remediations.len(), 1);
    assert_eq!(plan.in_flight, 1);
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
fn a_last_restart_repeats() {
    let only_restart = Repair {
        actions: vec![RepairStep {
            action: RepairAction::Restart,
            timeout_seconds: Some(30),
        }],
        mode: RepairMode::Auto,
    };
    let r = remediation("b", RepairAction::Restart, 0, 900);
    let mut case = Case::new(
        with_repair(only_restart),
        vec![inst("a"), restarted(sick("b"), &r, Some(950)), inst("c")],
    );
    case.remediations = vec![r];
    let plan = case.plan();
    assert!(plan.terminate.is_empty());
    assert_eq!(plan.remediations[1].outcome, RemediationOutcome::Escalated);
    let newest = &plan.remediations[0];
    assert_eq!((newest.action, newest.step), (RepairAction::Restart, 0));
    assert_eq!(plan.restart, vec![("b".to_string(), restart_token(newest))]);
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
    repair::bound(&mut list);
    assert_eq!(list.len(), MAX_REMEDIATIONS);
    for name in ["p", "q", "x0", "x47"] {
        assert!(list.iter().any(|r| r.instance == name), "{name}");
    }
    assert!(!list.iter().any(|r| r.instance == "x48"));
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
                    let r = remediation(&name, RepairAction::Restart, 0, 990);
                    case.instances.push(restarted(sick(&name), &r, Some(995)));
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
            prop_assert!(plan.restart.iter().all(|(n, _)| case.remediations.iter().any(|r| &r.instance == n)));
            prop_assert!(plan.terminate.is_empty() && plan.launch_replacements_for.is_empty());
        }
        let in_progress_before = case.remediations.len();
        let in_flight_now = plan.remediations.iter().filter(|r| r.outcome == RemediationOutcome::InProgress).count();
        prop_assert!(in_flight_now <= 2.max(in_progress_before), "{plan:?}");
    }
}
