//! The `Instance` custom resource: one member of a ScalingGroup, backed by one Pod.

// `printcolumn(type_ = ...)` repeats per column by design of kube-derive.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

use super::types::{HookResult, HookTransition};

/// One member of a ScalingGroup. It owns one Pod of the same name.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "autoheal.dev",
    version = "v1alpha1",
    kind = "Instance",
    plural = "instances",
    shortname = "inst",
    category = "autoheal",
    namespaced,
    status = "InstanceStatus",
    doc = "An Instance is one member of a ScalingGroup, backed by one Pod. Annotate it to set its health (autoheal.dev/health=Unhealthy), put it in maintenance or standby, or complete lifecycle hooks.",
    printcolumn(
        name = "Group",
        type_ = "string",
        json_path = ".spec.groupName",
        description = "The owning ScalingGroup"
    ),
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.lifecycleState",
        description = "Lifecycle state"
    ),
    printcolumn(
        name = "Health",
        type_ = "string",
        json_path = ".status.healthStatus",
        description = "Healthy or Unhealthy"
    ),
    printcolumn(
        name = "Detail",
        type_ = "string",
        json_path = ".status.healthDetail",
        description = "Detailed health code"
    ),
    printcolumn(
        name = "Address",
        type_ = "string",
        json_path = ".status.address",
        description = "The Pod IP probes go to"
    ),
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.revision",
        description = "The group revision (ControllerRevision) the Instance was launched from"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSpec {
    /// The ScalingGroup this Instance belongs to (immutable).
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("groupName is immutable"))]
    pub group_name: String,
    /// When true, scale-in never picks this Instance (health replacement still may, as in AWS).
    #[serde(default)]
    pub protected_from_scale_in: bool,
    /// The Pod template this Instance was launched with (copied from the group's template at
    /// launch; immutable).
    #[x_kube(validation = Rule::new("self == oldSelf").message("podTemplate is immutable: change the group's template instead"))]
    pub pod_template: PodTemplate,
}

/// A PodTemplateSpec (`metadata` and `spec`), stored as given and validated by the API server
/// when the Pod is created. Reads and writes go through `Deref`/`DerefMut` to the
/// PodTemplateSpec.
///
/// In memory it is boxed, and may be left out: a PodTemplateSpec is 1.8 KB before anything it
/// points to, and the operator drops the template of every Instance whose Pod exists (see
/// `controller::streams::trim_instance`). A left-out template ([`PodTemplate::default`]; a
/// template read from JSON never is one) takes no memory, reads as an empty PodTemplateSpec,
/// serializes as `{}` (so a copy without its template must never be written back: the
/// operator writes only status and metadata patches of stored Instances), and is not equal
/// to a template given empty. Writing through `DerefMut` to a left-out template starts from
/// an empty one.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PodTemplate(Option<Box<PodTemplateSpec>>);

impl PodTemplate {
    /// Wraps a PodTemplateSpec.
    pub fn new(template: PodTemplateSpec) -> Self {
        Self(Some(Box::new(template)))
    }

    /// Whether this copy's template was left out (dropped from memory by the operator), as
    /// opposed to given, even empty.
    pub fn is_left_out(&self) -> bool {
        self.0.is_none()
    }
}

impl std::ops::Deref for PodTemplate {
    type Target = PodTemplateSpec;

    fn deref(&self) -> &PodTemplateSpec {
        static LEFT_OUT: PodTemplateSpec = PodTemplateSpec {
            metadata: None,
            spec: None,
        };
        self.0.as_deref().unwrap_or(&LEFT_OUT)
    }
}

impl std::ops::DerefMut for PodTemplate {
    fn deref_mut(&mut self) -> &mut PodTemplateSpec {
        self.0.get_or_insert_default()
    }
}

impl Serialize for PodTemplate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        PodTemplateSpec::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for PodTemplate {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        PodTemplateSpec::deserialize(deserializer).map(Self::new)
    }
}

impl JsonSchema for PodTemplate {
    fn schema_name() -> Cow<'static, str> {
        "PodTemplate".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A PodTemplateSpec: `metadata` (labels, annotations) and `spec` (a PodSpec, see `kubectl explain pod.spec`) of the Pod backing each Instance. The Pod spec is checked by the API server when the Pod is created.",
            "type": "object",
            "required": ["spec"],
            "properties": {
                "metadata": {
                    "description": "Labels and annotations of the Pod (see `kubectl explain pod.metadata`).",
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": true
                },
                "spec": {
                    "description": "The PodSpec of the Pod (see `kubectl explain pod.spec`).",
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {
                        "containers": {
                            "description": "The Pod's containers (at least one).",
                            "type": "array",
                            "items": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": true
                            }
                        }
                    },
                    "x-kubernetes-validations": [
                        {
                            "rule": "has(self.containers) && size(self.containers) > 0",
                            "message": "podTemplate.spec.containers must list at least one container"
                        }
                    ]
                }
            }
        })
    }
}

/// Where an Instance is in its life (AWS Auto Scaling names).
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum LifecycleState {
    /// Created; its Pod is starting.
    Pending,
    /// Held by Launch lifecycle hooks.
    #[serde(rename = "Pending:Wait")]
    PendingWait,
    /// Running and in service.
    InService,
    /// Out of service on request (`autoheal.dev/standby=true`); still counts toward capacity.
    Standby,
    /// Left service; waiting out the deregistration delay.
    Terminating,
    /// Held by Terminate lifecycle hooks.
    #[serde(rename = "Terminating:Wait")]
    TerminatingWait,
    /// Pod deleted; waiting until it is gone.
    #[serde(rename = "Terminating:Proceed")]
    TerminatingProceed,
    /// Done; the Instance object is being removed.
    Terminated,
}

impl LifecycleState {
    /// The contract's name of the state, as written in status (e.g. `Pending:Wait`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::PendingWait => "Pending:Wait",
            Self::InService => "InService",
            Self::Standby => "Standby",
            Self::Terminating => "Terminating",
            Self::TerminatingWait => "Terminating:Wait",
            Self::TerminatingProceed => "Terminating:Proceed",
            Self::Terminated => "Terminated",
        }
    }

    /// Whether the Instance counts toward the group's capacity (every state before
    /// Terminating, Standby included).
    pub fn counts_toward_capacity(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::PendingWait | Self::InService | Self::Standby
        )
    }

    /// Whether the Instance is on its way out (Terminating and after).
    pub fn is_terminating(self) -> bool {
        !self.counts_toward_capacity()
    }
}

impl std::fmt::Display for LifecycleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The health of an Instance: the only input to replacement.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// Not Impaired.
    Healthy,
    /// Impaired: a candidate for replacement.
    Unhealthy,
}

/// The detailed health code (Alibaba ECS names). Unhealthy ⇔ Impaired.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthDetail {
    /// All signals pass.
    OK,
    /// A signal failed past its threshold: the Instance is Unhealthy.
    Impaired,
    /// A signal is failing but below its threshold.
    Warning,
    /// The `autoheal.dev/maintenance` annotation is set: never replaced.
    Maintaining,
    /// In the grace period, or not yet running.
    Initializing,
    /// The probe has not produced enough results yet.
    InsufficientData,
    /// Standby, or the group's HealthCheck process is suspended.
    NotApplicable,
}

/// A lifecycle hook an Instance is waiting on.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PendingHook {
    /// The hook name.
    pub name: String,
    /// Launch or Terminate.
    pub transition: HookTransition,
    /// When the hook started waiting.
    pub started_at: Time,
    /// When the hook times out (moved forward by each new heartbeat).
    pub deadline: Time,
    /// The last heartbeat annotation value seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<String>,
    /// The result, once completed or timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<HookResult>,
}

/// When an Instance entered one of its lifecycle states.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StateEntry {
    /// The state entered.
    pub state: LifecycleState,
    /// When it was entered.
    pub entered_at: Time,
    /// Why, in a word (e.g. ScaleIn, Unhealthy, Launched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The record of a Pod restart, written before the old Pod is touched, so that a restarted
/// operator neither restarts twice nor loses one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestartRecord {
    /// The value of the `autoheal.dev/restart` annotation this restart answers.
    pub token: String,
    /// When the restart started.
    pub started_at: Time,
    /// The UID of the Pod being replaced (deleted, then recreated under the same name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_pod_uid: Option<String>,
    /// When the new Pod was seen running: the escalation timeout counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_running_at: Option<Time>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// The observed state of an Instance.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// The spec generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The lifecycle state (AWS names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_state: Option<LifecycleState>,
    /// Healthy or Unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<HealthStatus>,
    /// The detailed health code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_detail: Option<HealthDetail>,
    /// The Pod IP; probes go to address:port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The revision of its group's template (a ControllerRevision name) the Instance was
    /// launched from; the label `autoheal.dev/revision` says the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The Node the Pod runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The zone of that Node (its `topology.kubernetes.io/zone` label), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Why the Instance is leaving (ScaleIn, Unhealthy, Deleted, LaunchAbandoned, GroupDeleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_reason: Option<String>,
    /// When the Pod was seen out of service (the `autoheal.dev/in-service` label gone) while
    /// Terminating; the deregistration delay counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregistered_at: Option<Time>,
    /// Lifecycle hooks this Instance waits on, or has completed in its current transition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_hooks: Vec<PendingHook>,
    /// How many times the operator restarted this Instance's Pod (repair action Restart).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restart_count: i32,
    /// The latest restart (requested with the `autoheal.dev/restart` annotation by the group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartRecord>,
    /// Every lifecycle state entered, with its time (the launch and the latest 31).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub state_history: Vec<StateEntry>,
    /// Healthy (aggregate), WorkloadHealthy, ProbeHealthy and CustomHealthy, each with its
    /// evidence in the message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

impl InstanceStatus {
    /// When the Instance last entered `state`, if it ever did.
    pub fn entered(&self, state: LifecycleState) -> Option<&Time> {
        self.state_history
            .iter()
            .rev()
            .find(|e| e.state == state)
            .map(|e| &e.entered_at)
    }
}
