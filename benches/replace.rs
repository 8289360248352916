//! Replacement benchmark (`make bench-replace`): Kubernetes' own ReplicaSet controller
//! (kube-controller-manager) against autoheal's ScalingGroup, side by side on one local
//! control plane, with podsim as the kubelet for both. Prints numbers, asserts nothing.
//!
//! Scenarios, each run `RUNS` times (RS then SG, alternating), fresh namespaces every time:
//!
//! 1. **Lose 10 of 100**: 100 Pods (RS: Running and Ready; SG: 100 Instances InService and
//!    Healthy), then 10 Pods are deleted out of band, concurrently, with their own grace
//!    period. Timed from the deletes until the set is whole again: RS: 100 Ready Pods and no
//!    other Pod (none terminating); SG: 100 Instances InService + Healthy, each with its
//!    Running Pod, and no other Instance or Pod.
//! 2. **Scale 0 → 300**: the RS / SG exists with 0; timed from the scale request until
//!    300 Pods are Running and Ready (RS) / 300 Instances are InService (SG).
//!
//! ScalingGroup settings chosen to match what a ReplicaSet does: health-check grace period 0,
//! deregistration delay 0, `maxInFlight: 100%` (a ReplicaSet replaces every missing Pod at
//! once), no probe, the same Pod template (termination grace period `GRACE_SECONDS`).
//!
//! Conditions are checked on every watch event (reflector stores, plus a 25 ms re-check), so
//! the timing resolution is the watch latency, a few milliseconds.
//!
//! The result table goes to stdout and to `bench/REPLACE.md`; for one ScalingGroup
//! replacement it also prints where the time goes (watch-observed steps and the operator's
//! log lines about the Instance and its replacement).
//!
//! `cargo bench --bench replace [-- --runs N] [-- --only lose|scale|verdict]` (`verdict`:
//! scenario 2 of `make bench`, replace 10 on an Unhealthy verdict, alone); env `REPLACE_BENCH_GRACE`
//! (seconds, default 1); with `REPLACE_BENCH_KEEP=1` the operator logs (`autoheal=debug`) are
//! kept (their directory is printed); `REPLACE_BENCH_OPERATOR=/path/to/autoheal` runs another
//! build of the operator (an A/B in one session: copy one build aside, then alternate).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autoheal::api::{
    ANNOTATION_REPLACES, HealthStatus, Instance, InstanceTemplate, InstanceTemplateSpec,
    LABEL_GROUP, LifecycleState, PodTemplate, ScalingGroup, ScalingGroupSpec,
};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Namespace, Node, Pod, PodSpec, PodTemplateSpec,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use testkit::{ControlPlane, test_namespace};

#[path = "common/mod.rs"]
mod common;
mod suite;

use common::median_secs as median;

/// Field manager of the bench's applies.
const MANAGER: &str = "autoheal-bench";
/// How long one wait may take before the run counts as failed.
const TIMEOUT: Duration = Duration::from_secs(300);
/// Re-check interval on top of watch events.
const RECHECK: Duration = Duration::from_millis(25);

fn grace_seconds() -> i64 {
    std::env::var("REPLACE_BENCH_GRACE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

// ---- watching ------------------------------------------------------------------------------

/// One step seen by a watch: when, which object, what.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    kind: &'static str,
    name: String,
    what: String,
}

/// A reflector store of one kind in one namespace, woken on every event, optionally logging
/// every observed transition of every object.
struct Watched<K: Resource + Clone + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store: Store<K>,
    changed: Arc<tokio::sync::Notify>,
    log: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<K: Resource + Clone + 'static> Drop for Watched<K>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<K> Watched<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    /// Starts watching; `describe` summarizes an object (a change of summary is logged).
    async fn start(api: Api<K>, kind: &'static str, describe: fn(&K) -> String) -> Self {
        let (store, writer) = reflector::store();
        let changed = Arc::new(tokio::sync::Notify::new());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (c, l) = (changed.clone(), log.clone());
        let task = tokio::spawn(async move {
            let mut last: BTreeMap<String, String> = BTreeMap::new();
            let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
                .default_backoff();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let at = Instant::now();
                let mut note = |name: String, what: String| {
                    if last.get(&name) != Some(&what) {
                        last.insert(name.clone(), what.clone());
                        l.lock().unwrap().push(Seen {
                            at,
                            kind,
                            name,
                            what,
                        });
                    }
                };
                match event {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                        note(o.name_any(), describe(&o))
                    }
                    Ok(watcher::Event::Delete(o)) => note(o.name_any(), "gone".into()),
                    _ => {}
                }
                c.notify_waiters();
            }
        });
        store
            .wait_until_ready()
            .await
            .expect("a watch never became ready");
        Watched {
            store,
            changed,
            log,
            task,
        }
    }

    fn state(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
}

/// Waits until `check` holds over the objects of the watches; returns when it was seen.
async fn until<F>(
    what: &str,
    changed: &[&tokio::sync::Notify],
    mut check: F,
) -> Result<Instant, String>
where
    F: FnMut() -> Result<(), String>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let notified: Vec<_> = changed.iter().map(|n| n.notified()).collect();
        let last = match check() {
            Ok(()) => return Ok(Instant::now()),
            Err(state) => state,
        };
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}: {last}"));
        }
        let any = futures::future::select_all(notified.into_iter().map(Box::pin));
        let _ = tokio::time::timeout(RECHECK, any).await;
    }
}

// ---- object predicates ---------------------------------------------------------------------

fn pod_phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_summary(p: &Pod) -> String {
    let mut s = if p.metadata.deletion_timestamp.is_some() {
        "terminating".to_string()
    } else if pod_phase(p).is_empty() {
        "created".to_string()
    } else {
        pod_phase(p).to_string()
    };
    if pod_ready(p) {
        s.push_str(" Ready");
    }
    if p.labels()
        .get(autoheal::api::LABEL_IN_SERVICE)
        .is_some_and(|v| v == "true")
    {
        s.push_str(" in-service-label");
    }
    s
}

fn inst_state(i: &Instance) -> Option<LifecycleState> {
    i.status.as_ref().and_then(|s| s.lifecycle_state)
}

fn inst_healthy(i: &Instance) -> bool {
    i.status.as_ref().and_then(|s| s.health_status) == Some(HealthStatus::Healthy)
}

fn inst_summary(i: &Instance) -> String {
    let st = i.status.as_ref();
    let mut s = format!(
        "{} {}",
        st.and_then(|s| s.lifecycle_state)
            .map_or("(no state)", |s| s.as_str()),
        st.and_then(|s| s.health_status)
            .map_or("(no health)".to_string(), |h| format!("{h:?}")),
    );
    if i.metadata.deletion_timestamp.is_some() {
        s.push_str(" deleting");
    }
    s
}

// ---- manifests -----------------------------------------------------------------------------

fn pod_template(app: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some([("app".to_string(), app.to_string())].into()),
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
            termination_grace_period_seconds: Some(grace_seconds()),
            ..Default::default()
        }),
    }
}

fn replica_set(name: &str, replicas: i32) -> ReplicaSet {
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some([("app".to_string(), name.to_string())].into()),
                ..Default::default()
            },
            template: Some(pod_template(name)),
            ..Default::default()
        }),
        status: None,
    }
}

/// The fair ScalingGroup: grace period 0, deregistration delay 0, maxInFlight 100%.
fn scaling_group(name: &str, desired: i32, max: i32) -> ScalingGroup {
    let mut spec: ScalingGroupSpec = serde_json::from_value(serde_json::json!({
        "minSize": 0,
        "maxSize": max,
        "desiredCapacity": desired,
        "template": { "spec": { "podTemplate": {} } },
    }))
    .unwrap();
    spec.template = InstanceTemplate {
        metadata: None,
        spec: InstanceTemplateSpec {
            pod_template: PodTemplate::new(pod_template(name)),
        },
    };
    spec.health_check.grace_period_seconds = 0;
    spec.replacement.deregistration_delay_seconds = 0;
    spec.replacement.max_in_flight = IntOrString::String("100%".into());
    ScalingGroup::new(name, spec)
}

// ---- the world of one run ------------------------------------------------------------------

/// The operator as a child process (killed on drop), logging to a file.
struct Operator {
    child: Child,
    log: PathBuf,
    /// Its admin endpoint (`/metrics`), `127.0.0.1:PORT`.
    admin: String,
}

/// A free local port (bound, then released) for an operator's admin endpoint.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

impl Operator {
    fn start(bin: &Path, kubeconfig: &Path, ns: &str, dir: &Path) -> Operator {
        Operator::launch(bin, kubeconfig, ns, dir, "operator", "info,autoheal=debug")
    }

    /// Starts the operator for `ns`, logging at `log_filter` to `<dir>/<name>-<ns>.log`.
    fn launch(
        bin: &Path,
        kubeconfig: &Path,
        ns: &str,
        dir: &Path,
        name: &str,
        log_filter: &str,
    ) -> Operator {
        let log = dir.join(format!("{name}-{ns}.log"));
        let admin = free_addr();
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(bin)
            .args([
                "run",
                "--namespace",
                ns,
                "--admin-addr",
                &admin,
                "--lease-namespace",
                ns,
                "--leader-identity",
                &format!("bench-{ns}"),
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", log_filter)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        Operator { child, log, admin }
    }

    /// `Ok` while the process runs; otherwise how it ended and the end of its log.
    fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            ended => {
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                Err(format!(
                    "the operator is not running ({ended:?}); its log ends:\n{}",
                    tail.join("\n")
                ))
            }
        }
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains("caches synced") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the operator did not sync its caches:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The operator the bench runs: `REPLACE_BENCH_OPERATOR` (another build, for an A/B in one
/// session) or the one cargo built with this bench.
fn operator_binary() -> PathBuf {
    std::env::var_os("REPLACE_BENCH_OPERATOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_autoheal")))
}

/// `target/release/podsim` beside this bench's own binary (`target/release/deps/…`): `make
/// bench` builds it first (`cargo build --release -p podsim`).
fn podsim_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the bench's own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|release| release.join("podsim"))
        .expect("the bench runs from target/<profile>/deps");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p podsim` (`make bench` does)",
        bin.display()
    );
    bin
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Bench {
    cp: ControlPlane,
    client: Client,
    operator_bin: PathBuf,
    dir: PathBuf,
    next_prefix: u8,
    /// Timed windows (label, namespace, from, to) whose API writes are counted at the end.
    windows: Mutex<Vec<(&'static str, String, jiff::Timestamp, jiff::Timestamp)>>,
    /// Appended to the RS labels: which kube-controller-manager client limits ran them.
    kcm: &'static str,
    /// CPU and API server time of the scale-up windows.
    profiles: Mutex<Vec<Profile>>,
}

/// A namespace with podsim running in it; cleaned up (forcibly) by [`Bench::cleanup`].
struct World {
    ns: String,
    podsim: tokio::task::JoinHandle<anyhow::Result<()>>,
    pods: Watched<Pod>,
    /// When each Pod's answers changed (an in-process podsim only; shards record nothing).
    modes: podsim::ModeLog,
}

impl Bench {
    /// A fresh control plane with the CRDs, and a scratch directory `<tmp>/<name>-<pid>`.
    async fn start(name: &str) -> Bench {
        let cp = ControlPlane::start()
            .await
            .expect("starting the control plane");
        let client = cp.client().await;
        install_crds(&cp, &client).await;
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Bench {
            cp,
            client,
            operator_bin: operator_binary(),
            dir,
            next_prefix: 99,
            windows: Mutex::new(Vec::new()),
            kcm: "",
            profiles: Mutex::new(Vec::new()),
        }
    }

    async fn world(&mut self, prefix: &str) -> World {
        self.world_sharded(prefix, &[]).await
    }

    /// A world whose Pods are run by one podsim per entry of `shards` (each the group names
    /// whose Pods it runs, with its own Node and IP prefix), or by one in-process podsim for
    /// the whole namespace when `shards` is empty. podsim handles one Pod at a time, as a
    /// kubelet its own Node's: at 10,000 Pods a single one is what a scale-up waits for.
    ///
    /// Shards run as `podsim` processes (`target/release/podsim`, built by `make bench`), each
    /// under its own open-file limit: in this process their 10,000 listeners and the
    /// operator's probe connections would use up the bench's descriptors (the hard limit
    /// cannot be raised without `CAP_SYS_RESOURCE`), and with them its reads of the
    /// operator's `/proc` and `/metrics`.
    async fn world_sharded(&mut self, prefix: &str, shards: &[Vec<String>]) -> World {
        let ns = test_namespace(&self.client, prefix).await;
        let modes = podsim::ModeLog::new();
        let podsim = if shards.is_empty() {
            self.next_prefix = self.next_prefix.wrapping_add(1).max(100);
            let config = podsim::Config {
                namespace: Some(ns.clone()),
                node_prefix: format!("podsim-{ns}"),
                ip_prefix: Some([127, self.next_prefix]),
                mode_log: Some(modes.clone()),
                ..Default::default()
            };
            tokio::spawn(podsim::run(self.client.clone(), config))
        } else {
            let bin = podsim_binary();
            let mut children = Vec::new();
            for (k, groups) in shards.iter().enumerate() {
                self.next_prefix = self.next_prefix.wrapping_add(1).max(100);
                let log = std::fs::File::create(self.dir.join(format!("podsim-{ns}-{k}.log")))
                    .expect("creating a podsim log");
                let child = tokio::process::Command::new(&bin)
                    .env("KUBECONFIG", self.cp.kubeconfig_path())
                    .env("RUST_LOG", "warn")
                    .args(["--namespace", &ns])
                    .args([
                        "--selector",
                        &format!("{LABEL_GROUP} in ({})", groups.join(",")),
                    ])
                    .args(["--node-prefix", &format!("podsim-{ns}-{k}")])
                    .args(["--ip-prefix", &format!("127.{}", self.next_prefix)])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
                children.push(child);
            }
            // Ends at the first shard that exits. Aborting this task drops the children, which
            // kills them.
            tokio::spawn(async move {
                let mut exits: futures::stream::FuturesUnordered<_> =
                    children.iter_mut().map(|c| c.wait()).collect();
                match exits.next().await {
                    Some(exit) => anyhow::bail!("a podsim shard ended: {}", exit?),
                    None => Ok(()),
                }
            })
        };
        let pods = Watched::start(
            Api::namespaced(self.client.clone(), &ns),
            "Pod",
            pod_summary,
        )
        .await;
        World {
            ns,
            podsim,
            pods,
            modes,
        }
    }

    /// Stops podsim, force-deletes what is left (Pods with grace 0, finalizers removed), the
    /// namespace and podsim's Node, then lets the control plane settle.
    async fn cleanup(&self, world: World) {
        let ns = world.ns.clone();
        world.podsim.abort();
        drop(world);
        let c = &self.client;
        let groups: Api<ScalingGroup> = Api::namespaced(c.clone(), &ns);
        let instances: Api<Instance> = Api::namespaced(c.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
        let rss: Api<ReplicaSet> = Api::namespaced(c.clone(), &ns);
        let _ = rss
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        let unfinalize = serde_json::json!({ "metadata": { "finalizers": null } });
        if let Ok(list) = groups.list(&ListParams::default()).await {
            for g in list {
                let _ = groups
                    .patch(
                        &g.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&unfinalize),
                    )
                    .await;
            }
        }
        let _ = groups
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        if let Ok(list) = instances.list(&ListParams::default()).await {
            let names: Vec<String> = list.items.iter().map(|i| i.name_any()).collect();
            futures::stream::iter(names)
                .for_each_concurrent(16, |n| {
                    let instances = instances.clone();
                    let unfinalize = unfinalize.clone();
                    async move {
                        let _ = instances
                            .patch(&n, &PatchParams::default(), &Patch::Merge(&unfinalize))
                            .await;
                    }
                })
                .await;
        }
        let _ = instances
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        let _ = pods
            .delete_collection(
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
                &ListParams::default(),
            )
            .await;
        let _ = Api::<Namespace>::all(c.clone())
            .delete(&ns, &DeleteParams::default())
            .await;
        let _ = Api::<Node>::all(c.clone())
            .delete(&format!("podsim-{ns}-0"), &DeleteParams::default())
            .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    fn window(&self, label: &'static str, ns: &str, from: jiff::Timestamp) {
        self.windows
            .lock()
            .unwrap()
            .push((label, ns.to_string(), from, jiff::Timestamp::now()));
    }

    async fn profile(
        &self,
        label: &'static str,
        wall: Duration,
        before: &Counters,
        operator: Option<u32>,
    ) {
        let after = counters(&self.client, operator).await;
        self.profiles.lock().unwrap().push(Profile {
            label,
            wall: wall.as_secs_f64(),
            delta: counters_delta(before, &after),
        });
    }

    fn operator(&self, ns: &str) -> Operator {
        Operator::start(&self.operator_bin, self.cp.kubeconfig_path(), ns, &self.dir)
    }
}

/// RS: `n` Pods, all Running and Ready, none terminating, nothing else.
fn rs_whole(pods: &[Arc<Pod>], n: usize) -> Result<(), String> {
    let ready = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none() && pod_phase(p) == "Running" && pod_ready(p)
        })
        .count();
    if pods.len() == n && ready == n {
        Ok(())
    } else {
        Err(format!("{} Pods, {ready} Running+Ready", pods.len()))
    }
}

/// SG: `n` Instances InService (and Healthy when `healthy`), each with its Running Pod,
/// nothing else (no other Instance or Pod, nothing being deleted).
fn sg_whole(
    insts: &[Arc<Instance>],
    pods: &[Arc<Pod>],
    n: usize,
    healthy: bool,
) -> Result<(), String> {
    let running: std::collections::HashSet<String> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_phase(p) == "Running")
        .map(|p| p.name_any())
        .collect();
    let good = insts
        .iter()
        .filter(|i| {
            i.metadata.deletion_timestamp.is_none()
                && inst_state(i) == Some(LifecycleState::InService)
                && (!healthy || inst_healthy(i))
                && running.contains(&i.name_any())
        })
        .count();
    if insts.len() == n && pods.len() == n && good == n {
        Ok(())
    } else {
        Err(format!(
            "{} Instances, {good} InService{} with a Running Pod, {} Pods ({} Running)",
            insts.len(),
            if healthy { "+Healthy" } else { "" },
            pods.len(),
            running.len()
        ))
    }
}

/// Err while any of `names` is still among `objects`.
fn gone<K: Resource>(names: &[String], objects: &[Arc<K>]) -> Result<(), String> {
    match objects
        .iter()
        .find(|o| names.contains(&o.meta().name.clone().unwrap_or_default()))
    {
        Some(o) => Err(format!(
            "{} still there",
            o.meta().name.as_deref().unwrap_or("")
        )),
        None => Ok(()),
    }
}

/// Deletes `count` Pods (the first by name) concurrently; returns their names and the start.
async fn delete_pods(
    client: &Client,
    ns: &str,
    pods: &[Arc<Pod>],
    count: usize,
) -> (Vec<String>, Instant) {
    let mut names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    names.sort();
    names.truncate(count);
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    let deletes = names.iter().map(|n| {
        let api = api.clone();
        async move { api.delete(n, &DeleteParams::default()).await }
    });
    for r in futures::future::join_all(deletes).await {
        r.expect("deleting a Pod");
    }
    (names, started)
}

/// Annotates `count` Instances (the first by name) `autoheal.dev/health=Unhealthy`,
/// concurrently; returns their names and the start.
async fn mark_unhealthy(
    client: &Client,
    ns: &str,
    insts: &[Arc<Instance>],
    count: usize,
) -> (Vec<String>, Instant) {
    let mut names: Vec<String> = insts.iter().map(|i| i.name_any()).collect();
    names.sort();
    names.truncate(count);
    let api: Api<Instance> = Api::namespaced(client.clone(), ns);
    let patch = serde_json::json!({
        "metadata": { "annotations": { autoheal::api::ANNOTATION_HEALTH: "Unhealthy" } }
    });
    let started = Instant::now();
    let patches = names.iter().map(|n| {
        let (api, patch) = (api.clone(), patch.clone());
        async move {
            api.patch(n, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        }
    });
    for r in futures::future::join_all(patches).await {
        r.expect("annotating an Instance");
    }
    (names, started)
}

/// A label for the reports (they live as long as the bench).
fn label(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// What one ScalingGroup "lose 10" run leaves for the per-step trace.
struct SgTrace {
    deleted_at: Instant,
    victim: String,
    pods: Vec<Seen>,
    instances: Vec<Seen>,
    replacement: Option<String>,
    operator_log: PathBuf,
}

async fn rs_lose(b: &mut Bench, n: usize, lose: usize) -> Result<Duration, String> {
    let w = b.world("bench-rs-lose").await;
    let rs: Api<ReplicaSet> = Api::namespaced(b.client.clone(), &w.ns);
    rs.create(&PostParams::default(), &replica_set("web", n as i32))
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        until("RS whole", &[&*w.pods.changed], || {
            rs_whole(&w.pods.state(), n)
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let wall = jiff::Timestamp::now();
        let (victims, t0) = delete_pods(&b.client, &w.ns, &w.pods.state(), lose).await;
        // Whole again, and without the victims (the watch may not have seen the deletes yet).
        let t1 = until("RS whole again", &[&*w.pods.changed], || {
            gone(&victims, &w.pods.state())?;
            rs_whole(&w.pods.state(), n)
        })
        .await?;
        b.window(
            label(format!("RS{} lose {lose} of {n}", b.kcm)),
            &w.ns,
            wall,
        );
        Ok(t1 - t0)
    }
    .await;
    b.cleanup(w).await;
    result
}

/// SG: `lose` of `n` go: their Pods deleted out of band or, with `verdict`, the Instances
/// annotated `autoheal.dev/health=Unhealthy`; timed until the group is whole again.
async fn sg_lose(
    b: &mut Bench,
    n: usize,
    lose: usize,
    verdict: bool,
) -> (Result<Duration, String>, Option<SgTrace>) {
    let w = b
        .world(if verdict {
            "bench-sg-verdict"
        } else {
            "bench-sg-lose"
        })
        .await;
    let op = b.operator(&w.ns);
    op.wait_ready().await;
    let insts = Watched::start(
        Api::<Instance>::namespaced(b.client.clone(), &w.ns),
        "Instance",
        inst_summary,
    )
    .await;
    let groups: Api<ScalingGroup> = Api::namespaced(b.client.clone(), &w.ns);
    let applied = groups
        .patch(
            "web",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&scaling_group("web", n as i32, n as i32)),
        )
        .await;
    let mut trace = None;
    let result = async {
        applied.map_err(|e| e.to_string())?;
        let changed = [&*w.pods.changed, &*insts.changed];
        until("SG whole", &changed, || {
            sg_whole(&insts.state(), &w.pods.state(), n, true)
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let wall = jiff::Timestamp::now();
        let (victims, t0) = if verdict {
            mark_unhealthy(&b.client, &w.ns, &insts.state(), lose).await
        } else {
            delete_pods(&b.client, &w.ns, &w.pods.state(), lose).await
        };
        // Whole again, and without the victims (the watch may not have seen the change yet).
        let t1 = until("SG whole again", &changed, || {
            gone(&victims, &insts.state())?;
            gone(&victims, &w.pods.state())?;
            sg_whole(&insts.state(), &w.pods.state(), n, true)
        })
        .await?;
        let what = if verdict { "replace" } else { "lose" };
        b.window(label(format!("SG {what} {lose} of {n}")), &w.ns, wall);
        let victim = victims[0].clone();
        let replacement = insts
            .state()
            .iter()
            .find(|i| i.annotations().get(ANNOTATION_REPLACES) == Some(&victim))
            .map(|i| i.name_any());
        trace = Some(SgTrace {
            deleted_at: t0,
            victim,
            pods: w.pods.seen(),
            instances: insts.seen(),
            replacement,
            operator_log: op.log.clone(),
        });
        Ok(t1 - t0)
    }
    .await;
    drop(op);
    drop(insts);
    b.cleanup(w).await;
    (result, trace)
}

async fn rs_scale(b: &mut Bench, n: usize) -> Result<Duration, String> {
    let w = b.world("bench-rs-scale").await;
    let rs: Api<ReplicaSet> = Api::namespaced(b.client.clone(), &w.ns);
    let result = async {
        rs.create(&PostParams::default(), &replica_set("web", 0))
            .await
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(
            TIMEOUT,
            await_condition(rs.clone(), "web", |r: Option<&ReplicaSet>| {
                r.and_then(|r| r.status.as_ref())
                    .and_then(|s| s.observed_generation)
                    == Some(1)
            }),
        )
        .await
        .map_err(|_| "RS never observed".to_string())?
        .map_err(|e| e.to_string())?;
        let before = counters(&b.client, None).await;
        let wall = jiff::Timestamp::now();
        let t0 = Instant::now();
        rs.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "replicas": n } })),
        )
        .await
        .map_err(|e| e.to_string())?;
        let t1 = until("RS scaled", &[&*w.pods.changed], || {
            rs_whole(&w.pods.state(), n)
        })
        .await?;
        let l = label(format!("RS{} scale 0 → {n}", b.kcm));
        b.window(l, &w.ns, wall);
        b.profile(l, t1 - t0, &before, None).await;
        Ok(t1 - t0)
    }
    .await;
    b.cleanup(w).await;
    result
}

async fn sg_scale(b: &mut Bench, n: usize) -> Result<Duration, String> {
    let w = b.world("bench-sg-scale").await;
    let op = b.operator(&w.ns);
    op.wait_ready().await;
    let insts = Watched::start(
        Api::<Instance>::namespaced(b.client.clone(), &w.ns),
        "Instance",
        inst_summary,
    )
    .await;
    let groups: Api<ScalingGroup> = Api::namespaced(b.client.clone(), &w.ns);
    let result = async {
        groups
            .patch(
                "web",
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&scaling_group("web", 0, n as i32)),
            )
            .await
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(
            TIMEOUT,
            await_condition(groups.clone(), "web", |g: Option<&ScalingGroup>| {
                g.is_some_and(|g| {
                    g.status.as_ref().and_then(|s| s.observed_generation) == g.metadata.generation
                })
            }),
        )
        .await
        .map_err(|_| "SG never observed".to_string())?
        .map_err(|e| e.to_string())?;
        let before = counters(&b.client, Some(op.child.id())).await;
        let wall = jiff::Timestamp::now();
        let t0 = Instant::now();
        groups
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "spec": { "desiredCapacity": n } })),
            )
            .await
            .map_err(|e| e.to_string())?;
        let changed = [&*w.pods.changed, &*insts.changed];
        let t1 = until("SG scaled", &changed, || {
            let insts = insts.state();
            let in_service = insts
                .iter()
                .filter(|i| {
                    i.metadata.deletion_timestamp.is_none()
                        && inst_state(i) == Some(LifecycleState::InService)
                })
                .count();
            if insts.len() == n && in_service == n {
                Ok(())
            } else {
                Err(format!("{} Instances, {in_service} InService", insts.len()))
            }
        })
        .await?;
        let l = label(format!("SG scale 0 → {n}"));
        b.window(l, &w.ns, wall);
        b.profile(l, t1 - t0, &before, Some(op.child.id())).await;
        Ok(t1 - t0)
    }
    .await;
    drop(op);
    drop(insts);
    b.cleanup(w).await;
    result
}

// ---- profile: where the CPU and the API server's time go ------------------------------------

/// A snapshot of the API server's own counters (its `/metrics`) and of CPU time.
#[derive(Clone, Default)]
struct Counters {
    /// (verb resource[/subresource]) -> (seconds spent answering, requests), all callers.
    requests: BTreeMap<String, (f64, f64)>,
    /// etcd operation (type) -> seconds spent waiting for etcd.
    etcd: BTreeMap<String, f64>,
    apiserver_cpu: f64,
    /// Machine-wide busy CPU seconds (all cores, /proc/stat).
    machine_busy: f64,
    /// CPU seconds of the operator process, when there is one.
    operator_cpu: f64,
}

fn metric_labels(line: &str) -> BTreeMap<&str, &str> {
    let inner = line
        .split_once('{')
        .and_then(|(_, r)| r.split_once('}'))
        .map_or("", |(l, _)| l);
    inner
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, v.trim_matches('"')))
        .collect()
}

fn metric_value(line: &str) -> f64 {
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn proc_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime, stime are fields 14 and 15 of /proc/PID/stat (11 and 12 after the name).
    (ticks(11) + ticks(12)) / 100.0
}

fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = cpu.iter().sum();
    let idle = cpu.get(3).copied().unwrap_or(0.0) + cpu.get(4).copied().unwrap_or(0.0);
    (total - idle) / 100.0
}

async fn counters(client: &Client, operator: Option<u32>) -> Counters {
    let mut c = Counters {
        machine_busy: machine_busy(),
        operator_cpu: operator.map_or(0.0, proc_cpu),
        ..Counters::default()
    };
    let request = hyper::Request::get("/metrics").body(Vec::new()).unwrap();
    let Ok(text) = client.request_text(request).await else {
        return c;
    };
    for line in text.lines() {
        if line.starts_with("apiserver_request_duration_seconds_sum{")
            || line.starts_with("apiserver_request_duration_seconds_count{")
        {
            let l = metric_labels(line);
            let resource = match l.get("subresource").copied().unwrap_or("") {
                "" => l.get("resource").copied().unwrap_or("").to_string(),
                sub => format!("{}/{sub}", l.get("resource").copied().unwrap_or("")),
            };
            let key = format!("{} {resource}", l.get("verb").copied().unwrap_or(""));
            let e = c.requests.entry(key).or_default();
            if line.starts_with("apiserver_request_duration_seconds_sum") {
                e.0 += metric_value(line);
            } else {
                e.1 += metric_value(line);
            }
        } else if line.starts_with("etcd_request_duration_seconds_sum{") {
            let l = metric_labels(line);
            let key = format!(
                "{} {}",
                l.get("operation").copied().unwrap_or(""),
                l.get("type").copied().unwrap_or("")
            );
            *c.etcd.entry(key).or_default() += metric_value(line);
        } else if line.starts_with("process_cpu_seconds_total ") {
            c.apiserver_cpu = metric_value(line);
        }
    }
    c
}

/// What happened between two snapshots.
fn counters_delta(a: &Counters, b: &Counters) -> Counters {
    Counters {
        requests: b
            .requests
            .iter()
            .map(|(k, (s, n))| {
                let (s0, n0) = a.requests.get(k).copied().unwrap_or_default();
                (k.clone(), (s - s0, n - n0))
            })
            .filter(|(_, (_, n))| *n > 0.0)
            .collect(),
        etcd: b
            .etcd
            .iter()
            .map(|(k, s)| (k.clone(), s - a.etcd.get(k).copied().unwrap_or_default()))
            .filter(|(_, s)| *s > 0.0)
            .collect(),
        apiserver_cpu: b.apiserver_cpu - a.apiserver_cpu,
        machine_busy: b.machine_busy - a.machine_busy,
        operator_cpu: b.operator_cpu - a.operator_cpu,
    }
}

/// One profiled timed window: its label, its length and the counters' deltas.
struct Profile {
    label: &'static str,
    wall: f64,
    delta: Counters,
}

/// Mean per run, by scenario: CPU time and the API server's time by request kind.
fn profile_table(profiles: &[Profile]) -> String {
    let mut labels: Vec<&str> = Vec::new();
    for p in profiles {
        if !labels.contains(&p.label) {
            labels.push(p.label);
        }
    }
    let mut out = String::from(
        "| scenario | wall (s) | machine CPU busy (s, of 2×wall) | kube-apiserver CPU (s) | operator CPU (s) | API server time by request: seconds (requests), top 8 |\n|---|---:|---:|---:|---:|---|\n",
    );
    for label in labels {
        let ps: Vec<&Profile> = profiles.iter().filter(|p| p.label == label).collect();
        let n = ps.len() as f64;
        let mean = |f: &dyn Fn(&Profile) -> f64| ps.iter().map(|p| f(p)).sum::<f64>() / n;
        let mut requests: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for p in &ps {
            for (k, (s, c)) in &p.delta.requests {
                // Long-running watches are not work.
                if k.starts_with("WATCH") || k.starts_with("CONNECT") {
                    continue;
                }
                let e = requests.entry(k.clone()).or_default();
                e.0 += s / n;
                e.1 += c / n;
            }
        }
        let mut top: Vec<(String, (f64, f64))> = requests.into_iter().collect();
        top.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
        let detail: Vec<String> = top
            .iter()
            .take(8)
            .map(|(k, (s, c))| format!("{k} {s:.1} ({c:.0})"))
            .collect();
        let _ = writeln!(
            out,
            "| {label} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            mean(&|p| p.wall),
            mean(&|p| p.delta.machine_busy),
            mean(&|p| p.delta.apiserver_cpu),
            mean(&|p| p.delta.operator_cpu),
            detail.join(", ")
        );
    }
    out
}

// ---- setup ---------------------------------------------------------------------------------

async fn install_crds(cp: &ControlPlane, client: &Client) {
    let _ = cp;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established"))
        .unwrap();
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

// ---- reporting -----------------------------------------------------------------------------

fn secs(d: &Result<Duration, String>) -> String {
    match d {
        Ok(d) => format!("{:.3}", d.as_secs_f64()),
        Err(_) => "fail".into(),
    }
}

struct Row {
    scenario: &'static str,
    rs: Vec<Result<Duration, String>>,
    sg: Vec<Result<Duration, String>>,
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| scenario | RS median (s) | SG median (s) | SG/RS | RS runs (s) | SG runs (s) |\n",
    );
    out.push_str("|---|---:|---:|---:|---|---|\n");
    for r in rows.iter().filter(|r| !r.rs.is_empty() || !r.sg.is_empty()) {
        let (rm, sm) = (median(&r.rs), median(&r.sg));
        let f = |m: Option<f64>| m.map_or("fail".into(), |m| format!("{m:.3}"));
        let ratio = match (rm, sm) {
            (Some(a), Some(b)) if a > 0.0 => format!("{:.2}×", b / a),
            _ => "n/a".into(),
        };
        let raw =
            |v: &[Result<Duration, String>]| v.iter().map(secs).collect::<Vec<_>>().join(", ");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.scenario,
            f(rm),
            f(sm),
            ratio,
            raw(&r.rs),
            raw(&r.sg)
        );
    }
    out
}

/// The steps of one ScalingGroup replacement, relative to the Pod delete.
fn step_trace(t: &SgTrace) -> String {
    let mut out = String::new();
    let rel = |at: Instant| {
        let ms = at.saturating_duration_since(t.deleted_at).as_secs_f64() * 1000.0;
        if at < t.deleted_at {
            "    (before)".to_string()
        } else {
            format!("{ms:>9.1} ms")
        }
    };
    let _ = writeln!(
        out,
        "Deleted Pod (and its Instance) `{}`; replacement Instance `{}`.\n",
        t.victim,
        t.replacement.as_deref().unwrap_or("(not found)")
    );
    out.push_str("Watch-observed steps (ms after the DELETE was sent):\n\n```\n");
    let mut names = vec![t.victim.clone()];
    names.extend(t.replacement.clone());
    let mut seen: Vec<&Seen> = t
        .pods
        .iter()
        .chain(&t.instances)
        .filter(|s| names.contains(&s.name) && s.at >= t.deleted_at)
        .collect();
    seen.sort_by_key(|s| s.at);
    for s in seen {
        let _ = writeln!(out, "{} {:<8} {:<12} {}", rel(s.at), s.kind, s.name, s.what);
    }
    out.push_str("```\n");
    // The operator's own account (its timestamps are UTC wall clock).
    let log = std::fs::read_to_string(&t.operator_log).unwrap_or_default();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| names.iter().any(|n| l.contains(n.as_str())))
        .collect();
    let _ = writeln!(
        out,
        "\nOperator log lines naming them ({} lines, first 60):\n\n```",
        lines.len()
    );
    for l in lines.iter().take(60) {
        let l = strip_ansi(l);
        let _ = writeln!(out, "{}", if l.len() > 400 { &l[..400] } else { &l });
    }
    out.push_str("```\n");
    out
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Who made a write: `autoheal`, `kube-controller-manager` or `podsim + bench`.
fn writer_of(w: &testkit::AuditWrite) -> &'static str {
    if w.user_agent.starts_with("autoheal") {
        "autoheal"
    } else if w.user.contains("kube-controller-manager") {
        "kube-controller-manager"
    } else {
        "podsim + bench"
    }
}

/// API writes (from the audit log) inside each timed window, mean per run, by writer and
/// resource.
fn writes_table(b: &Bench) -> String {
    let writes = testkit::audit_writes(b.cp.audit_log_path());
    // label -> writer -> resource -> count; label -> runs
    let mut by: BTreeMap<&str, BTreeMap<String, BTreeMap<String, usize>>> = BTreeMap::new();
    let mut runs: BTreeMap<&str, usize> = BTreeMap::new();
    for (label, ns, from, to) in b.windows.lock().unwrap().iter() {
        *runs.entry(label).or_default() += 1;
        let entry = by.entry(label).or_default();
        for w in writes.iter().filter(|w| &w.namespace == ns) {
            let Ok(at) = w.request_received_timestamp.parse::<jiff::Timestamp>() else {
                continue;
            };
            if at < *from || at > *to {
                continue;
            }
            let writer = writer_of(w).to_string();
            let resource = if w.subresource.is_empty() {
                format!("{} {}", w.verb, w.resource)
            } else {
                format!("{} {}/{}", w.verb, w.resource, w.subresource)
            };
            *entry
                .entry(writer)
                .or_default()
                .entry(resource)
                .or_default() += 1;
        }
    }
    let mut out = String::from(
        "| scenario | writer | writes per run | of which (per run) |\n|---|---|---:|---|\n",
    );
    for (label, writers) in &by {
        let n = runs[label].max(1) as f64;
        for (writer, resources) in writers {
            let total: usize = resources.values().sum();
            let detail: Vec<String> = resources
                .iter()
                .map(|(r, c)| format!("{r} {:.0}", *c as f64 / n))
                .collect();
            let _ = writeln!(
                out,
                "| {label} | {writer} | {:.0} | {} |",
                total as f64 / n,
                detail.join(", ")
            );
        }
    }
    out
}

fn main() {
    let mut runs = 3usize;
    let args: Vec<String> = std::env::args().collect();
    // `--only lose|scale|verdict`: one scenario (a quicker look; still writes the report).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    if let Some(o) = only.as_deref()
        && !["lose", "scale", "verdict"].contains(&o)
    {
        eprintln!("bench-replace: --only takes lose, scale or verdict, not {o:?}");
        std::process::exit(2);
    }
    if let Some(i) = args.iter().position(|a| a == "--runs") {
        runs = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(3);
    }
    common::raise_nofile(200_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // `--suite`: `make bench`, every scenario, writes bench/RESULTS.md.
    if args.iter().any(|a| a == "--suite") {
        rt.block_on(suite::run());
    } else {
        rt.block_on(run(runs, only.as_deref()));
    }
}

async fn run(runs: usize, only: Option<&str>) {
    eprintln!("bench-replace: operator {}", operator_binary().display());
    let mut b = Bench::start("autoheal-bench-replace").await;
    let dir = b.dir.clone();
    let mut lose = Row {
        scenario: "lose 10 of 100",
        rs: vec![],
        sg: vec![],
    };
    let mut scale = Row {
        scenario: "scale 0 → 300",
        rs: vec![],
        sg: vec![],
    };
    // `--only verdict`: scenario 2 of `make bench` on its own (the ScalingGroup replaces 10
    // Instances annotated Unhealthy; the ReplicaSet's reference is losing 10 Pods).
    let mut verdict = Row {
        scenario: "replace 10 of 100 on a verdict (RS: lose 10)",
        rs: vec![],
        sg: vec![],
    };
    let mut trace = None;
    for (row, by_verdict, label) in [(&mut lose, false, "lose"), (&mut verdict, true, "verdict")] {
        // The verdict row runs only when asked for by name (`make bench` has scenario 2).
        let wanted = if by_verdict {
            only == Some(label)
        } else {
            only.is_none_or(|o| o == label)
        };
        for run in (1..=runs).filter(|_| wanted) {
            let r = rs_lose(&mut b, 100, 10).await;
            eprintln!("{label} 10 of 100, run {run}: RS {}", secs(&r));
            row.rs.push(r);
            let (s, t) = sg_lose(&mut b, 100, 10, by_verdict).await;
            eprintln!("{label} 10 of 100, run {run}: SG {}", secs(&s));
            if let Err(e) = &s {
                eprintln!("  {e}");
            }
            row.sg.push(s);
            if trace.is_none() && !by_verdict {
                trace = t.map(|t| step_trace(&t));
            }
        }
    }
    for run in (1..=runs).filter(|_| only.is_none_or(|o| o == "scale")) {
        let r = rs_scale(&mut b, 300).await;
        eprintln!("scale 0 → 300, run {run}: RS {}", secs(&r));
        scale.rs.push(r);
        let s = sg_scale(&mut b, 300).await;
        eprintln!("scale 0 → 300, run {run}: SG {}", secs(&s));
        if let Err(e) = &s {
            eprintln!("  {e}");
        }
        scale.sg.push(s);
    }
    let rows = [lose, verdict, scale];
    let (commit, nproc, date) = common::stamp();
    let mut md = String::new();
    md.push_str("# Replacement benchmark: ReplicaSet vs ScalingGroup\n\n");
    md.push_str(
        "Generated by `make bench-replace` (`benches/replace.rs`). Seconds, lower is better; ",
    );
    let _ = writeln!(
        md,
        "{runs} runs each, RS and SG alternating, on one local control plane (kube-apiserver, kube-controller-manager {}), podsim as the kubelet.\n",
        testkit::K8S_VERSION
    );
    let _ = writeln!(
        md,
        "- machine: {nproc} CPUs ({}), {}\n- date: {date}\n- commit: {commit}\n- operator: {}\n- Pods: terminationGracePeriodSeconds {} (both); ScalingGroup: healthCheck.gracePeriodSeconds 0, replacement.deregistrationDelaySeconds 0, replacement.maxInFlight 100%, no probe\n- lose 10 of 100: from the 10 concurrent Pod DELETEs until 100 Running+Ready Pods and nothing terminating (RS) / 100 Instances InService+Healthy with Running Pods and nothing else (SG)\n- scale 0 → 300: from the scale request until 300 Running+Ready Pods (RS) / 300 Instances InService (SG)\n- replace 10 of 100 on a verdict (`--only verdict`): from the 10 concurrent `autoheal.dev/health=Unhealthy` annotations until the same end as lose 10 (SG); the RS column is its lose 10 of 100, the reference\n",
        cpu_model(),
        std::env::consts::ARCH,
        operator_binary().display(),
        grace_seconds()
    );
    md.push_str(&table(&rows));
    md.push_str("\n## API writes inside the timed window\n\nFrom the apiserver's audit log, mean per run; `podsim + bench` is podsim's bindings, status writes and final deletes, plus the bench's own deletes / scale request.\n\n");
    md.push_str(&writes_table(&b));
    md.push_str("\n## Where the CPU goes: scale 0 → 300\n\nMean per run, inside the timed window: CPU seconds (the machine's, all processes; kube-apiserver's from its `process_cpu_seconds_total`; the operator's from /proc), and the API server's time answering each kind of request (`apiserver_request_duration_seconds`, every caller, watches left out).\n\n");
    md.push_str(&profile_table(&b.profiles.lock().unwrap()));
    if let Some(t) = &trace {
        md.push_str(
            "\n## Where the time goes: one ScalingGroup replacement (lose 10 of 100, run 1)\n\n",
        );
        md.push_str(t);
    }
    println!("\n{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/REPLACE.md");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, &md).unwrap();
    eprintln!("written to {}", out.display());
    if std::env::var_os("REPLACE_BENCH_KEEP").is_some() {
        eprintln!("operator logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
