//! Condition helpers: build metav1.Conditions that keep `lastTransitionTime` unless their
//! status changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition as decided by the core, before transition times are settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredCondition {
    /// The condition type (e.g. `Healthy`).
    pub type_: String,
    /// `"True"`, `"False"` or `"Unknown"`.
    pub status: &'static str,
    /// A CamelCase reason.
    pub reason: String,
    /// The evidence, for people.
    pub message: String,
}

impl DesiredCondition {
    /// A condition of `type_` with a boolean status.
    pub fn new(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_: type_.into(),
            status: if ok { "True" } else { "False" },
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A condition of `type_` with status Unknown.
    pub fn unknown(type_: &str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_: type_.into(),
            status: "Unknown",
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Turns desired conditions into metav1.Conditions, keeping each existing condition's
/// `lastTransitionTime` when its status did not change, and using `now` otherwise.
pub fn settle(
    existing: &[Condition],
    desired: Vec<DesiredCondition>,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    desired
        .into_iter()
        .map(|d| {
            let last_transition_time = existing
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == d.status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: d.type_,
                status: d.status.into(),
                reason: d.reason,
                message: d.message,
                observed_generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The condition of `type_` in `conditions`, if any.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let first = settle(
            &[],
            vec![DesiredCondition::new("Healthy", true, "OK", "fine")],
            None,
            t0,
        );
        assert_eq!(first[0].last_transition_time.0, t0);
        let same = settle(
            &first,
            vec![DesiredCondition::new("Healthy", true, "OK", "still fine")],
            None,
            t1,
        );
        assert_eq!(same[0].last_transition_time.0, t0);
        assert_eq!(same[0].message, "still fine");
        let flipped = settle(
            &same,
            vec![DesiredCondition::new("Healthy", false, "Bad", "x")],
            None,
            t1,
        );
        assert_eq!(flipped[0].last_transition_time.0, t1);
        assert_eq!(flipped[0].status, "False");
    }
}
