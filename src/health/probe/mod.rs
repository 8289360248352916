//! The probe engine: HTTP and TCP checks from the operator to each Instance (the ELB health
//! check analogue).
//!
//! # Use
//!
//! ```ignore
//! let engine = ProbeEngine::start(metrics.clone());          // cheap to clone
//! let mut changes = engine.changes();                        // Stream<Item = InstanceKey>
//! engine.set_target(&key, Some(ProbeTarget { address, probe })); // idempotent
//! let verdict: Option<ProbeVerdict> = engine.verdict(&key);   // read in reconcile
//! engine.set_target(&key, None);                             // stop probing
//! ```
//!
//! - [`ProbeEngine::start`] builds the engine; each target gets its own tokio task, spawned on
//!   the runtime current when [`ProbeEngine::set_target`] is called. Dropping the last clone
//!   stops every probe task.
//! - [`ProbeEngine::set_target`] is idempotent: setting the same target again keeps its state
//!   (counters, connection); a different address or probe configuration restarts it from
//!   "no data"; `None` removes it.
//! - [`ProbeEngine::changes`] returns a stream of the keys of Instances whose verdict changed.
//!   Each call makes a new independent subscriber that sees every change made after the call
//!   (unbounded: nothing is dropped; a change is at most one item per probe, so the queue
//!   stays as small as the number of verdict changes not yet consumed). The stream ends when
//!   the engine is dropped. The controller maps each key to a reconcile of that Instance.
//! - [`ProbeEngine::verdict`] returns the verdict as of its last change. *Nothing leaves the
//!   engine per probe*: the verdict (counts and message included) is updated only when its
//!   [signature](ProbeVerdict::signature) changes — healthy/unhealthy/undecided, and whether a
//!   healthy or undecided target is failing below its threshold (Warning) — so a reconcile
//!   that writes the verdict into status writes only on change.
//!
//! # Probing
//!
//! - Every target is probed every `intervalSeconds` on its own schedule, at most
//!   [`EngineOptions::max_concurrency`] probes at once, each bounded by `timeoutSeconds`
//!   (connect + request + answer); see `scheduler`.
//! - HTTP(S): `GET path` with HTTP/1.1 keep-alive, with one of two clients ([`HttpClient`]):
//!   the hand-written one on `httparse` (`handwritten`, the default) or hyper's client
//!   connection API (`http`). Both behave the same (same failure classes, same reuse rules,
//!   1xx answers skipped); the hand-written one stays the default because, measured with
//!   `cargo bench --bench probe` (both in the same run), it costs about half the CPU per probe
//!   and about a third of the memory per kept-alive connection. The connection is reused for the next probe of the same
//!   target when the answer allowed it (Content-Length body of at most 64 KiB, no
//!   `Connection: close`); a reused connection the server had closed is replaced by a new one
//!   within the same timeout. Redirects are never followed (so never to another host): a 3xx
//!   answer is judged by `expectedStatuses` like any other status. HTTPS does not verify
//!   certificates (as ELB and GCP health checks; `tls`). TCP: a connect that succeeds within
//!   the timeout passes; the connection is closed at once (`conn`).
//! - Failure classes are kept apart (as GCP does with UNHEALTHY vs TIMEOUT): [`ResultClass`]
//!   `HttpStatus` (a status outside `expectedStatuses`), `Timeout`, `Refused`, `Reset`
//!   (closed or reset before an answer), `Error` (anything else). Each result is counted in
//!   `autoheal_probe_results_total{kind,result}` and timed in
//!   `autoheal_probe_duration_seconds{kind}`.
//!
//! # Thresholds
//!
//! [`ProbeCounter`] (pure, `counter`) counts consecutive results: an undecided target
//! becomes healthy after `healthyThreshold` consecutive successes or unhealthy after
//! `unhealthyThreshold` consecutive failures, whichever comes first; a healthy target becomes
//! unhealthy after `unhealthyThreshold` consecutive failures; an unhealthy target becomes
//! healthy after `healthyThreshold` consecutive successes.
//!
//! # Parts
//!
//! | module | what |
//! |---|---|
//! | this one | the engine's API: targets, verdicts, change notifications |
//! | `counter` | consecutive results against the thresholds |
//! | `scheduler` | the probe task of each target: timers, concurrency, deadline, metrics |
//! | `plan` | what a target's task computes once: address, request, statuses, timing |
//! | `conn` | connecting, the plain/TLS stream, TCP probes, connect errors |
//! | `http` | HTTP probes on hyper; statuses and paths (shared by both clients) |
//! | `handwritten` | the HTTP client on `httparse` (the default) |
//! | `tls` | the no-verify TLS connector |

mod conn;
mod counter;
mod handwritten;
mod http;
mod plan;
mod scheduler;
mod tls;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;

pub use self::counter::ProbeCounter;
pub use self::plan::StatusSet;
use crate::api::Probe;
pub use crate::api::types::{ProbeKind, ResultClass};
use crate::telemetry::Metrics;
use plan::TargetPlan;
use scheduler::{TaskContext, run_target};

/// What to probe for one Instance.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeTarget {
    /// The Instance's address (its Pod IP).
    pub address: IpAddr,
    /// The probe configuration.
    pub probe: Probe,
}

/// The probe engine's verdict for one Instance, with its evidence.
///
/// It is a snapshot taken when the verdict last changed (see [`ProbeVerdict::signature`]): the
/// counts are those at that moment, and the message does not change between two changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeVerdict {
    /// `Some(true)` healthy, `Some(false)` unhealthy, `None` not enough results yet.
    pub healthy: Option<bool>,
    /// Consecutive failures so far (below the threshold this means Warning).
    pub consecutive_failures: u32,
    /// Consecutive successes so far.
    pub consecutive_successes: u32,
    /// The evidence, e.g. `HTTP 503 from 10.0.0.7:8080/healthz, 3 consecutive failures`.
    pub message: String,
    /// The class of the latest result when it is a failure (`None` after a success or before
    /// the first result).
    pub failure: Option<ResultClass>,
    /// The unhealthy threshold the counts are measured against.
    pub unhealthy_threshold: u32,
    /// The healthy threshold the counts are measured against.
    pub healthy_threshold: u32,
}

/// What makes two verdicts different for the reconcile loop: healthy/unhealthy/undecided, and
/// whether a not-unhealthy target is failing below its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerdictSignature {
    /// [`ProbeVerdict::healthy`].
    pub healthy: Option<bool>,
    /// Failing below the unhealthy threshold (Warning); always false when unhealthy.
    pub failing: bool,
}

impl ProbeVerdict {
    /// The verdict of a target with no result yet.
    pub fn pending(target_desc: &str, healthy_threshold: u32, unhealthy_threshold: u32) -> Self {
        Self {
            healthy: None,
            consecutive_failures: 0,
            consecutive_successes: 0,
            message: format!(
                "no verdict yet for {target_desc}: {healthy_threshold} consecutive successes needed"
            ),
            failure: None,
            unhealthy_threshold,
            healthy_threshold,
        }
    }

    /// The part of the verdict whose change is notified.
    pub fn signature(&self) -> VerdictSignature {
        VerdictSignature {
            healthy: self.healthy,
            failing: self.healthy != Some(false) && self.consecutive_failures > 0,
        }
    }

    /// Whether the target is failing below its unhealthy threshold (→ Warning).
    pub fn is_warning(&self) -> bool {
        self.signature().failing
    }
}

/// One probe result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// Its class ([`ResultClass::Success`] for a pass).
    pub class: ResultClass,
    /// The evidence, e.g. `HTTP 503 from 10.0.0.7:8080/healthz` or
    /// `connection refused by 10.0.0.7:8080`.
    pub evidence: String,
}

impl ProbeResult {
    /// Whether the probe passed.
    pub fn passed(&self) -> bool {
        self.class == ResultClass::Success
    }
}

/// Identifies an Instance: (namespace, name).
pub type InstanceKey = (String, String);

/// Which HTTP/1.1 client HTTP(S) probes use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HttpClient {
    /// hyper's client connection API (`hyper::client::conn::http1`).
    Hyper,
    /// The hand-written client on `httparse` (the default: in the probe benchmark it needs
    /// about half the CPU per probe of the hyper client, and about a third of the memory per
    /// kept-alive connection).
    #[default]
    Handwritten,
}

/// Tuning of the engine.
#[derive(Clone)]
pub struct EngineOptions {
    /// Probes in flight at once, at most (default 4096).
    pub max_concurrency: usize,
    /// Replaces every target's `intervalSeconds` (benchmarks only; `None` in the operator).
    pub interval_override: Option<Duration>,
    /// Called with the lateness of every probe after its wake-up time (its slot rounded up
    /// to a 10 ms grid; benchmarks).
    pub lateness_observer: Option<Arc<dyn Fn(Duration) + Send + Sync>>,
    /// The HTTP client of HTTP(S) probes (default [`HttpClient::Handwritten`]).
    pub http_client: HttpClient,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_concurrency: 4096,
            interval_override: None,
            lateness_observer: None,
            http_client: HttpClient::default(),
        }
    }
}

impl fmt::Debug for EngineOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineOptions")
            .field("max_concurrency", &self.max_concurrency)
            .field("interval_override", &self.interval_override)
            .field("http_client", &self.http_client)
            .finish_non_exhaustive()
    }
}

/// Runs the probes; only verdict changes leave it. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct ProbeEngine {
    inner: Arc<Inner>,
}

impl fmt::Debug for ProbeEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeEngine")
            .field("targets", &self.target_count())
            .finish_non_exhaustive()
    }
}

impl Default for ProbeEngine {
    /// An engine recording into a private [`Metrics`] registry.
    fn default() -> Self {
        Self::start(Metrics::new())
    }
}

/// What every probe task of an engine uses to connect and speak HTTP.
struct Clients {
    /// The HTTP client selected by the options.
    client: HttpClient,
    /// The no-verify TLS connector.
    tls: tokio_rustls::TlsConnector,
    /// The hyper connection builder.
    http1: hyper::client::conn::http1::Builder,
}

/// The per-target probing state: the kept-alive connection of the selected HTTP client.
enum Prober {
    Tcp,
    Hyper(http::Session),
    Handwritten(handwritten::Session),
}

impl Prober {
    fn new(plan: &TargetPlan, client: HttpClient) -> Self {
        match (plan.kind, client) {
            (ProbeKind::Tcp, _) => Prober::Tcp,
            (ProbeKind::Http, HttpClient::Hyper) => Prober::Hyper(Default::default()),
            (ProbeKind::Http, HttpClient::Handwritten) => Prober::Handwritten(Default::default()),
        }
    }

    /// One probe, without the overall timeout (applied by the scheduler).
    async fn probe(&mut self, plan: &TargetPlan, clients: &Clients) -> ProbeResult {
        match self {
            Prober::Tcp => conn::probe_tcp(plan).await,
            Prober::Hyper(s) => s.probe(plan, &clients.tls, &clients.http1).await,
            Prober::Handwritten(s) => s.probe(plan, &clients.tls).await,
        }
    }
}

/// One target probed outside any engine, probe after probe on the same kept-alive session,
/// with the engine's clients and the target's timeout (as the scheduler applies it): for the
/// fuzz targets in `fuzz/`, which answer arbitrary bytes. Not a stable API.
#[doc(hidden)]
pub struct OneTarget {
    clients: Clients,
    prober: Prober,
    plan: TargetPlan,
}

impl OneTarget {
    /// A prober of `target` with the chosen HTTP client.
    pub fn new(target: &ProbeTarget, client: HttpClient) -> Self {
        let plan = TargetPlan::new(target, None);
        Self {
            clients: Clients {
                client,
                tls: tls::insecure_tls_connector(),
                http1: http::builder(),
            },
            prober: Prober::new(&plan, client),
            plan,
        }
    }

    /// One probe, bounded by the target's timeout (a timeout is [`ResultClass::Timeout`]).
    pub async fn probe(&mut self) -> ProbeResult {
        match tokio::time::timeout(
            self.plan.timeout,
            self.prober.probe(&self.plan, &self.clients),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => ProbeResult {
                class: ResultClass::Timeout,
                evidence: format!("timeout waiting for {}", self.plan.description),
            },
        }
    }
}

struct Inner {
    metrics: Metrics,
    options: EngineOptions,
    limit: Arc<Semaphore>,
    clients: Arc<Clients>,
    targets: Mutex<Targets>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<InstanceKey>>>,
}

#[derive(Default)]
struct Targets {
    next_generation: u64,
    map: HashMap<InstanceKey, Entry>,
}

struct Entry {
    target: ProbeTarget,
    generation: u64,
    verdict: ProbeVerdict,
    task: Option<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let targets = self.targets.get_mut().unwrap_or_else(|e| e.into_inner());
        for entry in targets.map.values() {
            if let Some(task) = &entry.task {
                task.abort();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps inconsistent: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ProbeEngine {
    /// An engine with default [`EngineOptions`], recording into `metrics`.
    pub fn start(metrics: Metrics) -> Self {
        Self::with_options(metrics, EngineOptions::default())
    }

    /// An engine with explicit options.
    pub fn with_options(metrics: Metrics, options: EngineOptions) -> Self {
        let limit = Arc::new(Semaphore::new(options.max_concurrency.max(1)));
        let clients = Arc::new(Clients {
            client: options.http_client,
            tls: tls::insecure_tls_connector(),
            http1: http::builder(),
        });
        Self {
            inner: Arc::new(Inner {
                metrics,
                options,
                limit,
                clients,
                targets: Mutex::new(Targets::default()),
                subscribers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Sets (or with `None` removes) the probe target of an Instance.
    pub fn set_target(&self, key: &InstanceKey, target: Option<ProbeTarget>) {
        let mut targets = lock(&self.inner.targets);
        match target {
            None => {
                if let Some(entry) = targets.map.remove(key)
                    && let Some(task) = entry.task
                {
                    task.abort();
                }
            }
            Some(target) => {
                if targets.map.get(key).is_some_and(|e| e.target == target) {
                    return;
                }
                if let Some(old) = targets.map.remove(key)
                    && let Some(task) = old.task
                {
                    task.abort();
                }
                targets.next_generation += 1;
                let generation = targets.next_generation;
                let plan = TargetPlan::new(&target, self.inner.options.interval_override);
                let verdict = ProbeVerdict::pending(
                    &plan.description,
                    plan.healthy_threshold as u32,
                    plan.unhealthy_threshold as u32,
                );
                let task = match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        let cx = TaskContext {
                            engine: Arc::downgrade(&self.inner),
                            metrics: self.inner.metrics.clone(),
                            limit: self.inner.limit.clone(),
                            clients: self.inner.clients.clone(),
                            lateness_observer: self.inner.options.lateness_observer.clone(),
                        };
                        Some(
                            rt.spawn(run_target(cx, key.clone(), generation, plan))
                                .abort_handle(),
                        )
                    }
                    Err(_) => {
                        tracing::error!(
                            namespace = %key.0, instance = %key.1,
                            "probe target set outside a tokio runtime: not probed"
                        );
                        None
                    }
                };
                targets.map.insert(
                    key.clone(),
                    Entry {
                        target,
                        generation,
                        verdict,
                        task,
                    },
                );
            }
        }
        self.inner.metrics.set_probe_targets(targets.map.len());
    }

    /// The current verdict of an Instance, if it has a target.
    pub fn verdict(&self, key: &InstanceKey) -> Option<ProbeVerdict> {
        lock(&self.inner.targets)
            .map
            .get(key)
            .map(|e| e.verdict.clone())
    }

    /// How many Instances are probed.
    pub fn target_count(&self) -> usize {
        lock(&self.inner.targets).map.len()
    }

    /// A stream of the keys of Instances whose verdict changed (see the module doc). Each call
    /// is an independent subscriber; the stream ends when the engine is dropped.
    pub fn changes(&self) -> impl Stream<Item = InstanceKey> + Send + Unpin + 'static {
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&self.inner.subscribers).push(tx);
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}

impl Inner {
    /// Stores a new verdict and notifies subscribers; false when the target is gone.
    fn publish(&self, key: &InstanceKey, generation: u64, verdict: ProbeVerdict) -> bool {
        {
            let mut targets = lock(&self.targets);
            match targets.map.get_mut(key) {
                Some(e) if e.generation == generation => e.verdict = verdict,
                _ => return false,
            }
        }
        self.metrics.inc_verdict_changes();
        lock(&self.subscribers).retain(|tx| tx.send(key.clone()).is_ok());
        true
    }
}
