//! Annotation keys (the operator's hand on the wheel) and their parsing into typed values.
//!
//! Parsing never fails loudly: a value that cannot be understood becomes an
//! [`AnnotationError`] that the caller reports as a Warning Event and in a condition message,
//! and the annotation is then ignored (it never acts).

use std::collections::BTreeMap;

use super::names::{
    ANNOTATION_HEALTH, ANNOTATION_HEALTH_REASON, ANNOTATION_MAINTENANCE, ANNOTATION_PAUSED,
    ANNOTATION_RESPECT_GRACE_PERIOD, ANNOTATION_STANDBY, HEARTBEAT_SUFFIX, HOOK_PREFIX,
};
use super::types::HookResult;

/// An annotation whose value could not be understood; it is ignored and reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}={value:?} is not understood ({expected}); it is ignored")]
pub struct AnnotationError {
    /// The annotation key.
    pub key: String,
    /// The value found.
    pub value: String,
    /// What values are accepted.
    pub expected: &'static str,
}

/// A manual health mark (`autoheal.dev/health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManualHealth {
    /// Marked healthy.
    Healthy,
    /// Marked unhealthy.
    Unhealthy,
}

/// The parsed health annotations of an Instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthAnnotations {
    /// `autoheal.dev/health`, when set to a valid value.
    pub health: Option<ManualHealth>,
    /// `autoheal.dev/health-reason`.
    pub reason: Option<String>,
    /// `autoheal.dev/respect-grace-period` (default true).
    pub respect_grace_period: bool,
    /// `autoheal.dev/maintenance=true`.
    pub maintenance: bool,
    /// `autoheal.dev/standby=true`.
    pub standby: bool,
    /// Values that could not be understood.
    pub errors: Vec<AnnotationError>,
}

impl HealthAnnotations {
    /// Parses the health annotations from an object's annotations.
    pub fn parse(annotations: &BTreeMap<String, String>) -> Self {
        let mut errors = Vec::new();
        let health = annotations.get(ANNOTATION_HEALTH).and_then(|v| {
            match v.trim().to_ascii_lowercase().as_str() {
                "unhealthy" => Some(ManualHealth::Unhealthy),
                "healthy" => Some(ManualHealth::Healthy),
                _ => {
                    errors.push(AnnotationError {
                        key: ANNOTATION_HEALTH.into(),
                        value: v.clone(),
                        expected: "Unhealthy or Healthy",
                    });
                    None
                }
            }
        });
        let mut flag = |key: &str, default: bool| match annotations.get(key) {
            None => default,
            Some(v) => parse_bool(v).unwrap_or_else(|| {
                errors.push(AnnotationError {
                    key: key.into(),
                    value: v.clone(),
                    expected: "\"true\" or \"false\"",
                });
                default
            }),
        };
        let respect_grace_period = flag(ANNOTATION_RESPECT_GRACE_PERIOD, true);
        let maintenance = flag(ANNOTATION_MAINTENANCE, false);
        let standby = flag(ANNOTATION_STANDBY, false);
        Self {
            health,
            reason: annotations
                .get(ANNOTATION_HEALTH_REASON)
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty()),
            respect_grace_period,
            maintenance,
            standby,
            errors,
        }
    }
}

/// Parses `"true"`/`"false"` (any case, surrounding blanks ignored).
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Whether a ScalingGroup's annotations pause it; a value that is not understood does not
/// pause and is returned as an error to report.
pub fn paused(annotations: &BTreeMap<String, String>) -> Result<bool, AnnotationError> {
    match annotations.get(ANNOTATION_PAUSED) {
        None => Ok(false),
        Some(v) => parse_bool(v).ok_or_else(|| AnnotationError {
            key: ANNOTATION_PAUSED.into(),
            value: v.clone(),
            expected: "\"true\" or \"false\"",
        }),
    }
}

/// The completion annotation key of a hook.
pub fn hook_key(hook: &str) -> String {
    format!("{HOOK_PREFIX}{hook}")
}

/// The heartbeat annotation key of a hook.
pub fn heartbeat_key(hook: &str) -> String {
    format!("{HOOK_PREFIX}{hook}{HEARTBEAT_SUFFIX}")
}

/// Reads the completion annotation of `hook`: `Ok(None)` when absent.
pub fn hook_completion(
    annotations: &BTreeMap<String, String>,
    hook: &str,
) -> Result<Option<HookResult>, AnnotationError> {
    let key = hook_key(hook);
    match annotations.get(&key) {
        None => Ok(None),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "continue" => Ok(Some(HookResult::Continue)),
            "abandon" => Ok(Some(HookResult::Abandon)),
            _ => Err(AnnotationError {
                key,
                value: v.clone(),
                expected: "Continue or Abandon",
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_annotations_mean_no_marks() {
        let parsed = HealthAnnotations::parse(&BTreeMap::new());
        assert_eq!(parsed.health, None);
        assert!(parsed.respect_grace_period);
        assert!(!parsed.maintenance && !parsed.standby);
        assert!(parsed.errors.is_empty());
    }

    #[test]
    fn values_parse_case_insensitively() {
        let parsed = HealthAnnotations::parse(&map(&[
            (ANNOTATION_HEALTH, "unhealthy"),
            (ANNOTATION_HEALTH_REASON, " disk full "),
            (ANNOTATION_RESPECT_GRACE_PERIOD, "FALSE"),
            (ANNOTATION_MAINTENANCE, "True"),
            (ANNOTATION_STANDBY, "false"),
        ]));
        assert_eq!(parsed.health, Some(ManualHealth::Unhealthy));
        assert_eq!(parsed.reason.as_deref(), Some("disk full"));
        assert!(!parsed.respect_grace_period);
        assert!(parsed.maintenance);
        assert!(!parsed.standby);
        assert!(parsed.errors.is_empty());
    }

    #[test]
    fn garbage_values_are_errors_and_never_act() {
        let parsed = HealthAnnotations::parse(&map(&[
            (ANNOTATION_HEALTH, "broken!"),
            (ANNOTATION_MAINTENANCE, "yes"),
            (ANNOTATION_RESPECT_GRACE_PERIOD, "nope"),
        ]));
        assert_eq!(parsed.health, None);
        assert!(!parsed.maintenance);
        assert!(parsed.respect_grace_period);
        assert_eq!(parsed.errors.len(), 3);
        assert!(
            parsed.errors[0]
                .to_string()
                .contains("autoheal.dev/health=\"broken!\"")
        );
    }

    #[test]
    fn paused_and_hook_completion() {
        assert_eq!(paused(&map(&[(ANNOTATION_PAUSED, "true")])), Ok(true));
        assert_eq!(paused(&BTreeMap::new()), Ok(false));
        assert!(paused(&map(&[(ANNOTATION_PAUSED, "maybe")])).is_err());
        let a = map(&[
            ("hooks.autoheal.dev/warm", "Continue"),
            ("hooks.autoheal.dev/x", "?"),
        ]);
        assert_eq!(hook_completion(&a, "warm"), Ok(Some(HookResult::Continue)));
        assert_eq!(hook_completion(&a, "other"), Ok(None));
        assert!(hook_completion(&a, "x").is_err());
        assert_eq!(heartbeat_key("warm"), "hooks.autoheal.dev/warm.heartbeat");
    }
}
