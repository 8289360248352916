//! The replacement step of the ScalingGroup reconcile: the thin shell around the pure
//! [`crate::plan::replacement`] planner.
//!
//! The group reconciler calls, in this order:
//! 1. [`plan`] — what to replace now, from the store's view of the group's Instances;
//! 2. [`merge_actions`] — the replacement's terminations and surge launches joined with the
//!    capacity planner's actions (capacity launches that replace an Instance leaving for health
//!    are annotated `autoheal.dev/replaces`, so they are tracked and judged);
//! 3. [`record`] — the planner's memory and `ReplacementAllowed` condition put into the status
//!    the reconciler writes *before* it acts (so a restarted operator never counts a failure
//!    twice and never repeats a step);
//! 4. [`emit_events`] — the planned Events, before the actions they announce;
//! 5. the actions themselves (the reconciler's own launch / terminate functions).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use crate::api::conditions::{DesiredCondition, find};
use crate::api::{Instance, ScalingGroup, ScalingGroupStatus};
use crate::plan::InstanceView;
use crate::plan::capacity::GroupAction;
use crate::plan::lifecycle::TerminationReason;
use crate::plan::replacement::{
    self as planner, Backoff, EventType, ReplacementInputs, ReplacementMemory, ReplacementPlan,
};

use super::context::Context;

/// The Event action of every replacement Event.
const ACTION: &str = "Replace";

/// Plans the replacement of the group's Unhealthy Instances; `None` while the group is being
/// deleted (every Instance is then terminated by the capacity planner).
pub fn plan(
    group: &ScalingGroup,
    paused: bool,
    deleting: bool,
    views: &[InstanceView],
    backoff: Backoff,
    now: Timestamp,
) -> Option<ReplacementPlan> {
    if deleting {
        return None;
    }
    let stored = group.status.clone().unwrap_or_default();
    let memory = ReplacementMemory::from_status(&stored);
    let template_hash = crate::plan::group::template_hash(group);
    Some(planner::plan_replacements(&ReplacementInputs {
        spec: &group.spec,
        paused,
        instances: views,
        memory: &memory,
        template_hash: &template_hash,
        reset_request: group
            .annotations()
            .get(crate::api::names::ANNOTATION_RESET_REPLACEMENT_FAILURES)
            .map(String::as_str),
        previous_condition: find(
            &stored.conditions,
            crate::api::CONDITION_REPLACEMENT_ALLOWED,
        ),
        backoff,
        now,
    }))
}

/// The group's actions: the replacement's terminations first (reason Unhealthy), then the
/// capacity planner's actions (an Instance both want to terminate is terminated once, for the
/// capacity planner's reason), then surge launches. Capacity launches are annotated with the
/// Instances leaving for health that no Instance replaces yet
/// ([`planner::replacement_targets`]).
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
    let mut targets = planner::replacement_targets(views).into_iter();
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

/// Puts the planner's memory into the status to write, and its condition among the
/// conditions the reconciler owns; without a plan (group being deleted) the stored memory is
/// kept as it is.
pub fn record(
    plan: Option<&ReplacementPlan>,
    stored: &ScalingGroupStatus,
    status: &mut ScalingGroupStatus,
    owned: &mut Vec<DesiredCondition>,
) {
    match plan {
        Some(plan) => {
            plan.memory.write_to(status);
            owned.push(plan.condition.clone());
        }
        None => ReplacementMemory::from_status(stored).write_to(status),
    }
}

/// Publishes the planned Events: on the group, and also on the Instance an Event is about.
pub async fn emit_events(
    ctx: &Context,
    group: &ScalingGroup,
    members: &[Arc<Instance>],
    plan: Option<&ReplacementPlan>,
) {
    let Some(plan) = plan else { return };
    let group_ref = group.object_ref(&());
    for event in &plan.events {
        let instance = event
            .instance
            .as_deref()
            .and_then(|n| members.iter().find(|i| i.name_any() == n));
        let mut regarding = vec![group_ref.clone()];
        if let Some(instance) = instance {
            regarding.push(instance.object_ref(&()));
        }
        for r in &regarding {
            match event.type_ {
                EventType::Normal => {
                    ctx.events
                        .normal(r, event.reason, ACTION, event.message.clone())
                        .await
                }
                EventType::Warning => {
                    ctx.events
                        .warning(r, event.reason, ACTION, event.message.clone())
                        .await
                }
            }
        }
    }
}

/// When the reconciler should look again at the latest for the replacement's sake.
pub fn requeue_after(plan: Option<&ReplacementPlan>) -> Option<Duration> {
    plan.and_then(|p| p.requeue_after)
        .map(|d| d + Duration::from_millis(50))
}
