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

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use autoheal::api::{HookResult, HookTransition, LifecycleState};
use support::helm::{chart, helm, helm_bin, ok, render, tool};
use support::*;
use testkit::{ControlPlane, test_namespace, wait_for};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
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
    helm_bin(); // built (once) before the script asks hack/build-tools.sh for it
    let status = Command::new(root().join("hack/manifests.sh"))
        .arg(&out)
        .env_remove("HELM")
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
                "--set",
                "metrics.dashboard.enabled=true",
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
        format!("configmap/{release}-dashboard"),
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

// ---- least privilege ----

fn kind_of(doc: &serde_yaml::Value) -> (&str, &str) {
    (
        doc["kind"].as_str().unwrap_or_default(),
        doc["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

/// The admin kubeconfig, impersonating `user` in `groups` (the `as` / `as-groups` fields).
fn impersonating_kubeconfig(cp: &ControlPlane, user: &str, groups: &[&str], path: &Path) {
    let admin = std::fs::read_to_string(cp.kubeconfig_path()).unwrap();
    let mut config: serde_yaml::Value = serde_yaml::from_str(&admin).unwrap();
    let users = config["users"].as_sequence_mut().unwrap();
    for u in users {
        u["user"]["as"] = user.into();
        u["user"]["as-groups"] = groups.iter().map(|g| serde_yaml::Value::from(*g)).collect();
    }
    std::fs::write(path, serde_yaml::to_string(&config).unwrap()).unwrap();
}

/// The (resource[/subresource], verb) pairs of the write verbs a rendered ClusterRole/Role grants.
fn granted_writes(docs: &[serde_yaml::Value]) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        for rule in d["rules"].as_sequence().unwrap() {
            for r in rule["resources"].as_sequence().unwrap() {
                for v in rule["verbs"].as_sequence().unwrap() {
                    let v = v.as_str().unwrap();
                    if testkit::AUDITED_VERBS.contains(&v) {
                        out.insert((r.as_str().unwrap().to_string(), v.to_string()));
                    }
                }
            }
        }
    }
    out
}

/// The chart's ServiceAccount and RBAC (and whatever else `show_only` names) applied with
/// release namespace and release name `release_ns` (so cluster-scoped names are unique per
/// test), and a kubeconfig that impersonates the ServiceAccount.
struct ChartIdentity {
    release_ns: String,
    release: String,
    user: String,
    kubeconfig: PathBuf,
    dir: PathBuf,
    docs: Vec<serde_yaml::Value>,
}

impl Drop for ChartIdentity {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn chart_identity(
    env: &Env,
    prefix: &str,
    values: &[&str],
    show_only: &[&str],
) -> ChartIdentity {
    let release_ns = namespace(env.cp, prefix, &[RESTRICTED]).await;
    let release = release_ns.clone();
    let mut args: Vec<&str> = values.to_vec();
    for template in ["templates/serviceaccount.yaml", "templates/rbac.yaml"]
        .iter()
        .chain(show_only)
    {
        args.extend(["--show-only", template]);
    }
    let yaml = render(&release, &release_ns, &args);
    let docs = documents(&yaml);
    let sa = docs
        .iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .map(|d| kind_of(d).1.to_string())
        .expect("a ServiceAccount");
    let out = kubectl_stdin(env.cp, &["apply", "-f", "-"], &yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = std::env::temp_dir().join(format!("autoheal-chart-identity-{release_ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let user = format!("system:serviceaccount:{release_ns}:{sa}");
    let sa_group = format!("system:serviceaccounts:{release_ns}");
    impersonating_kubeconfig(
        env.cp,
        &user,
        &["system:serviceaccounts", &sa_group, "system:authenticated"],
        &kubeconfig,
    );
    ChartIdentity {
        release_ns,
        release,
        user,
        kubeconfig,
        dir,
        docs,
    }
}

impl ChartIdentity {
    /// `autoheal run --namespace NS` as the chart's ServiceAccount, its Lease in the release
    /// namespace.
    fn operator(&self, env: &Env) -> Operator {
        Operator::start_as(
            &self.kubeconfig,
            &env.ns,
            &["--lease-namespace", &self.release_ns],
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_with_exactly_the_charts_rbac_replaces_an_instance() {
    let env = Env::new("chart-rbac").await;
    let id = chart_identity(&env, "chart-rbac-op", &[], &[]).await;
    let release_ns = id.release_ns.clone();
    // Exactly the chart's RBAC: its ClusterRole and the leader-election Role, bound to its
    // ServiceAccount.
    for object in [
        format!("clusterrole/{}-autoheal", id.release),
        format!("clusterrolebinding/{}-autoheal", id.release),
        format!("role/{}-autoheal-leader-election", id.release),
    ] {
        let out = kubectl(env.cp, &["-n", &release_ns, "get", &object]);
        assert!(out.status.success(), "{object} missing");
    }
    // The impersonation holds: the ServiceAccount may not read Secrets.
    let out = env
        .cp
        .kubectl()
        .arg("--kubeconfig")
        .arg(&id.kubeconfig)
        .args(["auth", "can-i", "list", "secrets", "-n", &env.ns])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    assert_eq!(
        String::from_utf8_lossy(
            &env.cp
                .kubectl()
                .arg("--kubeconfig")
                .arg(&id.kubeconfig)
                .args([
                    "auth",
                    "whoami",
                    "-o",
                    "jsonpath={.status.userInfo.username}"
                ])
                .output()
                .unwrap()
                .stdout
        ),
        id.user
    );

    let audit_start = env.audit_end();
    let op = id.operator(&env);
    op.wait_ready().await;
    env.apply_group(&GroupBuilder::new("web").desired(2).http_probe().build())
        .await;
    let before = env.wait_in_service("web", 2).await;
    env.wait_pods_in_service("web", 2).await;
    let victim = before[0].metadata.name.clone().unwrap();
    let out = kubectl(
        env.cp,
        &[
            "-n",
            &env.ns,
            "annotate",
            "inst",
            &victim,
            "autoheal.dev/health=Unhealthy",
        ],
    );
    assert!(out.status.success());
    env.wait_instance_gone(&victim).await;
    let after = env.wait_in_service("web", 2).await;
    assert!(
        after
            .iter()
            .all(|i| i.metadata.name.as_deref() != Some(&victim))
    );
    env.wait_pods_in_service("web", 2).await;

    // Two template changes without a refresh (trigger Manual), each recorded as a revision
    // before the next: with revisionHistoryLimit 0, the one in between, which no Instance
    // runs, goes (controllerrevisions delete); the one the Instances run stays.
    let revisions: kube::Api<k8s_openapi::api::apps::v1::ControllerRevision> =
        kube::Api::namespaced(env.client.clone(), &env.ns);
    let numbered = |want: BTreeSet<i64>| {
        let revisions = revisions.clone();
        async move {
            let list = revisions
                .list(&kube::api::ListParams::default().labels("autoheal.dev/group=web"))
                .await
                .ok()?;
            let numbers: BTreeSet<i64> = list.items.iter().map(|r| r.revision).collect();
            (numbers == want).then_some(())
        }
    };
    for (version, want) in [("a", [1, 2]), ("b", [1, 3])] {
        env.patch_group(
            "web",
            serde_json::json!({ "spec": {
                "revisionHistoryLimit": 0,
                "refresh": { "trigger": "Manual" },
                "template": { "metadata": { "labels": { "version": version } } },
            } }),
        )
        .await;
        wait_for(&format!("revisions {want:?}"), TIMEOUT, || {
            numbered(BTreeSet::from(want))
        })
        .await;
    }

    // Deleting the group drains it and lets its finalizer go.
    env.groups()
        .delete("web", &Default::default())
        .await
        .unwrap();
    wait_for("ScalingGroup web gone", TIMEOUT, || async {
        matches!(env.groups().get_opt("web").await, Ok(None)).then_some(())
    })
    .await;
    env.flush_audit().await;

    let log = std::fs::read_to_string(op.log_path()).unwrap();
    assert!(
        !log.contains("forbidden"),
        "the operator hit an RBAC refusal:\n{}",
        op.log_tail(60)
    );
    let (writes, _) = testkit::audit_writes_after(env.cp.audit_log_path(), audit_start);
    let ours: Vec<_> = writes
        .iter()
        .filter(|w| w.user_agent.starts_with("autoheal/"))
        .filter(|w| w.namespace == env.ns || w.namespace == release_ns)
        .collect();
    let refused: Vec<_> = ours.iter().filter(|w| w.code == 403).collect();
    assert!(refused.is_empty(), "refused writes: {refused:#?}");
    // Every write verb the chart grants was used (events patch only folds repeats).
    let used: BTreeSet<(String, String)> = ours
        .iter()
        .map(|w| {
            let resource = if w.subresource.is_empty() {
                w.resource.clone()
            } else {
                format!("{}/{}", w.resource, w.subresource)
            };
            (resource, w.verb.clone())
        })
        .collect();
    let unused: Vec<_> = granted_writes(&id.docs)
        .into_iter()
        .filter(|g| !used.contains(g))
        .filter(|(r, v)| !(r == "events" && v == "patch"))
        .collect();
    assert!(
        unused.is_empty(),
        "write verbs granted but not used: {unused:?} (used: {used:?})"
    );
    drop(op);
}

// ---- admission ----

/// `kubectl ARGS` expected to be refused; returns its stderr.
fn refused(cp: &ControlPlane, args: &[&str]) -> String {
    let out = kubectl(cp, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "kubectl {args:?} was accepted");
    stderr
}

/// `[NS, "annotate", …, "-n"]` as kubectl arguments (`-n NS` last).
fn strs(a: &[String; 6]) -> Vec<&str> {
    let mut v: Vec<&str> = a[1..5].iter().map(String::as_str).collect();
    v.push(&a[5]);
    v.push(&a[0]);
    v
}

fn accepted(cp: &ControlPlane, args: &[&str]) {
    let out = kubectl(cp, args);
    assert!(
        out.status.success(),
        "kubectl {args:?} was refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_policy_refuses_malformed_annotations_and_foreign_changes() {
    let env = Env::new("chart-admission").await;
    let cp = env.cp;
    let ns = env.ns.as_str();
    // The chart in watch-namespace mode for this namespace: its Role, and the policy bound
    // to this namespace only; the operator runs as the chart's ServiceAccount, which the
    // policy names.
    let watch = format!("watchNamespace={ns}");
    let id = chart_identity(
        &env,
        "chart-admission-op",
        &["--set", &watch],
        &["templates/admission-policy.yaml"],
    )
    .await;
    let operator_user = id.user.clone();
    assert_eq!(
        operator_user,
        format!("system:serviceaccount:{0}:{0}-autoheal", id.release)
    );
    let _op = id.operator(&env);
    env.apply_group(
        &GroupBuilder::new("web")
            .desired(2)
            .hook(
                "drain",
                HookTransition::Terminate,
                3600,
                HookResult::Continue,
            )
            .build(),
    )
    .await;
    let instances = env.wait_in_service("web", 2).await;
    let inst = instances[0].metadata.name.clone().unwrap();
    let doomed = instances[1].metadata.name.clone().unwrap();
    let pod = inst.clone();

    // The policy is in force once a server-side dry run is refused by it.
    wait_for("the admission policy to be in force", TIMEOUT, || async {
        let out = kubectl(
            cp,
            &[
                "-n",
                ns,
                "annotate",
                "--dry-run=server",
                "--overwrite",
                "inst",
                &inst,
                "autoheal.dev/health=Broken",
            ],
        );
        (!out.status.success()).then_some(())
    })
    .await;

    let annotate = |target: &str, kv: &str| -> [String; 6] {
        [ns, "annotate", "--overwrite", target, kv, "-n"].map(String::from)
    };
    let run_refused = |a: [String; 6]| refused(cp, &strs(&a));
    let run_accepted = |a: [String; 6]| accepted(cp, &strs(&a));
    let inst_ref = format!("inst/{inst}");

    // autoheal.dev/health: Healthy or Unhealthy (any case, as the operator reads it).
    let msg = run_refused(annotate(&inst_ref, "autoheal.dev/health=Broken"));
    assert!(
        msg.contains(&format!(
            "autoheal.dev/health=\"Broken\" is not a health status: set Healthy or Unhealthy, e.g. kubectl annotate inst {inst} autoheal.dev/health=Unhealthy --overwrite"
        )),
        "{msg}"
    );
    assert!(msg.contains("denied request"), "{msg}");
    // Booleans.
    for key in [
        "autoheal.dev/maintenance",
        "autoheal.dev/standby",
        "autoheal.dev/respect-grace-period",
    ] {
        let msg = run_refused(annotate(&inst_ref, &format!("{key}=yes")));
        assert!(
            msg.contains(&format!(
                "{key}=\"yes\" is not understood: set \"true\" or \"false\""
            )),
            "{msg}"
        );
    }
    let msg = run_refused(annotate("sg/web", "autoheal.dev/paused=maybe"));
    assert!(
        msg.contains("autoheal.dev/paused=\"maybe\" is not understood: set \"true\" or \"false\""),
        "{msg}"
    );
    // Lifecycle hook results.
    let msg = run_refused(annotate(&inst_ref, "hooks.autoheal.dev/drain=Later"));
    assert!(
        msg.contains("hooks.autoheal.dev/drain=\"Later\" is not a lifecycle action result: set Continue or Abandon"),
        "{msg}"
    );
    // What the operator records is the operator's to write.
    let msg = run_refused(annotate(&inst_ref, "autoheal.dev/replaces=web-zzzzz"));
    assert!(
        msg.contains("autoheal.dev/replaces is written by the autoheal operator only"),
        "{msg}"
    );
    // A restart by hand would bypass maxInFlight: only the group asks for one.
    let msg = run_refused(annotate(&inst_ref, "autoheal.dev/restart=1"));
    assert!(
        msg.contains("autoheal.dev/restart is written by the autoheal operator only"),
        "{msg}"
    );
    // Well-formed values pass.
    run_accepted(annotate(&inst_ref, "autoheal.dev/maintenance=True"));
    run_accepted(annotate(&inst_ref, "autoheal.dev/maintenance=false"));
    run_accepted(annotate(
        &inst_ref,
        "autoheal.dev/health-reason=any free text at all",
    ));
    run_accepted(annotate(
        &inst_ref,
        "hooks.autoheal.dev/drain.heartbeat=whatever-1",
    ));
    run_accepted(annotate("sg/web", "autoheal.dev/paused=false"));
    run_accepted(annotate(
        "sg/web",
        "autoheal.dev/reset-replacement-failures=2026-12-01",
    ));

    // Labels and spec.groupName: the operator's.
    let msg = refused(
        cp,
        &[
            "-n",
            ns,
            "label",
            "--overwrite",
            &inst_ref,
            "autoheal.dev/group=other",
        ],
    );
    assert!(
        msg.contains(&format!(
            "the label autoheal.dev/group ties Instance {inst} to its ScalingGroup and Instance: only the autoheal operator ({operator_user}) may change it"
        )),
        "{msg}"
    );
    let msg = refused(
        cp,
        &[
            "-n",
            ns,
            "label",
            &format!("pod/{pod}"),
            "autoheal.dev/instance-",
        ],
    );
    assert!(
        msg.contains(&format!(
            "the label autoheal.dev/instance ties Pod {pod} to its ScalingGroup"
        )),
        "{msg}"
    );
    accepted(cp, &["-n", ns, "label", &inst_ref, "team=web"]);
    let msg = refused(
        cp,
        &[
            "-n",
            ns,
            "patch",
            &inst_ref,
            "--type=merge",
            "-p",
            r#"{"spec":{"groupName":"other"}}"#,
        ],
    );
    assert!(msg.contains("groupName is immutable"), "{msg}");

    // Healthy on an Instance already terminating: it is held in Terminating:Wait by its
    // Terminate hook.
    run_accepted(annotate(
        &format!("inst/{doomed}"),
        "autoheal.dev/health=unhealthy",
    ));
    let terminating = env
        .wait_instance_state(&doomed, LifecycleState::TerminatingWait)
        .await;
    assert!(terminating.metadata.name.is_some());
    let msg = run_refused(annotate(
        &format!("inst/{doomed}"),
        "autoheal.dev/health=Healthy",
    ));
    assert!(
        msg.contains(&format!(
            "Instance {doomed} is already terminating (lifecycle state Terminating:Wait): it cannot be marked Healthy"
        )),
        "{msg}"
    );
    // Completing the hook is still allowed, and the termination goes on.
    run_accepted(annotate(
        &format!("inst/{doomed}"),
        "hooks.autoheal.dev/drain=Continue",
    ));
    env.wait_instance_gone(&doomed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_policy_treats_listed_users_as_the_operator() {
    let cp = ControlPlane::shared().await;
    install_crds(cp).await;
    let ns = namespace(cp, "chart-operator-users", &[]).await;
    let watch = format!("watchNamespace={ns}");
    let policy = render(
        &ns,
        &ns,
        &[
            "--show-only",
            "templates/admission-policy.yaml",
            "--set",
            &watch,
            "--set",
            "admissionPolicy.operatorUsers={admin}",
        ],
    );
    let out = kubectl_stdin(cp, &["apply", "-f", "-"], &policy);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let instance = root().join("tests/data/instance.yaml");
    accepted(cp, &["-n", &ns, "apply", "-f", instance.to_str().unwrap()]);
    wait_for("the admission policy to be in force", TIMEOUT, || async {
        let out = kubectl(
            cp,
            &[
                "-n",
                &ns,
                "annotate",
                "--dry-run=server",
                "inst/web-manual",
                "autoheal.dev/health=Broken",
            ],
        );
        (!out.status.success()).then_some(())
    })
    .await;
    // admin (listed) writes what only the operator may; alice, even in system:masters, may not.
    accepted(
        cp,
        &[
            "-n",
            &ns,
            "annotate",
            "inst/web-manual",
            "autoheal.dev/replaces=web-aaaaa",
        ],
    );
    accepted(
        cp,
        &[
            "-n",
            &ns,
            "label",
            "inst/web-manual",
            "autoheal.dev/group=web",
        ],
    );
    let alice = ["--as=alice", "--as-group=system:masters"];
    let msg = refused(
        cp,
        &[
            alice[0],
            alice[1],
            "-n",
            &ns,
            "label",
            "--overwrite",
            "inst/web-manual",
            "autoheal.dev/group=other",
        ],
    );
    assert!(msg.contains("only the autoheal operator"), "{msg}");
    let msg = refused(
        cp,
        &[
            alice[0],
            alice[1],
            "-n",
            &ns,
            "annotate",
            "--overwrite",
            "inst/web-manual",
            "autoheal.dev/replaces=web-bbbbb",
        ],
    );
    assert!(
        msg.contains("is written by the autoheal operator only"),
        "{msg}"
    );
}

// ---- monitoring ----

fn promtool_bin() -> &'static Path {
    static PROMTOOL: OnceLock<PathBuf> = OnceLock::new();
    PROMTOOL.get_or_init(|| tool("promtool"))
}

/// The sample names of a Prometheus/OpenMetrics text page, and the names its `# TYPE` lines
/// allow (a counter `x` is exposed as `x_total`, a histogram as `x_bucket`, `x_sum`,
/// `x_count`), so that a family with no series yet still counts as exported.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["", "_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for s in suffixes {
                names.insert(format!("{name}{s}"));
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name = line
                .split(|c: char| c == '{' || c.is_whitespace())
                .next()
                .unwrap();
            names.insert(name.to_string());
        }
    }
    names
}

/// Every `autoheal_…` metric name in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("autoheal_") {
        let start = i + at;
        let word_start =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(expr.len(), |e| start + e);
        if word_start {
            names.insert(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_dashboard_use_only_metrics_the_operator_exports() {
    let env = Env::new("chart-metrics").await;
    let op = env.operator();
    env.apply_group(&GroupBuilder::new("web").desired(2).http_probe().build())
        .await;
    env.wait_in_service("web", 2).await;
    // The per-group gauges are refreshed every 10 s by the leader.
    let text = wait_for(
        "the operator to export the group's conditions and probe results",
        TIMEOUT,
        || async {
            let text = op.metrics().await?;
            (text.contains("autoheal_scalinggroup_condition{")
                && text.contains("result=\"success\"")
                && metric_value(&text, "autoheal_leader") == Some(1.0))
            .then_some(text)
        },
    )
    .await;
    let exported = exported_names(&text);

    let rendered = documents(&render(
        "autoheal",
        "autoheal-system",
        &[
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "metrics.dashboard.enabled=true",
            "--set",
            "metrics.serviceMonitor.enabled=true",
        ],
    ));
    let rule = rendered
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    let dashboard = rendered
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("the dashboard ConfigMap");
    assert!(rendered.iter().any(|d| d["kind"] == "ServiceMonitor"));

    let mut used: BTreeMap<String, String> = BTreeMap::new();
    let groups = rule["spec"]["groups"].as_sequence().unwrap();
    let alerts: BTreeSet<&str> = groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
        .filter_map(|r| {
            let expr = r["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                used.insert(name, format!("alert {}", r["alert"].as_str().unwrap()));
            }
            r["alert"].as_str()
        })
        .collect();
    for alert in [
        "AutohealReplacementBlockedByBreaker",
        "AutohealReplacementsKeepFailing",
        "AutohealProbeErrorRatioHigh",
        "AutohealReconcileErrors",
        "AutohealOperatorDown",
        "AutohealLeaderFlapping",
    ] {
        assert!(alerts.contains(alert), "missing alert {alert}");
    }
    let json: serde_json::Value =
        serde_json::from_str(dashboard["data"]["autoheal.json"].as_str().unwrap()).unwrap();
    let mut panels = 0;
    for panel in json["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            panels += 1;
            for name in metric_names(target["expr"].as_str().unwrap()) {
                used.insert(name, format!("panel {}", panel["title"]));
            }
        }
    }
    assert!(panels > 10, "the dashboard has {panels} queries");
    let missing: Vec<_> = used
        .iter()
        .filter(|(name, _)| !exported.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "metric names used but not exported by the operator: {missing:?}\nexported: {exported:?}"
    );

    // Prometheus's own checks: the rules as Prometheus loads them, and the exposition.
    let dir = std::env::temp_dir().join(format!("autoheal-chart-promtool-{}", env.ns));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("rules.yaml");
    std::fs::write(&rules, serde_yaml::to_string(&rule["spec"]).unwrap()).unwrap();
    let out = Command::new(promtool_bin())
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "promtool check rules: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{report}"
    );
    let mut child = Command::new(promtool_bin())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics on /metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}
