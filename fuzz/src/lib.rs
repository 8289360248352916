//! Builders of autoheal inputs from fuzz bytes. Our types do not implement `Arbitrary`: each
//! value is made from arbitrary primitives, biased toward the interesting ones (a few shared
//! names so references resolve, timestamps at the ends of time, invalid limits).

use std::collections::BTreeMap;

use arbitrary::{Result, Unstructured};
use autoheal::api::*;
use autoheal::plan::{InstanceView, NodeView, Placement, RepairView};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The instant most timestamps are near.
pub fn base() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

/// A timestamp: mostly near [`base`], sometimes at the ends of time or anywhere.
pub fn timestamp(u: &mut Unstructured<'_>) -> Result<Timestamp> {
    Ok(match u.int_in_range(0u8..=9)? {
        0 => Timestamp::MIN,
        1 => Timestamp::MAX,
        2 => Timestamp::UNIX_EPOCH,
        3 => {
            let s = u.int_in_range(Timestamp::MIN.as_second()..=Timestamp::MAX.as_second())?;
            Timestamp::from_second(s).unwrap_or(Timestamp::MAX)
        }
        4 => base()
            .checked_add(SignedDuration::new(
                u.int_in_range(-100_000i64..=100_000)?,
                u.int_in_range(0i32..=999_999_999)?,
            ))
            .unwrap_or(Timestamp::MAX),
        _ => base()
            .checked_add(SignedDuration::from_secs(
                u.int_in_range(-3_600i64..=3_600)?,
            ))
            .unwrap(),
    })
}

/// An optional timestamp.
pub fn opt_timestamp(u: &mut Unstructured<'_>) -> Result<Option<Timestamp>> {
    Ok(if u.arbitrary()? {
        Some(timestamp(u)?)
    } else {
        None
    })
}

/// An `i32` biased to small values, with the extremes.
pub fn int(u: &mut Unstructured<'_>) -> Result<i32> {
    Ok(match u.int_in_range(0u8..=9)? {
        0 => i32::MIN,
        1 => i32::MAX,
        2 => u.arbitrary()?,
        3 => -u.int_in_range(0..=5)?,
        _ => u.int_in_range(0..=12)?,
    })
}

/// A string: from a small pool most of the time (so names meet), else arbitrary.
pub fn string(u: &mut Unstructured<'_>, pool: &[&str]) -> Result<String> {
    if !pool.is_empty() && u.int_in_range(0u8..=3)? > 0 {
        Ok((*u.choose(pool)?).to_string())
    } else {
        u.arbitrary()
    }
}

/// Instance names shared by instances, remediations and memory.
pub const NAMES: &[&str] = &["a", "b", "c", "d", "e", "f", "g", "h"];
/// Template hashes.
pub const HASHES: &[&str] = &["cur", "old", "older", ""];

fn opt_string(u: &mut Unstructured<'_>, pool: &[&str]) -> Result<Option<String>> {
    Ok(if u.arbitrary()? {
        Some(string(u, pool)?)
    } else {
        None
    })
}

fn choose<T: Copy>(u: &mut Unstructured<'_>, xs: &[T]) -> Result<T> {
    Ok(*u.choose(xs)?)
}

/// Lifecycle states.
pub const STATES: &[LifecycleState] = &[
    LifecycleState::Pending,
    LifecycleState::PendingWait,
    LifecycleState::InService,
    LifecycleState::Standby,
    LifecycleState::Terminating,
    LifecycleState::TerminatingWait,
    LifecycleState::TerminatingProceed,
    LifecycleState::Terminated,
];
const DETAILS: &[HealthDetail] = &[
    HealthDetail::OK,
    HealthDetail::Impaired,
    HealthDetail::Warning,
    HealthDetail::Maintaining,
    HealthDetail::Initializing,
    HealthDetail::InsufficientData,
    HealthDetail::NotApplicable,
];
const PROCESSES: &[Process] = &[
    Process::Launch,
    Process::Terminate,
    Process::HealthCheck,
    Process::ReplaceUnhealthy,
    Process::AddToService,
];
const TERMINATION_REASONS: &[&str] = &[
    "ScaleIn",
    "Unhealthy",
    "GroupDeleted",
    "LaunchAbandoned",
    "Deleted",
    "Refresh",
    "MaxInstanceLifetime",
];

/// An int-or-percent value: counts, percentages, and things that are neither.
pub fn int_or_percent(u: &mut Unstructured<'_>) -> Result<IntOrString> {
    Ok(match u.int_in_range(0u8..=4)? {
        0 => IntOrString::Int(int(u)?),
        1 => IntOrString::String(format!("{}%", int(u)?)),
        2 => IntOrString::String(format!(
            "{}{}%{}",
            string(u, &["", " ", "+", "-"])?,
            u.arbitrary::<i64>()?,
            string(u, &["", " ", "%"])?
        )),
        _ => IntOrString::String(u.arbitrary()?),
    })
}

/// A ScalingGroup spec: sizes, limits, strategy, repair, refresh, hooks, suspensions.
pub fn spec(u: &mut Unstructured<'_>) -> Result<ScalingGroupSpec> {
    let mut replacement = Replacement::default();
    replacement.max_unhealthy = int_or_percent(u)?;
    replacement.max_in_flight = int_or_percent(u)?;
    replacement.strategy = if u.arbitrary()? {
        ReplacementStrategy::LaunchBeforeTerminate
    } else {
        ReplacementStrategy::TerminateThenLaunch
    };
    replacement.min_healthy_percentage = int(u)?;
    replacement.deregistration_delay_seconds = int(u)?;
    replacement.max_consecutive_failures = int(u)?;

    let mut repair = Repair::default();
    if u.arbitrary()? {
        let n = u.int_in_range(0..=4)?;
        repair.actions = (0..n)
            .map(|_| {
                Ok(RepairStep {
                    action: if u.arbitrary()? {
                        RepairAction::Restart
                    } else {
                        RepairAction::Replace
                    },
                    timeout_seconds: if u.arbitrary()? { Some(int(u)?) } else { None },
                })
            })
            .collect::<Result<_>>()?;
    }
    if u.arbitrary()? {
        repair.mode = RepairMode::DryRun;
    }

    let mut refresh = Refresh::default();
    if u.arbitrary()? {
        refresh.trigger = choose(
            u,
            &[RefreshTrigger::OnTemplateChange, RefreshTrigger::Manual],
        )?;
        refresh.min_healthy_percentage = int(u)?;
        refresh.max_healthy_percentage = int(u)?;
        refresh.instance_warmup_seconds = if u.arbitrary()? { Some(int(u)?) } else { None };
        let n = u.int_in_range(0..=3)?;
        refresh.checkpoints = (0..n).map(|_| int(u)).collect::<Result<_>>()?;
        refresh.checkpoint_delay_seconds = int(u)?;
        refresh.bake_time_seconds = int(u)?;
        refresh.skip_matching = u.arbitrary()?;
        refresh.auto_rollback = u.arbitrary()?;
        refresh.standby_instances = choose(
            u,
            &[
                StandbyPolicy::Ignore,
                StandbyPolicy::Terminate,
                StandbyPolicy::Wait,
            ],
        )?;
        refresh.protected_instances = choose(
            u,
            &[
                ProtectedPolicy::Ignore,
                ProtectedPolicy::Refresh,
                ProtectedPolicy::Wait,
            ],
        )?;
    }

    let mut health_check = HealthCheck::default();
    health_check.grace_period_seconds = int(u)?;
    health_check.startup_timeout_seconds = int(u)?;

    let mut suspended_processes = Vec::new();
    for p in PROCESSES {
        if u.ratio(1u8, 6)? {
            suspended_processes.push(*p);
        }
    }
    Ok(ScalingGroupSpec {
        min_size: int(u)?,
        max_size: int(u)?,
        desired_capacity: if u.ratio(7u8, 8)? {
            Some(int(u)?)
        } else {
            None
        },
        template: InstanceTemplate {
            metadata: None,
            spec: InstanceTemplateSpec {
                pod_template: PodTemplate::default(),
            },
        },
        revision_history_limit: int(u)?,
        refresh,
        repair,
        max_instance_lifetime_seconds: if u.ratio(1u8, 4)? {
            Some(u.arbitrary()?)
        } else {
            None
        },
        health_check,
        replacement,
        lifecycle_hooks: hooks(u)?,
        scale_in: Default::default(),
        suspended_processes,
    })
}

/// Lifecycle hooks (names from a small pool, so duplicates happen).
pub fn hooks(u: &mut Unstructured<'_>) -> Result<Vec<LifecycleHook>> {
    let n = u.int_in_range(0..=3)?;
    (0..n)
        .map(|_| {
            Ok(LifecycleHook {
                name: string(u, &["h1", "h2", ""])?,
                transition: choose(u, &[HookTransition::Launch, HookTransition::Terminate])?,
                heartbeat_timeout_seconds: int(u)?,
                default_result: choose(u, &[HookResult::Continue, HookResult::Abandon])?,
            })
        })
        .collect()
}

/// One Instance as the planners see it.
pub fn instance(u: &mut Unstructured<'_>) -> Result<InstanceView> {
    Ok(InstanceView {
        name: string(u, NAMES)?,
        created_at: timestamp(u)?,
        state: choose(u, STATES)?,
        health: choose(
            u,
            &[
                Some(HealthStatus::Healthy),
                Some(HealthStatus::Unhealthy),
                None,
            ],
        )?,
        detail: if u.arbitrary()? {
            Some(choose(u, DETAILS)?)
        } else {
            None
        },
        protected: u.arbitrary()?,
        in_service_since: opt_timestamp(u)?,
        replaces: opt_string(u, NAMES)?,
        template_hash: opt_string(u, HASHES)?,
        being_deleted: u.ratio(1u8, 5)?,
        maintenance: u.ratio(1u8, 8)?,
        standby: u.ratio(1u8, 8)?,
        evidence: opt_string(u, &["probe failed"])?,
        termination_reason: opt_string(u, TERMINATION_REASONS)?,
        placement: Placement {
            node: opt_string(u, &["n1", "n2", "n3"])?,
            zone: opt_string(u, &["z1", "z2"])?,
            revision: opt_string(u, HASHES)?,
        },
        repair: RepairView {
            requested: opt_string(u, &["t1", "t2"])?,
            recorded: opt_string(u, &["t1", "t2"])?,
            pod_running_at: opt_timestamp(u)?,
            restart_count: int(u)?,
        },
        health_reason: opt_string(u, &["ProbeFailed", "NodeNotReady", "MarkedUnhealthy"])?,
        health_since: opt_timestamp(u)?,
    })
}

/// Up to `max` Instances.
pub fn instances(u: &mut Unstructured<'_>, max: usize) -> Result<Vec<InstanceView>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| instance(u)).collect()
}

/// Nodes.
pub fn nodes(u: &mut Unstructured<'_>) -> Result<Vec<NodeView>> {
    let n = u.int_in_range(0..=4)?;
    (0..n)
        .map(|_| {
            Ok(NodeView {
                name: string(u, &["n1", "n2", "n3"])?,
                zone: opt_string(u, &["z1", "z2"])?,
                ready: u.arbitrary()?,
                since: opt_timestamp(u)?,
            })
        })
        .collect()
}

/// A remediation history.
pub fn remediations(u: &mut Unstructured<'_>) -> Result<Vec<Remediation>> {
    let n = u.int_in_range(0..=6)?;
    (0..n)
        .map(|_| {
            Ok(Remediation {
                instance: string(u, NAMES)?,
                action: choose(u, &[RepairAction::Restart, RepairAction::Replace])?,
                step: int(u)?,
                reason: string(u, &["ProbeFailed"])?,
                started: Time(timestamp(u)?),
                finished: opt_timestamp(u)?.map(Time),
                outcome: choose(
                    u,
                    &[
                        RemediationOutcome::InProgress,
                        RemediationOutcome::Succeeded,
                        RemediationOutcome::Failed,
                        RemediationOutcome::Escalated,
                        RemediationOutcome::Abandoned,
                    ],
                )?,
                replacement: opt_string(u, NAMES)?,
                detected: opt_timestamp(u)?.map(Time),
                recovered: opt_timestamp(u)?.map(Time),
            })
        })
        .collect()
}

/// A dry-run list.
pub fn would_repair(u: &mut Unstructured<'_>) -> Result<Vec<WouldRepair>> {
    let n = u.int_in_range(0..=3)?;
    (0..n)
        .map(|_| {
            Ok(WouldRepair {
                instance: string(u, NAMES)?,
                action: choose(u, &[RepairAction::Restart, RepairAction::Replace])?,
                reason: string(u, &[""])?,
            })
        })
        .collect()
}

/// A condition.
pub fn condition(u: &mut Unstructured<'_>, type_: &str) -> Result<Condition> {
    Ok(Condition {
        type_: string(u, &[type_])?,
        status: string(u, &["True", "False", "Unknown"])?,
        reason: string(u, &["TooManyUnhealthy", "Paused", "Ok"])?,
        message: u.arbitrary()?,
        last_transition_time: Time(timestamp(u)?),
        observed_generation: None,
    })
}

/// Annotations: the known keys with their interesting values, and arbitrary ones.
pub fn annotations(u: &mut Unstructured<'_>) -> Result<BTreeMap<String, String>> {
    const KEYS: &[&str] = &[
        ANNOTATION_HEALTH,
        ANNOTATION_HEALTH_REASON,
        ANNOTATION_MAINTENANCE,
        ANNOTATION_PAUSED,
        ANNOTATION_RESPECT_GRACE_PERIOD,
        ANNOTATION_STANDBY,
        ANNOTATION_RESTART,
        ANNOTATION_REPLACES,
        ANNOTATION_TERMINATION_REASON,
        "hooks.autoheal.dev/h1",
        "hooks.autoheal.dev/h2",
        "hooks.autoheal.dev/h1.heartbeat",
        "hooks.autoheal.dev/",
        "hooks.autoheal.dev/.heartbeat",
    ];
    const VALUES: &[&str] = &[
        "true",
        "false",
        " TRUE ",
        "Healthy",
        "unhealthy",
        "Continue",
        "Abandon",
        "",
        "1",
        "2026-12-01T00:00:00Z",
        "t1",
    ];
    let n = u.int_in_range(0..=6)?;
    let mut out = BTreeMap::new();
    for _ in 0..n {
        out.insert(string(u, KEYS)?, string(u, VALUES)?);
    }
    Ok(out)
}
