//! Replacement of Unhealthy Instances end to end, against the real API server with podsim and
//! the operator as a child process: a manual Unhealthy mark, a failing probe, the circuit
//! breaker (`maxUnhealthy`), `maxInFlight` and `minHealthyPercentage` bounding a mass failure,
//! `LaunchBeforeTerminate`, a template that always crashes (`maxConsecutiveFailures`), and 30
//! replacement cycles while the operator is SIGKILLed and restarted at random moments.
//!
//! Bounds are checked by an observer that watches the group's Instances and Pods for the whole
//! test (every state the API server shows, not samples).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autoheal::api::reason;
use autoheal::api::{
    CONDITION_RECONCILING, CONDITION_STALLED, HealthStatus, Instance, LABEL_GROUP, LifecycleState,
    Process, ReplacementStrategy, ScalingGroup,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use support::*;
use testkit::wait_for;

const BEHAVIOR: &str = "podsim.autoheal.dev/behavior";
const HEALTH: &str = "autoheal.dev/health";

fn state(i: &Instance) -> Option<LifecycleState> {
    state_of(i)
}

fn leaving(i: &Instance) -> bool {
    i.metadata.deletion_timestamp.is_some() || state(i).is_some_and(|s| s.is_terminating())
}

fn in_service_healthy(i: &Instance) -> bool {
    !leaving(i) && state(i) == Some(LifecycleState::InService) && is_healthy(i)
}

fn unhealthy(i: &Instance) -> bool {
    i.status.as_ref().and_then(|s| s.health_status) == Some(HealthStatus::Unhealthy)
}

fn replacement_condition(g: &ScalingGroup) -> Option<Condition> {
    g.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "ReplacementAllowed")
        .cloned()
}

/// Waits until the group has `n` Instances, all InService and Healthy with running Pods, none
/// of them named in `gone`.
async fn wait_healthy_without(env: &Env, group: &str, n: usize, gone: &[String]) -> Vec<Instance> {
    wait_for(
        &format!("{n} InService+Healthy instances in {group}, none of {gone:?}"),
        TIMEOUT,
        || async {
            let all = env.group_instances(group).await;
            let pods = env.group_pods(group).await;
            let ok = all.len() == n
                && pods.len() == n
                && all.iter().all(in_service_healthy)
                && all.iter().all(|i| !gone.contains(&i.name_any()));
            ok.then_some(all)
        },
    )
    .await
}

async fn wait_condition(env: &Env, group: &str, status: &str, reason: &str) -> Condition {
    let api = env.groups();
    wait_for(
        &format!("ReplacementAllowed={status} ({reason}) on {group}"),
        TIMEOUT,
        || async {
            let g = api.get(group).await.ok()?;
            replacement_condition(&g).filter(|c| c.status == status && c.reason == reason)
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// The observer: watches Instances and Pods of one group for the whole test.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct Stats {
    /// Most Instances leaving at once (being deleted or Terminating..Terminated).
    max_leaving: usize,
    /// Most Instances counting toward capacity at once.
    max_counting: usize,
    /// Fewest Instances InService (not leaving) at once, since armed.
    min_in_service: Option<usize>,
    /// Pods deleted before their Instance's deregistration delay ended.
    early_pod_deletions: Vec<String>,
    /// Pods seen with a deletion timestamp.
    pods_deleted: BTreeSet<String>,
    /// Every Instance name seen.
    instances_seen: BTreeSet<String>,
}

#[derive(Default)]
struct Shared {
    instances: BTreeMap<String, Instance>,
    stats: Stats,
    armed: bool,
}

struct Observer {
    shared: Arc<Mutex<Shared>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Observer {
    fn start(env: &Env, group: &str, deregistration_delay: i64) -> Observer {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let selector = format!("{LABEL_GROUP}={group}");
        let instances: Api<Instance> = env.instances();
        let s = shared.clone();
        let config = watcher::Config::default().labels(&selector);
        let t1 = tokio::spawn(async move {
            let mut stream = watcher(instances, config.clone()).boxed();
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let mut sh = s.lock().unwrap();
                match event {
                    watcher::Event::Apply(i) | watcher::Event::InitApply(i) => {
                        sh.stats.instances_seen.insert(i.name_any());
                        sh.instances.insert(i.name_any(), i);
                    }
                    watcher::Event::Delete(i) => {
                        sh.instances.remove(&i.name_any());
                    }
                    watcher::Event::Init | watcher::Event::InitDone => {}
                }
                let leaving_now = sh.instances.values().filter(|i| leaving(i)).count();
                let counting_now = sh.instances.len() - leaving_now;
                let in_service_now = sh
                    .instances
                    .values()
                    .filter(|i| !leaving(i) && state(i) == Some(LifecycleState::InService))
                    .count();
                let armed = sh.armed;
                let st = &mut sh.stats;
                st.max_leaving = st.max_leaving.max(leaving_now);
                st.max_counting = st.max_counting.max(counting_now);
                if armed {
                    st.min_in_service = Some(
                        st.min_in_service
                            .map_or(in_service_now, |m| m.min(in_service_now)),
                    );
                }
            }
        });
        let pods: Api<Pod> = env.pods();
        let s = shared.clone();
        let config = watcher::Config::default().labels(&selector);
        let t2 = tokio::spawn(async move {
            let mut stream = watcher(pods, config).boxed();
            while let Some(event) = stream.next().await {
                let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = event else {
                    continue;
                };
                let Some(deleted) = p.metadata.deletion_timestamp.as_ref().map(|t| t.0) else {
                    continue;
                };
                let mut sh = s.lock().unwrap();
                if !sh.stats.pods_deleted.insert(p.name_any()) {
                    continue;
                }
                // deletionTimestamp = time of the DELETE + the Pod's grace period.
                let grace = p.metadata.deletion_grace_period_seconds.unwrap_or(0);
                let requested = deleted.as_second() - grace;
                let left_service = sh.instances.get(&p.name_any()).and_then(|i| {
                    i.status
                        .as_ref()?
                        .entered(LifecycleState::Terminating)
                        .map(|t| t.0.as_second())
                });
                match left_service {
                    // One second of slack: timestamps are whole seconds.
                    Some(t) if requested + 1 >= t + deregistration_delay => {}
                    other => sh.stats.early_pod_deletions.push(format!(
                        "{}: Pod delete at {requested}, Terminating entered at {other:?}",
                        p.name_any()
                    )),
                }
            }
        });
        Observer {
            shared,
            tasks: vec![t1, t2],
        }
    }

    /// Starts tracking the fewest InService Instances.
    fn arm(&self) {
        self.shared.lock().unwrap().armed = true;
    }

    fn stats(&self) -> Stats {
        self.shared.lock().unwrap().stats.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_unhealthy_is_replaced_after_leaving_service() {
    let env = Env::new("repl-manual").await;
    let _op = env.operator();
    env.apply_group(&GroupBuilder::new("web").desired(3).max(3).build())
        .await;
    let before = env.wait_in_service("web", 3).await;
    let observer = Observer::start(&env, "web", 1);
    let victim = before[1].name_any();

    let marked = Instant::now();
    env.kubectl(&[
        "annotate",
        "-n",
        &env.ns,
        "inst",
        &victim,
        &format!("{HEALTH}=Unhealthy"),
    ]);
    let api = env.instances();
    let pods = env.pods();
    wait_for(
        &format!("{victim} Terminating"),
        Duration::from_secs(30),
        || async {
            let i = api.get(&victim).await.ok()?;
            leaving(&i).then_some(())
        },
    )
    .await;
    let took = marked.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "{victim} went Terminating after {took:?} (expected within a second; 3 s allowed on a loaded machine)"
    );
    // It left service first: its Pod lost the in-service label while the Pod still exists.
    let pod = wait_for(
        &format!("{victim}'s Pod out of service"),
        TIMEOUT,
        || async {
            match pods.get_opt(&victim).await {
                Ok(Some(p)) if !pod_in_service(&p) => Some(Some(p)),
                Ok(None) => Some(None),
                _ => None,
            }
        },
    )
    .await;
    if let Some(p) = pod {
        assert!(!pod_in_service(&p));
    }

    let after = wait_healthy_without(&env, "web", 3, std::slice::from_ref(&victim)).await;
    let names: BTreeSet<String> = after.iter().map(|i| i.name_any()).collect();
    let new: Vec<&String> = names
        .iter()
        .filter(|n| !before.iter().any(|b| &b.name_any() == *n))
        .collect();
    assert_eq!(new.len(), 1, "exactly one new instance: {names:?}");
    let replacement = after
        .iter()
        .find(|i| &&i.name_any() == new.first().unwrap())
        .unwrap();
    assert_eq!(
        replacement.annotations().get("autoheal.dev/replaces"),
        Some(&victim),
        "the replacement names the instance it replaces"
    );
    let events = env.events_about(&victim).await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some(reason::REPLACING)),
        "a {} Event about {victim}: {events:?}",
        reason::REPLACING
    );
    let stats = observer.stats();
    assert!(
        stats.early_pod_deletions.is_empty(),
        "{:?}",
        stats.early_pod_deletions
    );
    assert!(stats.max_counting <= 3, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_probe_is_replaced_after_the_threshold() {
    let env = Env::new("repl-probe").await;
    let _op = env.operator();
    env.apply_group(
        &GroupBuilder::new("web")
            .desired(3)
            .max(3)
            .http_probe()
            .build(),
    )
    .await;
    let before = env.wait_in_service("web", 3).await;
    wait_healthy_without(&env, "web", 3, &[]).await;
    let victim = before[0].name_any();
    env.set_pod_behavior(&victim, "fail").await;
    wait_healthy_without(&env, "web", 3, std::slice::from_ref(&victim)).await;
    let events = env.events_about(&victim).await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some(reason::REPLACING))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_holds_when_too_many_are_unhealthy_and_resumes() {
    let env = Env::new("repl-breaker").await;
    let _op = env.operator();
    // ReplaceUnhealthy is suspended while the failure spreads, so that the condition goes
    // Suspended, then TooManyUnhealthy once resumed. (The breaker also holds without this: a
    // failure still spreading counts, see tests/breaker.rs, which faces that race 10 times.)
    let group = GroupBuilder::new("web")
        .desired(3)
        .max(3)
        .http_probe()
        .suspend(Process::ReplaceUnhealthy)
        .with_spec(|s| s.replacement.max_unhealthy = IntOrString::Int(1));
    env.apply_group(&group.clone().build()).await;
    let before = env.wait_in_service("web", 3).await;
    wait_healthy_without(&env, "web", 3, &[]).await;
    let names: Vec<String> = before.iter().map(|i| i.name_any()).collect();
    for n in &names {
        env.set_pod_behavior(n, "fail").await;
    }
    wait_for("all three Unhealthy", TIMEOUT, || async {
        let all = env.group_instances("web").await;
        (all.len() == 3 && all.iter().all(unhealthy)).then_some(())
    })
    .await;
    wait_condition(&env, "web", "False", reason::SUSPENDED).await;

    // Resume ReplaceUnhealthy: the breaker holds.
    env.patch_group(
        "web",
        serde_json::json!({ "spec": { "suspendedProcesses": [] } }),
    )
    .await;
    let cond = wait_condition(&env, "web", "False", reason::TOO_MANY_UNHEALTHY).await;
    for n in &names {
        assert!(cond.message.contains(n.as_str()), "{}", cond.message);
    }
    // kstatus: held by the breaker is Stalled (a person must act), not Reconciling.
    let g = env
        .wait_group_condition("web", CONDITION_STALLED, "True")
        .await;
    let conditions = &g.status.as_ref().unwrap().conditions;
    let stalled = conditions
        .iter()
        .find(|c| c.type_ == CONDITION_STALLED)
        .unwrap();
    assert_eq!(stalled.reason, reason::TOO_MANY_UNHEALTHY);
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == CONDITION_RECONCILING && c.status == "False"),
        "{conditions:?}"
    );
    // Nothing is deleted while it holds (watched for a while).
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        let all = env.group_instances("web").await;
        assert_eq!(all.len(), 3);
        assert!(
            all.iter().all(|i| !leaving(i)),
            "an instance was terminated: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let group_events = env.events_about("web").await;
    let warning = group_events
        .iter()
        .find(|e| e.reason.as_deref() == Some(reason::TOO_MANY_UNHEALTHY))
        .expect("a TooManyUnhealthy Event");
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    for n in &names {
        assert!(warning.note.as_deref().unwrap_or("").contains(n.as_str()));
    }

    // Two recover: the third is replaced, the condition returns to True.
    env.set_pod_behavior(&names[0], "healthy").await;
    env.set_pod_behavior(&names[1], "healthy").await;
    wait_healthy_without(&env, "web", 3, std::slice::from_ref(&names[2])).await;
    wait_condition(&env, "web", "True", reason::ALLOWED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_and_min_healthy_bound_a_mass_failure() {
    let env = Env::new("repl-mass").await;
    let _op = env.operator();
    // maxInFlight 3, but minHealthyPercentage 80 of 10 leaves room for 2 at once.
    let group = GroupBuilder::new("web")
        .desired(10)
        .max(10)
        .deregistration_delay(2)
        .with_spec(|s| {
            s.replacement.max_in_flight = IntOrString::Int(3);
            s.replacement.min_healthy_percentage = 80;
        });
    env.apply_group(&group.build()).await;
    let before = env.wait_in_service("web", 10).await;
    let observer = Observer::start(&env, "web", 2);
    let names: Vec<String> = before.iter().map(|i| i.name_any()).collect();
    for n in &names {
        env.annotate_instance(n, HEALTH, Some("Unhealthy")).await;
    }
    wait_healthy_without(&env, "web", 10, &names).await;
    let stats = observer.stats();
    assert!(
        stats.max_leaving <= 2,
        "at most 2 replacements in flight, observed {}",
        stats.max_leaving
    );
    assert!(stats.max_leaving >= 1, "{stats:?}");
    assert!(stats.max_counting <= 10, "{stats:?}");
    assert!(
        stats.early_pod_deletions.is_empty(),
        "{:?}",
        stats.early_pod_deletions
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_before_terminate_never_drops_in_service_below_desired() {
    let env = Env::new("repl-lbt").await;
    let _op = env.operator();
    let group = GroupBuilder::new("web").desired(3).max(3).with_spec(|s| {
        s.replacement.strategy = ReplacementStrategy::LaunchBeforeTerminate;
    });
    env.apply_group(&group.build()).await;
    let before = env.wait_in_service("web", 3).await;
    let observer = Observer::start(&env, "web", 1);
    wait_for("observer synced", TIMEOUT, || async {
        (observer.stats().instances_seen.len() >= 3).then_some(())
    })
    .await;
    observer.arm();
    let names: Vec<String> = before.iter().map(|i| i.name_any()).collect();
    env.annotate_instance(&names[0], HEALTH, Some("Unhealthy"))
        .await;
    wait_healthy_without(&env, "web", 3, &names[..1]).await;
    let stats = observer.stats();
    assert!(
        stats.min_in_service.is_some_and(|m| m >= 3),
        "InService dropped below 3: {stats:?}"
    );
    assert!(stats.max_counting <= 4, "maxSize + 1 surge: {stats:?}");
    assert!(
        stats.max_counting == 4,
        "a surge instance was launched: {stats:?}"
    );
}

/// Replacements of a template that always crashes stop after `maxConsecutiveFailures`, and
/// stay stopped: with replacement backoffs of 1 s (at most 2 s) a replacement would start
/// within 2 s were the breaker not holding, and none does in 12 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_template_stops_after_max_consecutive_failures() {
    const BACKOFF_CAP: Duration = Duration::from_secs(2);
    let env = Env::new("repl-crash").await;
    let op = Operator::start_with(
        env.cp,
        &env.ns,
        &[
            "--replacement-backoff-base",
            "1s",
            "--replacement-backoff-cap",
            "2s",
        ],
    );
    let group = GroupBuilder::new("web")
        .desired(1)
        .max(2)
        .pod_annotation(BEHAVIOR, "crash")
        .with_spec(|s| {
            s.replacement.max_consecutive_failures = 2;
            // A crashed (Failed) Pod's deletion can take long to complete; 2 in flight keeps
            // a slow Terminating:Proceed from holding the next replacement back.
            s.replacement.max_in_flight = IntOrString::Int(2);
        });
    env.apply_group(&group.clone().build()).await;
    let cond = wait_condition(&env, "web", "False", reason::KEEP_FAILING).await;
    assert!(
        cond.message
            .contains("autoheal.dev/reset-replacement-failures"),
        "{}",
        cond.message
    );
    let g = env.group("web").await;
    let status = g.status.unwrap();
    assert_eq!(status.consecutive_replacement_failures, 2);
    for failed in &status.recent_replacement_failures {
        assert!(cond.message.contains(failed.as_str()), "{}", cond.message);
    }
    // The replaced Instances may still be leaving (a crashed Pod's deletion can take a
    // minute): their deletions are no replacement. Any other Instance or Pod created or
    // deleted from here on would be.
    let at_stop = env.group_instances("web").await;
    let staying: BTreeSet<String> = at_stop
        .iter()
        .filter(|i| !leaving(i))
        .map(|i| i.name_any())
        .collect();
    let on_their_way: BTreeSet<String> = at_stop
        .iter()
        .filter(|i| leaving(i))
        .map(|i| i.name_any())
        .collect();
    assert!(
        at_stop
            .iter()
            .any(|i| staying.contains(&i.name_any()) && unhealthy(i)),
        "the last failed replacement stays, Unhealthy: {at_stop:?}"
    );
    // Stopped: watched on the audit log for 6 backoff caps, the operator creates and deletes
    // no Instance (nor Pod), though it looks at the group again (a change of the group's
    // annotations makes it reconcile; a reconcile past the backoff would replace).
    let group_reconciles = op.reconciles("scalinggroup").await.expect("metrics");
    let from = env.audit_end();
    env.annotate_group("web", "autoheal-tests/poke", Some("1"))
        .await;
    env.expect_no_writes(
        from,
        BACKOFF_CAP * 6,
        "an Instance or Pod created or deleted while replacement is stopped",
        |w| {
            w.user_agent.starts_with("autoheal/")
                && (w.resource == "instances" || w.resource == "pods")
                && w.subresource.is_empty()
                && (w.verb == "create" || (w.verb == "delete" && !on_their_way.contains(&w.name)))
        },
    )
    .await;
    let now: BTreeSet<String> = env
        .group_instances("web")
        .await
        .iter()
        .filter(|i| !on_their_way.contains(&i.name_any()))
        .map(|i| i.name_any())
        .collect();
    assert_eq!(staying, now, "nothing replaced while stopped");
    let looked = op.reconciles("scalinggroup").await.expect("metrics") - group_reconciles;
    assert!(looked > 0, "the group was reconciled while stopped");
    assert!(
        env.events_about("web")
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some(reason::KEEP_FAILING))
    );

    // A fixed template clears it: replacement resumes and the group heals.
    let fixed = GroupBuilder::new("web")
        .desired(1)
        .max(2)
        .pod_annotation(BEHAVIOR, "healthy")
        .with_spec(|s| {
            s.replacement.max_consecutive_failures = 2;
            s.replacement.max_in_flight = IntOrString::Int(2);
        });
    env.apply_group(&fixed.build()).await;
    wait_healthy_without(&env, "web", 1, &[]).await;
    wait_condition(&env, "web", "True", reason::ALLOWED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacements_survive_operator_sigkills() {
    use rand::RngExt;
    const CYCLES: usize = 30;
    let env = Env::new("repl-kill").await;
    let mut op = env.operator();
    let group = GroupBuilder::new("web")
        .desired(3)
        .max(3)
        .deregistration_delay(1)
        .with_spec(|s| s.replacement.max_in_flight = IntOrString::Int(2));
    env.apply_group(&group.build()).await;
    let observer = Observer::start(&env, "web", 1);
    env.wait_in_service("web", 3).await;
    let mut replaced: Vec<String> = Vec::new();
    let started = Instant::now();
    for cycle in 0..CYCLES {
        let current = wait_healthy_without(&env, "web", 3, &replaced).await;
        let victim = current[rand::rng().random_range(0..current.len())].name_any();
        env.annotate_instance(&victim, HEALTH, Some("Unhealthy"))
            .await;
        replaced.push(victim.clone());
        // Kill at a random moment of the replacement (most cycles), then restart.
        if cycle % 5 != 4 {
            let wait = rand::rng().random_range(0..2500);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            op.sigkill();
            op.restart();
        }
    }
    let last = wait_healthy_without(&env, "web", 3, &replaced).await;
    eprintln!(
        "{CYCLES} replacement cycles with SIGKILLs took {:?}",
        started.elapsed()
    );

    // Capacity converged; nothing orphaned.
    assert_eq!(last.len(), 3);
    let pods = env.group_pods("web").await;
    let instance_names: BTreeSet<String> = last.iter().map(|i| i.name_any()).collect();
    for p in &pods {
        assert!(
            instance_names.contains(&p.name_any()),
            "orphan Pod {}",
            p.name_any()
        );
    }
    let all_pods: Api<Pod> = env.pods();
    let every_pod = all_pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(every_pod.len(), 3, "no other Pod left in the namespace");
    // Invariants over the whole run.
    let stats = observer.stats();
    assert!(
        stats.early_pod_deletions.is_empty(),
        "{:?}",
        stats.early_pod_deletions
    );
    assert!(
        stats.max_counting <= 3,
        "more than maxSize counted: {stats:?}"
    );
    assert!(
        stats.max_leaving <= 2,
        "more than maxInFlight leaving: {stats:?}"
    );
    for victim in &replaced {
        let events = env.events_about(victim).await;
        assert!(
            events
                .iter()
                .any(|e| e.reason.as_deref() == Some(reason::REPLACING)),
            "{victim} has no {} Event: {events:?}",
            reason::REPLACING
        );
    }
}
