//! [`WatchedPod`]: a Pod as the operator keeps it from its watch.

use std::borrow::Cow;

use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Deserialize;

/// A Pod as the operator keeps it: its metadata, and the fields of its spec and status the
/// operator reads. Read from the API server as a Pod (same URL, kind and version); the rest
/// (containers, volumes, tolerations: most of a Pod; IP lists, images, resources of the
/// status) is skipped when the answer is parsed and never held in memory. A `k8s_openapi`
/// Pod is 2.4 KB inline before anything it points to, and each of its container statuses
/// 752 bytes; a `WatchedPod` is under 600 bytes, and a [`WatchedContainerStatus`] under 300.
///
/// The operator never writes a `WatchedPod` back (it cannot be serialized): a Pod is created
/// from its Instance's template, as a whole `Pod`. Code that comes to read another field
/// must add it to [`WatchedPodSpec`], [`WatchedPodStatus`] or [`WatchedContainerStatus`];
/// code that comes to read a field that [`WatchedPod::drop_unread`] clears must stop it
/// clearing that field.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct WatchedPod {
    /// The Pod's metadata.
    pub metadata: ObjectMeta,
    /// The fields of the Pod's spec the operator reads.
    #[serde(default)]
    pub spec: Option<WatchedPodSpec>,
    /// The fields of the Pod's status the operator reads.
    #[serde(default)]
    pub status: Option<WatchedPodStatus>,
}

/// The fields of a Pod's status the operator reads (named as in `PodStatus`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchedPodStatus {
    /// `status.phase`.
    #[serde(default)]
    pub phase: Option<String>,
    /// `status.reason` (e.g. `Evicted`).
    #[serde(default)]
    pub reason: Option<String>,
    /// `status.podIP`: probes go to it.
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
    /// `status.conditions`, matched by `healthCheck.unhealthyConditions` (any type).
    #[serde(default)]
    pub conditions: Option<Vec<PodCondition>>,
    /// `status.containerStatuses` (not the init or ephemeral containers').
    #[serde(default)]
    pub container_statuses: Option<Vec<WatchedContainerStatus>>,
}

/// The fields of a container's status the operator reads (named as in `ContainerStatus`):
/// its name and states, for the evidence of a Pod that failed or waits.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchedContainerStatus {
    /// The container's name.
    #[serde(default)]
    pub name: String,
    /// What it is doing now: waiting (with the reason), running or terminated (exit code).
    #[serde(default)]
    pub state: Option<ContainerState>,
    /// How it last terminated, if it did: boxed, as most containers have none (a
    /// `ContainerState` is 208 bytes inline).
    #[serde(default)]
    pub last_state: Option<Box<ContainerState>>,
}

impl From<PodStatus> for WatchedPodStatus {
    fn from(status: PodStatus) -> Self {
        Self {
            phase: status.phase,
            reason: status.reason,
            pod_ip: status.pod_ip,
            conditions: status.conditions,
            container_statuses: status
                .container_statuses
                .map(|cs| cs.into_iter().map(WatchedContainerStatus::from).collect()),
        }
    }
}

impl From<ContainerStatus> for WatchedContainerStatus {
    fn from(status: ContainerStatus) -> Self {
        Self {
            name: status.name,
            state: status.state,
            last_state: status.last_state.map(Box::new),
        }
    }
}

/// The fields of a Pod's spec the operator reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchedPodSpec {
    /// The Node the Pod is bound to (`spec.nodeName`).
    #[serde(default)]
    pub node_name: Option<String>,
    /// `spec.terminationGracePeriodSeconds`.
    #[serde(default)]
    pub termination_grace_period_seconds: Option<i64>,
}

impl From<Pod> for WatchedPod {
    fn from(pod: Pod) -> Self {
        Self {
            metadata: pod.metadata,
            spec: pod.spec.map(|spec| WatchedPodSpec {
                node_name: spec.node_name,
                termination_grace_period_seconds: spec.termination_grace_period_seconds,
            }),
            status: pod.status.map(WatchedPodStatus::from),
        }
    }
}

impl Resource for WatchedPod {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        <Pod as Resource>::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        <Pod as Resource>::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        <Pod as Resource>::version(dt)
    }

    fn api_version(dt: &()) -> Cow<'_, str> {
        <Pod as Resource>::api_version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        <Pod as Resource>::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl WatchedPod {
    /// Drops what the operator never reads of a watched Pod's metadata, before the store
    /// holds it: the annotations (the operator reads the Instance's) and `generateName`. (Of
    /// its spec and status, [`WatchedPod`] holds only what is read.)
    pub fn drop_unread(&mut self) {
        self.metadata.annotations = None;
        self.metadata.generate_name = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_read_as_a_watched_pod_keeps_what_the_operator_reads_and_is_small() {
        let json = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "ns", "uid": "u1",
                         "labels": {"autoheal.dev/group": "web"},
                         "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 7,
                     "containers": [{"name": "app", "image": "nginx",
                                     "env": [{"name": "A", "value": "b"}]}],
                     "tolerations": [{"key": "k", "operator": "Exists"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                       "conditions": [{"type": "Ready", "status": "True"}]}
        });
        let watched: WatchedPod = serde_json::from_value(json.clone()).unwrap();
        let pod: Pod = serde_json::from_value(json).unwrap();
        assert_eq!(watched, WatchedPod::from(pod.clone()), "parsed = converted");
        assert_eq!(watched.metadata, pod.metadata);
        assert_eq!(watched.status, pod.status.map(WatchedPodStatus::from));
        let spec = watched.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node-1"));
        assert_eq!(spec.termination_grace_period_seconds, Some(7));
        assert_eq!(
            <WatchedPod as Resource>::url_path(&(), Some("ns")),
            <Pod as Resource>::url_path(&(), Some("ns")),
        );
        assert_eq!(WatchedPod::api_version(&()), "v1");
        assert_eq!(WatchedPod::kind(&()), "Pod");
        assert!(
            std::mem::size_of::<WatchedPod>() < 600,
            "{} bytes inline",
            std::mem::size_of::<WatchedPod>()
        );
        assert!(
            std::mem::size_of::<WatchedContainerStatus>() < 300,
            "{} bytes inline",
            std::mem::size_of::<WatchedContainerStatus>()
        );
    }

    #[test]
    fn a_watched_pod_parsed_or_converted_keeps_every_field_the_operator_reads() {
        let json = serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "ns", "uid": "u1",
                         "generateName": "web-", "resourceVersion": "42",
                         "creationTimestamp": "2026-01-01T00:00:00Z",
                         "deletionTimestamp": "2026-01-01T00:01:00Z",
                         "ownerReferences": [{"apiVersion": "autoheal.dev/v1alpha1",
                             "kind": "Instance", "name": "web-0", "uid": "i1",
                             "controller": true}],
                         "labels": {"autoheal.dev/group": "web"},
                         "annotations": {"prometheus.io/scrape": "true"}},
            "spec": {"nodeName": "node-1"},
            "status": {"phase": "Running", "reason": "Evicted", "podIP": "10.0.0.1",
                       "podIPs": [{"ip": "10.0.0.1"}], "hostIP": "192.168.0.1",
                       "hostIPs": [{"ip": "192.168.0.1"}], "qosClass": "BestEffort",
                       "conditions": [{"type": "Ready", "status": "False", "reason": "R",
                                       "message": "m",
                                       "lastTransitionTime": "2026-01-01T00:00:30Z"}],
                       "initContainerStatuses": [{"name": "init", "image": "busybox",
                           "imageID": "sha256:1", "ready": true, "restartCount": 0}],
                       "containerStatuses": [{"name": "app", "image": "nginx",
                           "imageID": "docker.io/nginx@sha256:2", "containerID": "containerd://3",
                           "ready": false, "restartCount": 4, "started": false,
                           "volumeMounts": [{"name": "v", "mountPath": "/v"}],
                           "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                           "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}},
                                             {"name": "side", "image": "envoy", "ready": true,
                           "restartCount": 0,
                           "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}
        });
        let pod: Pod = serde_json::from_value(json.clone()).unwrap();
        let mut kept: WatchedPod = serde_json::from_value(json).unwrap();
        kept.drop_unread();
        let mut converted = WatchedPod::from(pod.clone());
        converted.drop_unread();
        assert_eq!(
            kept, converted,
            "parsed = converted (the read-your-writes copies)"
        );
        let metadata = ObjectMeta {
            annotations: None,
            generate_name: None,
            ..pod.metadata.clone()
        };
        assert_eq!(
            kept.metadata, metadata,
            "only the annotations and generateName go"
        );
        assert_eq!(
            crate::controller::instance::pod_facts(Some(&kept)),
            crate::controller::instance::pod_facts(Some(&WatchedPod::from(pod.clone())))
        );
        let (k, w) = (kept.status.unwrap(), pod.status.unwrap());
        assert_eq!(
            (&k.phase, &k.reason, &k.pod_ip, &k.conditions),
            (&w.phase, &w.reason, &w.pod_ip, &w.conditions)
        );
        let (kept, whole) = (k.container_statuses.unwrap(), w.container_statuses.unwrap());
        assert_eq!(kept.len(), whole.len());
        for (kc, wc) in kept.iter().zip(&whole) {
            assert_eq!(kc.name, wc.name);
            assert_eq!(kc.state, wc.state);
            assert_eq!(kc.last_state.as_deref(), wc.last_state.as_ref());
        }
        assert!(kept[0].state.as_ref().unwrap().waiting.is_some());
        assert!(kept[0].last_state.as_ref().unwrap().terminated.is_some());
        assert!(kept[1].state.as_ref().unwrap().terminated.is_some());
    }
}
