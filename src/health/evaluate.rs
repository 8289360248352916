//! The pure health evaluator: `(signals, health-check config, now) → verdict`.
//!
//! [`assess`] merges the three signal families of one Instance — **workload** (the EC2 status
//! check analogue: Pod phase, Pod gone, Pending past `startupTimeoutSeconds`, Node
//! NotReady/Unknown, `unhealthyConditions`), **probe** (the ELB health check analogue: the
//! [`ProbeVerdict`] of the probe engine) and **custom** (the `autoheal.dev/*` annotations) —
//! into `healthStatus`, `healthDetail` and the four conditions `Healthy`, `WorkloadHealthy`,
//! `ProbeHealthy`, `CustomHealthy`. It does no I/O and reads no clock: `now` is an input.
//!
//! # Precedence (first matching row wins)
//!
//! | # | situation | healthStatus | healthDetail | grace period applies? |
//! |---|---|---|---|---|
//! | 0 | lifecycle state Terminating, Terminating:Wait, Terminating:Proceed or Terminated | as recorded | as recorded (frozen) | — |
//! | 1 | the group's `HealthCheck` process is suspended | Healthy | NotApplicable | — |
//! | 2 | Standby (lifecycle state, or `autoheal.dev/standby=true`) | Healthy | NotApplicable | — |
//! | 3 | `autoheal.dev/maintenance=true` | Healthy | Maintaining | — |
//! | 4 | Pod Failed or Succeeded, Pod gone or being deleted out of band, or still Pending past `startupTimeoutSeconds` | Unhealthy | Impaired | no: acts at once (a Pod that is gone or has exited never recovers) |
//! | 5 | manual `autoheal.dev/health=Unhealthy` outside the grace period, or inside it with `autoheal.dev/respect-grace-period=false` | Unhealthy | Impaired | only when respected |
//! | 6 | not yet running (lifecycle Pending or Pending:Wait) | Healthy | Initializing | — |
//! | 7 | InService and inside `gracePeriodSeconds` since it entered InService | Healthy | Initializing | — |
//! | 8 | workload failing: Node NotReady/Unknown, Pod phase Unknown, an `unhealthyConditions` rule held for `forSeconds` | Unhealthy | Impaired | yes (row 7 first) |
//! | 9 | probe verdict unhealthy (`unhealthyThreshold` consecutive failures) | Unhealthy | Impaired | yes |
//! | 10 | a signal failing below its threshold: probe failures < `unhealthyThreshold`, an `unhealthyConditions` rule matching for less than `forSeconds` | Healthy | Warning | yes |
//! | 11 | a probe is configured and has not produced enough results yet (and no decided probe verdict is recorded in status, see below) | Healthy | InsufficientData | yes |
//! | 12 | otherwise | Healthy | OK | — |
//!
//! Notes on the choices:
//! - *Unhealthy ⇔ Impaired*: no other row produces Unhealthy.
//! - During the grace period (row 7) the conditions still show the failing evidence, and the
//!   aggregate `Healthy` condition says what would act once the grace period ends.
//! - A manual `Healthy` mark clears a manual `Unhealthy` (the annotation holds the last set
//!   value, as AWS SetInstanceHealth). It does **not** mask automatic signals: as in AWS, a
//!   failing workload or probe makes the Instance Unhealthy again at the next evaluation. To
//!   keep a failing Instance from being replaced, use `autoheal.dev/maintenance=true`.
//! - An annotation value that cannot be understood never acts: it is listed in
//!   [`Verdict::warnings`] (the reconciler emits each one once as a Warning Event, see
//!   [`events`]) and in the `CustomHealthy` condition message.
//! - `unhealthyConditions` are matched on the Pod's conditions and on the Instance's own
//!   conditions except `Healthy` and `WorkloadHealthy` (which this evaluator derives from the
//!   rules, and would otherwise latch). A Pod condition without `lastTransitionTime` is taken
//!   to hold since the Pod's creation.
//! - A Terminating Instance is not judged again (row 0): its recorded verdict and conditions
//!   explain why it is leaving, and nothing is written or emitted while it goes.
//! - A probe target without enough results whose Instance already records a decided
//!   `ProbeHealthy` (True/Passing or False) keeps that recorded verdict until the engine decides
//!   anew: after an operator restart, healthy Instances stay `OK` instead of flapping through
//!   `InsufficientData`, and nothing is rewritten.
//! - Messages carry evidence but no ever-changing values (no "for 12s"): they change only when
//!   the evidence changes, so writing the verdict writes only on change.
//!
//! The reconciler requeues the Instance at [`Verdict::recheck_at`], the next time at which the
//! passage of time alone can change the verdict (end of the grace period, startup deadline, an
//! `unhealthyConditions` rule reaching `forSeconds`).

use crate::api::WatchedPod;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::ProbeVerdict;
use crate::api::annotations::{HealthAnnotations, ManualHealth};
use crate::api::conditions::DesiredCondition;
use crate::api::types::ResultClass;
use crate::api::{
    CONDITION_CUSTOM, CONDITION_HEALTHY, CONDITION_PROBE, CONDITION_WORKLOAD,
    REASON_ANNOTATION_NOT_UNDERSTOOD, REASON_RESTARTED,
};
use crate::api::{
    HealthCheck, HealthDetail, HealthStatus, Instance, LifecycleState, UnhealthyCondition,
};

/// Everything the evaluator looks at for one Instance (all read from the stores).
#[derive(Debug, Clone, Copy)]
pub struct HealthInputs<'a> {
    /// The Instance (annotations, status: lifecycle state and its timestamps, conditions).
    pub instance: &'a Instance,
    /// Its Pod, if it exists.
    pub pod: Option<&'a WatchedPod>,
    /// The Pod's Node, if known.
    pub node: Option<&'a Node>,
    /// The probe engine's current verdict, when a probe is configured.
    pub probe: Option<&'a ProbeVerdict>,
    /// The group's health-check configuration.
    pub config: &'a HealthCheck,
    /// Whether the group's HealthCheck process is suspended.
    pub health_check_suspended: bool,
}

/// The evaluator's output.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Healthy or Unhealthy (Unhealthy ⇔ Impaired).
    pub status: HealthStatus,
    /// The detail code.
    pub detail: HealthDetail,
    /// Healthy, WorkloadHealthy, ProbeHealthy, CustomHealthy.
    pub conditions: Vec<DesiredCondition>,
    /// Annotation values that could not be understood (reported as Warning Events).
    pub warnings: Vec<String>,
    /// The CamelCase reason of the deciding signal (also the `Healthy` condition's reason),
    /// e.g. `ProbeFailed`, `PodFailed`, `MarkedUnhealthy`, `GracePeriod`, `AllSignalsPass`.
    pub reason: String,
    /// The evidence of the deciding signal (also the `Healthy` condition's message), e.g.
    /// `probe: HTTP 503 from 10.0.0.7:8080/healthz, 3 consecutive failures`.
    pub message: String,
    /// When the passage of time alone may change this verdict: requeue then.
    pub recheck_at: Option<Timestamp>,
}

/// An Event the reconciler should emit for a verdict (see [`events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    /// `true` for type Warning, `false` for Normal.
    pub warning: bool,
    /// CamelCase reason: `Unhealthy`, `Healthy`, `HealthChanged` or
    /// [`REASON_ANNOTATION_NOT_UNDERSTOOD`].
    pub reason: &'static str,
    /// The note, with the evidence.
    pub note: String,
}

/// The Events to emit when `verdict` replaces what `instance.status` records: one per health
/// transition (status or detail changed) with its evidence, and one Warning per annotation
/// value not understood that the recorded `CustomHealthy` message does not mention yet (so each
/// is reported once, not at every reconcile). Call it before writing the new status.
pub fn events(instance: &Instance, verdict: &Verdict) -> Vec<HealthEvent> {
    let status = instance.status.clone().unwrap_or_default();
    let mut out = Vec::new();
    let previous = status.health_status.zip(status.health_detail);
    let now = (verdict.status, verdict.detail);
    let changed = match previous {
        Some(p) => p != now,
        None => now != (HealthStatus::Healthy, HealthDetail::Initializing),
    };
    if changed {
        let from = match previous {
            Some((s, d)) => format!("{s:?}/{d:?}"),
            None => "unknown".to_string(),
        };
        let was_unhealthy = previous.map(|p| p.0) == Some(HealthStatus::Unhealthy);
        let reason = match (was_unhealthy, verdict.status) {
            (false, HealthStatus::Unhealthy) => "Unhealthy",
            (true, HealthStatus::Healthy) => "Healthy",
            _ => "HealthChanged",
        };
        out.push(HealthEvent {
            warning: matches!(
                verdict.detail,
                HealthDetail::Impaired | HealthDetail::Warning
            ),
            reason,
            note: format!(
                "{from} → {:?}/{:?}: {}",
                verdict.status, verdict.detail, verdict.message
            ),
        });
    }
    let recorded = crate::api::conditions::find(&status.conditions, CONDITION_CUSTOM)
        .map(|c| c.message.as_str())
        .unwrap_or("");
    for w in &verdict.warnings {
        if !recorded.contains(w.as_str()) {
            out.push(HealthEvent {
                warning: true,
                reason: REASON_ANNOTATION_NOT_UNDERSTOOD,
                note: w.clone(),
            });
        }
    }
    out
}

/// How bad one signal is, in increasing severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    /// Passing (or not configured).
    Ok,
    /// No data yet (probe undecided, Pod starting).
    NoData,
    /// Failing below its threshold.
    Warning,
    /// Failing past its threshold (the grace period applies).
    Impaired,
    /// Failing in a way that cannot recover (acts at once, even in the grace period).
    ImpairedNow,
}

/// One finding of a signal.
#[derive(Debug, Clone)]
struct Finding {
    level: Level,
    reason: &'static str,
    message: String,
}

/// The findings of one signal family, and its condition.
struct Signal {
    level: Level,
    reason: &'static str,
    message: String,
    condition: DesiredCondition,
}

fn worst(findings: &[Finding]) -> Option<&Finding> {
    // The first of the most severe, so the order of checks breaks ties.
    let max = findings.iter().map(|f| f.level).max()?;
    findings.iter().find(|f| f.level == max)
}

fn secs(n: i32) -> SignedDuration {
    SignedDuration::from_secs(i64::from(n.max(0)))
}

fn plus(t: Timestamp, n: i32) -> Timestamp {
    t.checked_add(secs(n)).unwrap_or(Timestamp::MAX)
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Merges the signals of one Instance into its verdict (see the module doc for the rules).
pub fn assess(inputs: &HealthInputs<'_>, now: Timestamp) -> Verdict {
    let instance = inputs.instance;
    let status = instance.status.clone().unwrap_or_default();
    let state = status.lifecycle_state.unwrap_or(LifecycleState::Pending);
    if state.is_terminating() {
        return frozen(instance);
    }
    let annotations = HealthAnnotations::parse(
        instance
            .metadata
            .annotations
            .as_ref()
            .unwrap_or(&Default::default()),
    );
    let warnings: Vec<String> = annotations.errors.iter().map(|e| e.to_string()).collect();
    let created = instance
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let not_running = matches!(state, LifecycleState::Pending | LifecycleState::PendingWait);

    // Grace period: from the last entry into InService, but for a restart's (the restart's
    // own timeout judges the restarted Pod; the group's repair step does).
    let grace_end = (state == LifecycleState::InService).then(|| {
        let since = status
            .state_history
            .iter()
            .rev()
            .filter(|e| e.state == LifecycleState::InService)
            .find(|e| e.reason.as_deref() != Some(REASON_RESTARTED))
            .map(|e| &e.entered_at)
            .or_else(|| status.entered(LifecycleState::InService))
            .map(|t| t.0)
            .unwrap_or(created);
        plus(since, inputs.config.grace_period_seconds)
    });
    // No grace period at all when it is 0 (the entry time is recorded rounded up to the
    // second, so `now` may still be before it in the reconcile that entered InService).
    let in_grace = inputs.config.grace_period_seconds > 0 && grace_end.is_some_and(|end| now < end);

    let mut recheck: Option<Timestamp> = None;
    let workload = workload_signal(inputs, state, created, now, &mut recheck);
    let probe = probe_signal(inputs);
    let custom = custom_signal(&annotations, state, in_grace, grace_end);

    let standby = state == LifecycleState::Standby || annotations.standby;
    let manual_unhealthy = annotations.health == Some(ManualHealth::Unhealthy);
    let manual_acts = manual_unhealthy && (!in_grace || !annotations.respect_grace_period);

    let failing_evidence = || {
        [&workload, &probe]
            .iter()
            .filter(|s| s.level >= Level::Warning)
            .map(|s| s.message.clone())
            .chain(manual_unhealthy.then(|| custom.message.clone()))
            .collect::<Vec<_>>()
    };

    use HealthDetail as D;
    use HealthStatus as S;
    let (status_, detail, reason, message): (S, D, &str, String) = if inputs.health_check_suspended
    {
        (
            S::Healthy,
            D::NotApplicable,
            "HealthCheckSuspended",
            "the group's HealthCheck process is suspended: health is not acted on".into(),
        )
    } else if standby {
        (
            S::Healthy,
            D::NotApplicable,
            "Standby",
            "the Instance is in Standby: out of service, health is not acted on".into(),
        )
    } else if annotations.maintenance {
        let mut message =
            "autoheal.dev/maintenance=true: in maintenance, never replaced".to_string();
        let evidence = failing_evidence();
        if !evidence.is_empty() {
            message.push_str(&format!("; failing: {}", evidence.join("; ")));
        }
        (S::Healthy, D::Maintaining, "Maintenance", message)
    } else if workload.level == Level::ImpairedNow {
        (
            S::Unhealthy,
            D::Impaired,
            workload.reason,
            format!("workload: {}", workload.message),
        )
    } else if manual_acts {
        (
            S::Unhealthy,
            D::Impaired,
            "MarkedUnhealthy",
            format!("custom: {}", custom.message),
        )
    } else if not_running {
        (
            S::Healthy,
            D::Initializing,
            "Starting",
            format!("not yet running: {}", workload.message),
        )
    } else if in_grace {
        recheck = earliest(recheck, grace_end);
        let end = grace_end.unwrap_or(now);
        let mut message = format!("in the grace period until {end}");
        let evidence = failing_evidence();
        if !evidence.is_empty() {
            message.push_str(&format!(
                "; acts after it unless this clears: {}",
                evidence.join("; ")
            ));
        }
        (S::Healthy, D::Initializing, "GracePeriod", message)
    } else if workload.level == Level::Impaired {
        (
            S::Unhealthy,
            D::Impaired,
            workload.reason,
            format!("workload: {}", workload.message),
        )
    } else if probe.level == Level::Impaired {
        (
            S::Unhealthy,
            D::Impaired,
            "ProbeFailed",
            format!("probe: {}", probe.message),
        )
    } else if workload.level == Level::Warning || probe.level == Level::Warning {
        let evidence = failing_evidence().join("; ");
        (S::Healthy, D::Warning, "FailingBelowThreshold", evidence)
    } else if probe.level == Level::NoData {
        (
            S::Healthy,
            D::InsufficientData,
            "InsufficientData",
            format!("probe: {}", probe.message),
        )
    } else {
        (
            S::Healthy,
            D::OK,
            "AllSignalsPass",
            "all health signals pass".into(),
        )
    };

    let healthy = DesiredCondition::new(
        CONDITION_HEALTHY,
        status_ == S::Healthy,
        reason,
        message.clone(),
    );
    if manual_unhealthy && in_grace && !manual_acts {
        recheck = earliest(recheck, grace_end);
    }
    Verdict {
        status: status_,
        detail,
        conditions: vec![
            healthy,
            workload.condition,
            probe.condition,
            custom.condition,
        ],
        warnings,
        reason: reason.to_string(),
        message,
        recheck_at: recheck.filter(|t| *t > now),
    }
}

/// Row 0: the recorded verdict of a Terminating Instance.
fn frozen(instance: &Instance) -> Verdict {
    let status = instance.status.clone().unwrap_or_default();
    let conditions: Vec<DesiredCondition> = status
        .conditions
        .iter()
        .filter(|c| {
            [
                CONDITION_HEALTHY,
                CONDITION_WORKLOAD,
                CONDITION_PROBE,
                CONDITION_CUSTOM,
            ]
            .contains(&c.type_.as_str())
        })
        .map(|c| DesiredCondition {
            type_: c.type_.clone(),
            status: match c.status.as_str() {
                "True" => "True",
                "False" => "False",
                _ => "Unknown",
            },
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect();
    let healthy = crate::api::conditions::find(&status.conditions, CONDITION_HEALTHY);
    Verdict {
        status: status.health_status.unwrap_or(HealthStatus::Healthy),
        detail: status.health_detail.unwrap_or(HealthDetail::NotApplicable),
        conditions,
        warnings: Vec::new(),
        reason: healthy
            .map(|c| c.reason.clone())
            .unwrap_or_else(|| "Terminating".into()),
        message: healthy
            .map(|c| c.message.clone())
            .unwrap_or_else(|| "the Instance is terminating".into()),
        recheck_at: None,
    }
}

/// When an Instance must be running by: `startupTimeoutSeconds` after it entered Pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Startup {
    /// When it entered Pending (its creation when no entry is recorded).
    since: Timestamp,
    /// `startupTimeoutSeconds`.
    timeout_seconds: i32,
    /// `since + startupTimeoutSeconds`: past it, a Pod not yet running never will.
    deadline: Timestamp,
}

impl Startup {
    /// The startup deadline of `instance`, created at `created`, under `config`.
    fn of(instance: &Instance, config: &HealthCheck, created: Timestamp) -> Self {
        let since = instance
            .status
            .as_ref()
            .and_then(|s| s.entered(LifecycleState::Pending))
            .map(|t| t.0)
            .unwrap_or(created);
        let timeout_seconds = config.startup_timeout_seconds;
        Self {
            since,
            timeout_seconds,
            deadline: plus(since, timeout_seconds),
        }
    }
}

/// The workload signal (the EC2 status check analogue): the findings of the Pod
/// ([`pod_findings`]), of its Node ([`node_finding`]) and of the `unhealthyConditions` rules
/// ([`rule_findings`]), in that order, summed up by [`workload_summary`]. Lowers `recheck` to
/// the next time the passage of time alone changes a finding.
fn workload_signal(
    inputs: &HealthInputs<'_>,
    state: LifecycleState,
    created: Timestamp,
    now: Timestamp,
    recheck: &mut Option<Timestamp>,
) -> Signal {
    let name = inputs.instance.metadata.name.as_deref().unwrap_or("?");
    let startup = Startup::of(inputs.instance, inputs.config, created);
    // The Pod a restart in progress replaces (its deletion is the operator's own).
    let restarting = inputs
        .instance
        .status
        .as_ref()
        .and_then(|s| s.restart.as_ref())
        .filter(|r| r.pod_running_at.is_none())
        .and_then(|r| r.old_pod_uid.as_deref());
    let mut findings = pod_findings(inputs.pod, name, state, startup, restarting, now, recheck);
    findings.extend(inputs.node.and_then(node_finding));
    findings.extend(rule_findings(inputs, now, recheck));
    workload_summary(&findings, inputs.pod, name)
}

/// The Pod's phase, when it reports one.
fn pod_phase(pod: &WatchedPod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// The findings about the Pod of Instance `name`: missing ([`missing_pod_finding`]), deleted
/// out of band ([`pod_deleted_finding`]), in a failing phase ([`pod_phase_finding`]), still
/// starting ([`startup_finding`]).
fn pod_findings(
    pod: Option<&WatchedPod>,
    name: &str,
    state: LifecycleState,
    startup: Startup,
    restarting: Option<&str>,
    now: Timestamp,
    recheck: &mut Option<Timestamp>,
) -> Vec<Finding> {
    let Some(pod) = pod else {
        return vec![missing_pod_finding(name, state, startup, now, recheck)];
    };
    let pod_name = pod.metadata.name.as_deref().unwrap_or(name);
    let mut findings: Vec<Finding> = pod_deleted_finding(pod, pod_name, restarting)
        .into_iter()
        .collect();
    findings.extend(pod_phase_finding(pod, pod_name));
    findings.extend(startup_finding(pod, pod_name, state, startup, now, recheck));
    findings
}

/// Without a Pod: not created yet while Pending (until the startup deadline, then
/// `StartupTimeout`), else gone, deleted out of band (`PodGone`); both act at once.
fn missing_pod_finding(
    name: &str,
    state: LifecycleState,
    startup: Startup,
    now: Timestamp,
    recheck: &mut Option<Timestamp>,
) -> Finding {
    if state != LifecycleState::Pending {
        return Finding {
            level: Level::ImpairedNow,
            reason: "PodGone",
            message: format!("Pod {name} is gone (deleted out of band)"),
        };
    }
    if now >= startup.deadline {
        Finding {
            level: Level::ImpairedNow,
            reason: "StartupTimeout",
            message: format!(
                "no Pod since {}, past the startup timeout of {}s",
                startup.since, startup.timeout_seconds
            ),
        }
    } else {
        *recheck = earliest(*recheck, Some(startup.deadline));
        Finding {
            level: Level::NoData,
            reason: "PodNotCreated",
            message: format!("Pod {name} not created yet"),
        }
    }
}

/// `PodDeleted` (acts at once) when the Pod is being deleted out of band; `PodRestarting` when
/// it is the Pod a restart replaces (`restarting`: the restart's old Pod UID).
fn pod_deleted_finding(
    pod: &WatchedPod,
    pod_name: &str,
    restarting: Option<&str>,
) -> Option<Finding> {
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let restarted = restarting.is_some() && pod.metadata.uid.as_deref() == restarting;
    if restarted {
        // Still Unhealthy (that is why it restarts), with the truth as evidence.
        return Some(Finding {
            level: Level::ImpairedNow,
            reason: crate::api::REASON_POD_RESTARTING,
            message: format!("Pod {pod_name} is being restarted (repair action Restart)"),
        });
    }
    deleting.then(|| Finding {
        level: Level::ImpairedNow,
        reason: "PodDeleted",
        message: format!("Pod {pod_name} is being deleted out of band"),
    })
}

/// The finding of a failing Pod phase: `Failed` and `Succeeded` (its containers exited, with
/// their exit codes) act at once; `Unknown` (its Node lost contact) is impaired.
fn pod_phase_finding(pod: &WatchedPod, pod_name: &str) -> Option<Finding> {
    match pod_phase(pod) {
        Some("Failed") => Some(Finding {
            level: Level::ImpairedNow,
            reason: "PodFailed",
            message: format!("Pod {pod_name} phase Failed{}", exit_details(pod)),
        }),
        Some("Succeeded") => Some(Finding {
            level: Level::ImpairedNow,
            reason: "PodSucceeded",
            message: format!(
                "Pod {pod_name} phase Succeeded: its containers exited{}",
                exit_details(pod)
            ),
        }),
        Some("Unknown") => Some(Finding {
            level: Level::Impaired,
            reason: "PodUnknown",
            message: format!("Pod {pod_name} phase Unknown (its Node lost contact)"),
        }),
        _ => None,
    }
}

/// While the Instance is starting (lifecycle Pending, or Pending:Wait with its Pod not yet
/// running): `PodStarting` without data until the startup deadline, then `StartupTimeout`
/// (acts at once), with what the Pod waits for.
fn startup_finding(
    pod: &WatchedPod,
    pod_name: &str,
    state: LifecycleState,
    startup: Startup,
    now: Timestamp,
    recheck: &mut Option<Timestamp>,
) -> Option<Finding> {
    let phase = pod_phase(pod);
    let pod_pending = !matches!(phase, Some("Running" | "Failed" | "Succeeded"));
    let starting =
        state == LifecycleState::Pending || (state == LifecycleState::PendingWait && pod_pending);
    if !starting {
        return None;
    }
    let what = if pod_pending {
        format!(
            "Pod {pod_name} phase {}{}",
            phase.unwrap_or("Pending"),
            waiting_details(pod)
        )
    } else {
        format!("Pod {pod_name} running but not yet in service")
    };
    if now >= startup.deadline {
        Some(Finding {
            level: Level::ImpairedNow,
            reason: "StartupTimeout",
            message: format!(
                "{what}, Pending since {}, past the startup timeout of {}s",
                startup.since, startup.timeout_seconds
            ),
        })
    } else {
        *recheck = earliest(*recheck, Some(startup.deadline));
        Some(Finding {
            level: Level::NoData,
            reason: "PodStarting",
            message: what,
        })
    }
}

/// The finding of the Node's `Ready` condition: `NodeNotReady` when False, `NodeUnknown` when
/// Unknown (both impaired, with the condition's reason and message); none otherwise.
fn node_finding(node: &Node) -> Option<Finding> {
    let node_name = node.metadata.name.as_deref().unwrap_or("?");
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))?;
    let detail = || {
        let mut d = String::new();
        if let Some(r) = ready.reason.as_deref().filter(|r| !r.is_empty()) {
            d.push_str(&format!(": {r}"));
        }
        if let Some(m) = ready.message.as_deref().filter(|m| !m.is_empty()) {
            d.push_str(&format!(" ({m})"));
        }
        d
    };
    match ready.status.as_str() {
        "False" => Some(Finding {
            level: Level::Impaired,
            reason: "NodeNotReady",
            message: format!("Node {node_name} is NotReady{}", detail()),
        }),
        "Unknown" => Some(Finding {
            level: Level::Impaired,
            reason: "NodeUnknown",
            message: format!("Node {node_name} Ready=Unknown{}", detail()),
        }),
        _ => None,
    }
}

/// The findings of the group's `unhealthyConditions` rules, in their order (see
/// [`match_rule`]).
fn rule_findings(
    inputs: &HealthInputs<'_>,
    now: Timestamp,
    recheck: &mut Option<Timestamp>,
) -> Vec<Finding> {
    inputs
        .config
        .unhealthy_conditions
        .iter()
        .filter_map(|rule| match_rule(inputs, rule, now, recheck))
        .collect()
}

/// Sums the workload findings up into the signal and its `WorkloadHealthy` condition: the
/// first of the most severe findings decides the level and reason; the message lists the
/// findings at that level, then the other failing ones. Without any finding above Ok:
/// `PodRunning`, naming the Pod's phase and Node.
fn workload_summary(findings: &[Finding], pod: Option<&WatchedPod>, name: &str) -> Signal {
    let (level, reason, message) = match worst(findings) {
        Some(f) if f.level > Level::Ok => {
            let mut parts: Vec<&str> = findings
                .iter()
                .filter(|g| g.level == f.level)
                .map(|g| g.message.as_str())
                .collect();
            parts.extend(
                findings
                    .iter()
                    .filter(|g| g.level != f.level && g.level >= Level::Warning)
                    .map(|g| g.message.as_str()),
            );
            (f.level, f.reason, parts.join("; "))
        }
        _ => {
            let phase = pod.and_then(pod_phase);
            let node = pod
                .and_then(|p| p.spec.as_ref())
                .and_then(|s| s.node_name.as_deref());
            let message = match (phase, node) {
                (Some(phase), Some(node)) => format!("Pod {name} {phase} on Node {node}"),
                (Some(phase), None) => format!("Pod {name} {phase}"),
                _ => format!("Pod {name} exists"),
            };
            (Level::Ok, "PodRunning", message)
        }
    };
    let condition = match level {
        Level::Ok | Level::Warning => {
            DesiredCondition::new(CONDITION_WORKLOAD, true, reason, message.clone())
        }
        Level::NoData => DesiredCondition::unknown(CONDITION_WORKLOAD, reason, message.clone()),
        Level::Impaired | Level::ImpairedNow => {
            DesiredCondition::new(CONDITION_WORKLOAD, false, reason, message.clone())
        }
    };
    Signal {
        level,
        reason,
        message,
        condition,
    }
}

/// Matches one `unhealthyConditions` rule on the Pod's and the Instance's conditions.
fn match_rule(
    inputs: &HealthInputs<'_>,
    rule: &UnhealthyCondition,
    now: Timestamp,
    recheck: &mut Option<Timestamp>,
) -> Option<Finding> {
    let want = rule.status.as_str();
    let pod_created = inputs
        .pod
        .and_then(|p| p.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
        .unwrap_or(now);
    // (where, since, reason, message) of the first matching condition.
    let pod_match = inputs
        .pod
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == rule.type_ && c.status == want)
        })
        .map(|c| {
            (
                "Pod",
                c.last_transition_time
                    .as_ref()
                    .map(|t| t.0)
                    .unwrap_or(pod_created),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        });
    let instance_match = || {
        if rule.type_ == CONDITION_HEALTHY || rule.type_ == CONDITION_WORKLOAD {
            return None;
        }
        inputs
            .instance
            .status
            .as_ref()
            .and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == rule.type_ && c.status == want)
            })
            .map(|c| {
                (
                    "Instance",
                    c.last_transition_time.0,
                    c.reason.clone(),
                    c.message.clone(),
                )
            })
    };
    let (on, since, reason, message) = pod_match.or_else(instance_match)?;
    let deadline = plus(since, rule.for_seconds);
    let mut text = format!(
        "{on} condition {}={want} since {since} (forSeconds {})",
        rule.type_, rule.for_seconds
    );
    if !reason.is_empty() {
        text.push_str(&format!(": {reason}"));
    }
    if !message.is_empty() {
        text.push_str(&format!(" ({message})"));
    }
    if now >= deadline {
        Some(Finding {
            level: Level::Impaired,
            reason: "UnhealthyCondition",
            message: text,
        })
    } else {
        *recheck = earliest(*recheck, Some(deadline));
        Some(Finding {
            level: Level::Warning,
            reason: "UnhealthyConditionPending",
            message: text,
        })
    }
}

/// `: container app exited with code 1 (Error)` for the containers that terminated.
fn exit_details(pod: &WatchedPod) -> String {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    let mut parts = Vec::new();
    for cs in statuses.into_iter().flatten() {
        let terminated = cs
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .or_else(|| cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()));
        if let Some(t) = terminated {
            let mut p = format!("container {} exited with code {}", cs.name, t.exit_code);
            if let Some(r) = t.reason.as_deref().filter(|r| !r.is_empty()) {
                p.push_str(&format!(" ({r})"));
            }
            parts.push(p);
        }
    }
    if let Some(r) = pod
        .status
        .as_ref()
        .and_then(|s| s.reason.as_deref())
        .filter(|r| !r.is_empty())
    {
        parts.push(format!("reason {r}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join(", "))
    }
}

/// `: container app waiting (ImagePullBackOff)` / `: Unschedulable (0/3 nodes...)`.
fn waiting_details(pod: &WatchedPod) -> String {
    let Some(status) = pod.status.as_ref() else {
        return String::new();
    };
    let mut parts = Vec::new();
    for c in status.conditions.iter().flatten() {
        if c.type_ == "PodScheduled" && c.status == "False" {
            let mut p = c.reason.clone().unwrap_or_else(|| "not scheduled".into());
            if let Some(m) = c.message.as_deref().filter(|m| !m.is_empty()) {
                p.push_str(&format!(" ({m})"));
            }
            parts.push(p);
        }
    }
    for cs in status.container_statuses.iter().flatten() {
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref())
            && let Some(r) = w.reason.as_deref().filter(|r| !r.is_empty())
        {
            parts.push(format!("container {} waiting ({r})", cs.name));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join(", "))
    }
}

fn probe_reason(class: Option<ResultClass>) -> &'static str {
    match class {
        Some(ResultClass::HttpStatus) => "UnexpectedStatus",
        Some(ResultClass::Timeout) => "Timeout",
        Some(ResultClass::Refused) => "ConnectionRefused",
        Some(ResultClass::Reset) => "ConnectionReset",
        Some(ResultClass::Error) => "ProbeError",
        Some(ResultClass::Success) | None => "ProbeFailing",
    }
}

fn probe_signal(inputs: &HealthInputs<'_>) -> Signal {
    let signal = |level, reason: &'static str, status: Option<bool>, message: String| Signal {
        level,
        reason,
        condition: match status {
            Some(ok) => DesiredCondition::new(CONDITION_PROBE, ok, reason, message.clone()),
            None => DesiredCondition::unknown(CONDITION_PROBE, reason, message.clone()),
        },
        message,
    };
    if inputs.config.probe.is_none() {
        return signal(
            Level::Ok,
            "NotConfigured",
            Some(true),
            "no probe configured".into(),
        );
    }
    let Some(v) = inputs.probe else {
        return match carried_probe_verdict(inputs.instance) {
            // A restarted operator evaluates before it registers the probe target: the
            // recorded verdict stands meanwhile.
            Some((true, _, message)) => signal(Level::Ok, "Passing", Some(true), message),
            Some((false, reason, message)) => signal(Level::Impaired, reason, Some(false), message),
            None => signal(
                Level::NoData,
                "NotProbed",
                None,
                "not probed yet (probing starts when the Instance is InService and has an address)"
                    .into(),
            ),
        };
    };
    match v.healthy {
        Some(false) => signal(
            Level::Impaired,
            probe_reason(v.failure),
            Some(false),
            v.message.clone(),
        ),
        healthy if v.is_warning() => signal(
            Level::Warning,
            probe_reason(v.failure),
            healthy,
            v.message.clone(),
        ),
        None => match carried_probe_verdict(inputs.instance) {
            // A restarted operator's engine starts without results: until it has new ones, the
            // recorded verdict stands, so a restart rewrites nothing.
            Some((true, _, message)) => signal(Level::Ok, "Passing", Some(true), message),
            Some((false, reason, message)) => signal(Level::Impaired, reason, Some(false), message),
            None => signal(Level::NoData, "InsufficientData", None, v.message.clone()),
        },
        Some(true) => signal(Level::Ok, "Passing", Some(true), v.message.clone()),
    }
}

/// The probe verdict recorded in the Instance's `ProbeHealthy` condition, when it is a decided
/// one (`True` or `False`): `(healthy, reason, message)`.
fn carried_probe_verdict(instance: &Instance) -> Option<(bool, &'static str, String)> {
    let recorded = instance
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_PROBE)?;
    let known_reasons = [
        "Passing",
        "UnexpectedStatus",
        "Timeout",
        "ConnectionRefused",
        "ConnectionReset",
        "ProbeError",
        "ProbeFailing",
    ];
    let reason = known_reasons.into_iter().find(|r| *r == recorded.reason)?;
    match recorded.status.as_str() {
        "True" if reason == "Passing" => Some((true, reason, recorded.message.clone())),
        "False" => Some((false, reason, recorded.message.clone())),
        _ => None,
    }
}

fn custom_signal(
    a: &HealthAnnotations,
    state: LifecycleState,
    in_grace: bool,
    grace_end: Option<Timestamp>,
) -> Signal {
    let reason_text = a
        .reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    let (level, ok, reason, mut message) = match a.health {
        Some(ManualHealth::Unhealthy) => {
            let mut m = format!("marked Unhealthy (autoheal.dev/health){reason_text}");
            if in_grace && a.respect_grace_period {
                if let Some(end) = grace_end {
                    m.push_str(&format!(
                        "; waits for the grace period to end at {end} (set autoheal.dev/respect-grace-period=false to act now)"
                    ));
                }
            } else if in_grace {
                m.push_str("; acts inside the grace period (respect-grace-period=false)");
            }
            (Level::Impaired, false, "MarkedUnhealthy", m)
        }
        Some(ManualHealth::Healthy) => (
            Level::Ok,
            true,
            "MarkedHealthy",
            format!("marked Healthy (autoheal.dev/health){reason_text}"),
        ),
        None => (
            Level::Ok,
            true,
            "NoMark",
            "no manual health mark".to_string(),
        ),
    };
    let mut reason = reason;
    if a.maintenance {
        message.push_str("; autoheal.dev/maintenance=true");
        if a.health.is_none() {
            reason = "Maintenance";
        }
    }
    if a.standby || state == LifecycleState::Standby {
        message.push_str("; standby");
        if a.health.is_none() && !a.maintenance {
            reason = "Standby";
        }
    }
    if !a.errors.is_empty() {
        for e in &a.errors {
            message.push_str(&format!("; {e}"));
        }
        if a.health.is_none() {
            reason = REASON_ANNOTATION_NOT_UNDERSTOOD;
        }
    }
    Signal {
        level,
        reason,
        condition: DesiredCondition::new(CONDITION_CUSTOM, ok, reason, message.clone()),
        message,
    }
}

#[cfg(test)]
mod tests;
