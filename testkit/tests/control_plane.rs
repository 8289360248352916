//! The control plane launcher, end to end: the shared control plane (kubectl,
//! replicaset controller, garbage collector, audit log), a private one (stopped on
//! drop, killed with its process), and the `cluster up` / `cluster down` tool.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;
use testkit::{ControlPlane, audit_writes, test_namespace, wait_for};

/// The tests that start control planes of their own run one at a time, so that
/// at most two run at once on a small machine.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn unique_temp_dir(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "testkit-{what}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ))
}

/// Pids of processes whose command line mentions `needle`.
fn pids_mentioning(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

fn wait_until_gone(needle: &str, timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = pids_mentioning(needle);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn kubectl_reports_client_and_server_versions() {
    let cp = ControlPlane::shared().await;
    let out = cp
        .kubectl()
        .args(["version", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl version: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["clientVersion"]["gitVersion"],
        testkit::K8S_VERSION,
        "{v}"
    );
    assert_eq!(
        v["serverVersion"]["gitVersion"],
        testkit::K8S_VERSION,
        "{v}"
    );
    assert_eq!(testkit::K8S_VERSION, "v1.36.5");
}

#[tokio::test]
async fn replicaset_pods_are_created_then_garbage_collected_and_audited() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    let ns = test_namespace(&client, "RS_gc").await;
    assert!(ns.starts_with("rs-gc-"), "{ns}");

    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "example.invalid/web:1" }] }
            }
        }
    }))
    .unwrap();
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let created = replicasets
        .create(&PostParams::default(), &rs)
        .await
        .unwrap();
    let rs_uid = created.metadata.uid.unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let by_label = ListParams::default().labels("app=web");
    let made = wait_for(
        "the replicaset controller to create 2 Pods",
        Duration::from_secs(60),
        || async {
            let list = pods.list(&by_label).await.ok()?;
            (list.items.len() == 2).then_some(list.items)
        },
    )
    .await;
    for pod in &made {
        let owners = pod.metadata.owner_references.as_deref().unwrap_or_default();
        assert!(
            owners
                .iter()
                .any(|o| o.uid == rs_uid && o.kind == "ReplicaSet"),
            "{owners:?}"
        );
    }

    // The creation of the ReplicaSet (by the admin) and of its Pods (by the controller manager).
    let log = cp.audit_log_path();
    let rs_create = wait_for(
        "the ReplicaSet's creation in the audit log",
        Duration::from_secs(10),
        || async {
            audit_writes(log).into_iter().find(|w| {
                w.verb == "create"
                    && w.resource == "replicasets"
                    && w.namespace == ns
                    && w.name == "web"
            })
        },
    )
    .await;
    assert_eq!(rs_create.user, "admin");
    assert_eq!(rs_create.api_group, "apps");
    assert_eq!(rs_create.code, 201);
    assert!(!rs_create.request_received_timestamp.is_empty());
    let pod_creates = wait_for(
        "the Pods' creation in the audit log",
        Duration::from_secs(10),
        || async {
            let n = audit_writes(log)
                .into_iter()
                .filter(|w| {
                    w.verb == "create"
                        && w.resource == "pods"
                        && w.namespace == ns
                        && w.subresource.is_empty()
                })
                .inspect(|w| assert_eq!(w.user, "system:kube-controller-manager", "{w:?}"))
                .count();
            (n == 2).then_some(n)
        },
    )
    .await;
    assert_eq!(pod_creates, 2);
    // Only writes are recorded.
    assert!(
        audit_writes(log)
            .iter()
            .all(|w| testkit::AUDITED_VERBS.contains(&w.verb.as_str()))
    );

    replicasets
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();
    wait_for(
        "the garbage collector to delete the Pods",
        Duration::from_secs(60),
        || async {
            pods.list(&by_label)
                .await
                .ok()?
                .items
                .is_empty()
                .then_some(())
        },
    )
    .await;
    wait_for(
        "the ReplicaSet's deletion in the audit log",
        Duration::from_secs(10),
        || async {
            audit_writes(log).into_iter().find(|w| {
                w.verb == "delete"
                    && w.resource == "replicasets"
                    && w.namespace == ns
                    && w.name == "web"
            })
        },
    )
    .await;
}

#[tokio::test]
async fn namespaces_are_unique_and_ready_for_pods() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    let a = test_namespace(&client, "same").await;
    let b = test_namespace(&client, "same").await;
    assert_ne!(a, b);
    // Pod admission needs the namespace's default ServiceAccount, which test_namespace waited for.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "p" },
        "spec": { "containers": [{ "name": "c", "image": "example.invalid/c:1" }] }
    }))
    .unwrap();
    Api::<Pod>::namespaced(client, &a)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_private_control_plane_is_removed_on_drop() {
    let _heavy = HEAVY.lock().await;
    let started = Instant::now();
    let cp = ControlPlane::start().await.unwrap();
    eprintln!("private control plane ready in {:.1?}", started.elapsed());
    let shared = ControlPlane::shared().await;
    assert_ne!(cp.server(), shared.server());
    let dir = cp.dir().to_path_buf();
    let needle = dir.display().to_string();
    assert_eq!(
        pids_mentioning(&needle).len(),
        3,
        "etcd, kube-apiserver, kube-controller-manager"
    );
    let client = cp.client().await;
    test_namespace(&client, "private").await;
    drop(client);
    drop(cp);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert_eq!(
        wait_until_gone(&needle, Duration::from_secs(5)),
        Vec::<i32>::new()
    );
}

const HELPER_ENV: &str = "TESTKIT_PDEATHSIG_HELPER_OUT";

/// Not a test by itself: `children_die_with_the_test_process` runs it in a child
/// process, which it then kills.
#[tokio::test]
#[ignore = "helper for children_die_with_the_test_process"]
async fn helper_start_and_wait_to_be_killed() {
    let Some(out) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let cp = ControlPlane::start().await.unwrap();
    std::fs::write(out, cp.dir().display().to_string()).unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[tokio::test]
async fn children_die_with_the_test_process() {
    let _heavy = HEAVY.lock().await;
    let out = unique_temp_dir("pdeathsig-out");
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "helper_start_and_wait_to_be_killed",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(HELPER_ENV, &out)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let dir = wait_for(
        "the helper's control plane",
        Duration::from_secs(240),
        || {
            if let Ok(Some(status)) = helper.try_wait() {
                panic!("helper exited early: {status}");
            }
            let dir = std::fs::read_to_string(&out).ok().filter(|s| !s.is_empty());
            async move { dir }
        },
    )
    .await;
    let _ = std::fs::remove_file(&out);
    assert_eq!(
        pids_mentioning(&dir).len(),
        3,
        "etcd, kube-apiserver, kube-controller-manager"
    );
    helper.kill().unwrap();
    helper.wait().unwrap();
    assert_eq!(
        wait_until_gone(&dir, Duration::from_secs(10)),
        Vec::<i32>::new()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `cluster down` when dropped, so a failing test leaves nothing running.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = cluster(&["down", "--dir"], &self.0);
    }
}

fn cluster(args: &[&str], dir: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cluster"))
        .args(args)
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn cluster_up_is_idempotent_and_down_removes_everything() {
    let _heavy = HEAVY.lock().await;
    let dir = unique_temp_dir("cluster-cli");
    let _down = Down(dir.clone());

    let started = Instant::now();
    let (ok, stdout, stderr) = cluster(&["up", "--dir"], &dir);
    assert!(ok, "cluster up failed:\n{stdout}\n{stderr}");
    eprintln!("cluster up took {:.1?}", started.elapsed());
    assert!(stdout.contains("control plane started"), "{stdout}");
    let kubeconfig = dir.join("kubeconfig");
    assert!(
        stdout.contains(&kubeconfig.display().to_string()),
        "{stdout}"
    );
    let pids = std::fs::read_to_string(dir.join("control-plane.pids")).unwrap();
    let pids: Vec<String> = pids
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(_, p)| p.to_string())
        .collect();
    assert_eq!(pids.len(), 3);

    // The processes outlived `cluster up`, and a second `up` finds them.
    let started = Instant::now();
    let (ok, stdout, stderr) = cluster(&["up", "--dir"], &dir);
    assert!(ok, "second cluster up failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("already running"), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let pids_again = std::fs::read_to_string(dir.join("control-plane.pids")).unwrap();
    assert!(pids.iter().all(|p| pids_again.contains(p.as_str())));

    let bin_dir = testkit::locate_binaries().unwrap();
    let readyz = Command::new(bin_dir.join("kubectl"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "--raw", "/readyz"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&readyz.stdout).trim(),
        "ok",
        "{readyz:?}"
    );

    let (ok, stdout, stderr) = cluster(&["down", "--dir"], &dir);
    assert!(ok, "cluster down failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("stopped"), "{stdout}");
    assert!(!dir.exists(), "{} still exists", dir.display());
    for pid in &pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let alive = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
        assert!(!alive, "pid {pid} still running: {stat}");
    }
    let (ok, stdout, _) = cluster(&["down", "--dir"], &dir);
    assert!(ok);
    assert!(stdout.contains("no control plane running"), "{stdout}");
}

/// A private control plane's parts can be paused, resumed and restarted: a paused etcd
/// holds requests until it is resumed, a restarted API server serves the same data on the
/// same address, and a restarted kube-controller-manager runs with the overridden flags.
#[tokio::test]
async fn parts_pause_resume_and_restart_keeping_their_data() {
    let _heavy = HEAVY.lock().await;
    let cp = ControlPlane::start()
        .await
        .expect("starting a control plane");
    let client = cp.client().await;
    let ns = test_namespace(&client, "parts").await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());

    cp.pause(testkit::Part::Etcd).unwrap();
    let held = tokio::time::timeout(Duration::from_secs(3), namespaces.get(&ns)).await;
    cp.resume(testkit::Part::Etcd).unwrap();
    // A quorum read needs etcd: while it is stopped the request cannot be answered.
    assert!(
        held.is_err() || held.unwrap().is_err(),
        "a read was answered with etcd stopped"
    );
    wait_for(
        "the namespace readable after etcd resumed",
        Duration::from_secs(60),
        || async { namespaces.get(&ns).await.ok() },
    )
    .await;

    cp.restart(testkit::Part::ApiServer, &[]).await.unwrap();
    let client = cp.client().await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .get(&ns)
        .await
        .expect("the namespace survives an API server restart");

    cp.restart(
        testkit::Part::ControllerManager,
        &["--kube-api-qps=20", "--kube-api-burst=30"],
    )
    .await
    .unwrap();
    let kcm = pids_mentioning("--kube-api-qps=20");
    assert!(
        kcm.iter()
            .any(|pid| std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("--kube-api-burst=30"))),
        "kube-controller-manager was not restarted with the overridden flags"
    );
    // It still works: a ReplicaSet gets its Pod.
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "after-restart"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "r"}},
                 "template": {"metadata": {"labels": {"app": "r"}},
                              "spec": {"containers": [{"name": "c", "image": "x"}]}}}
    }))
    .unwrap();
    Api::<ReplicaSet>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &rs)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    wait_for(
        "a Pod from the restarted controller manager",
        Duration::from_secs(60),
        || async {
            pods.list(&ListParams::default())
                .await
                .ok()
                .filter(|l| !l.items.is_empty())
        },
    )
    .await;
}
