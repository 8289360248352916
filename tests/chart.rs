//! The Helm chart `charts/autoheal` and what is generated from it, against the real tools and
//! the local control plane: `helm lint`, `helm template | kubectl apply --dry-run=server`,
//! `helm install`, Pod Security "restricted" admission of the Deployment, `deploy/` and the
//! chart's CRDs kept in step, the operator run with exactly the chart's RBAC (impersonating
//! its ServiceAccount) through a replacement, the ValidatingAdmissionPolicy refusing with
//! messages a person understands (real `kubectl annotate`), and the alerts and dashboard using
//! only metric names the operator exports (checked by scraping it, and by `promtool`).
//!
//! helm and promtool come from `hack/build-tools.sh` (built once from the Go module proxy,
//! cached in ~/.cache/autoheal/tools).

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use support::*;
use testkit::{ControlPlane, test_namespace, wait_for};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("charts/autoheal")
}

/// A tool built by `hack/build-tools.sh` (once; later calls find it cached).
fn tool(name: &str) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_build_at_a_time = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(root().join("hack/build-tools.sh"))
        .arg(name)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("running hack/build-tools.sh");
    assert!(out.status.success(), "hack/build-tools.sh {name} failed");
    let dir = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("hack/build-tools.sh prints its directory")
        .to_string();
    PathBuf::from(dir).join(name)
}

fn helm_bin() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| tool("helm"))
}

/// `helm ARGS` against `kubeconfig` (when given), with Helm's own state in a temp dir.
fn helm(kubeconfig: Option<&Path>, args: &[&str]) -> Output {
    let home = std::env::temp_dir().join(format!("autoheal-chart-helm-{}", std::process::id()));
    let mut cmd = Command::new(helm_bin());
    cmd.args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .stdin(Stdio::null());
    match kubeconfig {
        Some(k) => cmd.env("KUBECONFIG", k),
        None => cmd.env_remove("KUBECONFIG"),
    };
    cmd.output().expect("running helm")
}

/// Panics with helm's stderr unless it succeeded; returns stdout.
fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm template RELEASE charts/autoheal -n NS ARGS…`.
fn render(release: &str, ns: &str, args: &[&str]) -> String {
    let chart = chart();
    let mut all = vec!["template", release, chart.to_str().unwrap(), "-n", ns];
    all.extend_from_slice(args);
    ok(&format!("helm {all:?}"), helm(None, &all))
}

/// The YAML documents of a multi-document stream (empty ones dropped).
fn documents(yaml: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}

/// `kubectl ARGS` with `stdin` fed in; the output whatever the exit status.
fn kubectl_stdin(cp: &ControlPlane, args: &[&str], stdin: &str) -> Output {
    let mut child = cp
        .kubectl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A namespace of this test's own (no podsim), labelled as given.
async fn namespace(cp: &ControlPlane, prefix: &str, labels: &[&str]) -> String {
    let ns = test_namespace(&cp.client().await, prefix).await;
    if !labels.is_empty() {
        let mut args = vec!["label", "namespace", &ns, "--overwrite"];
        args.extend_from_slice(labels);
        assert!(kubectl(cp, &args).status.success());
    }
    ns
}

const RESTRICTED: &str = "pod-security.kubernetes.io/enforce=restricted";

// ---- the chart on its own ----

#[test]
fn chart_crds_are_the_repositorys_crds() {
    let list = |dir: &Path| -> BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect()
    };
    let repo = list(&root().join("crds"));
    let chart = list(&chart().join("crds"));
    assert_eq!(
        repo.keys().collect::<Vec<_>>(),
        chart.keys().collect::<Vec<_>>(),
        "charts/autoheal/crds/ must hold the same files as crds/ (cp crds/*.yaml charts/autoheal/crds/)"
    );
    for (name, text) in &repo {
        assert!(
            chart[name] == *text,
            "charts/autoheal/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/autoheal/crds/"
        );
    }
}

#[test]
fn deploy_is_generated_from_the_chart() {
    let out = std::env::temp_dir().join(format!("autoheal-manifests-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let status = Command::new(root().join("hack/manifests.sh"))
        .arg(&out)
        .env("HELM", helm_bin())
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "hack/manifests.sh failed");
    let files = |dir: &Path| -> BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect()
    };
    let generated = files(&out);
    let committed = files(&root().join("deploy"));
    let _ = std::fs::remove_dir_all(&out);
    assert_eq!(
        committed.keys().collect::<Vec<_>>(),
        generated.keys().collect::<Vec<_>>(),
        "deploy/ has drifted from charts/autoheal: run `make manifests`"
    );
    for (name, text) in &generated {
        assert!(
            committed[name] == *text,
            "deploy/{name} has drifted from charts/autoheal: run `make manifests`"
        );
    }
    assert!(root().join("deploy/examples/web.yaml").is_file());
}

#[test]
fn helm_lint_passes_in_every_mode() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    for extra in [
        &[][..],
        &["--set", "watchNamespace=apps"][..],
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "metrics.dashboard.enabled=true",
            "--set",
            "namespace.create=true",
        ][..],
    ] {
        let mut args = vec!["lint", "--strict", chart];
        args.extend_from_slice(extra);
        let out = ok(&format!("helm {args:?}"), helm(None, &args));
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

#[test]
fn watch_namespace_mode_uses_a_namespaced_role_and_the_namespace_flag() {
    let docs = documents(&render(
        "autoheal",
        "autoheal-system",
        &["--set", "watchNamespace=apps"],
    ));
    let find = |kind: &str, ns: &str| {
        docs.iter()
            .filter(|d| {
                d["kind"] == kind && d["metadata"]["namespace"].as_str().unwrap_or("") == ns
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    let roles = find("Role", "apps");
    assert_eq!(roles.len(), 1, "one Role in the watched namespace");
    let role_resources: Vec<&str> = roles[0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|r| r["resources"].as_sequence().unwrap())
        .filter_map(|r| r.as_str())
        .collect();
    for r in ["scalinggroups", "instances", "pods", "events"] {
        assert!(role_resources.contains(&r), "the Role grants {r}");
    }
    assert_eq!(find("RoleBinding", "apps").len(), 1);
    // The ClusterRole keeps only what is cluster-scoped: Nodes.
    let cluster_role = find("ClusterRole", "").pop().expect("a ClusterRole");
    let cluster_resources: Vec<&str> = cluster_role["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|r| r["resources"].as_sequence().unwrap())
        .filter_map(|r| r.as_str())
        .collect();
    assert_eq!(cluster_resources, ["nodes"]);
    let deployment = find("Deployment", "autoheal-system").pop().unwrap();
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_sequence()
            .unwrap()
            .contains(&serde_yaml::Value::from("--namespace=apps")),
        "{args:?}"
    );
    // The admission policy binds to the watched namespace only.
    for binding in find("ValidatingAdmissionPolicyBinding", "") {
        assert_eq!(
            binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "apps"
        );
    }
}

// ---- the chart against the control plane ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_chart_passes_a_server_side_dry_run() {
    let cp = ControlPlane::shared().await;
    install_crds(cp).await;
    let ns = namespace(cp, "chart-dry-run", &[RESTRICTED]).await;
    let apps = namespace(cp, "chart-dry-run-apps", &[]).await;
    for (release, extra) in [
        (format!("{ns}-all"), vec![]),
        (
            format!("{ns}-ns"),
            vec![
                "--set".to_string(),
                format!("watchNamespace={apps}"),
                "--set".to_string(),
                "metrics.dashboard.enabled=true".to_string(),
            ],
        ),
    ] {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let yaml = render(&release, &ns, &extra);
        let out = kubectl_stdin(cp, &["apply", "--dry-run=server", "-f", "-"], &yaml);
        assert!(
            out.status.success(),
            "kubectl apply --dry-run=server refused the chart ({extra:?}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("deployment.apps/"), "{stdout}");
        assert!(
            stdout.contains("validatingadmissionpolicy.admissionregistration.k8s.io/"),
            "{stdout}"
        );
        // Not even a Pod Security warning.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("PodSecurity"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_creates_the_objects_and_its_pods_are_admitted() {
    let cp = ControlPlane::shared().await;
    install_crds(cp).await;
    let ns = namespace(cp, "chart-install", &[RESTRICTED]).await;
    let release = format!("{ns}-autoheal");
    let chart = chart();
    let installed = ok(
        "helm install",
        helm(
            Some(cp.kubeconfig_path()),
            &[
                "install",
                &release,
                chart.to_str().unwrap(),
                "-n",
                &ns,
                // The policy names this release's ServiceAccount as the operator: keep it
                // from judging the other tests' operators in this shared control plane.
                "--set",
                &format!(
                    "admissionPolicy.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={ns}"
                ),
            ],
        ),
    );
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    let selector = kubectl(
        cp,
        &[
            "get",
            &format!("validatingadmissionpolicybinding/{release}-annotations"),
            "-o",
            "jsonpath={.spec.matchResources.namespaceSelector.matchLabels}",
        ],
    );
    assert!(
        String::from_utf8_lossy(&selector.stdout).contains(&ns),
        "{}",
        String::from_utf8_lossy(&selector.stdout)
    );
    let get = |args: &[&str]| -> String {
        let out = kubectl(cp, args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for object in [
        format!("serviceaccount/{release}"),
        format!("deployment/{release}"),
        format!("service/{release}-metrics"),
        format!("role/{release}-leader-election"),
        format!("rolebinding/{release}-leader-election"),
    ] {
        get(&["-n", &ns, "get", &object]);
    }
    for object in [
        format!("clusterrole/{release}"),
        format!("clusterrolebinding/{release}"),
        format!("validatingadmissionpolicy/{release}-annotations"),
        format!("validatingadmissionpolicy/{release}-ownership"),
        format!("validatingadmissionpolicybinding/{release}-annotations"),
        format!("validatingadmissionpolicybinding/{release}-ownership"),
    ] {
        get(&["get", &object]);
    }
    // The Deployment's ReplicaSet created both Pods in the restricted namespace: Pod Security
    // admitted them (they stay Pending: there is no kubelet for real images here).
    wait_for(
        "the operator Deployment's 2 Pods to be created (admitted)",
        TIMEOUT,
        || async {
            let out = kubectl(
                cp,
                &[
                    "-n",
                    &ns,
                    "get",
                    "pods",
                    "-l",
                    &format!("app.kubernetes.io/instance={release}"),
                    "-o",
                    "name",
                ],
            );
            (String::from_utf8_lossy(&out.stdout).lines().count() == 2).then_some(())
        },
    )
    .await;
    let failures = get(&[
        "-n",
        &ns,
        "get",
        "replicasets",
        "-o",
        "jsonpath={.items[*].status.conditions[?(@.type==\"ReplicaFailure\")].message}",
    ]);
    assert!(failures.trim().is_empty(), "{failures}");
    ok(
        "helm uninstall",
        helm(
            Some(cp.kubeconfig_path()),
            &["uninstall", &release, "-n", &ns, "--wait"],
        ),
    );
}

/// A Pod made of the rendered Deployment's Pod template.
fn pod_of(deployment: &serde_yaml::Value, name: &str) -> String {
    let template = &deployment["spec"]["template"];
    let mut pod = serde_yaml::Mapping::new();
    pod.insert("apiVersion".into(), "v1".into());
    pod.insert("kind".into(), "Pod".into());
    let mut meta = serde_yaml::Mapping::new();
    meta.insert("name".into(), name.into());
    meta.insert("labels".into(), template["metadata"]["labels"].clone());
    pod.insert("metadata".into(), meta.into());
    pod.insert("spec".into(), template["spec"].clone());
    serde_yaml::to_string(&pod).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_namespace_admits_the_deployment_and_refuses_an_unhardened_one() {
    let cp = ControlPlane::shared().await;
    let ns = namespace(cp, "chart-restricted", &[RESTRICTED]).await;
    let deployment_of = |yaml: &str| {
        documents(yaml)
            .into_iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("a Deployment")
    };
    let hardened = deployment_of(&render(
        "autoheal",
        &ns,
        &["--show-only", "templates/deployment.yaml"],
    ));
    let unhardened = deployment_of(&render(
        "unhardened",
        &ns,
        &[
            "--show-only",
            "templates/deployment.yaml",
            "--set",
            "securityContext=null",
            "--set",
            "podSecurityContext=null",
        ],
    ));

    // Pods need their ServiceAccount.
    for release in ["autoheal", "unhardened"] {
        let sa = render(
            release,
            &ns,
            &["--show-only", "templates/serviceaccount.yaml"],
        );
        let out = kubectl_stdin(cp, &["apply", "-f", "-"], &sa);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The hardened Deployment and a Pod of its template: applied for real, admitted.
    let out = kubectl_stdin(
        cp,
        &["-n", &ns, "apply", "-f", "-"],
        &serde_yaml::to_string(&hardened).unwrap(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("PodSecurity"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl_stdin(
        cp,
        &["-n", &ns, "apply", "-f", "-"],
        &pod_of(&hardened, "autoheal-hardened"),
    );
    assert!(
        out.status.success(),
        "the hardened Pod was refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The same without its security contexts: the Pod is refused with Pod Security's reasons,
    // and the Deployment is only accepted with a warning (its ReplicaSet cannot create Pods).
    let out = kubectl_stdin(
        cp,
        &["-n", &ns, "apply", "-f", "-"],
        &pod_of(&unhardened, "autoheal-unhardened"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the unhardened Pod was admitted");
    assert!(
        stderr.contains("violates PodSecurity \"restricted:latest\""),
        "{stderr}"
    );
    for reason in [
        "allowPrivilegeEscalation != false",
        "unrestricted capabilities",
        "runAsNonRoot != true",
        "seccompProfile",
    ] {
        assert!(stderr.contains(reason), "missing {reason:?} in {stderr}");
    }
    let out = kubectl_stdin(
        cp,
        &["-n", &ns, "apply", "-f", "-"],
        &serde_yaml::to_string(&unhardened).unwrap(),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("would violate PodSecurity"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "the unhardened Deployment's ReplicaSet to report its Pods refused",
        TIMEOUT,
        || async {
            let out = kubectl(
                cp,
                &[
                    "-n",
                    &ns,
                    "get",
                    "replicasets",
                    "-l",
                    "app.kubernetes.io/instance=unhardened",
                    "-o",
                    "jsonpath={.items[*].status.conditions[?(@.type==\"ReplicaFailure\")].message}",
                ],
            );
            String::from_utf8_lossy(&out.stdout)
                .contains("violates PodSecurity")
                .then_some(())
        },
    )
    .await;
}
