//! A watch-based invariant checker that runs through a whole test: it watches a group's
//! Instances and Pods (every change the API server serves, in order) and records each
//! violation of what autoheal must never do, with the history that shows it:
//!
//! - an Instance re-enters a lifecycle state it left, or goes back along the lifecycle
//!   (`Pending → Pending:Wait → InService ⇄ Standby → Terminating → Terminating:Wait →
//!   Terminating:Proceed → Terminated`);
//! - an Instance or Pod name is created twice (a new uid under a name seen before);
//! - more than one Instance replaces the same Instance (`autoheal.dev/replaces`);
//! - a Pod gets its `autoheal.dev/in-service` label back (off, then on) after its Instance
//!   started leaving;
//! - counts beyond the [`Limits`] (Instances in all, counting toward capacity, leaving; Pods).
//!
//! ```ignore
//! let checker = Invariants::start(&env, "web", Limits { instances: 3, counting: 2, leaving: 1, pods: 3 }).await;
//! // … the test …
//! let report = checker.stop().await;   // panics listing every violation
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use autoheal::api::{ANNOTATION_REPLACES, Instance, LABEL_GROUP, LifecycleState};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::{Env, TIMEOUT, pod_in_service, state_of};

/// Upper bounds the checker holds the group to at every moment.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Instances of the group, in any state.
    pub instances: usize,
    /// Instances counting toward capacity (no state yet, Pending, Pending:Wait, InService,
    /// Standby).
    pub counting: usize,
    /// Instances leaving (Terminating and after): at most `maxInFlight`.
    pub leaving: usize,
    /// Pods of the group.
    pub pods: usize,
}

/// The lifecycle in order; InService and Standby share a rank (they go back and forth).
fn rank(state: LifecycleState) -> Option<u8> {
    Some(match state.as_str() {
        "Pending" => 0,
        "Pending:Wait" => 1,
        "InService" | "Standby" => 2,
        "Terminating" => 3,
        "Terminating:Wait" => 4,
        "Terminating:Proceed" => 5,
        "Terminated" => 6,
        _ => return None,
    })
}

/// What the checker saw of one Instance.
#[derive(Debug, Clone, Default)]
pub struct InstanceSeen {
    /// Every uid seen under the name (more than one: created twice).
    pub uids: Vec<String>,
    /// The lifecycle states observed, consecutive repeats folded.
    pub states: Vec<LifecycleState>,
    /// The Instance it replaces, if any.
    pub replaces: Option<String>,
    /// Whether it was seen deleted.
    pub gone: bool,
}

/// What the checker saw of one Pod.
#[derive(Debug, Clone, Default)]
pub struct PodSeen {
    /// Every uid seen under the name.
    pub uids: Vec<String>,
    /// The `autoheal.dev/in-service` label over time, consecutive repeats folded.
    pub in_service: Vec<bool>,
    /// Whether it was seen with a deletionTimestamp.
    pub deleting: bool,
    /// Whether it was seen deleted.
    pub gone: bool,
}

/// Everything the checker saw, and the violations.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Per Instance name.
    pub instances: BTreeMap<String, InstanceSeen>,
    /// Per Pod name.
    pub pods: BTreeMap<String, PodSeen>,
    /// Each broken invariant, with its evidence.
    pub violations: Vec<String>,
    /// The most Instances (in all, counting, leaving) and Pods seen at once.
    pub peaks: (usize, usize, usize, usize),
    /// Watch events handled (Instances, Pods).
    pub events: (usize, usize),
}

impl Report {
    /// The Instances seen replacing `victim` (`autoheal.dev/replaces`).
    pub fn replacements_of(&self, victim: &str) -> Vec<String> {
        self.instances
            .iter()
            .filter(|(_, i)| i.replaces.as_deref() == Some(victim))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// The checker's state, fed watch events one by one (by [`Invariants`], or by a test
/// directly).
#[derive(Default)]
pub struct State {
    report: Report,
    limits: Option<Limits>,
    /// Live Instances and their current state (`None`: no status yet).
    live_instances: BTreeMap<String, Option<LifecycleState>>,
    live_pods: BTreeSet<String>,
    /// Names listed in the current (re)list, to find objects deleted while unwatched.
    relist_instances: Option<BTreeSet<String>>,
    relist_pods: Option<BTreeSet<String>>,
}

impl State {
    /// A checker holding the group to `limits`.
    pub fn new(limits: Limits) -> State {
        State {
            limits: Some(limits),
            ..State::default()
        }
    }

    /// What it saw, and the violations.
    pub fn report(&self) -> &Report {
        &self.report
    }

    fn violation(&mut self, text: String) {
        eprintln!("invariant violated: {text}");
        self.report.violations.push(text);
    }

    /// Handles a watch event.
    pub fn instance_applied(&mut self, inst: &Instance) {
        let name = inst.name_any();
        let uid = inst.uid().unwrap_or_default();
        let state = state_of(inst);
        let replaces = inst.annotations().get(ANNOTATION_REPLACES).cloned();
        let seen = self.report.instances.entry(name.clone()).or_default();
        let mut problems = Vec::new();
        if !seen.uids.contains(&uid) {
            seen.uids.push(uid);
            if seen.uids.len() > 1 {
                problems.push(format!(
                    "Instance {name} created twice (uids {:?})",
                    seen.uids
                ));
            }
        }
        if seen.replaces.is_none() {
            seen.replaces = replaces;
        }
        if let Some(state) = state
            && seen.states.last() != Some(&state)
        {
            let left_before = seen.states.contains(&state)
                && !(matches!(state, LifecycleState::InService | LifecycleState::Standby));
            let went_back = seen
                .states
                .last()
                .and_then(|last| Some((rank(*last)?, rank(state)?)))
                .is_some_and(|(last, now)| now < last);
            seen.states.push(state);
            if left_before || went_back {
                problems.push(format!(
                    "Instance {name} re-entered {} after leaving it: {:?}",
                    state.as_str(),
                    seen.states
                ));
            }
        }
        for p in problems {
            self.violation(p);
        }
        // A deletion request makes the Instance leave at once (the group counts it out of
        // capacity then, as AWS does a terminating instance), whatever its status says yet.
        let counted = match state {
            _ if inst.metadata.deletion_timestamp.is_none() => state,
            Some(s) if !s.counts_toward_capacity() => state,
            _ => Some(LifecycleState::Terminating),
        };
        self.live_instances.insert(name.clone(), counted);
        if let Some(listed) = self.relist_instances.as_mut() {
            listed.insert(name);
        }
        self.check_replacements();
        self.check_counts();
    }

    /// Handles a watch event.
    pub fn instance_deleted(&mut self, name: &str) {
        self.live_instances.remove(name);
        self.report
            .instances
            .entry(name.to_string())
            .or_default()
            .gone = true;
    }

    /// Handles a watch event.
    pub fn pod_applied(&mut self, pod: &Pod) {
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        let labelled = pod_in_service(pod);
        // The Instance of the same name: once it is leaving, the label must stay off.
        let leaving = self
            .report
            .instances
            .get(&name)
            .is_some_and(|i| i.states.iter().any(|s| s.is_terminating()));
        let seen = self.report.pods.entry(name.clone()).or_default();
        let mut problems = Vec::new();
        if !seen.uids.contains(&uid) {
            seen.uids.push(uid);
            if seen.uids.len() > 1 {
                problems.push(format!("Pod {name} created twice (uids {:?})", seen.uids));
            }
        }
        if seen.in_service.last() != Some(&labelled) {
            // Off, then on again: a Pod first seen labelled may have been created in service
            // before its Instance started leaving (the two watches are not ordered).
            let back_on = seen.in_service.last() == Some(&false);
            seen.in_service.push(labelled);
            if labelled && leaving && back_on {
                problems.push(format!(
                    "Pod {name} labelled in service again after its Instance started leaving"
                ));
            }
        }
        seen.deleting |= pod.metadata.deletion_timestamp.is_some();
        for p in problems {
            self.violation(p);
        }
        self.live_pods.insert(name.clone());
        if let Some(listed) = self.relist_pods.as_mut() {
            listed.insert(name);
        }
        self.check_counts();
    }

    /// Handles a watch event.
    pub fn pod_deleted(&mut self, name: &str) {
        self.live_pods.remove(name);
        self.report.pods.entry(name.to_string()).or_default().gone = true;
    }

    fn check_replacements(&mut self) {
        let mut by_victim: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, seen) in &self.report.instances {
            if let Some(victim) = seen.replaces.as_deref() {
                by_victim.entry(victim).or_default().push(name);
            }
        }
        let problems: Vec<String> = by_victim
            .into_iter()
            .filter(|(_, r)| r.len() > 1)
            .map(|(victim, r)| format!("{victim} replaced more than once: {r:?}"))
            .collect();
        for p in problems {
            if !self.report.violations.contains(&p) {
                self.violation(p);
            }
        }
    }

    fn check_counts(&mut self) {
        let Some(limits) = self.limits else { return };
        let instances = self.live_instances.len();
        let counting = self
            .live_instances
            .values()
            .filter(|s| s.is_none_or(|s| s.counts_toward_capacity()))
            .count();
        let leaving = instances - counting;
        let pods = self.live_pods.len();
        let peaks = &mut self.report.peaks;
        *peaks = (
            peaks.0.max(instances),
            peaks.1.max(counting),
            peaks.2.max(leaving),
            peaks.3.max(pods),
        );
        let mut problems = Vec::new();
        if instances > limits.instances {
            problems.push(format!(
                "{instances} Instances at once (limit {}): {:?}",
                limits.instances, self.live_instances
            ));
        }
        if counting > limits.counting {
            problems.push(format!(
                "{counting} Instances counting toward capacity at once (limit {}): {:?}",
                limits.counting, self.live_instances
            ));
        }
        if leaving > limits.leaving {
            problems.push(format!(
                "{leaving} Instances leaving at once (limit {}): {:?}",
                limits.leaving, self.live_instances
            ));
        }
        if pods > limits.pods {
            problems.push(format!(
                "{pods} Pods at once (limit {}): {:?}",
                limits.pods, self.live_pods
            ));
        }
        for p in problems {
            self.violation(p);
        }
    }
}

/// The running checker (see the module docs).
pub struct Invariants {
    state: Arc<Mutex<State>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Invariants {
    /// Starts watching the group's Instances and Pods (label `autoheal.dev/group=<group>`);
    /// returns once both watches have listed what exists.
    pub async fn start(env: &Env, group: &str, limits: Limits) -> Invariants {
        let state = Arc::new(Mutex::new(State::new(limits)));
        let config = watcher::Config::default().labels(&format!("{LABEL_GROUP}={group}"));
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(2);

        let instances = {
            let state = state.clone();
            let ready = ready_tx.clone();
            let stream = watcher(
                Api::<Instance>::namespaced(env.client.clone(), &env.ns),
                config.clone(),
            )
            .default_backoff();
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    let Ok(event) = event else { continue };
                    let mut s = state.lock().unwrap();
                    s.report.events.0 += 1;
                    match event {
                        watcher::Event::Init => s.relist_instances = Some(BTreeSet::new()),
                        watcher::Event::InitApply(i) | watcher::Event::Apply(i) => {
                            s.instance_applied(&i)
                        }
                        watcher::Event::Delete(i) => s.instance_deleted(&i.name_any()),
                        watcher::Event::InitDone => {
                            let listed = s.relist_instances.take().unwrap_or_default();
                            let vanished: Vec<String> = s
                                .live_instances
                                .keys()
                                .filter(|n| !listed.contains(*n))
                                .cloned()
                                .collect();
                            for name in vanished {
                                s.instance_deleted(&name);
                            }
                            let _ = ready.try_send(());
                        }
                    }
                }
            })
        };
        let pods = {
            let state = state.clone();
            let ready = ready_tx;
            let stream = watcher(Api::<Pod>::namespaced(env.client.clone(), &env.ns), config)
                .default_backoff();
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    let Ok(event) = event else { continue };
                    let mut s = state.lock().unwrap();
                    s.report.events.1 += 1;
                    match event {
                        watcher::Event::Init => s.relist_pods = Some(BTreeSet::new()),
                        watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                            s.pod_applied(&p)
                        }
                        watcher::Event::Delete(p) => s.pod_deleted(&p.name_any()),
                        watcher::Event::InitDone => {
                            let listed = s.relist_pods.take().unwrap_or_default();
                            let vanished: Vec<String> = s
                                .live_pods
                                .iter()
                                .filter(|n| !listed.contains(*n))
                                .cloned()
                                .collect();
                            for name in vanished {
                                s.pod_deleted(&name);
                            }
                            let _ = ready.try_send(());
                        }
                    }
                }
            })
        };
        for _ in 0..2 {
            tokio::time::timeout(TIMEOUT, ready_rx.recv())
                .await
                .expect("the invariant checker's watches listed within the timeout");
        }
        Invariants {
            state,
            tasks: vec![instances, pods],
        }
    }

    /// What the checker has seen so far.
    pub fn report(&self) -> Report {
        self.state.lock().unwrap().report.clone()
    }

    /// Stops watching and returns the report; panics, listing them, when any invariant was
    /// broken.
    pub fn stop(self) -> Report {
        for t in &self.tasks {
            t.abort();
        }
        let report = self.report();
        assert!(
            report.violations.is_empty(),
            "invariants broken:\n{}\nInstances seen: {:#?}\nPods seen: {:#?}",
            report.violations.join("\n"),
            report.instances,
            report.pods
        );
        report
    }
}

impl Drop for Invariants {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
