//! Unit and property tests of the replacement planner.

use super::*;
use crate::api::names::reason;
use crate::api::{
    CONDITION_REPLACEMENT_ALLOWED, HealthStatus, InstanceTemplate, InstanceTemplateSpec,
    PodTemplate, Process, Replacement, ReplacementStrategy,
};
use proptest::prelude::*;

const CUR: &str = "cur-hash";

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn spec(desired: i32, max: i32) -> ScalingGroupSpec {
    ScalingGroupSpec {
        min_size: 0,
        max_size: max,
        desired_capacity: Some(desired),
        template: InstanceTemplate {
            metadata: None,
            spec: InstanceTemplateSpec {
                pod_template: PodTemplate::default(),
            },
        },
        revision_history_limit: 10,
        refresh: Default::default(),
        repair: Default::default(),
        max_instance_lifetime_seconds: None,
        health_check: Default::default(),
        replacement: Replacement::default(),
        lifecycle_hooks: Vec::new(),
        scale_in: Default::default(),
        suspended_processes: Vec::new(),
    }
}

/// An InService, Healthy (OK) Instance created at `t(0)`.
fn inst(name: &str) -> InstanceView {
    InstanceView {
        placement: Default::default(),
        repair: Default::default(),
        name: name.into(),
        created_at: t(0),
        state: LifecycleState::InService,
        health: Some(HealthStatus::Healthy),
        detail: Some(HealthDetail::OK),
        protected: false,
        in_service_since: Some(t(0)),
        replaces: None,
        template_hash: Some(CUR.into()),
        being_deleted: false,
        maintenance: false,
        standby: false,
        evidence: None,
        termination_reason: None,
        health_reason: None,
        health_since: None,
    }
}

fn sick(name: &str) -> InstanceView {
    InstanceView {
        placement: Default::default(),
        repair: Default::default(),
        health: Some(HealthStatus::Unhealthy),
        detail: Some(HealthDetail::Impaired),
        ..inst(name)
    }
}

fn created(mut i: InstanceView, secs: i64) -> InstanceView {
    i.created_at = t(secs);
    i
}

fn leaving(mut i: InstanceView) -> InstanceView {
    i.state = LifecycleState::Terminating;
    i.termination_reason = Some("Unhealthy".into());
    i
}

fn pending(name: &str) -> InstanceView {
    InstanceView {
        placement: Default::default(),
        repair: Default::default(),
        state: LifecycleState::Pending,
        health: None,
        detail: None,
        in_service_since: None,
        ..inst(name)
    }
}

fn replacing(mut i: InstanceView, old: &str) -> InstanceView {
    i.replaces = Some(old.into());
    i
}

struct Case {
    spec: ScalingGroupSpec,
    paused: bool,
    instances: Vec<InstanceView>,
    nodes: Vec<NodeView>,
    memory: ReplacementMemory,
    reset: Option<String>,
    previous: Option<Condition>,
    remediations: Vec<crate::api::Remediation>,
    now: Timestamp,
}

impl Case {
    fn new(spec: ScalingGroupSpec, instances: Vec<InstanceView>) -> Self {
        Self {
            spec,
            paused: false,
            instances,
            nodes: Vec::new(),
            memory: ReplacementMemory::default(),
            reset: None,
            previous: None,
            remediations: Vec::new(),
            now: t(1000),
        }
    }

    fn plan(&self) -> ReplacementPlan {
        plan_replacements(&ReplacementInputs {
            spec: &self.spec,
            paused: self.paused,
            instances: &self.instances,
            nodes: &self.nodes,
            memory: &self.memory,
            template_hash: CUR,
            reset_request: self.reset.as_deref(),
            previous_condition: self.previous.as_ref(),
            backoff: Backoff::default(),
            remediations: &self.remediations,
            would_repair: &[],
            now: self.now,
        })
    }
}

fn as_condition(d: &DesiredCondition) -> Condition {
    crate::api::conditions::settle(&[], vec![d.clone()], None, t(0)).remove(0)
}

fn reasons(plan: &ReplacementPlan) -> Vec<&'static str> {
    plan.events.iter().map(|e| e.reason).collect()
}

#[test]
fn healthy_group_does_nothing() {
    let plan = Case::new(spec(3, 5), vec![inst("a"), inst("b"), inst("c")]).plan();
    assert!(plan.terminate.is_empty() && plan.launch_replacements_for.is_empty());
    assert_eq!(plan.condition.status, "True");
    assert_eq!(plan.condition.reason, reason::ALLOWED);
    assert_eq!(plan.in_flight, 0);
    assert!(plan.events.is_empty());
    assert_eq!(plan.memory, ReplacementMemory::default());
}

#[test]
fn terminate_then_launch_terminates_the_unhealthy_instance() {
    let plan = Case::new(spec(3, 3), vec![inst("a"), sick("b"), inst("c")]).plan();
    assert_eq!(plan.terminate, vec!["b"]);
    assert!(plan.launch_replacements_for.is_empty());
    assert_eq!(plan.memory.last_replacement_time, Some(t(1000)));
    assert_eq!(plan.in_flight, 1);
    assert_eq!(plan.unhealthy, vec!["b"]);
    let e = &plan.events[0];
    assert_eq!(
        (e.reason, e.type_, e.instance.as_deref()),
        (reason::REPLACING, EventType::Normal, Some("b"))
    );
    assert!(e.message.contains("TerminateThenLaunch"), "{}", e.message);
}

#[test]
fn protection_from_scale_in_does_not_shield_from_health_replacement() {
    let mut b = sick("b");
    b.protected = true;
    let plan = Case::new(spec(2, 2), vec![inst("a"), b]).plan();
    assert_eq!(plan.terminate, vec!["b"]);
}

#[test]
fn standby_and_maintenance_are_never_replaced() {
    let mut s1 = sick("s1");
    s1.standby = true;
    let mut s2 = sick("s2");
    s2.state = LifecycleState::Standby;
    let mut m1 = sick("m1");
    m1.maintenance = true;
    let mut m2 = sick("m2");
    m2.detail = Some(HealthDetail::Maintaining);
    let mut case = Case::new(spec(4, 4), vec![s1, s2, m1, m2]);
    case.spec.replacement.max_in_flight = IntOrString::Int(10);
    let plan = case.plan();
    assert!(plan.terminate.is_empty() && plan.launch_replacements_for.is_empty());
    assert!(plan.unhealthy.is_empty());
    assert_eq!(plan.condition.status, "True");
}

#[test]
fn max_in_flight_bounds_a_mass_failure_oldest_first() {
    let instances = (0..10)
        .map(|n| created(sick(&format!("i{n}")), n))
        .collect();
    let mut case = Case::new(spec(10, 10), instances);
    case.spec.replacement.max_in_flight = IntOrString::Int(3);
    let plan = case.plan();
    assert_eq!(plan.terminate, vec!["i0", "i1", "i2"]);
    assert_eq!(plan.in_flight, 3);

    // Two already leaving: one more.
    case.instances[0] = leaving(case.instances[0].clone());
    case.instances[1] = leaving(case.instances[1].clone());
    let plan = case.plan();
    assert_eq!(plan.terminate, vec!["i2"]);
    assert_eq!(plan.in_flight, 3);
}

#[test]
fn a_started_replacement_stays_in_flight_until_in_service_and_healthy() {
    // The old one is gone; its replacement is still starting: in flight.
    let case = Case::new(
        spec(3, 3),
        vec![replacing(pending("r"), "gone"), sick("b"), inst("c")],
    );
    let plan = case.plan();
    assert!(plan.terminate.is_empty());
    assert_eq!(in_flight(&case.instances), 1);
    assert_eq!(plan.condition.status, "True");
    // Ready: b is replaced next.
    let case = Case::new(
        spec(3, 3),
        vec![replacing(inst("r"), "gone"), sick("b"), inst("c")],
    );
    assert_eq!(case.plan().terminate, vec!["b"]);
}

#[test]
fn percentages_round_up_for_in_flight_and_down_for_unhealthy() {
    let mut s = spec(10, 10);
    s.replacement.max_in_flight = IntOrString::String("25%".into());
    s.replacement.max_unhealthy = IntOrString::String("25%".into());
    s.replacement.min_healthy_percentage = 75;
    let l = Limits::of(&s);
    assert_eq!(l.max_in_flight, 3);
    assert_eq!(l.max_unhealthy, Some(2));
    assert_eq!(l.min_healthy, 8);
    assert_eq!(l.terminate_then_launch_room, 2);
    assert_eq!(l.max_with_surge, 13);
    s.replacement.max_in_flight = IntOrString::String("1%".into());
    assert_eq!(Limits::of(&s).max_in_flight, 1);
    s.replacement.max_in_flight = IntOrString::Int(0);
    assert_eq!(Limits::of(&s).max_in_flight, 1, "at least 1");
    s.replacement.max_unhealthy = IntOrString::String("100%".into());
    assert_eq!(Limits::of(&s).max_unhealthy, None);
    s.desired_capacity = Some(0);
    assert_eq!(
        Limits::of(&s).max_in_flight,
        0,
        "a group scaled to 0 replaces nothing"
    );
}

#[test]
fn values_that_are_not_understood_are_conservative_and_reported() {
    let mut case = Case::new(spec(3, 3), vec![inst("a"), sick("b"), inst("c")]);
    case.spec.replacement.max_unhealthy = IntOrString::String("lots".into());
    case.spec.replacement.max_in_flight = IntOrString::String("-3%".into());
    let plan = case.plan();
    assert!(plan.terminate.is_empty());
    assert_eq!(plan.condition.reason, reason::TOO_MANY_UNHEALTHY);
    assert!(
        plan.condition
            .message
            .contains("\"lots\" is not understood")
    );
}

#[test]
fn circuit_breaker_names_the_unhealthy_and_resumes_by_itself() {
    let mut case = Case::new(spec(3, 3), vec![sick("a"), sick("b"), sick("c")]);
    case.spec.replacement.max_unhealthy = IntOrString::Int(1);
    let plan = case.plan();
    assert!(plan.terminate.is_empty() && plan.launch_replacements_for.is_empty());
    assert_eq!(plan.condition.status, "False");
    assert_eq!(plan.condition.reason, reason::TOO_MANY_UNHEALTHY);
    for n in ["a", "b", "c"] {
        assert!(
            plan.condition.message.contains(n),
            "{}",
            plan.condition.message
        );
    }
    assert!(plan.condition.message.contains("more than maxUnhealthy 1"));
    let warning = plan
        .events
        .iter()
        .find(|e| e.reason == reason::TOO_MANY_UNHEALTHY)
        .expect("a Warning Event");
    assert_eq!(warning.type_, EventType::Warning);
    assert_eq!(warning.message, plan.condition.message);

    // Same condition again: no new Event.
    case.previous = Some(as_condition(&plan.condition));
    assert!(case.plan().events.is_empty());

    // Two recover: replacement resumes by itself, announced once.
    case.instances[0] = inst("a");
    case.instances[1] = inst("b");
    let plan = case.plan();
    assert_eq!(plan.terminate, vec!["c"]);
    assert_eq!(plan.condition.status, "True");
    assert!(reasons(&plan).contains(&reason::ALLOWED));
}

#[test]
fn maintenance_and_standby_do_not_count_toward_max_unhealthy() {
    let mut m = sick("m");
    m.maintenance = true;
    let mut case = Case::new(spec(3, 3), vec![m, sick("b"), inst("c")]);
    case.spec.replacement.max_unhealthy = IntOrString::Int(1);
    assert_eq!(case.plan().terminate, vec!["b"]);
}

#[test]
fn paused_and_suspended_do_nothing() {
    let mut case = Case::new(spec(2, 2), vec![sick("a"), inst("b")]);
    case.paused = true;
    let plan = case.plan();
    assert!(plan.terminate.is_empty());
    assert_eq!(
        (plan.condition.status, plan.condition.reason.as_str()),
        ("False", reason::PAUSED)
    );
    assert!(plan.condition.message.contains('a'));
    case.paused = false;
    for p in [
        Process::HealthCheck,
        Process::ReplaceUnhealthy,
        Process::Terminate,
        Process::Launch,
    ] {
        case.spec.suspended_processes = vec![p];
        let plan = case.plan();
        assert!(plan.terminate.is_empty(), "{p:?}");
        assert_eq!(plan.condition.reason, reason::SUSPENDED, "{p:?}");
        assert!(
            plan.condition.message.contains(&format!("{p:?}")),
            "{}",
            plan.condition.message
        );
    }
    case.spec.suspended_processes = vec![Process::AddToService];
    assert_eq!(case.plan().terminate, vec!["a"]);
}

#[test]
fn launch_before_terminate_surges_then_terminates_when_ready() {
    let mut s = spec(3, 3);
    s.replacement.strategy = ReplacementStrategy::LaunchBeforeTerminate;
    let mut case = Case::new(s, vec![inst("a"), sick("b"), inst("c")]);
    let plan = case.plan();
    assert!(plan.terminate.is_empty());
    assert_eq!(plan.launch_replacements_for, vec!["b"]);
    assert_eq!(plan.in_flight, 1);

    // The surge is starting: nothing more (b is still InService).
    case.instances.push(replacing(pending("r"), "b"));
    let plan = case.plan();
    assert!(plan.terminate.is_empty() && plan.launch_replacements_for.is_empty());
    assert_eq!(surge_instances(&case.instances), vec!["r"]);

    // The surge is InService and Healthy: b leaves, even while backing off.
    case.instances[3] = replacing(inst("r"), "b");
    case.memory.consecutive_failures = 1;
    case.memory.failing_template_hash = Some(CUR.into());
    case.memory.last_replacement_time = Some(case.now);
    let plan = case.plan();
    assert_eq!(plan.terminate, vec!["b"]);
    assert!(reasons(&plan).contains(&reason::REPLACEMENT_READY));
    assert_eq!(plan.in_flight, 1);
}

#[test]
fn launch_before_terminate_terminates_what_serves_nothing_at_once() {
    let mut s = spec(2, 2);
    s.replacement.strategy = ReplacementStrategy::LaunchBeforeTerminate;
    let mut p = pending("p");
    p.health = Some(HealthStatus::Unhealthy);
    p.detail = Some(HealthDetail::Impaired);
    let plan = Case::new(s, vec![inst("a"), p]).plan();
    assert_eq!(plan.terminate, vec!["p"]);
    assert!(plan.launch_replacements_for.is_empty());
}

#[test]
fn a_failed_surge_is_terminated_without_a_replacement_of_its_own() {
    let mut s = spec(2, 2);
    s.replacement.strategy = ReplacementStrategy::LaunchBeforeTerminate;
    s.replacement.max_in_flight = IntOrString::Int(1);
    let case = Case::new(
        s,
        vec![
            inst("a"),
            sick("b"),
            replacing(created(sick("r"), 500), "b"),
        ],
    );
    let plan = case.plan();
    assert_eq!(plan.terminate, vec!["r"], "the failed surge goes first");
    assert!(plan.launch_replacements_for.is_empty(), "budget used");
    assert_eq!(plan.memory.consecutive_failures, 1);
}

#[test]
fn surge_stays_within_max_size_plus_max_in_flight() {
    let mut s = spec(3, 3);
    s.replacement.strategy = ReplacementStrategy::LaunchBeforeTerminate;
    s.replacement.max_in_flight = IntOrString::Int(2);
    let mut case = Case::new(
        s,
        vec![
            inst("a"),
            created(sick("b"), 1),
            created(sick("c"), 2),
            inst("d"),
            inst("e"),
        ],
    );
    // 5 count toward capacity already; 3 + 2 = 5: no room to surge.
    let plan = case.plan();
    assert!(plan.launch_replacements_for.is_empty());
    case.instances.truncate(4);
    let plan = case.plan();
    assert_eq!(plan.launch_replacements_for, vec!["b"]);
}

#[test]
fn min_healthy_percentage_bounds_terminate_then_launch() {
    let instances: Vec<_> = (0..10)
        .map(|n| {
            if n < 5 {
                created(sick(&format!("i{n}")), n)
            } else {
                inst(&format!("i{n}"))
            }
        })
        .collect();
    let mut case = Case::new(spec(10, 10), instances);
    case.spec.replacement.max_in_flight = IntOrString::Int(5);
    case.spec.replacement.min_healthy_percentage = 80;
    let plan = case.plan();
    assert_eq!(plan.terminate, vec!["i0", "i1"]);
    // 100%: no room for holes, so InService candidates get a replacement first (as AWS does).
    case.spec.replacement.min_healthy_percentage = 100;
    let plan = case.plan();
    assert!(plan.terminate.is_empty());
    assert_eq!(plan.launch_replacements_for.len(), 5);
}

#[test]
fn a_failed_replacement_is_counted_exactly_once() {
    let mut case = Case::new(
        spec(2, 2),
        vec![inst("a"), replacing(sick("r"), "old"), leaving(sick("old"))],
    );
    let plan = case.plan();
    assert_eq!(plan.memory.consecutive_failures, 1);
    assert_eq!(plan.memory.judged, vec!["r"]);
    assert_eq!(plan.memory.recent_failures, vec!["r"]);
    assert_eq!(plan.memory.failing_template_hash.as_deref(), Some(CUR));
    let failed = plan
        .events
        .iter()
        .find(|e| e.reason == reason::REPLACEMENT_FAILED)
        .unwrap();
    assert_eq!(failed.type_, EventType::Warning);
    assert_eq!(failed.instance.as_deref(), Some("r"));
    // Planned again (e.g. after a restart) from the remembered state: not counted again.
    case.memory = plan.memory.clone();
    let again = case.plan();
    assert_eq!(again.memory.consecutive_failures, 1);
    assert!(!reasons(&again).contains(&reason::REPLACEMENT_FAILED));
}

#[test]
fn a_replacement_succeeds_only_once_its_grace_period_ended_with_ok() {
    let mut case = Case::new(spec(2, 2), vec![inst("a")]);
    case.spec.health_check.grace_period_seconds = 60;
    case.memory.consecutive_failures = 2;
    case.memory.failing_template_hash = Some(CUR.into());
    let mut r = replacing(inst("r"), "old");
    r.in_service_since = Some(t(990));
    r.detail = Some(HealthDetail::Initializing);
    case.instances.push(r.clone());
    let plan = case.plan();
    assert_eq!(plan.memory.consecutive_failures, 2);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(50)));
    // Grace period over but the verdict is not OK yet: wait.
    case.now = t(1050);
    let plan = case.plan();
    assert_eq!(plan.memory.consecutive_failures, 2);
    assert!(plan.memory.judged.is_empty());
    // OK: success resets the count.
    case.instances[1].detail = Some(HealthDetail::OK);
    let plan = case.plan();
    assert_eq!(plan.memory.consecutive_failures, 0);
    assert_eq!(plan.memory.judged, vec!["r"]);
    assert!(reasons(&plan).contains(&reason::REPLACEMENT_SUCCEEDED));
    // Unhealthy later: a plain candidate, not a failure.
    case.memory = plan.memory;
    case.instances[1] = replacing(sick("r"), "old");
    let plan = case.plan();
    assert_eq!(plan.memory.consecutive_failures, 0);
    assert_eq!(plan.terminate, vec!["r"]);
}

#[test]
fn replacements_of_an_older_template_do_not_count() {
    let mut r = replacing(sick("r"), "old");
    r.template_hash = Some("previous".into());
    let plan = Case::new(spec(2, 2), vec![inst("a"), r]).plan();
    assert_eq!(plan.memory.consecutive_failures, 0);
    assert_eq!(plan.memory.judged, vec!["r"]);
}

#[test]
fn judging_waits_while_paused_or_health_check_suspended() {
    let mut case = Case::new(spec(2, 2), vec![inst("a"), replacing(sick("r"), "old")]);
    case.paused = true;
    assert_eq!(case.plan().memory.consecutive_failures, 0);
    case.paused = false;
    case.spec.suspended_processes = vec![Process::HealthCheck];
    assert_eq!(case.plan().memory.consecutive_failures, 0);
}

#[test]
fn backoff_spaces_replacements_after_failures() {
    let instances = (0..4).map(|n| created(sick(&format!("i{n}")), n)).collect();
    let mut case = Case::new(spec(4, 4), instances);
    case.spec.replacement.max_in_flight = IntOrString::Int(4);
    case.memory.consecutive_failures = 2;
    case.memory.failing_template_hash = Some(CUR.into());
    case.memory.last_replacement_time = Some(t(990));
    let plan = case.plan();
    assert!(plan.terminate.is_empty());
    assert_eq!(plan.condition.reason, reason::BACKING_OFF);
    assert_eq!(plan.condition.status, "True");
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(10)));
    // Backoff over: one at a time, despite maxInFlight 4.
    case.now = t(1010);
    let plan = case.plan();
    assert_eq!(plan.terminate, vec!["i0"]);
    assert_eq!(plan.memory.last_replacement_time, Some(t(1010)));
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(20)));
}

#[test]
fn backoff_delays_double_up_to_the_cap() {
    let b = Backoff::default();
    let secs: Vec<u64> = [0, 1, 2, 3, 4, 5, 6, 100, i32::MAX]
        .into_iter()
        .map(|n| b.delay(n).as_secs())
        .collect();
    assert_eq!(secs, vec![0, 10, 20, 40, 80, 160, 300, 300, 300]);
    assert_eq!(b.delay(-5), Duration::ZERO);
}

#[test]
fn too_many_failures_stop_replacement_until_reset_or_template_change() {
    let mut case = Case::new(spec(2, 2), vec![inst("a"), sick("b")]);
    case.memory.consecutive_failures = 3;
    case.memory.failing_template_hash = Some(CUR.into());
    case.memory.recent_failures = vec!["x1".into(), "x2".into(), "x3".into()];
    let plan = case.plan();
    assert!(plan.terminate.is_empty());
    assert_eq!(plan.condition.status, "False");
    assert_eq!(plan.condition.reason, reason::KEEP_FAILING);
    for needle in [
        "x1",
        "x2",
        "x3",
        crate::api::names::ANNOTATION_RESET_REPLACEMENT_FAILURES,
        "b",
    ] {
        assert!(
            plan.condition.message.contains(needle),
            "{needle}: {}",
            plan.condition.message
        );
    }
    let w = plan
        .events
        .iter()
        .find(|e| e.reason == reason::KEEP_FAILING)
        .unwrap();
    assert_eq!(w.type_, EventType::Warning);

    // A person resets it.
    case.reset = Some("1".into());
    let plan = case.plan();
    assert_eq!(plan.memory.consecutive_failures, 0);
    assert_eq!(plan.memory.reset_token.as_deref(), Some("1"));
    assert!(plan.memory.recent_failures.is_empty());
    assert_eq!(plan.terminate, vec!["b"]);
    assert!(reasons(&plan).contains(&reason::FAILURES_RESET));
    // The same value does not reset again.
    case.memory.reset_token = Some("1".into());
    assert_eq!(case.plan().condition.reason, reason::KEEP_FAILING);

    // The template changes.
    case.memory.failing_template_hash = Some("older".into());
    let plan = case.plan();
    assert_eq!(plan.memory.consecutive_failures, 0);
    assert_eq!(plan.terminate, vec!["b"]);
}

#[test]
fn a_reset_value_seen_before_any_failure_is_remembered() {
    let mut case = Case::new(spec(1, 1), vec![inst("a")]);
    case.reset = Some("x".into());
    let plan = case.plan();
    assert_eq!(plan.memory.reset_token.as_deref(), Some("x"));
    assert!(plan.events.is_empty());
}

#[test]
fn judged_names_are_forgotten_once_gone() {
    let mut case = Case::new(spec(1, 1), vec![replacing(inst("r"), "old")]);
    case.memory.judged = vec!["gone".into(), "r".into(), "r".into()];
    assert_eq!(case.plan().memory.judged, vec!["r"]);
}

#[test]
fn out_of_band_loss_is_replaced_through_the_planner() {
    // The Pod was deleted or Failed while Pending: the evaluator says Impaired.
    let mut p = pending("p");
    p.health = Some(HealthStatus::Unhealthy);
    p.detail = Some(HealthDetail::Impaired);
    let plan = Case::new(spec(2, 2), vec![inst("a"), p]).plan();
    assert_eq!(plan.terminate, vec!["p"]);
}

#[test]
fn group_scaled_to_zero_replaces_nothing() {
    let plan = Case::new(spec(0, 3), vec![sick("a")]).plan();
    assert!(plan.terminate.is_empty() && plan.launch_replacements_for.is_empty());
}

#[test]
fn a_replacement_that_fails_while_its_old_instance_leaves_is_the_one_replaced() {
    // web-u leaves for health; its replacement r failed and leaves too: one place is
    // missing, r's, and the launch that fills it replaces r, not u a second time.
    let instances = vec![
        created(leaving(sick("u")), 1),
        created(replacing(leaving(sick("r")), "u"), 2),
        inst("a"),
    ];
    assert_eq!(replacement_targets(&instances), vec!["r"]);
}

#[test]
fn a_failed_surge_is_no_target_while_its_old_instance_still_counts() {
    // LaunchBeforeTerminate: surge s of b failed and leaves; b still serves, so no place of
    // s's is missing. p (leaving for health, younger than s) is the only target.
    let instances = vec![
        sick("b"),
        created(replacing(leaving(sick("s")), "b"), 1),
        created(leaving(sick("p")), 2),
        inst("a"),
    ];
    assert_eq!(replacement_targets(&instances), vec!["p"]);
}

#[test]
fn replacement_targets_pair_launches_with_leaving_instances() {
    let instances = vec![
        created(leaving(sick("x2")), 2),
        created(leaving(sick("x1")), 1),
        leaving(inst("scaled-in")).tap(|i| i.termination_reason = Some("ScaleIn".into())),
        created(leaving(sick("x3")), 3),
        replacing(pending("r3"), "x3"),
        inst("a"),
    ];
    assert_eq!(replacement_targets(&instances), vec!["x1", "x2"]);
    assert_eq!(in_flight(&instances), 3);
}

#[test]
fn memory_round_trips_through_status() {
    let memory = ReplacementMemory {
        consecutive_failures: 2,
        last_replacement_time: Some(t(5)),
        failing_template_hash: Some("h".into()),
        judged: vec!["a".into()],
        recent_failures: vec!["a".into()],
        reset_token: Some("r".into()),
    };
    let mut status = ScalingGroupStatus::default();
    memory.write_to(&mut status);
    assert_eq!(ReplacementMemory::from_status(&status), memory);
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["consecutiveReplacementFailures"], 2);
    assert_eq!(json["judgedReplacements"][0], "a");
    assert_eq!(json["replacementFailuresReset"], "r");
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
}
impl Tap for InstanceView {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

const POOL: &[&str] = &[
    "i0", "i1", "i2", "i3", "i4", "i5", "i6", "i7", "i8", "i9", "i10", "i11",
];

/// Nodes n0, n1 are in zone a, n2, n3 in zone b.
const NODE_POOL: &[&str] = &["n0", "n1", "n2", "n3"];

fn zone_of_node(n: &str) -> &'static str {
    if n == "n0" || n == "n1" { "a" } else { "b" }
}

fn any_nodes() -> impl Strategy<Value = Vec<NodeView>> {
    prop::sample::subsequence(NODE_POOL.to_vec(), 0..=4).prop_flat_map(|names| {
        let n = names.len();
        prop::collection::vec(
            (any::<bool>(), prop::option::of((980i64..1010).prop_map(t))),
            n,
        )
        .prop_map(move |facts| {
            names
                .iter()
                .zip(facts)
                .map(|(name, (ready, since))| NodeView {
                    name: name.to_string(),
                    zone: Some(zone_of_node(name).to_string()),
                    ready,
                    since,
                })
                .collect()
        })
    })
}

fn any_state() -> impl Strategy<Value = LifecycleState> {
    prop_oneof![
        3 => Just(LifecycleState::InService),
        2 => Just(LifecycleState::Pending),
        1 => Just(LifecycleState::PendingWait),
        1 => Just(LifecycleState::Standby),
        1 => Just(LifecycleState::Terminating),
        1 => Just(LifecycleState::TerminatingWait),
        1 => Just(LifecycleState::TerminatingProceed),
        1 => Just(LifecycleState::Terminated),
    ]
}

fn any_detail() -> impl Strategy<Value = Option<HealthDetail>> {
    prop::option::of(prop_oneof![
        3 => Just(HealthDetail::OK),
        3 => Just(HealthDetail::Impaired),
        1 => Just(HealthDetail::Warning),
        1 => Just(HealthDetail::Maintaining),
        1 => Just(HealthDetail::Initializing),
        1 => Just(HealthDetail::InsufficientData),
        1 => Just(HealthDetail::NotApplicable),
    ])
}

fn any_time() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        20 => (-2000i64..2000).prop_map(t),
        1 => Just(Timestamp::MAX),
        1 => Just(Timestamp::MIN),
    ]
}

fn any_instance() -> impl Strategy<Value = InstanceView> {
    (
        (
            prop::sample::select(POOL),
            any_time(),
            any_state(),
            prop::option::of(prop_oneof![
                Just(HealthStatus::Healthy),
                Just(HealthStatus::Unhealthy)
            ]),
            any_detail(),
            any::<bool>(),
            prop::option::of(any_time()),
        ),
        (
            prop::option::of(prop_oneof![
                3 => prop::sample::select(POOL).prop_map(str::to_string),
                1 => Just("ghost".to_string()),
            ]),
            prop::option::of(prop_oneof![Just(CUR.to_string()), Just("old".to_string())]),
            prop::bool::weighted(0.15),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.1),
            prop::option::of(prop_oneof![
                Just("Unhealthy".to_string()),
                Just("ScaleIn".to_string()),
                Just("Deleted".to_string())
            ]),
        ),
        (
            prop::option::of(prop::sample::select(NODE_POOL)),
            prop::option::of(prop::sample::select(
                &["ProbeFailed", "NodeNotReady", "PodGone"][..],
            )),
            prop::option::of(prop_oneof![3 => (990i64..1010).prop_map(t), 1 => any_time()]),
        ),
    )
        .prop_map(
            |(
                (name, created_at, state, health, detail, protected, in_service_since),
                (replaces, template_hash, being_deleted, maintenance, standby, termination_reason),
                (node, health_reason, health_since),
            )| InstanceView {
                placement: crate::plan::Placement {
                    node: node.map(str::to_string),
                    zone: node.map(|n| zone_of_node(n).to_string()),
                    revision: None,
                },
                repair: Default::default(),
                name: name.to_string(),
                created_at,
                state,
                health,
                detail,
                protected,
                in_service_since,
                replaces,
                template_hash,
                being_deleted,
                maintenance,
                standby,
                evidence: None,
                termination_reason,
                health_reason: health_reason.map(str::to_string),
                health_since,
            },
        )
}

fn any_int_or_percent() -> impl Strategy<Value = IntOrString> {
    prop_oneof![
        4 => (-2i32..12).prop_map(IntOrString::Int),
        4 => (0u32..=120).prop_map(|p| IntOrString::String(format!("{p}%"))),
        1 => Just(IntOrString::String("garbage".into())),
        1 => Just(IntOrString::Int(i32::MAX)),
    ]
}

fn any_spec() -> impl Strategy<Value = ScalingGroupSpec> {
    (
        (0i32..6, 0i32..10, prop::option::of(-2i32..16)),
        (any_int_or_percent(), any_int_or_percent()),
        prop_oneof![
            Just(ReplacementStrategy::TerminateThenLaunch),
            Just(ReplacementStrategy::LaunchBeforeTerminate)
        ],
        prop_oneof![3 => Just(0i32), 1 => 0i32..=100, 1 => Just(100)],
        -1i32..6,
        prop::sample::subsequence(
            vec![
                Process::Launch,
                Process::Terminate,
                Process::HealthCheck,
                Process::ReplaceUnhealthy,
                Process::AddToService,
            ],
            0..=2,
        ),
        prop_oneof![Just(0i32), 0i32..200, Just(i32::MAX)],
    )
        .prop_map(
            |((min, extra, desired), (mu, mif), strategy, mhp, mcf, suspended, grace)| {
                let mut s = spec(0, min + extra);
                s.min_size = min;
                s.desired_capacity = desired;
                s.replacement.max_unhealthy = mu;
                s.replacement.max_in_flight = mif;
                s.replacement.strategy = strategy;
                s.replacement.min_healthy_percentage = mhp;
                s.replacement.max_consecutive_failures = mcf;
                s.suspended_processes = suspended;
                s.health_check.grace_period_seconds = grace;
                s
            },
        )
}

fn any_memory() -> impl Strategy<Value = ReplacementMemory> {
    (
        prop_oneof![4 => -1i32..6, 1 => Just(i32::MAX)],
        prop::option::of(any_time()),
        prop::option::of(prop_oneof![Just(CUR.to_string()), Just("old".to_string())]),
        prop::collection::vec(prop::sample::select(POOL).prop_map(str::to_string), 0..6),
        prop::option::of(prop_oneof![Just("1".to_string()), Just("2".to_string())]),
    )
        .prop_map(|(count, lrt, hash, judged, token)| ReplacementMemory {
            consecutive_failures: count,
            last_replacement_time: lrt,
            failing_template_hash: hash,
            recent_failures: judged.iter().take(2).cloned().collect(),
            judged,
            reset_token: token,
        })
}

#[derive(Debug, Clone)]
struct World {
    spec: ScalingGroupSpec,
    paused: bool,
    instances: Vec<InstanceView>,
    nodes: Vec<NodeView>,
    memory: ReplacementMemory,
    reset: Option<String>,
    previous_false: bool,
    now: Timestamp,
}

fn any_world() -> impl Strategy<Value = World> {
    (
        any_spec(),
        prop::bool::weighted(0.1),
        prop::collection::vec(any_instance(), 0..14),
        any_memory(),
        prop::option::of(prop_oneof![Just("1".to_string()), Just("3".to_string())]),
        any::<bool>(),
        prop_oneof![20 => (-2000i64..4000).prop_map(t), 1 => Just(Timestamp::MAX)],
    )
        .prop_map(
            |(spec, paused, instances, memory, reset, previous_false, now)| World {
                spec,
                paused,
                instances,
                nodes: Vec::new(),
                memory,
                reset,
                previous_false,
                now,
            },
        )
}

fn run(w: &World, memory: &ReplacementMemory) -> ReplacementPlan {
    let previous = w.previous_false.then(|| {
        as_condition(&DesiredCondition::new(
            crate::api::CONDITION_REPLACEMENT_ALLOWED,
            false,
            reason::TOO_MANY_UNHEALTHY,
            "x",
        ))
    });
    plan_replacements(&ReplacementInputs {
        spec: &w.spec,
        paused: w.paused,
        instances: &w.instances,
        nodes: &w.nodes,
        memory,
        template_hash: CUR,
        reset_request: w.reset.as_deref(),
        previous_condition: previous.as_ref(),
        backoff: Backoff::default(),
        remediations: &[],
        would_repair: &[],
        now: w.now,
    })
}

/// The instances once a plan is applied: terminated ones start leaving, surges appear.
fn apply(instances: &[InstanceView], plan: &ReplacementPlan, now: Timestamp) -> Vec<InstanceView> {
    let mut after: Vec<InstanceView> = instances
        .iter()
        .cloned()
        .map(|mut i| {
            if plan.terminate.contains(&i.name) {
                i.being_deleted = true;
                i.termination_reason = Some("Unhealthy".into());
            }
            i
        })
        .collect();
    for (n, old) in plan.launch_replacements_for.iter().enumerate() {
        after.push(InstanceView {
            placement: Default::default(),
            repair: Default::default(),
            name: format!("new{n}"),
            ..replacing(pending("x"), old).tap(|i| i.created_at = now)
        });
    }
    after
}

fn counting(instances: &[InstanceView]) -> usize {
    by_name(instances)
        .values()
        .filter(|i| i.counts_toward_capacity())
        .count()
}

fn in_service_healthy(instances: &[InstanceView]) -> usize {
    by_name(instances)
        .values()
        .filter(|i| i.is_in_service_and_healthy() && !i.being_deleted)
        .count()
}

/// How many Instances (first of duplicate names) fail below their threshold: counting toward
/// capacity, not Unhealthy, not excluded, healthDetail Warning.
fn failing_below_threshold(instances: &[InstanceView]) -> usize {
    by_name(instances)
        .values()
        .filter(|i| {
            i.counts_toward_capacity()
                && !i.is_unhealthy()
                && !excluded(i)
                && i.detail == Some(HealthDetail::Warning)
        })
        .count()
}

/// Whether `old` has a surge replacement that is InService and Healthy (a completion).
fn has_ready_replacement(instances: &[InstanceView], old: &str) -> bool {
    instances.iter().any(|r| {
        r.replaces.as_deref() == Some(old)
            && r.name != old
            && r.counts_toward_capacity()
            && r.is_in_service_and_healthy()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn planner_invariants(w in any_world()) {
        let plan = run(&w, &w.memory);
        let limits = Limits::of(&w.spec);
        let index = by_name(&w.instances);

        // Actions name present, distinct candidates; never Standby, maintenance or Healthy.
        let mut acted = BTreeSet::new();
        for n in plan.terminate.iter().chain(&plan.launch_replacements_for) {
            prop_assert!(acted.insert(n.clone()), "{} acted on twice", n);
            let i = index.get(n.as_str());
            prop_assert!(i.is_some_and(|i| is_candidate(i)), "{} is not a candidate", n);
            let i = i.unwrap();
            prop_assert!(!i.standby && !i.maintenance && i.state != LifecycleState::Standby);
            prop_assert!(i.is_unhealthy());
        }

        // A blocking condition means no action; each block has its reason.
        if plan.condition.status == "False" {
            prop_assert!(plan.terminate.is_empty() && plan.launch_replacements_for.is_empty());
        }
        let suspended = [Process::HealthCheck, Process::ReplaceUnhealthy, Process::Terminate, Process::Launch]
            .iter().any(|p| w.spec.is_suspended(*p));
        if w.paused {
            prop_assert_eq!(plan.condition.reason.as_str(), reason::PAUSED);
        } else if suspended {
            prop_assert_eq!(plan.condition.reason.as_str(), reason::SUSPENDED);
        } else if plan.memory.consecutive_failures >= limits.max_consecutive_failures {
            prop_assert_eq!(plan.condition.reason.as_str(), reason::KEEP_FAILING);
        } else if limits.max_unhealthy.is_some_and(|m| {
            // Without Nodes or probes: the candidates and those failing below their threshold.
            (plan.unhealthy.len() + failing_below_threshold(&w.instances)) as i64 > i64::from(m)
        }) {
            prop_assert_eq!(plan.condition.reason.as_str(), reason::TOO_MANY_UNHEALTHY);
            if plan.unhealthy.len() <= 20 {
                for n in &plan.unhealthy {
                    prop_assert!(plan.condition.message.contains(n.as_str()));
                }
            }
        } else {
            prop_assert_eq!(plan.condition.status, "True");
        }

        // In flight: never pushed above maxInFlight by new replacements.
        let after = apply(&w.instances, &plan, w.now);
        let before_units = in_flight(&w.instances);
        let after_units = in_flight(&after);
        prop_assert_eq!(after_units, plan.in_flight);
        prop_assert!(
            after_units <= before_units.max(limits.max_in_flight.max(0) as usize),
            "in flight {} -> {} with maxInFlight {}", before_units, after_units, limits.max_in_flight
        );

        // InService+Healthy is never lowered.
        prop_assert_eq!(in_service_healthy(&after), in_service_healthy(&w.instances));

        // Never more than maxSize + surge count toward capacity (unless already so).
        let (cb, ca) = (counting(&w.instances), counting(&after));
        prop_assert!(ca <= cb.max(limits.max_with_surge.max(0) as usize));
        if w.spec.replacement.strategy == ReplacementStrategy::TerminateThenLaunch
            && limits.terminate_then_launch_room > 0
        {
            prop_assert!(plan.launch_replacements_for.is_empty());
        }

        // New starts: InService non-surge candidates terminated without a ready replacement.
        let new_starts: Vec<&String> = plan.terminate.iter()
            .filter(|n| !has_ready_replacement(&w.instances, n))
            .chain(&plan.launch_replacements_for)
            .collect();
        let ttl_holes: Vec<&&String> = new_starts.iter()
            .filter(|n| {
                let i = index[n.as_str()];
                i.state == LifecycleState::InService && !is_surge(i, &index)
                    && !plan.launch_replacements_for.contains(n)
            })
            .collect();
        if !ttl_holes.is_empty() {
            prop_assert!(after_units as i32 <= limits.terminate_then_launch_room);
            prop_assert_eq!(w.spec.replacement.strategy, ReplacementStrategy::TerminateThenLaunch);
        }
        // LaunchBeforeTerminate never takes an InService instance out without a ready
        // replacement (unless it is itself a failed surge).
        if w.spec.replacement.strategy == ReplacementStrategy::LaunchBeforeTerminate {
            for n in &plan.terminate {
                let i = index[n.as_str()];
                if i.state == LifecycleState::InService {
                    prop_assert!(has_ready_replacement(&w.instances, n) || is_surge(i, &index));
                }
            }
        }

        // Backoff: after failures, one start at most, and none before the backoff ends.
        let failures = plan.memory.consecutive_failures;
        if failures > 0 {
            prop_assert!(new_starts.len() <= 1);
            if let Some(lrt) = w.memory.last_replacement_time {
                let end = lrt.checked_add(SignedDuration::try_from(Backoff::default().delay(failures)).unwrap());
                if end.is_err() || end.is_ok_and(|e| e > w.now) {
                    prop_assert!(new_starts.is_empty(), "started during backoff");
                }
            }
        }

        // Memory stays sane: judged names present and distinct; failures never negative and
        // grow at most by the replacements judged now.
        let judged: BTreeSet<&String> = plan.memory.judged.iter().collect();
        prop_assert_eq!(judged.len(), plan.memory.judged.len());
        prop_assert!(plan.memory.judged.iter().all(|n| index.contains_key(n.as_str())));
        prop_assert!(plan.memory.consecutive_failures >= 0);
        let newly = plan.memory.judged.iter().filter(|n| !w.memory.judged.contains(n)).count();
        prop_assert!(i64::from(plan.memory.consecutive_failures) <= i64::from(w.memory.consecutive_failures.max(0)) + newly as i64);
        prop_assert!(plan.memory.recent_failures.len() <= MAX_RECENT_FAILURES);
        if !new_starts.is_empty() {
            prop_assert_eq!(plan.memory.last_replacement_time, Some(w.now));
        }
    }

    #[test]
    fn the_breaker_sees_nodes_and_failures_still_spreading(
        w in any_world(),
        nodes in any_nodes(),
        interval in 1i32..20,
        probe in any::<bool>(),
    ) {
        let mut w = w;
        w.nodes = nodes;
        if probe {
            w.spec.health_check.probe = Some(
                serde_json::from_value(serde_json::json!({
                    "http": { "port": 8080, "path": "/" },
                    "intervalSeconds": interval,
                }))
                .unwrap(),
            );
        }
        let plan = run(&w, &w.memory);
        let limits = Limits::of(&w.spec);
        let index = by_name(&w.instances);
        let acted: Vec<&String> = plan.terminate.iter().chain(&plan.launch_replacements_for).collect();
        let down = |i: &InstanceView| {
            i.placement.node.as_deref().is_some_and(|n| w.nodes.iter().any(|v| v.name == n && !v.ready))
        };

        // With every Node NotReady nothing is ever terminated nor launched for replacement.
        if !w.nodes.is_empty() && w.nodes.iter().all(|n| !n.ready) {
            prop_assert!(acted.is_empty(), "every Node NotReady, yet {:?}", acted);
            if !plan.unhealthy.is_empty() && plan.condition.status == "False" {
                prop_assert!(
                    [reason::PAUSED, reason::SUSPENDED, reason::KEEP_FAILING, reason::TOO_MANY_UNHEALTHY]
                        .contains(&plan.condition.reason.as_str())
                );
            }
        }

        // A fresh probe verdict is never acted on while it settles (when the breaker can trip).
        let settle = w.spec.health_check.probe.as_ref()
            .filter(|_| limits.max_unhealthy.is_some())
            .map(|p| SignedDuration::from_secs(i64::from(p.interval_seconds.max(1))));
        let settling = |i: &InstanceView| {
            settle.is_some_and(|d| {
                i.health_reason.as_deref() == Some("ProbeFailed")
                    && i.health_since.and_then(|t| t.checked_add(d).ok()).is_some_and(|end| end > w.now)
            })
        };
        // Nor an Instance on a Node that went down moments ago.
        let node_settling = |i: &InstanceView| {
            i.placement.node.as_deref().is_some_and(|n| {
                w.nodes.iter().any(|v| {
                    v.name == n
                        && !v.ready
                        && v.since.and_then(|t| t.checked_add(breaker::NODE_SETTLE).ok()).is_some_and(|end| end > w.now)
                })
            })
        };
        // Nor, just after the breaker held, an Instance on a down Node while another Node
        // (in view: an Instance of the group runs there) came back moments ago.
        let partition_ending = w.previous_false
            && w.nodes.iter().any(|v| {
                v.ready
                    && v.since.and_then(|t| t.checked_add(breaker::NODE_SETTLE).ok()).is_some_and(|end| end > w.now)
                    && w.instances.iter().any(|i| {
                        i.counts_toward_capacity() && i.placement.node.as_deref() == Some(v.name.as_str())
                    })
            });
        for n in &acted {
            let i = index[n.as_str()];
            prop_assert!(!settling(i) || down(i), "{} acted on while its verdict settles", n);
            prop_assert!(!node_settling(i), "{} acted on while its Node's failure settles", n);
            prop_assert!(!(partition_ending && down(i)), "{} acted on while a partition ends", n);
        }

        // What counts in any case — candidates on Ready or unknown Nodes (settling or not),
        // except a Node verdict that Node's recovery has outdated (it waits for the
        // Instance's re-evaluation, neither counted nor replaced), and those failing below
        // their threshold — over maxUnhealthy: nothing is acted on.
        let counted = index
            .values()
            .filter(|i| is_candidate(i) && !down(i) && !node_verdict_outdated(i, &w.nodes))
            .count()
            + failing_below_threshold(&w.instances);
        if limits.max_unhealthy.is_some_and(|m| counted as i64 > i64::from(m)) {
            prop_assert!(acted.is_empty(), "{} count, maxUnhealthy {:?}, yet {:?}", counted, limits.max_unhealthy, acted);
        }
    }

    #[test]
    fn planning_again_from_the_written_memory_counts_nothing_twice(w in any_world()) {
        let first = run(&w, &w.memory);
        let second = run(&w, &first.memory);
        prop_assert_eq!(second.memory.consecutive_failures, first.memory.consecutive_failures);
        prop_assert_eq!(&second.memory.judged, &first.memory.judged);
        prop_assert_eq!(&second.memory.recent_failures, &first.memory.recent_failures);
        prop_assert!(!second.events.iter().any(|e| e.reason == reason::REPLACEMENT_FAILED || e.reason == reason::REPLACEMENT_SUCCEEDED || e.reason == reason::FAILURES_RESET));
    }
}

// ---------------------------------------------------------------------------------------------
// The planner's steps, one by one
// ---------------------------------------------------------------------------------------------

mod breaker_step;
mod budget_step;
mod judge_step;
mod repair_step;
mod strategy_step;
