//! Chaos against the real control plane (etcd, kube-apiserver, kube-controller-manager),
//! podsim as the kubelet and the operator as a child process. Each scenario strikes while the
//! operator is mid-action (it waits until it sees the Instance in the state that matters) and
//! then checks that nothing was lost, repeated or acted on wrongly:
//!
//! 1. the API server SIGKILLed and restarted (same etcd) while a victim waits out its
//!    deregistration delay: the operator reconnects and finishes the one replacement;
//! 2. a probe blackout (every endpoint hangs at once) in a group with `maxUnhealthy: 30%`:
//!    nothing terminated, `TooManyUnhealthy` says why, all Healthy again when it ends;
//! 3. etcd paused (SIGSTOP) for 20 s in the middle of an instance refresh: the refresh
//!    completes, each old Instance terminated exactly once, nothing extra left;
//! 4. the leader SIGKILLed while a victim waits on a Terminate lifecycle hook, with two
//!    replicas: the follower takes over and nothing is done twice;
//! 5. conflicting writers, all at once and racing the reconciles: an editor of the spec, a
//!    scaler (the scale subresource) and an annotator of health marks: no user write lost or
//!    overwritten (the desired capacity is the one of the write committed last: its answer
//!    has the highest resourceVersion), no crash, convergence afterwards;
//! 6. garbage in: seeded random ScalingGroup specs and annotation values through the API
//!    server: no panic, a refusal changes nothing and says why, garbage never acts.
//!
//! A watch-based invariant checker ([`support::invariants`]) runs through 1–5, the audit log
//! counts the operator's writes.
//!
//! Durations: `cargo test --test chaos` (CI, part of `make test`) runs the short version
//! (etcd paused 20 s, conflicting writers 15 s, 300 garbage inputs, blackout held 5 s);
//! `AUTOHEAL_CHAOS_LONG=1` (`make test-chaos`) the full one (writers 60 s, 3000 garbage
//! inputs, blackout held 30 s). `AUTOHEAL_CHAOS_SEED=N` replays a garbage run.
//!
//! Scenarios 1 and 3 restart or pause a part of the control plane: they take turns on a
//! private control plane, so the others (on the shared one) are not disturbed.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autoheal::api::annotations::hook_key;
use autoheal::api::{
    ANNOTATION_HEALTH, ANNOTATION_MAINTENANCE, ANNOTATION_PAUSED, ANNOTATION_RESPECT_GRACE_PERIOD,
    ANNOTATION_STANDBY, HookResult, HookTransition, Instance, LifecycleState, RefreshState,
    ScalingGroup, reason,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use support::invariants::{Invariants, Limits, Report};
use support::*;
use testkit::{ControlPlane, Part, wait_for};

/// Whether the long version runs (`AUTOHEAL_CHAOS_LONG` set, not `0`).
fn long() -> bool {
    std::env::var("AUTOHEAL_CHAOS_LONG").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `short` in CI, `long` with `AUTOHEAL_CHAOS_LONG=1`.
fn pick<T>(short: T, long_: T) -> T {
    if long() { long_ } else { short }
}

/// Scenarios that restart or pause a part of the control plane take turns.
static DESTRUCTIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The private control plane of the destructive scenarios (started once, CRDs installed).
/// It lives until the test process exits; its processes die with it.
async fn private_plane() -> &'static ControlPlane {
    static PLANE: tokio::sync::OnceCell<&'static ControlPlane> = tokio::sync::OnceCell::const_new();
    PLANE
        .get_or_init(|| async {
            let cp = ControlPlane::start()
                .await
                .unwrap_or_else(|e| panic!("starting a private control plane: {e:#}"));
            let cp: &'static ControlPlane = Box::leak(Box::new(cp));
            apply_crds(cp).await;
            cp
        })
        .await
}

/// The operator must still run and must never have panicked.
fn assert_alive(op: &mut Operator) {
    assert!(
        op.exited().is_none(),
        "the operator exited:\n{}",
        op.log_tail(40)
    );
    assert!(
        !op.log_text().contains("panicked"),
        "the operator panicked:\n{}",
        op.log_tail(80)
    );
}

/// The operator exits by design when it cannot renew its Lease (a fresh process competes
/// again): when that happened, start it again as the kubelet would. Returns whether it did.
fn restart_if_lease_lost(op: &mut Operator) -> bool {
    match op.exited() {
        None => false,
        Some(status) => {
            let log = op.log_text();
            assert!(
                log.contains("lost the leader lease"),
                "the operator exited ({status}) for another reason:\n{}",
                op.log_tail(40)
            );
            assert!(!log.contains("panicked"), "{}", op.log_tail(80));
            eprintln!("the operator lost its Lease and exited ({status}); started again");
            op.restart();
            true
        }
    }
}

/// Waits until `victim` is Terminating with its deregistration recorded (the delay runs).
async fn wait_deregistering(env: &Env, victim: &str) -> Instance {
    wait_for(
        &format!("{victim} Terminating with its deregistration recorded"),
        TIMEOUT,
        || async {
            let i = env.instance(victim).await?;
            let s = i.status.as_ref()?;
            (s.lifecycle_state == Some(LifecycleState::Terminating) && s.deregistered_at.is_some())
                .then_some(i)
        },
    )
    .await
}

/// Whether the group has `n` Instances, all InService and Healthy, `victim` not among them,
/// and the victim gone.
async fn healed(env: &Env, group: &str, n: usize, victim: &str) -> Option<Vec<Instance>> {
    let all = env.group_instances(group).await;
    let ok = all.len() == n
        && all.iter().all(|i| {
            i.name_any() != victim
                && state_of(i) == Some(LifecycleState::InService)
                && is_healthy(i)
        })
        && env.instance(victim).await.is_none();
    ok.then_some(all)
}

/// Waits until the group [`healed`] and its `n` Pods are in service, starting the operator
/// again whenever it exits for a lost Lease (see [`restart_if_lease_lost`]).
async fn wait_healed(env: &Env, op: &mut Operator, group: &str, n: usize, victim: &str) {
    wait_for(
        &format!("{group} healed to {n} without {victim}"),
        TIMEOUT,
        || {
            restart_if_lease_lost(op);
            healed(env, group, n, victim)
        },
    )
    .await;
    env.wait_pods_in_service(group, n).await;
}

/// One replacement of `victim` and nothing else, from what the checker saw and the audit
/// log from `audit_from` (flushed by the caller): the victim went through `states` once each,
/// one Instance replaced it, no other Instance left, and the operator launched one Instance
/// and one Pod and deleted only the victim's Pod, once. `relisted`: the checker's watch had to
/// list again meanwhile, so it may have missed some of the victim's states.
fn assert_one_replacement(
    env: &Env,
    report: &Report,
    audit_from: u64,
    victim: &str,
    states: &[LifecycleState],
    relisted: bool,
) {
    let replacements = report.replacements_of(victim);
    assert_eq!(replacements.len(), 1, "one replacement of {victim}");
    let seen = &report.instances[victim];
    if relisted {
        // The checker's watch relists after an API server restart (the new watch cache starts
        // after its resourceVersion): states passed meanwhile are not seen. What it saw is in
        // order and each once; the audit log below shows every action.
        let mut expected = states.iter();
        assert!(
            seen.states.iter().all(|s| expected.any(|e| e == s)),
            "the victim's states, each once, in order: {:?}",
            seen.states
        );
    } else {
        assert_eq!(
            seen.states, states,
            "the victim's states, each once, in order"
        );
    }
    assert!(seen.gone && report.pods[victim].gone, "the victim is gone");
    for (name, i) in &report.instances {
        if name != victim {
            assert!(
                !i.gone && !i.states.iter().any(|s| s.is_terminating()),
                "{name} was not Unhealthy, yet it left: {:?}",
                i.states
            );
        }
    }
    let (writes, _) = env.writes_after(audit_from);
    let summary = assert_one_launch(&writes, report);
    // One Pod deleted, the victim's, once (a delete cut off by a kill counts, as in a launch).
    assert_once(&writes, "delete", "pods", "", &summary);
    assert_once(&writes, "delete", "pods", victim, &summary);
    assert_eq!(
        count_writes(&writes, "delete", "instances", "", ""),
        count_writes(&writes, "delete", "instances", "", victim),
        "no Instance but the victim deleted: {summary:#?}"
    );
    assert!(
        count_writes(&writes, "delete", "instances", "", victim) <= 1,
        "the victim deleted at most once: {summary:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. The API server restarted mid-replacement
// ---------------------------------------------------------------------------------------------

/// Long enough to restart the API server inside it (it answers again within about 4 s here).
const DEREGISTRATION_DELAY: i32 = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_restarted_mid_replacement_the_operator_resumes_and_repeats_nothing() {
    let _turn = DESTRUCTIVE.lock().await;
    let cp = private_plane().await;
    let env = Env::on(cp, "chaos-apiserver", 1, &[]).await;
    // desired 3, maxInFlight 1, TerminateThenLaunch.
    let checker = Invariants::start(
        &env,
        "web",
        Limits {
            instances: 4,
            counting: 3,
            leaving: 1,
            pods: 4,
        },
    )
    .await;
    let mut op = env.operator();
    env.apply_group(
        &GroupBuilder::new("web")
            .desired(3)
            .max(4)
            .deregistration_delay(DEREGISTRATION_DELAY)
            .build(),
    )
    .await;
    let before = env.wait_in_service("web", 3).await;
    env.wait_pods_in_service("web", 3).await;
    let victim = before[0].name_any();
    let audit_from = env.audit_end();
    env.annotate_instance(&victim, ANNOTATION_HEALTH, Some("Unhealthy"))
        .await;
    wait_deregistering(&env, &victim).await;

    let down = Instant::now();
    cp.restart(Part::ApiServer, &[])
        .await
        .unwrap_or_else(|e| panic!("restarting the API server: {e:#}"));
    eprintln!(
        "the API server answers again {:?} after the SIGKILL",
        down.elapsed()
    );
    // The chaos hit mid-replacement: the victim is still waiting out its delay.
    let victim_now = env
        .instance(&victim)
        .await
        .expect("the victim is still there");
    assert_eq!(
        state_of(&victim_now),
        Some(LifecycleState::Terminating),
        "the API server was back within the deregistration delay"
    );
    wait_healed(&env, &mut op, "web", 3, &victim).await;
    env.flush_audit().await;
    let report = checker.stop();
    assert_one_replacement(
        &env,
        &report,
        audit_from,
        &victim,
        &[
            LifecycleState::Pending,
            LifecycleState::InService,
            LifecycleState::Terminating,
            LifecycleState::TerminatingProceed,
            LifecycleState::Terminated,
        ],
        true,
    );
    assert_alive(&mut op);
}

// ---------------------------------------------------------------------------------------------
// 2. A probe blackout
// ---------------------------------------------------------------------------------------------

/// Sets podsim's behaviour of every Pod of `group`.
async fn set_all_pods(env: &Env, group: &str, behavior: &str) {
    for pod in env.group_pods(group).await {
        env.set_pod_behavior(&pod.name_any(), behavior).await;
    }
}

/// Waits until every Instance of `group` (there are `n`) has the health `healthy` says.
async fn wait_all_health(env: &Env, group: &str, n: usize, healthy: bool) -> Vec<Instance> {
    wait_for(
        &format!("all {n} of {group} Healthy={healthy}"),
        TIMEOUT,
        || async {
            let all = env.group_instances(group).await;
            (all.len() == n && all.iter().all(|i| is_healthy(i) == healthy)).then_some(all)
        },
    )
    .await
}

/// The `ReplacementAllowed` condition of a group as `ok` wants it, with status observed.
async fn wait_replacement_allowed(
    env: &Env,
    group: &str,
    what: &str,
    ok: impl Fn(&str, &str) -> bool,
) -> String {
    wait_for(
        &format!("ReplacementAllowed of {group} {what}"),
        TIMEOUT,
        || async {
            let g = env.groups().get_opt(group).await.ok().flatten()?;
            let c = g
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "ReplacementAllowed")?;
            ok(&c.status, &c.reason).then_some(c.message)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_blackout_terminates_nothing_and_recovers_fully() {
    let env = Env::new("chaos-blackout").await;
    let n = 4;
    // Nothing may leave at any moment.
    let checker = Invariants::start(
        &env,
        "web",
        Limits {
            instances: n,
            counting: n,
            leaving: 0,
            pods: n,
        },
    )
    .await;
    let mut op = env.operator();
    env.apply_group(
        &GroupBuilder::new("web")
            .desired(n as i32)
            .max(n as i32)
            .http_probe()
            .with_spec(|s| s.replacement.max_unhealthy = IntOrString::String("30%".into()))
            .build(),
    )
    .await;
    env.wait_in_service("web", n).await;
    let before = wait_all_health(&env, "web", n, true).await;
    let names: BTreeSet<String> = before.iter().map(|i| i.name_any()).collect();
    let audit_from = env.audit_end();

    set_all_pods(&env, "web", "hang").await;
    let message = wait_replacement_allowed(&env, "web", "False/TooManyUnhealthy", |s, r| {
        s == "False" && r == reason::TOO_MANY_UNHEALTHY
    })
    .await;
    eprintln!("blackout: {message}");
    wait_all_health(&env, "web", n, false).await;
    // The blackout lasts; nothing may be terminated while it does.
    let hold = Duration::from_secs(pick(5, 30));
    let audit_at = env
        .expect_no_writes(audit_from, hold, "no deletes during the blackout", |w| {
            w.verb == "delete" && (w.resource == "pods" || w.resource == "instances")
        })
        .await;

    set_all_pods(&env, "web", "healthy").await;
    let after = wait_all_health(&env, "web", n, true).await;
    wait_replacement_allowed(&env, "web", "True", |s, _| s == "True").await;
    env.wait_pods_in_service("web", n).await;
    env.expect_no_writes(audit_at, Duration::ZERO, "no deletes after it", |w| {
        w.verb == "delete" && (w.resource == "pods" || w.resource == "instances")
    })
    .await;
    let report = checker.stop();
    let seen: BTreeSet<String> = report.instances.keys().cloned().collect();
    assert_eq!(seen, names, "no Instance launched or replaced");
    let now: BTreeSet<String> = after.iter().map(|i| i.name_any()).collect();
    assert_eq!(now, names, "the same Instances, all Healthy again");
    for (name, i) in &report.instances {
        assert!(
            !i.gone && i.states.last() == Some(&LifecycleState::InService),
            "{name} stayed InService throughout: {:?}",
            i.states
        );
    }
    assert_alive(&mut op);
}

// ---------------------------------------------------------------------------------------------
// 3. etcd paused during a refresh
// ---------------------------------------------------------------------------------------------

/// A group of 4 refreshed one at a time (minHealthy 75 %), image `image`.
fn refresh_group(image: &str) -> ScalingGroup {
    GroupBuilder::new("web")
        .desired(4)
        .max(4)
        .deregistration_delay(0)
        .with_spec(|s| {
            s.refresh.min_healthy_percentage = 75;
            s.refresh.max_healthy_percentage = 100;
            s.refresh.instance_warmup_seconds = Some(1);
            if let Some(pod) = s.template.spec.pod_template.spec.as_mut() {
                pod.containers[0].image = Some(image.into());
            }
        })
        .build()
}

fn refresh_state(g: &ScalingGroup) -> Option<(RefreshState, String)> {
    let r = g.status.as_ref()?.refresh.as_ref()?;
    Some((r.status, r.target_revision.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_paused_during_a_refresh_loses_and_repeats_nothing() {
    let _turn = DESTRUCTIVE.lock().await;
    let cp = private_plane().await;
    let env = Env::on(cp, "chaos-etcd", 1, &[]).await;
    let mut op = env.operator();
    env.apply_group(&refresh_group("registry.example/web:1"))
        .await;
    let before = env.wait_in_service("web", 4).await;
    let old: BTreeSet<String> = before.iter().map(|i| i.name_any()).collect();
    // maxHealthy 100 %: never more than 4 counting. (One old Instance starts leaving as soon
    // as the previous one's replacement serves, while the previous one's Pod may still be
    // going: leaving is bounded by the old ones only.)
    let checker = Invariants::start(
        &env,
        "web",
        Limits {
            instances: 8,
            counting: 4,
            leaving: 4,
            pods: 8,
        },
    )
    .await;
    let audit_from = env.audit_end();
    env.apply_group(&refresh_group("registry.example/web:2"))
        .await;
    // Mid-refresh: it runs, and an old Instance is on its way out.
    let leaving = wait_for(
        "an old Instance leaving in the refresh",
        TIMEOUT,
        || async {
            let g = env.groups().get_opt("web").await.ok().flatten()?;
            (refresh_state(&g)?.0 == RefreshState::InProgress).then_some(())?;
            env.group_instances("web").await.into_iter().find(|i| {
                old.contains(&i.name_any()) && state_of(i).is_some_and(|s| s.is_terminating())
            })
        },
    )
    .await;
    eprintln!(
        "pausing etcd with {} in {:?}",
        leaving.name_any(),
        state_of(&leaving)
    );
    cp.pause(Part::Etcd).expect("SIGSTOP etcd");
    tokio::time::sleep(Duration::from_secs(20)).await;
    cp.resume(Part::Etcd).expect("SIGCONT etcd");
    let mut restarts = 0;
    let done = wait_for("the refresh Successful", Duration::from_secs(240), || {
        restarts += usize::from(restart_if_lease_lost(&mut op));
        async {
            let g = env.groups().get_opt("web").await.ok().flatten()?;
            let (state, target) = refresh_state(&g)?;
            (state == RefreshState::Successful).then_some(target)
        }
    })
    .await;
    let after = wait_for("4 InService on the new revision", TIMEOUT, || async {
        let all = env.wait_in_service("web", 4).await;
        all.iter()
            .all(|i| i.status.as_ref().and_then(|s| s.revision.as_deref()) == Some(&done))
            .then_some(all)
    })
    .await;
    env.flush_audit().await;
    let report = checker.stop();
    eprintln!("the operator restarted {restarts} time(s) after losing its Lease");

    let new: BTreeSet<String> = after.iter().map(|i| i.name_any()).collect();
    assert!(
        new.is_disjoint(&old),
        "every old Instance replaced: {new:?}"
    );
    let seen: BTreeSet<String> = report.instances.keys().cloned().collect();
    let expected: BTreeSet<String> = old.union(&new).cloned().collect();
    assert_eq!(seen, expected, "no Instance beyond one new per old one");
    for name in &old {
        let i = &report.instances[name];
        assert!(
            i.gone && i.states.contains(&LifecycleState::Terminated),
            "{name} terminated: {i:?}"
        );
    }
    let (writes, _) = env.writes_after(audit_from);
    for name in &old {
        assert_eq!(
            count_writes(&writes, "delete", "pods", "", name),
            1,
            "{name}'s Pod deleted exactly once"
        );
    }
    assert_eq!(count_writes(&writes, "delete", "pods", "", ""), old.len());
    assert_eq!(count_writes(&writes, "create", "instances", "", ""), 4);
    assert_eq!(count_writes(&writes, "create", "pods", "", ""), 4);
    assert_alive(&mut op);
}

// ---------------------------------------------------------------------------------------------
// 4. The leader killed mid-drain
// ---------------------------------------------------------------------------------------------

const LEASE: &str = "autoheal-leader";
const HOOK: &str = "drain";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_while_a_terminate_hook_waits_the_follower_finishes_once() {
    let env = Env::new("chaos-leader").await;
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
    let flags = [
        "--lease-namespace",
        env.ns.as_str(),
        "--lease-duration-seconds",
        "6",
    ];
    let kubeconfig = env.cp.kubeconfig_path();
    let mut leader = Operator::start_named(kubeconfig, &env.ns, "replica-a", &flags);
    leader.wait_ready().await;
    let mut follower = Operator::start_named(kubeconfig, &env.ns, "replica-b", &flags);
    env.apply_group(
        &GroupBuilder::new("web")
            .desired(2)
            .max(3)
            .hook(HOOK, HookTransition::Terminate, 300, HookResult::Abandon)
            .build(),
    )
    .await;
    let before = env.wait_in_service("web", 2).await;
    env.wait_pods_in_service("web", 2).await;
    assert_eq!(env.lease_holder(LEASE).await.as_deref(), Some("replica-a"));
    let victim = before[0].name_any();
    let audit_from = env.audit_end();
    env.annotate_instance(&victim, ANNOTATION_HEALTH, Some("Unhealthy"))
        .await;
    // Mid-drain: out of service, its delay over, the hook holding it.
    env.wait_instance_state(&victim, LifecycleState::TerminatingWait)
        .await;
    leader.sigkill();
    wait_for("replica-b to lead", TIMEOUT, || async {
        (env.lease_holder(LEASE).await.as_deref() == Some("replica-b") && follower.is_ready().await)
            .then_some(())
    })
    .await;
    let held = env
        .instance(&victim)
        .await
        .expect("the victim is still there");
    assert_eq!(state_of(&held), Some(LifecycleState::TerminatingWait));
    let pod = env.pods().get(&victim).await.unwrap();
    assert!(
        pod.metadata.deletion_timestamp.is_none() && !pod_in_service(&pod),
        "the hook holds the Pod, out of service and not deleted"
    );
    // The drain is done: the new leader lets the victim go.
    env.annotate_instance(&victim, &hook_key(HOOK), Some("Continue"))
        .await;
    wait_healed(&env, &mut follower, "web", 2, &victim).await;
    env.flush_audit().await;
    let report = checker.stop();
    assert_one_replacement(
        &env,
        &report,
        audit_from,
        &victim,
        &[
            LifecycleState::Pending,
            LifecycleState::InService,
            LifecycleState::Terminating,
            LifecycleState::TerminatingWait,
            LifecycleState::TerminatingProceed,
            LifecycleState::Terminated,
        ],
        false,
    );
    assert_alive(&mut follower);
}

// ---------------------------------------------------------------------------------------------
// 5. Conflicting writers
// ---------------------------------------------------------------------------------------------

/// The spec fields the writers set, as last written.
#[derive(Debug, Clone, PartialEq, Default)]
struct Written {
    desired: i64,
    deregistration_delay: i64,
    revision_history_limit: i64,
    max_consecutive_failures: i64,
}

impl Written {
    fn of(g: &ScalingGroup) -> Written {
        Written {
            desired: g.spec.desired_capacity.unwrap_or(-1).into(),
            deregistration_delay: g.spec.replacement.deregistration_delay_seconds.into(),
            revision_history_limit: g.spec.revision_history_limit.into(),
            max_consecutive_failures: g.spec.replacement.max_consecutive_failures.into(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_writers_lose_no_update_and_the_group_converges() {
    let env = Env::new("chaos-writers").await;
    let (min, max): (i64, i64) = (1, 4);
    // Never more than maxSize counting toward capacity. Leaving Instances pile up when
    // scale-ins and marks race (each scale-in leaves, each mark replaces): no bound on those
    // beyond the writes made.
    let checker = Invariants::start(
        &env,
        "web",
        Limits {
            instances: 1000,
            counting: max as usize,
            leaving: 1000,
            pods: 1000,
        },
    )
    .await;
    let mut op = env.operator();
    env.apply_group(
        &GroupBuilder::new("web")
            .min(min as i32)
            .max(max as i32)
            .desired(2)
            .build(),
    )
    .await;
    env.wait_in_service("web", 2).await;
    let seed: u64 = std::env::var("AUTOHEAL_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("conflicting writers: seed {seed} (AUTOHEAL_CHAOS_SEED={seed} replays it)");
    let window = Duration::from_secs(pick(15, 60));
    let first = env.group("web").await;
    // What was last written: the editor's other fields (it alone writes them), and the
    // desired capacity both writers race on, with the resourceVersion of the answer that
    // wrote it. resourceVersions are opaque to clients in general; with etcd they are its
    // revisions, so the highest is the write committed last.
    let last = Arc::new(Mutex::new(Written::of(&first)));
    let desired_written = Arc::new(Mutex::new((0u64, Written::of(&first).desired)));
    let record_desired = |rv: Option<String>, desired: i64| {
        let rv: u64 = rv
            .expect("a write's answer has a resourceVersion")
            .parse()
            .expect("etcd's resourceVersions are revisions");
        let mut d = desired_written.lock().unwrap();
        if rv > d.0 {
            *d = (rv, desired);
        }
    };
    let end = Instant::now() + window;

    // The scaler: desiredCapacity through the scale subresource, as `kubectl scale` does.
    let scaler = {
        let groups = env.groups();
        let record_desired = &record_desired;
        async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(2));
            let mut writes = 0;
            while Instant::now() < end {
                let desired = rng.random_range(min..=max);
                let scale = groups
                    .patch_scale(
                        "web",
                        &PatchParams::default(),
                        &Patch::Merge(json!({ "spec": { "replicas": desired } })),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("a user's scale was refused: {e}"));
                record_desired(scale.metadata.resource_version, desired);
                writes += 1;
                tokio::time::sleep(Duration::from_millis(rng.random_range(20..400))).await;
            }
            writes
        }
    };
    // The editor: the spec (desiredCapacity sometimes, harmless fields otherwise), at the same
    // time as the scaler.
    let spec_writer = {
        let groups = env.groups();
        let last = last.clone();
        let record_desired = &record_desired;
        async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut writes = 0;
            while Instant::now() < end {
                let mut next = last.lock().unwrap().clone();
                let mut spec = json!({});
                match rng.random_range(0..3) {
                    0 => {
                        let desired = rng.random_range(min..=max);
                        spec["desiredCapacity"] = json!(desired);
                        next.desired = desired;
                    }
                    1 => {
                        next.deregistration_delay = rng.random_range(0..=2);
                        spec["replacement"] =
                            json!({ "deregistrationDelaySeconds": next.deregistration_delay });
                    }
                    _ => {
                        next.revision_history_limit = rng.random_range(5..=15);
                        next.max_consecutive_failures = rng.random_range(3..=9);
                        spec["revisionHistoryLimit"] = json!(next.revision_history_limit);
                        spec["replacement"] =
                            json!({ "maxConsecutiveFailures": next.max_consecutive_failures });
                    }
                }
                let patch = json!({
                    "metadata": { "labels": { "chaos/write": writes.to_string() } },
                    "spec": spec,
                });
                let written = groups
                    .patch("web", &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .unwrap_or_else(|e| panic!("a user's edit was refused: {e}"));
                if spec.get("desiredCapacity").is_some() {
                    record_desired(written.metadata.resource_version, next.desired);
                }
                *last.lock().unwrap() = next;
                writes += 1;
                tokio::time::sleep(Duration::from_millis(rng.random_range(20..300))).await;
            }
            writes
        }
    };
    // The annotator: marks random Instances Unhealthy or Healthy, or clears the mark.
    let annotator = {
        let env = &env;
        async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(1));
            let mut marks = 0;
            while Instant::now() < end {
                let all = env.group_instances("web").await;
                if let Some(i) = all.choose(&mut rng) {
                    let value = *[Some("Unhealthy"), Some("Healthy"), None]
                        .choose(&mut rng)
                        .unwrap();
                    let patch =
                        json!({ "metadata": { "annotations": { ANNOTATION_HEALTH: value } } });
                    // The Instance may be gone meanwhile (replaced, scaled in): fine.
                    if env
                        .instances()
                        .patch(&i.name_any(), &PatchParams::default(), &Patch::Merge(patch))
                        .await
                        .is_ok()
                    {
                        marks += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;
            }
            marks
        }
    };
    let (edits, scales, marks) = futures::join!(spec_writer, scaler, annotator);
    eprintln!(
        "{edits} spec edits, {scales} scales and {marks} health marks in {window:?}, at once"
    );
    assert_alive(&mut op);

    // No lost update: the spec is what was last written, field by field.
    let mut want = last.lock().unwrap().clone();
    want.desired = desired_written.lock().unwrap().1;
    assert_eq!(
        Written::of(&env.group("web").await),
        want,
        "the last write stands"
    );
    // The marks end; the group converges to the last desired capacity.
    for i in env.group_instances("web").await {
        let patch = json!({ "metadata": { "annotations": { ANNOTATION_HEALTH: null } } });
        let _ = env
            .instances()
            .patch(&i.name_any(), &PatchParams::default(), &Patch::Merge(patch))
            .await;
    }
    let n = want.desired as usize;
    wait_for(
        &format!("{n} InService and Healthy"),
        Duration::from_secs(180),
        || async {
            let all = wait_in_service(&env.client, &env.ns, "web", n, TIMEOUT).await;
            all.iter().all(is_healthy).then_some(())
        },
    )
    .await;
    let g = env.group("web").await;
    assert_eq!(
        Written::of(&g),
        want,
        "the operator left the spec as written"
    );
    // Nor did it ever own a spec field.
    for entry in g.metadata.managed_fields.iter().flatten() {
        let manager = entry.manager.as_deref().unwrap_or_default();
        let fields = entry
            .fields_v1
            .as_ref()
            .map(|f| f.0.to_string())
            .unwrap_or_default();
        let operator = manager == autoheal::controller::FIELD_MANAGER
            || manager == autoheal::controller::context::STALLED_MANAGER;
        if operator && entry.subresource.as_deref() != Some("status") {
            assert!(
                !fields.contains("f:spec"),
                "the operator ({manager}) owns spec fields: {fields}"
            );
        }
    }
    // A replacement that is scaled in before its victim has gone is followed by the next
    // launch, annotated as replacing the same victim: allowed here, as long as at most one of
    // a victim's replacements stayed. Every other invariant holds.
    let report = checker.report();
    drop(checker);
    let violations: Vec<&String> = report
        .violations
        .iter()
        .filter(|v| {
            let Some(victim) = v
                .split(" replaced more than once")
                .next()
                .filter(|x| x != v)
            else {
                return true;
            };
            let stayed = report
                .replacements_of(victim)
                .iter()
                .filter(|r| {
                    let i = &report.instances[*r];
                    !i.gone && !i.states.iter().any(|s| s.is_terminating())
                })
                .count();
            stayed > 1
        })
        .collect();
    assert!(violations.is_empty(), "invariants broken: {violations:#?}");
    assert_alive(&mut op);
}

// ---------------------------------------------------------------------------------------------
// 6. Garbage in
// ---------------------------------------------------------------------------------------------

/// The fuzzer: a seeded RNG and how likely each value is garbage (per spec, so that some
/// specs are sane but for one field and some are garbage throughout).
struct Fuzz {
    rng: StdRng,
    bad: f64,
}

/// Makes the value of one field of a fuzzed object.
type Field<'a> = dyn Fn(&mut Fuzz) -> Value + 'a;

impl Fuzz {
    fn garbage(&mut self) -> bool {
        self.rng.random_bool(self.bad)
    }

    /// Whether a field is present.
    fn present(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// An integer in `lo..=hi`, or one of every kind the schema may or may not accept.
    fn int(&mut self, lo: i64, hi: i64) -> Value {
        if !self.garbage() {
            return json!(self.rng.random_range(lo..=hi));
        }
        let rng = &mut self.rng;
        match rng.random_range(0..6) {
            0 => json!(
                *[
                    i64::MIN,
                    -(1 << 40),
                    -2_147_483_649,
                    i64::MAX,
                    1 << 40,
                    2_147_483_648
                ]
                .choose(rng)
                .unwrap()
            ),
            1 => json!(rng.random_range(-1000..0)),
            2 => json!(*[0.5, -1.5, 1e300].choose(rng).unwrap()),
            3 => json!("7"),
            4 => Value::Null,
            _ => json!(rng.random_range(hi..hi.saturating_mul(100).max(hi + 2))),
        }
    }

    /// An int-or-percent value: a usual one, or something that looks a bit like one (some
    /// pass the schema and are not understood by the operator).
    fn int_or_percent(&mut self) -> Value {
        if !self.garbage() {
            let usual = [json!("30%"), json!("100%"), json!("0%"), json!(1), json!(2)];
            return usual.choose(&mut self.rng).unwrap().clone();
        }
        if self.rng.random_bool(0.3) {
            return self.int(0, 10);
        }
        let fixed = [
            "150%",
            "-5%",
            "abc",
            "",
            "%",
            "1.5%",
            " 3 ",
            "50 %",
            "99999999999999999999%",
            "0x10",
            "½",
            "NaN%",
        ];
        if self.rng.random_bool(0.7) {
            json!(*fixed.choose(&mut self.rng).unwrap())
        } else {
            json!(self.text())
        }
    }

    /// Random text: ASCII, blanks, unicode, sometimes long.
    fn text(&mut self) -> String {
        let alphabet: Vec<char> = "aZ09 %-_.:/\t\n\"'\\{}é☃😀\u{0}".chars().collect();
        let len = if self.rng.random_bool(0.05) {
            self.rng.random_range(100..5000)
        } else {
            self.rng.random_range(0..12)
        };
        (0..len)
            .map(|_| *alphabet.choose(&mut self.rng).unwrap())
            .collect()
    }

    /// One of `valid`, or not.
    fn one_of(&mut self, valid: &[&str]) -> Value {
        let v = *valid.choose(&mut self.rng).unwrap();
        if !self.garbage() {
            return json!(v);
        }
        json!(
            *[v.to_lowercase().as_str(), "", "Bogus", " "]
                .choose(&mut self.rng)
                .unwrap()
        )
    }

    /// An object of the fields `fields` makes, each present with probability `p`.
    fn object(&mut self, p: f64, fields: &[(&str, &Field<'_>)]) -> Value {
        let mut obj = serde_json::Map::new();
        for (key, value) in fields {
            if self.present(p) {
                let v = value(self);
                obj.insert(key.to_string(), v);
            }
        }
        Value::Object(obj)
    }

    /// A schema-plausible random ScalingGroup spec: fields missing, ints of any size, random
    /// int-or-percent strings and enums. Sizes stay small when sane: an accepted spec must not
    /// launch hundreds of Pods.
    fn spec(&mut self, template: &Value) -> Value {
        self.bad = *[0.0, 0.02, 0.1, 0.5].choose(&mut self.rng).unwrap();
        let probe = |f: &mut Fuzz| {
            let port = f.int(1, 65535);
            let mut p = f.object(
                0.4,
                &[
                    ("intervalSeconds", &|f: &mut Fuzz| f.int(1, 300)),
                    ("timeoutSeconds", &|f: &mut Fuzz| f.int(1, 120)),
                    ("healthyThreshold", &|f: &mut Fuzz| f.int(1, 10)),
                    ("unhealthyThreshold", &|f: &mut Fuzz| f.int(1, 10)),
                ],
            );
            let kind = if f.garbage() {
                f.rng.random_range(0..4)
            } else {
                f.rng.random_range(1..3)
            };
            let obj = p.as_object_mut().unwrap();
            if kind == 1 || kind == 3 {
                obj.insert("tcp".into(), json!({ "port": port }));
            }
            if kind == 2 || kind == 3 {
                let path = if f.garbage() { f.text() } else { "/".into() };
                obj.insert("http".into(), json!({ "port": port, "path": path }));
            }
            p
        };
        let mut spec = self.object(
            0.5,
            &[
                ("replacement", &|f: &mut Fuzz| {
                    f.object(
                        0.5,
                        &[
                            ("maxUnhealthy", &|f: &mut Fuzz| f.int_or_percent()),
                            ("maxInFlight", &|f: &mut Fuzz| f.int_or_percent()),
                            ("minHealthyPercentage", &|f: &mut Fuzz| f.int(0, 100)),
                            ("deregistrationDelaySeconds", &|f: &mut Fuzz| f.int(0, 3600)),
                            ("maxConsecutiveFailures", &|f: &mut Fuzz| f.int(1, 100)),
                            ("strategy", &|f: &mut Fuzz| {
                                f.one_of(&["TerminateThenLaunch", "LaunchBeforeTerminate"])
                            }),
                        ],
                    )
                }),
                ("healthCheck", &|f: &mut Fuzz| {
                    f.object(
                        0.5,
                        &[
                            ("gracePeriodSeconds", &|f: &mut Fuzz| f.int(0, 86400)),
                            ("startupTimeoutSeconds", &|f: &mut Fuzz| f.int(1, 86400)),
                            ("probe", &probe),
                        ],
                    )
                }),
                ("scaleIn", &|f: &mut Fuzz| {
                    json!({ "policy": f.one_of(&["Default", "OldestInstance", "NewestInstance"]) })
                }),
                ("suspendedProcesses", &|f: &mut Fuzz| {
                    json!([f.one_of(&["Launch", "Terminate", "HealthCheck", "ReplaceUnhealthy", "AddToService"])])
                }),
                ("lifecycleHooks", &|f: &mut Fuzz| {
                    let name = if f.garbage() { f.text() } else { "hook".into() };
                    json!([{
                        "name": name,
                        "transition": f.one_of(&["Launch", "Terminate"]),
                        "heartbeatTimeoutSeconds": f.int(30, 7200),
                        "defaultResult": f.one_of(&["Continue", "Abandon"]),
                    }])
                }),
                ("refresh", &|f: &mut Fuzz| {
                    f.object(
                        0.5,
                        &[
                            ("minHealthyPercentage", &|f: &mut Fuzz| f.int(0, 100)),
                            ("maxHealthyPercentage", &|f: &mut Fuzz| f.int(100, 200)),
                            ("trigger", &|f: &mut Fuzz| f.one_of(&["OnTemplateChange", "Manual"])),
                        ],
                    )
                }),
                ("revisionHistoryLimit", &|f: &mut Fuzz| f.int(0, 1000)),
            ],
        );
        let obj = spec.as_object_mut().unwrap();
        let min = self.rng.random_range(0..=2);
        for (key, lo) in [("minSize", 0), ("maxSize", min), ("desiredCapacity", min)] {
            if key == "desiredCapacity" && !self.present(0.7) {
                continue;
            }
            let v = self.int(lo, 3);
            obj.insert(key.into(), v);
        }
        if !self.garbage() {
            obj.insert("minSize".into(), json!(min));
            obj.insert("template".into(), template.clone());
        } else if self.present(0.5) {
            obj.insert("template".into(), json!({ "spec": {} }));
        }
        spec
    }
}

/// Whether an annotation value would be understood (garbage must not be).
fn understood(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "unhealthy" | "healthy" | "true" | "false" | "continue" | "abandon"
    )
}

/// A random annotation value the operator cannot understand.
fn garbage_value(fuzz: &mut Fuzz) -> String {
    loop {
        let v = if fuzz.rng.random_bool(0.33) {
            (*[
                "Unhealthy!",
                "unhealthy?",
                "UN HEALTHY",
                "yes",
                "1",
                "0",
                "",
                " ",
                "null",
                "tru",
                "Continu",
                "🙂",
                "Healthy\nUnhealthy",
            ]
            .choose(&mut fuzz.rng)
            .unwrap())
            .to_string()
        } else {
            fuzz.text()
        };
        if !understood(&v) {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_specs_and_annotations_never_crash_nor_act_and_every_refusal_says_why() {
    let env = Env::new("chaos-garbage").await;
    let mut op = env.operator();
    env.apply_group(&GroupBuilder::new("stable").desired(3).max(3).build())
        .await;
    let stable = env.wait_in_service("stable", 3).await;
    let stable_names: Vec<String> = stable.iter().map(|i| i.name_any()).collect();
    let stable_pods: BTreeMap<String, Option<String>> = env
        .group_pods("stable")
        .await
        .iter()
        .map(|p| (p.name_any(), p.uid()))
        .collect();
    let template = serde_json::to_value(GroupBuilder::new("junk").build().spec.template).unwrap();
    env.apply_group(&GroupBuilder::new("junk").desired(1).max(3).build())
        .await;
    let audit_from = env.audit_end();

    let seed: u64 = std::env::var("AUTOHEAL_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let inputs = pick(300, 3000);
    eprintln!("garbage: {inputs} inputs, seed {seed} (AUTOHEAL_CHAOS_SEED={seed} replays it)");
    let mut fuzz = Fuzz {
        rng: StdRng::seed_from_u64(seed),
        bad: 0.0,
    };
    let (mut refused, mut accepted, mut annotated) = (0, 0, 0);
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    let mut codes: BTreeMap<u16, usize> = BTreeMap::new();
    let mut paused_garbage: BTreeSet<&str> = BTreeSet::new();
    let mut last_garbage: BTreeMap<String, String> = BTreeMap::new();
    let pp = PatchParams::apply("chaos-garbage").force();
    for n in 0..inputs {
        if fuzz.present(0.6) {
            let spec = fuzz.spec(&template);
            let body = json!({
                "apiVersion": "autoheal.dev/v1alpha1",
                "kind": "ScalingGroup",
                "metadata": { "name": "junk" },
                "spec": spec,
            });
            let before = env.group("junk").await;
            match env.groups().patch("junk", &pp, &Patch::Apply(&body)).await {
                Ok(_) => accepted += 1,
                Err(kube::Error::Api(e)) => {
                    refused += 1;
                    // (Server-side apply answers a value of the wrong type with a 500 that
                    // says so.)
                    assert!(
                        e.code >= 400 && !e.message.trim().is_empty(),
                        "input {n}: a refusal without a message ({e:?}) of {body}"
                    );
                    *codes.entry(e.code).or_default() += 1;
                    let first = e.message.split(':').next_back().unwrap_or_default();
                    *refusals
                        .entry(first.trim().chars().take(80).collect())
                        .or_default() += 1;
                    // (The operator's status writes move the resourceVersion on.)
                    let after = env.group("junk").await;
                    assert!(
                        after.metadata.generation == before.metadata.generation
                            && after.spec == before.spec,
                        "input {n}: a refused spec changed the group"
                    );
                }
                Err(e) => panic!("input {n}: not an API answer: {e}"),
            }
        } else {
            // Garbage on a stable Instance (a health mark, a flag, a hook) or on a group.
            let value = garbage_value(&mut fuzz);
            let key = *[
                ANNOTATION_HEALTH,
                ANNOTATION_MAINTENANCE,
                ANNOTATION_STANDBY,
                ANNOTATION_RESPECT_GRACE_PERIOD,
                "hooks.autoheal.dev/drain",
                ANNOTATION_PAUSED,
            ]
            .choose(&mut fuzz.rng)
            .unwrap();
            let patch = json!({ "metadata": { "annotations": { key: value } } });
            if key == ANNOTATION_PAUSED {
                let group = *["stable", "junk"].choose(&mut fuzz.rng).unwrap();
                env.patch_group(group, patch).await;
                paused_garbage.insert(group);
            } else {
                let name = stable_names.choose(&mut fuzz.rng).unwrap().clone();
                env.patch_instance(&name, patch).await;
                last_garbage.insert(name, value);
            }
            annotated += 1;
        }
        if n % 50 == 0 {
            assert_alive(&mut op);
        }
    }
    eprintln!(
        "{accepted} specs accepted, {refused} refused (codes {codes:?}), {annotated} annotations; refusals: {refusals:#?}"
    );
    assert!(refused > 0 && accepted > 0, "the fuzzer tried both kinds");

    // An int-or-percent beyond 32 bits is refused too (it was stored once, and then no
    // client could read the group: the operator's watch failed).
    let mut huge =
        serde_json::to_value(GroupBuilder::new("junk").max(3).desired(1).build()).unwrap();
    huge["spec"]["replacement"]["maxInFlight"] = json!(1u64 << 40);
    match env.groups().patch("junk", &pp, &Patch::Apply(&huge)).await {
        Err(kube::Error::Api(e)) => assert!(
            e.code == 422
                && e.message
                    .contains("maxInFlight must be an integer from 0 to 10000"),
            "{e:?}"
        ),
        other => panic!("maxInFlight 2^40 was not refused: {other:?}"),
    }
    // A sane spec by the fuzzer's own field manager: what it set and this one leaves out
    // (suspended processes, hooks, ...) goes.
    let sane = GroupBuilder::new("junk").max(3).desired(1).build();
    env.groups()
        .patch("junk", &pp, &Patch::Apply(&sane))
        .await
        .unwrap();
    // The operator is not wedged: the junk group, now sane, is served.
    env.wait_in_service("junk", 1).await;

    // Garbage never acted: the stable group kept its Instances and Pods.
    let now = env.wait_in_service("stable", 3).await;
    let now_names: Vec<String> = now.iter().map(|i| i.name_any()).collect();
    assert_eq!(
        now_names, stable_names,
        "the stable Instances are untouched"
    );
    let pods_now: BTreeMap<String, Option<String>> = env
        .group_pods("stable")
        .await
        .iter()
        .map(|p| (p.name_any(), p.uid()))
        .collect();
    assert_eq!(pods_now, stable_pods, "the stable Pods are untouched");
    env.flush_audit().await;
    let (writes, _) = env.writes_after(audit_from);
    let touched: Vec<String> = by_operator(&writes)
        .filter(|w| {
            w.verb == "delete"
                && (w.resource == "pods" || w.resource == "instances")
                && stable_names.contains(&w.name)
        })
        .map(|w| format!("{} {}/{}", w.verb, w.resource, w.name))
        .collect();
    assert!(touched.is_empty(), "the operator deleted: {touched:?}");
    // ... and each garbage value on an Instance was reported as a Warning Event.
    for (name, value) in &last_garbage {
        wait_for(
            &format!("a Warning Event about {name} (last garbage {value:?})"),
            TIMEOUT,
            || async {
                env.events_about(name)
                    .await
                    .into_iter()
                    .any(|e| {
                        e.type_.as_deref() == Some("Warning")
                            && matches!(
                                e.reason.as_deref(),
                                Some("AnnotationNotUnderstood" | "InvalidAnnotation")
                            )
                            // (Similar Events are combined after a while, as client-go's
                            // aggregator does: the note need not name this very value.)
                            && e.note.as_deref().is_some_and(|n| !n.trim().is_empty())
                    })
                    .then_some(())
            },
        )
        .await;
    }
    for group in &paused_garbage {
        wait_for(
            &format!("a Warning Event about group {group}'s {ANNOTATION_PAUSED}"),
            TIMEOUT,
            || async {
                env.events_about(group)
                    .await
                    .into_iter()
                    .any(|e| {
                        e.type_.as_deref() == Some("Warning")
                            && e.reason.as_deref() == Some("InvalidAnnotation")
                            && e.note.as_deref().is_some_and(|n| !n.trim().is_empty())
                    })
                    .then_some(())
            },
        )
        .await;
    }
    assert_alive(&mut op);
}
