//! Step 2, the circuit breaker and the `ReplacementAllowed` condition: [`breaker::breaker`]
//! and its parts.

use super::*;
use breaker::{
    Gate, View, allowed_condition, condition_event, keeps_failing, paused, suspended,
    too_many_unhealthy,
};

fn names_of(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn with_max_unhealthy(value: IntOrString) -> ScalingGroupSpec {
    let mut s = spec(4, 6);
    s.replacement.max_unhealthy = value;
    s
}

fn gate(
    s: &ScalingGroupSpec,
    is_paused: bool,
    memory: &ReplacementMemory,
    unhealthy: &[String],
) -> Gate {
    let inputs = ReplacementInputs {
        spec: s,
        paused: is_paused,
        instances: &[],
        nodes: &[],
        memory,
        template_hash: CUR,
        reset_request: None,
        previous_condition: None,
        backoff: Backoff::default(),
        remediations: &[],
        would_repair: &[],
        now: t(1000),
    };
    breaker::breaker(&inputs, &Limits::of(s), memory, &View::plain(unhealthy))
}

fn stop_reason(g: &Gate) -> Option<&str> {
    match g {
        Gate::Stop(c) => Some(c.reason.as_str()),
        Gate::Proceed => None,
    }
}

#[test]
fn the_breaker_stops_in_order_of_precedence() {
    let mut s = with_max_unhealthy(IntOrString::Int(0));
    let unhealthy = names_of(&["a"]);
    let mut memory = ReplacementMemory {
        consecutive_failures: 3,
        ..Default::default()
    };
    s.suspended_processes = vec![Process::Launch];
    assert_eq!(
        stop_reason(&gate(&s, true, &memory, &unhealthy)),
        Some(reason::PAUSED)
    );
    assert_eq!(
        stop_reason(&gate(&s, false, &memory, &unhealthy)),
        Some(reason::SUSPENDED)
    );
    s.suspended_processes.clear();
    assert_eq!(
        stop_reason(&gate(&s, false, &memory, &unhealthy)),
        Some(reason::KEEP_FAILING)
    );
    memory.consecutive_failures = 2;
    assert_eq!(
        stop_reason(&gate(&s, false, &memory, &unhealthy)),
        Some(reason::TOO_MANY_UNHEALTHY)
    );
    assert_eq!(gate(&s, false, &memory, &[]), Gate::Proceed);
}

#[test]
fn paused_names_the_unhealthy_left_alone() {
    assert_eq!(paused(false, &names_of(&["a"])), None);
    let c = paused(true, &names_of(&["a", "b"])).unwrap();
    assert_eq!((c.status, c.reason.as_str()), ("False", reason::PAUSED));
    assert!(
        c.message
            .ends_with("2 Unhealthy instance(s) are not replaced: a, b"),
        "{}",
        c.message
    );
    let c = paused(true, &[]).unwrap();
    assert!(!c.message.contains("not replaced: "), "{}", c.message);
}

#[test]
fn suspended_names_the_processes_replacement_needs() {
    let mut s = spec(2, 2);
    assert_eq!(suspended(&s, &[]), None);
    s.suspended_processes = vec![Process::AddToService];
    assert_eq!(suspended(&s, &[]), None);
    s.suspended_processes = vec![Process::Launch, Process::Terminate];
    let c = suspended(&s, &[]).unwrap();
    assert!(
        c.message.starts_with(
            "Suspended process(es) Terminate, Launch: Unhealthy instances are not replaced"
        ),
        "{}",
        c.message
    );
    s.suspended_processes = vec![Process::HealthCheck];
    let c = suspended(&s, &[]).unwrap();
    assert!(
        c.message
            .contains("health verdicts are shown but not acted on"),
        "{}",
        c.message
    );
}

#[test]
fn keeps_failing_at_max_consecutive_failures() {
    let limits = Limits::of(&spec(2, 2));
    let mut memory = ReplacementMemory {
        consecutive_failures: 2,
        failing_template_hash: Some("0123456789abcdef".into()),
        recent_failures: names_of(&["r1", "r2", "r3"]),
        ..Default::default()
    };
    assert_eq!(keeps_failing(&limits, &memory, &[]), None);
    memory.consecutive_failures = 3;
    let c = keeps_failing(&limits, &memory, &[]).unwrap();
    assert_eq!(c.reason, reason::KEEP_FAILING);
    assert!(
        c.message
            .starts_with("3 replacements of template 0123456789ab in a row (r1, r2, r3)"),
        "{}",
        c.message
    );
}

#[test]
fn too_many_unhealthy_trips_above_the_limit_only() {
    let two = names_of(&["a", "b"]);
    let three = names_of(&["a", "b", "c"]);
    let s = with_max_unhealthy(IntOrString::Int(2));
    let limits = Limits::of(&s);
    assert_eq!(too_many_unhealthy(&s, &limits, &View::plain(&two)), None);
    let c = too_many_unhealthy(&s, &limits, &View::plain(&three)).unwrap();
    assert_eq!(
        (c.status, c.reason.as_str()),
        ("False", reason::TOO_MANY_UNHEALTHY)
    );
    assert!(
        c.message.starts_with(
            "3 instances are Unhealthy (a, b, c), more than maxUnhealthy 2 (maxUnhealthy: 2)"
        ),
        "{}",
        c.message
    );

    // 50% of 4 is 2; 100% never trips.
    let s = with_max_unhealthy(IntOrString::String("50%".into()));
    assert!(too_many_unhealthy(&s, &Limits::of(&s), &View::plain(&three)).is_some());
    let s = with_max_unhealthy(IntOrString::String("100%".into()));
    let many = names_of(&["a", "b", "c", "d", "e", "f", "g"]);
    assert_eq!(
        too_many_unhealthy(&s, &Limits::of(&s), &View::plain(&many)),
        None
    );
}

#[test]
fn allowed_condition_says_when_it_backs_off() {
    let limits = Limits::of(&spec(2, 2));
    let memory = ReplacementMemory {
        consecutive_failures: 1,
        ..Default::default()
    };
    let c = allowed_condition(&limits, &memory, &[], false, Some(t(5)));
    assert_eq!((c.status, c.reason.as_str()), ("True", reason::ALLOWED));
    assert_eq!(
        c.message,
        "Unhealthy instances are replaced (maxUnhealthy unlimited, maxInFlight 1)"
    );
    let c = allowed_condition(&limits, &memory, &names_of(&["a"]), true, Some(t(5)));
    assert_eq!((c.status, c.reason.as_str()), ("True", reason::BACKING_OFF));
    assert!(
        c.message.contains(&format!("waits until {}", t(5))),
        "{}",
        c.message
    );
    assert!(c.message.contains("Unhealthy: a"), "{}", c.message);
}

#[test]
fn condition_changes_are_announced_once() {
    let allowed = allowed_condition(
        &Limits::of(&spec(2, 2)),
        &ReplacementMemory::default(),
        &[],
        false,
        None,
    );
    let paused_ = paused(true, &[]).unwrap();
    let too_many = DesiredCondition::new(
        CONDITION_REPLACEMENT_ALLOWED,
        false,
        reason::TOO_MANY_UNHEALTHY,
        "3 instances",
    );

    // First condition: only a False one is announced.
    assert_eq!(condition_event(None, &allowed), None);
    let e = condition_event(None, &paused_).unwrap();
    assert_eq!((e.type_, e.reason), (EventType::Normal, reason::PAUSED));

    // Unchanged: nothing.
    assert_eq!(
        condition_event(Some(&as_condition(&paused_)), &paused_),
        None
    );

    // Same False reason with a new message: only the warnings are repeated.
    let paused_other = DesiredCondition::new(
        CONDITION_REPLACEMENT_ALLOWED,
        false,
        reason::PAUSED,
        "other",
    );
    assert_eq!(
        condition_event(Some(&as_condition(&paused_)), &paused_other),
        None
    );
    let too_many_more = DesiredCondition::new(
        CONDITION_REPLACEMENT_ALLOWED,
        false,
        reason::TOO_MANY_UNHEALTHY,
        "4 instances",
    );
    let e = condition_event(Some(&as_condition(&too_many)), &too_many_more).unwrap();
    assert_eq!(
        (e.type_, e.reason),
        (EventType::Warning, reason::TOO_MANY_UNHEALTHY)
    );

    // Back to True.
    let e = condition_event(Some(&as_condition(&too_many)), &allowed).unwrap();
    assert_eq!((e.type_, e.reason), (EventType::Normal, reason::ALLOWED));
    assert!(e.message.starts_with("Replacement resumes: "));
}

// ---------------------------------------------------------------------------------------------
// The breaker's view: Nodes, zones and a failure still spreading
// ---------------------------------------------------------------------------------------------

fn node(name: &str, zone: &str, ready: bool) -> NodeView {
    NodeView {
        name: name.into(),
        zone: Some(zone.into()),
        ready,
        since: Some(t(0)),
    }
}

/// `i` placed on Node `node` in zone `zone`.
fn on(mut i: InstanceView, node: &str, zone: &str) -> InstanceView {
    i.placement.node = Some(node.into());
    i.placement.zone = Some(zone.into());
    i
}

/// `i`, Unhealthy because its Node is NotReady.
fn node_down(mut i: InstanceView) -> InstanceView {
    i = sick(&i.name).tap(|s| s.placement = i.placement.clone());
    i.health_reason = Some("NodeNotReady".into());
    i.health_since = Some(t(990));
    i
}

/// `i`, Unhealthy by its probe since `since`.
fn probe_failed(i: InstanceView, since: Timestamp) -> InstanceView {
    let placement = i.placement.clone();
    let mut s = sick(&i.name);
    s.placement = placement;
    s.health_reason = Some("ProbeFailed".into());
    s.health_since = Some(since);
    s
}

/// `i`, failing below its threshold (healthDetail Warning).
fn failing(mut i: InstanceView) -> InstanceView {
    i.detail = Some(HealthDetail::Warning);
    i.health_reason = Some("FailingBelowThreshold".into());
    i
}

/// A group of `desired` with `maxUnhealthy: max_unhealthy`, `maxInFlight: in_flight` and an
/// HTTP probe every `interval` seconds.
fn probed(
    desired: i32,
    max_unhealthy: IntOrString,
    in_flight: i32,
    interval: i32,
) -> ScalingGroupSpec {
    let mut s = spec(desired, desired);
    s.replacement.max_unhealthy = max_unhealthy;
    s.replacement.max_in_flight = IntOrString::Int(in_flight);
    s.health_check.probe = Some(
        serde_json::from_value(serde_json::json!({
            "http": { "port": 8080, "path": "/" },
            "intervalSeconds": interval,
            "timeoutSeconds": 1,
            "healthyThreshold": 1,
            "unhealthyThreshold": 2,
        }))
        .unwrap(),
    );
    s
}

/// Six Instances, two on each of Nodes n1 (zone a), n2 (zone b), n3 (zone c).
fn spread() -> Vec<InstanceView> {
    let mut out = Vec::new();
    for (n, (node, zone)) in [("n1", "a"), ("n2", "b"), ("n3", "c")].iter().enumerate() {
        for k in 0..2 {
            out.push(created(
                on(inst(&format!("{zone}{k}")), node, zone),
                (n * 2 + k) as i64,
            ));
        }
    }
    out
}

fn three_nodes(ready: [bool; 3]) -> Vec<NodeView> {
    vec![
        node("n1", "a", ready[0]),
        node("n2", "b", ready[1]),
        node("n3", "c", ready[2]),
    ]
}

#[test]
fn a_local_node_failure_beyond_max_unhealthy_is_replaced_within_max_in_flight() {
    // (1) n1 goes NotReady: its two Instances are Unhealthy, more than maxUnhealthy 1; the
    // cause is known and local (two Ready Nodes of three), so they are replaced, one at a time.
    let mut instances = spread();
    instances[0] = node_down(instances[0].clone());
    instances[1] = node_down(instances[1].clone());
    let mut case = Case::new(probed(6, IntOrString::Int(1), 1, 1), instances);
    case.nodes = three_nodes([false, true, true]);
    let plan = case.plan();
    assert_eq!(
        plan.terminate,
        vec!["a0"],
        "the oldest first, within maxInFlight 1"
    );
    assert_eq!(
        (plan.condition.status, plan.condition.reason.as_str()),
        ("True", reason::ALLOWED)
    );
    assert_eq!(plan.unhealthy, vec!["a0", "a1"]);

    case.spec.replacement.max_in_flight = IntOrString::Int(2);
    assert_eq!(case.plan().terminate, vec!["a0", "a1"]);

    // Not on the down Node: an Instance Unhealthy for a reason of its own still counts.
    case.instances[2] = probe_failed(case.instances[2].clone(), t(0));
    assert_eq!(case.plan().terminate, vec!["a0", "a1"], "b0 waits for room");
    case.instances[4] = probe_failed(case.instances[4].clone(), t(0));
    let plan = case.plan();
    assert!(plan.terminate.is_empty(), "{:?}", plan.terminate);
    assert_eq!(plan.condition.reason, reason::TOO_MANY_UNHEALTHY);
    assert!(
        plan.condition
            .message
            .starts_with("2 instances are Unhealthy (b0, c0), more than maxUnhealthy 1"),
        "{}",
        plan.condition.message
    );
    assert!(
        plan.condition
            .message
            .contains("by zone and node: zone a: Node n1 (NotReady): a0, a1; zone b: Node n2: b0; zone c: Node n3: c0"),
        "{}",
        plan.condition.message
    );
}

#[test]
fn every_node_not_ready_replaces_nothing_whatever_max_unhealthy_says() {
    // (2) What a control-plane partition looks like: every Node NotReady at once.
    let instances: Vec<InstanceView> = spread().into_iter().map(node_down).collect();
    for max in [IntOrString::Int(1), IntOrString::String("100%".into())] {
        let mut case = Case::new(probed(6, max, 6, 1), instances.clone());
        case.nodes = three_nodes([false, false, false]);
        let plan = case.plan();
        assert!(plan.terminate.is_empty() && plan.launch_replacements_for.is_empty());
        assert_eq!(
            (plan.condition.status, plan.condition.reason.as_str()),
            ("False", reason::TOO_MANY_UNHEALTHY)
        );
        let m = &plan.condition.message;
        assert!(
            m.starts_with("every Node in view is NotReady (3 of 3: n1, n2, n3): what a control plane cut off from its Nodes looks like"),
            "{m}"
        );
        assert!(m.contains("zone b: Node n2 (NotReady): b0, b1"), "{m}");
    }
    // Other Nodes in other zones do not matter: the group's zones are the view.
    let mut case = Case::new(probed(6, IntOrString::Int(1), 6, 1), instances);
    case.nodes = three_nodes([false, false, false]);
    case.nodes.push(node("elsewhere", "z", true));
    assert!(case.plan().terminate.is_empty());
}

#[test]
fn a_node_failure_that_is_not_local_counts_like_any_other() {
    // Two of three Nodes NotReady in one zone: not local.
    let mut instances = spread();
    for i in instances.iter_mut() {
        i.placement.zone = Some("a".into());
    }
    for i in instances.iter_mut().take(4) {
        *i = node_down(i.clone());
    }
    let mut case = Case::new(probed(6, IntOrString::Int(1), 6, 1), instances);
    case.nodes = vec![
        node("n1", "a", false),
        node("n2", "a", false),
        node("n3", "a", true),
    ];
    let plan = case.plan();
    assert!(plan.terminate.is_empty());
    assert_eq!(plan.condition.reason, reason::TOO_MANY_UNHEALTHY);
    assert!(
        plan.condition.message.contains("is no local failure"),
        "{}",
        plan.condition.message
    );
    // maxUnhealthy 4 lets them through.
    case.spec.replacement.max_unhealthy = IntOrString::Int(4);
    assert_eq!(case.plan().terminate.len(), 4);

    // A zone outage is local: zone a's three Nodes down (more than half of the five), zones b
    // and c fine.
    let mut instances = spread();
    instances[2].placement = crate::plan::Placement {
        node: Some("n1b".into()),
        zone: Some("a".into()),
        revision: None,
    };
    for i in instances.iter_mut().take(3) {
        *i = node_down(i.clone());
    }
    let mut case = Case::new(probed(6, IntOrString::Int(1), 6, 1), instances);
    case.nodes = vec![
        node("n1", "a", false),
        node("n1b", "a", false),
        node("n1c", "a", false),
        node("n2", "b", true),
        node("n3", "c", true),
    ];
    assert_eq!(case.plan().terminate, vec!["a0", "a1", "b0"]);
}

#[test]
fn failures_spread_over_ready_nodes_beyond_max_unhealthy_replace_nothing() {
    // (3) Failures on healthy Nodes, one revision, more than maxUnhealthy.
    let mut instances = spread();
    instances[0] = probe_failed(instances[0].clone(), t(0));
    instances[3] = probe_failed(instances[3].clone(), t(0));
    let mut case = Case::new(probed(6, IntOrString::Int(1), 6, 1), instances);
    case.nodes = three_nodes([true, true, true]);
    let plan = case.plan();
    assert!(plan.terminate.is_empty());
    assert_eq!(plan.condition.reason, reason::TOO_MANY_UNHEALTHY);
    assert!(
        plan.condition
            .message
            .ends_with("by zone and node: zone a: Node n1: a0; zone b: Node n2: b1"),
        "{}",
        plan.condition.message
    );
}

#[test]
fn instances_failing_below_their_threshold_count() {
    // (4) with unhealthyThreshold > 1: the first verdict is in, the others fail below it.
    let mut instances: Vec<InstanceView> = spread().into_iter().take(4).map(failing).collect();
    instances[0] = probe_failed(spread()[0].clone(), t(0));
    let mut case = Case::new(probed(4, IntOrString::Int(1), 4, 1), instances);
    case.nodes = three_nodes([true, true, true]);
    let plan = case.plan();
    assert!(plan.terminate.is_empty());
    assert_eq!(plan.condition.reason, reason::TOO_MANY_UNHEALTHY);
    let m = &plan.condition.message;
    assert!(
        m.starts_with(
            "4 instances are Unhealthy or failing (a0, a1, b0, b1), more than maxUnhealthy 1"
        ),
        "{m}"
    );
    assert!(
        m.contains("zone a: Node n1: a0, a1 (failing below its threshold); zone b: Node n2: b0 (failing below its threshold)"),
        "{m}"
    );
    // Standby and maintenance do not count, failing or not.
    for i in case.instances.iter_mut().skip(1) {
        i.maintenance = true;
    }
    assert_eq!(case.plan().terminate, vec!["a0"]);
}

#[test]
fn a_fresh_probe_verdict_settles_for_one_probe_interval() {
    // (4) with unhealthyThreshold 1: the first verdict is in, the others are not probed yet.
    let now = t(1000);
    let since = now.checked_sub(SignedDuration::from_millis(400)).unwrap();
    let mut instances: Vec<InstanceView> = spread().into_iter().take(4).collect();
    instances[0] = probe_failed(instances[0].clone(), since);
    let mut case = Case::new(probed(4, IntOrString::Int(1), 4, 1), instances);
    case.nodes = three_nodes([true, true, true]);
    let plan = case.plan();
    assert!(plan.terminate.is_empty(), "settling: not replaced yet");
    assert_eq!(plan.condition.status, "True", "nothing trips yet");
    assert_eq!(plan.requeue_after, Some(Duration::from_millis(600)));
    assert_eq!(plan.unhealthy, vec!["a0"]);

    // The rest of the failure arrives within the interval: seen as one.
    for k in 1..4 {
        case.instances[k] = probe_failed(case.instances[k].clone(), now);
    }
    let plan = case.plan();
    assert!(plan.terminate.is_empty());
    assert_eq!(plan.condition.reason, reason::TOO_MANY_UNHEALTHY);
    assert!(
        plan.condition
            .message
            .contains("Node n1: a0, a1; zone b: Node n2: b0, b1"),
        "{}",
        plan.condition.message
    );
    // Once they have settled nothing changes: the condition is not rewritten.
    let settled = {
        let mut later = Case::new(case.spec.clone(), case.instances.clone());
        later.nodes = case.nodes.clone();
        later.now = t(1010);
        later.plan()
    };
    assert_eq!(settled.condition, plan.condition);
    assert!(settled.terminate.is_empty());

    // A lone failure: replaced once it has settled.
    let mut case = Case::new(
        probed(4, IntOrString::Int(1), 4, 1),
        spread().into_iter().take(4).collect(),
    );
    case.instances[0] = probe_failed(case.instances[0].clone(), since);
    case.now = since.checked_add(SignedDuration::from_secs(1)).unwrap();
    assert_eq!(case.plan().terminate, vec!["a0"]);
}

/// The `ReplacementAllowed` condition the group's status shows: `False`/`TooManyUnhealthy`
/// (the breaker holds) or `True`, since `since`.
fn tripped(status: &str, since: Timestamp) -> Condition {
    Condition {
        type_: crate::api::CONDITION_REPLACEMENT_ALLOWED.into(),
        status: status.into(),
        reason: if status == "False" {
            reason::TOO_MANY_UNHEALTHY.into()
        } else {
            reason::ALLOWED.into()
        },
        message: String::new(),
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(since),
        observed_generation: None,
    }
}

#[test]
fn a_recovery_still_arriving_settles_for_one_probe_interval_plus_timeout() {
    // Found by tests/chaos.rs (probe blackout): a mass failure ends, three of four targets
    // have recovered, the fourth (Unhealthy since the blackout) recovers up to one interval
    // plus the probe timeout later. The breaker no longer trips (1 <= maxUnhealthy 1), yet
    // the last one must not be replaced in that moment.
    let now = t(1000);
    let recovered = now.checked_sub(SignedDuration::from_millis(500)).unwrap();
    let mut instances: Vec<InstanceView> = spread().into_iter().take(4).collect();
    for i in instances.iter_mut().skip(1) {
        i.health_since = Some(recovered);
    }
    instances[0] = probe_failed(instances[0].clone(), t(900));
    // interval 1 s, timeout 1 s: settles until 2 s after the latest recovery.
    let mut case = Case::new(probed(4, IntOrString::Int(1), 4, 1), instances);
    case.nodes = three_nodes([true, true, true]);
    // The breaker held until this step (the blackout).
    case.previous = Some(tripped("False", t(900)));
    let plan = case.plan();
    assert!(plan.terminate.is_empty(), "a recovery may still arrive");
    assert_eq!(plan.condition.status, "True", "nothing trips");
    assert_eq!(plan.requeue_after, Some(Duration::from_millis(1500)));
    // No recovery in sight: replaced.
    case.now = now.checked_add(SignedDuration::from_millis(1500)).unwrap();
    assert_eq!(case.plan().terminate, vec!["a0"]);
    // Let go half a second ago: still settling.
    case.now = now;
    case.previous = Some(tripped("True", recovered));
    assert!(case.plan().terminate.is_empty(), "the breaker just let go");
    // A breaker that has not held lately (flaky members of a healthy group recovering now
    // and then): a dead Instance is replaced at once, never held by their recoveries.
    case.previous = Some(tripped("True", t(0)));
    assert_eq!(
        case.plan().terminate,
        vec!["a0"],
        "not held by others' flapping"
    );
    case.previous = None;
    assert_eq!(case.plan().terminate, vec!["a0"]);
    case.previous = Some(tripped("False", t(900)));
    // A marked-Unhealthy Instance does not wait for the probes of others.
    case.instances[0].health_reason = Some("MarkedUnhealthy".into());
    assert_eq!(case.plan().terminate, vec!["a0"]);
    // Launches are no recoveries: Instances Healthy since before they went in service (a
    // group that keeps launching) do not hold a probe failure.
    case.instances[0].health_reason = Some("ProbeFailed".into());
    for i in case.instances.iter_mut().skip(1) {
        i.in_service_since = Some(
            recovered
                .checked_add(SignedDuration::from_millis(100))
                .unwrap(),
        );
    }
    assert_eq!(case.plan().terminate, vec!["a0"]);
}

#[test]
fn settling_is_only_for_probe_verdicts_and_a_breaker_that_can_trip() {
    let now = t(1000);
    let fresh = |mut i: InstanceView, reason_: &str| {
        i = probe_failed(i, now);
        i.health_reason = Some(reason_.into());
        i
    };
    // A Pod gone, a manual mark, a Node NotReady: acted on at once.
    for why in [
        "PodGone",
        "PodDeleted",
        "MarkedUnhealthy",
        "PodFailed",
        "NodeNotReady",
    ] {
        let mut instances: Vec<InstanceView> = spread();
        instances[0] = fresh(instances[0].clone(), why);
        let mut case = Case::new(probed(6, IntOrString::Int(1), 1, 10), instances);
        // (A NodeNotReady verdict stands while its Node is NotReady; on a Ready Node it is
        // outdated and waits for the Instance's re-evaluation.)
        case.nodes = three_nodes([why != "NodeNotReady", true, true]);
        assert_eq!(case.plan().terminate, vec!["a0"], "{why}");
    }
    // A probe verdict without a breaker that can trip (maxUnhealthy 100%): at once.
    let mut instances: Vec<InstanceView> = spread();
    instances[0] = fresh(instances[0].clone(), "ProbeFailed");
    let mut case = Case::new(
        probed(6, IntOrString::String("100%".into()), 1, 10),
        instances,
    );
    assert_eq!(case.plan().terminate, vec!["a0"]);
    // With one: after the interval.
    case.spec.replacement.max_unhealthy = IntOrString::Int(1);
    assert!(case.plan().terminate.is_empty());
    assert_eq!(case.plan().requeue_after, Some(Duration::from_secs(10)));
    // Without a probe there is nothing to settle.
    case.spec.health_check.probe = None;
    assert_eq!(case.plan().terminate, vec!["a0"]);
}

#[test]
fn the_view_places_members_by_zone_and_node() {
    let mut instances = spread();
    instances[0] = node_down(instances[0].clone());
    instances[5] = failing(instances[5].clone());
    let mut loose = sick("z");
    loose.placement.node = None;
    instances.push(loose);
    let s = probed(7, IntOrString::Int(0), 1, 1);
    let limits = Limits::of(&s);
    let nodes = three_nodes([false, true, true]);
    let index = by_name(&instances);
    let unhealthy: Vec<String> = index
        .values()
        .filter(|i| is_candidate(i))
        .map(|i| i.name.clone())
        .collect();
    let memory = ReplacementMemory::default();
    let inputs = ReplacementInputs {
        spec: &s,
        paused: false,
        instances: &instances,
        nodes: &nodes,
        memory: &memory,
        template_hash: CUR,
        reset_request: None,
        previous_condition: None,
        backoff: Backoff::default(),
        remediations: &[],
        would_repair: &[],
        now: t(1000),
    };
    let view = View::of(&inputs, &limits, &index, &unhealthy);
    assert_eq!(view.nodes.total, 3);
    assert_eq!(view.nodes.down, vec!["n1"]);
    assert!(view.nodes.local());
    let standings: Vec<(&str, breaker::Standing)> = view
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.standing))
        .collect();
    assert_eq!(
        standings,
        vec![
            ("a0", breaker::Standing::NodeDown),
            ("c1", breaker::Standing::Failing),
            ("z", breaker::Standing::Unhealthy),
        ]
    );
    assert_eq!(
        breaker::by_place(&view),
        "zone a: Node n1 (NotReady): a0; zone c: Node n3: c1 (failing below its threshold); no zone: no Node: z"
    );
}

#[test]
fn a_partition_ending_node_by_node_settles_before_the_nodes_still_down_are_replaced() {
    // Found by tests/breaker.rs without the reconcile debounce: every Node was NotReady (the
    // breaker held), then they came back one by one. The first Node back made the Nodes still
    // down, down for long, look like a local failure, and their Instances were replaced in
    // the milliseconds before their Nodes came back too.
    let instances: Vec<InstanceView> = spread().into_iter().map(node_down).collect();
    let mut case = Case::new(
        probed(6, IntOrString::String("100%".into()), 6, 1),
        instances,
    );
    case.nodes = three_nodes([false, false, false]);
    case.previous = Some(tripped("False", t(901)));
    let plan = case.plan();
    assert!(plan.terminate.is_empty(), "a partition");
    assert_eq!(plan.condition.status, "False");

    // n1 came back a second ago; n2 and n3 (two zones of three) are still down: not a local
    // failure, counted, and not replaced while the rest may be coming back.
    case.nodes[0].ready = true;
    case.nodes[0].since = Some(t(999));
    let plan = case.plan();
    assert!(plan.terminate.is_empty(), "{plan:?}");
    assert_eq!(plan.condition.status, "True", "{}", plan.condition.message);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(9)));

    // Counted meanwhile (two of three Nodes down is no local failure): with maxUnhealthy 1
    // the breaker holds.
    case.spec.replacement.max_unhealthy = IntOrString::Int(1);
    let plan = case.plan();
    assert!(plan.terminate.is_empty());
    assert_eq!(plan.condition.status, "False", "{}", plan.condition.message);
    case.spec.replacement.max_unhealthy = IntOrString::String("100%".into());

    // n2 back too: n3's failure looks local now, and still settles.
    case.nodes[1].ready = true;
    case.nodes[1].since = Some(t(1000));
    let plan = case.plan();
    assert!(plan.terminate.is_empty(), "{plan:?}");
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(10)));
    // The breaker let go just now (its condition turned True): still settling.
    case.previous = Some(tripped("True", t(1000)));
    assert!(case.plan().terminate.is_empty());

    // n3 stays down past the settle time: a local failure, replaced.
    case.now = t(1010);
    assert_eq!(case.plan().terminate, vec!["c0", "c1"]);

    // The breaker let go when n1 came back (999) and n2 came back 6 s later (1005), within
    // NODE_SETTLE of that: n2's return holds n3 until 1015, whatever the time is now, and the
    // requeue says so.
    case.previous = Some(tripped("True", t(999)));
    case.nodes[1].since = Some(t(1005));
    case.now = t(1006);
    let plan = case.plan();
    assert!(plan.terminate.is_empty(), "{plan:?}");
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(9)));
    case.now = t(1012);
    assert!(case.plan().terminate.is_empty(), "held until 1015");
    case.now = t(1015);
    assert_eq!(case.plan().terminate, vec!["c0", "c1"]);
    // n2 back only at 1010, more than NODE_SETTLE after the breaker let go: it holds nothing,
    // and n1's return stopped holding at 1009.
    case.nodes[1].since = Some(t(1010));
    case.now = t(1011);
    assert_eq!(case.plan().terminate, vec!["c0", "c1"]);
    case.nodes[1].since = Some(t(1000));

    // Without a breaker that held lately, a Node back a moment ago (a flapping one) holds
    // nothing: the Node down for long is replaced at once.
    case.now = t(1000);
    case.previous = Some(tripped("True", t(0)));
    assert_eq!(case.plan().terminate, vec!["c0", "c1"]);
    case.previous = None;
    assert_eq!(case.plan().terminate, vec!["c0", "c1"]);
}

#[test]
fn a_node_failure_settles_before_its_instances_are_replaced() {
    // n1 went NotReady 4 s ago: its Instances wait (not counted), then are replaced.
    let mut instances = spread();
    instances[0] = node_down(instances[0].clone());
    instances[1] = node_down(instances[1].clone());
    let mut case = Case::new(probed(6, IntOrString::Int(1), 1, 1), instances);
    case.nodes = three_nodes([false, true, true]);
    case.nodes[0].since = Some(t(996));
    let plan = case.plan();
    assert!(plan.terminate.is_empty());
    assert_eq!(plan.condition.status, "True", "{}", plan.condition.message);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(6)));
    case.now = t(1006);
    assert_eq!(case.plan().terminate, vec!["a0"]);

    // A partition arriving Node by Node: n1 first, then the others within the settle time.
    case.now = t(1000);
    let mut all: Vec<InstanceView> = case.instances.iter().cloned().map(node_down).collect();
    all.truncate(6);
    case.instances = all;
    case.nodes = three_nodes([false, false, false]);
    for (n, node) in case.nodes.iter_mut().enumerate() {
        node.since = Some(t(996 + n as i64 * 2));
    }
    let plan = case.plan();
    assert!(plan.terminate.is_empty());
    assert!(
        plan.condition
            .message
            .starts_with("every Node in view is NotReady"),
        "{}",
        plan.condition.message
    );

    // Not local (two of three down in one zone) and fresh: counted and held.
    let mut case = Case::new(probed(6, IntOrString::Int(5), 6, 1), spread());
    for i in case.instances.iter_mut() {
        i.placement.zone = Some("a".into());
    }
    for i in case.instances.iter_mut().take(4) {
        *i = node_down(i.clone());
    }
    case.nodes = vec![
        node("n1", "a", false),
        node("n2", "a", false),
        node("n3", "a", true),
    ];
    case.nodes[1].since = Some(t(999));
    let plan = case.plan();
    assert_eq!(plan.terminate, vec!["a0", "a1"], "n1 settled, n2 not yet");
    case.spec.replacement.max_unhealthy = IntOrString::Int(3);
    let plan = case.plan();
    assert!(plan.terminate.is_empty());
    assert!(
        plan.condition
            .message
            .contains("Node n2 (NotReady): b0, b1"),
        "{}",
        plan.condition.message
    );
}

#[test]
fn a_node_verdict_the_ready_node_has_outdated_is_neither_replaced_nor_counted() {
    // Every Node came back at once; the group looks before its Instances were re-evaluated:
    // b and c still say NodeNotReady, on Nodes that are Ready again.
    let mut s = spec(4, 4);
    s.replacement.max_unhealthy = IntOrString::String("100%".into());
    let mut case = Case::new(
        s,
        vec![
            on(inst("a"), "n1", "z"),
            node_down(on(inst("b"), "n1", "z")),
            node_down(on(inst("c"), "n2", "z")),
            on(inst("d"), "n2", "z"),
        ],
    );
    case.nodes = vec![node("n1", "z", true), node("n2", "z", true)];
    let plan = case.plan();
    assert!(
        plan.terminate.is_empty() && plan.launch_replacements_for.is_empty(),
        "recovered Instances replaced: {plan:?}"
    );
    assert_eq!(plan.in_flight, 0);

    // While its Node is still down (a local failure: one of two), the same verdict stands.
    case.nodes = vec![node("n1", "z", true), node("n2", "z", false)];
    case.instances = vec![
        on(inst("a"), "n1", "z"),
        on(inst("b"), "n1", "z"),
        node_down(on(inst("c"), "n2", "z")),
        on(inst("d"), "n2", "z"),
    ];
    case.now = t(1000 + 60);
    let plan = case.plan();
    assert_eq!(plan.terminate, vec!["c"], "{plan:?}");

    // A verdict of the workload's own on a Ready Node is acted on as always.
    case.nodes = vec![node("n1", "z", true), node("n2", "z", true)];
    case.instances = vec![
        on(inst("a"), "n1", "z"),
        on(sick("b"), "n1", "z"),
        on(inst("c"), "n2", "z"),
        on(inst("d"), "n2", "z"),
    ];
    assert_eq!(case.plan().terminate, vec!["b"]);
}
