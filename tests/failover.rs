//! Failover between two `autoheal run` replicas with leader election, against the real API
//! server, in the middle of a replacement (the victim in `Terminating` with its
//! deregistration delay running, the step recorded in status):
//!
//! - SIGKILL the leader: the follower takes the Lease once it expires (within the lease
//!   duration) and finishes the replacement where it stood;
//! - SIGTERM the leader: it releases the Lease, and the follower leads at once.
//!
//! Either way a watch-based invariant checker runs through the whole test (no state
//! re-entered, no second replacement, no Pod created twice, counts within limits), and the
//! audit log shows every action taken once.

mod support;

use std::time::{Duration, Instant};

use autoheal::api::{ANNOTATION_HEALTH, Instance, LifecycleState};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use support::invariants::{Invariants, Limits, State};
use support::*;
use testkit::wait_for;

/// The Lease's duration in the SIGKILL test: short, so the test does not wait long for it.
const SHORT_LEASE_SECONDS: u64 = 6;
/// The Lease's duration in the SIGTERM test: long, so a handover "at once" stands out.
const LONG_LEASE_SECONDS: u64 = 30;
/// The victim's deregistration delay: long enough to stop the leader inside it and let the
/// follower take over before it ends.
const DELAY_SECONDS: i32 = 15;
const LEASE: &str = "autoheal-leader";

/// How the leader is stopped.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    Kill,
    Term,
}

/// What [`replace_across_failover`] measured.
struct Failover {
    /// From the signal to the follower holding the Lease.
    handover: Duration,
}

/// Two replicas; a group of 2; one Instance marked Unhealthy; the leader stopped by `stop`
/// once the victim is Terminating with its deregistration delay running; the follower
/// finishes. Asserts everything but the handover time, which it returns.
async fn replace_across_failover(prefix: &str, stop: Stop, lease_seconds: u64) -> Failover {
    let env = Env::new(prefix).await;
    // desired 2, maxInFlight 1, TerminateThenLaunch: never more than 2 counting toward
    // capacity, 1 leaving, 3 in all.
    let checker = Invariants::start(
        &env,
        "web",
        Limits {
            instances: 3,
            counting: 2,
            leaving: 1,
            pods: 3,
        },
    )
    .await;
    let lease = lease_seconds.to_string();
    let flags = [
        "--lease-namespace",
        env.ns.as_str(),
        "--lease-duration-seconds",
        lease.as_str(),
    ];
    let kubeconfig = env.cp.kubeconfig_path();
    let mut leader = Operator::start_named(kubeconfig, &env.ns, "replica-a", &flags);
    leader.wait_ready().await;
    let follower = Operator::start_named(kubeconfig, &env.ns, "replica-b", &flags);
    env.apply_group(
        &GroupBuilder::new("web")
            .desired(2)
            .max(3)
            .deregistration_delay(DELAY_SECONDS)
            .build(),
    )
    .await;
    let before = env.wait_in_service("web", 2).await;
    env.wait_pods_in_service("web", 2).await;
    assert_eq!(env.lease_holder(LEASE).await.as_deref(), Some("replica-a"));
    assert!(
        !follower.is_ready().await,
        "the follower runs no controllers"
    );

    let victim = before[0].name_any();
    let audit_from = env.audit_end();
    env.annotate_instance(&victim, ANNOTATION_HEALTH, Some("Unhealthy"))
        .await;
    // The step is recorded (Terminating, out of service since `deregisteredAt`) and the
    // delay is running.
    let terminating: Instance = wait_for(
        &format!("{victim} Terminating with its deregistration recorded"),
        TIMEOUT,
        || async {
            let i = env.instance(&victim).await?;
            let s = i.status.as_ref()?;
            (s.lifecycle_state == Some(LifecycleState::Terminating) && s.deregistered_at.is_some())
                .then_some(i)
        },
    )
    .await;
    let deregistered_at = terminating
        .status
        .as_ref()
        .and_then(|s| s.deregistered_at.as_ref())
        .unwrap()
        .0;
    let pod = env.pods().get(&victim).await.unwrap();
    assert!(
        !pod_in_service(&pod),
        "the victim's Pod left service before its delay started"
    );
    assert!(
        pod.metadata.deletion_timestamp.is_none(),
        "the delay is running: the Pod is not deleted yet"
    );

    let stopped = Instant::now();
    match stop {
        Stop::Kill => leader.sigkill(),
        Stop::Term => {
            leader.sigterm();
            let status = leader.wait_exit(TIMEOUT).await;
            assert!(status.success(), "a graceful stop exits 0: {status:?}");
            assert!(
                leader.log_text().contains("in-flight reconciles finished"),
                "the leader drained its reconciles"
            );
        }
    }
    wait_for("replica-b to hold the Lease", TIMEOUT, || async {
        (env.lease_holder(LEASE).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    let handover = stopped.elapsed();
    let took_over = Timestamp::now();
    eprintln!("{stop:?}: replica-b holds the Lease {handover:?} after the signal");
    wait_for("replica-b to lead (ready)", TIMEOUT, || async {
        follower.is_ready().await.then_some(())
    })
    .await;
    // The victim was still in its delay when the follower took over (else the test did
    // not test a takeover mid-step).
    let victim_now = env.instance(&victim).await.expect("victim still there");
    assert!(
        state_of(&victim_now).is_some_and(|s| s.is_terminating()),
        "the victim is still leaving: {:?}",
        state_of(&victim_now)
    );

    // The follower finishes the replacement.
    let after = wait_for("the group healed without the victim", TIMEOUT, || async {
        let all = env.group_instances("web").await;
        let ok = all.len() == 2
            && all.iter().all(|i| {
                i.name_any() != victim
                    && state_of(i) == Some(LifecycleState::InService)
                    && is_healthy(i)
            });
        ok.then_some(all)
    })
    .await;
    env.wait_instance_gone(&victim).await;
    env.wait_pods_in_service("web", 2).await;
    env.flush_audit().await;
    let report = checker.stop();
    eprintln!(
        "invariants held over {} Instance and {} Pod watch events; peaks (instances, counting, leaving, pods) = {:?}",
        report.events.0, report.events.1, report.peaks
    );

    // One replacement, launched once.
    let replacements = report.replacements_of(&victim);
    assert_eq!(replacements.len(), 1, "one replacement of {victim}");
    assert!(
        after.iter().any(|i| i.name_any() == replacements[0]),
        "the replacement {} is one of the two in service",
        replacements[0]
    );
    let victim_seen = &report.instances[&victim];
    assert_eq!(
        victim_seen.states,
        [
            LifecycleState::Pending,
            LifecycleState::InService,
            LifecycleState::Terminating,
            LifecycleState::TerminatingProceed,
            LifecycleState::Terminated,
        ],
        "the victim went through each state once, in order"
    );
    assert!(victim_seen.gone && report.pods[&victim].gone);

    // Each action once, whoever took it.
    let (writes, _) = env.writes_after(audit_from);
    let summary = assert_one_launch(&writes, &report);
    // The victim's Pod taken out of service, and deleted, once.
    assert_once(&writes, "patch", "pods", &victim, &summary);
    assert_once(&writes, "delete", "pods", &victim, &summary);
    assert!(
        count_writes(&writes, "delete", "instances", "", &victim) <= 1,
        "the victim deleted at most once (the finalizer's removal ends it): {summary:#?}"
    );
    // The delay was honoured, and not started over by the new leader.
    let pod_deleted: Timestamp = by_operator(&writes)
        .find(|w| w.verb == "delete" && w.resource == "pods" && w.name == victim)
        .unwrap()
        .request_received_timestamp
        .parse()
        .unwrap();
    let delay = Duration::from_secs(DELAY_SECONDS as u64);
    assert!(
        pod_deleted >= deregistered_at + delay,
        "the Pod was deleted at {pod_deleted}, before the delay from {deregistered_at} ended"
    );
    // Counted from `deregisteredAt` (written once, by the old leader), not from the
    // takeover: after a SIGKILL the follower took over seconds into the delay, so a delay
    // started over would end that much later than this bound.
    let slack = Duration::from_secs(4);
    assert!(
        pod_deleted <= deregistered_at + delay + slack,
        "the Pod was deleted at {pod_deleted}: not {delay:?} (+{slack:?}) after {deregistered_at}; \
         the new leader (leading from {took_over}) started the delay over"
    );
    // Events: each leaving step reported once (a repeat would fold into a series).
    let events = env
        .kubectl(&[
            "-n",
            &env.ns,
            "events",
            "--for",
            &format!("instance/{victim}"),
            "-o",
            "json",
        ])
        .to_string();
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    let items = events["items"].as_array().unwrap();
    let reasons: Vec<&str> = items.iter().filter_map(|e| e["reason"].as_str()).collect();
    for reason in [
        "EnteredTerminating",
        "EnteredTerminatingProceed",
        "Terminated",
    ] {
        assert_eq!(
            reasons.iter().filter(|r| **r == reason).count(),
            1,
            "{reason} once: {reasons:?}"
        );
    }
    // A state entry's Event names the Pod action it brings: each action once.
    let notes: Vec<&str> = items
        .iter()
        .filter_map(|e| e["message"].as_str().or(e["note"].as_str()))
        .collect();
    for action in ["from service", "deleting Pod"] {
        assert_eq!(
            notes.iter().filter(|n| n.contains(action)).count(),
            1,
            "{action} once: {notes:?}"
        );
    }
    Failover { handover }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_leader_mid_replacement_follower_takes_over_within_the_lease_and_repeats_nothing()
{
    let failover = replace_across_failover("failover-kill", Stop::Kill, SHORT_LEASE_SECONDS).await;
    // The Lease expires at most its duration after the last renewal (before the kill); the
    // follower then takes it after a random pause of up to 1 s (kube-lease-manager's guard
    // against two takers); 2 s more for a loaded machine.
    let bound = Duration::from_secs(SHORT_LEASE_SECONDS + 3);
    assert!(
        failover.handover <= bound,
        "the follower took the Lease {:?} after the SIGKILL (lease {SHORT_LEASE_SECONDS}s, bound {bound:?})",
        failover.handover
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigtermed_leader_mid_replacement_releases_the_lease_and_the_follower_leads_at_once() {
    let failover = replace_across_failover("failover-term", Stop::Term, LONG_LEASE_SECONDS).await;
    // Released, not left to expire: well before the Lease's duration.
    assert!(
        failover.handover < Duration::from_secs(LONG_LEASE_SECONDS / 3),
        "the follower took the Lease {:?} after the SIGTERM (lease {LONG_LEASE_SECONDS}s)",
        failover.handover
    );
}

/// The checker itself catches what it is there for (fed made-up watch events).
#[test]
fn the_invariant_checker_flags_a_state_reentered_a_second_replacement_and_too_many() {
    let instance = |name: &str, uid: &str, state: &str, replaces: Option<&str>| -> Instance {
        let mut annotations = serde_json::Map::new();
        if let Some(victim) = replaces {
            annotations.insert(autoheal::api::ANNOTATION_REPLACES.into(), victim.into());
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "autoheal.dev/v1alpha1",
            "kind": "Instance",
            "metadata": { "name": name, "uid": uid, "annotations": annotations },
            "spec": { "groupName": "web", "podTemplate": {} },
            "status": { "lifecycleState": state },
        }))
        .unwrap()
    };
    let limits = Limits {
        instances: 3,
        counting: 2,
        leaving: 1,
        pods: 3,
    };
    let mut ok = State::new(limits);
    for (name, state, replaces) in [
        ("a", "InService", None),
        ("b", "InService", None),
        ("a", "Terminating", None),
        ("c", "Pending", Some("a")),
        ("a", "Terminating:Proceed", None),
        ("c", "InService", Some("a")),
        ("a", "Terminated", None),
    ] {
        ok.instance_applied(&instance(name, name, state, replaces));
    }
    ok.instance_deleted("a");
    assert!(
        ok.report().violations.is_empty(),
        "{:?}",
        ok.report().violations
    );

    let mut bad = State::new(limits);
    bad.instance_applied(&instance("a", "a", "InService", None));
    bad.instance_applied(&instance("a", "a", "Terminating", None));
    bad.instance_applied(&instance("a", "a", "InService", None));
    bad.instance_applied(&instance("b", "b", "Pending", Some("a")));
    bad.instance_applied(&instance("c", "c", "Pending", Some("a")));
    bad.instance_applied(&instance("d", "d", "Pending", None));
    bad.instance_applied(&instance("d", "d2", "Pending", None));
    let violations = bad.report().violations.join("\n");
    for expected in [
        "Instance a re-entered InService after leaving it",
        "a replaced more than once",
        "Instances counting toward capacity at once (limit 2)",
        "Instances at once (limit 3)",
        "Instance d created twice",
    ] {
        assert!(violations.contains(expected), "{expected}: {violations}");
    }
}
