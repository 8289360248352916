//! Repair: which action an Unhealthy Instance gets, escalation, dry run, and the remediation
//! history. Pure: the replacement pipeline calls it between the breaker and the strategy.
//!
//! # Rules
//!
//! * **Actions in order** (`spec.repair.actions`, default `[{action: Replace}]`). An Unhealthy
//!   candidate with no repair running gets the first action, unless its latest remediation
//!   ended `Escalated`: it then gets the action after that one (the last action repeats when
//!   it is a `Restart`; `Replace` is always last, the schema says so).
//! * **Restart** recreates the Instance's Pod in place. The group records the remediation
//!   (`InProgress`) in its status first, then sets `autoheal.dev/restart=<token>` on the
//!   Instance, where the token is the remediation's start second; the Instance records the
//!   restart in its own status before it touches the Pod, so neither a restart nor its
//!   escalation is repeated or skipped after a crash ([`restart_orders`] re-sends a request
//!   the Instance has not seen). The restart is *in flight* (it counts against `maxInFlight`
//!   like a replacement) until `timeoutSeconds` after the new Pod runs; then the Instance is
//!   judged: still Unhealthy → `Escalated` (the next action follows, within the budget);
//!   Healthy with detail `OK` → `Succeeded`; not verified yet (grace period, too few probe
//!   results) → its next verdict decides. An Instance that leaves meanwhile ends the remediation `Abandoned`.
//! * **Replace** is the replacement of the pipeline's strategy; its remediation ends with its
//!   replacement's judgement (`Succeeded` or `Failed`, see [`super::replacement::judge`]),
//!   or `Abandoned` when the old Instance is gone and nothing replaced it.
//! * **Limits**: restarts start within the same budget as replacements (`maxInFlight`,
//!   backoff), and only when the breaker lets replacement proceed (`maxUnhealthy`, paused,
//!   suspended processes).
//! * **Dry run** (`repair.mode: DryRun`): the same assessment, and nothing is acted on: every
//!   candidate the breaker lets through is listed in `status.wouldRepair` with the action it
//!   would get ([`would_repair`]).
//! * **History**: `status.remediations`, newest first, every `InProgress` entry plus the newest
//!   finished ones up to [`MAX_REMEDIATIONS`] in all.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::InstanceView;
use super::lifecycle::ceil_to_second;
use super::replacement::judge::{Judgement, judgement};
use super::replacement::{EventType, Index, PlannedEvent, earliest, time_until};
use crate::api::conditions::DesiredCondition;
use crate::api::names::reason;
use crate::api::{
    CONDITION_REPLACEMENT_ALLOWED, HealthDetail, HealthStatus, Remediation, RemediationOutcome,
    Repair, RepairAction, RepairMode, RepairStep, WouldRepair,
};

/// The most entries kept in `status.remediations` (all `InProgress` ones are kept beyond it).
pub const MAX_REMEDIATIONS: usize = 50;

/// What the repair assessment found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Assessment {
    /// For each candidate with no repair in flight: the action it gets next and its index in
    /// `repair.actions`.
    pub next: BTreeMap<String, (RepairAction, i32)>,
    /// Instances whose restart is in flight (requested, running, or within its timeout).
    pub restarting: BTreeSet<String>,
    /// The remediation history with the outcomes known now.
    pub remediations: Vec<Remediation>,
    /// Events for the outcomes decided now.
    pub events: Vec<PlannedEvent>,
    /// When a restart's timeout ends.
    pub requeue_after: Option<Duration>,
}

/// The restart token of a remediation: its start second.
pub fn restart_token(r: &Remediation) -> String {
    r.started.0.as_second().to_string()
}

/// The step `n` of the actions, the last one when `n` is past the end (a last `Restart`
/// repeats), `Replace` for an empty list.
pub fn step(repair: &Repair, n: i32) -> (RepairAction, i32, Option<&RepairStep>) {
    if repair.actions.is_empty() {
        return (RepairAction::Replace, 0, None);
    }
    let last = repair.actions.len() as i32 - 1;
    let i = n.clamp(0, last);
    let s = &repair.actions[i as usize];
    (s.action, i, Some(s))
}

/// Assesses the remediations in progress and the next action of each candidate.
///
/// `candidates` are the Unhealthy Instances replacement may act on (sorted by name); `grace`
/// is the health check grace period that judges a replacement.
pub fn assess(
    repair: &Repair,
    index: &Index<'_>,
    candidates: &[String],
    stored: &[Remediation],
    grace: SignedDuration,
    now: Timestamp,
) -> Assessment {
    let mut out = Assessment {
        remediations: stored.to_vec(),
        ..Assessment::default()
    };
    let finished = Some(Time(ceil_to_second(now)));
    for r in out.remediations.iter_mut() {
        if r.outcome != RemediationOutcome::InProgress {
            continue;
        }
        match r.action {
            RepairAction::Restart => {
                let Some(i) = index.get(r.instance.as_str()).filter(|i| !leaving(i)) else {
                    r.outcome = RemediationOutcome::Abandoned;
                    r.finished = finished.clone();
                    continue;
                };
                let token = restart_token(r);
                let running_at = (i.repair.recorded.as_deref() == Some(token.as_str()))
                    .then_some(i.repair.pod_running_at)
                    .flatten();
                let timeout = step(repair, r.step)
                    .2
                    .map_or(0, |s| s.timeout_seconds())
                    .max(0);
                let deadline = running_at.and_then(|t| {
                    t.checked_add(SignedDuration::from_secs(i64::from(timeout)))
                        .ok()
                });
                let verified =
                    i.health == Some(HealthStatus::Healthy) && i.detail == Some(HealthDetail::OK);
                match deadline {
                    Some(d) if now >= d && i.is_unhealthy() => {
                        r.finished = finished.clone();
                        r.outcome = RemediationOutcome::Escalated;
                        out.events.push(event(
                            EventType::Warning,
                            reason::REPAIR_ESCALATED,
                            &r.instance,
                            format!(
                                "Instance {} is still Unhealthy {timeout}s after its restart: the next repair action follows",
                                r.instance
                            ),
                        ));
                    }
                    Some(d) if now >= d && verified => {
                        r.finished = finished.clone();
                        r.outcome = RemediationOutcome::Succeeded;
                        out.events.push(event(
                            EventType::Normal,
                            reason::RESTART_SUCCEEDED,
                            &r.instance,
                            format!(
                                "Instance {} is Healthy {timeout}s after its restart",
                                r.instance
                            ),
                        ));
                    }
                    Some(d) if now >= d => {
                        // Not verified yet (grace period, too few probe results): its next
                        // verdict decides.
                        out.restarting.insert(r.instance.clone());
                    }
                    Some(d) => {
                        out.restarting.insert(r.instance.clone());
                        out.requeue_after = earliest(out.requeue_after, time_until(now, d));
                    }
                    None => {
                        out.restarting.insert(r.instance.clone());
                    }
                }
            }
            RepairAction::Replace => {
                let replacement = index
                    .values()
                    .find(|n| n.replaces.as_deref() == Some(r.instance.as_str()));
                match replacement {
                    Some(n) => {
                        r.replacement = Some(n.name.clone());
                        match judgement(n, grace, now) {
                            Judgement::Failed => {
                                r.outcome = RemediationOutcome::Failed;
                                r.finished = finished.clone();
                            }
                            Judgement::Succeeded => {
                                r.outcome = RemediationOutcome::Succeeded;
                                r.finished = finished.clone();
                            }
                            Judgement::Abandoned => {
                                r.outcome = RemediationOutcome::Abandoned;
                                r.finished = finished.clone();
                            }
                            Judgement::Pending(_) => {}
                        }
                    }
                    None if !index.contains_key(r.instance.as_str()) => {
                        r.outcome = RemediationOutcome::Abandoned;
                        r.finished = finished.clone();
                    }
                    None => {}
                }
            }
        }
    }
    for name in candidates {
        if out.restarting.contains(name) {
            continue;
        }
        let latest = out.remediations.iter().find(|r| &r.instance == name);
        let n = match latest {
            Some(r) if r.outcome == RemediationOutcome::InProgress => r.step,
            Some(r) if r.outcome == RemediationOutcome::Escalated => r.step.saturating_add(1),
            _ => 0,
        };
        let (action, i, _) = step(repair, n);
        out.next.insert(name.clone(), (action, i));
    }
    out
}

/// Whether an Instance is leaving (its deletion requested or in a Terminating state).
fn leaving(i: &InstanceView) -> bool {
    i.being_deleted || i.state.is_terminating()
}

fn event(type_: EventType, reason: &'static str, instance: &str, message: String) -> PlannedEvent {
    PlannedEvent {
        type_,
        reason,
        instance: Some(instance.to_string()),
        message,
    }
}

/// Why an Instance is repaired: its verdict's evidence.
pub fn why(i: Option<&InstanceView>) -> String {
    i.and_then(|i| i.evidence.clone())
        .unwrap_or_else(|| "Unhealthy".to_string())
}

/// Records the repairs started now at the front of the history (newest first): one entry per
/// restart and per Instance whose replacement starts, unless one is already in progress for
/// it. Then bounds the history ([`bound`]).
pub fn record_started(
    remediations: &mut Vec<Remediation>,
    started: &[(String, RepairAction, i32)],
    index: &Index<'_>,
    now: Timestamp,
) {
    let at = Time(ceil_to_second(now));
    for (name, action, step) in started {
        let running = remediations
            .iter()
            .any(|r| &r.instance == name && r.outcome == RemediationOutcome::InProgress);
        if running {
            continue;
        }
        remediations.insert(
            0,
            Remediation {
                instance: name.clone(),
                action: *action,
                step: *step,
                reason: why(index.get(name.as_str()).copied()),
                started: at.clone(),
                finished: None,
                outcome: RemediationOutcome::InProgress,
                replacement: None,
                detected: index
                    .get(name.as_str())
                    .and_then(|i| i.verdict_since)
                    .map(Time),
                recovered: None,
            },
        );
    }
    bound(remediations);
}

/// Stamps `recovered` on the finished remediations that lack it once the group is whole again
/// (`whole`: desired capacity, every Instance InService and Healthy); returns the repair times
/// (from `detected`, else `started`, to now) of the entries stamped now.
pub fn mark_recovered(remediations: &mut [Remediation], whole: bool, now: Timestamp) -> Vec<f64> {
    if !whole {
        return Vec::new();
    }
    let at = ceil_to_second(now);
    remediations
        .iter_mut()
        .filter(|r| r.outcome != RemediationOutcome::InProgress && r.recovered.is_none())
        .map(|r| {
            r.recovered = Some(Time(at));
            let from = r.detected.as_ref().unwrap_or(&r.started).0;
            now.duration_since(from).as_secs_f64().max(0.0)
        })
        .collect()
}

/// Keeps every `InProgress` entry and the newest others, [`MAX_REMEDIATIONS`] in all.
pub fn bound(remediations: &mut Vec<Remediation>) {
    let in_progress = remediations
        .iter()
        .filter(|r| r.outcome == RemediationOutcome::InProgress)
        .count();
    let mut room = MAX_REMEDIATIONS.saturating_sub(in_progress);
    remediations.retain(|r| {
        if r.outcome == RemediationOutcome::InProgress {
            true
        } else if room > 0 {
            room -= 1;
            true
        } else {
            false
        }
    });
}

/// The restart requests to (re)send: every `InProgress` restart whose Instance does not carry
/// its token yet, as `(instance, token)`.
pub fn restart_orders(remediations: &[Remediation], index: &Index<'_>) -> Vec<(String, String)> {
    remediations
        .iter()
        .filter(|r| {
            r.action == RepairAction::Restart && r.outcome == RemediationOutcome::InProgress
        })
        .filter_map(|r| {
            let token = restart_token(r);
            let i = index.get(r.instance.as_str())?;
            (i.repair.requested.as_deref() != Some(token.as_str()))
                .then(|| (r.instance.clone(), token))
        })
        .collect()
}

/// The dry-run list: every candidate with the action it would get now.
pub fn would_repair(
    next: &BTreeMap<String, (RepairAction, i32)>,
    index: &Index<'_>,
) -> Vec<WouldRepair> {
    next.iter()
        .map(|(name, (action, _))| WouldRepair {
            instance: name.clone(),
            action: *action,
            reason: why(index.get(name.as_str()).copied()),
        })
        .collect()
}

/// `WouldRepair` Events for the Instances newly listed (not in the stored list).
pub fn would_repair_events(stored: &[WouldRepair], now: &[WouldRepair]) -> Vec<PlannedEvent> {
    now.iter()
        .filter(|w| {
            !stored
                .iter()
                .any(|s| s.instance == w.instance && s.action == w.action)
        })
        .map(|w| {
            event(
                EventType::Normal,
                reason::WOULD_REPAIR,
                &w.instance,
                format!(
                    "repair.mode is DryRun: Instance {} would get {} ({}); nothing is done",
                    w.instance,
                    w.action.as_str(),
                    w.reason
                ),
            )
        })
        .collect()
}

/// `ReplacementAllowed=False, DryRun`: nothing is repaired; the message names what would be.
pub fn dry_run_condition(would_repair: &[WouldRepair]) -> DesiredCondition {
    let message = if would_repair.is_empty() {
        "repair.mode is DryRun: nothing is repaired (no Instance needs repair now)".to_string()
    } else {
        format!(
            "repair.mode is DryRun: nothing is repaired; {} Instance(s) would be: {}",
            would_repair.len(),
            would_repair
                .iter()
                .map(|w| format!("{} ({})", w.instance, w.action.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    DesiredCondition::new(
        CONDITION_REPLACEMENT_ALLOWED,
        false,
        reason::DRY_RUN,
        message,
    )
}

/// Whether the group only plans repairs.
pub fn dry_run(repair: &Repair) -> bool {
    repair.mode == RepairMode::DryRun
}
