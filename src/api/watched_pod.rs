//! [`WatchedPod`]: a Pod as the operator keeps it from its watch.

use std::borrow::Cow;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Deserialize;

/// A Pod as the operator keeps it: its metadata, its status, and the two fields of its spec
/// the operator reads. Read from the API server as a Pod (same URL, kind and version); the
/// rest of the spec (containers, volumes, tolerations: most of a Pod) is skipped when the
/// answer is parsed and never held in memory. A `k8s_openapi` Pod is 2.4 KB inline before
/// anything it points to, 1.5 KB of it its spec; a `WatchedPod` is under 1 KB.
///
/// The operator never writes a `WatchedPod` back (it cannot be serialized): a Pod is created
/// from its Instance's template, as a whole `Pod`. Code that comes to read another spec
/// field must add it to [`WatchedPodSpec`]; code that comes to read a field that
/// [`WatchedPod::drop_unread`] clears must stop it clearing that field.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct WatchedPod {
    /// The Pod's metadata.
    pub metadata: ObjectMeta,
    /// The fields of the Pod's spec the operator reads.
    #[serde(default)]
    pub spec: Option<WatchedPodSpec>,
    /// The Pod's status (in the store, without what [`WatchedPod::drop_unread`] clears).
    #[serde(default)]
    pub status: Option<PodStatus>,
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
            status: pod.status,
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
    /// Drops what the operator never reads of a watched Pod, before the store holds it: the
    /// annotations (the operator reads the Instance's), `generateName`, and of the status
    /// the host and Pod IP lists, the QoS class, the nominated Node, resize and resource
    /// claim statuses, the init and ephemeral containers' statuses, and each container's
    /// image name and ID, container ID, resources, volume mounts and user. The phase, reason,
    /// Pod IP, conditions and each container's name, readiness, restarts and states stay.
    pub fn drop_unread(&mut self) {
        self.metadata.annotations = None;
        self.metadata.generate_name = None;
        let Some(status) = self.status.as_mut() else {
            return;
        };
        status.host_ip = None;
        status.host_ips = None;
        status.pod_ips = None;
        status.qos_class = None;
        status.nominated_node_name = None;
        status.resize = None;
        status.resource_claim_statuses = None;
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
        status.extended_resource_claim_status = None;
        for c in status.container_statuses.iter_mut().flatten() {
            c.image = String::new();
            c.image_id = String::new();
            c.container_id = None;
            c.resources = None;
            c.allocated_resources = None;
            c.allocated_resources_status = None;
            c.volume_mounts = None;
            c.user = None;
        }
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
        assert_eq!(watched.status, pod.status);
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
            std::mem::size_of::<WatchedPod>() < 1024,
            "{} bytes inline",
            std::mem::size_of::<WatchedPod>()
        );
    }

    #[test]
    fn dropping_the_unread_parts_keeps_what_the_health_evaluator_reads() {
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
                                             {"name": "side", "image": "envoy", "ready": false,
                           "restartCount": 0,
                           "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}
        });
        let whole: WatchedPod = serde_json::from_value(json).unwrap();
        let mut kept = whole.clone();
        kept.drop_unread();
        let metadata = ObjectMeta {
            annotations: None,
            generate_name: None,
            ..whole.metadata.clone()
        };
        assert_eq!(
            kept.metadata, metadata,
            "only the annotations and generateName go"
        );
        assert_eq!(
            crate::controller::instance::pod_facts(Some(&kept)),
            crate::controller::instance::pod_facts(Some(&whole))
        );
        assert_eq!(kept.spec, whole.spec);
        let (k, w) = (kept.status.unwrap(), whole.status.unwrap());
        assert_eq!(
            (&k.phase, &k.reason, &k.pod_ip, &k.conditions),
            (&w.phase, &w.reason, &w.pod_ip, &w.conditions)
        );
        assert_eq!((k.pod_ips, k.host_ip, k.qos_class), (None, None, None));
        assert_eq!(k.init_container_statuses, None);
        let (kept, whole) = (k.container_statuses.unwrap(), w.container_statuses.unwrap());
        assert_eq!(kept.len(), whole.len());
        for (kc, wc) in kept.iter().zip(&whole) {
            assert_eq!(
                (&kc.name, kc.ready, kc.restart_count, kc.started),
                (&wc.name, wc.ready, wc.restart_count, wc.started)
            );
            assert_eq!((&kc.state, &kc.last_state), (&wc.state, &wc.last_state));
            assert_eq!((kc.image.as_str(), &kc.container_id), ("", &None));
            assert_eq!(kc.volume_mounts, None);
        }
    }
}
