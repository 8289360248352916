//! The lifecycle state machine of one Instance: `next(facts, now) -> Step`. Pure: no I/O,
//! time is an input.
//!
//! ```text
//!  (none) ─▶ Pending ─▶ [Pending:Wait] ─▶ InService ◀─▶ Standby
//!               │             │  Abandon       │           │
//!               ▼             ▼                ▼           ▼
//!            Terminating ─▶ [Terminating:Wait] ─▶ Terminating:Proceed ─▶ Terminated
//! ```
//!
//! A [`Step`] carries the new lifecycle [`Record`] (what the Instance reconciler writes to
//! status) and at most one [`PodAction`] that must be taken *after* that record is stored.
//! Every action is idempotent and derived from the recorded state and the observed facts
//! alone, so a restarted operator resumes from status: it neither repeats a transition (the
//! record already holds it) nor skips one (the action of the recorded state is computed
//! again until its effect is observed).
//!
//! Timed waits (deregistration delay, hook timeouts) report the exact instant to come back
//! in [`Step::wake_at`]. Recorded times are rounded *up* to whole seconds, the precision of
//! `metav1.Time`, so a deadline computed from a recorded time is never earlier than the one
//! computed from the true time.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::annotations::{self, AnnotationError};
use crate::api::{
    HookResult, HookTransition, InstanceStatus, LifecycleHook, LifecycleState, PendingHook,
    RestartRecord, StateEntry,
};

/// Why an Instance is leaving (written to `status.terminationReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TerminationReason {
    /// The group scaled in.
    ScaleIn,
    /// The Instance was Unhealthy and is being replaced.
    Unhealthy,
    /// The group is being deleted.
    GroupDeleted,
    /// A Launch lifecycle hook ended with Abandon.
    LaunchAbandoned,
    /// Deleted by someone else (`kubectl delete inst`): terminated and replaced.
    Deleted,
    /// Replaced by an instance refresh (or its rollback).
    Refresh,
    /// Older than the group's `maxInstanceLifetimeSeconds`.
    MaxInstanceLifetime,
}

impl TerminationReason {
    /// The reason as written in status and annotations.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScaleIn => "ScaleIn",
            Self::Unhealthy => "Unhealthy",
            Self::GroupDeleted => "GroupDeleted",
            Self::LaunchAbandoned => "LaunchAbandoned",
            Self::Deleted => "Deleted",
            Self::Refresh => "Refresh",
            Self::MaxInstanceLifetime => "MaxInstanceLifetime",
        }
    }

    /// Parses a reason written by [`TerminationReason::as_str`].
    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::ScaleIn,
            Self::Unhealthy,
            Self::GroupDeleted,
            Self::LaunchAbandoned,
            Self::Deleted,
            Self::Refresh,
            Self::MaxInstanceLifetime,
        ]
        .into_iter()
        .find(|r| r.as_str() == value.trim())
    }

    /// Why a deleted Instance is terminating: the reason its group annotated it with, else
    /// GroupDeleted when its group is being deleted or gone, else Unhealthy when its recorded
    /// health says so, else Deleted.
    pub fn for_deletion(
        annotation: Option<&str>,
        group_gone_or_deleting: bool,
        unhealthy: bool,
    ) -> Self {
        if let Some(reason) = annotation.and_then(Self::parse) {
            reason
        } else if group_gone_or_deleting {
            Self::GroupDeleted
        } else if unhealthy {
            Self::Unhealthy
        } else {
            Self::Deleted
        }
    }
}

impl std::fmt::Display for TerminationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The lifecycle-owned part of an Instance's status.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    /// `status.lifecycleState` (`None` before the first reconcile).
    pub state: Option<LifecycleState>,
    /// `status.stateHistory`.
    pub history: Vec<StateEntry>,
    /// `status.pendingHooks`.
    pub hooks: Vec<PendingHook>,
    /// `status.terminationReason`.
    pub termination_reason: Option<String>,
    /// `status.deregisteredAt`.
    pub deregistered_at: Option<Time>,
    /// `status.restart`: the latest Pod restart.
    pub restart: Option<RestartRecord>,
    /// `status.restartCount`.
    pub restart_count: i32,
}

/// The most `status.stateHistory` entries kept.
pub const MAX_STATE_HISTORY: usize = 32;

impl Record {
    /// The record held in a status.
    pub fn from_status(status: &InstanceStatus) -> Self {
        Self {
            state: status.lifecycle_state,
            history: status.state_history.clone(),
            hooks: status.pending_hooks.clone(),
            termination_reason: status.termination_reason.clone(),
            deregistered_at: status.deregistered_at.clone(),
            restart: status.restart.clone(),
            restart_count: status.restart_count,
        }
    }

    /// Writes the record into a status (other fields untouched).
    pub fn apply_to(&self, status: &mut InstanceStatus) {
        status.lifecycle_state = self.state;
        status.state_history = self.history.clone();
        status.pending_hooks = self.hooks.clone();
        status.termination_reason = self.termination_reason.clone();
        status.deregistered_at = self.deregistered_at.clone();
        status.restart = self.restart.clone();
        status.restart_count = self.restart_count;
    }

    /// When the state was last entered.
    pub fn entered(&self, state: LifecycleState) -> Option<Timestamp> {
        self.history
            .iter()
            .rev()
            .find(|e| e.state == state)
            .map(|e| e.entered_at.0)
    }

    fn was_in_service(&self) -> bool {
        self.history
            .iter()
            .any(|e| e.state == LifecycleState::InService)
    }

    /// Records entering `state`. The history keeps its first entry (the launch) and the
    /// latest [`MAX_STATE_HISTORY`] − 1, so an Instance toggled in and out of Standby forever
    /// does not grow its status without bound.
    fn enter(&mut self, state: LifecycleState, reason: &str, now: Timestamp) {
        self.state = Some(state);
        self.history.push(StateEntry {
            state,
            entered_at: Time(now),
            reason: Some(reason.to_string()),
        });
        if self.history.len() > MAX_STATE_HISTORY {
            self.history.remove(1);
        }
    }
}

/// What is known of the Instance's Pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PodFacts {
    /// The Pod exists.
    pub exists: bool,
    /// Its phase is Running.
    pub running: bool,
    /// It carries `autoheal.dev/in-service: "true"`.
    pub in_service_label: bool,
    /// Its deletion has been requested.
    pub being_deleted: bool,
}

/// Everything the state machine looks at.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The recorded lifecycle.
    pub record: &'a Record,
    /// The Instance's annotations (hook completions and heartbeats, standby).
    pub annotations: &'a BTreeMap<String, String>,
    /// `Some(reason)` once termination was requested (the Instance is being deleted).
    pub termination_requested: Option<TerminationReason>,
    /// The group's lifecycle hooks (empty when the group is gone).
    pub hooks: &'a [LifecycleHook],
    /// The group's `deregistrationDelaySeconds` (0 when the group is gone).
    pub deregistration_delay_seconds: i64,
    /// The group's `AddToService` process is suspended.
    pub add_to_service_suspended: bool,
    /// The Pod.
    pub pod: PodFacts,
    /// The Pod's UID, when it exists.
    pub pod_uid: Option<&'a str>,
    /// The `autoheal.dev/restart` annotation: the Pod restart the group asks for.
    pub restart_request: Option<&'a str>,
}

/// What to do to the world once the step's record is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodAction {
    /// Create the Pod from the Instance's template; with `in_service`, already labelled
    /// `autoheal.dev/in-service: "true"` (see [`joins_service_at_creation`]).
    CreatePod {
        /// The Pod is created with the in-service label.
        in_service: bool,
    },
    /// Add `autoheal.dev/in-service: "true"` to the Pod.
    AddToService,
    /// Remove `autoheal.dev/in-service` from the Pod.
    RemoveFromService,
    /// Delete the Pod (its own termination grace period applies).
    DeletePod,
    /// Delete the Instance (if not already deleted) and remove its finalizer.
    Finish,
}

/// Something worth an Event.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// A lifecycle state was entered.
    Entered {
        /// The state.
        state: LifecycleState,
        /// Why.
        reason: String,
    },
    /// The Pod was seen out of service; the deregistration delay starts.
    Deregistered {
        /// When the delay ends (`None` when no delay applies).
        delay_ends: Option<Timestamp>,
    },
    /// A hook was completed by its annotation.
    HookCompleted {
        /// The hook.
        hook: String,
        /// The result.
        result: HookResult,
    },
    /// A hook timed out and took its default result.
    HookTimedOut {
        /// The hook.
        hook: String,
        /// The default result applied.
        result: HookResult,
    },
    /// A hook no longer exists in the group and counts as Continue.
    HookRemoved {
        /// The hook.
        hook: String,
    },
    /// A new heartbeat moved a hook's timeout.
    HookHeartbeat {
        /// The hook.
        hook: String,
        /// The new deadline.
        deadline: Timestamp,
    },
    /// An annotation value could not be understood (ignored).
    InvalidAnnotation(AnnotationError),
}

/// The outcome of one call to [`next`].
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The lifecycle record to store (equal to the input when nothing changed).
    pub record: Record,
    /// The action to take after the record is stored.
    pub action: Option<PodAction>,
    /// When to look again, for a timed wait.
    pub wake_at: Option<Timestamp>,
    /// Events to report.
    pub notes: Vec<Note>,
}

/// Rounds up to the next whole second (`metav1.Time` precision).
pub fn ceil_to_second(t: Timestamp) -> Timestamp {
    let secs = t.as_second() + i64::from(t.subsec_nanosecond() > 0);
    Timestamp::from_second(secs).unwrap_or(Timestamp::MAX)
}

fn plus_seconds(t: Timestamp, seconds: i64) -> Timestamp {
    t.checked_add(SignedDuration::from_secs(seconds.max(0)))
        .unwrap_or(Timestamp::MAX)
}

/// How many transitions one step may chain at most (a bound, never reached in practice).
const MAX_CHAIN: usize = 8;

/// The next step of the Instance's lifecycle.
///
/// Transitions chain within one step while no action must happen between them (for example
/// `Terminating` → `Terminating:Proceed` when the Pod is already out of service and no delay
/// or hook applies); the chain stops at the first state whose action is still to be taken.
pub fn next(facts: &Facts<'_>, now: Timestamp) -> Step {
    let now = ceil_to_second(now);
    let mut step = Step {
        record: facts.record.clone(),
        action: None,
        wake_at: None,
        notes: Vec::new(),
    };
    for _ in 0..MAX_CHAIN {
        let before = step.record.state;
        step.wake_at = None;
        advance(facts, &mut step, now);
        step.action = action_for(facts, &step.record);
        if step.record.state == before || step.action.is_some() {
            break;
        }
    }
    step
}

/// The action the state `record.state` requires given the facts (idempotent).
fn action_for(facts: &Facts<'_>, record: &Record) -> Option<PodAction> {
    use LifecycleState::*;
    let pod = facts.pod;
    match record.state? {
        Pending if is_old_pod(facts, record) => {
            // A restart: the old Pod leaves service, then goes (its grace period honoured).
            if pod.in_service_label {
                Some(PodAction::RemoveFromService)
            } else if !pod.being_deleted {
                Some(PodAction::DeletePod)
            } else {
                None
            }
        }
        Pending if !pod.exists => Some(PodAction::CreatePod {
            in_service: joins_service_at_creation(facts),
        }),
        // Created in service, then a Launch hook, AddToService's suspension or standby came
        // while it starts: out of service until InService (or the hooks) say otherwise.
        Pending => {
            (pod.in_service_label && !pod.being_deleted && !joins_service_at_creation(facts))
                .then_some(PodAction::RemoveFromService)
        }
        // Launch hooks added after the Pod was created in service: out until they complete.
        PendingWait => (pod.exists && pod.in_service_label).then_some(PodAction::RemoveFromService),
        InService => (pod.exists
            && !pod.being_deleted
            && !pod.in_service_label
            && !facts.add_to_service_suspended)
            .then_some(PodAction::AddToService),
        Standby | Terminating | TerminatingWait => {
            (pod.exists && pod.in_service_label).then_some(PodAction::RemoveFromService)
        }
        TerminatingProceed => (pod.exists && !pod.being_deleted).then_some(PodAction::DeletePod),
        Terminated => Some(PodAction::Finish),
    }
}

/// Whether a Pod created now carries the in-service label from its creation: when nothing
/// stands between its Instance's Pending and InService but the Pod running (no Launch hook,
/// `AddToService` not suspended, no standby asked for). A Pod receives traffic only once it
/// is Ready, which it is not before it runs, so the label is there when it matters, without
/// a label write of its own after the Instance enters InService (a sixth of a launch's API
/// writes).
pub fn joins_service_at_creation(facts: &Facts<'_>) -> bool {
    !facts.add_to_service_suspended
        && !facts
            .hooks
            .iter()
            .any(|h| h.transition == HookTransition::Launch)
        && !standby_requested(facts.annotations)
}

fn standby_requested(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .get(crate::api::names::ANNOTATION_STANDBY)
        .and_then(|v| annotations::parse_bool(v))
        .unwrap_or(false)
}

/// The restart token the group asks for and this Instance has not recorded yet.
fn new_restart_request<'a>(facts: &Facts<'a>, record: &Record) -> Option<&'a str> {
    let token = facts.restart_request?.trim();
    let recorded = record.restart.as_ref().map(|r| r.token.as_str());
    (!token.is_empty() && recorded != Some(token)).then_some(token)
}

/// Whether the Pod is the one a recorded restart replaces.
fn is_old_pod(facts: &Facts<'_>, record: &Record) -> bool {
    facts.pod.exists
        && record
            .restart
            .as_ref()
            .and_then(|r| r.old_pod_uid.as_deref())
            .is_some_and(|old| Some(old) == facts.pod_uid)
}

/// Records a restart (before the old Pod is touched) and re-enters Pending.
fn start_restart(facts: &Facts<'_>, step: &mut Step, token: &str, now: Timestamp) {
    step.record.restart = Some(RestartRecord {
        token: token.to_string(),
        started_at: Time(now),
        old_pod_uid: facts
            .pod_uid
            .filter(|_| facts.pod.exists && !facts.pod.being_deleted)
            .map(str::to_string),
        pod_running_at: None,
    });
    step.record.restart_count = step.record.restart_count.saturating_add(1);
    enter(
        step,
        LifecycleState::Pending,
        crate::api::REASON_RESTART,
        now,
    );
}

fn start_termination(step: &mut Step, reason: TerminationReason, now: Timestamp) {
    step.record.termination_reason = Some(reason.as_str().to_string());
    enter(step, LifecycleState::Terminating, reason.as_str(), now);
}

/// The reason of the first state, Pending, of an Instance the group launched.
pub const REASON_LAUNCHED: &str = "Launched";

fn enter(step: &mut Step, state: LifecycleState, reason: &str, now: Timestamp) {
    step.record.enter(state, reason, now);
    step.notes.push(Note::Entered {
        state,
        reason: reason.to_string(),
    });
}

/// Makes at most one transition (or records progress within the current state).
fn advance(facts: &Facts<'_>, step: &mut Step, now: Timestamp) {
    use LifecycleState::*;
    let requested = facts.termination_requested;
    match step.record.state {
        None => match requested {
            Some(reason) => start_termination(step, reason, now),
            None => enter(step, Pending, REASON_LAUNCHED, now),
        },
        Some(Pending) => {
            let restarting = step
                .record
                .restart
                .as_ref()
                .is_some_and(|r| r.pod_running_at.is_none());
            if let Some(reason) = requested {
                start_termination(step, reason, now);
            } else if let Some(token) = new_restart_request(facts, &step.record) {
                start_restart(facts, step, token, now);
            } else if facts.pod.exists
                && facts.pod.running
                && !facts.pod.being_deleted
                && !is_old_pod(facts, &step.record)
                && restarting
            {
                if let Some(r) = step.record.restart.as_mut() {
                    r.pod_running_at = Some(Time(now));
                }
                enter(step, InService, crate::api::REASON_RESTARTED, now);
            } else if facts.pod.exists
                && facts.pod.running
                && !facts.pod.being_deleted
                && !is_old_pod(facts, &step.record)
            {
                if facts
                    .hooks
                    .iter()
                    .any(|h| h.transition == HookTransition::Launch)
                {
                    step.record.hooks = open_hooks(facts, HookTransition::Launch, now);
                    enter(step, PendingWait, "LaunchHooks", now);
                } else {
                    enter(step, InService, "PodRunning", now);
                }
            }
        }
        Some(PendingWait) => {
            if let Some(reason) = requested {
                start_termination(step, reason, now);
                return;
            }
            match resolve_hooks(facts, step, HookTransition::Launch, now) {
                Hooks::Waiting(deadline) => step.wake_at = deadline,
                Hooks::Done { abandoned: true } => {
                    start_termination(step, TerminationReason::LaunchAbandoned, now)
                }
                Hooks::Done { abandoned: false } => {
                    enter(step, InService, "LaunchHooksCompleted", now)
                }
            }
        }
        Some(InService) => {
            if let Some(reason) = requested {
                start_termination(step, reason, now);
            } else if let Some(token) = new_restart_request(facts, &step.record) {
                start_restart(facts, step, token, now);
            } else if standby_requested(facts.annotations) {
                enter(step, Standby, "StandbyRequested", now);
            }
        }
        Some(Standby) => {
            if let Some(reason) = requested {
                start_termination(step, reason, now);
            } else if !standby_requested(facts.annotations) {
                enter(step, InService, "StandbyEnded", now);
            }
        }
        Some(Terminating) => {
            if facts.pod.exists && facts.pod.in_service_label {
                // The label removal (this state's action) has not been observed yet.
                return;
            }
            let drains = facts.pod.exists
                && step.record.was_in_service()
                && facts.deregistration_delay_seconds > 0;
            let deregistered_at = match &step.record.deregistered_at {
                Some(t) => t.0,
                None => {
                    step.record.deregistered_at = Some(Time(now));
                    step.notes.push(Note::Deregistered {
                        delay_ends: drains
                            .then(|| plus_seconds(now, facts.deregistration_delay_seconds)),
                    });
                    now
                }
            };
            if drains {
                let ends = plus_seconds(deregistered_at, facts.deregistration_delay_seconds);
                if now < ends {
                    step.wake_at = Some(ends);
                    return;
                }
            }
            if facts
                .hooks
                .iter()
                .any(|h| h.transition == HookTransition::Terminate)
            {
                step.record.hooks = open_hooks(facts, HookTransition::Terminate, now);
                enter(step, TerminatingWait, "TerminateHooks", now);
            } else {
                enter(step, TerminatingProceed, "Deregistered", now);
            }
        }
        Some(TerminatingWait) => match resolve_hooks(facts, step, HookTransition::Terminate, now) {
            Hooks::Waiting(deadline) => step.wake_at = deadline,
            Hooks::Done { .. } => enter(step, TerminatingProceed, "TerminateHooksCompleted", now),
        },
        Some(TerminatingProceed) => {
            if !facts.pod.exists {
                enter(step, Terminated, "PodGone", now);
            }
        }
        Some(Terminated) => {}
    }
}

/// The hooks of `transition` as they start waiting now.
fn open_hooks(facts: &Facts<'_>, transition: HookTransition, now: Timestamp) -> Vec<PendingHook> {
    facts
        .hooks
        .iter()
        .filter(|h| h.transition == transition)
        .map(|h| PendingHook {
            name: h.name.clone(),
            transition,
            started_at: Time(now),
            deadline: Time(plus_seconds(now, h.heartbeat_timeout_seconds.into())),
            // A heartbeat value present before the wait began is not a heartbeat.
            last_heartbeat: facts
                .annotations
                .get(&annotations::heartbeat_key(&h.name))
                .cloned(),
            result: None,
        })
        .collect()
}

enum Hooks {
    /// Some hook still waits; the earliest deadline.
    Waiting(Option<Timestamp>),
    /// All hooks have a result.
    Done { abandoned: bool },
}

/// Applies completions, heartbeats, removals and timeouts to the open hooks of `transition`.
fn resolve_hooks(
    facts: &Facts<'_>,
    step: &mut Step,
    transition: HookTransition,
    now: Timestamp,
) -> Hooks {
    let mut earliest: Option<Timestamp> = None;
    for hook in step
        .record
        .hooks
        .iter_mut()
        .filter(|h| h.transition == transition && h.result.is_none())
    {
        let config = facts
            .hooks
            .iter()
            .find(|c| c.name == hook.name && c.transition == transition);
        match annotations::hook_completion(facts.annotations, &hook.name) {
            Ok(Some(result)) => {
                hook.result = Some(result);
                step.notes.push(Note::HookCompleted {
                    hook: hook.name.clone(),
                    result,
                });
                continue;
            }
            Ok(None) => {}
            Err(e) => step.notes.push(Note::InvalidAnnotation(e)),
        }
        let Some(config) = config else {
            hook.result = Some(HookResult::Continue);
            step.notes.push(Note::HookRemoved {
                hook: hook.name.clone(),
            });
            continue;
        };
        let heartbeat = facts
            .annotations
            .get(&annotations::heartbeat_key(&hook.name));
        if heartbeat.is_some() && heartbeat != hook.last_heartbeat.as_ref() {
            hook.last_heartbeat = heartbeat.cloned();
            let deadline = plus_seconds(now, config.heartbeat_timeout_seconds.into());
            hook.deadline = Time(deadline);
            step.notes.push(Note::HookHeartbeat {
                hook: hook.name.clone(),
                deadline,
            });
        }
        if now >= hook.deadline.0 {
            hook.result = Some(config.default_result);
            step.notes.push(Note::HookTimedOut {
                hook: hook.name.clone(),
                result: config.default_result,
            });
            continue;
        }
        earliest = Some(earliest.map_or(hook.deadline.0, |e| e.min(hook.deadline.0)));
    }
    let open = step
        .record
        .hooks
        .iter()
        .filter(|h| h.transition == transition);
    if open.clone().any(|h| h.result.is_none()) {
        Hooks::Waiting(earliest)
    } else {
        Hooks::Done {
            abandoned: open.clone().any(|h| h.result == Some(HookResult::Abandon)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LifecycleState::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    /// A Launch hook "warm" (60 s, Abandon on timeout).
    fn warm_launch_hook() -> LifecycleHook {
        hook("warm", HookTransition::Launch, 60, HookResult::Abandon)
    }

    fn hook(
        name: &str,
        transition: HookTransition,
        timeout: i32,
        default: HookResult,
    ) -> LifecycleHook {
        LifecycleHook {
            name: name.into(),
            transition,
            heartbeat_timeout_seconds: timeout,
            default_result: default,
        }
    }

    struct World {
        record: Record,
        annotations: BTreeMap<String, String>,
        requested: Option<TerminationReason>,
        hooks: Vec<LifecycleHook>,
        delay: i64,
        add_suspended: bool,
        pod: PodFacts,
        pod_uid: Option<String>,
        pods_created: usize,
        restart: Option<String>,
    }

    impl World {
        fn new() -> Self {
            World {
                record: Record::default(),
                annotations: BTreeMap::new(),
                requested: None,
                hooks: Vec::new(),
                delay: 0,
                add_suspended: false,
                pod: PodFacts::default(),
                pod_uid: None,
                pods_created: 0,
                restart: None,
            }
        }

        fn facts(&self) -> Facts<'_> {
            Facts {
                record: &self.record,
                annotations: &self.annotations,
                termination_requested: self.requested,
                hooks: &self.hooks,
                deregistration_delay_seconds: self.delay,
                add_to_service_suspended: self.add_suspended,
                pod: self.pod,
                pod_uid: self.pod_uid.as_deref(),
                restart_request: self.restart.as_deref(),
            }
        }

        /// Runs one step, stores its record, and carries out its action on the simulated Pod.
        fn step(&mut self, now: Timestamp) -> Step {
            let step = next(&self.facts(), now);
            self.record = step.record.clone();
            match step.action {
                Some(PodAction::CreatePod { in_service }) => {
                    self.pods_created += 1;
                    self.pod_uid = Some(format!("uid-{}", self.pods_created));
                    self.pod = PodFacts {
                        exists: true,
                        in_service_label: in_service,
                        ..PodFacts::default()
                    }
                }
                Some(PodAction::AddToService) => self.pod.in_service_label = true,
                Some(PodAction::RemoveFromService) => self.pod.in_service_label = false,
                Some(PodAction::DeletePod) => self.pod.being_deleted = true,
                Some(PodAction::Finish) | None => {}
            }
            step
        }

        fn state(&self) -> Option<LifecycleState> {
            self.record.state
        }

        fn run_pod(&mut self) {
            self.pod.running = true;
        }

        fn pod_gone(&mut self) {
            self.pod = PodFacts::default();
            self.pod_uid = None;
        }

        fn states(&self) -> Vec<LifecycleState> {
            self.record.history.iter().map(|e| e.state).collect()
        }

        /// Brings a fresh instance to InService (no hooks).
        fn in_service(&mut self) {
            self.step(t(0));
            self.run_pod();
            self.step(t(1));
            self.step(t(1));
            assert_eq!(self.state(), Some(InService));
            assert!(self.pod.in_service_label);
        }
    }

    #[test]
    fn a_restart_recreates_the_pod_in_place_and_is_recorded_before_it_is_taken() {
        let mut w = World::new();
        w.in_service();
        assert_eq!(w.pod_uid.as_deref(), Some("uid-1"));
        w.restart = Some("1800000100".into());
        // Recorded first (token, old Pod, count), then the Pod leaves service.
        let step = w.step(t(100));
        assert_eq!(w.state(), Some(Pending));
        assert_eq!(
            w.record.history.last().unwrap().reason.as_deref(),
            Some("Restart")
        );
        let r = w.record.restart.clone().unwrap();
        assert_eq!(r.token, "1800000100");
        assert_eq!(r.old_pod_uid.as_deref(), Some("uid-1"));
        assert_eq!(r.pod_running_at, None);
        assert_eq!(w.record.restart_count, 1);
        assert_eq!(step.action, Some(PodAction::RemoveFromService));
        // Then the old Pod is deleted (its grace period is its own), and nothing while it goes.
        assert_eq!(w.step(t(101)).action, Some(PodAction::DeletePod));
        assert_eq!(w.step(t(102)).action, None);
        // Gone: a new Pod of the same Instance, which enters InService once it runs.
        w.pod_gone();
        assert_eq!(
            w.step(t(110)).action,
            Some(PodAction::CreatePod { in_service: true })
        );
        assert_eq!(w.pod_uid.as_deref(), Some("uid-2"));
        assert_eq!(w.step(t(111)).action, None);
        w.run_pod();
        let step = w.step(t(120));
        assert_eq!(w.state(), Some(InService));
        assert_eq!(
            w.record.history.last().unwrap().reason.as_deref(),
            Some("Restarted")
        );
        assert_eq!(
            w.record.restart.as_ref().unwrap().pod_running_at,
            Some(Time(t(120)))
        );
        assert_eq!(step.action, None, "the new Pod was created in service");
        assert!(w.pod.in_service_label);
        // The same request again (a re-sent annotation) restarts nothing.
        w.step(t(121));
        let again = w.step(t(130));
        assert_eq!(again.action, None);
        assert_eq!(w.record.restart_count, 1);
        assert_eq!(w.state(), Some(InService));
    }

    #[test]
    fn a_restart_resumes_from_its_record_after_a_crash() {
        let mut w = World::new();
        w.in_service();
        w.restart = Some("7".into());
        w.step(t(100));
        // The operator died before acting (the Pod still carries its label): the next step
        // starts from the stored record and takes the same action, without recording a second
        // restart.
        w.pod.in_service_label = true;
        let record = w.record.clone();
        let step = next(&w.facts(), t(105));
        assert_eq!(step.record, record);
        assert_eq!(step.action, Some(PodAction::RemoveFromService));
        // A restart of an Instance whose Pod is already gone creates one at once.
        let mut w = World::new();
        w.in_service();
        w.pod_gone();
        w.restart = Some("8".into());
        let step = w.step(t(100));
        assert_eq!(step.action, Some(PodAction::CreatePod { in_service: true }));
        assert_eq!(w.record.restart.as_ref().unwrap().old_pod_uid, None);
    }

    #[test]
    fn a_termination_request_wins_over_a_restart() {
        let mut w = World::new();
        w.in_service();
        w.restart = Some("9".into());
        w.step(t(100));
        w.requested = Some(TerminationReason::Unhealthy);
        // The Pod is out of service already: Terminating chains on, and the Pod is deleted
        // through the Terminating path, never recreated.
        let step = w.step(t(101));
        assert!(w.states().contains(&Terminating));
        assert_eq!(w.state(), Some(TerminatingProceed));
        assert_eq!(step.action, Some(PodAction::DeletePod));
        assert_eq!(w.record.termination_reason.as_deref(), Some("Unhealthy"));
    }

    #[test]
    fn new_instance_records_pending_then_creates_its_pod() {
        let mut w = World::new();
        let step = w.step(t(0));
        assert_eq!(step.record.state, Some(Pending));
        assert_eq!(step.action, Some(PodAction::CreatePod { in_service: true }));
        assert_eq!(step.record.history[0].reason.as_deref(), Some("Launched"));
        assert_eq!(step.record.history[0].entered_at.0, t(0));
        // Until the Pod runs, nothing more happens and nothing changes.
        let again = w.step(t(5));
        assert_eq!(again.action, None);
        assert_eq!(again.record, w.record);
        assert!(again.notes.is_empty());
    }

    #[test]
    fn pending_pod_missing_is_created_again_after_a_restart() {
        // Crash after recording Pending but before the Pod was created.
        let mut w = World::new();
        w.step(t(0));
        w.pod_gone();
        let step = w.step(t(3));
        assert_eq!(step.action, Some(PodAction::CreatePod { in_service: true }));
        assert_eq!(w.states(), vec![Pending], "Pending is not recorded twice");
    }

    #[test]
    fn running_pod_goes_in_service_with_the_label_it_was_created_with() {
        let mut w = World::new();
        w.step(t(0));
        assert!(w.pod.in_service_label, "no hook, nothing suspended");
        w.run_pod();
        let step = w.step(t(2));
        assert_eq!(step.record.state, Some(InService));
        assert_eq!(step.action, None, "the label is there already");
        assert!(w.pod.in_service_label);
        assert_eq!(step.record.entered(InService), Some(t(2)));
        // Settled: no action, no change.
        let settled = w.step(t(3));
        assert_eq!(settled.action, None);
        assert_eq!(settled.record, w.record);
    }

    #[test]
    fn add_to_service_suspended_keeps_the_label_off_until_resumed() {
        let mut w = World::new();
        w.add_suspended = true;
        w.step(t(0));
        w.run_pod();
        let step = w.step(t(1));
        assert_eq!(step.record.state, Some(InService));
        assert_eq!(step.action, None);
        assert!(!w.pod.in_service_label);
        w.add_suspended = false;
        assert_eq!(w.step(t(2)).action, Some(PodAction::AddToService));
    }

    #[test]
    fn a_pod_joins_service_at_creation_only_when_nothing_else_stands_before_in_service() {
        let launch = |w: &mut World| match w.step(t(0)).action {
            Some(PodAction::CreatePod { in_service }) => in_service,
            other => panic!("expected a Pod creation, got {other:?}"),
        };
        assert!(launch(&mut World::new()));
        let mut w = World::new();
        w.add_suspended = true;
        assert!(!launch(&mut w), "AddToService suspended");
        let mut w = World::new();
        w.hooks = vec![warm_launch_hook()];
        assert!(!launch(&mut w), "a Launch hook comes first");
        let mut w = World::new();
        w.hooks = vec![hook(
            "drain",
            HookTransition::Terminate,
            60,
            HookResult::Continue,
        )];
        assert!(
            launch(&mut w),
            "a Terminate hook does not stand before InService"
        );
        let mut w = World::new();
        w.annotations
            .insert(crate::api::names::ANNOTATION_STANDBY.into(), "true".into());
        assert!(!launch(&mut w), "standby asked for");
    }

    #[test]
    fn what_keeps_a_launch_out_of_service_takes_a_starting_pod_out_too() {
        // Each arrives after the Pod was created in service, while it is still starting.
        type Change = (&'static str, fn(&mut World));
        let changes: [Change; 3] = [
            ("AddToService suspended", |w| w.add_suspended = true),
            ("standby asked for", |w| {
                w.annotations
                    .insert(crate::api::names::ANNOTATION_STANDBY.into(), "true".into());
            }),
            ("a Launch hook added", |w| {
                w.hooks = vec![warm_launch_hook()];
            }),
        ];
        for (what, change) in changes {
            let mut w = World::new();
            w.step(t(0));
            assert!(w.pod.in_service_label, "{what}");
            change(&mut w);
            let s = w.step(t(1));
            assert_eq!(s.record.state, Some(Pending), "{what}");
            assert_eq!(s.action, Some(PodAction::RemoveFromService), "{what}");
            assert_eq!(w.step(t(2)).action, None, "{what}: settled");
            assert!(!w.pod.in_service_label, "{what}");
        }
    }

    #[test]
    fn launch_hooks_added_after_the_pod_was_created_take_it_out_of_service() {
        // The hook and the Pod running seen in one step: Pending:Wait takes the label off.
        let mut w = World::new();
        w.step(t(0));
        assert!(w.pod.in_service_label);
        w.hooks = vec![warm_launch_hook()];
        w.run_pod();
        let s = w.step(t(2));
        assert_eq!(s.record.state, Some(PendingWait));
        assert_eq!(s.action, Some(PodAction::RemoveFromService));
        assert!(!w.pod.in_service_label);
        assert_eq!(w.step(t(3)).action, None);
    }

    #[test]
    fn times_are_rounded_up_to_seconds() {
        let mut w = World::new();
        let now = t(0).checked_add(SignedDuration::from_millis(300)).unwrap();
        w.step(now);
        assert_eq!(w.record.history[0].entered_at.0, t(1));
        assert_eq!(ceil_to_second(t(4)), t(4));
    }

    #[test]
    fn scale_in_removes_label_then_waits_the_delay_then_deletes_the_pod() {
        let mut w = World::new();
        w.delay = 10;
        w.in_service();
        w.requested = Some(TerminationReason::ScaleIn);
        let s = w.step(t(20));
        assert_eq!(s.record.state, Some(Terminating));
        assert_eq!(s.record.termination_reason.as_deref(), Some("ScaleIn"));
        assert_eq!(s.action, Some(PodAction::RemoveFromService));
        assert_eq!(
            s.record.deregistered_at, None,
            "label removal not yet observed"
        );
        // The removal is observed a little later: the delay counts from then.
        let s = w.step(t(22));
        assert_eq!(s.record.deregistered_at, Some(Time(t(22))));
        assert_eq!(s.wake_at, Some(t(32)));
        assert_eq!(s.action, None);
        assert_eq!(w.step(t(31)).record.state, Some(Terminating));
        // At the deadline: Proceed, the Pod is deleted.
        let s = w.step(t(32));
        assert_eq!(s.record.state, Some(TerminatingProceed));
        assert_eq!(s.action, Some(PodAction::DeletePod));
        // Deleting: wait until gone; no second delete.
        assert_eq!(w.step(t(33)).action, None);
        w.pod_gone();
        let s = w.step(t(35));
        assert_eq!(s.record.state, Some(Terminated));
        assert_eq!(s.action, Some(PodAction::Finish));
        assert_eq!(
            w.states(),
            vec![
                Pending,
                InService,
                Terminating,
                TerminatingProceed,
                Terminated
            ]
        );
    }

    #[test]
    fn restart_in_terminating_keeps_the_recorded_deregistration_time() {
        let mut w = World::new();
        w.delay = 30;
        w.in_service();
        w.requested = Some(TerminationReason::ScaleIn);
        w.step(t(10));
        w.step(t(11)); // deregistered at t(11)
        // "Restart": a fresh call with the stored record, later.
        let s = next(&w.facts(), t(25));
        assert_eq!(s.record, w.record, "nothing re-recorded");
        assert_eq!(s.wake_at, Some(t(41)));
        assert_eq!(s.action, None);
    }

    #[test]
    fn restart_before_label_removal_removes_it_again() {
        let mut w = World::new();
        w.delay = 5;
        w.in_service();
        w.requested = Some(TerminationReason::ScaleIn);
        let s = next(&w.facts(), t(10));
        w.record = s.record; // recorded, but the action never ran (crash)
        let s = next(&w.facts(), t(12));
        assert_eq!(s.action, Some(PodAction::RemoveFromService));
        assert_eq!(s.record, w.record);
    }

    #[test]
    fn no_delay_without_ever_being_in_service() {
        let mut w = World::new();
        w.delay = 30;
        w.step(t(0)); // Pending, Pod created (in service), never running
        w.requested = Some(TerminationReason::ScaleIn);
        // Leaving service removes the label first, as always...
        let s = w.step(t(1));
        assert_eq!(s.record.state, Some(Terminating));
        assert_eq!(s.action, Some(PodAction::RemoveFromService));
        // ...but there is nothing to drain: on to Proceed at once.
        let s = w.step(t(2));
        assert_eq!(
            s.record.state,
            Some(TerminatingProceed),
            "chained: nothing to drain"
        );
        assert_eq!(s.action, Some(PodAction::DeletePod));
        assert_eq!(w.states(), vec![Pending, Terminating, TerminatingProceed]);
        // Without the label (created while AddToService was suspended), one step.
        let mut w = World::new();
        w.delay = 30;
        w.add_suspended = true;
        w.step(t(0));
        w.requested = Some(TerminationReason::ScaleIn);
        let s = w.step(t(1));
        assert_eq!(s.record.state, Some(TerminatingProceed));
        assert_eq!(s.action, Some(PodAction::DeletePod));
    }

    #[test]
    fn zero_delay_chains_to_proceed_once_the_label_is_gone() {
        let mut w = World::new();
        w.in_service();
        w.requested = Some(TerminationReason::Deleted);
        assert_eq!(w.step(t(5)).action, Some(PodAction::RemoveFromService));
        let s = w.step(t(6));
        assert_eq!(s.record.state, Some(TerminatingProceed));
        assert_eq!(s.action, Some(PodAction::DeletePod));
    }

    #[test]
    fn termination_without_a_pod_finishes() {
        let mut w = World::new();
        w.requested = Some(TerminationReason::GroupDeleted);
        let s = w.step(t(0));
        assert_eq!(s.record.state, Some(Terminated));
        assert_eq!(s.action, Some(PodAction::Finish));
        assert_eq!(
            w.states(),
            vec![Terminating, TerminatingProceed, Terminated]
        );
        assert_eq!(s.record.termination_reason.as_deref(), Some("GroupDeleted"));
    }

    #[test]
    fn launch_hook_completed_by_annotation() {
        let mut w = World::new();
        w.hooks = vec![warm_launch_hook()];
        w.step(t(0));
        w.run_pod();
        let s = w.step(t(2));
        assert_eq!(s.record.state, Some(PendingWait));
        assert_eq!(s.action, None, "no label while waiting");
        assert_eq!(s.wake_at, Some(t(62)));
        assert_eq!(s.record.hooks[0].deadline.0, t(62));
        w.annotations
            .insert("hooks.autoheal.dev/warm".into(), "Continue".into());
        let s = w.step(t(10));
        assert_eq!(s.record.state, Some(InService));
        assert_eq!(s.action, Some(PodAction::AddToService));
        assert_eq!(s.record.hooks[0].result, Some(HookResult::Continue));
        assert!(s.notes.contains(&Note::HookCompleted {
            hook: "warm".into(),
            result: HookResult::Continue
        }));
    }

    #[test]
    fn launch_hook_abandoned_terminates() {
        let mut w = World::new();
        w.delay = 30;
        w.hooks = vec![hook(
            "warm",
            HookTransition::Launch,
            60,
            HookResult::Continue,
        )];
        w.step(t(0));
        w.run_pod();
        w.step(t(1));
        w.annotations
            .insert("hooks.autoheal.dev/warm".into(), "abandon".into());
        let s = w.step(t(2));
        assert_eq!(
            s.record.termination_reason.as_deref(),
            Some("LaunchAbandoned")
        );
        // Never in service: no drain, straight to Proceed.
        assert_eq!(s.record.state, Some(TerminatingProceed));
        assert_eq!(s.action, Some(PodAction::DeletePod));
    }

    #[test]
    fn hook_heartbeat_extends_and_timeout_applies_default() {
        let mut w = World::new();
        w.hooks = vec![hook(
            "warm",
            HookTransition::Launch,
            30,
            HookResult::Continue,
        )];
        w.annotations
            .insert("hooks.autoheal.dev/warm.heartbeat".into(), "old".into());
        w.step(t(0));
        w.run_pod();
        w.step(t(0));
        assert_eq!(w.record.hooks[0].last_heartbeat.as_deref(), Some("old"));
        // Same value again: not a heartbeat.
        let s = w.step(t(10));
        assert_eq!(s.wake_at, Some(t(30)));
        assert!(s.notes.is_empty());
        // New value: deadline moves to now + 30.
        w.annotations
            .insert("hooks.autoheal.dev/warm.heartbeat".into(), "1".into());
        let s = w.step(t(20));
        assert_eq!(s.wake_at, Some(t(50)));
        assert!(matches!(s.notes[0], Note::HookHeartbeat { deadline, .. } if deadline == t(50)));
        assert_eq!(w.step(t(49)).record.state, Some(PendingWait));
        let s = w.step(t(50));
        assert_eq!(s.record.state, Some(InService));
        assert!(s.notes.contains(&Note::HookTimedOut {
            hook: "warm".into(),
            result: HookResult::Continue
        }));
    }

    #[test]
    fn launch_hook_timeout_with_abandon_terminates() {
        let mut w = World::new();
        w.hooks = vec![hook(
            "warm",
            HookTransition::Launch,
            30,
            HookResult::Abandon,
        )];
        w.step(t(0));
        w.run_pod();
        w.step(t(0));
        let s = w.step(t(30));
        assert_eq!(
            s.record.termination_reason.as_deref(),
            Some("LaunchAbandoned")
        );
        assert_eq!(s.record.hooks[0].result, Some(HookResult::Abandon));
    }

    #[test]
    fn multiple_launch_hooks_all_must_finish_and_any_abandon_wins() {
        let mut w = World::new();
        w.hooks = vec![
            hook("a", HookTransition::Launch, 30, HookResult::Continue),
            hook("b", HookTransition::Launch, 60, HookResult::Continue),
            hook("z", HookTransition::Terminate, 60, HookResult::Continue),
        ];
        w.step(t(0));
        w.run_pod();
        w.step(t(0));
        assert_eq!(w.record.hooks.len(), 2, "only Launch hooks open");
        w.annotations
            .insert("hooks.autoheal.dev/a".into(), "Continue".into());
        let s = w.step(t(1));
        assert_eq!(s.record.state, Some(PendingWait));
        assert_eq!(s.wake_at, Some(t(60)));
        w.annotations
            .insert("hooks.autoheal.dev/b".into(), "Abandon".into());
        let s = w.step(t(2));
        assert_eq!(
            s.record.termination_reason.as_deref(),
            Some("LaunchAbandoned")
        );
    }

    #[test]
    fn invalid_hook_annotation_is_reported_and_ignored() {
        let mut w = World::new();
        w.hooks = vec![hook(
            "warm",
            HookTransition::Launch,
            30,
            HookResult::Continue,
        )];
        w.step(t(0));
        w.run_pod();
        w.step(t(0));
        w.annotations
            .insert("hooks.autoheal.dev/warm".into(), "yes please".into());
        let s = w.step(t(1));
        assert_eq!(s.record.state, Some(PendingWait));
        assert!(matches!(s.notes[0], Note::InvalidAnnotation(_)));
    }

    #[test]
    fn hook_removed_from_group_counts_as_continue() {
        let mut w = World::new();
        w.hooks = vec![hook(
            "warm",
            HookTransition::Launch,
            30,
            HookResult::Abandon,
        )];
        w.step(t(0));
        w.run_pod();
        w.step(t(0));
        w.hooks.clear();
        let s = w.step(t(1));
        assert_eq!(s.record.state, Some(InService));
        assert!(s.notes.contains(&Note::HookRemoved {
            hook: "warm".into()
        }));
    }

    #[test]
    fn terminate_hooks_hold_after_the_delay() {
        let mut w = World::new();
        w.delay = 2;
        w.hooks = vec![hook(
            "drain",
            HookTransition::Terminate,
            30,
            HookResult::Abandon,
        )];
        w.in_service();
        w.requested = Some(TerminationReason::Unhealthy);
        w.step(t(10));
        w.step(t(10));
        let s = w.step(t(12));
        assert_eq!(s.record.state, Some(TerminatingWait));
        assert_eq!(s.wake_at, Some(t(42)));
        assert_eq!(s.action, None, "the Pod stays until the hook is done");
        // Terminate: Abandon proceeds too (AWS).
        w.annotations
            .insert("hooks.autoheal.dev/drain".into(), "Abandon".into());
        let s = w.step(t(15));
        assert_eq!(s.record.state, Some(TerminatingProceed));
        assert_eq!(s.action, Some(PodAction::DeletePod));
    }

    #[test]
    fn terminate_hook_times_out_to_proceed() {
        let mut w = World::new();
        w.hooks = vec![hook(
            "drain",
            HookTransition::Terminate,
            30,
            HookResult::Abandon,
        )];
        w.in_service();
        w.requested = Some(TerminationReason::Deleted);
        w.step(t(10));
        w.step(t(10));
        assert_eq!(w.state(), Some(TerminatingWait));
        let s = next(&w.facts(), t(39));
        assert_eq!(s.record.state, Some(TerminatingWait));
        let s = w.step(t(40));
        assert_eq!(s.record.state, Some(TerminatingProceed));
        assert!(s.notes.contains(&Note::HookTimedOut {
            hook: "drain".into(),
            result: HookResult::Abandon
        }));
    }

    #[test]
    fn restart_in_pending_wait_keeps_hook_deadlines() {
        let mut w = World::new();
        w.hooks = vec![hook(
            "warm",
            HookTransition::Launch,
            100,
            HookResult::Continue,
        )];
        w.step(t(0));
        w.run_pod();
        w.step(t(0));
        let s = next(&w.facts(), t(50));
        assert_eq!(s.record, w.record);
        assert_eq!(s.wake_at, Some(t(100)));
    }

    #[test]
    fn deletion_during_pending_wait_terminates_and_drops_the_wait() {
        let mut w = World::new();
        w.hooks = vec![hook(
            "warm",
            HookTransition::Launch,
            100,
            HookResult::Continue,
        )];
        w.step(t(0));
        w.run_pod();
        w.step(t(0));
        w.requested = Some(TerminationReason::ScaleIn);
        let s = w.step(t(3));
        assert_eq!(s.record.state, Some(TerminatingProceed));
        assert_eq!(s.record.termination_reason.as_deref(), Some("ScaleIn"));
    }

    #[test]
    fn standby_leaves_service_and_comes_back() {
        let mut w = World::new();
        w.in_service();
        w.annotations
            .insert(crate::api::names::ANNOTATION_STANDBY.into(), "true".into());
        let s = w.step(t(5));
        assert_eq!(s.record.state, Some(Standby));
        assert_eq!(s.action, Some(PodAction::RemoveFromService));
        assert_eq!(w.step(t(6)).action, None);
        w.annotations.remove(crate::api::names::ANNOTATION_STANDBY);
        let s = w.step(t(7));
        assert_eq!(s.record.state, Some(InService));
        assert_eq!(s.action, Some(PodAction::AddToService));
    }

    #[test]
    fn invalid_standby_value_does_nothing() {
        let mut w = World::new();
        w.in_service();
        w.annotations
            .insert(crate::api::names::ANNOTATION_STANDBY.into(), "maybe".into());
        assert_eq!(w.step(t(5)).record.state, Some(InService));
    }

    #[test]
    fn label_re_added_during_termination_is_removed_again() {
        let mut w = World::new();
        w.delay = 10;
        w.in_service();
        w.requested = Some(TerminationReason::ScaleIn);
        w.step(t(10));
        w.step(t(11));
        w.pod.in_service_label = true; // someone put it back
        let s = w.step(t(12));
        assert_eq!(s.action, Some(PodAction::RemoveFromService));
        assert_eq!(s.record.deregistered_at, Some(Time(t(11))));
    }

    #[test]
    fn terminated_always_finishes() {
        let mut w = World::new();
        w.requested = Some(TerminationReason::Deleted);
        w.step(t(0));
        assert_eq!(w.step(t(1)).action, Some(PodAction::Finish));
        assert_eq!(w.states().len(), 3);
    }

    #[test]
    fn termination_reasons_parse_and_infer() {
        for r in [
            TerminationReason::ScaleIn,
            TerminationReason::Unhealthy,
            TerminationReason::GroupDeleted,
            TerminationReason::LaunchAbandoned,
            TerminationReason::Deleted,
        ] {
            assert_eq!(TerminationReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(TerminationReason::parse("nope"), None);
        use TerminationReason as R;
        assert_eq!(R::for_deletion(Some("ScaleIn"), true, true), R::ScaleIn);
        assert_eq!(R::for_deletion(Some("junk"), true, false), R::GroupDeleted);
        assert_eq!(R::for_deletion(None, false, true), R::Unhealthy);
        assert_eq!(R::for_deletion(None, false, false), R::Deleted);
    }

    #[test]
    fn record_round_trips_through_status() {
        let mut w = World::new();
        w.in_service();
        let mut status = InstanceStatus::default();
        w.record.apply_to(&mut status);
        assert_eq!(Record::from_status(&status), w.record);
    }

    #[test]
    fn a_step_whose_action_was_not_taken_is_recomputed_identically() {
        // The crash-safety property: once a step's record is stored, computing the step again
        // (the action never ran) records nothing new and asks for the same action.
        let mut w = World::new();
        w.delay = 5;
        w.hooks = vec![
            hook("l", HookTransition::Launch, 30, HookResult::Continue),
            hook("d", HookTransition::Terminate, 30, HookResult::Continue),
        ];
        let check = |w: &World, now: Timestamp| {
            let first = next(&w.facts(), now);
            let mut stored = World {
                record: first.record.clone(),
                ..World::new()
            };
            stored.annotations = w.annotations.clone();
            stored.requested = w.requested;
            stored.hooks = w.hooks.clone();
            stored.delay = w.delay;
            stored.pod = w.pod;
            let again = next(&stored.facts(), now);
            assert_eq!(again.record, first.record, "at {:?}", w.state());
            assert_eq!(again.action, first.action, "at {:?}", w.state());
        };
        let mut now = 0;
        let mut seen = Vec::new();
        for round in 0..20 {
            check(&w, t(now));
            w.step(t(now));
            seen.push(w.state());
            match w.state() {
                Some(Pending) => w.run_pod(),
                Some(PendingWait) => {
                    w.annotations
                        .insert("hooks.autoheal.dev/l".into(), "Continue".into());
                }
                Some(InService) if round > 3 => w.requested = Some(TerminationReason::ScaleIn),
                Some(TerminatingWait) => {
                    w.annotations
                        .insert("hooks.autoheal.dev/d".into(), "Continue".into());
                }
                Some(TerminatingProceed) => w.pod_gone(),
                Some(Terminated) => break,
                _ => {}
            }
            now += 3;
        }
        for state in [
            Pending,
            PendingWait,
            InService,
            Terminating,
            TerminatingWait,
            TerminatingProceed,
            Terminated,
        ] {
            assert!(seen.contains(&Some(state)), "{state} visited: {seen:?}");
        }
    }

    #[test]
    fn state_history_is_bounded_and_keeps_the_launch() {
        let mut record = Record::default();
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        record.enter(LifecycleState::Pending, "Launched", t0);
        for i in 0..100 {
            let state = if i % 2 == 0 {
                LifecycleState::Standby
            } else {
                LifecycleState::InService
            };
            record.enter(state, "Toggled", t0);
        }
        assert_eq!(record.history.len(), MAX_STATE_HISTORY);
        assert_eq!(record.history[0].state, LifecycleState::Pending);
        assert_eq!(record.state, Some(LifecycleState::InService));
        assert!(record.entered(LifecycleState::InService).is_some());
    }
}
