//! The group step: everything one ScalingGroup reconcile decides, as a pure function of the
//! group, its Instances (as the store shows them), the tunables and `now`.
//!
//! [`plan`] runs the named sub-steps in order and merges what they decide:
//! 1. read the group's annotations ([`crate::api::annotations::paused`]): a value not
//!    understood is a warning and never acts;
//! 2. **refresh** ([`refresh::plan`]): starts, rolls, checkpoints, finishes, fails and rolls
//!    back instance refreshes; its surge raises the capacity step's target and its
//!    terminations (reason `Refresh`) join the actions; skipped while the group is deleted;
//! 3. **replacement** ([`replacement::plan_replacements`]): judge past replacements →
//!    breaker → budget → strategy; skipped while the group is being deleted;
//! 4. **capacity** ([`capacity::plan`]): launches and scale-in terminations towards the
//!    desired capacity. It sees the Instances the refresh and the replacement terminate in
//!    this pass as leaving already, so their replacements are launched in the same pass;
//! 5. **merge** ([`merge_actions`]): one ordered list of actions, terminations first;
//! 6. **revisions** ([`revision::plan`]): the current template's ControllerRevision exists
//!    and is the newest; history beyond `revisionHistoryLimit` goes, never a revision in use;
//! 7. **status** ([`status`]): counts, the bounded instance list, the replacement memory, the
//!    current revision and the group's own conditions, recorded before any action is taken.
//!    The kstatus pair ([`kstatus`]) follows from the others: a group not Ready (or
//!    refreshing) is either `Reconciling` (it gets there by itself) or `Stalled` (it waits on
//!    a person), so `kubectl wait`, Flux, Argo CD and kpt read it as the convention says.
//!
//! The reconciler in `controller::group` only applies the result.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::conditions::{DesiredCondition, find, settle};
use crate::api::names::reason;
use crate::api::{
    ANNOTATION_CANCEL_REFRESH, ANNOTATION_REFRESH, ANNOTATION_RESET_REPLACEMENT_FAILURES,
    CONDITION_READY, CONDITION_RECONCILING, CONDITION_REFRESHING, CONDITION_REPLACEMENT_ALLOWED,
    CONDITION_SCALING_LIMITED, CONDITION_STALLED, Process, REASON_REFRESH_FAILED,
    REASON_REQUEST_REFUSED, ScalingGroup, ScalingGroupStatus, annotations, group_selector,
};

use super::capacity::{self, GroupAction, GroupFacts, Limit};
use super::lifecycle::{TerminationReason, ceil_to_second};
use super::refresh::{self, RefreshInputs, RefreshPlan};
use super::replacement::{
    self, Backoff, PlannedEvent, ReplacementInputs, ReplacementMemory, ReplacementPlan,
    replacement_targets,
};
use super::revision::{self, RevisionPlan, RevisionView, revision_name};
use super::{InstanceView, NodeView};

/// The condition types the group step owns on a ScalingGroup (but a `Stalled` with reason
/// `RequestRefused`, which the refusal report owns); others belong to other managers and are
/// left alone.
pub const GROUP_CONDITIONS: [&str; 6] = [
    CONDITION_READY,
    CONDITION_SCALING_LIMITED,
    CONDITION_REPLACEMENT_ALLOWED,
    CONDITION_REFRESHING,
    CONDITION_RECONCILING,
    CONDITION_STALLED,
];

/// `ReplacementAllowed=False` reasons that only a person ends.
const STALLING_REPLACEMENT_REASONS: [&str; 5] = [
    reason::TOO_MANY_UNHEALTHY,
    reason::DRY_RUN,
    reason::KEEP_FAILING,
    reason::SUSPENDED,
    reason::PAUSED,
];

/// `ScalingLimited=True` reasons that only a person ends.
const STALLING_LIMIT_REASONS: [&str; 4] = [
    "Paused",
    "LaunchSuspended",
    "TerminateSuspended",
    "ProtectedFromScaleIn",
];

/// Everything the group step looks at.
#[derive(Debug, Clone, Copy)]
pub struct GroupInputs<'a> {
    /// The group (spec, annotations, status as stored, generation, deletion).
    pub group: &'a ScalingGroup,
    /// Its Instances as the store shows them, sorted by name.
    pub instances: &'a [InstanceView],
    /// Its ControllerRevisions as the store shows them.
    pub revisions: &'a [RevisionView],
    /// The Nodes the replacement breaker looks at (at least those in the zones the group's
    /// Instances run in; see [`replacement::breaker`]).
    pub nodes: &'a [NodeView],
    /// The backoff between replacement starts after failures.
    pub replacement_backoff: Backoff,
    /// The current time.
    pub now: Timestamp,
}

/// What one group reconcile must do.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPlan {
    /// The status to record (only the group's own conditions), before acting.
    pub status: ScalingGroupStatus,
    /// Whether `status` differs from the stored status (a write is needed).
    pub status_changed: bool,
    /// Launches and terminations, in order.
    pub actions: Vec<GroupAction>,
    /// The replacement step's decision (`None` while the group is being deleted).
    pub replacement: Option<ReplacementPlan>,
    /// What to create, renumber and delete among the group's ControllerRevisions (nothing
    /// while the group is being deleted).
    pub revisions: RevisionPlan,
    /// The template hash new Instances are launched from: `spec.template`'s, or the previous
    /// revision's after an automatic rollback.
    pub launch_hash: String,
    /// The refresh step's Events (on the group).
    pub refresh_events: Vec<PlannedEvent>,
    /// Annotation values not understood (reported as Warning Events, never acted on).
    pub warnings: Vec<String>,
    /// `ScalingLimited` turned True or changed reason: the note of a Warning Event.
    pub limit_event: Option<String>,
    /// The desired capacity the capacity step aimed at.
    pub desired: i32,
    /// Whether the group is being deleted.
    pub deleting: bool,
    /// When to plan again at the latest for time's sake (a backoff or grace period ending).
    pub requeue_after: Option<Duration>,
    /// The repair times (Unhealthy verdict → group whole again) of the remediations whose
    /// clock stops now, for `autoheal_repair_seconds` once the status is recorded.
    pub repair_seconds: Vec<f64>,
}

/// The group step (see the module doc).
pub fn plan(inputs: &GroupInputs<'_>) -> GroupPlan {
    let group = inputs.group;
    let deleting = group.metadata.deletion_timestamp.is_some();
    let (paused, warnings) = match annotations::paused(group.annotations()) {
        Ok(p) => (p, Vec::new()),
        Err(e) => (false, vec![e.to_string()]),
    };
    let current = template_hash(group);
    let refresh = (!deleting).then(|| plan_refresh(inputs, paused, &current));
    let replacement = (!deleting).then(|| plan_replacement(inputs, paused));
    // The capacity step sees the refresh's and the replacement's terminations as leaving
    // already (an Instance stops counting toward capacity once its termination is requested,
    // as AWS's TerminateThenLaunch), so their replacements are launched in the same pass, not
    // one reconcile later.
    let refresh_terminations: Vec<(String, TerminationReason)> = refresh
        .iter()
        .flat_map(|r| {
            let refresh = r
                .terminate
                .iter()
                .map(|n| (n.clone(), TerminationReason::Refresh));
            let lifetime = r
                .lifetime_terminate
                .iter()
                .map(|n| (n.clone(), TerminationReason::MaxInstanceLifetime));
            refresh.chain(lifetime)
        })
        .collect();
    // The replacement's first: an Instance both terminate goes for being Unhealthy (the
    // refresh's terminations join the actions below only for Instances not already in them).
    let leaving_now: Vec<(String, TerminationReason)> = replacement
        .iter()
        .flat_map(|r| {
            r.terminate
                .iter()
                .map(|n| (n.clone(), TerminationReason::Unhealthy))
        })
        .chain(refresh_terminations.iter().cloned())
        .collect();
    let after_terminations = as_leaving(inputs.instances, &leaving_now);
    let capacity = capacity::plan(
        &GroupFacts {
            spec: &group.spec,
            paused,
            deleting,
            surge: refresh.as_ref().map_or(0, |r| r.surge),
        },
        &after_terminations,
    );
    let mut actions = merge_actions(&capacity.actions, replacement.as_ref(), &after_terminations);
    let terminated: Vec<String> = actions
        .iter()
        .filter_map(|a| match a {
            GroupAction::Terminate { name, .. } => Some(name.clone()),
            GroupAction::Launch { .. } => None,
        })
        .collect();
    actions.extend(
        refresh_terminations
            .into_iter()
            .filter(|(n, _)| !terminated.contains(n))
            .map(|(name, reason)| GroupAction::Terminate { name, reason }),
    );
    let stored = group.status.clone().unwrap_or_default();
    let mut status = status(
        group,
        inputs.instances,
        capacity.limit.as_ref(),
        capacity.desired,
        replacement.as_ref(),
        refresh.as_ref(),
        inputs.now,
    );
    let launch_hash = refresh
        .as_ref()
        .map_or(current.clone(), |r| r.launch_hash.clone());
    revision_status(
        &mut status,
        &group.name_any(),
        &launch_hash,
        inputs.instances,
    );
    let revisions = if deleting {
        RevisionPlan::default()
    } else {
        let mut keep: BTreeSet<String> = inputs
            .instances
            .iter()
            .filter_map(|i| i.template_hash.clone())
            .collect();
        keep.insert(launch_hash.clone());
        keep.extend(refresh.iter().flat_map(|r| r.keep.iter().cloned()));
        revision::plan(
            inputs.revisions,
            &current,
            &keep,
            group.spec.revision_history_limit,
        )
    };
    // The repair clock stops for finished remediations once the group is whole again.
    let whole =
        !deleting && find(&status.conditions, CONDITION_READY).is_some_and(|c| c.status == "True");
    let repair_seconds = super::repair::mark_recovered(&mut status.remediations, whole, inputs.now);
    let status_changed = status != own_part(&stored);
    GroupPlan {
        repair_seconds,
        limit_event: limit_event(&stored, &status),
        requeue_after: [
            replacement.as_ref().and_then(|p| p.requeue_after),
            refresh.as_ref().and_then(|p| p.requeue_after),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|d| d + Duration::from_millis(50)),
        launch_hash,
        refresh_events: refresh.map(|r| r.events).unwrap_or_default(),
        status,
        status_changed,
        actions,
        replacement,
        revisions,
        warnings,
        desired: capacity.desired,
        deleting,
    }
}

/// The launches of `actions` to send when the terminations of `refused` were not accepted.
/// [`plan`] counted each of those Instances as leaving, so one launch per refused termination
/// is held back: the one annotated as its replacement, else a plain one, else the first.
/// Capacity launches come before surge launches in `actions`, so a surge launch (its old
/// Instance still counts) is held back only when nothing else took the refused one's place.
pub fn launches_despite_refused<'a>(
    actions: &'a [GroupAction],
    refused: &[String],
) -> Vec<&'a GroupAction> {
    let mut launches: Vec<&GroupAction> = actions
        .iter()
        .filter(|a| matches!(a, GroupAction::Launch { .. }))
        .collect();
    for name in refused {
        let replaces = |a: &&GroupAction, want: Option<&str>| matches!(a, GroupAction::Launch { replaces } if replaces.as_deref() == want);
        let held = launches
            .iter()
            .position(|a| replaces(a, Some(name)))
            .or_else(|| launches.iter().position(|a| replaces(a, None)))
            .or((!launches.is_empty()).then_some(0));
        if let Some(i) = held {
            launches.remove(i);
        }
    }
    launches
}

/// The Instances as they are once `leaving` (name, reason) have been asked to terminate:
/// each of those is being deleted, for its reason (the first one named wins).
fn as_leaving(
    instances: &[InstanceView],
    leaving: &[(String, TerminationReason)],
) -> Vec<InstanceView> {
    instances
        .iter()
        .cloned()
        .map(|mut i| {
            if let Some((_, reason)) = leaving.iter().find(|(n, _)| *n == i.name) {
                i.being_deleted = true;
                i.termination_reason = Some(reason.as_str().into());
            }
            i
        })
        .collect()
}

/// The refresh step for a group that is not being deleted.
fn plan_refresh(inputs: &GroupInputs<'_>, paused: bool, current: &str) -> RefreshPlan {
    let group = inputs.group;
    let spec = &group.spec;
    let held = if paused {
        Some("the group is paused (autoheal.dev/paused=true)")
    } else if spec.is_suspended(Process::Launch) {
        Some("the Launch process is suspended")
    } else if spec.is_suspended(Process::Terminate) {
        Some("the Terminate process is suspended")
    } else {
        None
    };
    let available: BTreeSet<String> = inputs.revisions.iter().map(|r| r.hash.clone()).collect();
    let annotations = group.annotations();
    let name = group.name_any();
    refresh::plan(&RefreshInputs {
        spec,
        group: &name,
        stored: group.status.as_ref().and_then(|s| s.refresh.as_ref()),
        instances: inputs.instances,
        current_hash: current,
        available: &available,
        refresh_request: annotations.get(ANNOTATION_REFRESH).map(String::as_str),
        cancel_request: annotations
            .get(ANNOTATION_CANCEL_REFRESH)
            .map(String::as_str),
        held,
        now: inputs.now,
    })
}

/// The replacement step for a group that is not being deleted.
fn plan_replacement(inputs: &GroupInputs<'_>, paused: bool) -> ReplacementPlan {
    let group = inputs.group;
    let stored = group.status.clone().unwrap_or_default();
    let memory = ReplacementMemory::from_status(&stored);
    let template_hash = template_hash(group);
    replacement::plan_replacements(&ReplacementInputs {
        spec: &group.spec,
        paused,
        instances: inputs.instances,
        nodes: inputs.nodes,
        memory: &memory,
        template_hash: &template_hash,
        reset_request: group
            .annotations()
            .get(ANNOTATION_RESET_REPLACEMENT_FAILURES)
            .map(String::as_str),
        previous_condition: find(&stored.conditions, CONDITION_REPLACEMENT_ALLOWED),
        backoff: inputs.replacement_backoff,
        remediations: &stored.remediations,
        would_repair: &stored.would_repair,
        now: inputs.now,
    })
}

/// Records the revision new Instances are launched from (`hash`) and how many Instances
/// counting toward capacity run it.
pub fn revision_status(
    status: &mut ScalingGroupStatus,
    group: &str,
    hash: &str,
    instances: &[InstanceView],
) {
    status.current_revision = Some(revision_name(group, hash));
    status.updated_instances = instances
        .iter()
        .filter(|i| i.counts_toward_capacity() && i.template_hash.as_deref() == Some(hash))
        .count() as i32;
}

/// The group's actions: the replacement's terminations first (reason Unhealthy), then the
/// capacity planner's actions (an Instance both want to terminate is terminated once, for the
/// capacity planner's reason; [`plan`] shows the capacity planner the replacement's
/// terminations as leaving, so it never picks one of them), then surge launches. Capacity
/// launches are annotated with the Instances leaving for health that no Instance replaces yet
/// ([`replacement_targets`]).
pub fn merge_actions(
    capacity: &[GroupAction],
    plan: Option<&ReplacementPlan>,
    views: &[InstanceView],
) -> Vec<GroupAction> {
    let by_capacity: Vec<&str> = capacity
        .iter()
        .filter_map(|a| match a {
            GroupAction::Terminate { name, .. } => Some(name.as_str()),
            GroupAction::Launch { .. } => None,
        })
        .collect();
    let mut actions = Vec::new();
    if let Some(plan) = plan {
        actions.extend(
            plan.terminate
                .iter()
                .filter(|n| !by_capacity.contains(&n.as_str()))
                .map(|n| GroupAction::Terminate {
                    name: n.clone(),
                    reason: TerminationReason::Unhealthy,
                }),
        );
    }
    let mut targets = replacement_targets(views).into_iter();
    actions.extend(capacity.iter().cloned().map(|a| match a {
        GroupAction::Launch { replaces: None } => GroupAction::Launch {
            replaces: targets.next(),
        },
        other => other,
    }));
    if let Some(plan) = plan {
        actions.extend(
            plan.launch_replacements_for
                .iter()
                .map(|old| GroupAction::Launch {
                    replaces: Some(old.clone()),
                }),
        );
    }
    actions
}

/// The status to record: counts and the instance list from the store's view, the replacement
/// memory (kept as stored while the group is being deleted), and the group's own conditions
/// (`Ready`, `ScalingLimited`, `ReplacementAllowed`, `Refreshing`, `Reconciling`; one not
/// decided this pass is kept as stored), and the refresh status. Conditions of other managers are not part of it.
pub fn status(
    group: &ScalingGroup,
    instances: &[InstanceView],
    limit: Option<&Limit>,
    desired: i32,
    replacement: Option<&ReplacementPlan>,
    refresh: Option<&RefreshPlan>,
    now: Timestamp,
) -> ScalingGroupStatus {
    let deleting = group.metadata.deletion_timestamp.is_some();
    let stored = group.status.clone().unwrap_or_default();
    let mut status = capacity::status_counts(
        &group.spec,
        &group_selector(&group.name_any()),
        group.metadata.generation,
        instances,
    );
    let mut decided: Vec<DesiredCondition> = vec![
        capacity::ready_condition(&group.spec, instances, deleting),
        capacity::scaling_limited_condition(limit, desired),
    ];
    match replacement {
        Some(plan) => {
            plan.memory.write_to(&mut status);
            status.remediations = plan.remediations.clone();
            status.would_repair = plan.would_repair.clone();
            decided.push(plan.condition.clone());
        }
        None => {
            ReplacementMemory::from_status(&stored).write_to(&mut status);
            status.remediations = stored.remediations.clone();
        }
    }
    // The refresh step's Reconciling (a refresh runs) joins the kstatus pair below.
    let mut refresh_reconciling = None;
    match refresh {
        Some(plan) => {
            status.refresh = plan.status.clone();
            for c in &plan.conditions {
                if c.type_ == CONDITION_RECONCILING {
                    refresh_reconciling = Some(c.clone());
                } else {
                    decided.push(c.clone());
                }
            }
        }
        None => status.refresh = stored.refresh.clone(),
    }
    // A condition decided this pass, else as stored.
    let current = |type_: &str| {
        decided
            .iter()
            .find(|c| c.type_ == type_)
            .cloned()
            .or_else(|| {
                find(&stored.conditions, type_).map(|c| DesiredCondition {
                    type_: c.type_.clone(),
                    status: if c.status == "True" { "True" } else { "False" },
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                })
            })
    };
    let replacement_allowed = current(CONDITION_REPLACEMENT_ALLOWED);
    let refreshing = current(CONDITION_REFRESHING);
    let (mut reconciling, stalled) = kstatus(
        &decided[0],
        &decided[1],
        replacement_allowed.as_ref(),
        refreshing.as_ref(),
    );
    if let Some(r) = refresh_reconciling.filter(|r| r.status == "True")
        && stalled.status != "True"
    {
        reconciling = r;
    }
    decided.push(reconciling);
    if !refusal_reported(&stored) {
        decided.push(stalled);
    }
    let decided_types: Vec<String> = decided.iter().map(|c| c.type_.clone()).collect();
    let mut conditions = settle(
        &stored.conditions,
        decided,
        group.metadata.generation,
        ceil_to_second(now),
    );
    conditions.extend(
        own_part(&stored)
            .conditions
            .into_iter()
            .filter(|c| !decided_types.contains(&c.type_)),
    );
    status.conditions = conditions;
    status
}

/// The kstatus conditions `(Reconciling, Stalled)` that follow from `Ready`, `ScalingLimited`,
/// `ReplacementAllowed` and `Refreshing`: a failed refresh → `Stalled=True, RefreshFailed`;
/// Ready → neither; not Ready and held by something only a person
/// ends (the breaker, failing replacements, a pause, a suspended process, protection from
/// scale-in) → `Stalled=True` with that reason and message; else `Reconciling=True` with
/// Ready's reason and message (scaling out or in, Instances not yet InService and Healthy,
/// draining on deletion).
pub fn kstatus(
    ready: &DesiredCondition,
    scaling_limited: &DesiredCondition,
    replacement_allowed: Option<&DesiredCondition>,
    refreshing: Option<&DesiredCondition>,
) -> (DesiredCondition, DesiredCondition) {
    let settled = |type_: &str, reason: &str, message: &str| {
        DesiredCondition::new(type_, false, reason, message)
    };
    // A failed refresh (rolled back or not) leaves the group off its spec's template until
    // the template changes again: only a person ends that, Ready or not.
    if let Some(failed) = refreshing.filter(|c| c.reason == REASON_REFRESH_FAILED)
        && ready.reason != "Deleting"
    {
        return (
            settled(
                CONDITION_RECONCILING,
                "Stalled",
                &format!("not progressing: {REASON_REFRESH_FAILED}"),
            ),
            DesiredCondition::new(
                CONDITION_STALLED,
                true,
                REASON_REFRESH_FAILED,
                &failed.message,
            ),
        );
    }
    if ready.status == "True" {
        return (
            settled(
                CONDITION_RECONCILING,
                "Settled",
                "the group is at its desired state",
            ),
            settled(CONDITION_STALLED, "Progressing", "nothing holds the group"),
        );
    }
    let held = replacement_allowed
        .filter(|c| {
            c.status == "False" && STALLING_REPLACEMENT_REASONS.contains(&c.reason.as_str())
        })
        .or(Some(scaling_limited)
            .filter(|c| c.status == "True" && STALLING_LIMIT_REASONS.contains(&c.reason.as_str())));
    match held {
        Some(hold) if ready.reason != "Deleting" => (
            settled(
                CONDITION_RECONCILING,
                "Stalled",
                format!("not progressing: {}", hold.reason).as_str(),
            ),
            DesiredCondition::new(
                CONDITION_STALLED,
                true,
                &hold.reason,
                format!("{} ({})", hold.message, ready.message),
            ),
        ),
        _ => (
            DesiredCondition::new(CONDITION_RECONCILING, true, &ready.reason, &ready.message),
            settled(CONDITION_STALLED, "Progressing", "nothing holds the group"),
        ),
    }
}

/// Whether the stored `Stalled` is the refusal report's (reason `RequestRefused`): then the
/// group step neither decides nor applies `Stalled` until the report clears it.
fn refusal_reported(stored: &ScalingGroupStatus) -> bool {
    find(&stored.conditions, CONDITION_STALLED).is_some_and(|c| c.reason == REASON_REQUEST_REFUSED)
}

/// The part of a stored status the group step owns (other managers' conditions left out).
pub fn own_part(stored: &ScalingGroupStatus) -> ScalingGroupStatus {
    let mut own = stored.clone();
    own.conditions.retain(|c| {
        GROUP_CONDITIONS.contains(&c.type_.as_str())
            && !(c.type_ == CONDITION_STALLED && c.reason == REASON_REQUEST_REFUSED)
    });
    own
}

/// Whether `status` differs from `stored` only in what the group observes of its Instances:
/// the counts, `instances[]` (and how many were left out of it), and condition messages (the
/// Ready message counts Instances). Such a change records no decision (no replacement
/// memory, refresh step, revision, capacity or condition status/reason), so the reconciler
/// may pace its writes while many Instances change at once (see
/// `controller::group::observation_interval`); anything else is written at once.
pub fn observations_only(stored: &ScalingGroupStatus, status: &ScalingGroupStatus) -> bool {
    fn decisions(s: &ScalingGroupStatus) -> ScalingGroupStatus {
        let mut d = s.clone();
        d.current_capacity = 0;
        d.in_service_instances = 0;
        d.healthy_instances = 0;
        d.unhealthy_instances = 0;
        d.updated_instances = 0;
        d.instances = Vec::new();
        d.omitted_instances = None;
        for c in &mut d.conditions {
            c.message = String::new();
        }
        d
    }
    decisions(&own_part(stored)) == decisions(status)
}

/// The note of a Warning Event when `ScalingLimited` turns True or changes reason.
pub fn limit_event(stored: &ScalingGroupStatus, status: &ScalingGroupStatus) -> Option<String> {
    let limited = |s: &ScalingGroupStatus| {
        find(&s.conditions, CONDITION_SCALING_LIMITED)
            .filter(|c| c.status == "True")
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    let (reason, message) = limited(status)?;
    let before = limited(stored);
    (before.as_ref().map(|(r, _)| r) != Some(&reason)).then(|| format!("{reason}: {message}"))
}

/// A stable hash of the group's Instance template (FNV-1a over its JSON), 10 hex digits.
pub fn template_hash(group: &ScalingGroup) -> String {
    let bytes = serde_json::to_vec(&group.spec.template).unwrap_or_default();
    format!("{:010x}", revision::fnv(&bytes) & 0xff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        HealthDetail, HealthStatus, InstanceSummary, LifecycleState, ReplacementStrategy,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn group(desired: i32) -> ScalingGroup {
        let mut g: ScalingGroup = serde_json::from_value(json!({
            "apiVersion": "autoheal.dev/v1alpha1",
            "kind": "ScalingGroup",
            "metadata": { "name": "web", "namespace": "ns", "uid": "g-uid", "generation": 1 },
            "spec": {
                "minSize": 0, "maxSize": 10, "desiredCapacity": desired,
                "template": {
                    "spec": { "podTemplate": { "spec": { "containers": [ { "name": "app" } ] } } }
                }
            }
        }))
        .unwrap();
        g.metadata.uid = Some("g-uid".into());
        g
    }

    fn condition(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: Time(now()),
        }
    }

    fn plan_of(g: &ScalingGroup) -> GroupPlan {
        plan(&GroupInputs {
            group: g,
            instances: &[],
            revisions: &[],
            nodes: &[],
            replacement_backoff: Backoff::default(),
            now: now(),
        })
    }

    #[test]
    fn an_empty_group_launches_to_its_desired_capacity_and_records_status_first() {
        let p = plan_of(&group(3));
        assert_eq!(p.desired, 3);
        assert_eq!(
            p.actions,
            vec![GroupAction::Launch { replaces: None }; 3],
            "three plain launches"
        );
        assert!(p.status_changed, "a group without status gets one");
        assert_eq!(p.status.selector.as_deref(), Some("autoheal.dev/group=web"));
        let types: Vec<&str> = p
            .status
            .conditions
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(types, GROUP_CONDITIONS.to_vec());
        assert!(p.replacement.is_some());
    }

    #[test]
    fn the_first_reconcile_creates_revision_one_and_records_the_current_revision() {
        let g = group(2);
        let p = plan_of(&g);
        assert_eq!(p.revisions.create, Some(1));
        let hash = template_hash(&g);
        assert_eq!(p.launch_hash, hash);
        assert_eq!(
            p.status.current_revision,
            Some(format!("web-{hash}")),
            "the revision new Instances run"
        );
        assert_eq!(p.status.updated_instances, 0);
        assert!(p.status.refresh.is_none(), "nothing to refresh");
        let refreshing = find(&p.status.conditions, CONDITION_REFRESHING).unwrap();
        assert_eq!(refreshing.status, "False");
    }

    #[test]
    fn a_recorded_status_is_not_written_again() {
        let mut g = group(0);
        let first = plan_of(&g);
        g.status = Some(first.status.clone());
        let second = plan_of(&g);
        assert!(!second.status_changed);
        assert_eq!(second.status, first.status);
    }

    #[test]
    fn only_counts_instances_and_condition_messages_are_observations() {
        let g = group(3);
        let stored = plan_of(&g).status;
        let mut s = stored.clone();
        assert!(observations_only(&stored, &s), "no change at all");
        s.in_service_instances = 2;
        s.healthy_instances = 2;
        s.current_capacity = 3;
        s.instances.push(InstanceSummary {
            name: "web-aaaaa".into(),
            lifecycle_state: Some(LifecycleState::InService),
            health_status: None,
            health_detail: None,
            protected_from_scale_in: false,
            node_name: Some("n1".into()),
            zone: None,
            revision: None,
        });
        s.conditions[0].message = "2 of 3 Instances".into();
        assert!(observations_only(&stored, &s));
        let mut decided = s.clone();
        decided.conditions[0].reason = "SomethingElse".into();
        assert!(
            !observations_only(&stored, &decided),
            "a condition's reason"
        );
        let mut decided = s.clone();
        decided.consecutive_replacement_failures = 1;
        assert!(!observations_only(&stored, &decided), "replacement memory");
        let mut decided = s.clone();
        decided.desired_capacity = 4;
        assert!(!observations_only(&stored, &decided), "capacity");
        let mut decided = s;
        decided.observed_generation = Some(7);
        assert!(!observations_only(&stored, &decided), "a new generation");
    }

    #[test]
    fn conditions_of_other_managers_are_neither_applied_nor_compared() {
        let mut g = group(0);
        let first = plan_of(&g);
        let mut stored = first.status.clone();
        stored
            .conditions
            .push(condition("example.com/Audited", "True", "SomeoneElse"));
        g.status = Some(stored);
        let p = plan_of(&g);
        assert!(!p.status_changed, "a foreign condition forces no write");
        assert!(
            p.status
                .conditions
                .iter()
                .all(|c| c.type_ != "example.com/Audited")
        );
    }

    #[test]
    fn a_refusal_report_keeps_stalled_until_it_clears_it() {
        let mut g = group(0);
        let first = plan_of(&g);
        let mut stored = first.status.clone();
        stored.conditions.retain(|c| c.type_ != CONDITION_STALLED);
        stored
            .conditions
            .push(condition(CONDITION_STALLED, "True", REASON_REQUEST_REFUSED));
        g.status = Some(stored.clone());
        let p = plan_of(&g);
        assert!(
            p.status
                .conditions
                .iter()
                .all(|c| c.type_ != CONDITION_STALLED),
            "the refusal report's Stalled is neither applied nor overwritten"
        );
        assert!(!p.status_changed, "nor compared");
        // Cleared by the report: the group step decides Stalled again.
        stored.conditions.retain(|c| c.type_ != CONDITION_STALLED);
        g.status = Some(stored);
        let p = plan_of(&g);
        assert_eq!(
            find(&p.status.conditions, CONDITION_STALLED).map(|c| c.status.as_str()),
            Some("False")
        );
        assert!(p.status_changed);
    }

    fn ready(ok: bool, reason: &str) -> DesiredCondition {
        DesiredCondition::new(CONDITION_READY, ok, reason, format!("ready: {reason}"))
    }

    fn allowed(ok: bool, reason: &str) -> DesiredCondition {
        DesiredCondition::new(CONDITION_REPLACEMENT_ALLOWED, ok, reason, "breaker says so")
    }

    fn within_limits() -> DesiredCondition {
        DesiredCondition::new(CONDITION_SCALING_LIMITED, false, "WithinLimits", "")
    }

    #[test]
    fn kstatus_a_failed_refresh_is_stalled_even_when_ready() {
        let failed = DesiredCondition::new(
            CONDITION_REFRESHING,
            false,
            REASON_REFRESH_FAILED,
            "RollbackSuccessful: web-abcde turned Unhealthy in its warm-up",
        );
        let (r, s) = kstatus(
            &ready(true, "AllInService"),
            &within_limits(),
            Some(&allowed(true, reason::ALLOWED)),
            Some(&failed),
        );
        assert_eq!(
            (s.status, s.reason.as_str()),
            ("True", REASON_REFRESH_FAILED)
        );
        assert!(s.message.contains("web-abcde"));
        assert_eq!(r.status, "False");
        let succeeded = DesiredCondition::new(CONDITION_REFRESHING, false, "Successful", "done");
        let (_, s) = kstatus(
            &ready(true, "AllInService"),
            &within_limits(),
            None,
            Some(&succeeded),
        );
        assert_eq!(s.status, "False");
    }

    #[test]
    fn kstatus_ready_is_neither_reconciling_nor_stalled() {
        let (r, s) = kstatus(
            &ready(true, "AllInService"),
            &within_limits(),
            Some(&allowed(true, reason::ALLOWED)),
            None,
        );
        assert_eq!((r.status, s.status), ("False", "False"));
    }

    #[test]
    fn kstatus_not_ready_on_its_way_is_reconciling_with_readys_reason() {
        for why in ["ScalingOut", "ScalingIn", "InstancesNotReady", "Deleting"] {
            let (r, s) = kstatus(
                &ready(false, why),
                &within_limits(),
                Some(&allowed(true, reason::BACKING_OFF)),
                None,
            );
            assert_eq!((r.status, r.reason.as_str()), ("True", why));
            assert_eq!(s.status, "False");
        }
    }

    #[test]
    fn kstatus_held_by_what_only_a_person_ends_is_stalled_with_that_reason() {
        for why in STALLING_REPLACEMENT_REASONS {
            let (r, s) = kstatus(
                &ready(false, "InstancesNotReady"),
                &within_limits(),
                Some(&allowed(false, why)),
                None,
            );
            assert_eq!((s.status, s.reason.as_str()), ("True", why));
            assert!(s.message.contains("breaker says so") && s.message.contains("ready:"));
            assert_eq!(r.status, "False");
        }
        for why in STALLING_LIMIT_REASONS {
            let limited = DesiredCondition::new(CONDITION_SCALING_LIMITED, true, why, "held");
            let (_, s) = kstatus(&ready(false, "ScalingOut"), &limited, None, None);
            assert_eq!((s.status, s.reason.as_str()), ("True", why));
        }
        // A deleted group drains by itself whatever holds replacement.
        let (r, s) = kstatus(
            &ready(false, "Deleting"),
            &within_limits(),
            Some(&allowed(false, reason::TOO_MANY_UNHEALTHY)),
            None,
        );
        assert_eq!((r.status, s.status), ("True", "False"));
        // A limit that ends by itself (bounds) does not stall.
        let bounded =
            DesiredCondition::new(CONDITION_SCALING_LIMITED, true, "AboveMaxSize", "clamped");
        let (r, _) = kstatus(&ready(false, "ScalingIn"), &bounded, None, None);
        assert_eq!(r.status, "True");
    }

    #[test]
    fn a_group_being_deleted_plans_no_replacement_and_keeps_its_replacement_condition() {
        let mut g = group(2);
        let first = plan_of(&g);
        g.status = Some(first.status.clone());
        g.metadata.deletion_timestamp = Some(Time(now()));
        let p = plan_of(&g);
        assert!(p.deleting && p.replacement.is_none());
        assert!(p.actions.is_empty(), "nothing to launch while deleting");
        let kept = find(&p.status.conditions, CONDITION_REPLACEMENT_ALLOWED).unwrap();
        let before = find(&first.status.conditions, CONDITION_REPLACEMENT_ALLOWED).unwrap();
        assert_eq!(kept, before);
    }

    #[test]
    fn a_paused_value_not_understood_is_a_warning_and_does_not_pause() {
        let mut g = group(1);
        g.metadata.annotations = Some(
            [(
                crate::api::ANNOTATION_PAUSED.to_string(),
                "maybe".to_string(),
            )]
            .into(),
        );
        let p = plan_of(&g);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert_eq!(p.actions.len(), 1, "still launches");
    }

    #[test]
    fn scaling_limited_event_only_when_it_turns_true_or_changes_reason() {
        let status = |c: Option<Condition>| ScalingGroupStatus {
            conditions: c.into_iter().collect(),
            ..ScalingGroupStatus::default()
        };
        let limited = |r: &str| Some(condition(CONDITION_SCALING_LIMITED, "True", r));
        let fine = Some(condition(CONDITION_SCALING_LIMITED, "False", "Ok"));
        assert!(limit_event(&status(fine.clone()), &status(limited("AtMax"))).is_some());
        assert!(limit_event(&status(None), &status(limited("AtMax"))).is_some());
        assert!(limit_event(&status(limited("AtMax")), &status(limited("AtMax"))).is_none());
        assert!(limit_event(&status(limited("AtMax")), &status(limited("Paused"))).is_some());
        assert!(limit_event(&status(limited("AtMax")), &status(fine)).is_none());
    }

    #[test]
    fn replacement_terminations_come_first_and_are_not_doubled_by_capacity() {
        let capacity = vec![
            GroupAction::Terminate {
                name: "b".into(),
                reason: TerminationReason::ScaleIn,
            },
            GroupAction::Launch { replaces: None },
        ];
        let mut plan = plan_of(&group(0)).replacement.unwrap();
        plan.terminate = vec!["a".into(), "b".into()];
        plan.launch_replacements_for = vec!["c".into()];
        let merged = merge_actions(&capacity, Some(&plan), &[]);
        assert_eq!(
            merged,
            vec![
                GroupAction::Terminate {
                    name: "a".into(),
                    reason: TerminationReason::Unhealthy
                },
                GroupAction::Terminate {
                    name: "b".into(),
                    reason: TerminationReason::ScaleIn
                },
                GroupAction::Launch { replaces: None },
                GroupAction::Launch {
                    replaces: Some("c".into())
                },
            ]
        );
    }

    /// An InService member of `g` on its current template, in service for an hour, with
    /// the given health.
    fn member(g: &ScalingGroup, name: &str, health: HealthStatus) -> InstanceView {
        let hour_ago = now() - k8s_openapi::jiff::SignedDuration::from_hours(1);
        let healthy = health == HealthStatus::Healthy;
        InstanceView {
            name: name.into(),
            created_at: hour_ago,
            state: LifecycleState::InService,
            health: Some(health),
            detail: Some(if healthy {
                HealthDetail::OK
            } else {
                HealthDetail::Impaired
            }),
            protected: false,
            in_service_since: Some(hour_ago),
            replaces: None,
            template_hash: Some(template_hash(g)),
            being_deleted: false,
            maintenance: false,
            standby: false,
            evidence: None,
            termination_reason: None,
            placement: Default::default(),
            repair: Default::default(),
            health_reason: (!healthy).then(|| "MarkedUnhealthy".into()),
            health_since: Some(hour_ago),
        }
    }

    fn plan_with(g: &ScalingGroup, instances: &[InstanceView]) -> GroupPlan {
        plan(&GroupInputs {
            group: g,
            instances,
            revisions: &[],
            nodes: &[],
            replacement_backoff: Backoff::default(),
            now: now(),
        })
    }

    #[test]
    fn terminate_then_launch_launches_the_replacement_in_the_pass_that_terminates() {
        let g = group(3);
        let members = [
            member(&g, "web-a", HealthStatus::Healthy),
            member(&g, "web-b", HealthStatus::Unhealthy),
            member(&g, "web-c", HealthStatus::Healthy),
        ];
        let p = plan_with(&g, &members);
        assert_eq!(
            p.actions,
            vec![
                GroupAction::Terminate {
                    name: "web-b".into(),
                    reason: TerminationReason::Unhealthy
                },
                GroupAction::Launch {
                    replaces: Some("web-b".into())
                },
            ],
            "the old Instance stops counting once its termination is requested"
        );
        // The next pass, which sees both (web-b being deleted, its replacement starting),
        // does neither again.
        let mut next = members.to_vec();
        next[1].being_deleted = true;
        next[1].termination_reason = Some("Unhealthy".into());
        let mut replacement = member(&g, "web-d", HealthStatus::Healthy);
        replacement.state = LifecycleState::Pending;
        replacement.health = None;
        replacement.detail = None;
        replacement.in_service_since = None;
        replacement.replaces = Some("web-b".into());
        next.push(replacement);
        assert_eq!(plan_with(&g, &next).actions, vec![]);
    }

    #[test]
    fn with_launches_suspended_an_unhealthy_instance_is_neither_terminated_nor_replaced() {
        let mut g = group(2);
        g.spec.suspended_processes = vec![crate::api::Process::Launch];
        let members = [
            member(&g, "web-a", HealthStatus::Healthy),
            member(&g, "web-b", HealthStatus::Unhealthy),
        ];
        let p = plan_with(&g, &members);
        assert_eq!(
            p.actions,
            vec![],
            "nothing is marked leaving, nothing launches"
        );
        let allowed = find(&p.status.conditions, CONDITION_REPLACEMENT_ALLOWED).unwrap();
        assert_eq!(
            (allowed.status.as_str(), allowed.reason.as_str()),
            ("False", "Suspended")
        );
    }

    #[test]
    fn a_refused_termination_holds_back_the_launch_that_took_its_place_only() {
        let launch = |replaces: Option<&str>| GroupAction::Launch {
            replaces: replaces.map(Into::into),
        };
        let terminate = |name: &str| GroupAction::Terminate {
            name: name.into(),
            reason: TerminationReason::Unhealthy,
        };
        let actions = vec![
            terminate("web-b"),
            terminate("web-r"),
            launch(Some("web-b")),
            launch(None),
            launch(None),
            launch(Some("web-s")),
        ];
        let sent = |refused: &[&str]| -> Vec<GroupAction> {
            let refused: Vec<String> = refused.iter().map(|n| n.to_string()).collect();
            launches_despite_refused(&actions, &refused)
                .into_iter()
                .cloned()
                .collect()
        };
        assert_eq!(
            sent(&[]),
            vec![
                launch(Some("web-b")),
                launch(None),
                launch(None),
                launch(Some("web-s"))
            ],
            "nothing refused: every launch"
        );
        assert_eq!(
            sent(&["web-b"]),
            vec![launch(None), launch(None), launch(Some("web-s"))],
            "its own replacement is held back"
        );
        assert_eq!(
            sent(&["web-r"]),
            vec![launch(Some("web-b")), launch(None), launch(Some("web-s"))],
            "no launch names it: a plain one is held back"
        );
        assert_eq!(
            sent(&["web-b", "web-r", "web-x", "web-y"]),
            vec![],
            "one held back per refusal, surge launches last"
        );
        let only_terminations = [terminate("web-b")];
        assert!(launches_despite_refused(&only_terminations, &["web-b".into()]).is_empty());
    }

    #[test]
    fn launch_before_terminate_adds_no_launch_when_the_old_instance_leaves() {
        let mut g = group(2);
        g.spec.replacement.strategy = ReplacementStrategy::LaunchBeforeTerminate;
        let mut surge = member(&g, "web-c", HealthStatus::Healthy);
        surge.replaces = Some("web-b".into());
        let members = [
            member(&g, "web-a", HealthStatus::Healthy),
            member(&g, "web-b", HealthStatus::Unhealthy),
            surge,
        ];
        let p = plan_with(&g, &members);
        assert_eq!(
            p.actions,
            vec![GroupAction::Terminate {
                name: "web-b".into(),
                reason: TerminationReason::Unhealthy
            }],
            "its surge replacement is InService: it takes the old one's place"
        );
    }

    /// One random Instance of a group: (state, health, being deleted, replaces another's
    /// index, created seconds before `now`).
    fn random_member() -> impl proptest::strategy::Strategy<
        Value = (
            LifecycleState,
            Option<HealthStatus>,
            bool,
            Option<usize>,
            i64,
        ),
    > {
        use proptest::prelude::*;
        (
            prop_oneof![
                Just(LifecycleState::Pending),
                Just(LifecycleState::InService),
                Just(LifecycleState::Terminating),
                Just(LifecycleState::TerminatingProceed),
            ],
            prop_oneof![
                Just(None),
                Just(Some(HealthStatus::Healthy)),
                Just(Some(HealthStatus::Unhealthy)),
            ],
            proptest::bool::weighted(0.2),
            proptest::option::weighted(0.3, 0usize..8),
            1i64..7200,
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000, ..proptest::prelude::ProptestConfig::default()
        })]

        /// The launches of a pass are all the launches its facts call for: once its actions
        /// are seen, the next pass launches nothing more (no double launch, in particular of a
        /// replacement launched in the pass that terminated its old Instance). Scale-in may
        /// take more than one pass when a surge's old Instance is scaled in (the surge then
        /// counts), so terminations are not compared.
        #[test]
        fn a_pass_once_seen_leaves_nothing_to_launch(
            desired in 1i32..6,
            launch_first in proptest::bool::ANY,
            min_healthy in proptest::sample::select(vec![0, 50, 90, 100]),
            in_flight in proptest::sample::select(vec!["1", "2", "100%"]),
            raw in proptest::collection::vec(random_member(), 0..8),
        ) {
            let mut g = group(desired);
            g.spec.max_size = desired + 2;
            if launch_first {
                g.spec.replacement.strategy = ReplacementStrategy::LaunchBeforeTerminate;
            }
            g.spec.replacement.min_healthy_percentage = min_healthy;
            g.spec.replacement.max_in_flight =
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(in_flight.into());
            g.spec.health_check.grace_period_seconds = 0;
            let names: Vec<String> = (0..raw.len()).map(|i| format!("web-{i:02}")).collect();
            let mut members: Vec<InstanceView> = Vec::new();
            for (i, (state, health, deleted, replaces, age)) in raw.iter().enumerate() {
                let mut m = member(&g, &names[i], health.unwrap_or(HealthStatus::Healthy));
                m.state = *state;
                m.health = *health;
                m.detail = health.map(|h| if h == HealthStatus::Healthy {
                    HealthDetail::OK
                } else {
                    HealthDetail::Impaired
                });
                m.created_at = now() - k8s_openapi::jiff::SignedDuration::from_secs(*age);
                m.in_service_since = (*state == LifecycleState::InService).then_some(m.created_at);
                m.being_deleted = *deleted || state.is_terminating();
                if m.being_deleted {
                    m.termination_reason = Some(if health == &Some(HealthStatus::Unhealthy) {
                        "Unhealthy".into()
                    } else {
                        "ScaleIn".into()
                    });
                }
                m.replaces = replaces.filter(|r| *r < raw.len() && *r != i).map(|r| names[r].clone());
                members.push(m);
            }
            let first = plan_with(&g, &members);
            // What the next pass sees: the recorded status, the terminated being deleted and
            // the launched starting.
            let mut seen = as_leaving(
                &members,
                &first
                    .actions
                    .iter()
                    .filter_map(|a| match a {
                        GroupAction::Terminate { name, reason } => Some((name.clone(), *reason)),
                        GroupAction::Launch { .. } => None,
                    })
                    .collect::<Vec<_>>(),
            );
            for (n, a) in first.actions.iter().enumerate() {
                if let GroupAction::Launch { replaces } = a {
                    let mut m = member(&g, &format!("new-{n:02}"), HealthStatus::Healthy);
                    m.state = LifecycleState::Pending;
                    m.health = None;
                    m.detail = None;
                    m.in_service_since = None;
                    m.created_at = now();
                    m.replaces = replaces.clone();
                    seen.push(m);
                }
            }
            let mut g2 = g.clone();
            g2.status = Some(first.status.clone());
            let second = plan_with(&g2, &seen);
            proptest::prop_assert!(
                !second
                    .actions
                    .iter()
                    .any(|a| matches!(a, GroupAction::Launch { .. })),
                "first pass {:?}\nthen {:?}\nmembers {:#?}",
                first.actions,
                second.actions,
                members
            );
        }
    }
}
