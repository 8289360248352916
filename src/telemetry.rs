//! Telemetry: tracing setup and the Prometheus metrics of the operator.
//!
//! [`Metrics`] owns a `prometheus-client` [`Registry`] with every metric the operator exports
//! on `/metrics` (see [`crate::admin`]). It is cheap to clone (one `Arc`); every clone records
//! into the same registry.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `autoheal_probe_duration_seconds` | histogram | `kind` (`http`, `tcp`) |
//! | `autoheal_probe_results_total` | counter | `kind`, `result` (`success`, `http_status`, `timeout`, `refused`, `reset`, `error`) |
//! | `autoheal_probe_lateness_seconds` | histogram | — (how late probes start after their wake-up: the slot rounded up to 10 ms) |
//! | `autoheal_probe_targets` | gauge | — (instances being probed) |
//! | `autoheal_probe_verdict_changes_total` | counter | — (notifications sent to the reconcile loop) |
//! | `autoheal_instances` | gauge | `state`, `health` (set by the reconcilers via [`Metrics::set_instances`]) |
//! | `autoheal_reconcile_duration_seconds` | histogram | `controller` |
//! | `autoheal_reconcile_errors_total` | counter | `controller`, `kind` (`conflict`, `forbidden`, `rejected`, `not_found`, `server_error`, `transport`, `invalid`, `other`) |
//! | `autoheal_reconcile_backing_off` | gauge | `controller` (objects waiting out an error backoff) |
//! | `autoheal_leader` | gauge | — (1 while this process holds the leader Lease, or runs without election) |
//! | `autoheal_scalinggroup_condition` | gauge | `namespace`, `scalinggroup`, `type`, `status`, `reason` (1 per condition in a group's status; set by the leader) |
//! | `autoheal_scalinggroup_consecutive_replacement_failures` | gauge | `namespace`, `scalinggroup` |
//! | `autoheal_would_repair` | gauge | `namespace`, `scalinggroup` (repairs `repair.mode: DryRun` would take now) |
//! | `autoheal_detection_seconds` | histogram | — (an Instance's first failing signal → its Unhealthy verdict: MTTD) |
//! | `autoheal_repair_seconds` | histogram | — (an Unhealthy verdict → its group back to desired InService+Healthy: MTTR) |

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use crate::api::types::{ProbeKind, ResultClass};

/// Installs the global tracing subscriber: human-readable lines on stderr, filtered by
/// `RUST_LOG` (default `info`), colored only when stderr is a terminal. Calling it again is
/// harmless (the first call wins).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    state: String,
    health: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    namespace: String,
    scalinggroup: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupConditionLabels {
    namespace: String,
    scalinggroup: String,
    #[prometheus(flatten)]
    condition: ConditionLabels,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    r#type: String,
    status: String,
    reason: String,
}

/// One condition of a ScalingGroup's status, for [`Metrics::set_groups`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupCondition {
    /// The condition type (`Ready`, `ReplacementAllowed`, …).
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// The condition's reason.
    pub reason: String,
}

/// What [`Metrics::set_groups`] exports of one ScalingGroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupGauges {
    /// The group's namespace.
    pub namespace: String,
    /// The group's name.
    pub name: String,
    /// Its status conditions.
    pub conditions: Vec<GroupCondition>,
    /// `status.consecutiveReplacementFailures`.
    pub consecutive_replacement_failures: i64,
    /// How many entries `status.wouldRepair` lists.
    pub would_repair: i64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: String,
    kind: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn reconcile_histogram() -> Histogram {
    // 1 ms .. ~32 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The operator's metrics and their registry. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    /// Pre-resolved handles of the hot path: `[kind][class]`.
    probe_results: [[Counter; 6]; 2],
    probe_duration: [Histogram; 2],
    probe_lateness: Histogram,
    probe_targets: Gauge,
    verdict_changes: Counter,
    instances: Family<InstanceLabels, Gauge>,
    reconcile_duration: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    backing_off: Family<ControllerLabels, Gauge>,
    leader: Gauge,
    group_conditions: Family<GroupConditionLabels, Gauge>,
    group_failures: Family<GroupLabels, Gauge>,
    would_repair: Family<GroupLabels, Gauge>,
    detection: Histogram,
    repair: Histogram,
    /// The Instances (namespace, name) evaluated since the process started, and their count.
    evaluated: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    instances_evaluated: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("autoheal");
        let probe_result_family = Family::<ResultLabels, Counter>::default();
        let probe_duration_family =
            Family::<KindLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let kinds = [ProbeKind::Http, ProbeKind::Tcp];
        let probe_results = kinds.map(|k| {
            ResultClass::ALL.map(|c| {
                probe_result_family.get_or_create_owned(&ResultLabels {
                    kind: k.as_str(),
                    result: c.as_str(),
                })
            })
        });
        let probe_duration = kinds
            .map(|k| probe_duration_family.get_or_create_owned(&KindLabels { kind: k.as_str() }));
        let probe_lateness = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        let probe_targets = Gauge::default();
        let verdict_changes = Counter::default();
        let instances = Family::<InstanceLabels, Gauge>::default();
        let reconcile_duration =
            Family::<ControllerLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                reconcile_histogram,
            );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let backing_off = Family::<ControllerLabels, Gauge>::default();
        let leader = Gauge::default();
        let group_conditions = Family::<GroupConditionLabels, Gauge>::default();
        let group_failures = Family::<GroupLabels, Gauge>::default();
        let would_repair = Family::<GroupLabels, Gauge>::default();
        // 50 ms .. ~27 min
        let detection = Histogram::new(exponential_buckets(0.05, 2.0, 16));
        let repair = Histogram::new(exponential_buckets(0.05, 2.0, 16));
        let instances_evaluated = Gauge::default();

        registry.register(
            "probe_duration_seconds",
            "Duration of health probes (connect to verdict of one probe)",
            probe_duration_family,
        );
        registry.register(
            "probe_results",
            "Health probe results by kind and result class",
            probe_result_family,
        );
        registry.register(
            "probe_lateness_seconds",
            "How late probes start after their wake-up time (the slot rounded up to 10 ms)",
            probe_lateness.clone(),
        );
        registry.register(
            "probe_targets",
            "Instances currently probed",
            probe_targets.clone(),
        );
        registry.register(
            "probe_verdict_changes",
            "Probe verdict changes sent to the reconcile loop",
            verdict_changes.clone(),
        );
        registry.register(
            "instances",
            "Instances by lifecycle state and health status",
            instances.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles by controller",
            reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles by controller and error kind",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_backing_off",
            "Objects whose reconcile waits out an error backoff, by controller",
            backing_off.clone(),
        );
        registry.register(
            "leader",
            "1 while this process holds the leader Lease (or runs without leader election), else 0",
            leader.clone(),
        );
        registry.register(
            "scalinggroup_condition",
            "Conditions of each ScalingGroup's status (1 per group, type, status and reason), exported by the leader",
            group_conditions.clone(),
        );
        registry.register(
            "scalinggroup_consecutive_replacement_failures",
            "Replacements in a row that were Unhealthy when their grace period ended, per ScalingGroup",
            group_failures.clone(),
        );
        registry.register(
            "would_repair",
            "Repairs a ScalingGroup in repair.mode DryRun would take now (status.wouldRepair)",
            would_repair.clone(),
        );
        registry.register(
            "detection_seconds",
            "Time from an Instance's first failing signal to its Unhealthy verdict (MTTD)",
            detection.clone(),
        );
        registry.register(
            "repair_seconds",
            "Time from an Unhealthy verdict to its group being back at desired capacity, all InService and Healthy (MTTR)",
            repair.clone(),
        );
        registry.register(
            "instances_evaluated",
            "Present Instances this process has reconciled through a health evaluation since it started (a restarted operator has caught up when it equals the number of Instances)",
            instances_evaluated.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                probe_results,
                probe_duration,
                probe_lateness,
                probe_targets,
                verdict_changes,
                instances,
                reconcile_duration,
                reconcile_errors,
                backing_off,
                leader,
                group_conditions,
                group_failures,
                would_repair,
                detection,
                repair,
                evaluated: Default::default(),
                instances_evaluated,
            }),
        }
    }

    /// Records one probe result and its duration.
    pub fn observe_probe(&self, kind: ProbeKind, class: ResultClass, duration: Duration) {
        let k = match kind {
            ProbeKind::Http => 0,
            ProbeKind::Tcp => 1,
        };
        self.inner.probe_results[k][class.index()].inc();
        self.inner.probe_duration[k].observe(duration.as_secs_f64());
    }

    /// Records how late a probe started after its wake-up time.
    pub fn observe_probe_lateness(&self, lateness: Duration) {
        self.inner.probe_lateness.observe(lateness.as_secs_f64());
    }

    /// Sets the number of probed instances.
    pub fn set_probe_targets(&self, n: usize) {
        self.inner
            .probe_targets
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts one probe verdict change sent to the reconcile loop.
    pub fn inc_verdict_changes(&self) {
        self.inner.verdict_changes.inc();
    }

    /// Replaces the `autoheal_instances` gauge with these counts of
    /// `(lifecycle state, health status) → instances` (label values as written in status;
    /// use `"Unknown"` when not yet evaluated). Pairs absent from `counts` disappear.
    pub fn set_instances<'a>(&self, counts: impl IntoIterator<Item = ((&'a str, &'a str), i64)>) {
        self.inner.instances.clear();
        for ((state, health), n) in counts {
            self.inner
                .instances
                .get_or_create(&InstanceLabels {
                    state: state.into(),
                    health: health.into(),
                })
                .set(n);
        }
    }

    /// Records the duration of one reconcile of `controller` (e.g. `instance`, `scalinggroup`).
    pub fn observe_reconcile(&self, controller: &str, duration: Duration) {
        self.inner
            .reconcile_duration
            .get_or_create(&ControllerLabels {
                controller: controller.into(),
            })
            .observe(duration.as_secs_f64());
    }

    /// Counts one failed reconcile of `controller`, by error `kind`.
    pub fn inc_reconcile_errors(&self, controller: &str, kind: &str) {
        self.inner
            .reconcile_errors
            .get_or_create(&ErrorLabels {
                controller: controller.into(),
                kind: kind.into(),
            })
            .inc();
    }

    /// Sets how many objects of `controller` wait out an error backoff.
    pub fn set_backing_off(&self, controller: &str, n: usize) {
        self.inner
            .backing_off
            .get_or_create(&ControllerLabels {
                controller: controller.into(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Exports `controller`'s error series at 0 (one per error kind) and its backing-off gauge,
    /// so that they exist (and `rate()` over them works) before the first error.
    pub fn init_controller(&self, controller: &str, error_kinds: &[&str]) {
        for kind in error_kinds {
            self.inner
                .reconcile_errors
                .get_or_create_owned(&ErrorLabels {
                    controller: controller.into(),
                    kind: (*kind).into(),
                });
        }
        self.set_backing_off(controller, 0);
    }

    /// Sets whether this process leads (holds the leader Lease or runs without election).
    pub fn set_leader(&self, leading: bool) {
        self.inner.leader.set(i64::from(leading));
    }

    /// Replaces the per-group gauges (`autoheal_scalinggroup_condition`,
    /// `autoheal_scalinggroup_consecutive_replacement_failures`) with these groups; groups
    /// absent from `groups` disappear.
    pub fn set_groups(&self, groups: impl IntoIterator<Item = GroupGauges>) {
        self.inner.group_conditions.clear();
        self.inner.group_failures.clear();
        self.inner.would_repair.clear();
        for g in groups {
            self.inner
                .would_repair
                .get_or_create(&GroupLabels {
                    namespace: g.namespace.clone(),
                    scalinggroup: g.name.clone(),
                })
                .set(g.would_repair);
            for c in g.conditions {
                self.inner
                    .group_conditions
                    .get_or_create(&GroupConditionLabels {
                        namespace: g.namespace.clone(),
                        scalinggroup: g.name.clone(),
                        condition: ConditionLabels {
                            r#type: c.type_,
                            status: c.status,
                            reason: c.reason,
                        },
                    })
                    .set(1);
            }
            self.inner
                .group_failures
                .get_or_create(&GroupLabels {
                    namespace: g.namespace,
                    scalinggroup: g.name,
                })
                .set(g.consecutive_replacement_failures);
        }
    }

    /// Records the time from an Instance's first failing signal to its Unhealthy verdict.
    pub fn observe_detection(&self, seconds: f64) {
        self.inner.detection.observe(seconds.max(0.0));
    }

    /// Counts an Instance as evaluated since the start (once per Instance; the gauge
    /// `autoheal_instances_evaluated` shows when a restarted operator has caught up).
    pub fn mark_evaluated(&self, key: &(String, String)) {
        let mut seen = self
            .inner
            .evaluated
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !seen.contains(key) {
            seen.insert(key.clone());
            self.inner
                .instances_evaluated
                .set(i64::try_from(seen.len()).unwrap_or(i64::MAX));
        }
    }

    /// Forgets an Instance that is gone (so the gauge counts present Instances only, and a
    /// restarted operator has caught up when it equals their number).
    pub fn forget_evaluated(&self, key: &(String, String)) {
        let mut seen = self
            .inner
            .evaluated
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if seen.remove(key) {
            self.inner
                .instances_evaluated
                .set(i64::try_from(seen.len()).unwrap_or(i64::MAX));
        }
    }

    /// Records the time from an Unhealthy verdict to its group being whole again.
    pub fn observe_repair(&self, seconds: f64) {
        self.inner.repair.observe(seconds.max(0.0));
    }

    /// The probe results counted so far for `kind` and `class` (for tests and benchmarks).
    pub fn probe_results(&self, kind: ProbeKind, class: ResultClass) -> u64 {
        let k = match kind {
            ProbeKind::Http => 0,
            ProbeKind::Tcp => 1,
        };
        self.inner.probe_results[k][class.index()].get()
    }

    /// The registry in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }
}

/// The Prometheus text format (0.0.4) of an OpenMetrics page from [`Metrics::encode`]: a
/// counter family is named with its `_total` suffix in `# HELP`/`# TYPE`, and the OpenMetrics
/// `# UNIT` and `# EOF` lines are dropped. Samples are the same in both formats.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exported() {
        let m = Metrics::new();
        m.observe_probe(
            ProbeKind::Http,
            ResultClass::Timeout,
            Duration::from_millis(3),
        );
        m.observe_probe_lateness(Duration::from_micros(200));
        m.set_probe_targets(3);
        m.inc_verdict_changes();
        m.set_instances([(("InService", "Healthy"), 2), (("Pending", "Unknown"), 1)]);
        m.observe_reconcile("instance", Duration::from_millis(12));
        m.inc_reconcile_errors("instance", "forbidden");
        m.set_leader(true);
        m.init_controller("scalinggroup", &["conflict"]);
        m.set_groups([GroupGauges {
            namespace: "ns".into(),
            name: "web".into(),
            conditions: vec![GroupCondition {
                type_: "ReplacementAllowed".into(),
                status: "False".into(),
                reason: "TooManyUnhealthy".into(),
            }],
            consecutive_replacement_failures: 2,
            would_repair: 3,
        }]);
        m.observe_detection(1.5);
        m.observe_repair(12.0);
        let text = m.clone().encode();
        for needle in [
            "autoheal_probe_duration_seconds_bucket{",
            "autoheal_probe_results_total{kind=\"http\",result=\"timeout\"} 1",
            "autoheal_probe_results_total{kind=\"tcp\",result=\"refused\"} 0",
            "autoheal_probe_lateness_seconds_count 1",
            "autoheal_probe_targets 3",
            "autoheal_probe_verdict_changes_total 1",
            "autoheal_instances{state=\"InService\",health=\"Healthy\"} 2",
            "autoheal_reconcile_duration_seconds_count{controller=\"instance\"} 1",
            "autoheal_reconcile_errors_total{controller=\"instance\",kind=\"forbidden\"} 1",
            "autoheal_leader 1",
            "autoheal_reconcile_errors_total{controller=\"scalinggroup\",kind=\"conflict\"} 0",
            "autoheal_reconcile_backing_off{controller=\"scalinggroup\"} 0",
            "autoheal_scalinggroup_condition{namespace=\"ns\",scalinggroup=\"web\",type=\"ReplacementAllowed\",status=\"False\",reason=\"TooManyUnhealthy\"} 1",
            "autoheal_scalinggroup_consecutive_replacement_failures{namespace=\"ns\",scalinggroup=\"web\"} 2",
            "autoheal_would_repair{namespace=\"ns\",scalinggroup=\"web\"} 3",
            "autoheal_detection_seconds_count 1",
            "autoheal_repair_seconds_sum 12.0",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        let classic = prometheus_text(&text);
        assert!(classic.contains("# TYPE autoheal_probe_results_total counter"));
        assert!(classic.contains("# HELP autoheal_probe_results_total "));
        assert!(classic.contains("# TYPE autoheal_probe_duration_seconds histogram"));
        assert!(classic.contains("autoheal_probe_targets 3"));
        assert!(!classic.contains("# EOF"));
        m.set_instances([(("InService", "Healthy"), 1)]);
        assert!(!m.encode().contains("Pending"));
        assert_eq!(m.probe_results(ProbeKind::Http, ResultClass::Timeout), 1);
    }
}
