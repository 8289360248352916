//! `make bench` ("proof at scale"): every scenario of the issue on one local control plane,
//! kube-controller-manager's ReplicaSet controller beside autoheal, release builds; writes
//! `bench/RESULTS.md`. Run by `cargo bench --bench replace -- --suite`, after
//! `cargo bench --bench refresh -- --kcm-variants` (scenario 7, read back from
//! `target/bench-refresh.json`).
//!
//! The Kubernetes side runs twice: with kube-controller-manager's own client limits
//! ([`KCM_DEFAULTS`]) and with them raised to autoheal's ([`kcm_raised`]); the ScalingGroup
//! runs alternate with the second. Sizes come from the environment (see [`Sizes`]).

use super::common::{KCM_DEFAULTS, env_usize, kcm_raised, median_secs, refresh_results_path};
use super::*;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The sizes of one `make bench`; each from an environment variable, the numbers by
/// default.
#[derive(Debug)]
struct Sizes {
    /// `BENCH_RUNS` (5): runs of scenarios 1–3 (and 7, given to the refresh bench).
    runs: usize,
    /// `BENCH_N` (100): the set size of scenarios 1 and 2.
    n: usize,
    /// `BENCH_K` (`1,10`): how many are lost / marked Unhealthy.
    ks: Vec<usize>,
    /// `BENCH_SCALE` (1000): scenario 3's target.
    scale: usize,
    /// `BENCH_DETECT_SAMPLES` (100): scenario 4's samples.
    detect_samples: usize,
    /// `BENCH_DETECT_INSTANCES` (25): Instances failed at once in scenario 4.
    detect_instances: usize,
    /// `BENCH_GROUPS` (100) × `BENCH_GROUP_SIZE` (100): scenarios 5 and 6.
    groups: usize,
    group_size: usize,
    /// `BENCH_STEADY_SECONDS` (60): scenario 5's measured window (after 30 s of settling).
    steady_secs: usize,
    /// `BENCH_ONLY` (all): a comma list of scenario numbers 1–6 to run.
    only: BTreeSet<usize>,
}

impl Sizes {
    fn from_env() -> Sizes {
        let ks = std::env::var("BENCH_K")
            .ok()
            .map(|v| {
                v.split(',')
                    .filter_map(|k| k.trim().parse().ok())
                    .collect::<Vec<usize>>()
            })
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| vec![1, 10]);
        let only = std::env::var("BENCH_ONLY")
            .ok()
            .map(|v| v.split(',').filter_map(|k| k.trim().parse().ok()).collect())
            .filter(|v: &BTreeSet<usize>| !v.is_empty())
            .unwrap_or_else(|| (1..=6).collect());
        Sizes {
            runs: env_usize("BENCH_RUNS", 5).max(1),
            n: env_usize("BENCH_N", 100).max(1),
            ks,
            scale: env_usize("BENCH_SCALE", 1000).max(1),
            detect_samples: env_usize("BENCH_DETECT_SAMPLES", 100).max(1),
            detect_instances: env_usize("BENCH_DETECT_INSTANCES", 25).max(1),
            groups: env_usize("BENCH_GROUPS", 100).max(1),
            group_size: env_usize("BENCH_GROUP_SIZE", 100).max(1),
            steady_secs: env_usize("BENCH_STEADY_SECONDS", 60).max(5),
            only,
        }
    }

    fn has(&self, scenario: usize) -> bool {
        self.only.contains(&scenario)
    }
}

type Runs = Vec<Result<Duration, String>>;

/// The runs of one timed comparison: Kubernetes with kcm defaults, raised, and autoheal.
#[derive(Default)]
struct Race {
    kube_defaults: Runs,
    kube_raised: Runs,
    autoheal: Runs,
}

/// One line of the summary table.
struct Line {
    scenario: String,
    kube_defaults: String,
    kube_raised: String,
    autoheal: String,
    ratio_defaults: String,
    ratio_raised: String,
    goal: String,
    met: String,
}

fn fmt_s(m: Option<f64>) -> String {
    m.map_or("fail".into(), |m| format!("{m:.3} s"))
}

fn ratio(kube: Option<f64>, ah: Option<f64>) -> Option<f64> {
    match (kube, ah) {
        (Some(k), Some(a)) if k > 0.0 => Some(a / k),
        _ => None,
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("n/a".into(), |r| format!("{r:.2}"))
}

/// "yes"/"no" per ratio against `goal` (at most).
fn met(goal: f64, ratios: &[Option<f64>]) -> String {
    ratios
        .iter()
        .map(|r| match r {
            Some(r) if *r <= goal => "yes",
            Some(_) => "no",
            None => "n/a",
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

fn time_line(scenario: String, race: &Race, goal: Option<f64>) -> Line {
    let (d, r, a) = (
        median_secs(&race.kube_defaults),
        median_secs(&race.kube_raised),
        median_secs(&race.autoheal),
    );
    let (rd, rr) = (ratio(d, a), ratio(r, a));
    Line {
        scenario,
        kube_defaults: fmt_s(d),
        kube_raised: fmt_s(r),
        autoheal: fmt_s(a),
        ratio_defaults: fmt_ratio(rd),
        ratio_raised: fmt_ratio(rr),
        goal: goal.map_or("(reported)".into(), |g| format!("ratio ≤ {g:.1}")),
        met: goal.map_or("—".into(), |g| met(g, &[rd, rr])),
    }
}

fn runs_list(v: &Runs) -> String {
    if v.is_empty() {
        return "—".into();
    }
    v.iter().map(secs).collect::<Vec<_>>().join(", ")
}

fn log_run(what: &str, side: &str, run: usize, r: &Result<Duration, String>) {
    eprintln!("{what}, run {run}: {side} {}", secs(r));
    if let Err(e) = r {
        eprintln!("  {e}");
    }
}

/// Restarts kube-controller-manager with these client limits and gives it time to start its
/// controllers.
async fn kcm_limits(b: &mut Bench, flags: &[&str], tag: &'static str) {
    eprintln!(
        "kube-controller-manager: restarting with {}",
        flags.join(" ")
    );
    b.cp.restart(testkit::Part::ControllerManager, flags)
        .await
        .expect("restarting kube-controller-manager");
    b.kcm = tag;
    tokio::time::sleep(Duration::from_secs(3)).await;
}

const DEFAULTS_TAG: &str = " (kcm defaults)";
const RAISED_TAG: &str = " (kcm raised)";

// ---- scenarios 1-3 --------------------------------------------------------------------------

struct Timed {
    lose: BTreeMap<usize, Race>,
    verdict: BTreeMap<usize, Runs>,
    scale: Race,
}

async fn timed(b: &mut Bench, s: &Sizes) -> Timed {
    let mut t = Timed {
        lose: BTreeMap::new(),
        verdict: BTreeMap::new(),
        scale: Race::default(),
    };
    let n = s.n;
    // The Kubernetes side with kube-controller-manager's defaults first...
    kcm_limits(b, &KCM_DEFAULTS, DEFAULTS_TAG).await;
    for run in 1..=s.runs {
        if s.has(1) || s.has(2) {
            for &k in &s.ks {
                let r = rs_lose(b, n, k).await;
                log_run(&format!("lose {k} of {n}"), "RS (kcm defaults)", run, &r);
                t.lose.entry(k).or_default().kube_defaults.push(r);
            }
        }
        if s.has(3) {
            let r = rs_scale(b, s.scale).await;
            log_run(
                &format!("scale 0 → {}", s.scale),
                "RS (kcm defaults)",
                run,
                &r,
            );
            t.scale.kube_defaults.push(r);
        }
    }
    // ...then raised, alternating with autoheal.
    let raised = kcm_raised();
    let raised: Vec<&str> = raised.iter().map(String::as_str).collect();
    kcm_limits(b, &raised, RAISED_TAG).await;
    for run in 1..=s.runs {
        for &k in &s.ks {
            if s.has(1) || s.has(2) {
                let r = rs_lose(b, n, k).await;
                log_run(&format!("lose {k} of {n}"), "RS (kcm raised)", run, &r);
                t.lose.entry(k).or_default().kube_raised.push(r);
            }
            if s.has(1) {
                let (r, _) = sg_lose(b, n, k, false).await;
                log_run(&format!("lose {k} of {n}"), "SG", run, &r);
                t.lose.entry(k).or_default().autoheal.push(r);
            }
            if s.has(2) {
                let (r, _) = sg_lose(b, n, k, true).await;
                log_run(&format!("replace {k} of {n} on a verdict"), "SG", run, &r);
                t.verdict.entry(k).or_default().push(r);
            }
        }
        if s.has(3) {
            let r = rs_scale(b, s.scale).await;
            log_run(
                &format!("scale 0 → {}", s.scale),
                "RS (kcm raised)",
                run,
                &r,
            );
            t.scale.kube_raised.push(r);
            let r = sg_scale(b, s.scale).await;
            log_run(&format!("scale 0 → {}", s.scale), "SG", run, &r);
            t.scale.autoheal.push(r);
        }
    }
    t
}

/// API writes per Pod created in the scale-up windows labelled `label`, mean per run: (the
/// controller's own — kube-controller-manager's or autoheal's — and everyone's).
fn writes_per_object(
    b: &Bench,
    writes: &[testkit::AuditWrite],
    label: &str,
    objects: usize,
) -> Option<(f64, f64)> {
    let windows: Vec<_> = b
        .windows
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.0 == label)
        .cloned()
        .collect();
    if windows.is_empty() {
        return None;
    }
    // The controller of the side: ReplicaSet windows are kube-controller-manager's, the
    // others autoheal's (the other controller's writes in the namespace are nobody's own).
    let controller = if label.starts_with("RS") {
        "kube-controller-manager"
    } else {
        "autoheal"
    };
    let (mut own, mut all) = (0usize, 0usize);
    for (_, ns, from, to) in &windows {
        for w in writes_in(writes, ns, *from, *to) {
            all += 1;
            if writer_of(w) == controller {
                own += 1;
            }
        }
    }
    let per = (windows.len() * objects.max(1)) as f64;
    Some((own as f64 / per, all as f64 / per))
}

fn writes_in<'a>(
    writes: &'a [testkit::AuditWrite],
    ns: &'a str,
    from: jiff::Timestamp,
    to: jiff::Timestamp,
) -> impl Iterator<Item = &'a testkit::AuditWrite> + 'a {
    writes.iter().filter(move |w| {
        w.namespace == ns
            && w.request_received_timestamp
                .parse::<jiff::Timestamp>()
                .is_ok_and(|at| at >= from && at <= to)
    })
}

// ---- scenario 4: detection ------------------------------------------------------------------

const DETECT_INTERVAL: i32 = 1;
const DETECT_THRESHOLD: i32 = 2;

/// A group with an HTTP probe every `interval` s (timeout 1 s, unhealthy after `unhealthy`
/// failures, healthy after one success); `replace` false suspends ReplaceUnhealthy.
fn probed_group(
    name: &str,
    n: usize,
    interval: i32,
    unhealthy: i32,
    replace: bool,
) -> ScalingGroup {
    let mut v = serde_json::to_value(scaling_group(name, n as i32, n as i32)).unwrap();
    v["spec"]["healthCheck"]["probe"] = serde_json::json!({
        "http": { "port": 8080, "path": "/healthz" },
        "intervalSeconds": interval,
        "timeoutSeconds": 1,
        "healthyThreshold": 1,
        "unhealthyThreshold": unhealthy,
    });
    if !replace {
        v["spec"]["suspendedProcesses"] = serde_json::json!(["ReplaceUnhealthy"]);
    }
    serde_json::from_value(v).unwrap()
}

fn detail_summary(i: &Instance) -> String {
    let st = i.status.as_ref();
    format!(
        "{} {}",
        st.and_then(|s| s.lifecycle_state)
            .map_or("(no state)", |s| s.as_str()),
        st.and_then(|s| s.health_detail)
            .map_or("(no detail)".into(), |d| format!("{d:?}"))
    )
}

/// Excess of each detection over `unhealthyThreshold × intervalSeconds`, in seconds, timed
/// from two starts.
struct Detection {
    /// From the bench's `fail` annotation write (includes that write and podsim's watch).
    from_patch: Vec<f64>,
    /// From the moment podsim's listener started answering `503` (the failure itself).
    from_failing: Vec<f64>,
}

async fn detection(b: &mut Bench, s: &Sizes) -> Result<Detection, String> {
    let d = s.detect_instances.min(s.detect_samples);
    let w = b.world("bench-detect").await;
    let op = b.operator(&w.ns);
    op.wait_ready().await;
    let insts = Watched::start(
        Api::<Instance>::namespaced(b.client.clone(), &w.ns),
        "Instance",
        detail_summary,
    )
    .await;
    let groups: Api<ScalingGroup> = Api::namespaced(b.client.clone(), &w.ns);
    let pods: Api<Pod> = Api::namespaced(b.client.clone(), &w.ns);
    let nominal = f64::from(DETECT_THRESHOLD * DETECT_INTERVAL);
    let result = async {
        groups
            .patch(
                "web",
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&probed_group(
                    "web",
                    d,
                    DETECT_INTERVAL,
                    DETECT_THRESHOLD,
                    false,
                )),
            )
            .await
            .map_err(|e| e.to_string())?;
        let changed = [&*w.pods.changed, &*insts.changed];
        let all_ok = |insts: &[Arc<Instance>]| {
            let ok = insts
                .iter()
                .filter(|i| detail_summary(i) == "InService OK")
                .count();
            if insts.len() == d && ok == d {
                Ok(())
            } else {
                Err(format!("{} Instances, {ok} InService OK", insts.len()))
            }
        };
        let mut excess = Vec::new();
        let mut from_failing = Vec::new();
        let mut round = 0;
        while excess.len() < s.detect_samples {
            round += 1;
            until("all InService OK", &changed, || all_ok(&insts.state())).await?;
            // A random phase against the probe schedule.
            tokio::time::sleep(Duration::from_millis(300 + rand::random_range(0..1000))).await;
            let names: Vec<String> = insts.state().iter().map(|i| i.name_any()).collect();
            let set = |behavior: &'static str| {
                let patch = serde_json::json!({
                    "metadata": { "annotations": { "podsim.autoheal.dev/behavior": behavior } }
                });
                futures::future::join_all(names.iter().map(|n| {
                    let (pods, patch) = (pods.clone(), patch.clone());
                    async move {
                        pods.patch(n, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                    }
                }))
            };
            let t0 = Instant::now();
            for r in set("fail").await {
                r.map_err(|e| e.to_string())?;
            }
            until("all Impaired", &changed, || {
                let st = insts.state();
                let bad = st
                    .iter()
                    .filter(|i| detail_summary(i).ends_with("Impaired"))
                    .count();
                if bad == names.len() {
                    Ok(())
                } else {
                    Err(format!("{bad} of {} Impaired", names.len()))
                }
            })
            .await?;
            let seen = insts.seen();
            let modes = w.modes.changes();
            for n in &names {
                if let Some(at) = seen
                    .iter()
                    .find(|x| &x.name == n && x.at >= t0 && x.what.ends_with("Impaired"))
                    .map(|x| x.at)
                {
                    excess.push((at - t0).as_secs_f64() - nominal);
                    let pod = format!("{}/{n}", w.ns);
                    let failing = modes
                        .iter()
                        .find(|m| m.pod == pod && m.at >= t0 && m.answers == podsim::Answers::Fail);
                    match failing {
                        Some(m) if m.at <= at => {
                            from_failing.push((at - m.at).as_secs_f64() - nominal)
                        }
                        _ => {
                            return Err(format!(
                                "podsim recorded no failure of {pod} before it was seen Impaired"
                            ));
                        }
                    }
                }
            }
            for r in set("healthy").await {
                r.map_err(|e| e.to_string())?;
            }
            eprintln!("detection round {round}: {} samples", excess.len());
        }
        Ok(Detection {
            from_patch: excess,
            from_failing,
        })
    }
    .await;
    drop(op);
    drop(insts);
    b.cleanup(w).await;
    result
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---- scenarios 5 and 6: 10,000 Instances -----------------------------------------------------

/// `GET /metrics` of an operator's admin endpoint.
async fn scrape(addr: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// The sum of a metric's samples (every label set).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .map(metric_value)
        .sum()
}

/// A `/proc/<pid>/status` field in kB (VmRSS, VmHWM).
fn proc_kb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[derive(Default)]
struct Big {
    total: usize,
    setup: Option<Duration>,
    rss_mb: f64,
    hwm_mb: f64,
    cpu_share: f64,
    /// autoheal's writes per minute other than its leader Lease's renewals.
    writes_per_min: f64,
    /// The leader Lease's renewals per minute.
    lease_renewals_per_min: f64,
    writes_detail: String,
    probes_per_s: f64,
    window_s: f64,
    restart: Option<Duration>,
    synced: Option<Duration>,
    spurious: usize,
    restart_writes: String,
    error: Option<String>,
}

fn writes_summary<'a>(writes: impl Iterator<Item = &'a testkit::AuditWrite>) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for w in writes {
        let r = if w.subresource.is_empty() {
            format!("{} {} {}", writer_of(w), w.verb, w.resource)
        } else {
            format!(
                "{} {} {}/{}",
                writer_of(w),
                w.verb,
                w.resource,
                w.subresource
            )
        };
        *by.entry(r).or_default() += 1;
    }
    if by.is_empty() {
        return "none".into();
    }
    by.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Groups whose Pods one podsim process of scenarios 5 and 6 runs.
const GROUPS_PER_PODSIM: usize = 10;

/// The name of group `g` of scenarios 5 and 6.
fn group_name(g: usize) -> String {
    format!("g{g:03}")
}

/// How many podsim processes scenarios 5 and 6 run.
fn shards_of(s: &Sizes) -> usize {
    s.groups.div_ceil(GROUPS_PER_PODSIM)
}

async fn big(b: &mut Bench, s: &Sizes) -> Big {
    let total = s.groups * s.group_size;
    let mut out = Big {
        total,
        ..Big::default()
    };
    // One podsim per 10 groups (its own Node): one podsim would bind and start 10,000 Pods one
    // at a time.
    let names: Vec<String> = (0..s.groups).map(group_name).collect();
    let shards: Vec<Vec<String>> = names
        .chunks(GROUPS_PER_PODSIM)
        .map(<[String]>::to_vec)
        .collect();
    let w = b.world_sharded("bench-big", &shards).await;
    let mut op = Operator::launch(
        &b.operator_bin,
        b.cp.kubeconfig_path(),
        &w.ns,
        &b.dir,
        "operator",
        "info",
    );
    op.wait_ready().await;
    let insts = Watched::start(
        Api::<Instance>::namespaced(b.client.clone(), &w.ns),
        "Instance",
        |_| String::new(),
    )
    .await;
    let groups: Api<ScalingGroup> = Api::namespaced(b.client.clone(), &w.ns);
    let all_healthy = |insts: &[Arc<Instance>]| {
        let ok = insts
            .iter()
            .filter(|i| {
                i.metadata.deletion_timestamp.is_none()
                    && inst_state(i) == Some(LifecycleState::InService)
                    && inst_healthy(i)
            })
            .count();
        if insts.len() == total && ok == total {
            Ok(())
        } else {
            Err(format!("{} Instances, {ok} InService+Healthy", insts.len()))
        }
    };
    let result: Result<(), String> = async {
        let t0 = Instant::now();
        for g in 0..s.groups {
            groups
                .patch(
                    &group_name(g),
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&probed_group(&group_name(g), s.group_size, 10, 3, true)),
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        let changed = [&*insts.changed];
        // Scaling to 10,000 takes minutes: up to ten of `until`'s time limits.
        let mut tries = 0;
        let done = loop {
            match until("all InService+Healthy", &changed, || {
                all_healthy(&insts.state())
            })
            .await
            {
                Ok(t) => break t,
                Err(e) if tries < 9 => {
                    tries += 1;
                    eprintln!("10k: still coming up: {e}");
                }
                Err(e) => return Err(e),
            }
        };
        out.setup = Some(done - t0);
        eprintln!(
            "10k: {total} InService+Healthy after {:.1} s",
            (done - t0).as_secs_f64()
        );

        // Scenario 5: steady state.
        tokio::time::sleep(Duration::from_secs(30)).await;
        op.alive()?;
        let pid = op.child.id();
        let (cpu0, at0, wall0) = (proc_cpu(pid), Instant::now(), jiff::Timestamp::now());
        let probes0 = metric_sum(
            &scrape(&op.admin).await.unwrap_or_default(),
            "autoheal_probe_results_total",
        );
        tokio::time::sleep(Duration::from_secs(s.steady_secs as u64)).await;
        op.alive()?;
        let (cpu1, elapsed, wall1) = (proc_cpu(pid), at0.elapsed(), jiff::Timestamp::now());
        let probes1 = metric_sum(
            &scrape(&op.admin).await.unwrap_or_default(),
            "autoheal_probe_results_total",
        );
        out.window_s = elapsed.as_secs_f64();
        out.cpu_share = (cpu1 - cpu0) / out.window_s;
        out.rss_mb = proc_kb(pid, "VmRSS:") / 1024.0;
        out.hwm_mb = proc_kb(pid, "VmHWM:") / 1024.0;
        out.probes_per_s = (probes1 - probes0) / out.window_s;
        // Let the audit log catch up with the window's end.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let writes = testkit::audit_writes(b.cp.audit_log_path());
        let mine: Vec<&testkit::AuditWrite> = writes_in(&writes, &w.ns, wall0, wall1)
            .filter(|w| writer_of(w) == "autoheal")
            .collect();
        // The leader Lease's renewals are the one write that does not depend on the
        // Instances (kube-controller-manager renews its own the same way): counted apart.
        let renewals = mine.iter().filter(|w| w.resource == "leases").count();
        out.lease_renewals_per_min = renewals as f64 / (out.window_s / 60.0);
        out.writes_per_min = (mine.len() - renewals) as f64 / (out.window_s / 60.0);
        out.writes_detail = writes_summary(mine.into_iter());
        eprintln!(
            "10k steady: RSS {:.0} MB, CPU {:.1} % of a core, {:.1} writes/min, {:.0} probes/s",
            out.rss_mb,
            out.cpu_share * 100.0,
            out.writes_per_min,
            out.probes_per_s
        );

        // Scenario 6: SIGKILL and restart.
        let wall_kill = jiff::Timestamp::now();
        let killed = Instant::now();
        op.child.kill().map_err(|e| e.to_string())?;
        let _ = op.child.wait();
        op = Operator::launch(
            &b.operator_bin,
            b.cp.kubeconfig_path(),
            &w.ns,
            &b.dir,
            "restarted",
            "info",
        );
        let deadline = killed + Duration::from_secs(300);
        loop {
            if out.synced.is_none()
                && std::fs::read_to_string(&op.log)
                    .unwrap_or_default()
                    .contains("caches synced")
            {
                out.synced = Some(killed.elapsed());
            }
            let evaluated = match scrape(&op.admin).await {
                Some(t) => metric_sum(&t, "autoheal_instances_evaluated"),
                None => 0.0,
            };
            if evaluated >= total as f64 {
                out.restart = Some(killed.elapsed());
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the restarted operator evaluated {evaluated} of {total} Instances in 300 s"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "10k restart: caught up after {:.2} s",
            out.restart.unwrap_or_default().as_secs_f64()
        );
        // Anything it would wrongly do comes soon after: watch a while longer.
        tokio::time::sleep(Duration::from_secs(15)).await;
        let wall_end = jiff::Timestamp::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let writes = testkit::audit_writes(b.cp.audit_log_path());
        let after: Vec<&testkit::AuditWrite> = writes_in(&writes, &w.ns, wall_kill, wall_end)
            .filter(|w| writer_of(w) == "autoheal")
            .collect();
        // A termination: a Pod or an Instance deleted, or an Instance sent to Terminating.
        let terminating = insts
            .state()
            .iter()
            .filter(|i| {
                i.metadata.deletion_timestamp.is_some()
                    || inst_state(i).is_some_and(|s| s.as_str().starts_with("Terminat"))
            })
            .count();
        let deletes = after
            .iter()
            .filter(|w| {
                w.verb.starts_with("delete") && (w.resource == "pods" || w.resource == "instances")
            })
            .count();
        out.spurious = deletes.max(terminating) + total.saturating_sub(insts.state().len());
        out.restart_writes = writes_summary(after.into_iter());
        Ok(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("10k: {e}");
        out.error = Some(e);
    }
    // The operators' logs outlive the bench's scratch directory.
    let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-logs");
    let _ = std::fs::create_dir_all(&kept);
    for name in ["operator", "restarted"] {
        let log = b.dir.join(format!("{name}-{}.log", w.ns));
        let _ = std::fs::copy(&log, kept.join(format!("10k-{name}.log")));
    }
    for shard in 0..shards_of(s) {
        let log = b.dir.join(format!("podsim-{}-{shard}.log", w.ns));
        let _ = std::fs::copy(&log, kept.join(format!("10k-podsim-{shard}.log")));
    }
    drop(op);
    drop(insts);
    // No cleanup: this is the last scenario, and the control plane goes with the process.
    w.podsim.abort();
    out
}

// ---- scenario 7: read back from the refresh bench ---------------------------------------------

struct Refresh {
    runs: usize,
    race: Race,
    date: String,
}

fn refresh_results() -> Option<Refresh> {
    let text = std::fs::read_to_string(refresh_results_path()).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let runs = |k: &str| -> Runs {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .map(|x| {
                        x.as_f64()
                            .map(Duration::from_secs_f64)
                            .ok_or_else(|| "failed".to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let race = Race {
        kube_defaults: runs("deployment_kcm_defaults"),
        kube_raised: runs("deployment_kcm_raised"),
        autoheal: runs("scalinggroup"),
    };
    Some(Refresh {
        runs: race.autoheal.len(),
        race,
        date: v["date"].as_str().unwrap_or("?").to_string(),
    })
}

// ---- the report ------------------------------------------------------------------------------

pub(super) async fn run() {
    let s = Sizes::from_env();
    eprintln!("make bench: {s:?}");
    let started = Instant::now();
    let mut b = Bench::start("autoheal-bench").await;
    let dir = b.dir.clone();
    let timed = if s.has(1) || s.has(2) || s.has(3) {
        Some(self::timed(&mut b, &s).await)
    } else {
        None
    };
    let detect = if s.has(4) {
        Some(detection(&mut b, &s).await)
    } else {
        None
    };
    let big = if s.has(5) || s.has(6) {
        Some(self::big(&mut b, &s).await)
    } else {
        None
    };
    let refresh = refresh_results();
    let wall = started.elapsed();

    let mut lines: Vec<Line> = Vec::new();
    let mut details = String::new();
    let n = s.n;
    if let Some(t) = &timed {
        for (k, race) in &t.lose {
            if s.has(1) {
                lines.push(time_line(
                    format!("1. lose {k} of {n}: until {n} Ready / InService+Healthy"),
                    race,
                    Some(1.0),
                ));
            }
        }
        for (k, runs) in &t.verdict {
            let reference = t.lose.get(k).map(|r| Race {
                kube_defaults: r.kube_defaults.clone(),
                kube_raised: r.kube_raised.clone(),
                autoheal: runs.clone(),
            });
            if let Some(race) = reference {
                lines.push(time_line(
                    format!("2. replace {k} of {n} on an Unhealthy verdict (Kubernetes: lose {k}, scenario 1)"),
                    &race,
                    None,
                ));
            }
        }
        if s.has(3) {
            lines.push(time_line(
                format!(
                    "3. scale 0 → {}: until all Running+Ready / InService",
                    s.scale
                ),
                &t.scale,
                Some(1.0),
            ));
            let writes = testkit::audit_writes(b.cp.audit_log_path());
            let per = |l: String| writes_per_object(&b, &writes, &l, s.scale);
            let d = per(format!("RS{DEFAULTS_TAG} scale 0 → {}", s.scale));
            let r = per(format!("RS{RAISED_TAG} scale 0 → {}", s.scale));
            let a = per(format!("SG scale 0 → {}", s.scale));
            let own = |x: Option<(f64, f64)>| x.map(|x| x.0);
            let (rd, rr) = (ratio(own(d), own(a)), ratio(own(r), own(a)));
            let f = |x: Option<(f64, f64)>| {
                x.map_or("n/a".into(), |(o, all)| {
                    format!("{o:.2} ({all:.2} with podsim's)")
                })
            };
            lines.push(Line {
                scenario: format!(
                    "3. scale 0 → {}: API writes per Pod created, by the controller",
                    s.scale
                ),
                kube_defaults: f(d),
                kube_raised: f(r),
                autoheal: f(a),
                ratio_defaults: fmt_ratio(rd),
                ratio_raised: fmt_ratio(rr),
                goal: "ratio ≤ 1.5".into(),
                met: met(1.5, &[rd, rr]),
            });
        }
        details.push_str("\n## Scenarios 1–3: every run (seconds)\n\n");
        details.push_str("| scenario | Kubernetes (kcm defaults) | Kubernetes (raised) | autoheal |\n|---|---|---|---|\n");
        for (k, race) in &t.lose {
            let _ = writeln!(
                details,
                "| lose {k} of {n} | {} | {} | {} |",
                runs_list(&race.kube_defaults),
                runs_list(&race.kube_raised),
                runs_list(&race.autoheal)
            );
        }
        for (k, runs) in &t.verdict {
            let _ = writeln!(
                details,
                "| replace {k} of {n} on a verdict | (scenario 1) | (scenario 1) | {} |",
                runs_list(runs)
            );
        }
        if s.has(3) {
            let _ = writeln!(
                details,
                "| scale 0 → {} | {} | {} | {} |",
                s.scale,
                runs_list(&t.scale.kube_defaults),
                runs_list(&t.scale.kube_raised),
                runs_list(&t.scale.autoheal)
            );
        }
        details.push_str("\n### API writes inside the timed windows\n\nFrom the API server's audit log (its policy records writes only: create, update, patch, delete; reads are not counted on either side), mean per run; `podsim + bench` is podsim's bindings and status writes and the bench's own deletes, annotations and scale requests.\n\n");
        details.push_str(&writes_table(&b));
        if s.has(3) {
            details.push_str("\n### Where the CPU goes in the scale-ups\n\n");
            details.push_str(&profile_table(&b.profiles.lock().unwrap()));
        }
    }
    if let Some(d) = &detect {
        let mut line = Line {
            scenario: format!(
                "4. detection: podsim `fail` → Impaired, minus unhealthyThreshold × intervalSeconds ({DETECT_THRESHOLD} × {DETECT_INTERVAL} s)"
            ),
            kube_defaults: "—".into(),
            kube_raised: "—".into(),
            autoheal: "fail".into(),
            ratio_defaults: "—".into(),
            ratio_raised: "—".into(),
            goal: "p99 < 100 ms".into(),
            met: "n/a".into(),
        };
        details.push_str("\n## Scenario 4: detection\n\n");
        match d {
            Ok(d) => {
                let sorted = |v: &[f64]| {
                    let mut v = v.to_vec();
                    v.sort_by(f64::total_cmp);
                    v
                };
                let (failing, patch) = (sorted(&d.from_failing), sorted(&d.from_patch));
                let (p50, p99) = (percentile(&failing, 50.0), percentile(&failing, 99.0));
                line.autoheal = format!(
                    "median {:.0} ms, p99 {:.0} ms (from the annotation write: p99 {:.0} ms)",
                    p50 * 1000.0,
                    p99 * 1000.0,
                    percentile(&patch, 99.0) * 1000.0
                );
                line.met = if p99 < 0.1 { "yes" } else { "no" }.into();
                let row = |label: &str, v: &[f64]| {
                    format!(
                        "| {label} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
                        v.len(),
                        v[0] * 1000.0,
                        percentile(v, 50.0) * 1000.0,
                        percentile(v, 90.0) * 1000.0,
                        percentile(v, 99.0) * 1000.0,
                        v[v.len() - 1] * 1000.0
                    )
                };
                let _ = writeln!(
                    details,
                    "{} Instances failed at once per round, HTTP probe every {DETECT_INTERVAL} s, timeout 1 s, unhealthyThreshold {DETECT_THRESHOLD}, healthyThreshold 1, ReplaceUnhealthy suspended so the same Instances recover and fail again. Each detection is timed until the bench's watch shows the Instance's `status.healthDetail: Impaired`, from two starts: the moment podsim's listener for the Pod started answering `503` (the failure itself, recorded by the in-process podsim; the goal is judged on this one), and the moment the bench sent the Pod annotation `podsim.autoheal.dev/behavior=fail` (which adds the annotation write and podsim's watch of it). The figure is that time minus {DETECT_THRESHOLD} × {DETECT_INTERVAL} s. The failure starts at a random point of the probe schedule, so the first failing probe comes 0–{DETECT_INTERVAL} s after it and the excess timed from podsim lies between −{DETECT_INTERVAL} s and the operator's own latency (probe, verdict, reconcile, status write, watch); timed from the annotation write it adds that write and podsim's watch of it. Reports before this one timed from the annotation write only.\n\n| timed from | samples | min | median | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|---:|\n{}\n{}",
                    s.detect_instances.min(s.detect_samples),
                    row("podsim answering 503", &failing),
                    row("the annotation write", &patch),
                );
            }
            Err(e) => {
                let _ = writeln!(details, "Failed: {e}");
            }
        }
        lines.push(line);
    }
    if let Some(g) = &big {
        let total = g.total;
        let ok = g.error.is_none();
        let f = |ok: bool, text: String| if ok { text } else { "fail".into() };
        if s.has(5) {
            let steady = ok || g.window_s > 0.0;
            lines.push(Line {
                scenario: format!(
                    "5. {total} Instances in {} groups, probed every 10 s: operator RSS",
                    s.groups
                ),
                kube_defaults: "—".into(),
                kube_raised: "—".into(),
                autoheal: f(steady, format!("{:.0} MB", g.rss_mb)),
                ratio_defaults: "—".into(),
                ratio_raised: "—".into(),
                goal: "< 200 MB".into(),
                met: if steady && g.rss_mb < 200.0 {
                    "yes"
                } else {
                    "no"
                }
                .into(),
            });
            lines.push(Line {
                scenario: "5. … operator CPU".into(),
                kube_defaults: "—".into(),
                kube_raised: "—".into(),
                autoheal: f(steady, format!("{:.1} % of a core", g.cpu_share * 100.0)),
                ratio_defaults: "—".into(),
                ratio_raised: "—".into(),
                goal: "< 10 % of a core".into(),
                met: if steady && g.cpu_share < 0.10 {
                    "yes"
                } else {
                    "no"
                }
                .into(),
            });
            lines.push(Line {
                scenario: "5. … API writes at steady state (besides the leader Lease)".into(),
                kube_defaults: "—".into(),
                kube_raised: "—".into(),
                autoheal: f(steady, format!("{:.1} per minute", g.writes_per_min)),
                ratio_defaults: "—".into(),
                ratio_raised: "—".into(),
                goal: "0 per minute".into(),
                met: if steady && g.writes_per_min == 0.0 {
                    "yes"
                } else {
                    "no"
                }
                .into(),
            });
        }
        if s.has(6) {
            let caught = g.restart.map(|d| d.as_secs_f64());
            lines.push(Line {
                scenario: format!("6. SIGKILL + restart at {total}: until every Instance re-evaluated; spurious terminations"),
                kube_defaults: "—".into(),
                kube_raised: "—".into(),
                autoheal: caught.map_or("fail".into(), |c| format!("{c:.2} s; {} spurious", g.spurious)),
                ratio_defaults: "—".into(),
                ratio_raised: "—".into(),
                goal: "< 15 s, 0".into(),
                met: if caught.is_some_and(|c| c < 15.0) && g.spurious == 0 { "yes" } else { "no" }.into(),
            });
        }
        details.push_str("\n## Scenarios 5 and 6: 10,000 Instances\n\n");
        let _ = writeln!(
            details,
            "{total} Instances in {} ScalingGroups of {} in one namespace, one operator (`RUST_LOG=info`), HTTP probe every 10 s (timeout 1 s, unhealthyThreshold 3, healthyThreshold 1), podsim serving every Pod's endpoint on its own 127.x address.\n",
            s.groups, s.group_size
        );
        if let Some(e) = &g.error {
            let _ = writeln!(details, "**Failed:** {e}\n");
        }
        let _ = writeln!(
            details,
            "- coming up from nothing to all InService+Healthy: {}\n- steady state, measured over {:.0} s after 30 s of settling: RSS {:.0} MB (peak since start, VmHWM: {:.0} MB), CPU {:.1} % of one core (/proc/PID/stat utime+stime), {:.0} probes per second (`autoheal_probe_results_total`)\n- autoheal's API writes in that window: {:.1} per minute besides its leader Lease's renewals ({:.1} per minute); all of them: {}\n- restart: SIGKILL, then the same command again (same leader identity, as a container restart in its Pod): caches synced after {}, every Instance evaluated (`autoheal_instances_evaluated` ≥ {total}) after {}\n- spurious terminations (autoheal's Pod/Instance deletes in the 15 s after catching up, Instances Terminating or gone): {}\n- autoheal's API writes from the SIGKILL to 15 s after catching up: {}",
            g.setup
                .map_or("fail".into(), |d| format!("{:.1} s", d.as_secs_f64())),
            g.window_s,
            g.rss_mb,
            g.hwm_mb,
            g.cpu_share * 100.0,
            g.probes_per_s,
            g.writes_per_min,
            g.lease_renewals_per_min,
            g.writes_detail,
            g.synced
                .map_or("n/a".into(), |d| format!("{:.2} s", d.as_secs_f64())),
            g.restart
                .map_or("fail".into(), |d| format!("{:.2} s", d.as_secs_f64())),
            g.spurious,
            g.restart_writes,
        );
    }
    match &refresh {
        Some(r) => {
            lines.push(time_line(
                "7. refresh 50 (`make bench-refresh`): Deployment vs ScalingGroup rolling 50".into(),
                &r.race,
                Some(1.0),
            ));
            let _ = writeln!(
                details,
                "\n## Scenario 7: refresh\n\nFrom `cargo bench --bench refresh -- --kcm-variants` ({} run(s), {}; see `bench/REFRESH.md` for the set-up).\n\n| Deployment (kcm defaults) | Deployment (raised) | ScalingGroup |\n|---|---|---|\n| {} | {} | {} |",
                r.runs,
                r.date,
                runs_list(&r.race.kube_defaults),
                runs_list(&r.race.kube_raised),
                runs_list(&r.race.autoheal)
            );
        }
        None => details.push_str(
            "\n## Scenario 7: refresh\n\nNot run (no `target/bench-refresh.json`): `make bench` runs it first.\n",
        ),
    }

    let (commit, nproc, date) = super::common::stamp();
    let raised = kcm_raised().join(" ");
    let mut md = String::new();
    md.push_str("# Proof at scale: Kubernetes' controllers vs autoheal\n\n");
    let _ = writeln!(
        md,
        "Generated by `make bench` (`benches/suite/mod.rs`, run as `cargo bench --bench replace -- --suite`, after `benches/refresh.rs`). Release builds; one local control plane (etcd, kube-apiserver, kube-controller-manager {}) with podsim as the kubelet, kube-controller-manager's ReplicaSet controller and the autoheal operator (a child process) on the same API server, the same machine, in one run.\n",
        testkit::K8S_VERSION
    );
    let _ = writeln!(
        md,
        "- machine: {} ({nproc} CPUs, {})\n- date: {date}\n- commit: {commit}\n- runs: {} per figure of scenarios 1–3 (medians), {} for scenario 7; detection samples: {}; this run took {:.1} min\n- sizes: N = {n}, K = {}, scale-up to {}, {} × {} Instances for scenarios 5–6 (env `BENCH_RUNS`, `BENCH_N`, `BENCH_K`, `BENCH_SCALE`, `BENCH_DETECT_SAMPLES`, `BENCH_GROUPS`, `BENCH_GROUP_SIZE`, `BENCH_STEADY_SECONDS`)\n- Kubernetes runs twice: kube-controller-manager's own defaults `{}` (what users get), and raised to autoheal's own client limits `{raised}` (autoheal's `--kube-api-qps`/`--kube-api-burst` defaults: the fair race); ratio = autoheal / Kubernetes, lower is better\n- Pods: terminationGracePeriodSeconds {} on both sides; ScalingGroups: healthCheck.gracePeriodSeconds 0, replacement.deregistrationDelaySeconds 0, replacement.maxInFlight 100% (≥ K), no probe unless said\n",
        cpu_model(),
        std::env::consts::ARCH,
        s.runs,
        refresh.as_ref().map_or(0, |r| r.runs),
        s.detect_samples,
        wall.as_secs_f64() / 60.0,
        s.ks.iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(" and "),
        s.scale,
        s.groups,
        s.group_size,
        KCM_DEFAULTS.join(" "),
        grace_seconds(),
    );
    md.push_str("| scenario | Kubernetes (kcm defaults) | Kubernetes (raised) | autoheal | ratio (defaults) | ratio (raised) | goal | met? (defaults / raised) |\n|---|---:|---:|---:|---:|---:|---|---|\n");
    for l in &lines {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            l.scenario,
            l.kube_defaults,
            l.kube_raised,
            l.autoheal,
            l.ratio_defaults,
            l.ratio_raised,
            l.goal,
            l.met
        );
    }
    md.push_str("\nTimes: 1 — from the K concurrent Pod DELETEs until N Running+Ready Pods and nothing terminating (ReplicaSet) / N Instances InService+Healthy with Running Pods and nothing else (ScalingGroup); 2 — from the K concurrent `autoheal.dev/health=Unhealthy` annotations until the same; 3 — from the scale request until all Pods Running+Ready (ReplicaSet) / all Instances InService (ScalingGroup). Conditions are checked on every watch event.\n");
    md.push_str(&details);
    println!("\n{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/RESULTS.md");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, &md).unwrap();
    eprintln!(
        "written to {} after {:.1} min",
        out.display(),
        wall.as_secs_f64() / 60.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
