//! Shared helpers for the end-to-end tests: the CRDs installed once per test binary, the
//! operator as a real child process (`autoheal run`), podsim in-process, ScalingGroup
//! manifests, and waits on Instances and Pods of a group.
//!
//! Use from a test file with `mod support;` and `use support::*;`. Every test works in its
//! own namespace with its own operator and podsim, so tests in one binary run concurrently:
//!
//! ```ignore
//! let env = support::Env::new("scale").await;           // control plane, CRDs, namespace, podsim
//! let _op = env.operator();                              // `autoheal run --namespace NS`
//! env.apply_group(&GroupBuilder::new("web").desired(3).build()).await;
//! env.wait_in_service("web", 3).await;
//! ```
#![allow(dead_code)]

pub mod helm;
pub mod invariants;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use autoheal::api::{
    HealthStatus, HookResult, HookTransition, Instance, InstanceTemplate, InstanceTemplateSpec,
    LABEL_GROUP, LifecycleHook, LifecycleState, PodTemplate, Process, ScaleInPolicy, ScalingGroup,
    ScalingGroupSpec,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, Pod, PodSpec, PodTemplateSpec,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use testkit::{AuditWrite, ControlPlane, test_namespace, wait_for};

/// How long the e2e waits allow by default (generous: the machine is shared).
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// Field manager of the tests' own server-side applies.
const TEST_MANAGER: &str = "autoheal-tests";

/// Installs the CRDs from `crds/*.yaml` (server-side apply, idempotent) and waits until they
/// are Established. Runs once per test binary; later calls return at once.
pub async fn install_crds(cp: &ControlPlane) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| apply_crds(cp)).await;
}

/// Installs the CRDs on `cp` as [`install_crds`] does, every time it is called (for a
/// private control plane besides the shared one).
pub async fn apply_crds(cp: &ControlPlane) {
    {
        let client = cp.client().await;
        let crds: Api<CustomResourceDefinition> = Api::all(client);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        let mut names = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            let crd: CustomResourceDefinition = serde_yaml::from_str(&text)
                .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
            let name = crd.name_any();
            crds.patch(
                &name,
                &PatchParams::apply(TEST_MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
            names.push(name);
        }
        for name in names {
            tokio::time::timeout(
                TIMEOUT,
                await_condition(crds.clone(), &name, conditions::is_crd_established()),
            )
            .await
            .unwrap_or_else(|_| panic!("CRD {name} not Established"))
            .unwrap();
        }
    }
}

/// The zone label value of zone `short` in the test namespace `ns`: `<ns>-<short>`.
pub fn zone_name(ns: &str, short: &str) -> String {
    format!("{ns}-{short}")
}

/// Picks a podsim IP prefix `[127, N]` unique within this test binary (never 127.0).
fn next_ip_prefix() -> [u8; 2] {
    static NEXT: AtomicU8 = AtomicU8::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Spread test binaries apart a little by the process id, stay within 20..=249.
    let base = (std::process::id() % 7) as u16 * 30;
    [127, 20 + ((base + u16::from(n)) % 230) as u8]
}

/// Starts podsim for namespace `ns` in this process (a tokio task on the caller's runtime):
/// one simulated Node named after the namespace, Pod IPs in a `127.N` prefix unique to the
/// test. Abort the handle (or let the test's runtime end) to stop it.
pub async fn start_podsim(
    cp: &ControlPlane,
    ns: &str,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    start_podsim_with(cp, ns, 1, &[]).await
}

/// Starts podsim for namespace `ns` like [`start_podsim`], with `nodes` simulated Nodes
/// (`podsim-<ns>-<i>`) labelled round-robin with the zones `zones` (each already made unique
/// to the test, see [`Env::zone`]; none: no zone label).
pub async fn start_podsim_with(
    cp: &ControlPlane,
    ns: &str,
    nodes: usize,
    zones: &[String],
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let client = cp.client().await;
    let config = podsim::Config {
        namespace: Some(ns.to_string()),
        node_prefix: format!("podsim-{ns}"),
        ip_prefix: Some(next_ip_prefix()),
        nodes,
        zones: zones.to_vec(),
        ..Default::default()
    };
    tokio::spawn(podsim::run(client, config))
}

/// The operator (`autoheal run --namespace NS`) as a child process, killed on drop.
///
/// Its stdout and stderr go to a log file in a temp directory (appended across restarts);
/// when a test panics, the log's tail is printed and the file kept.
pub struct Operator {
    child: Option<Child>,
    args: Vec<String>,
    admin_port: u16,
    kubeconfig: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    namespace: String,
    starts: usize,
}

impl Operator {
    /// Starts `autoheal run --namespace NS --admin-addr 127.0.0.1:PORT --lease-namespace NS` with
    /// a leader identity that stays the same across [`Operator::restart`] (as a restarted
    /// container keeps its Pod name), so a restart takes the lease over at once.
    pub fn start(cp: &ControlPlane, ns: &str) -> Operator {
        Self::start_with(cp, ns, &[])
    }

    /// As [`Operator::start`], with extra command-line arguments.
    pub fn start_with(cp: &ControlPlane, ns: &str, extra: &[&str]) -> Operator {
        let mut args = vec!["--lease-namespace", ns];
        args.extend_from_slice(extra);
        Self::start_as(cp.kubeconfig_path(), ns, &args)
    }

    /// Starts `autoheal run --namespace NS --admin-addr 127.0.0.1:PORT --leader-identity …`
    /// with the given kubeconfig and extra arguments (e.g. `--lease-namespace`). PORT is a
    /// free port picked now and kept across [`Operator::restart`]s (see
    /// [`Operator::admin_url`]).
    pub fn start_as(kubeconfig: &Path, ns: &str, extra: &[&str]) -> Operator {
        Self::start_named(kubeconfig, ns, &format!("autoheal-test-{ns}"), extra)
    }

    /// One of several replicas: `autoheal run --namespace NS --admin-addr 127.0.0.1:PORT
    /// --leader-identity IDENTITY` plus `extra` (e.g. `--lease-namespace`), with its own
    /// log file. Replicas with distinct identities compete for the same Lease.
    pub fn start_named(kubeconfig: &Path, ns: &str, identity: &str, extra: &[&str]) -> Operator {
        let dir = std::env::temp_dir().join(format!(
            "autoheal-operator-{ns}-{identity}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let admin_port = free_port();
        let mut args: Vec<String> = [
            "run",
            "--namespace",
            ns,
            "--admin-addr",
            &format!("127.0.0.1:{admin_port}"),
            "--leader-identity",
            identity,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut op = Operator {
            child: None,
            args,
            admin_port,
            kubeconfig: kubeconfig.to_path_buf(),
            log: dir.join("operator.log"),
            dir,
            namespace: ns.to_string(),
            starts: 0,
        };
        op.spawn();
        op
    }

    fn spawn(&mut self) {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(log, "==== autoheal {} ====", self.args.join(" ")).unwrap();
        let err = log.try_clone().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_autoheal"))
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("AUTOHEAL_TEST_LOG").unwrap_or_else(|_| "info,autoheal=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawning the autoheal binary");
        self.child = Some(child);
        self.starts += 1;
    }

    /// Waits until the current run answers `200` on `/readyz` (its caches have synced and its
    /// controllers start). After a [`Operator::restart`] the answer comes from the new
    /// process: the previous one was killed and reaped before the new one was spawned.
    pub async fn wait_ready(&self) {
        wait_for("the operator to answer 200 on /readyz", TIMEOUT, || async {
            if let Ok(text) = std::fs::read_to_string(&self.log) {
                // The port picked for the admin endpoints was taken meanwhile: say so now
                // rather than time out.
                let last_run = text.rsplit("==== autoheal ").next().unwrap_or_default();
                assert!(
                    !last_run.contains("cannot listen on admin address"),
                    "the operator could not bind its admin port {}:\n{}",
                    self.admin_port,
                    self.log_tail(20)
                );
            }
            let (status, _) = self.get("/readyz").await?;
            (status == 200).then_some(())
        })
        .await;
    }

    /// The base URL of the admin endpoints, e.g. `http://127.0.0.1:41234`.
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// `GET path` on the admin endpoints: the status code and body, or `None` when the
    /// operator does not answer (not started yet, or gone).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(("127.0.0.1", self.admin_port), path).await
    }

    /// The `/metrics` text of the running process (its counters start at 0 with each start).
    pub async fn metrics(&self) -> Option<String> {
        match self.get("/metrics").await? {
            (200, body) => Some(body),
            _ => None,
        }
    }

    /// The value of one series of `/metrics`, written as it appears there, e.g.
    /// `autoheal_reconcile_duration_seconds_count{controller="instance"}`; `None` when the
    /// operator does not answer or does not export the series (yet).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics().await?, series)
    }

    /// How many reconciles of `controller` (`instance` or `scalinggroup`) the running process has
    /// finished (0 before its first).
    pub async fn reconciles(&self, controller: &str) -> Option<u64> {
        let series =
            format!("autoheal_reconcile_duration_seconds_count{{controller=\"{controller}\"}}");
        let text = self.metrics().await?;
        Some(metric_value(&text, &series).map_or(0, |v| v as u64))
    }

    /// Waits until the running process is ready and has finished at least `n` reconciles of
    /// Instances (counted since it started): with `n` the number of Instances, it has looked
    /// at every one of them (each start queues every Instance once). Returns the count.
    pub async fn wait_instance_reconciles(&self, n: usize) -> u64 {
        self.wait_ready().await;
        wait_for(
            &format!("the operator to finish {n} reconciles of Instances since its start"),
            TIMEOUT,
            || async {
                let done = self.reconciles("instance").await?;
                (done >= n as u64).then_some(done)
            },
        )
        .await
    }

    /// The operator's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the operator with SIGKILL (no chance to clean up) and reaps it.
    pub fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (a graceful stop: drain, release the Lease) without waiting.
    pub fn sigterm(&self) {
        if let Some(child) = self.child.as_ref() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
    }

    /// Waits (polling, at most `timeout`) until the process exits by itself; reaps it and
    /// returns its status. Panics on timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                self.child = None;
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the operator did not exit within {timeout:?}:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `/readyz` answers 200 now (it leads and its caches are synced).
    pub async fn is_ready(&self) -> bool {
        matches!(self.get("/readyz").await, Some((200, _)))
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts the operator again with the same arguments (after [`Operator::sigkill`], or
    /// killing it first if it still runs).
    pub fn restart(&mut self) {
        self.sigkill();
        self.spawn();
    }

    /// Whether the process has exited on its own (returns its status).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The log file (stdout and stderr of every run).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(256 * 1024)));
            let _ = f.read_to_string(&mut text);
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.sigkill();
        if std::thread::panicking() {
            eprintln!(
                "---- operator log (namespace {}, {}), last 150 lines ----\n{}\n---- end of operator log ----",
                self.namespace,
                self.log.display(),
                self.log_tail(150)
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Name prefix of the ConfigMaps [`Env::flush_audit`] creates.
pub const AUDIT_MARKER: &str = "audit-marker-";

/// Whether an audit event is the creation of an [`Env::flush_audit`] marker.
pub fn is_audit_marker(w: &AuditWrite) -> bool {
    w.resource == "configmaps" && w.name.starts_with(AUDIT_MARKER)
}

/// The operator's writes (User-Agent `autoheal/…`) in `writes`.
pub fn by_operator(writes: &[AuditWrite]) -> impl Iterator<Item = &AuditWrite> {
    writes
        .iter()
        .filter(|w| w.user_agent.starts_with("autoheal/"))
}

/// How many of the operator's writes in `writes` are `verb` on `resource` (subresource `sub`,
/// empty: the main resource) named `name` (empty: any name).
pub fn count_writes(
    writes: &[AuditWrite],
    verb: &str,
    resource: &str,
    sub: &str,
    name: &str,
) -> usize {
    by_operator(writes)
        .filter(|w| {
            w.verb == verb
                && w.resource == resource
                && w.subresource == sub
                && (name.is_empty() || w.name == name)
        })
        .count()
}

/// Whether an audited write took effect (2xx).
pub fn took_effect(w: &AuditWrite) -> bool {
    (200..300).contains(&w.code)
}

/// Whether an audited write was cut off: its client went away mid-request (a SIGKILLed
/// leader), and the API server answered nobody 504. etcd may still have committed it.
pub fn cut_off(w: &AuditWrite) -> bool {
    w.code == 504
}

/// Asserts that the operator did `verb` on `resource` named `name` (empty: any name) once:
/// exactly one such write took effect, or none did and one was cut off by a kill (it may have
/// been committed, and the next leader found it done). `summary` goes into the message.
pub fn assert_once(
    writes: &[AuditWrite],
    verb: &str,
    resource: &str,
    name: &str,
    summary: &[String],
) {
    let tries: Vec<&AuditWrite> = by_operator(writes)
        .filter(|w| {
            w.verb == verb
                && w.resource == resource
                && w.subresource.is_empty()
                && (name.is_empty() || w.name == name)
        })
        .collect();
    let took = tries.iter().filter(|w| took_effect(w)).count();
    let cut = tries.iter().filter(|w| cut_off(w)).count();
    assert!(
        took == 1 || (took == 0 && cut >= 1),
        "{verb} {resource}/{name} once (took effect: {took}, cut off: {cut}): {summary:#?}"
    );
}

/// Asserts that the operator's `writes` launched one Instance and one Pod (one replacement),
/// and returns a summary of its writes (with each answer's code) for the caller's further
/// messages. Of each kind, one create took effect, or none did and one was cut off by a kill
/// (committed or not: the follower then creates none or one). Whatever the codes say, the
/// watch (`report`) saw exactly one object of each kind among the names created, and one Pod
/// (one uid) under that name: a cut-off create that etcd committed next to the follower's own
/// would show as two.
pub fn assert_one_launch(writes: &[AuditWrite], report: &invariants::Report) -> Vec<String> {
    let summary: Vec<String> = by_operator(writes)
        .map(|w| {
            format!(
                "{} {} {}/{} -> {}",
                w.user_agent, w.verb, w.resource, w.name, w.code
            )
        })
        .collect();
    for resource in ["instances", "pods"] {
        assert_once(writes, "create", resource, "", &summary);
        let created: BTreeSet<&str> = by_operator(writes)
            .filter(|w| w.verb == "create" && w.resource == resource && w.subresource.is_empty())
            .map(|w| w.name.as_str())
            .filter(|name| match resource {
                "instances" => report.instances.contains_key(*name),
                _ => report.pods.contains_key(*name),
            })
            .collect();
        assert_eq!(
            created.len(),
            1,
            "one of the {resource} created exists (seen by the watch): {created:?}; {summary:#?}"
        );
    }
    for w in by_operator(writes).filter(|w| w.verb == "create" && w.resource == "pods") {
        if let Some(seen) = report.pods.get(&w.name) {
            assert_eq!(
                seen.uids.len(),
                1,
                "one Pod under the name {}: {summary:#?}",
                w.name
            );
        }
    }
    summary
}

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// A plain HTTP/1.1 `GET path` to `addr` (`Connection: close`): the status code and body, or
/// `None` when the connection fails or the answer does not come within 10 s.
pub async fn http_get(addr: impl tokio::net::ToSocketAddrs, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
}

/// The value of `series` (name and labels exactly as written, e.g.
/// `autoheal_probe_results_total{kind="http",result="success"}`) in a Prometheus text page.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(series))
            .then(|| parts.next()?.parse().ok())
            .flatten()
    })
}

/// One test's world: the shared control plane (CRDs installed), an admin client, a fresh
/// namespace, and podsim running in it.
pub struct Env {
    /// The shared control plane.
    pub cp: &'static ControlPlane,
    /// An admin client.
    pub client: Client,
    /// The test's namespace.
    pub ns: String,
    /// podsim for the namespace.
    pub podsim: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.podsim.abort();
    }
}

impl Env {
    /// Control plane + CRDs + namespace `<prefix>-xxxxxx` + podsim.
    pub async fn new(prefix: &str) -> Env {
        Self::with_nodes(prefix, 1, &[]).await
    }

    /// Like [`Env::new`], with podsim simulating `nodes` Nodes labelled round-robin with the
    /// zones `zones` (short names such as `a`; the Nodes carry [`Env::zone`] of each, unique to
    /// the test, so that tests sharing the control plane never share a zone).
    pub async fn with_nodes(prefix: &str, nodes: usize, zones: &[&str]) -> Env {
        let cp = ControlPlane::shared().await;
        install_crds(cp).await;
        Self::on(cp, prefix, nodes, zones).await
    }

    /// Like [`Env::with_nodes`], on the control plane `cp` (its CRDs already installed, see
    /// [`apply_crds`]): e.g. a private one a test may restart or pause.
    pub async fn on(cp: &'static ControlPlane, prefix: &str, nodes: usize, zones: &[&str]) -> Env {
        let client = cp.client().await;
        let ns = test_namespace(&client, prefix).await;
        let zones: Vec<String> = zones.iter().map(|z| zone_name(&ns, z)).collect();
        let podsim = start_podsim_with(cp, &ns, nodes, &zones).await;
        Env {
            cp,
            client,
            ns,
            podsim,
        }
    }

    /// The zone label value of this test's zone `short` (`<namespace>-<short>`).
    pub fn zone(&self, short: &str) -> String {
        zone_name(&self.ns, short)
    }

    /// This test's simulated Nodes (`podsim-<namespace>-<i>`), by name.
    pub async fn nodes(&self) -> Vec<k8s_openapi::api::core::v1::Node> {
        let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        let prefix = format!("podsim-{}-", self.ns);
        let mut nodes: Vec<_> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|n| n.name_any().starts_with(&prefix))
            .collect();
        nodes.sort_by_key(|n| n.name_any());
        nodes
    }

    /// Makes podsim's Node `name` NotReady (`not_ready`) or Ready again, through its
    /// `podsim.autoheal.dev/behavior` annotation.
    pub async fn set_node_not_ready(&self, name: &str, not_ready: bool) {
        let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        let value = not_ready.then_some(podsim::NODE_NOT_READY);
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": { "annotations": { podsim::BEHAVIOR_ANNOTATION: value } }
            })),
        )
        .await
        .unwrap();
    }

    /// Sets podsim's behavior annotation (`podsim.autoheal.dev/behavior`) on a Pod.
    pub async fn set_pod_behavior(&self, pod: &str, behavior: &str) {
        let patch = serde_json::json!({
            "metadata": { "annotations": { "podsim.autoheal.dev/behavior": behavior } }
        });
        self.pods()
            .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("annotating Pod {pod}: {e}"));
    }

    /// The Events (events.k8s.io) of the namespace about the object named `name`.
    pub async fn events_about(&self, name: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), &self.ns);
        api.list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect()
    }

    /// Starts the operator for this namespace.
    pub fn operator(&self) -> Operator {
        Operator::start(self.cp, &self.ns)
    }

    /// ScalingGroups of the namespace.
    pub fn groups(&self) -> Api<ScalingGroup> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Instances of the namespace.
    pub fn instances(&self) -> Api<Instance> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Pods of the namespace.
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates or updates a ScalingGroup (server-side apply by the tests' field manager).
    pub async fn apply_group(&self, group: &ScalingGroup) -> ScalingGroup {
        self.groups()
            .patch(
                &group.name_any(),
                &PatchParams::apply(TEST_MANAGER).force(),
                &Patch::Apply(group),
            )
            .await
            .unwrap_or_else(|e| panic!("applying ScalingGroup {}: {e}", group.name_any()))
    }

    /// Merge-patches a ScalingGroup.
    pub async fn patch_group(&self, name: &str, patch: serde_json::Value) -> ScalingGroup {
        self.groups()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap_or_else(|e| panic!("patching ScalingGroup {name}: {e}"))
    }

    /// Merge-patches an Instance.
    pub async fn patch_instance(&self, name: &str, patch: serde_json::Value) -> Instance {
        self.instances()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap_or_else(|e| panic!("patching Instance {name}: {e}"))
    }

    /// Sets (or with `None` removes) an annotation on an Instance.
    pub async fn annotate_instance(&self, name: &str, key: &str, value: Option<&str>) -> Instance {
        self.patch_instance(
            name,
            serde_json::json!({ "metadata": { "annotations": { key: value } } }),
        )
        .await
    }

    /// Sets (or with `None` removes) an annotation on a ScalingGroup.
    pub async fn annotate_group(&self, name: &str, key: &str, value: Option<&str>) -> ScalingGroup {
        self.patch_group(
            name,
            serde_json::json!({ "metadata": { "annotations": { key: value } } }),
        )
        .await
    }

    /// The group as stored now.
    pub async fn group(&self, name: &str) -> ScalingGroup {
        self.groups()
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("getting ScalingGroup {name}: {e}"))
    }

    /// The Instance as stored now, if it exists.
    pub async fn instance(&self, name: &str) -> Option<Instance> {
        self.instances().get_opt(name).await.unwrap()
    }

    /// Deletes an Instance (a request to terminate it gracefully).
    pub async fn delete_instance(&self, name: &str) {
        self.instances()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting Instance {name}: {e}"));
    }

    /// The group's Instances (label `autoheal.dev/group`), sorted by name.
    pub async fn group_instances(&self, group: &str) -> Vec<Instance> {
        list_instances(&self.client, &self.ns, group).await
    }

    /// The group's Pods (label `autoheal.dev/group`), sorted by name.
    pub async fn group_pods(&self, group: &str) -> Vec<Pod> {
        list_pods(&self.client, &self.ns, group).await
    }

    /// Waits until the group has exactly `n` Instances, all InService, each with a running
    /// Pod, and no other Instance or Pod (terminations finished). Returns the Instances.
    pub async fn wait_in_service(&self, group: &str, n: usize) -> Vec<Instance> {
        wait_in_service(&self.client, &self.ns, group, n, TIMEOUT).await
    }

    /// Waits until the group has exactly `n` Pods, all labelled `autoheal.dev/in-service=true`
    /// (the label comes with the Pod's creation, or follows the InService record by a moment).
    pub async fn wait_pods_in_service(&self, group: &str, n: usize) -> Vec<Pod> {
        wait_for(
            &format!("{n} Pods of group {group} labelled in service"),
            TIMEOUT,
            || async {
                let pods = self.group_pods(group).await;
                (pods.len() == n && pods.iter().all(pod_in_service)).then_some(pods)
            },
        )
        .await
    }

    /// Waits until the group's status shows the condition `type_` with `status`.
    pub async fn wait_group_condition(
        &self,
        group: &str,
        type_: &str,
        status: &str,
    ) -> ScalingGroup {
        let groups = self.groups();
        wait_for(
            &format!("ScalingGroup {group} condition {type_}={status}"),
            TIMEOUT,
            || async {
                let g = groups.get_opt(group).await.ok().flatten()?;
                let ok = g.status.as_ref().is_some_and(|s| {
                    s.observed_generation == g.metadata.generation
                        && s.conditions
                            .iter()
                            .any(|c| c.type_ == type_ && c.status == status)
                });
                ok.then_some(g)
            },
        )
        .await
    }

    /// Waits until an Instance is in `state`; returns it.
    pub async fn wait_instance_state(&self, name: &str, state: LifecycleState) -> Instance {
        let api = self.instances();
        wait_for(&format!("Instance {name} in {state}"), TIMEOUT, || async {
            let i = api.get_opt(name).await.ok().flatten()?;
            (state_of(&i) == Some(state)).then_some(i)
        })
        .await
    }

    /// The holder of the Lease `name` in the test's namespace (`None`: released or missing).
    pub async fn lease_holder(&self, name: &str) -> Option<String> {
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(self.client.clone(), &self.ns)
            .get_opt(name)
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity
    }

    /// Waits until an Instance is gone.
    pub async fn wait_instance_gone(&self, name: &str) {
        let api = self.instances();
        wait_for(&format!("Instance {name} gone"), TIMEOUT, || async {
            match api.get_opt(name).await {
                Ok(None) => Some(()),
                _ => None,
            }
        })
        .await
    }

    /// Where the audit log ends now: pass it to [`Env::writes_after`] or
    /// [`Env::expect_no_writes`] to look only at what comes later.
    pub fn audit_end(&self) -> u64 {
        testkit::audit_log_end(self.cp.audit_log_path())
    }

    /// The write events appended to the audit log from `offset` on (see [`Env::audit_end`]),
    /// of this test's namespace only, and the offset to read on from.
    pub fn writes_after(&self, offset: u64) -> (Vec<AuditWrite>, u64) {
        let (writes, next) = testkit::audit_writes_after(self.cp.audit_log_path(), offset);
        let ours = writes
            .into_iter()
            .filter(|w| w.namespace == self.ns)
            .collect();
        (ours, next)
    }

    /// Makes a write of the tests' own — creates a ConfigMap `audit-marker-N` in the namespace
    /// (see [`is_audit_marker`]) — and waits until the audit log shows it. The API server logs
    /// each write as it answers it, so once the marker is there, so is every write answered
    /// before the marker was sent.
    pub async fn flush_audit(&self) {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("{AUDIT_MARKER}{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let mut offset = self.audit_end();
        let marker = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<ConfigMap>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &marker)
            .await
            .unwrap_or_else(|e| panic!("creating the audit marker {name}: {e}"));
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let (writes, next) = self.writes_after(offset);
            offset = next;
            if writes
                .iter()
                .any(|w| w.resource == "configmaps" && w.verb == "create" && w.name == name)
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the audit marker {name} never showed in the audit log"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Watches the audit log for `window`: fails as soon as a write of this namespace that
    /// `unwanted` accepts shows up among those logged from `offset` on (see
    /// [`Env::audit_end`]), and looks once more after the window, when [`Env::flush_audit`]
    /// has made sure every write answered within it is in the log. Audit markers are never
    /// passed to `unwanted`. Returns the offset just past the window (after the flush).
    pub async fn expect_no_writes(
        &self,
        offset: u64,
        window: Duration,
        what: &str,
        unwanted: impl Fn(&AuditWrite) -> bool,
    ) -> u64 {
        let mut offset = offset;
        let end = tokio::time::Instant::now() + window;
        let check = |offset: &mut u64| {
            let (writes, next) = self.writes_after(*offset);
            *offset = next;
            let bad: Vec<_> = writes
                .into_iter()
                .filter(|w| !is_audit_marker(w) && unwanted(w))
                .collect();
            assert!(bad.is_empty(), "{what}: {bad:#?}");
        };
        while tokio::time::Instant::now() < end {
            check(&mut offset);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.flush_audit().await;
        check(&mut offset);
        offset
    }

    /// Runs kubectl against the control plane; panics unless it succeeds; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = kubectl(self.cp, args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Runs `kubectl ARGS` (kubeconfig set) and returns its output, whatever its exit status.
pub fn kubectl(cp: &ControlPlane, args: &[&str]) -> Output {
    cp.kubectl()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running kubectl")
}

/// The lifecycle state recorded in an Instance's status.
pub fn state_of(instance: &Instance) -> Option<LifecycleState> {
    instance.status.as_ref().and_then(|s| s.lifecycle_state)
}

/// Whether a Pod carries `autoheal.dev/in-service: "true"`.
pub fn pod_in_service(pod: &Pod) -> bool {
    pod.labels()
        .get(autoheal::api::LABEL_IN_SERVICE)
        .is_some_and(|v| v == "true")
}

/// The group's Instances, sorted by name.
pub async fn list_instances(client: &Client, ns: &str, group: &str) -> Vec<Instance> {
    let api: Api<Instance> = Api::namespaced(client.clone(), ns);
    let mut items = api
        .list(&ListParams::default().labels(&format!("{LABEL_GROUP}={group}")))
        .await
        .unwrap()
        .items;
    items.sort_by_key(|i| i.name_any());
    items
}

/// The group's Pods, sorted by name.
pub async fn list_pods(client: &Client, ns: &str, group: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut items = api
        .list(&ListParams::default().labels(&format!("{LABEL_GROUP}={group}")))
        .await
        .unwrap()
        .items;
    items.sort_by_key(|p| p.name_any());
    items
}

/// Waits until the group has exactly `n` Instances, all InService with a running Pod, and
/// exactly `n` Pods.
pub async fn wait_in_service(
    client: &Client,
    ns: &str,
    group: &str,
    n: usize,
    timeout: Duration,
) -> Vec<Instance> {
    wait_for(
        &format!("{n} InService instances (and nothing else) in group {ns}/{group}"),
        timeout,
        || async {
            let instances = list_instances(client, ns, group).await;
            let pods = list_pods(client, ns, group).await;
            let all_in_service = instances.iter().all(|i| {
                state_of(i) == Some(LifecycleState::InService)
                    && i.metadata.deletion_timestamp.is_none()
            });
            let pods_running = pods.iter().all(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            });
            (instances.len() == n && pods.len() == n && all_in_service && pods_running)
                .then_some(instances)
        },
    )
    .await
}

/// Builds a ScalingGroup manifest of podsim-friendly Pods (one container `app` serving HTTP
/// on port 8080, termination grace period 1 s) with test-friendly timings: grace period 0,
/// deregistration delay 1 s.
#[derive(Debug, Clone)]
pub struct GroupBuilder {
    name: String,
    spec: ScalingGroupSpec,
    annotations: BTreeMap<String, String>,
}

impl GroupBuilder {
    /// A group `name` with min 0, max 10, desired 1.
    pub fn new(name: &str) -> Self {
        let pod = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), name.to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some("registry.example/web:1".into()),
                    ports: Some(vec![ContainerPort {
                        container_port: 8080,
                        name: Some("http".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                termination_grace_period_seconds: Some(1),
                ..Default::default()
            }),
        };
        let mut spec: ScalingGroupSpec = serde_json::from_value(serde_json::json!({
            "minSize": 0,
            "maxSize": 10,
            "desiredCapacity": 1,
            "template": { "spec": { "podTemplate": {} } },
        }))
        .unwrap();
        spec.template = InstanceTemplate {
            metadata: None,
            spec: InstanceTemplateSpec {
                pod_template: PodTemplate::new(pod),
            },
        };
        spec.health_check.grace_period_seconds = 0;
        spec.replacement.deregistration_delay_seconds = 1;
        GroupBuilder {
            name: name.into(),
            spec,
            annotations: BTreeMap::new(),
        }
    }

    /// `minSize`.
    pub fn min(mut self, n: i32) -> Self {
        self.spec.min_size = n;
        self
    }

    /// `maxSize`.
    pub fn max(mut self, n: i32) -> Self {
        self.spec.max_size = n;
        self
    }

    /// `desiredCapacity` (`None`: unset, follows minSize).
    pub fn desired(mut self, n: impl Into<Option<i32>>) -> Self {
        self.spec.desired_capacity = n.into();
        self
    }

    /// `replacement.deregistrationDelaySeconds`.
    pub fn deregistration_delay(mut self, seconds: i32) -> Self {
        self.spec.replacement.deregistration_delay_seconds = seconds;
        self
    }

    /// The Pods' `terminationGracePeriodSeconds`.
    pub fn termination_grace(mut self, seconds: i64) -> Self {
        if let Some(spec) = self.spec.template.spec.pod_template.spec.as_mut() {
            spec.termination_grace_period_seconds = Some(seconds);
        }
        self
    }

    /// Adds a lifecycle hook.
    pub fn hook(
        mut self,
        name: &str,
        transition: HookTransition,
        heartbeat_timeout_seconds: i32,
        default_result: HookResult,
    ) -> Self {
        self.spec.lifecycle_hooks.push(LifecycleHook {
            name: name.into(),
            transition,
            heartbeat_timeout_seconds,
            default_result,
        });
        self
    }

    /// `scaleIn.policy`.
    pub fn scale_in(mut self, policy: ScaleInPolicy) -> Self {
        self.spec.scale_in.policy = policy;
        self
    }

    /// Adds a suspended process.
    pub fn suspend(mut self, process: Process) -> Self {
        self.spec.suspended_processes.push(process);
        self
    }

    /// An HTTP probe on port 8080 path `/`.
    pub fn http_probe(mut self) -> Self {
        self.spec.health_check.probe = Some(
            serde_json::from_value(serde_json::json!({
                "http": { "port": 8080, "path": "/" },
                "intervalSeconds": 1,
                "timeoutSeconds": 1,
                "healthyThreshold": 1,
                "unhealthyThreshold": 2,
            }))
            .unwrap(),
        );
        self
    }

    /// A Pod annotation (e.g. `podsim.autoheal.dev/behavior`).
    pub fn pod_annotation(mut self, key: &str, value: &str) -> Self {
        let meta = self
            .spec
            .template
            .spec
            .pod_template
            .metadata
            .get_or_insert_with(Default::default);
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
        self
    }

    /// An annotation on the ScalingGroup itself.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Direct access to the spec for anything not covered above.
    pub fn with_spec(mut self, f: impl FnOnce(&mut ScalingGroupSpec)) -> Self {
        f(&mut self.spec);
        self
    }

    /// The ScalingGroup object.
    pub fn build(self) -> ScalingGroup {
        let mut group = ScalingGroup::new(&self.name, self.spec);
        if !self.annotations.is_empty() {
            group.metadata.annotations = Some(self.annotations);
        }
        group
    }

    /// The ScalingGroup as YAML (for `kubectl apply -f -`).
    pub fn yaml(self) -> String {
        serde_yaml::to_string(&self.build()).unwrap()
    }
}

/// Whether an Instance's status says Healthy.
pub fn is_healthy(instance: &Instance) -> bool {
    instance.status.as_ref().and_then(|s| s.health_status) == Some(HealthStatus::Healthy)
}
