//! The pure health evaluator: `(signals, health-check config, now) → verdict`.
//!
//! INTERFACE STUB — the health engine work replaces the body; the signature is what the
//! controllers call.

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;

use super::ProbeVerdict;
use crate::api::conditions::DesiredCondition;
use crate::api::{HealthCheck, HealthDetail, HealthStatus, Instance};

/// Everything the evaluator looks at for one Instance (all read from the stores).
#[derive(Debug, Clone, Copy)]
pub struct HealthInputs<'a> {
    /// The Instance (annotations, status: lifecycle state and its timestamps, conditions).
    pub instance: &'a Instance,
    /// Its Pod, if it exists.
    pub pod: Option<&'a Pod>,
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
}

/// Merges the signals of one Instance into its verdict.
pub fn assess(inputs: &HealthInputs<'_>, now: Timestamp) -> Verdict {
    let _ = (inputs, now);
    Verdict {
        status: HealthStatus::Healthy,
        detail: HealthDetail::Initializing,
        conditions: Vec::new(),
        warnings: Vec::new(),
    }
}
