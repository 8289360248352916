//! Pure planning: the lifecycle state machine of one Instance and the capacity and
//! replacement planner of a ScalingGroup. No I/O; time is an input.

pub mod capacity;
pub mod group;
pub mod lifecycle;

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use crate::api::{
    ANNOTATION_REPLACES, ANNOTATION_TEMPLATE_HASH, HealthDetail, HealthStatus, Instance,
    InstanceStatus, LifecycleState, annotations,
};

pub mod refresh;
pub mod repair;
pub mod replacement;
pub mod revision;

/// What the planners need to know of one Instance: a pure snapshot built from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceView {
    /// The Instance name.
    pub name: String,
    /// When the Instance was created.
    pub created_at: Timestamp,
    /// Its lifecycle state (`Pending` until the Instance controller first records one).
    pub state: LifecycleState,
    /// Its health status, once evaluated.
    pub health: Option<HealthStatus>,
    /// Its health detail, once evaluated.
    pub detail: Option<HealthDetail>,
    /// `spec.protectedFromScaleIn`.
    pub protected: bool,
    /// When it last entered InService.
    pub in_service_since: Option<Timestamp>,
    /// The Instance this one was launched to replace, if any.
    pub replaces: Option<String>,
    /// The template hash it was launched from.
    pub template_hash: Option<String>,
    /// Whether its deletion was requested (deletionTimestamp set).
    pub being_deleted: bool,
    /// `autoheal.dev/maintenance=true`: Maintaining, never replaced.
    pub maintenance: bool,
    /// `autoheal.dev/standby=true`: out of service, health not acted on (never replaced).
    pub standby: bool,
    /// The message of its `Healthy` condition: the evidence behind its verdict.
    pub evidence: Option<String>,
    /// `status.terminationReason` (else the `autoheal.dev/termination-reason` annotation the
    /// group sets before deleting it): why it is leaving (ScaleIn, Unhealthy, Deleted, ...).
    pub termination_reason: Option<String>,
    /// Where it runs and what it runs: shown in the group's instance list.
    pub placement: Placement,
    /// Its Pod restarts (repair action Restart): requested and recorded.
    pub repair: RepairView,
    /// The reason of its `Healthy` condition: the deciding signal of its verdict (e.g.
    /// `ProbeFailed`, `NodeNotReady`, `MarkedUnhealthy`).
    pub health_reason: Option<String>,
    /// When its `Healthy` condition last changed status (for an Unhealthy Instance: when the
    /// verdict turned Unhealthy).
    pub health_since: Option<Timestamp>,
}

/// What an Instance shows of its Pod restarts (repair action Restart).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairView {
    /// The `autoheal.dev/restart` annotation: the restart the group asked for.
    pub requested: Option<String>,
    /// The token of the restart recorded in `status.restart`.
    pub recorded: Option<String>,
    /// When the recorded restart's new Pod was seen running (`status.restart.podRunningAt`).
    pub pod_running_at: Option<Timestamp>,
    /// `status.restartCount`.
    pub restart_count: i32,
}

/// What the planners need to know of one Node: its name, zone and readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// The Node name.
    pub name: String,
    /// Its `topology.kubernetes.io/zone` label.
    pub zone: Option<String>,
    /// Whether it is Ready: its `Ready` condition is neither `False` nor `Unknown` (as the
    /// health evaluator reads it: a Node NotReady or Unknown makes its Instances Unhealthy).
    pub ready: bool,
    /// When its `Ready` condition last changed (for a Node that is not Ready: since when).
    pub since: Option<Timestamp>,
}

impl NodeView {
    /// Builds the view of a Node object.
    pub fn from_node(node: &k8s_openapi::api::core::v1::Node) -> Self {
        let condition = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
        let ready = condition.is_none_or(|c| c.status != "False" && c.status != "Unknown");
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            zone: node
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(crate::api::names::LABEL_ZONE))
                .cloned(),
            ready,
            since: condition
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0),
        }
    }
}

/// Where an Instance runs and the revision it runs (as its status records them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// `status.nodeName`.
    pub node: Option<String>,
    /// `status.zone`: the Node's `topology.kubernetes.io/zone`.
    pub zone: Option<String>,
    /// `status.revision`.
    pub revision: Option<String>,
}

impl InstanceView {
    /// Builds the view of an Instance object.
    pub fn from_instance(instance: &Instance) -> Self {
        // Borrowed, never cloned whole: a group reconcile builds a view of every member.
        static NO_ANNOTATIONS: BTreeMap<String, String> = BTreeMap::new();
        let meta = &instance.metadata;
        let annotations = meta.annotations.as_ref().unwrap_or(&NO_ANNOTATIONS);
        let no_status;
        let status = match &instance.status {
            Some(s) => s,
            None => {
                no_status = InstanceStatus::default();
                &no_status
            }
        };
        let marks = annotations::HealthAnnotations::parse(annotations);
        let healthy = status
            .conditions
            .iter()
            .find(|c| c.type_ == crate::api::CONDITION_HEALTHY);
        Self {
            name: meta.name.clone().unwrap_or_default(),
            created_at: meta
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(Timestamp::UNIX_EPOCH),
            state: status.lifecycle_state.unwrap_or(LifecycleState::Pending),
            health: status.health_status,
            detail: status.health_detail,
            protected: instance.spec.protected_from_scale_in,
            in_service_since: status.entered(LifecycleState::InService).map(|t| t.0),
            replaces: annotations.get(ANNOTATION_REPLACES).cloned(),
            template_hash: annotations.get(ANNOTATION_TEMPLATE_HASH).cloned(),
            being_deleted: meta.deletion_timestamp.is_some(),
            maintenance: marks.maintenance,
            standby: marks.standby,
            evidence: healthy.map(|c| c.message.clone()).filter(|m| !m.is_empty()),
            health_reason: healthy.map(|c| c.reason.clone()).filter(|r| !r.is_empty()),
            health_since: healthy.map(|c| c.last_transition_time.0),
            placement: Placement {
                node: status.node_name.clone(),
                zone: status.zone.clone(),
                revision: status.revision.clone(),
            },
            repair: RepairView {
                requested: annotations.get(crate::api::ANNOTATION_RESTART).cloned(),
                recorded: status.restart.as_ref().map(|r| r.token.clone()),
                pod_running_at: status
                    .restart
                    .as_ref()
                    .and_then(|r| r.pod_running_at.as_ref())
                    .map(|t| t.0),
                restart_count: status.restart_count,
            },
            termination_reason: status.termination_reason.clone().or_else(|| {
                annotations
                    .get(crate::api::ANNOTATION_TERMINATION_REASON)
                    .cloned()
            }),
        }
    }

    /// Whether the Instance counts toward capacity: not being deleted and in a state before
    /// Terminating.
    pub fn counts_toward_capacity(&self) -> bool {
        !self.being_deleted && self.state.counts_toward_capacity()
    }

    /// Whether the Instance is Unhealthy.
    pub fn is_unhealthy(&self) -> bool {
        self.health == Some(HealthStatus::Unhealthy)
    }

    /// Whether it is InService and Healthy.
    pub fn is_in_service_and_healthy(&self) -> bool {
        self.state == LifecycleState::InService && self.health == Some(HealthStatus::Healthy)
    }
}
