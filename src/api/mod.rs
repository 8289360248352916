//! The user-facing API: the `ScalingGroup` and `Instance` custom resources, their labels and
//! annotations, and helpers and types shared by every part of the operator (such as
//! [`WatchedPod`], a Pod as the operator keeps it).

pub mod annotations;
pub mod conditions;
pub mod instance;
pub mod names;
pub mod scaling_group;
pub mod types;
pub mod watched_pod;

pub use instance::*;
pub use names::*;
pub use scaling_group::*;
pub use types::{HookResult, HookTransition};
pub use watched_pod::{WatchedContainerStatus, WatchedPod, WatchedPodSpec, WatchedPodStatus};

use kube::CustomResourceExt;

/// The label selector of a group's Instances and Pods.
pub fn group_selector(group: &str) -> String {
    format!("{LABEL_GROUP}={group}")
}

/// Each CRD as `(file name, YAML)`: what `make crds` writes to `crds/`.
pub fn crd_files() -> anyhow::Result<Vec<(&'static str, String)>> {
    Ok(vec![
        (
            "scalinggroups.yaml",
            serde_yaml::to_string(&ScalingGroup::crd())?,
        ),
        ("instances.yaml", serde_yaml::to_string(&Instance::crd())?),
    ])
}

/// Both CRDs as a multi-document YAML stream (what `autoheal crds` prints).
pub fn crds_yaml() -> anyhow::Result<String> {
    Ok(crd_files()?
        .into_iter()
        .map(|(_, yaml)| yaml)
        .collect::<Vec<_>>()
        .join("---\n"))
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    /// Found by tests/chaos.rs: `maxInFlight: 1099511627776` passed the schema, was stored, and
    /// no client could read the group back (int-or-string holds 32 bits): the operator's
    /// ScalingGroup watch failed until the group was fixed.
    #[test]
    fn int_or_percent_rules_bound_the_integer_to_what_clients_can_read() {
        let crd = serde_json::to_value(super::ScalingGroup::crd()).unwrap();
        let replacement = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["replacement"]["properties"];
        for field in ["maxInFlight", "maxUnhealthy"] {
            let rule = replacement[field]["x-kubernetes-validations"][0]["rule"]
                .as_str()
                .unwrap_or_else(|| panic!("{field} has a rule"));
            assert!(rule.contains("self <= 10000"), "{field}: {rule}");
        }
    }

    #[test]
    fn a_pod_template_reads_and_writes_as_the_pod_template_spec_it_wraps() {
        let json = serde_json::json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]}
        });
        let template: super::PodTemplate = serde_json::from_value(json.clone()).unwrap();
        assert!(!template.is_left_out());
        assert_eq!(template.spec.as_ref().unwrap().containers[0].name, "web");
        assert_eq!(serde_json::to_value(&template).unwrap(), json);
        let left_out = super::PodTemplate::default();
        assert!(left_out.is_left_out() && left_out.spec.is_none());
        assert_eq!(
            serde_json::to_value(&left_out).unwrap(),
            serde_json::json!({})
        );
    }
}
