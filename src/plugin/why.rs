//! `kubectl autoheal why inst/NAME` and `why sg/NAME`: the verdict with each signal's evidence
//! and threshold, what the group does next, and every [`Blocker`] in its way, phrased from the
//! structured fields (spec, status, conditions) rather than echoed from one message.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::{EventView, at, events_section, human, time_left};
use crate::api::annotations::{self, HealthAnnotations, ManualHealth};
use crate::api::conditions::find;
use crate::api::names::reason;
use crate::api::{
    CONDITION_CUSTOM, CONDITION_HEALTHY, CONDITION_PROBE, CONDITION_READY,
    CONDITION_REPLACEMENT_ALLOWED, CONDITION_WORKLOAD, HealthDetail, HealthStatus, HookResult,
    Instance, LifecycleState, Process, RefreshState, RefreshTrigger, RemediationOutcome,
    RepairAction, RepairMode, ScalingGroup, ScalingGroupStatus,
};
use crate::plan::InstanceView;
use crate::plan::replacement::{
    Backoff, Limits, ReplacementMemory, budget, in_flight_units, is_candidate,
};

/// What keeps an Instance (or a group's Unhealthy Instances) from being repaired now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BlockerKind {
    /// Lifecycle hooks hold the Instance (Pending:Wait or Terminating:Wait).
    HooksPending,
    /// Out of service, waiting out the deregistration delay before termination.
    Draining,
    /// Standby: health is not acted on.
    Standby,
    /// Maintenance: never replaced.
    Maintenance,
    /// Inside the health check grace period.
    GracePeriod,
    /// The group is paused.
    Paused,
    /// A process repair needs is suspended.
    Suspended,
    /// Dry run: repairs are planned, never taken.
    DryRun,
    /// Replacements keep failing: replacement stopped.
    KeepsFailing,
    /// The circuit breaker: more Instances Unhealthy than maxUnhealthy.
    TooManyUnhealthy,
    /// Backoff after failed replacements.
    BackingOff,
    /// maxInFlight replacements are already in flight.
    MaxInFlight,
    /// The API server keeps refusing the operator's requests for the object (`Stalled=True,
    /// RequestRefused`): RBAC, validation, an admission policy or webhook.
    RequestRefused,
}

/// One reason something waits, as the sentence a person reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    /// Which reason.
    pub kind: BlockerKind,
    /// The sentence, with its numbers.
    pub sentence: String,
}

impl Blocker {
    fn new(kind: BlockerKind, sentence: String) -> Self {
        Self { kind, sentence }
    }
}

/// A group's state as the plugin judges it: the resolved limits and the Unhealthy candidates.
pub struct GroupFacts<'a> {
    group: &'a ScalingGroup,
    status: ScalingGroupStatus,
    name: String,
    paused: bool,
    limits: Limits,
    views: Vec<InstanceView>,
    candidates: Vec<String>,
    in_flight: Vec<String>,
}

impl<'a> GroupFacts<'a> {
    /// The facts of `group` and its `instances`.
    pub fn new(group: &'a ScalingGroup, instances: &[Instance]) -> Self {
        let views: Vec<InstanceView> = instances.iter().map(InstanceView::from_instance).collect();
        let mut candidates: Vec<String> = views
            .iter()
            .filter(|v| is_candidate(v))
            .map(|v| v.name.clone())
            .collect();
        candidates.sort();
        candidates.dedup();
        let status = group.status.clone().unwrap_or_default();
        // Replacements in flight, and restarts in flight (they count against maxInFlight too).
        let mut in_flight = in_flight_units(&views);
        in_flight.extend(
            status
                .remediations
                .iter()
                .filter(|r| {
                    r.outcome == RemediationOutcome::InProgress && r.action == RepairAction::Restart
                })
                .map(|r| r.instance.clone()),
        );
        let in_flight = in_flight.into_iter().collect();
        Self {
            group,
            status,
            name: group.metadata.name.clone().unwrap_or_default(),
            paused: annotations::paused(&group.metadata.annotations.clone().unwrap_or_default())
                .unwrap_or(false),
            limits: Limits::of(&group.spec),
            views,
            candidates,
            in_flight,
        }
    }

    fn condition(&self, type_: &str) -> Option<&Condition> {
        find(&self.status.conditions, type_)
    }

    /// The repair action an Unhealthy Instance gets next, and its index in `repair.actions`,
    /// as the planner decides it ([`crate::plan::repair::next_action`]).
    fn next_action(&self, instance: &str) -> (RepairAction, i32) {
        let index = crate::plan::replacement::by_name(&self.views);
        let Some(view) = index.get(instance) else {
            return (RepairAction::Replace, 0);
        };
        let spec = &self.group.spec;
        let seconds = |s: i32| k8s_openapi::jiff::SignedDuration::from_secs(i64::from(s.max(0)));
        let clocks = crate::plan::repair::Clocks {
            grace: seconds(spec.health_check.grace_period_seconds),
            startup_timeout: seconds(spec.health_check.startup_timeout_seconds),
            restart_possible: self.limits.terminate_then_launch_room > 0,
        };
        crate::plan::repair::next_action(
            &spec.repair,
            &index,
            view,
            &self.status.remediations,
            clocks,
        )
    }

    /// The group-wide blockers of repair, in the order the planner applies them.
    pub fn blockers(&self, now: Timestamp) -> Vec<Blocker> {
        let spec = &self.group.spec;
        let mut out: Vec<Blocker> = refused(&self.status.conditions, "group", &self.name)
            .into_iter()
            .collect();
        if self.paused {
            out.push(Blocker::new(
                BlockerKind::Paused,
                format!(
                    "The group {} is paused ({}=true): nothing is repaired until the annotation is removed.",
                    self.name,
                    crate::api::ANNOTATION_PAUSED
                ),
            ));
        }
        let suspended = crate::plan::replacement::breaker::suspended_for_replacement(spec);
        if !suspended.is_empty() {
            let what = if spec.is_suspended(Process::HealthCheck) {
                "health verdicts are shown but not acted on"
            } else {
                "Unhealthy instances are not repaired"
            };
            out.push(Blocker::new(
                BlockerKind::Suspended,
                format!(
                    "The suspended process{} {} (spec.suspendedProcesses): {what}; remove {} from the list to resume.",
                    if suspended.len() > 1 { "es" } else { "" },
                    suspended.join(", "),
                    if suspended.len() > 1 { "them" } else { "it" }
                ),
            ));
        }
        if spec.repair.mode == RepairMode::DryRun {
            let would: Vec<String> = self
                .status
                .would_repair
                .iter()
                .map(|w| format!("{} {}", w.action.as_str(), w.instance))
                .collect();
            let listed = if would.is_empty() {
                String::new()
            } else {
                format!(" (it would now: {})", would.join(", "))
            };
            out.push(Blocker::new(
                BlockerKind::DryRun,
                format!(
                    "Dry run (spec.repair.mode: DryRun): repairs are planned and reported in status.wouldRepair, never taken{listed}; set spec.repair.mode to Auto to act."
                ),
            ));
        }
        let failures = self.status.consecutive_replacement_failures.max(0);
        if failures >= self.limits.max_consecutive_failures {
            let recent = if self.status.recent_replacement_failures.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.status.recent_replacement_failures.join(", "))
            };
            out.push(Blocker::new(
                BlockerKind::KeepsFailing,
                format!(
                    "Replacement is stopped: {failures} replacements in a row{recent} were Unhealthy when their grace period ended (maxConsecutiveFailures {}); fix the template, or annotate the group {}=<new value> to try again.",
                    self.limits.max_consecutive_failures,
                    crate::api::ANNOTATION_RESET_REPLACEMENT_FAILURES
                ),
            ));
        }
        if let Some(max) = self.limits.max_unhealthy
            && self.candidates.len() as i64 > i64::from(max)
        {
            let spec_value = match &spec.replacement.max_unhealthy {
                IntOrString::Int(_) => String::new(),
                IntOrString::String(s) => format!(" ({s} of desired {})", self.limits.desired),
            };
            out.push(Blocker::new(
                BlockerKind::TooManyUnhealthy,
                format!(
                    "Circuit breaker open (TooManyUnhealthy): {} Unhealthy ({}), more than maxUnhealthy {max}{spec_value}: nothing is replaced until at most {max} are Unhealthy.",
                    plural(self.candidates.len(), "instance is", "instances are"),
                    self.candidates.join(", ")
                ),
            ));
        }
        if failures > 0
            && failures < self.limits.max_consecutive_failures
            && let Some(until) = self.backoff_until()
            && until > now
        {
            out.push(Blocker::new(
                    BlockerKind::BackingOff,
                    format!(
                        "Backing off after {failures} failed replacement{} in a row: the next replacement waits until {} ({}).",
                        if failures > 1 { "s" } else { "" },
                        at(until),
                        time_left(now, until)
                    ),
                ));
        }
        let waiting: Vec<&String> = self
            .candidates
            .iter()
            .filter(|c| !self.in_flight.contains(c))
            .collect();
        if !waiting.is_empty()
            && self.in_flight.len() as i64 >= i64::from(self.limits.max_in_flight)
        {
            out.push(Blocker::new(
                BlockerKind::MaxInFlight,
                format!(
                    "maxInFlight reached: {} of {} repair{} in flight ({}); {} wait{} for one to finish.",
                    self.in_flight.len(),
                    self.limits.max_in_flight,
                    if self.limits.max_in_flight == 1 { "" } else { "s" },
                    self.in_flight.join(", "),
                    waiting.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                    if waiting.len() == 1 { "s" } else { "" }
                ),
            ));
        }
        out
    }

    /// When the backoff after failures ends: the operator's own word (the `BackingOff`
    /// condition names it), else computed with the default backoff.
    fn backoff_until(&self) -> Option<Timestamp> {
        let stated = self
            .condition(CONDITION_REPLACEMENT_ALLOWED)
            .filter(|c| c.reason == reason::BACKING_OFF)
            .and_then(|c| c.message.split("waits until ").nth(1))
            .and_then(|rest| rest.split([';', ' ']).next())
            .and_then(|t| t.parse::<Timestamp>().ok());
        stated.or_else(|| {
            budget::backoff_until(
                &ReplacementMemory::from_status(&self.status),
                Backoff::default(),
            )
        })
    }
}

/// `RequestRefused` when the object's `Stalled` condition says the API server keeps refusing
/// the operator's requests for it, with the refusal as evidence.
fn refused(conditions: &[Condition], kind: &str, name: &str) -> Option<Blocker> {
    find(conditions, crate::api::CONDITION_STALLED)
        .filter(|c| c.status == "True" && c.reason == crate::api::REASON_REQUEST_REFUSED)
        .map(|c| {
            Blocker::new(
                BlockerKind::RequestRefused,
                format!(
                    "The API server keeps refusing the operator's requests for {kind} {name} (RBAC, validation or an admission policy): {}",
                    c.message
                ),
            )
        })
}

/// The blockers of one Instance of its own (hooks, draining, standby, maintenance, grace
/// period), whatever the group's state.
pub fn instance_blockers(
    instance: &Instance,
    group: Option<&ScalingGroup>,
    now: Timestamp,
) -> Vec<Blocker> {
    let name = instance.metadata.name.clone().unwrap_or_default();
    let status = instance.status.clone().unwrap_or_default();
    let state = status.lifecycle_state.unwrap_or(LifecycleState::Pending);
    let marks =
        HealthAnnotations::parse(&instance.metadata.annotations.clone().unwrap_or_default());
    let mut out: Vec<Blocker> = refused(&status.conditions, "instance", &name)
        .into_iter()
        .collect();
    if matches!(
        state,
        LifecycleState::PendingWait | LifecycleState::TerminatingWait
    ) {
        for hook in status.pending_hooks.iter().filter(|h| h.result.is_none()) {
            let spec_hook =
                group.and_then(|g| g.spec.lifecycle_hooks.iter().find(|h| h.name == hook.name));
            let default = spec_hook.map_or(HookResult::Abandon, |h| h.default_result);
            let timeout = spec_hook
                .map(|h| format!(", heartbeat timeout {}s", h.heartbeat_timeout_seconds))
                .unwrap_or_default();
            let transition = match hook.transition {
                crate::api::HookTransition::Launch => "Launch",
                crate::api::HookTransition::Terminate => "Terminate",
            };
            out.push(Blocker::new(
                BlockerKind::HooksPending,
                format!(
                    "Waiting on the {transition} lifecycle hook \"{}\": it times out {} (at {}{timeout}) and then {} applies; complete it now with kubectl annotate inst/{name} {}{}=Continue",
                    hook.name,
                    time_left(now, hook.deadline.0),
                    at(hook.deadline.0),
                    match default {
                        HookResult::Continue => "Continue",
                        HookResult::Abandon => "Abandon",
                    },
                    crate::api::HOOK_PREFIX,
                    hook.name
                ),
            ));
        }
    }
    if state == LifecycleState::Terminating {
        let delay = group.map_or(30, |g| g.spec.replacement.deregistration_delay_seconds);
        let sentence = match &status.deregistered_at {
            Some(t) => {
                let end = t.0 + SignedDuration::from_secs(i64::from(delay));
                format!(
                    "Draining: out of service since {}; its Pod is terminated after the deregistration delay of {delay}s, {} (at {}).",
                    at(t.0),
                    time_left(now, end),
                    at(end)
                )
            }
            None => format!(
                "Leaving service: waiting for its Pod to lose the {} label; the deregistration delay of {delay}s counts from then.",
                crate::api::LABEL_IN_SERVICE
            ),
        };
        out.push(Blocker::new(BlockerKind::Draining, sentence));
    }
    if state.is_terminating() {
        return out;
    }
    if state == LifecycleState::Standby || marks.standby {
        out.push(Blocker::new(
            BlockerKind::Standby,
            format!(
                "In Standby ({}=true): out of service, still counted in capacity, and its health is not acted on; remove the annotation to return it to service.",
                crate::api::ANNOTATION_STANDBY
            ),
        ));
    }
    if marks.maintenance || status.health_detail == Some(HealthDetail::Maintaining) {
        out.push(Blocker::new(
            BlockerKind::Maintenance,
            format!(
                "In maintenance ({}=true): never replaced, whatever its health; remove the annotation to end it.",
                crate::api::ANNOTATION_MAINTENANCE
            ),
        ));
    }
    if state == LifecycleState::InService
        && let Some(g) = group
    {
        let grace = g.spec.health_check.grace_period_seconds;
        let since = status
            .entered(LifecycleState::InService)
            .map(|t| t.0)
            .or_else(|| instance.metadata.creation_timestamp.as_ref().map(|t| t.0));
        if grace > 0
            && let Some(end) = since.map(|s| s + SignedDuration::from_secs(i64::from(grace)))
            && end > now
        {
            let manual = if marks.health == Some(ManualHealth::Unhealthy) {
                if marks.respect_grace_period {
                    " It is marked Unhealthy by hand: the mark acts when the grace period ends (set-instance-health --respect-grace-period=false acts now)."
                } else {
                    " It is marked Unhealthy by hand with respect-grace-period=false: that mark acts now."
                }
            } else {
                ""
            };
            out.push(Blocker::new(
                BlockerKind::GracePeriod,
                format!(
                    "In the health check grace period for another {} (until {}, gracePeriodSeconds {grace}): no health verdict replaces it before then.{manual}",
                    human(super::seconds_between(now, end)),
                    at(end)
                ),
            ));
        }
    }
    out
}

fn cond_line(c: &Condition) -> String {
    format!("{} {} ({}): {}", c.type_, c.status, c.reason, c.message)
}

/// The threshold behind each signal, from the group's spec.
fn thresholds(group: &ScalingGroup, type_: &str) -> Option<String> {
    let hc = &group.spec.health_check;
    match type_ {
        t if t == CONDITION_PROBE => hc.probe.as_ref().map(|p| {
            let target = match (&p.http, &p.tcp) {
                (Some(h), _) => format!(
                    "HTTP GET :{}{} expecting {}",
                    h.port, h.path, h.expected_statuses
                ),
                (None, Some(t)) => format!("TCP connect :{}", t.port),
                _ => "no target".into(),
            };
            format!(
                "{target} every {}s, timeout {}s; Unhealthy after {} consecutive failures, Healthy after {} successes",
                p.interval_seconds,
                p.timeout_seconds,
                p.unhealthy_threshold,
                p.healthy_threshold
            )
        }),
        t if t == CONDITION_WORKLOAD => {
            let rules: Vec<String> = hc
                .unhealthy_conditions
                .iter()
                .map(|r| format!("{}={} for {}s", r.type_, r.status.as_str(), r.for_seconds))
                .collect();
            Some(format!(
                "Pod failed or gone, Node NotReady, Pending longer than startupTimeoutSeconds {}{}",
                hc.startup_timeout_seconds,
                if rules.is_empty() {
                    String::new()
                } else {
                    format!(", unhealthyConditions {}", rules.join(", "))
                }
            ))
        }
        t if t == CONDITION_CUSTOM => Some(format!(
            "the annotation {}=Unhealthy (set-instance-health)",
            crate::api::ANNOTATION_HEALTH
        )),
        t if t == CONDITION_HEALTHY => {
            Some(format!("gracePeriodSeconds {}", hc.grace_period_seconds))
        }
        _ => None,
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What the group does next with one Instance, given its blockers (instance's and group's).
fn instance_next(
    instance: &Instance,
    facts: Option<&GroupFacts<'_>>,
    blockers: &[Blocker],
    now: Timestamp,
) -> String {
    let name = instance.metadata.name.clone().unwrap_or_default();
    let status = instance.status.clone().unwrap_or_default();
    let state = status.lifecycle_state.unwrap_or(LifecycleState::Pending);
    let view = InstanceView::from_instance(instance);
    if state.is_terminating() || view.being_deleted {
        let why = status
            .termination_reason
            .clone()
            .or(view.termination_reason.clone())
            .unwrap_or_else(|| "deletion requested".into());
        let step = match state {
            LifecycleState::Terminating => "leaving service, then the deregistration delay",
            LifecycleState::TerminatingWait => "held by Terminate lifecycle hooks",
            LifecycleState::TerminatingProceed => {
                "its Pod is deleted (honouring its termination grace period); waiting until it is gone"
            }
            LifecycleState::Terminated => "done; the Instance object is being removed",
            _ => "it enters Terminating next",
        };
        return format!("It is leaving ({why}): {step}.");
    }
    let Some(facts) = facts else {
        return format!(
            "Its group {} was not found: nothing acts on it.",
            instance.spec.group_name
        );
    };
    if let Some(r) = facts
        .status
        .remediations
        .iter()
        .find(|r| r.instance == name && r.outcome == RemediationOutcome::InProgress)
    {
        return format!(
            "Being repaired: {} (step {}) started {} ({}){}.",
            r.action.as_str(),
            r.step + 1,
            super::ago(now, Some(r.started.0)),
            r.reason,
            r.replacement
                .as_ref()
                .map(|n| format!("; its replacement is {n}"))
                .unwrap_or_default()
        );
    }
    let unhealthy = status.health_status == Some(HealthStatus::Unhealthy);
    if !unhealthy {
        return match status.health_detail {
            Some(HealthDetail::OK) => format!("Nothing to do: it is {state} and Healthy (all signals pass)."),
            Some(HealthDetail::Initializing) => "Nothing to do yet: it is starting or in its grace period.".into(),
            Some(HealthDetail::InsufficientData) => "Nothing to do yet: the probe has not produced enough results.".into(),
            Some(HealthDetail::Warning) => "Nothing to do yet: a signal is failing below its threshold; it turns Unhealthy if it keeps failing.".into(),
            Some(HealthDetail::Maintaining) => "Nothing: it is in maintenance.".into(),
            Some(HealthDetail::NotApplicable) => "Nothing: its health is not acted on.".into(),
            _ => "Nothing to do: it is Healthy.".into(),
        };
    }
    let (action, index) = facts.next_action(&name);
    let escalated = if index > 0 {
        format!(
            ", step {} of spec.repair.actions after the previous one left it Unhealthy",
            index + 1
        )
    } else {
        String::new()
    };
    let (does, would) = match action {
        RepairAction::Restart => (
            "restarts its Pod in place (repair action Restart)",
            "restart its Pod in place (repair action Restart)",
        ),
        RepairAction::Replace => (
            "replaces it (terminates it and launches a new Instance)",
            "replace it (terminate it and launch a new Instance)",
        ),
    };
    if blockers.is_empty() {
        if facts.in_flight.contains(&name) {
            return "Its replacement is in flight.".into();
        }
        return format!("The group {does}{escalated} at its next reconcile.");
    }
    format!(
        "The group would {would}{escalated}, but {} keep{} it from doing so now:",
        plural(blockers.len(), "reason", "reasons"),
        if blockers.len() == 1 { "s" } else { "" }
    )
}

/// `kubectl autoheal why inst/NAME`.
pub fn why_instance(
    instance: &Instance,
    group: Option<&ScalingGroup>,
    siblings: &[Instance],
    events: &[EventView],
    now: Timestamp,
) -> String {
    let name = instance.metadata.name.clone().unwrap_or_default();
    let status = instance.status.clone().unwrap_or_default();
    let state = status.lifecycle_state.unwrap_or(LifecycleState::Pending);
    let facts = group.map(|g| GroupFacts::new(g, siblings));
    let mut out = format!(
        "Instance {name} (group {}): {state}, {} ({})\n",
        instance.spec.group_name,
        status
            .health_status
            .map_or("health not evaluated yet", |h| match h {
                HealthStatus::Healthy => "Healthy",
                HealthStatus::Unhealthy => "Unhealthy",
            }),
        status
            .health_detail
            .map_or("-".to_string(), |d| format!("{d:?}"))
    );
    if let Some(c) = find(&status.conditions, CONDITION_HEALTHY) {
        out.push_str(&format!(
            "Verdict: {} ({}): {}\n",
            if c.status == "True" {
                "Healthy"
            } else {
                "Unhealthy"
            },
            c.reason,
            c.message
        ));
    }
    out.push_str("Signals:\n");
    for t in [CONDITION_WORKLOAD, CONDITION_PROBE, CONDITION_CUSTOM] {
        match find(&status.conditions, t) {
            Some(c) => out.push_str(&format!("  {}\n", cond_line(c))),
            None => out.push_str(&format!("  {t}: not evaluated yet\n")),
        }
        if let Some(th) = group.and_then(|g| thresholds(g, t)) {
            out.push_str(&format!("    threshold: {th}\n"));
        }
    }
    if status.restart_count > 0 {
        out.push_str(&format!("Restarts: {}\n", status.restart_count));
    }
    let mut blockers = instance_blockers(instance, group, now);
    let unhealthy = status.health_status == Some(HealthStatus::Unhealthy);
    if let Some(f) = &facts {
        for b in f.blockers(now) {
            let group_wide = matches!(
                b.kind,
                BlockerKind::Paused
                    | BlockerKind::Suspended
                    | BlockerKind::DryRun
                    | BlockerKind::RequestRefused
            );
            let relevant = match b.kind {
                BlockerKind::MaxInFlight => unhealthy && !f.in_flight.contains(&name),
                _ => unhealthy || group_wide,
            };
            if relevant && !state.is_terminating() {
                blockers.push(b);
            }
        }
    }
    out.push_str(&format!(
        "Next: {}\n",
        instance_next(instance, facts.as_ref(), &blockers, now)
    ));
    for b in &blockers {
        out.push_str(&format!("  - {}\n", b.sentence));
    }
    out.push_str(&events_section(events, now, 10));
    out
}

/// `kubectl autoheal why sg/NAME`: why the group is not Ready, why a refresh waits, why
/// nothing is repaired.
pub fn why_group(
    group: &ScalingGroup,
    instances: &[Instance],
    events: &[EventView],
    now: Timestamp,
) -> String {
    let facts = GroupFacts::new(group, instances);
    let st = &facts.status;
    let mut out = String::new();
    let ready = facts.condition(CONDITION_READY);
    out.push_str(&format!(
        "ScalingGroup {}: {}\n",
        facts.name,
        match ready {
            Some(c) if c.status == "True" => "Ready".to_string(),
            Some(c) => format!("not Ready ({}): {}", c.reason, c.message),
            None => "not Ready: the operator has not reported on it yet".into(),
        }
    ));
    out.push_str(&format!(
        "Capacity: desired {}, current {}, in service {}, healthy {}, unhealthy {}, up to date {}{}\n",
        group.spec.effective_desired(),
        st.current_capacity,
        st.in_service_instances,
        st.healthy_instances,
        st.unhealthy_instances,
        st.updated_instances,
        st.current_revision
            .as_ref()
            .map(|r| format!(" (revision {r})"))
            .unwrap_or_default()
    ));
    out.push_str(&format!(
        "Limits: maxUnhealthy {}, maxInFlight {}, maxConsecutiveFailures {}, repair {} ({})\n",
        facts
            .limits
            .max_unhealthy
            .map_or("unlimited".to_string(), |m| m.to_string()),
        facts.limits.max_in_flight,
        facts.limits.max_consecutive_failures,
        group
            .spec
            .repair
            .actions
            .iter()
            .map(|a| a.action.as_str())
            .collect::<Vec<_>>()
            .join(" then "),
        match group.spec.repair.mode {
            RepairMode::Auto => "Auto",
            RepairMode::DryRun => "DryRun",
        }
    ));

    let mut sorted: Vec<&Instance> = instances.iter().collect();
    sorted.sort_by_key(|i| i.metadata.name.clone());
    let not_ok: Vec<&Instance> = sorted
        .into_iter()
        .filter(|i| {
            let s = i.status.clone().unwrap_or_default();
            !(s.lifecycle_state == Some(LifecycleState::InService)
                && s.health_status == Some(HealthStatus::Healthy)
                && s.health_detail == Some(HealthDetail::OK))
        })
        .collect();
    if not_ok.is_empty() {
        out.push_str("Instances: all InService, Healthy and OK\n");
    } else {
        out.push_str("Instances not InService, Healthy and OK:\n");
        for i in &not_ok {
            let s = i.status.clone().unwrap_or_default();
            let evidence = find(&s.conditions, CONDITION_HEALTHY)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            out.push_str(&format!(
                "  {} {} {} {}: {}\n",
                i.metadata.name.as_deref().unwrap_or_default(),
                s.lifecycle_state.unwrap_or(LifecycleState::Pending),
                s.health_status
                    .map_or("-".to_string(), |h| format!("{h:?}")),
                s.health_detail
                    .map_or("-".to_string(), |d| format!("{d:?}")),
                evidence
            ));
            for b in instance_blockers(i, Some(group), now) {
                out.push_str(&format!("    - {}\n", b.sentence));
            }
        }
    }

    let blockers = facts.blockers(now);
    out.push_str("Repair: ");
    if facts.candidates.is_empty() && blockers.is_empty() {
        out.push_str("nothing to repair.\n");
    } else if facts.candidates.is_empty() {
        out.push_str("nothing to repair now; if an instance turns Unhealthy:\n");
    } else if blockers.is_empty() {
        let waiting: Vec<&String> = facts
            .candidates
            .iter()
            .filter(|c| !facts.in_flight.contains(c))
            .collect();
        if waiting.is_empty() {
            out.push_str(&format!(
                "{} in flight ({}).\n",
                plural(facts.in_flight.len(), "replacement", "replacements"),
                facts.in_flight.join(", ")
            ));
        } else {
            out.push_str(&format!(
                "{} Unhealthy ({}): repaired at the next reconcile.\n",
                plural(facts.candidates.len(), "instance", "instances"),
                facts.candidates.join(", ")
            ));
        }
    } else {
        out.push_str(&format!(
            "{} Unhealthy ({}), not repaired because:\n",
            plural(facts.candidates.len(), "instance is", "instances are"),
            facts.candidates.join(", ")
        ));
    }
    for b in &blockers {
        out.push_str(&format!("  - {}\n", b.sentence));
    }

    out.push_str(&refresh_section(&facts, now));
    let mut conditions = st.conditions.clone();
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    if !conditions.is_empty() {
        out.push_str("Conditions:\n");
        for c in &conditions {
            out.push_str(&format!("  {}\n", cond_line(c)));
        }
    }
    out.push_str(&events_section(events, now, 10));
    out
}

/// Where an instance refresh stands, and what it waits for.
fn refresh_section(facts: &GroupFacts<'_>, now: Timestamp) -> String {
    let st = &facts.status;
    let spec = &facts.group.spec;
    let outdated = facts
        .views
        .iter()
        .filter(|v| v.counts_toward_capacity())
        .filter(|v| st.current_revision.is_some() && v.placement.revision != st.current_revision)
        .count();
    match &st.refresh {
        Some(r) if r.status.is_running() => {
            let mut s = format!(
                "Refresh: to revision {} is {} ({}% complete, {} to update)",
                r.target_revision,
                r.status.as_str(),
                r.percentage_complete,
                r.instances_to_update
            );
            if !r.message.is_empty() {
                s.push_str(&format!(": {}", r.message));
            }
            s.push('\n');
            if let Some(until) = r
                .checkpoint_until
                .as_ref()
                .map(|t| t.0)
                .filter(|t| *t > now)
            {
                s.push_str(&format!(
                    "  - It waits at checkpoint {}% until {} ({}).\n",
                    r.checkpoint.unwrap_or_default(),
                    at(until),
                    time_left(now, until)
                ));
            }
            if let Some(until) = r.bake_until.as_ref().map(|t| t.0).filter(|t| *t > now) {
                s.push_str(&format!(
                    "  - It bakes until {} ({}): a replacement turning Unhealthy before then fails it.\n",
                    at(until),
                    time_left(now, until)
                ));
            }
            if r.status == RefreshState::Pending || facts.paused {
                if facts.paused {
                    s.push_str("  - It waits because the group is paused.\n");
                }
                let needed: Vec<&str> = [
                    (Process::Launch, "Launch"),
                    (Process::Terminate, "Terminate"),
                ]
                .into_iter()
                .filter(|(p, _)| spec.is_suspended(*p))
                .map(|(_, n)| n)
                .collect();
                if !needed.is_empty() {
                    s.push_str(&format!(
                        "  - It waits because the process{} {} {} suspended.\n",
                        if needed.len() > 1 { "es" } else { "" },
                        needed.join(", "),
                        if needed.len() > 1 { "are" } else { "is" }
                    ));
                }
            }
            s
        }
        Some(r) => {
            let mut s = format!(
                "Refresh: the last one (to revision {}) ended {}",
                r.target_revision,
                r.status.as_str()
            );
            if !r.message.is_empty() {
                s.push_str(&format!(": {}", r.message));
            }
            s.push('\n');
            if outdated > 0 && spec.refresh.trigger == RefreshTrigger::Manual {
                s.push_str(&manual_hint(outdated));
            }
            s
        }
        None if outdated > 0 && spec.refresh.trigger == RefreshTrigger::Manual => {
            format!("Refresh: none running.\n{}", manual_hint(outdated))
        }
        None => "Refresh: none.\n".into(),
    }
}

fn manual_hint(outdated: usize) -> String {
    format!(
        "  - {} on an older revision; refresh.trigger is Manual: annotate the group {}=<new value> to start a refresh.\n",
        plural(outdated, "instance runs", "instances run"),
        crate::api::ANNOTATION_REFRESH
    )
}
