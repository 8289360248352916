//! podsim — a kubelet stand-in for Kubernetes clusters without nodes.
//!
//! podsim registers simulated Nodes, binds every unscheduled Pod it is responsible for
//! to one of them, and "runs" the Pod: it gives the Pod a unique IP in 127.0.0.0/8
//! (never 127.0.0.1), serves every declared TCP container port on that IP (HTTP/1.1,
//! 200 on every path) and reports a Running status like a kubelet would. The Pod
//! annotation [`BEHAVIOR_ANNOTATION`] makes a Pod misbehave (see [`Behavior`]); the
//! same annotation with the value [`NODE_NOT_READY`] on a simulated Node makes the
//! Node stop its heartbeats and report `Ready=False`.
//!
//! Notes on fidelity:
//! - `Ready` stays True for `fail`, `hang` and `refuse`: podsim runs no readiness probes
//!   (a real kubelet's verdict would depend on the Pod's readinessProbe).
//! - `crash` is terminal (phase `Failed`), as for a Pod whose containers exited.
//! - Pods are not bound to Nodes annotated not-ready (as kube-scheduler avoids the
//!   not-ready taint); Pods already on such a Node keep being served, but podsim does
//!   not write their status (the dead "kubelet" is silent, and the node lifecycle
//!   controller marks them not ready). Deletions are still carried out.
//! - With zones configured (`--zones a,b,c`, [`Config::zones`]), Node `i` is labelled
//!   [`ZONE_LABEL`] with zone `i mod n`, so Pods (spread over the least loaded Nodes) land
//!   in every zone.
//! - A not-ready Node gets `Ready=False` once; if the node lifecycle controller later
//!   marks it `Unknown` (no heartbeats), podsim leaves that alone.
//! - Pods are worked on concurrently, as a cluster's scheduler and kubelets do: a Pod's
//!   binding, status write or final delete runs in its own task (one per Pod at a time;
//!   at most [`MAX_CONCURRENT_POD_WRITES`] Pod writes at once, Node heartbeats and the
//!   like besides), while the event loop goes on with the other Pods. A write's body (the
//!   Node bound to, the status) is decided when it is queued, so behind a long queue it
//!   may be a little old when it goes out, as a kubelet's. Working on one Pod at a time,
//!   podsim itself was the limit of a fast controller's scale-up (see `bench/RESULTS.md`).

#![warn(missing_docs)]

mod behavior;
mod ip;
mod server;
mod status;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

pub use behavior::{Behavior, UnknownBehavior};

use ip::IpAllocator;
use server::{Mode, PodServer};
use status::{Phase, PodView, desired_status, needs_update};

/// Annotation read on Pods (values: see [`Behavior`]) and on simulated Nodes
/// (value [`NODE_NOT_READY`]).
pub const BEHAVIOR_ANNOTATION: &str = "podsim.autoheal.dev/behavior";

/// Value of [`BEHAVIOR_ANNOTATION`] on a simulated Node that makes it stop heartbeating
/// and report `Ready=False` (reason [`NOT_READY_REASON`]) until the annotation is removed.
pub const NODE_NOT_READY: &str = "notready";

/// Reason of the `Ready=False` condition of a Node annotated [`NODE_NOT_READY`].
pub const NOT_READY_REASON: &str = "PodsimNotReady";

/// Label (value `"true"`) on every Node podsim simulates.
pub const SIMULATED_LABEL: &str = "podsim.autoheal.dev/simulated";

/// Namespace of the Node heartbeat Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How often Node status and Lease are renewed.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// `leaseDurationSeconds` of the Node Leases (the kubelet's default).
const LEASE_DURATION_SECONDS: i32 = 40;
/// How often every Pod is re-evaluated by default (see [`Config::resync_interval`]).
pub const RESYNC_INTERVAL: Duration = Duration::from_millis(500);
/// Upper bound for one API call.
const API_TIMEOUT: Duration = Duration::from_secs(15);
/// Retry backoff for failed API writes, per Pod.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How many Pod writes (bindings, status patches, final deletes) talk to the API server at
/// once. Each Pod has at most one write in flight, and the event loop goes on while they
/// run, as the kubelets and the scheduler of a real cluster work on many Pods at once.
pub const MAX_CONCURRENT_POD_WRITES: usize = 32;
/// Field manager of podsim's writes.
const FIELD_MANAGER: &str = "podsim";

/// What podsim simulates and which Pods it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Only run Pods in this namespace (`None`: all namespaces).
    pub namespace: Option<String>,
    /// Only run Pods matching this label selector (e.g. `app=web`).
    pub selector: Option<String>,
    /// Number of simulated Nodes (at least 1; default 1). Pods are spread over them.
    pub nodes: usize,
    /// Node names are `<node_prefix>-<i>` for `i` in `0..nodes` (default `"podsim"`).
    pub node_prefix: String,
    /// First two octets of the Pod IPs: `Some([127, 42])` gives `127.42.x.y`. The first
    /// octet must be 127. `None` picks `127.<random 10..=250>`.
    pub ip_prefix: Option<[u8; 2]>,
    /// Zones the Nodes are labelled with ([`ZONE_LABEL`]), round-robin: Node `i` is in
    /// `zones[i % zones.len()]` (see [`zone_of`]). Empty (the default): no zone label.
    pub zones: Vec<String>,
    /// Where to record the moment a running Pod's listeners change how they answer (e.g.
    /// from `200` to `503` when it is annotated `fail`); a Pod starting, crashing or being
    /// deleted is not recorded. `None` (the default) records nothing. A benchmark times
    /// detection from these moments rather than from its own annotation write.
    pub mode_log: Option<ModeLog>,
    /// How often every Pod is re-evaluated (retries, annotation changes missed by the
    /// watch). Moments podsim knows in advance — a grace period's end, a slow start's end —
    /// do not wait for it: each wakes its Pod at that moment. Default [`RESYNC_INTERVAL`].
    pub resync_interval: Duration,
}

/// How a running Pod's listeners answer, as recorded in a [`ModeLog`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answers {
    /// `200 OK`.
    Ok,
    /// `503 Service Unavailable`.
    Fail,
    /// Connections accepted, never answered.
    Hang,
    /// Not listening: connections refused.
    Refused,
}

/// One change of a running Pod's answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeChange {
    /// The Pod, as `namespace/name`.
    pub pod: String,
    /// How it answers from `at` on.
    pub answers: Answers,
    /// When its listeners started answering so.
    pub at: Instant,
}

/// A shared, append-only record of [`ModeChange`]s (cheap to clone; clones share it). Two
/// logs are equal when they are the same log.
#[derive(Clone, Debug, Default)]
pub struct ModeLog(Arc<Mutex<Vec<ModeChange>>>);

impl ModeLog {
    /// A new, empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every change recorded so far, oldest first.
    pub fn changes(&self) -> Vec<ModeChange> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, pod: &str, answers: Answers) {
        let at = Instant::now();
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ModeChange {
                pod: pod.to_string(),
                answers,
                at,
            });
    }
}

impl PartialEq for ModeLog {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ModeLog {}

/// The well-known label of a Node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The zone of simulated Node number `i` given the configured `zones`: round-robin, `None`
/// without zones.
pub fn zone_of(zones: &[String], i: usize) -> Option<&str> {
    (!zones.is_empty()).then(|| zones[i % zones.len()].as_str())
}

/// Parses a comma-separated zone list such as `a,b,c` (for `--zones`): names trimmed, empty
/// ones refused, at most 63 characters each (a label value).
pub fn parse_zones(s: &str) -> Result<Vec<String>, String> {
    let zones: Vec<String> = s.split(',').map(|z| z.trim().to_string()).collect();
    for z in &zones {
        if z.is_empty() || z.len() > 63 {
            return Err(format!(
                "invalid zone list {s:?}: expected names like a,b,c (1-63 characters each)"
            ));
        }
    }
    Ok(zones)
}

impl Default for Config {
    /// All namespaces, no selector, one Node named `podsim-0`, a random IP prefix.
    fn default() -> Self {
        Config {
            namespace: None,
            selector: None,
            nodes: 1,
            node_prefix: "podsim".to_string(),
            ip_prefix: None,
            zones: Vec::new(),
            mode_log: None,
            resync_interval: RESYNC_INTERVAL,
        }
    }
}

/// Parses an IP prefix such as `127.42` into `[127, 42]` (for `--ip-prefix`).
pub fn parse_ip_prefix(s: &str) -> Result<[u8; 2], String> {
    let err = || format!("invalid IP prefix {s:?}: expected two octets like 127.42");
    let (a, b) = s.trim().split_once('.').ok_or_else(err)?;
    let a: u8 = a.parse().map_err(|_| err())?;
    let b: u8 = b.parse().map_err(|_| err())?;
    if a != 127 {
        return Err(format!(
            "invalid IP prefix {s:?}: Pod IPs must be in 127.0.0.0/8"
        ));
    }
    Ok([a, b])
}

/// Runs podsim until the future is dropped (dropping it stops every simulated Pod's
/// listeners). Returns early only on an invalid [`Config`]; API errors are logged and
/// retried with backoff.
pub async fn run(client: Client, config: Config) -> anyhow::Result<()> {
    ensure!(config.nodes >= 1, "podsim needs at least one node");
    ensure!(
        !config.resync_interval.is_zero(),
        "podsim needs a resync interval above zero"
    );
    let ip_prefix = match config.ip_prefix {
        Some(p) => {
            ensure!(
                p[0] == 127,
                "IP prefix must be 127.x, got {}.{}",
                p[0],
                p[1]
            );
            p
        }
        None => [127, rand::random_range(10..=250u8)],
    };
    let pods: Api<Pod> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut pod_watch = watcher::Config::default();
    if let Some(selector) = &config.selector {
        pod_watch = pod_watch.labels(selector);
    }
    let node_watch = watcher::Config::default().labels(&format!("{SIMULATED_LABEL}=true"));
    let pod_events = watcher(pods, pod_watch).default_backoff();
    let node_events = watcher(Api::<Node>::all(client.clone()), node_watch).default_backoff();
    futures::pin_mut!(pod_events, node_events);

    let mut sim = Sim::new(client, &config, ip_prefix);
    info!(
        namespace = config.namespace.as_deref().unwrap_or("<all>"),
        selector = config.selector.as_deref().unwrap_or(""),
        nodes = ?sim.nodes.iter().map(|n| &n.name).collect::<Vec<_>>(),
        ip_prefix = %format!("{}.{}", ip_prefix[0], ip_prefix[1]),
        "podsim starting"
    );

    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resync = tokio::time::interval(config.resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next_wakeup = sim.next_wakeup();
        tokio::select! {
            event = pod_events.next() => match event {
                Some(Ok(event)) => sim.on_pod_event(event).await,
                Some(Err(e)) => warn!("Pod watch failed (retrying): {e}"),
                None => bail!("Pod watch ended"),
            },
            event = node_events.next() => match event {
                Some(Ok(event)) => sim.on_node_event(event).await,
                Some(Err(e)) => warn!("Node watch failed (retrying): {e}"),
                None => bail!("Node watch ended"),
            },
            _ = heartbeat.tick() => sim.heartbeat_all().await,
            _ = resync.tick() => sim.reconcile_all(false).await,
            _ = sleep_until(next_wakeup) => sim.wake_due().await,
            Some(done) = sim.writes.join_next_with_id(), if !sim.writes.is_empty() => {
                let done = sim.write_ended(done);
                sim.on_write_done(done).await
            }
        }
    }
}

/// Sleeps until `at`; forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// One simulated Node.
struct SimNode {
    name: String,
    /// Its zone label ([`ZONE_LABEL`]), if zones are configured.
    zone: Option<String>,
    /// Annotated not-ready: no heartbeats, `Ready=False`, no new Pods.
    not_ready: bool,
    /// The Node as last seen from the API (`None`: unknown or deleted).
    observed: Option<Node>,
    /// Last unknown annotation value warned about.
    warned: Option<String>,
}

/// A Pod this podsim runs.
struct PodRuntime {
    uid: String,
    first_seen: Instant,
    start_time: Timestamp,
    ip: Option<Ipv4Addr>,
    /// When the containers started (phase Running).
    running_since: Option<Timestamp>,
    /// When the containers crashed (phase Failed; terminal).
    crashed_at: Option<Timestamp>,
    /// The listeners, while the containers run.
    server: Option<PodServer>,
    /// When podsim first saw the deletion.
    deletion_seen: Option<Instant>,
    /// The final delete (grace period 0) was issued.
    finished: bool,
    /// Last behavior annotation value acted on (to log changes once).
    annotation: Option<String>,
}

/// Retry state of a Pod whose last reconcile failed.
struct Retry {
    at: Instant,
    delay: Duration,
}

/// The simulator's state; driven by [`run`]'s event loop.
struct Sim {
    client: Client,
    nodes: Vec<SimNode>,
    /// Pods seen by the watch, keyed `namespace/name` (shared: the resync every
    /// [`Config::resync_interval`] takes each without copying it).
    cache: HashMap<String, Arc<Pod>>,
    /// Pods listed since the watch (re)started, until the list is complete.
    relist: Option<HashMap<String, Pod>>,
    runtimes: HashMap<String, PodRuntime>,
    retries: HashMap<String, Retry>,
    ips: IpAllocator,
    round_robin: usize,
    mode_log: Option<ModeLog>,
    /// Pods to reconcile at a moment known in advance (a grace period's end, a slow
    /// start's end), earliest first; an entry superseded in `scheduled` is skipped.
    wakeups: BinaryHeap<Reverse<(Instant, String)>>,
    /// The moment each Pod in `wakeups` is due.
    scheduled: HashMap<String, Instant>,
    /// Pod writes running now, at most one per Pod, keyed like `cache`.
    in_flight: HashMap<String, InFlight>,
    /// The tasks of `in_flight`; each reports a [`WriteDone`].
    writes: JoinSet<WriteDone>,
    /// The Pod (key, UID) of each task in `writes`, for a task that ends without a report.
    write_tasks: HashMap<tokio::task::Id, (String, String)>,
    /// Bounds the writes that talk to the API server at once.
    write_slots: Arc<Semaphore>,
}

/// A Pod write that is running.
struct InFlight {
    /// The Pod was to be reconciled again meanwhile: do so when the write is done.
    dirty: bool,
    /// ...and that reconcile was to skip a failure's backoff (a watch event).
    forced: bool,
    /// The Node a binding in flight goes to (counted as that Node's load).
    binding_to: Option<usize>,
}

/// An API write one reconcile of a Pod asks for.
enum PodWrite {
    /// Bind the Pod to Node `node`.
    Bind { node: usize, binding: Box<Binding> },
    /// Merge-patch the Pod's status.
    Status {
        patch: serde_json::Value,
        phase: Phase,
    },
    /// Remove the Pod for good (grace period 0), as the kubelet does once it stopped.
    Delete,
}

/// What a finished [`PodWrite`] reports to the event loop.
struct WriteDone {
    key: String,
    /// The UID of the Pod the write was decided for.
    uid: String,
    result: anyhow::Result<WriteOutcome>,
}

/// The effect of a successful [`PodWrite`].
enum WriteOutcome {
    /// Bound to Node `node`.
    Bound { node: usize },
    /// Already bound or gone (the watch brings the truth).
    NotBound,
    /// The status as written.
    StatusWritten { pod: Box<Pod>, phase: Phase },
    /// The Pod is gone (or was already).
    Deleted,
}

fn key_of(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Runs one API call with a timeout.
async fn call<T>(fut: impl Future<Output = kube::Result<T>>) -> anyhow::Result<T> {
    match tokio::time::timeout(API_TIMEOUT, fut).await {
        Ok(result) => Ok(result?),
        Err(_) => bail!("API call timed out after {API_TIMEOUT:?}"),
    }
}

/// The HTTP status code of a failed API call.
fn code(e: &anyhow::Error) -> Option<u16> {
    match e.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(status)) => Some(status.code),
        _ => None,
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed" | "Succeeded")
    )
}

/// Whether `new` is at least as recent as `old` (resource versions compared as numbers
/// when they are numbers, as they are with etcd).
fn not_older(new: &Pod, old: &Pod) -> bool {
    let rv = |p: &Pod| p.resource_version().and_then(|v| v.parse::<u64>().ok());
    match (rv(new), rv(old)) {
        (Some(n), Some(o)) => n >= o,
        _ => true,
    }
}

/// The distinct TCP container ports of a Pod.
fn tcp_ports(pod: &Pod) -> Vec<u16> {
    let mut ports: Vec<u16> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .filter(|&p| p != 0)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn ready_condition_status(node: &Node) -> Option<&str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// `lastTransitionTime` for a Node condition: kept while the status does not change.
fn node_transition(node: Option<&Node>, type_: &str, status: &str, now: Timestamp) -> Time {
    node.and_then(|n| n.status.as_ref()?.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == status))
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now))
}

/// The status podsim reports for a healthy Node (strategic-merge patch body).
fn node_status(name: &str, observed: Option<&Node>, now: Timestamp) -> serde_json::Value {
    let cond = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": Time(now),
            "lastTransitionTime": node_transition(observed, type_, status, now),
        })
    };
    let resources = json!({
        "cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi",
    });
    json!({
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "podsim is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": status::HOST_IP},
            {"type": "Hostname", "address": name},
        ],
        "capacity": resources,
        "allocatable": resources,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": name, "systemUUID": name, "bootID": name,
            "kernelVersion": "podsim", "osImage": "podsim",
            "containerRuntimeVersion": "podsim://0.1.0",
            "kubeletVersion": "v1.36.0-podsim", "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": "amd64",
        },
    })
}

impl Sim {
    fn new(client: Client, config: &Config, ip_prefix: [u8; 2]) -> Sim {
        Sim {
            client,
            nodes: (0..config.nodes)
                .map(|i| SimNode {
                    name: format!("{}-{i}", config.node_prefix),
                    zone: zone_of(&config.zones, i).map(str::to_string),
                    not_ready: false,
                    observed: None,
                    warned: None,
                })
                .collect(),
            cache: HashMap::new(),
            relist: None,
            runtimes: HashMap::new(),
            retries: HashMap::new(),
            ips: IpAllocator::new(ip_prefix),
            round_robin: 0,
            mode_log: config.mode_log.clone(),
            wakeups: BinaryHeap::new(),
            scheduled: HashMap::new(),
            in_flight: HashMap::new(),
            writes: JoinSet::new(),
            write_tasks: HashMap::new(),
            write_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_POD_WRITES)),
        }
    }

    /// Reconciles the Pod `key` again at `at` (besides watch events and the resync), or
    /// earlier if an earlier wake-up is already due (each reconcile asks again for the
    /// moments it still needs).
    fn wake_at(&mut self, key: &str, at: Instant) {
        if self.scheduled.get(key).is_some_and(|due| *due <= at) {
            return;
        }
        self.scheduled.insert(key.to_string(), at);
        self.wakeups.push(Reverse((at, key.to_string())));
    }

    /// The earliest moment a Pod is to be woken at.
    fn next_wakeup(&self) -> Option<Instant> {
        self.wakeups.peek().map(|Reverse((at, _))| *at)
    }

    /// Reconciles every Pod whose wake-up moment has come.
    async fn wake_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = self.wakeups.peek()
            && *at <= now
        {
            let Some(Reverse((at, key))) = self.wakeups.pop() else {
                break;
            };
            if self.scheduled.get(&key) != Some(&at) {
                continue;
            }
            self.scheduled.remove(&key);
            self.reconcile(&key, false).await;
        }
    }

    fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    // ----- Nodes -------------------------------------------------------------------

    async fn on_node_event(&mut self, event: watcher::Event<Node>) {
        match event {
            watcher::Event::Apply(node) | watcher::Event::InitApply(node) => {
                let Some(i) = self.node_index(&node.name_any()) else {
                    return;
                };
                self.absorb_node(i, node);
                let ready = self.nodes[i]
                    .observed
                    .as_ref()
                    .and_then(ready_condition_status)
                    .map(str::to_string);
                let result = match (self.nodes[i].not_ready, ready.as_deref()) {
                    (true, Some("True")) => self.mark_not_ready(i).await,
                    (false, r) if r != Some("True") => self.heartbeat(i).await,
                    _ => Ok(()),
                };
                if let Err(e) = result {
                    warn!(node = self.nodes[i].name, "updating Node failed: {e:#}");
                }
            }
            watcher::Event::Delete(node) => {
                if let Some(i) = self.node_index(&node.name_any()) {
                    warn!(
                        node = self.nodes[i].name,
                        "simulated Node deleted; recreating it"
                    );
                    self.nodes[i].observed = None;
                    if let Err(e) = self.heartbeat(i).await {
                        warn!(node = self.nodes[i].name, "recreating Node failed: {e:#}");
                    }
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }

    /// Records a Node seen from the API and its annotation.
    fn absorb_node(&mut self, i: usize, node: Node) {
        let value = node.annotations().get(BEHAVIOR_ANNOTATION).cloned();
        let n = &mut self.nodes[i];
        let not_ready = value.as_deref() == Some(NODE_NOT_READY);
        if let Some(v) = value.as_deref()
            && !not_ready
            && !matches!(v, "" | "ready" | "healthy")
            && n.warned.as_deref() != Some(v)
        {
            warn!(
                node = n.name,
                "unknown Node behavior {v:?} (expected {NODE_NOT_READY:?}); treating the Node as ready"
            );
            n.warned = Some(v.to_string());
        }
        if not_ready != n.not_ready {
            info!(node = n.name, not_ready, "Node behavior changed");
        }
        n.not_ready = not_ready;
        n.observed = Some(node);
    }

    async fn heartbeat_all(&mut self) {
        for i in 0..self.nodes.len() {
            if let Err(e) = self.heartbeat(i).await {
                warn!(node = self.nodes[i].name, "Node heartbeat failed: {e:#}");
            }
        }
    }

    /// Makes sure the Node exists; unless it is not-ready, posts a Ready status with a
    /// fresh heartbeat and renews its Lease.
    async fn heartbeat(&mut self, i: usize) -> anyhow::Result<()> {
        let api: Api<Node> = Api::all(self.client.clone());
        let name = self.nodes[i].name.clone();
        let zone = self.nodes[i].zone.clone();
        if self.nodes[i].observed.is_none() {
            match call(api.get_opt(&name)).await? {
                Some(node) => {
                    let labelled = node.labels().get(ZONE_LABEL) == zone.as_ref();
                    let node = match (&zone, labelled) {
                        (Some(z), false) => {
                            let patch = json!({ "metadata": { "labels": { ZONE_LABEL: z } } });
                            call(api.patch(&name, &patch_params(), &Patch::Merge(patch)))
                                .await
                                .context("labelling the Node's zone")?
                        }
                        _ => node,
                    };
                    self.absorb_node(i, node)
                }
                None => {
                    let node = Node {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            labels: Some(
                                [
                                    (SIMULATED_LABEL, "true"),
                                    ("kubernetes.io/hostname", name.as_str()),
                                    ("kubernetes.io/os", "linux"),
                                    ("kubernetes.io/arch", "amd64"),
                                ]
                                .into_iter()
                                .chain(zone.as_deref().map(|z| (ZONE_LABEL, z)))
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .collect(),
                            ),
                            ..Default::default()
                        },
                        ..Default::default()
                    };
                    let node = match call(api.create(&PostParams::default(), &node)).await {
                        Ok(node) => node,
                        Err(e) if code(&e) == Some(409) => call(api.get(&name)).await?,
                        Err(e) => return Err(e.context("creating Node")),
                    };
                    info!(node = name, "created simulated Node");
                    self.absorb_node(i, node);
                }
            }
        }
        if self.nodes[i].not_ready {
            let ready = self.nodes[i]
                .observed
                .as_ref()
                .and_then(ready_condition_status);
            if ready == Some("True") {
                self.mark_not_ready(i).await?;
            }
            return Ok(());
        }
        let now = Timestamp::now();
        let patch = json!({ "status": node_status(&name, self.nodes[i].observed.as_ref(), now) });
        let node = call(api.patch_status(&name, &patch_params(), &Patch::Strategic(patch)))
            .await
            .context("posting Node status")?;
        let uid = node.uid();
        self.nodes[i].observed = Some(node);
        self.renew_lease(&name, uid, now)
            .await
            .context("renewing Node Lease")
    }

    async fn renew_lease(
        &self,
        name: &str,
        node_uid: Option<String>,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let spec = json!({
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": MicroTime(now),
        });
        let patch = Patch::Merge(json!({ "spec": spec }));
        match call(api.patch(name, &patch_params(), &patch)).await {
            Err(e) if code(&e) == Some(404) => {
                let mut lease: Lease = serde_json::from_value(json!({
                    "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
                    "spec": spec,
                }))?;
                if let Some(uid) = node_uid {
                    lease.metadata.owner_references = Some(vec![serde_json::from_value(json!({
                        "apiVersion": "v1", "kind": "Node", "name": name, "uid": uid,
                    }))?]);
                }
                call(api.create(&PostParams::default(), &lease)).await?;
                Ok(())
            }
            result => result.map(drop),
        }
    }

    /// Reports `Ready=False` (the heartbeat time is left as it was).
    async fn mark_not_ready(&mut self, i: usize) -> anyhow::Result<()> {
        let api: Api<Node> = Api::all(self.client.clone());
        let name = self.nodes[i].name.clone();
        let patch = json!({"status": {"conditions": [{
            "type": "Ready",
            "status": "False",
            "reason": NOT_READY_REASON,
            "message": format!("node annotated {BEHAVIOR_ANNOTATION}={NODE_NOT_READY}: podsim stopped its heartbeats"),
            "lastTransitionTime": Time(Timestamp::now()),
        }]}});
        let node = call(api.patch_status(&name, &patch_params(), &Patch::Strategic(patch))).await?;
        info!(node = name, "Node reports Ready=False");
        self.nodes[i].observed = Some(node);
        Ok(())
    }

    // ----- Pods --------------------------------------------------------------------

    async fn on_pod_event(&mut self, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Apply(pod) => {
                let key = self.store(pod);
                self.reconcile(&key, true).await;
            }
            watcher::Event::Delete(pod) => {
                let key = key_of(&pod);
                self.cache.remove(&key);
                self.forget(&key);
            }
            watcher::Event::Init => self.relist = Some(HashMap::new()),
            watcher::Event::InitApply(pod) => match &mut self.relist {
                Some(relist) => {
                    relist.insert(key_of(&pod), pod);
                }
                None => {
                    let key = self.store(pod);
                    self.reconcile(&key, true).await;
                }
            },
            watcher::Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let gone: Vec<String> = self
                    .cache
                    .keys()
                    .filter(|k| !listed.contains_key(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.cache.remove(&key);
                    self.forget(&key);
                }
                for pod in listed.into_values() {
                    self.store(pod);
                }
                self.reconcile_all(true).await;
            }
        }
    }

    /// Caches a Pod unless the cache already holds a newer version of it.
    fn store(&mut self, pod: Pod) -> String {
        let key = key_of(&pod);
        match self.cache.get(&key) {
            Some(cached) if !not_older(&pod, cached) => {}
            _ => {
                self.cache.insert(key.clone(), Arc::new(pod));
            }
        }
        key
    }

    /// Stops running a Pod and frees its IP.
    fn forget(&mut self, key: &str) {
        if let Some(rt) = self.runtimes.remove(key) {
            if let Some(ip) = rt.ip {
                self.ips.release(ip);
            }
            debug!(pod = key, "stopped tracking Pod");
        }
        self.retries.remove(key);
        self.scheduled.remove(key);
    }

    async fn reconcile_all(&mut self, force: bool) {
        let keys: Vec<String> = self
            .cache
            .iter()
            .filter(
                |(_, p)| match p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
                    None => true,
                    Some(node) => self.node_index(node).is_some(),
                },
            )
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.reconcile(&key, force).await;
        }
    }

    /// Reconciles one Pod, with backoff after failures (`force` skips the wait). A Pod
    /// with a write in flight is marked: it is reconciled again when the write has ended
    /// (after the backoff if the write failed, at once if it was forced meanwhile).
    async fn reconcile(&mut self, key: &str, force: bool) {
        if let Some(write) = self.in_flight.get_mut(key) {
            write.dirty = true;
            write.forced |= force;
            return;
        }
        if !force
            && let Some(at) = self.retries.get(key).map(|r| r.at)
            && at > Instant::now()
        {
            self.wake_at(key, at);
            return;
        }
        match self.reconcile_pod(key).await {
            Ok(None) => {
                self.retries.remove(key);
            }
            Ok(Some((pod, write))) => self.start_write(key, &pod, write),
            Err(e) => self.retry_later(key, &e),
        }
    }

    /// Schedules the next attempt for a Pod whose reconcile failed (exponential backoff).
    fn retry_later(&mut self, key: &str, e: &anyhow::Error) {
        let retry = self.retries.entry(key.to_string()).or_insert(Retry {
            at: Instant::now(),
            delay: MIN_BACKOFF / 2,
        });
        retry.delay = (retry.delay * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
        retry.at = Instant::now() + retry.delay;
        let (at, delay) = (retry.at, retry.delay);
        warn!(pod = key, "{e:#} (retrying in {delay:?})");
        self.wake_at(key, at);
    }

    /// Moves one Pod on as far as it goes without the API server; returns the write it
    /// needs next, if any.
    async fn reconcile_pod(&mut self, key: &str) -> anyhow::Result<Option<(Arc<Pod>, PodWrite)>> {
        let Some(pod) = self.cache.get(key).cloned() else {
            return Ok(None);
        };
        let uid = pod.uid().unwrap_or_default();
        if self.runtimes.get(key).is_some_and(|rt| rt.uid != uid) {
            self.forget(key);
        }
        let node = match pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
            Some(node) => node,
            None => {
                if pod.metadata.deletion_timestamp.is_some() || is_terminal(&pod) {
                    return Ok(None);
                }
                return Ok(self.binding(&pod).map(|write| (pod, write)));
            }
        };
        let Some(node) = self.node_index(&node) else {
            return Ok(None);
        };
        let mut rt = match self.runtimes.remove(key) {
            Some(rt) => rt,
            None => self.adopt(&pod),
        };
        let result = self.drive(key, &pod, &mut rt, node).await;
        self.runtimes.insert(key.to_string(), rt);
        Ok(result?.map(|write| (pod, write)))
    }

    /// The binding of an unscheduled Pod to the least loaded ready Node (`None`: no
    /// ready Node).
    fn binding(&mut self, pod: &Pod) -> Option<PodWrite> {
        let n = self.nodes.len();
        let candidates: Vec<usize> = (0..n)
            .map(|k| (self.round_robin + k) % n)
            .filter(|&i| !self.nodes[i].not_ready && self.nodes[i].observed.is_some())
            .collect();
        // The Pods on each Node (bound or being bound), counted in one pass (only when
        // there is a choice).
        let choice = if candidates.len() > 1 {
            let mut load: HashMap<&str, usize> = HashMap::new();
            for p in self.cache.values().filter(|p| !is_terminal(p)) {
                if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
                    *load.entry(node).or_default() += 1;
                }
            }
            for i in self.in_flight.values().filter_map(|w| w.binding_to) {
                *load.entry(self.nodes[i].name.as_str()).or_default() += 1;
            }
            candidates
                .iter()
                .copied()
                .min_by_key(|&i| load.get(self.nodes[i].name.as_str()).copied().unwrap_or(0))
        } else {
            candidates.first().copied()
        };
        self.round_robin = self.round_robin.wrapping_add(1);
        let Some(node) = choice else {
            debug!(
                pod = key_of(pod),
                "no ready simulated Node; leaving the Pod unscheduled"
            );
            return None;
        };
        let binding = Binding {
            metadata: ObjectMeta {
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(self.nodes[node].name.clone()),
                ..Default::default()
            },
        };
        Some(PodWrite::Bind {
            node,
            binding: Box::new(binding),
        })
    }

    /// Starts `write` for the Pod `key` in its own task; [`Sim::on_write_done`] takes
    /// its result.
    fn start_write(&mut self, key: &str, pod: &Pod, write: PodWrite) {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        let binding_to = match &write {
            PodWrite::Bind { node, .. } => Some(*node),
            _ => None,
        };
        self.in_flight.insert(
            key.to_string(),
            InFlight {
                dirty: false,
                forced: false,
                binding_to,
            },
        );
        let slots = self.write_slots.clone();
        let (key, precondition) = (key.to_string(), uid.clone());
        let task_pod = (key.clone(), uid.clone());
        let task = self.writes.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let result = match write {
                PodWrite::Bind { node, binding } => {
                    bind(&api, &name, &binding).await.map(|bound| match bound {
                        true => WriteOutcome::Bound { node },
                        false => WriteOutcome::NotBound,
                    })
                }
                PodWrite::Status { mut patch, phase } => {
                    // Refused (the UID is immutable) if a namesake replaced the Pod meanwhile.
                    patch["metadata"] = json!({ "uid": precondition });
                    call(api.patch_status(&name, &patch_params(), &Patch::Merge(patch)))
                        .await
                        .context("writing Pod status")
                        .map(|pod| WriteOutcome::StatusWritten {
                            pod: Box::new(pod),
                            phase,
                        })
                }
                PodWrite::Delete => delete_now(&api, &name, precondition)
                    .await
                    .map(|()| WriteOutcome::Deleted),
            };
            WriteDone { key, uid, result }
        });
        self.write_tasks.insert(task.id(), task_pod);
    }

    /// The report of a write task that ended; one that failed without a report (it
    /// panicked) reports an error, so its Pod is retried rather than left waiting.
    fn write_ended(
        &mut self,
        ended: Result<(tokio::task::Id, WriteDone), tokio::task::JoinError>,
    ) -> WriteDone {
        match ended {
            Ok((id, done)) => {
                self.write_tasks.remove(&id);
                done
            }
            Err(e) => {
                let (key, uid) = self.write_tasks.remove(&e.id()).unwrap_or_else(|| {
                    // Every task is recorded as it is spawned: this cannot happen.
                    warn!(error = %e, "a Pod write task of no known Pod failed");
                    Default::default()
                });
                WriteDone {
                    key,
                    uid,
                    result: Err(anyhow::anyhow!("the Pod write task failed: {e}")),
                }
            }
        }
    }

    /// Takes the result of a Pod write: records it, retries a failure with backoff, and
    /// reconciles the Pod again when it moved on or changed meanwhile.
    async fn on_write_done(&mut self, done: WriteDone) {
        let WriteDone { key, uid, result } = done;
        let (dirty, forced) = self
            .in_flight
            .remove(&key)
            .map_or((false, false), |w| (w.dirty, w.forced));
        // The Pod as cached now is the one the write was for (not deleted, not replaced
        // by a namesake).
        let same_pod = self
            .cache
            .get(&key)
            .is_some_and(|p| p.uid().unwrap_or_default() == uid);
        let mut again = dirty;
        match result {
            Ok(outcome) => {
                self.retries.remove(&key);
                match outcome {
                    WriteOutcome::Bound { node } => {
                        info!(pod = key, node = self.nodes[node].name, "bound Pod");
                        if same_pod
                            && let Some(spec) = self
                                .cache
                                .get_mut(&key)
                                .and_then(|p| Arc::make_mut(p).spec.as_mut())
                        {
                            spec.node_name = Some(self.nodes[node].name.clone());
                        }
                        // Start it now, as the kubelet does on the binding's watch event.
                        again = true;
                    }
                    WriteOutcome::NotBound => debug!(pod = key, "binding not possible"),
                    WriteOutcome::StatusWritten { pod, phase } => {
                        debug!(pod = key, ?phase, "wrote Pod status");
                        if same_pod && pod.uid().unwrap_or_default() == uid {
                            self.store(*pod);
                        }
                    }
                    WriteOutcome::Deleted => {
                        if let Some(rt) = self.runtimes.get_mut(&key)
                            && rt.uid == uid
                        {
                            rt.finished = true;
                        }
                        info!(pod = key, "Pod terminated");
                    }
                }
            }
            Err(e) if same_pod => {
                self.retry_later(&key, &e);
                // A watch event meanwhile asked for a reconcile without waiting.
                if forced {
                    self.reconcile(&key, true).await;
                }
                return;
            }
            Err(e) => debug!(pod = key, "write for a Pod since gone failed: {e:#}"),
        }
        if again {
            self.reconcile(&key, false).await;
        }
    }

    /// Starts tracking a Pod on one of our Nodes, taking over what a previous podsim
    /// (or this one before a watch restart) already reported.
    fn adopt(&mut self, pod: &Pod) -> PodRuntime {
        let now = Timestamp::now();
        let status = pod.status.as_ref();
        let mut rt = PodRuntime {
            uid: pod.uid().unwrap_or_default(),
            first_seen: Instant::now(),
            start_time: status
                .and_then(|s| s.start_time.as_ref())
                .map_or(now, |t| t.0),
            ip: None,
            running_since: None,
            crashed_at: None,
            server: None,
            deletion_seen: None,
            finished: false,
            annotation: None,
        };
        if is_terminal(pod) {
            rt.crashed_at = Some(now);
        } else if status.and_then(|s| s.phase.as_deref()) == Some("Running") {
            let ip = status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
            if let Some(ip) = ip
                && self.ips.reserve(ip)
            {
                rt.ip = Some(ip);
                rt.running_since = Some(
                    status
                        .and_then(|s| s.container_statuses.as_ref())
                        .and_then(|cs| cs.first())
                        .and_then(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
                        .map_or(rt.start_time, |t| t.0),
                );
                info!(pod = key_of(pod), %ip, "re-adopting running Pod");
            }
        }
        rt
    }

    /// IPs of Pods that run elsewhere (not on our Nodes).
    fn foreign_ips(&self) -> HashSet<Ipv4Addr> {
        self.cache
            .values()
            .filter(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_none_or(|n| self.node_index(n).is_none())
            })
            .filter_map(|p| p.status.as_ref())
            .flat_map(|s| {
                s.pod_ips
                    .iter()
                    .flatten()
                    .map(|ip| ip.ip.as_str())
                    .chain(s.pod_ip.as_deref())
            })
            .filter_map(|ip| ip.parse().ok())
            .collect()
    }

    /// Moves a Pod on our Node `node` towards what its behavior and deletion say.
    async fn drive(
        &mut self,
        key: &str,
        pod: &Pod,
        rt: &mut PodRuntime,
        node: usize,
    ) -> anyhow::Result<Option<PodWrite>> {
        if rt.finished {
            return Ok(None);
        }
        let now = Timestamp::now();
        let annotation = pod
            .annotations()
            .get(BEHAVIOR_ANNOTATION)
            .map(String::as_str);
        let (behavior, unknown) = Behavior::from_annotation(annotation);
        if rt.annotation.as_deref() != annotation {
            match unknown {
                Some(e) => warn!(pod = key, "{e}; treating the Pod as healthy"),
                None => info!(pod = key, ?behavior, "Pod behavior"),
            }
            rt.annotation = annotation.map(str::to_string);
        }

        // The "containers".
        if behavior == Behavior::Crash && rt.crashed_at.is_none() {
            info!(pod = key, "crashing Pod (exit code 1)");
            rt.crashed_at = Some(now);
        }
        if rt.crashed_at.is_some() {
            rt.server = None;
        } else if let Behavior::SlowStart(d) = behavior
            && rt.running_since.is_none()
            && rt.first_seen.elapsed() < d
        {
            // Still starting: Pending, no IP, until then.
            if let Some(at) = rt.first_seen.checked_add(d) {
                self.wake_at(key, at);
            }
        } else {
            let ip = match rt.ip {
                Some(ip) => ip,
                None => {
                    let avoid = self.foreign_ips();
                    let ip = self.ips.allocate(&avoid).context("no free Pod IP left")?;
                    rt.ip = Some(ip);
                    ip
                }
            };
            let mode = Mode::of(behavior);
            match &rt.server {
                Some(server) => {
                    if server.set_mode(mode)
                        && let Some(log) = &self.mode_log
                    {
                        log.record(key, mode.answers());
                    }
                }
                None => {
                    rt.server = Some(PodServer::start(ip.into(), &tcp_ports(pod), mode, key).await)
                }
            }
            if rt.running_since.is_none() {
                info!(pod = key, %ip, ports = ?tcp_ports(pod), node = self.nodes[node].name, "Pod running");
                rt.running_since = Some(now);
            }
        }

        // Deletion: keep running through the grace period, unless nothing runs.
        if pod.metadata.deletion_timestamp.is_some() {
            let seen = *rt.deletion_seen.get_or_insert_with(Instant::now);
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .or(pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds))
                .unwrap_or(30)
                .max(0);
            let grace = Duration::from_secs(grace as u64);
            if rt.server.is_none() || seen.elapsed() >= grace {
                rt.server = None;
                return Ok(Some(PodWrite::Delete));
            }
            // As the kubelet, stop it when the grace period ends, not at the next resync.
            if let Some(at) = seen.checked_add(grace) {
                self.wake_at(key, at);
            }
        }

        // The status.
        if is_terminal(pod) || self.nodes[node].not_ready {
            return Ok(None);
        }
        let phase = match (rt.crashed_at, rt.running_since) {
            (Some(_), _) => Phase::Failed,
            (None, Some(_)) => Phase::Running,
            (None, None) => Phase::Pending,
        };
        let desired = desired_status(
            &PodView {
                pod,
                phase,
                ip: rt.ip,
                start_time: rt.start_time,
                running_since: rt.running_since,
                finished_at: rt.crashed_at,
            },
            now,
        );
        if needs_update(&desired, pod.status.as_ref()) {
            let patch = json!({ "status": desired });
            return Ok(Some(PodWrite::Status { patch, phase }));
        }
        Ok(None)
    }
}

/// Binds a Pod as the scheduler does; `false` when it is already bound or gone.
async fn bind(api: &Api<Pod>, name: &str, binding: &Binding) -> anyhow::Result<bool> {
    let result = call(api.create_subresource::<_, serde_json::Value>(
        "binding",
        name,
        &PostParams::default(),
        binding,
    ))
    .await;
    match result {
        Ok(_) => Ok(true),
        Err(e) if matches!(code(&e), Some(404 | 409)) => Ok(false),
        Err(e) => {
            let node = binding.target.name.as_deref().unwrap_or_default();
            Err(e.context(format!("binding to {node}")))
        }
    }
}

/// Removes a terminated Pod (UID `uid`) for good (grace period 0), as the kubelet does.
async fn delete_now(api: &Api<Pod>, name: &str, uid: String) -> anyhow::Result<()> {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    match call(api.delete(name, &params)).await {
        Ok(_) => Ok(()),
        Err(e) if matches!(code(&e), Some(404 | 409)) => Ok(()),
        Err(e) => Err(e.context("deleting Pod")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_prefix_parsing() {
        assert_eq!(parse_ip_prefix("127.42"), Ok([127, 42]));
        assert_eq!(parse_ip_prefix(" 127.0 "), Ok([127, 0]));
        assert!(parse_ip_prefix("10.1").is_err());
        assert!(parse_ip_prefix("127").is_err());
        assert!(parse_ip_prefix("127.256").is_err());
        assert!(parse_ip_prefix("127.1.2").is_err());
    }

    #[test]
    fn default_config() {
        let c = Config::default();
        assert_eq!(c.nodes, 1);
        assert_eq!(c.node_prefix, "podsim");
        assert_eq!(c.namespace, None);
        assert_eq!(c.ip_prefix, None);
    }

    #[test]
    fn zones_are_given_round_robin() {
        let zones = parse_zones("a, b,c").unwrap();
        assert_eq!(zones, vec!["a", "b", "c"]);
        let of: Vec<Option<&str>> = (0..5).map(|i| zone_of(&zones, i)).collect();
        assert_eq!(
            of,
            vec![Some("a"), Some("b"), Some("c"), Some("a"), Some("b")]
        );
        assert_eq!(zone_of(&[], 3), None);
        assert_eq!(Config::default().zones, Vec::<String>::new());
        assert!(parse_zones("a,,b").is_err());
        assert!(parse_zones("").is_err());
        assert!(parse_zones(&"z".repeat(64)).is_err());
    }

    #[test]
    fn tcp_ports_are_deduplicated() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a", "ports": [{"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"}]},
                {"name": "b", "ports": [{"containerPort": 8080, "protocol": "TCP"}, {"containerPort": 9090}]},
            ]},
        }))
        .unwrap();
        assert_eq!(tcp_ports(&pod), vec![8080, 9090]);
    }
}
