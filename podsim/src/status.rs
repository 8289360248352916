//! The Pod status podsim reports, and deciding whether it needs writing.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

/// The host IP every simulated Node reports.
pub(crate) const HOST_IP: &str = "127.0.0.1";

/// The phase podsim reports for a Pod it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Bound but not started (slow-start).
    Pending,
    /// Containers running (whatever the HTTP behavior).
    Running,
    /// Containers exited with code 1 (crash).
    Failed,
}

/// Everything podsim knows about a Pod it runs, to derive the status from.
pub(crate) struct PodView<'a> {
    pub pod: &'a Pod,
    pub phase: Phase,
    pub ip: Option<Ipv4Addr>,
    pub start_time: Timestamp,
    pub running_since: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

const OUR_CONDITIONS: [&str; 4] = ["PodScheduled", "Initialized", "ContainersReady", "Ready"];

/// The status podsim wants the Pod to have. Transition times are kept from the
/// observed status when a condition did not change, so the result is stable.
pub(crate) fn desired_status(v: &PodView<'_>, now: Timestamp) -> PodStatus {
    let pod = v.pod;
    let observed = pod.status.as_ref();
    let spec = pod.spec.as_ref();
    let containers: &[Container] = spec.map(|s| s.containers.as_slice()).unwrap_or(&[]);
    let init_containers: &[Container] = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[]);
    let uid = pod.metadata.uid.as_deref().unwrap_or("unknown");
    let names = containers
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(" ");

    let (ready, reason, message) = match v.phase {
        Phase::Running => (true, None, None),
        Phase::Pending => (
            false,
            Some("ContainersNotReady"),
            Some(format!("containers with unready status: [{names}]")),
        ),
        Phase::Failed => (
            false,
            Some("PodFailed"),
            Some("podsim: containers exited with code 1 (behavior=crash)".to_string()),
        ),
    };
    let mut conditions = vec![
        condition(observed, "PodScheduled", true, None, None, now),
        condition(observed, "Initialized", true, None, None, now),
        condition(
            observed,
            "ContainersReady",
            ready,
            reason,
            message.clone(),
            now,
        ),
        condition(observed, "Ready", ready, reason, message, now),
    ];
    // Keep conditions written by others (e.g. DisruptionTarget).
    conditions.extend(
        observed
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .filter(|c| !OUR_CONDITIONS.contains(&c.type_.as_str()))
            .cloned(),
    );

    let running_since = v.running_since.unwrap_or(v.start_time);
    let container_status = |c: &Container| {
        let (state, ready, started) = match v.phase {
            Phase::Pending => (
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("ContainerCreating".into()),
                        message: Some("podsim: slow-start".into()),
                    }),
                    ..Default::default()
                },
                false,
                false,
            ),
            Phase::Running => (
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(Time(running_since)),
                    }),
                    ..Default::default()
                },
                true,
                true,
            ),
            Phase::Failed => (
                ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        container_id: Some(container_id(uid, &c.name)),
                        exit_code: 1,
                        reason: Some("Error".into()),
                        message: Some("podsim: behavior=crash".into()),
                        started_at: Some(Time(running_since)),
                        finished_at: Some(Time(v.finished_at.unwrap_or(now))),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                false,
                false,
            ),
        };
        ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: format!("podsim://{}", c.image.as_deref().unwrap_or_default()),
            container_id: (v.phase != Phase::Pending).then(|| container_id(uid, &c.name)),
            ready,
            started: Some(started),
            restart_count: 0,
            state: Some(state),
            ..Default::default()
        }
    };
    let init_status = |c: &Container| ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: format!("podsim://{}", c.image.as_deref().unwrap_or_default()),
        container_id: Some(container_id(uid, &c.name)),
        ready: true,
        started: Some(false),
        restart_count: 0,
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                container_id: Some(container_id(uid, &c.name)),
                exit_code: 0,
                reason: Some("Completed".into()),
                started_at: Some(Time(v.start_time)),
                finished_at: Some(Time(v.start_time)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };

    PodStatus {
        phase: Some(
            match v.phase {
                Phase::Pending => "Pending",
                Phase::Running => "Running",
                Phase::Failed => "Failed",
            }
            .into(),
        ),
        message: (v.phase == Phase::Failed)
            .then(|| "podsim: containers exited with code 1 (behavior=crash)".into()),
        host_ip: Some(HOST_IP.into()),
        host_ips: Some(vec![HostIP { ip: HOST_IP.into() }]),
        pod_ip: v.ip.map(|ip| ip.to_string()),
        pod_ips: v.ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        start_time: Some(Time(v.start_time)),
        conditions: Some(conditions),
        container_statuses: Some(containers.iter().map(container_status).collect()),
        init_container_statuses: (!init_containers.is_empty())
            .then(|| init_containers.iter().map(init_status).collect()),
        ..Default::default()
    }
}

fn container_id(uid: &str, name: &str) -> String {
    format!("podsim://{uid}/{name}")
}

fn condition(
    observed: Option<&PodStatus>,
    type_: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: Timestamp,
) -> PodCondition {
    let status = if status { "True" } else { "False" };
    let previous = observed
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status);
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(Into::into),
        message,
        last_transition_time: Some(
            previous
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now)),
        ),
        ..Default::default()
    }
}

/// Whether writing `desired` would change anything: true unless every field podsim
/// sets already has that value in `observed` (fields only the API server sets, such as
/// `qosClass`, are ignored).
pub(crate) fn needs_update(desired: &PodStatus, observed: Option<&PodStatus>) -> bool {
    let Some(observed) = observed else {
        return true;
    };
    let (Ok(d), Ok(o)) = (
        serde_json::to_value(desired),
        serde_json::to_value(observed),
    ) else {
        return true;
    };
    !is_subset(&d, &o)
}

/// `desired` ⊆ `observed`: objects may have extra keys in `observed`, arrays must match
/// element by element, everything else must be equal.
fn is_subset(desired: &Value, observed: &Value) -> bool {
    match (desired, observed) {
        (Value::Object(d), Value::Object(o)) => d
            .iter()
            .all(|(k, v)| o.get(k).is_some_and(|ov| is_subset(v, ov))),
        (Value::Array(d), Value::Array(o)) => {
            d.len() == o.len() && d.iter().zip(o).all(|(a, b)| is_subset(a, b))
        }
        _ => desired == observed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
            "spec": {"containers": [{"name": "web", "image": "example/web:1",
                "ports": [{"containerPort": 8080}]}]},
        }))
        .unwrap()
    }

    #[test]
    fn running_status_is_stable_once_written() {
        let mut p = pod();
        let t0: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2030-01-01T00:05:00Z".parse().unwrap();
        let view = |p: &Pod| {
            desired_status(
                &PodView {
                    pod: p,
                    phase: Phase::Running,
                    ip: Some(Ipv4Addr::new(127, 42, 0, 1)),
                    start_time: t0,
                    running_since: Some(t0),
                    finished_at: None,
                },
                t0,
            )
        };
        let first = view(&p);
        assert!(needs_update(&first, p.status.as_ref()));
        // the API server adds fields of its own; they do not cause a rewrite
        let mut written = first.clone();
        written.qos_class = Some("BestEffort".into());
        p.status = Some(written);
        let again = desired_status(
            &PodView {
                pod: &p,
                phase: Phase::Running,
                ip: Some(Ipv4Addr::new(127, 42, 0, 1)),
                start_time: t0,
                running_since: Some(t0),
                finished_at: None,
            },
            t1,
        );
        assert!(!needs_update(&again, p.status.as_ref()));
        assert_eq!(again.pod_ip.as_deref(), Some("127.42.0.1"));
        let ready = again
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready");
        assert_eq!(ready.unwrap().status, "True");
        assert_eq!(ready.unwrap().last_transition_time, Some(Time(t0)));
    }

    #[test]
    fn crash_changes_status() {
        let mut p = pod();
        let t0: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let view = |p: &Pod, phase| {
            desired_status(
                &PodView {
                    pod: p,
                    phase,
                    ip: Some(Ipv4Addr::new(127, 42, 0, 1)),
                    start_time: t0,
                    running_since: Some(t0),
                    finished_at: None,
                },
                t0,
            )
        };
        p.status = Some(view(&p, Phase::Running));
        let failed = view(&p, Phase::Failed);
        assert!(needs_update(&failed, p.status.as_ref()));
        assert_eq!(failed.phase.as_deref(), Some("Failed"));
        let cs = &failed.container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            1
        );
        assert!(!cs.ready);
    }

    #[test]
    fn subset_semantics() {
        assert!(is_subset(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!is_subset(&json!({"a": 1}), &json!({"a": 2})));
        assert!(!is_subset(&json!({"a": [1, 2]}), &json!({"a": [1]})));
        assert!(is_subset(
            &json!({"a": [{"x": 1}]}),
            &json!({"a": [{"x": 1, "y": 0}]})
        ));
        assert!(!is_subset(&json!({"a": {}}), &json!({})));
    }
}
