//! Step 1 of the planner: judge past replacements.
//!
//! Every Instance annotated `autoheal.dev/replaces` is judged exactly once: it *failed* if it
//! turned Unhealthy before its health-check grace period after entering InService ended with
//! an `OK` verdict, and *succeeded* once it is InService, Healthy with detail `OK` and its grace
//! period has ended. Only replacements launched from the current template count: a failure
//! increments the failure count, a success resets it. A template change, or a new value of the
//! group's reset annotation, clears the count.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::{
    EventType, Index, Limits, MAX_JUDGED, MAX_RECENT_FAILURES, PlannedEvent, ReplacementInputs,
    ReplacementMemory, add, earliest, excluded, time_until,
};
use crate::api::names::reason;
use crate::api::{HealthDetail, HealthStatus, LifecycleState, Process};
use crate::plan::InstanceView;

/// What judging past replacements yields.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// The memory to carry on with: judged names, the failure count and its template, the
    /// recent failures, the reset value honoured.
    pub memory: ReplacementMemory,
    /// `ReplacementFailed`, `ReplacementSucceeded` and `FailuresReset` Events, in order.
    pub events: Vec<PlannedEvent>,
    /// When a replacement's grace period ends, so that it is judged then.
    pub requeue_after: Option<Duration>,
}

/// Step 1: judges past replacements into the memory the next steps use.
///
/// Forgets what is gone ([`forget_gone`]), clears the failure count on a template change or a
/// reset request ([`reset_failures`]), then, unless the group is paused or its `HealthCheck`
/// process is suspended (verdicts are then not acted on), judges every replacement not judged
/// yet ([`judge_replacements`]).
pub fn judge(inputs: &ReplacementInputs<'_>, limits: &Limits, index: &Index<'_>) -> Judged {
    let spec = inputs.spec;
    let mut memory = inputs.memory.clone();
    forget_gone(&mut memory, index);
    let mut events = reset_failures(&mut memory, inputs.template_hash, inputs.reset_request);
    let mut requeue_after = None;
    if !inputs.paused && !spec.is_suspended(Process::HealthCheck) {
        let grace =
            SignedDuration::from_secs(i64::from(spec.health_check.grace_period_seconds.max(0)));
        let (judged, next) = judge_replacements(
            &mut memory,
            index,
            inputs.template_hash,
            grace,
            limits.max_consecutive_failures,
            inputs.now,
        );
        events.extend(judged);
        requeue_after = next;
    }
    Judged {
        memory,
        events,
        requeue_after,
    }
}

/// Forgets the judged names of Instances that are gone and repeated names, keeps at most
/// [`MAX_JUDGED`] (the most recent), and reads a negative failure count as 0.
pub fn forget_gone(memory: &mut ReplacementMemory, index: &Index<'_>) {
    let mut seen = BTreeSet::new();
    memory
        .judged
        .retain(|n| index.contains_key(n.as_str()) && seen.insert(n.clone()));
    keep_most_recent_judged(memory);
    memory.consecutive_failures = memory.consecutive_failures.max(0);
}

/// Drops the oldest judged names beyond [`MAX_JUDGED`].
fn keep_most_recent_judged(memory: &mut ReplacementMemory) {
    if memory.judged.len() > MAX_JUDGED {
        let excess = memory.judged.len() - MAX_JUDGED;
        memory.judged.drain(..excess);
    }
}

/// Clears the failure count when the template changed since the failures were counted, or when
/// the group's `autoheal.dev/reset-replacement-failures` value (`reset_request`) was not
/// honoured before (the value is then remembered, even without failures to clear). Returns a
/// `FailuresReset` Event per clearing.
pub fn reset_failures(
    memory: &mut ReplacementMemory,
    template_hash: &str,
    reset_request: Option<&str>,
) -> Vec<PlannedEvent> {
    let mut events = Vec::new();
    if memory.consecutive_failures > 0
        && memory
            .failing_template_hash
            .as_deref()
            .is_some_and(|h| h != template_hash)
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
        clear_failures(memory);
    }
    if let Some(token) = reset_request
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
            clear_failures(memory);
        }
    }
    events
}

/// Forgets the failure count, its template and the recent failures.
fn clear_failures(memory: &mut ReplacementMemory) {
    memory.consecutive_failures = 0;
    memory.failing_template_hash = None;
    memory.recent_failures.clear();
}

/// The outcome of judging one replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// It turned Unhealthy.
    Failed,
    /// InService, Healthy with detail `OK`, its grace period over.
    Succeeded,
    /// It left (being deleted or Terminating) without turning Unhealthy: it does not count.
    Abandoned,
    /// Not decided yet; judge again at the given time, if known (the end of its grace period).
    Pending(Option<Timestamp>),
}

/// Judges one replacement Instance `r`, whose health-check grace period lasts `grace` after it
/// entered InService.
pub fn judgement(r: &InstanceView, grace: SignedDuration, now: Timestamp) -> Judgement {
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

/// Judges every replacement of `index` not judged yet, oldest first, and records the decided
/// ones in `memory.judged`. Failures and successes of replacements launched from the current
/// template (`template_hash`, or no recorded hash) update the failure count and emit an Event;
/// those of an older template are only recorded. Returns the Events and when the next
/// undecided replacement's grace period ends.
pub fn judge_replacements(
    memory: &mut ReplacementMemory,
    index: &Index<'_>,
    template_hash: &str,
    grace: SignedDuration,
    max_consecutive_failures: i32,
    now: Timestamp,
) -> (Vec<PlannedEvent>, Option<Duration>) {
    let mut events = Vec::new();
    let mut requeue_after = None;
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
            .is_none_or(|h| h == template_hash);
        let old = r.replaces.as_deref().unwrap_or_default();
        match judgement(r, grace, now) {
            Judgement::Pending(until) => {
                if let Some(t) = until {
                    requeue_after = earliest(requeue_after, time_until(now, t));
                }
                continue;
            }
            Judgement::Abandoned => {}
            Judgement::Failed if current => {
                memory.consecutive_failures = memory.consecutive_failures.saturating_add(1);
                memory.failing_template_hash = Some(template_hash.to_string());
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
                        max_consecutive_failures
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
                clear_failures(memory);
            }
            Judgement::Failed | Judgement::Succeeded => {}
        }
        memory.judged.push(r.name.clone());
    }
    keep_most_recent_judged(memory);
    (events, requeue_after)
}
