//! `kubectl autoheal`, as a person runs it: the real `kubectl` finds the plugin
//! (`kubectl-autoheal`, built with the crate) on PATH and each test asserts the sentence a
//! person reads for one blocking reason, on a real control plane with podsim and the operator.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use autoheal::api::{
    ANNOTATION_HEALTH, ANNOTATION_MAINTENANCE, ANNOTATION_PAUSED, ANNOTATION_STANDBY, HookResult,
    HookTransition, Instance, LifecycleState, Process,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use support::*;
use testkit::wait_for;

/// `kubectl autoheal ARGS -n NS`, with the plugin's directory first on PATH and the kubeconfig
/// in `KUBECONFIG` (kubectl hands a plugin none of its own flags).
fn autoheal_output(env: &Env, args: &[&str]) -> Output {
    Command::new(env.cp.bin_dir().join("kubectl"))
        .env("KUBECONFIG", env.cp.kubeconfig_path())
        .env("PATH", plugin_path())
        .arg("autoheal")
        .args(args)
        .args(["-n", &env.ns])
        .stdin(Stdio::null())
        .output()
        .expect("running kubectl autoheal")
}

/// PATH with the plugin's directory (where cargo built `kubectl-autoheal`) first.
fn plugin_path() -> String {
    let plugin = Path::new(env!("CARGO_BIN_EXE_kubectl-autoheal"));
    format!(
        "{}:{}",
        plugin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `kubectl autoheal ARGS`; panics unless it succeeds; returns stdout.
fn autoheal(env: &Env, args: &[&str]) -> String {
    let out = autoheal_output(env, args);
    assert!(
        out.status.success(),
        "kubectl autoheal {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `kubectl autoheal ARGS` until its output contains `needle`; returns that output.
async fn wait_says(env: &Env, args: &[&str], needle: &str) -> String {
    let mut last = String::new();
    let found = wait_for_quiet(TIMEOUT, || {
        last = autoheal(env, args);
        last.contains(needle).then(|| last.clone())
    })
    .await;
    found
        .unwrap_or_else(|| panic!("kubectl autoheal {args:?} never said {needle:?}; last:\n{last}"))
}

async fn wait_for_quiet<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until `check` holds for the Instance `name`.
async fn wait_instance(env: &Env, name: &str, what: &str, check: impl Fn(&Instance) -> bool) {
    wait_for(&format!("{name}: {what}"), TIMEOUT, || async {
        env.instance(name).await.filter(|i| check(i)).map(|_| ())
    })
    .await;
}

fn unhealthy(i: &Instance) -> bool {
    !is_healthy(i) && i.status.as_ref().is_some_and(|s| s.health_status.is_some())
}

/// Marks an Instance Unhealthy with the plugin (as `aws autoscaling set-instance-health`).
fn mark_unhealthy(env: &Env, name: &str) -> String {
    autoheal(
        env,
        &[
            "set-instance-health",
            &format!("inst/{name}"),
            "Unhealthy",
            "--reason",
            "test",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_left_and_set_instance_health() {
    let env = Env::new("plugin-grace").await;
    let _op = env.operator();
    let group = GroupBuilder::new("web").with_spec(|s| s.health_check.grace_period_seconds = 600);
    env.apply_group(&group.build()).await;
    let name = env.wait_in_service("web", 1).await[0].name_any();
    let target = format!("inst/{name}");

    let why = autoheal(&env, &["why", &target]);
    assert!(
        why.contains(&format!("Instance {name} (group web): InService, Healthy")),
        "{why}"
    );
    assert!(
        why.contains("  - In the health check grace period for another "),
        "{why}"
    );
    assert!(
        why.contains("gracePeriodSeconds 600): no health verdict replaces it before then."),
        "{why}"
    );

    // Marked by hand inside the grace period: the mark waits for it, and says so.
    let set = autoheal(
        &env,
        &[
            "set-instance-health",
            &target,
            "Unhealthy",
            "--reason",
            "disk full",
        ],
    );
    assert!(
        set.starts_with(&format!("instance {name} marked Unhealthy (disk full)\n")),
        "{set}"
    );
    assert!(
        set.contains("It is in its health check grace period until "),
        "{set}"
    );
    assert!(
        set.contains("the mark acts then (--respect-grace-period=false acts now)."),
        "{set}"
    );
    let i = env.instance(&name).await.unwrap();
    assert_eq!(
        i.annotations().get(ANNOTATION_HEALTH).map(String::as_str),
        Some("Unhealthy")
    );
    assert_eq!(
        i.annotations()
            .get("autoheal.dev/health-reason")
            .map(String::as_str),
        Some("disk full")
    );
    let why = wait_says(&env, &["why", &target], "disk full").await;
    assert!(
        why.contains("It is marked Unhealthy by hand: the mark acts when the grace period ends (set-instance-health --respect-grace-period=false acts now)."),
        "{why}"
    );

    // Not respecting the grace period acts now: the Instance leaves.
    autoheal(
        &env,
        &[
            "set-instance-health",
            &target,
            "Unhealthy",
            "--respect-grace-period=false",
        ],
    );
    let i = env.instance(&name).await.unwrap();
    assert_eq!(
        i.annotations()
            .get("autoheal.dev/respect-grace-period")
            .map(String::as_str),
        Some("false")
    );
    assert_eq!(
        i.annotations().get("autoheal.dev/health-reason"),
        None,
        "a stale reason is removed"
    );
    env.wait_instance_gone(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_hook_pending_with_its_timeout() {
    let env = Env::new("plugin-hook").await;
    let _op = env.operator();
    let group =
        GroupBuilder::new("web").hook("warmup", HookTransition::Launch, 600, HookResult::Abandon);
    env.apply_group(&group.build()).await;
    let name = wait_for("an Instance in Pending:Wait", TIMEOUT, || async {
        env.group_instances("web")
            .await
            .into_iter()
            .find(|i| state_of(i) == Some(LifecycleState::PendingWait))
            .map(|i| i.name_any())
    })
    .await;
    let why = wait_says(&env, &["why", &format!("inst/{name}")], "lifecycle hook").await;
    assert!(
        why.contains(&format!("Instance {name} (group web): Pending:Wait")),
        "{why}"
    );
    assert!(
        why.contains("  - Waiting on the Launch lifecycle hook \"warmup\": it times out in "),
        "{why}"
    );
    assert!(
        why.contains(&format!("heartbeat timeout 600s) and then Abandon applies; complete it now with kubectl annotate inst/{name} hooks.autoheal.dev/warmup=Continue")),
        "{why}"
    );
}

/// An InService Instance of a fresh group `web` of `desired` marked Unhealthy while `setup`
/// holds replacement back; returns the Instances' names, the marked one first.
async fn marked_while_held(env: &Env, group: GroupBuilder, desired: usize) -> Vec<String> {
    env.apply_group(&group.build()).await;
    let names: Vec<String> = env
        .wait_in_service("web", desired)
        .await
        .iter()
        .map(|i| i.name_any())
        .collect();
    mark_unhealthy(env, &names[0]);
    wait_instance(env, &names[0], "Unhealthy", unhealthy).await;
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_group_repairs_nothing() {
    let env = Env::new("plugin-paused").await;
    let _op = env.operator();
    let group = GroupBuilder::new("web").annotation(ANNOTATION_PAUSED, "true");
    // A paused group launches nothing either: start it, then pause it.
    let unpaused = GroupBuilder::new("web");
    env.apply_group(&unpaused.build()).await;
    env.wait_in_service("web", 1).await;
    let names = marked_while_held(&env, group, 1).await;
    let target = format!("inst/{}", names[0]);
    let why = wait_says(&env, &["why", &target], "paused").await;
    assert!(
        why.contains("Next: The group would replace it (terminate it and launch a new Instance), but 1 reason keeps it from doing so now:"),
        "{why}"
    );
    assert!(why.contains("  - The group web is paused (autoheal.dev/paused=true): nothing is repaired until the annotation is removed."), "{why}");
    let why = autoheal(&env, &["why", "sg/web"]);
    assert!(
        why.contains(&format!(
            "Repair: 1 instance is Unhealthy ({}), not repaired because:",
            names[0]
        )),
        "{why}"
    );
    assert!(why.contains("  - The group web is paused"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_replace_unhealthy_repairs_nothing() {
    let env = Env::new("plugin-suspended").await;
    let _op = env.operator();
    let group = GroupBuilder::new("web").suspend(Process::ReplaceUnhealthy);
    let names = marked_while_held(&env, group, 1).await;
    let why = autoheal(&env, &["why", &format!("inst/{}", names[0])]);
    assert!(
        why.contains("  - The suspended process ReplaceUnhealthy (spec.suspendedProcesses): Unhealthy instances are not repaired; remove it from the list to resume."),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_and_standby_are_not_repaired() {
    let env = Env::new("plugin-maint").await;
    let _op = env.operator();
    env.apply_group(&GroupBuilder::new("web").desired(2).build())
        .await;
    let names: Vec<String> = env
        .wait_in_service("web", 2)
        .await
        .iter()
        .map(|i| i.name_any())
        .collect();

    env.annotate_instance(&names[0], ANNOTATION_MAINTENANCE, Some("true"))
        .await;
    mark_unhealthy(&env, &names[0]);
    let why = wait_says(&env, &["why", &format!("inst/{}", names[0])], "Maintaining").await;
    assert!(why.contains("  - In maintenance (autoheal.dev/maintenance=true): never replaced, whatever its health; remove the annotation to end it."), "{why}");
    assert!(
        why.contains("Next: Nothing: it is in maintenance."),
        "{why}"
    );

    env.annotate_instance(&names[1], ANNOTATION_STANDBY, Some("true"))
        .await;
    env.wait_instance_state(&names[1], LifecycleState::Standby)
        .await;
    let why = autoheal(&env, &["why", &format!("inst/{}", names[1])]);
    assert!(
        why.contains(&format!("Instance {} (group web): Standby", names[1])),
        "{why}"
    );
    assert!(
        why.contains("  - In Standby (autoheal.dev/standby=true): out of service, still counted in capacity, and its health is not acted on; remove the annotation to return it to service."),
        "{why}"
    );

    // The group lists both with their reasons.
    let why = autoheal(&env, &["why", "sg/web"]);
    assert!(
        why.contains("Instances not InService, Healthy and OK:"),
        "{why}"
    );
    assert!(why.contains("    - In maintenance"), "{why}");
    assert!(why.contains("    - In Standby"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_too_many_unhealthy_with_its_numbers() {
    let env = Env::new("plugin-breaker").await;
    let _op = env.operator();
    // ReplaceUnhealthy is suspended while the marks arrive, so both verdicts are in before the
    // breaker is asked.
    let group = GroupBuilder::new("web")
        .desired(3)
        .max(3)
        .suspend(Process::ReplaceUnhealthy)
        .with_spec(|s| s.replacement.max_unhealthy = IntOrString::String("34%".into()));
    let names = marked_while_held(&env, group, 3).await;
    mark_unhealthy(&env, &names[1]);
    wait_instance(&env, &names[1], "Unhealthy", unhealthy).await;
    env.patch_group(
        "web",
        serde_json::json!({ "spec": { "suspendedProcesses": [] } }),
    )
    .await;
    let mut sick = [names[0].clone(), names[1].clone()];
    sick.sort();
    let why = wait_says(&env, &["why", "sg/web"], "Circuit breaker open").await;
    assert!(
        why.contains(&format!(
            "  - Circuit breaker open (TooManyUnhealthy): 2 instances are Unhealthy ({}), more than maxUnhealthy 1 (34% of desired 3): nothing is replaced until at most 1 are Unhealthy.",
            sick.join(", ")
        )),
        "{why}"
    );
    let why = autoheal(&env, &["why", &format!("inst/{}", names[0])]);
    assert!(
        why.contains("  - Circuit breaker open (TooManyUnhealthy): 2 instances are Unhealthy"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_reached_while_another_drains() {
    let env = Env::new("plugin-inflight").await;
    let _op = env.operator();
    // The first replacement stays in flight: its Instance drains for 10 minutes.
    let group = GroupBuilder::new("web")
        .desired(3)
        .deregistration_delay(600)
        .with_spec(|s| s.replacement.max_in_flight = IntOrString::Int(1));
    let names = marked_while_held(&env, group, 3).await;
    let (a, b) = (&names[0], &names[1]);
    let why = wait_says(&env, &["why", &format!("inst/{a}")], "Draining").await;
    assert!(why.contains("  - Draining: out of service since "), "{why}");
    assert!(
        why.contains("its Pod is terminated after the deregistration delay of 600s, in "),
        "{why}"
    );
    assert!(
        why.contains(
            "Next: It is leaving (Unhealthy): leaving service, then the deregistration delay."
        ),
        "{why}"
    );

    mark_unhealthy(&env, b);
    wait_instance(&env, b, "Unhealthy", unhealthy).await;
    let why = wait_says(&env, &["why", &format!("inst/{b}")], "maxInFlight").await;
    assert!(
        why.contains(&format!(
            "  - maxInFlight reached: 1 of 1 repair in flight ({a}); {b} waits for one to finish."
        )),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_until_then_stopped_when_replacements_keep_failing_and_history() {
    let env = Env::new("plugin-backoff").await;
    // The operator's default backoff: 10 s after the first failure, 20 s after the second.
    let _op = env.operator();
    let group = GroupBuilder::new("web")
        .desired(1)
        .max(2)
        .pod_annotation("podsim.autoheal.dev/behavior", "crash")
        .with_spec(|s| {
            s.replacement.max_consecutive_failures = 3;
            s.replacement.max_in_flight = IntOrString::Int(2);
        });
    env.apply_group(&group.build()).await;
    let why = wait_says(&env, &["why", "sg/web"], "Backing off after ").await;
    let line = why
        .lines()
        .find(|l| l.contains("Backing off after "))
        .unwrap();
    assert!(
        line.starts_with("  - Backing off after 1 failed replacement in a row: the next replacement waits until ")
            || line.starts_with("  - Backing off after 2 failed replacements in a row: the next replacement waits until "),
        "{why}"
    );
    assert!(line.ends_with("s)."), "the time left: {line}");

    let why = wait_says(&env, &["why", "sg/web"], "Replacement is stopped").await;
    assert!(
        why.contains("  - Replacement is stopped: 3 replacements in a row (")
            && why.contains("were Unhealthy when their grace period ended (maxConsecutiveFailures 3); fix the template, or annotate the group autoheal.dev/reset-replacement-failures=<new value> to try again."),
        "{why}"
    );
    assert!(why.contains("ScalingGroup web: not Ready"), "{why}");

    // The history: the remediations as a table, newest first, the failed replacements with
    // their outcome.
    let history = autoheal(&env, &["history", "sg/web"]);
    let lines: Vec<&str> = history.lines().collect();
    let cells = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        cells(lines[0]),
        [
            "STARTED",
            "INSTANCE",
            "ACTION",
            "STEP",
            "OUTCOME",
            "DURATION",
            "REPLACEMENT",
            "REASON"
        ],
        "{history}"
    );
    let failed = lines
        .iter()
        .map(|l| cells(l))
        .filter(|c| c.len() > 6 && c[3] == "Replace" && c[5] == "Failed")
        .count();
    assert!(failed >= 3, "three failed replacements:\n{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_groups_in_the_aws_shape_and_unknown_objects() {
    let env = Env::new("plugin-describe").await;
    let _op = env.operator();
    env.apply_group(&GroupBuilder::new("web").desired(2).build())
        .await;
    let names: Vec<String> = env
        .wait_in_service("web", 2)
        .await
        .iter()
        .map(|i| i.name_any())
        .collect();
    env.wait_group_condition("web", "Ready", "True").await;

    let json: serde_json::Value =
        serde_json::from_str(&autoheal(&env, &["describe-groups", "web", "-o", "json"])).unwrap();
    let asg = &json["AutoScalingGroups"][0];
    assert_eq!(asg["AutoScalingGroupName"], "web");
    assert_eq!(asg["DesiredCapacity"], 2);
    let revision = env
        .group("web")
        .await
        .status
        .unwrap()
        .current_revision
        .unwrap();
    assert_eq!(asg["LaunchTemplate"]["Version"], revision.as_str());
    let instances = asg["Instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    for i in instances {
        assert!(
            names.contains(&i["InstanceId"].as_str().unwrap().to_string()),
            "{i}"
        );
        assert_eq!(i["HealthStatus"], "Healthy");
        assert_eq!(i["LifecycleState"], "InService");
        assert_eq!(i["ProtectedFromScaleIn"], false);
        assert!(i["AvailabilityZone"].is_string(), "{i}");
        assert_eq!(i["LaunchTemplate"]["Version"], revision.as_str());
    }
    let table = autoheal(&env, &["describe-groups"]);
    assert!(
        table.starts_with(
            "GROUP  MIN  MAX  DESIRED  CURRENT  INSERVICE  HEALTHY  UNHEALTHY  REVISION\nweb"
        ),
        "{table}"
    );
    for n in &names {
        assert!(
            table.contains(&format!("  {n}  InService  Healthy")),
            "{table}"
        );
    }
    let why = autoheal(&env, &["why", "sg/web"]);
    assert!(why.starts_with("ScalingGroup web: Ready\n"), "{why}");
    assert!(why.contains("Repair: nothing to repair."), "{why}");

    // Unknown objects: named, with their namespace, and a non-zero exit code.
    for (args, message) in [
        (
            vec!["why", "inst/web-x"],
            format!("instance web-x not found in namespace {}", env.ns),
        ),
        (
            vec!["why", "sg/nope"],
            format!("scalinggroup nope not found in namespace {}", env.ns),
        ),
        (
            vec!["history", "sg/nope"],
            format!("scalinggroup nope not found in namespace {}", env.ns),
        ),
        (
            vec!["set-instance-health", "inst/web-x", "Unhealthy"],
            format!("instance web-x not found in namespace {}", env.ns),
        ),
        (vec!["why", "web"], "write inst/web or sg/web".to_string()),
    ] {
        let out = autoheal_output(&env, &args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&message), "{args:?}: {stderr}");
    }
    // Without -n: the kubeconfig context's namespace, as kubectl.
    let mut kubeconfig: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(env.cp.kubeconfig_path()).unwrap()).unwrap();
    for context in kubeconfig["contexts"].as_sequence_mut().unwrap() {
        context["context"]["namespace"] = serde_yaml::Value::from(env.ns.as_str());
    }
    let scoped = std::env::temp_dir().join(format!("kubeconfig-{}", env.ns));
    std::fs::write(&scoped, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
    let out = Command::new(env.cp.bin_dir().join("kubectl"))
        .env("KUBECONFIG", &scoped)
        .env("PATH", plugin_path())
        .args(["autoheal", "why", "sg/web"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&scoped);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("ScalingGroup web: Ready\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = autoheal_output(
        &env,
        &["set-instance-health", &format!("inst/{}", names[0]), "Sick"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("health \"Sick\" is not understood: use Healthy or Unhealthy")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_would_repair() {
    let env = Env::new("plugin-dryrun").await;
    let _op = env.operator();
    let group = GroupBuilder::new("web").with_spec(|s| {
        s.repair = serde_json::from_value(serde_json::json!({ "mode": "DryRun" })).unwrap();
    });
    let names = marked_while_held(&env, group, 1).await;
    let a = &names[0];
    let why = wait_says(&env, &["why", &format!("inst/{a}")], "it would now").await;
    assert!(
        why.contains(&format!("  - Dry run (spec.repair.mode: DryRun): repairs are planned and reported in status.wouldRepair, never taken (it would now: Replace {a}); set spec.repair.mode to Auto to act.")),
        "{why}"
    );
    assert!(
        why.contains("Next: The group would replace it (terminate it and launch a new Instance), but 1 reason keeps it from doing so now:"),
        "{why}"
    );
    let why = autoheal(&env, &["why", "sg/web"]);
    assert!(why.contains("repair Replace (DryRun)"), "{why}");
    assert!(
        why.contains(&format!(
            "Repair: 1 instance is Unhealthy ({a}), not repaired because:"
        )),
        "{why}"
    );
    // Nothing was repaired: the history is empty.
    let history = autoheal(&env, &["history", "sg/web"]);
    assert!(history.starts_with("No remediations recorded"), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_in_progress_and_its_history() {
    let env = Env::new("plugin-restart").await;
    let _op = env.operator();
    // A restart given 10 minutes: it stays in flight, and the second Instance waits for it.
    let group = GroupBuilder::new("web").desired(2).with_spec(|s| {
        s.repair = serde_json::from_value(serde_json::json!({
            "actions": [{ "action": "Restart", "timeoutSeconds": 600 }, { "action": "Replace" }]
        }))
        .unwrap();
    });
    let names = marked_while_held(&env, group, 2).await;
    let (a, b) = (&names[0], &names[1]);
    let why = wait_says(&env, &["why", &format!("inst/{a}")], "Being repaired").await;
    assert!(
        why.contains("Next: Being repaired: Restart (step 1) started "),
        "{why}"
    );

    mark_unhealthy(&env, b);
    wait_instance(&env, b, "Unhealthy", unhealthy).await;
    let why = wait_says(&env, &["why", &format!("inst/{b}")], "maxInFlight").await;
    assert!(
        why.contains(&format!(
            "  - maxInFlight reached: 1 of 1 repair in flight ({a}); {b} waits for one to finish."
        )),
        "{why}"
    );
    assert!(
        why.contains("Next: The group would restart its Pod in place (repair action Restart), but 1 reason keeps it from doing so now:"),
        "{why}"
    );

    let history = autoheal(&env, &["history", "sg/web"]);
    let row = history
        .lines()
        .find(|l| l.contains(a.as_str()))
        .unwrap_or_else(|| panic!("no row for {a}:\n{history}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[3..6], ["Restart", "1", "InProgress"], "{history}");
    assert!(row.contains(" so far"), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_waits_at_a_checkpoint() {
    let env = Env::new("plugin-refresh").await;
    let _op = env.operator();
    let group = GroupBuilder::new("web")
        .desired(2)
        .deregistration_delay(0)
        .with_spec(|s| {
            s.refresh.min_healthy_percentage = 50;
            s.refresh.instance_warmup_seconds = Some(1);
            s.refresh.checkpoints = vec![50];
            s.refresh.checkpoint_delay_seconds = 600;
        });
    env.apply_group(&group.clone().build()).await;
    env.wait_in_service("web", 2).await;
    // A new template (another image): a refresh starts and holds at 50 % for 10 minutes.
    let changed = group.with_spec(|s| {
        s.template
            .spec
            .pod_template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("registry.example/web:2".into());
    });
    env.apply_group(&changed.build()).await;
    let why = wait_says(&env, &["why", "sg/web"], "It waits at checkpoint").await;
    let target = env
        .group("web")
        .await
        .status
        .unwrap()
        .refresh
        .unwrap()
        .target_revision;
    assert!(
        why.contains(&format!(
            "Refresh: to revision {target} is InProgress (50% complete, 1 to update)"
        )),
        "{why}"
    );
    assert!(
        why.contains("  - It waits at checkpoint 50% until "),
        "{why}"
    );
    assert!(
        why.contains(" (in 10m).") || why.contains(" (in 9m"),
        "{why}"
    );
}
