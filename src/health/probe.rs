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
//! - Every target is probed every `intervalSeconds`, the first time after a random phase in
//!   `[0, interval)` (so targets registered together are spread over the interval), and each
//!   later time on a fixed schedule with a ±2 % jitter (at most 100 ms). A probe that falls
//!   more than one interval behind (an overloaded operator) skips the missed slots instead of
//!   bursting. How late each probe starts is recorded in `autoheal_probe_lateness_seconds`.
//! - At most [`EngineOptions::max_concurrency`] probes are in flight at once (a semaphore).
//! - Each probe is bounded by `timeoutSeconds` (connect + request + answer).
//! - HTTP(S): `GET path` with HTTP/1.1 keep-alive. The connection is reused for the next probe
//!   of the same target when the answer allowed it (Content-Length body of at most 64 KiB, no
//!   `Connection: close`); a reused connection the server had closed is retried once on a new
//!   connection within the same timeout. Redirects are never followed (so never to another
//!   host): a 3xx answer is judged by `expectedStatuses` like any other status. HTTPS does not
//!   verify certificates (as ELB and GCP health checks). TCP: a connect that succeeds within
//!   the timeout passes; the connection is closed at once.
//! - Failure classes are kept apart (as GCP does with UNHEALTHY vs TIMEOUT): [`ResultClass`]
//!   `HttpStatus` (a status outside `expectedStatuses`), `Timeout`, `Refused`, `Reset`
//!   (closed or reset before an answer), `Error` (anything else). Each result is counted in
//!   `autoheal_probe_results_total{kind,result}` and timed in
//!   `autoheal_probe_duration_seconds{kind}`.
//!
//! # Thresholds
//!
//! [`ProbeCounter`] (pure) counts consecutive results: an undecided target becomes healthy
//! after `healthyThreshold` consecutive successes or unhealthy after `unhealthyThreshold`
//! consecutive failures, whichever comes first; a healthy target becomes unhealthy after
//! `unhealthyThreshold` consecutive failures; an unhealthy target becomes healthy after
//! `healthyThreshold` consecutive successes.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio::time::Instant;

pub use crate::api::types::{ProbeKind, ResultClass};
use crate::api::{Probe, Scheme};
use crate::telemetry::Metrics;

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

/// Counts consecutive results against the thresholds (pure; the engine keeps one per target).
#[derive(Debug, Clone)]
pub struct ProbeCounter {
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    healthy: Option<bool>,
    failures: u32,
    successes: u32,
    published: VerdictSignature,
}

impl ProbeCounter {
    /// A counter with no results; thresholds are clamped to 1..=10 (the API's range).
    pub fn new(healthy_threshold: i32, unhealthy_threshold: i32) -> Self {
        Self {
            healthy_threshold: healthy_threshold.clamp(1, 10) as u32,
            unhealthy_threshold: unhealthy_threshold.clamp(1, 10) as u32,
            healthy: None,
            failures: 0,
            successes: 0,
            published: VerdictSignature {
                healthy: None,
                failing: false,
            },
        }
    }

    /// Records a result; returns the new verdict when its signature changed.
    pub fn record(&mut self, result: &ProbeResult) -> Option<ProbeVerdict> {
        if result.passed() {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.healthy != Some(true) && self.successes >= self.healthy_threshold {
                self.healthy = Some(true);
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.healthy != Some(false) && self.failures >= self.unhealthy_threshold {
                self.healthy = Some(false);
            }
        }
        let verdict = self.verdict(result);
        let signature = verdict.signature();
        if signature == self.published {
            return None;
        }
        self.published = signature;
        Some(verdict)
    }

    fn verdict(&self, result: &ProbeResult) -> ProbeVerdict {
        let plural = |n: u32, what: &str| {
            if n == 1 {
                format!("1 consecutive {what}")
            } else if what.ends_with('s') {
                format!("{n} consecutive {what}es")
            } else {
                format!("{n} consecutive {what}s")
            }
        };
        let evidence = &result.evidence;
        let message = match (self.healthy, result.passed()) {
            (Some(false), _) => format!("{evidence}, {}", plural(self.failures, "failure")),
            (_, false) => format!(
                "{evidence}, {} (unhealthy at {})",
                plural(self.failures, "failure"),
                self.unhealthy_threshold
            ),
            (Some(true), true) => format!("{evidence}, {}", plural(self.successes, "success")),
            (None, true) => format!(
                "{evidence}, {} of {} needed",
                plural(self.successes, "success"),
                self.healthy_threshold
            ),
        };
        ProbeVerdict {
            healthy: self.healthy,
            consecutive_failures: self.failures,
            consecutive_successes: self.successes,
            message,
            failure: (!result.passed()).then_some(result.class),
            unhealthy_threshold: self.unhealthy_threshold,
            healthy_threshold: self.healthy_threshold,
        }
    }
}

/// Identifies an Instance: (namespace, name).
pub type InstanceKey = (String, String);

/// Tuning of the engine.
#[derive(Clone)]
pub struct EngineOptions {
    /// Probes in flight at once, at most (default 4096).
    pub max_concurrency: usize,
    /// Replaces every target's `intervalSeconds` (benchmarks only; `None` in the operator).
    pub interval_override: Option<Duration>,
    /// Called with the lateness of every probe against its schedule (benchmarks).
    pub lateness_observer: Option<Arc<dyn Fn(Duration) + Send + Sync>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_concurrency: 4096,
            interval_override: None,
            lateness_observer: None,
        }
    }
}

impl fmt::Debug for EngineOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineOptions")
            .field("max_concurrency", &self.max_concurrency)
            .field("interval_override", &self.interval_override)
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

struct Inner {
    metrics: Metrics,
    options: EngineOptions,
    limit: Arc<Semaphore>,
    tls: Arc<tokio_rustls::TlsConnector>,
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
        Self {
            inner: Arc::new(Inner {
                metrics,
                options,
                limit,
                tls: Arc::new(insecure_tls_connector()),
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
                    Ok(rt) => Some(
                        rt.spawn(run_target(
                            Arc::downgrade(&self.inner),
                            key.clone(),
                            generation,
                            plan,
                            self.inner.metrics.clone(),
                            self.inner.limit.clone(),
                            self.inner.tls.clone(),
                            self.inner.options.lateness_observer.clone(),
                        ))
                        .abort_handle(),
                    ),
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

/// Everything a probe task needs, computed once per target.
struct TargetPlan {
    kind: ProbeKind,
    addr: SocketAddr,
    tls: bool,
    /// The raw HTTP request (HTTP probes).
    request: Vec<u8>,
    expected: StatusSet,
    interval: Duration,
    timeout: Duration,
    healthy_threshold: i32,
    unhealthy_threshold: i32,
    /// e.g. `127.0.0.5:8080/healthz` or `127.0.0.5:5432`.
    description: String,
}

impl TargetPlan {
    fn new(target: &ProbeTarget, interval_override: Option<Duration>) -> Self {
        let p = &target.probe;
        let interval = interval_override
            .unwrap_or_else(|| Duration::from_secs(p.interval_seconds.clamp(1, 300) as u64));
        let timeout = Duration::from_secs(p.timeout_seconds.clamp(1, 120) as u64);
        let port_of = |port: i32| u16::try_from(port).unwrap_or(0);
        let (kind, port, tls, path, expected) = match (&p.http, &p.tcp) {
            (Some(h), _) => (
                ProbeKind::Http,
                port_of(h.port),
                h.scheme == Scheme::Https,
                sanitize_path(&h.path),
                StatusSet::parse(&h.expected_statuses),
            ),
            (None, Some(t)) => (
                ProbeKind::Tcp,
                port_of(t.port),
                false,
                String::new(),
                StatusSet::default(),
            ),
            // Refused by the API schema; probe the TCP port 0 so it fails visibly.
            (None, None) => (
                ProbeKind::Tcp,
                0,
                false,
                String::new(),
                StatusSet::default(),
            ),
        };
        let addr = SocketAddr::new(target.address, port);
        let host = match target.address {
            IpAddr::V4(a) => format!("{a}:{port}"),
            IpAddr::V6(a) => format!("[{a}]:{port}"),
        };
        let request = match kind {
            ProbeKind::Http => format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: autoheal-probe/{}\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n",
                env!("CARGO_PKG_VERSION")
            )
            .into_bytes(),
            ProbeKind::Tcp => Vec::new(),
        };
        Self {
            kind,
            addr,
            tls,
            request,
            expected,
            interval,
            timeout,
            healthy_threshold: p.healthy_threshold,
            unhealthy_threshold: p.unhealthy_threshold,
            description: format!("{host}{path}"),
        }
    }
}

/// Percent-encodes bytes that cannot appear in a request line (blanks, controls, non-ASCII).
fn sanitize_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        out.push('/');
    }
    for b in path.bytes() {
        if b.is_ascii_graphic() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The statuses an HTTP probe accepts, e.g. `200-399` or `200,204,300-308`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<(u16, u16)>);

impl Default for StatusSet {
    fn default() -> Self {
        Self(vec![(200, 399)])
    }
}

impl StatusSet {
    /// Parses a list of codes and ranges; parts that cannot be understood are skipped, and an
    /// empty result means the default `200-399` (the API server validates the field).
    pub fn parse(spec: &str) -> Self {
        let ranges: Vec<(u16, u16)> = spec
            .split(',')
            .filter_map(|part| {
                let part = part.trim();
                let (a, b) = part.split_once('-').unwrap_or((part, part));
                let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
                (a <= b).then_some((a, b))
            })
            .collect();
        if ranges.is_empty() {
            Self::default()
        } else {
            Self(ranges)
        }
    }

    /// Whether `status` is accepted.
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|&(a, b)| (a..=b).contains(&status))
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_target(
    engine: Weak<Inner>,
    key: InstanceKey,
    generation: u64,
    plan: TargetPlan,
    metrics: Metrics,
    limit: Arc<Semaphore>,
    tls: Arc<tokio_rustls::TlsConnector>,
    lateness_observer: Option<Arc<dyn Fn(Duration) + Send + Sync>>,
) {
    let mut counter = ProbeCounter::new(plan.healthy_threshold, plan.unhealthy_threshold);
    let mut conn: Option<Conn> = None;
    let mut buf: Vec<u8> = Vec::new();
    let interval = plan.interval;
    let phase = Duration::from_nanos(rand::random_range(0..interval.as_nanos().max(1) as u64));
    let mut next = Instant::now() + phase;
    loop {
        tokio::time::sleep_until(next).await;
        let Ok(permit) = limit.acquire().await else {
            return;
        };
        let started = Instant::now();
        let lateness = started.saturating_duration_since(next);
        metrics.observe_probe_lateness(lateness);
        if let Some(observe) = &lateness_observer {
            observe(lateness);
        }
        let result =
            match tokio::time::timeout(plan.timeout, probe_once(&plan, &mut conn, &mut buf, &tls))
                .await
            {
                Ok(result) => result,
                Err(_) => {
                    conn = None;
                    ProbeResult {
                        class: ResultClass::Timeout,
                        evidence: format!(
                            "timeout after {}s waiting for {}",
                            plan.timeout.as_secs(),
                            plan.description
                        ),
                    }
                }
            };
        drop(permit);
        metrics.observe_probe(plan.kind, result.class, started.elapsed());
        if buf.capacity() > 16 * 1024 {
            buf = Vec::new();
        }
        if let Some(verdict) = counter.record(&result) {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            if !engine.publish(&key, generation, verdict) {
                return;
            }
        }
        // Next slot, with a small jitter; skip slots missed by more than one interval.
        let jitter_max = (interval / 50).min(Duration::from_millis(100));
        let jitter = rand::random_range(0..=2 * jitter_max.as_nanos() as u64);
        next = next + interval + Duration::from_nanos(jitter) - jitter_max;
        let now = Instant::now();
        if next + interval < now {
            let behind = now - next;
            let slots = (behind.as_nanos() / interval.as_nanos().max(1)) as u32;
            next += interval * slots;
        }
    }
}

/// One probe, without the overall timeout (applied by the caller).
async fn probe_once(
    plan: &TargetPlan,
    conn: &mut Option<Conn>,
    buf: &mut Vec<u8>,
    tls: &tokio_rustls::TlsConnector,
) -> ProbeResult {
    match plan.kind {
        ProbeKind::Tcp => match TcpStream::connect(plan.addr).await {
            Ok(_) => ProbeResult {
                class: ResultClass::Success,
                evidence: format!("TCP connect to {} succeeded", plan.description),
            },
            Err(e) => connect_failure(plan, &e),
        },
        ProbeKind::Http => {
            // Take the connection out: if this future is cancelled (timeout) it is dropped.
            if let Some(mut reused) = conn.take() {
                match http_exchange(plan, &mut reused, buf).await {
                    Ok((status, reusable)) => {
                        if reusable {
                            *conn = Some(reused);
                        }
                        return http_result(plan, status);
                    }
                    Err(ExchangeError::Io(_)) | Err(ExchangeError::ClosedEarly) => {
                        // The server closed a kept-alive connection: retry on a new one.
                    }
                    Err(e) => return exchange_failure(plan, e),
                }
            }
            let mut fresh = match connect(plan, tls).await {
                Ok(c) => c,
                Err(r) => return r,
            };
            match http_exchange(plan, &mut fresh, buf).await {
                Ok((status, reusable)) => {
                    if reusable {
                        *conn = Some(fresh);
                    }
                    http_result(plan, status)
                }
                Err(e) => exchange_failure(plan, e),
            }
        }
    }
}

fn http_result(plan: &TargetPlan, status: u16) -> ProbeResult {
    ProbeResult {
        class: if plan.expected.contains(status) {
            ResultClass::Success
        } else {
            ResultClass::HttpStatus
        },
        evidence: format!("HTTP {status} from {}", plan.description),
    }
}

fn connect_failure(plan: &TargetPlan, e: &io::Error) -> ProbeResult {
    let addr = plan.addr;
    let (class, evidence) = match e.kind() {
        io::ErrorKind::ConnectionRefused => (
            ResultClass::Refused,
            format!("connection refused by {addr}"),
        ),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
            (ResultClass::Reset, format!("connection reset by {addr}"))
        }
        io::ErrorKind::TimedOut => (
            ResultClass::Timeout,
            format!("timeout connecting to {addr}"),
        ),
        _ => (ResultClass::Error, format!("cannot connect to {addr}: {e}")),
    };
    ProbeResult { class, evidence }
}

fn exchange_failure(plan: &TargetPlan, e: ExchangeError) -> ProbeResult {
    let d = &plan.description;
    let (class, evidence) = match e {
        ExchangeError::ClosedEarly => (
            ResultClass::Reset,
            format!("connection closed by {} before an answer", plan.addr),
        ),
        ExchangeError::Io(e) => match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => (
                ResultClass::Reset,
                format!("connection reset by {} ({e})", plan.addr),
            ),
            _ => (ResultClass::Error, format!("probe of {d} failed: {e}")),
        },
        ExchangeError::Malformed(why) => (
            ResultClass::Error,
            format!("malformed HTTP answer from {d}: {why}"),
        ),
    };
    ProbeResult { class, evidence }
}

async fn connect(plan: &TargetPlan, tls: &tokio_rustls::TlsConnector) -> Result<Conn, ProbeResult> {
    let tcp = TcpStream::connect(plan.addr)
        .await
        .map_err(|e| connect_failure(plan, &e))?;
    let _ = tcp.set_nodelay(true);
    if !plan.tls {
        return Ok(Conn::Plain(tcp));
    }
    let name = rustls::pki_types::ServerName::IpAddress(plan.addr.ip().into());
    match tls.connect(name, tcp).await {
        Ok(s) => Ok(Conn::Tls(Box::new(s))),
        Err(e) => Err(ProbeResult {
            class: match e.kind() {
                io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof => ResultClass::Reset,
                _ => ResultClass::Error,
            },
            evidence: format!("TLS handshake with {} failed: {e}", plan.addr),
        }),
    }
}

enum ExchangeError {
    /// EOF before a complete answer head.
    ClosedEarly,
    Io(io::Error),
    Malformed(String),
}

/// Largest answer head accepted, and largest body read to keep the connection.
const MAX_HEAD: usize = 16 * 1024;
const MAX_REUSE_BODY: usize = 64 * 1024;

/// Sends the request and reads the answer head (and the body when the connection can be
/// reused). Returns the status and whether the connection can be reused.
async fn http_exchange(
    plan: &TargetPlan,
    conn: &mut Conn,
    buf: &mut Vec<u8>,
) -> Result<(u16, bool), ExchangeError> {
    conn.write_all(&plan.request)
        .await
        .map_err(ExchangeError::Io)?;
    buf.clear();
    let mut chunk = [0u8; 2048];
    loop {
        let n = conn.read(&mut chunk).await.map_err(ExchangeError::Io)?;
        if n == 0 {
            return Err(ExchangeError::ClosedEarly);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                return Err(ExchangeError::Malformed("answer head too large".into()));
            }
            Err(e) => return Err(ExchangeError::Malformed(e.to_string())),
        };
        let status = resp.code.unwrap_or(0);
        if (100..200).contains(&status) {
            // An interim answer: drop it and read on.
            buf.drain(..head_len);
            continue;
        }
        let mut content_length: Option<usize> = None;
        let mut reusable = resp.version == Some(1);
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                content_length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok());
            } else if h.name.eq_ignore_ascii_case("connection") {
                if h.value.eq_ignore_ascii_case(b"close") {
                    reusable = false;
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                reusable = false;
            }
        }
        let body_len = match content_length {
            Some(n) if n <= MAX_REUSE_BODY => n,
            _ => return Ok((status, false)),
        };
        if status == 204 || status == 304 {
            return Ok((status, reusable));
        }
        let mut have = buf.len() - head_len;
        while have < body_len {
            let n = conn.read(&mut chunk).await.map_err(ExchangeError::Io)?;
            if n == 0 {
                return Ok((status, false));
            }
            have += n;
        }
        return Ok((status, reusable && have == body_len));
    }
}

/// A probe connection: plain TCP or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A TLS connector that does not verify certificates (health checks, like ELB's and GCP's,
/// check liveness, not identity).
fn insecure_tls_connector() -> tokio_rustls::TlsConnector {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for NoVerify {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{HttpProbe, TcpProbe};
    use futures::StreamExt;
    use tokio::net::TcpListener;

    fn ok() -> ProbeResult {
        ProbeResult {
            class: ResultClass::Success,
            evidence: "HTTP 200 from a:1/".into(),
        }
    }
    fn fail() -> ProbeResult {
        ProbeResult {
            class: ResultClass::HttpStatus,
            evidence: "HTTP 503 from a:1/".into(),
        }
    }

    #[test]
    fn undecided_until_a_threshold_is_reached() {
        let mut c = ProbeCounter::new(2, 3);
        assert_eq!(c.record(&ok()), None, "1 of 2 successes: still undecided");
        let v = c.record(&ok()).expect("healthy after 2");
        assert_eq!(v.healthy, Some(true));
        assert_eq!(v.consecutive_successes, 2);
        assert_eq!(v.message, "HTTP 200 from a:1/, 2 consecutive successes");
        assert_eq!(c.record(&ok()), None, "no change, nothing published");
    }

    #[test]
    fn failures_below_threshold_are_a_warning_then_unhealthy() {
        let mut c = ProbeCounter::new(2, 3);
        c.record(&ok());
        c.record(&ok());
        let w = c.record(&fail()).expect("warning published");
        assert_eq!(w.healthy, Some(true));
        assert!(w.is_warning());
        assert_eq!(w.failure, Some(ResultClass::HttpStatus));
        assert_eq!(
            w.message,
            "HTTP 503 from a:1/, 1 consecutive failure (unhealthy at 3)"
        );
        assert_eq!(c.record(&fail()), None, "2nd failure: same signature");
        let u = c.record(&fail()).expect("unhealthy at 3");
        assert_eq!(u.healthy, Some(false));
        assert!(!u.is_warning());
        assert_eq!(u.message, "HTTP 503 from a:1/, 3 consecutive failures");
        assert_eq!(c.record(&fail()), None);
        // Recovery needs healthyThreshold successes; one is not a change.
        assert_eq!(c.record(&ok()), None);
        let h = c.record(&ok()).expect("healthy again");
        assert_eq!(h.healthy, Some(true));
        assert!(!h.is_warning());
    }

    #[test]
    fn an_intermittent_failure_is_warning_then_ok() {
        let mut c = ProbeCounter::new(1, 2);
        assert_eq!(c.record(&ok()).unwrap().healthy, Some(true));
        assert!(c.record(&fail()).unwrap().is_warning());
        let back = c.record(&ok()).unwrap();
        assert_eq!(back.healthy, Some(true));
        assert!(!back.is_warning());
    }

    #[test]
    fn undecided_and_failing_is_a_warning_and_can_go_unhealthy_first() {
        let mut c = ProbeCounter::new(2, 2);
        let w = c.record(&fail()).unwrap();
        assert_eq!(w.healthy, None);
        assert!(w.is_warning());
        let u = c.record(&fail()).unwrap();
        assert_eq!(u.healthy, Some(false));
    }

    #[test]
    fn thresholds_are_clamped() {
        let mut c = ProbeCounter::new(0, -5);
        assert_eq!(c.record(&fail()).unwrap().healthy, Some(false));
        let mut c = ProbeCounter::new(99, 1);
        for _ in 0..9 {
            assert_eq!(c.record(&ok()), None);
        }
        assert_eq!(c.record(&ok()).unwrap().healthy, Some(true));
    }

    #[test]
    fn status_sets() {
        let s = StatusSet::parse("200,204,300-308");
        assert!(s.contains(200) && s.contains(204) && s.contains(301));
        assert!(!s.contains(201) && !s.contains(503));
        assert_eq!(StatusSet::parse("garbage"), StatusSet::default());
        assert_eq!(StatusSet::parse("399-200"), StatusSet::default());
        assert!(StatusSet::parse(" 200 - 299 ").contains(250));
    }

    #[test]
    fn paths_cannot_inject_headers() {
        assert_eq!(
            sanitize_path("/a b\r\nX: y"),
            "/a%20b%0D%0AX:%20y".to_string()
        );
        assert_eq!(sanitize_path("healthz"), "/healthz");
    }

    fn http_probe(port: u16, path: &str) -> Probe {
        Probe {
            http: Some(HttpProbe {
                port: port.into(),
                path: path.into(),
                scheme: Scheme::Http,
                expected_statuses: "200-399".into(),
            }),
            tcp: None,
            interval_seconds: 1,
            timeout_seconds: 1,
            healthy_threshold: 1,
            unhealthy_threshold: 1,
        }
    }

    /// A tiny keep-alive server answering each request with `status`; counts connections.
    async fn server(
        status: u16,
    ) -> (
        SocketAddr,
        Arc<std::sync::atomic::AtomicUsize>,
        tokio::task::JoinHandle<()>,
    ) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c2 = conns.clone();
        let task = tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut have = Vec::new();
                    loop {
                        let Ok(n) = s.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        have.extend_from_slice(&buf[..n]);
                        while let Some(pos) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                            have.drain(..pos + 4);
                            let body = "hi";
                            let resp = format!(
                                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if s.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, conns, task)
    }

    fn key(name: &str) -> InstanceKey {
        ("ns".into(), name.into())
    }

    #[tokio::test]
    async fn http_probes_reuse_the_connection_and_report_changes() {
        let (addr, conns, _srv) = server(200).await;
        let engine = ProbeEngine::with_options(
            Metrics::new(),
            EngineOptions {
                interval_override: Some(Duration::from_millis(20)),
                ..Default::default()
            },
        );
        let mut changes = engine.changes();
        let target = ProbeTarget {
            address: addr.ip(),
            probe: http_probe(addr.port(), "/healthz"),
        };
        engine.set_target(&key("a"), Some(target.clone()));
        assert_eq!(engine.verdict(&key("a")).unwrap().healthy, None);
        let k = tokio::time::timeout(Duration::from_secs(5), changes.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(k, key("a"));
        let v = engine.verdict(&k).unwrap();
        assert_eq!(v.healthy, Some(true));
        assert!(v.message.contains(&format!("HTTP 200 from {addr}/healthz")));
        // Same target again: no restart.
        engine.set_target(&key("a"), Some(target));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(engine.verdict(&key("a")).unwrap().healthy, Some(true));
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
        engine.set_target(&key("a"), None);
        assert_eq!(engine.verdict(&key("a")), None);
        assert_eq!(engine.target_count(), 0);
    }

    #[tokio::test]
    async fn failure_classes_are_kept_apart() {
        let engine = ProbeEngine::with_options(
            Metrics::new(),
            EngineOptions {
                interval_override: Some(Duration::from_millis(20)),
                ..Default::default()
            },
        );
        let mut changes = engine.changes();
        // 503
        let (addr503, _, _s) = server(503).await;
        engine.set_target(
            &key("bad"),
            Some(ProbeTarget {
                address: addr503.ip(),
                probe: http_probe(addr503.port(), "/"),
            }),
        );
        // refused: a port nobody listens on
        let free = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        engine.set_target(
            &key("refused"),
            Some(ProbeTarget {
                address: free.ip(),
                probe: http_probe(free.port(), "/"),
            }),
        );
        // hang: accepts, never answers
        let hang = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hang_addr = hang.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (s, _) = hang.accept().await.unwrap();
                held.push(s);
            }
        });
        engine.set_target(
            &key("hang"),
            Some(ProbeTarget {
                address: hang_addr.ip(),
                probe: http_probe(hang_addr.port(), "/"),
            }),
        );
        // tcp ok
        let (tcp_addr, _, _s2) = server(200).await;
        let mut tcp = http_probe(0, "/");
        tcp.http = None;
        tcp.tcp = Some(TcpProbe {
            port: tcp_addr.port().into(),
        });
        engine.set_target(
            &key("tcp"),
            Some(ProbeTarget {
                address: tcp_addr.ip(),
                probe: tcp,
            }),
        );
        let mut seen = std::collections::HashSet::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while seen.len() < 4 {
                seen.insert(changes.next().await.unwrap().1);
            }
        })
        .await
        .expect("all four decided");
        let v = |n: &str| engine.verdict(&key(n)).unwrap();
        assert_eq!(v("bad").failure, Some(ResultClass::HttpStatus));
        assert!(
            v("bad").message.starts_with("HTTP 503 from"),
            "{:?}",
            v("bad")
        );
        assert_eq!(v("refused").failure, Some(ResultClass::Refused));
        assert!(v("refused").message.contains("connection refused"));
        assert_eq!(v("hang").failure, Some(ResultClass::Timeout));
        assert!(v("hang").message.contains("timeout after 1s"));
        assert_eq!(v("tcp").healthy, Some(true));
        for n in ["bad", "refused", "hang"] {
            assert_eq!(v(n).healthy, Some(false), "{n}");
        }
    }
}
