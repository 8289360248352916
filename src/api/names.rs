//! The user-facing vocabulary in one place: every label, annotation, finalizer, condition
//! type and reason the operator reads or writes. Users, tests and dashboards depend on these
//! strings; they are fixed by the API contract.

/// The API group of both kinds.
pub const GROUP: &str = "autoheal.dev";

/// Label on Instances and Pods naming their ScalingGroup.
pub const LABEL_GROUP: &str = "autoheal.dev/group";
/// Label on Instances and Pods naming their Instance.
pub const LABEL_INSTANCE: &str = "autoheal.dev/instance";
/// Label on Pods of Instances that are in service (point Services at it); a Pod with nothing
/// but running between its launch and InService carries it from its creation.
pub const LABEL_IN_SERVICE: &str = "autoheal.dev/in-service";
/// Label on Instances naming the revision (the group's `ControllerRevision`) they were
/// launched from.
pub const LABEL_REVISION: &str = "autoheal.dev/revision";

/// `autoheal.dev/health`: `Unhealthy` / `Healthy` (SetInstanceHealth).
pub const ANNOTATION_HEALTH: &str = "autoheal.dev/health";
/// `autoheal.dev/health-reason`: free text copied into the condition message.
pub const ANNOTATION_HEALTH_REASON: &str = "autoheal.dev/health-reason";
/// `autoheal.dev/respect-grace-period`: `"false"` lets a manual Unhealthy act in the grace period.
pub const ANNOTATION_RESPECT_GRACE_PERIOD: &str = "autoheal.dev/respect-grace-period";
/// `autoheal.dev/maintenance`: `"true"` → Maintaining, never replaced.
pub const ANNOTATION_MAINTENANCE: &str = "autoheal.dev/maintenance";
/// `autoheal.dev/standby`: `"true"` → Standby: out of service, health not acted on.
pub const ANNOTATION_STANDBY: &str = "autoheal.dev/standby";
/// `autoheal.dev/paused` on a ScalingGroup: `"true"` reconciles nothing but status.
pub const ANNOTATION_PAUSED: &str = "autoheal.dev/paused";
/// `autoheal.dev/reset-replacement-failures` on a ScalingGroup: setting it to a value not seen
/// before clears the consecutive replacement failure count (and `ReplacementsKeepFailing`).
pub const ANNOTATION_RESET_REPLACEMENT_FAILURES: &str = "autoheal.dev/reset-replacement-failures";
/// `autoheal.dev/refresh` on a ScalingGroup: any value not honoured before starts an instance
/// refresh (the way to start one with `refresh.trigger: Manual`).
pub const ANNOTATION_REFRESH: &str = "autoheal.dev/refresh";
/// `autoheal.dev/cancel-refresh` on a ScalingGroup: any value not honoured before cancels the
/// running instance refresh (or rollback).
pub const ANNOTATION_CANCEL_REFRESH: &str = "autoheal.dev/cancel-refresh";
/// Annotation on a replacement Instance naming the Instance it replaces.
pub const ANNOTATION_REPLACES: &str = "autoheal.dev/replaces";
/// Annotation on an Instance recording the hash of the group template it was launched from.
pub const ANNOTATION_TEMPLATE_HASH: &str = "autoheal.dev/template-hash";
/// Annotation the group sets on an Instance just before deleting it, naming why
/// (a `TerminationReason`); a plain `kubectl delete` leaves it unset.
pub const ANNOTATION_TERMINATION_REASON: &str = "autoheal.dev/termination-reason";
/// Annotation the group sets on an Instance to have its Pod restarted (repair action
/// Restart); each new value is one restart, recorded in the Instance's `status.restart`.
pub const ANNOTATION_RESTART: &str = "autoheal.dev/restart";
/// Prefix of lifecycle hook completion annotations: `hooks.autoheal.dev/<hook>`.
pub const HOOK_PREFIX: &str = "hooks.autoheal.dev/";
/// Suffix of lifecycle hook heartbeat annotations: `hooks.autoheal.dev/<hook>.heartbeat`.
pub const HEARTBEAT_SUFFIX: &str = ".heartbeat";

/// The well-known Node label of its zone (read, never written).
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// Finalizer on every Instance: holds it while the graceful termination path runs.
pub const FINALIZER_INSTANCE: &str = "autoheal.dev/instance-termination";
/// Finalizer on every ScalingGroup: holds a deleted group until its Instances have gone
/// through the graceful termination path.
pub const FINALIZER_GROUP: &str = "autoheal.dev/group-drain";

/// Group condition type: kstatus-compatible readiness of the group.
pub const CONDITION_READY: &str = "Ready";
/// Group condition type: something keeps the group from its desired capacity.
pub const CONDITION_SCALING_LIMITED: &str = "ScalingLimited";
/// Group condition type: whether Unhealthy Instances may be replaced now.
pub const CONDITION_REPLACEMENT_ALLOWED: &str = "ReplacementAllowed";
/// Group condition type: an instance refresh (or its rollback) is running (True), or how the
/// last one ended (False).
pub const CONDITION_REFRESHING: &str = "Refreshing";
/// Group condition type (kstatus): True while the group works towards its desired state
/// (scaling, replacing, an instance refresh or its rollback, draining on deletion); False
/// once it is there or stalled.
pub const CONDITION_RECONCILING: &str = "Reconciling";
/// Reason of `Refreshing=False` (and of its Warning Event) when a refresh failed: its
/// replacements turned Unhealthy during warm-up or bake.
pub const REASON_REFRESH_FAILED: &str = "RefreshFailed";
/// Condition type on both kinds (kstatus): the object cannot progress until a person acts;
/// set with reason `RequestRefused` when the API server keeps refusing the operator's
/// requests for it (RBAC, validation, an admission policy or webhook), and on a group by the
/// group step when it is not Ready and waits on a person (the breaker, failing replacements,
/// a pause or a suspended process), with the reason of what holds it.
pub const CONDITION_STALLED: &str = "Stalled";
/// Instance condition type: the aggregate verdict.
pub const CONDITION_HEALTHY: &str = "Healthy";
/// Instance condition type: the workload signal.
pub const CONDITION_WORKLOAD: &str = "WorkloadHealthy";
/// Instance condition type: the probe signal.
pub const CONDITION_PROBE: &str = "ProbeHealthy";
/// Instance condition type: the custom (annotation) signal.
pub const CONDITION_CUSTOM: &str = "CustomHealthy";
/// Every condition type the health evaluator owns on an Instance.
pub const INSTANCE_HEALTH_CONDITIONS: [&str; 4] = [
    CONDITION_HEALTHY,
    CONDITION_WORKLOAD,
    CONDITION_PROBE,
    CONDITION_CUSTOM,
];

/// Reason of `Stalled` and of its Warning Event: the API server refused a request the
/// operator needs (403, 400 or 422), which retrying cannot fix.
pub const REASON_REQUEST_REFUSED: &str = "RequestRefused";
/// Reason of `Stalled=False` on a group once a refusal streak ends (the group step decides
/// `Stalled` from then on).
pub const REASON_REQUESTS_ACCEPTED: &str = "RequestsAccepted";
/// Reason of the InService state entry that ends a Pod restart (the grace period does not
/// start again from it).
pub const REASON_RESTARTED: &str = "Restarted";
/// Reason of the Pending state entry that starts a Pod restart.
pub const REASON_RESTART: &str = "Restart";
/// Health reason while the Pod a restart replaces is being deleted.
pub const REASON_POD_RESTARTING: &str = "PodRestarting";
/// Event reason of a Warning Event for an annotation value that cannot be understood.
pub const REASON_ANNOTATION_NOT_UNDERSTOOD: &str = "AnnotationNotUnderstood";

/// Reasons of the `ReplacementAllowed` condition and of the replacement Events.
pub mod reason {
    /// Condition True: replacements may proceed.
    pub const ALLOWED: &str = "ReplacementAllowed";
    /// Condition True: replacement is allowed but waits for the backoff after failures.
    pub const BACKING_OFF: &str = "BackingOff";
    /// Condition False: more Instances are Unhealthy than `maxUnhealthy` (circuit breaker).
    pub const TOO_MANY_UNHEALTHY: &str = "TooManyUnhealthy";
    /// Condition False: a process replacement needs is suspended.
    pub const SUSPENDED: &str = "Suspended";
    /// Condition False: the group is paused.
    pub const PAUSED: &str = "Paused";
    /// Condition False: `repair.mode` is DryRun; repairs are planned and listed, not taken.
    pub const DRY_RUN: &str = "DryRun";
    /// Condition False: `maxConsecutiveFailures` replacements in a row failed.
    pub const KEEP_FAILING: &str = "ReplacementsKeepFailing";
    /// Event: an Unhealthy Instance is being replaced.
    pub const REPLACING: &str = "ReplacingUnhealthy";
    /// Event: a surge replacement is ready; the Instance it replaces leaves.
    pub const REPLACEMENT_READY: &str = "ReplacementReady";
    /// Event: a replacement was Unhealthy before its grace period ended well.
    pub const REPLACEMENT_FAILED: &str = "ReplacementFailed";
    /// Event: a replacement is InService and OK after its grace period.
    pub const REPLACEMENT_SUCCEEDED: &str = "ReplacementSucceeded";
    /// Event: the consecutive failure count was cleared (template change or reset annotation).
    pub const FAILURES_RESET: &str = "ReplacementFailuresReset";
    /// Event: an Unhealthy Instance's Pod is being restarted (repair action Restart).
    pub const RESTARTING: &str = "RestartingUnhealthy";
    /// Event: a restarted Instance is Healthy when its restart's timeout ends.
    pub const RESTART_SUCCEEDED: &str = "RestartSucceeded";
    /// Event: a restarted Instance is still Unhealthy when its timeout ends: the next action
    /// follows.
    pub const REPAIR_ESCALATED: &str = "RepairEscalated";
    /// Event (`repair.mode: DryRun`): an Instance would be repaired now; nothing is done.
    pub const WOULD_REPAIR: &str = "WouldRepair";
}
