//! Repair end to end, against the real API server with podsim and the operator as a child
//! process: a restart that fixes a Pod that crashed once, a restart that does not help
//! escalating to a replacement (with the operator SIGKILLed in the middle), dry run listing
//! what Auto would repair while acting on nothing, then Auto repairing it, and the remediation
//! history with its outcomes.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use autoheal::api::reason;
use autoheal::api::{
    Instance, LifecycleState, RemediationOutcome, RepairAction, RepairMode, RepairStep,
    ScalingGroup,
};
use kube::ResourceExt;
use support::*;
use testkit::wait_for;

const HEALTH: &str = "autoheal.dev/health";

fn restart_then_replace(timeout: i32) -> Vec<RepairStep> {
    vec![
        RepairStep {
            action: RepairAction::Restart,
            timeout_seconds: Some(timeout),
        },
        RepairStep {
            action: RepairAction::Replace,
            timeout_seconds: None,
        },
    ]
}

fn leaving(i: &Instance) -> bool {
    i.metadata.deletion_timestamp.is_some() || state_of(i).is_some_and(|s| s.is_terminating())
}

fn in_service_healthy(i: &Instance) -> bool {
    !leaving(i) && state_of(i) == Some(LifecycleState::InService) && is_healthy(i)
}

fn restart_count(i: &Instance) -> i32 {
    i.status.as_ref().map_or(0, |s| s.restart_count)
}

fn remediations(g: &ScalingGroup) -> Vec<autoheal::api::Remediation> {
    g.status
        .as_ref()
        .map(|s| s.remediations.clone())
        .unwrap_or_default()
}

/// `n` InService+Healthy Instances with Pods, nothing leaving.
async fn wait_whole(env: &Env, group: &str, n: usize) -> Vec<Instance> {
    wait_for(
        &format!("{n} InService+Healthy instances in {group}"),
        TIMEOUT,
        || async {
            let all = env.group_instances(group).await;
            let pods = env.group_pods(group).await;
            (all.len() == n && pods.len() == n && all.iter().all(in_service_healthy)).then_some(all)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_fixes_a_pod_that_crashed_once_without_a_replacement() {
    let env = Env::new("repair-restart").await;
    let _op = env.operator();
    let group = GroupBuilder::new("web")
        .desired(3)
        .max(3)
        .with_spec(|s| s.repair.actions = restart_then_replace(3));
    env.apply_group(&group.build()).await;
    let before = wait_whole(&env, "web", 3).await;
    let names: BTreeSet<String> = before.iter().map(|i| i.name_any()).collect();
    let victim = before[0].name_any();
    let old_pod_uid = env.pods().get(&victim).await.unwrap().uid();

    env.set_pod_behavior(&victim, "crash").await;
    // Restarted in place: the same Instance, a new Pod, restartCount 1, Healthy again; no
    // Instance is ever terminated or added meanwhile.
    wait_for(
        "the crashed instance restarted and Healthy",
        TIMEOUT,
        || async {
            let all = env.group_instances("web").await;
            let now: BTreeSet<String> = all.iter().map(|i| i.name_any()).collect();
            assert_eq!(now, names, "an instance was replaced or added");
            assert!(all.iter().all(|i| !leaving(i)), "an instance is leaving");
            let v = all.iter().find(|i| i.name_any() == victim)?;
            let pod = env.pods().get(&victim).await.ok()?;
            (restart_count(v) == 1 && in_service_healthy(v) && pod.uid() != old_pod_uid)
                .then_some(())
        },
    )
    .await;
    // The remediation history shows the restart, which succeeds once its timeout has passed.
    let g = wait_for("the restart judged Succeeded", TIMEOUT, || async {
        let g = env.group("web").await;
        let r = remediations(&g)
            .into_iter()
            .find(|r| r.instance == victim)?;
        (r.outcome == RemediationOutcome::Succeeded).then_some(g)
    })
    .await;
    let history = remediations(&g);
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].action, RepairAction::Restart);
    assert!(history[0].finished.is_some());
    assert!(
        env.events_about(&victim)
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some(reason::RESTARTING))
    );
    let inst = env.instance(&victim).await.unwrap();
    assert_eq!(restart_count(&inst), 1);
    assert_eq!(env.group_instances("web").await.len(), 3);
}

/// The store holds an InService Instance without its Pod template (it is read only to create
/// the Pod); a restart of one whose Pod is already gone creates the Pod in the same step, from
/// the template read back from the API server: no failed create on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_an_instance_whose_pod_was_deleted_creates_it_from_its_template() {
    let env = Env::new("repair-pod-gone").await;
    let _op = env.operator();
    let group = GroupBuilder::new("web")
        .desired(3)
        .max(3)
        .with_spec(|s| s.repair.actions = restart_then_replace(30));
    env.apply_group(&group.build()).await;
    let before = wait_whole(&env, "web", 3).await;
    let names: BTreeSet<String> = before.iter().map(|i| i.name_any()).collect();
    let victim = before[0].name_any();
    let old_pod_uid = env.pods().get(&victim).await.unwrap().uid();

    env.pods()
        .delete(
            &victim,
            &kube::api::DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_for(
        "the instance whose Pod was deleted restarted and Healthy",
        TIMEOUT,
        || async {
            let all = env.group_instances("web").await;
            let now: BTreeSet<String> = all.iter().map(|i| i.name_any()).collect();
            assert_eq!(now, names, "an instance was replaced or added");
            let v = all.iter().find(|i| i.name_any() == victim)?;
            let pod = env.pods().get(&victim).await.ok()?;
            (restart_count(v) == 1 && in_service_healthy(v) && pod.uid() != old_pod_uid)
                .then_some(())
        },
    )
    .await;
    let failed: Vec<_> = env
        .events_about(&victim)
        .await
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| Some((e.reason?, e.note.unwrap_or_default())))
        .filter(|(reason, _)| reason.contains("Fail"))
        .collect();
    assert!(failed.is_empty(), "failed steps on the way: {failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_does_not_help_escalates_to_replace_even_across_a_sigkill() {
    let env = Env::new("repair-escalate").await;
    let mut op = env.operator();
    let group = GroupBuilder::new("web")
        .desired(2)
        .max(2)
        // The old Pod takes 3 s to go: the SIGKILL lands while the restart is under way.
        .termination_grace(3)
        .with_spec(|s| s.repair.actions = restart_then_replace(4));
    env.apply_group(&group.build()).await;
    let before = wait_whole(&env, "web", 2).await;
    let victim = before[0].name_any();

    // A person's mark survives a restart: the restart cannot help.
    env.annotate_instance(&victim, HEALTH, Some("Unhealthy"))
        .await;
    wait_for("the restart recorded", TIMEOUT, || async {
        let i = env.instance(&victim).await?;
        (restart_count(&i) == 1).then_some(())
    })
    .await;
    op.sigkill();
    op.restart();

    // Escalated to Replace: the victim goes, a replacement takes its place; it was restarted
    // exactly once on the way.
    let max_restarts = std::sync::atomic::AtomicI32::new(1);
    wait_for("the victim replaced", TIMEOUT, || async {
        let all = env.group_instances("web").await;
        if let Some(v) = all.iter().find(|i| i.name_any() == victim) {
            max_restarts.fetch_max(restart_count(v), std::sync::atomic::Ordering::Relaxed);
        }
        let whole = all.len() == 2
            && all.iter().all(in_service_healthy)
            && all.iter().all(|i| i.name_any() != victim);
        whole.then_some(())
    })
    .await;
    assert_eq!(
        max_restarts.into_inner(),
        1,
        "the victim was restarted twice"
    );
    let g = wait_for("the replacement judged", TIMEOUT, || async {
        let g = env.group("web").await;
        let r = remediations(&g);
        (r.len() == 2 && r[0].outcome == RemediationOutcome::Succeeded).then_some(g)
    })
    .await;
    let history = remediations(&g);
    assert_eq!(
        (
            history[0].action,
            history[0].step,
            history[0].instance.as_str()
        ),
        (RepairAction::Replace, 1, victim.as_str()),
        "{history:?}"
    );
    assert!(history[0].replacement.is_some());
    assert_eq!(
        (history[1].action, history[1].outcome),
        (RepairAction::Restart, RemediationOutcome::Escalated),
        "{history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_acts_on_nothing_and_lists_what_auto_then_repairs() {
    let env = Env::new("repair-dryrun").await;
    let op = env.operator();
    let group = GroupBuilder::new("web").desired(4).max(4).with_spec(|s| {
        s.repair.mode = RepairMode::DryRun;
        s.replacement.max_in_flight =
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(2);
    });
    env.apply_group(&group.build()).await;
    let before = wait_whole(&env, "web", 4).await;
    let names: BTreeSet<String> = before.iter().map(|i| i.name_any()).collect();
    let sick: Vec<String> = before.iter().take(2).map(|i| i.name_any()).collect();
    for n in &sick {
        env.annotate_instance(n, HEALTH, Some("Unhealthy")).await;
    }
    // Listed, with the action Auto would take, and announced once on each Instance.
    wait_for("wouldRepair lists the two", TIMEOUT, || async {
        let g = env.group("web").await;
        let listed: Vec<(String, RepairAction)> = g
            .status?
            .would_repair
            .iter()
            .map(|w| (w.instance.clone(), w.action))
            .collect();
        let want: Vec<(String, RepairAction)> = sick
            .iter()
            .map(|n| (n.clone(), RepairAction::Replace))
            .collect();
        (listed == want).then_some(())
    })
    .await;
    let g = env
        .wait_group_condition("web", "ReplacementAllowed", "False")
        .await;
    let cond = g
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "ReplacementAllowed")
        .unwrap();
    assert_eq!(cond.reason, reason::DRY_RUN);
    for n in &sick {
        assert!(
            cond.message.contains(&format!("{n} (Replace)")),
            "{}",
            cond.message
        );
    }
    let series = format!(
        "autoheal_would_repair{{namespace=\"{}\",scalinggroup=\"web\"}}",
        env.ns
    );
    wait_for("autoheal_would_repair 2", TIMEOUT, || async {
        (op.metric(&series).await? == 2.0).then_some(())
    })
    .await;

    // 30 s of failures: nothing is acted on (every observation checked, not one instant).
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        let all = env.group_instances("web").await;
        let now: BTreeSet<String> = all.iter().map(|i| i.name_any()).collect();
        assert_eq!(now, names, "dry run changed the instances");
        assert!(all.iter().all(|i| !leaving(i)), "dry run terminated one");
        assert!(all.iter().all(|i| restart_count(i) == 0));
        let g = env.group("web").await;
        assert!(
            remediations(&g).is_empty(),
            "dry run recorded a remediation"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for n in &sick {
        assert_eq!(
            env.events_about(n)
                .await
                .iter()
                .filter(|e| e.reason.as_deref() == Some(reason::WOULD_REPAIR))
                .count(),
            1,
            "one WouldRepair Event on {n}"
        );
    }

    // Auto: exactly the listed instances are repaired.
    env.patch_group(
        "web",
        serde_json::json!({ "spec": { "repair": { "mode": "Auto" } } }),
    )
    .await;
    let after = wait_for("the two replaced", TIMEOUT, || async {
        let all = env.group_instances("web").await;
        let ok = all.len() == 4
            && all.iter().all(in_service_healthy)
            && all.iter().all(|i| !sick.contains(&i.name_any()));
        ok.then_some(all)
    })
    .await;
    let kept: BTreeSet<String> = after
        .iter()
        .map(|i| i.name_any())
        .filter(|n| names.contains(n))
        .collect();
    let healthy_before: BTreeSet<String> = names
        .iter()
        .filter(|n| !sick.contains(n))
        .cloned()
        .collect();
    assert_eq!(kept, healthy_before, "Auto repaired more than was listed");
    let g = wait_for("history with both outcomes", TIMEOUT, || async {
        let g = env.group("web").await;
        let r = remediations(&g);
        (r.len() == 2 && r.iter().all(|r| r.outcome == RemediationOutcome::Succeeded)).then_some(g)
    })
    .await;
    let status = g.status.unwrap();
    assert!(status.would_repair.is_empty());
    let repaired: BTreeSet<String> = status
        .remediations
        .iter()
        .map(|r| r.instance.clone())
        .collect();
    assert_eq!(repaired, sick.iter().cloned().collect());
    // The repair clock stopped once the group was whole again.
    wait_for("autoheal_repair_seconds counted", TIMEOUT, || async {
        (op.metric("autoheal_repair_seconds_count").await? >= 2.0).then_some(())
    })
    .await;
}
