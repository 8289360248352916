//! The workload signal's parts, one by one.

use super::*;

fn startup(since: i64, timeout: i32) -> Startup {
    Startup {
        since: t(since),
        timeout_seconds: timeout,
        deadline: t(since + i64::from(timeout)),
    }
}

fn finding(level: Level, reason: &'static str, message: &str) -> Finding {
    Finding {
        level,
        reason,
        message: message.into(),
    }
}

#[test]
fn startup_counts_from_the_pending_entry_else_from_creation() {
    let f = fixture();
    assert_eq!(Startup::of(&f.instance, &f.config, t(50)), startup(0, 300));
    let mut instance = f.instance.clone();
    instance.status = None;
    assert_eq!(Startup::of(&instance, &f.config, t(50)), startup(50, 300));
}

#[test]
fn a_missing_pod_is_starting_until_the_deadline_or_gone() {
    let mut recheck = None;
    let f = missing_pod_finding(
        "i",
        LifecycleState::Pending,
        startup(0, 300),
        t(299),
        &mut recheck,
    );
    assert_eq!((f.level, f.reason), (Level::NoData, "PodNotCreated"));
    assert_eq!(recheck, Some(t(300)));

    let mut recheck = None;
    let f = missing_pod_finding(
        "i",
        LifecycleState::Pending,
        startup(0, 300),
        t(300),
        &mut recheck,
    );
    assert_eq!((f.level, f.reason), (Level::ImpairedNow, "StartupTimeout"));
    assert_eq!(recheck, None);

    for state in [LifecycleState::PendingWait, LifecycleState::InService] {
        let f = missing_pod_finding("i", state, startup(0, 300), t(0), &mut recheck);
        assert_eq!(
            (f.level, f.reason),
            (Level::ImpairedNow, "PodGone"),
            "{state:?}"
        );
    }
    assert_eq!(recheck, None);
}

#[test]
fn a_pod_deleted_out_of_band_acts_at_once() {
    let mut p = pod("Running");
    assert!(pod_deleted_finding(&p, "p", None).is_none());
    p.metadata.deletion_timestamp = Some(Time(t(5)));
    let f = pod_deleted_finding(&p, "p", None).unwrap();
    assert_eq!((f.level, f.reason), (Level::ImpairedNow, "PodDeleted"));
}

#[test]
fn the_pod_a_restart_replaces_is_not_deleted_out_of_band() {
    let mut p = pod("Running");
    p.metadata.uid = Some("old".into());
    // Before and while its deletion: still impaired, with the restart as evidence.
    for deleting in [false, true] {
        p.metadata.deletion_timestamp = deleting.then(|| Time(t(5)));
        let f = pod_deleted_finding(&p, "p", Some("old")).unwrap();
        assert_eq!((f.level, f.reason), (Level::ImpairedNow, "PodRestarting"));
        assert!(f.message.contains("restarted"), "{}", f.message);
    }
    // Another Pod (the new one) is judged as any.
    assert_eq!(
        pod_deleted_finding(&p, "p", Some("new")).map(|f| f.reason),
        Some("PodDeleted")
    );
}

#[test]
fn failing_pod_phases() {
    let level_reason =
        |phase: &str| pod_phase_finding(&pod(phase), "p").map(|f| (f.level, f.reason));
    assert_eq!(
        level_reason("Failed"),
        Some((Level::ImpairedNow, "PodFailed"))
    );
    assert_eq!(
        level_reason("Succeeded"),
        Some((Level::ImpairedNow, "PodSucceeded"))
    );
    assert_eq!(
        level_reason("Unknown"),
        Some((Level::Impaired, "PodUnknown"))
    );
    assert_eq!(level_reason("Running"), None);
    assert_eq!(level_reason("Pending"), None);
}

#[test]
fn startup_applies_while_pending_or_waiting_for_the_pod() {
    let s = startup(0, 300);
    let mut recheck = None;
    let at = |p: &WatchedPod, state, now, recheck: &mut Option<Timestamp>| {
        startup_finding(p, "p", state, s, now, recheck).map(|f| (f.level, f.reason, f.message))
    };
    assert_eq!(
        at(
            &pod("Running"),
            LifecycleState::InService,
            t(999),
            &mut recheck
        ),
        None
    );
    assert_eq!(
        at(
            &pod("Running"),
            LifecycleState::PendingWait,
            t(999),
            &mut recheck
        ),
        None
    );
    assert_eq!(recheck, None);
    assert_eq!(
        at(
            &pod("Pending"),
            LifecycleState::PendingWait,
            t(10),
            &mut recheck
        ),
        Some((
            Level::NoData,
            "PodStarting",
            "Pod p phase Pending".to_string()
        ))
    );
    assert_eq!(recheck, Some(t(300)));
    assert_eq!(
        at(
            &pod("Running"),
            LifecycleState::Pending,
            t(10),
            &mut recheck
        ),
        Some((
            Level::NoData,
            "PodStarting",
            "Pod p running but not yet in service".to_string()
        ))
    );
    let (level, reason, message) = at(
        &pod("Running"),
        LifecycleState::Pending,
        t(300),
        &mut recheck,
    )
    .unwrap();
    assert_eq!((level, reason), (Level::ImpairedNow, "StartupTimeout"));
    assert!(
        message.ends_with(&format!(
            "Pending since {}, past the startup timeout of 300s",
            t(0)
        )),
        "{message}"
    );
}

#[test]
fn node_ready_false_or_unknown_is_impaired() {
    assert!(node_finding(&node("True")).is_none());
    let f = node_finding(&node("False")).unwrap();
    assert_eq!((f.level, f.reason), (Level::Impaired, "NodeNotReady"));
    assert_eq!(
        f.message,
        "Node node-0 is NotReady: KubeletStoppedPosting (Kubelet stopped posting node status.)"
    );
    let f = node_finding(&node("Unknown")).unwrap();
    assert_eq!((f.level, f.reason), (Level::Impaired, "NodeUnknown"));
    let mut no_ready = node("False");
    no_ready.status = None;
    assert!(node_finding(&no_ready).is_none());
}

#[test]
fn the_summary_names_the_worst_findings_first() {
    let findings = vec![
        finding(Level::Warning, "UnhealthyConditionPending", "w"),
        finding(Level::NoData, "PodStarting", "starting"),
        finding(Level::Impaired, "NodeNotReady", "node"),
        finding(Level::Impaired, "UnhealthyCondition", "rule"),
    ];
    let s = workload_summary(&findings, Some(&pod("Running")), "i");
    assert_eq!((s.level, s.reason), (Level::Impaired, "NodeNotReady"));
    assert_eq!(s.message, "node; rule; w");
    assert_eq!(s.condition.status, "False");

    let s = workload_summary(&findings[..2], None, "i");
    assert_eq!(
        (s.level, s.reason, s.message.as_str()),
        (Level::Warning, "UnhealthyConditionPending", "w")
    );
    assert_eq!(s.condition.status, "True");

    let s = workload_summary(&findings[1..2], None, "i");
    assert_eq!(s.condition.status, "Unknown");
}

#[test]
fn the_summary_without_findings_names_the_pod_and_its_node() {
    let s = workload_summary(&[], Some(&pod("Running")), "i");
    assert_eq!((s.level, s.reason), (Level::Ok, "PodRunning"));
    assert_eq!(s.message, "Pod i Running on Node node-0");
    assert_eq!(s.condition.status, "True");
    let mut p = pod("Running");
    p.spec = None;
    assert_eq!(
        workload_summary(&[], Some(&p), "i").message,
        "Pod i Running"
    );
    assert_eq!(workload_summary(&[], None, "i").message, "Pod i exists");
}
