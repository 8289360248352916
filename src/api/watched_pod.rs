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
/// field must add it to [`WatchedPodSpec`].
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct WatchedPod {
    /// The Pod's metadata.
    pub metadata: ObjectMeta,
    /// The fields of the Pod's spec the operator reads.
    #[serde(default)]
    pub spec: Option<WatchedPodSpec>,
    /// The Pod's status, whole.
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
}
