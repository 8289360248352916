//! The capacity planner of a ScalingGroup: how many Instances to launch, which to terminate
//! on scale-in, whether scaling is limited, and the group's status (counts, the bounded
//! `instances[]` list, the `Ready` and `ScalingLimited` conditions). Pure: no I/O.
//!
//! Capacity counts the Instances that count toward it ([`InstanceView::counts_toward_capacity`]:
//! every state before Terminating, and not being deleted). Terminating Instances do not
//! count, so a Terminating Instance is replaced at once (AWS TerminateThenLaunch). A *surge*
//! Instance — one launched to replace an Unhealthy Instance that still counts
//! (LaunchBeforeTerminate) — is left out of the scaling arithmetic, so scale-in never removes
//! it as an excess and the replaced Instance is not launched again.

use std::collections::HashSet;

use crate::api::conditions::DesiredCondition;
use crate::api::{CONDITION_READY, CONDITION_SCALING_LIMITED};
use crate::api::{
    HealthDetail, HealthStatus, InstanceSummary, LifecycleState, Process, ScaleInPolicy,
    ScalingGroupSpec, ScalingGroupStatus,
};

use super::InstanceView;
use super::lifecycle::TerminationReason;

/// The most Instances listed in `status.instances` (beyond this only the ones not
/// InService+Healthy are listed, themselves bounded by this number).
pub const MAX_LISTED_INSTANCES: usize = 256;

/// Something the group reconciler does to reach its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupAction {
    /// Launch a new Instance (`replaces`: the Instance it replaces, recorded in the
    /// `autoheal.dev/replaces` annotation).
    Launch {
        /// The Instance this one replaces, if any.
        replaces: Option<String>,
    },
    /// Terminate an Instance through the graceful path (the group deletes it after
    /// annotating the reason).
    Terminate {
        /// The Instance.
        name: String,
        /// Why.
        reason: TerminationReason,
    },
}

/// Why the group cannot reach its target right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// CamelCase reason of the `ScalingLimited` condition.
    pub reason: &'static str,
    /// The explanation, for people.
    pub message: String,
}

/// The capacity plan of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityPlan {
    /// The capacity aimed at.
    pub desired: i32,
    /// Instances counting toward capacity, surge Instances excluded.
    pub effective: i32,
    /// Launches and terminations, in order.
    pub actions: Vec<GroupAction>,
    /// Why the group cannot reach `desired`, if it cannot.
    pub limit: Option<Limit>,
}

/// Everything the planner looks at besides the Instances.
#[derive(Debug, Clone, Copy)]
pub struct GroupFacts<'a> {
    /// The group's spec.
    pub spec: &'a ScalingGroupSpec,
    /// `autoheal.dev/paused=true`: status only, no launches or terminations.
    pub paused: bool,
    /// The group is being deleted: every Instance is terminated.
    pub deleting: bool,
    /// Instances kept on top of the desired capacity while an instance refresh surges
    /// (see [`super::refresh`]).
    pub surge: i32,
}

/// Names of surge Instances: launched to replace an Unhealthy Instance that still counts
/// toward capacity (see [`super::replacement::surge_instances`]); they are left out of the
/// scaling arithmetic.
pub fn surge_instances(instances: &[InstanceView]) -> HashSet<String> {
    super::replacement::surge_instances(instances)
        .into_iter()
        .collect()
}

/// Plans launches and scale-in terminations.
pub fn plan(facts: &GroupFacts<'_>, instances: &[InstanceView]) -> CapacityPlan {
    let spec = facts.spec;
    let desired = spec.effective_desired();
    // The count aimed at: the desired capacity, plus a refresh's surge.
    let target = desired.saturating_add(facts.surge.max(0));
    let surge = surge_instances(instances);
    let counting: Vec<&InstanceView> = instances
        .iter()
        .filter(|i| i.counts_toward_capacity() && !surge.contains(&i.name))
        .collect();
    let effective = counting.len() as i32;
    let mut plan = CapacityPlan {
        desired,
        effective,
        actions: Vec::new(),
        limit: None,
    };

    if facts.deleting {
        if facts.paused {
            plan.limit = Some(Limit {
                reason: "Paused",
                message: "the group is being deleted but paused (autoheal.dev/paused=true): its Instances are not terminated until it is unpaused".into(),
            });
            return plan;
        }
        let mut names: Vec<&InstanceView> = instances.iter().filter(|i| !i.being_deleted).collect();
        names.sort_by(|a, b| a.name.cmp(&b.name));
        plan.actions = names
            .into_iter()
            .map(|i| GroupAction::Terminate {
                name: i.name.clone(),
                reason: TerminationReason::GroupDeleted,
            })
            .collect();
        return plan;
    }

    let out_of_range = spec.desired_capacity.and_then(|d| {
        if d > spec.max_size {
            Some(Limit {
                reason: "AboveMaxSize",
                message: format!(
                    "desiredCapacity {d} is above maxSize {}: the group keeps {desired}",
                    spec.max_size
                ),
            })
        } else if d < spec.min_size {
            Some(Limit {
                reason: "BelowMinSize",
                message: format!(
                    "desiredCapacity {d} is below minSize {}: the group keeps {desired}",
                    spec.min_size
                ),
            })
        } else {
            None
        }
    });

    if effective < target {
        let missing = target - effective;
        if facts.paused {
            plan.limit = Some(paused_limit(effective, desired));
        } else if spec.is_suspended(Process::Launch) {
            plan.limit = Some(Limit {
                reason: "LaunchSuspended",
                message: format!(
                    "the Launch process is suspended: {effective} of {desired} Instances, {missing} not launched"
                ),
            });
        } else {
            plan.actions
                .extend((0..missing).map(|_| GroupAction::Launch { replaces: None }));
        }
    } else if effective > target {
        let excess = (effective - target) as usize;
        if facts.paused {
            plan.limit = Some(paused_limit(effective, desired));
        } else if spec.is_suspended(Process::Terminate) {
            plan.limit = Some(Limit {
                reason: "TerminateSuspended",
                message: format!(
                    "the Terminate process is suspended: {effective} Instances, {excess} more than the desired {desired}"
                ),
            });
        } else {
            let candidates: Vec<&InstanceView> =
                counting.iter().copied().filter(|i| !i.protected).collect();
            let chosen = select_for_scale_in(spec.scale_in.policy, &candidates, excess);
            if chosen.len() < excess {
                let kept = excess - chosen.len();
                plan.limit = Some(Limit {
                    reason: "ProtectedFromScaleIn",
                    message: format!(
                        "{kept} Instance(s) protected from scale-in keep the group at {} (desired {desired})",
                        desired + kept as i32
                    ),
                });
            }
            plan.actions
                .extend(chosen.into_iter().map(|name| GroupAction::Terminate {
                    name,
                    reason: TerminationReason::ScaleIn,
                }));
        }
    }
    if plan.limit.is_none() {
        plan.limit = out_of_range;
    }
    plan
}

fn paused_limit(effective: i32, desired: i32) -> Limit {
    Limit {
        reason: "Paused",
        message: format!(
            "the group is paused (autoheal.dev/paused=true): {effective} of {desired} Instances, nothing launched or terminated"
        ),
    }
}

/// Picks `n` Instances to terminate on scale-in (never more than there are candidates;
/// callers pass only Instances that may be picked).
///
/// - `OldestInstance`: the oldest first.
/// - `NewestInstance`: the newest first.
/// - `Default`: Unhealthy first, then the oldest.
///
/// Ties (same creation second) are broken by name, so the choice is deterministic.
pub fn select_for_scale_in(
    policy: ScaleInPolicy,
    candidates: &[&InstanceView],
    n: usize,
) -> Vec<String> {
    let mut sorted: Vec<&InstanceView> = candidates.to_vec();
    let oldest = |a: &&InstanceView, b: &&InstanceView| {
        a.created_at
            .cmp(&b.created_at)
            .then_with(|| a.name.cmp(&b.name))
    };
    match policy {
        ScaleInPolicy::OldestInstance => sorted.sort_by(oldest),
        ScaleInPolicy::NewestInstance => sorted.sort_by(|a, b| oldest(b, a)),
        ScaleInPolicy::Default => sorted.sort_by(|a, b| {
            b.is_unhealthy()
                .cmp(&a.is_unhealthy())
                .then_with(|| oldest(a, b))
        }),
    }
    sorted.into_iter().take(n).map(|i| i.name.clone()).collect()
}

/// The counts and the bounded `instances[]` list of the group's status (conditions and the
/// replacement fields are left empty for the caller).
pub fn status_counts(
    spec: &ScalingGroupSpec,
    selector: &str,
    generation: Option<i64>,
    instances: &[InstanceView],
) -> ScalingGroupStatus {
    let counting: Vec<&InstanceView> = instances
        .iter()
        .filter(|i| i.counts_toward_capacity())
        .collect();
    let count = |f: &dyn Fn(&InstanceView) -> bool| counting.iter().filter(|i| f(i)).count() as i32;
    let (listed, omitted) = instance_list(instances);
    ScalingGroupStatus {
        observed_generation: generation,
        selector: Some(selector.to_string()),
        desired_capacity: spec.effective_desired(),
        current_capacity: counting.len() as i32,
        in_service_instances: count(&|i| i.state == LifecycleState::InService),
        healthy_instances: count(&|i| i.health == Some(HealthStatus::Healthy)),
        unhealthy_instances: count(&|i| i.health == Some(HealthStatus::Unhealthy)),
        instances: listed,
        omitted_instances: (omitted > 0).then_some(omitted as i32),
        ..ScalingGroupStatus::default()
    }
}

/// `status.instances`: all Instances (sorted by name) up to [`MAX_LISTED_INSTANCES`]; beyond
/// that only those not InService+Healthy, still bounded. Returns the list and how many were
/// left out.
pub fn instance_list(instances: &[InstanceView]) -> (Vec<InstanceSummary>, usize) {
    let mut sorted: Vec<&InstanceView> = instances.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let chosen: Vec<&InstanceView> = if sorted.len() <= MAX_LISTED_INSTANCES {
        sorted
    } else {
        sorted
            .into_iter()
            .filter(|i| !i.is_in_service_and_healthy() || i.being_deleted)
            .take(MAX_LISTED_INSTANCES)
            .collect()
    };
    let omitted = instances.len() - chosen.len();
    let list = chosen
        .into_iter()
        .map(|i| InstanceSummary {
            name: i.name.clone(),
            lifecycle_state: Some(i.state),
            health_status: i.health,
            health_detail: i.detail,
            protected_from_scale_in: i.protected,
            node_name: i.placement.node.clone(),
            zone: i.placement.zone.clone(),
            revision: i.placement.revision.clone(),
        })
        .collect();
    (list, omitted)
}

/// The `Ready` condition: True when the group has its desired capacity and every Instance
/// that counts toward it is InService and Healthy.
pub fn ready_condition(
    spec: &ScalingGroupSpec,
    instances: &[InstanceView],
    deleting: bool,
) -> DesiredCondition {
    let desired = spec.effective_desired();
    if deleting {
        return DesiredCondition::new(
            CONDITION_READY,
            false,
            "Deleting",
            "the group is being deleted; its Instances are terminating",
        );
    }
    let counting: Vec<&InstanceView> = instances
        .iter()
        .filter(|i| i.counts_toward_capacity())
        .collect();
    let current = counting.len() as i32;
    if current < desired {
        return DesiredCondition::new(
            CONDITION_READY,
            false,
            "ScalingOut",
            format!("{current} of {desired} Instances"),
        );
    }
    if current > desired {
        return DesiredCondition::new(
            CONDITION_READY,
            false,
            "ScalingIn",
            format!("{current} Instances, {desired} desired"),
        );
    }
    // Verified: InService, Healthy and OK (an Instance still Initializing or with
    // InsufficientData has not been checked yet, so the group is not done).
    let not_ready: Vec<String> = counting
        .iter()
        .filter(|i| !i.is_in_service_and_healthy() || i.detail != Some(HealthDetail::OK))
        .map(|i| {
            let health = match (i.health, i.detail) {
                (Some(h), Some(d)) => format!(", {h:?}/{d:?}"),
                (Some(h), None) => format!(", {h:?}"),
                _ => String::new(),
            };
            format!("{} ({}{health})", i.name, i.state)
        })
        .collect();
    if not_ready.is_empty() {
        DesiredCondition::new(
            CONDITION_READY,
            true,
            "AllInService",
            format!("{current} of {desired} Instances are InService, Healthy and OK"),
        )
    } else {
        let shown: Vec<&str> = not_ready.iter().take(5).map(String::as_str).collect();
        let more = if not_ready.len() > 5 {
            format!(" and {} more", not_ready.len() - 5)
        } else {
            String::new()
        };
        DesiredCondition::new(
            CONDITION_READY,
            false,
            "InstancesNotReady",
            format!(
                "{} of {desired} Instances are not InService, Healthy and OK: {}{more}",
                not_ready.len(),
                shown.join(", ")
            ),
        )
    }
}

/// The `ScalingLimited` condition for a plan's limit.
pub fn scaling_limited_condition(limit: Option<&Limit>, desired: i32) -> DesiredCondition {
    match limit {
        Some(l) => {
            DesiredCondition::new(CONDITION_SCALING_LIMITED, true, l.reason, l.message.clone())
        }
        None => DesiredCondition::new(
            CONDITION_SCALING_LIMITED,
            false,
            "WithinLimits",
            format!("nothing keeps the group from its desired capacity {desired}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn spec(min: i32, max: i32, desired: Option<i32>) -> ScalingGroupSpec {
        let mut s: ScalingGroupSpec = serde_json::from_value(serde_json::json!({
            "minSize": min, "maxSize": max,
            "template": { "spec": { "podTemplate": {} } },
        }))
        .unwrap();
        s.desired_capacity = desired;
        s
    }

    fn inst(name: &str, created: i64) -> InstanceView {
        InstanceView {
            placement: Default::default(),
            repair: Default::default(),
            name: name.into(),
            created_at: Timestamp::from_second(1_800_000_000 + created).unwrap(),
            state: LifecycleState::InService,
            health: Some(HealthStatus::Healthy),
            detail: Some(HealthDetail::OK),
            protected: false,
            in_service_since: None,
            replaces: None,
            template_hash: None,
            being_deleted: false,
            maintenance: false,
            standby: false,
            evidence: None,
            termination_reason: None,
            health_reason: None,
            health_since: None,
        }
    }

    fn facts(spec: &ScalingGroupSpec) -> GroupFacts<'_> {
        GroupFacts {
            spec,
            paused: false,
            deleting: false,
            surge: 0,
        }
    }

    fn launches(p: &CapacityPlan) -> usize {
        p.actions
            .iter()
            .filter(|a| matches!(a, GroupAction::Launch { .. }))
            .count()
    }

    fn terminated(p: &CapacityPlan) -> Vec<&str> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                GroupAction::Terminate { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn launches_up_to_desired() {
        let s = spec(0, 10, Some(5));
        let p = plan(&facts(&s), &[inst("a", 0), inst("b", 1)]);
        assert_eq!(launches(&p), 3);
        assert_eq!(p.limit, None);
    }

    #[test]
    fn desired_defaults_to_min_and_is_clamped() {
        let s = spec(2, 4, None);
        assert_eq!(plan(&facts(&s), &[]).desired, 2);
        let s = spec(2, 4, Some(9));
        let p = plan(&facts(&s), &[]);
        assert_eq!(p.desired, 4);
        assert_eq!(launches(&p), 4);
        assert_eq!(p.limit.unwrap().reason, "AboveMaxSize");
        let s = spec(3, 4, Some(1));
        let p = plan(&facts(&s), &[]);
        assert_eq!(p.desired, 3);
        assert_eq!(p.limit.unwrap().reason, "BelowMinSize");
    }

    #[test]
    fn terminating_and_deleted_instances_do_not_count() {
        let s = spec(0, 10, Some(2));
        let mut gone = inst("a", 0);
        gone.state = LifecycleState::Terminating;
        let mut deleted = inst("b", 0);
        deleted.being_deleted = true;
        let p = plan(&facts(&s), &[gone, deleted, inst("c", 0)]);
        assert_eq!(p.effective, 1);
        assert_eq!(launches(&p), 1);
    }

    #[test]
    fn pending_and_standby_count() {
        let s = spec(0, 10, Some(2));
        let mut a = inst("a", 0);
        a.state = LifecycleState::Pending;
        let mut b = inst("b", 0);
        b.state = LifecycleState::Standby;
        assert!(plan(&facts(&s), &[a, b]).actions.is_empty());
    }

    #[test]
    fn scale_in_policies() {
        let mut sick = inst("m-sick", 5);
        sick.health = Some(HealthStatus::Unhealthy);
        let all = [inst("a-old", 1), sick, inst("z-new", 9), inst("b-mid", 4)];
        let mut s = spec(0, 10, Some(3));
        s.scale_in.policy = ScaleInPolicy::OldestInstance;
        assert_eq!(terminated(&plan(&facts(&s), &all)), vec!["a-old"]);
        s.scale_in.policy = ScaleInPolicy::NewestInstance;
        assert_eq!(terminated(&plan(&facts(&s), &all)), vec!["z-new"]);
        s.scale_in.policy = ScaleInPolicy::Default;
        assert_eq!(terminated(&plan(&facts(&s), &all)), vec!["m-sick"]);
        s.desired_capacity = Some(1);
        assert_eq!(
            terminated(&plan(&facts(&s), &all)),
            vec!["m-sick", "a-old", "b-mid"]
        );
        let p = plan(&facts(&s), &all);
        assert!(p.actions.iter().all(|a| matches!(
            a,
            GroupAction::Terminate {
                reason: TerminationReason::ScaleIn,
                ..
            }
        )));
    }

    #[test]
    fn ties_break_by_name() {
        let s = spec(0, 10, Some(1));
        let p = plan(&facts(&s), &[inst("b", 0), inst("a", 0)]);
        assert_eq!(terminated(&p), vec!["a"]);
    }

    #[test]
    fn protected_instances_are_never_picked_and_limit_scaling() {
        let mut a = inst("a", 0);
        a.protected = true;
        let mut b = inst("b", 1);
        b.protected = true;
        let c = inst("c", 2);
        let s = spec(0, 10, Some(0));
        let p = plan(&facts(&s), &[a, b, c]);
        assert_eq!(terminated(&p), vec!["c"]);
        let limit = p.limit.unwrap();
        assert_eq!(limit.reason, "ProtectedFromScaleIn");
        assert!(limit.message.contains("2 Instance(s)"), "{}", limit.message);
    }

    #[test]
    fn suspended_processes_and_pause_stop_actions_and_limit() {
        let mut s = spec(0, 10, Some(3));
        s.suspended_processes = vec![Process::Launch];
        let p = plan(&facts(&s), &[]);
        assert!(p.actions.is_empty());
        assert_eq!(p.limit.unwrap().reason, "LaunchSuspended");
        let mut s = spec(0, 10, Some(0));
        s.suspended_processes = vec![Process::Terminate];
        let p = plan(&facts(&s), &[inst("a", 0)]);
        assert!(p.actions.is_empty());
        assert_eq!(p.limit.unwrap().reason, "TerminateSuspended");
        // Launch suspended does not stop scale-in.
        let mut s = spec(0, 10, Some(0));
        s.suspended_processes = vec![Process::Launch];
        assert_eq!(terminated(&plan(&facts(&s), &[inst("a", 0)])), vec!["a"]);
        let s = spec(0, 10, Some(3));
        let p = plan(
            &GroupFacts {
                spec: &s,
                paused: true,
                deleting: false,
                surge: 0,
            },
            &[],
        );
        assert!(p.actions.is_empty());
        assert_eq!(p.limit.unwrap().reason, "Paused");
    }

    #[test]
    fn at_target_nothing_happens() {
        let s = spec(0, 10, Some(2));
        let p = plan(&facts(&s), &[inst("a", 0), inst("b", 0)]);
        assert!(p.actions.is_empty());
        assert_eq!(p.limit, None);
    }

    #[test]
    fn deletion_terminates_everything_not_yet_deleted() {
        let s = spec(1, 10, Some(3));
        let mut gone = inst("b", 0);
        gone.being_deleted = true;
        let mut protected = inst("c", 0);
        protected.protected = true;
        let p = plan(
            &GroupFacts {
                spec: &s,
                paused: false,
                deleting: true,
                surge: 0,
            },
            &[inst("a", 0), gone, protected],
        );
        assert_eq!(terminated(&p), vec!["a", "c"]);
        assert!(p.actions.iter().all(|a| matches!(
            a,
            GroupAction::Terminate {
                reason: TerminationReason::GroupDeleted,
                ..
            }
        )));
        let p = plan(
            &GroupFacts {
                spec: &s,
                paused: true,
                deleting: true,
                surge: 0,
            },
            &[inst("a", 0)],
        );
        assert!(p.actions.is_empty());
    }

    #[test]
    fn surge_instances_are_not_excess() {
        let s = spec(0, 3, Some(2));
        let mut surge = inst("new", 5);
        surge.replaces = Some("old".into());
        surge.state = LifecycleState::Pending;
        let all = [inst("old", 0), inst("other", 1), surge.clone()];
        let p = plan(&facts(&s), &all);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.effective, 2);
        // Once the old one terminates, the replacement counts.
        let mut old = inst("old", 0);
        old.state = LifecycleState::Terminating;
        let p = plan(&facts(&s), &[old, inst("other", 1), surge.clone()]);
        assert!(p.actions.is_empty());
        assert_eq!(p.effective, 2);
        // A ready surge Instance whose old Instance is healthy again is no longer surge: the
        // group is one over and scales in (oldest first by the default policy).
        let mut ready = surge;
        ready.state = LifecycleState::InService;
        let p = plan(&facts(&s), &[inst("old", 0), inst("other", 1), ready]);
        assert_eq!(p.effective, 3);
        assert_eq!(terminated(&p), vec!["old"]);
    }

    #[test]
    fn status_counts_and_list() {
        let s = spec(0, 10, Some(3));
        let mut pending = inst("b", 0);
        pending.state = LifecycleState::Pending;
        pending.health = None;
        pending.detail = None;
        let mut sick = inst("c", 0);
        sick.health = Some(HealthStatus::Unhealthy);
        let mut leaving = inst("d", 0);
        leaving.state = LifecycleState::Terminating;
        let st = status_counts(
            &s,
            "autoheal.dev/group=web",
            Some(4),
            &[inst("a", 0), pending, sick, leaving],
        );
        assert_eq!(st.desired_capacity, 3);
        assert_eq!(st.current_capacity, 3);
        assert_eq!(st.in_service_instances, 2);
        assert_eq!(st.healthy_instances, 1);
        assert_eq!(st.unhealthy_instances, 1);
        assert_eq!(st.instances.len(), 4);
        assert_eq!(st.omitted_instances, None);
        assert_eq!(st.selector.as_deref(), Some("autoheal.dev/group=web"));
        assert_eq!(st.observed_generation, Some(4));
    }

    #[test]
    fn instance_list_is_bounded() {
        let mut all: Vec<InstanceView> = (0..300).map(|i| inst(&format!("i{i:03}"), 0)).collect();
        for i in all.iter_mut().take(10) {
            i.state = LifecycleState::Pending;
        }
        let (list, omitted) = instance_list(&all);
        assert_eq!(list.len(), 10);
        assert_eq!(omitted, 290);
        let (list, omitted) = instance_list(&all[..256]);
        assert_eq!(list.len(), 256);
        assert_eq!(omitted, 0);
        let mut sick: Vec<InstanceView> = (0..400).map(|i| inst(&format!("s{i:03}"), 0)).collect();
        for i in &mut sick {
            i.health = Some(HealthStatus::Unhealthy);
        }
        let (list, omitted) = instance_list(&sick);
        assert_eq!(list.len(), MAX_LISTED_INSTANCES);
        assert_eq!(omitted, 400 - MAX_LISTED_INSTANCES);
    }

    #[test]
    fn ready_condition_cases() {
        let s = spec(0, 10, Some(2));
        let r = ready_condition(&s, &[inst("a", 0), inst("b", 0)], false);
        assert_eq!((r.status, r.reason.as_str()), ("True", "AllInService"));
        let r = ready_condition(&s, &[inst("a", 0)], false);
        assert_eq!((r.status, r.reason.as_str()), ("False", "ScalingOut"));
        let r = ready_condition(&s, &[inst("a", 0), inst("b", 0), inst("c", 0)], false);
        assert_eq!(r.reason, "ScalingIn");
        let mut p = inst("b", 0);
        p.state = LifecycleState::Pending;
        let r = ready_condition(&s, &[inst("a", 0), p], false);
        assert_eq!(r.reason, "InstancesNotReady");
        assert!(r.message.contains("b (Pending"), "{}", r.message);
        let r = ready_condition(&s, &[inst("a", 0), inst("b", 0)], true);
        assert_eq!(r.reason, "Deleting");
        // Terminating leftovers do not block readiness.
        let mut t = inst("t", 0);
        t.state = LifecycleState::TerminatingProceed;
        let r = ready_condition(&s, &[inst("a", 0), inst("b", 0), t], false);
        assert_eq!(r.status, "True");
        // Zero desired, zero instances: ready.
        let s0 = spec(0, 10, Some(0));
        assert_eq!(ready_condition(&s0, &[], false).status, "True");
    }

    #[test]
    fn scaling_limited_condition_shape() {
        let c = scaling_limited_condition(None, 3);
        assert_eq!((c.status, c.reason.as_str()), ("False", "WithinLimits"));
        let l = Limit {
            reason: "Paused",
            message: "x".into(),
        };
        let c = scaling_limited_condition(Some(&l), 3);
        assert_eq!((c.status, c.reason.as_str()), ("True", "Paused"));
    }
}
