//! The CRDs against the real API server: they install and become Established, print the
//! contract's columns, scale through the scale subresource, document every field for
//! `kubectl explain`, and refuse invalid specs with a message a person understands.
//! Also: the checked-in `crds/` never drift from the Rust types.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use testkit::{ControlPlane, test_namespace, wait_for};

/// The checked-in CRD files are exactly what the Rust types generate (`make crds`).
#[test]
fn checked_in_crds_match_the_rust_types() {
    for (file, generated) in autoheal::api::crd_files().unwrap() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("crds")
            .join(file);
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        assert!(
            on_disk == generated,
            "{} is out of date with the Rust types: run `make crds` and commit the result",
            path.display()
        );
    }
}

fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

fn kubectl_ok(cp: &ControlPlane, args: &[&str], stdin: Option<&str>) -> String {
    let mut cmd = cp.kubectl();
    cmd.args(args);
    let out = run(cmd, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Installs the CRDs with `kubectl apply -f crds/` (once per test binary) and waits until
/// both are Established.
async fn install_crds(cp: &ControlPlane) {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED.get_or_init(|| install_crds_once(cp)).await;
}

async fn install_crds_once(cp: &ControlPlane) {
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    kubectl_ok(cp, &["apply", "-f", crds.to_str().unwrap()], None);
    kubectl_ok(
        cp,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=120s",
            "crd/scalinggroups.autoheal.dev",
            "crd/instances.autoheal.dev",
        ],
        None,
    );
    // Discovery can lag behind Established; wait until kubectl resolves the short names.
    wait_for(
        "kubectl to resolve sg and inst",
        Duration::from_secs(60),
        || async {
            let mut cmd = cp.kubectl();
            cmd.args(["get", "sg,inst", "-A"]);
            run(cmd, None).status.success().then_some(())
        },
    )
    .await;
}

/// A valid group manifest; `spec_extra` is YAML merged into its spec (indented by 2).
fn group(name: &str, spec_extra: &str) -> String {
    format!(
        r#"apiVersion: autoheal.dev/v1alpha1
kind: ScalingGroup
metadata:
  name: {name}
spec:
  minSize: 1
  maxSize: 5
  template:
    spec:
      podTemplate:
        spec:
          containers:
          - name: web
            image: example/web:1
{spec_extra}"#
    )
}

#[tokio::test]
async fn crds_install_and_print_the_contract_columns() {
    let cp = ControlPlane::shared().await;
    install_crds(cp).await;
    let ns = test_namespace(&cp.client().await, "crd-columns").await;
    kubectl_ok(
        cp,
        &["-n", &ns, "apply", "-f", "-"],
        Some(&group("web", "")),
    );

    let sg = kubectl_ok(cp, &["-n", &ns, "get", "sg"], None);
    let header: Vec<&str> = sg.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "INSERVICE",
            "HEALTHY",
            "UNHEALTHY",
            "UPTODATE",
            "AGE"
        ]
    );
    assert!(sg.contains("web"), "{sg}");

    let inst = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/instance.yaml");
    kubectl_ok(
        cp,
        &["-n", &ns, "apply", "-f", inst.to_str().unwrap()],
        None,
    );
    let out = kubectl_ok(cp, &["-n", &ns, "get", "inst"], None);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "GROUP", "STATE", "HEALTH", "DETAIL", "ADDRESS", "REVISION", "AGE"
        ]
    );
    assert!(out.contains("web-manual"), "{out}");

    // The category lists both kinds.
    let all = kubectl_ok(cp, &["-n", &ns, "get", "autoheal"], None);
    assert!(all.contains("scalinggroup.autoheal.dev/web"), "{all}");
    assert!(all.contains("instance.autoheal.dev/web-manual"), "{all}");
}

#[tokio::test]
async fn kubectl_scale_sets_desired_capacity() {
    let cp = ControlPlane::shared().await;
    install_crds(cp).await;
    let ns = test_namespace(&cp.client().await, "crd-scale").await;
    kubectl_ok(
        cp,
        &["-n", &ns, "apply", "-f", "-"],
        Some(&group("web", "")),
    );
    kubectl_ok(cp, &["-n", &ns, "scale", "sg/web", "--replicas=4"], None);
    let desired = kubectl_ok(
        cp,
        &[
            "-n",
            &ns,
            "get",
            "sg/web",
            "-o",
            "jsonpath={.spec.desiredCapacity}",
        ],
        None,
    );
    assert_eq!(desired, "4");

    // Beyond maxSize the API server refuses the scale with the CEL message.
    let mut cmd = cp.kubectl();
    cmd.args(["-n", &ns, "scale", "sg/web", "--replicas=9"]);
    let out = run(cmd, None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("desiredCapacity must be <= maxSize"), "{err}");
}

#[tokio::test]
async fn kubectl_explain_prints_field_descriptions() {
    let cp = ControlPlane::shared().await;
    install_crds(cp).await;
    let out = wait_for(
        "kubectl explain to know the CRD",
        Duration::from_secs(60),
        || async {
            let mut cmd = cp.kubectl();
            cmd.args(["explain", "sg.spec.healthCheck.probe"]);
            let out = run(cmd, None);
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    )
    .await;
    for expected in [
        "The active check autoheal runs",
        "intervalSeconds",
        "Seconds between two probes of one Instance",
        "unhealthyThreshold",
        "Consecutive failures that make an Instance's probe verdict unhealthy",
        "http",
        "tcp",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    let inst = kubectl_ok(cp, &["explain", "inst.status.healthDetail"], None);
    assert!(inst.contains("The detailed health code"), "{inst}");
}

/// Each invalid manifest is refused by the API server with its intended message.
#[tokio::test]
async fn invalid_specs_are_refused_with_a_human_message() {
    let cp = ControlPlane::shared().await;
    install_crds(cp).await;
    let ns = test_namespace(&cp.client().await, "crd-invalid").await;

    let probe = |body: &str| format!("  healthCheck:\n    probe:\n{body}");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "min above max",
            group("a", "").replace("minSize: 1", "minSize: 6"),
            "minSize must be <= maxSize",
        ),
        (
            "desired above max",
            group("a", "  desiredCapacity: 7\n"),
            "desiredCapacity must be <= maxSize",
        ),
        (
            "desired below min",
            group("a", "  desiredCapacity: 0\n"),
            "desiredCapacity must be >= minSize",
        ),
        (
            "both http and tcp",
            group(
                "a",
                &probe("      http: {port: 8080}\n      tcp: {port: 8080}\n"),
            ),
            "exactly one of probe.http or probe.tcp must be set",
        ),
        (
            "an action after Replace",
            group(
                "a",
                "  repair:\n    actions: [{action: Replace}, {action: Restart}]\n",
            ),
            "repair.actions must end with Replace",
        ),
        (
            "restarts only",
            group(
                "a",
                "  repair:\n    actions: [{action: Restart}, {action: Restart, timeoutSeconds: 5}]\n",
            ),
            "repair.actions must end with Replace",
        ),
        (
            "a timeout on Replace",
            group(
                "a",
                "  repair:\n    actions: [{action: Restart}, {action: Replace, timeoutSeconds: 5}]\n",
            ),
            "timeoutSeconds applies to Restart only",
        ),
        (
            "an unknown repair mode",
            group("a", "  repair:\n    mode: Sometimes\n"),
            "Unsupported value: \"Sometimes\"",
        ),
        (
            "neither http nor tcp",
            group("a", &probe("      intervalSeconds: 5\n")),
            "exactly one of probe.http or probe.tcp must be set",
        ),
        (
            "interval out of range",
            group(
                "a",
                &probe("      tcp: {port: 8080}\n      intervalSeconds: 0\n"),
            ),
            "should be greater than or equal to 1",
        ),
        (
            "threshold out of range",
            group(
                "a",
                &probe("      tcp: {port: 8080}\n      unhealthyThreshold: 11\n"),
            ),
            "should be less than or equal to 10",
        ),
        (
            "timeout above interval",
            group(
                "a",
                &probe(
                    "      tcp: {port: 8080}\n      intervalSeconds: 5\n      timeoutSeconds: 6\n",
                ),
            ),
            "probe timeoutSeconds must be <= intervalSeconds",
        ),
        (
            "bad expected statuses",
            group(
                "a",
                &probe("      http: {port: 8080, expectedStatuses: \"ok\"}\n"),
            ),
            "probe.http.expectedStatuses must be status codes or ranges",
        ),
        (
            "path without slash",
            group("a", &probe("      http: {port: 8080, path: healthz}\n")),
            "probe.http.path must start with \"/\"",
        ),
        (
            "percent above 100",
            group("a", "  replacement:\n    maxUnhealthy: \"150%\"\n"),
            "maxUnhealthy must be an integer from 0 to 10000 or a percentage from 0% to 100%",
        ),
        (
            "not an int or percent",
            group("a", "  replacement:\n    maxInFlight: \"two\"\n"),
            "maxInFlight must be an integer from 0 to 10000 or a percentage from 0% to 100%",
        ),
        (
            "an int beyond 32 bits",
            group("a", "  replacement:\n    maxInFlight: 1099511627776\n"),
            "maxInFlight must be an integer from 0 to 10000 or a percentage from 0% to 100%",
        ),
        (
            "unknown strategy",
            group("a", "  replacement:\n    strategy: Sometimes\n"),
            "supported values: \"TerminateThenLaunch\", \"LaunchBeforeTerminate\"",
        ),
        (
            "unknown scale-in policy",
            group("a", "  scaleIn:\n    policy: Random\n"),
            "supported values: \"Default\", \"OldestInstance\", \"NewestInstance\"",
        ),
        (
            "unknown suspended process",
            group("a", "  suspendedProcesses: [Launch, Reboot]\n"),
            "Unsupported value: \"Reboot\"",
        ),
        (
            "duplicate hook names",
            group(
                "a",
                "  lifecycleHooks:\n  - {name: warm, transition: Launch}\n  - {name: warm, transition: Terminate}\n",
            ),
            "lifecycle hook names must be unique",
        ),
        (
            "hook timeout too short",
            group(
                "a",
                "  lifecycleHooks:\n  - {name: warm, transition: Launch, heartbeatTimeoutSeconds: 5}\n",
            ),
            "should be greater than or equal to 30",
        ),
        (
            "bad hook name",
            group(
                "a",
                "  lifecycleHooks:\n  - {name: \"warm up\", transition: Launch}\n",
            ),
            "lifecycle hook name must be alphanumeric",
        ),
        (
            "refresh maxHealthyPercentage below 100",
            group("a", "  refresh:\n    maxHealthyPercentage: 90\n"),
            "should be greater than or equal to 100",
        ),
        (
            "refresh band wider than 100",
            group(
                "a",
                "  refresh:\n    minHealthyPercentage: 0\n    maxHealthyPercentage: 150\n",
            ),
            "refresh.maxHealthyPercentage minus refresh.minHealthyPercentage must be at most 100",
        ),
        (
            "refresh checkpoints out of order",
            group("a", "  refresh:\n    checkpoints: [50, 20]\n"),
            "refresh.checkpoints must be strictly ascending",
        ),
        (
            "refresh checkpoint above 100",
            group("a", "  refresh:\n    checkpoints: [20, 120]\n"),
            "refresh.checkpoints must be percentages from 1 to 100",
        ),
        (
            "unknown refresh trigger",
            group("a", "  refresh:\n    trigger: Sometimes\n"),
            "supported values: \"OnTemplateChange\", \"Manual\"",
        ),
        (
            "unknown standby policy",
            group("a", "  refresh:\n    standbyInstances: Keep\n"),
            "supported values: \"Ignore\", \"Terminate\", \"Wait\"",
        ),
        (
            "group name too long for its instance names",
            group(&"g".repeat(58), ""),
            "ScalingGroup names must be at most 57 characters",
        ),
        (
            "pod template without containers",
            group("a", "").replace(
                "          containers:\n          - name: web\n            image: example/web:1\n",
                "          restartPolicy: Always\n",
            ),
            "podTemplate.spec.containers must list at least one container",
        ),
    ];
    assert!(cases.len() >= 10);

    let mut failures = Vec::new();
    for (what, manifest, message) in &cases {
        let mut cmd = cp.kubectl();
        cmd.args(["-n", &ns, "create", "-f", "-"]);
        let out = run(cmd, Some(manifest));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!("{what}: was accepted"));
            // Clean up so the next case can reuse the name.
            kubectl_ok(
                cp,
                &["-n", &ns, "delete", "sg", "--all", "--wait=false"],
                None,
            );
        } else if !stderr.contains(message) {
            failures.push(format!("{what}: expected {message:?}, got: {stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
