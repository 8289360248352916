//! Step 4 of the planner: which Instances start terminating and which get a surge
//! replacement first, within the budget.
//!
//! Ready surge replacements complete first: their old Instance leaves (completing a
//! replacement already in flight, so the budget does not apply). New replacements then start
//! cheapest first: failed surges (surplus, terminated without a replacement of their own), then
//! candidates that serve nothing (terminated at once, the capacity planner launches their
//! replacement), then InService candidates, oldest first, replaced TerminateThenLaunch or
//! LaunchBeforeTerminate.

use std::collections::BTreeSet;

use super::budget::Budget;
use super::{EventType, Index, Limits, PlannedEvent, is_candidate, is_surge, settled};
use crate::api::names::reason;
use crate::api::{LifecycleState, ReplacementStrategy};
use crate::plan::InstanceView;

/// What the strategy does now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Moves {
    /// Instances to start terminating, in order.
    pub terminate: Vec<String>,
    /// Instances for which a surge replacement is launched.
    pub launch: Vec<String>,
    /// `ReplacementReady` and `Replacing` Events, in order.
    pub events: Vec<PlannedEvent>,
    /// New replacements started (ready replacements completing do not count).
    pub started: usize,
    /// Candidates left waiting for room in the budget.
    pub waiting: usize,
}

/// How one candidate is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// A surge replacement that failed: surplus, terminated without a replacement of its own.
    TerminateSurplus,
    /// Not InService, so it serves nothing: terminated at once.
    TerminateNotInService,
    /// InService: a surge replacement is launched first; it terminates once that is ready.
    LaunchFirst,
    /// InService: terminated at once, its replacement is launched by the capacity planner.
    TerminateThenLaunch,
}

/// Whether InService candidates get a surge replacement first: with `LaunchBeforeTerminate`,
/// or when `minHealthyPercentage` leaves no room for a TerminateThenLaunch hole, as AWS does.
pub fn surge_for_in_service(strategy: ReplacementStrategy, limits: &Limits) -> bool {
    strategy == ReplacementStrategy::LaunchBeforeTerminate || limits.terminate_then_launch_room == 0
}

/// How candidate `c` is replaced (see [`How`]).
pub fn how(c: &InstanceView, index: &Index<'_>, surge_for_in_service: bool) -> How {
    if is_surge(c, index) {
        How::TerminateSurplus
    } else if c.state != LifecycleState::InService {
        How::TerminateNotInService
    } else if surge_for_in_service {
        How::LaunchFirst
    } else {
        How::TerminateThenLaunch
    }
}

/// Replacements whose outcome the old Instance awaits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Awaiting<'a> {
    /// `(old, replacement)` pairs whose replacement is InService and Healthy while the old
    /// Instance is still a candidate, oldest old Instance first: the old one leaves now.
    pub ready: Vec<(&'a InstanceView, &'a InstanceView)>,
    /// Old Instances whose replacement is still starting: not replaced again meanwhile.
    pub starting: BTreeSet<&'a str>,
}

/// The replacements (Instances annotated `autoheal.dev/replaces` that count toward capacity and
/// are not Unhealthy) that are ready, or still starting.
pub fn awaiting<'a>(index: &Index<'a>) -> Awaiting<'a> {
    let mut out = Awaiting::default();
    for r in index.values().copied() {
        let Some(old) = r.replaces.as_deref().and_then(|o| index.get(o).copied()) else {
            continue;
        };
        if !r.counts_toward_capacity() || r.is_unhealthy() || old.name == r.name {
            continue;
        }
        if !settled(r) {
            out.starting.insert(old.name.as_str());
        } else if r.is_in_service_and_healthy() && is_candidate(old) {
            out.ready.push((old, r));
        }
    }
    out.ready
        .sort_by(|a, b| (a.0.created_at, &a.0.name).cmp(&(b.0.created_at, &b.0.name)));
    out
}

/// The candidates to replace, cheapest first: failed surges, then those that serve nothing,
/// then the oldest. Leaves out the names in `handled`, `starting` and `held` (fresh probe
/// verdicts still settling, see [`super::breaker`]).
pub fn ordered_candidates<'a>(
    index: &Index<'a>,
    handled: &BTreeSet<String>,
    starting: &BTreeSet<&str>,
    held: &BTreeSet<String>,
) -> Vec<&'a InstanceView> {
    let mut candidates: Vec<&InstanceView> = index
        .values()
        .copied()
        .filter(|i| {
            is_candidate(i)
                && !handled.contains(&i.name)
                && !starting.contains(i.name.as_str())
                && !held.contains(&i.name)
        })
        .collect();
    candidates.sort_by_key(|i| {
        (
            !is_surge(i, index),
            i.state == LifecycleState::InService,
            i.created_at,
            i.name.clone(),
        )
    });
    candidates
}

/// Step 4: the moves of the replacement `strategy` within the `budget`: ready replacements
/// complete (their old Instance terminates), then candidates start being replaced in the order
/// of [`ordered_candidates`], each the way [`how`] says, while the budget has room; the others
/// wait. The candidates in `held` are left alone for now.
pub fn strategy(
    index: &Index<'_>,
    strategy: ReplacementStrategy,
    limits: &Limits,
    budget: &Budget,
    held: &BTreeSet<String>,
) -> Moves {
    let mut moves = Moves::default();
    let awaiting = awaiting(index);
    let mut handled: BTreeSet<String> = BTreeSet::new();
    for (old, r) in awaiting.ready {
        // Held (its verdict or its Node's failure still settles): not even completed yet.
        if held.contains(&old.name) {
            handled.insert(old.name.clone());
            moves.waiting += 1;
            continue;
        }
        if handled.insert(old.name.clone()) {
            moves.events.push(PlannedEvent {
                type_: EventType::Normal,
                reason: reason::REPLACEMENT_READY,
                instance: Some(old.name.clone()),
                message: format!(
                    "Replacement {} is InService and Healthy: Unhealthy instance {} leaves service and terminates",
                    r.name, old.name
                ),
            });
            moves.terminate.push(old.name.clone());
        }
    }

    let surge_for_in_service = surge_for_in_service(strategy, limits);
    let mut surges = 0usize;
    for c in ordered_candidates(index, &handled, &awaiting.starting, held) {
        if moves.started >= budget.starts {
            moves.waiting += 1;
            continue;
        }
        let how = how(c, index, surge_for_in_service);
        match how {
            How::TerminateSurplus | How::TerminateNotInService => {
                moves.terminate.push(c.name.clone());
            }
            How::LaunchFirst => {
                if surges >= budget.surges {
                    moves.waiting += 1;
                    continue;
                }
                surges += 1;
                moves.launch.push(c.name.clone());
            }
            How::TerminateThenLaunch => {
                if moves.started >= budget.terminate_then_launch {
                    moves.waiting += 1;
                    continue;
                }
                moves.terminate.push(c.name.clone());
            }
        }
        moves.events.push(replacing_event(c, how));
        moves.started += 1;
    }
    moves
}

/// The `Replacing` Event of candidate `c`, replaced the way `how` says.
fn replacing_event(c: &InstanceView, how: How) -> PlannedEvent {
    let how = match how {
        How::TerminateSurplus => {
            "it is a surge replacement that failed; it terminates without a replacement of its own"
                .to_string()
        }
        How::TerminateNotInService => {
            "it is not InService; it terminates and a replacement is launched".to_string()
        }
        How::LaunchFirst => format!(
            "{}: a replacement is launched first; {} leaves service once it is InService and Healthy",
            strategy_name(ReplacementStrategy::LaunchBeforeTerminate),
            c.name
        ),
        How::TerminateThenLaunch => format!(
            "{}: it leaves service and terminates; a replacement is launched at once",
            strategy_name(ReplacementStrategy::TerminateThenLaunch)
        ),
    };
    PlannedEvent {
        type_: EventType::Normal,
        reason: reason::REPLACING,
        instance: Some(c.name.clone()),
        message: format!(
            "Replacing Unhealthy instance {} ({}): {how}",
            c.name,
            c.detail
                .map_or("no detail".to_string(), |d| format!("{d:?}"))
        ),
    }
}

/// The spec's name of a strategy.
fn strategy_name(s: ReplacementStrategy) -> &'static str {
    match s {
        ReplacementStrategy::TerminateThenLaunch => "TerminateThenLaunch",
        ReplacementStrategy::LaunchBeforeTerminate => "LaunchBeforeTerminate",
    }
}
