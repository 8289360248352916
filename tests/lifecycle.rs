//! Capacity and lifecycle against the real API server, with podsim and the operator binary:
//! scaling through the scale subresource, min/max, scale-in policies and protection, lifecycle
//! hooks, draining, suspended processes, pause, group deletion.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use autoheal::api::{HookResult, HookTransition, Instance, LifecycleState, Process, ScaleInPolicy};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use support::*;
use testkit::wait_for;

fn names(instances: &[Instance]) -> BTreeSet<String> {
    instances.iter().map(|i| i.name_any()).collect()
}

fn condition(g: &autoheal::api::ScalingGroup, type_: &str) -> Option<(String, String)> {
    g.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Waits until the group's ScalingLimited condition has `status` and `reason`.
async fn wait_limited(env: &Env, group: &str, status: &str, reason: &str) {
    let groups = env.groups();
    wait_for(
        &format!("{group} ScalingLimited={status} ({reason})"),
        TIMEOUT,
        || async {
            let g = groups.get(group).await.ok()?;
            // Of the current spec: a condition recorded for an older one does not count.
            let current = g
                .status
                .as_ref()
                .is_some_and(|s| s.observed_generation == g.metadata.generation);
            (current && condition(&g, "ScalingLimited") == Some((status.into(), reason.into())))
                .then_some(())
        },
    )
    .await;
}

/// The operator's write requests recorded in the audit log for `resource` `name`.
fn operator_writes(env: &Env, resource: &str, name: &str) -> Vec<(String, String, Timestamp)> {
    testkit::audit_writes(env.cp.audit_log_path())
        .into_iter()
        .filter(|w| {
            w.user_agent.starts_with("autoheal/")
                && w.namespace == env.ns
                && w.resource == resource
                && w.name == name
        })
        .map(|w| {
            let t: Timestamp = w.request_received_timestamp.parse().unwrap();
            (w.verb, w.subresource, t)
        })
        .collect()
}

/// Waits until the wall clock is past the second of the newest Instance's creationTimestamp
/// (whole seconds), so Instances launched after it have a later one than those before (setup,
/// not an assertion).
async fn next_second(env: &Env) {
    let newest = env
        .instances()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|i| i.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .max()
        .expect("Instances were launched");
    let next = newest + k8s_openapi::jiff::SignedDuration::from_secs(1);
    wait_for(
        &format!("the clock past {newest}, the newest creationTimestamp"),
        TIMEOUT,
        || async { (Timestamp::now() >= next).then_some(()) },
    )
    .await;
}

fn history(i: &Instance) -> Vec<LifecycleState> {
    i.status
        .as_ref()
        .map(|s| s.state_history.iter().map(|e| e.state).collect())
        .unwrap_or_default()
}

/// `kubectl scale` 0 → 5 → 2 → 7 → 0: the group follows through the scale subresource, Pods
/// and Instances match, status counts and Ready follow, `kubectl wait` works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_0_5_2_7_and_back_with_kubectl() {
    let env = Env::new("scale").await;
    let _op = env.operator();
    env.apply_group(&GroupBuilder::new("web").min(0).max(10).desired(0).build())
        .await;
    let g = env.wait_group_condition("web", "Ready", "True").await;
    let status = g.status.unwrap();
    assert_eq!(status.selector.as_deref(), Some("autoheal.dev/group=web"));
    assert_eq!(status.current_capacity, 0);

    for n in [5usize, 2, 7, 0] {
        env.kubectl(&["-n", &env.ns, "scale", "sg/web", &format!("--replicas={n}")]);
        let instances = env.wait_in_service("web", n).await;
        // Every Pod is labelled in service and carries both labels.
        for pod in env.wait_pods_in_service("web", n).await {
            assert_eq!(
                pod.labels().get("autoheal.dev/group").map(String::as_str),
                Some("web")
            );
            assert_eq!(
                pod.labels().get("autoheal.dev/instance"),
                Some(&pod.name_any())
            );
        }
        for i in &instances {
            assert!(i.name_any().starts_with("web-") && i.name_any().len() == 9);
            assert!(i.annotations().contains_key("autoheal.dev/template-hash"));
        }
        env.wait_group_condition("web", "Ready", "True").await;
        // The status catches up with the last terminations.
        let groups = env.groups();
        let status = wait_for(
            "group status listing exactly the live instances",
            TIMEOUT,
            || async {
                let s = groups.get("web").await.ok()?.status?;
                (s.instances.len() == n).then_some(s)
            },
        )
        .await;
        assert_eq!(status.desired_capacity, n as i32);
        assert_eq!(status.current_capacity, n as i32);
        assert_eq!(status.in_service_instances, n as i32);
        assert_eq!(status.instances.len(), n);
        // The scale subresource reads it back.
        let replicas = env.kubectl(&[
            "-n",
            &env.ns,
            "get",
            "--subresource=scale",
            "sg/web",
            "-o",
            "jsonpath={.status.replicas}",
        ]);
        assert_eq!(replicas.trim(), n.to_string());
        // kubectl wait works on the Ready condition.
        env.kubectl(&[
            "-n",
            &env.ns,
            "wait",
            "--for=condition=Ready",
            "sg/web",
            "--timeout=60s",
        ]);
    }
}

/// minSize/maxSize: desiredCapacity outside them is refused by the API server (also through
/// `kubectl scale`); unset, it follows minSize.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_max_clamping() {
    let env = Env::new("minmax").await;
    let _op = env.operator();
    env.apply_group(&GroupBuilder::new("web").min(2).max(4).desired(None).build())
        .await;
    env.wait_in_service("web", 2).await;
    let out = kubectl(env.cp, &["-n", &env.ns, "scale", "sg/web", "--replicas=6"]);
    assert!(!out.status.success(), "scaling above maxSize is refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("desiredCapacity must be <= maxSize"), "{err}");
    let out = kubectl(env.cp, &["-n", &env.ns, "scale", "sg/web", "--replicas=1"]);
    assert!(!out.status.success(), "scaling below minSize is refused");
    // desiredCapacity unset follows minSize up and down.
    env.patch_group("web", serde_json::json!({ "spec": { "minSize": 3 } }))
        .await;
    env.wait_in_service("web", 3).await;
    env.patch_group("web", serde_json::json!({ "spec": { "minSize": 1 } }))
        .await;
    env.wait_in_service("web", 1).await;
    let g = env
        .wait_group_condition("web", "ScalingLimited", "False")
        .await;
    assert_eq!(g.status.unwrap().desired_capacity, 1);
}

/// Protected instances are never picked on scale-in; the group reports ScalingLimited until
/// protection is lifted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_instances_are_kept_on_scale_in() {
    let env = Env::new("protect").await;
    let _op = env.operator();
    env.apply_group(&GroupBuilder::new("web").desired(3).build())
        .await;
    let all = env.wait_in_service("web", 3).await;
    let protected: BTreeSet<String> = names(&all[..2]);
    for name in &protected {
        env.patch_instance(
            name,
            serde_json::json!({ "spec": { "protectedFromScaleIn": true } }),
        )
        .await;
    }
    env.kubectl(&["-n", &env.ns, "scale", "sg/web", "--replicas=0"]);
    let left = env.wait_in_service("web", 2).await;
    assert_eq!(names(&left), protected);
    wait_limited(&env, "web", "True", "ProtectedFromScaleIn").await;
    let groups = env.groups();
    wait_for(
        "status listing the two protected instances",
        TIMEOUT,
        || async {
            let s = groups.get("web").await.ok()?.status?;
            (s.instances.len() == 2 && s.instances.iter().all(|i| i.protected_from_scale_in))
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        condition(&env.group("web").await, "Ready").unwrap().1,
        "ScalingIn"
    );
    // Lift one protection: it goes; the other stays.
    let first = protected.iter().next().unwrap().clone();
    env.patch_instance(
        &first,
        serde_json::json!({ "spec": { "protectedFromScaleIn": false } }),
    )
    .await;
    let left = env.wait_in_service("web", 1).await;
    assert!(!names(&left).contains(&first));
    let second = protected.iter().nth(1).unwrap().clone();
    env.patch_instance(
        &second,
        serde_json::json!({ "spec": { "protectedFromScaleIn": false } }),
    )
    .await;
    env.wait_in_service("web", 0).await;
    wait_limited(&env, "web", "False", "WithinLimits").await;
}

/// Each scale-in policy picks the right Instance: OldestInstance the oldest, NewestInstance
/// the newest, Default the Unhealthy one first, then the oldest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_in_policies_pick_the_right_instance() {
    let env = Env::new("policy").await;
    let _op = env.operator();
    let groups = [
        ("oldest", ScaleInPolicy::OldestInstance),
        ("newest", ScaleInPolicy::NewestInstance),
        ("default", ScaleInPolicy::Default),
    ];
    // Three Instances per group, launched in three different seconds.
    for (name, policy) in groups {
        env.apply_group(
            &GroupBuilder::new(name)
                .desired(1)
                .scale_in(policy)
                // Keep the Unhealthy instance: this test is about scale-in, not replacement.
                .suspend(Process::ReplaceUnhealthy)
                .build(),
        )
        .await;
    }
    let mut launched: Vec<Vec<String>> = vec![Vec::new(); 3];
    for n in 1..=3usize {
        for (k, (name, _)) in groups.iter().enumerate() {
            if n > 1 {
                env.kubectl(&[
                    "-n",
                    &env.ns,
                    "scale",
                    &format!("sg/{name}"),
                    &format!("--replicas={n}"),
                ]);
            }
            let now = env.wait_in_service(name, n).await;
            let new: Vec<String> = names(&now)
                .into_iter()
                .filter(|x| !launched[k].contains(x))
                .collect();
            assert_eq!(new.len(), 1);
            launched[k].extend(new);
        }
        next_second(&env).await;
    }
    // In "default", the newest Instance is marked Unhealthy: it goes first despite its age.
    let sick = launched[2][2].clone();
    env.annotate_instance(&sick, "autoheal.dev/health", Some("Unhealthy"))
        .await;
    env.annotate_instance(&sick, "autoheal.dev/respect-grace-period", Some("false"))
        .await;
    let instances = env.instances();
    wait_for("the marked instance Unhealthy", TIMEOUT, || async {
        let i = instances.get(&sick).await.ok()?;
        (!is_healthy(&i) && i.status.as_ref()?.health_status.is_some()).then_some(())
    })
    .await;
    for (name, _) in groups {
        env.kubectl(&[
            "-n",
            &env.ns,
            "scale",
            &format!("sg/{name}"),
            "--replicas=2",
        ]);
    }
    let expect_gone = [
        launched[0][0].clone(), // oldest
        launched[1][2].clone(), // newest
        sick.clone(),           // default: unhealthy first
    ];
    for (k, (name, _)) in groups.iter().enumerate() {
        let left = wait_for(&format!("{name} at 2 instances"), TIMEOUT, || async {
            let all = env.group_instances(name).await;
            (all.len() == 2).then_some(all)
        })
        .await;
        assert!(
            !names(&left).contains(&expect_gone[k]),
            "{name}: {} should have been terminated, left {:?}",
            expect_gone[k],
            names(&left)
        );
    }
    // Default without unhealthy instances: the oldest.
    env.kubectl(&["-n", &env.ns, "scale", "sg/default", "--replicas=1"]);
    let left = wait_for("default at 1 instance", TIMEOUT, || async {
        let all = env.group_instances("default").await;
        (all.len() == 1).then_some(all)
    })
    .await;
    assert_eq!(names(&left), BTreeSet::from([launched[2][1].clone()]));
}

/// Scale-in drains: the in-service label goes first, the Pod is deleted only once the
/// deregistration delay has passed since (measured in the apiserver's audit log), and the
/// Terminate hook holds the Pod until completed by annotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_in_drains_then_terminate_hook_then_pod_deleted() {
    let env = Env::new("drain").await;
    let _op = env.operator();
    env.apply_group(
        &GroupBuilder::new("web")
            .desired(1)
            .deregistration_delay(3)
            .hook("drain", HookTransition::Terminate, 60, HookResult::Abandon)
            .build(),
    )
    .await;
    let inst = env.wait_in_service("web", 1).await.remove(0);
    let name = inst.name_any();
    env.kubectl(&["-n", &env.ns, "scale", "sg/web", "--replicas=0"]);
    let waiting = env
        .wait_instance_state(&name, LifecycleState::TerminatingWait)
        .await;
    // Out of service, Pod still there.
    let pod = env.pods().get(&name).await.unwrap();
    assert!(!pod_in_service(&pod), "label removed");
    assert!(
        pod.metadata.deletion_timestamp.is_none(),
        "Pod kept while the hook waits"
    );
    let status = waiting.status.clone().unwrap();
    assert_eq!(status.termination_reason.as_deref(), Some("ScaleIn"));
    assert_eq!(status.pending_hooks.len(), 1);
    assert_eq!(status.pending_hooks[0].name, "drain");
    // Complete the hook.
    env.annotate_instance(&name, "hooks.autoheal.dev/drain", Some("Continue"))
        .await;
    env.wait_instance_gone(&name).await;
    assert!(env.pods().get_opt(&name).await.unwrap().is_none());
    // The audit log: label removed (a patch), then, >= 3s later, the delete.
    let writes = wait_for("the Pod delete in the audit log", TIMEOUT, || async {
        let w = operator_writes(&env, "pods", &name);
        w.iter().any(|(verb, _, _)| verb == "delete").then_some(w)
    })
    .await;
    let delete = writes.iter().find(|(v, _, _)| v == "delete").unwrap().2;
    let unlabel = writes
        .iter()
        .filter(|(v, _, t)| v == "patch" && *t < delete)
        .map(|(_, _, t)| *t)
        .max()
        .expect("label removal patch");
    let gap = unlabel.duration_until(delete);
    assert!(
        gap >= k8s_openapi::jiff::SignedDuration::from_secs(3),
        "Pod deleted {gap:?} after leaving service (delay 3s)"
    );
    let history: Vec<LifecycleState> = history(&waiting);
    assert_eq!(
        history,
        vec![
            LifecycleState::Pending,
            LifecycleState::InService,
            LifecycleState::Terminating,
            LifecycleState::TerminatingWait
        ]
    );
}

/// Launch hooks: completed by annotation (Continue → InService; Abandon → terminated and
/// relaunched), extended by heartbeat, and timed out to each default result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_hooks_complete_heartbeat_and_time_out() {
    let env = Env::new("lhooks").await;
    let _op = env.operator();
    let hooked = |name: &str, default: HookResult| {
        GroupBuilder::new(name)
            .desired(1)
            .hook("warm", HookTransition::Launch, 30, default)
            .build()
    };
    for (name, default) in [
        ("cont", HookResult::Abandon),
        ("aban", HookResult::Continue),
        ("tcont", HookResult::Continue),
        ("taban", HookResult::Abandon),
        ("beat", HookResult::Abandon),
    ] {
        env.apply_group(&hooked(name, default)).await;
    }
    let first = |group: &'static str| {
        let env = &env;
        async move {
            wait_for(
                &format!("{group}: one instance in Pending:Wait"),
                TIMEOUT,
                || async {
                    let all = env.group_instances(group).await;
                    let i = all
                        .into_iter()
                        .find(|i| state_of(i) == Some(LifecycleState::PendingWait))?;
                    Some(i)
                },
            )
            .await
        }
    };
    let cont = first("cont").await;
    let aban = first("aban").await;
    let tcont = first("tcont").await;
    let taban = first("taban").await;
    let beat = first("beat").await;
    // Waiting instances are not in service.
    let pod = env.pods().get(&cont.name_any()).await.unwrap();
    assert!(!pod_in_service(&pod));

    // Completed by annotation.
    env.annotate_instance(
        &cont.name_any(),
        "hooks.autoheal.dev/warm",
        Some("Continue"),
    )
    .await;
    let done = env
        .wait_instance_state(&cont.name_any(), LifecycleState::InService)
        .await;
    assert_eq!(
        done.status.unwrap().pending_hooks[0].result,
        Some(HookResult::Continue)
    );
    env.annotate_instance(&aban.name_any(), "hooks.autoheal.dev/warm", Some("Abandon"))
        .await;
    env.wait_instance_gone(&aban.name_any()).await;
    // ...and a new one was launched in its place.
    let again = first("aban").await;
    assert_ne!(again.name_any(), aban.name_any());

    // Heartbeats move the deadline to 30 s after each: one a second until one made 10 s or
    // more into the wait has moved it to 40 s or more after the wait began (each heartbeat
    // waited on until recorded, its deadline read back).
    let started = beat.status.as_ref().unwrap().pending_hooks[0].started_at.0;
    let original = beat.status.as_ref().unwrap().pending_hooks[0].deadline.0;
    assert_eq!(
        original,
        started + k8s_openapi::jiff::SignedDuration::from_secs(30)
    );
    let instances = env.instances();
    let mut beats = 0;
    let extended = loop {
        beats += 1;
        let value = beats.to_string();
        env.annotate_instance(
            &beat.name_any(),
            "hooks.autoheal.dev/warm.heartbeat",
            Some(&value),
        )
        .await;
        let hook = wait_for(&format!("heartbeat {value} recorded"), TIMEOUT, || async {
            let i = instances.get(&beat.name_any()).await.ok()?;
            let h = i.status.as_ref()?.pending_hooks.first()?.clone();
            (h.last_heartbeat.as_deref() == Some(value.as_str())).then_some(h)
        })
        .await;
        assert!(hook.result.is_none(), "still waiting: {hook:?}");
        if hook.deadline.0 >= started + k8s_openapi::jiff::SignedDuration::from_secs(40) {
            break hook;
        }
        assert!(
            beats < 60,
            "60 heartbeats never moved the deadline 40 s past {started}: {hook:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(extended.deadline.0 >= started + k8s_openapi::jiff::SignedDuration::from_secs(40));

    // Timeouts: tcont → InService with Continue after 30s; taban → terminated.
    let t = env
        .wait_instance_state(&tcont.name_any(), LifecycleState::InService)
        .await;
    let st = t.status.unwrap();
    assert_eq!(st.pending_hooks[0].result, Some(HookResult::Continue));
    let waited = st.state_history[1]
        .entered_at
        .0
        .duration_until(st.state_history[2].entered_at.0);
    assert!(
        waited >= k8s_openapi::jiff::SignedDuration::from_secs(30),
        "{waited:?}"
    );
    env.wait_instance_gone(&taban.name_any()).await;
    // The heartbeat instance outlived the original deadline, then timed out (Abandon).
    let beat_now = env.instance(&beat.name_any()).await;
    if let Some(b) = beat_now {
        // Still present only if terminating already or waiting: its hook may not have timed out
        // before the extended deadline.
        let h = &b.status.as_ref().unwrap().pending_hooks[0];
        assert!(h.result.is_none() || Timestamp::now() >= extended.deadline.0);
    }
    env.wait_instance_gone(&beat.name_any()).await;
    assert!(
        Timestamp::now() >= extended.deadline.0,
        "the heartbeat instance was not abandoned before its extended deadline"
    );
}

/// Suspended processes do what AWS's do: Launch stops launches, Terminate stops scale-in,
/// AddToService keeps new Instances out of service; pause stops everything but status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_processes_and_pause() {
    let env = Env::new("suspend").await;
    let _op = env.operator();
    // Launch suspended: nothing is launched.
    env.apply_group(
        &GroupBuilder::new("web")
            .desired(2)
            .suspend(Process::Launch)
            .build(),
    )
    .await;
    wait_limited(&env, "web", "True", "LaunchSuspended").await;
    assert!(env.group_instances("web").await.is_empty());
    // Resume Launch, suspend AddToService: Instances are InService without the label.
    env.apply_group(
        &GroupBuilder::new("web")
            .desired(2)
            .suspend(Process::AddToService)
            .build(),
    )
    .await;
    env.wait_in_service("web", 2).await;
    for pod in env.group_pods("web").await {
        assert!(!pod_in_service(&pod), "AddToService suspended: no label");
    }
    // Resume AddToService, suspend Terminate: labels appear; scale-in does nothing.
    env.apply_group(
        &GroupBuilder::new("web")
            .desired(2)
            .suspend(Process::Terminate)
            .build(),
    )
    .await;
    wait_for("in-service labels added", TIMEOUT, || async {
        let pods = env.group_pods("web").await;
        (pods.len() == 2 && pods.iter().all(pod_in_service)).then_some(())
    })
    .await;
    env.kubectl(&["-n", &env.ns, "scale", "sg/web", "--replicas=0"]);
    wait_limited(&env, "web", "True", "TerminateSuspended").await;
    assert_eq!(env.wait_in_service("web", 2).await.len(), 2);
    // Pause, then resume Terminate and scale to 4: nothing happens while paused.
    env.annotate_group("web", "autoheal.dev/paused", Some("true"))
        .await;
    env.apply_group(
        &GroupBuilder::new("web")
            .desired(4)
            .annotation("autoheal.dev/paused", "true")
            .build(),
    )
    .await;
    wait_limited(&env, "web", "True", "Paused").await;
    let g = env.group("web").await;
    assert_eq!(
        g.status.as_ref().unwrap().desired_capacity,
        4,
        "status still reconciled"
    );
    assert_eq!(g.status.unwrap().observed_generation, g.metadata.generation);
    assert_eq!(env.group_instances("web").await.len(), 2);
    // Unpause: it scales.
    env.annotate_group("web", "autoheal.dev/paused", None).await;
    env.wait_in_service("web", 4).await;
    wait_limited(&env, "web", "False", "WithinLimits").await;
}

/// Deleting a group terminates its Instances through the graceful path (Terminate hooks
/// included, completed or timed out), then the group goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_deletion_drains_instances() {
    let env = Env::new("gdelete").await;
    let _op = env.operator();
    env.apply_group(
        &GroupBuilder::new("web")
            .desired(3)
            .hook("bye", HookTransition::Terminate, 30, HookResult::Continue)
            .build(),
    )
    .await;
    let all = env.wait_in_service("web", 3).await;
    env.kubectl(&["-n", &env.ns, "delete", "sg/web", "--wait=false"]);
    for i in &all {
        let w = env
            .wait_instance_state(&i.name_any(), LifecycleState::TerminatingWait)
            .await;
        assert_eq!(
            w.status.unwrap().termination_reason.as_deref(),
            Some("GroupDeleted")
        );
    }
    // The group waits for them.
    assert!(env.groups().get_opt("web").await.unwrap().is_some());
    // Two complete by annotation, the third times out.
    for i in &all[..2] {
        env.annotate_instance(&i.name_any(), "hooks.autoheal.dev/bye", Some("Continue"))
            .await;
    }
    for i in &all[..2] {
        env.wait_instance_gone(&i.name_any()).await;
    }
    env.wait_instance_gone(&all[2].name_any()).await;
    let groups = env.groups();
    wait_for("group gone", TIMEOUT, || async {
        groups.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(env.group_pods("web").await.is_empty());
}

/// `kubectl delete inst X` terminates X gracefully and the group launches a replacement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_instance_replaces_it() {
    let env = Env::new("instdel").await;
    let _op = env.operator();
    env.apply_group(&GroupBuilder::new("web").desired(2).build())
        .await;
    let before = env.wait_in_service("web", 2).await;
    let victim = before[0].name_any();
    env.kubectl(&["-n", &env.ns, "delete", "inst", &victim, "--wait=false"]);
    let leaving = env
        .wait_instance_state(&victim, LifecycleState::TerminatingProceed)
        .await;
    assert_eq!(
        leaving.status.unwrap().termination_reason.as_deref(),
        Some("Deleted")
    );
    env.wait_instance_gone(&victim).await;
    let after = env.wait_in_service("web", 2).await;
    assert!(!names(&after).contains(&victim));
    assert!(names(&after).contains(&before[1].name_any()));
}
