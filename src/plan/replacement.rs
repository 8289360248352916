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
//! * **Circuit breaker**: when more candidates than `maxUnhealthy` exist, nothing at all is
//!   done: `ReplacementAllowed=False, reason=TooManyUnhealthy`, naming them. `maxUnhealthy` as a
//!   percentage is of desiredCapacity, rounded *down*; `100%` never trips.
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

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::InstanceView;
use super::lifecycle::TerminationReason;
use crate::api::CONDITION_REPLACEMENT_ALLOWED;
use crate::api::conditions::DesiredCondition;
use crate::api::names::reason;
use crate::api::{
    HealthDetail, HealthStatus, LifecycleState, Process, ReplacementStrategy, ScalingGroupSpec,
    ScalingGroupStatus,
};

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
    /// A CamelCase reason (see [`reason`]).
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
    /// Replacements in flight once the plan is applied (see [`in_flight`]).
    pub in_flight: usize,
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
fn by_name(instances: &[InstanceView]) -> BTreeMap<&str, &InstanceView> {
    let mut map = BTreeMap::new();
    for i in instances {
        map.entry(i.name.as_str()).or_insert(i);
    }
    map
}

/// Whether `r` is a surge Instance: launched to replace an Instance that still counts toward
/// capacity, and either still starting or its old Instance still a candidate. Surge Instances
/// should not count as surplus for scale-in (see [`surge_instances`]).
fn is_surge(r: &InstanceView, index: &BTreeMap<&str, &InstanceView>) -> bool {
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
/// `autoheal.dev/replaces`, oldest first: when the capacity planner launches Instances, the
/// n-th launch should be annotated `autoheal.dev/replaces=<n-th name>` so that replacements
/// are tracked (in flight, judged) like surge ones.
pub fn replacement_targets(instances: &[InstanceView]) -> Vec<String> {
    let index = by_name(instances);
    let claimed: BTreeSet<&str> = index
        .values()
        .filter(|r| r.counts_toward_capacity())
        .filter_map(|r| r.replaces.as_deref())
        .collect();
    let mut olds: Vec<&InstanceView> = index
        .values()
        .copied()
        .filter(|i| leaving_for_health(i) && !claimed.contains(i.name.as_str()))
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
        let ready_awaiting_old = r.is_in_service_and_healthy()
            && index
                .get(old)
                .is_some_and(|o| is_candidate(o) && o.replaces.as_deref() != Some(&r.name));
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

/// The outcome of judging one replacement.
enum Judgement {
    Failed,
    Succeeded,
    Abandoned,
    Pending(Option<Timestamp>),
}

fn add(t: Timestamp, d: SignedDuration) -> Option<Timestamp> {
    t.checked_add(d).ok()
}

fn judge(r: &InstanceView, grace: SignedDuration, now: Timestamp) -> Judgement {
    if r.is_unhealthy() {
        return Judgement::Failed;
    }
    if r.being_deleted || r.state.is_terminating() {
        return Judgement::Abandoned;
    }
    if r.state == LifecycleState::InService && !excluded(r) {
        let ends = r.in_service_since.and_then(|t| add(t, grace));
        return match ends {
            Some(end) if end <= now => {
                if r.health == Some(HealthStatus::Healthy) && r.detail == Some(HealthDetail::OK) {
                    Judgement::Succeeded
                } else {
                    Judgement::Pending(None)
                }
            }
            other => Judgement::Pending(other),
        };
    }
    Judgement::Pending(None)
}

fn time_until(now: Timestamp, then: Timestamp) -> Duration {
    let d = then.duration_since(now);
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

fn earliest(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}

fn names(list: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut s = list
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > SHOWN {
        s.push_str(&format!(" and {} more", list.len() - SHOWN));
    }
    s
}

fn short(hash: &str) -> &str {
    hash.get(..hash.len().min(12)).unwrap_or(hash)
}

fn strategy_name(s: ReplacementStrategy) -> &'static str {
    match s {
        ReplacementStrategy::TerminateThenLaunch => "TerminateThenLaunch",
        ReplacementStrategy::LaunchBeforeTerminate => "LaunchBeforeTerminate",
    }
}

/// Plans the replacement of Unhealthy Instances. Pure and total: see the module documentation.
pub fn plan_replacements(inputs: &ReplacementInputs<'_>) -> ReplacementPlan {
    let spec = inputs.spec;
    let now = inputs.now;
    let limits = Limits::of(spec);
    let index = by_name(inputs.instances);
    let mut memory = inputs.memory.clone();
    let mut events = Vec::new();
    let mut requeue_after: Option<Duration> = None;

    // Forget what is gone; never keep a name twice.
    let mut seen = BTreeSet::new();
    memory
        .judged
        .retain(|n| index.contains_key(n.as_str()) && seen.insert(n.clone()));
    if memory.judged.len() > MAX_JUDGED {
        let excess = memory.judged.len() - MAX_JUDGED;
        memory.judged.drain(..excess);
    }
    memory.consecutive_failures = memory.consecutive_failures.max(0);

    // A template change or a new reset annotation value clears the failure count.
    if memory.consecutive_failures > 0
        && memory
            .failing_template_hash
            .as_deref()
            .is_some_and(|h| h != inputs.template_hash)
    {
        events.push(PlannedEvent {
            type_: EventType::Normal,
            reason: reason::FAILURES_RESET,
            instance: None,
            message: format!(
                "The template changed: {} consecutive replacement failure(s) of the previous template are forgotten",
                memory.consecutive_failures
            ),
        });
        clear_failures(&mut memory);
    }
    if let Some(token) = inputs.reset_request
        && memory.reset_token.as_deref() != Some(token)
    {
        memory.reset_token = Some(token.to_string());
        if memory.consecutive_failures > 0 {
            events.push(PlannedEvent {
                type_: EventType::Normal,
                reason: reason::FAILURES_RESET,
                instance: None,
                message: format!(
                    "{}={token:?}: {} consecutive replacement failure(s) cleared; replacement resumes",
                    crate::api::names::ANNOTATION_RESET_REPLACEMENT_FAILURES,
                    memory.consecutive_failures
                ),
            });
            clear_failures(&mut memory);
        }
    }

    // Judge replacements exactly once (not while verdicts are not to be acted on).
    let health_check_suspended = spec.is_suspended(Process::HealthCheck);
    if !inputs.paused && !health_check_suspended {
        let grace =
            SignedDuration::from_secs(i64::from(spec.health_check.grace_period_seconds.max(0)));
        let mut replacements: Vec<&InstanceView> = index
            .values()
            .copied()
            .filter(|r| r.replaces.is_some() && !memory.judged.contains(&r.name))
            .collect();
        replacements.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        for r in replacements {
            let current = r
                .template_hash
                .as_deref()
                .is_none_or(|h| h == inputs.template_hash);
            let old = r.replaces.as_deref().unwrap_or_default();
            match judge(r, grace, now) {
                Judgement::Pending(until) => {
                    if let Some(t) = until {
                        requeue_after = earliest(requeue_after, time_until(now, t));
                    }
                    continue;
                }
                Judgement::Abandoned => {}
                Judgement::Failed if current => {
                    memory.consecutive_failures = memory.consecutive_failures.saturating_add(1);
                    memory.failing_template_hash = Some(inputs.template_hash.to_string());
                    memory.recent_failures.push(r.name.clone());
                    if memory.recent_failures.len() > MAX_RECENT_FAILURES {
                        memory.recent_failures.remove(0);
                    }
                    events.push(PlannedEvent {
                        type_: EventType::Warning,
                        reason: reason::REPLACEMENT_FAILED,
                        instance: Some(r.name.clone()),
                        message: format!(
                            "Replacement {} of {old} is Unhealthy ({}) before its health check grace period ended well: {} of maxConsecutiveFailures {} in a row",
                            r.name,
                            r.detail.map_or("no detail".to_string(), |d| format!("{d:?}")),
                            memory.consecutive_failures,
                            limits.max_consecutive_failures
                        ),
                    });
                }
                Judgement::Succeeded if current => {
                    events.push(PlannedEvent {
                        type_: EventType::Normal,
                        reason: reason::REPLACEMENT_SUCCEEDED,
                        instance: Some(r.name.clone()),
                        message: format!(
                            "Replacement {} of {old} is InService and Healthy after its grace period",
                            r.name
                        ),
                    });
                    clear_failures(&mut memory);
                }
                Judgement::Failed | Judgement::Succeeded => {}
            }
            memory.judged.push(r.name.clone());
        }
        if memory.judged.len() > MAX_JUDGED {
            let excess = memory.judged.len() - MAX_JUDGED;
            memory.judged.drain(..excess);
        }
    }

    let mut unhealthy: Vec<String> = index
        .values()
        .filter(|i| is_candidate(i))
        .map(|i| i.name.clone())
        .collect();
    unhealthy.sort();
    let units_before = in_flight_units(inputs.instances);

    let blocked = blocking_condition(inputs, &limits, &memory, &unhealthy);
    let mut terminate: Vec<String> = Vec::new();
    let mut launch: Vec<String> = Vec::new();

    let condition = if let Some(condition) = blocked {
        condition
    } else {
        let failures = memory.consecutive_failures;
        let backoff_until = if failures > 0 {
            memory.last_replacement_time.and_then(|t| {
                SignedDuration::try_from(inputs.backoff.delay(failures))
                    .ok()
                    .and_then(|d| add(t, d))
                    .or(Some(Timestamp::MAX))
            })
        } else {
            None
        };
        let backing_off = backoff_until.is_some_and(|t| t > now);
        let strategy = spec.replacement.strategy;
        let surge_for_in_service = strategy == ReplacementStrategy::LaunchBeforeTerminate
            || limits.terminate_then_launch_room == 0;
        let mut in_flight = units_before.len() as i64;
        let mut counting = index
            .values()
            .filter(|i| i.counts_toward_capacity())
            .count() as i64;

        // Ready replacements: their old Instance leaves now (completing a replacement already
        // in flight, so neither the budget nor the backoff applies).
        let mut handled: BTreeSet<String> = BTreeSet::new();
        let mut ready: Vec<(&InstanceView, &InstanceView)> = Vec::new();
        let mut starting: BTreeSet<&str> = BTreeSet::new();
        for r in index.values() {
            let Some(old) = r.replaces.as_deref().and_then(|o| index.get(o)) else {
                continue;
            };
            if !r.counts_toward_capacity() || r.is_unhealthy() || old.name == r.name {
                continue;
            }
            if !settled(r) {
                starting.insert(old.name.as_str());
            } else if r.is_in_service_and_healthy() && is_candidate(old) {
                ready.push((old, r));
            }
        }
        ready.sort_by(|a, b| (a.0.created_at, &a.0.name).cmp(&(b.0.created_at, &b.0.name)));
        for (old, r) in ready {
            if handled.insert(old.name.clone()) {
                events.push(PlannedEvent {
                    type_: EventType::Normal,
                    reason: reason::REPLACEMENT_READY,
                    instance: Some(old.name.clone()),
                    message: format!(
                        "Replacement {} is InService and Healthy: Unhealthy instance {} leaves service and terminates",
                        r.name, old.name
                    ),
                });
                terminate.push(old.name.clone());
            }
        }

        // New replacements, cheapest first: failed surges (surplus), then candidates that
        // serve nothing, then the oldest.
        let mut candidates: Vec<&InstanceView> = index
            .values()
            .copied()
            .filter(|i| {
                is_candidate(i) && !handled.contains(&i.name) && !starting.contains(i.name.as_str())
            })
            .collect();
        candidates.sort_by_key(|i| {
            (
                !is_surge(i, &index),
                i.state == LifecycleState::InService,
                i.created_at,
                i.name.clone(),
            )
        });
        let budget = i64::from(limits.max_in_flight);
        let mut waiting = 0usize;
        let mut started = 0usize;
        for c in candidates {
            let blocked_now = in_flight >= budget || (backing_off) || (failures > 0 && started > 0);
            if blocked_now {
                waiting += 1;
                continue;
            }
            let surge = is_surge(c, &index);
            let in_service = c.state == LifecycleState::InService;
            if surge || !in_service {
                // Surplus, or serving nothing: terminate at once.
                terminate.push(c.name.clone());
                events.push(replacing_event(
                    c,
                    if surge {
                        "it is a surge replacement that failed; it terminates without a replacement of its own".to_string()
                    } else {
                        "it is not InService; it terminates and a replacement is launched".to_string()
                    },
                ));
            } else if surge_for_in_service {
                if counting + 1 > i64::from(limits.max_with_surge) {
                    waiting += 1;
                    continue;
                }
                counting += 1;
                launch.push(c.name.clone());
                events.push(replacing_event(
                    c,
                    format!(
                        "{}: a replacement is launched first; {} leaves service once it is InService and Healthy",
                        strategy_name(ReplacementStrategy::LaunchBeforeTerminate),
                        c.name
                    ),
                ));
            } else {
                if in_flight + 1 > i64::from(limits.terminate_then_launch_room) {
                    waiting += 1;
                    continue;
                }
                terminate.push(c.name.clone());
                events.push(replacing_event(
                    c,
                    format!(
                        "{}: it leaves service and terminates; a replacement is launched at once",
                        strategy_name(ReplacementStrategy::TerminateThenLaunch)
                    ),
                ));
            }
            in_flight += 1;
            started += 1;
            memory.last_replacement_time = Some(now);
        }

        if waiting > 0
            && started == 0
            && backing_off
            && let Some(until) = backoff_until
        {
            requeue_after = earliest(requeue_after, time_until(now, until));
        }
        if failures > 0 && waiting > 0 && started > 0 {
            requeue_after = earliest(requeue_after, inputs.backoff.delay(failures));
        }
        allowed_condition(
            &limits,
            &memory,
            &unhealthy,
            backing_off && waiting > 0,
            backoff_until,
        )
    };

    // Condition changes are announced once.
    let changed = inputs.previous_condition.is_none_or(|p| {
        p.status != condition.status
            || p.reason != condition.reason
            || p.message != condition.message
    });
    if changed {
        let was_false = inputs
            .previous_condition
            .is_some_and(|p| p.status == "False");
        if condition.status == "False" {
            let warning = condition.reason == reason::TOO_MANY_UNHEALTHY
                || condition.reason == reason::KEEP_FAILING;
            let same_reason = inputs
                .previous_condition
                .is_some_and(|p| p.status == "False" && p.reason == condition.reason);
            if warning || !same_reason {
                events.push(PlannedEvent {
                    type_: if warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: reason_str(&condition.reason),
                    instance: None,
                    message: condition.message.clone(),
                });
            }
        } else if was_false {
            events.push(PlannedEvent {
                type_: EventType::Normal,
                reason: reason::ALLOWED,
                instance: None,
                message: format!("Replacement resumes: {}", condition.message),
            });
        }
    }

    let mut after: Vec<InstanceView> = inputs.instances.to_vec();
    for i in after.iter_mut() {
        if terminate.contains(&i.name) {
            i.being_deleted = true;
            i.termination_reason = Some(TerminationReason::Unhealthy.as_str().into());
        }
    }
    for (n, old) in launch.iter().enumerate() {
        after.push(planned_surge(old, n, inputs.template_hash, now));
    }
    let in_flight_after = in_flight(&after);

    ReplacementPlan {
        terminate,
        launch_replacements_for: launch,
        memory,
        condition,
        events,
        requeue_after,
        unhealthy,
        in_flight: in_flight_after,
    }
}

/// The view of a surge Instance about to be launched for `old` (used to count what a plan
/// leads to).
fn planned_surge(old: &str, n: usize, template_hash: &str, now: Timestamp) -> InstanceView {
    InstanceView {
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
        termination_reason: None,
    }
}

fn clear_failures(memory: &mut ReplacementMemory) {
    memory.consecutive_failures = 0;
    memory.failing_template_hash = None;
    memory.recent_failures.clear();
}

fn reason_str(r: &str) -> &'static str {
    [
        reason::TOO_MANY_UNHEALTHY,
        reason::KEEP_FAILING,
        reason::SUSPENDED,
        reason::PAUSED,
        reason::BACKING_OFF,
    ]
    .into_iter()
    .find(|k| *k == r)
    .unwrap_or(reason::ALLOWED)
}

fn replacing_event(c: &InstanceView, how: String) -> PlannedEvent {
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

/// The condition when something forbids every replacement, in order of precedence: paused,
/// suspended, keeps failing, too many unhealthy.
fn blocking_condition(
    inputs: &ReplacementInputs<'_>,
    limits: &Limits,
    memory: &ReplacementMemory,
    unhealthy: &[String],
) -> Option<DesiredCondition> {
    let spec = inputs.spec;
    let not_replaced = if unhealthy.is_empty() {
        String::new()
    } else {
        format!(
            "; {} Unhealthy instance(s) are not replaced: {}",
            unhealthy.len(),
            names(unhealthy)
        )
    };
    if inputs.paused {
        return Some(DesiredCondition::new(
            CONDITION_REPLACEMENT_ALLOWED,
            false,
            reason::PAUSED,
            format!(
                "The group is paused ({}=true): nothing is replaced{not_replaced}",
                crate::api::names::ANNOTATION_PAUSED
            ),
        ));
    }
    let suspended: Vec<&str> = [
        (Process::HealthCheck, "HealthCheck"),
        (Process::ReplaceUnhealthy, "ReplaceUnhealthy"),
        (Process::Terminate, "Terminate"),
        (Process::Launch, "Launch"),
    ]
    .into_iter()
    .filter(|(p, _)| spec.is_suspended(*p))
    .map(|(_, n)| n)
    .collect();
    if !suspended.is_empty() {
        let why = if spec.is_suspended(Process::HealthCheck) {
            "health verdicts are shown but not acted on"
        } else {
            "Unhealthy instances are not replaced"
        };
        return Some(DesiredCondition::new(
            CONDITION_REPLACEMENT_ALLOWED,
            false,
            reason::SUSPENDED,
            format!(
                "Suspended process(es) {}: {why}{not_replaced}",
                suspended.join(", ")
            ),
        ));
    }
    if memory.consecutive_failures >= limits.max_consecutive_failures {
        let failed = if memory.recent_failures.is_empty() {
            String::new()
        } else {
            format!(" ({})", names(&memory.recent_failures))
        };
        let template = memory
            .failing_template_hash
            .as_deref()
            .map(|h| format!(" of template {}", short(h)))
            .unwrap_or_default();
        return Some(DesiredCondition::new(
            CONDITION_REPLACEMENT_ALLOWED,
            false,
            reason::KEEP_FAILING,
            format!(
                "{} replacements{template} in a row{failed} were Unhealthy when their health check grace period ended (maxConsecutiveFailures {}): replacement is stopped until the template changes or the group is annotated {}=<new value>{not_replaced}",
                memory.consecutive_failures,
                limits.max_consecutive_failures,
                crate::api::names::ANNOTATION_RESET_REPLACEMENT_FAILURES
            ),
        ));
    }
    if let Some(max) = limits.max_unhealthy
        && unhealthy.len() as i64 > i64::from(max)
    {
        let spec_value = match &spec.replacement.max_unhealthy {
            IntOrString::Int(n) => n.to_string(),
            IntOrString::String(s) => s.clone(),
        };
        let problems = if limits.problems.is_empty() {
            String::new()
        } else {
            format!(" ({})", limits.problems.join("; "))
        };
        return Some(DesiredCondition::new(
            CONDITION_REPLACEMENT_ALLOWED,
            false,
            reason::TOO_MANY_UNHEALTHY,
            format!(
                "{} instances are Unhealthy ({}), more than maxUnhealthy {max} (maxUnhealthy: {spec_value}){problems}: nothing is replaced until at most {max} are Unhealthy",
                unhealthy.len(),
                names(unhealthy)
            ),
        ));
    }
    None
}

fn allowed_condition(
    limits: &Limits,
    memory: &ReplacementMemory,
    unhealthy: &[String],
    backing_off: bool,
    until: Option<Timestamp>,
) -> DesiredCondition {
    let problems = if limits.problems.is_empty() {
        String::new()
    } else {
        format!(" ({})", limits.problems.join("; "))
    };
    let limits_text = format!(
        "maxUnhealthy {}, maxInFlight {}{problems}",
        limits
            .max_unhealthy
            .map_or("unlimited".to_string(), |m| m.to_string()),
        limits.max_in_flight
    );
    if backing_off {
        let until = until.map_or("later".to_string(), |t| t.to_string());
        DesiredCondition::new(
            CONDITION_REPLACEMENT_ALLOWED,
            true,
            reason::BACKING_OFF,
            format!(
                "{} replacement(s) in a row failed (maxConsecutiveFailures {}): the next replacement waits until {until}; Unhealthy: {} ({limits_text})",
                memory.consecutive_failures,
                limits.max_consecutive_failures,
                names(unhealthy)
            ),
        )
    } else {
        DesiredCondition::new(
            CONDITION_REPLACEMENT_ALLOWED,
            true,
            reason::ALLOWED,
            format!("Unhealthy instances are replaced ({limits_text})"),
        )
    }
}

#[cfg(test)]
mod tests;
