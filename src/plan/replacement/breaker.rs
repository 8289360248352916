//! Step 2 of the planner: the circuit breaker, and the `ReplacementAllowed` condition.
//!
//! Nothing at all is replaced while the group is paused, while a process replacement needs is
//! suspended, while replacements keep failing (`maxConsecutiveFailures`), or while more
//! Instances are Unhealthy than `maxUnhealthy` allows; the condition says which, naming the
//! Unhealthy Instances left alone.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::{EventType, Limits, PlannedEvent, ReplacementInputs, ReplacementMemory};
use crate::api::conditions::DesiredCondition;
use crate::api::names::reason;
use crate::api::{CONDITION_REPLACEMENT_ALLOWED, Process, ScalingGroupSpec};

/// Whether replacement may proceed.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// Replacement may proceed, within the budget.
    Proceed,
    /// Nothing is replaced: the `ReplacementAllowed=False` condition says why.
    Stop(DesiredCondition),
}

/// Step 2: the circuit breaker. Stops replacement, in order of precedence, when the group is
/// paused ([`paused`]), a process is suspended ([`suspended`]), replacements keep failing
/// ([`keeps_failing`]) or too many Instances are Unhealthy ([`too_many_unhealthy`]).
/// `unhealthy` are the candidates for replacement, sorted by name; `memory` is the judged one.
pub fn breaker(
    inputs: &ReplacementInputs<'_>,
    limits: &Limits,
    memory: &ReplacementMemory,
    unhealthy: &[String],
) -> Gate {
    let stop = paused(inputs.paused, unhealthy)
        .or_else(|| suspended(inputs.spec, unhealthy))
        .or_else(|| keeps_failing(limits, memory, unhealthy))
        .or_else(|| too_many_unhealthy(inputs.spec, limits, unhealthy));
    match stop {
        Some(condition) => Gate::Stop(condition),
        None => Gate::Proceed,
    }
}

/// `; 2 Unhealthy instance(s) are not replaced: a, b`, or nothing when none is Unhealthy.
fn not_replaced(unhealthy: &[String]) -> String {
    if unhealthy.is_empty() {
        String::new()
    } else {
        format!(
            "; {} Unhealthy instance(s) are not replaced: {}",
            unhealthy.len(),
            names(unhealthy)
        )
    }
}

/// `Paused` while the group is annotated `autoheal.dev/paused=true`.
pub fn paused(paused: bool, unhealthy: &[String]) -> Option<DesiredCondition> {
    paused.then(|| {
        DesiredCondition::new(
            CONDITION_REPLACEMENT_ALLOWED,
            false,
            reason::PAUSED,
            format!(
                "The group is paused ({}=true): nothing is replaced{}",
                crate::api::names::ANNOTATION_PAUSED,
                not_replaced(unhealthy)
            ),
        )
    })
}

/// `Suspended` while `HealthCheck`, `ReplaceUnhealthy`, `Terminate` or `Launch` is suspended
/// (replacement needs both Terminate and Launch), naming them.
pub fn suspended(spec: &ScalingGroupSpec, unhealthy: &[String]) -> Option<DesiredCondition> {
    let suspended: Vec<&str> = [
        (Process::HealthCheck, "HealthCheck"),
        (Process::ReplaceUnhealthy, "ReplaceUnhealthy"),
        (Process::Terminate, "Terminate"),
        (Process::Launch, "Launch"),
    ]
    .into_iter()
    .filter(|(p, _)| spec.is_suspended(*p))
    .map(|(_, n)| n)
    .collect();
    if suspended.is_empty() {
        return None;
    }
    let why = if spec.is_suspended(Process::HealthCheck) {
        "health verdicts are shown but not acted on"
    } else {
        "Unhealthy instances are not replaced"
    };
    Some(DesiredCondition::new(
        CONDITION_REPLACEMENT_ALLOWED,
        false,
        reason::SUSPENDED,
        format!(
            "Suspended process(es) {}: {why}{}",
            suspended.join(", "),
            not_replaced(unhealthy)
        ),
    ))
}

/// `ReplacementsKeepFailing` once the failure count reaches `maxConsecutiveFailures`, naming
/// the recent failures and the failing template.
pub fn keeps_failing(
    limits: &Limits,
    memory: &ReplacementMemory,
    unhealthy: &[String],
) -> Option<DesiredCondition> {
    if memory.consecutive_failures < limits.max_consecutive_failures {
        return None;
    }
    let failed = if memory.recent_failures.is_empty() {
        String::new()
    } else {
        format!(" ({})", names(&memory.recent_failures))
    };
    let template = memory
        .failing_template_hash
        .as_deref()
        .map(|h| format!(" of template {}", short(h)))
        .unwrap_or_default();
    Some(DesiredCondition::new(
        CONDITION_REPLACEMENT_ALLOWED,
        false,
        reason::KEEP_FAILING,
        format!(
            "{} replacements{template} in a row{failed} were Unhealthy when their health check grace period ended (maxConsecutiveFailures {}): replacement is stopped until the template changes or the group is annotated {}=<new value>{}",
            memory.consecutive_failures,
            limits.max_consecutive_failures,
            crate::api::names::ANNOTATION_RESET_REPLACEMENT_FAILURES,
            not_replaced(unhealthy)
        ),
    ))
}

/// `TooManyUnhealthy` while more candidates are Unhealthy than the resolved `maxUnhealthy`
/// (never when it is 100%).
pub fn too_many_unhealthy(
    spec: &ScalingGroupSpec,
    limits: &Limits,
    unhealthy: &[String],
) -> Option<DesiredCondition> {
    let max = limits.max_unhealthy?;
    if unhealthy.len() as i64 <= i64::from(max) {
        return None;
    }
    let spec_value = match &spec.replacement.max_unhealthy {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    };
    Some(DesiredCondition::new(
        CONDITION_REPLACEMENT_ALLOWED,
        false,
        reason::TOO_MANY_UNHEALTHY,
        format!(
            "{} instances are Unhealthy ({}), more than maxUnhealthy {max} (maxUnhealthy: {spec_value}){}: nothing is replaced until at most {max} are Unhealthy",
            unhealthy.len(),
            names(unhealthy),
            problems(limits)
        ),
    ))
}

/// ` (maxInFlight "x" is not understood; ...)`, or nothing when every limit was understood.
fn problems(limits: &Limits) -> String {
    if limits.problems.is_empty() {
        String::new()
    } else {
        format!(" ({})", limits.problems.join("; "))
    }
}

/// The condition once replacement proceeds: `BackingOff` when `backing_off` (a candidate waits
/// for the backoff after failures to end at `until`), else `ReplacementAllowed`; both True,
/// with the resolved limits.
pub fn allowed_condition(
    limits: &Limits,
    memory: &ReplacementMemory,
    unhealthy: &[String],
    backing_off: bool,
    until: Option<Timestamp>,
) -> DesiredCondition {
    let limits_text = format!(
        "maxUnhealthy {}, maxInFlight {}{}",
        limits
            .max_unhealthy
            .map_or("unlimited".to_string(), |m| m.to_string()),
        limits.max_in_flight,
        problems(limits)
    );
    if backing_off {
        let until = until.map_or("later".to_string(), |t| t.to_string());
        DesiredCondition::new(
            CONDITION_REPLACEMENT_ALLOWED,
            true,
            reason::BACKING_OFF,
            format!(
                "{} replacement(s) in a row failed (maxConsecutiveFailures {}): the next replacement waits until {until}; Unhealthy: {} ({limits_text})",
                memory.consecutive_failures,
                limits.max_consecutive_failures,
                names(unhealthy)
            ),
        )
    } else {
        DesiredCondition::new(
            CONDITION_REPLACEMENT_ALLOWED,
            true,
            reason::ALLOWED,
            format!("Unhealthy instances are replaced ({limits_text})"),
        )
    }
}

/// The Event announcing a change of the condition from `previous`, once: a Warning whenever
/// it turns to (or its message changes while) `TooManyUnhealthy` or `ReplacementsKeepFailing`;
/// a Normal one when it turns False for another reason, or back to True. Nothing when it is
/// unchanged.
pub fn condition_event(
    previous: Option<&Condition>,
    condition: &DesiredCondition,
) -> Option<PlannedEvent> {
    let changed = previous.is_none_or(|p| {
        p.status != condition.status
            || p.reason != condition.reason
            || p.message != condition.message
    });
    if !changed {
        return None;
    }
    let was_false = previous.is_some_and(|p| p.status == "False");
    if condition.status == "False" {
        let warning = condition.reason == reason::TOO_MANY_UNHEALTHY
            || condition.reason == reason::KEEP_FAILING;
        let same_reason =
            previous.is_some_and(|p| p.status == "False" && p.reason == condition.reason);
        (warning || !same_reason).then(|| PlannedEvent {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason_str(&condition.reason),
            instance: None,
            message: condition.message.clone(),
        })
    } else {
        was_false.then(|| PlannedEvent {
            type_: EventType::Normal,
            reason: reason::ALLOWED,
            instance: None,
            message: format!("Replacement resumes: {}", condition.message),
        })
    }
}

/// The `&'static str` of a condition reason this module sets.
fn reason_str(r: &str) -> &'static str {
    [
        reason::TOO_MANY_UNHEALTHY,
        reason::KEEP_FAILING,
        reason::SUSPENDED,
        reason::PAUSED,
        reason::BACKING_OFF,
    ]
    .into_iter()
    .find(|k| *k == r)
    .unwrap_or(reason::ALLOWED)
}

/// The first 20 names, comma-separated, then `and N more`.
pub(super) fn names(list: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut s = list
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > SHOWN {
        s.push_str(&format!(" and {} more", list.len() - SHOWN));
    }
    s
}

/// The first 12 characters of a template hash.
fn short(hash: &str) -> &str {
    hash.get(..hash.len().min(12)).unwrap_or(hash)
}
