//! Unit tests of the pure evaluator: every detail code, every boundary, the precedence table.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, Node,
    NodeCondition, NodeStatus, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use proptest::prelude::*;

use super::*;
use crate::api::conditions::settle;
use crate::api::names as ann;
use crate::api::{
    ConditionStatus, HttpProbe, InstanceSpec, InstanceStatus, PodTemplate, Probe, Scheme,
    StateEntry,
};
use crate::api::{WatchedPod, WatchedPodSpec};

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

/// An Instance created at t(0), Pending at t(0), InService at t(100) when `in_service`.
struct Fixture {
    instance: Instance,
    pod: Option<WatchedPod>,
    node: Option<Node>,
    probe: Option<ProbeVerdict>,
    config: HealthCheck,
    suspended: bool,
}

fn fixture() -> Fixture {
    let instance = Instance {
        metadata: ObjectMeta {
            name: Some("web-abcde".into()),
            namespace: Some("ns".into()),
            creation_timestamp: Some(Time(t(0))),
            ..Default::default()
        },
        spec: InstanceSpec {
            group_name: "web".into(),
            protected_from_scale_in: false,
            pod_template: PodTemplate::default(),
        },
        status: Some(InstanceStatus {
            lifecycle_state: Some(LifecycleState::InService),
            state_history: vec![
                StateEntry {
                    state: LifecycleState::Pending,
                    entered_at: Time(t(0)),
                    reason: None,
                },
                StateEntry {
                    state: LifecycleState::InService,
                    entered_at: Time(t(100)),
                    reason: None,
                },
            ],
            ..Default::default()
        }),
    };
    Fixture {
        instance,
        pod: Some(pod("Running")),
        node: Some(node("True")),
        probe: None,
        config: HealthCheck {
            grace_period_seconds: 60,
            startup_timeout_seconds: 300,
            probe: None,
            unhealthy_conditions: vec![],
        },
        suspended: false,
    }
}

fn pod(phase: &str) -> WatchedPod {
    WatchedPod {
        metadata: ObjectMeta {
            name: Some("web-abcde".into()),
            creation_timestamp: Some(Time(t(1))),
            ..Default::default()
        },
        spec: Some(WatchedPodSpec {
            node_name: Some("node-0".into()),
            ..Default::default()
        }),
        status: Some(
            PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }
            .into(),
        ),
    }
}

fn node(ready: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some("node-0".into()),
            ..Default::default()
        },
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: ready.into(),
                reason: Some("KubeletStoppedPosting".into()),
                message: Some("Kubelet stopped posting node status.".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn http_probe() -> Probe {
    Probe {
        http: Some(HttpProbe {
            port: 8080,
            path: "/healthz".into(),
            scheme: Scheme::Http,
            expected_statuses: "200-399".into(),
        }),
        tcp: None,
        interval_seconds: 1,
        timeout_seconds: 1,
        healthy_threshold: 2,
        unhealthy_threshold: 3,
    }
}

fn verdict(
    healthy: Option<bool>,
    failures: u32,
    class: Option<ResultClass>,
    msg: &str,
) -> ProbeVerdict {
    ProbeVerdict {
        healthy,
        consecutive_failures: failures,
        consecutive_successes: if failures == 0 { 2 } else { 0 },
        message: msg.into(),
        failure: class,
        unhealthy_threshold: 3,
        healthy_threshold: 2,
    }
}

const FAIL_MSG: &str = "HTTP 503 from 127.0.1.5:8080/healthz, 3 consecutive failures";

impl Fixture {
    fn annotate(mut self, pairs: &[(&str, &str)]) -> Self {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.instance.metadata.annotations = Some(map);
        self
    }
    fn state(mut self, state: LifecycleState) -> Self {
        self.instance.status.as_mut().unwrap().lifecycle_state = Some(state);
        self
    }
    fn pending(mut self) -> Self {
        let st = self.instance.status.as_mut().unwrap();
        st.lifecycle_state = Some(LifecycleState::Pending);
        st.state_history.truncate(1);
        self.pod = Some(pod("Pending"));
        self
    }
    fn probe_ok(mut self) -> Self {
        self.config.probe = Some(http_probe());
        self.probe = Some(verdict(
            Some(true),
            0,
            None,
            "HTTP 200 from 127.0.1.5:8080/healthz, 2 consecutive successes",
        ));
        self
    }
    fn probe_failing(mut self) -> Self {
        self.config.probe = Some(http_probe());
        self.probe = Some(verdict(
            Some(false),
            3,
            Some(ResultClass::HttpStatus),
            FAIL_MSG,
        ));
        self
    }
    fn assess(&self, now: Timestamp) -> Verdict {
        assess(
            &HealthInputs {
                instance: &self.instance,
                pod: self.pod.as_ref(),
                node: self.node.as_ref(),
                probe: self.probe.as_ref(),
                config: &self.config,
                health_check_suspended: self.suspended,
            },
            now,
        )
    }
}

fn cond<'a>(v: &'a Verdict, type_: &str) -> &'a DesiredCondition {
    v.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {v:#?}"))
}

fn is(v: &Verdict, status: HealthStatus, detail: HealthDetail) {
    assert_eq!((v.status, v.detail), (status, detail), "{v:#?}");
}

const AFTER_GRACE: i64 = 1000;

// ---- every detail code -------------------------------------------------------------------

#[test]
fn ok_when_every_signal_passes() {
    let v = fixture().probe_ok().assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Healthy, HealthDetail::OK);
    let types: Vec<&str> = v.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        [
            "Healthy",
            "WorkloadHealthy",
            "ProbeHealthy",
            "CustomHealthy"
        ]
    );
    assert!(v.conditions.iter().all(|c| c.status == "True"), "{v:#?}");
    assert_eq!(
        cond(&v, "WorkloadHealthy").message,
        "Pod web-abcde Running on Node node-0"
    );
    assert_eq!(cond(&v, "ProbeHealthy").reason, "Passing");
    assert!(v.warnings.is_empty());
    assert_eq!(v.recheck_at, None);
}

#[test]
fn ok_without_a_probe() {
    let v = fixture().assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Healthy, HealthDetail::OK);
    assert_eq!(cond(&v, "ProbeHealthy").reason, "NotConfigured");
}

#[test]
fn impaired_by_the_probe_with_its_evidence() {
    let v = fixture().probe_failing().assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Unhealthy, HealthDetail::Impaired);
    let p = cond(&v, "ProbeHealthy");
    assert_eq!((p.status, p.reason.as_str()), ("False", "UnexpectedStatus"));
    assert_eq!(p.message, FAIL_MSG);
    let h = cond(&v, "Healthy");
    assert_eq!((h.status, h.reason.as_str()), ("False", "ProbeFailed"));
    assert_eq!(h.message, format!("probe: {FAIL_MSG}"));
    assert_eq!(v.reason, "ProbeFailed");
}

#[test]
fn probe_failure_classes_become_condition_reasons() {
    for (class, reason) in [
        (ResultClass::Timeout, "Timeout"),
        (ResultClass::Refused, "ConnectionRefused"),
        (ResultClass::Reset, "ConnectionReset"),
        (ResultClass::Error, "ProbeError"),
        (ResultClass::HttpStatus, "UnexpectedStatus"),
    ] {
        let mut f = fixture().probe_failing();
        f.probe = Some(verdict(Some(false), 3, Some(class), "evidence"));
        let v = f.assess(t(AFTER_GRACE));
        is(&v, HealthStatus::Unhealthy, HealthDetail::Impaired);
        assert_eq!(cond(&v, "ProbeHealthy").reason, reason);
    }
}

#[test]
fn warning_when_the_probe_fails_below_its_threshold() {
    let mut f = fixture().probe_ok();
    f.probe = Some(verdict(
        Some(true),
        1,
        Some(ResultClass::Timeout),
        "timeout after 1s waiting for 127.0.1.5:8080/healthz, 1 consecutive failure (unhealthy at 3)",
    ));
    let v = f.assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Healthy, HealthDetail::Warning);
    let p = cond(&v, "ProbeHealthy");
    assert_eq!((p.status, p.reason.as_str()), ("True", "Timeout"));
    assert!(v.message.contains("1 consecutive failure (unhealthy at 3)"));
    // Undecided and failing: Warning too, ProbeHealthy Unknown.
    f.probe = Some(verdict(
        None,
        1,
        Some(ResultClass::Refused),
        "connection refused",
    ));
    let v = f.assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Healthy, HealthDetail::Warning);
    assert_eq!(cond(&v, "ProbeHealthy").status, "Unknown");
}

#[test]
fn insufficient_data_until_the_probe_decides() {
    let mut f = fixture().probe_ok();
    f.probe = Some(verdict(None, 0, None, "no verdict yet"));
    let v = f.assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Healthy, HealthDetail::InsufficientData);
    assert_eq!(cond(&v, "ProbeHealthy").status, "Unknown");
    // Configured but not registered with the engine yet.
    f.probe = None;
    let v = f.assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Healthy, HealthDetail::InsufficientData);
    assert_eq!(cond(&v, "ProbeHealthy").reason, "NotProbed");
}

#[test]
fn a_recorded_probe_verdict_stands_until_the_engine_decides_again() {
    let mut f = fixture().probe_ok();
    let recorded = |status: &str, reason: &str, message: &str| Condition {
        type_: "ProbeHealthy".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: None,
        last_transition_time: Time(t(200)),
    };
    // After a restart the engine has no results; the recorded Passing verdict stands.
    f.instance.status.as_mut().unwrap().conditions = vec![recorded(
        "True",
        "Passing",
        "HTTP 200 from 127.0.1.5:8080/healthz",
    )];
    f.probe = Some(verdict(None, 0, None, "no verdict yet"));
    let v = f.assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Healthy, HealthDetail::OK);
    let p = cond(&v, "ProbeHealthy");
    assert_eq!(
        (p.status, p.message.as_str()),
        ("True", "HTTP 200 from 127.0.1.5:8080/healthz")
    );
    // A recorded failure stands too.
    f.instance.status.as_mut().unwrap().conditions =
        vec![recorded("False", "ConnectionRefused", "connection refused")];
    let v = f.assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Unhealthy, HealthDetail::Impaired);
    assert_eq!(cond(&v, "ProbeHealthy").reason, "ConnectionRefused");
    // A failure after the restart is the engine's own evidence again (Warning), not the record.
    f.probe = Some(verdict(
        None,
        1,
        Some(ResultClass::Timeout),
        "timeout after 1s",
    ));
    let v = f.assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Healthy, HealthDetail::Warning);
    // Before the restarted operator registers the target there is no engine verdict at all:
    // the record stands as well.
    f.instance.status.as_mut().unwrap().conditions = vec![recorded(
        "True",
        "Passing",
        "HTTP 200 from 127.0.1.5:8080/healthz",
    )];
    f.probe = None;
    is(
        &f.assess(t(AFTER_GRACE)),
        HealthStatus::Healthy,
        HealthDetail::OK,
    );
    // An undecided record (never probed) carries nothing.
    f.instance.status.as_mut().unwrap().conditions =
        vec![recorded("Unknown", "NotProbed", "not probed yet")];
    f.probe = Some(verdict(None, 0, None, "no verdict yet"));
    is(
        &f.assess(t(AFTER_GRACE)),
        HealthStatus::Healthy,
        HealthDetail::InsufficientData,
    );
}

#[test]
fn maintaining_never_replaced_but_evidence_shown() {
    let v = fixture()
        .probe_failing()
        .annotate(&[(ann::ANNOTATION_MAINTENANCE, "true")])
        .assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Healthy, HealthDetail::Maintaining);
    assert!(v.message.contains(FAIL_MSG), "{}", v.message);
    assert_eq!(cond(&v, "ProbeHealthy").status, "False");
    assert_eq!(cond(&v, "CustomHealthy").reason, "Maintenance");
}

#[test]
fn initializing_while_not_running() {
    let v = fixture().pending().assess(t(10));
    is(&v, HealthStatus::Healthy, HealthDetail::Initializing);
    let w = cond(&v, "WorkloadHealthy");
    assert_eq!((w.status, w.reason.as_str()), ("Unknown", "PodStarting"));
    assert_eq!(v.recheck_at, Some(t(300)), "startup deadline");
    // No Pod yet while Pending is not "gone".
    let mut f = fixture().pending();
    f.pod = None;
    let v = f.assess(t(10));
    is(&v, HealthStatus::Healthy, HealthDetail::Initializing);
    assert_eq!(cond(&v, "WorkloadHealthy").reason, "PodNotCreated");
    // Pending:Wait with a running Pod: Initializing, no startup timeout (hooks time out).
    let f = fixture().state(LifecycleState::PendingWait);
    let v = f.assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Healthy, HealthDetail::Initializing);
}

#[test]
fn not_applicable_in_standby_or_when_suspended() {
    let v = fixture()
        .probe_failing()
        .annotate(&[(ann::ANNOTATION_STANDBY, "true")])
        .assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Healthy, HealthDetail::NotApplicable);
    assert_eq!(v.reason, "Standby");
    let v = fixture()
        .probe_failing()
        .state(LifecycleState::Standby)
        .assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Healthy, HealthDetail::NotApplicable);
    let mut f = fixture().probe_failing();
    f.suspended = true;
    let v = f.assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Healthy, HealthDetail::NotApplicable);
    assert_eq!(v.reason, "HealthCheckSuspended");
    // Conditions still carry the evidence.
    assert_eq!(cond(&v, "ProbeHealthy").message, FAIL_MSG);
}

// ---- grace period and startup timeout boundaries ------------------------------------------

#[test]
fn grace_period_boundary() {
    // InService at t(100), grace 60s: in grace until t(160) exclusive.
    let f = fixture().probe_failing();
    let v = f.assess(t(159));
    is(&v, HealthStatus::Healthy, HealthDetail::Initializing);
    assert_eq!(v.reason, "GracePeriod");
    assert!(
        v.message.contains(FAIL_MSG),
        "evidence shown in grace: {}",
        v.message
    );
    assert_eq!(cond(&v, "ProbeHealthy").status, "False");
    assert_eq!(v.recheck_at, Some(t(160)));
    let v = f.assess(t(160));
    is(&v, HealthStatus::Unhealthy, HealthDetail::Impaired);
    assert_eq!(v.recheck_at, None);
}

#[test]
fn grace_period_zero_means_judged_at_once() {
    let mut f = fixture().probe_failing();
    f.config.grace_period_seconds = 0;
    is(
        &f.assess(t(100)),
        HealthStatus::Unhealthy,
        HealthDetail::Impaired,
    );
}

#[test]
fn grace_period_zero_is_no_grace_even_before_the_recorded_entry_second() {
    // The reconcile that enters InService records the entry rounded up to the next second:
    // with no grace period the verdict is final at once, not after that second.
    let mut f = fixture();
    f.config.grace_period_seconds = 0;
    let v = f.assess(t(99));
    is(&v, HealthStatus::Healthy, HealthDetail::OK);
    assert_eq!(v.reason, "AllSignalsPass");
}

#[test]
fn grace_restarts_with_the_last_entry_into_service() {
    let mut f = fixture().probe_failing();
    f.instance.status.as_mut().unwrap().state_history.extend([
        StateEntry {
            state: LifecycleState::Standby,
            entered_at: Time(t(500)),
            reason: None,
        },
        StateEntry {
            state: LifecycleState::InService,
            entered_at: Time(t(900)),
            reason: None,
        },
    ]);
    is(
        &f.assess(t(950)),
        HealthStatus::Healthy,
        HealthDetail::Initializing,
    );
    is(
        &f.assess(t(960)),
        HealthStatus::Unhealthy,
        HealthDetail::Impaired,
    );
}

#[test]
fn startup_timeout_boundary_from_pending_entry() {
    // Pending entered at t(0), timeout 300s.
    let f = fixture().pending();
    is(
        &f.assess(t(299)),
        HealthStatus::Healthy,
        HealthDetail::Initializing,
    );
    let v = f.assess(t(300));
    is(&v, HealthStatus::Unhealthy, HealthDetail::Impaired);
    assert_eq!(v.reason, "StartupTimeout");
    let w = cond(&v, "WorkloadHealthy");
    assert_eq!(w.status, "False");
    assert!(
        w.message.contains("past the startup timeout of 300s"),
        "{}",
        w.message
    );
    assert!(w.message.contains("phase Pending"), "{}", w.message);
}

#[test]
fn startup_timeout_from_creation_without_history_and_with_details() {
    let mut f = fixture().pending();
    f.instance.status.as_mut().unwrap().state_history.clear();
    f.instance.metadata.creation_timestamp = Some(Time(t(50)));
    f.pod.as_mut().unwrap().status = Some(
        PodStatus {
            phase: Some("Pending".into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "app".into(),
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("ImagePullBackOff".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }
        .into(),
    );
    is(
        &f.assess(t(349)),
        HealthStatus::Healthy,
        HealthDetail::Initializing,
    );
    let v = f.assess(t(350));
    is(&v, HealthStatus::Unhealthy, HealthDetail::Impaired);
    assert!(
        v.message
            .contains("container app waiting (ImagePullBackOff)"),
        "{}",
        v.message
    );
    // No Pod at all past the deadline.
    f.pod = None;
    let v = f.assess(t(350));
    is(&v, HealthStatus::Unhealthy, HealthDetail::Impaired);
    assert_eq!(v.reason, "StartupTimeout");
}

#[test]
fn running_but_never_in_service_times_out_too() {
    let mut f = fixture().pending();
    f.pod = Some(pod("Running"));
    is(
        &f.assess(t(299)),
        HealthStatus::Healthy,
        HealthDetail::Initializing,
    );
    is(
        &f.assess(t(300)),
        HealthStatus::Unhealthy,
        HealthDetail::Impaired,
    );
}

// ---- workload signals ---------------------------------------------------------------------

#[test]
fn terminal_pod_phases_act_at_once_even_in_grace() {
    for (phase, reason) in [("Failed", "PodFailed"), ("Succeeded", "PodSucceeded")] {
        let mut f = fixture();
        let mut p = pod(phase);
        p.status.as_mut().unwrap().container_statuses = Some(vec![
            ContainerStatus {
                name: "app".into(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 1,
                        reason: Some("Error".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into(),
        ]);
        f.pod = Some(p);
        let v = f.assess(t(110)); // inside the grace period
        is(&v, HealthStatus::Unhealthy, HealthDetail::Impaired);
        assert_eq!(v.reason, reason);
        let w = cond(&v, "WorkloadHealthy");
        assert_eq!(w.status, "False");
        assert!(
            w.message
                .contains("container app exited with code 1 (Error)"),
            "{}",
            w.message
        );
    }
}

#[test]
fn a_pod_gone_or_deleted_out_of_band_acts_at_once() {
    let mut f = fixture();
    f.pod = None;
    let v = f.assess(t(110));
    is(&v, HealthStatus::Unhealthy, HealthDetail::Impaired);
    assert_eq!(v.reason, "PodGone");
    assert!(v.message.contains("Pod web-abcde is gone"));
    let mut f = fixture();
    f.pod.as_mut().unwrap().metadata.deletion_timestamp = Some(Time(t(105)));
    let v = f.assess(t(110));
    is(&v, HealthStatus::Unhealthy, HealthDetail::Impaired);
    assert_eq!(v.reason, "PodDeleted");
}

#[test]
fn node_not_ready_or_unknown_is_impaired_after_grace() {
    for (ready, reason, text) in [
        (
            "False",
            "NodeNotReady",
            "Node node-0 is NotReady: KubeletStoppedPosting",
        ),
        (
            "Unknown",
            "NodeUnknown",
            "Node node-0 Ready=Unknown: KubeletStoppedPosting",
        ),
    ] {
        let mut f = fixture();
        f.node = Some(node(ready));
        let v = f.assess(t(AFTER_GRACE));
        is(&v, HealthStatus::Unhealthy, HealthDetail::Impaired);
        assert_eq!(v.reason, reason);
        assert!(cond(&v, "WorkloadHealthy").message.starts_with(text));
        is(
            &f.assess(t(110)),
            HealthStatus::Healthy,
            HealthDetail::Initializing,
        );
    }
    // A Node without a Ready condition, or no Node known: no evidence either way.
    let mut f = fixture();
    f.node.as_mut().unwrap().status = None;
    is(
        &f.assess(t(AFTER_GRACE)),
        HealthStatus::Healthy,
        HealthDetail::OK,
    );
    f.node = None;
    is(
        &f.assess(t(AFTER_GRACE)),
        HealthStatus::Healthy,
        HealthDetail::OK,
    );
}

#[test]
fn pod_phase_unknown_is_impaired() {
    let mut f = fixture();
    f.pod = Some(pod("Unknown"));
    let v = f.assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Unhealthy, HealthDetail::Impaired);
    assert_eq!(v.reason, "PodUnknown");
}

fn rule(type_: &str, status: ConditionStatus, for_seconds: i32) -> UnhealthyCondition {
    UnhealthyCondition {
        type_: type_.into(),
        status,
        for_seconds,
    }
}

#[test]
fn unhealthy_conditions_count_for_seconds() {
    let mut f = fixture();
    f.config.unhealthy_conditions = vec![rule("Ready", ConditionStatus::False, 30)];
    f.pod.as_mut().unwrap().status.as_mut().unwrap().conditions = Some(vec![PodCondition {
        type_: "Ready".into(),
        status: "False".into(),
        last_transition_time: Some(Time(t(900))),
        reason: Some("ContainersNotReady".into()),
        ..Default::default()
    }]);
    let v = f.assess(t(929));
    is(&v, HealthStatus::Healthy, HealthDetail::Warning);
    assert_eq!(v.recheck_at, Some(t(930)));
    let w = cond(&v, "WorkloadHealthy");
    assert_eq!(
        (w.status, w.reason.as_str()),
        ("True", "UnhealthyConditionPending")
    );
    let v = f.assess(t(930));
    is(&v, HealthStatus::Unhealthy, HealthDetail::Impaired);
    assert_eq!(v.reason, "UnhealthyCondition");
    assert!(
        v.message
            .contains("Pod condition Ready=False since 2027-01-15T08:15:00Z (forSeconds 30): ContainersNotReady"),
        "{}",
        v.message
    );
    // The status must match: Ready=True does not.
    f.pod
        .as_mut()
        .unwrap()
        .status
        .as_mut()
        .unwrap()
        .conditions
        .as_mut()
        .unwrap()[0]
        .status = "True".into();
    is(
        &f.assess(t(AFTER_GRACE)),
        HealthStatus::Healthy,
        HealthDetail::OK,
    );
}

#[test]
fn unhealthy_conditions_without_transition_time_count_from_pod_creation() {
    let mut f = fixture();
    f.config.unhealthy_conditions = vec![rule("DiskPressure", ConditionStatus::True, 0)];
    f.pod.as_mut().unwrap().status.as_mut().unwrap().conditions = Some(vec![PodCondition {
        type_: "DiskPressure".into(),
        status: "True".into(),
        ..Default::default()
    }]);
    is(
        &f.assess(t(AFTER_GRACE)),
        HealthStatus::Unhealthy,
        HealthDetail::Impaired,
    );
}

#[test]
fn unhealthy_conditions_match_instance_conditions_but_not_our_own() {
    let mut f = fixture();
    f.config.unhealthy_conditions = vec![
        rule("Draining", ConditionStatus::Unknown, 10),
        rule("WorkloadHealthy", ConditionStatus::False, 0),
        rule("Healthy", ConditionStatus::False, 0),
    ];
    let st = f.instance.status.as_mut().unwrap();
    for (type_, status) in [("WorkloadHealthy", "False"), ("Healthy", "False")] {
        st.conditions.push(Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "X".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(t(0)),
        });
    }
    is(
        &f.assess(t(AFTER_GRACE)),
        HealthStatus::Healthy,
        HealthDetail::OK,
    );
    f.instance
        .status
        .as_mut()
        .unwrap()
        .conditions
        .push(Condition {
            type_: "Draining".into(),
            status: "Unknown".into(),
            reason: "Stuck".into(),
            message: "set by another controller".into(),
            observed_generation: None,
            last_transition_time: Time(t(500)),
        });
    let v = f.assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Unhealthy, HealthDetail::Impaired);
    assert!(
        v.message.contains("Instance condition Draining=Unknown"),
        "{}",
        v.message
    );
}

// ---- custom signals -----------------------------------------------------------------------

#[test]
fn manual_unhealthy_acts_at_once_outside_grace() {
    let v = fixture()
        .probe_ok()
        .annotate(&[
            (ann::ANNOTATION_HEALTH, "Unhealthy"),
            (ann::ANNOTATION_HEALTH_REASON, "disk full"),
        ])
        .assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Unhealthy, HealthDetail::Impaired);
    assert_eq!(v.reason, "MarkedUnhealthy");
    let c = cond(&v, "CustomHealthy");
    assert_eq!((c.status, c.reason.as_str()), ("False", "MarkedUnhealthy"));
    assert_eq!(
        c.message,
        "marked Unhealthy (autoheal.dev/health): disk full"
    );
}

#[test]
fn manual_unhealthy_waits_for_the_grace_period() {
    let f = fixture().annotate(&[(ann::ANNOTATION_HEALTH, "Unhealthy")]);
    let v = f.assess(t(120));
    is(&v, HealthStatus::Healthy, HealthDetail::Initializing);
    assert_eq!(v.recheck_at, Some(t(160)));
    assert!(
        cond(&v, "CustomHealthy")
            .message
            .contains("waits for the grace period to end")
    );
    is(
        &f.assess(t(160)),
        HealthStatus::Unhealthy,
        HealthDetail::Impaired,
    );
}

#[test]
fn manual_unhealthy_acts_in_grace_when_told_not_to_respect_it() {
    let v = fixture()
        .annotate(&[
            (ann::ANNOTATION_HEALTH, "Unhealthy"),
            (ann::ANNOTATION_RESPECT_GRACE_PERIOD, "false"),
        ])
        .assess(t(120));
    is(&v, HealthStatus::Unhealthy, HealthDetail::Impaired);
    assert!(
        cond(&v, "CustomHealthy")
            .message
            .contains("respect-grace-period=false")
    );
    // respect-grace-period=true is the default behaviour.
    let v = fixture()
        .annotate(&[
            (ann::ANNOTATION_HEALTH, "Unhealthy"),
            (ann::ANNOTATION_RESPECT_GRACE_PERIOD, "true"),
        ])
        .assess(t(120));
    is(&v, HealthStatus::Healthy, HealthDetail::Initializing);
}

#[test]
fn manual_unhealthy_acts_on_a_pending_instance() {
    let v = fixture()
        .pending()
        .annotate(&[(ann::ANNOTATION_HEALTH, "Unhealthy")])
        .assess(t(10));
    is(&v, HealthStatus::Unhealthy, HealthDetail::Impaired);
}

#[test]
fn manual_healthy_clears_the_mark_but_does_not_mask_failures() {
    let v = fixture()
        .probe_ok()
        .annotate(&[
            (ann::ANNOTATION_HEALTH, "Healthy"),
            (ann::ANNOTATION_HEALTH_REASON, "fixed by hand"),
        ])
        .assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Healthy, HealthDetail::OK);
    let c = cond(&v, "CustomHealthy");
    assert_eq!((c.status, c.reason.as_str()), ("True", "MarkedHealthy"));
    assert!(c.message.contains("fixed by hand"));
    let v = fixture()
        .probe_failing()
        .annotate(&[(ann::ANNOTATION_HEALTH, "Healthy")])
        .assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Unhealthy, HealthDetail::Impaired);
    assert_eq!(v.reason, "ProbeFailed");
}

#[test]
fn garbage_annotation_values_never_act() {
    let v = fixture()
        .probe_ok()
        .annotate(&[
            (ann::ANNOTATION_HEALTH, "kaputt"),
            (ann::ANNOTATION_MAINTENANCE, "yes please"),
            (ann::ANNOTATION_STANDBY, "1"),
            (ann::ANNOTATION_RESPECT_GRACE_PERIOD, "whatever"),
        ])
        .assess(t(AFTER_GRACE));
    is(&v, HealthStatus::Healthy, HealthDetail::OK);
    assert_eq!(v.warnings.len(), 4, "{:?}", v.warnings);
    let c = cond(&v, "CustomHealthy");
    assert_eq!(
        (c.status, c.reason.as_str()),
        ("True", "AnnotationNotUnderstood")
    );
    for w in &v.warnings {
        assert!(c.message.contains(w.as_str()), "{} lacks {w}", c.message);
    }
    assert!(c.message.contains("autoheal.dev/health=\"kaputt\""));
    // A garbage respect-grace-period keeps the grace period respected.
    let v = fixture()
        .annotate(&[
            (ann::ANNOTATION_HEALTH, "Unhealthy"),
            (ann::ANNOTATION_RESPECT_GRACE_PERIOD, "nah"),
        ])
        .assess(t(120));
    is(&v, HealthStatus::Healthy, HealthDetail::Initializing);
    assert_eq!(v.warnings.len(), 1);
}

// ---- precedence ---------------------------------------------------------------------------

#[test]
fn precedence_table() {
    use HealthDetail as D;
    use HealthStatus as S;
    type Case = (&'static str, fn() -> Fixture, i64, S, D);
    let cases: &[Case] = &[
        (
            "suspended beats a failed Pod",
            || {
                let mut f = fixture();
                f.pod = Some(pod("Failed"));
                f.suspended = true;
                f
            },
            AFTER_GRACE,
            S::Healthy,
            D::NotApplicable,
        ),
        (
            "standby beats maintenance",
            || {
                fixture().annotate(&[
                    (ann::ANNOTATION_STANDBY, "true"),
                    (ann::ANNOTATION_MAINTENANCE, "true"),
                ])
            },
            AFTER_GRACE,
            S::Healthy,
            D::NotApplicable,
        ),
        (
            "maintenance beats a failed Pod and a manual mark",
            || {
                let mut f = fixture().annotate(&[
                    (ann::ANNOTATION_MAINTENANCE, "true"),
                    (ann::ANNOTATION_HEALTH, "Unhealthy"),
                    (ann::ANNOTATION_RESPECT_GRACE_PERIOD, "false"),
                ]);
                f.pod = Some(pod("Failed"));
                f
            },
            AFTER_GRACE,
            S::Healthy,
            D::Maintaining,
        ),
        (
            "a failed Pod beats the grace period",
            || {
                let mut f = fixture();
                f.pod = Some(pod("Failed"));
                f
            },
            110,
            S::Unhealthy,
            D::Impaired,
        ),
        (
            "grace beats a failing Node and probe",
            || {
                let mut f = fixture().probe_failing();
                f.node = Some(node("False"));
                f
            },
            110,
            S::Healthy,
            D::Initializing,
        ),
        (
            "the workload reason wins over the probe",
            || {
                let mut f = fixture().probe_failing();
                f.node = Some(node("False"));
                f
            },
            AFTER_GRACE,
            S::Unhealthy,
            D::Impaired,
        ),
        (
            "impaired beats warning",
            || {
                let mut f = fixture().probe_failing();
                f.config.unhealthy_conditions = vec![rule("Ready", ConditionStatus::False, 10_000)];
                f.pod.as_mut().unwrap().status.as_mut().unwrap().conditions =
                    Some(vec![PodCondition {
                        type_: "Ready".into(),
                        status: "False".into(),
                        last_transition_time: Some(Time(t(900))),
                        ..Default::default()
                    }]);
                f
            },
            AFTER_GRACE,
            S::Unhealthy,
            D::Impaired,
        ),
        (
            "warning beats insufficient data",
            || {
                let mut f = fixture().probe_ok();
                f.probe = Some(verdict(None, 0, None, "undecided"));
                f.config.unhealthy_conditions = vec![rule("Ready", ConditionStatus::False, 10_000)];
                f.pod.as_mut().unwrap().status.as_mut().unwrap().conditions =
                    Some(vec![PodCondition {
                        type_: "Ready".into(),
                        status: "False".into(),
                        last_transition_time: Some(Time(t(900))),
                        ..Default::default()
                    }]);
                f
            },
            AFTER_GRACE,
            S::Healthy,
            D::Warning,
        ),
        (
            "a manual mark in grace waits, while a Pod gone acts",
            || {
                let mut f = fixture().annotate(&[(ann::ANNOTATION_HEALTH, "Unhealthy")]);
                f.pod = None;
                f
            },
            110,
            S::Unhealthy,
            D::Impaired,
        ),
    ];
    for (name, build, now, status, detail) in cases {
        let v = build().assess(t(*now));
        assert_eq!((v.status, v.detail), (*status, *detail), "{name}: {v:#?}");
    }
    // The reason of the workload case is the Node's.
    let mut f = fixture().probe_failing();
    f.node = Some(node("False"));
    assert_eq!(f.assess(t(AFTER_GRACE)).reason, "NodeNotReady");
}

#[test]
fn terminating_instances_keep_their_recorded_verdict() {
    let mut f = fixture().probe_ok().state(LifecycleState::Terminating);
    f.pod = None;
    let st = f.instance.status.as_mut().unwrap();
    st.health_status = Some(HealthStatus::Unhealthy);
    st.health_detail = Some(HealthDetail::Impaired);
    st.conditions = vec![Condition {
        type_: "Healthy".into(),
        status: "False".into(),
        reason: "ProbeFailed".into(),
        message: format!("probe: {FAIL_MSG}"),
        observed_generation: None,
        last_transition_time: Time(t(500)),
    }];
    for state in [
        LifecycleState::Terminating,
        LifecycleState::TerminatingWait,
        LifecycleState::TerminatingProceed,
        LifecycleState::Terminated,
    ] {
        f.instance.status.as_mut().unwrap().lifecycle_state = Some(state);
        let v = f.assess(t(AFTER_GRACE));
        is(&v, HealthStatus::Unhealthy, HealthDetail::Impaired);
        assert_eq!(v.conditions.len(), 1);
        assert_eq!(v.conditions[0].message, format!("probe: {FAIL_MSG}"));
        assert!(events(&f.instance, &v).is_empty());
    }
}

// ---- conditions and events ----------------------------------------------------------------

#[test]
fn conditions_keep_their_transition_time_unless_status_changes() {
    let f = fixture().probe_ok();
    let first = settle(
        &[],
        f.assess(t(AFTER_GRACE)).conditions,
        None,
        t(AFTER_GRACE),
    );
    // Same signals later: identical conditions, nothing to write.
    let again = settle(
        &first,
        f.assess(t(AFTER_GRACE + 50)).conditions,
        None,
        t(AFTER_GRACE + 50),
    );
    assert_eq!(first, again);
    // Probe fails: Healthy and ProbeHealthy flip (new time), the others keep theirs.
    let failing = fixture().probe_failing();
    let third = settle(&again, failing.assess(t(2000)).conditions, None, t(2000));
    for c in &third {
        let expect = if c.type_ == "Healthy" || c.type_ == "ProbeHealthy" {
            t(2000)
        } else {
            t(AFTER_GRACE)
        };
        assert_eq!(c.last_transition_time.0, expect, "{}", c.type_);
    }
}

#[test]
fn events_on_transitions_with_evidence_and_warnings_once() {
    let mut f = fixture()
        .probe_failing()
        .annotate(&[(ann::ANNOTATION_HEALTH, "bogus")]);
    let st = f.instance.status.as_mut().unwrap();
    st.health_status = Some(HealthStatus::Healthy);
    st.health_detail = Some(HealthDetail::OK);
    let v = f.assess(t(AFTER_GRACE));
    let evs = events(&f.instance, &v);
    assert_eq!(evs.len(), 2, "{evs:#?}");
    assert_eq!(evs[0].reason, "Unhealthy");
    assert!(evs[0].warning);
    assert_eq!(
        evs[0].note,
        format!("Healthy/OK → Unhealthy/Impaired: probe: {FAIL_MSG}")
    );
    assert_eq!(evs[1].reason, REASON_ANNOTATION_NOT_UNDERSTOOD);
    assert!(evs[1].note.contains("bogus"));

    // After the status is written, the same verdict emits nothing.
    let st = f.instance.status.as_mut().unwrap();
    st.health_status = Some(v.status);
    st.health_detail = Some(v.detail);
    st.conditions = settle(&[], v.conditions.clone(), None, t(AFTER_GRACE));
    assert!(events(&f.instance, &f.assess(t(AFTER_GRACE + 5))).is_empty());

    // Recovery: a Normal "Healthy" event.
    let mut g = fixture().probe_ok();
    g.instance.status = f.instance.status.clone();
    let back = g.assess(t(AFTER_GRACE + 10));
    let evs = events(&g.instance, &back);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].reason, "Healthy");
    assert!(!evs[0].warning);

    // A first verdict of Healthy/Initializing is not a transition.
    let p = fixture().pending();
    assert!(events(&p.instance, &p.assess(t(1))).is_empty());
}

// ---- properties ---------------------------------------------------------------------------

fn arb_state() -> impl Strategy<Value = LifecycleState> {
    prop_oneof![
        Just(LifecycleState::Pending),
        Just(LifecycleState::PendingWait),
        Just(LifecycleState::InService),
        Just(LifecycleState::Standby),
        Just(LifecycleState::Terminating),
    ]
}

fn arb_annotation() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    let value = prop_oneof![
        Just("true".to_string()),
        Just("false".to_string()),
        Just("Unhealthy".to_string()),
        Just("Healthy".to_string()),
        ".{0,8}",
    ];
    proptest::collection::vec(
        (
            prop_oneof![
                Just(ann::ANNOTATION_HEALTH),
                Just(ann::ANNOTATION_HEALTH_REASON),
                Just(ann::ANNOTATION_RESPECT_GRACE_PERIOD),
                Just(ann::ANNOTATION_MAINTENANCE),
                Just(ann::ANNOTATION_STANDBY),
            ],
            value,
        ),
        0..5,
    )
}

proptest! {
    /// Unhealthy ⇔ Impaired; nothing panics; messages do not depend on the clock, so the same
    /// signals evaluated later (before any recheck time) give the same conditions.
    #[test]
    fn invariants(
        state in arb_state(),
        annotations in arb_annotation(),
        phase in prop_oneof![Just(None), Just(Some("Pending")), Just(Some("Running")), Just(Some("Failed")), Just(Some("Unknown"))],
        ready in prop_oneof![Just(None), Just(Some("True")), Just(Some("False")), Just(Some("Unknown"))],
        probe in prop_oneof![Just(None), Just(Some((None, 0u32))), Just(Some((Some(true), 0))), Just(Some((Some(true), 1))), Just(Some((Some(false), 3)))],
        suspended in any::<bool>(),
        grace in 0i32..200,
        now in 0i64..2000,
        later in 0i64..100,
    ) {
        let mut f = fixture().state(state);
        let map: Vec<(&str, &str)> = annotations.iter().map(|(k, v)| (*k, v.as_str())).collect();
        f = f.annotate(&map);
        f.pod = phase.map(pod);
        f.node = ready.map(node);
        f.suspended = suspended;
        f.config.grace_period_seconds = grace;
        if let Some((healthy, failures)) = probe {
            f.config.probe = Some(http_probe());
            f.probe = Some(verdict(healthy, failures, (failures > 0).then_some(ResultClass::Timeout), "evidence"));
        }
        let v = f.assess(t(now));
        prop_assert_eq!(v.status == HealthStatus::Unhealthy, v.detail == HealthDetail::Impaired);
        if let Some(at) = v.recheck_at {
            prop_assert!(at > t(now));
        }
        let w = f.assess(t(now + later));
        if v.recheck_at.is_none_or(|at| at > t(now + later)) {
            prop_assert_eq!(&v.conditions, &w.conditions);
        }
        let _ = events(&f.instance, &v);
    }
}

mod workload;
