//! The circuit breaker that knows correlated failure, end to end on the real control plane
//! with podsim simulating several Nodes in zones and the operator as a child process (the rule
//! is in `src/plan/replacement/breaker.rs`):
//!
//! 1. one Node goes NotReady in a group spread over several Ready Nodes, taking more Instances
//!    down than `maxUnhealthy`: they are replaced onto Ready Nodes, within `maxInFlight`;
//! 2. every Node goes NotReady at once (what a control-plane partition looks like): nothing is
//!    replaced, even with `maxUnhealthy: 100%`, and `TooManyUnhealthy` says why; nor when the
//!    Nodes come back one by one;
//! 3. failures spread over Ready Nodes beyond `maxUnhealthy`: nothing is replaced;
//! 4. a mass failure is seen as one: every Pod of a group of 4 with `maxUnhealthy: 1` fails
//!    within the same second (as `kubectl annotate pods --all ...=fail` does it), with probes
//!    on: nothing is terminated, 10 runs out of 10.
//!
//! "Nothing happens" is checked by an observer that watches the group's Instances for the
//! whole test (every version the API server shows), then for a bounded time after the breaker
//! has tripped.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autoheal::api::reason;
use autoheal::api::{HealthDetail, HealthStatus, Instance, LABEL_GROUP, ScalingGroup};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use support::*;
use testkit::wait_for;

const BEHAVIOR: &str = "podsim.autoheal.dev/behavior";

fn leaving(i: &Instance) -> bool {
    i.metadata.deletion_timestamp.is_some() || state_of(i).is_some_and(|s| s.is_terminating())
}

fn health(i: &Instance) -> (Option<HealthStatus>, Option<HealthDetail>) {
    let s = i.status.as_ref();
    (
        s.and_then(|s| s.health_status),
        s.and_then(|s| s.health_detail),
    )
}

fn healthy_ok(i: &Instance) -> bool {
    !leaving(i)
        && state_of(i) == Some(autoheal::api::LifecycleState::InService)
        && health(i) == (Some(HealthStatus::Healthy), Some(HealthDetail::OK))
}

fn unhealthy(i: &Instance) -> bool {
    health(i).0 == Some(HealthStatus::Unhealthy)
}

fn node_of(i: &Instance) -> Option<String> {
    i.status.as_ref().and_then(|s| s.node_name.clone())
}

fn zone_of(i: &Instance) -> Option<String> {
    i.status.as_ref().and_then(|s| s.zone.clone())
}

fn replacement_condition(g: &ScalingGroup) -> Option<Condition> {
    g.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "ReplacementAllowed")
        .cloned()
}

/// A group of `n` with an HTTP probe (every second, unhealthy after 2 failures),
/// `maxUnhealthy`, `maxInFlight: 1` and a short deregistration delay.
fn group(name: &str, n: i32, max_unhealthy: IntOrString) -> ScalingGroup {
    GroupBuilder::new(name)
        .desired(n)
        .max(n)
        .http_probe()
        .with_spec(|s| {
            s.replacement.max_unhealthy = max_unhealthy;
            s.replacement.max_in_flight = IntOrString::Int(1);
        })
        .build()
}

/// Waits until the group has `n` Instances, all InService and Healthy with detail OK.
async fn wait_all_ok(env: &Env, group: &str, n: usize) -> Vec<Instance> {
    wait_for(
        &format!("{n} InService+Healthy(OK) instances in {group}"),
        TIMEOUT,
        || async {
            let all = env.group_instances(group).await;
            (all.len() == n
                && all.iter().all(healthy_ok)
                && all.iter().all(|i| node_of(i).is_some()))
            .then_some(all)
        },
    )
    .await
}

/// Waits until `ReplacementAllowed` of `group` is as `ok` says (on timeout, says what it was
/// and how the Instances were).
async fn wait_condition(
    env: &Env,
    group: &str,
    what: &str,
    ok: impl Fn(&Condition) -> bool,
) -> Condition {
    wait_condition_while(env, group, what, ok, || {}).await
}

/// [`wait_condition`], calling `check` (which asserts) at every look.
async fn wait_condition_while(
    env: &Env,
    group: &str,
    what: &str,
    ok: impl Fn(&Condition) -> bool,
    check: impl Fn(),
) -> Condition {
    let api = env.groups();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        check();
        let last = api
            .get(group)
            .await
            .ok()
            .and_then(|g| replacement_condition(&g));
        if let Some(c) = last.as_ref().filter(|c| ok(c)) {
            return c.clone();
        }
        if Instant::now() >= deadline {
            let healths: Vec<_> = env
                .group_instances(group)
                .await
                .iter()
                .map(|i| (i.name_any(), state_of(i), health(i)))
                .collect();
            panic!(
                "timed out waiting for ReplacementAllowed {what} on {group}: last {last:#?}; instances {healths:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The part of a `TooManyUnhealthy` message about Node `node`: from `Node <node>` to the next
/// `;`.
fn about_node<'a>(message: &'a str, node: &str) -> Option<&'a str> {
    let start = message.find(&format!("Node {node}"))?;
    let rest = &message[start..];
    Some(rest.split(';').next().unwrap_or(rest))
}

/// Asserts that `message` groups every Instance of `instances` under its zone and Node:
/// `zone <z>: Node <n>...: <names>`.
fn assert_grouped_by_node_and_zone(message: &str, instances: &[Instance]) {
    let mut by_place: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for i in instances {
        let zone = zone_of(i).expect("the Instance records its zone");
        let node = node_of(i).expect("the Instance records its Node");
        by_place.entry((zone, node)).or_default().push(i.name_any());
    }
    for ((zone, node), names) in &by_place {
        let part = about_node(message, node)
            .unwrap_or_else(|| panic!("Node {node} is not named in: {message}"));
        for n in names {
            assert!(
                part.contains(n.as_str()),
                "{n} not under Node {node}: {message}"
            );
        }
        // The zone is named right before its Nodes.
        let zone_at = message
            .find(&format!("zone {zone}: "))
            .unwrap_or_else(|| panic!("zone {zone} is not named in: {message}"));
        let node_at = message.find(&format!("Node {node}")).unwrap();
        assert!(
            zone_at < node_at,
            "zone {zone} after Node {node}: {message}"
        );
        let between = &message[zone_at..node_at];
        assert!(
            !between[5..].contains("zone "),
            "Node {node} is not listed under zone {zone}: {message}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The observer: watches one group's Instances for the whole test.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct Seen {
    /// The latest version of each Instance present.
    current: BTreeMap<String, Instance>,
    /// Every Instance name seen.
    names: BTreeSet<String>,
    /// Instances seen leaving (deletion requested or Terminating..Terminated).
    left: BTreeSet<String>,
    /// Most Instances leaving at once.
    max_leaving: usize,
}

struct Observer {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// Watches the Instances of `group` and waits until it has listed `n` of them.
    async fn start(env: &Env, group: &str, n: usize) -> Observer {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let config = watcher::Config::default().labels(&format!("{LABEL_GROUP}={group}"));
        let stream = watcher::watcher(env.instances(), config).default_backoff();
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                futures::pin_mut!(stream);
                while let Some(event) = stream.next().await {
                    let Ok(event) = event else { continue };
                    let mut s = seen.lock().unwrap();
                    match event {
                        watcher::Event::Apply(i) | watcher::Event::InitApply(i) => {
                            let name = i.name_any();
                            s.names.insert(name.clone());
                            if leaving(&i) {
                                s.left.insert(name.clone());
                            }
                            s.current.insert(name, i);
                        }
                        watcher::Event::Delete(i) => {
                            let name = i.name_any();
                            s.left.insert(name.clone());
                            s.current.remove(&name);
                        }
                        watcher::Event::Init | watcher::Event::InitDone => {}
                    }
                    let leaving_now = s.current.values().filter(|i| leaving(i)).count();
                    s.max_leaving = s.max_leaving.max(leaving_now);
                }
            })
        };
        let observer = Observer { seen, task };
        wait_for("the observer to list the group", TIMEOUT, || async {
            (observer.seen().current.len() >= n).then_some(())
        })
        .await;
        observer
    }

    fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Asserts that none of `names` has left and no other Instance appeared.
    fn assert_untouched(&self, names: &BTreeSet<String>) {
        let seen = self.seen();
        assert!(
            seen.left.is_empty(),
            "an Instance was terminated: {:?}",
            seen.left
        );
        assert_eq!(&seen.names, names, "an Instance was launched");
    }

    /// Asserts, for `how_long` after now, that none of `names` has left and no other Instance
    /// appeared (the watch sees every version; it is sampled every 100 ms for the deadline).
    async fn assert_nothing_replaced(&self, names: &BTreeSet<String>, how_long: Duration) {
        let deadline = Instant::now() + how_long;
        loop {
            self.assert_untouched(names);
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn names_of(instances: &[Instance]) -> BTreeSet<String> {
    instances.iter().map(|i| i.name_any()).collect()
}

/// Annotates every Pod of `group` with `behavior` in one burst, one PATCH after the other
/// without waiting in between, as `kubectl annotate pods --all` does.
async fn annotate_all_pods(env: &Env, group: &str, behavior: &str) {
    let patch = serde_json::json!({ "metadata": { "annotations": { BEHAVIOR: behavior } } });
    for pod in env.group_pods(group).await {
        env.pods()
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The four cases
// ---------------------------------------------------------------------------------------------

/// (1) One Node of three goes NotReady, taking two Instances down (more than `maxUnhealthy:
/// 1`): the cause is known and local, so both are replaced onto Ready Nodes, one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_node_failure_is_replaced_onto_ready_nodes_within_max_in_flight() {
    let env = Env::with_nodes("brk-node", 3, &["a", "b", "c"]).await;
    let _op = env.operator();
    env.apply_group(&group("web", 6, IntOrString::Int(1))).await;
    let before = wait_all_ok(&env, "web", 6).await;
    let down = node_of(&before[0]).unwrap();
    let victims: BTreeSet<String> = before
        .iter()
        .filter(|i| node_of(i).as_deref() == Some(down.as_str()))
        .map(|i| i.name_any())
        .collect();
    assert_eq!(
        victims.len(),
        2,
        "podsim spreads 6 Pods over 3 Nodes: {before:?}"
    );
    let observer = Observer::start(&env, "web", 6).await;

    env.set_node_not_ready(&down, true).await;
    let after = wait_for(
        "6 InService+Healthy instances, none on the NotReady Node",
        TIMEOUT,
        || async {
            let all = env.group_instances("web").await;
            let ok = all.len() == 6
                && all.iter().all(healthy_ok)
                && all.iter().all(|i| !victims.contains(&i.name_any()))
                && all.iter().all(|i| node_of(i).is_some_and(|n| n != down));
            ok.then_some(all)
        },
    )
    .await;
    let seen = observer.seen();
    assert_eq!(
        seen.left, victims,
        "only the Instances of the NotReady Node left"
    );
    assert!(
        seen.max_leaving <= 1,
        "maxInFlight 1, yet {} left at once",
        seen.max_leaving
    );
    let kept: BTreeSet<String> = names_of(&before).difference(&victims).cloned().collect();
    assert!(names_of(&after).is_superset(&kept));
    let c = wait_condition(&env, "web", "True", |c| c.status == "True").await;
    assert_eq!(c.reason, reason::ALLOWED);
}

/// (2) Every Node goes NotReady at once (a control-plane partition looks like this): nothing is
/// replaced, even with `maxUnhealthy: 100%`, `TooManyUnhealthy` says why and where; when the
/// Nodes come back one by one, nothing is replaced either, and the same Instances serve again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_not_ready_at_once_replaces_nothing() {
    let env = Env::with_nodes("brk-part", 2, &["a", "b"]).await;
    let _op = env.operator();
    env.apply_group(&group("web", 4, IntOrString::String("100%".into())))
        .await;
    let before = wait_all_ok(&env, "web", 4).await;
    let names = names_of(&before);
    let observer = Observer::start(&env, "web", 4).await;
    let nodes: Vec<String> = env.nodes().await.iter().map(|n| n.name_any()).collect();
    assert_eq!(nodes.len(), 2);

    futures::future::join_all(nodes.iter().map(|n| env.set_node_not_ready(n, true))).await;
    let c = wait_condition_while(
        &env,
        "web",
        "False/TooManyUnhealthy naming all",
        |c| {
            c.status == "False"
                && c.reason == reason::TOO_MANY_UNHEALTHY
                && names.iter().all(|n| c.message.contains(n.as_str()))
        },
        || observer.assert_untouched(&names),
    )
    .await;
    assert!(
        c.message.starts_with(&format!(
            "every Node in view is NotReady (2 of 2: {}, {})",
            nodes[0], nodes[1]
        )),
        "{}",
        c.message
    );
    assert!(c.message.contains("maxUnhealthy: 100%"), "{}", c.message);
    let all = env.group_instances("web").await;
    assert!(all.iter().all(unhealthy), "{all:?}");
    assert_grouped_by_node_and_zone(&c.message, &before);
    // Past the time a Node failure takes to settle: still nothing.
    observer
        .assert_nothing_replaced(&names, Duration::from_secs(12))
        .await;

    // The partition ends Node by Node (kubelets post their status again on their own
    // schedules): the first Node back must not make the other, down for long, look like a
    // local failure to replace. The second comes back once the first one's Instances serve.
    env.set_node_not_ready(&nodes[0], false).await;
    let on_first: Vec<String> = before
        .iter()
        .filter(|i| node_of(i).as_deref() == Some(nodes[0].as_str()))
        .map(|i| i.name_any())
        .collect();
    assert!(!on_first.is_empty(), "{before:?}");
    wait_for(
        "the Instances on the first Node back to serve again",
        TIMEOUT,
        || async {
            observer.assert_untouched(&names);
            let all = env.group_instances("web").await;
            on_first
                .iter()
                .all(|n| all.iter().any(|i| i.name_any() == *n && healthy_ok(i)))
                .then_some(())
        },
    )
    .await;
    observer.assert_untouched(&names);
    env.set_node_not_ready(&nodes[1], false).await;
    wait_condition_while(
        &env,
        "web",
        "True",
        |c| c.status == "True",
        || observer.assert_untouched(&names),
    )
    .await;
    let again = wait_all_ok(&env, "web", 4).await;
    assert_eq!(names_of(&again), names, "the same Instances serve again");
    assert!(observer.seen().left.is_empty());
}

/// (3) Failures spread over Ready Nodes, on one revision, beyond `maxUnhealthy`: nothing is
/// replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_spread_over_ready_nodes_beyond_max_unhealthy_replace_nothing() {
    let env = Env::with_nodes("brk-spread", 3, &["a", "b", "c"]).await;
    let _op = env.operator();
    env.apply_group(&group("web", 6, IntOrString::Int(1))).await;
    let before = wait_all_ok(&env, "web", 6).await;
    let names = names_of(&before);
    // Two Instances on two different Nodes.
    let first = &before[0];
    let second = before
        .iter()
        .find(|i| node_of(i) != node_of(first))
        .unwrap();
    let failing = vec![first.clone(), second.clone()];
    let observer = Observer::start(&env, "web", 6).await;

    let patch = serde_json::json!({ "metadata": { "annotations": { BEHAVIOR: "fail" } } });
    for i in &failing {
        env.pods()
            .patch(
                &i.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .unwrap();
    }
    let c = wait_condition_while(
        &env,
        "web",
        "False/TooManyUnhealthy naming both",
        |c| {
            c.status == "False"
                && c.reason == reason::TOO_MANY_UNHEALTHY
                && c.message.starts_with("2 instances are Unhealthy (")
        },
        || observer.assert_untouched(&names),
    )
    .await;
    assert_grouped_by_node_and_zone(&c.message, &failing);
    assert!(!c.message.contains("NotReady"), "{}", c.message);
    observer
        .assert_nothing_replaced(&names, Duration::from_secs(3))
        .await;
}

/// (4) A mass failure is seen as one: every Pod of a group of 4 with `maxUnhealthy: 1` and
/// probes on fails within the same second; nothing is terminated, in 10 runs out of 10. Each
/// target's verdict arrives up to one probe interval after the others (random probe phases):
/// the breaker counts those failing below their threshold and lets a fresh verdict settle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_failure_is_seen_as_one_ten_times_out_of_ten() {
    let env = Env::with_nodes("brk-mass", 2, &["a", "b"]).await;
    let _op = env.operator();
    // Ten independent runs, at once (each group's failure arrives within its own second).
    futures::future::join_all((0..10).map(|run| one_mass_failure(&env, run))).await;
}

/// One run: a group of 4 with `maxUnhealthy: 1`, all its Pods failing at once.
async fn one_mass_failure(env: &Env, run: usize) {
    let name = format!("mass-{run}");
    env.apply_group(&group(&name, 4, IntOrString::Int(1))).await;
    let before = wait_all_ok(env, &name, 4).await;
    let names = names_of(&before);
    let observer = Observer::start(env, &name, 4).await;

    annotate_all_pods(env, &name, "fail").await;
    let c = wait_condition_while(
        env,
        &name,
        "False/TooManyUnhealthy naming all 4",
        |c| {
            c.status == "False"
                && c.reason == reason::TOO_MANY_UNHEALTHY
                && c.message.starts_with("4 instances are Unhealthy (")
        },
        || observer.assert_untouched(&names),
    )
    .await;
    assert_grouped_by_node_and_zone(&c.message, &before);
    assert!(
        c.message.contains("more than maxUnhealthy 1"),
        "run {run}: {}",
        c.message
    );
    // The verdicts are all in; nothing was terminated on the way, nor afterwards.
    observer
        .assert_nothing_replaced(&names, Duration::from_secs(3))
        .await;
    let all = env.group_instances(&name).await;
    assert!(all.iter().all(unhealthy), "run {run}: {all:?}");
    drop(observer);
}
