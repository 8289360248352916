//! The health engine end to end, against the real API server with podsim and the operator
//! as a child process: every podsim behavior makes an Instance Unhealthy/Impaired with the
//! right evidence and it recovers once healthy again; manual marks and the grace period;
//! maintenance and standby; a NotReady Node; a garbage annotation value. (That probing healthy
//! Instances writes nothing to the API is checked in `resilience.rs`.)
//!
//! Groups here suspend `ReplaceUnhealthy` (but for the garbage annotation's), so an Unhealthy
//! Instance stays to be watched (and can recover) instead of being replaced.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use autoheal::api::{HealthDetail, HealthStatus, Instance, LifecycleState, Process};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use support::*;
use testkit::wait_for;

const BEHAVIOR: &str = "podsim.autoheal.dev/behavior";

/// A group of `n` podsim Pods probed over HTTP every second (timeout 1 s, healthy after 2,
/// unhealthy after 2), grace period 0, replacement of unhealthy Instances suspended.
fn probed_group(name: &str, n: i32) -> GroupBuilder {
    GroupBuilder::new(name)
        .desired(n)
        .http_probe()
        .suspend(Process::ReplaceUnhealthy)
        .with_spec(|s| {
            let p = s.health_check.probe.as_mut().unwrap();
            p.healthy_threshold = 2;
            p.unhealthy_threshold = 2;
            s.health_check.grace_period_seconds = 0;
        })
}

fn health_of(i: &Instance) -> (Option<HealthStatus>, Option<HealthDetail>) {
    let s = i.status.as_ref();
    (
        s.and_then(|s| s.health_status),
        s.and_then(|s| s.health_detail),
    )
}

fn condition(i: &Instance, type_: &str) -> Option<Condition> {
    i.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

/// Waits until the Instance's health is `status`/`detail` and `check` accepts it.
async fn wait_health_where(
    env: &Env,
    name: &str,
    status: HealthStatus,
    detail: HealthDetail,
    what: &str,
    check: impl Fn(&Instance) -> bool,
) -> Instance {
    let api = env.instances();
    let mut last = None;
    let found = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Ok(Some(i)) = api.get_opt(name).await {
                if health_of(&i) == (Some(status), Some(detail)) && check(&i) {
                    return i;
                }
                last = Some(i);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "Instance {name} never became {status:?}/{detail:?} ({what}); last seen: {:#?}",
            last.and_then(|i| i.status)
        )
    })
}

async fn wait_health(
    env: &Env,
    name: &str,
    status: HealthStatus,
    detail: HealthDetail,
) -> Instance {
    wait_health_where(env, name, status, detail, "", |_| true).await
}

/// Waits until the Instance's condition `type_` has `status`, `reason` and a message that
/// contains `evidence`, with the health `status`/`detail`.
async fn wait_evidence(
    env: &Env,
    name: &str,
    health: (HealthStatus, HealthDetail),
    (type_, status, reason, evidence): (&str, &str, &str, &str),
) -> Instance {
    wait_health_where(
        env,
        name,
        health.0,
        health.1,
        &format!("{type_}={status} {reason} with {evidence:?}"),
        |i| {
            condition(i, type_).is_some_and(|c| {
                c.status == status && c.reason == reason && c.message.contains(evidence)
            })
        },
    )
    .await
}

async fn wait_event(env: &Env, name: &str, type_: &str, contains: &str) -> Event {
    wait_for(
        &format!("a {type_} Event about {name} containing {contains:?}"),
        TIMEOUT,
        || async {
            env.events_about(name).await.into_iter().find(|e| {
                e.type_.as_deref() == Some(type_)
                    && e.note.as_deref().is_some_and(|n| n.contains(contains))
            })
        },
    )
    .await
}

/// Every probe behavior of podsim (and a crash) makes its Instance Unhealthy/Impaired with
/// the evidence in its condition; the probed ones recover after `healthyThreshold` once
/// healthy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podsim_behaviors_impair_with_evidence_and_recover() {
    let env = Env::new("health-behaviors").await;
    let _op = env.operator();
    env.apply_group(&probed_group("web", 4).build()).await;
    let instances = env.wait_in_service("web", 4).await;
    let names: Vec<String> = instances.iter().map(|i| i.name_any()).collect();
    for n in &names {
        wait_health(&env, n, HealthStatus::Healthy, HealthDetail::OK).await;
    }
    let cases = [
        ("fail", "UnexpectedStatus", "HTTP 503 from"),
        ("hang", "Timeout", "timeout after 1s"),
        ("refuse", "ConnectionRefused", "connection refused"),
    ];
    for ((behavior, _, _), name) in cases.iter().zip(&names) {
        env.set_pod_behavior(name, behavior).await;
    }
    env.set_pod_behavior(&names[3], "crash").await;

    for ((_, reason, evidence), name) in cases.iter().zip(&names) {
        let i = wait_evidence(
            &env,
            name,
            (HealthStatus::Unhealthy, HealthDetail::Impaired),
            ("ProbeHealthy", "False", reason, evidence),
        )
        .await;
        let probe = condition(&i, "ProbeHealthy").unwrap();
        assert!(
            probe.message.contains("2 consecutive failures"),
            "the threshold count is in the evidence: {probe:?}"
        );
        let healthy = condition(&i, "Healthy").unwrap();
        assert_eq!(healthy.status, "False");
        assert!(healthy.message.contains(evidence), "{healthy:?}");
    }
    wait_evidence(
        &env,
        &names[3],
        (HealthStatus::Unhealthy, HealthDetail::Impaired),
        ("WorkloadHealthy", "False", "PodFailed", "phase Failed"),
    )
    .await;

    for ((_, _, _), name) in cases.iter().zip(&names) {
        env.set_pod_behavior(name, "healthy").await;
    }
    for name in &names[..3] {
        let i = wait_health(&env, name, HealthStatus::Healthy, HealthDetail::OK).await;
        let probe = condition(&i, "ProbeHealthy").unwrap();
        assert_eq!(probe.status, "True", "{probe:?}");
        assert!(
            probe.message.contains("2 consecutive successes"),
            "{probe:?}"
        );
    }
    // Each transition was an Event carrying the evidence.
    wait_event(&env, &names[0], "Warning", "HTTP 503").await;
    wait_event(&env, &names[1], "Warning", "timeout after 1s").await;
    wait_event(&env, &names[0], "Normal", "Unhealthy/Impaired → Healthy").await;
}

/// A Pod that stays Pending past `startupTimeoutSeconds` makes its Instance Impaired; once it
/// runs, the Instance goes into service and becomes Healthy/OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_past_the_startup_timeout_is_impaired() {
    let env = Env::new("health-slow").await;
    let _op = env.operator();
    let group = probed_group("slow", 1)
        .pod_annotation(BEHAVIOR, "slow-start=12")
        .with_spec(|s| s.health_check.startup_timeout_seconds = 3);
    env.apply_group(&group.build()).await;
    let name = wait_for("the Instance of group slow", TIMEOUT, || async {
        env.group_instances("slow")
            .await
            .first()
            .map(|i| i.name_any())
    })
    .await;
    let i = wait_evidence(
        &env,
        &name,
        (HealthStatus::Unhealthy, HealthDetail::Impaired),
        (
            "WorkloadHealthy",
            "False",
            "StartupTimeout",
            "past the startup timeout of 3s",
        ),
    )
    .await;
    assert!(
        condition(&i, "WorkloadHealthy")
            .unwrap()
            .message
            .contains("Pending"),
        "{:?}",
        condition(&i, "WorkloadHealthy")
    );
    wait_health(&env, &name, HealthStatus::Healthy, HealthDetail::OK).await;
}

/// A manual Unhealthy acts at once outside the grace period, waits inside it, and acts inside
/// it with `respect-grace-period=false`; a manual Healthy clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_marks_and_the_grace_period() {
    let env = Env::new("health-manual").await;
    let _op = env.operator();
    let prompt = GroupBuilder::new("prompt")
        .desired(1)
        .suspend(Process::ReplaceUnhealthy);
    let graced = GroupBuilder::new("graced")
        .desired(1)
        .suspend(Process::ReplaceUnhealthy)
        .with_spec(|s| s.health_check.grace_period_seconds = 3600);
    env.apply_group(&prompt.build()).await;
    env.apply_group(&graced.build()).await;
    let p = env.wait_in_service("prompt", 1).await[0].name_any();
    let g = env.wait_in_service("graced", 1).await[0].name_any();
    wait_health(&env, &p, HealthStatus::Healthy, HealthDetail::OK).await;
    wait_health(&env, &g, HealthStatus::Healthy, HealthDetail::Initializing).await;

    // Outside the grace period: at once, with the reason in the message.
    env.annotate_instance(&p, "autoheal.dev/health-reason", Some("disk full"))
        .await;
    env.annotate_instance(&p, "autoheal.dev/health", Some("Unhealthy"))
        .await;
    wait_evidence(
        &env,
        &p,
        (HealthStatus::Unhealthy, HealthDetail::Impaired),
        ("CustomHealthy", "False", "MarkedUnhealthy", "disk full"),
    )
    .await;
    // SetInstanceHealth Healthy: the last set value wins.
    env.annotate_instance(&p, "autoheal.dev/health", Some("Healthy"))
        .await;
    wait_evidence(
        &env,
        &p,
        (HealthStatus::Healthy, HealthDetail::OK),
        ("CustomHealthy", "True", "MarkedHealthy", "marked Healthy"),
    )
    .await;

    // Inside the grace period: the mark is seen (the condition says so) but waits.
    env.annotate_instance(&g, "autoheal.dev/health", Some("Unhealthy"))
        .await;
    wait_evidence(
        &env,
        &g,
        (HealthStatus::Healthy, HealthDetail::Initializing),
        (
            "CustomHealthy",
            "False",
            "MarkedUnhealthy",
            "waits for the grace period to end",
        ),
    )
    .await;
    // respect-grace-period=false: acts now.
    env.annotate_instance(&g, "autoheal.dev/respect-grace-period", Some("false"))
        .await;
    wait_evidence(
        &env,
        &g,
        (HealthStatus::Unhealthy, HealthDetail::Impaired),
        (
            "CustomHealthy",
            "False",
            "MarkedUnhealthy",
            "respect-grace-period=false",
        ),
    )
    .await;
}

/// Maintenance → Maintaining (even while failing); standby → NotApplicable and out of service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_and_standby() {
    let env = Env::new("health-maint").await;
    let _op = env.operator();
    env.apply_group(&probed_group("web", 2).build()).await;
    let names: Vec<String> = env
        .wait_in_service("web", 2)
        .await
        .iter()
        .map(|i| i.name_any())
        .collect();
    for n in &names {
        wait_health(&env, n, HealthStatus::Healthy, HealthDetail::OK).await;
    }
    let (m, s) = (&names[0], &names[1]);

    env.annotate_instance(m, "autoheal.dev/maintenance", Some("true"))
        .await;
    wait_health(&env, m, HealthStatus::Healthy, HealthDetail::Maintaining).await;
    // Failing while in maintenance: the evidence shows, the verdict stays Maintaining.
    env.set_pod_behavior(m, "fail").await;
    wait_evidence(
        &env,
        m,
        (HealthStatus::Healthy, HealthDetail::Maintaining),
        ("ProbeHealthy", "False", "UnexpectedStatus", "HTTP 503"),
    )
    .await;

    env.annotate_instance(s, "autoheal.dev/standby", Some("true"))
        .await;
    wait_health(&env, s, HealthStatus::Healthy, HealthDetail::NotApplicable).await;
    env.wait_instance_state(s, LifecycleState::Standby).await;
    let pods: Api<Pod> = env.pods();
    wait_for(&format!("Pod {s} out of service"), TIMEOUT, || async {
        let p = pods.get_opt(s).await.ok().flatten()?;
        (!pod_in_service(&p)).then_some(())
    })
    .await;
}

/// The Pod's Node turning NotReady makes the Instance Impaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_not_ready_impairs() {
    let env = Env::new("health-node").await;
    let _op = env.operator();
    env.apply_group(
        &GroupBuilder::new("web")
            .desired(1)
            .suspend(Process::ReplaceUnhealthy)
            .build(),
    )
    .await;
    let name = env.wait_in_service("web", 1).await[0].name_any();
    wait_health(&env, &name, HealthStatus::Healthy, HealthDetail::OK).await;
    let pod = env.pods().get(&name).await.unwrap();
    let node = pod
        .spec
        .and_then(|s| s.node_name)
        .expect("the Pod is bound to a Node");
    let nodes: Api<Node> = Api::all(env.client.clone());
    nodes
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": { "annotations": { BEHAVIOR: "notready" } }
            })),
        )
        .await
        .unwrap();
    let i = wait_health_where(
        &env,
        &name,
        HealthStatus::Unhealthy,
        HealthDetail::Impaired,
        "WorkloadHealthy=False NodeNotReady/NodeUnknown",
        |i| {
            condition(i, "WorkloadHealthy").is_some_and(|c| {
                c.status == "False" && (c.reason == "NodeNotReady" || c.reason == "NodeUnknown")
            })
        },
    )
    .await;
    let w = condition(&i, "WorkloadHealthy").unwrap();
    assert!(w.message.contains(&node), "{w:?}");
}

/// A value that cannot be understood never acts: Warning Event and condition message, and —
/// watched from before the annotation until the Instance has been reconciled several times
/// with it, past its grace period and with replacement of Unhealthy Instances not suspended —
/// its health never turns Unhealthy and neither it nor its Pod is deleted or replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_annotation_warns_and_never_acts() {
    let env = Env::new("health-garbage").await;
    let op = env.operator();
    // Not `probed_group`: ReplaceUnhealthy stays on, so acting on the value as Unhealthy would
    // replace the Instance (grace period 0: it would act at once).
    env.apply_group(&GroupBuilder::new("web").desired(1).http_probe().build())
        .await;
    let name = env.wait_in_service("web", 1).await[0].name_any();
    wait_health(&env, &name, HealthStatus::Healthy, HealthDetail::OK).await;

    // Every version of the Instance from here on.
    let seen: Arc<Mutex<Vec<Instance>>> = Arc::default();
    let watch = {
        let seen = seen.clone();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let stream = watcher::watcher(env.instances(), config).touched_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(i) = stream.next().await {
                if let Ok(i) = i {
                    seen.lock().unwrap().push(i);
                }
            }
        })
    };
    wait_for("the watch to list the Instance", TIMEOUT, || async {
        (!seen.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    let from = env.audit_end();

    env.annotate_instance(&name, "autoheal.dev/health", Some("kaputt!"))
        .await;
    wait_event(&env, &name, "Warning", "kaputt!").await;
    let i = wait_evidence(
        &env,
        &name,
        (HealthStatus::Healthy, HealthDetail::OK),
        (
            "CustomHealthy",
            "True",
            "AnnotationNotUnderstood",
            "autoheal.dev/health=\"kaputt!\"",
        ),
    )
    .await;
    assert_eq!(state_of(&i), Some(LifecycleState::InService));
    // Several more reconciles of the Instance with the value on it: each change of another
    // annotation makes one.
    for poke in 1..=3 {
        let done = op.reconciles("instance").await.expect("metrics");
        env.annotate_instance(&name, "autoheal-tests/poke", Some(&poke.to_string()))
            .await;
        wait_for("a reconcile of the poked Instance", TIMEOUT, || async {
            (op.reconciles("instance").await? > done).then_some(())
        })
        .await;
    }
    env.flush_audit().await;
    watch.abort();

    let versions = seen.lock().unwrap().clone();
    assert!(
        versions.len() >= 5,
        "the watch saw the annotation and the pokes: {} versions",
        versions.len()
    );
    for v in &versions {
        assert_ne!(
            health_of(v).0,
            Some(HealthStatus::Unhealthy),
            "the garbage value was acted on: {:#?}",
            v.status
        );
        assert_eq!(state_of(v), Some(LifecycleState::InService));
        assert!(v.metadata.deletion_timestamp.is_none());
    }
    let (writes, _) = env.writes_after(from);
    let replaced: Vec<_> = writes
        .iter()
        .filter(|w| {
            (w.resource == "instances" || w.resource == "pods")
                && w.subresource.is_empty()
                && (w.verb == "delete" || w.verb == "create")
        })
        .collect();
    assert!(
        replaced.is_empty(),
        "Instances or Pods created or deleted: {replaced:#?}"
    );
    let all = env.group_instances("web").await;
    assert_eq!(
        all.iter().map(|i| i.name_any()).collect::<Vec<_>>(),
        vec![name],
        "the same single Instance"
    );
}

/// A repeated Event is one Event on the API server whose `series` counts the repeats: the
/// series bumps (merge patches built from what the sink remembers of the first Event) are
/// accepted by the real API server, one after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_events_count_in_the_series_of_one_event() {
    use autoheal::controller::events::EventSink;
    use k8s_openapi::api::core::v1::ObjectReference;
    let cp = testkit::ControlPlane::shared().await;
    let client = cp.client().await;
    let ns = testkit::test_namespace(&client, "event-series").await;
    let sink = EventSink::new(
        client.clone(),
        "test",
        Arc::new(autoheal::clock::SystemClock),
    );
    let regarding = ObjectReference {
        kind: Some("ConfigMap".into()),
        namespace: Some(ns.clone()),
        name: Some("repeated".into()),
        uid: Some("0e7c1c1e-0000-4000-8000-000000000001".into()),
        api_version: Some("v1".into()),
        ..ObjectReference::default()
    };
    for _ in 0..3 {
        sink.normal(&regarding, "Repeated", "Test", "the same note".into())
            .await;
        assert!(sink.flush(TIMEOUT).await, "the write went out");
    }
    let events: Api<Event> = Api::namespaced(client, &ns);
    let repeated: Vec<Event> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Repeated"))
        .collect();
    assert_eq!(repeated.len(), 1, "one Event: {repeated:#?}");
    let e = &repeated[0];
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(3), "{e:#?}");
    assert_eq!(e.note.as_deref(), Some("the same note"));
    assert_eq!(
        e.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("repeated")
    );
}
