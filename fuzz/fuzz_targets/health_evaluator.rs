//! The health evaluator: total on any Instance, Pod, Node, probe verdict and configuration
//! (conditions of any type and status, timestamps at the ends of time, containers that
//! terminated or wait for any reason), and its verdict is consistent with itself.
#![no_main]

use arbitrary::Unstructured;
use autoheal::api::types::ResultClass;
use autoheal::api::{
    ConditionStatus, HealthCheck, HealthDetail, HealthStatus, Instance, InstanceSpec,
    InstanceStatus, PodTemplate, StateEntry, UnhealthyCondition, WatchedContainerStatus,
    WatchedPod, WatchedPodSpec, WatchedPodStatus,
};
use autoheal::health::{HealthInputs, ProbeVerdict, assess, events};
use autoheal_fuzz as g;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, Node,
    NodeCondition, NodeStatus, PodCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use libfuzzer_sys::fuzz_target;

const COND_TYPES: &[&str] = &[
    "Ready",
    "ContainersReady",
    "PodScheduled",
    "Initialized",
    "DiskPressure",
    "MemoryPressure",
    "NetworkUnavailable",
    "Healthy",
];
const STATUSES: &[&str] = &["True", "False", "Unknown"];

fn opt_str(u: &mut Unstructured<'_>, pool: &[&str]) -> arbitrary::Result<Option<String>> {
    Ok(if u.arbitrary()? {
        Some(g::string(u, pool)?)
    } else {
        None
    })
}

fn container_state(u: &mut Unstructured<'_>) -> arbitrary::Result<Option<ContainerState>> {
    Ok(match u.int_in_range(0u8..=3)? {
        0 => None,
        1 => Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: g::opt_timestamp(u)?.map(Time),
            }),
            ..Default::default()
        }),
        2 => Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: opt_str(u, &["CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull"])?,
                message: opt_str(u, &[])?,
            }),
            ..Default::default()
        }),
        _ => Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: g::int(u)?,
                reason: opt_str(u, &["Error", "OOMKilled", "Completed"])?,
                signal: if u.arbitrary()? {
                    Some(g::int(u)?)
                } else {
                    None
                },
                started_at: g::opt_timestamp(u)?.map(Time),
                finished_at: g::opt_timestamp(u)?.map(Time),
                ..Default::default()
            }),
            ..Default::default()
        }),
    })
}

fn pod(u: &mut Unstructured<'_>) -> arbitrary::Result<WatchedPod> {
    let conditions = (0..u.int_in_range(0..=4)?)
        .map(|_| {
            Ok(PodCondition {
                type_: g::string(u, COND_TYPES)?,
                status: g::string(u, STATUSES)?,
                reason: opt_str(u, &["Unschedulable", "ContainersNotReady"])?,
                message: opt_str(u, &[])?,
                last_transition_time: g::opt_timestamp(u)?.map(Time),
                ..Default::default()
            })
        })
        .collect::<arbitrary::Result<Vec<_>>>()?;
    let containers = (0..u.int_in_range(0..=3)?)
        .map(|_| {
            Ok(WatchedContainerStatus {
                name: g::string(u, &["app", "side"])?,
                state: container_state(u)?,
                last_state: container_state(u)?.map(Box::new),
            })
        })
        .collect::<arbitrary::Result<Vec<_>>>()?;
    Ok(WatchedPod {
        metadata: ObjectMeta {
            name: opt_str(u, &["web-a"])?,
            uid: opt_str(u, &["u1", "u2"])?,
            creation_timestamp: g::opt_timestamp(u)?.map(Time),
            deletion_timestamp: if u.ratio(1u8, 6)? {
                g::opt_timestamp(u)?.map(Time)
            } else {
                None
            },
            ..Default::default()
        },
        spec: Some(WatchedPodSpec {
            node_name: opt_str(u, &["n1", "n2"])?,
            ..Default::default()
        }),
        status: Some(WatchedPodStatus {
            phase: opt_str(u, &["Pending", "Running", "Succeeded", "Failed", "Unknown"])?,
            conditions: if u.arbitrary()? {
                Some(conditions)
            } else {
                None
            },
            container_statuses: if u.arbitrary()? {
                Some(containers)
            } else {
                None
            },
            reason: opt_str(u, &["Evicted"])?,
            pod_ip: None,
        }),
    })
}

fn node(u: &mut Unstructured<'_>) -> arbitrary::Result<Node> {
    let conditions = (0..u.int_in_range(0..=4)?)
        .map(|_| {
            Ok(NodeCondition {
                type_: g::string(u, COND_TYPES)?,
                status: g::string(u, STATUSES)?,
                reason: opt_str(u, &["KubeletStoppedPosting"])?,
                message: opt_str(u, &[])?,
                last_transition_time: g::opt_timestamp(u)?.map(Time),
                last_heartbeat_time: g::opt_timestamp(u)?.map(Time),
            })
        })
        .collect::<arbitrary::Result<Vec<_>>>()?;
    Ok(Node {
        metadata: ObjectMeta {
            name: opt_str(u, &["n1", "n2"])?,
            ..Default::default()
        },
        status: Some(NodeStatus {
            conditions: if u.arbitrary()? {
                Some(conditions)
            } else {
                None
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let history = (0..u.int_in_range(0..=4)?)
        .map(|_| {
            Ok(StateEntry {
                state: *u.choose(g::STATES)?,
                entered_at: Time(g::timestamp(u)?),
                reason: None,
            })
        })
        .collect::<arbitrary::Result<_>>()?;
    let instance = Instance {
        metadata: ObjectMeta {
            name: Some("web-a".into()),
            namespace: Some("ns".into()),
            creation_timestamp: g::opt_timestamp(u)?.map(Time),
            deletion_timestamp: if u.ratio(1u8, 8)? {
                g::opt_timestamp(u)?.map(Time)
            } else {
                None
            },
            annotations: if u.arbitrary()? {
                Some(g::annotations(u)?)
            } else {
                None
            },
            ..Default::default()
        },
        spec: InstanceSpec {
            group_name: "web".into(),
            protected_from_scale_in: u.arbitrary()?,
            pod_template: PodTemplate::default(),
        },
        status: if u.ratio(7u8, 8)? {
            Some(InstanceStatus {
                lifecycle_state: if u.arbitrary()? {
                    Some(*u.choose(g::STATES)?)
                } else {
                    None
                },
                health_status: *u.choose(&[
                    None,
                    Some(HealthStatus::Healthy),
                    Some(HealthStatus::Unhealthy),
                ])?,
                state_history: history,
                conditions: if u.arbitrary()? {
                    vec![g::condition(u, "Healthy")?]
                } else {
                    Vec::new()
                },
                ..Default::default()
            })
        } else {
            None
        },
    };
    let pod = if u.ratio(7u8, 8)? {
        Some(pod(u)?)
    } else {
        None
    };
    let node = if u.ratio(3u8, 4)? {
        Some(node(u)?)
    } else {
        None
    };
    let probe = if u.arbitrary()? {
        let failure = if u.arbitrary()? {
            Some(*u.choose(&ResultClass::ALL)?)
        } else {
            None
        };
        Some(ProbeVerdict {
            healthy: *u.choose(&[None, Some(true), Some(false)])?,
            consecutive_failures: u.arbitrary()?,
            consecutive_successes: u.arbitrary()?,
            message: u.arbitrary()?,
            failure,
            unhealthy_threshold: u.arbitrary()?,
            healthy_threshold: u.arbitrary()?,
        })
    } else {
        None
    };
    let config = HealthCheck {
        grace_period_seconds: g::int(u)?,
        startup_timeout_seconds: g::int(u)?,
        probe: None,
        unhealthy_conditions: (0..u.int_in_range(0..=3)?)
            .map(|_| {
                Ok(UnhealthyCondition {
                    type_: g::string(u, COND_TYPES)?,
                    status: *u.choose(&[
                        ConditionStatus::True,
                        ConditionStatus::False,
                        ConditionStatus::Unknown,
                    ])?,
                    for_seconds: g::int(u)?,
                })
            })
            .collect::<arbitrary::Result<_>>()?,
    };
    let suspended = u.ratio(1u8, 8)?;
    let now = g::timestamp(u)?;

    let v = assess(
        &HealthInputs {
            instance: &instance,
            pod: pod.as_ref(),
            node: node.as_ref(),
            probe: probe.as_ref(),
            config: &config,
            health_check_suspended: suspended,
        },
        now,
    );
    // A terminating Instance keeps its recorded verdict (row 0, whatever was recorded);
    // otherwise Unhealthy ⇔ Impaired, and nothing is acted on while suspended.
    let terminating = instance
        .status
        .as_ref()
        .and_then(|s| s.lifecycle_state)
        .is_some_and(|s| s.is_terminating());
    if !terminating {
        assert_eq!(
            v.status == HealthStatus::Unhealthy,
            v.detail == HealthDetail::Impaired,
            "{v:?}"
        );
        if suspended {
            assert_eq!(
                v.status,
                HealthStatus::Healthy,
                "acted on health while suspended"
            );
            assert_eq!(v.detail, HealthDetail::NotApplicable);
        }
    }
    let _ = events(&instance, &v);
    let _ = format!("{v:?}");
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
