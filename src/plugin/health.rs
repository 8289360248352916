//! `kubectl autoheal set-instance-health inst/NAME Healthy|Unhealthy
//! [--respect-grace-period=false] [--reason TEXT]`: as `aws autoscaling set-instance-health`,
//! it writes the Instance annotations the health evaluator reads.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::{at, time_left};
use crate::api::{
    ANNOTATION_HEALTH, ANNOTATION_HEALTH_REASON, ANNOTATION_RESPECT_GRACE_PERIOD, Instance,
    LifecycleState, ScalingGroup,
};

/// The health to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetHealth {
    /// `autoheal.dev/health=Healthy`: clears a manual Unhealthy (automatic signals still act).
    Healthy,
    /// `autoheal.dev/health=Unhealthy`: the Instance is replaced (after its grace period unless
    /// it is not respected).
    Unhealthy,
}

impl SetHealth {
    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "Healthy",
            Self::Unhealthy => "Unhealthy",
        }
    }

    /// Parses `Healthy` / `Unhealthy` (any case).
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "healthy" => Some(Self::Healthy),
            "unhealthy" => Some(Self::Unhealthy),
            _ => None,
        }
    }
}

/// The JSON merge patch of the Instance's annotations: the health, the reason (removed when
/// none is given, so that a stale reason never explains a new mark) and
/// `autoheal.dev/respect-grace-period` (`"false"`, or removed: the default is to respect it).
pub fn patch(health: SetHealth, respect_grace_period: bool, reason: Option<&str>) -> Value {
    let mut annotations = Map::new();
    annotations.insert(ANNOTATION_HEALTH.into(), json!(health.as_str()));
    annotations.insert(
        ANNOTATION_HEALTH_REASON.into(),
        reason
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map_or(Value::Null, |r| json!(r)),
    );
    annotations.insert(
        ANNOTATION_RESPECT_GRACE_PERIOD.into(),
        if respect_grace_period {
            Value::Null
        } else {
            json!("false")
        },
    );
    json!({ "metadata": { "annotations": annotations } })
}

/// Why the mark cannot be set, if it cannot: `Healthy` on an Instance already leaving (the
/// admission policy refuses it too).
pub fn refuse(instance: &Instance, health: SetHealth) -> Option<String> {
    let state = instance.status.as_ref().and_then(|s| s.lifecycle_state);
    let name = instance.metadata.name.as_deref().unwrap_or_default();
    (health == SetHealth::Healthy && state.is_some_and(LifecycleState::is_terminating)).then(|| {
        format!(
            "instance {name} is already {}: it cannot be marked Healthy",
            state.map_or("", LifecycleState::as_str)
        )
    })
}

/// What the person reads after the mark was set: what it does, and when.
pub fn confirmation(
    instance: &Instance,
    group: Option<&ScalingGroup>,
    health: SetHealth,
    respect_grace_period: bool,
    reason: Option<&str>,
    now: Timestamp,
) -> String {
    let name = instance.metadata.name.as_deref().unwrap_or_default();
    let because = reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let mut out = format!("instance {name} marked {}{because}\n", health.as_str());
    match health {
        SetHealth::Healthy => out.push_str(
            "A manual Unhealthy is cleared; a failing workload or probe still makes it Unhealthy again (use autoheal.dev/maintenance=true to keep it whatever its health).\n",
        ),
        SetHealth::Unhealthy => {
            let status = instance.status.clone().unwrap_or_default();
            let grace = group.map(|g| g.spec.health_check.grace_period_seconds);
            let grace_end = match (status.lifecycle_state, grace) {
                (Some(LifecycleState::InService), Some(g)) if g > 0 => status
                    .entered(LifecycleState::InService)
                    .and_then(|t| t.0.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(i64::from(g))).ok())
                    .filter(|end| *end > now),
                _ => None,
            };
            match grace_end {
                Some(end) if respect_grace_period => out.push_str(&format!(
                    "It is in its health check grace period until {} ({}): the mark acts then (--respect-grace-period=false acts now).\n",
                    at(end),
                    time_left(now, end)
                )),
                _ => out.push_str(&format!(
                    "The group repairs it within its safety limits: see kubectl autoheal why inst/{name}\n"
                )),
            }
        }
    }
    out
}
