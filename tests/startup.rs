//! `autoheal run` refuses to start, in one line that says what to do and with a non-zero exit,
//! when no API server answers, when RBAC does not grant what it needs, and when the CRDs are
//! missing; `--log-format json` keeps even that line JSON.
//!
//! This binary never installs the CRDs on its control plane (one per test binary), so the
//! missing-CRD case is real.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;
use testkit::ControlPlane;

/// How long a refused start may take: the checks answer in well under a second; the bound is
/// for a loaded machine, and far below the 120 s the watches would otherwise wait.
const REFUSED_WITHIN: Duration = Duration::from_secs(60);

/// Runs `autoheal run ARGS` with `kubeconfig` until it exits (killed after
/// [`REFUSED_WITHIN`]); returns its output and how long it ran.
fn run_operator(kubeconfig: &Path, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_autoheal"))
        .arg("run")
        .args(["--admin-addr", "127.0.0.1:0"])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("RUST_LOG")
        .env_remove("POD_NAMESPACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning autoheal");
    while child.try_wait().unwrap().is_none() && started.elapsed() < REFUSED_WITHIN {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (out, started.elapsed())
}

/// The last line on stderr, after checking the process exited non-zero by itself, in time.
fn refusal(out: &Output, took: Duration) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        took < REFUSED_WITHIN,
        "autoheal still ran after {took:?} (it should refuse to start):\n{stderr}"
    );
    assert!(
        !out.status.success() && out.status.code().is_some(),
        "autoheal exited {:?} (non-zero expected):\n{stderr}",
        out.status
    );
    stderr.lines().last().unwrap_or_default().to_string()
}

/// A temp dir for this test's kubeconfigs, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("autoheal-startup-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A kubeconfig like the control plane's admin one, with its server replaced by `server`
/// (when given) and its user by `token` (when given).
fn kubeconfig(cp: &ControlPlane, server: Option<&str>, token: Option<&str>, path: &Path) {
    let admin = std::fs::read_to_string(cp.kubeconfig_path()).unwrap();
    let mut config: serde_yaml::Value = serde_yaml::from_str(&admin).unwrap();
    if let Some(server) = server {
        config["clusters"][0]["cluster"]["server"] = server.into();
    }
    if let Some(token) = token {
        config["users"][0]["user"] =
            serde_yaml::Value::Mapping(serde_yaml::Mapping::from_iter([(
                "token".into(),
                token.into(),
            )]));
    }
    std::fs::write(path, serde_yaml::to_string(&config).unwrap()).unwrap();
}

/// A kubeconfig whose server is a loopback port nothing listens on.
fn unreachable_kubeconfig(cp: &ControlPlane, dir: &TempDir) -> (PathBuf, String) {
    let server = format!("https://127.0.0.1:{}", free_port());
    let path = dir.0.join("kubeconfig");
    kubeconfig(cp, Some(&server), None, &path);
    (path, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_reachable_api_server_the_start_says_so_in_one_line_and_exits_nonzero() {
    let cp = ControlPlane::shared().await;
    let dir = TempDir::new("unreachable");
    let (path, server) = unreachable_kubeconfig(cp, &dir);
    let (out, took) = run_operator(&path, &[]);
    let line = refusal(&out, took);
    assert!(
        line.starts_with(&format!(
            "error: cannot reach the Kubernetes API server at {server}"
        )),
        "{line}"
    );
    assert!(
        line.contains("check that the cluster is running and that KUBECONFIG"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_crds_the_start_says_to_apply_them_and_exits_nonzero() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    let ns = testkit::test_namespace(&client, "startup-crds").await;
    let (out, took) = run_operator(
        cp.kubeconfig_path(),
        &["--namespace", &ns, "--lease-namespace", &ns],
    );
    let line = refusal(&out, took);
    assert_eq!(
        line,
        "error: the ScalingGroup and Instance CRDs (autoheal.dev/v1alpha1) are not installed: \
         run `kubectl apply -f crds/` (or `autoheal crds | kubectl apply -f -`)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rbac_the_start_names_what_is_missing_and_how_to_grant_it() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    let ns = testkit::test_namespace(&client, "startup-rbac").await;
    // A ServiceAccount granted everything the operator needs in its namespace except
    // deleting Pods, and nothing on Nodes.
    let role = format!(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {{name: operator, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: almost, namespace: {ns}}}
rules:
  - apiGroups: [autoheal.dev]
    resources: [scalinggroups, scalinggroups/status, instances, instances/status]
    verbs: [get, list, watch, create, patch, update, delete]
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch, create, patch]
  - apiGroups: [apps]
    resources: [controllerrevisions]
    verbs: [list, watch, create, delete]
  - apiGroups: [events.k8s.io]
    resources: [events]
    verbs: [create, patch]
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    verbs: [get, create, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: almost, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: almost}}
subjects: [{{kind: ServiceAccount, name: operator, namespace: {ns}}}]
"#
    );
    let dir = TempDir::new(&ns);
    let manifest = dir.0.join("rbac.yaml");
    std::fs::write(&manifest, role).unwrap();
    let applied = kubectl(cp, &["apply", "-f", manifest.to_str().unwrap()]);
    assert!(applied.status.success(), "{applied:?}");
    let token = kubectl(
        cp,
        &["-n", &ns, "create", "token", "operator", "--duration=1h"],
    );
    assert!(token.status.success(), "{token:?}");
    let path = dir.0.join("kubeconfig");
    kubeconfig(
        cp,
        None,
        Some(String::from_utf8_lossy(&token.stdout).trim()),
        &path,
    );

    let (out, took) = run_operator(&path, &["--namespace", &ns, "--lease-namespace", &ns]);
    let line = refusal(&out, took);
    let who = format!("system:serviceaccount:{ns}:operator");
    assert_eq!(
        line,
        format!(
            "error: RBAC does not let {who} list/watch nodes cluster-wide; delete pods in namespace {ns}: \
             install the operator's RBAC (`kubectl apply -k deploy/` grants it to the ServiceAccount \
             autoheal-system/autoheal) or bind the ClusterRole autoheal to {who}"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_json_logs_every_line_is_a_json_object_even_the_start_error() {
    let cp = ControlPlane::shared().await;
    let dir = TempDir::new("json");
    let (path, server) = unreachable_kubeconfig(cp, &dir);
    let (out, took) = run_operator(&path, &["--log-format", "json", "--log-level", "debug"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = refusal(&out, took);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "autoheal starting"),
        "{stderr}"
    );
    let last: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(last["level"], "ERROR", "{last}");
    let error = last["fields"]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "cannot reach the Kubernetes API server at {server}"
        )),
        "{last}"
    );
}
