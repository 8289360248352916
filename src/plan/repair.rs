//! Repair: which action an Unhealthy Instance gets, escalation, dry run, and the remediation
//! history. Pure: the replacement pipeline calls it between the breaker and the strategy.
//!
//! # Rules
//!
//! * **Actions in order** (`spec.repair.actions`, default `[{action: Replace}]`; the schema
//!   requires `Replace` last). An Unhealthy candidate with no repair running gets the first
//!   action, unless its latest remediation ended `Escalated` in the same Unhealthy spell (its
//!   verdict is not newer than the escalation): it then gets the next one. `Replace` is the
//!   action at once for an Instance whose replacement was already decided, for a surge
//!   Instance (it replaces another that is still there), for an Instance outside InService
//!   and Pending, and for every Instance when `minHealthyPercentage` is 100% (a restart leaves
//!   a hole in service that such a group never allows).
//! * **Restart** recreates the Instance's Pod in place. The group records the remediation
//!   (`InProgress`) in its status first, then sets `autoheal.dev/restart=<token>` on the
//!   Instance, where the token is the remediation's start second; the Instance records the
//!   restart in its own status before it touches the Pod, so neither a restart nor its
//!   escalation is repeated or skipped after a crash ([`restart_orders`] re-sends a request
//!   the Instance has not seen, while replacement may proceed). The restart is *in flight* (it
//!   counts against `maxInFlight` like a replacement) until `timeoutSeconds` after the new Pod
//!   runs (or, for a Pod that never runs, after `startupTimeoutSeconds` more); then the
//!   Instance is judged: still Unhealthy → `Escalated` (the next action follows, within the
//!   budget); Healthy with detail `OK` → `Succeeded`; not verified yet (too few probe results)
//!   → its next verdict decides, for one startup timeout at most (then `Abandoned`). After a
//!   restart the health check's grace period does not start again: `timeoutSeconds` is the
//!   restarted Pod's time to become healthy. An Instance that leaves, or enters Standby or
//!   maintenance, ends the remediation `Abandoned`.
//! * **Replace** is the replacement of the pipeline's strategy; its remediation ends with its
//!   replacement's judgement (`Succeeded` or `Failed`, see [`super::replacement::judge`]), or
//!   `Abandoned` when the old Instance is gone, or healthy again, with nothing replacing it.
//! * **Limits**: restarts start within the same budget as replacements (`maxInFlight`,
//!   backoff, and the room `minHealthyPercentage` leaves for holes in service), and only when
//!   the breaker lets replacement proceed (`maxUnhealthy`, paused, suspended processes).
//! * **Dry run** (`repair.mode: DryRun`): the same assessment, and nothing is acted on: every
//!   candidate the breaker lets through is listed in `status.wouldRepair` with the action it
//!   would get ([`would_repair`]).
//! * **History**: `status.remediations`, newest first: every `InProgress` entry and the newest
//!   entry of each present Instance, then the newest others, [`MAX_REMEDIATIONS`] in all. An
//!   escalation's entries share the incident's `detected` time; `recovered` is stamped when
//!   the group is whole again, and each `Succeeded` incident is one `autoheal_repair_seconds`
//!   sample.

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
    CONDITION_REPLACEMENT_ALLOWED, HealthDetail, HealthStatus, LifecycleState, Remediation,
    RemediationOutcome, Repair, RepairAction, RepairMode, RepairStep, WouldRepair,
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

/// The step `n` of the actions, the last one (`Replace`) when `n` is past the end, `Replace`
/// for an empty list.
pub fn step(repair: &Repair, n: i32) -> (RepairAction, i32, Option<&RepairStep>) {
    if repair.actions.is_empty() {
        return (RepairAction::Replace, 0, None);
    }
    let last = repair.actions.len() as i32 - 1;
    let i = n.clamp(0, last);
    let s = &repair.actions[i as usize];
    (s.action, i, Some(s))
}

/// What [`assess`] looks at besides the Instances.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    /// The health check grace period, which judges a replacement.
    pub grace: SignedDuration,
    /// `healthCheck.startupTimeoutSeconds`: how long a restarted Pod may take to run before
    /// its restart is judged anyway.
    pub startup_timeout: SignedDuration,
    /// Whether a restart may leave a hole in serving capacity at all (`minHealthyPercentage`
    /// below 100%): if not, Restart steps are skipped for Replace.
    pub restart_possible: bool,
}

/// Assesses the remediations in progress and the next action of each candidate.
///
/// `candidates` are the Unhealthy Instances replacement may act on (sorted by name).
pub fn assess(
    repair: &Repair,
    index: &Index<'_>,
    candidates: &[String],
    stored: &[Remediation],
    clocks: Clocks,
    now: Timestamp,
) -> Assessment {
    let mut out = Assessment {
        remediations: stored.to_vec(),
        ..Assessment::default()
    };
    let finished = Some(Time(ceil_to_second(now)));
    let mut remediations = std::mem::take(&mut out.remediations);
    for r in remediations.iter_mut() {
        if r.outcome != RemediationOutcome::InProgress {
            continue;
        }
        let outcome = match r.action {
            RepairAction::Restart => judge_restart(repair, index, r, clocks, now, &mut out),
            RepairAction::Replace => judge_replace(index, r, clocks, now),
        };
        if let Some(outcome) = outcome {
            r.outcome = outcome;
            r.finished = finished.clone();
        }
    }
    out.remediations = remediations;
    for name in candidates {
        if out.restarting.contains(name) {
            continue;
        }
        let Some(i) = index.get(name.as_str()) else {
            continue;
        };
        out.next.insert(
            name.clone(),
            next_action(repair, index, i, &out.remediations, clocks),
        );
    }
    out
}

/// The outcome of a restart in progress, if decided now; records it as in flight otherwise.
fn judge_restart(
    repair: &Repair,
    index: &Index<'_>,
    r: &Remediation,
    clocks: Clocks,
    now: Timestamp,
    out: &mut Assessment,
) -> Option<RemediationOutcome> {
    let i = index.get(r.instance.as_str()).filter(|i| !leaving(i));
    let Some(i) = i.filter(|i| !super::replacement::excluded(i)) else {
        // Gone, leaving, or taken out of repair (Standby, maintenance): nothing to judge.
        return Some(RemediationOutcome::Abandoned);
    };
    let token = restart_token(r);
    let running_at = (i.repair.recorded.as_deref() == Some(token.as_str()))
        .then_some(i.repair.pod_running_at)
        .flatten();
    let timeout = SignedDuration::from_secs(i64::from(
        step(repair, r.step)
            .2
            .map_or(0, |s| s.timeout_seconds())
            .max(0),
    ));
    // From the new Pod running; a Pod that never runs is judged once the startup timeout
    // has passed too.
    let deadline = match running_at {
        Some(t) => t.checked_add(timeout).ok(),
        None => r
            .started
            .0
            .checked_add(clocks.startup_timeout)
            .and_then(|t| t.checked_add(timeout))
            .ok(),
    }
    .unwrap_or(Timestamp::MAX);
    // An Instance neither Unhealthy nor verified is waited for one startup timeout more.
    let give_up = deadline
        .checked_add(clocks.startup_timeout)
        .unwrap_or(Timestamp::MAX);
    let verified = i.health == Some(HealthStatus::Healthy) && i.detail == Some(HealthDetail::OK);
    if now < deadline {
        out.restarting.insert(r.instance.clone());
        out.requeue_after = earliest(out.requeue_after, time_until(now, deadline));
        return None;
    }
    if i.is_unhealthy() {
        out.events.push(event(
            EventType::Warning,
            reason::REPAIR_ESCALATED,
            &r.instance,
            match running_at {
                Some(_) => format!(
                    "Instance {} is still Unhealthy {}s after its restart: the next repair action follows",
                    r.instance,
                    timeout.as_secs()
                ),
                None => format!(
                    "The restarted Pod of instance {} did not run within the startup timeout: the next repair action follows",
                    r.instance
                ),
            },
        ));
        return Some(RemediationOutcome::Escalated);
    }
    if verified {
        out.events.push(event(
            EventType::Normal,
            reason::RESTART_SUCCEEDED,
            &r.instance,
            format!(
                "Instance {} is Healthy {}s after its restart",
                r.instance,
                timeout.as_secs()
            ),
        ));
        return Some(RemediationOutcome::Succeeded);
    }
    if now >= give_up {
        return Some(RemediationOutcome::Abandoned);
    }
    // Not verified yet (too few probe results): its next verdict decides.
    out.restarting.insert(r.instance.clone());
    out.requeue_after = earliest(out.requeue_after, time_until(now, give_up));
    None
}

/// The outcome of a replacement in progress, if decided now: its replacement's judgement; or
/// `Abandoned` once the old Instance is gone, or no longer a candidate, with nothing replacing
/// it.
fn judge_replace(
    index: &Index<'_>,
    r: &mut Remediation,
    clocks: Clocks,
    now: Timestamp,
) -> Option<RemediationOutcome> {
    let replacement = index
        .values()
        .find(|n| n.replaces.as_deref() == Some(r.instance.as_str()));
    if let Some(n) = replacement {
        r.replacement = Some(n.name.clone());
        return match judgement(n, clocks.grace, now) {
            Judgement::Failed => Some(RemediationOutcome::Failed),
            Judgement::Succeeded => Some(RemediationOutcome::Succeeded),
            Judgement::Abandoned => Some(RemediationOutcome::Abandoned),
            Judgement::Pending(_) => None,
        };
    }
    match index.get(r.instance.as_str()) {
        None => Some(RemediationOutcome::Abandoned),
        Some(old) if !leaving(old) && !super::replacement::is_candidate(old) => {
            Some(RemediationOutcome::Abandoned)
        }
        Some(_) => None,
    }
}

/// The action a candidate gets next, and its index in `repair.actions`.
///
/// An Instance whose replacement was decided keeps Replace; a surge Instance (launched to
/// replace another that is still there), or one outside InService and Pending, is replaced
/// (restarting it would not help, or its state cannot take a restart); after an `Escalated`
/// remediation of the same Unhealthy spell, the next action follows; else the first.
pub fn next_action(
    repair: &Repair,
    index: &Index<'_>,
    i: &InstanceView,
    history: &[Remediation],
    clocks: Clocks,
) -> (RepairAction, i32) {
    let replace = (RepairAction::Replace, replace_step(repair));
    let latest = history.iter().find(|r| r.instance == i.name);
    if latest.is_some_and(|r| r.action == RepairAction::Replace) {
        return replace;
    }
    let surge = i
        .replaces
        .as_deref()
        .and_then(|old| index.get(old))
        .is_some_and(|old| old.name != i.name && old.counts_toward_capacity());
    let restartable = matches!(i.state, LifecycleState::InService | LifecycleState::Pending);
    if surge || !restartable || !clocks.restart_possible {
        return replace;
    }
    let n = match latest {
        Some(r) if r.outcome == RemediationOutcome::InProgress => r.step,
        // Escalated in this Unhealthy spell (the verdict is not newer than the escalation).
        Some(r)
            if r.outcome == RemediationOutcome::Escalated
                && i.health_since
                    .zip(r.finished.as_ref())
                    .is_none_or(|(v, f)| v <= f.0) =>
        {
            r.step.saturating_add(1)
        }
        _ => 0,
    };
    let (action, n, _) = step(repair, n);
    (action, n)
}

/// The index of the `Replace` step (the last one; the schema requires it).
pub fn replace_step(repair: &Repair) -> i32 {
    repair
        .actions
        .iter()
        .rposition(|s| s.action == RepairAction::Replace)
        .map_or(repair.actions.len().saturating_sub(1) as i32, |p| p as i32)
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
        let latest = remediations.iter().find(|r| &r.instance == name);
        if latest.is_some_and(|r| r.outcome == RemediationOutcome::InProgress) {
            continue;
        }
        // An escalation continues the same incident: its clock started with the first action.
        let detected = latest
            .filter(|r| r.outcome == RemediationOutcome::Escalated)
            .and_then(|r| r.detected.clone())
            .or_else(|| {
                index
                    .get(name.as_str())
                    .and_then(|i| i.health_since)
                    .map(Time)
            });
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
                detected,
                recovered: None,
            },
        );
    }
    bound(remediations, index);
}

/// Stamps `recovered` on the finished remediations that lack it once the group is whole again
/// (`whole`: desired capacity, every Instance InService and Healthy); returns the repair times
/// (from `detected`, else `started`, to now) of the incidents that ended well: one per
/// `Succeeded` entry (an escalation's earlier steps share its `detected`, and are not counted
/// again).
pub fn mark_recovered(remediations: &mut [Remediation], whole: bool, now: Timestamp) -> Vec<f64> {
    if !whole {
        return Vec::new();
    }
    let at = ceil_to_second(now);
    let mut times = Vec::new();
    for r in remediations
        .iter_mut()
        .filter(|r| r.outcome != RemediationOutcome::InProgress && r.recovered.is_none())
    {
        r.recovered = Some(Time(at));
        if r.outcome == RemediationOutcome::Succeeded {
            let from = r.detected.as_ref().unwrap_or(&r.started).0;
            times.push(now.duration_since(from).as_secs_f64().max(0.0));
        }
    }
    times
}

/// Keeps every `InProgress` entry and the newest entry of each Instance still present (the
/// escalation step lives there), then the newest others, [`MAX_REMEDIATIONS`] in all.
pub fn bound(remediations: &mut Vec<Remediation>, index: &Index<'_>) {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let keep: Vec<bool> = remediations
        .iter()
        .map(|r| {
            let newest_of_present =
                index.contains_key(r.instance.as_str()) && seen.insert(r.instance.as_str());
            r.outcome == RemediationOutcome::InProgress || newest_of_present
        })
        .collect();
    let mut room = MAX_REMEDIATIONS.saturating_sub(keep.iter().filter(|k| **k).count());
    let mut n = 0;
    remediations.retain(|_| {
        let kept = keep[n] || {
            let fits = room > 0;
            room = room.saturating_sub(1);
            fits
        };
        n += 1;
        kept
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

/// `ReplacementAllowed=False, DryRun` naming what would be repaired; True (nothing would be)
/// when the list is empty, so that a dry-run group is `Stalled` only while it holds a repair.
pub fn dry_run_condition(would_repair: &[WouldRepair]) -> DesiredCondition {
    if would_repair.is_empty() {
        return DesiredCondition::new(
            CONDITION_REPLACEMENT_ALLOWED,
            true,
            reason::DRY_RUN,
            "repair.mode is DryRun: nothing would be repaired now",
        );
    }
    let message = {
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
