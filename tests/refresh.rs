//! Instance refresh end to end, against the real API server with podsim and the operator as a
//! child process: a rolling refresh of 10 within minHealthy 90 / maxHealthy 100, the same with
//! surge (maxHealthy 150), a checkpoint, the Manual trigger, skipMatching, an automatic
//! rollback from a template whose Pods crash, cancel, and the bounded revision history.
//!
//! Bounds are checked by an observer that watches the group's Instances and the group itself
//! for the whole refresh (every state the API server shows, not samples).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use autoheal::api::{
    ANNOTATION_CANCEL_REFRESH, ANNOTATION_REFRESH, Instance, LABEL_GROUP, LABEL_REVISION,
    LifecycleState, RefreshState, RefreshStatus, RefreshTrigger, ScalingGroup,
};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use support::*;
use testkit::wait_for;

const BEHAVIOR: &str = "podsim.autoheal.dev/behavior";

fn leaving(i: &Instance) -> bool {
    i.metadata.deletion_timestamp.is_some() || state_of(i).is_some_and(|s| s.is_terminating())
}

fn serving(i: &Instance) -> bool {
    !leaving(i) && state_of(i) == Some(LifecycleState::InService) && is_healthy(i)
}

fn revision_of(i: &Instance) -> Option<String> {
    i.status.as_ref()?.revision.clone()
}

fn refresh_of(g: &ScalingGroup) -> Option<RefreshStatus> {
    g.status.as_ref()?.refresh.clone()
}

/// A group of `n` with a short warm-up, fast draining, and the given refresh band.
fn group(name: &str, n: i32, min: i32, max: i32) -> GroupBuilder {
    GroupBuilder::new(name)
        .desired(n)
        .max(n.max(10))
        .deregistration_delay(0)
        .with_spec(|s| {
            s.refresh.min_healthy_percentage = min;
            s.refresh.max_healthy_percentage = max;
            s.refresh.instance_warmup_seconds = Some(1);
        })
}

/// Changes the group's image (a new template, so a new revision).
async fn set_image(env: &Env, name: &str, image: &str) -> ScalingGroup {
    let mut g = env.group(name).await;
    g.spec
        .template
        .spec
        .pod_template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some(image.into());
    g.metadata.managed_fields = None;
    g.metadata.resource_version = None;
    g.status = None;
    env.apply_group(&g).await
}

async fn wait_refresh(env: &Env, name: &str, want: RefreshState) -> ScalingGroup {
    let groups = env.groups();
    wait_for(&format!("refresh of {name} {want:?}"), TIMEOUT, || async {
        let g = groups.get(name).await.ok()?;
        (refresh_of(&g)?.status == want).then_some(g)
    })
    .await
}

#[derive(Debug, Default, Clone)]
struct Stats {
    /// Fewest InService+Healthy Instances (not leaving) at once.
    min_serving: Option<usize>,
    /// Most Instances counting toward capacity at once.
    max_counting: usize,
    /// Every refresh status seen, in order (repeats folded).
    statuses: Vec<RefreshState>,
    /// Every percentageComplete seen, in order.
    percentages: Vec<i32>,
    /// When each Instance was first seen leaving with reason Refresh (operator clock, from its
    /// state history).
    refresh_terminations: BTreeMap<String, i64>,
    /// Every Instance name seen.
    seen: BTreeSet<String>,
}

#[derive(Default)]
struct Shared {
    /// The first list is complete: the counts mean something from here on.
    listed: bool,
    instances: BTreeMap<String, Instance>,
    stats: Stats,
}

/// Watches a group's Instances and the group for the whole test.
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
    /// Starts watching; waits until the watch has listed the Instances.
    async fn start(env: &Env, group: &str) -> Observer {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let instances: Api<Instance> = env.instances();
        let config = watcher::Config::default().labels(&format!("{LABEL_GROUP}={group}"));
        let s = shared.clone();
        let t1 = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut stream = watcher(instances, config).boxed();
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let mut sh = s.lock().unwrap();
                match event {
                    watcher::Event::Apply(i) | watcher::Event::InitApply(i) => {
                        sh.stats.seen.insert(i.name_any());
                        let reason = i.status.as_ref().and_then(|s| s.termination_reason.clone());
                        if leaving(&i) && reason.as_deref() == Some("Refresh") {
                            let at = i
                                .status
                                .as_ref()
                                .and_then(|s| s.entered(LifecycleState::Terminating))
                                .map_or(0, |t| t.0.as_second());
                            sh.stats
                                .refresh_terminations
                                .entry(i.name_any())
                                .or_insert(at);
                        }
                        sh.instances.insert(i.name_any(), i);
                    }
                    watcher::Event::Delete(i) => {
                        sh.instances.remove(&i.name_any());
                    }
                    watcher::Event::Init => {}
                    watcher::Event::InitDone => {
                        sh.listed = true;
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                if !sh.listed {
                    continue;
                }
                let serving_now = sh.instances.values().filter(|i| serving(i)).count();
                let counting_now = sh.instances.values().filter(|i| !leaving(i)).count();
                let st = &mut sh.stats;
                st.min_serving = Some(st.min_serving.map_or(serving_now, |m| m.min(serving_now)));
                st.max_counting = st.max_counting.max(counting_now);
            }
        });
        let groups: Api<ScalingGroup> = env.groups();
        let config = watcher::Config::default().fields(&format!("metadata.name={group}"));
        let s = shared.clone();
        let t2 = tokio::spawn(async move {
            let mut stream = watcher(groups, config).boxed();
            while let Some(event) = stream.next().await {
                let Ok(watcher::Event::Apply(g) | watcher::Event::InitApply(g)) = event else {
                    continue;
                };
                let Some(r) = refresh_of(&g) else { continue };
                let mut sh = s.lock().unwrap();
                let st = &mut sh.stats;
                if st.statuses.last() != Some(&r.status) {
                    st.statuses.push(r.status);
                }
                st.percentages.push(r.percentage_complete);
            }
        });
        let _ = tokio::time::timeout(TIMEOUT, ready_rx).await;
        Observer {
            shared,
            tasks: vec![t1, t2],
        }
    }

    fn stats(&self) -> Stats {
        self.shared.lock().unwrap().stats.clone()
    }
}

/// Every Instance of the group is InService+Healthy on `revision` (label and status), `n` of
/// them, none leaving.
async fn wait_all_on(env: &Env, group: &str, n: usize, revision: &str) -> Vec<Instance> {
    wait_for(
        &format!("{n} InService+Healthy instances of {group} on {revision}"),
        TIMEOUT,
        || async {
            let all = env.group_instances(group).await;
            let ok = all.len() == n
                && all.iter().all(serving)
                && all.iter().all(|i| {
                    revision_of(i).as_deref() == Some(revision)
                        && i.labels().get(LABEL_REVISION).map(String::as_str) == Some(revision)
                });
            ok.then_some(all)
        },
    )
    .await
}

fn assert_non_decreasing(values: &[i32]) {
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "percentageComplete went down: {values:?}"
    );
}

async fn revisions(env: &Env, group: &str) -> Vec<ControllerRevision> {
    let api: Api<ControllerRevision> = Api::namespaced(env.client.clone(), &env.ns);
    let mut list = api
        .list(&ListParams::default().labels(&format!("{LABEL_GROUP}={group}")))
        .await
        .unwrap()
        .items;
    list.sort_by_key(|r| r.revision);
    list
}

async fn group_events(env: &Env, group: &str, reason: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(group))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_change_rolls_ten_instances_within_min_90_max_100() {
    let env = Env::new("refresh-roll").await;
    let _op = env.operator();
    env.apply_group(&group("web", 10, 90, 100).build()).await;
    let before = env.wait_in_service("web", 10).await;
    let first = env.group("web").await;
    let old = first
        .status
        .as_ref()
        .unwrap()
        .current_revision
        .clone()
        .unwrap();
    assert!(
        before
            .iter()
            .all(|i| revision_of(i).as_deref() == Some(old.as_str()))
    );
    let observer = Observer::start(&env, "web").await;

    let g = set_image(&env, "web", "registry.example/web:2").await;
    let done = wait_refresh(&env, "web", RefreshState::Successful).await;
    let r = refresh_of(&done).unwrap();
    let new = r.target_revision.clone();
    assert_ne!(new, old);
    assert_eq!(r.previous_revision.as_deref(), Some(old.as_str()));
    assert_eq!(r.percentage_complete, 100);
    assert!(r.end_time.is_some() && r.start_time.is_some());
    let after = wait_all_on(&env, "web", 10, &new).await;
    assert!(
        after
            .iter()
            .all(|i| !before.iter().any(|b| b.name_any() == i.name_any())),
        "every instance was replaced"
    );
    let status = env.group("web").await.status.unwrap();
    assert_eq!(status.current_revision.as_deref(), Some(new.as_str()));
    assert_eq!(status.updated_instances, 10);
    let refreshing = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Refreshing")
        .unwrap();
    assert_eq!(
        (refreshing.status.as_str(), refreshing.reason.as_str()),
        ("False", "Successful")
    );

    let stats = observer.stats();
    assert!(
        stats.statuses.contains(&RefreshState::InProgress),
        "{:?}",
        stats.statuses
    );
    assert_eq!(stats.statuses.last(), Some(&RefreshState::Successful));
    assert_non_decreasing(&stats.percentages);
    assert!(
        stats.min_serving.unwrap() >= 9,
        "InService+Healthy went down to {:?}",
        stats.min_serving
    );
    assert!(stats.max_counting <= 10, "{} instances", stats.max_counting);
    assert_eq!(stats.refresh_terminations.len(), 10);

    // Two revisions, numbered in order, owned by the group.
    let revs = revisions(&env, "web").await;
    let names: Vec<String> = revs.iter().map(|r| r.name_any()).collect();
    assert_eq!(names, vec![old.clone(), new.clone()]);
    assert_eq!(revs[0].revision + 1, revs[1].revision);
    assert!(revs.iter().all(|r| {
        r.owner_references()
            .iter()
            .any(|o| o.uid == g.uid().unwrap())
    }));
    // kubectl shows the columns.
    let out = env.kubectl(&["get", "inst", "-n", &env.ns]);
    assert!(out.contains(&new), "{out}");
    let out = env.kubectl(&["get", "sg", "web", "-n", &env.ns]);
    assert!(
        out.lines().nth(1).unwrap().split_whitespace().nth(6) == Some("10"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surge_refresh_never_drops_below_ten_serving() {
    let env = Env::new("refresh-surge").await;
    let _op = env.operator();
    env.apply_group(&group("web", 10, 100, 150).max(10).build())
        .await;
    env.wait_in_service("web", 10).await;
    let observer = Observer::start(&env, "web").await;
    set_image(&env, "web", "registry.example/web:2").await;
    let done = wait_refresh(&env, "web", RefreshState::Successful).await;
    let new = refresh_of(&done).unwrap().target_revision;
    wait_all_on(&env, "web", 10, &new).await;
    let stats = observer.stats();
    assert!(
        stats.min_serving.unwrap() >= 10,
        "InService+Healthy went down to {:?}",
        stats.min_serving
    );
    assert!(stats.max_counting <= 15, "{} instances", stats.max_counting);
    assert!(stats.max_counting > 10, "it launched before terminating");
    assert_non_decreasing(&stats.percentages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_holds_for_its_delay_then_goes_on() {
    let env = Env::new("refresh-checkpoint").await;
    let _op = env.operator();
    env.apply_group(
        &group("web", 4, 50, 100)
            .with_spec(|s| {
                s.refresh.checkpoints = vec![50];
                s.refresh.checkpoint_delay_seconds = 6;
            })
            .build(),
    )
    .await;
    env.wait_in_service("web", 4).await;
    let observer = Observer::start(&env, "web").await;
    set_image(&env, "web", "registry.example/web:2").await;
    let groups = env.groups();
    let held = wait_for("the refresh waiting at checkpoint 50%", TIMEOUT, || async {
        let r = refresh_of(&groups.get("web").await.ok()?)?;
        (r.checkpoint == Some(50) && r.checkpoint_until.is_some()).then_some(r)
    })
    .await;
    assert!(
        held.message.contains("waiting at checkpoint 50% until"),
        "{}",
        held.message
    );
    let until = held.checkpoint_until.unwrap().0.as_second();
    let done = wait_refresh(&env, "web", RefreshState::Successful).await;
    wait_all_on(&env, "web", 4, &refresh_of(&done).unwrap().target_revision).await;
    let stats = observer.stats();
    let times: Vec<i64> = stats.refresh_terminations.values().copied().collect();
    assert_eq!(times.len(), 4);
    let before: Vec<&i64> = times.iter().filter(|t| **t < until - 6).collect();
    let after: Vec<&i64> = times.iter().filter(|t| **t >= until).collect();
    assert_eq!(
        (before.len(), after.len()),
        (2, 2),
        "2 replaced before the checkpoint, none during its 6 s, 2 after: {times:?}, until {until}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_trigger_does_nothing_until_the_annotation_and_skip_matching_skips() {
    let env = Env::new("refresh-manual").await;
    let _op = env.operator();
    env.apply_group(
        &group("web", 3, 0, 100)
            .with_spec(|s| s.refresh.trigger = RefreshTrigger::Manual)
            .build(),
    )
    .await;
    let before = env.wait_in_service("web", 3).await;
    let g = set_image(&env, "web", "registry.example/web:2").await;
    // The operator has seen the change (new Instances would launch from it) ...
    let groups = env.groups();
    let seen = wait_for("the new template observed", TIMEOUT, || async {
        let now = groups.get("web").await.ok()?;
        let s = now.status.clone()?;
        (s.observed_generation == g.metadata.generation
            && s.current_revision.as_deref() != revision_of(&before[0]).as_deref())
        .then_some(now)
    })
    .await;
    let new = seen.status.clone().unwrap().current_revision.unwrap();
    // ... and started nothing.
    assert!(refresh_of(&seen).is_none(), "{:?}", refresh_of(&seen));
    let still = env.group_instances("web").await;
    assert_eq!(still.len(), 3);
    assert!(still.iter().all(|i| !leaving(i)));

    // A scale-out launches from the new template: that Instance already matches.
    env.patch_group(
        "web",
        serde_json::json!({ "spec": { "desiredCapacity": 4 } }),
    )
    .await;
    let four = env.wait_in_service("web", 4).await;
    let matching: Vec<String> = four
        .iter()
        .filter(|i| revision_of(i).as_deref() == Some(new.as_str()))
        .map(|i| i.name_any())
        .collect();
    assert_eq!(matching.len(), 1, "{four:?}");

    env.annotate_group("web", ANNOTATION_REFRESH, Some("1"))
        .await;
    let done = wait_refresh(&env, "web", RefreshState::Successful).await;
    assert_eq!(refresh_of(&done).unwrap().target_revision, new);
    let after = wait_all_on(&env, "web", 4, &new).await;
    assert!(
        after.iter().any(|i| i.name_any() == matching[0]),
        "skipMatching kept {}: {:?}",
        matching[0],
        after.iter().map(|i| i.name_any()).collect::<Vec<_>>()
    );
    assert_eq!(
        refresh_of(&done).unwrap().request.as_deref(),
        Some("1"),
        "the request is remembered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_whose_pods_crash_rolls_back_by_itself() {
    let env = Env::new("refresh-rollback").await;
    let _op = env.operator();
    env.apply_group(&group("web", 4, 75, 100).build()).await;
    let before = env.wait_in_service("web", 4).await;
    let old = revision_of(&before[0]).unwrap();
    let mut bad = env.group("web").await;
    bad.spec
        .template
        .spec
        .pod_template
        .metadata
        .get_or_insert_with(Default::default)
        .annotations
        .get_or_insert_with(Default::default)
        .insert(BEHAVIOR.into(), "crash".into());
    bad.metadata.managed_fields = None;
    bad.metadata.resource_version = None;
    bad.status = None;
    let applied = env.apply_group(&bad).await;

    let done = wait_refresh(&env, "web", RefreshState::RollbackSuccessful).await;
    let r = refresh_of(&done).unwrap();
    assert_eq!(r.previous_revision.as_deref(), Some(old.as_str()));
    assert!(!r.failed_instances.is_empty());
    wait_all_on(&env, "web", 4, &old).await;
    let status = env.group("web").await.status.unwrap();
    assert_eq!(
        status.current_revision.as_deref(),
        Some(old.as_str()),
        "launches from the previous revision"
    );
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Refreshing")
        .unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "RefreshFailed")
    );
    let failed = r.failed_instances[0].split(' ').next().unwrap().to_string();
    assert!(c.message.contains(&failed), "{}", c.message);
    assert!(
        !group_events(&env, "web", "RefreshFailed").await.is_empty(),
        "a RefreshFailed Warning Event"
    );
    // kstatus: the group runs another template than its spec's until a person changes it.
    let g = env.wait_group_condition("web", "Stalled", "True").await;
    let stalled = g
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert_eq!(stalled.reason, "RefreshFailed");
    assert!(stalled.message.contains(&failed), "{}", stalled.message);
    // The spec stays as the user wrote it.
    let now = env.group("web").await;
    assert_eq!(now.spec.template, applied.spec.template);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_refresh_and_keeps_what_was_replaced() {
    let env = Env::new("refresh-cancel").await;
    let _op = env.operator();
    env.apply_group(
        &group("web", 5, 100, 100)
            .with_spec(|s| s.refresh.instance_warmup_seconds = Some(4))
            .build(),
    )
    .await;
    let before = env.wait_in_service("web", 5).await;
    let old = revision_of(&before[0]).unwrap();
    set_image(&env, "web", "registry.example/web:2").await;
    // One replacement running: cancel.
    let groups = env.groups();
    wait_for("a replacement started", TIMEOUT, || async {
        let r = refresh_of(&groups.get("web").await.ok()?)?;
        (r.instances_to_update < 5).then_some(())
    })
    .await;
    env.annotate_group("web", ANNOTATION_CANCEL_REFRESH, Some("now"))
        .await;
    let done = wait_refresh(&env, "web", RefreshState::Cancelled).await;
    let r = refresh_of(&done).unwrap();
    let after = wait_for("5 instances serving, none leaving", TIMEOUT, || async {
        let all = env.group_instances("web").await;
        (all.len() == 5 && all.iter().all(serving)).then_some(all)
    })
    .await;
    let revs: BTreeSet<Option<String>> = after.iter().map(revision_of).collect();
    assert!(revs.contains(&Some(old.clone())), "old ones stay: {revs:?}");
    assert!(
        revs.contains(&Some(r.target_revision.clone())),
        "replaced ones stay: {revs:?}"
    );
    let c = done
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Refreshing")
        .unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "Cancelled")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_revisions_keep_a_bounded_history() {
    let env = Env::new("refresh-history").await;
    let _op = env.operator();
    env.apply_group(
        &group("web", 1, 0, 100)
            .with_spec(|s| s.revision_history_limit = 2)
            .build(),
    )
    .await;
    env.wait_in_service("web", 1).await;
    for v in 2..=5 {
        set_image(&env, "web", &format!("registry.example/web:{v}")).await;
        let groups = env.groups();
        let image = format!("registry.example/web:{v}");
        wait_for(&format!("web on {image}"), TIMEOUT, || async {
            let g = groups.get("web").await.ok()?;
            let r = refresh_of(&g)?;
            let instances = env.group_instances("web").await;
            let on = instances.len() == 1
                && instances.iter().all(|i| {
                    serving(i)
                        && i.spec.pod_template.spec.as_ref().unwrap().containers[0]
                            .image
                            .as_deref()
                            == Some(image.as_str())
                });
            (r.status == RefreshState::Successful && on).then_some(())
        })
        .await;
    }
    let revs = wait_for("history trimmed to 3 revisions", TIMEOUT, || async {
        let revs = revisions(&env, "web").await;
        (revs.len() == 3).then_some(revs)
    })
    .await;
    let numbers: Vec<i64> = revs.iter().map(|r| r.revision).collect();
    assert_eq!(numbers, vec![3, 4, 5]);
    let out = env.kubectl(&[
        "get",
        "controllerrevisions",
        "-n",
        &env.ns,
        "-l",
        "autoheal.dev/group=web",
    ]);
    assert_eq!(out.lines().count(), 4, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_of_twenty_survives_operator_sigkills() {
    use rand::RngExt;
    let env = Env::new("refresh-kill").await;
    let mut op = env.operator();
    env.apply_group(&group("web", 20, 90, 100).max(20).build())
        .await;
    let before = env.wait_in_service("web", 20).await;
    let observer = Observer::start(&env, "web").await;
    set_image(&env, "web", "registry.example/web:2").await;
    let groups = env.groups();
    let mut kills = 0;
    loop {
        let r = groups.get("web").await.ok().as_ref().and_then(refresh_of);
        if r.is_some_and(|r| r.status == RefreshState::Successful) || kills >= 12 {
            break;
        }
        let wait = rand::rng().random_range(0..2500);
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        op.sigkill();
        op.restart();
        kills += 1;
    }
    let done = wait_refresh(&env, "web", RefreshState::Successful).await;
    let new = refresh_of(&done).unwrap().target_revision;
    let after = wait_all_on(&env, "web", 20, &new).await;
    let stats = observer.stats();
    eprintln!("{kills} SIGKILLs during the refresh");
    assert!(kills >= 3, "the operator was killed during the refresh");
    // Each old Instance was terminated once and replaced once: 20 old + 20 new seen, no more.
    assert_eq!(stats.refresh_terminations.len(), 20, "{stats:?}");
    assert!(
        before
            .iter()
            .all(|b| stats.refresh_terminations.contains_key(&b.name_any()))
    );
    assert_eq!(
        stats.seen.len(),
        40,
        "no Instance replaced twice: {:?}",
        stats.seen
    );
    assert!(after.iter().all(|i| stats.seen.contains(&i.name_any())));
    assert!(
        stats.min_serving.unwrap() >= 18,
        "InService+Healthy went down to {:?}",
        stats.min_serving
    );
    assert!(stats.max_counting <= 20, "{} instances", stats.max_counting);
    assert_non_decreasing(&stats.percentages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_whose_probe_fails_rolls_back_by_itself() {
    let env = Env::new("refresh-probe-fail").await;
    let _op = env.operator();
    env.apply_group(&group("web", 3, 60, 100).http_probe().build())
        .await;
    let before = env.wait_in_service("web", 3).await;
    let old = revision_of(&before[0]).unwrap();
    let mut bad = env.group("web").await;
    bad.spec
        .template
        .spec
        .pod_template
        .metadata
        .get_or_insert_with(Default::default)
        .annotations
        .get_or_insert_with(Default::default)
        .insert(BEHAVIOR.into(), "fail".into());
    bad.metadata.managed_fields = None;
    bad.metadata.resource_version = None;
    bad.status = None;
    env.apply_group(&bad).await;
    let done = wait_refresh(&env, "web", RefreshState::RollbackSuccessful).await;
    let r = refresh_of(&done).unwrap();
    assert!(
        r.failed_instances.iter().any(|f| f.contains("503")),
        "the evidence names the probe failure: {:?}",
        r.failed_instances
    );
    wait_all_on(&env, "web", 3, &old).await;
}

/// A group of 3 with the given refresh policies, its first Instance in Standby and its
/// second protected from scale-in: (the revision they run, the Standby one, the protected one).
async fn policy_group(
    env: &Env,
    standby_policy: autoheal::api::StandbyPolicy,
    protected_policy: autoheal::api::ProtectedPolicy,
) -> (String, String, String) {
    env.apply_group(
        &group("web", 3, 0, 100)
            .with_spec(|s| {
                s.refresh.standby_instances = standby_policy;
                s.refresh.protected_instances = protected_policy;
            })
            .build(),
    )
    .await;
    let before = env.wait_in_service("web", 3).await;
    let old = revision_of(&before[0]).unwrap();
    let standby = before[0].name_any();
    let protected = before[1].name_any();
    env.annotate_instance(&standby, "autoheal.dev/standby", Some("true"))
        .await;
    env.patch_instance(
        &protected,
        serde_json::json!({ "spec": { "protectedFromScaleIn": true } }),
    )
    .await;
    env.wait_instance_state(&standby, LifecycleState::Standby)
        .await;
    (old, standby, protected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_is_ignored_and_protected_instances_are_refreshed_as_asked() {
    let env = Env::new("refresh-policies").await;
    let _op = env.operator();
    let (old, standby, protected) = policy_group(
        &env,
        autoheal::api::StandbyPolicy::Ignore,
        autoheal::api::ProtectedPolicy::Refresh,
    )
    .await;
    set_image(&env, "web", "registry.example/web:2").await;
    let done = wait_refresh(&env, "web", RefreshState::Successful).await;
    let new = refresh_of(&done).unwrap().target_revision;
    let after = wait_for("3 instances, none leaving", TIMEOUT, || async {
        let all = env.group_instances("web").await;
        (all.len() == 3 && all.iter().all(|i| !leaving(i))).then_some(all)
    })
    .await;
    let kept = after.iter().find(|i| i.name_any() == standby).unwrap();
    assert_eq!(
        revision_of(kept),
        Some(old),
        "the Standby instance is ignored"
    );
    assert!(
        !after.iter().any(|i| i.name_any() == protected),
        "the protected instance was refreshed"
    );
    assert_eq!(
        after
            .iter()
            .filter(|i| revision_of(i).as_deref() == Some(new.as_str()))
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_older_than_their_lifetime_are_replaced_within_the_band() {
    let env = Env::new("refresh-lifetime").await;
    let _op = env.operator();
    env.apply_group(
        &group("web", 3, 60, 100)
            .with_spec(|s| s.max_instance_lifetime_seconds = Some(30))
            .build(),
    )
    .await;
    let before = env.wait_in_service("web", 3).await;
    let observer = Observer::start(&env, "web").await;
    let old: Vec<String> = before.iter().map(|i| i.name_any()).collect();
    let after = wait_for(
        "every instance replaced once it is 30 s old",
        TIMEOUT,
        || async {
            let all = env.group_instances("web").await;
            let ok = all.len() == 3
                && all.iter().all(serving)
                && all.iter().all(|i| !old.contains(&i.name_any()));
            ok.then_some(all)
        },
    )
    .await;
    let created = |i: &Instance| i.metadata.creation_timestamp.as_ref().unwrap().0;
    let oldest_before = before.iter().map(created).min().unwrap();
    assert!(
        after
            .iter()
            .all(|i| created(i).duration_since(oldest_before).as_secs() >= 30),
        "replaced only once 30 s old"
    );
    assert!(
        !group_events(&env, "web", "MaxInstanceLifetime")
            .await
            .is_empty()
    );
    let stats = observer.stats();
    assert!(
        stats.min_serving.unwrap() >= 2,
        "InService+Healthy went down to {:?}",
        stats.min_serving
    );
    assert!(stats.max_counting <= 3);
    assert!(
        refresh_of(&env.group("web").await).is_none(),
        "no refresh was involved"
    );
}

/// `standbyInstances: Terminate` replaces a Standby Instance; `protectedInstances: Wait` holds
/// the refresh (InProgress, the protected Instance on its revision) until the protection is
/// lifted, then refreshes it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_terminate_replaces_and_protected_wait_holds_until_unprotected() {
    let env = Env::new("refresh-wait").await;
    let _op = env.operator();
    let (old, standby, protected) = policy_group(
        &env,
        autoheal::api::StandbyPolicy::Terminate,
        autoheal::api::ProtectedPolicy::Wait,
    )
    .await;
    set_image(&env, "web", "registry.example/web:2").await;
    let new = wait_for("the refresh targets a new revision", TIMEOUT, || async {
        let g = env.group("web").await;
        refresh_of(&g)
            .map(|r| r.target_revision)
            .filter(|t| *t != old)
    })
    .await;
    // Everything but the protected Instance reaches the new revision (the Standby one by
    // replacement); the refresh waits.
    wait_for(
        "all but the protected Instance refreshed",
        TIMEOUT,
        || async {
            let all = env.group_instances("web").await;
            let others_new = all
                .iter()
                .filter(|i| i.name_any() != protected && !leaving(i))
                .all(|i| revision_of(i).as_deref() == Some(new.as_str()));
            (all.len() == 3 && others_new && all.iter().all(|i| !leaving(i))).then_some(())
        },
    )
    .await;
    assert!(
        env.instance(&standby).await.is_none(),
        "the Standby Instance was replaced"
    );
    let held = env.instance(&protected).await.expect("still there");
    assert_eq!(revision_of(&held), Some(old.clone()));
    let status = refresh_of(&env.group("web").await).unwrap().status;
    assert_eq!(
        status,
        RefreshState::InProgress,
        "waits for the protected one"
    );
    // Lifting the protection lets the refresh finish with it.
    env.patch_instance(
        &protected,
        serde_json::json!({ "spec": { "protectedFromScaleIn": false } }),
    )
    .await;
    wait_refresh(&env, "web", RefreshState::Successful).await;
    env.wait_instance_gone(&protected).await;
    wait_all_on(&env, "web", 3, &new).await;
}

/// `standbyInstances: Wait` holds the refresh while an Instance is in Standby on the old
/// revision and refreshes it once it leaves Standby; `protectedInstances: Ignore` leaves a
/// protected Instance on its revision and the refresh still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_wait_holds_until_standby_ends_and_protected_ignore_skips() {
    let env = Env::new("refresh-standby-wait").await;
    let _op = env.operator();
    let (first, resting, shielded) = policy_group(
        &env,
        autoheal::api::StandbyPolicy::Wait,
        autoheal::api::ProtectedPolicy::Ignore,
    )
    .await;
    set_image(&env, "web", "registry.example/web:3").await;
    // The one Instance neither in Standby nor protected is refreshed; the refresh waits.
    let target = wait_for("the free Instance refreshed", TIMEOUT, || async {
        let g = env.group("web").await;
        let target = refresh_of(&g)?.target_revision;
        let all = env.group_instances("web").await;
        let free: Vec<&Instance> = all
            .iter()
            .filter(|i| ![&resting, &shielded].contains(&&i.name_any()))
            .collect();
        (all.len() == 3
            && free.len() == 1
            && !leaving(free[0])
            && revision_of(free[0]).as_deref() == Some(target.as_str()))
        .then_some(target)
    })
    .await;
    assert_eq!(
        refresh_of(&env.group("web").await).unwrap().status,
        RefreshState::InProgress,
        "waits for the Instance in Standby"
    );
    // Standby ends: it is refreshed, the protected one is not, and the refresh succeeds.
    env.annotate_instance(&resting, "autoheal.dev/standby", None)
        .await;
    wait_refresh(&env, "web", RefreshState::Successful).await;
    env.wait_instance_gone(&resting).await;
    let kept = env.instance(&shielded).await.expect("protected, ignored");
    assert_eq!(revision_of(&kept), Some(first));
    assert_ne!(target, revision_of(&kept).unwrap());
}
