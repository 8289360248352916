//! The instance refresh step: rolls a group's Instances onto a target revision (or back to
//! the previous one), as a pure function of the group spec, the refresh status as stored, the
//! Instances, the group's annotations and `now`.
//!
//! # What starts a refresh
//! With `trigger: OnTemplateChange`, a template hash other than the last refresh's target (or,
//! for a group that never refreshed, Instances not on the current template); with either
//! trigger, the annotation `autoheal.dev/refresh` set to a value not honoured before. A
//! refresh that is running when the template changes again is superseded by one to the new
//! template. The new refresh records the current `autoheal.dev/cancel-refresh` value, so only
//! a value set afterwards cancels it.
//!
//! # Rolling (InProgress, RollbackInProgress)
//! With `D` = desiredCapacity, `min` = ceil(minHealthyPercentage% × D) and `max` =
//! floor(maxHealthyPercentage% × D) (at least `D`):
//! - *stale* Instances are those counting toward capacity that are not on the revision rolled
//!   to (with `skipMatching: false`, also those launched before the refresh started), minus
//!   the ones the Standby / protected policies say to `Ignore`; `Wait` ones (and Instances in
//!   maintenance) are stale but never replaced by the refresh, which waits for them;
//! - *healthy capacity* counts the InService+Healthy Instances, a replacement (on the
//!   revision, launched since the refresh started) only once it is *warmed up*: InService,
//!   Healthy, detail `OK`, and InService for `instanceWarmupSeconds`;
//! - stale Instances are terminated (reason `Refresh`, through the graceful path) those not
//!   serving first, then oldest first; one serving InService+Healthy is terminated only while
//!   healthy capacity stays at least `min`. When nothing is in flight and no surge is
//!   planned, one is terminated anyway (at least one in flight);
//! - surge: the capacity step aims at `D + min(max - D, stale replaceable Instances left)`,
//!   so the replacements of the next Instances are launched before they terminate and
//!   Instances counting toward capacity never exceed `max`;
//! - replacements launch from the revision rolled to (the reconciler's launch template).
//!
//! A checkpoint `c` caps the replacements started at ceil(c% × total); once the refresh is
//! `c`% complete with nothing in flight it waits `checkpointDelaySeconds` (recorded in status
//! as `checkpoint` / `checkpointUntil`), then goes on.
//!
//! # Ending
//! With nothing stale and every replacement warmed up: `Baking` for `bakeTimeSeconds` (if
//! any), then `Successful` (`RollbackSuccessful` for a rollback). A replacement that turns
//! Unhealthy while the refresh runs fails it: with `autoRollback` and the previous revision
//! at hand, `RollbackInProgress` (the same rolling, to the previous revision; the group then
//! launches from it until `spec.template` changes), else `Failed`. A new
//! `autoheal.dev/cancel-refresh` value turns a running refresh `Cancelling`: nothing new
//! starts, and once nothing is in flight it is `Cancelled`.
//!
//! # maxInstanceLifetimeSeconds
//! While no refresh runs, Instances older than `maxInstanceLifetimeSeconds` are replaced by
//! the same band selection ([`lifetime`]), oldest first, with reason `MaxInstanceLifetime`.
//!
//! Status first: the plan's status is written before its terminations, and every decision is
//! recomputed from status and the Instances, so a restarted operator resumes where it was; an
//! Instance already leaving never counts as stale again, so none is replaced twice.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::InstanceView;
use super::lifecycle::TerminationReason;
use super::replacement::{EventType, PlannedEvent, add, earliest, time_until};
use super::revision::{hash_of, revision_name};
use crate::api::conditions::DesiredCondition;
use crate::api::{
    CONDITION_RECONCILING, CONDITION_REFRESHING, HealthDetail, LifecycleState, ProtectedPolicy,
    REASON_REFRESH_FAILED, RefreshState, RefreshStatus, RefreshTrigger, ScalingGroupSpec,
    StandbyPolicy,
};

/// The most failed Instances named in status.
pub const MAX_FAILED_NAMED: usize = 16;

/// Everything the refresh step looks at.
#[derive(Debug, Clone, Copy)]
pub struct RefreshInputs<'a> {
    /// The group spec (refresh settings, desired capacity, grace period).
    pub spec: &'a ScalingGroupSpec,
    /// The group name (revision names).
    pub group: &'a str,
    /// `status.refresh` as stored.
    pub stored: Option<&'a RefreshStatus>,
    /// The group's Instances, including those leaving.
    pub instances: &'a [InstanceView],
    /// The hash of `spec.template`.
    pub current_hash: &'a str,
    /// Hashes of the revisions at hand (ControllerRevisions in the store), for rollback.
    pub available: &'a BTreeSet<String>,
    /// The `autoheal.dev/refresh` annotation value.
    pub refresh_request: Option<&'a str>,
    /// The `autoheal.dev/cancel-refresh` annotation value.
    pub cancel_request: Option<&'a str>,
    /// Why the refresh may not act now (paused, a process suspended), if it may not.
    pub held: Option<&'a str>,
    /// The current time.
    pub now: Timestamp,
}

/// What the refresh step decides.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshPlan {
    /// `status.refresh` to record (before acting).
    pub status: Option<RefreshStatus>,
    /// Instances to terminate now (reason `Refresh`).
    pub terminate: Vec<String>,
    /// Instances to terminate now for their age (reason `MaxInstanceLifetime`, while no
    /// refresh runs).
    pub lifetime_terminate: Vec<String>,
    /// Instances the capacity step keeps on top of the desired capacity (surge).
    pub surge: i32,
    /// The template hash new Instances are launched from.
    pub launch_hash: String,
    /// `Refreshing` and `Reconciling`.
    pub conditions: Vec<DesiredCondition>,
    /// Events to emit (before acting).
    pub events: Vec<PlannedEvent>,
    /// When to plan again at the latest (a warm-up, checkpoint or bake ending).
    pub requeue_after: Option<Duration>,
    /// Template hashes whose revisions must be kept (target and previous).
    pub keep: BTreeSet<String>,
}

/// The refresh step (see the module documentation).
pub fn plan(inputs: &RefreshInputs<'_>) -> RefreshPlan {
    let mut events = Vec::new();
    let mut status = start_or_keep(inputs, &mut events);
    let mut terminate = Vec::new();
    let mut lifetime_terminate = Vec::new();
    let mut surge = 0;
    let mut requeue_after = None;
    if let Some(s) = status.as_mut().filter(|s| s.status.is_running()) {
        let step = step(inputs, s, &mut events);
        terminate = step.terminate;
        surge = step.surge;
        requeue_after = step.requeue_after;
    } else if inputs.held.is_none() {
        let (expired, lifetime_surge, next) = lifetime(inputs.spec, inputs.instances, inputs.now);
        if !expired.is_empty() {
            events.push(PlannedEvent {
                type_: EventType::Normal,
                reason: "MaxInstanceLifetime",
                instance: None,
                message: format!(
                    "replacing {} (older than maxInstanceLifetimeSeconds {})",
                    expired.join(", "),
                    inputs
                        .spec
                        .max_instance_lifetime_seconds
                        .unwrap_or_default()
                ),
            });
        }
        lifetime_terminate = expired;
        surge = lifetime_surge;
        requeue_after = next;
    }
    let launch_hash = status
        .as_ref()
        .filter(|s| s.status.is_rollback() && hash_of(&s.target_revision) == inputs.current_hash)
        .and_then(|s| s.previous_revision.as_deref())
        .map(|p| hash_of(p).to_string())
        .unwrap_or_else(|| inputs.current_hash.to_string());
    let keep = status
        .iter()
        .flat_map(|s| std::iter::once(&s.target_revision).chain(s.previous_revision.iter()))
        .map(|r| hash_of(r).to_string())
        .collect();
    RefreshPlan {
        conditions: conditions(status.as_ref()),
        status,
        terminate,
        lifetime_terminate,
        surge,
        launch_hash,
        events,
        requeue_after,
        keep,
    }
}

/// Starts a refresh when one is due, else keeps the stored status (recording a refresh
/// request made while one runs as honoured).
fn start_or_keep(
    inputs: &RefreshInputs<'_>,
    events: &mut Vec<PlannedEvent>,
) -> Option<RefreshStatus> {
    let stored = inputs.stored;
    let requested = inputs
        .refresh_request
        .is_some_and(|r| stored.and_then(|s| s.request.as_deref()) != Some(r));
    let template_changed = match stored {
        Some(s) => hash_of(&s.target_revision) != inputs.current_hash,
        None => inputs.instances.iter().any(|i| {
            i.counts_toward_capacity() && i.template_hash.as_deref() != Some(inputs.current_hash)
        }),
    };
    let automatic = inputs.spec.refresh.trigger == RefreshTrigger::OnTemplateChange;
    let start = requested || (automatic && template_changed);
    if !start {
        return stored.cloned();
    }
    if requested && !template_changed && stored.is_some_and(|s| s.status.is_running()) {
        // A refresh to this template runs already: the request is honoured by it.
        let mut s = stored.cloned()?;
        s.request = inputs.refresh_request.map(str::to_string);
        return Some(s);
    }
    let target = revision_name(inputs.group, inputs.current_hash);
    let previous = match stored {
        // The last refresh succeeded: its target is what the Instances run.
        Some(s) if s.status == RefreshState::Successful && template_changed => {
            Some(s.target_revision.clone())
        }
        // Rolled back, superseded, failed or cancelled: the last good one stays the previous.
        Some(s) => s.previous_revision.clone(),
        None => most_common_other(inputs.instances, inputs.current_hash)
            .map(|h| revision_name(inputs.group, &h)),
    }
    .filter(|p| *p != target);
    events.push(PlannedEvent {
        type_: EventType::Normal,
        reason: "RefreshStarted",
        instance: None,
        message: format!(
            "instance refresh to revision {target} started ({}){}",
            if requested {
                "requested with autoheal.dev/refresh"
            } else {
                "the template changed"
            },
            previous
                .as_deref()
                .map_or(String::new(), |p| format!("; previous revision {p}"))
        ),
    });
    Some(RefreshStatus {
        status: if inputs.held.is_some() {
            RefreshState::Pending
        } else {
            RefreshState::InProgress
        },
        target_revision: target,
        previous_revision: previous,
        percentage_complete: 0,
        instances_to_update: 0,
        // Whole seconds, as creation timestamps: an Instance launched by this refresh (even in
        // the second it started) is never older than the refresh.
        start_time: Some(Time(
            Timestamp::from_second(inputs.now.as_second()).unwrap_or(inputs.now),
        )),
        end_time: None,
        message: String::new(),
        checkpoint: None,
        checkpoint_until: None,
        bake_until: None,
        failed_instances: Vec::new(),
        request: inputs
            .refresh_request
            .map(str::to_string)
            .or_else(|| stored.and_then(|s| s.request.clone())),
        cancel_request: inputs
            .cancel_request
            .map(str::to_string)
            .or_else(|| stored.and_then(|s| s.cancel_request.clone())),
    })
}

/// The template hash most Instances counting toward capacity run, other than `current`.
fn most_common_other(instances: &[InstanceView], current: &str) -> Option<String> {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for i in instances.iter().filter(|i| i.counts_toward_capacity()) {
        if let Some(h) = i.template_hash.as_deref().filter(|h| *h != current) {
            *counts.entry(h).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(h, n)| (*n, std::cmp::Reverse(*h)))
        .map(|(h, _)| h.to_string())
}

/// What one pass of a running refresh does.
struct Step {
    terminate: Vec<String>,
    surge: i32,
    requeue_after: Option<Duration>,
}

/// The warm-up of the group's refreshes.
fn warmup(spec: &ScalingGroupSpec) -> SignedDuration {
    SignedDuration::from_secs(i64::from(
        spec.refresh
            .instance_warmup_seconds
            .unwrap_or(spec.health_check.grace_period_seconds)
            .max(0),
    ))
}

/// Whether `i` is warmed up: InService, Healthy with detail OK, InService for the warm-up
/// (a zero warm-up needs no time: entry times are rounded up to the second).
fn warmed(i: &InstanceView, warmup: SignedDuration, now: Timestamp) -> bool {
    i.is_in_service_and_healthy()
        && i.detail == Some(HealthDetail::OK)
        && (warmup.is_zero()
            || i.in_service_since
                .and_then(|t| add(t, warmup))
                .is_some_and(|t| t <= now))
}

/// Whether `i` is in Standby.
fn standby(i: &InstanceView) -> bool {
    i.standby || i.state == LifecycleState::Standby
}

/// What the Standby / protected / maintenance policies say of an Instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// Replaced like any other.
    Replace,
    /// Left on its revision; not part of the refresh.
    Ignore,
    /// Part of the refresh, but never replaced by it: the refresh waits.
    Wait,
}

fn policy(spec: &ScalingGroupSpec, i: &InstanceView) -> Policy {
    if i.maintenance || i.detail == Some(HealthDetail::Maintaining) {
        return Policy::Wait;
    }
    if standby(i) {
        return match spec.refresh.standby_instances {
            StandbyPolicy::Ignore => Policy::Ignore,
            StandbyPolicy::Terminate => Policy::Replace,
            StandbyPolicy::Wait => Policy::Wait,
        };
    }
    if i.protected {
        return match spec.refresh.protected_instances {
            ProtectedPolicy::Ignore => Policy::Ignore,
            ProtectedPolicy::Refresh => Policy::Replace,
            ProtectedPolicy::Wait => Policy::Wait,
        };
    }
    Policy::Replace
}

/// `percent`% of `n`, rounded up or down.
fn percent(n: i64, percent: i32, up: bool) -> i64 {
    let p = n.max(0) * i64::from(percent.clamp(0, 200));
    if up { (p + 99) / 100 } else { p / 100 }
}

/// One pass of a running refresh: failures, cancel, progress, checkpoints, terminations.
fn step(inputs: &RefreshInputs<'_>, s: &mut RefreshStatus, events: &mut Vec<PlannedEvent>) -> Step {
    let spec = inputs.spec;
    let now = inputs.now;
    let mut out = Step {
        terminate: Vec::new(),
        surge: 0,
        requeue_after: None,
    };
    let start = s.start_time.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    let target = hash_of(&s.target_revision).to_string();
    let previous = s
        .previous_revision
        .as_deref()
        .map(|p| hash_of(p).to_string());
    let rolling_back = s.status == RefreshState::RollbackInProgress;
    let to: String = if rolling_back {
        previous.clone().unwrap_or_else(|| target.clone())
    } else {
        target.clone()
    };

    // Cancel.
    if inputs
        .cancel_request
        .is_some_and(|c| s.cancel_request.as_deref() != Some(c))
    {
        s.cancel_request = inputs.cancel_request.map(str::to_string);
        if s.status != RefreshState::Cancelling {
            s.status = RefreshState::Cancelling;
            events.push(PlannedEvent {
                type_: EventType::Normal,
                reason: "RefreshCancelling",
                instance: None,
                message: format!(
                    "instance refresh to {} cancelled with autoheal.dev/cancel-refresh: replacements in flight finish, nothing new starts",
                    s.target_revision
                ),
            });
        }
    }

    if s.status == RefreshState::Pending {
        if let Some(why) = inputs.held {
            s.message = format!("waiting to start: {why}");
            return out;
        }
        s.status = RefreshState::InProgress;
    }

    let warmup = warmup(spec);
    let fresh = |i: &InstanceView| i.template_hash.as_deref() == Some(&to) && i.created_at >= start;
    let counting: Vec<&InstanceView> = inputs
        .instances
        .iter()
        .filter(|i| i.counts_toward_capacity())
        .collect();

    // Failures: a replacement launched since the refresh started that is Unhealthy.
    if matches!(
        s.status,
        RefreshState::InProgress | RefreshState::Baking | RefreshState::RollbackInProgress
    ) {
        let failed: Vec<&InstanceView> = counting
            .iter()
            .copied()
            .filter(|i| fresh(i) && i.is_unhealthy())
            .collect();
        if !failed.is_empty() {
            fail(inputs, s, &failed, previous.as_deref(), events);
            if s.status != RefreshState::RollbackInProgress {
                return out;
            }
            // Roll back at once, in this same pass.
            return step(inputs, s, events);
        }
    }

    let stale_of = |i: &InstanceView| {
        i.template_hash.as_deref() != Some(&to)
            || (!spec.refresh.skip_matching && !rolling_back && i.created_at < start)
    };
    let ignored = |i: &InstanceView| policy(spec, i) == Policy::Ignore;
    let stale: Vec<&InstanceView> = counting
        .iter()
        .copied()
        .filter(|i| stale_of(i) && !ignored(i))
        .collect();
    let mut replaceable: Vec<&InstanceView> = stale
        .iter()
        .copied()
        .filter(|i| policy(spec, i) == Policy::Replace)
        .collect();
    replaceable.sort_by(|a, b| {
        (a.is_in_service_and_healthy(), a.created_at, &a.name).cmp(&(
            b.is_in_service_and_healthy(),
            b.created_at,
            &b.name,
        ))
    });
    let waiting: Vec<&str> = stale
        .iter()
        .filter(|i| policy(spec, i) == Policy::Wait)
        .map(|i| i.name.as_str())
        .collect();
    let desired = i64::from(spec.effective_desired().max(0));
    let ignored_count = counting
        .iter()
        .filter(|i| stale_of(i) && ignored(i))
        .count() as i64;
    let total = (desired - ignored_count).max(0);
    let done = counting
        .iter()
        .filter(|i| !stale_of(i) && !ignored(i) && (!fresh(i) || warmed(i, warmup, now)))
        .count() as i64;
    let unwarmed: Vec<&InstanceView> = counting
        .iter()
        .copied()
        .filter(|i| fresh(i) && !warmed(i, warmup, now))
        .collect();
    let leaving = inputs
        .instances
        .iter()
        .filter(|i| {
            !i.counts_toward_capacity()
                && i.termination_reason.as_deref() == Some(TerminationReason::Refresh.as_str())
        })
        .count();
    // Capacity not launched yet (an Instance just left) is in flight too.
    let holes = (desired - counting.len() as i64).max(0) as usize;
    let in_flight = unwarmed.len() + leaving + holes;
    // Surge Instances are done before the ones they replace have left: at most the Instances
    // not stale count.
    let done = done.min(total - (stale.len() as i64).min(total));
    let pct = if total == 0 {
        100
    } else {
        (done * 100 / total) as i32
    };
    // Never decreases during one refresh; a stored value out of range (a hand-edited status)
    // is clamped first (found by the `refresh_planner` fuzz target).
    s.percentage_complete = s.percentage_complete.clamp(0, 100).max(pct);
    s.instances_to_update = stale.len() as i32;
    for i in &unwarmed {
        if let Some(t) = i
            .in_service_since
            .and_then(|t| add(t, warmup))
            .filter(|t| *t > now)
        {
            out.requeue_after = earliest(out.requeue_after, time_until(now, t));
        }
    }

    if s.status == RefreshState::Cancelling && in_flight == 0 {
        finish(s, RefreshState::Cancelled, now, events);
        return out;
    }
    // Finished?
    if stale.is_empty() && in_flight == 0 {
        match s.status {
            RefreshState::RollbackInProgress => {
                finish(s, RefreshState::RollbackSuccessful, now, events)
            }
            RefreshState::InProgress if spec.refresh.bake_time_seconds > 0 => {
                let until = add(
                    now,
                    SignedDuration::from_secs(i64::from(spec.refresh.bake_time_seconds)),
                )
                .unwrap_or(Timestamp::MAX);
                s.status = RefreshState::Baking;
                s.bake_until = Some(Time(until));
                s.message = format!(
                    "every instance is on revision {} and warmed up; baking until {}",
                    s.target_revision,
                    clock(until)
                );
                out.requeue_after = earliest(out.requeue_after, time_until(now, until));
            }
            RefreshState::InProgress => finish(s, RefreshState::Successful, now, events),
            RefreshState::Baking => {
                let until = s.bake_until.as_ref().map_or(now, |t| t.0);
                if until <= now {
                    finish(s, RefreshState::Successful, now, events);
                } else {
                    out.requeue_after = earliest(out.requeue_after, time_until(now, until));
                }
            }
            _ => {}
        }
        return out;
    }
    if s.status == RefreshState::Baking {
        // Something went stale while baking (a scale-out from another revision): roll on.
        s.status = RefreshState::InProgress;
        s.bake_until = None;
    }
    if s.status == RefreshState::Cancelling {
        s.message = format!(
            "cancelling: waiting for {in_flight} replacement(s) in flight; {} instance(s) stay on their revision",
            stale.len()
        );
        return out;
    }
    if let Some(why) = inputs.held {
        s.message = format!("{}% complete; held: {why}", s.percentage_complete);
        return out;
    }

    // Checkpoints.
    let mut cap: Option<i64> = None;
    if let Some(until) = s.checkpoint_until.as_ref().map(|t| t.0) {
        if until > now {
            s.message = format!(
                "waiting at checkpoint {}% until {}",
                s.checkpoint.unwrap_or(0),
                clock(until)
            );
            out.requeue_after = earliest(out.requeue_after, time_until(now, until));
            return out;
        }
        s.checkpoint_until = None;
    }
    if !rolling_back {
        let passed = s.checkpoint.unwrap_or(0);
        let reached = spec
            .refresh
            .checkpoints
            .iter()
            .copied()
            .filter(|c| *c > passed && *c < 100 && *c <= s.percentage_complete)
            .max();
        if let Some(c) = reached.filter(|_| in_flight == 0) {
            let until = add(
                now,
                SignedDuration::from_secs(i64::from(spec.refresh.checkpoint_delay_seconds.max(0))),
            )
            .unwrap_or(Timestamp::MAX);
            s.checkpoint = Some(c);
            s.checkpoint_until = Some(Time(until));
            s.message = format!("waiting at checkpoint {c}% until {}", clock(until));
            events.push(PlannedEvent {
                type_: EventType::Normal,
                reason: "RefreshCheckpoint",
                instance: None,
                message: s.message.clone(),
            });
            out.requeue_after = earliest(out.requeue_after, time_until(now, until));
            return out;
        }
        let next = spec
            .refresh
            .checkpoints
            .iter()
            .copied()
            .filter(|c| *c > s.checkpoint.unwrap_or(0) && *c < 100)
            .min();
        if let Some(c) = next {
            let started = total - stale.len() as i64;
            cap = Some((percent(total, c, true) - started).max(0));
        }
    }

    // Terminations within the band.
    let healthy = counting
        .iter()
        .filter(|i| i.is_in_service_and_healthy() && (!fresh(i) || warmed(i, warmup, now)))
        .count() as i64;
    let (terminate, surge) = select(spec, &replaceable, healthy, in_flight, cap);
    out.terminate = terminate;
    out.surge = surge;
    let verb = if rolling_back {
        "rolling back to"
    } else {
        "replacing instances not on"
    };
    s.message = format!(
        "{verb} revision {}: {}% complete, {} to update, {} in flight{}",
        if rolling_back {
            s.previous_revision.clone().unwrap_or_default()
        } else {
            s.target_revision.clone()
        },
        s.percentage_complete,
        stale.len(),
        in_flight + out.terminate.len(),
        if waiting.is_empty() {
            String::new()
        } else {
            format!(
                "; waiting for {} (Standby, protected or in maintenance; see refresh.standbyInstances and refresh.protectedInstances)",
                waiting.join(", ")
            )
        }
    );
    out
}

/// Chooses, among `candidates` (in order), the Instances to terminate now within the band:
/// one serving InService+Healthy only while `healthy` (the healthy capacity) stays at least
/// ceil(minHealthyPercentage% × desired), at most `cap`; and the surge the capacity step adds,
/// min(floor(maxHealthyPercentage% × desired) - desired, candidates left). When nothing is
/// in flight and no surge is planned, the first candidate goes anyway (at least one in
/// flight).
fn select(
    spec: &ScalingGroupSpec,
    candidates: &[&InstanceView],
    mut healthy: i64,
    in_flight: usize,
    cap: Option<i64>,
) -> (Vec<String>, i32) {
    let desired = i64::from(spec.effective_desired().max(0));
    let min_healthy = percent(desired, spec.refresh.min_healthy_percentage, true);
    let max_total = percent(desired, spec.refresh.max_healthy_percentage, false).max(desired);
    let mut terminate = Vec::new();
    for c in candidates {
        if cap.is_some_and(|cap| terminate.len() as i64 >= cap) {
            break;
        }
        if c.is_in_service_and_healthy() {
            if healthy - 1 < min_healthy {
                continue;
            }
            healthy -= 1;
        }
        terminate.push(c.name.clone());
    }
    let left = (candidates.len() - terminate.len()) as i64;
    let surge = (max_total - desired).min(left).max(0) as i32;
    if terminate.is_empty()
        && in_flight == 0
        && surge == 0
        && cap.is_none_or(|c| c > 0)
        && let Some(first) = candidates.first()
    {
        terminate.push(first.name.clone());
    }
    (terminate, surge)
}

/// Replaces Instances older than `maxInstanceLifetimeSeconds` (while no refresh runs) with the
/// same band, warm-up and policies as a refresh: oldest first, reason `MaxInstanceLifetime`.
/// Returns the terminations, the surge and when the next Instance expires.
pub fn lifetime(
    spec: &ScalingGroupSpec,
    instances: &[InstanceView],
    now: Timestamp,
) -> (Vec<String>, i32, Option<Duration>) {
    let Some(max_age) = spec
        .max_instance_lifetime_seconds
        .filter(|s| *s > 0)
        .map(SignedDuration::from_secs)
    else {
        return (Vec::new(), 0, None);
    };
    let warmup = warmup(spec);
    let counting: Vec<&InstanceView> = instances
        .iter()
        .filter(|i| i.counts_toward_capacity())
        .collect();
    let expires = |i: &InstanceView| add(i.created_at, max_age).unwrap_or(Timestamp::MAX);
    let mut expired: Vec<&InstanceView> = counting
        .iter()
        .copied()
        .filter(|i| expires(i) <= now && !i.is_unhealthy() && policy(spec, i) == Policy::Replace)
        .collect();
    expired.sort_by(|a, b| {
        (a.is_in_service_and_healthy(), a.created_at, &a.name).cmp(&(
            b.is_in_service_and_healthy(),
            b.created_at,
            &b.name,
        ))
    });
    let next = counting
        .iter()
        .map(|i| expires(i))
        .filter(|t| *t > now)
        .min()
        .map(|t| time_until(now, t));
    if expired.is_empty() {
        return (Vec::new(), 0, next);
    }
    let desired = i64::from(spec.effective_desired().max(0));
    let leaving = instances
        .iter()
        .filter(|i| {
            !i.counts_toward_capacity()
                && i.termination_reason.as_deref()
                    == Some(TerminationReason::MaxInstanceLifetime.as_str())
        })
        .count();
    let unwarmed = counting
        .iter()
        .filter(|i| !warmed(i, warmup, now) && !i.is_unhealthy())
        .count();
    let holes = (desired - counting.len() as i64).max(0) as usize;
    let healthy = counting
        .iter()
        .filter(|i| i.is_in_service_and_healthy() && warmed(i, warmup, now))
        .count() as i64;
    let (terminate, surge) = select(spec, &expired, healthy, leaving + unwarmed + holes, None);
    // Look again when a warm-up ends.
    let warm_at = counting
        .iter()
        .filter_map(|i| i.in_service_since.and_then(|t| add(t, warmup)))
        .filter(|t| *t > now)
        .min()
        .map(|t| time_until(now, t));
    let requeue = [next, warm_at].into_iter().flatten().min();
    (terminate, surge, requeue)
}

/// Fails the refresh for `failed`: RollbackInProgress when it can roll back, else Failed (or
/// RollbackFailed when it was rolling back already).
fn fail(
    inputs: &RefreshInputs<'_>,
    s: &mut RefreshStatus,
    failed: &[&InstanceView],
    previous: Option<&str>,
    events: &mut Vec<PlannedEvent>,
) {
    let now = inputs.now;
    let named: Vec<String> = failed
        .iter()
        .take(MAX_FAILED_NAMED)
        .map(|i| {
            format!(
                "{} ({})",
                i.name,
                i.evidence
                    .clone()
                    .unwrap_or_else(|| format!("{:?}", i.detail.unwrap_or(HealthDetail::Impaired)))
            )
        })
        .collect();
    let was_rollback = s.status == RefreshState::RollbackInProgress;
    let can_roll_back =
        inputs.spec.refresh.auto_rollback && previous.is_some_and(|p| inputs.available.contains(p));
    if was_rollback {
        s.status = RefreshState::RollbackFailed;
        s.end_time = Some(Time(now));
        s.message = format!(
            "the rollback to {} failed: {} turned Unhealthy",
            s.previous_revision.clone().unwrap_or_default(),
            named.join("; ")
        );
    } else if can_roll_back {
        s.failed_instances = named.clone();
        s.status = RefreshState::RollbackInProgress;
        s.percentage_complete = 0;
        s.checkpoint_until = None;
        s.bake_until = None;
        s.message = format!(
            "the refresh to {} failed: {} turned Unhealthy; rolling back to {} (the group launches from it until spec.template changes)",
            s.target_revision,
            named.join("; "),
            s.previous_revision.clone().unwrap_or_default()
        );
    } else {
        s.failed_instances = named.clone();
        s.status = RefreshState::Failed;
        s.end_time = Some(Time(now));
        let why = if inputs.spec.refresh.auto_rollback {
            "the previous revision is not available, so it is not rolled back"
        } else {
            "autoRollback is off"
        };
        s.message = format!(
            "the refresh to {} failed: {} turned Unhealthy; {why}",
            s.target_revision,
            named.join("; ")
        );
    }
    events.push(PlannedEvent {
        type_: EventType::Warning,
        reason: REASON_REFRESH_FAILED,
        instance: None,
        message: s.message.clone(),
    });
}

/// Ends the refresh in `state`.
fn finish(
    s: &mut RefreshStatus,
    state: RefreshState,
    now: Timestamp,
    events: &mut Vec<PlannedEvent>,
) {
    s.status = state;
    s.end_time = Some(Time(now));
    s.checkpoint_until = None;
    s.bake_until = None;
    if state == RefreshState::Successful || state == RefreshState::RollbackSuccessful {
        s.percentage_complete = 100;
        s.instances_to_update = 0;
    }
    s.message = match state {
        RefreshState::Successful => format!("every instance is on revision {}", s.target_revision),
        RefreshState::RollbackSuccessful => format!(
            "rolled back: every instance is on revision {} again; the refresh to {} failed: {}",
            s.previous_revision.clone().unwrap_or_default(),
            s.target_revision,
            s.failed_instances.join("; ")
        ),
        RefreshState::Cancelled => format!(
            "cancelled at {}%: instances already replaced stay on {}",
            s.percentage_complete, s.target_revision
        ),
        _ => s.message.clone(),
    };
    let (type_, reason) = match state {
        RefreshState::RollbackSuccessful => (EventType::Warning, "RollbackSuccessful"),
        RefreshState::Cancelled => (EventType::Normal, "RefreshCancelled"),
        _ => (EventType::Normal, "RefreshSuccessful"),
    };
    events.push(PlannedEvent {
        type_,
        reason,
        instance: None,
        message: s.message.clone(),
    });
}

/// A time as people read it in messages: `12:03:10Z` today's way, RFC 3339 seconds.
fn clock(t: Timestamp) -> String {
    crate::plan::lifecycle::ceil_to_second(t).to_string()
}

/// The `Refreshing` and `Reconciling` conditions of a refresh status.
pub fn conditions(status: Option<&RefreshStatus>) -> Vec<DesiredCondition> {
    let Some(s) = status else {
        return vec![
            DesiredCondition::new(
                CONDITION_REFRESHING,
                false,
                "NoRefresh",
                "no instance refresh has run",
            ),
            DesiredCondition::new(CONDITION_RECONCILING, false, "Idle", "no refresh running"),
        ];
    };
    let running = s.status.is_running();
    let reason = match s.status {
        RefreshState::Failed | RefreshState::RollbackSuccessful | RefreshState::RollbackFailed => {
            REASON_REFRESH_FAILED
        }
        other => other.as_str(),
    };
    let message = format!("{}: {}", s.status.as_str(), s.message);
    vec![
        DesiredCondition::new(CONDITION_REFRESHING, running, reason, message.clone()),
        if running {
            DesiredCondition::new(CONDITION_RECONCILING, true, "Refreshing", message)
        } else {
            DesiredCondition::new(CONDITION_RECONCILING, false, "Idle", "no refresh running")
        },
    ]
}

#[cfg(test)]
mod tests;
