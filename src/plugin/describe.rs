//! `kubectl autoheal describe-groups [NAME] -o json|table`, in the response shape of
//! `aws autoscaling describe-auto-scaling-groups`: `AutoScalingGroups[].Instances[]` with
//! `InstanceId`, `HealthStatus`, `LifecycleState`, `ProtectedFromScaleIn`, `AvailabilityZone`,
//! and the revision as the launch template version.

use serde_json::{Value, json};

use super::table;
use crate::api::{HealthStatus, Instance, LifecycleState, ScalingGroup};

/// One group with its Instances (all of them, read from the Instance objects).
pub struct GroupWithInstances<'a> {
    /// The group.
    pub group: &'a ScalingGroup,
    /// Its Instances.
    pub instances: Vec<&'a Instance>,
}

fn health(i: &Instance) -> &'static str {
    match i.status.as_ref().and_then(|s| s.health_status) {
        Some(HealthStatus::Unhealthy) => "Unhealthy",
        _ => "Healthy",
    }
}

fn state(i: &Instance) -> &'static str {
    i.status
        .as_ref()
        .and_then(|s| s.lifecycle_state)
        .unwrap_or(LifecycleState::Pending)
        .as_str()
}

fn zone(i: &Instance) -> String {
    i.status
        .as_ref()
        .and_then(|s| s.zone.clone())
        .unwrap_or_default()
}

fn revision(i: &Instance) -> Option<String> {
    i.status.as_ref().and_then(|s| s.revision.clone())
}

fn sorted<'a>(instances: &[&'a Instance]) -> Vec<&'a Instance> {
    let mut v = instances.to_vec();
    v.sort_by_key(|i| i.metadata.name.clone());
    v
}

/// The JSON response (`{"AutoScalingGroups": [...]}`).
pub fn json(groups: &[GroupWithInstances<'_>]) -> Value {
    let groups: Vec<Value> = groups
        .iter()
        .map(|g| {
            let name = g.group.metadata.name.clone().unwrap_or_default();
            let spec = &g.group.spec;
            let status = g.group.status.clone().unwrap_or_default();
            let instances: Vec<Value> = sorted(&g.instances)
                .iter()
                .map(|i| {
                    json!({
                        "InstanceId": i.metadata.name.clone().unwrap_or_default(),
                        "AvailabilityZone": zone(i),
                        "LifecycleState": state(i),
                        "HealthStatus": health(i),
                        "HealthDetail": i.status.as_ref().and_then(|s| s.health_detail).map(|d| format!("{d:?}")),
                        "ProtectedFromScaleIn": i.spec.protected_from_scale_in,
                        "LaunchTemplate": {
                            "LaunchTemplateName": name,
                            "Version": revision(i),
                        },
                    })
                })
                .collect();
            let zones: std::collections::BTreeSet<String> = g
                .instances
                .iter()
                .map(|i| zone(i))
                .filter(|z| !z.is_empty())
                .collect();
            json!({
                "AutoScalingGroupName": name,
                "Namespace": g.group.metadata.namespace,
                "MinSize": spec.min_size,
                "MaxSize": spec.max_size,
                "DesiredCapacity": spec.effective_desired(),
                "HealthCheckGracePeriod": spec.health_check.grace_period_seconds,
                "HealthCheckType": if spec.health_check.probe.is_some() { "ELB" } else { "EC2" },
                "AvailabilityZones": zones,
                "CreatedTime": g.group.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
                "LaunchTemplate": {
                    "LaunchTemplateName": name,
                    "Version": status.current_revision,
                },
                "Instances": instances,
                "SuspendedProcesses": spec.suspended_processes.iter().map(|p| json!({
                    "ProcessName": format!("{p:?}"),
                    "SuspensionReason": "spec.suspendedProcesses",
                })).collect::<Vec<_>>(),
                "TerminationPolicies": [format!("{:?}", spec.scale_in.policy)],
                "MaxInstanceLifetime": spec.max_instance_lifetime_seconds,
                "Status": g.group.metadata.deletion_timestamp.as_ref().map(|_| "Delete in progress"),
            })
        })
        .collect();
    json!({ "AutoScalingGroups": groups })
}

/// The table: one line per group, then its Instances indented.
pub fn table_text(groups: &[GroupWithInstances<'_>]) -> String {
    if groups.is_empty() {
        return "No ScalingGroups found.\n".into();
    }
    let mut out = String::new();
    for g in groups {
        let spec = &g.group.spec;
        let status = g.group.status.clone().unwrap_or_default();
        out.push_str(&table(
            &[
                "GROUP",
                "MIN",
                "MAX",
                "DESIRED",
                "CURRENT",
                "INSERVICE",
                "HEALTHY",
                "UNHEALTHY",
                "REVISION",
            ],
            &[vec![
                g.group.metadata.name.clone().unwrap_or_default(),
                spec.min_size.to_string(),
                spec.max_size.to_string(),
                spec.effective_desired().to_string(),
                status.current_capacity.to_string(),
                status.in_service_instances.to_string(),
                status.healthy_instances.to_string(),
                status.unhealthy_instances.to_string(),
                status
                    .current_revision
                    .clone()
                    .unwrap_or_else(|| "-".into()),
            ]],
        ));
        let rows: Vec<Vec<String>> = sorted(&g.instances)
            .iter()
            .map(|i| {
                vec![
                    i.metadata.name.clone().unwrap_or_default(),
                    state(i).to_string(),
                    health(i).to_string(),
                    Some(zone(i))
                        .filter(|z| !z.is_empty())
                        .unwrap_or_else(|| "-".into()),
                    i.spec.protected_from_scale_in.to_string(),
                    revision(i).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        if rows.is_empty() {
            out.push_str("  (no instances)\n");
        } else {
            for l in table(
                &[
                    "INSTANCE",
                    "STATE",
                    "HEALTH",
                    "ZONE",
                    "PROTECTED",
                    "REVISION",
                ],
                &rows,
            )
            .lines()
            {
                out.push_str("  ");
                out.push_str(l);
                out.push('\n');
            }
        }
        out.push('\n');
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}
