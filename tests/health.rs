//! The health engine end to end, against the real API server with podsim and the operator
//! as a child process: every podsim behavior makes an Instance Unhealthy/Impaired with the
//! right evidence and it recovers once healthy again; manual marks and the grace period;
//! maintenance and standby; a NotReady Node; a garbage annotation value; and probing healthy
//! Instances writes nothing to the API.
//!
//! Groups here suspend `ReplaceUnhealthy`, so an Unhealthy Instance stays to be watched (and
//! can recover) instead of being replaced.

mod support;

use std::time::Duration;

use autoheal::api::{HealthDetail, HealthStatus, Instance, LifecycleState, Process};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
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

async fn set_pod_behavior(env: &Env, pod: &str, behavior: &str) {
    env.pods()
        .patch(
            pod,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": { "annotations": { BEHAVIOR: behavior } }
            })),
        )
        .await
        .unwrap_or_else(|e| panic!("annotating Pod {pod}: {e}"));
}

/// Events (events.k8s.io) about an Instance.
async fn events_about(env: &Env, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

async fn wait_event(env: &Env, name: &str, type_: &str, contains: &str) -> Event {
    wait_for(
        &format!("a {type_} Event about {name} containing {contains:?}"),
        TIMEOUT,
        || async {
            events_about(env, name).await.into_iter().find(|e| {
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
        set_pod_behavior(&env, name, behavior).await;
    }
    set_pod_behavior(&env, &names[3], "crash").await;

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
        set_pod_behavior(&env, name, "healthy").await;
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
    set_pod_behavior(&env, m, "fail").await;
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

/// A value that cannot be understood never acts: Warning Event and condition message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_annotation_warns_and_never_acts() {
    let env = Env::new("health-garbage").await;
    let _op = env.operator();
    env.apply_group(&probed_group("web", 1).build()).await;
    let name = env.wait_in_service("web", 1).await[0].name_any();
    wait_health(&env, &name, HealthStatus::Healthy, HealthDetail::OK).await;
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
}

/// The admin address the operator logged at start.
fn admin_addr(op: &Operator) -> Option<String> {
    // Without ANSI color sequences, should there be any.
    let mut log = String::new();
    let mut chars = op.log_tail(400).chars().collect::<Vec<_>>().into_iter();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            log.push(c);
        }
    }
    let line = log
        .lines()
        .find(|l| l.contains("admin endpoints listening"))?;
    let at = line.find("addr=")? + "addr=".len();
    Some(
        line[at..]
            .split_whitespace()
            .next()?
            .trim_matches('"')
            .to_string(),
    )
}

/// Sum of `autoheal_probe_results_total{kind="http",result="success"}` from /metrics.
async fn probe_successes(addr: &str) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    body.lines()
        .find(|l| l.starts_with("autoheal_probe_results_total{kind=\"http\",result=\"success\"}"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// Writes by anyone to this namespace's autoheal objects, Pods and Events (the leader Lease
/// is renewed on its own schedule, not per probe, and is left out).
fn namespace_writes(env: &Env) -> Vec<testkit::AuditWrite> {
    testkit::audit_writes(env.cp.audit_log_path())
        .into_iter()
        .filter(|w| w.namespace == env.ns && w.resource != "leases")
        .collect()
}

/// 60 seconds of probing 20 healthy Instances writes nothing to the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probing_healthy_instances_writes_nothing() {
    let env = Env::new("health-quiet").await;
    let op = env.operator();
    env.apply_group(&probed_group("web", 20).max(20).build())
        .await;
    let names: Vec<String> = env
        .wait_in_service("web", 20)
        .await
        .iter()
        .map(|i| i.name_any())
        .collect();
    for n in &names {
        wait_health(&env, n, HealthStatus::Healthy, HealthDetail::OK).await;
    }
    env.wait_group_condition("web", "Ready", "True").await;
    // Let trailing writes (group status, Events) settle: 5 s without a write.
    let mut seen = namespace_writes(&env).len();
    let mut quiet_since = tokio::time::Instant::now();
    let settle_deadline = tokio::time::Instant::now() + TIMEOUT;
    while quiet_since.elapsed() < Duration::from_secs(5) {
        assert!(
            tokio::time::Instant::now() < settle_deadline,
            "the namespace never went quiet: {:#?}",
            &namespace_writes(&env)[seen.saturating_sub(20)..]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = namespace_writes(&env).len();
        if now != seen {
            seen = now;
            quiet_since = tokio::time::Instant::now();
        }
    }
    assert!(
        seen > 20,
        "the audit filter sees the setup writes of this namespace (got {seen})"
    );
    let addr = admin_addr(&op).expect("the operator logs its admin address");
    let before = probe_successes(&addr).await.expect("probe metrics");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = probe_successes(&addr).await.expect("probe metrics");
    let writes = namespace_writes(&env);
    assert!(
        writes.len() == seen,
        "writes while probing healthy Instances: {:#?}",
        &writes[seen..]
    );
    // And probing did happen: ~20 probes/s for 60 s.
    assert!(
        after - before >= 20 * 50,
        "only {} successful probes in 60 s",
        after - before
    );
    for n in &names {
        let i = env.instance(n).await.unwrap();
        assert_eq!(
            health_of(&i),
            (Some(HealthStatus::Healthy), Some(HealthDetail::OK))
        );
    }
}
