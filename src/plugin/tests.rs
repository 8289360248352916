//! One test per sentence of the plugin's pure core, on hand-built objects.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::why::{BlockerKind, GroupFacts, instance_blockers, why_group, why_instance};
use super::*;
use crate::api::{Instance, ScalingGroup};

const NOW: &str = "2026-12-01T12:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn group_with(spec: Value, status: Value, annotations: Value) -> ScalingGroup {
    let mut base = json!({
        "minSize": 0, "maxSize": 10, "desiredCapacity": 3,
        "template": { "spec": { "podTemplate": { "spec": { "containers": [{ "name": "app" }] } } } },
        "healthCheck": { "gracePeriodSeconds": 0 },
    });
    merge(&mut base, spec);
    serde_json::from_value(json!({
        "apiVersion": "autoheal.dev/v1alpha1", "kind": "ScalingGroup",
        "metadata": { "name": "web", "namespace": "ns", "annotations": annotations,
                      "creationTimestamp": "2026-12-01T11:00:00Z" },
        "spec": base,
        "status": status,
    }))
    .unwrap()
}

fn group(spec: Value, status: Value) -> ScalingGroup {
    group_with(spec, status, json!({}))
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// An Instance InService since 11:00 with `health`/`detail`, and extra fields merged in.
fn instance(name: &str, health: &str, detail: &str, extra: Value) -> Instance {
    let mut v = json!({
        "apiVersion": "autoheal.dev/v1alpha1", "kind": "Instance",
        "metadata": { "name": name, "namespace": "ns", "creationTimestamp": "2026-12-01T11:00:00Z",
                      "annotations": {} },
        "spec": { "groupName": "web", "podTemplate": { "spec": { "containers": [{ "name": "app" }] } } },
        "status": {
            "lifecycleState": "InService", "healthStatus": health, "healthDetail": detail,
            "revision": "web-abc", "zone": "zone-a",
            "stateHistory": [{ "state": "InService", "enteredAt": "2026-12-01T11:00:00Z" }],
            "conditions": [
                { "type": "Healthy", "status": if health == "Healthy" { "True" } else { "False" },
                  "reason": if health == "Healthy" { "AllSignalsPass" } else { "ProbeFailed" },
                  "message": if health == "Healthy" { "all health signals pass" } else { "probe: HTTP 503 from 127.0.0.9:8080/, 3 consecutive failures" },
                  "lastTransitionTime": "2026-12-01T11:00:00Z" },
                { "type": "WorkloadHealthy", "status": "True", "reason": "PodRunning", "message": "Pod running on node-1", "lastTransitionTime": "2026-12-01T11:00:00Z" },
                { "type": "ProbeHealthy", "status": if health == "Healthy" { "True" } else { "False" }, "reason": "Probe", "message": "HTTP 503 from 127.0.0.9:8080/, 3 consecutive failures", "lastTransitionTime": "2026-12-01T11:00:00Z" },
                { "type": "CustomHealthy", "status": "True", "reason": "NoMark", "message": "no autoheal.dev/health annotation", "lastTransitionTime": "2026-12-01T11:00:00Z" },
            ],
        },
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn sick(name: &str) -> Instance {
    instance(name, "Unhealthy", "Impaired", json!({}))
}

fn well(name: &str) -> Instance {
    instance(name, "Healthy", "OK", json!({}))
}

fn kinds(blockers: &[why::Blocker]) -> Vec<BlockerKind> {
    blockers.iter().map(|b| b.kind).collect()
}

fn sentence(blockers: &[why::Blocker], kind: BlockerKind) -> String {
    blockers
        .iter()
        .find(|b| b.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} in {blockers:?}"))
        .sentence
        .clone()
}

#[test]
fn human_durations() {
    assert_eq!(human(0), "0s");
    assert_eq!(human(59), "59s");
    assert_eq!(human(60), "1m");
    assert_eq!(human(200), "3m20s");
    assert_eq!(human(7500), "2h5m");
    assert_eq!(human(90000), "1d1h");
    assert_eq!(
        time_left(now(), "2026-12-01T12:05:00Z".parse().unwrap()),
        "in 5m"
    );
    assert_eq!(
        time_left(now(), "2026-12-01T11:05:00Z".parse().unwrap()),
        "now"
    );
}

#[test]
fn targets_in_kubectl_spellings() {
    assert_eq!(
        Target::parse("inst/web-a"),
        Ok(Target::Instance("web-a".into()))
    );
    assert_eq!(
        Target::parse("Instances.autoheal.dev/web-a"),
        Ok(Target::Instance("web-a".into()))
    );
    assert_eq!(Target::parse("sg/web"), Ok(Target::Group("web".into())));
    assert_eq!(
        Target::parse("scalinggroup/web"),
        Ok(Target::Group("web".into()))
    );
    assert!(
        Target::parse("web")
            .unwrap_err()
            .contains("inst/web or sg/web")
    );
    assert!(
        Target::parse("pod/web")
            .unwrap_err()
            .contains("unknown kind")
    );
}

#[test]
fn healthy_instance_has_nothing_to_do() {
    let g = group(json!({}), json!({}));
    let i = well("web-a");
    let text = why_instance(&i, Some(&g), std::slice::from_ref(&i), &[], now());
    assert!(
        text.contains("Instance web-a (group web): InService, Healthy (OK)"),
        "{text}"
    );
    assert!(
        text.contains("Next: Nothing to do: it is InService and Healthy (all signals pass)."),
        "{text}"
    );
}

#[test]
fn unhealthy_instance_without_blockers_is_replaced_with_evidence_and_threshold() {
    let g = group(
        json!({ "healthCheck": { "probe": { "http": { "port": 8080, "path": "/healthz" }, "unhealthyThreshold": 3 } } }),
        json!({}),
    );
    let i = sick("web-a");
    let text = why_instance(&i, Some(&g), std::slice::from_ref(&i), &[], now());
    assert!(text.contains("Verdict: Unhealthy (ProbeFailed): probe: HTTP 503 from 127.0.0.9:8080/, 3 consecutive failures"), "{text}");
    assert!(text.contains("threshold: HTTP GET :8080/healthz expecting 200-399 every 10s, timeout 2s; Unhealthy after 3 consecutive failures, Healthy after 2 successes"), "{text}");
    assert!(text.contains("Next: The group replaces it (terminates it and launches a new Instance) at its next reconcile."), "{text}");
}

#[test]
fn grace_period_left() {
    let g = group(
        json!({ "healthCheck": { "gracePeriodSeconds": 300 } }),
        json!({}),
    );
    let i = instance(
        "web-a",
        "Healthy",
        "Initializing",
        json!({ "status": { "stateHistory": [{ "state": "InService", "enteredAt": "2026-12-01T11:58:00Z" }] } }),
    );
    let b = instance_blockers(&i, Some(&g), now());
    assert_eq!(
        sentence(&b, BlockerKind::GracePeriod),
        "In the health check grace period for another 3m (until 2026-12-01T12:03:00Z, gracePeriodSeconds 300): no health verdict replaces it before then."
    );
    let marked = instance(
        "web-a",
        "Healthy",
        "Initializing",
        json!({ "metadata": { "annotations": { "autoheal.dev/health": "Unhealthy" } },
                "status": { "stateHistory": [{ "state": "InService", "enteredAt": "2026-12-01T11:58:00Z" }] } }),
    );
    assert!(sentence(&instance_blockers(&marked, Some(&g), now()), BlockerKind::GracePeriod)
        .ends_with("It is marked Unhealthy by hand: the mark acts when the grace period ends (set-instance-health --respect-grace-period=false acts now)."));
}

#[test]
fn hooks_pending_with_timeout() {
    let g = group(
        json!({ "lifecycleHooks": [{ "name": "drain", "transition": "Terminate", "heartbeatTimeoutSeconds": 600, "defaultResult": "Continue" }] }),
        json!({}),
    );
    let i = instance(
        "web-a",
        "Unhealthy",
        "Impaired",
        json!({ "status": { "lifecycleState": "Terminating:Wait", "pendingHooks": [
            { "name": "drain", "transition": "Terminate", "startedAt": "2026-12-01T11:55:00Z", "deadline": "2026-12-01T12:05:00Z" }] } }),
    );
    let b = instance_blockers(&i, Some(&g), now());
    assert_eq!(
        sentence(&b, BlockerKind::HooksPending),
        "Waiting on the Terminate lifecycle hook \"drain\": it times out in 5m (at 2026-12-01T12:05:00Z, heartbeat timeout 600s) and then Continue applies; complete it now with kubectl annotate inst/web-a hooks.autoheal.dev/drain=Continue"
    );
    let text = why_instance(&i, Some(&g), std::slice::from_ref(&i), &[], now());
    assert!(
        text.contains(
            "Next: It is leaving (deletion requested): held by Terminate lifecycle hooks."
        ),
        "{text}"
    );
}

#[test]
fn draining_for_the_deregistration_delay() {
    let g = group(
        json!({ "replacement": { "deregistrationDelaySeconds": 120 } }),
        json!({}),
    );
    let i = instance(
        "web-a",
        "Unhealthy",
        "Impaired",
        json!({ "status": { "lifecycleState": "Terminating", "terminationReason": "Unhealthy",
                            "deregisteredAt": "2026-12-01T11:59:00Z" } }),
    );
    assert_eq!(
        sentence(
            &instance_blockers(&i, Some(&g), now()),
            BlockerKind::Draining
        ),
        "Draining: out of service since 2026-12-01T11:59:00Z; its Pod is terminated after the deregistration delay of 120s, in 1m (at 2026-12-01T12:01:00Z)."
    );
}

#[test]
fn paused_group() {
    let g = group_with(
        json!({}),
        json!({}),
        json!({ "autoheal.dev/paused": "true" }),
    );
    let i = sick("web-a");
    let text = why_instance(&i, Some(&g), std::slice::from_ref(&i), &[], now());
    assert!(text.contains("Next: The group would replace it (terminate it and launch a new Instance), but 1 reason keeps it from doing so now:"), "{text}");
    assert!(text.contains("  - The group web is paused (autoheal.dev/paused=true): nothing is repaired until the annotation is removed."), "{text}");
}

#[test]
fn suspended_process() {
    let g = group(
        json!({ "suspendedProcesses": ["ReplaceUnhealthy"] }),
        json!({}),
    );
    let b = GroupFacts::new(&g, &[sick("web-a")]).blockers(now());
    assert_eq!(
        sentence(&b, BlockerKind::Suspended),
        "The suspended process ReplaceUnhealthy (spec.suspendedProcesses): Unhealthy instances are not repaired; remove it from the list to resume."
    );
    let g = group(
        json!({ "suspendedProcesses": ["HealthCheck", "Launch"] }),
        json!({}),
    );
    assert_eq!(
        sentence(
            &GroupFacts::new(&g, &[]).blockers(now()),
            BlockerKind::Suspended
        ),
        "The suspended processes HealthCheck, Launch (spec.suspendedProcesses): health verdicts are shown but not acted on; remove them from the list to resume."
    );
}

#[test]
fn maintenance_and_standby() {
    let g = group(json!({}), json!({}));
    let m = instance(
        "web-a",
        "Healthy",
        "Maintaining",
        json!({ "metadata": { "annotations": { "autoheal.dev/maintenance": "true" } } }),
    );
    assert_eq!(
        sentence(
            &instance_blockers(&m, Some(&g), now()),
            BlockerKind::Maintenance
        ),
        "In maintenance (autoheal.dev/maintenance=true): never replaced, whatever its health; remove the annotation to end it."
    );
    let s = instance(
        "web-b",
        "Healthy",
        "NotApplicable",
        json!({ "metadata": { "annotations": { "autoheal.dev/standby": "true" } }, "status": { "lifecycleState": "Standby" } }),
    );
    assert_eq!(
        sentence(
            &instance_blockers(&s, Some(&g), now()),
            BlockerKind::Standby
        ),
        "In Standby (autoheal.dev/standby=true): out of service, still counted in capacity, and its health is not acted on; remove the annotation to return it to service."
    );
}

#[test]
fn breaker_too_many_unhealthy_with_numbers() {
    let g = group(
        json!({ "desiredCapacity": 4, "replacement": { "maxUnhealthy": "40%" } }),
        json!({}),
    );
    let all = [sick("web-a"), sick("web-b"), sick("web-c"), well("web-d")];
    let b = GroupFacts::new(&g, &all).blockers(now());
    assert_eq!(
        sentence(&b, BlockerKind::TooManyUnhealthy),
        "Circuit breaker open (TooManyUnhealthy): 3 instances are Unhealthy (web-a, web-b, web-c), more than maxUnhealthy 1 (40% of desired 4): nothing is replaced until at most 1 are Unhealthy."
    );
    let text = why_group(&g, &all, &[], now());
    assert!(
        text.contains(
            "Repair: 3 instances are Unhealthy (web-a, web-b, web-c), not repaired because:"
        ),
        "{text}"
    );
}

#[test]
fn max_in_flight_reached() {
    let g = group(json!({ "replacement": { "maxInFlight": 1 } }), json!({}));
    let leaving = instance(
        "web-a",
        "Unhealthy",
        "Impaired",
        json!({ "status": { "lifecycleState": "Terminating", "terminationReason": "Unhealthy" } }),
    );
    let all = [leaving, sick("web-b"), well("web-c")];
    let b = GroupFacts::new(&g, &all).blockers(now());
    assert_eq!(kinds(&b), vec![BlockerKind::MaxInFlight]);
    assert_eq!(
        sentence(&b, BlockerKind::MaxInFlight),
        "maxInFlight reached: 1 of 1 repair in flight (web-a); web-b waits for one to finish."
    );
    let text = why_instance(&all[1], Some(&g), &all, &[], now());
    assert!(text.contains("  - maxInFlight reached"), "{text}");
}

#[test]
fn backing_off_until() {
    let status = json!({
        "consecutiveReplacementFailures": 2,
        "lastReplacementTime": "2026-12-01T11:59:50Z",
        "conditions": [{ "type": "ReplacementAllowed", "status": "True", "reason": "BackingOff",
            "message": "2 replacement(s) in a row failed (maxConsecutiveFailures 3): the next replacement waits until 2026-12-01T12:00:10Z; Unhealthy: web-a (maxUnhealthy unlimited, maxInFlight 1)",
            "lastTransitionTime": "2026-12-01T11:59:50Z" }],
    });
    let g = group(json!({}), status);
    let b = GroupFacts::new(&g, &[sick("web-a")]).blockers(now());
    assert_eq!(
        sentence(&b, BlockerKind::BackingOff),
        "Backing off after 2 failed replacements in a row: the next replacement waits until 2026-12-01T12:00:10Z (in 10s)."
    );
    // Without the operator's word, the default backoff: 10s × 2^(2-1) after the last start.
    let g = group(
        json!({}),
        json!({ "consecutiveReplacementFailures": 2, "lastReplacementTime": "2026-12-01T11:59:50Z" }),
    );
    assert_eq!(
        sentence(
            &GroupFacts::new(&g, &[sick("web-a")]).blockers(now()),
            BlockerKind::BackingOff
        ),
        "Backing off after 2 failed replacements in a row: the next replacement waits until 2026-12-01T12:00:10Z (in 10s)."
    );
}

#[test]
fn replacements_keep_failing() {
    let g = group(
        json!({}),
        json!({ "consecutiveReplacementFailures": 3, "recentReplacementFailures": ["web-x", "web-y", "web-z"] }),
    );
    assert_eq!(
        sentence(
            &GroupFacts::new(&g, &[sick("web-a")]).blockers(now()),
            BlockerKind::KeepsFailing
        ),
        "Replacement is stopped: 3 replacements in a row (web-x, web-y, web-z) were Unhealthy when their grace period ended (maxConsecutiveFailures 3); fix the template, or annotate the group autoheal.dev/reset-replacement-failures=<new value> to try again."
    );
}

#[test]
fn dry_run_from_a_hand_built_status() {
    let g = group(
        json!({ "repair": { "mode": "DryRun", "actions": [{ "action": "Restart", "timeoutSeconds": 30 }, { "action": "Replace" }] } }),
        json!({ "wouldRepair": [{ "instance": "web-a", "action": "Restart", "reason": "probe: HTTP 503" }] }),
    );
    let i = sick("web-a");
    let text = why_instance(&i, Some(&g), std::slice::from_ref(&i), &[], now());
    assert!(text.contains("Next: The group would restart its Pod in place (repair action Restart), but 1 reason keeps it from doing so now:"), "{text}");
    assert!(text.contains("  - Dry run (spec.repair.mode: DryRun): repairs are planned and reported in status.wouldRepair, never taken (it would now: Restart web-a); set spec.repair.mode to Auto to act."), "{text}");
    let text = why_group(&g, std::slice::from_ref(&i), &[], now());
    assert!(
        text.contains("repair Restart then Replace (DryRun)"),
        "{text}"
    );
}

#[test]
fn group_not_ready_refresh_waiting_at_a_checkpoint() {
    let g = group(
        json!({}),
        json!({
            "currentRevision": "web-new",
            "conditions": [{ "type": "Ready", "status": "False", "reason": "Refreshing", "message": "ready: Refreshing", "lastTransitionTime": "2026-12-01T11:00:00Z" }],
            "refresh": { "status": "InProgress", "targetRevision": "web-new", "percentageComplete": 50, "instancesToUpdate": 1,
                         "checkpoint": 50, "checkpointUntil": "2026-12-01T12:10:00Z", "message": "waiting at checkpoint 50%" },
        }),
    );
    let text = why_group(&g, &[well("web-a")], &[], now());
    assert!(
        text.contains("ScalingGroup web: not Ready (Refreshing): ready: Refreshing"),
        "{text}"
    );
    assert!(text.contains("Refresh: to revision web-new is InProgress (50% complete, 1 to update): waiting at checkpoint 50%"), "{text}");
    assert!(
        text.contains("  - It waits at checkpoint 50% until 2026-12-01T12:10:00Z (in 10m)."),
        "{text}"
    );
}

#[test]
fn group_instances_listed_with_their_own_blockers() {
    let g = group(
        json!({ "healthCheck": { "gracePeriodSeconds": 300 } }),
        json!({}),
    );
    let m = instance(
        "web-a",
        "Healthy",
        "Maintaining",
        json!({ "metadata": { "annotations": { "autoheal.dev/maintenance": "true" } } }),
    );
    let text = why_group(&g, &[m, well("web-b")], &[], now());
    assert!(
        text.contains(
            "Instances not InService, Healthy and OK:\n  web-a InService Healthy Maintaining"
        ),
        "{text}"
    );
    assert!(
        text.contains("    - In maintenance (autoheal.dev/maintenance=true)"),
        "{text}"
    );
    assert!(text.contains("Repair: nothing to repair."), "{text}");
}

#[test]
fn history_table_newest_first_and_event_fallback() {
    let g = group(
        json!({}),
        json!({ "remediations": [
            { "instance": "web-b", "action": "Replace", "step": 1, "reason": "ProbeFailed: HTTP 503", "started": "2026-12-01T11:58:00Z", "outcome": "InProgress", "replacement": "web-c" },
            { "instance": "web-b", "action": "Restart", "step": 0, "reason": "ProbeFailed: HTTP 503", "started": "2026-12-01T11:50:00Z", "finished": "2026-12-01T11:52:00Z", "outcome": "Escalated" },
        ] }),
    );
    let text = history::history(&g, &[], now());
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("STARTED"), "{text}");
    assert!(
        lines[1].contains("web-b")
            && lines[1].contains("Replace")
            && lines[1].contains("InProgress")
            && lines[1].contains("2m so far")
            && lines[1].contains("web-c"),
        "{text}"
    );
    assert!(
        lines[2].contains("Restart") && lines[2].contains("Escalated") && lines[2].contains("2m"),
        "{text}"
    );

    let empty = group(json!({}), json!({}));
    assert_eq!(
        history::history(&empty, &[], now()),
        "No remediations recorded for group web.\n"
    );
    let events = [EventView {
        time: Some("2026-12-01T11:59:00Z".parse().unwrap()),
        type_: "Normal".into(),
        reason: "ReplacingUnhealthy".into(),
        message: "replacing web-a: probe: HTTP 503".into(),
        count: 1,
    }];
    let text = history::history(&empty, &events, now());
    assert!(text.contains("its repair Events, newest first"), "{text}");
    assert!(
        text.contains("1m ago  ReplacingUnhealthy  replacing web-a: probe: HTTP 503"),
        "{text}"
    );
}

#[test]
fn describe_groups_json_has_the_aws_shape() {
    let g = group(
        json!({ "suspendedProcesses": ["Launch"] }),
        json!({ "currentRevision": "web-abc" }),
    );
    let a = well("web-a");
    let b = sick("web-b");
    let with = [describe::GroupWithInstances {
        group: &g,
        instances: vec![&b, &a],
    }];
    let v = describe::json(&with);
    let asg = &v["AutoScalingGroups"][0];
    assert_eq!(asg["AutoScalingGroupName"], "web");
    assert_eq!(asg["DesiredCapacity"], 3);
    assert_eq!(asg["LaunchTemplate"]["Version"], "web-abc");
    assert_eq!(asg["SuspendedProcesses"][0]["ProcessName"], "Launch");
    let i = &asg["Instances"][1];
    assert_eq!(i["InstanceId"], "web-b");
    assert_eq!(i["HealthStatus"], "Unhealthy");
    assert_eq!(i["LifecycleState"], "InService");
    assert_eq!(i["ProtectedFromScaleIn"], false);
    assert_eq!(i["AvailabilityZone"], "zone-a");
    assert_eq!(i["LaunchTemplate"]["Version"], "web-abc");
    let t = describe::table_text(&with);
    assert!(t.contains("GROUP  MIN  MAX  DESIRED"), "{t}");
    assert!(
        t.contains("  web-b     InService  Unhealthy  zone-a  false      web-abc"),
        "{t}"
    );
}

#[test]
fn set_instance_health_patch_and_confirmation() {
    use health::{SetHealth, confirmation, patch, refuse};
    assert_eq!(
        patch(SetHealth::Unhealthy, false, Some(" disk full ")),
        json!({ "metadata": { "annotations": {
            "autoheal.dev/health": "Unhealthy",
            "autoheal.dev/health-reason": "disk full",
            "autoheal.dev/respect-grace-period": "false" } } })
    );
    assert_eq!(
        patch(SetHealth::Healthy, true, None),
        json!({ "metadata": { "annotations": {
            "autoheal.dev/health": "Healthy",
            "autoheal.dev/health-reason": null,
            "autoheal.dev/respect-grace-period": null } } })
    );
    assert_eq!(SetHealth::parse("unhealthy"), Some(SetHealth::Unhealthy));
    assert_eq!(SetHealth::parse("sick"), None);
    let leaving = instance(
        "web-a",
        "Unhealthy",
        "Impaired",
        json!({ "status": { "lifecycleState": "Terminating" } }),
    );
    assert_eq!(
        refuse(&leaving, SetHealth::Healthy).as_deref(),
        Some("instance web-a is already Terminating: it cannot be marked Healthy")
    );
    let g = group(
        json!({ "healthCheck": { "gracePeriodSeconds": 300 } }),
        json!({}),
    );
    let fresh = instance(
        "web-b",
        "Healthy",
        "Initializing",
        json!({ "status": { "stateHistory": [{ "state": "InService", "enteredAt": "2026-12-01T11:59:00Z" }] } }),
    );
    let text = confirmation(
        &fresh,
        Some(&g),
        SetHealth::Unhealthy,
        true,
        Some("disk full"),
        now(),
    );
    assert_eq!(
        text,
        "instance web-b marked Unhealthy (disk full)\nIt is in its health check grace period until 2026-12-01T12:04:00Z (in 4m): the mark acts then (--respect-grace-period=false acts now).\n"
    );
}

#[test]
fn request_refused_names_the_refusal() {
    let g = group(
        json!({}),
        json!({ "conditions": [{ "type": "Stalled", "status": "True", "reason": "RequestRefused",
            "message": "the API server refused to create Pod web-a (403 Forbidden)", "lastTransitionTime": "2026-12-01T11:00:00Z" }] }),
    );
    let i = well("web-a");
    let text = why_instance(&i, Some(&g), std::slice::from_ref(&i), &[], now());
    assert!(text.contains("  - The API server keeps refusing the operator's requests for group web (RBAC, validation or an admission policy): the API server refused to create Pod web-a (403 Forbidden)"), "{text}");
}

#[test]
fn healthy_instance_in_a_group_of_many_unhealthy_is_not_held_by_the_breaker() {
    let g = group(json!({ "replacement": { "maxUnhealthy": 0 } }), json!({}));
    let all = [sick("web-a"), well("web-b")];
    let text = why_instance(&all[1], Some(&g), &all, &[], now());
    assert!(!text.contains("Circuit breaker"), "{text}");
    let text = why_instance(&all[0], Some(&g), &all, &[], now());
    assert!(text.contains("  - Circuit breaker open (TooManyUnhealthy): 1 instance is Unhealthy (web-a), more than maxUnhealthy 0: nothing is replaced until at most 0 are Unhealthy."), "{text}");
}

#[test]
fn escalation_and_restarts_in_flight() {
    let actions = json!({ "repair": { "actions": [{ "action": "Restart", "timeoutSeconds": 30 }, { "action": "Replace" }] } });
    let g = group(
        actions.clone(),
        json!({ "remediations": [{ "instance": "web-a", "action": "Restart", "step": 0, "reason": "probe: HTTP 503",
            "started": "2026-12-01T11:50:00Z", "finished": "2026-12-01T11:52:00Z", "outcome": "Escalated" }] }),
    );
    let i = sick("web-a");
    let text = why_instance(&i, Some(&g), std::slice::from_ref(&i), &[], now());
    assert!(text.contains("Next: The group replaces it (terminates it and launches a new Instance), step 2 of spec.repair.actions after the previous one left it Unhealthy at its next reconcile."), "{text}");

    let g = group(
        actions,
        json!({ "remediations": [{ "instance": "web-a", "action": "Restart", "step": 0, "reason": "probe: HTTP 503",
            "started": "2026-12-01T11:59:00Z", "outcome": "InProgress" }] }),
    );
    let all = [sick("web-a"), sick("web-b")];
    let text = why_instance(&all[0], Some(&g), &all, &[], now());
    assert!(
        text.contains("Next: Being repaired: Restart (step 1) started 1m ago (probe: HTTP 503)."),
        "{text}"
    );
    let text = why_instance(&all[1], Some(&g), &all, &[], now());
    assert!(text.contains("  - maxInFlight reached: 1 of 1 repair in flight (web-a); web-b waits for one to finish."), "{text}");
    assert!(text.contains("Next: The group would restart its Pod in place (repair action Restart), but 1 reason keeps it"), "{text}");
}
