//! The `ScalingGroup` custom resource: N Instances kept healthy.

// `printcolumn(type_ = ...)` repeats per column by design of kube-derive.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::instance::{HealthDetail, HealthStatus, LifecycleState, PodTemplate};
use super::types::{HookResult, HookTransition};

/// A group of Instances (each backed by a Pod) that autoheal keeps at `desiredCapacity`,
/// health-checks, and repairs.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "autoheal.dev",
    version = "v1alpha1",
    kind = "ScalingGroup",
    plural = "scalinggroups",
    shortname = "sg",
    category = "autoheal",
    namespaced,
    status = "ScalingGroupStatus",
    doc = "A ScalingGroup keeps desiredCapacity Instances (each backed by a Pod), merges their health signals, and replaces unhealthy ones within its safety limits.",
    scale(
        spec_replicas_path = ".spec.desiredCapacity",
        status_replicas_path = ".status.currentCapacity",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredCapacity",
        description = "Instances the group aims to keep"
    ),
    printcolumn(
        name = "Current",
        type_ = "integer",
        json_path = ".status.currentCapacity",
        description = "Instances that count toward capacity"
    ),
    printcolumn(
        name = "InService",
        type_ = "integer",
        json_path = ".status.inServiceInstances",
        description = "Instances in service"
    ),
    printcolumn(
        name = "Healthy",
        type_ = "integer",
        json_path = ".status.healthyInstances",
        description = "Instances whose health status is Healthy"
    ),
    printcolumn(
        name = "Unhealthy",
        type_ = "integer",
        json_path = ".status.unhealthyInstances",
        description = "Instances whose health status is Unhealthy"
    ),
    printcolumn(
        name = "UpToDate",
        type_ = "integer",
        json_path = ".status.updatedInstances",
        description = "Instances on the group's current revision"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = Rule::new("size(self.metadata.name) <= 57").message("ScalingGroup names must be at most 57 characters (Instance names add 6 and must fit a 63-character label value)")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minSize <= self.maxSize").message("minSize must be <= maxSize"))]
#[x_kube(validation = Rule::new("!has(self.desiredCapacity) || self.desiredCapacity >= self.minSize").message("desiredCapacity must be >= minSize"))]
#[x_kube(validation = Rule::new("!has(self.desiredCapacity) || self.desiredCapacity <= self.maxSize").message("desiredCapacity must be <= maxSize"))]
pub struct ScalingGroupSpec {
    /// The fewest Instances the group may have; `desiredCapacity` (and `kubectl scale`) below it
    /// is refused.
    #[schemars(range(min = 0, max = 10000))]
    pub min_size: i32,
    /// The most Instances the group may have (a LaunchBeforeTerminate replacement may add one
    /// surge Instance on top, within maxInFlight).
    #[schemars(range(min = 0, max = 10000))]
    pub max_size: i32,
    /// How many Instances the group keeps; `kubectl scale sg/NAME --replicas=N` sets it.
    /// Must lie within [minSize, maxSize]. Defaults to minSize when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub desired_capacity: Option<i32>,
    /// The template each new Instance is created from. Each distinct template is a revision
    /// (a ControllerRevision owned by the group); a change is rolled out to the running
    /// Instances by an instance refresh (see `refresh`).
    pub template: InstanceTemplate,
    /// How many revisions (ControllerRevisions) of the template are kept besides the current
    /// one; a revision an Instance still runs, or a running refresh needs, is never deleted.
    #[serde(default = "default_revision_history_limit")]
    #[schemars(range(min = 0, max = 1000))]
    pub revision_history_limit: i32,
    /// How Instance health is determined: grace periods, the active probe, and condition rules.
    #[serde(default)]
    pub health_check: HealthCheck,
    /// The safety limits for replacing unhealthy Instances.
    #[serde(default)]
    pub replacement: Replacement,
    /// Hooks that hold an Instance in Pending:Wait or Terminating:Wait until completed with the
    /// annotation `hooks.autoheal.dev/<name>=Continue|Abandon` or until their heartbeat timeout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(h, self.exists_one(g, g.name == h.name))").message("lifecycle hook names must be unique"))]
    pub lifecycle_hooks: Vec<LifecycleHook>,
    /// How a template change is rolled out to running Instances (instance refresh).
    #[serde(default)]
    pub refresh: Refresh,
    /// How Unhealthy Instances are repaired: the escalation of actions, and dry run.
    #[serde(default)]
    pub repair: Repair,
    /// Instances older than this many seconds (30 or more) are replaced, oldest first, within
    /// the refresh band (`refresh.minHealthyPercentage`, `maxHealthyPercentage`, warm-up and
    /// policies) while no refresh runs, as AWS's maximum instance lifetime. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30, max = 31536000))]
    pub max_instance_lifetime_seconds: Option<i64>,
    /// Which Instances are terminated first when the group scales in.
    #[serde(default)]
    pub scale_in: ScaleIn,
    /// Processes that are suspended (AWS suspend/resume): Launch, Terminate, HealthCheck,
    /// ReplaceUnhealthy, AddToService.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q == p))").message("suspendedProcesses must not repeat a process"))]
    pub suspended_processes: Vec<Process>,
}

fn default_revision_history_limit() -> i32 {
    10
}

impl ScalingGroupSpec {
    /// The capacity the group aims for: `desiredCapacity`, or `minSize` when unset,
    /// clamped to `[minSize, maxSize]`.
    pub fn effective_desired(&self) -> i32 {
        self.desired_capacity
            .unwrap_or(self.min_size)
            .clamp(self.min_size, self.max_size.max(self.min_size))
    }

    /// Whether `process` is listed in `suspendedProcesses`.
    pub fn is_suspended(&self, process: Process) -> bool {
        self.suspended_processes.contains(&process)
    }
}

/// The template each Instance is created from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct InstanceTemplate {
    /// Labels and annotations copied onto every new Instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// The Instance spec: its Pod template.
    pub spec: InstanceTemplateSpec,
}

/// Labels and annotations for new Instances.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels added to each new Instance and its Pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to each new Instance.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What each new Instance runs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct InstanceTemplateSpec {
    /// The PodTemplateSpec (metadata and spec) of the Pod backing each Instance.
    pub pod_template: PodTemplate,
}

/// How the health of each Instance is determined.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// Seconds after an Instance enters InService during which no health verdict replaces it
    /// (a manual Unhealthy with `autoheal.dev/respect-grace-period=false` still acts).
    #[serde(default = "default_grace_period_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub grace_period_seconds: i32,
    /// Seconds an Instance may stay Pending (image pull failure, unschedulable) before it is
    /// Impaired.
    #[serde(default = "default_startup_timeout_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub startup_timeout_seconds: i32,
    /// The active check autoheal runs against each Instance's address: exactly one of `http`
    /// or `tcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
    /// Conditions on the Pod or the Instance that make it Impaired once they have held for
    /// `forSeconds` (as Cluster API's MachineHealthCheck).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub unhealthy_conditions: Vec<UnhealthyCondition>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            grace_period_seconds: default_grace_period_seconds(),
            startup_timeout_seconds: default_startup_timeout_seconds(),
            probe: None,
            unhealthy_conditions: Vec::new(),
        }
    }
}

fn default_grace_period_seconds() -> i32 {
    300
}
fn default_startup_timeout_seconds() -> i32 {
    600
}

/// An active health check run by autoheal against `status.address:port`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.http) != has(self.tcp)").message("exactly one of probe.http or probe.tcp must be set"))]
#[x_kube(validation = Rule::new("self.timeoutSeconds <= self.intervalSeconds").message("probe timeoutSeconds must be <= intervalSeconds"))]
pub struct Probe {
    /// An HTTP GET check: healthy when the response status is in `expectedStatuses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// A TCP check: healthy when a connection can be opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    /// Seconds between two probes of one Instance (1-300).
    #[serde(default = "default_interval_seconds")]
    #[schemars(range(min = 1, max = 300))]
    pub interval_seconds: i32,
    /// Seconds to wait for an answer before the probe counts as failed (1-120).
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 120))]
    pub timeout_seconds: i32,
    /// Consecutive successes that make an Instance's probe verdict healthy (1-10).
    #[serde(default = "default_healthy_threshold")]
    #[schemars(range(min = 1, max = 10))]
    pub healthy_threshold: i32,
    /// Consecutive failures that make an Instance's probe verdict unhealthy (1-10).
    #[serde(default = "default_unhealthy_threshold")]
    #[schemars(range(min = 1, max = 10))]
    pub unhealthy_threshold: i32,
}

fn default_interval_seconds() -> i32 {
    10
}
fn default_timeout_seconds() -> i32 {
    2
}
fn default_healthy_threshold() -> i32 {
    2
}
fn default_unhealthy_threshold() -> i32 {
    3
}

/// An HTTP GET health check.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpProbe {
    /// The port on the Instance's address (1-65535).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The request path; must start with "/".
    #[serde(default = "default_path")]
    #[schemars(length(min = 1, max = 1024), pattern(r"^/"))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("probe.http.path must start with \"/\""))]
    pub path: String,
    /// HTTP or HTTPS (certificates are not verified).
    #[serde(default)]
    pub scheme: Scheme,
    /// Status codes that count as healthy: a comma-separated list of codes and ranges, such as
    /// "200-399" or "200,204,300-308".
    #[serde(default = "default_expected_statuses")]
    #[schemars(length(min = 3, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[1-5][0-9][0-9](-[1-5][0-9][0-9])?(,[1-5][0-9][0-9](-[1-5][0-9][0-9])?)*$')").message("probe.http.expectedStatuses must be status codes or ranges such as \"200-399\" or \"200,204\""))]
    pub expected_statuses: String,
}

fn default_path() -> String {
    "/".into()
}
fn default_expected_statuses() -> String {
    "200-399".into()
}

/// The scheme of an HTTP probe.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scheme {
    /// Plain HTTP.
    #[default]
    #[serde(rename = "HTTP")]
    Http,
    /// HTTP over TLS, certificate not verified.
    #[serde(rename = "HTTPS")]
    Https,
}

/// A TCP connect health check.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TcpProbe {
    /// The port on the Instance's address (1-65535).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// A condition that, once it has held long enough, makes an Instance Impaired.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UnhealthyCondition {
    /// The condition type, matched on the Pod's and the Instance's conditions (e.g. "Ready").
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,
    /// The condition status that counts as unhealthy: True, False or Unknown.
    pub status: ConditionStatus,
    /// Seconds the condition must have held (since its lastTransitionTime) before it counts.
    #[serde(default)]
    #[schemars(range(min = 0, max = 86400))]
    pub for_seconds: i32,
}

/// A Kubernetes condition status.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// It is not known whether the condition holds.
    Unknown,
}

impl ConditionStatus {
    /// The status as written in a condition (`"True"`, `"False"`, `"Unknown"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// The safety limits for replacing unhealthy Instances.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Replacement {
    /// When more Instances than this are Unhealthy, nothing is replaced (circuit breaker).
    /// An integer or a percentage of desiredCapacity such as "40%".
    #[serde(default = "default_max_unhealthy")]
    #[x_kube(validation = Rule::new(INT_OR_PERCENT_RULE).message("maxUnhealthy must be an integer from 0 to 10000 or a percentage from 0% to 100%"))]
    pub max_unhealthy: IntOrString,
    /// How many Instances may be replaced at once: an integer or a percentage of
    /// desiredCapacity (rounded up, at least 1).
    #[serde(default = "default_max_in_flight")]
    #[x_kube(validation = Rule::new(INT_OR_PERCENT_RULE).message("maxInFlight must be an integer from 0 to 10000 or a percentage from 0% to 100%"))]
    pub max_in_flight: IntOrString,
    /// TerminateThenLaunch (the replacement is launched when the old Instance starts
    /// Terminating) or LaunchBeforeTerminate (the replacement is InService before the old one
    /// leaves service).
    #[serde(default)]
    pub strategy: ReplacementStrategy,
    /// Replacement never takes InService+Healthy Instances below this percentage of
    /// desiredCapacity (0-100).
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub min_healthy_percentage: i32,
    /// Seconds between an Instance leaving service (its Pod loses the
    /// `autoheal.dev/in-service` label) and its termination, as ELB connection draining.
    #[serde(default = "default_deregistration_delay_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub deregistration_delay_seconds: i32,
    /// Replacements in a row that are still Unhealthy when their grace period ends before
    /// replacement stops with ReplacementsKeepFailing (with exponential backoff before that).
    #[serde(default = "default_max_consecutive_failures")]
    #[schemars(range(min = 1, max = 100))]
    pub max_consecutive_failures: i32,
}

/// CEL rule shared by the int-or-percent fields. The integer is bounded as maxSize is: the
/// schema alone would store any int64, which no client's int-or-string (32 bits) can read, and
/// one such group broke the operator's ScalingGroup watch (found by tests/chaos.rs).
pub const INT_OR_PERCENT_RULE: &str =
    "type(self) == int ? self >= 0 && self <= 10000 : self.matches('^(100|[1-9]?[0-9])%$')";

impl Default for Replacement {
    fn default() -> Self {
        Self {
            max_unhealthy: default_max_unhealthy(),
            max_in_flight: default_max_in_flight(),
            strategy: ReplacementStrategy::default(),
            min_healthy_percentage: 0,
            deregistration_delay_seconds: default_deregistration_delay_seconds(),
            max_consecutive_failures: default_max_consecutive_failures(),
        }
    }
}

fn default_max_unhealthy() -> IntOrString {
    IntOrString::String("100%".into())
}
fn default_max_in_flight() -> IntOrString {
    IntOrString::Int(1)
}
fn default_deregistration_delay_seconds() -> i32 {
    30
}
fn default_max_consecutive_failures() -> i32 {
    3
}

/// How an unhealthy Instance is replaced.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReplacementStrategy {
    /// The old Instance starts Terminating and its replacement is launched at once.
    #[default]
    TerminateThenLaunch,
    /// The replacement is launched first and is InService before the old one leaves service.
    LaunchBeforeTerminate,
}

/// How Unhealthy Instances are repaired (Azure VMSS automatic repairs, Medik8s
/// NodeHealthCheck escalation): the actions tried in order, and whether they are taken at all.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Repair {
    /// The actions tried in order on an Unhealthy Instance. A `Restart` that leaves the
    /// Instance Unhealthy `timeoutSeconds` after its new Pod runs escalates to the next action.
    /// The list ends with `Replace`, its only `Replace`.
    #[serde(default = "default_repair_actions")]
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(validation = Rule::new("self[size(self) - 1].action == 'Replace' && self.exists_one(a, a.action == 'Replace')").message("repair.actions must end with Replace, named once (a Restart that does not help escalates to it; nothing comes after it)"))]
    pub actions: Vec<RepairStep>,
    /// `Auto` (default) acts; `DryRun` evaluates and plans everything, lists the Instances it
    /// would repair in `status.wouldRepair` and acts on nothing.
    #[serde(default)]
    pub mode: RepairMode,
}

impl Default for Repair {
    fn default() -> Self {
        Self {
            actions: default_repair_actions(),
            mode: RepairMode::default(),
        }
    }
}

fn default_repair_actions() -> Vec<RepairStep> {
    vec![RepairStep {
        action: RepairAction::Replace,
        timeout_seconds: None,
    }]
}

/// One repair action and how long it is given.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.action != 'Replace' || !has(self.timeoutSeconds)").message("repair.actions: timeoutSeconds applies to Restart only (a replacement is judged by its grace period)"))]
pub struct RepairStep {
    /// Restart (recreate the Instance's Pod in place) or Replace (terminate the Instance and
    /// launch a new one).
    pub action: RepairAction,
    /// For Restart: seconds after the new Pod runs before an Instance still Unhealthy is
    /// escalated to the next action (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: Option<i32>,
}

/// The seconds a Restart is given when `timeoutSeconds` is not set.
pub const DEFAULT_RESTART_TIMEOUT_SECONDS: i32 = 60;

impl RepairStep {
    /// The time given to this action before escalation.
    pub fn timeout_seconds(&self) -> i32 {
        self.timeout_seconds
            .unwrap_or(DEFAULT_RESTART_TIMEOUT_SECONDS)
    }
}

/// A repair action.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RepairAction {
    /// Recreate the Instance's Pod in place: same Instance, name, revision and protection; the
    /// Pod leaves service first and its deletion honours its grace period.
    Restart,
    /// Terminate the Instance through the graceful path and launch a replacement.
    Replace,
}

impl RepairAction {
    /// The action's name as written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restart => "Restart",
            Self::Replace => "Replace",
        }
    }
}

/// Whether repairs are taken.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RepairMode {
    /// Repair Unhealthy Instances.
    #[default]
    Auto,
    /// Plan repairs and report them (`status.wouldRepair`, `WouldRepair` Events), act on
    /// nothing.
    DryRun,
}

/// How a template change is rolled out to the running Instances: an instance refresh replaces
/// the Instances not on the target revision, oldest first, through the graceful termination
/// path, within a band of healthy capacity (AWS instance refresh; Deployment rolling update).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.maxHealthyPercentage - self.minHealthyPercentage <= 100").message("refresh.maxHealthyPercentage minus refresh.minHealthyPercentage must be at most 100"))]
pub struct Refresh {
    /// OnTemplateChange (default, as Deployments): a change of `spec.template` starts a
    /// refresh. Manual (as AWS): a refresh starts only when the group annotation
    /// `autoheal.dev/refresh` is set to a value not used before.
    #[serde(default)]
    pub trigger: RefreshTrigger,
    /// During a refresh, InService+Healthy Instances (replacements only once warmed up) never
    /// drop below this percentage of desiredCapacity, rounded up (0-100). At least one
    /// Instance is always being replaced, so 100 with maxHealthyPercentage 100 replaces one at
    /// a time.
    #[serde(default = "default_refresh_min_healthy")]
    #[schemars(range(min = 0, max = 100))]
    pub min_healthy_percentage: i32,
    /// During a refresh, Instances counting toward capacity never exceed this percentage of
    /// desiredCapacity, rounded down (100-200). Above 100 replacements are launched before
    /// old Instances terminate (surge).
    #[serde(default = "default_refresh_max_healthy")]
    #[schemars(range(min = 100, max = 200))]
    pub max_healthy_percentage: i32,
    /// Seconds a replacement must have been InService and Healthy (detail OK) before it
    /// counts as done and as healthy capacity. Defaults to healthCheck.gracePeriodSeconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub instance_warmup_seconds: Option<i32>,
    /// Percentages of the refresh (ascending, 1-100) at which it pauses for
    /// `checkpointDelaySeconds`, e.g. [20, 50].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    #[x_kube(validation = Rule::new("self.all(c, c >= 1 && c <= 100)").message("refresh.checkpoints must be percentages from 1 to 100"))]
    #[x_kube(validation = Rule::new("self.isSorted() && self.all(c, self.exists_one(d, d == c))").message("refresh.checkpoints must be strictly ascending"))]
    pub checkpoints: Vec<i32>,
    /// Seconds the refresh waits at each checkpoint (0-172800).
    #[serde(default = "default_checkpoint_delay")]
    #[schemars(range(min = 0, max = 172800))]
    pub checkpoint_delay_seconds: i32,
    /// Seconds after the last replacement is warmed up during which the refresh is Baking:
    /// a replacement turning Unhealthy then still fails it (0-172800).
    #[serde(default)]
    #[schemars(range(min = 0, max = 172800))]
    pub bake_time_seconds: i32,
    /// Instances already on the target revision are not replaced (default true).
    #[serde(default = "default_true")]
    pub skip_matching: bool,
    /// When the refresh fails, roll back to the previous revision the same way (default
    /// true); the group then launches from the previous revision until spec.template changes.
    #[serde(default = "default_true")]
    pub auto_rollback: bool,
    /// What the refresh does with Instances in Standby: Ignore (leave them, default),
    /// Terminate (replace them), Wait (the refresh does not finish while any is in Standby).
    #[serde(default)]
    pub standby_instances: StandbyPolicy,
    /// What the refresh does with Instances protected from scale-in: Ignore (leave them,
    /// default), Refresh (replace them like the others), Wait (the refresh does not finish
    /// while any is protected and not on the target).
    #[serde(default)]
    pub protected_instances: ProtectedPolicy,
}

impl Default for Refresh {
    fn default() -> Self {
        Self {
            trigger: RefreshTrigger::default(),
            min_healthy_percentage: default_refresh_min_healthy(),
            max_healthy_percentage: default_refresh_max_healthy(),
            instance_warmup_seconds: None,
            checkpoints: Vec::new(),
            checkpoint_delay_seconds: default_checkpoint_delay(),
            bake_time_seconds: 0,
            skip_matching: true,
            auto_rollback: true,
            standby_instances: StandbyPolicy::default(),
            protected_instances: ProtectedPolicy::default(),
        }
    }
}

fn default_refresh_min_healthy() -> i32 {
    90
}
fn default_refresh_max_healthy() -> i32 {
    100
}
fn default_checkpoint_delay() -> i32 {
    3600
}
fn default_true() -> bool {
    true
}

/// What starts an instance refresh.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RefreshTrigger {
    /// A change of spec.template.
    #[default]
    OnTemplateChange,
    /// Only the annotation `autoheal.dev/refresh=<new value>`.
    Manual,
}

/// What a refresh does with Instances in Standby.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StandbyPolicy {
    /// Leave them on their revision.
    #[default]
    Ignore,
    /// Replace them.
    Terminate,
    /// Do not finish while one is in Standby and not on the target.
    Wait,
}

/// What a refresh does with Instances protected from scale-in.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ProtectedPolicy {
    /// Leave them on their revision.
    #[default]
    Ignore,
    /// Replace them like the others.
    Refresh,
    /// Do not finish while one is protected and not on the target.
    Wait,
}

/// Where an instance refresh stands (AWS instance refresh statuses).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshState {
    /// Requested; waiting to start (the group is paused or a process it needs is suspended).
    Pending,
    /// Replacing Instances.
    InProgress,
    /// Every Instance is replaced and warmed up; watching them for bakeTimeSeconds.
    Baking,
    /// Done.
    Successful,
    /// A replacement turned Unhealthy; not rolled back (autoRollback false).
    Failed,
    /// Cancelled; replacements in flight finish, nothing new starts.
    Cancelling,
    /// Cancelled; the Instances already replaced stay.
    Cancelled,
    /// Failed; rolling back to the previous revision.
    RollbackInProgress,
    /// Rolled back: every Instance is on the previous revision again.
    RollbackSuccessful,
    /// The rollback itself failed (an Instance of the previous revision turned Unhealthy).
    RollbackFailed,
}

impl RefreshState {
    /// The name as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::InProgress => "InProgress",
            Self::Baking => "Baking",
            Self::Successful => "Successful",
            Self::Failed => "Failed",
            Self::Cancelling => "Cancelling",
            Self::Cancelled => "Cancelled",
            Self::RollbackInProgress => "RollbackInProgress",
            Self::RollbackSuccessful => "RollbackSuccessful",
            Self::RollbackFailed => "RollbackFailed",
        }
    }

    /// Whether the refresh (or its rollback) is still running.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            Self::Pending
                | Self::InProgress
                | Self::Baking
                | Self::Cancelling
                | Self::RollbackInProgress
        )
    }

    /// Whether the group is (or stays) rolled back to the previous revision.
    pub fn is_rollback(self) -> bool {
        matches!(
            self,
            Self::RollbackInProgress | Self::RollbackSuccessful | Self::RollbackFailed
        )
    }
}

/// The last (or running) instance refresh of a group.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RefreshStatus {
    /// Pending, InProgress, Baking, Successful, Failed, Cancelling, Cancelled,
    /// RollbackInProgress, RollbackSuccessful or RollbackFailed.
    pub status: RefreshState,
    /// The revision (ControllerRevision name) the refresh rolls out.
    pub target_revision: String,
    /// The revision most Instances ran before; a rollback returns to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_revision: Option<String>,
    /// Percentage of the Instances on the target revision and warmed up (never decreases
    /// during one refresh).
    #[serde(default)]
    pub percentage_complete: i32,
    /// Instances still to replace.
    #[serde(default)]
    pub instances_to_update: i32,
    /// When the refresh started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// Where it stands, for people (e.g. "waiting at checkpoint 50% until 12:03:10Z").
    #[serde(default)]
    pub message: String,
    /// The highest checkpoint reached; the refresh waits there until `checkpointUntil`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<i32>,
    /// When the wait at `checkpoint` ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_until: Option<Time>,
    /// When the bake (Baking) ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_until: Option<Time>,
    /// The Instances whose failure failed the refresh, with their evidence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub failed_instances: Vec<String>,
    /// The last `autoheal.dev/refresh` value honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// The last `autoheal.dev/cancel-refresh` value honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_request: Option<String>,
}

/// A lifecycle hook: holds Instances at a transition until completed or timed out.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleHook {
    /// The hook name, used in the annotation `hooks.autoheal.dev/<name>`.
    #[schemars(length(min = 1, max = 53))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')").message("lifecycle hook name must be alphanumeric, '-', '_' or '.', starting and ending with an alphanumeric character"))]
    pub name: String,
    /// Launch (Pending:Wait) or Terminate (Terminating:Wait).
    pub transition: HookTransition,
    /// Seconds without completion or heartbeat after which `defaultResult` applies (30-7200).
    #[serde(default = "default_heartbeat_timeout_seconds")]
    #[schemars(range(min = 30, max = 7200))]
    pub heartbeat_timeout_seconds: i32,
    /// What happens on timeout: Continue, or Abandon (a Launch hook then terminates and
    /// relaunches the Instance).
    #[serde(default)]
    pub default_result: HookResult,
}

fn default_heartbeat_timeout_seconds() -> i32 {
    3600
}

/// How Instances are chosen on scale-in.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScaleIn {
    /// OldestInstance, NewestInstance, or Default (unhealthy first, then oldest).
    /// Instances protected from scale-in are never chosen.
    #[serde(default)]
    pub policy: ScaleInPolicy,
}

/// Which Instance goes first on scale-in.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ScaleInPolicy {
    /// Unhealthy first, then the oldest.
    #[default]
    Default,
    /// The oldest first.
    OldestInstance,
    /// The newest first.
    NewestInstance,
}

/// A process of the group that can be suspended.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum Process {
    /// Launching new Instances (scale-out and replacements).
    Launch,
    /// Terminating Instances (scale-in and replacements).
    Terminate,
    /// Acting on health verdicts (verdicts are still computed and shown, as NotApplicable).
    HealthCheck,
    /// Replacing Unhealthy Instances.
    ReplaceUnhealthy,
    /// Adding Instances to service (the `autoheal.dev/in-service` Pod label).
    AddToService,
}

/// The observed state of a ScalingGroup.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScalingGroupStatus {
    /// The spec generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The label selector of the group's Pods and Instances (scale subresource, HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The capacity the group aims for (desiredCapacity, or minSize when unset).
    #[serde(default)]
    pub desired_capacity: i32,
    /// Instances that count toward capacity: every state before Terminating, Standby included.
    #[serde(default)]
    pub current_capacity: i32,
    /// Instances in the InService state.
    #[serde(default)]
    pub in_service_instances: i32,
    /// Instances whose healthStatus is Healthy.
    #[serde(default)]
    pub healthy_instances: i32,
    /// Instances whose healthStatus is Unhealthy.
    #[serde(default)]
    pub unhealthy_instances: i32,
    /// The revision (ControllerRevision name) new Instances are launched from: the one of
    /// `spec.template`, or the previous one after an automatic rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// Instances counting toward capacity that run `currentRevision`.
    #[serde(default)]
    pub updated_instances: i32,
    /// The last (or running) instance refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshStatus>,
    /// The group's Instances (all of them up to 256; beyond that only those not
    /// InService+Healthy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceSummary>,
    /// How many Instances were left out of `instances` (only when there are more than 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omitted_instances: Option<i32>,
    /// Replacements in a row that were Unhealthy when their grace period ended.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_replacement_failures: i32,
    /// When the last replacement was launched (the base of the exponential backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_replacement_time: Option<Time>,
    /// The template hash that the failure count applies to; a template change resets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_template_hash: Option<String>,
    /// Replacement Instances (still present) whose outcome was already counted, so that a
    /// failure is counted exactly once, even across operator restarts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000))]
    pub judged_replacements: Vec<String>,
    /// The replacements of the current run of consecutive failures, most recent last (at most
    /// 16), named in the ReplacementsKeepFailing message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub recent_replacement_failures: Vec<String>,
    /// The last value of the `autoheal.dev/reset-replacement-failures` annotation that was
    /// honoured (setting the annotation to any other value clears the failure count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement_failures_reset: Option<String>,
    /// In `repair.mode: DryRun`: the repairs that would be taken now, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub would_repair: Vec<WouldRepair>,
    /// The remediation history, newest first (at most 50): every repair taken, with its
    /// outcome. An entry `InProgress` is also the record that makes a repair crash-proof.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub remediations: Vec<Remediation>,
    /// Ready (kstatus), ReplacementAllowed and ScalingLimited.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// A repair `repair.mode: DryRun` would take now.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WouldRepair {
    /// The Unhealthy Instance.
    pub instance: String,
    /// The action that would be taken.
    pub action: RepairAction,
    /// Why: the verdict's evidence.
    pub reason: String,
}

/// How a remediation ended.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemediationOutcome {
    /// Still running.
    InProgress,
    /// The Instance is Healthy again (Restart), or its replacement is InService and Healthy
    /// (Replace).
    Succeeded,
    /// The replacement was Unhealthy before its grace period ended.
    Failed,
    /// The Instance was still Unhealthy when the action's timeout ended: the next action
    /// followed.
    Escalated,
    /// The Instance left before the outcome was known (scaled in, deleted, group paused).
    Abandoned,
}

/// One repair in the group's remediation history.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Remediation {
    /// The Instance repaired.
    pub instance: String,
    /// The action taken.
    pub action: RepairAction,
    /// Which entry of `repair.actions` it was (0 for the first).
    #[serde(default)]
    pub step: i32,
    /// Why: the verdict's reason and evidence.
    pub reason: String,
    /// When it started.
    pub started: Time,
    /// When the outcome became known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Time>,
    /// InProgress, Succeeded, Failed, Escalated or Abandoned.
    pub outcome: RemediationOutcome,
    /// The replacement Instance (Replace), once launched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// When the Instance's Unhealthy verdict was given (the start of the repair clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected: Option<Time>,
    /// When the group was next back at its desired capacity with every Instance InService and
    /// Healthy after this remediation ended (the end of the repair clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<Time>,
}

/// One Instance as summarised in the group's status.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSummary {
    /// The Instance name.
    pub name: String,
    /// Its lifecycle state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_state: Option<LifecycleState>,
    /// Healthy or Unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<HealthStatus>,
    /// The detailed health code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_detail: Option<HealthDetail>,
    /// Whether scale-in skips this Instance.
    #[serde(default)]
    pub protected_from_scale_in: bool,
    /// The Node its Pod runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The zone of that Node (`topology.kubernetes.io/zone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The template revision it runs (a ControllerRevision name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}
