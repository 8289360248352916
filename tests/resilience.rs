//! Crash safety and quietness against the real API server:
//! - the operator is killed with SIGKILL in Pending:Wait, Terminating and Terminating:Wait and
//!   restarted: it resumes from status — no step repeated or skipped, the deregistration delay
//!   still honoured, no orphan Pods, capacity converges;
//! - a settled group of 20 probed Instances causes no write to the API server for 60 seconds,
//!   nor after the operator is restarted.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use autoheal::api::{
    HealthDetail, HealthStatus, HookResult, HookTransition, Instance, LifecycleState,
};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use support::*;
use testkit::wait_for;

use LifecycleState::*;

fn history(i: &Instance) -> Vec<LifecycleState> {
    i.status
        .as_ref()
        .map(|s| s.state_history.iter().map(|e| e.state).collect())
        .unwrap_or_default()
}

/// The operator's write requests in the audit log (user agent `autoheal/…`).
fn operator_writes(env: &Env) -> Vec<testkit::AuditWrite> {
    testkit::audit_writes(env.cp.audit_log_path())
        .into_iter()
        .filter(|w| w.user_agent.starts_with("autoheal/") && w.namespace == env.ns)
        .collect()
}

fn at(w: &testkit::AuditWrite) -> Timestamp {
    w.request_received_timestamp.parse().unwrap()
}

/// SIGKILL in Pending:Wait, Terminating and Terminating:Wait; each time the restarted operator
/// resumes exactly where the status says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_every_waiting_state_resumes_from_status() {
    let env = Env::new("crash").await;
    let mut op = env.operator();
    let delay = 6;
    env.apply_group(
        &GroupBuilder::new("web")
            .desired(2)
            .deregistration_delay(delay)
            .hook("warm", HookTransition::Launch, 120, HookResult::Abandon)
            .hook("bye", HookTransition::Terminate, 120, HookResult::Abandon)
            .build(),
    )
    .await;

    // --- Pending:Wait ---
    let waiting = wait_for("two instances in Pending:Wait", TIMEOUT, || async {
        let all = env.group_instances("web").await;
        (all.len() == 2 && all.iter().all(|i| state_of(i) == Some(PendingWait))).then_some(all)
    })
    .await;
    op.sigkill();
    let before: BTreeMap<String, _> = waiting
        .iter()
        .map(|i| (i.name_any(), i.status.clone().unwrap()))
        .collect();
    op.restart();
    // The restarted operator has reconciled as many Instances as there are: it has looked at
    // each (it would re-record their history or hook deadlines then, were it not resuming
    // from status), and its writes are done.
    op.wait_instance_reconciles(before.len()).await;
    for (name, status) in &before {
        let now = env.instance(name).await.unwrap().status.unwrap();
        assert_eq!(
            now.state_history, status.state_history,
            "{name}: history kept"
        );
        assert_eq!(
            now.pending_hooks, status.pending_hooks,
            "{name}: hook deadlines kept"
        );
    }
    assert_eq!(
        env.group_instances("web").await.len(),
        2,
        "nothing launched twice"
    );
    for name in before.keys() {
        env.annotate_instance(name, "hooks.autoheal.dev/warm", Some("Continue"))
            .await;
    }
    let all = env.wait_in_service("web", 2).await;
    for i in &all {
        assert_eq!(history(i), vec![Pending, PendingWait, InService]);
    }

    // --- Terminating (killed during the deregistration delay) ---
    env.kubectl(&["-n", &env.ns, "scale", "sg/web", "--replicas=1"]);
    let leaving = wait_for("one instance deregistered", TIMEOUT, || async {
        let all = env.group_instances("web").await;
        all.into_iter().find(|i| {
            state_of(i) == Some(Terminating)
                && i.status
                    .as_ref()
                    .is_some_and(|s| s.deregistered_at.is_some())
        })
    })
    .await;
    op.sigkill();
    let name = leaving.name_any();
    let stayed = all
        .iter()
        .find(|i| i.name_any() != name)
        .unwrap()
        .name_any();
    let deregistered_at = leaving.status.as_ref().unwrap().deregistered_at.clone();
    // Killed (and reaped) inside the delay: the Instance is still deregistered in
    // Terminating, the delay's end not yet recorded.
    let now = env.instance(&name).await.unwrap();
    assert_eq!(
        state_of(&now),
        Some(Terminating),
        "killed inside the deregistration delay"
    );
    op.restart();
    op.wait_ready().await;
    let in_wait = env.wait_instance_state(&name, TerminatingWait).await;
    let st = in_wait.status.clone().unwrap();
    assert_eq!(
        st.deregistered_at, deregistered_at,
        "deregistration time kept"
    );
    assert_eq!(
        history(&in_wait),
        vec![
            Pending,
            PendingWait,
            InService,
            Terminating,
            TerminatingWait
        ]
    );
    let pod = env.pods().get(&name).await.unwrap();
    assert!(pod.metadata.deletion_timestamp.is_none());
    assert!(!pod_in_service(&pod));
    // The delay counted from the recorded time, across the crash.
    let entered_wait = st.entered(TerminatingWait).unwrap().0;
    assert!(
        entered_wait
            >= deregistered_at.clone().unwrap().0 + SignedDuration::from_secs(delay.into()),
        "Terminating:Wait entered at {entered_wait}, deregistered at {deregistered_at:?}"
    );

    // --- Terminating:Wait (killed; the hook is completed while the operator is down) ---
    op.sigkill();
    env.annotate_instance(&name, "hooks.autoheal.dev/bye", Some("Continue"))
        .await;
    op.restart();
    op.wait_ready().await;
    let proceeding = wait_for("the instance past Terminating:Wait", TIMEOUT, || async {
        let i = env.instance(&name).await?;
        matches!(state_of(&i), Some(TerminatingProceed | Terminated)).then_some(i)
    })
    .await;
    let h = history(&proceeding);
    assert_eq!(
        &h[..6],
        &[
            Pending,
            PendingWait,
            InService,
            Terminating,
            TerminatingWait,
            TerminatingProceed
        ]
    );
    assert_eq!(
        proceeding.status.unwrap().pending_hooks[0].result,
        Some(HookResult::Continue)
    );
    env.wait_instance_gone(&name).await;

    // Converged: one instance, one Pod, nothing orphaned.
    let left = env.wait_in_service("web", 1).await;
    assert_eq!(left[0].name_any(), stayed);
    let pods = env.pods().list(&Default::default()).await.unwrap().items;
    assert_eq!(
        pods.len(),
        1,
        "no orphan Pods: {:?}",
        pods.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );

    // The audit log: the leaving Pod's label was removed once, it was deleted once, and the
    // delete came >= delay after the label removal.
    let writes: Vec<_> = operator_writes(&env)
        .into_iter()
        .filter(|w| w.resource == "pods" && w.name == name)
        .collect();
    let deletes: Vec<_> = writes.iter().filter(|w| w.verb == "delete").collect();
    assert_eq!(deletes.len(), 1, "Pod deleted exactly once: {writes:?}");
    let patches: Vec<_> = writes.iter().filter(|w| w.verb == "patch").collect();
    assert_eq!(
        patches.len(),
        2,
        "label added once and removed once: {writes:?}"
    );
    let gap = at(patches[1]).duration_until(at(deletes[0]));
    assert!(
        gap >= SignedDuration::from_secs(delay.into()),
        "Pod deleted {gap:?} after leaving service"
    );
    let creates = operator_writes(&env)
        .into_iter()
        .filter(|w| w.resource == "instances" && w.verb == "create" && w.code < 300)
        .count();
    assert_eq!(creates, 2, "no Instance launched twice");
}

/// A settled group of 20 Instances with an HTTP probe running causes no write to the API
/// server for 60 seconds while the probes keep succeeding: no write by anyone to the
/// namespace's objects (apart from the operator's leader Lease renewals) in the audit log, no
/// resourceVersion change of the group, its Instances or Pods, and about 20 probes a second
/// counted on `/metrics`. A restarted operator, once it has reconciled every Instance again
/// and probed for 20 s, has not written either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_group_of_20_makes_no_writes_for_60_seconds_nor_after_a_restart() {
    const N: usize = 20;
    const PROBE_SUCCESSES: &str = "autoheal_probe_results_total{kind=\"http\",result=\"success\"}";
    let env = Env::new("quiet").await;
    let mut op = env.operator();
    env.apply_group(
        &GroupBuilder::new("web")
            .max(N as i32)
            .desired(N as i32)
            .http_probe()
            .build(),
    )
    .await;
    let names: Vec<String> = env
        .wait_in_service("web", N)
        .await
        .iter()
        .map(|i| i.name_any())
        .collect();
    let groups = env.groups();
    wait_for(
        "Ready with 20 healthy instances",
        Duration::from_secs(180),
        || async {
            let g = groups.get("web").await.ok()?;
            let s = g.status.as_ref()?;
            let ready = s
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && s.healthy_instances == N as i32).then_some(())
        },
    )
    .await;
    // Settled: no write to the namespace (other than the Lease) for 5 seconds. Trailing
    // writes (group status, Events) come within a moment of the last verdict.
    let not_lease = |w: &testkit::AuditWrite| w.resource != "leases";
    let mut offset = 0;
    let mut setup_writes = 0;
    let mut last_write = std::time::Instant::now();
    let settle_deadline = std::time::Instant::now() + TIMEOUT;
    while last_write.elapsed() < Duration::from_secs(5) {
        let (writes, next) = env.writes_after(offset);
        offset = next;
        let n = writes.iter().filter(|w| not_lease(w)).count();
        if n > 0 {
            setup_writes += n;
            last_write = std::time::Instant::now();
        }
        assert!(
            std::time::Instant::now() < settle_deadline,
            "the namespace never went quiet: {writes:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        setup_writes > N,
        "the audit filter sees the setup writes of this namespace (got {setup_writes})"
    );

    let versions =
        |items: Vec<(String, Option<String>)>| items.into_iter().collect::<BTreeMap<_, _>>();
    let snapshot = || async {
        let g = env.group("web").await;
        let instances = env.group_instances("web").await;
        let pods = env.group_pods("web").await;
        (
            g.metadata.resource_version,
            versions(
                instances
                    .iter()
                    .map(|i| (i.name_any(), i.metadata.resource_version.clone()))
                    .collect(),
            ),
            versions(
                pods.iter()
                    .map(|p| (p.name_any(), p.metadata.resource_version.clone()))
                    .collect(),
            ),
        )
    };
    let before = snapshot().await;
    let probes_before = op.metric(PROBE_SUCCESSES).await.expect("probe metrics");
    // The quiet period itself: 60 s watched on the audit log (failing at the first write).
    let window_start = offset;
    let offset = env
        .expect_no_writes(
            window_start,
            Duration::from_secs(60),
            "writes to the namespace while settled",
            not_lease,
        )
        .await;
    let probes_after = op.metric(PROBE_SUCCESSES).await.expect("probe metrics");
    let after = snapshot().await;
    assert_eq!(before.0, after.0, "group resourceVersion unchanged");
    assert_eq!(before.1, after.1, "Instance resourceVersions unchanged");
    assert_eq!(before.2, after.2, "Pod resourceVersions unchanged");
    // The window was not quiet for want of an operator: it renewed its Lease and probed
    // ~20 times a second (at least 50 s worth of it).
    let (window, _) = env.writes_after(window_start);
    assert!(
        window
            .iter()
            .any(|w| w.resource == "leases" && w.user_agent.starts_with("autoheal/")),
        "the leader Lease was renewed meanwhile (the operator was alive)"
    );
    let probes = probes_after - probes_before;
    assert!(
        probes >= (N * 50) as f64,
        "only {probes} successful probes in 60 s"
    );
    for n in &names {
        let i = env.instance(n).await.unwrap();
        assert_eq!(
            (
                i.status.as_ref().and_then(|s| s.health_status),
                i.status.as_ref().and_then(|s| s.health_detail)
            ),
            (Some(HealthStatus::Healthy), Some(HealthDetail::OK)),
            "{n}"
        );
    }

    // A restarted operator re-lists its stores and probes from scratch; the recorded verdicts
    // stand until the probes decide again, so the settled group is not rewritten. Watched
    // from the restart on, for 20 probe intervals after the new process has reconciled every
    // Instance.
    op.restart();
    op.wait_instance_reconciles(N).await;
    let probes_at_ready = op.metric(PROBE_SUCCESSES).await.unwrap_or(0.0);
    env.expect_no_writes(
        offset,
        Duration::from_secs(20),
        "writes to the namespace after the restart",
        not_lease,
    )
    .await;
    let probed = op.metric(PROBE_SUCCESSES).await.expect("probe metrics") - probes_at_ready;
    assert!(
        probed >= (N * 10) as f64,
        "the restarted operator probed: only {probed} successes in 20 s"
    );
    let after_restart = snapshot().await;
    assert_eq!(after.0, after_restart.0, "group resourceVersion unchanged");
    assert_eq!(
        after.1, after_restart.1,
        "Instance resourceVersions unchanged"
    );
    assert_eq!(after.2, after_restart.2, "Pod resourceVersions unchanged");
}
