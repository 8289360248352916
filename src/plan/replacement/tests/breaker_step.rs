//! Step 2, the circuit breaker and the `ReplacementAllowed` condition: [`breaker::breaker`]
//! and its parts.

use super::*;
use breaker::{
    Gate, allowed_condition, condition_event, keeps_failing, paused, suspended, too_many_unhealthy,
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
        memory,
        template_hash: CUR,
        reset_request: None,
        previous_condition: None,
        backoff: Backoff::default(),
        remediations: &[],
        would_repair: &[],
        now: t(1000),
    };
    breaker::breaker(&inputs, &Limits::of(s), memory, unhealthy)
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
    assert_eq!(too_many_unhealthy(&s, &limits, &two), None);
    let c = too_many_unhealthy(&s, &limits, &three).unwrap();
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
    assert!(too_many_unhealthy(&s, &Limits::of(&s), &three).is_some());
    let s = with_max_unhealthy(IntOrString::String("100%".into()));
    let many = names_of(&["a", "b", "c", "d", "e", "f", "g"]);
    assert_eq!(too_many_unhealthy(&s, &Limits::of(&s), &many), None);
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
