//! Step 4, which Instances terminate and which get a surge replacement first:
//! [`strategy::strategy`] and its parts.

use super::*;
use budget::Budget;
use strategy::{How, Moves, awaiting, how, ordered_candidates, surge_for_in_service};

fn room(starts: usize, terminate_then_launch: usize, surges: usize) -> Budget {
    Budget {
        starts,
        terminate_then_launch,
        surges,
        backoff_until: None,
        backing_off: false,
        spacing: None,
    }
}

fn limits_with(min_healthy: i32) -> Limits {
    let mut s = spec(4, 6);
    s.replacement.min_healthy_percentage = min_healthy;
    Limits::of(&s)
}

fn run(
    instances: &[InstanceView],
    strategy: ReplacementStrategy,
    limits: &Limits,
    budget: &Budget,
) -> Moves {
    strategy::strategy(
        &by_name(instances),
        strategy,
        limits,
        budget,
        &BTreeSet::new(),
    )
}

#[test]
fn surge_first_with_launch_before_terminate_or_without_room_for_a_hole() {
    assert!(!surge_for_in_service(
        ReplacementStrategy::TerminateThenLaunch,
        &limits_with(0)
    ));
    assert!(surge_for_in_service(
        ReplacementStrategy::TerminateThenLaunch,
        &limits_with(100)
    ));
    assert!(surge_for_in_service(
        ReplacementStrategy::LaunchBeforeTerminate,
        &limits_with(0)
    ));
}

#[test]
fn how_each_candidate_is_replaced() {
    let instances = vec![
        sick("a"),
        replacing(sick("s"), "a"),
        sick("p").tap(|p| p.state = LifecycleState::Pending),
    ];
    let index = by_name(&instances);
    assert_eq!(how(index["s"], &index, false), How::TerminateSurplus);
    assert_eq!(how(index["p"], &index, true), How::TerminateNotInService);
    assert_eq!(how(index["a"], &index, true), How::LaunchFirst);
    assert_eq!(how(index["a"], &index, false), How::TerminateThenLaunch);
}

#[test]
fn awaiting_finds_ready_and_starting_replacements() {
    let instances = vec![
        created(sick("old2"), 2),
        created(sick("old1"), 1),
        sick("old3"),
        replacing(inst("r2"), "old2"),
        replacing(inst("r1"), "old1"),
        replacing(pending("r3"), "old3"),
        replacing(sick("r4"), "old3"),
        replacing(inst("self"), "self"),
    ];
    let index = by_name(&instances);
    let a = awaiting(&index);
    let ready: Vec<(&str, &str)> = a
        .ready
        .iter()
        .map(|(o, r)| (o.name.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(ready, vec![("old1", "r1"), ("old2", "r2")]);
    assert_eq!(a.starting.into_iter().collect::<Vec<_>>(), vec!["old3"]);
}

#[test]
fn candidates_cheapest_first() {
    let instances = vec![
        created(sick("young"), 5),
        created(sick("old"), 1),
        created(sick("pending"), 9).tap(|p| p.state = LifecycleState::Pending),
        created(replacing(sick("surge"), "old"), 20),
        sick("handled"),
        sick("starting"),
        inst("fine"),
    ];
    let index = by_name(&instances);
    let handled = BTreeSet::from(["handled".to_string()]);
    let starting = BTreeSet::from(["starting"]);
    let order: Vec<&str> = ordered_candidates(&index, &handled, &starting, &BTreeSet::new())
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(order, vec!["surge", "pending", "old", "young"]);
}

#[test]
fn ready_replacements_complete_even_without_budget() {
    let instances = vec![sick("a"), replacing(inst("r"), "a"), sick("b")];
    let moves = run(
        &instances,
        ReplacementStrategy::LaunchBeforeTerminate,
        &limits_with(0),
        &room(0, 0, 0),
    );
    assert_eq!(moves.terminate, vec!["a"]);
    assert!(moves.launch.is_empty());
    assert_eq!((moves.started, moves.waiting), (0, 1));
    assert_eq!(
        moves.events.iter().map(|e| e.reason).collect::<Vec<_>>(),
        vec![reason::REPLACEMENT_READY]
    );
}

#[test]
fn starts_stop_at_the_budget() {
    let instances = vec![
        created(sick("a"), 1),
        created(sick("b"), 2),
        created(sick("c"), 3),
    ];
    let moves = run(
        &instances,
        ReplacementStrategy::TerminateThenLaunch,
        &limits_with(0),
        &room(2, 9, 9),
    );
    assert_eq!(moves.terminate, vec!["a", "b"]);
    assert_eq!((moves.started, moves.waiting), (2, 1));
    assert_eq!(
        moves.events.iter().map(|e| e.reason).collect::<Vec<_>>(),
        vec![reason::REPLACING, reason::REPLACING]
    );
    assert!(moves.events[0].message.contains("TerminateThenLaunch"));
}

#[test]
fn surges_stop_at_their_room_while_what_serves_nothing_still_goes() {
    let instances = vec![
        created(sick("a"), 1),
        created(sick("b"), 2),
        created(sick("p"), 3).tap(|p| p.state = LifecycleState::Pending),
    ];
    let moves = run(
        &instances,
        ReplacementStrategy::LaunchBeforeTerminate,
        &limits_with(0),
        &room(5, 0, 1),
    );
    assert_eq!(moves.terminate, vec!["p"]);
    assert_eq!(moves.launch, vec!["a"]);
    assert_eq!((moves.started, moves.waiting), (2, 1));
    assert!(moves.events[1].message.contains("LaunchBeforeTerminate"));
}

#[test]
fn every_start_uses_terminate_then_launch_room() {
    // One not-InService termination fills the only hole: the InService one waits.
    let instances = vec![
        created(sick("a"), 1),
        created(sick("p"), 3).tap(|p| p.state = LifecycleState::Pending),
    ];
    let moves = run(
        &instances,
        ReplacementStrategy::TerminateThenLaunch,
        &limits_with(0),
        &room(5, 1, 5),
    );
    assert_eq!(moves.terminate, vec!["p"]);
    assert_eq!((moves.started, moves.waiting), (1, 1));
}
