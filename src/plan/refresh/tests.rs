//! Unit tests of the refresh step, and a simulated world driving the whole group step through
//! refreshes (proptest) to check its limits.

use super::*;
use crate::api::{HealthStatus, ScalingGroupSpec};

const OLD: &str = "old0000000";
const NEW: &str = "new0000000";

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn spec(desired: i32) -> ScalingGroupSpec {
    let mut s: ScalingGroupSpec = serde_json::from_value(serde_json::json!({
        "minSize": 0, "maxSize": 100, "desiredCapacity": desired,
        "template": { "spec": { "podTemplate": { "spec": { "containers": [{ "name": "app" }] } } } },
        "healthCheck": { "gracePeriodSeconds": 0 },
    }))
    .unwrap();
    s.refresh.instance_warmup_seconds = Some(10);
    s
}

/// An InService, Healthy (OK) Instance on `hash`, created and InService at `t(created)`.
fn inst(name: &str, hash: &str, created: i64) -> InstanceView {
    InstanceView {
        placement: Default::default(),
        repair: Default::default(),
        name: name.into(),
        created_at: t(created),
        state: LifecycleState::InService,
        health: Some(HealthStatus::Healthy),
        detail: Some(HealthDetail::OK),
        protected: false,
        in_service_since: Some(t(created)),
        replaces: None,
        template_hash: Some(hash.into()),
        being_deleted: false,
        maintenance: false,
        standby: false,
        evidence: None,
        termination_reason: None,
        health_reason: None,
        health_since: None,
    }
}

fn old_group(n: usize) -> Vec<InstanceView> {
    (0..n)
        .map(|k| inst(&format!("web-o{k:02}"), OLD, -1000 + k as i64))
        .collect()
}

fn available() -> BTreeSet<String> {
    [OLD.to_string(), NEW.to_string()].into()
}

struct Case {
    spec: ScalingGroupSpec,
    stored: Option<RefreshStatus>,
    instances: Vec<InstanceView>,
    current: &'static str,
    refresh: Option<&'static str>,
    cancel: Option<&'static str>,
    held: Option<&'static str>,
    now: Timestamp,
}

impl Case {
    fn new(desired: i32, instances: Vec<InstanceView>) -> Self {
        Self {
            spec: spec(desired),
            stored: None,
            instances,
            current: NEW,
            refresh: None,
            cancel: None,
            held: None,
            now: t(0),
        }
    }

    fn plan(&self) -> RefreshPlan {
        let available = available();
        plan(&RefreshInputs {
            spec: &self.spec,
            group: "web",
            stored: self.stored.as_ref(),
            instances: &self.instances,
            current_hash: self.current,
            available: &available,
            refresh_request: self.refresh,
            cancel_request: self.cancel,
            held: self.held,
            now: self.now,
        })
    }

    /// Plans, then records the status as the reconciler would.
    fn step(&mut self) -> RefreshPlan {
        let p = self.plan();
        self.stored = p.status.clone();
        p
    }
}

fn state(p: &RefreshPlan) -> Option<RefreshState> {
    p.status.as_ref().map(|s| s.status)
}

#[test]
fn a_group_on_its_template_has_no_refresh() {
    let mut c = Case::new(3, old_group(3));
    c.current = OLD;
    let p = c.plan();
    assert_eq!(p.status, None);
    assert!(p.terminate.is_empty());
    assert_eq!(p.launch_hash, OLD);
    assert_eq!(p.conditions[0].status, "False");
    assert_eq!(p.conditions[0].reason, "NoRefresh");
}

#[test]
fn a_template_change_starts_a_refresh_that_replaces_the_oldest_within_min_healthy() {
    let mut c = Case::new(10, old_group(10));
    let p = c.step();
    let s = p.status.clone().unwrap();
    assert_eq!(s.status, RefreshState::InProgress);
    assert_eq!(s.target_revision, format!("web-{NEW}"));
    assert_eq!(s.previous_revision, Some(format!("web-{OLD}")));
    assert_eq!(s.instances_to_update, 10);
    assert_eq!(s.start_time, Some(Time(t(0))));
    // minHealthy 90% of 10 = 9: one at a time, the oldest first.
    assert_eq!(p.terminate, vec!["web-o00".to_string()]);
    assert_eq!(p.surge, 0);
    assert_eq!(p.launch_hash, NEW);
    assert_eq!(p.conditions[0].status, "True");
    assert_eq!(p.conditions[0].reason, "InProgress");
    assert_eq!(p.conditions[1].type_, CONDITION_RECONCILING);
    assert_eq!(p.conditions[1].status, "True");
    assert!(p.events.iter().any(|e| e.reason == "RefreshStarted"));
    assert!(p.keep.contains(OLD) && p.keep.contains(NEW));
}

#[test]
fn the_next_instance_waits_until_the_replacement_is_warmed_up() {
    let mut c = Case::new(3, old_group(3));
    c.spec.refresh.min_healthy_percentage = 100;
    let p = c.step();
    assert_eq!(p.terminate, vec!["web-o00".to_string()], "at least one");
    // The first has left; its replacement is InService since t(5), warm-up 10 s.
    c.instances.remove(0);
    c.instances.push(inst("web-n00", NEW, 2));
    c.instances[2].in_service_since = Some(t(5));
    c.now = t(10);
    let p = c.step();
    assert!(p.terminate.is_empty(), "not warmed up yet: {p:?}");
    assert_eq!(p.requeue_after, Some(Duration::from_secs(5)));
    c.now = t(15);
    let p = c.step();
    assert_eq!(p.terminate, vec!["web-o01".to_string()]);
    assert!(p.status.unwrap().percentage_complete >= 33);
}

#[test]
fn a_replacement_in_flight_is_not_doubled_and_leaving_ones_are_never_chosen_again() {
    let mut c = Case::new(4, old_group(4));
    c.spec.refresh.min_healthy_percentage = 50;
    let p = c.step();
    assert_eq!(p.terminate.len(), 2, "4 - ceil(50% of 4)");
    for n in &p.terminate {
        let i = c.instances.iter_mut().find(|i| &i.name == n).unwrap();
        i.being_deleted = true;
        i.termination_reason = Some("Refresh".into());
    }
    let p = c.step();
    assert!(p.terminate.is_empty(), "{p:?}");
}

#[test]
fn manual_trigger_waits_for_the_annotation() {
    let mut c = Case::new(3, old_group(3));
    c.spec.refresh.trigger = RefreshTrigger::Manual;
    let p = c.step();
    assert_eq!(p.status, None);
    assert!(p.terminate.is_empty());
    assert_eq!(p.launch_hash, NEW, "new Instances use the new template");
    c.refresh = Some("1");
    let p = c.step();
    let s = p.status.unwrap();
    assert_eq!(s.status, RefreshState::InProgress);
    assert_eq!(s.request.as_deref(), Some("1"));
    assert_eq!(p.terminate.len(), 1);
    // The same value again starts nothing new once the refresh ended.
    let mut done = c.stored.clone().unwrap();
    done.status = RefreshState::Successful;
    c.stored = Some(done.clone());
    assert_eq!(c.plan().status, Some(done));
}

#[test]
fn skip_matching_leaves_instances_already_on_the_target() {
    let mut instances = old_group(2);
    instances.push(inst("web-n00", NEW, -500));
    let mut c = Case::new(3, instances.clone());
    c.spec.refresh.min_healthy_percentage = 0;
    let p = c.step();
    let mut t = p.terminate.clone();
    t.sort();
    assert_eq!(t, vec!["web-o00".to_string(), "web-o01".to_string()]);
    assert_eq!(p.status.unwrap().instances_to_update, 2);

    let mut c = Case::new(3, instances);
    c.spec.refresh.min_healthy_percentage = 0;
    c.spec.refresh.skip_matching = false;
    let p = c.step();
    assert_eq!(p.terminate.len(), 3, "{:?}", p.terminate);
}

#[test]
fn surge_launches_first_and_keeps_every_instance_serving() {
    let mut c = Case::new(10, old_group(10));
    c.spec.refresh.min_healthy_percentage = 100;
    c.spec.refresh.max_healthy_percentage = 150;
    let p = c.step();
    assert!(p.terminate.is_empty(), "{:?}", p.terminate);
    assert_eq!(p.surge, 5);
    // Five replacements warmed up: five old ones may go, the next five surge.
    for k in 0..5 {
        c.instances.push(inst(&format!("web-n{k:02}"), NEW, 1));
    }
    c.now = t(20);
    let p = c.step();
    assert_eq!(p.terminate.len(), 5);
    assert_eq!(p.surge, 5);
}

#[test]
fn a_checkpoint_holds_for_its_delay_then_the_refresh_goes_on() {
    let mut c = Case::new(4, old_group(4));
    c.spec.refresh.min_healthy_percentage = 50;
    c.spec.refresh.checkpoints = vec![50];
    c.spec.refresh.checkpoint_delay_seconds = 60;
    let p = c.step();
    assert_eq!(p.terminate.len(), 2, "up to the checkpoint");
    // Two replaced and warmed up: 50%.
    c.instances.drain(0..2);
    c.instances.push(inst("web-n00", NEW, 1));
    c.instances.push(inst("web-n01", NEW, 1));
    c.now = t(30);
    let p = c.step();
    let s = p.status.clone().unwrap();
    assert!(p.terminate.is_empty());
    assert_eq!(s.checkpoint, Some(50));
    assert_eq!(s.checkpoint_until, Some(Time(t(90))));
    assert!(
        s.message.contains("waiting at checkpoint 50% until"),
        "{}",
        s.message
    );
    assert_eq!(p.requeue_after, Some(Duration::from_secs(60)));
    c.now = t(89);
    assert!(c.step().terminate.is_empty(), "still waiting");
    c.now = t(90);
    let p = c.step();
    assert_eq!(p.terminate.len(), 2, "goes on after the delay");
}

#[test]
fn an_unhealthy_replacement_fails_the_refresh_and_rolls_back() {
    let mut c = Case::new(3, old_group(3));
    c.spec.refresh.min_healthy_percentage = 0;
    c.step();
    c.instances.drain(0..3);
    let mut bad = inst("web-n00", NEW, 1);
    bad.health = Some(HealthStatus::Unhealthy);
    bad.detail = Some(HealthDetail::Impaired);
    bad.evidence = Some("Pod phase Failed".into());
    c.instances.push(bad);
    c.instances.push(inst("web-n01", NEW, 1));
    c.instances.push(inst("web-n02", NEW, 1));
    c.now = t(5);
    let p = c.step();
    let s = p.status.clone().unwrap();
    assert_eq!(s.status, RefreshState::RollbackInProgress);
    assert_eq!(s.failed_instances, vec!["web-n00 (Pod phase Failed)"]);
    assert_eq!(p.launch_hash, OLD, "launches from the previous revision");
    assert!(!p.terminate.is_empty(), "rolls back at once");
    assert!(
        p.events
            .iter()
            .any(|e| e.reason == REASON_REFRESH_FAILED && e.type_ == EventType::Warning)
    );
    // Everything back on OLD and warmed: RollbackSuccessful, still launching from OLD.
    c.instances = (0..3).map(|k| inst(&format!("web-r{k}"), OLD, 6)).collect();
    c.now = t(30);
    let p = c.step();
    let s = p.status.clone().unwrap();
    assert_eq!(s.status, RefreshState::RollbackSuccessful);
    assert_eq!(p.launch_hash, OLD);
    assert_eq!(p.conditions[0].status, "False");
    assert_eq!(p.conditions[0].reason, REASON_REFRESH_FAILED);
    assert!(
        p.conditions[0]
            .message
            .contains("web-n00 (Pod phase Failed)")
    );
    assert_eq!(p.conditions[1].status, "False");
    // No new refresh on the same template; a template change starts one.
    assert_eq!(c.plan().terminate, Vec::<String>::new());
    c.current = "third00000";
    let p = c.plan();
    let s = p.status.unwrap();
    assert_eq!(s.status, RefreshState::InProgress);
    assert_eq!(s.previous_revision, Some(format!("web-{OLD}")));
    assert_eq!(p.launch_hash, "third00000");
}

#[test]
fn without_auto_rollback_a_failure_stops_at_failed() {
    let mut c = Case::new(2, old_group(2));
    c.spec.refresh.auto_rollback = false;
    c.step();
    let mut bad = inst("web-n00", NEW, 1);
    bad.health = Some(HealthStatus::Unhealthy);
    c.instances[0].being_deleted = true;
    c.instances.push(bad);
    c.now = t(2);
    let p = c.step();
    assert_eq!(state(&p), Some(RefreshState::Failed));
    assert!(p.terminate.is_empty());
    assert_eq!(p.launch_hash, NEW);
    assert!(p.status.unwrap().end_time.is_some());
}

#[test]
fn cancel_stops_new_replacements_and_ends_when_nothing_is_in_flight() {
    let mut c = Case::new(4, old_group(4));
    c.cancel = Some("a");
    c.step();
    assert_eq!(
        c.stored.as_ref().unwrap().cancel_request.as_deref(),
        Some("a")
    );
    c.instances[0].being_deleted = true;
    c.instances[0].termination_reason = Some("Refresh".into());
    c.cancel = Some("b");
    let p = c.step();
    assert_eq!(state(&p), Some(RefreshState::Cancelling));
    assert!(p.terminate.is_empty());
    c.instances.remove(0);
    c.instances.push(inst("web-n00", NEW, 1));
    c.now = t(20);
    let p = c.step();
    assert_eq!(state(&p), Some(RefreshState::Cancelled));
    assert_eq!(p.conditions[0].reason, "Cancelled");
    assert!(c.step().terminate.is_empty(), "stays cancelled");
}

#[test]
fn standby_and_protected_policies() {
    let mut instances = old_group(3);
    instances[0].standby = true;
    instances[0].state = LifecycleState::Standby;
    instances[1].protected = true;
    let run = |standby: StandbyPolicy, protected: ProtectedPolicy| {
        let mut c = Case::new(3, instances.clone());
        c.spec.refresh.min_healthy_percentage = 0;
        c.spec.refresh.standby_instances = standby;
        c.spec.refresh.protected_instances = protected;
        let p = c.step();
        let mut t = p.terminate.clone();
        t.sort();
        (t, p.status.unwrap().instances_to_update)
    };
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        run(StandbyPolicy::Ignore, ProtectedPolicy::Ignore),
        (names(&["web-o02"]), 1)
    );
    assert_eq!(
        run(StandbyPolicy::Terminate, ProtectedPolicy::Refresh),
        (names(&["web-o00", "web-o01", "web-o02"]), 3)
    );
    assert_eq!(
        run(StandbyPolicy::Wait, ProtectedPolicy::Wait),
        (names(&["web-o02"]), 3)
    );
    // Waiting ones keep the refresh from finishing.
    let mut c = Case::new(3, instances.clone());
    c.spec.refresh.standby_instances = StandbyPolicy::Wait;
    c.instances[1].protected = false;
    c.instances[1].template_hash = Some(NEW.into());
    c.instances[2].template_hash = Some(NEW.into());
    c.refresh = Some("go");
    let p = c.step();
    let s = p.status.unwrap();
    assert_eq!(s.status, RefreshState::InProgress);
    assert!(s.message.contains("waiting for web-o00"), "{}", s.message);
}

#[test]
fn bake_time_holds_success_and_a_failure_while_baking_fails() {
    let mut c = Case::new(1, vec![inst("web-o00", OLD, -100)]);
    c.spec.refresh.bake_time_seconds = 30;
    c.step();
    c.instances = vec![inst("web-n00", NEW, 1)];
    c.now = t(20);
    let p = c.step();
    assert_eq!(state(&p), Some(RefreshState::Baking));
    assert_eq!(p.requeue_after, Some(Duration::from_secs(30)));
    assert_eq!(p.conditions[0].status, "True");
    c.instances[0].health = Some(HealthStatus::Unhealthy);
    c.now = t(30);
    assert_eq!(state(&c.plan()), Some(RefreshState::RollbackInProgress));
    c.instances[0].health = Some(HealthStatus::Healthy);
    c.now = t(50);
    let p = c.step();
    assert_eq!(state(&p), Some(RefreshState::Successful));
    assert_eq!(p.status.unwrap().percentage_complete, 100);
}

#[test]
fn a_held_refresh_waits_in_pending() {
    let mut c = Case::new(2, old_group(2));
    c.held = Some("the group is paused");
    let p = c.step();
    assert_eq!(state(&p), Some(RefreshState::Pending));
    assert!(p.terminate.is_empty());
    c.held = None;
    let p = c.step();
    assert_eq!(state(&p), Some(RefreshState::InProgress));
    assert_eq!(p.terminate.len(), 1);
}

#[test]
fn a_template_change_during_a_refresh_supersedes_it_keeping_the_last_good_revision() {
    let mut c = Case::new(2, old_group(2));
    c.step();
    c.current = "third00000";
    let p = c.step();
    let s = p.status.unwrap();
    assert_eq!(s.target_revision, "web-third00000");
    assert_eq!(s.previous_revision, Some(format!("web-{OLD}")));
}

#[test]
fn instances_past_their_lifetime_are_replaced_oldest_first_within_the_band() {
    let mut spec = spec(3);
    let instances = vec![
        inst("web-a", OLD, -100),
        inst("web-b", OLD, -200),
        inst("web-c", OLD, -10),
    ];
    assert_eq!(lifetime(&spec, &instances, t(0)), (vec![], 0, None));
    spec.max_instance_lifetime_seconds = Some(60);
    // min 90% of 3 = 3: one at a time (at least one in flight), the oldest first.
    let (terminate, surge, next) = lifetime(&spec, &instances, t(0));
    assert_eq!(terminate, vec!["web-b".to_string()]);
    assert_eq!(surge, 0);
    assert_eq!(next, Some(Duration::from_secs(50)), "web-c expires in 50 s");
    // A replacement warming up holds the next one.
    let mut warming = instances.clone();
    warming.remove(1);
    warming.push(inst("web-d", OLD, 0));
    warming[2].in_service_since = Some(t(0));
    let (terminate, _, next) = lifetime(&spec, &warming, t(5));
    assert!(terminate.is_empty());
    assert_eq!(next, Some(Duration::from_secs(5)), "the warm-up ends");
    // With room to surge, replacements launch first.
    spec.refresh.min_healthy_percentage = 100;
    spec.refresh.max_healthy_percentage = 200;
    let (terminate, surge, _) = lifetime(&spec, &instances, t(0));
    assert!(terminate.is_empty());
    assert_eq!(surge, 2, "the two expired ones");
}

#[test]
fn lifetime_replacements_wait_while_a_refresh_runs() {
    let mut c = Case::new(2, old_group(2));
    c.spec.max_instance_lifetime_seconds = Some(60);
    let p = c.step();
    assert_eq!(state(&p), Some(RefreshState::InProgress));
    assert!(p.lifetime_terminate.is_empty());
    c.current = OLD;
    c.stored = None;
    let p = c.plan();
    assert_eq!(p.lifetime_terminate, vec!["web-o00".to_string()]);
    assert!(p.events.iter().any(|e| e.reason == "MaxInstanceLifetime"));
}

// ---------------------------------------------------------------------------------------------
// A simulated world: the whole group step, its actions applied, Instances starting, warming
// up and leaving at random speeds.
// ---------------------------------------------------------------------------------------------

mod world {
    use super::*;
    use crate::api::ScalingGroup;
    use crate::plan::capacity::GroupAction;
    use crate::plan::group::{GroupInputs, plan as group_plan, template_hash};
    use crate::plan::replacement::Backoff;
    use crate::plan::revision::RevisionView;
    use proptest::prelude::*;

    pub struct World {
        pub group: ScalingGroup,
        pub instances: Vec<InstanceView>,
        /// Ticks until a Pending Instance is InService (by name).
        pub start_in: std::collections::BTreeMap<String, u32>,
        /// Ticks until a leaving Instance is gone (by name).
        pub gone_in: std::collections::BTreeMap<String, u32>,
        pub terminated: BTreeSet<String>,
        pub launched: usize,
        pub now: i64,
        pub bad: Option<String>,
        /// Every template hash seen (ControllerRevisions are kept).
        pub seen: BTreeSet<String>,
    }

    pub fn group(desired: i32, min: i32, max: i32, warmup: i32) -> ScalingGroup {
        let mut g: ScalingGroup = serde_json::from_value(serde_json::json!({
            "apiVersion": "autoheal.dev/v1alpha1",
            "kind": "ScalingGroup",
            "metadata": { "name": "web", "namespace": "ns", "uid": "g-uid", "generation": 1 },
            "spec": {
                "minSize": 0, "maxSize": 100, "desiredCapacity": desired,
                "template": { "spec": { "podTemplate": { "spec": { "containers": [ { "name": "app", "image": "v1" } ] } } } },
                "healthCheck": { "gracePeriodSeconds": 0 },
                "refresh": { "minHealthyPercentage": min, "maxHealthyPercentage": max, "instanceWarmupSeconds": warmup },
            }
        }))
        .unwrap();
        g.metadata.uid = Some("g-uid".into());
        g
    }

    impl World {
        pub fn new(group: ScalingGroup) -> Self {
            let hash = template_hash(&group);
            let desired = group.spec.effective_desired();
            let instances = (0..desired)
                .map(|k| inst(&format!("web-i{k:03}"), &hash, -1000 + i64::from(k)))
                .collect();
            Self {
                group,
                instances,
                start_in: Default::default(),
                gone_in: Default::default(),
                terminated: BTreeSet::new(),
                launched: 0,
                now: 0,
                bad: None,
                seen: BTreeSet::new(),
            }
        }

        pub fn set_image(&mut self, image: &str) {
            self.group
                .spec
                .template
                .spec
                .pod_template
                .spec
                .as_mut()
                .unwrap()
                .containers[0]
                .image = Some(image.into());
        }

        fn revisions(&mut self) -> Vec<RevisionView> {
            let instances = self
                .instances
                .iter()
                .filter_map(|i| i.template_hash.clone());
            self.seen.extend(instances);
            self.seen.insert(template_hash(&self.group));
            self.seen
                .clone()
                .into_iter()
                .enumerate()
                .map(|(n, h)| RevisionView {
                    name: format!("web-{h}"),
                    hash: h,
                    revision: n as i64 + 1,
                })
                .collect()
        }

        /// One reconcile: plan, record status, apply actions. Returns the plan.
        pub fn reconcile(&mut self) -> crate::plan::group::GroupPlan {
            let revisions = self.revisions();
            let plan = group_plan(&GroupInputs {
                group: &self.group,
                instances: &self.instances,
                revisions: &revisions,
                nodes: &[],
                replacement_backoff: Backoff::default(),
                now: t(self.now),
            });
            self.group.status = Some(plan.status.clone());
            for a in &plan.actions {
                match a {
                    GroupAction::Launch { replaces } => {
                        let name = format!("web-n{:04}", self.launched);
                        self.launched += 1;
                        let mut i = inst(&name, &plan.launch_hash, self.now);
                        i.state = LifecycleState::Pending;
                        i.health = None;
                        i.detail = None;
                        i.in_service_since = None;
                        i.replaces = replaces.clone();
                        self.instances.push(i);
                    }
                    GroupAction::Terminate { name, reason } => {
                        assert!(
                            self.terminated.insert(name.clone()),
                            "{name} terminated twice"
                        );
                        let i = self.instances.iter_mut().find(|i| &i.name == name).unwrap();
                        assert!(i.counts_toward_capacity(), "{name} was leaving already");
                        i.being_deleted = true;
                        i.state = LifecycleState::Terminating;
                        i.termination_reason = Some(reason.as_str().into());
                    }
                }
            }
            plan
        }

        /// Time passes by one second: Instances start, turn healthy (or not) and leave.
        pub fn tick(&mut self, start_ticks: u32, gone_ticks: u32) {
            self.now += 1;
            let now = t(self.now);
            let bad = self.bad.clone();
            let mut gone = Vec::new();
            for i in self.instances.iter_mut() {
                if i.state == LifecycleState::Pending {
                    let left = self.start_in.entry(i.name.clone()).or_insert(start_ticks);
                    if *left == 0 {
                        i.state = LifecycleState::InService;
                        i.in_service_since = Some(now);
                        if bad.is_some() && i.template_hash == bad {
                            i.health = Some(HealthStatus::Unhealthy);
                            i.detail = Some(HealthDetail::Impaired);
                            i.evidence = Some("Pod phase Failed".into());
                        } else {
                            i.health = Some(HealthStatus::Healthy);
                            i.detail = Some(HealthDetail::OK);
                        }
                    } else {
                        *left -= 1;
                    }
                } else if i.being_deleted {
                    let left = self.gone_in.entry(i.name.clone()).or_insert(gone_ticks);
                    if *left == 0 {
                        gone.push(i.name.clone());
                    } else {
                        *left -= 1;
                    }
                }
            }
            self.instances.retain(|i| !gone.contains(&i.name));
        }

        pub fn counting(&self) -> usize {
            self.instances
                .iter()
                .filter(|i| i.counts_toward_capacity())
                .count()
        }

        pub fn serving(&self) -> usize {
            self.instances
                .iter()
                .filter(|i| i.counts_toward_capacity() && i.is_in_service_and_healthy())
                .count()
        }

        pub fn refresh(&self) -> Option<RefreshStatus> {
            self.group.status.as_ref()?.refresh.clone()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A refresh of any group within any band finishes with every Instance on the new
        /// revision, never terminates an Instance twice, never exceeds maxHealthy, never takes
        /// InService+Healthy below minHealthy (one below at most when the band has no room at
        /// all: at least one in flight), and its percentage never decreases.
        #[test]
        fn a_refresh_keeps_its_band_and_finishes(
            desired in 1i32..14,
            min in 0i32..=100,
            extra in 0i32..=100,
            warmup in 0i32..4,
            start_ticks in proptest::collection::vec(0u32..4, 40),
            gone_ticks in proptest::collection::vec(0u32..3, 40),
        ) {
            let max = (min + extra).clamp(100, 200);
            let mut w = World::new(group(desired, min, max, warmup));
            w.reconcile();
            w.set_image("v2");
            let target = template_hash(&w.group);
            let min_serving = (i64::from(desired) * i64::from(min) + 99) / 100;
            let max_total = (i64::from(desired) * i64::from(max) / 100).max(i64::from(desired));
            let slack = if max_total > i64::from(desired) { 0 } else { 1 };
            let mut pct = 0;
            let mut finished = false;
            for k in 0..600usize {
                w.reconcile();
                prop_assert!(w.counting() as i64 <= max_total, "counting {} > {max_total}", w.counting());
                prop_assert!(
                    w.serving() as i64 >= min_serving - slack,
                    "serving {} < {min_serving} at {}s", w.serving(), w.now
                );
                let r = w.refresh().expect("a refresh started");
                prop_assert!(r.percentage_complete >= pct, "percentage went down");
                pct = r.percentage_complete;
                if r.status == RefreshState::Successful {
                    finished = true;
                    break;
                }
                prop_assert_eq!(r.status, RefreshState::InProgress);
                w.tick(start_ticks[k % 40], gone_ticks[k % 40]);
            }
            prop_assert!(finished, "not finished: {:?}", w.refresh());
            let on_target = w.instances.iter()
                .filter(|i| i.counts_toward_capacity() && i.template_hash.as_deref() == Some(&target))
                .count();
            prop_assert_eq!(on_target, desired as usize);
            prop_assert_eq!(w.counting(), desired as usize);
        }

        /// A template whose Instances all fail rolls back to the previous revision by itself,
        /// every Instance ending on it, within the same band.
        #[test]
        fn a_failing_template_rolls_back(
            desired in 1i32..10,
            min in 0i32..=100,
            start in 0u32..3,
        ) {
            let mut w = World::new(group(desired, min, 100, 1));
            w.reconcile();
            let previous = template_hash(&w.group);
            w.set_image("broken");
            w.bad = Some(template_hash(&w.group));
            let mut ended = None;
            for _ in 0..600 {
                w.reconcile();
                let r = w.refresh().unwrap();
                if r.status == RefreshState::RollbackSuccessful {
                    ended = Some(r);
                    break;
                }
                w.tick(start, 1);
            }
            let r = ended.expect("rolled back");
            prop_assert!(!r.failed_instances.is_empty());
            let on_previous = w.instances.iter()
                .filter(|i| i.counts_toward_capacity() && i.template_hash.as_deref() == Some(&previous))
                .count();
            prop_assert_eq!(on_previous, desired as usize);
            prop_assert_eq!(w.counting(), desired as usize);
        }
    }

    #[test]
    fn a_surge_refresh_of_ten_never_drops_below_ten_serving() {
        let mut w = World::new(group(10, 100, 150, 2));
        w.reconcile();
        w.set_image("v2");
        let mut max_counting = 0;
        for _ in 0..300 {
            w.reconcile();
            assert!(w.serving() >= 10, "serving {} at {}s", w.serving(), w.now);
            max_counting = max_counting.max(w.counting());
            if w.refresh().unwrap().status == RefreshState::Successful {
                break;
            }
            w.tick(2, 1);
        }
        assert_eq!(w.refresh().unwrap().status, RefreshState::Successful);
        assert_eq!(max_counting, 15, "it surged");
    }
}

/// Found by the `refresh_planner` fuzz target: a stored `percentageComplete` out of range (a
/// hand-edited status) stayed as it was, passing every checkpoint at once.
#[test]
fn a_stored_percentage_out_of_range_is_clamped() {
    for stored in [i32::MAX, 101, -1, i32::MIN] {
        let mut c = Case::new(3, old_group(3));
        c.step();
        c.stored.as_mut().unwrap().percentage_complete = stored;
        let p = c.step();
        let pct = p.status.unwrap().percentage_complete;
        assert!((0..=100).contains(&pct), "{stored} -> {pct}");
    }
}
