//! The pure replacement planner: `(group spec, instances with their states and health, memory,
//! now) → which Instances start Terminating, which surge replacements are launched, what the
//! group status remembers, and the `ReplacementAllowed` condition`.
//!
//! No I/O and no clock: the group reconciler builds [`ReplacementInputs`] from its stores and
//! applies the [`ReplacementPlan`] in this order, so that a restarted operator resumes exactly
//! where it stopped and never counts a failure twice:
//!
//! 1. write [`ReplacementPlan::memory`] (see [`ReplacementMemory::write_to`]) and
//!    [`ReplacementPlan::condition`] to the group status;
//! 2. emit [`ReplacementPlan::events`] (an Event is emitted before the step it announces, so a
//!    crash between the two repeats the Event, never loses it);
//! 3. request the termination of each Instance in [`ReplacementPlan::terminate`] (deleting the
//!    Instance: it then leaves through the graceful path with reason `Unhealthy`);
//! 4. launch one surge Instance per name in [`ReplacementPlan::launch_replacements_for`],
//!    annotated `autoheal.dev/replaces=<old>`.
//!
//! # Semantics (the contract's "Service membership and draining" and "What autoheal must never do")
//!
//! * **Candidates**: Instances that count toward capacity (not being deleted, state before
//!   Terminating), are `Unhealthy`, and are neither in Standby (state or
//!   `autoheal.dev/standby=true`) nor in maintenance (`autoheal.dev/maintenance=true` or detail
//!   `Maintaining`). `protectedFromScaleIn` does *not* shield from health replacement (AWS).
//! * **Circuit breaker** (the rule is in [`breaker`]): when more Instances count than
//!   `maxUnhealthy` allows — candidates, except those on a NotReady Node while the Node
//!   failure is local, plus Instances failing below their threshold and fresh probe verdicts
//!   still settling — or when every Node in view is NotReady, nothing at all is done:
//!   `ReplacementAllowed=False, reason=TooManyUnhealthy`, naming them by zone and Node.
//!   `maxUnhealthy` as a percentage is of desiredCapacity, rounded *down*; `100%` trips only
//!   on the partition (every Node NotReady).
//! * **In flight** ([`in_flight`]): a replacement is identified by the Instance it replaces. It
//!   is in flight while the old Instance is leaving for health (being deleted or Terminating..
//!   Terminated, with termination reason `Unhealthy` or while Unhealthy), or while an Instance
//!   annotated `autoheal.dev/replaces=<old>` is still starting (not yet InService+Healthy, and not
//!   Unhealthy: a replacement that turned Unhealthy is over, as a failure), or while a surge
//!   replacement is ready but its old Instance has not been told to terminate yet. New
//!   replacements start only while fewer than `maxInFlight` are in flight. `maxInFlight` as a
//!   percentage is of desiredCapacity, rounded *up*; integer or percentage, it is at least 1
//!   when desiredCapacity > 0, and a group scaled to 0 replaces nothing (scale-in removes its
//!   Instances).
//! * **TerminateThenLaunch**: the candidate starts Terminating; it stops counting toward
//!   capacity, so the capacity planner launches its replacement (annotated with
//!   [`replacement_targets`]). Each such replacement leaves a hole in serving capacity while in
//!   flight, so at most `desiredCapacity - ceil(minHealthyPercentage% × desiredCapacity)` are in
//!   flight. When that room is 0 (e.g. `minHealthyPercentage: 100`), InService candidates are
//!   replaced launch-before-terminate instead, as AWS does. Because only Unhealthy Instances are
//!   ever terminated, the number of InService+Healthy Instances is never lowered by this planner.
//! * **LaunchBeforeTerminate**: for an InService candidate a surge Instance is launched first
//!   (never more Instances counting toward capacity than `maxSize + maxInFlight`); the candidate
//!   is told to terminate only once its replacement is InService and Healthy, so InService never
//!   drops below what it was. A candidate that is not InService serves nothing and is terminated
//!   at once (its replacement is launched by the capacity planner). A surge Instance that itself
//!   turns Unhealthy is terminated without a replacement of its own (it is surplus).
//! * **Failures and backoff**: an Instance annotated `autoheal.dev/replaces` is judged exactly
//!   once (its name is then remembered in `status.judgedReplacements` until it is gone): it
//!   *failed* if it is Unhealthy before its health-check grace period after entering InService
//!   ended with an `OK` verdict, and *succeeded* once it is InService, Healthy with detail `OK`,
//!   and its grace period has ended. A failure increments
//!   `status.consecutiveReplacementFailures`, a success resets it. Only replacements launched
//!   from the current template count. While the count is `n > 0`, replacements start one at a
//!   time, at least `min(10s × 2^(n-1), 5min)` apart ([`Backoff`]). When it reaches
//!   `maxConsecutiveFailures`, replacement stops with `ReplacementsKeepFailing` until the
//!   template changes or a person sets the group annotation
//!   `autoheal.dev/reset-replacement-failures` to a value not used before.
//! * **Suspended processes and pause**: with `autoheal.dev/paused=true` nothing is done
//!   (`Paused`); with `HealthCheck`, `ReplaceUnhealthy`, `Terminate` or `Launch` suspended
//!   nothing is replaced (`Suspended`; replacement needs both Terminate and Launch). Verdicts are
//!   not judged while paused or while `HealthCheck` is suspended.
//!
//! The planner is total: any input, however inconsistent (duplicate names, unknown
//! references, timestamps at the ends of time, invalid limits), yields a plan.
//!
//! # Steps
//!
//! [`plan_replacements`] is a pipeline of four steps, each in its own module:
//!
//! 1. [`judge`]: judge past replacements (failures, successes, the failure count and its
//!    reset);
//! 2. [`breaker`]: the circuit breaker (paused, suspended, keeps failing, too many Unhealthy)
//!    and the `ReplacementAllowed` condition;
//! 3. [`budget`]: how many replacements may start now (maxInFlight, minHealthyPercentage,
//!    maxSize + maxInFlight, backoff);
//! 4. [`strategy`]: which Instances terminate and which get a surge replacement first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::lifecycle::TerminationReason;
use super::{InstanceView, NodeView};
use crate::api::conditions::DesiredCondition;
use crate::api::{
    HealthDetail, LifecycleState, Remediation, ScalingGroupSpec, ScalingGroupStatus, WouldRepair,
};

pub mod breaker;
pub mod budget;
pub mod judge;
mod pipeline;
pub mod strategy;

pub use pipeline::plan_replacements;

/// At most this many names are kept in `status.judgedReplacements` (the schema's limit).
pub const MAX_JUDGED: usize = 10_000;

/// At most this many failed replacement names are kept in memory for the condition message.
pub const MAX_RECENT_FAILURES: usize = 16;

/// The exponential backoff between replacements after failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub base: Duration,
    /// The longest delay.
    pub cap: Duration,
}

impl Default for Backoff {
    /// 10 seconds, doubling, at most 5 minutes.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The wait between two replacement starts after `failures` consecutive failures:
    /// 0 when there is none, else `min(base × 2^(failures-1), cap)`.
    pub fn delay(&self, failures: i32) -> Duration {
        if failures <= 0 {
            return Duration::ZERO;
        }
        let exponent = (failures - 1).min(31) as u32;
        self.base
            .saturating_mul(1u32 << exponent)
            .min(self.cap.max(Duration::ZERO))
    }
}

/// What the group status remembers between reconciles (and across operator restarts) for
/// replacement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplacementMemory {
    /// Replacements in a row that failed (`status.consecutiveReplacementFailures`).
    pub consecutive_failures: i32,
    /// When the last replacement started (`status.lastReplacementTime`): the backoff base.
    pub last_replacement_time: Option<Timestamp>,
    /// The template hash the failure count applies to (`status.failingTemplateHash`).
    pub failing_template_hash: Option<String>,
    /// Replacement Instances already judged, still present (`status.judgedReplacements`).
    pub judged: Vec<String>,
    /// The failed replacements of the current run of failures, most recent last
    /// (`status.recentReplacementFailures`, at most [`MAX_RECENT_FAILURES`]).
    pub recent_failures: Vec<String>,
    /// The last `autoheal.dev/reset-replacement-failures` value honoured
    /// (`status.replacementFailuresReset`).
    pub reset_token: Option<String>,
}

impl ReplacementMemory {
    /// Reads the memory from a group status.
    pub fn from_status(status: &ScalingGroupStatus) -> Self {
        Self {
            consecutive_failures: status.consecutive_replacement_failures.max(0),
            last_replacement_time: status.last_replacement_time.as_ref().map(|t| t.0),
            failing_template_hash: status.failing_template_hash.clone(),
            judged: status.judged_replacements.clone(),
            recent_failures: status.recent_replacement_failures.clone(),
            reset_token: status.replacement_failures_reset.clone(),
        }
    }

    /// Writes the memory into a group status (the other fields are left as they are).
    pub fn write_to(&self, status: &mut ScalingGroupStatus) {
        status.consecutive_replacement_failures = self.consecutive_failures;
        status.last_replacement_time = self.last_replacement_time.map(Time);
        status.failing_template_hash = self.failing_template_hash.clone();
        status.judged_replacements = self.judged.clone();
        status.recent_replacement_failures = self.recent_failures.clone();
        status.replacement_failures_reset = self.reset_token.clone();
    }
}

/// Everything the planner looks at (all read from the stores and the group object).
#[derive(Debug, Clone, Copy)]
pub struct ReplacementInputs<'a> {
    /// The group spec: replacement limits, strategy, suspended processes, sizes, grace period.
    pub spec: &'a ScalingGroupSpec,
    /// Whether the group is paused (`autoheal.dev/paused=true`).
    pub paused: bool,
    /// The group's Instances, including those leaving.
    pub instances: &'a [InstanceView],
    /// The Nodes (at least those in the zones the group's Instances run in): what the
    /// circuit breaker knows of their readiness (see [`breaker`]).
    pub nodes: &'a [NodeView],
    /// What the group status remembers.
    pub memory: &'a ReplacementMemory,
    /// The hash of the group's current template.
    pub template_hash: &'a str,
    /// The group's `autoheal.dev/reset-replacement-failures` annotation value, if set.
    pub reset_request: Option<&'a str>,
    /// The group's current `ReplacementAllowed` condition, to emit Events on changes only.
    pub previous_condition: Option<&'a Condition>,
    /// The backoff between replacements after failures.
    pub backoff: Backoff,
    /// The remediation history as stored (`status.remediations`).
    pub remediations: &'a [Remediation],
    /// The dry-run list as stored (`status.wouldRepair`), to announce new entries once.
    pub would_repair: &'a [WouldRepair],
    /// The current time.
    pub now: Timestamp,
}

/// The type of a Kubernetes Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something a person should look at.
    Warning,
}

/// An Event the reconciler should emit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    /// Normal or Warning.
    pub type_: EventType,
    /// A CamelCase reason (see [`crate::api::names::reason`]).
    pub reason: &'static str,
    /// The Instance the Event is about; `None` for the group itself. Events about an Instance
    /// are worth recording on both the Instance and the group.
    pub instance: Option<String>,
    /// The message, for people.
    pub message: String,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplacementPlan {
    /// Instances to start terminating now (reason `Unhealthy`), in order.
    pub terminate: Vec<String>,
    /// Instances for which one surge replacement is launched now, annotated
    /// `autoheal.dev/replaces=<name>` (LaunchBeforeTerminate).
    pub launch_replacements_for: Vec<String>,
    /// The updated memory, to be written to the group status before acting.
    pub memory: ReplacementMemory,
    /// The `ReplacementAllowed` condition.
    pub condition: DesiredCondition,
    /// Events to emit (before acting).
    pub events: Vec<PlannedEvent>,
    /// When to plan again at the latest (end of backoff, end of a grace period to judge).
    pub requeue_after: Option<Duration>,
    /// The Unhealthy candidates (what the circuit breaker counts), sorted by name.
    pub unhealthy: Vec<String>,
    /// Replacements in flight once the plan is applied (see [`in_flight`]), restarts
    /// included.
    pub in_flight: usize,
    /// The remediation history to record (`status.remediations`).
    pub remediations: Vec<Remediation>,
    /// In dry run, the repairs that would be taken (`status.wouldRepair`); else empty.
    pub would_repair: Vec<WouldRepair>,
    /// Restart requests to send after the status is recorded: `(instance, token)` for the
    /// annotation `autoheal.dev/restart`.
    pub restart: Vec<(String, String)>,
}

/// The group's replacement limits, resolved against its desired capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `effective_desired()`.
    pub desired: i32,
    /// `maxUnhealthy` resolved (rounded down); `None` for 100% (never trips).
    pub max_unhealthy: Option<i32>,
    /// `maxInFlight` resolved (rounded up, at least 1 when desired > 0, 0 when desired is 0).
    pub max_in_flight: i32,
    /// `ceil(minHealthyPercentage% × desired)`.
    pub min_healthy: i32,
    /// The most TerminateThenLaunch replacements in flight: `desired - min_healthy`.
    pub terminate_then_launch_room: i32,
    /// The most Instances counting toward capacity while surging: `maxSize + max_in_flight`.
    pub max_with_surge: i32,
    /// `maxConsecutiveFailures`, at least 1.
    pub max_consecutive_failures: i32,
    /// Values that could not be understood (reported in the condition message).
    pub problems: Vec<String>,
}

impl Limits {
    /// Resolves the limits of a spec.
    pub fn of(spec: &ScalingGroupSpec) -> Self {
        let r = &spec.replacement;
        let desired = spec.effective_desired().max(0);
        let mut problems = Vec::new();
        let max_unhealthy = match parse_int_or_percent(&r.max_unhealthy) {
            Ok(Amount::Percent(p)) if p >= 100 => None,
            Ok(Amount::Percent(p)) => Some(percent_of(desired, p, false)),
            Ok(Amount::Count(n)) => Some(n.max(0)),
            Err(value) => {
                problems.push(format!(
                    "maxUnhealthy {value:?} is not understood; treated as 0"
                ));
                Some(0)
            }
        };
        let max_in_flight = match parse_int_or_percent(&r.max_in_flight) {
            Ok(Amount::Percent(p)) => percent_of(desired, p, true),
            Ok(Amount::Count(n)) => n.max(0),
            Err(value) => {
                problems.push(format!(
                    "maxInFlight {value:?} is not understood; treated as 1"
                ));
                1
            }
        };
        let max_in_flight = if desired > 0 { max_in_flight.max(1) } else { 0 };
        let min_healthy = percent_of(desired, r.min_healthy_percentage, true);
        Self {
            desired,
            max_unhealthy,
            max_in_flight,
            min_healthy,
            terminate_then_launch_room: (desired - min_healthy).max(0),
            max_with_surge: spec.max_size.max(0).saturating_add(max_in_flight),
            max_consecutive_failures: r.max_consecutive_failures.max(1),
            problems,
        }
    }
}

enum Amount {
    Count(i32),
    Percent(i32),
}

fn parse_int_or_percent(value: &IntOrString) -> Result<Amount, String> {
    match value {
        IntOrString::Int(n) => Ok(Amount::Count(*n)),
        IntOrString::String(s) => {
            let t = s.trim();
            match t.strip_suffix('%').map(|n| n.trim().parse::<i64>()) {
                Some(Ok(p)) if p >= 0 => Ok(Amount::Percent(p.min(100) as i32)),
                _ => Err(s.clone()),
            }
        }
    }
}

/// `percent`% of `total`, rounded up or down; both clamped to sane ranges first.
fn percent_of(total: i32, percent: i32, round_up: bool) -> i32 {
    let total = i64::from(total.max(0));
    let percent = i64::from(percent.clamp(0, 100));
    let product = total * percent;
    let value = if round_up {
        (product + 99) / 100
    } else {
        product / 100
    };
    value as i32
}

/// Whether an Instance is excluded from replacement: Standby or in maintenance.
pub fn excluded(i: &InstanceView) -> bool {
    i.standby
        || i.maintenance
        || i.state == LifecycleState::Standby
        || i.detail == Some(HealthDetail::Maintaining)
}

/// Whether an Instance is a candidate for replacement: counts toward capacity, Unhealthy, and
/// not excluded ([`excluded`]). `protectedFromScaleIn` does not matter.
pub fn is_candidate(i: &InstanceView) -> bool {
    i.counts_toward_capacity() && i.is_unhealthy() && !excluded(i)
}

/// Whether an Instance's Unhealthy verdict rests on its Node (health reason `NodeNotReady` or
/// `NodeUnknown`) while that Node, in the planner's view, is Ready again: the verdict is
/// outdated, and the Instance's own re-evaluation (which the Node's change triggers) is about
/// to say Healthy. Such an Instance is neither counted nor replaced until it has been
/// re-evaluated: when every Node comes back at once, the group may look before its Instances
/// have, and would replace recovered Instances.
pub fn node_verdict_outdated(i: &InstanceView, nodes: &[NodeView]) -> bool {
    matches!(
        i.health_reason.as_deref(),
        Some(NODE_NOT_READY | NODE_UNKNOWN)
    ) && i
        .placement
        .node
        .as_deref()
        .and_then(|name| nodes.iter().find(|n| n.name == name))
        .is_some_and(|n| n.ready)
}

/// The health reasons of a verdict that rests on the Node's `Ready` condition (see
/// `health::evaluate`).
const NODE_NOT_READY: &str = "NodeNotReady";
const NODE_UNKNOWN: &str = "NodeUnknown";

/// Whether an Instance is leaving because it was Unhealthy: being deleted or in a Terminating
/// state, with termination reason `Unhealthy` or while Unhealthy.
pub fn leaving_for_health(i: &InstanceView) -> bool {
    (i.being_deleted || i.state.is_terminating())
        && (i.termination_reason.as_deref() == Some(TerminationReason::Unhealthy.as_str())
            || i.is_unhealthy())
}

/// Whether a replacement's attempt is over: InService and Healthy, Standby, or Unhealthy.
fn settled(i: &InstanceView) -> bool {
    i.is_in_service_and_healthy() || i.state == LifecycleState::Standby || i.is_unhealthy()
}

/// The Instances by name (the first of duplicates wins).
pub fn by_name(instances: &[InstanceView]) -> Index<'_> {
    let mut map = BTreeMap::new();
    for i in instances {
        map.entry(i.name.as_str()).or_insert(i);
    }
    map
}

/// Whether `r` is a surge Instance: launched to replace an Instance that still counts toward
/// capacity, and either still starting or its old Instance still a candidate. Surge Instances
/// should not count as surplus for scale-in (see [`surge_instances`]).
fn is_surge(r: &InstanceView, index: &Index<'_>) -> bool {
    let Some(old) = r.replaces.as_deref().and_then(|o| index.get(o)) else {
        return false;
    };
    r.counts_toward_capacity()
        && old.name != r.name
        && old.counts_toward_capacity()
        && (!settled(r) || is_candidate(old))
}

/// The surge Instances of a group (LaunchBeforeTerminate replacements whose old Instance is
/// still there): the capacity planner should not count them as surplus, since the old Instance
/// leaves once they are ready (or they are terminated if they fail).
pub fn surge_instances(instances: &[InstanceView]) -> Vec<String> {
    let index = by_name(instances);
    index
        .values()
        .filter(|r| is_surge(r, &index))
        .map(|r| r.name.clone())
        .collect()
}

/// Old Instances leaving for health that no present Instance claims yet with
/// `autoheal.dev/replaces` (a replacement claims its old Instance even while it leaves itself:
/// its own place is what is missing then), oldest first, leaving out surge Instances (their
/// old Instance still counts, so no place of theirs is missing): when the capacity planner
/// launches Instances, the n-th launch should be annotated `autoheal.dev/replaces=<n-th name>`
/// so that replacements are tracked (in flight, judged) like surge ones.
pub fn replacement_targets(instances: &[InstanceView]) -> Vec<String> {
    let index = by_name(instances);
    let claimed: BTreeSet<&str> = index
        .values()
        .filter(|r| r.replaces.as_deref() != Some(r.name.as_str()))
        .filter_map(|r| r.replaces.as_deref())
        .collect();
    let old_still_counts = |i: &InstanceView| {
        i.replaces
            .as_deref()
            .and_then(|o| index.get(o))
            .is_some_and(|o| o.name != i.name && o.counts_toward_capacity())
    };
    let mut olds: Vec<&InstanceView> = index
        .values()
        .copied()
        .filter(|i| {
            leaving_for_health(i) && !claimed.contains(i.name.as_str()) && !old_still_counts(i)
        })
        .collect();
    olds.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
    olds.into_iter().map(|i| i.name.clone()).collect()
}

/// The replacements in flight, each identified by the name of the Instance it replaces (see the
/// module documentation).
pub fn in_flight_units(instances: &[InstanceView]) -> BTreeSet<String> {
    let index = by_name(instances);
    let mut units = BTreeSet::new();
    for i in index.values() {
        if leaving_for_health(i) {
            units.insert(i.name.clone());
        }
    }
    for r in index.values() {
        let Some(old) = r.replaces.as_deref() else {
            continue;
        };
        if !r.counts_toward_capacity() || r.is_unhealthy() || old == r.name {
            continue;
        }
        // Still starting, or ready while its old Instance has yet to be told to leave.
        let ready_awaiting_old =
            r.is_in_service_and_healthy() && index.get(old).is_some_and(|o| is_candidate(o));
        if !settled(r) || ready_awaiting_old {
            units.insert(old.to_string());
        }
    }
    units
}

/// How many replacements are in flight (see [`in_flight_units`]).
pub fn in_flight(instances: &[InstanceView]) -> usize {
    in_flight_units(instances).len()
}

/// The Instances by name (the first of duplicate names wins): what every step looks at.
pub type Index<'a> = BTreeMap<&'a str, &'a InstanceView>;

/// The candidates for replacement ([`is_candidate`]), sorted by name: what the circuit breaker
/// counts and the condition names.
fn unhealthy_candidates(index: &Index<'_>) -> Vec<String> {
    // The index is ordered by name already.
    index
        .values()
        .filter(|i| is_candidate(i))
        .map(|i| i.name.clone())
        .collect()
}

/// How many Instances count toward capacity (the first of duplicate names only).
fn counting_toward_capacity(index: &Index<'_>) -> usize {
    index
        .values()
        .filter(|i| i.counts_toward_capacity())
        .count()
}

/// `t + d`, or `None` past the end of time.
pub(crate) fn add(t: Timestamp, d: SignedDuration) -> Option<Timestamp> {
    t.checked_add(d).ok()
}

/// The time from `now` until `then`, zero when `then` is past.
pub(crate) fn time_until(now: Timestamp, then: Timestamp) -> Duration {
    let d = then.duration_since(now);
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

/// The earlier of a requeue delay already planned (if any) and `b`.
pub(crate) fn earliest(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}

#[cfg(test)]
mod tests;
